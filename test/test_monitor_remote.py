"""Monitoring across processes: every RT process publishes its own statistics on ``rt_stats``
(layout: rt_safe_rl/core/monitoring/process_stats.py) and a monitor in another process reports the
same components with the same numbers as an in-process one.

Core part: encode/decode round trip is exact, and a MonitorCore fed another process's report gives
the numbers a MonitorCore fed the raw samples gives. Node part: a real ``sim_robot`` executable in a
subprocess (its ``run_node`` attaches the publisher) and a MonitorNode here: /diagnostics shows the
remote control loop live, with the numbers of the rt_stats message it came from.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rt_safe_rl.core.monitoring import (
    MonitorConfig,
    MonitorCore,
    ProcessStats,
    RegistryReader,
    decode_process_stats,
    encode_process_stats,
)
from rt_safe_rl.core.monitoring.process_stats import LayoutError
from rt_safe_rl.rt.metrics import MetricsRegistry

NS = 1_000_000_000


def _fill(reg: MetricsRegistry, t0_ns: int, n: int = 3000) -> None:
    rng = np.random.default_rng(5)
    e2e, period = reg.stage('e2e'), reg.stage('period')
    for i in range(n):
        t = t0_ns + i * 1_000_000
        e2e.record_ns(t, int(rng.integers(80_000, 400_000)))
        period.record_ns(t, int(1_000_000 + rng.integers(-30_000, 30_000)))
    reg.counter('deadline_misses').inc(3)
    reg.counter('command_limit_violations').inc(0)
    reg.gauge('human_distance_m').set(1.25)


def _values(core: MonitorCore, now_ns: int, title: str) -> dict[str, str]:
    st = next(s for s in core.evaluate(now_ns) if s.title == title)
    return dict(st.values)


def test_round_trip_is_exact_and_a_remote_report_gives_the_in_process_numbers() -> None:
    reg = MetricsRegistry()
    now = time.monotonic_ns()
    _fill(reg, now - 3 * NS)
    reader = RegistryReader(reg)
    assert reader.drain() == 6000
    ps = ProcessStats.from_reader(reader, now, 10.0, source='robot-host:4242', nodes=['sim_robot'])
    back = decode_process_stats(encode_process_stats(ps))
    assert back == ps  # floats as repr: bit-exact

    cfg = MonitorConfig()
    local = MonitorCore(cfg, windows=reader.windows)  # what a monitor in that process would see
    local.ingest_counters(reg.snapshot_counters(), {'human_distance_m': 1.25})
    remote = MonitorCore(cfg, own_source='monitor-host:1')  # a monitor in another process
    assert remote.ingest_remote(back, now)
    lv, rv = _values(local, now, 'control loop'), _values(remote, now, 'control loop')
    assert rv.pop('e2e source').startswith('sim_robot (robot-host:4242)')
    assert rv.pop('period source').startswith('sim_robot')
    assert lv == rv
    assert float(lv['rate (Hz)']) > 0 and lv['deadline_misses (total)'] == '3'
    assert _values(remote, now, 'safety filter')['human_distance_m'] == '1.250'
    # Prometheus histograms come through too (same buckets, same sum).
    assert remote.stages['e2e'].cumulative_buckets() == reader.windows['e2e'].cumulative_buckets()


def test_own_reports_are_ignored_counters_add_up_and_a_silent_process_goes_stale() -> None:
    reg = MetricsRegistry()
    now = time.monotonic_ns()
    _fill(reg, now - 3 * NS, n=500)
    reader = RegistryReader(reg)
    reader.drain()
    a = ProcessStats.from_reader(reader, now, 10.0, source='h:1', nodes=['policy_node'])
    b = ProcessStats('h:2', ('safety_node',), 10.0, {}, {'deadline_misses': 4, 'faults': 1}, {})
    core = MonitorCore(MonitorConfig(stale_timeout_s=3.0), own_source='h:1')
    assert not core.ingest_remote(a, now)  # own process: its data is local already
    core.own_source = 'h:0'
    assert core.ingest_remote(a, now) and core.ingest_remote(b, now)
    core.ingest_counters({'deadline_misses': 10})
    assert core.counters['deadline_misses'] == 10 + 3 + 4
    assert core.counters['faults'] == 1
    st = next(s for s in core.evaluate(now + 10 * NS) if s.title == 'control loop')
    assert int(st.level) == 3 and 'no samples for' in st.message  # reported once, then silent


def test_a_message_in_another_layout_is_refused_with_the_reason() -> None:
    with pytest.raises(LayoutError, match=r"no 'rt_stats: process' status"):
        decode_process_stats([('x', 'h:1', '', [])])
    bad = [('rt_stats: process', 'h:1', '', [('layout', '1'), ('window_s', '10.0')])]
    bad.append(('rt_stats: stage e2e', 'h:1', '', [('samples', '3')]))
    with pytest.raises(LayoutError, match="stage e2e: missing key 'rate_hz'"):
        decode_process_stats(bad)


# --------------------------------------------------------------------------------------------------
# Real processes
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def sim_robot_process() -> Iterator[subprocess.Popen[str]]:
    pytest.importorskip('rclpy', reason='rclpy not installed (ROS 2 wheels or a sourced ROS 2 needed)')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'rt_safe_rl.nodes.sim_robot_node', '--ros-args', '-r', '__ns:=/remote_t'],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, 'PYTHONUNBUFFERED': '1'},
    )
    yield proc
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.stdout is not None
    proc.stdout.close()


def test_monitor_in_another_process_reports_the_remote_loop_live(
    sim_robot_process: subprocess.Popen[str], rclpy_context: Any
) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from rt_safe_rl.nodes.monitor_node import MonitorNode
    from rt_safe_rl.nodes.process_stats import from_message

    fast = {
        'monitor.metrics.enabled': False,
        'monitor.diagnostics_period_s': 0.5,
        'monitor.drain_period_s': 0.5,
    }
    node = MonitorNode(
        registry=MetricsRegistry(),  # nothing local: everything must come from the other process
        namespace='remote_t',
        context=rclpy_context,
        parameter_overrides=[Parameter(k, value=v) for k, v in fast.items()],
    )
    diags: list[Any] = []
    stats: list[ProcessStats] = []
    listener = rclpy.create_node('remote_listener', namespace='remote_t', context=rclpy_context)
    listener.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    listener.create_subscription(
        DiagnosticArray, 'rt_stats', lambda m: stats.append(decode_process_stats(from_message(m))), 10
    )
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    ex.add_node(listener)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            ex.spin_once(timeout_sec=0.05)

    th = threading.Thread(target=spin)
    th.start()
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        end = time.monotonic() + 120.0  # the subprocess imports and starts on a loaded machine
        loop = None
        while time.monotonic() < end and sim_robot_process.poll() is None:
            for msg in reversed(diags[-5:]):
                loop = next((s for s in msg.status if s.name.endswith(': control loop')), None)
                if loop is not None and loop.level != b'\x03':
                    break
                loop = None
            if loop is not None:
                break
            time.sleep(0.2)
        assert sim_robot_process.poll() is None, 'sim_robot exited early'
        assert loop is not None, f'no live control loop on /diagnostics; last: {diags[-1:] or "none"}'
        vals = {kv.key: kv.value for kv in loop.values}
        assert vals['period source'].startswith('sim_robot (')
        # The monitor's numbers are those of an rt_stats message the sim_robot process published.
        reported = {f'{p.stages["period"].summary.p50_s * 1e6:.1f}' for p in stats if 'period' in p.stages}
        assert vals['period p50 (us)'] in reported
    finally:
        stop.set()
        th.join(timeout=5)
        ex.shutdown()
        node.destroy_node()
        listener.destroy_node()
