"""Latency statistics shared by the benchmarks and the monitor: percentiles, histograms, jitter.

Two families of helpers:

* **Batch** functions (:func:`summarize_ns`, :func:`percentiles`, :func:`histogram`,
  :func:`period_jitter_ns`, :func:`deadline_misses`) take a numpy array of samples and return
  plain Python numbers/dicts. They allocate and sort: call them off the RT path (report time,
  monitor publish time).
* :class:`LogHistogram`, a fixed-size log-spaced histogram whose :meth:`LogHistogram.record_ns`
  is RT-safe (integer arithmetic into a preallocated numpy array, no allocation beyond small
  Python ints/floats) and which answers approximate percentiles at any time without keeping the
  samples. The monitor uses it for unbounded runs; the benchmark keeps exact samples.

Percentile definition: the *nearest-rank* (``inverted_cdf``) percentile, i.e. the smallest
observed sample ``x`` such that at least ``q`` % of the samples are ``<= x``. Every reported
value is a real observation, never an interpolation between two.

Units: inputs are integer nanoseconds (``_ns``) unless a name says otherwise; summaries are in
microseconds (``_us``) because that is the scale of a 1 kHz loop.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

#: Percentiles every summary reports, with their key names.
PERCENTILES: Final[tuple[tuple[str, float], ...]] = (
    ('p50', 50.0),
    ('p90', 90.0),
    ('p99', 99.0),
    ('p999', 99.9),
)
#: Keys of a summary produced by :func:`summarize_ns` / :func:`summarize`.
SUMMARY_KEYS: Final[tuple[str, ...]] = ('count', 'min', 'mean', 'std', 'p50', 'p90', 'p99', 'p999', 'max')

FloatArray = npt.NDArray[np.float64]


def _as_1d(samples: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(samples, dtype=np.float64).reshape(-1)
    return arr[np.isfinite(arr)]


def percentiles(samples: npt.ArrayLike) -> dict[str, float]:
    """Nearest-rank p50/p90/p99/p99.9 and max of ``samples`` (same unit as the input).

    Non-finite samples are ignored. An empty input gives NaN for every key (a report can show
    "no data" instead of a fake zero). Not RT-safe (sorts a copy).
    """
    arr = _as_1d(samples)
    if arr.size == 0:
        out = {k: math.nan for k, _ in PERCENTILES}
        out['max'] = math.nan
        return out
    srt = np.sort(arr)
    out = {k: float(srt[nearest_rank_index(q, srt.size)]) for k, q in PERCENTILES}
    out['max'] = float(srt[-1])
    return out


def percentile(samples: npt.ArrayLike, q: float) -> float:
    """Nearest-rank ``q`` percentile (0 < q <= 100) of ``samples``, same unit as the input; NaN
    for no finite sample. The package's one percentile definition. Not RT-safe (sorts a copy)."""
    arr = _as_1d(samples)
    if arr.size == 0:
        return math.nan
    return float(np.partition(arr, nearest_rank_index(q, arr.size))[nearest_rank_index(q, arr.size)])


def nearest_rank_index(q: float, n: int) -> int:
    """0-based index of the nearest-rank ``q`` percentile in ``n`` sorted samples (``n >= 1``).

    rank = ceil(q/100 * n) with a 1e-9 guard so that e.g. 99.9 % of 1000 is rank 999, not 1000
    by float round-off.
    """
    rank = math.ceil(q / 100.0 * n - 1e-9)
    return min(max(rank, 1), n) - 1


def summarize(samples: npt.ArrayLike) -> dict[str, float]:
    """Full summary (count, min, mean, std, p50, p90, p99, p999, max) in the input's unit.

    ``count`` is the number of finite samples (as a float for a uniform dict type; it is integral).
    Empty input: count 0 and NaN elsewhere. Not RT-safe.
    """
    arr = _as_1d(samples)
    out: dict[str, float] = {'count': float(arr.size)}
    if arr.size == 0:
        out.update({k: math.nan for k in SUMMARY_KEYS if k != 'count'})
        return out
    out['min'] = float(arr.min())
    out['mean'] = float(arr.mean())
    out['std'] = float(arr.std())
    out.update(percentiles(arr))
    return {k: out[k] for k in SUMMARY_KEYS}


def summarize_ns(durations_ns: npt.ArrayLike) -> dict[str, float]:
    """:func:`summarize` of nanosecond durations, reported in microseconds (count unchanged)."""
    arr = _as_1d(durations_ns)
    out = summarize(arr / 1e3)
    return out


def histogram(
    samples: npt.ArrayLike,
    bins: int = 60,
    log: bool = True,
    lo: float | None = None,
    hi: float | None = None,
) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Histogram ``(counts, edges)`` of ``samples`` with ``bins`` bins.

    ``log=True`` uses log-spaced edges (latency tails span decades); non-positive samples are
    then clamped into the first bin. ``lo``/``hi`` default to the data range. Samples outside
    ``[lo, hi]`` are clamped into the end bins so that ``counts.sum()`` equals the number of
    finite samples. Not RT-safe.
    """
    if bins < 1:
        raise ValueError(f'histogram needs bins >= 1, got {bins}')
    arr = _as_1d(samples)
    if arr.size == 0:
        return np.zeros(bins, dtype=np.int64), np.linspace(0.0, 1.0, bins + 1)
    if log:
        pos = arr[arr > 0]
        lo_v = lo if lo is not None else (float(pos.min()) if pos.size else 1e-3)
        hi_v = hi if hi is not None else float(arr.max())
        lo_v = max(lo_v, 1e-12)
        hi_v = max(hi_v, lo_v * 1.0001)
        edges = np.geomspace(lo_v, hi_v, bins + 1)
    else:
        lo_v = lo if lo is not None else float(arr.min())
        hi_v = hi if hi is not None else float(arr.max())
        if hi_v <= lo_v:
            hi_v = lo_v + 1.0
        edges = np.linspace(lo_v, hi_v, bins + 1)
    clipped = np.clip(arr, edges[0], edges[-1])
    counts, _ = np.histogram(clipped, bins=edges)
    return counts.astype(np.int64), edges


def cdf(samples: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Empirical CDF: sorted finite samples and the fraction ``<=`` each (``(x, F(x))``). Not RT-safe."""
    arr = np.sort(_as_1d(samples))
    if arr.size == 0:
        return arr, arr.copy()
    frac = np.arange(1, arr.size + 1, dtype=np.float64) / arr.size
    return arr, frac


def intervals_ns(t_ns: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Successive differences of monotonic timestamps (ns): the actual periods."""
    t = np.asarray(t_ns, dtype=np.int64).reshape(-1)
    if t.size < 2:
        return np.zeros(0, dtype=np.int64)
    return np.diff(t)


def period_jitter_ns(t_ns: npt.ArrayLike, period_ns: int | None = None) -> npt.NDArray[np.int64]:
    """Output-period jitter ``|dt - T|`` in ns for timestamps ``t_ns``.

    ``period_ns`` is the nominal period ``T``; ``None`` uses the median interval (for replays at
    the recorded, possibly irregular, rate). Returns an empty array for fewer than 2 stamps.
    Not RT-safe.
    """
    dt = intervals_ns(t_ns)
    if dt.size == 0:
        return dt
    nominal = int(np.median(dt)) if period_ns is None else int(period_ns)
    return np.abs(dt - nominal)


def frame_jitter_ns(t_ns: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """ros2_benchmark-style jitter ``|diff(diff(t))|`` (ns): change between consecutive periods."""
    dt = intervals_ns(t_ns)
    if dt.size < 2:
        return np.zeros(0, dtype=np.int64)
    return np.abs(np.diff(dt))


def deadline_misses(durations_ns: npt.ArrayLike, deadline_ns: int) -> int:
    """Number of samples strictly above ``deadline_ns`` (e.g. e2e latency against the period)."""
    arr = np.asarray(durations_ns).reshape(-1)
    return int(np.count_nonzero(arr > deadline_ns))


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when either is NaN or the denominator is not positive."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator <= 0.0:
        return math.nan
    return numerator / denominator


class LogHistogram:
    """Fixed log-spaced histogram of nanosecond durations with an RT-safe :meth:`record_ns`.

    Bins: one underflow bin for ``< lo_ns``, ``bins_per_decade`` bins per decade from ``lo_ns``
    to ``hi_ns``, one overflow bin for ``>= hi_ns``. Percentiles from the histogram return the
    upper edge of the bin holding the rank (a conservative over-estimate, at most one bin width,
    about ``10**(1/bins_per_decade)`` relative; the exact max is tracked separately).
    One writer thread; readers call :meth:`snapshot` (copies) and tolerate a sample in flight.
    """

    __slots__ = (
        '_counts',
        '_inv_log_step',
        '_log_lo',
        'bins_per_decade',
        'count',
        'edges_ns',
        'hi_ns',
        'lo_ns',
        'max_ns',
        'n_bins',
        'sum_ns',
    )

    def __init__(self, lo_ns: int = 1_000, hi_ns: int = 100_000_000, bins_per_decade: int = 20) -> None:
        if lo_ns <= 0 or hi_ns <= lo_ns or bins_per_decade < 1:
            raise ValueError(
                f'LogHistogram needs 0 < lo_ns < hi_ns and bins_per_decade >= 1, '
                f'got {lo_ns}, {hi_ns}, {bins_per_decade}'
            )
        self.lo_ns = int(lo_ns)
        self.hi_ns = int(hi_ns)
        self.bins_per_decade = int(bins_per_decade)
        decades = math.log10(self.hi_ns / self.lo_ns)
        inner = max(1, math.ceil(decades * self.bins_per_decade - 1e-9))
        self.n_bins = inner + 2
        self._log_lo = math.log10(self.lo_ns)
        self._inv_log_step = float(self.bins_per_decade)
        inner_edges = self.lo_ns * 10.0 ** (np.arange(inner + 1) / self.bins_per_decade)
        inner_edges[-1] = max(inner_edges[-1], float(self.hi_ns))
        #: bin edges in ns, len n_bins + 1 (first bin [0, lo), last [hi, inf)).
        self.edges_ns = np.concatenate(([0.0], inner_edges, [math.inf]))
        self._counts = np.zeros(self.n_bins, dtype=np.int64)
        self.count = 0
        self.sum_ns = 0
        self.max_ns = 0

    def record_ns(self, duration_ns: int) -> None:
        """Add one duration in ns (RT-safe: no array allocation, O(1))."""
        if duration_ns < self.lo_ns:
            idx = 0
        elif duration_ns >= self.hi_ns:
            idx = self.n_bins - 1
        else:
            idx = 1 + int((math.log10(duration_ns) - self._log_lo) * self._inv_log_step)
            if idx > self.n_bins - 2:
                idx = self.n_bins - 2
        self._counts[idx] += 1
        self.count += 1
        self.sum_ns += duration_ns
        if duration_ns > self.max_ns:
            self.max_ns = duration_ns

    def record_many_ns(self, durations_ns: npt.ArrayLike) -> None:
        """Add many durations at once (vectorised; allocates temporaries: not RT-safe)."""
        arr = np.asarray(durations_ns, dtype=np.float64).reshape(-1)
        if arr.size == 0:
            return
        idx = np.searchsorted(self.edges_ns, arr, side='right') - 1
        np.clip(idx, 0, self.n_bins - 1, out=idx)
        self._counts += np.bincount(idx, minlength=self.n_bins).astype(np.int64)
        self.count += int(arr.size)
        self.sum_ns += int(arr.sum())
        self.max_ns = max(self.max_ns, int(arr.max()))

    def reset(self) -> None:
        """Zero all counts (call from the writer thread or while it is stopped)."""
        self._counts[:] = 0
        self.count = 0
        self.sum_ns = 0
        self.max_ns = 0

    def snapshot(self) -> npt.NDArray[np.int64]:
        """Copy of the bin counts (not RT-safe)."""
        return self._counts.copy()

    def percentile_ns(self, q: float, counts: npt.NDArray[np.int64] | None = None) -> float:
        """Upper edge (ns) of the bin holding the nearest-rank ``q`` percentile; NaN when empty.

        Capped at the exact observed max, so p100 equals the max.
        """
        c = self._counts if counts is None else counts
        total = int(c.sum())
        if total == 0:
            return math.nan
        rank = nearest_rank_index(q, total) + 1
        idx = int(np.searchsorted(np.cumsum(c), rank, side='left'))
        upper = float(self.edges_ns[idx + 1])
        return min(upper, float(self.max_ns))

    def summary_us(self) -> dict[str, float]:
        """count, mean, p50..p999, max in microseconds from one consistent snapshot (not RT-safe)."""
        counts = self.snapshot()
        total = int(counts.sum())
        out: dict[str, float] = {'count': float(total)}
        out['mean'] = (self.sum_ns / self.count / 1e3) if self.count else math.nan
        for key, q in PERCENTILES:
            out[key] = self.percentile_ns(q, counts) / 1e3
        out['max'] = (self.max_ns / 1e3) if total else math.nan
        return out
