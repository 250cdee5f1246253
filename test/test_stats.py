"""Tests of rt_safe_rl.core.stats: percentiles, summaries, histograms, jitter, LogHistogram."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rt_safe_rl.core import stats


def test_percentiles_nearest_rank_on_1_to_1000() -> None:
    """Nearest rank of 1..1000: p50 = 500, p90 = 900, p99 = 990, p99.9 = 999, max = 1000."""
    data = np.arange(1, 1001, dtype=np.float64)
    np.random.default_rng(0).shuffle(data)
    p = stats.percentiles(data)
    assert p == {'p50': 500.0, 'p90': 900.0, 'p99': 990.0, 'p999': 999.0, 'max': 1000.0}


def test_percentiles_are_observed_values() -> None:
    """Every percentile is one of the samples (no interpolation)."""
    data = np.array([1.0, 10.0, 100.0, 1000.0])
    p = stats.percentiles(data)
    assert all(v in data for v in p.values())
    assert p['p50'] == 10.0 and p['max'] == 1000.0


def test_empty_and_nonfinite() -> None:
    """Empty input -> NaN (not a fake 0); NaN/inf samples are ignored."""
    p = stats.percentiles([])
    assert all(math.isnan(v) for v in p.values())
    s = stats.summarize([])
    assert s['count'] == 0 and math.isnan(s['p99'])
    s2 = stats.summarize([1.0, math.nan, 3.0, math.inf])
    assert s2['count'] == 2 and s2['max'] == 3.0 and s2['mean'] == 2.0


def test_summarize_ns_reports_microseconds() -> None:
    """summarize_ns divides by 1000 and keeps the count."""
    s = stats.summarize_ns(np.array([1_000, 2_000, 3_000], dtype=np.int64))
    assert list(s) == list(stats.SUMMARY_KEYS)
    assert s['count'] == 3 and s['min'] == 1.0 and s['max'] == 3.0 and s['p50'] == 2.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e9, allow_nan=False), min_size=1, max_size=300))
def test_percentiles_monotone_and_bounded(xs: list[float]) -> None:
    """p50 <= p90 <= p99 <= p999 <= max, all within [min, max]."""
    p = stats.percentiles(xs)
    seq = [p['p50'], p['p90'], p['p99'], p['p999'], p['max']]
    assert seq == sorted(seq)
    assert min(xs) <= seq[0] and seq[-1] == max(xs)


@pytest.mark.parametrize('log', [True, False])
def test_histogram_counts_every_sample(log: bool) -> None:
    """Counts sum to the number of finite samples, including clamped out-of-range ones."""
    data = np.concatenate([np.random.default_rng(1).lognormal(3, 1, 1000), [0.0, -5.0]])
    counts, edges = stats.histogram(data, bins=30, log=log, lo=1.0, hi=100.0)
    assert counts.sum() == data.size
    assert edges.size == 31 and edges[0] == pytest.approx(1.0) and edges[-1] == pytest.approx(100.0)
    with pytest.raises(ValueError):
        stats.histogram(data, bins=0)


def test_cdf() -> None:
    """The empirical CDF is sorted and ends at 1."""
    x, f = stats.cdf([3.0, 1.0, 2.0])
    assert list(x) == [1.0, 2.0, 3.0] and list(f) == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_jitter_and_misses() -> None:
    """|dt - T| with nominal and median period; |diff(diff(t))|; misses strictly above deadline."""
    t = np.array([0, 1_000_000, 2_100_000, 3_000_000, 4_000_000], dtype=np.int64)
    assert list(stats.period_jitter_ns(t, 1_000_000)) == [0, 100_000, 100_000, 0]
    assert list(stats.period_jitter_ns(t)) == [0, 100_000, 100_000, 0]  # median interval 1 ms
    assert list(stats.frame_jitter_ns(t)) == [100_000, 200_000, 100_000]
    assert stats.period_jitter_ns([5]).size == 0
    assert stats.deadline_misses([999, 1000, 1001, 5000], 1000) == 2


def test_ratio() -> None:
    """Ratio is NaN for bad denominators, never a division error."""
    assert stats.ratio(10.0, 2.0) == 5.0
    assert math.isnan(stats.ratio(1.0, 0.0)) and math.isnan(stats.ratio(math.nan, 1.0))


def test_log_histogram_matches_exact_within_one_bin() -> None:
    """LogHistogram percentiles over-estimate the exact ones by at most one bin width."""
    rng = np.random.default_rng(2)
    data = (rng.lognormal(11, 0.7, 20_000)).astype(np.int64)  # ~60 us typical
    h = stats.LogHistogram(lo_ns=1_000, hi_ns=100_000_000, bins_per_decade=20)
    for d in data[:10_000]:
        h.record_ns(int(d))
    h.record_many_ns(data[10_000:])
    assert h.count == data.size and int(h.snapshot().sum()) == data.size
    step = 10 ** (1 / 20)
    exact = stats.percentiles(data)
    for key, q in stats.PERCENTILES:
        approx = h.percentile_ns(q)
        assert exact[key] <= approx <= exact[key] * step * 1.0001, key
    assert h.max_ns == int(data.max())
    s = h.summary_us()
    assert s['max'] == pytest.approx(data.max() / 1e3)
    assert s['mean'] == pytest.approx(data.mean() / 1e3, rel=1e-6)


def test_log_histogram_under_overflow_and_reset() -> None:
    """Values below lo and above hi land in the end bins; reset empties it."""
    h = stats.LogHistogram(lo_ns=1_000, hi_ns=10_000, bins_per_decade=10)
    h.record_ns(10)
    h.record_ns(50_000)
    c = h.snapshot()
    assert c[0] == 1 and c[-1] == 1 and c.sum() == 2
    assert h.percentile_ns(100.0) == 50_000
    h.reset()
    assert h.count == 0 and math.isnan(h.percentile_ns(50.0))
    with pytest.raises(ValueError):
        stats.LogHistogram(lo_ns=10, hi_ns=5)


def test_percentile_is_the_nearest_rank_of_percentiles() -> None:
    """One definition: percentile(x, q) agrees with percentiles(x) and numpy's inverted_cdf."""
    import numpy as np

    from rt_safe_rl.core import stats

    x = np.random.default_rng(3).standard_normal(1001)
    p = stats.percentiles(x)
    assert stats.percentile(x, 50) == p['p50'] and stats.percentile(x, 99.9) == p['p999']
    assert stats.percentile(x, 99) == float(np.percentile(x, 99, method='inverted_cdf'))
    assert np.isnan(stats.percentile([], 50)) and stats.percentile([np.nan, 2.0], 50) == 2.0
