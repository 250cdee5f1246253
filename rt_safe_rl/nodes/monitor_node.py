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
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from rt_safe_rl.core.configutil import from_mapping
from rt_safe_rl.core.errors import ConfigError, RtSafeRlError
from rt_safe_rl.core.monitoring import (
    ComponentStatus,
    Level,
    MonitorConfig,
    MonitorCore,
    RegistryReader,
    SystemSampler,
    apply_env_overrides,
    decode_process_stats,
    load_benchmark_baseline,
    reader_for,
)
from rt_safe_rl.core.monitoring.process_stats import LayoutError, process_source_id
from rt_safe_rl.nodes.process_stats import from_message
from rt_safe_rl.nodes.prometheus_exporter import MetricsEndpointError, MetricsSnapshot, PrometheusExporter
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
GIL_YIELD_S = 20e-6  # sleep between pieces of monitor work so RT threads get the GIL promptly


def _yield_gil() -> None:
    """Release the GIL briefly (a sleep hands it to a waiting thread; sleep(0) may not)."""
    time.sleep(GIL_YIELD_S)


def _flatten(obj: Any, prefix: str = '') -> dict[str, Any]:
    """Leaves of a (nested) config dataclass as {'a.b': value}."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out.update(_flatten(v, f'{prefix}{f.name}.'))
        else:
            out[f'{prefix}{f.name}'] = v
    return out


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in flat.items():
        cur = out
        parts = key.split('.')
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = v
    return out


def _load_app_config(path: str) -> Any:
    from rt_safe_rl.config import load_config

    return load_config(path or None)


class MonitorNode(LifecycleNode):
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

    # ------------------------------------------------------------------ parameters

    def _declare_monitor_parameters(self, cfg: MonitorConfig) -> None:
        self._param_names: list[str] = []
        for key, value in _flatten(cfg).items():
            tunable = key.startswith(TUNABLE_PREFIXES)
            desc = ParameterDescriptor(
                description=f'monitor.{key} (see rt_safe_rl.core.monitoring.MonitorConfig)'
                + ('' if tunable else '; structural: read-only'),
                read_only=not tunable,
            )
            self.declare_parameter(f'monitor.{key}', value, desc)
            self._param_names.append(key)

    def _config_from_params(self, changes: dict[str, Any] | None = None) -> MonitorConfig:
        flat = {k: self.get_parameter(f'monitor.{k}').value for k in self._param_names}
        flat.update(changes or {})
        # ROS doubles declared from a YAML int come back as int: from_mapping accepts int for float.
        return from_mapping(MonitorConfig, _nest(flat), 'monitor (parameters)')

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
                from rt_safe_rl.paths import resolve

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

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the Prometheus endpoint (failure -> logged, disabled, node stays up) and the timer."""
        assert self._cfg is not None and self._exporter is not None
        if not self._cfg.enabled:
            self.get_logger().info(
                'monitor.enabled is false: active but inert (no drain, no /diagnostics, no Prometheus)'
            )
            return super().on_activate(state)
        if self._cfg.metrics.enabled:
            try:
                port = self._exporter.start()
                self._prom_level = Level.OK
                self._prom_message = f'serving http://{self._cfg.metrics.address}:{port}/metrics'
                self.get_logger().info(
                    f'Prometheus metrics on http://{self._cfg.metrics.address}:{port}/metrics'
                )
            except MetricsEndpointError as err:
                self._prom_level = Level.WARN
                self._prom_message = f'Prometheus disabled: {err}'
                self.get_logger().error(str(err) + '; continuing without Prometheus')
        self._tick = 0
        self._last_eval_wall = time.monotonic()
        self._cpu_at_last_eval = self._cpu_ns
        self._timer = self.create_timer(self._cfg.drain_period_s, self._on_timer, callback_group=self._group)
        return super().on_activate(state)

    def _callback_group(self) -> Any:
        """The rt group named by monitor.callback_group, else None (the node's default group)."""
        assert self._cfg is not None
        name = self._cfg.callback_group
        self._group_note = 'default (non-RT)'
        if not name:
            return None
        try:
            from rt_safe_rl.rt.executor import named_group

            group = named_group(self, name)
        except (ImportError, ConfigError) as err:
            self.get_logger().warning(
                f'monitor.callback_group {name!r} unusable ({err}); using the default group'
            )
            return None
        self._group_note = name
        return group

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the timer and the HTTP endpoint."""
        self._stop_runtime()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the publisher and the core."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything."""
        self._stop_runtime()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Stop the endpoint and timer (releases the port) and destroy the node."""
        self._stop_runtime()
        self._release()
        super().destroy_node()

    def _stop_runtime(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        if self._exporter is not None:
            self._exporter.stop()
        self._prom_level, self._prom_message = Level.OK, 'stopped'

    def _release(self) -> None:
        if self._stats_sub is not None:
            self.destroy_subscription(self._stats_sub)
            self._stats_sub = None
        if self._pub is not None:
            self.destroy_lifecycle_publisher(self._pub)
            self._pub = None
        self._core = None
        self._exporter = None
        self._sampler = None

    def rt_tasks(self) -> list[Any]:
        """The monitor has no RT tasks (everything runs in the non-RT group)."""
        return []

    # ------------------------------------------------------------------ work

    @property
    def core(self) -> MonitorCore | None:
        """The monitoring core (None before configure)."""
        return self._core

    @property
    def exporter(self) -> PrometheusExporter | None:
        """The Prometheus exporter (None before configure)."""
        return self._exporter

    @property
    def cpu_time_s(self) -> float:
        """Thread CPU time spent in the monitor's callbacks so far (s)."""
        return self._cpu_ns / 1e9

    def drain(self) -> int:
        """Move pending stage samples of this process's registry into the windows; returns the count
        (non-RT; the windows are the process's one :class:`RegistryReader`'s, shared with the
        statistics publisher)."""
        if self._core is None or self._reader is None:
            return 0
        n = self._reader.drain(_yield_gil)
        self._dropped = dict(self._reader.dropped)
        return n

    def _on_stats(self, msg: DiagnosticArray) -> None:
        """Another process's ``rt_stats`` (layout: core/monitoring/process_stats.py) -> the core."""
        core = self._core
        if core is None:
            return
        try:
            stats = decode_process_stats(from_message(msg))
        except LayoutError as err:
            self._remote_rejected += 1
            if str(err) != self._remote_error:
                self._remote_error = str(err)
                self.get_logger().warning(f'{self._stats_sub.topic_name}: message ignored: {err}')
            return
        if core.ingest_remote(stats, time.monotonic_ns()):
            self._remote_received += 1

    def _on_timer(self) -> None:
        t0 = time.thread_time_ns()
        try:
            self.drain()
            self._tick += 1
            if self._tick >= self._ticks_per_eval:
                self._tick = 0
                self.evaluate_and_publish()
        finally:
            self._cpu_ns += time.thread_time_ns() - t0

    def _monitor_status(self, now_s: float) -> ComponentStatus:
        assert self._cfg is not None
        dt = max(now_s - self._last_eval_wall, 1e-9)
        cpu_pct = 100.0 * (self._cpu_ns - self._cpu_at_last_eval) / 1e9 / dt
        self._last_eval_wall, self._cpu_at_last_eval = now_s, self._cpu_ns
        dropped = sum(self._dropped.values())
        level, msg = self._prom_level, self._prom_message
        if dropped > 0 and level == Level.OK:
            level, msg = Level.WARN, f'{dropped} stage samples dropped (metrics rings overflowed); {msg}'
        vals = [
            ('prometheus', self._prom_message),
            ('monitor cpu (% of one core)', f'{cpu_pct:.2f}'),
            ('drain period (s)', f'{self._cfg.drain_period_s:g}'),
            ('callback group', self._group_note),
            ('http thread', self._exporter.priority_note if self._exporter else '-'),
            ('window (s)', f'{self._cfg.window_s:g}'),
            ('dropped samples', str(dropped)),
            ('remote processes', ', '.join(self._remote_labels()) or 'none'),
            ('remote reports received', str(self._remote_received)),
            ('remote reports rejected', str(self._remote_rejected)),
        ]
        return ComponentStatus('monitor', 'monitor', level, msg, vals)

    def _remote_labels(self) -> list[str]:
        core = self._core
        if core is None:
            return []
        return [f'{",".join(st.nodes) or "?"} ({src})' for src, (st, _, _) in core.remote.items()]

    def evaluate_and_publish(self) -> list[ComponentStatus]:
        """Evaluate all components, publish /diagnostics, log alerts, update /metrics (non-RT)."""
        core = self._core
        if core is None:
            return []
        now_ns = time.monotonic_ns()
        core.ingest_counters(
            self._registry.snapshot_counters(), {k: g.value for k, g in list(self._registry.gauges.items())}
        )
        if self._sampler is not None:
            core.ingest_system(self._sampler.sample(now_ns / 1e9))
            _yield_gil()
        core.extra_status = [self._monitor_status(now_ns / 1e9)]
        statuses = core.evaluate(now_ns)
        log = self.get_logger()
        for ev in core.alerts.drain_events():
            extra = f' ({ev.suppressed} earlier raises not logged)' if ev.suppressed else ''
            if ev.kind == 'cleared':
                log.info(f'alert cleared: {ev.name}')
            elif ev.level >= Level.ERROR:
                log.error(f'alert {ev.name}: {ev.message}{extra}')
            else:
                log.warning(f'alert {ev.name}: {ev.message}{extra}')
        if self._pub is not None:
            msg = DiagnosticArray()
            msg.header.stamp = self.get_clock().now().to_msg()
            prefix = self.get_name()
            for st in statuses:
                msg.status.append(
                    DiagnosticStatus(
                        level=bytes([int(st.level)]),
                        name=f'{prefix}: {st.title}',
                        message=st.message,
                        hardware_id='rt_safe_rl',
                        values=[KeyValue(key=k, value=v) for k, v in st.values],
                    )
                )
            self._pub.publish(msg)
            _yield_gil()
        if self._exporter is not None and self._exporter.running:
            self._exporter.publish(
                MetricsSnapshot.from_core(core, dropped=self._dropped, monitor_cpu_s=self._cpu_ns / 1e9)
            )
        return statuses


def _default_registry() -> MetricsRegistry:
    return registry()


def _make_executor(node: MonitorNode) -> Any:
    """RtExecutor with the placement parameters (``rt.<thread>.cpus`` ...) applied, or a
    SingleThreadedExecutor when the node was built without an app config."""
    from rt_safe_rl.rt.executor import RtExecutor
    from rt_safe_rl.rt.placement import placement_from_parameters

    app = node._app
    return (
        RtExecutor(placement_from_parameters(node, app.rt)) if app is not None else SingleThreadedExecutor()
    )


def main(argv: list[str] | None = None) -> int:
    """`monitor_node` executable: init, build, configure+activate (autostart), spin until Ctrl-C."""
    from rt_safe_rl.nodes._args import check_node_args

    early = check_node_args(
        'monitor_node',
        None if argv is None else argv[1:],
        'Health monitor: /diagnostics and Prometheus /metrics for the RT pipeline.',
    )
    if early is not None:
        return early
    rclpy.init(args=argv)
    node: MonitorNode | None = None
    try:
        node = MonitorNode()
        executor = _make_executor(node)
        executor.add_node(node)
        if node.get_parameter('autostart').value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                print('monitor_node: error: configure failed (see the log above)', file=sys.stderr)
                return 2
            node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RtSafeRlError as err:
        print(f'monitor_node: error: {err}', file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
