"""Rolling windows of stage samples (``(t_end_ns, duration_ns)``) with nearest-rank percentiles,
rate, jitter and Prometheus histogram buckets. numpy only; non-RT (the monitor / statistics thread)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.monitoring.config import HISTOGRAM_BUCKETS_S, NS_PER_S


class StageSummary(NamedTuple):
    """Window statistics of one stage (seconds; rate in Hz). NaN where undefined."""

    n_samples: int
    rate_hz: float
    p50_s: float
    p99_s: float
    max_s: float
    mean_s: float
    jitter_p99_s: float  # p99 of |interval between samples - median interval|


_EMPTY_SUMMARY = StageSummary(0, 0.0, math.nan, math.nan, math.nan, math.nan, math.nan)


class StageWindow:
    """The last ``capacity`` ``(t_end_ns, duration_ns)`` samples of one stage (non-RT).

    Also keeps cumulative histogram bucket counts, the sum of durations and the total count for
    Prometheus. Storage is preallocated; :meth:`extend` does vectorised numpy work only.
    """

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = int(capacity)
        self._buf = np.zeros((self.capacity, 2), dtype=np.float64)
        self._head = 0  # next write slot
        self._n = 0  # valid samples
        self.total = 0  # samples ever ingested
        self.sum_s = 0.0  # sum of all durations (s)
        self.first_t_ns: float = math.nan  # t_end of the first sample ever
        self.last_t_ns: float = math.nan  # t_end of the newest sample
        self._bounds_ns = np.asarray(HISTOGRAM_BUCKETS_S, dtype=np.float64) * NS_PER_S
        self.bucket_counts = np.zeros(len(HISTOGRAM_BUCKETS_S) + 1, dtype=np.int64)  # last: +Inf

    def extend(self, samples: npt.NDArray[np.float64]) -> None:
        """Append samples (n, 2): columns t_end_ns, duration_ns. Older ones fall out of the ring."""
        n = int(samples.shape[0])
        if n == 0:
            return
        if math.isnan(self.first_t_ns):
            self.first_t_ns = float(samples[0, 0])
        self.last_t_ns = float(samples[n - 1, 0])
        dur = samples[:, 1]
        self.total += n
        self.sum_s += float(dur.sum()) / NS_PER_S
        idx = np.searchsorted(self._bounds_ns, dur, side='left')  # le-bucket index
        self.bucket_counts += np.bincount(idx, minlength=self.bucket_counts.shape[0])
        if n >= self.capacity:
            self._buf[:] = samples[n - self.capacity :]
            self._head = 0
            self._n = self.capacity
            return
        first = min(n, self.capacity - self._head)
        self._buf[self._head : self._head + first] = samples[:first]
        if n > first:
            self._buf[: n - first] = samples[first:]
        self._head = (self._head + n) % self.capacity
        self._n = min(self.capacity, self._n + n)

    def cumulative_buckets(self) -> list[tuple[str, int]]:
        """Prometheus ``le`` buckets: [(upper bound as str, cumulative count), ..., ('+Inf', total)]."""
        cum = np.cumsum(self.bucket_counts)
        out = [(repr(float(b)), int(c)) for b, c in zip(HISTOGRAM_BUCKETS_S, cum[:-1], strict=True)]
        out.append(('+Inf', int(cum[-1])))
        return out

    def samples(self) -> npt.NDArray[np.float64]:
        """All retained samples in time order (a copy, (n, 2))."""
        if self._n < self.capacity:
            return self._buf[: self._n].copy()
        return np.concatenate((self._buf[self._head :], self._buf[: self._head]))

    def window(self, now_ns: int, window_s: float) -> npt.NDArray[np.float64]:
        """Retained samples with ``t_end_ns >= now_ns - window_s`` (a copy, (n, 2))."""
        s = self.samples()
        if s.shape[0] == 0:
            return s
        t0 = now_ns - window_s * NS_PER_S
        start = int(np.searchsorted(s[:, 0], t0, side='left'))
        return s[start:]

    def summary(self, now_ns: int, window_s: float) -> StageSummary:
        """Percentiles, rate and jitter over the last ``window_s`` seconds.

        Nearest-rank percentiles (as :mod:`rt_safe_rl.core.stats`) by one ``np.partition`` per
        quantity, no ``np.percentile`` overhead: ~0.1 ms for 10 000 samples.
        """
        s = self.window(now_ns, window_s)
        n = int(s.shape[0])
        if n == 0:
            return _EMPTY_SUMMARY
        d = s[:, 1]
        k50, k99 = _rank(50.0, n), _rank(99.0, n)
        part = np.partition(d, (k50, k99, n - 1))
        p50, p99, mx = float(part[k50]), float(part[k99]), float(part[n - 1])
        # Rate over the window, or over the time since the first sample when younger than the window.
        span_s = min(window_s, max((now_ns - self.first_t_ns) / NS_PER_S, 1e-9))
        rate = n / span_s if n > 1 else 0.0
        jitter = math.nan
        if n > 2:
            dt = np.diff(s[:, 0])
            m = n - 1
            med = float(np.partition(dt, _rank(50.0, m))[_rank(50.0, m)])
            np.subtract(dt, med, out=dt)
            np.abs(dt, out=dt)
            k = _rank(99.0, m)
            jitter = float(np.partition(dt, k)[k]) / NS_PER_S
        return StageSummary(
            n, float(rate), p50 / NS_PER_S, p99 / NS_PER_S, mx / NS_PER_S, float(d.mean()) / NS_PER_S, jitter
        )


def _rank(q: float, n: int) -> int:
    """0-based nearest-rank index of percentile `q` among `n` sorted samples (as core/stats)."""
    return min(max(math.ceil(q / 100.0 * n - 1e-9), 1), n) - 1
