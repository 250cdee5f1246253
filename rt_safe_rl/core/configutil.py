"""Strict conversion of YAML mappings into frozen dataclasses.

Every config section of the package is a dataclass; :func:`from_mapping` builds one from a dict,
rejecting unknown keys and wrong types with a :class:`ConfigError` that names the key path and the
source file. Not RT-safe (allocates); used at configure time only.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from rt_safe_rl.core.errors import ConfigError

T = TypeVar('T')


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping. Raises ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f'config file not found: {p}')
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f'{p}: not valid YAML: {_yaml_error_line(err)}') from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f'{p}: cannot read: {err}') from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'{p}: top level must be a mapping, got {type(data).__name__}')
    return data


def _yaml_error_line(err: yaml.YAMLError) -> str:
    """One line for a YAML error: the problem and its 1-based line:column (PyYAML's own text spans lines)."""
    problem = getattr(err, 'problem', None)
    mark = getattr(err, 'problem_mark', None)
    if problem and mark is not None:
        context = getattr(err, 'context', None)
        where = f'line {mark.line + 1}, column {mark.column + 1}'
        return f'{where}: {context + ": " if context else ""}{problem}'
    return ' '.join(str(err).split())


def _type_name(tp: Any) -> str:
    return getattr(tp, '__name__', None) or str(tp).replace('typing.', '')


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert/validate one value against a type annotation; raise ConfigError at `where`."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f'{where}: expected {_type_name(tp)}, got {value!r}')
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(f'{where}: expected one of {list(get_args(tp))}, got {value!r}')
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f'{where}: expected a mapping, got {type(value).__name__}')
        return _build(tp, value, where)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'{where}: expected a list, got {type(value).__name__}')
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f'{where}: expected {len(args)} items, got {len(value)}')
            pairs = zip(value, args, strict=True)  # lengths checked above
            return tuple(_convert(v, a, f'{where}[{i}]') for i, (v, a) in enumerate(pairs))
        item_t = args[0] if args else Any
        items = [_convert(v, item_t, f'{where}[{i}]') for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f'{where}: expected a mapping, got {type(value).__name__}')
        args = get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, vt, f'{where}.{k}') for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f'{where}: expected true/false, got {value!r}')
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f'{where}: expected an integer, got {value!r}')
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f'{where}: expected a number, got {value!r}')
        if math.isnan(float(value)):
            raise ConfigError(f'{where}: NaN is not allowed')
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f'{where}: expected a string, got {value!r}')
        return value
    return value


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f'{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}')
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f'{where}.{name}' if where else name)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f'{where}: missing required key(s) {missing}')
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(_at(where, str(err), fields)) from None
    return obj


_NAME = r'[A-Za-z_][A-Za-z0-9_]*'
_KEY_PATH = re.compile(rf'^({_NAME}(?:\.{_NAME}|\[\d+\])*)(?::\s*|\s+)(.*)$', re.S)


def _at(where: str, msg: str, fields: dict[str, Any]) -> str:
    """``msg`` (a dataclass's own validation error) located at ``where``, with the full key path.

    A message that starts with a key of the dataclass (``'priority must be in 1..98'``,
    ``'groups.control.thread: unknown group'``) is joined to the path of the dataclass:
    ``'<file>: rt.groups.control.priority: must be in 1..98'``; any other message is prefixed.
    """
    m = _KEY_PATH.match(msg)
    if m is not None:
        key = m.group(1)
        head = re.split(r'[.\[]', key)[0]
        own = re.split(r'[.: ]', where)[-1] if where else ''
        if head == own and head not in fields and key != head:  # 'ssm.x ...' raised by the ssm section
            key = key[len(head) + 1 :]
            head = re.split(r'[.\[]', key)[0]
        if head in fields:
            return f'{where}.{key}: {m.group(2)}' if where else f'{key}: {m.group(2)}'
    return f'{where}: {msg}' if where else msg


def from_mapping(cls: type[T], data: dict[str, Any] | None, where: str = '') -> T:
    """Build dataclass `cls` from `data`, strictly.

    Args:
        cls: a dataclass type; nested dataclass fields are built recursively.
        data: the mapping (None means all defaults).
        where: location prefix for messages, e.g. ``'config/default.yaml: safety'``.

    Raises:
        ConfigError: unknown key, wrong type, NaN, or a ``__post_init__`` ValueError; the message
            names the key path and ``where``.
    """
    return _build(cls, data or {}, where)
