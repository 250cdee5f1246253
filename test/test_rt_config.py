"""rt.config: group -> thread mapping validation (bad input is a clear ConfigError at load)."""

from __future__ import annotations

import pytest

from rt_safe_rl.core.configutil import from_mapping
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.rt.config import NON_RT, RtConfig, online_cpus


def build(groups: dict[str, dict[str, object]], **kw: object) -> RtConfig:
    data = {'groups': {NON_RT: {'policy': 'other', 'priority': 0}, **groups}, **kw}
    return from_mapping(RtConfig, data, 'test: rt')


def test_defaults_are_valid_and_share_control_thread() -> None:
    cfg = RtConfig()
    assert cfg.thread_of('safety') == 'control'
    assert cfg.threads()[0] == NON_RT
    assert 'safety' not in cfg.threads()
    assert cfg.groups['control'].real_cpus == (online_cpus()[-1],)


@pytest.mark.parametrize('prio', [0, 99, 100, -1])
def test_invalid_fifo_priority(prio: int) -> None:
    with pytest.raises(ConfigError, match='priority'):
        build({'control': {'policy': 'fifo', 'priority': prio}})


def test_other_policy_needs_priority_zero() -> None:
    with pytest.raises(ConfigError, match="priority: must be 0 with policy 'other'"):
        build({'x': {'policy': 'other', 'priority': 10}})


def test_unknown_cpu_id() -> None:
    bad = max(online_cpus()) + 1
    with pytest.raises(ConfigError, match=f'unknown CPU id {bad}'):
        build({'control': {'priority': 80, 'cpus': [bad]}})


def test_negative_cpu_counts_from_last() -> None:
    cfg = build({'control': {'priority': 80, 'cpus': [-1]}})
    assert cfg.groups['control'].real_cpus == (online_cpus()[-1],)


def test_shared_thread_must_agree() -> None:
    with pytest.raises(ConfigError, match=r'conflicts with groups\.control'):
        build({'control': {'priority': 80}, 'safety': {'priority': 81, 'thread': 'control'}})


def test_shared_thread_unknown_owner() -> None:
    with pytest.raises(ConfigError, match="unknown group 'nope'"):
        build({'safety': {'priority': 80, 'thread': 'nope'}})


def test_same_priority_same_cpu_is_a_conflict() -> None:
    with pytest.raises(ConfigError, match='same priority 80 on overlapping CPUs'):
        build({'a': {'priority': 80, 'cpus': [0]}, 'b': {'priority': 80, 'cpus': [0]}})


def test_non_rt_required_and_not_rt() -> None:
    with pytest.raises(ConfigError, match='non_rt'):
        from_mapping(RtConfig, {'groups': {'control': {'priority': 80}}}, 'test')
    with pytest.raises(ConfigError, match='non_rt'):
        from_mapping(RtConfig, {'groups': {NON_RT: {'policy': 'fifo', 'priority': 10}}}, 'test')


def test_unknown_key_and_group_lookup() -> None:
    with pytest.raises(ConfigError, match='unknown key'):
        build({'control': {'priority': 80, 'prio': 3}})
    with pytest.raises(ConfigError, match="unknown rt group 'nope'"):
        RtConfig().thread_of('nope')


def test_shipped_yaml_rt_section_loads() -> None:
    from rt_safe_rl.config import load_config
    from rt_safe_rl.paths import config_path

    cfg = load_config(config_path('default.yaml'))
    assert isinstance(cfg.rt, RtConfig)
    assert cfg.rt.groups['control'].is_rt
