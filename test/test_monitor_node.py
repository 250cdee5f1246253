"""MonitorNode with real parts: DDS /diagnostics, HTTP /metrics, a running loop with injected latency.

Each test builds the node with a private MetricsRegistry (so other tests' RT writers in this process
cannot interfere), spins it together with a listener node on a SingleThreadedExecutor thread, and
drives a small periodic loop thread that records 'e2e' samples like the sim robot does.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy not installed (ROS 2 wheels or a sourced ROS 2 needed)')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from rt_safe_rl.core.monitoring import Level  # noqa: E402
from rt_safe_rl.nodes.monitor_node import MonitorNode, main  # noqa: E402
from rt_safe_rl.rt.metrics import MetricsRegistry  # noqa: E402

FAST = {  # short windows so a test sees raise -> clear within seconds
    'monitor.metrics.port': 0,
    'monitor.diagnostics_period_s': 0.1,
    'monitor.drain_period_s': 0.05,
    'monitor.window_s': 0.5,
    'monitor.stale_timeout_s': 0.6,
    'monitor.alerts.raise_after': 2,
    'monitor.alerts.clear_after': 2,
    'monitor.alerts.min_log_interval_s': 0.0,
    'monitor.thresholds.expected_rate_hz': 200.0,
    'monitor.thresholds.rate_warn_fraction': 0.3,  # the loop is a sleeping thread on a busy 2-core VM
    'monitor.thresholds.rate_error_fraction': 0.2,
    'monitor.thresholds.e2e_budget_s': 0.001,
    'monitor.thresholds.cpu_warn_percent': 100.0,
    'monitor.per_thread_metrics': False,
}


class LatencyLoop:
    """A 200 Hz loop thread recording 'e2e' = the time its work took; `delay_s` injects latency."""

    def __init__(self, reg: MetricsRegistry, period_s: float = 0.005) -> None:
        self.rec = reg.stage('e2e')
        self.misses = reg.counter('deadline_misses')
        self.period_s = period_s
        self.delay_s = 0.0
        self.running = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        nxt = time.monotonic()
        while not self._stop.is_set():
            nxt += self.period_s
            t0 = time.monotonic_ns()
            if self.delay_s > 0.0:
                time.sleep(self.delay_s)  # the injected latency (e.g. a slow policy)
            t1 = time.monotonic_ns()
            if self.running:
                self.rec.record_ns(t1, t1 - t0 + 20_000)
            wait = nxt - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                nxt = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


class Harness:
    """Monitor node + /diagnostics listener spinning in a background thread."""

    def __init__(self, ctx: Any, reg: MetricsRegistry, overrides: dict[str, Any]) -> None:
        params = [Parameter(k, value=v) for k, v in overrides.items()]
        self.node = MonitorNode(
            registry=reg, context=ctx, parameter_overrides=params, node_name='test_monitor'
        )
        self.listener = rclpy.create_node('diag_listener', context=ctx)
        self.msgs: list[DiagnosticArray] = []
        self.listener.create_subscription(DiagnosticArray, '/diagnostics', self.msgs.append, 10)
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(self.listener)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.02)

    def latest(self, title: str) -> Any:
        """The newest received status whose name ends with `title` (or None)."""
        for msg in reversed(self.msgs):
            for st in msg.status:
                if st.name.endswith(': ' + title):
                    return st
        return None

    def wait_for(self, pred: Callable[[], bool], timeout_s: float, what: str) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if pred():
                return
            time.sleep(0.02)
        last = {
            t: (self.latest(t).level, self.latest(t).message) if self.latest(t) else None
            for t in ('control loop', 'monitor')
        }
        raise AssertionError(f'timed out after {timeout_s} s waiting for {what}; last statuses {last}')

    def scrape(self) -> dict[str, Any]:
        port = self.node.exporter.port if self.node.exporter else None
        assert port, 'Prometheus endpoint not running'
        body = urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5).read().decode()
        return {f.name: f for f in text_string_to_metric_families(body)}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.executor.shutdown()
        self.node.destroy_node()
        self.listener.destroy_node()


@pytest.fixture
def harness_factory(rclpy_context: Any) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(reg: MetricsRegistry, **extra: Any) -> Harness:
        h = Harness(rclpy_context, reg, {**FAST, **extra})
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def _level(st: Any) -> int:
    return st.level[0] if isinstance(st.level, bytes) else int(st.level)


def _sample(fams: dict[str, Any], fam: str, **labels: str) -> float:
    return next(
        s.value
        for s in fams[fam].samples
        if all(s.labels.get(k) == v for k, v in labels.items()) and not s.name.endswith('_created')
    )


def test_diagnostics_metrics_latency_alert_recovery_and_stale(
    harness_factory: Callable[..., Harness],
) -> None:
    reg = MetricsRegistry()
    loop = LatencyLoop(reg)
    h = harness_factory(reg)
    try:
        assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        # 1. A real DiagnosticArray over DDS, one status per component, loop OK.
        h.wait_for(
            lambda: h.latest('control loop') is not None and _level(h.latest('control loop')) == 0,
            10.0,
            'control loop OK over DDS',
        )
        names = {st.name for st in h.msgs[-1].status}
        assert names == {
            f'test_monitor: {t}' for t in ('control loop', 'policy', 'safety filter', 'system', 'monitor')
        }
        keys = {kv.key for kv in h.latest('control loop').values}
        assert {
            'e2e p50 (us)',
            'e2e p99 (us)',
            'e2e max (us)',
            'rate (Hz)',
            'deadline_misses (total)',
        } <= keys
        assert _level(h.latest('policy')) == Level.STALE  # no policy in this process: STALE, not silence
        # 2. /metrics over HTTP: histogram count == operations == samples the loop recorded so far.
        fams = h.scrape()
        count = next(
            s.value
            for s in fams['rt_execution_time_seconds'].samples
            if s.name.endswith('_count') and s.labels['stage'] == 'e2e'
        )
        assert 0 < count <= loop.rec.count  # what was drained so far, never more than the loop recorded
        assert _sample(fams, 'rt_operations', stage='e2e') == count
        assert 0.0 < _sample(fams, 'rt_system_memory_percent') <= 100.0
        # no latency alert while the loop is nominal (waited for: a preempted sample on a loaded
        # machine may raise it briefly, and this scrape is later than the OK status seen above)
        h.wait_for(
            lambda: _sample(h.scrape(), 'rt_alert_active', alert='e2e.p99_budget') == 0.0,
            10.0,
            'no latency alert while nominal',
        )
        # 3. Inject latency into the running loop: 3 ms > 1 ms budget -> ERROR (> 2 x budget).
        loop.delay_s = 0.003
        h.wait_for(
            lambda: (
                _level(h.latest('control loop')) == Level.ERROR
                and 'e2e p99' in h.latest('control loop').message
            ),
            10.0,
            'latency alert',
        )
        fams = h.scrape()
        assert _sample(fams, 'rt_alert_active', alert='e2e.p99_budget') == 1.0
        assert _sample(fams, 'rt_alerts_raised', alert='e2e.p99_budget') >= 1.0
        assert _sample(fams, 'rt_component_status', component='control_loop') == Level.ERROR
        # 4. Recovery: the alert clears (after the window and the hysteresis), level back to OK.
        loop.delay_s = 0.0
        h.wait_for(lambda: _level(h.latest('control loop')) == Level.OK, 10.0, 'alert cleared')
        h.wait_for(
            lambda: _sample(h.scrape(), 'rt_alert_active', alert='e2e.p99_budget') == 0.0,
            5.0,
            'alert metric cleared',
        )
        # 5. The loop stops publishing: STALE, and the diagnostics keep coming.
        loop.running = False
        h.wait_for(lambda: _level(h.latest('control loop')) == Level.STALE, 10.0, 'STALE')
        assert 'no samples for' in h.latest('control loop').message
        n = len(h.msgs)
        h.wait_for(lambda: len(h.msgs) > n + 2, 5.0, 'diagnostics keep flowing while stale')
        # Deactivate stops the endpoint and the timer; the node is still alive.
        assert h.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert h.node.exporter is not None and not h.node.exporter.running
    finally:
        loop.stop()


def test_port_in_use_keeps_node_up_with_prometheus_disabled(harness_factory: Callable[..., Harness]) -> None:
    with socket.socket() as blocker:
        blocker.bind(('127.0.0.1', 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        reg = MetricsRegistry()
        h = harness_factory(reg, **{'monitor.metrics.port': port})
        assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert h.node.exporter is not None and not h.node.exporter.running
        h.wait_for(lambda: h.latest('monitor') is not None, 10.0, 'monitor status')
        st = h.latest('monitor')
        assert _level(st) == Level.WARN
        assert f'127.0.0.1:{port}' in st.message and 'port already in use' in st.message
        assert 'Prometheus disabled' in dict((kv.key, kv.value) for kv in st.values)['prometheus']


def test_env_overrides_port_and_disable(
    harness_factory: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        free = probe.getsockname()[1]
    monkeypatch.setenv('RT_METRICS_PORT', str(free))
    h = harness_factory(MetricsRegistry())
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert h.node.exporter is not None and h.node.exporter.port == free
    h.scrape()
    monkeypatch.setenv('RT_ENABLE_PROMETHEUS', '0')
    h2 = harness_factory(MetricsRegistry())
    assert h2.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert h2.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert h2.node.exporter is not None and not h2.node.exporter.running


def test_threshold_parameters_validated_at_runtime(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(MetricsRegistry())
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    # warn above error: rejected with the reason, config unchanged
    res = h.node.set_parameters([Parameter('monitor.thresholds.miss_rate_warn', value=0.5)])
    assert not res[0].successful and 'miss_rate_warn' in res[0].reason
    assert h.node.core is not None and h.node.core.cfg.thresholds.miss_rate_warn == pytest.approx(1e-3)
    res = h.node.set_parameters([Parameter('monitor.thresholds.e2e_budget_s', value=-0.1)])
    assert not res[0].successful and 'e2e_budget_s' in res[0].reason
    # a valid change applies to the running core
    res = h.node.set_parameters([Parameter('monitor.thresholds.e2e_budget_s', value=0.002)])
    assert res[0].successful
    assert h.node.core.cfg.thresholds.e2e_budget_s == pytest.approx(0.002)
    # structural parameters are read-only
    res = h.node.set_parameters([Parameter('monitor.metrics.port', value=1234)])
    assert not res[0].successful


def test_configure_fails_cleanly_on_bad_regression_baseline(
    harness_factory: Callable[..., Harness], tmp_path: Any
) -> None:
    h = harness_factory(
        MetricsRegistry(), **{'monitor.regression.baseline_report': str(tmp_path / 'missing.json')}
    )
    assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    good = tmp_path / 'report.json'
    good.write_text('{"stages": {"e2e_us": {"p50": 100.0, "p99": 300.0}}}')
    h2 = harness_factory(MetricsRegistry(), **{'monitor.regression.baseline_report': str(good)})
    assert h2.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert h2.node.core is not None and h2.node.core.baseline['e2e']['p99'] == pytest.approx(300e-6)


def test_main_bad_config_file_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    bad = tmp_path / 'bad.yaml'
    bad.write_text('monitor:\n  thresholds:\n    miss_rate_warn: 0.5\n')
    rc = main(['monitor_node', '--ros-args', '-p', f'config_file:={bad}'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith('monitor_node: error:') and 'miss_rate_warn' in err[0]


def test_composed_on_rt_executor_with_periodic_task(rclpy_context: Any) -> None:
    """Production layout: the loop is a PeriodicTask in the 'control' RT group of the RtExecutor, the
    monitor timer runs in the 'observers' group, /diagnostics comes out over DDS; latency injected
    into the task raises the alert, which clears after recovery."""
    from rt_safe_rl.config import load_config
    from rt_safe_rl.rt.executor import PeriodicTask, RtExecutor

    app = load_config(None, {'rt': {'mlock': False, 'prefault_heap_bytes': 0, 'gc_freeze': False}})
    reg = MetricsRegistry()
    rec = reg.stage('e2e')
    delay_s = [0.0]

    def cycle(deadline_ns: int) -> None:
        if delay_s[0] > 0.0:
            time.sleep(delay_s[0])  # the injected latency
        now = time.monotonic_ns()
        rec.record_ns(now, max(now - deadline_ns, 0))

    task = PeriodicTask('latency_loop', 'control', 5_000_000, cycle, enabled=True)
    loop_node = rclpy.create_node('latency_loop', context=rclpy_context)
    loop_node.rt_tasks = lambda: [task]  # type: ignore[attr-defined]
    params = [Parameter(k, value=v) for k, v in {**FAST, 'monitor.callback_group': 'observers'}.items()]
    node = MonitorNode(
        config=app, registry=reg, context=rclpy_context, parameter_overrides=params, node_name='rt_monitor'
    )
    listener = rclpy.create_node('rt_diag_listener', context=rclpy_context)
    msgs: list[DiagnosticArray] = []
    listener.create_subscription(DiagnosticArray, '/diagnostics', msgs.append, 10)
    ex = RtExecutor(app.rt, context=rclpy_context)
    for n in (loop_node, node, listener):
        ex.add_node(n)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()

    def loop_status() -> Any:
        for msg in reversed(msgs):
            for st in msg.status:
                if st.name == 'rt_monitor: control loop':
                    return st
        return None

    def wait(pred: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if pred():
                return
            time.sleep(0.02)
        st = loop_status()
        raise AssertionError(f'timed out waiting for {what}; last: {st and (st.level, st.message)}')

    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        wait(lambda: loop_status() is not None and _level(loop_status()) == Level.OK, 'control loop OK')
        mon = next(st for st in msgs[-1].status if st.name == 'rt_monitor: monitor')
        assert dict((kv.key, kv.value) for kv in mon.values)['callback group'] == 'observers'
        delay_s[0] = 0.003  # 3 ms > 1 ms budget (> 2 x budget: ERROR)
        wait(
            lambda: _level(loop_status()) == Level.ERROR and 'e2e p99' in loop_status().message,
            'latency alert from the RT task',
        )
        delay_s[0] = 0.0
        wait(lambda: _level(loop_status()) == Level.OK, 'recovery')
    finally:
        ex.shutdown()
        spinner.join(timeout=5.0)
        ex.destroy()
        for n in (node, loop_node, listener):
            n.destroy_node()


def test_reconfigure_cycle_and_disabled_monitor(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(MetricsRegistry())
    ok = TransitionCallbackReturn.SUCCESS
    assert h.node.trigger_configure() == ok and h.node.trigger_activate() == ok
    first = h.node.exporter
    assert first is not None and first.running
    assert h.node.trigger_deactivate() == ok and h.node.trigger_cleanup() == ok
    assert h.node.core is None and not first.running
    assert h.node.trigger_configure() == ok and h.node.trigger_activate() == ok
    assert h.node.exporter is not None and h.node.exporter is not first and h.node.exporter.running
    h.scrape()
    h.wait_for(lambda: len(h.msgs) > 0, 5.0, 'diagnostics from the reconfigured node')
    assert h.node.trigger_deactivate() == ok  # silence it, then check a disabled monitor stays silent
    off = harness_factory(MetricsRegistry(), **{'monitor.enabled': False})
    assert off.node.trigger_configure() == ok and off.node.trigger_activate() == ok
    assert off.node.exporter is not None and not off.node.exporter.running
    time.sleep(0.3)
    off.msgs.clear()
    time.sleep(0.6)  # six diagnostics periods
    assert off.msgs == []
