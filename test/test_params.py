"""The one config dataclass <-> ROS parameter mapping (``nodes/_params.py``): every leaf of the
safety and monitor configs is a parameter with its type, a description carrying the unit its name
names, the allowed values of a Literal and the range the config declares; values round-trip; on a
real rclpy node the descriptors are what ``ros2 param describe`` shows and rclpy enforces them."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (ROS 2 wheels or a sourced ROS 2 needed)')

from rt_safe_rl.config import load_config
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.monitoring import MonitorConfig
from rt_safe_rl.core.safety import SafetyConfig
from rt_safe_rl.nodes._params import config_from_values, config_leaves, declare_config, unit_of


def test_every_safety_leaf_is_documented_with_its_unit() -> None:
    leaves = {leaf.name: leaf for leaf in config_leaves(SafetyConfig(), 'safety')}
    assert 'safety.ssm.reaction_time_s' in leaves and 'safety.inputs.drop_window_s' in leaves
    for name, leaf in leaves.items():
        assert ': see ' not in leaf.description, f'{name} has no description in its class docstring'
        unit = unit_of(name.rsplit('.', 1)[1])
        assert not unit or leaf.description.endswith(f'[{unit}]') or f'[{unit}] (range' in leaf.description
    assert leaves['safety.ssm.reaction_time_s'].description.endswith('[s]')
    assert leaves['safety.a_max_rad_s2'].description.endswith('[rad/s^2]')
    assert leaves['safety.blend.mode'].choices == ('fixed', 'distance')
    assert leaves['safety.velocity_scale'].value_range == (0.0, 1.0)
    assert not any(n.startswith('safety.pfl.max_force_by_region') for n in leaves)  # a mapping: file only


@pytest.mark.parametrize('prefix', ['safety', 'monitor'])
def test_values_round_trip_and_a_bad_one_names_its_key(prefix: str) -> None:
    app = load_config(None)
    cfg, cls = (app.safety, SafetyConfig) if prefix == 'safety' else (app.monitor, MonitorConfig)
    values = {leaf.name: leaf.value for leaf in config_leaves(cfg, prefix)}
    assert config_from_values(cls, values, None, prefix) == cfg
    key = 'safety.ssm.reaction_time_s' if prefix == 'safety' else 'monitor.window_s'
    with pytest.raises(ConfigError, match=key.split('.', 1)[1].replace('.', r'\.')):
        config_from_values(cls, {**values, key: 'soon'}, None, prefix)


def test_descriptors_on_a_real_node_are_enforced() -> None:
    import rclpy
    from rclpy.parameter import Parameter

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node('rt_safe_rl_params_test', context=ctx)
    try:
        cfg = dataclasses.replace(SafetyConfig(), velocity_scale=0.5)
        values = declare_config(node, cfg, 'safety', lambda leaf: leaf == 'rate_hz')
        assert values['safety.velocity_scale'] == 0.5 and values['safety.v_max_rad_s'] == []
        (rate, scale, mode) = node.describe_parameters(
            ['safety.rate_hz', 'safety.velocity_scale', 'safety.blend.mode']
        )
        assert rate.read_only and 'read-only' in rate.description and '[Hz]' in rate.description
        assert not scale.read_only and scale.floating_point_range[0].to_value == 1.0
        assert mode.additional_constraints == 'one of: fixed, distance'
        bad = node.set_parameters([Parameter('safety.velocity_scale', value=3.0)])[0]
        assert not bad.successful and 'safety.velocity_scale' in bad.reason
        assert node.get_parameter('safety.velocity_scale').value == 0.5
        ro = node.set_parameters([Parameter('safety.rate_hz', value=500.0)])[0]
        assert not ro.successful
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
