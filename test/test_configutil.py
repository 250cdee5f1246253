"""Strict YAML -> dataclass conversion (core/configutil.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from rt_safe_rl.core.configutil import from_mapping
from rt_safe_rl.core.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    gain: float = 1.0


@dataclass(frozen=True)
class Outer:
    name: str = 'x'
    point_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    mode: Literal['hold', 'linear'] = 'hold'
    count: int = 1
    inner: Inner = field(default_factory=Inner)
    items: list[int] = field(default_factory=list)


def test_values_converted_and_nested() -> None:
    """Fixed-size tuples, literals, nested dataclasses and lists come back as values."""
    cfg = from_mapping(Outer, {'point_m': [1, 2, 3], 'mode': 'linear', 'inner': {'gain': 2}, 'items': [4, 5]})
    assert cfg.point_m == (1.0, 2.0, 3.0)
    assert cfg.mode == 'linear'
    assert cfg.inner.gain == 2.0
    assert cfg.items == [4, 5]


@pytest.mark.parametrize(
    ('data', 'fragment'),
    [
        ({'nmae': 'typo'}, "unknown key(s) ['nmae']"),
        ({'count': 'three'}, 'cfg.yaml: s.count: expected an integer'),
        ({'count': True}, 'expected an integer'),
        ({'point_m': [1, 2]}, 'expected 3 items'),
        ({'mode': 'cubic'}, "expected one of ['hold', 'linear']"),
        ({'inner': {'gain': float('nan')}}, 's.inner.gain: NaN is not allowed'),
        ({'inner': {'gian': 1.0}}, "s.inner: unknown key(s) ['gian']"),
    ],
)
def test_bad_input_names_key_and_file(data: dict[str, object], fragment: str) -> None:
    """Every rejection names the offending key path and the source."""
    with pytest.raises(ConfigError) as err:
        from_mapping(Outer, data, 'cfg.yaml: s')
    assert fragment in str(err.value)
    assert 'cfg.yaml' in str(err.value)
