"""Architecture rules: core/ (and the pure sim/ and config modules) never import rclpy, ROS message
packages or launch -- neither statically (any import statement, including lazy ones inside
functions) nor transitively at runtime."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / 'rt_safe_rl'
PURE_DIRS = [PKG / 'core', PKG / 'sim']
PURE_FILES = [PKG / 'config.py', PKG / 'paths.py']
FORBIDDEN_ROOTS = (
    'rclpy',
    'launch',
    'launch_ros',
    'rosidl_runtime_py',
    'rt_safe_rl.nodes',
    'rt_safe_rl.rt.executor',
)


def _forbidden(module: str) -> bool:
    root = module.split('.')[0]
    if root.endswith('_msgs') or root.endswith('_srvs') or root.endswith('_interfaces'):
        return True
    return any(module == f or module.startswith(f + '.') for f in FORBIDDEN_ROOTS)


def _pure_files() -> list[Path]:
    files = list(PURE_FILES)
    for d in PURE_DIRS:
        files += sorted(d.rglob('*.py'))
    return files


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, 'attr', getattr(node.func, 'id', '')) in ('import_module', '__import__')
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            out.append((node.lineno, str(node.args[0].value)))
    return out


def test_forbidden_detector_works() -> None:
    assert _forbidden('rclpy.node') and _forbidden('sensor_msgs.msg') and _forbidden('std_srvs')
    assert _forbidden('rt_safe_rl.nodes.policy_node') and _forbidden('launch_ros.actions')
    assert not _forbidden('numpy') and not _forbidden('rt_safe_rl.rt.ring') and not _forbidden('launcher')


@pytest.mark.parametrize('path', _pure_files(), ids=lambda p: str(p.relative_to(PKG)))
def test_pure_module_has_no_ros_imports(path: Path) -> None:
    bad = [f'{path.name}:{line}: import {mod}' for line, mod in _imports(path) if _forbidden(mod)]
    assert not bad, 'core/sim must stay ROS-free:\n' + '\n'.join(bad)


def test_importing_all_pure_modules_loads_no_ros_at_runtime() -> None:
    mods = []
    for p in _pure_files():
        rel = p.relative_to(PKG.parent).with_suffix('')
        parts = list(rel.parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        mods.append('.'.join(parts))
    code = (
        'import importlib, sys\n'
        f'for m in {mods!r}:\n'
        '    importlib.import_module(m)\n'
        'from rt_safe_rl.config import load_config\n'
        'load_config()\n'
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "bad = sorted(r for r in roots if r == 'rclpy' or r.endswith('_msgs'))\n"
        'print(bad)\n'
        'sys.exit(1 if bad else 0)\n'
    )
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f'ROS modules loaded by core/sim/config: {res.stdout}{res.stderr[-2000:]}'
