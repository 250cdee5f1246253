"""Thin nodes (issue #13): every module in ``nodes/`` that defines a node class is under 300 lines,
and every node executable (``console_scripts`` entry point or a ``main`` in ``nodes/``) goes through
the one :func:`rt_safe_rl.nodes._sim_base.run_node`, the only place that calls ``rclpy.init``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (ROS 2 wheels or a sourced ROS 2 needed)')
from rclpy.node import Node

ROOT = Path(__file__).resolve().parent.parent
NODES = ROOT / 'rt_safe_rl' / 'nodes'
MAX_NODE_LINES = 300
RUN_NODE_MODULE = 'rt_safe_rl.nodes._sim_base'


def _node_modules() -> dict[str, Path]:
    return {f'rt_safe_rl.nodes.{p.stem}': p for p in sorted(NODES.glob('*.py')) if p.stem != '__init__'}


def _defines_node_class(module_name: str) -> bool:
    mod = importlib.import_module(module_name)
    return any(
        issubclass(cls, Node) and cls.__module__ == module_name
        for _, cls in inspect.getmembers(mod, inspect.isclass)
    )


def _calls(fn: ast.FunctionDef, name: str) -> bool:
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == name) or (
                isinstance(f, ast.Attribute) and f.attr == name
            ):
                return True
    return False


def _main_of(path: Path) -> ast.FunctionDef | None:
    tree = ast.parse(path.read_text())
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == 'main'), None)


def test_node_class_modules_are_under_300_lines() -> None:
    node_modules = [m for m in _node_modules() if _defines_node_class(m)]
    assert 'rt_safe_rl.nodes.safety_node' in node_modules  # the detection sees the nodes at all
    sizes = {m: len(_node_modules()[m].read_text().splitlines()) for m in node_modules}
    too_long = {m: n for m, n in sizes.items() if n >= MAX_NODE_LINES}
    assert not too_long, f'node modules of {MAX_NODE_LINES}+ lines (move logic to core/ or rt/): {too_long}'


def test_every_node_main_goes_through_run_node() -> None:
    mains = {m: f for m, p in _node_modules().items() if (f := _main_of(p)) is not None}
    assert 'rt_safe_rl.nodes.policy_node' in mains
    bypass = sorted(m for m, f in mains.items() if not _calls(f, 'run_node'))
    assert not bypass, f'node executables whose main does not call run_node: {bypass}'


def test_console_script_node_executables_use_run_node() -> None:
    setup = (ROOT / 'setup.py').read_text()
    targets = re.findall(r"'[\w-]+ = (rt_safe_rl\.nodes\.\w+):main'", setup)
    assert len(targets) >= 7, 'setup.py console_scripts not found (the node entry points moved?)'
    for module_name in targets:
        main = importlib.import_module(module_name).main
        fn = _main_of(Path(inspect.getfile(main)))
        assert fn is not None and _calls(fn, 'run_node'), f'{module_name}:main bypasses run_node'


def test_run_node_is_the_only_rclpy_init_in_nodes() -> None:
    """One executable body: ``run_node`` is defined once and nothing else in nodes/ inits rclpy."""
    defs = [m for m, p in _node_modules().items() if re.search(r'^def run_node\(', p.read_text(), re.M)]
    assert defs == [RUN_NODE_MODULE]
    inits = [m for m, p in _node_modules().items() if 'rclpy.init(' in p.read_text()]
    assert inits == [RUN_NODE_MODULE], f'rclpy.init outside run_node: {inits}'
