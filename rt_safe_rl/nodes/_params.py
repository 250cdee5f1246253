"""Config dataclass <-> flat ROS parameter values: :func:`flatten_dataclass` lists the leaves of a
nested config dataclass as ``{'a.b': value}``, :func:`nest_flat` turns such a dict back into the
nested mapping that :func:`~rt_safe_rl.core.configutil.from_mapping` validates. Non-RT.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def flatten_dataclass(obj: Any, prefix: str = '') -> dict[str, Any]:
    """Leaves of a (nested) config dataclass as {'a.b': value}."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out.update(flatten_dataclass(v, f'{prefix}{f.name}.'))
        else:
            out[f'{prefix}{f.name}'] = v
    return out


def nest_flat(flat: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_dataclass`: ``{'a.b': v}`` -> ``{'a': {'b': v}}``."""
    out: dict[str, Any] = {}
    for key, v in flat.items():
        cur = out
        parts = key.split('.')
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = v
    return out
