"""MonitorNode: /diagnostics, Prometheus metrics and alerts for the RT pipeline (lifecycle node).

Never on the RT path: one timer drains the process-wide :func:`rt_safe_rl.rt.metrics.registry`
stage rings (the RT threads only push into preallocated SPSC rings and bump counters) through the
process's one :func:`~rt_safe_rl.core.monitoring.reader_for` reader, and a subscription to
``monitor.stats.topic`` (``rt_stats``) takes every OTHER process's statistics (published by
:mod:`rt_safe_rl.nodes.process_stats`; layout in :mod:`rt_safe_rl.core.monitoring.process_stats`):
per stage, the freshest source (this process's window or another process's report) is reported,
counters are summed over the processes, so a monitor in its own process (``ros2 launch``) shows the
same components with the same numbers as a composed one. Timer and subscription
runs in the rt group named by ``monitor.callback_group`` (shipped: ``observers``, a low SCHED_FIFO
priority, so a CPU hog cannot preempt the monitor while it holds the GIL and thereby stall the RT
threads; '' = the node's default, non-RT group); it yields the GIL between pieces of work. Every
``monitor.diagnostics_period_s`` it evaluates :class:`~rt_safe_rl.core.monitoring.MonitorCore`,
publishes one ``diagnostic_msgs/DiagnosticArray`` (one status per component: control loop,
policy, safety filter, system, monitor), logs alert transitions (rate-limited) and hands a snapshot
to the Prometheus endpoint (:mod:`rt_safe_rl.nodes.prometheus_exporter`).

Lifecycle: configure = parameters -> MonitorConfig (+ env overrides), load the regression
baseline, build the core, create the diagnostics publisher; activate = start the HTTP endpoint
(a port in use is logged, Prometheus stays off and the 'monitor' status says why; the node stays
up) and the timer; deactivate = stop both; cleanup = drop everything.

Parameters: ``config_file`` (read-only) and every leaf of the ``monitor:`` section as
``monitor.<path>`` (e.g. ``monitor.thresholds.e2e_budget_s``). Thresholds, alert and trend
settings are tunable at runtime (validated: an invalid value is rejected with the reason);
structural ones (ports, periods, capacities) are read-only.

The stage rings have ONE reader, :func:`~rt_safe_rl.core.monitoring.reader_for` (shared with the
process statistics publisher): compose at most one MonitorNode per process (or pass a private
``registry``), and do not also drain them from a benchmark in the same process.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from rt_safe_rl.config import load_config
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.monitoring import (
    Level,
    MonitorConfig,
    MonitorCore,
    RegistryReader,
    SystemSampler,
    apply_env_overrides,
    load_benchmark_baseline,
    reader_for,
)
from rt_safe_rl.core.monitoring.process_stats import process_source_id
from rt_safe_rl.nodes._monitor_work import GIL_YIELD_S, MonitorWork, _yield_gil  # noqa: F401
from rt_safe_rl.nodes._params import config_from_values, declare_config
from rt_safe_rl.nodes._sim_base import run_node
from rt_safe_rl.nodes.prometheus_exporter import PrometheusExporter
from rt_safe_rl.paths import resolve
from rt_safe_rl.rt.metrics import MetricsRegistry, registry

#: ``monitor.*`` parameters that can be changed while running (prefix match); the rest are read-only.
TUNABLE_PREFIXES: tuple[str, ...] = (
    'thresholds.',
    'alerts.',
    'window_s',
    'stale_timeout_s',
    'trend.recent_window_s',
    'trend.min_history_s',
    'regression.tolerance_fraction',
    'regression.min_samples',
)


def _load_app_config(path: str) -> Any:
    return load_config(path or None)


class MonitorNode(MonitorWork):
    """Lifecycle node publishing /diagnostics and serving Prometheus metrics (non-RT only).

    Args:
        config: the app config (uses ``.monitor``, ``.control.rate_hz``, ``.topics.diagnostics``),
            or a bare :class:`MonitorConfig`; None reads the ``config_file`` parameter.
        node_name, namespace: as for any node.
        intra_process: accepted for the common node signature (the monitor reads in-process metrics
            either way).
        registry: metrics registry to drain (default: the process-wide one; tests pass their own).
        node_kwargs: passed to ``LifecycleNode`` (``context``, ``cli_args``, ``parameter_overrides``...).
    """

    def __init__(
        self,
        *,
        config: Any = None,
        node_name: str = 'monitor',
        namespace: str = '',
        intra_process: bool = False,
        registry: MetricsRegistry | None = None,
        **node_kwargs: Any,
    ) -> None:
        self._registry = registry if registry is not None else _default_registry()
        self._intra_process = intra_process
        self._core: MonitorCore | None = None
        self._cfg: MonitorConfig | None = None
        self._exporter: PrometheusExporter | None = None
        self._sampler: SystemSampler | None = None
        self._pub: Any = None
        self._timer: Any = None
        self._stats_sub: Any = None
        self._group: Any = None
        self._reader: RegistryReader | None = None
        self._remote_received = 0
        self._remote_rejected = 0
        self._remote_error = ''
        self._ticks_per_eval = 1
        self._tick = 0
        self._cpu_ns = 0  # thread CPU time spent in the monitor's callbacks
        self._prom_level = Level.OK
        self._prom_message = 'not started'
        self._dropped: dict[str, int] = {}
        self._last_eval_wall = 0.0
        self._cpu_at_last_eval = 0
        self._group_note = 'default (non-RT)'
        self.last_error = ''  # why the last configure failed (bringup reports it)
        super().__init__(node_name, namespace=namespace, **node_kwargs)
        self.declare_parameter(
            'config_file',
            '',
            ParameterDescriptor(
                description='YAML config (THE config layout); empty = the shipped config/default.yaml',
                read_only=True,
            ),
        )
        self._app: Any = None
        if config is None:
            self._app = _load_app_config(self.get_parameter('config_file').value)
            base_cfg: MonitorConfig = self._app.monitor
        elif isinstance(config, MonitorConfig):
            base_cfg = config
        else:
            self._app = config
            base_cfg = config.monitor
        self._declare_monitor_parameters(base_cfg)
        autostart = bool(getattr(getattr(self._app, 'control', None), 'autostart', True))
        self.declare_parameter(
            'autostart',
            autostart,
            ParameterDescriptor(description='main(): configure + activate on start', read_only=True),
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)

    @property
    def app(self) -> Any:
        """The app config (None when built from a bare MonitorConfig)."""
        return self._app

    # ------------------------------------------------------------------ parameters

    def _declare_monitor_parameters(self, cfg: MonitorConfig) -> None:
        values = declare_config(self, cfg, 'monitor', lambda leaf: not leaf.startswith(TUNABLE_PREFIXES))
        self._param_names: list[str] = [name[len('monitor.') :] for name in values]

    def _config_from_params(self, changes: dict[str, Any] | None = None) -> MonitorConfig:
        flat = {k: self.get_parameter(f'monitor.{k}').value for k in self._param_names}
        flat.update(changes or {})
        # ROS doubles declared from a YAML int come back as int: from_mapping accepts int for float.
        return config_from_values(MonitorConfig, flat, None, 'monitor')

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name[len('monitor.') :]: p.value for p in params if p.name.startswith('monitor.')}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            cfg = self._config_from_params(changes)
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        if self._core is not None and self._cfg is not None:
            # Keep structural fields (env overrides included) of the running config.
            cfg = dataclasses.replace(cfg, metrics=self._cfg.metrics)
            self._cfg = cfg
            self._core.update_config(cfg)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Build the config, regression baseline, core and publisher. FAILURE (logged) on bad config."""
        try:
            cfg = apply_env_overrides(self._config_from_params())
            baseline = None
            if cfg.regression.baseline_report:
                base_dir = getattr(self._app, 'base_dir', None)
                baseline = load_benchmark_baseline(resolve(cfg.regression.baseline_report, base_dir))
        except ConfigError as err:
            self.last_error = str(err)
            self.get_logger().error(f'configure failed: {err}')
            return TransitionCallbackReturn.FAILURE
        self.last_error = ''
        rate = float(getattr(getattr(self._app, 'control', None), 'rate_hz', 1000.0))
        self._cfg = cfg
        self._reader = reader_for(self._registry, cfg.window_capacity)
        self._core = MonitorCore(
            cfg,
            expected_rate_hz=rate,
            baseline=baseline,
            windows=self._reader.windows,
            own_source=process_source_id(),
        )
        self._core.yield_gil = _yield_gil
        if cfg.window_s * self._core.expected_rate_hz > cfg.window_capacity:
            self.get_logger().warning(
                f'monitor.window_s {cfg.window_s:g} s x {self._core.expected_rate_hz:g} Hz exceeds '
                f'monitor.window_capacity {cfg.window_capacity}: percentiles cover only the newest '
                f'{cfg.window_capacity} samples'
            )
        self._ticks_per_eval = max(1, round(cfg.diagnostics_period_s / cfg.drain_period_s))
        self._sampler = None
        if cfg.system_metrics:
            try:
                self._sampler = SystemSampler(per_thread=cfg.per_thread_metrics)
            except (ImportError, OSError) as err:
                self.get_logger().warning(f'system metrics disabled: {err}')
        topic = getattr(getattr(self._app, 'topics', None), 'diagnostics', '/diagnostics')
        self._pub = self.create_lifecycle_publisher(DiagnosticArray, topic, 10)
        m = cfg.metrics
        self._exporter = PrometheusExporter(m.address, m.port, m.thread_priority)
        self._prom_level = Level.OK
        self._prom_message = 'disabled (monitor.metrics.enabled / RT_ENABLE_PROMETHEUS)'
        self._group = self._callback_group()
        if cfg.stats.enabled:  # other processes' statistics (rt_stats), in the same group as the timer
            self._stats_sub = self.create_subscription(
                DiagnosticArray, cfg.stats.topic, self._on_stats, 10, callback_group=self._group
            )
        if baseline:
            self.get_logger().info(f'regression baseline: {baseline}')
        return TransitionCallbackReturn.SUCCESS

    def rt_tasks(self) -> list[Any]:
        """The monitor has no RT tasks (everything runs in the non-RT group)."""
        return []


def _default_registry() -> MetricsRegistry:
    return registry()


def main(argv: list[str] | None = None) -> int:
    """`monitor_node` executable: ``argv`` WITH the program name (as ``rclpy.init``); the common
    :func:`~rt_safe_rl.nodes._sim_base.run_node` body (configure + activate when autostart, spin
    until SIGINT / SIGTERM, exit 2 with one line on a bad config)."""
    return run_node(
        'monitor_node',
        MonitorNode,
        None if argv is None else argv[1:],
        summary='Health monitor: /diagnostics and Prometheus /metrics for the RT pipeline.',
        process_stats=False,  # as before run_node: the monitor process publishes no rt_stats of its own
    )


if __name__ == '__main__':
    sys.exit(main())
