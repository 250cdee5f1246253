"""Monitoring core, split by concern (every name is re-exported here, so
``from rt_safe_rl.core.monitoring import MonitorConfig, MonitorCore`` keeps working).

Pure Python + numpy (+ psutil in :mod:`.system`); never imports rclpy. Everything here runs off the
RT path, in the monitor's (or the process statistics publisher's) low-priority thread: the RT
threads only write to :mod:`rt_safe_rl.rt.metrics` (preallocated counters and SPSC rings).

Modules:

* :mod:`.config` -- :class:`MonitorConfig` (the ``monitor:`` section; a bad value raises
  :class:`~rt_safe_rl.core.errors.ConfigError` with the reason), :class:`Level`, stage names,
  histogram buckets, :func:`apply_env_overrides`.
* :mod:`.windows` -- :class:`StageWindow`: last N ``(t_end_ns, duration_ns)`` samples of one stage,
  nearest-rank percentiles, rate, jitter, Prometheus histogram buckets.
* :mod:`.trend` -- :class:`MetricHistory`: rolling baseline (median/MAD anomaly) and drift.
* :mod:`.alerts` -- :class:`AlertManager`: hysteresis and rate-limited log events.
* :mod:`.baseline` -- :func:`load_benchmark_baseline`: stored benchmark report -> p50/p99 per stage.
* :mod:`.system` -- :class:`SystemSampler` (psutil).
* :mod:`.process_stats` -- one process's statistics (:class:`RegistryReader`, the single reader
  of a registry's stage rings; :class:`ProcessStats` and the documented ``rt_stats`` message layout;
  :class:`RemoteStage`, a stage as another process reported it).
* :mod:`.core` -- :class:`MonitorCore`: ``ingest_*`` then :meth:`MonitorCore.evaluate` gives one
  :class:`ComponentStatus` per component (control loop, policy, safety filter, system).

Levels follow ``diagnostic_msgs/DiagnosticStatus``: OK=0, WARN=1, ERROR=2, STALE=3.
Times are ``time.monotonic_ns()`` (the clock the RT writers use for ``t_end_ns``).
"""

from rt_safe_rl.core.monitoring.alerts import Alert, AlertEvent, AlertManager
from rt_safe_rl.core.monitoring.baseline import load_benchmark_baseline
from rt_safe_rl.core.monitoring.config import (
    HISTOGRAM_BUCKETS_S,
    NS_PER_S,
    STAGES,
    AlertConfig,
    Level,
    MonitorConfig,
    PrometheusConfig,
    RegressionConfig,
    StatsConfig,
    ThresholdsConfig,
    TrendConfig,
    apply_env_overrides,
)
from rt_safe_rl.core.monitoring.core import (
    COMPONENTS,
    VIOLATION_COUNTERS,
    ComponentSpec,
    ComponentStatus,
    MonitorCore,
)
from rt_safe_rl.core.monitoring.process_stats import (
    ProcessStats,
    RegistryReader,
    RemoteStage,
    StageStats,
    decode_process_stats,
    encode_process_stats,
    reader_for,
)
from rt_safe_rl.core.monitoring.system import SystemSample, SystemSampler
from rt_safe_rl.core.monitoring.trend import MetricHistory
from rt_safe_rl.core.monitoring.windows import StageSummary, StageWindow

__all__ = [
    'COMPONENTS',
    'HISTOGRAM_BUCKETS_S',
    'NS_PER_S',
    'STAGES',
    'VIOLATION_COUNTERS',
    'Alert',
    'AlertConfig',
    'AlertEvent',
    'AlertManager',
    'ComponentSpec',
    'ComponentStatus',
    'Level',
    'MetricHistory',
    'MonitorConfig',
    'MonitorCore',
    'ProcessStats',
    'PrometheusConfig',
    'RegistryReader',
    'RegressionConfig',
    'RemoteStage',
    'StageStats',
    'StageSummary',
    'StageWindow',
    'StatsConfig',
    'SystemSample',
    'SystemSampler',
    'ThresholdsConfig',
    'TrendConfig',
    'apply_env_overrides',
    'decode_process_stats',
    'encode_process_stats',
    'load_benchmark_baseline',
    'reader_for',
]
