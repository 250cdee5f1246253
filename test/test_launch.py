"""Launch files: they use only public launch / launch_ros / ament_index API (plus the package's own
placement plan), start executables that exist, remap topic names that are the config's defaults and
read the same config file as bringup. Where launch_ros imports, every LaunchDescription is built and
its arguments are expanded; elsewhere that part skips. test_ros2_cli.py runs them with `ros2 launch`."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from rt_safe_rl.config import TopicsConfig, load_config

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILES = sorted((REPO / 'launch').glob('*.launch.py'))
PUBLIC_ROOTS = {
    'launch',
    'launch_ros',
    'ament_index_python',
    'os',
    '__future__',
    'sys',
    'typing',
    'importlib',
}
OWN_MODULES = {'rt_safe_rl.rt.placement'}  # the shipped placement plan (rt/placement.py: default_placement)
#: the file holding the shared arguments, remaps and helpers; the others load it from beside them
ROBOT_FILE = 'rt_safe_rl.launch.py'
ARGS_OF = {
    'rt_safe_rl.launch.py': {
        'config_file',
        'namespace',
        'robot_command_topic',
        'policy_path',
        'control_cpus',
    },
    'sim.launch.py': {'config_file', 'namespace', 'robot_command_topic', 'sim_cpus', 'control_cpus'},
    'demo.launch.py': {'config_file', 'namespace', 'robot_command_topic', 'policy_path', 'sim_cpus'},
}


def test_both_launch_files_exist() -> None:
    assert {p.name for p in LAUNCH_FILES} >= {'rt_safe_rl.launch.py', 'demo.launch.py', 'sim.launch.py'}


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_uses_public_api_and_known_executables(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.module and (node.module.split('.')[0] in PUBLIC_ROOTS or node.module in OWN_MODULES)
            assert not any(a.name.startswith('_') for a in node.names), 'private name imported'
            if node.module.startswith('launch'):
                assert all(not part.startswith('_') for part in node.module.split('.'))
        elif isinstance(node, ast.Import):
            assert all(a.name.split('.')[0] in PUBLIC_ROOTS for a in node.names)
    from test_packaging import _console_scripts

    scripts = _console_scripts()
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    for exe in ('safety_node', 'policy_node', 'monitor_node', 'sim_robot', 'sim_human', 'sim_operator'):
        if exe in strings:
            assert exe in scripts, f'{path.name} starts {exe}, which setup.py does not install'
    if path.name != ROBOT_FILE:
        assert ROBOT_FILE in path.read_text() or 'sim.launch.py' in path.read_text()
        return
    topics = TopicsConfig()
    for default in (topics.robot_command, topics.joint_states, topics.human_position):
        assert default in strings, f'{path.name} does not remap {default}'
    assert 'default.yaml' in path.read_text()


def test_the_config_the_launch_files_read_is_valid() -> None:
    cfg = load_config(REPO / 'config' / 'default.yaml')
    assert cfg.control.autostart, 'launch relies on the nodes configuring + activating themselves'


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem.replace('.', '_'), path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_description_builds(path: Path) -> None:
    pytest.importorskip(
        'launch_ros',
        reason='launch_ros is not installable here (no PyPI wheel); '
        'the launch descriptions are built where a ROS 2 install provides it',
    )
    from launch.actions import DeclareLaunchArgument

    from launch import LaunchContext, LaunchDescription

    ld = _load(path).generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    names = {a.name for a in ld.entities if isinstance(a, DeclareLaunchArgument)}
    assert ARGS_OF[path.name] <= names
    ctx = LaunchContext()
    for a in ld.entities:
        if isinstance(a, DeclareLaunchArgument):
            a.visit(ctx)
