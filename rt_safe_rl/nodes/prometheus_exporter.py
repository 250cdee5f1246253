"""Prometheus HTTP endpoint for the monitor (prometheus-client; no rclpy).

The monitor builds an immutable :class:`MetricsSnapshot` after each drain/evaluation and hands it
to :meth:`PrometheusExporter.publish` (one attribute store). The HTTP server thread of
prometheus-client renders the latest snapshot on each scrape through a custom collector, so the
monitor never calls ``Histogram.observe`` per sample (1 kHz x 4 stages would cost ~1 % of a core):
histogram buckets are accumulated with numpy in :class:`~rt_safe_rl.core.monitoring.StageWindow` (or
come from another process's ``rt_stats`` report).
Nothing here touches the RT path.

Exported metrics: see :data:`EXPORTED_METRICS` (the dashboards test checks every panel against it).
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.core.monitoring import VIOLATION_COUNTERS, MonitorCore, SystemSample

#: name -> (type, help). Counter names are given without the ``_total`` suffix the exposition adds.
EXPORTED_METRICS: dict[str, tuple[str, str]] = {
    'rt_execution_time_seconds': ('histogram', 'Duration of each pipeline stage (label stage).'),
    'rt_operations': ('counter', 'Samples recorded per stage (label stage).'),
    'rt_errors': ('counter', 'Errors by kind (safety faults and *_errors counters).'),
    'rt_safety_violations': ('counter', 'Commands that reached the robot violating its limits (audit).'),
    'rt_safety_interventions': ('counter', 'Cycles in which the safety filter changed the command.'),
    'rt_deadline_misses': ('counter', 'Control cycles that missed their deadline.'),
    'rt_policy_steps': ('counter', 'Policy inference steps.'),
    'rt_counter': ('counter', 'Every metrics-registry counter by name (label name).'),
    'rt_latency_seconds': ('gauge', 'Stage latency over the window (labels stage, quantile; 1 = max).'),
    'rt_jitter_seconds': ('gauge', 'p99 of |sample interval - median interval| in the window (label stage).'),
    'rt_stage_rate_hz': ('gauge', 'Samples per second over the window (label stage).'),
    'rt_loop_rate_hz': ('gauge', 'Control loop rate (period samples per second, else e2e, in the window).'),
    'rt_expected_loop_rate_hz': ('gauge', 'Expected control loop rate.'),
    'rt_latency_budget_seconds': ('gauge', 'Configured p99 budget per stage (label stage).'),
    'rt_human_distance_meters': ('gauge', 'Latest human-robot separation seen by the safety filter.'),
    'rt_gauge': ('gauge', 'Every metrics-registry gauge by name (label name).'),
    'rt_system_cpu_percent': ('gauge', 'System-wide CPU utilisation (% of all cores).'),
    'rt_system_memory_percent': ('gauge', 'System memory in use (%).'),
    'rt_process_cpu_percent': ('gauge', "This process's CPU use (% of one core)."),
    'rt_process_resident_memory_bytes': ('gauge', "This process's resident set size."),
    'rt_process_context_switches': ('counter', 'Context switches of this process (label kind).'),
    'rt_thread_cpu_percent': ('gauge', 'CPU use per thread (% of one core; label thread = name:tid).'),
    'rt_component_status': ('gauge', 'Diagnostics level per component: 0 OK, 1 WARN, 2 ERROR, 3 STALE.'),
    'rt_alert_active': ('gauge', '1 while an alert is active (labels alert, component).'),
    'rt_alerts_raised': ('counter', 'Times each alert was raised (labels alert, component).'),
    'rt_regression_ratio': ('gauge', 'Live stage percentile / benchmark baseline (labels stage, quantile).'),
    'rt_metrics_dropped': ('counter', 'Stage samples lost because a metrics ring was full (label stage).'),
    'rt_monitor_cpu_seconds': ('counter', "CPU time spent in the monitor's own callbacks."),
}


def exposed_names() -> set[str]:
    """Every sample name that appears on /metrics (with _total, _bucket, _sum, _count suffixes)."""
    out: set[str] = set()
    for name, (kind, _) in EXPORTED_METRICS.items():
        if kind == 'counter':
            out |= {f'{name}_total', f'{name}_created'}
        elif kind == 'histogram':
            out |= {name, f'{name}_bucket', f'{name}_sum', f'{name}_count'}
        else:
            out.add(name)
    return out


class MetricsEndpointError(RtSafeRlError):
    """The Prometheus endpoint could not be started (port in use, bad address)."""


@dataclass(frozen=True)
class MetricsSnapshot:
    """Everything /metrics shows, captured at one instant by the monitor thread (immutable)."""

    histograms: dict[str, tuple[list[tuple[str, int]], float]] = field(default_factory=dict)
    operations: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    latency: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # p50, p99, max (s)
    jitter: dict[str, float] = field(default_factory=dict)
    rate_hz: dict[str, float] = field(default_factory=dict)
    expected_rate_hz: float = math.nan
    loop_rate_hz: float = math.nan
    budgets_s: dict[str, float] = field(default_factory=dict)
    system: SystemSample | None = None
    components: dict[str, int] = field(default_factory=dict)
    alerts: dict[str, tuple[str, bool, int]] = field(default_factory=dict)  # name: component, active, raised
    regression: dict[tuple[str, str], float] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    monitor_cpu_s: float = 0.0

    @staticmethod
    def from_core(
        core: MonitorCore, *, dropped: Mapping[str, int] | None = None, monitor_cpu_s: float = 0.0
    ) -> MetricsSnapshot:
        """Capture `core` (call from the monitor thread after ingest/evaluate). Not RT-safe."""
        hist = {s: (w.cumulative_buckets(), w.sum_s) for s, w in core.stages.items() if w.total > 0}
        summ = {s: core.summaries[s] for s in hist}
        reg: dict[tuple[str, str], float] = {}
        for s, base in core.baseline.items():
            sm = core.summaries.get(s)
            if sm is not None and sm.n_samples > 0:
                live = {'p50': sm.p50_s, 'p99': sm.p99_s}
                reg.update({(s, q): live[q] / b for q, b in base.items() if b > 0})
        return MetricsSnapshot(
            histograms=hist,
            operations={s: w.total for s, w in core.stages.items() if w.total > 0},
            counters=dict(core.counters),
            gauges=dict(core.gauges),
            latency={s: (m.p50_s, m.p99_s, m.max_s) for s, m in summ.items()},
            jitter={s: m.jitter_p99_s for s, m in summ.items()},
            rate_hz={s: m.rate_hz for s, m in summ.items()},
            expected_rate_hz=core.expected_rate_hz,
            loop_rate_hz=core.summaries[core.loop_rate_stage()].rate_hz,
            budgets_s={s: core.cfg.thresholds.budget_s(s) for s in core.stages},
            system=core.system,
            components={st.name: int(st.level) for st in core.last_statuses},
            alerts={n: (a.component, a.active, a.raised_total) for n, a in core.alerts.alerts.items()},
            regression=reg,
            dropped=dict(dropped or {}),
            monitor_cpu_s=monitor_cpu_s,
        )


def _fam(name: str, labels: list[str] | None = None) -> Any:
    kind, doc = EXPORTED_METRICS[name]
    if kind == 'counter':
        return CounterMetricFamily(name, doc, labels=labels)
    if kind == 'histogram':
        return HistogramMetricFamily(name, doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


class _SnapshotCollector(Collector):
    """Renders the exporter's latest snapshot (runs in the HTTP server thread)."""

    def __init__(self, exporter: PrometheusExporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterator[Metric]:
        snap = self._exporter.snapshot
        yield from _counter_families(snap)
        yield from _stage_families(snap)
        if snap.system is not None:
            yield from _system_families(snap.system)
        yield from _status_families(snap)


def _counter_families(snap: MetricsSnapshot) -> Iterator[Metric]:
    """Execution-time histograms, operation / error / safety / deadline / policy counters."""
    h = _fam('rt_execution_time_seconds', ['stage'])
    for stage, (buckets, sum_s) in snap.histograms.items():
        h.add_metric([stage], buckets, sum_s)
    yield h
    ops = _fam('rt_operations', ['stage'])
    for stage, n in snap.operations.items():
        ops.add_metric([stage], n)
    yield ops
    errs = _fam('rt_errors', ['kind'])
    for name, iv in snap.counters.items():
        if name == 'faults' or name.endswith('_errors'):
            errs.add_metric([name], iv)
    yield errs
    for fam_name, names in (
        ('rt_safety_violations', VIOLATION_COUNTERS),
        ('rt_safety_interventions', ('safety_interventions',)),
        ('rt_deadline_misses', ('deadline_misses',)),
        ('rt_policy_steps', ('policy_steps',)),
    ):
        f = _fam(fam_name)
        f.add_metric([], sum(snap.counters.get(n, 0) for n in names))
        yield f
    c = _fam('rt_counter', ['name'])
    for name, iv in snap.counters.items():
        c.add_metric([name], iv)
    yield c


def _stage_families(snap: MetricsSnapshot) -> Iterator[Metric]:
    """Per-stage latency quantiles, jitter, rates and budgets; loop rates; gauges."""
    lat = _fam('rt_latency_seconds', ['stage', 'quantile'])
    for stage, (p50, p99, mx) in snap.latency.items():
        for q, v in (('0.5', p50), ('0.99', p99), ('1', mx)):
            lat.add_metric([stage, q], v)
    yield lat
    jit = _fam('rt_jitter_seconds', ['stage'])
    for stage, v in snap.jitter.items():
        jit.add_metric([stage], v)
    yield jit
    rate = _fam('rt_stage_rate_hz', ['stage'])
    for stage, v in snap.rate_hz.items():
        rate.add_metric([stage], v)
    yield rate
    loop = _fam('rt_loop_rate_hz')
    loop.add_metric([], snap.loop_rate_hz)
    yield loop
    exp = _fam('rt_expected_loop_rate_hz')
    exp.add_metric([], snap.expected_rate_hz)
    yield exp
    bud = _fam('rt_latency_budget_seconds', ['stage'])
    for stage, v in snap.budgets_s.items():
        bud.add_metric([stage], v)
    yield bud
    hd = _fam('rt_human_distance_meters')
    hd.add_metric([], snap.gauges.get('human_distance_m', math.nan))
    yield hd
    g = _fam('rt_gauge', ['name'])
    for name, v in snap.gauges.items():
        g.add_metric([name], v)
    yield g


def _system_families(sysm: SystemSample) -> Iterator[Metric]:
    """System and process CPU / memory, context switches, per-thread CPU."""
    for fam_name, v in (
        ('rt_system_cpu_percent', sysm.system_cpu_percent),
        ('rt_system_memory_percent', sysm.system_memory_percent),
        ('rt_process_cpu_percent', sysm.process_cpu_percent),
        ('rt_process_resident_memory_bytes', float(sysm.process_rss_bytes)),
    ):
        f = _fam(fam_name)
        f.add_metric([], v)
        yield f
    cs = _fam('rt_process_context_switches', ['kind'])
    cs.add_metric(['voluntary'], sysm.ctx_switches_voluntary)
    cs.add_metric(['involuntary'], sysm.ctx_switches_involuntary)
    yield cs
    th = _fam('rt_thread_cpu_percent', ['thread'])
    for name, v in sysm.threads_cpu_percent.items():
        th.add_metric([name], v)
    yield th


def _status_families(snap: MetricsSnapshot) -> Iterator[Metric]:
    """Component status, alerts, baseline regression ratios, dropped samples, the monitor's CPU."""
    comp = _fam('rt_component_status', ['component'])
    for name, lvl in snap.components.items():
        comp.add_metric([name], lvl)
    yield comp
    act = _fam('rt_alert_active', ['alert', 'component'])
    raised = _fam('rt_alerts_raised', ['alert', 'component'])
    for name, (component, active, count) in snap.alerts.items():
        act.add_metric([name, component], 1.0 if active else 0.0)
        raised.add_metric([name, component], count)
    yield act
    yield raised
    reg = _fam('rt_regression_ratio', ['stage', 'quantile'])
    for (stage, q), v in snap.regression.items():
        reg.add_metric([stage, q], v)
    yield reg
    dr = _fam('rt_metrics_dropped', ['stage'])
    for stage, n in snap.dropped.items():
        dr.add_metric([stage], n)
    yield dr
    mc = _fam('rt_monitor_cpu_seconds')
    mc.add_metric([], snap.monitor_cpu_s)
    yield mc


class PrometheusExporter:
    """Serves the latest :class:`MetricsSnapshot` on ``http://address:port/metrics``.

    The server runs in prometheus-client's daemon thread; :meth:`publish` is one attribute store
    (non-blocking). Use a fresh exporter per endpoint (own CollectorRegistry, so several can coexist
    in one process, e.g. tests).
    """

    def __init__(self, address: str = '127.0.0.1', port: int = 9090, thread_priority: int = 0) -> None:
        self.address = address
        self.requested_port = port
        self.thread_priority = thread_priority
        self.priority_note = 'SCHED_OTHER'  # what the server thread got
        self.port: int | None = None  # the bound port once started
        self.snapshot = MetricsSnapshot()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(self))
        self._server: object | None = None
        self._thread: object | None = None

    def start(self) -> int:
        """Bind and serve; returns the bound port.

        Raises:
            MetricsEndpointError: port in use, permission denied or bad address (one clear line).
        """
        if self._server is not None:
            assert self.port is not None
            return self.port
        try:
            server, thread = start_http_server(self.requested_port, self.address, self.registry)
        except OSError as err:
            in_use = err.errno == errno.EADDRINUSE
            reason = 'port already in use' if in_use else (err.strerror or str(err))
            raise MetricsEndpointError(
                f'cannot serve Prometheus metrics on {self.address}:{self.requested_port}: {reason} '
                '(set monitor.metrics.port or RT_METRICS_PORT, or RT_ENABLE_PROMETHEUS=0)'
            ) from None
        self._server, self._thread = server, thread
        self.port = int(server.server_port)
        if self.thread_priority > 0:
            # Request threads inherit the server thread's policy (pthread default: inherit).
            try:
                os.sched_setscheduler(
                    thread.native_id or 0, os.SCHED_FIFO, os.sched_param(self.thread_priority)
                )
                self.priority_note = f'SCHED_FIFO {self.thread_priority}'
            except (OSError, AttributeError) as err:
                self.priority_note = f'SCHED_OTHER (FIFO {self.thread_priority} not granted: {err})'
        return self.port

    @property
    def running(self) -> bool:
        """True while the HTTP server is up."""
        return self._server is not None

    def publish(self, snapshot: MetricsSnapshot) -> None:
        """Make `snapshot` what the next scrape sees (non-blocking)."""
        self.snapshot = snapshot

    def render(self) -> bytes:
        """The text exposition of the current snapshot (what /metrics returns)."""
        return generate_latest(self.registry)

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
            thread = self._thread
            if thread is not None:
                thread.join(timeout=2.0)  # type: ignore[attr-defined]
        self._thread = None
        self.port = None
