"""Per-evaluation history of one metric: rolling baseline (median/MAD anomaly) and drift of the recent
median against the older baseline. numpy only; non-RT."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.monitoring.config import NS_PER_S, TrendConfig


class MetricHistory:
    """One value per evaluation over ``span_s`` (rolling baseline for anomaly and drift).

    Preallocated ring of ``(t_ns, value)``; NaN values are skipped.
    """

    def __init__(self, span_s: float, period_s: float) -> None:
        self.span_s = span_s
        self._cap = max(8, math.ceil(span_s / period_s) + 2)
        self._t = np.full(self._cap, np.nan)
        self._v = np.full(self._cap, np.nan)
        self._head = 0
        self.first_t_ns: float = math.nan

    def add(self, t_ns: int, value: float) -> None:
        """Record `value` at `t_ns` (ignored when NaN)."""
        if math.isnan(value):
            return
        if math.isnan(self.first_t_ns):
            self.first_t_ns = float(t_ns)
        self._t[self._head] = t_ns
        self._v[self._head] = value
        self._head = (self._head + 1) % self._cap

    def values(self, t0_ns: float, t1_ns: float) -> npt.NDArray[np.float64]:
        """Values recorded in ``[t0_ns, t1_ns)``."""
        with np.errstate(invalid='ignore'):
            m = (self._t >= t0_ns) & (self._t < t1_ns)
        return self._v[m]

    def history_s(self, now_ns: int) -> float:
        """Seconds since the first recorded value (0 when empty)."""
        return 0.0 if math.isnan(self.first_t_ns) else (now_ns - self.first_t_ns) / NS_PER_S

    def anomaly(
        self, now_ns: int, value: float, k: float, min_delta: float, trend: TrendConfig
    ) -> tuple[bool, float]:
        """Is `value` above median + k x 1.4826 x MAD (and + min_delta) of the baseline before now?

        Returns (anomalous, threshold); False while history is shorter than ``trend.min_history_s``.
        """
        if math.isnan(value) or self.history_s(now_ns) < trend.min_history_s:
            return False, math.nan
        base = self.values(now_ns - trend.baseline_window_s * NS_PER_S, now_ns)
        if base.shape[0] < 5:
            return False, math.nan
        med = float(np.median(base))
        mad = float(np.median(np.abs(base - med))) * 1.4826
        thr = med + max(k * mad, min_delta)
        return value > thr, thr

    def drift(
        self, now_ns: int, fraction: float, min_delta: float, trend: TrendConfig
    ) -> tuple[bool, float, float]:
        """Recent median vs older baseline median: (drifting, recent, baseline)."""
        if self.history_s(now_ns) < trend.min_history_s:
            return False, math.nan, math.nan
        split = now_ns - trend.recent_window_s * NS_PER_S
        old = self.values(now_ns - trend.baseline_window_s * NS_PER_S, split)
        new = self.values(split, now_ns + 1)
        if old.shape[0] < 3 or new.shape[0] < 3:
            return False, math.nan, math.nan
        recent, base = float(np.median(new)), float(np.median(old))
        return (recent > base * (1.0 + fraction) and recent - base > min_delta), recent, base
