"""Packaging: package.xml declares the run/test dependencies, every console script resolves, and a
real `colcon build` of the repo (into a temp dir) produces an install space with the ament index
marker, package.xml, launch files, configs, the shipped model and runnable executables that find
their files in the install space."""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = 'rt_safe_rl'


def _console_scripts() -> dict[str, str]:
    tree = ast.parse((REPO / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if isinstance(k, ast.Constant) and k.value == 'console_scripts':
                    items = ast.literal_eval(v)
                    return dict(s.replace(' ', '').split('=', 1) for s in items)
    raise AssertionError('no console_scripts in setup.py')


def test_package_xml_declares_run_and_test_dependencies() -> None:
    root = ET.parse(REPO / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == PKG
    deps = {e.text for e in root if e.tag in ('exec_depend', 'depend', 'test_depend')}
    for need in (
        'rclpy',
        'std_msgs',
        'sensor_msgs',
        'geometry_msgs',
        'trajectory_msgs',
        'diagnostic_msgs',
        'lifecycle_msgs',
        'launch_ros',
    ):
        assert need in deps, need
    for need in ('numpy', 'torch', 'numba', 'psutil', 'pytest'):
        assert any(need in (d or '') for d in deps), need
    assert root.find('export/build_type').text == 'ament_python'  # type: ignore[union-attr]


def test_every_console_script_has_a_main() -> None:
    scripts = _console_scripts()
    for name in (
        'rt-safe-rl',
        'bringup',
        'policy_node',
        'safety_node',
        'sim_robot',
        'sim_human',
        'sim_operator',
        'monitor_node',
    ):
        assert name in scripts, name
    for name, target in scripts.items():
        module, func = target.split(':')
        if not (REPO / (module.replace('.', '/') + '.py')).is_file():
            pytest.fail(f'console script {name}: module {module} missing')
        tree = ast.parse((REPO / (module.replace('.', '/') + '.py')).read_text())
        has_main = any(isinstance(n, ast.FunctionDef) and n.name == func for n in tree.body)
        assert has_main, f'{name}: no {func}()'


def test_package_data_ships_the_model_and_description() -> None:
    for rel in ('models/arm7_reach.pt', 'models/arm7_reach.json', 'description/arm7.urdf'):
        assert (REPO / PKG / rel).is_file(), rel
    assert importlib.import_module('rt_safe_rl.paths').package_file('models/arm7_reach.pt').is_file()


@pytest.mark.slow
def test_colcon_build_produces_a_complete_install_space(tmp_path: Path) -> None:
    colcon = shutil.which('colcon', path=str(Path(sys.executable).parent)) or shutil.which('colcon')
    if colcon is None:
        pytest.skip(reason='colcon not installed (colcon-common-extensions is in requirements-dev.txt)')
    res = subprocess.run(
        [
            colcon,
            '--log-base',
            str(tmp_path / 'log'),
            'build',
            '--paths',
            str(REPO),
            '--build-base',
            str(tmp_path / 'build'),
            '--install-base',
            str(tmp_path / 'install'),
            '--merge-install',
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    inst = tmp_path / 'install'
    share = inst / 'share' / PKG
    expected = [
        inst / 'share/ament_index/resource_index/packages' / PKG,
        share / 'package.xml',
        share / 'launch/rt_safe_rl.launch.py',
        share / 'launch/demo.launch.py',
        share / 'config/default.yaml',
        share / 'config/policies/arm7_reach.yaml',
        share / 'models/arm7_reach.pt',
        share / 'models/arm7_reach.json',
        share / 'description/arm7.urdf',
    ]
    expected += [inst / 'lib' / PKG / name for name in _console_scripts()]
    missing = [str(p.relative_to(inst)) for p in expected if not p.exists()]
    assert not missing, f'missing from the install space: {missing}'
    site = next(inst.glob('lib/python3*/site-packages'))
    assert (site / PKG / 'models' / 'arm7_reach.pt').is_file()
    # the installed package finds its files in the install space (ament index), and runs
    env = dict(os.environ, AMENT_PREFIX_PATH=str(inst), PYTHONPATH=str(site))
    probe = subprocess.run(
        [
            sys.executable,
            '-c',
            'import rt_safe_rl, rt_safe_rl.paths as p; '
            'from rt_safe_rl.config import load_config; c = load_config(); '
            'print(rt_safe_rl.__file__); print(p.share_dir()); print(c.source)',
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    file_, share_dir, source = probe.stdout.split()
    assert file_.startswith(str(site)) and share_dir == str(share)
    assert source == str(share / 'config/default.yaml')
    cli = subprocess.run(
        [sys.executable, str(inst / 'lib' / PKG / 'rt-safe-rl'), '--help'],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert cli.returncode == 0 and 'demo' in cli.stdout, cli.stderr[-2000:]
