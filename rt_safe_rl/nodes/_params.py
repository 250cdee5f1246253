"""Config dataclass <-> flat ROS parameters: the one mapping every node uses.

Each leaf of a nested config dataclass is one parameter ``prefix.a.b``: :func:`config_leaves` lists
them with their ROS type and a description (the field's entry in its class docstring's
``Attributes:`` section, else its trailing ``# comment`` in the class source, then the unit its
name carries, e.g. ``[s]`` for ``_s``, and a closed range given as the field's ``metadata={'range':
(lo, hi)}``, which rclpy then enforces; a ``Literal`` type lists its allowed values);
:func:`declare_config` declares them on a node with descriptors (read-only where the node says);
:func:`config_from_values` builds the validated config back from flat values (``from_mapping``:
wrong types and bad values are one-line errors naming the key path). Mapping-valued fields have no
ROS parameter type: they are set in the config file only. Non-RT (construction / parameter
callbacks).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from rt_safe_rl.core.configutil import from_mapping
from rt_safe_rl.core.errors import ConfigError

T = TypeVar('T')

#: unit of a name's suffix (longest first), shown in the parameter's description
UNIT_SUFFIXES: tuple[tuple[str, str], ...] = (
    ('_rad_s3', 'rad/s^3'),
    ('_rad_s2', 'rad/s^2'),
    ('_rad_s', 'rad/s'),
    ('_m_s2', 'm/s^2'),
    ('_m_s', 'm/s'),
    ('_rad', 'rad'),
    ('_nm', 'N m'),
    ('_ns', 'ns'),
    ('_us', 'us'),
    ('_ms', 'ms'),
    ('_hz', 'Hz'),
    ('_mb', 'MB'),
    ('_s', 's'),
    ('_m', 'm'),
    ('_n', 'N'),
)


_DOCS: dict[type, dict[str, str]] = {}


class Leaf(NamedTuple):
    """One config leaf as a ROS parameter."""

    name: str  # full parameter name, e.g. 'safety.ssm.reaction_time_s'
    value: Any
    ptype: int  # rcl_interfaces ParameterType
    description: str
    choices: tuple[str, ...]  # allowed values of a Literal field, else ()
    value_range: tuple[float, float] | None  # closed range (field metadata 'range'), else None


def param_type(tp: Any) -> int:
    """The ROS ParameterType of a config field type (TypeError for one without)."""
    from rcl_interfaces.msg import ParameterType

    origin = typing.get_origin(tp)
    if tp is bool:
        return int(ParameterType.PARAMETER_BOOL)
    if tp is int:
        return int(ParameterType.PARAMETER_INTEGER)
    if tp is float:
        return int(ParameterType.PARAMETER_DOUBLE)
    if tp is str or origin is typing.Literal:
        return int(ParameterType.PARAMETER_STRING)
    if origin is list:
        (item,) = typing.get_args(tp)
        if item is str:
            return int(ParameterType.PARAMETER_STRING_ARRAY)
        if item is int:
            return int(ParameterType.PARAMETER_INTEGER_ARRAY)
        return int(ParameterType.PARAMETER_DOUBLE_ARRAY)
    raise TypeError(f'unsupported parameter type {tp}')


def unit_of(name: str) -> str:
    """The unit a field name carries ('' = none), e.g. 's' for 'state_timeout_s'."""
    for suffix, unit in UNIT_SUFFIXES:
        if name.endswith(suffix):
            return unit
    return ''


def field_docs(cls: type) -> dict[str, str]:
    """{field: one-line description} of a config dataclass, from its docstring's ``Attributes:``
    entries (``a, b: text`` documents both) and else the trailing comments in its source."""
    cached = _DOCS.get(cls)
    if cached is not None:
        return cached
    docs: dict[str, str] = {}
    _DOCS[cls] = docs
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        src = ''
    for m in re.finditer(r'^\s+(\w+):[^=#\n]*=[^#\n]*#\s*(.+)$', src, re.M):
        docs[m.group(1)] = m.group(2).strip()
    doc = inspect.getdoc(cls) or ''
    section = re.split(r'^Attributes:\s*$', doc, maxsplit=1, flags=re.M)
    if len(section) == 2:
        entries = re.split(r'\n(?=    [\w, ]+: )', section[1].split('\n\n')[0])
        for entry in entries:
            head, _, text = entry.strip().partition(': ')
            for name in head.split(','):
                docs[name.strip()] = ' '.join(text.split())
    return docs


def config_leaves(obj: Any, prefix: str) -> list[Leaf]:
    """Every parameter leaf of config dataclass `obj` under `prefix` (see the module docstring)."""
    out: list[Leaf] = []
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f'{prefix}.{f.name}'
        if dataclasses.is_dataclass(value):
            out.extend(config_leaves(value, name))
            continue
        if isinstance(value, dict):
            continue
        tp = hints[f.name]
        choices = (
            tuple(str(c) for c in typing.get_args(tp)) if typing.get_origin(tp) is typing.Literal else ()
        )
        unit = unit_of(f.name)
        text = docs.get(f.name) or f'see {cls.__module__}.{cls.__qualname__}'
        desc = f'{name}: {text}' + (f' [{unit}]' if unit else '')
        value = list(value) if isinstance(value, list) else value
        rng = f.metadata.get('range')
        if rng is not None:
            desc += f' (range [{rng[0]}, {rng[1]}])'
        out.append(Leaf(name, value, param_type(tp), desc, choices, rng))
    return out


def config_from_values(cls: type[T], values: dict[str, Any], base: Any, prefix: str) -> T:
    """A validated `cls` from flat parameter values (``prefix.a.b`` -> nested) on top of `base`
    (fields without a parameter keep base's value; None = the class defaults).

    Raises:
        ConfigError: an invalid value (names the parameter's key path).
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
    return from_mapping(cls, nested, f'parameters: {prefix}')


def declare_config(node: Any, cfg: Any, prefix: str, read_only: Callable[[str], bool]) -> dict[str, Any]:
    """Declare every leaf of `cfg` under `prefix` on `node` with its descriptor (read-only where
    ``read_only(leaf name without the prefix)``); return {name: value} after the overrides given at
    start-up (launch files, ``-p prefix.x:=v``).

    Raises:
        ConfigError: an override outside a declared range (names the parameter).
    """
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
    from rclpy.exceptions import InvalidParameterValueException
    from rclpy.parameter import Parameter

    empty: list[Parameter[Any]] = []
    leaves = config_leaves(cfg, prefix)
    for leaf in leaves:
        ro = read_only(leaf.name[len(prefix) + 1 :])
        desc = ParameterDescriptor(
            type=leaf.ptype,
            read_only=ro,
            description=leaf.description + ('; read-only' if ro else ''),
            additional_constraints=f'one of: {", ".join(leaf.choices)}' if leaf.choices else '',
        )
        if leaf.value_range is not None:  # rclpy enforces it, also on overrides at declaration
            lo, hi = leaf.value_range
            if leaf.ptype == ParameterType.PARAMETER_INTEGER:
                desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
            else:
                desc.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
        if isinstance(leaf.value, list) and not leaf.value:
            # an empty list has no element type: declare typed, then set [] with that type
            ptype_enum = Parameter.Type(leaf.ptype)
            p: Any = node.declare_parameter(leaf.name, ptype_enum, desc)
            if p.type_ == Parameter.Type.NOT_SET:
                empty.append(Parameter(leaf.name, ptype_enum, []))
        else:
            try:
                node.declare_parameter(leaf.name, leaf.value, desc)
            except InvalidParameterValueException as err:  # an override outside the declared range
                raise ConfigError(f'parameter {leaf.name}: {_reason(err)}') from None
    if empty:
        node.set_parameters(empty)
    return {leaf.name: node.get_parameter(leaf.name).value for leaf in leaves}


def _reason(err: Exception) -> str:
    """rclpy's reason inside an InvalidParameterValueException, on one line."""
    text = str(err)
    return ' '.join(text.split('Reason: ', 1)[-1].rsplit(':', 1)[0].split())
