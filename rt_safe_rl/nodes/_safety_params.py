"""Safety parameters <-> SafetyConfig: every ``safety.*`` config leaf is a ROS parameter.

:func:`flatten_config` lists (name, value, type) of the leaves; :func:`config_from_values` builds
the validated config back from flat values; :func:`declare_safety_parameters` declares them on a
node (read-only: ``READ_ONLY``). Non-RT (construction / parameter callback).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.parameter import Parameter

from rt_safe_rl.core.configutil import from_mapping
from rt_safe_rl.core.safety import SafetyConfig

READ_ONLY = (
    'rate_hz',
    'monitor_rate_hz',
    'status_rate_hz',
    'publish_trajectory',
    'output_mode',
    'output_topic',
)


def _param_type(tp: Any) -> int:
    origin = typing.get_origin(tp)
    if tp is bool:
        return ParameterType.PARAMETER_BOOL
    if tp is int:
        return ParameterType.PARAMETER_INTEGER
    if tp is float:
        return ParameterType.PARAMETER_DOUBLE
    if tp is str or origin is typing.Literal:
        return ParameterType.PARAMETER_STRING
    if origin is list:
        (item,) = typing.get_args(tp)
        return ParameterType.PARAMETER_STRING_ARRAY if item is str else ParameterType.PARAMETER_DOUBLE_ARRAY
    raise TypeError(f'unsupported parameter type {tp}')


def flatten_config(obj: Any, prefix: str = 'safety') -> list[tuple[str, Any, int]]:
    """(parameter name, value, ParameterType) for every leaf of a config dataclass.

    Mapping-valued fields (e.g. ``pfl.max_force_by_region_n``) have no ROS parameter type: they
    are set in the config file only.
    """
    out: list[tuple[str, Any, int]] = []
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f'{prefix}.{f.name}'
        if dataclasses.is_dataclass(value):
            out.extend(flatten_config(value, name))
        elif isinstance(value, dict):
            continue
        else:
            out.append((name, list(value) if isinstance(value, list) else value, _param_type(hints[f.name])))
    return out


def config_from_values(
    values: dict[str, Any], base: SafetyConfig | None = None, prefix: str = 'safety'
) -> SafetyConfig:
    """SafetyConfig from flat parameter values (``safety.ssm.reaction_time_s`` -> nested) on top of
    `base` (fields without a parameter keep base's value).

    Raises:
        ConfigError: an invalid value (names the parameter).
    """
    nested: dict[str, Any] = dataclasses.asdict(base) if base is not None else {}
    for name, value in values.items():
        parts = name.split('.')[1:] if name.startswith(prefix + '.') else name.split('.')
        d = nested
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        if not isinstance(value, (bool, int, float, str)) and value is not None:
            value = list(value)
        d[parts[-1]] = value
    return from_mapping(SafetyConfig, nested, 'parameters: safety')


def declare_safety_parameters(node: Any, cfg: SafetyConfig) -> SafetyConfig:
    """Declare every leaf of `cfg` as a parameter of `node` (with descriptors) plus ``safety.reset``;
    return the config with the parameter overrides (launch files, ``-p safety.x:=v``) applied."""
    empty: list[Parameter[Any]] = []
    for name, value, ptype in flatten_config(cfg):
        leaf = name.split('.', 1)[1]
        desc = ParameterDescriptor(
            type=ptype,
            read_only=leaf in READ_ONLY,
            description=f'safety filter: {leaf} (see rt_safe_rl.core.safety.config)',
        )
        if isinstance(value, list) and not value:
            # an empty list has no element type: declare typed, then set [] with that type
            ptype_enum = Parameter.Type(ptype)
            p: Any = node.declare_parameter(name, ptype_enum, desc)
            if p.type_ == Parameter.Type.NOT_SET:
                empty.append(Parameter(name, ptype_enum, []))
        else:
            node.declare_parameter(name, value, desc)
    if empty:
        node.set_parameters(empty)
    values = {name: node.get_parameter(name).value for name, _, _ in flatten_config(cfg)}
    node.declare_parameter(
        'safety.reset',
        False,
        ParameterDescriptor(
            type=ParameterType.PARAMETER_BOOL,
            description='set true to clear a latched stop (refused, with the reason, while braking or '
            'when it would latch again at once); falls back to false once acted upon',
        ),
    )
    return config_from_values(values, cfg)
