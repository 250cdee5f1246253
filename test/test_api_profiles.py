"""Deployment profiles and RT_* variables: overlays on THE config, one key per variable."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rt_safe_rl.api.profiles import ENV_KEYS, PROFILES, env_overrides
from rt_safe_rl.config import load_config
from rt_safe_rl.core.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [*ENV_KEYS, 'RT_PROFILE']:
        monkeypatch.delenv(var, raising=False)


def test_every_profile_is_shipped_and_differs_for_real() -> None:
    """Each profile loads over default.yaml and changes what it promises."""
    for name in PROFILES:
        assert (REPO / 'config' / 'profiles' / f'{name}.yaml').is_file()
    dev, prod, edge, cloud = (load_config(profile=p) for p in PROFILES)
    base = load_config()
    assert base.deployment.profile == '' and base.rt.groups['control'].policy == 'fifo'
    # development: no privileges needed, relaxed budgets
    assert {g.policy for g in dev.rt.groups.values()} == {'other'} and not dev.rt.mlock
    assert dev.monitor.thresholds.e2e_budget_s > base.monitor.thresholds.e2e_budget_s
    # production: RT, system checks at start, strict budgets, Prometheus
    assert prod.rt.groups['control'].policy == 'fifo' and prod.rt.mlock
    assert prod.deployment.system_checks == 'warn' and prod.monitor.metrics.enabled
    assert prod.monitor.thresholds.e2e_budget_s < base.monitor.thresholds.e2e_budget_s
    # edge: reduced precision (within tolerance), CPU only, small footprint
    assert edge.policy.allow_reduced_precision and not edge.deployment.gpu
    assert not edge.rt.mlock and edge.rt.prefault_heap_bytes < base.rt.prefault_heap_bytes
    assert edge.deployment.report_memory
    # cloud: no privileges, metrics on and reachable
    assert {g.policy for g in cloud.rt.groups.values()} == {'other'}
    assert cloud.monitor.metrics.enabled and cloud.monitor.metrics.address == '0.0.0.0'
    # the safety rules are the same everywhere
    for c in (dev, prod, edge, cloud):
        assert c.safety == base.safety


def test_profile_from_env_and_overlay_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """RT_PROFILE selects a profile; a path selects an overlay; errors name the overlay."""
    monkeypatch.setenv('RT_PROFILE', 'edge')
    assert load_config().deployment.profile == 'edge'
    assert load_config(profile='').deployment.profile == ''
    bad = tmp_path / 'bad.yaml'
    bad.write_text('safety: {velocity_scale: 7.0}\n')
    with pytest.raises(ConfigError, match=f'profile {bad}'):
        load_config(profile=str(bad))
    with pytest.raises(ConfigError, match="unknown profile 'mars'"):
        load_config(profile='mars')


@pytest.mark.parametrize(
    ('var', 'raw', 'path', 'value'),
    [
        ('RT_ENABLE_SYSTEM_OPT', '0', ('deployment', 'system_optimization'), False),
        ('RT_CPU_ISOLATION', '0', ('rt', 'groups', 'control', 'cpus'), [0]),
        ('RT_GOVERNOR', 'powersave', ('deployment', 'governor'), 'powersave'),
        ('RT_GPU_DEVICE', '1', ('deployment', 'gpu_device'), 1),
        ('RT_ENABLE_TENSORRT', 'no', ('deployment', 'tensorrt'), False),
        ('RT_GPU_MEMORY_POOL_MB', '256', ('deployment', 'gpu_memory_pool_mb'), 256),
        ('RT_MEMORY_POOL_MB', '8', ('rt', 'prefault_heap_bytes'), 8 << 20),
        ('RT_ENABLE_HUGEPAGES', 'yes', ('deployment', 'hugepages'), True),
        ('RT_ENABLE_PROMETHEUS', 'off', ('monitor', 'metrics', 'enabled'), False),
        ('RT_METRICS_PORT', '9191', ('monitor', 'metrics', 'port'), 9191),
    ],
)
def test_each_variable_sets_its_one_key(
    monkeypatch: pytest.MonkeyPatch, var: str, raw: str, path: tuple[str, ...], value: object
) -> None:
    """Each RT_* variable lands in its documented key of the loaded config."""
    assert ENV_KEYS[var][0] == '.'.join(path)
    monkeypatch.setenv(var, raw)
    node: object = load_config()
    for part in path:
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    assert node == value


def test_cpu_isolation_moves_the_threads_sharing_control() -> None:
    """safety shares control's thread: it follows RT_CPU_ISOLATION (the rt config requires it)."""
    ov = env_overrides({'RT_CPU_ISOLATION': '0'})
    assert ov == {'RT_CPU_ISOLATION': {'rt': {'groups': {'control': {'cpus': [0]}}}}}
    import os

    os.environ['RT_CPU_ISOLATION'] = '0'
    try:
        cfg = load_config()
    finally:
        del os.environ['RT_CPU_ISOLATION']
    assert cfg.rt.groups['safety'].cpus == [0]


@pytest.mark.parametrize(
    ('var', 'raw'),
    [
        ('RT_ENABLE_SYSTEM_OPT', 'maybe'),
        ('RT_CPU_ISOLATION', '2,3,4,5,99'),
        ('RT_CPU_ISOLATION', 'a,b'),
        ('RT_GOVERNOR', 'turbo'),
        ('RT_GPU_DEVICE', '-1'),
        ('RT_ENABLE_TENSORRT', '1'),
        ('RT_MEMORY_POOL_MB', 'lots'),
        ('RT_METRICS_PORT', '70000'),
    ],
)
def test_an_invalid_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, raw: str
) -> None:
    """A malformed or invalid value fails the config load in one line that names the variable."""
    monkeypatch.setenv(var, raw)
    with pytest.raises(ConfigError) as err:
        load_config()
    msg = str(err.value)
    assert msg.startswith(f'{var}=') and '\n' not in msg


def test_bringup_demo_and_node_executables_take_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """--profile in bringup/demo's parser, in the node executables (RT_PROFILE) and in the launch files."""
    from rt_safe_rl.bringup import build_arg_parser, config_from_args
    from rt_safe_rl.nodes._args import check_node_args

    monkeypatch.setenv('RT_PROFILE', '')  # restored after the test (check_node_args sets it)
    args = build_arg_parser('bringup').parse_args(['--profile', 'cloud'])
    assert config_from_args(args).deployment.profile == 'cloud'
    ns = argparse.Namespace(config=None, overrides=[])  # a caller without the option still works
    assert config_from_args(ns).deployment.profile == ''
    assert check_node_args('policy_node', ['--profile', 'edge', '--ros-args', '-p', 'a:=1'], 'x') is None
    import os

    assert os.environ['RT_PROFILE'] == 'edge'
    assert load_config().deployment.profile == 'edge'
    # demo.launch.py includes sim.launch.py and rt_safe_rl.launch.py with their arguments
    for launch in ('rt_safe_rl.launch.py', 'sim.launch.py'):
        assert "'profile'" in (REPO / 'launch' / launch).read_text()
