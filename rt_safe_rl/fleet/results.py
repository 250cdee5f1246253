"""Fleet results: rows per (bag, variant) -> aggregates per variant and their diff to the baseline
(the first variant); the JSON document ``{"engine": "ray", "rows", "variants", "scaling"}``.

Percentiles only through :mod:`rt_safe_rl.core.stats` (nearest rank over the pooled samples of
every bag of a variant). Pure Python + numpy; not RT code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rt_safe_rl.core import stats

SCHEMA = 'rt_safe_rl.fleet.replay/1'
#: metric key -> (label with unit, how rows combine into a variant's value)
METRICS: dict[str, tuple[str, str]] = {
    'interventions_per_min': ('interventions per minute', 'rate'),
    'stops': ('stops', 'sum'),
    'stopped_s': ('total stopped time (s)', 'sum'),
    'min_human_separation_m': ('minimum human separation (m)', 'min'),
    'below_protective_s': ('time below the protective distance (s)', 'sum'),
    'max_velocity_ratio': ('max |velocity| / limit', 'max'),
    'max_acceleration_ratio': ('max |acceleration| / limit', 'max'),
    'violations': ('limit violations (must be 0)', 'sum'),
    'policy_us.p50': ('policy compute p50 (us)', 'pooled'),
    'policy_us.p99': ('policy compute p99 (us)', 'pooled'),
    'safety_us.p50': ('safety compute p50 (us)', 'pooled'),
    'safety_us.p99': ('safety compute p99 (us)', 'pooled'),
}


def metric_of(row: Mapping[str, Any], key: str) -> float | None:
    """A (possibly dotted) metric of a row or variant; None when absent / not finite."""
    cur: Any = row
    for part in key.split('.'):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    if cur is None:
        return None
    v = float(cur)
    return v if math.isfinite(v) else None


def _combine(rows: Sequence[Mapping[str, Any]], key: str, how: str) -> float | None:
    vals = [v for v in (metric_of(r, key) for r in rows) if v is not None]
    if not vals:
        return None
    if how == 'sum':
        return float(sum(vals))
    if how == 'min':
        return float(min(vals))
    return float(max(vals))


def aggregate(
    variants: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    samples: Mapping[tuple[int, str], Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One entry per variant: its description, counts and every metric of :data:`METRICS`,
    plus ``diff`` against variant 0 (``{metric: {delta, ratio}}``; None where undefined).

    ``samples``: (variant index, bag) -> {'policy_us': array, 'safety_us': array}.
    """
    out: list[dict[str, Any]] = []
    for v in variants:
        idx = int(v['index'])
        mine = [r for r in rows if int(r.get('variant_index', -1)) == idx]
        ok = [r for r in mine if 'error' not in r]
        agg: dict[str, Any] = {
            **dict(v),
            'bags': len(ok),
            'errors': len(mine) - len(ok),
            'states': int(sum(int(r.get('states', 0)) for r in ok)),
            'duration_s': float(sum(float(r.get('duration_s', 0.0)) for r in ok)),
            'interventions': int(sum(int(r.get('interventions', 0)) for r in ok)),
            'latched_stops': int(sum(int(r.get('latched_stops', 0)) for r in ok)),
            'command_sha256': {str(r['bag']): r.get('command_sha256', '') for r in ok},
        }
        minutes = agg['duration_s'] / 60.0
        agg['interventions_per_min'] = agg['interventions'] / minutes if minutes > 0 else None
        for key, (_label, how) in METRICS.items():
            if how in ('sum', 'min', 'max'):
                agg[key] = _combine(ok, key, how)
        for stage in ('policy_us', 'safety_us'):
            parts = [np.asarray(s[stage]) for (i, _b), s in samples.items() if i == idx and stage in s]
            pooled = np.concatenate(parts) if parts else np.zeros(0)
            p = stats.percentiles(pooled)
            agg[stage] = {'p50': p['p50'], 'p99': p['p99'], 'count': int(pooled.size)}
        out.append(agg)
    base = out[0] if out else {}
    for agg in out:
        diff: dict[str, Any] = {}
        for key in METRICS:
            a, b = metric_of(agg, key), metric_of(base, key)
            if a is None or b is None:
                diff[key] = {'delta': None, 'ratio': None}
            else:
                diff[key] = {'delta': a - b, 'ratio': stats.ratio(a, b) if b != 0 else None}
        agg['diff_vs_baseline'] = diff
    return out


def split_samples(rows: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    """Pop the private ``_samples`` of each row (arrays stay out of the JSON)."""
    out: dict[tuple[int, str], dict[str, Any]] = {}
    for r in rows:
        s = r.pop('_samples', None)
        if s is not None:
            out[(int(r['variant_index']), str(r['bag']))] = s
    return out


def sort_rows(rows: Sequence[dict[str, Any]], bag_order: Sequence[str]) -> list[dict[str, Any]]:
    """Rows ordered by variant, then by the bag order of the command line."""
    pos = {b: i for i, b in enumerate(bag_order)}
    return sorted(rows, key=lambda r: (int(r.get('variant_index', 0)), pos.get(str(r['bag']), 1 << 30)))


def document(
    rows: Sequence[dict[str, Any]],
    variants: Sequence[dict[str, Any]],
    scaling: Mapping[str, Any],
    complete: bool,
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON document."""
    ok = [r for r in rows if 'error' not in r]
    return {
        'engine': 'ray',
        'schema': SCHEMA,
        'complete': complete,
        'metadata': dict(metadata),
        'summary': {
            'rows': len(rows),
            'ok_rows': len(ok),
            'error_rows': len(rows) - len(ok),
            'violations': int(sum(int(r.get('violations', 0)) for r in ok)),
            'states': int(sum(int(r.get('states', 0)) for r in ok)),
        },
        'rows': list(rows),
        'variants': list(variants),
        'scaling': dict(scaling),
    }
