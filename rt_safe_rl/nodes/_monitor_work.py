"""The monitor node's work half (moved unchanged out of :mod:`.monitor_node`): draining the stage
rings, other processes' ``rt_stats``, the evaluation timer, the monitor's own status, /diagnostics
and the Prometheus snapshot; activate / deactivate / cleanup / shutdown, the callback group and the
release of the runtime. Non-RT only (it yields the GIL between pieces of work, :func:`_yield_gil`).
"""

from __future__ import annotations

import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.monitoring import (
    ComponentStatus,
    Level,
    MonitorConfig,
    MonitorCore,
    RegistryReader,
    SystemSampler,
    decode_process_stats,
)
from rt_safe_rl.core.monitoring.process_stats import LayoutError
from rt_safe_rl.nodes._sim_base import LabelledLifecycleNode
from rt_safe_rl.nodes.process_stats import from_message
from rt_safe_rl.nodes.prometheus_exporter import MetricsEndpointError, MetricsSnapshot, PrometheusExporter
from rt_safe_rl.rt.executor import named_group
from rt_safe_rl.rt.metrics import MetricsRegistry

GIL_YIELD_S = 20e-6  # sleep between pieces of monitor work so RT threads get the GIL promptly


def _yield_gil() -> None:
    """Release the GIL briefly (a sleep hands it to a waiting thread; sleep(0) may not)."""
    time.sleep(GIL_YIELD_S)


class MonitorWork(LabelledLifecycleNode):
    """Base of :class:`~rt_safe_rl.nodes.monitor_node.MonitorNode` (see the module docstring); the
    subclass sets the attributes in its constructor and ``on_configure``."""

    _registry: MetricsRegistry
    _core: MonitorCore | None
    _cfg: MonitorConfig | None
    _exporter: PrometheusExporter | None
    _sampler: SystemSampler | None
    _pub: Any
    _timer: Any
    _group: Any
    _stats_sub: Any
    _reader: RegistryReader | None
    _remote_received: int
    _remote_rejected: int
    _remote_error: str
    _ticks_per_eval: int
    _tick: int
    _cpu_ns: int
    _prom_level: Level
    _prom_message: str
    _dropped: dict[str, int]
    _last_eval_wall: float
    _cpu_at_last_eval: int
    _group_note: str

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

    def _callback_group(self) -> Any:
        """The rt group named by monitor.callback_group, else None (the node's default group)."""
        assert self._cfg is not None
        name = self._cfg.callback_group
        self._group_note = 'default (non-RT)'
        if not name:
            return None
        try:
            group = named_group(self, name)
        except (ImportError, ConfigError) as err:
            self.get_logger().warning(
                f'monitor.callback_group {name!r} unusable ({err}); using the default group'
            )
            return None
        self._group_note = name
        return group

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
