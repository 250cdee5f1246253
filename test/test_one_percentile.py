"""One percentile (issue #13): every reported percentile / median goes through
:mod:`rt_safe_rl.core.stats` (nearest rank). numpy's and the statistics module's own quantile
functions appear only where an estimator, not a reported figure, needs them (listed with why)."""

from __future__ import annotations

import re
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / 'rt_safe_rl'
OTHER_QUANTILES = re.compile(
    r'\bnp\.(?:nan)?(?:median|percentile|quantile)\(|\bstatistics\.(?:median\w*|quantiles)\('
)
ALLOWED = {
    'core/stats.py': 'the definition itself',
    'core/monitoring/trend.py': 'robust trend detector (median / MAD of a baseline), not a reported figure',
    'bench/monitor_bench.py': 'bootstrap resampling: a vectorised median over 2000 resamples (axis=1)',
    'bench/bag.py': "a recording's typical sample period (rate estimate), not a reported figure",
    'fleet/task.py': 'fills the last sample interval with the typical one, not a reported figure',
}


def _uses() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for p in sorted(PKG.rglob('*.py')):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            code = line.split('#', 1)[0]
            if OTHER_QUANTILES.search(code):
                found.setdefault(p.relative_to(PKG).as_posix(), []).append(i)
    return found


def test_percentiles_only_through_core_stats() -> None:
    bad = {f: lines for f, lines in _uses().items() if f not in ALLOWED}
    assert not bad, f'use rt_safe_rl.core.stats.percentile(s) instead (file: lines): {bad}'


def test_the_allowed_list_is_still_needed() -> None:
    used = _uses()
    stale = sorted(f for f in ALLOWED if f != 'core/stats.py' and f not in used)
    assert not stale, f'no other quantile function left in {stale}: remove them from ALLOWED'


def test_the_pattern_sees_the_usual_spellings() -> None:
    spellings = ('x = np.median(a)', 'np.percentile(a, 99)', 'np.nanquantile(a, 0.5)', 'statistics.median(v)')
    for text in spellings:
        assert OTHER_QUANTILES.search(text), text
    assert not OTHER_QUANTILES.search('stats.percentile(a, 50)')
