"""Monitoring config: the ``monitor:`` section (validated dataclasses), levels, stage names and
histogram buckets, environment overrides. Pure Python; never imports rclpy. Not on the RT path."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

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
class StatsConfig:
    """The per-process statistics publisher (``monitor.stats``; see :mod:`.process_stats`).

    Every RT process (each node executable, and ``bringup``) publishes its own registry's stage
    percentiles, rates, counters and gauges on ``topic`` (relative: the namespace applies) every
    ``period_s``, so a monitor in another process reports the same numbers.
    """

    enabled: bool = True
    topic: str = 'rt_stats'
    period_s: float = 1.0

    def __post_init__(self) -> None:
        _require(bool(self.topic.strip()), 'stats.topic', 'must not be empty', self.topic)
        _positive(self.period_s, 'stats.period_s')


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
    stats: StatsConfig = field(default_factory=StatsConfig)

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
