"""Regression baseline: a stored benchmark JSON report -> per-stage p50/p99 (s). Non-RT."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.monitoring.config import STAGES

_Q_KEY = re.compile(r'^(p50|median|p99)(?:_(s|ms|us|ns))?$')
_STAGE_KEY = re.compile(r'^(' + '|'.join(STAGES) + r')(?:_(s|ms|us|ns))?$')
_UNIT = {'s': 1.0, 'ms': 1e-3, 'us': 1e-6, 'ns': 1e-9}


def _stage_percentiles(d: Mapping[str, Any], unit: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        m = _Q_KEY.match(str(k))
        if m and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            q = 'p50' if m.group(1) in ('p50', 'median') else 'p99'
            out[q] = float(v) * _UNIT[m.group(2) or unit]
    return out


def _find_stages(node: Any, depth: int = 0) -> dict[str, dict[str, float]]:
    """Breadth-first: the first mapping level where stage names hold p50/p99 entries."""
    if not isinstance(node, Mapping) or depth > 6:
        return {}
    found: dict[str, dict[str, float]] = {}
    for k, v in node.items():
        m = _STAGE_KEY.match(str(k))
        if m and isinstance(v, Mapping):
            p = _stage_percentiles(v, m.group(2) or 'us')
            if p:
                found[m.group(1)] = p
    if found:
        return found
    for v in node.values():
        sub = _find_stages(v, depth + 1)
        if sub:
            return sub
    return {}


def load_benchmark_baseline(path: str | Path) -> dict[str, dict[str, float]]:
    """Per-stage baseline percentiles (s) from a stored benchmark JSON report.

    Accepts any report where a mapping keyed by stage names ('e2e', 'period', 'inference',
    'safety') holds percentile keys named ``p50_<unit>``/``median_<unit>``/``p99_<unit>`` with unit
    s, ms, us or ns, at any nesting depth (e.g. ``{"stages": {"e2e": {"p50_us": 110, "p99_us": 300}}}``
    or the ``rt-safe-rl bench monitor`` output). Bare ``p50``/``p99`` keys take the unit of the
    stage key (``"e2e_us": {"p50": 110, "p99": 300}``, the ``rt-safe-rl bench replay`` report.json
    layout), else microseconds (core/stats summaries). Returns ``{'e2e': {'p50': 1.1e-4, ...}}``.

    Raises:
        ConfigError: file missing, not JSON, or no stage percentiles in it.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f'monitor.regression.baseline_report: file not found: {p}')
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f'monitor.regression.baseline_report: {p} is not valid JSON: {err}') from None
    stages = _find_stages(data)
    if not stages:
        raise ConfigError(
            f'monitor.regression.baseline_report: {p} has no stage percentiles '
            f'(expected e.g. stages.e2e.p99_us; stage names {list(STAGES)})'
        )
    return stages
