"""THE config file: the shipped default validates completely; unknown keys and wrong types fail
with the file and key named; overrides merge; the shipped policy pipeline matches its model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from rt_safe_rl.config import (
    SECTIONS,
    AppConfig,
    ControlConfig,
    DemoConfig,
    TopicsConfig,
    deep_merge,
    load_config,
    parse_override,
    section_class,
)
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.paths import config_path

DEFAULT = config_path('default.yaml')


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / 'cfg.yaml'
    p.write_text(yaml.safe_dump(data))
    return p


def test_default_config_builds_every_section_with_its_owner_dataclass() -> None:
    cfg = load_config()
    assert isinstance(cfg, AppConfig)
    assert cfg.source == DEFAULT.resolve()
    raw = yaml.safe_load(DEFAULT.read_text())
    assert set(raw) == set(SECTIONS), 'default.yaml must list every section'
    for name in SECTIONS:
        value = getattr(cfg, name)
        assert isinstance(value, section_class(name)), name
        assert dataclasses.is_dataclass(value)
    assert cfg.control.rate_hz == 1000.0 and cfg.control.period_ns == 1_000_000
    assert cfg.topics.robot_command == 'forward_position_controller/commands'
    json.dumps(cfg.to_dict())  # plain data, for benchmark metadata


def test_unknown_top_level_key_names_file_and_key(tmp_path: Path) -> None:
    p = _write(tmp_path, {'contrl': {'rate_hz': 500.0}})
    with pytest.raises(ConfigError, match=r"cfg\.yaml.*unknown top-level key.*'contrl'"):
        load_config(p)


@pytest.mark.parametrize(
    ('data', 'pattern'),
    [
        ({'topics': {'joint_state': 'x'}}, r"cfg\.yaml: topics: unknown key.*'joint_state'"),
        ({'control': {'rate_hz': 'fast'}}, r'cfg\.yaml: control\.rate_hz: expected a number'),
        ({'control': {'intra_process': 1}}, r'control\.intra_process: expected true/false'),
        ({'demo': {'duration_s': -1.0}}, r'cfg\.yaml: demo\.duration_s: must be >= 0'),
        ({'sim': {'human': {'near_m': 3.0}}}, r'sim\.human.*near_m'),
        ({'sim': {'robot': {'inertia_kg_m2': [1.0, 'x']}}}, r'sim\.robot\.inertia_kg_m2\[1\]'),
        ({'sim': 5}, r'cfg\.yaml: sim: expected a mapping'),
        ({'topics': {'qos_depth': 0}}, r'cfg\.yaml: topics\.qos_depth: must be >= 1'),
        ({'topics': {'joint_states': 'bad name'}}, r'invalid topic name'),
        ({'policy': {'backend': 'tpu'}}, r'policy\.backend: expected one of'),
        ({'safety': {'no_such_key': 1}}, r"cfg\.yaml: safety: unknown key.*'no_such_key'"),
        (
            {'rt': {'groups': {'control': {'priority': 99}}}},
            r'cfg\.yaml: rt\.groups\.control\.priority: must be in 1\.\.98',
        ),
        (
            {'safety': {'ssm': {'reaction_time_s': -1.0}}},
            r'cfg\.yaml: safety\.ssm\.reaction_time_s: must be >= 0',
        ),
    ],
)
def test_bad_values_fail_with_the_key_named(tmp_path: Path, data: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_config(_write(tmp_path, data))


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='not found'):
        load_config(tmp_path / 'nope.yaml')
    bad = tmp_path / 'bad.yaml'
    bad.write_text('control: [1, 2\n')
    with pytest.raises(ConfigError, match='not valid YAML') as exc:
        load_config(bad)
    assert '\n' not in str(exc.value) and 'line 2' in str(exc.value)  # one line for the CLI, with the place
    bad.write_bytes(b'\xff\xfe\x00')
    with pytest.raises(ConfigError, match='cannot read'):
        load_config(bad)
    bad.write_text('- 1\n- 2\n')
    with pytest.raises(ConfigError, match='top level must be a mapping'):
        load_config(bad)


def test_empty_file_means_all_defaults(tmp_path: Path) -> None:
    p = tmp_path / 'empty.yaml'
    p.write_text('')
    cfg = load_config(p)
    assert cfg.topics == TopicsConfig() and cfg.control == ControlConfig() and cfg.demo == DemoConfig()


def test_overrides_merge_before_validation() -> None:
    cfg = load_config(None, {'demo': {'duration_s': 2.5}, 'sim': {'human': {'speed_m_s': 1.2}}})
    assert cfg.demo.duration_s == 2.5
    assert cfg.sim.human.speed_m_s == 1.2
    assert cfg.sim.human.far_m == load_config().sim.human.far_m  # siblings kept
    with pytest.raises(ConfigError, match=r'^override demo: unknown key.*durration_s'):
        load_config(None, {'demo': {'durration_s': 1.0}})  # blamed on the override, not the valid file
    with pytest.raises(ConfigError, match=r'^override rt\.groups\.control\.priority: must be in 1\.\.98'):
        load_config(None, {'rt': {'groups': {'control': {'priority': 99}}}})  # nested: the full key path
    with pytest.raises(ConfigError, match=r'^override demo\.duration_s: expected a number'):
        load_config(None, {'demo': {'duration_s': 'abc'}})


def test_parse_override_and_deep_merge() -> None:
    assert parse_override('demo.duration_s=3') == {'demo': {'duration_s': 3}}
    assert parse_override('topics.joint_states=/arm/joint_states') == {
        'topics': {'joint_states': '/arm/joint_states'}
    }
    assert parse_override('sim.robot.initial_q_rad=[0, 1]') == {'sim': {'robot': {'initial_q_rad': [0, 1]}}}
    with pytest.raises(ConfigError, match=r'KEY\.PATH=VALUE'):
        parse_override('demo.duration_s')
    base = {'a': {'b': 1, 'c': 2}, 'd': [1]}
    merged = deep_merge(base, {'a': {'b': 5}, 'd': [2]})
    assert merged == {'a': {'b': 5, 'c': 2}, 'd': [2]}
    assert base == {'a': {'b': 1, 'c': 2}, 'd': [1]}  # input untouched


def test_unknown_section_name() -> None:
    with pytest.raises(ConfigError, match='unknown config section'):
        section_class('nope')


def test_shipped_policy_pipeline_matches_the_shipped_model() -> None:
    from rt_safe_rl.core.policy.config import load_pipeline_config
    from rt_safe_rl.paths import resolve

    cfg = load_config()
    pipe = load_pipeline_config(resolve(cfg.policy.config, cfg.base_dir))
    assert pipe.n_joints == 7 and pipe.obs_dim == 21
    model_path = resolve(cfg.policy.path, cfg.base_dir)
    meta_path = model_path.with_suffix('.json')
    assert model_path.is_file(), f'shipped model missing: {model_path} (run `rt-safe-rl train`)'
    meta = json.loads(meta_path.read_text())
    assert meta['obs_dim'] == pipe.obs_dim and meta['act_dim'] == pipe.n_joints
    import hashlib

    assert hashlib.sha256(model_path.read_bytes()).hexdigest() == meta['sha256']
