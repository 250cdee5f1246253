"""Monitoring core: config, rolling windows, thresholds, anomaly/trend/regression alerts.

Pure Python + numpy (+ psutil for :class:`SystemSampler`); never imports rclpy. Everything here runs
in the monitor's non-RT callback group: the RT threads only write to
:mod:`rt_safe_rl.rt.metrics` (preallocated counters and SPSC rings) and :class:`MonitorCore`
drains and evaluates them off the RT path.

Pieces:

* :class:`MonitorConfig` -- the ``monitor:`` section of ``config/default.yaml`` (validated; a bad
  threshold raises :class:`~rt_safe_rl.core.errors.ConfigError` with the reason).
* :class:`StageWindow` -- last N ``(t_end_ns, duration_ns)`` samples of one stage, with cumulative
  Prometheus-style histogram buckets.
* :class:`MetricHistory` -- per-evaluation history of one metric (rolling baseline: median/MAD,
  drift of the recent median against the older baseline).
* :class:`AlertManager` -- alerts with hysteresis (raise after N true evaluations, clear after M
  false ones) and rate-limited log events.
* :class:`MonitorCore` -- ties it together: ``ingest_*`` then :meth:`MonitorCore.evaluate` gives one
  :class:`ComponentStatus` per component (control loop, policy, safety filter, system, monitor).
* :func:`load_benchmark_baseline` -- stored benchmark report -> per-stage p50/p99 for regression checks.

Levels follow ``diagnostic_msgs/DiagnosticStatus``: OK=0, WARN=1, ERROR=2, STALE=3.
Times are ``time.monotonic_ns()`` (the clock the RT writers use for ``t_end_ns``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.errors import ConfigError

NS_PER_S = 1_000_000_000

#: Stage names written by the RT nodes (DEVELOPERS.md, Metrics).
STAGES: tuple[str, ...] = ('e2e', 'period', 'inference', 'safety')

#: Upper bounds (s) of the latency histogram buckets (``rt_execution_time_seconds``); +Inf is implicit.
HISTOGRAM_BUCKETS_S: tuple[float, ...] = (
    10e-6,
    25e-6,
    50e-6,
    75e-6,
    100e-6,
    150e-6,
    200e-6,
    300e-6,
    400e-6,
    500e-6,
    750e-6,
    1e-3,
    1.5e-3,
    2e-3,
    3e-3,
    5e-3,
    10e-3,
    50e-3,
    100e-3,
)


class Level(IntEnum):
    """Diagnostic level, same numbers as ``diagnostic_msgs/DiagnosticStatus``."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


def _require(cond: bool, key: str, reason: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f'monitor.{key}: {reason} (got {value!r})')


def _positive(value: float, key: str) -> None:
    _require(math.isfinite(value) and value > 0.0, key, 'must be a finite number > 0', value)


def _fraction(value: float, key: str, *, allow_zero: bool = True) -> None:
    ok = math.isfinite(value) and (value >= 0.0 if allow_zero else value > 0.0)
    _require(ok, key, 'must be a finite number >= 0' if allow_zero else 'must be > 0', value)


@dataclass(frozen=True)
class PrometheusConfig:
    """HTTP endpoint for Prometheus (``monitor.metrics``).

    ``port`` 0 binds an ephemeral port (tests). Environment overrides: ``RT_ENABLE_PROMETHEUS``,
    ``RT_METRICS_PORT`` (see :func:`apply_env_overrides`).
    """

    enabled: bool = True
    port: int = 9090
    address: str = '127.0.0.1'
    thread_priority: int = 0  # SCHED_FIFO priority of the HTTP server thread (0 = leave SCHED_OTHER)

    def __post_init__(self) -> None:
        _require(0 <= self.port <= 65535, 'metrics.port', 'must be in 0..65535', self.port)
        _require(
            0 <= self.thread_priority <= 98,
            'metrics.thread_priority',
            'must be in 0..98',
            self.thread_priority,
        )
        _require(bool(self.address.strip()), 'metrics.address', 'must not be empty', self.address)


@dataclass(frozen=True)
class ThresholdsConfig:
    """Alert thresholds (``monitor.thresholds``); all tunable at runtime.

    Latency: a stage's window p99 above its budget is WARN, above ``p99_error_factor`` x budget
    is ERROR (a budget of 0 disables the check for that stage). Rates are fractions of cycles.
    """

    expected_rate_hz: float = 0.0  # 0: take control.rate_hz from the app config (1000 if absent)
    rate_warn_fraction: float = 0.95  # measured rate < 0.95 x expected -> WARN
    rate_error_fraction: float = 0.8  # < 0.8 x expected -> ERROR
    e2e_budget_s: float = 1e-3
    period_budget_s: float = 1.5e-3
    inference_budget_s: float = 5e-4
    safety_budget_s: float = 2e-4
    p99_error_factor: float = 2.0
    miss_rate_warn: float = 1e-3  # deadline misses per cycle
    miss_rate_error: float = 1e-2
    error_rate_warn: float = 0.0  # faults per cycle; 0: any fault in the window warns
    error_rate_error: float = 1e-3
    drift_fraction: float = 0.25  # recent p99 median > (1 + f) x baseline median -> WARN
    drift_min_s: float = 20e-6  # ... and at least this much higher (ignore noise on tiny values)
    anomaly_mad_k: float = 8.0  # p99 > median + k x 1.4826 x MAD of its rolling baseline -> WARN
    cpu_warn_percent: float = 90.0  # system CPU
    memory_warn_percent: float = 90.0  # system memory
    memory_error_percent: float = 98.0

    def __post_init__(self) -> None:
        k = 'thresholds.'
        _fraction(self.expected_rate_hz, k + 'expected_rate_hz')
        _require(
            0.0 < self.rate_error_fraction <= self.rate_warn_fraction <= 1.0,
            k + 'rate_error_fraction',
            'need 0 < rate_error_fraction <= rate_warn_fraction <= 1',
            (self.rate_error_fraction, self.rate_warn_fraction),
        )
        for name in (
            'e2e_budget_s',
            'period_budget_s',
            'inference_budget_s',
            'safety_budget_s',
            'drift_min_s',
        ):
            _fraction(getattr(self, name), k + name)
        _require(
            math.isfinite(self.p99_error_factor) and self.p99_error_factor >= 1.0,
            k + 'p99_error_factor',
            'must be >= 1',
            self.p99_error_factor,
        )
        for warn, err in (('miss_rate_warn', 'miss_rate_error'), ('error_rate_warn', 'error_rate_error')):
            w, e = getattr(self, warn), getattr(self, err)
            _require(
                math.isfinite(w) and math.isfinite(e) and 0.0 <= w <= e <= 1.0,
                k + warn,
                f'need 0 <= {warn} <= {err} <= 1',
                (w, e),
            )
        _positive(self.drift_fraction, k + 'drift_fraction')
        _positive(self.anomaly_mad_k, k + 'anomaly_mad_k')
        for name in ('cpu_warn_percent', 'memory_warn_percent', 'memory_error_percent'):
            v = getattr(self, name)
            _require(math.isfinite(v) and 0.0 < v <= 100.0, k + name, 'must be in (0, 100]', v)
        _require(
            self.memory_warn_percent <= self.memory_error_percent,
            k + 'memory_warn_percent',
            'must be <= memory_error_percent',
            (self.memory_warn_percent, self.memory_error_percent),
        )

    def budget_s(self, stage: str) -> float:
        """Latency budget of `stage` in s (0 = no budget check)."""
        return float(getattr(self, f'{stage}_budget_s', 0.0))


@dataclass(frozen=True)
class AlertConfig:
    """Hysteresis and rate limiting of alerts (``monitor.alerts``)."""

    raise_after: int = 2  # consecutive evaluations with the condition true before an alert is raised
    clear_after: int = 3  # consecutive evaluations with it false before it clears
    min_log_interval_s: float = 30.0  # at most one 'raised' log line per alert per interval

    def __post_init__(self) -> None:
        _require(self.raise_after >= 1, 'alerts.raise_after', 'must be >= 1', self.raise_after)
        _require(self.clear_after >= 1, 'alerts.clear_after', 'must be >= 1', self.clear_after)
        _fraction(self.min_log_interval_s, 'alerts.min_log_interval_s')


@dataclass(frozen=True)
class TrendConfig:
    """Rolling baselines for anomaly and drift detection (``monitor.trend``)."""

    baseline_window_s: float = 600.0  # history kept per metric
    recent_window_s: float = 60.0  # drift: median over this recent span vs the older part
    min_history_s: float = 120.0  # no anomaly/drift verdict before this much history

    def __post_init__(self) -> None:
        _positive(self.baseline_window_s, 'trend.baseline_window_s')
        _positive(self.recent_window_s, 'trend.recent_window_s')
        _fraction(self.min_history_s, 'trend.min_history_s')
        _require(
            self.recent_window_s < self.baseline_window_s,
            'trend.recent_window_s',
            'must be < baseline_window_s',
            (self.recent_window_s, self.baseline_window_s),
        )


@dataclass(frozen=True)
class RegressionConfig:
    """Regression detection against a stored benchmark report (``monitor.regression``)."""

    baseline_report: str = ''  # JSON report path ('' = off); see load_benchmark_baseline
    tolerance_fraction: float = 0.25  # live p50/p99 > (1 + tol) x baseline -> WARN
    min_samples: int = 1000  # window samples needed before comparing

    def __post_init__(self) -> None:
        _positive(self.tolerance_fraction, 'regression.tolerance_fraction')
        _require(self.min_samples >= 1, 'regression.min_samples', 'must be >= 1', self.min_samples)


@dataclass(frozen=True)
class MonitorConfig:
    """The ``monitor:`` section of the config (built with ``configutil.from_mapping``).

    ``callback_group`` names an ``rt.groups`` entry for the monitor's timer (e.g. ``monitor`` with
    SCHED_FIFO priority 1, so a CPU hog cannot preempt the monitor while it holds the GIL, which
    would stall the RT threads); '' keeps it in the node's default (non-RT) group.
    ``drain_period_s`` is how often the monitor drains the stage rings (rings hold 16 s at 1 kHz);
    ``diagnostics_period_s`` how often it evaluates and publishes ``/diagnostics`` (a multiple of
    the drain period is used); ``window_s`` the span of the latency/rate window; a component with no
    new sample for ``stale_timeout_s`` is STALE.
    """

    enabled: bool = True
    callback_group: str = ''  # rt group running the monitor timer ('' = the node's default, non-RT)
    diagnostics_period_s: float = 1.0
    drain_period_s: float = 1.0
    window_s: float = 10.0
    stale_timeout_s: float = 3.0
    window_capacity: int = 16384  # samples kept per stage (>= window_s x rate for exact percentiles)
    system_metrics: bool = True
    per_thread_metrics: bool = True
    metrics: PrometheusConfig = field(default_factory=PrometheusConfig)
    thresholds: ThresholdsConfig = field(default_factory=ThresholdsConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    trend: TrendConfig = field(default_factory=TrendConfig)
    regression: RegressionConfig = field(default_factory=RegressionConfig)

    def __post_init__(self) -> None:
        _positive(self.diagnostics_period_s, 'diagnostics_period_s')
        _positive(self.drain_period_s, 'drain_period_s')
        _require(
            self.drain_period_s <= self.diagnostics_period_s,
            'drain_period_s',
            'must be <= diagnostics_period_s',
            (self.drain_period_s, self.diagnostics_period_s),
        )
        _positive(self.window_s, 'window_s')
        _positive(self.stale_timeout_s, 'stale_timeout_s')
        _require(self.window_capacity >= 16, 'window_capacity', 'must be >= 16', self.window_capacity)


_TRUE = {'1', 'true', 'yes', 'on'}
_FALSE = {'0', 'false', 'no', 'off'}


def apply_env_overrides(cfg: MonitorConfig, environ: Mapping[str, str] | None = None) -> MonitorConfig:
    """Apply ``RT_ENABLE_PROMETHEUS`` (1/0/true/false/yes/no/on/off) and ``RT_METRICS_PORT``.

    Returns a new config (unchanged when neither is set). Raises ConfigError on a malformed value.
    """
    env = os.environ if environ is None else environ
    metrics = cfg.metrics
    raw = env.get('RT_ENABLE_PROMETHEUS')
    if raw is not None and raw.strip() != '':
        v = raw.strip().lower()
        if v not in _TRUE | _FALSE:
            raise ConfigError(f'RT_ENABLE_PROMETHEUS: expected 1/0/true/false/yes/no/on/off, got {raw!r}')
        metrics = dataclasses.replace(metrics, enabled=v in _TRUE)
    raw = env.get('RT_METRICS_PORT')
    if raw is not None and raw.strip() != '':
        try:
            port = int(raw.strip())
        except ValueError:
            raise ConfigError(f'RT_METRICS_PORT: expected an integer port, got {raw!r}') from None
        if not 0 <= port <= 65535:
            raise ConfigError(f'RT_METRICS_PORT: must be in 0..65535, got {port}')
        metrics = dataclasses.replace(metrics, port=port)
    return cfg if metrics is cfg.metrics else dataclasses.replace(cfg, metrics=metrics)


# --------------------------------------------------------------------------------------------------
# Windows and statistics
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Alerts
# --------------------------------------------------------------------------------------------------


class AlertEvent(NamedTuple):
    """A log-worthy alert transition ('raised' or 'cleared'), already rate-limited."""

    name: str
    kind: str
    level: Level
    message: str
    suppressed: int  # raises not logged since the last logged one (rate limiting)


@dataclass
class Alert:
    """State of one named alert."""

    name: str
    component: str
    active: bool = False
    level: Level = Level.OK
    message: str = ''
    streak_true: int = 0
    streak_false: int = 0
    raised_total: int = 0
    last_log_ns: float = -math.inf
    suppressed: int = 0
    logged_raise: bool = False


class AlertManager:
    """Alerts with hysteresis and rate-limited log events (non-RT).

    Call :meth:`update` once per evaluation per alert with the level the condition asks for
    (OK = condition false). An alert becomes active after ``raise_after`` consecutive non-OK
    evaluations and clears after ``clear_after`` consecutive OK ones; in between it keeps its state,
    so a value hovering around a threshold does not flap. A 'raised' event is emitted at most once
    per ``min_log_interval_s`` per alert (the others are counted in ``suppressed``); a 'cleared'
    event only follows a logged raise.
    """

    def __init__(self, cfg: AlertConfig) -> None:
        self.cfg = cfg
        self.alerts: dict[str, Alert] = {}
        self._events: list[AlertEvent] = []

    def update(self, name: str, component: str, level: Level, message: str, now_ns: int) -> Alert:
        """Feed one evaluation of alert `name`; returns its state."""
        a = self.alerts.get(name)
        if a is None:
            a = self.alerts[name] = Alert(name, component)
        if level > Level.OK:
            a.streak_true += 1
            a.streak_false = 0
            if a.active:
                a.level, a.message = level, message
            elif a.streak_true >= self.cfg.raise_after:
                a.active, a.level, a.message = True, level, message
                a.raised_total += 1
                if now_ns - a.last_log_ns >= self.cfg.min_log_interval_s * NS_PER_S:
                    self._events.append(AlertEvent(name, 'raised', level, message, a.suppressed))
                    a.last_log_ns = now_ns
                    a.suppressed = 0
                    a.logged_raise = True
                else:
                    a.suppressed += 1
                    a.logged_raise = False
        else:
            a.streak_false += 1
            a.streak_true = 0
            if a.active and a.streak_false >= self.cfg.clear_after:
                if a.logged_raise:
                    self._events.append(AlertEvent(name, 'cleared', Level.OK, f'{name} cleared', 0))
                a.active, a.level, a.message = False, Level.OK, ''
        return a

    def drain_events(self) -> list[AlertEvent]:
        """Events since the last call (log them)."""
        ev, self._events = self._events, []
        return ev

    def active(self, component: str | None = None) -> list[Alert]:
        """Active alerts (of one component, or all)."""
        return [
            a for a in self.alerts.values() if a.active and (component is None or a.component == component)
        ]


# --------------------------------------------------------------------------------------------------
# Regression baseline
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# System metrics
# --------------------------------------------------------------------------------------------------


class SystemSample(NamedTuple):
    """One psutil reading (percentages of one core for process/threads; of the machine for system)."""

    system_cpu_percent: float
    system_memory_percent: float
    process_cpu_percent: float
    process_rss_bytes: int
    ctx_switches_voluntary: int
    ctx_switches_involuntary: int
    threads_cpu_percent: dict[str, float]  # 'name:tid' -> % of one core since the previous sample (busy ones)


class SystemSampler:
    """psutil readings of the machine, this process and its threads (non-RT, ~0.1-1 ms per call)."""

    def __init__(self, per_thread: bool = True) -> None:
        import psutil  # local import: only the monitor needs it

        self._psutil = psutil
        self._proc = psutil.Process()
        self._per_thread = per_thread
        self._prev_threads: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._prev_t = 0.0
        psutil.cpu_percent(interval=None)  # prime the system counters
        self._proc.cpu_percent(interval=None)

    def _thread_name(self, tid: int) -> str:
        name = self._names.get(tid)
        if name is None:  # read once per thread id (threads rarely rename themselves after start)
            try:
                with open(f'/proc/self/task/{tid}/comm') as f:
                    name = f.read().strip()
            except OSError:
                name = 'thread'
            self._names[tid] = name
        return name

    def sample(self, now_s: float) -> SystemSample:
        """Read all metrics; per-thread CPU is the delta since the previous call."""
        ps = self._psutil
        with self._proc.oneshot():
            pcpu = self._proc.cpu_percent(interval=None)
            rss = int(self._proc.memory_info().rss)
            ctx = self._proc.num_ctx_switches()
            threads: dict[str, float] = {}
            if self._per_thread:
                dt = now_s - self._prev_t if self._prev_t > 0 else 0.0
                cur: dict[int, float] = {}
                for th in self._proc.threads():
                    used = th.user_time + th.system_time
                    cur[th.id] = used
                    prev = self._prev_threads.get(th.id)
                    if dt > 0 and prev is not None and used > prev:  # idle threads are left out
                        threads[f'{self._thread_name(th.id)}:{th.id}'] = 100.0 * (used - prev) / dt
                self._prev_threads = cur
                self._prev_t = now_s
                if len(self._names) > 2 * len(cur) + 16:  # forget threads that are gone
                    self._names = {t: n for t, n in self._names.items() if t in cur}
        return SystemSample(
            float(ps.cpu_percent(interval=None)),
            float(ps.virtual_memory().percent),
            float(pcpu),
            rss,
            int(ctx.voluntary),
            int(ctx.involuntary),
            threads,
        )


# --------------------------------------------------------------------------------------------------
# Monitor core
# --------------------------------------------------------------------------------------------------


#: Counters of commands that violated limits (the sim robot's audit) -> rt_safety_violations_total.
VIOLATION_COUNTERS: tuple[str, ...] = ('command_limit_violations', 'safety_violations')


@dataclass(frozen=True)
class ComponentSpec:
    """Which stages and counters make up one diagnostics component."""

    name: str
    title: str
    stages: tuple[str, ...]
    rate_stage: str = ''  # stage whose sample rate is the loop rate ('' = none; falls back to e2e)
    miss_counters: tuple[str, ...] = ()
    error_counters: tuple[str, ...] = ()
    info_counters: tuple[str, ...] = ()
    gauges: tuple[str, ...] = ()


COMPONENTS: tuple[ComponentSpec, ...] = (
    ComponentSpec(
        'control_loop',
        'control loop',
        ('e2e', 'period'),
        rate_stage='period',
        miss_counters=('deadline_misses',),
        gauges=tuple(
            f'cycle_cpu_{s}_us'
            for s in ('read', 'safety_state', 'policy', 'safety', 'write', 'handoff', 'total')
        ),
    ),
    ComponentSpec('policy', 'policy', ('inference',), info_counters=('policy_steps',)),
    ComponentSpec(
        'safety_filter',
        'safety filter',
        ('safety',),
        error_counters=('faults', 'output_guard_errors', *VIOLATION_COUNTERS),
        info_counters=('safety_interventions',),
        gauges=('human_distance_m',),
    ),
)


@dataclass
class ComponentStatus:
    """One diagnostics status: level, one-line message and key/value pairs (strings)."""

    name: str
    title: str
    level: Level
    message: str
    values: list[tuple[str, str]]


def _fmt_us(x: float) -> str:
    return 'nan' if math.isnan(x) else f'{x * 1e6:.1f}'


class MonitorCore:
    """Windows, counters, alerts and component evaluation (non-RT; one thread).

    Usage per drain: :meth:`ingest_stage` for each stage's drained samples; per evaluation:
    :meth:`ingest_counters`, optionally :meth:`ingest_system`, then :meth:`evaluate`.
    """

    def __init__(
        self,
        cfg: MonitorConfig,
        *,
        expected_rate_hz: float = 1000.0,
        baseline: dict[str, dict[str, float]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.default_rate_hz = expected_rate_hz
        self.baseline = baseline or {}
        self.windows = {s: StageWindow(s, cfg.window_capacity) for s in STAGES}
        self.summaries: dict[str, StageSummary] = dict.fromkeys(STAGES, _EMPTY_SUMMARY)
        self.history = {s: self._new_history() for s in STAGES}
        self.alerts = AlertManager(cfg.alerts)
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, float] = {}
        self.system: SystemSample | None = None
        # (t_ns, counters, stage totals) per evaluation, for per-cycle rates over the window
        self._count_hist: deque[tuple[int, dict[str, int], dict[str, int]]] = deque()
        self.last_statuses: list[ComponentStatus] = []
        self.extra_status: list[ComponentStatus] = []  # e.g. the node's own 'monitor' status
        # Called between the pieces of an evaluation (each ~0.1-0.3 ms of numpy/Python holding the
        # GIL); the node sets it to a tiny sleep so an RT thread waiting for the GIL gets it
        # within one piece rather than after the whole evaluation.
        self.yield_gil: Callable[[], None] | None = None

    def _new_history(self) -> MetricHistory:
        return MetricHistory(self.cfg.trend.baseline_window_s, self.cfg.diagnostics_period_s)

    @property
    def expected_rate_hz(self) -> float:
        """Expected loop rate (Hz): the threshold if set, else the app's control rate."""
        return self.cfg.thresholds.expected_rate_hz or self.default_rate_hz

    def loop_rate_stage(self) -> str:
        """Stage whose sample rate is the loop rate: 'period' (one per tick) if seen, else 'e2e'."""
        return 'period' if self.windows['period'].total > 0 else 'e2e'

    def update_config(self, cfg: MonitorConfig) -> None:
        """Swap in a validated config (thresholds, alerts, windows; capacities stay)."""
        self.cfg = cfg
        self.alerts.cfg = cfg.alerts

    def ingest_stage(self, stage: str, samples: npt.NDArray[np.float64]) -> None:
        """Add drained samples (n, 2) of `stage` (unknown stage names get a window too)."""
        w = self.windows.get(stage)
        if w is None:
            w = self.windows[stage] = StageWindow(stage, self.cfg.window_capacity)
            self.summaries[stage] = _EMPTY_SUMMARY
            self.history[stage] = self._new_history()
        w.extend(samples)

    def ingest_counters(self, counters: Mapping[str, int], gauges: Mapping[str, float] | None = None) -> None:
        """Latest counter totals and gauge values."""
        self.counters = dict(counters)
        if gauges is not None:
            self.gauges = dict(gauges)

    def ingest_system(self, sample: SystemSample) -> None:
        """Latest system reading."""
        self.system = sample

    def _window_delta(self, now_ns: int) -> tuple[dict[str, int], dict[str, int]]:
        """Counter and stage-total increments over (about) the last window."""
        totals = {s: w.total for s, w in self.windows.items()}
        self._count_hist.append((now_ns, dict(self.counters), totals))
        t0 = now_ns - self.cfg.window_s * NS_PER_S
        while len(self._count_hist) > 1 and self._count_hist[1][0] <= t0:
            self._count_hist.popleft()
        _, c0, s0 = self._count_hist[0]
        dc = {k: v - c0.get(k, 0) for k, v in self.counters.items()}
        ds = {k: v - s0.get(k, 0) for k, v in totals.items()}
        return dc, ds

    def evaluate(self, now_ns: int) -> list[ComponentStatus]:
        """Evaluate every component at `now_ns`; updates alerts and returns the statuses."""
        cfg = self.cfg
        yield_gil = self.yield_gil
        for s, w in self.windows.items():
            self.summaries[s] = w.summary(now_ns, cfg.window_s)
            if yield_gil is not None:
                yield_gil()
        dc, ds = self._window_delta(now_ns)
        statuses = []
        for spec in COMPONENTS:
            statuses.append(self._evaluate_component(spec, now_ns, dc, ds))
            if yield_gil is not None:
                yield_gil()
        statuses.append(self._evaluate_system(now_ns))
        # Rolling baselines are fed after the checks so a value is compared against its past only.
        for s, summ in self.summaries.items():
            if summ.n_samples > 0:
                self.history[s].add(now_ns, summ.p99_s)
        self.last_statuses = statuses + list(self.extra_status)
        return self.last_statuses

    def _evaluate_component(
        self, spec: ComponentSpec, now_ns: int, dc: dict[str, int], ds: dict[str, int]
    ) -> ComponentStatus:
        cfg, th, al = self.cfg, self.cfg.thresholds, self.alerts
        vals: list[tuple[str, str]] = []
        seen = [s for s in spec.stages if self.windows[s].total > 0]
        newest = max((self.windows[s].last_t_ns for s in seen), default=math.nan)
        age_s = (now_ns - newest) / NS_PER_S if seen else math.inf
        stale = age_s > cfg.stale_timeout_s
        stale_msg = f'no samples for {age_s:.1f} s' if seen else 'no data'
        stale_msg += f' (stages {", ".join(spec.stages)})'
        al.update(
            f'{spec.name}.stale', spec.name, Level.STALE if stale and seen else Level.OK, stale_msg, now_ns
        )

        for s in spec.stages:
            summ = self.summaries[s]
            if self.windows[s].total == 0:
                continue
            vals += [
                (f'{s} samples in window', str(summ.n_samples)),
                (f'{s} p50 (us)', _fmt_us(summ.p50_s)),
                (f'{s} p99 (us)', _fmt_us(summ.p99_s)),
                (f'{s} max (us)', _fmt_us(summ.max_s)),
                (f'{s} jitter p99 (us)', _fmt_us(summ.jitter_p99_s)),
            ]
            budget = th.budget_s(s)
            lvl = Level.OK
            if budget > 0 and summ.n_samples > 0 and not stale:
                if summ.p99_s > budget * th.p99_error_factor:
                    lvl = Level.ERROR
                elif summ.p99_s > budget:
                    lvl = Level.WARN
            al.update(
                f'{s}.p99_budget',
                spec.name,
                lvl,
                f'{s} p99 {_fmt_us(summ.p99_s)} us > budget {_fmt_us(budget)} us',
                now_ns,
            )
            hist = self.history[s]
            anom, thr = hist.anomaly(now_ns, summ.p99_s, th.anomaly_mad_k, th.drift_min_s, cfg.trend)
            al.update(
                f'{s}.p99_anomaly',
                spec.name,
                Level.WARN if anom and not stale else Level.OK,
                f'{s} p99 {_fmt_us(summ.p99_s)} us above its rolling baseline ({_fmt_us(thr)} us)',
                now_ns,
            )
            drift, recent, base = hist.drift(now_ns, th.drift_fraction, th.drift_min_s, cfg.trend)
            al.update(
                f'{s}.p99_drift',
                spec.name,
                Level.WARN if drift and not stale else Level.OK,
                f'{s} p99 drifting up: {_fmt_us(recent)} us over the last '
                f'{cfg.trend.recent_window_s:g} s vs {_fmt_us(base)} us before',
                now_ns,
            )
            base_q = self.baseline.get(s)
            if base_q:
                reg = []
                if summ.n_samples >= cfg.regression.min_samples and not stale:
                    tol = 1.0 + cfg.regression.tolerance_fraction
                    live = {'p50': summ.p50_s, 'p99': summ.p99_s}
                    reg = [
                        f'{q} {_fmt_us(live[q])} us vs {_fmt_us(b)} us'
                        for q, b in base_q.items()
                        if live[q] > b * tol
                    ]
                    vals += [
                        (f'{s} {q} / baseline', f'{live[q] / b:.2f}') for q, b in base_q.items() if b > 0
                    ]
                al.update(
                    f'{s}.regression',
                    spec.name,
                    Level.WARN if reg else Level.OK,
                    f'{s} regressed against the benchmark baseline: {"; ".join(reg)}',
                    now_ns,
                )

        rate_stage = self.loop_rate_stage() if spec.rate_stage else ''
        if rate_stage and self.windows[rate_stage].total > 0:
            summ = self.summaries[rate_stage]
            exp = self.expected_rate_hz
            vals += [('rate (Hz)', f'{summ.rate_hz:.1f}'), ('expected rate (Hz)', f'{exp:.1f}')]
            lvl = Level.OK
            if not stale and exp > 0:
                if summ.rate_hz < exp * th.rate_error_fraction:
                    lvl = Level.ERROR
                elif summ.rate_hz < exp * th.rate_warn_fraction:
                    lvl = Level.WARN
            al.update(
                f'{spec.name}.rate',
                spec.name,
                lvl,
                f'rate {summ.rate_hz:.1f} Hz < {th.rate_warn_fraction:g} x {exp:g} Hz',
                now_ns,
            )

        # Rates are per control cycle (loop ticks in the window), whatever the component's own stage rate.
        cycles = ds.get(self.loop_rate_stage(), 0) or max((ds.get(s, 0) for s in spec.stages), default=0)
        checks = (
            ('miss', spec.miss_counters, th.miss_rate_warn, th.miss_rate_error),
            ('error', spec.error_counters, th.error_rate_warn, th.error_rate_error),
        )
        for kind, names, warn, err in checks:
            if not names:
                continue
            delta = sum(dc.get(n, 0) for n in names)
            rate = delta / cycles if cycles > 0 else 0.0
            vals += [(f'{n} (total)', str(self.counters.get(n, 0))) for n in names]
            vals.append((f'{kind} rate (per cycle, window)', f'{rate:.2e}'))
            lvl = Level.OK
            if delta > 0 and rate > err:
                lvl = Level.ERROR
            elif delta > 0 and rate > warn:
                lvl = Level.WARN
            al.update(
                f'{spec.name}.{kind}_rate',
                spec.name,
                lvl,
                f'{kind} rate {rate:.2e}/cycle ({delta} in the window)',
                now_ns,
            )
        for n in spec.info_counters:
            vals.append((f'{n} (total)', str(self.counters.get(n, 0))))
            if cycles > 0:
                vals.append((f'{n} per cycle (window)', f'{dc.get(n, 0) / cycles:.3f}'))
        for g in spec.gauges:
            if g in self.gauges:
                vals.append((g, f'{self.gauges[g]:.3f}'))

        if stale:  # STALE is a fact, reported at once; only its log line goes through hysteresis
            return ComponentStatus(spec.name, spec.title, Level.STALE, stale_msg, vals)
        return self._status(spec.name, spec.title, vals, 'running')

    def _status(self, name: str, title: str, vals: list[tuple[str, str]], ok_msg: str) -> ComponentStatus:
        active = sorted(self.alerts.active(name), key=lambda a: -a.level)
        if not active:
            return ComponentStatus(name, title, Level.OK, ok_msg, vals)
        vals.append(('active alerts', ', '.join(a.name for a in active)))
        return ComponentStatus(name, title, active[0].level, '; '.join(a.message for a in active), vals)

    def _evaluate_system(self, now_ns: int) -> ComponentStatus:
        th, al = self.cfg.thresholds, self.alerts
        s = self.system
        if s is None:
            return ComponentStatus('system', 'system', Level.STALE, 'no system metrics (disabled)', [])
        vals = [
            ('system cpu (%)', f'{s.system_cpu_percent:.1f}'),
            ('system memory (%)', f'{s.system_memory_percent:.1f}'),
            ('process cpu (% of one core)', f'{s.process_cpu_percent:.1f}'),
            ('process rss (MiB)', f'{s.process_rss_bytes / 2**20:.1f}'),
            ('context switches voluntary', str(s.ctx_switches_voluntary)),
            ('context switches involuntary', str(s.ctx_switches_involuntary)),
        ]
        top = sorted(s.threads_cpu_percent.items(), key=lambda kv: -kv[1])[:5]
        vals += [(f'thread {k} cpu (%)', f'{v:.1f}') for k, v in top]
        cpu = s.system_cpu_percent
        al.update(
            'system.cpu',
            'system',
            Level.WARN if cpu > th.cpu_warn_percent else Level.OK,
            f'system cpu {cpu:.0f}% > {th.cpu_warn_percent:g}%',
            now_ns,
        )
        mem = s.system_memory_percent
        lvl = Level.OK
        if mem > th.memory_error_percent:
            lvl = Level.ERROR
        elif mem > th.memory_warn_percent:
            lvl = Level.WARN
        al.update(
            'system.memory', 'system', lvl, f'system memory {mem:.0f}% > {th.memory_warn_percent:g}%', now_ns
        )
        return self._status('system', 'system', vals, 'ok')
