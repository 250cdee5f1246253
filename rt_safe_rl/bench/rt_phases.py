"""The phases of ``rt-safe-rl bench rt``; each runs in a child process of its own
(``python -m rt_safe_rl.bench.rt_bench --phase NAME ...``, see :mod:`rt_safe_rl.bench.rt_bench`).

* ``floor`` / ``floor_c``: a bare SCHED_FIFO absolute-deadline sleep loop in Python / in C.
* ``executor``: :class:`~rt_safe_rl.rt.executor.RtExecutor` + a PeriodicTask in group ``control``.
* ``rclpy`` / ``rclpy_fifo``: rclpy's SingleThreadedExecutor + a steady-clock timer, stock / RT knobs.
* ``handoff``: policy -> safety through the in-process channel vs a DDS topic, same and other thread.

Each returns a JSON-able dict (raw samples go to :data:`~rt_safe_rl.bench.rt_loops._SAMPLES`). The
measured loops run in RT threads; the set-up and the summaries are not RT-safe.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.bench.rt_loops import _SAMPLES, CFloorLoop, _pct, _warm_cut, loop_stats
from rt_safe_rl.config import load_config
from rt_safe_rl.core.errors import ConfigError, RtSafeRlError
from rt_safe_rl.paths import config_path as shipped
from rt_safe_rl.rt import sched
from rt_safe_rl.rt.channel import get_channel


def _rt_cfg(config_path: str | None, spin_us: int | None) -> Any:
    app = load_config(config_path or shipped('default.yaml'))
    rt = app.rt
    if spin_us is not None:
        groups = {
            k: (dataclasses.replace(g, spin_us=spin_us) if g.is_rt else g) for k, g in rt.groups.items()
        }
        rt = dataclasses.replace(rt, groups=groups)
    return rt


def phase_floor(a: argparse.Namespace) -> dict[str, Any]:
    """Bare Python SCHED_FIFO absolute-deadline sleep loop (the floor), same thread settings as control."""
    rt = _rt_cfg(a.config, a.spin_us)
    g = rt.groups['control']
    period = round(1e9 / a.rate_hz)
    n = int((a.duration + a.warmup) * a.rate_hz) + 10
    dl_arr = np.zeros(n, dtype=np.int64)
    st_arr = np.zeros(n, dtype=np.int64)
    out: dict[str, Any] = {}
    ok, msg = sched.lock_memory() if rt.mlock else (False, 'not requested')
    gc.collect()
    gc.freeze()
    gc.disable()

    def run() -> None:
        grant = sched.apply_thread_settings('rt_floor', g.policy, g.priority, g.real_cpus, g.timer_slack_ns)
        out['grant'] = grant.as_dict()
        sleeper = sched.AbsSleeper()
        mono = time.monotonic_ns
        now = mono()
        dl = (now // period + 1) * period
        i = 0
        while i < n:
            sleeper.sleep_until(dl)
            t = mono()
            dl_arr[i] = dl
            st_arr[i] = t
            i += 1
            dl += period
            if dl <= t:  # skip policy, like the executor
                dl += ((t - dl) // period + 1) * period

    th = threading.Thread(target=run)
    th.start()
    th.join()
    keep = _warm_cut(dl_arr.astype(np.float64), int(dl_arr[0]), a.warmup, a.duration)
    res = loop_stats(dl_arr[keep], st_arr[keep], period)
    res['mlock'] = ok
    res['mlock_message'] = msg
    res['grant'] = out.get('grant')
    return res


def phase_floor_c(a: argparse.Namespace) -> dict[str, Any]:
    """The same floor loop in C (needs a C compiler; skipped with a reason otherwise)."""
    rt = _rt_cfg(a.config, a.spin_us)
    g = rt.groups['control']
    period = round(1e9 / a.rate_hz)
    cpu = g.real_cpus[0] if g.real_cpus else -1
    prio = g.priority if g.is_rt else 1
    try:
        floor = CFloorLoop(period, a.duration + a.warmup, prio, cpu)
    except RtSafeRlError as err:
        return {'skipped': str(err)}
    dl, st, fifo = floor.samples()
    keep = _warm_cut(dl.astype(np.float64), int(dl[0]) if dl.size else 0, a.warmup, a.duration)
    res = loop_stats(dl[keep], st[keep], period)
    res['fifo'] = fifo
    return res


def phase_executor(a: argparse.Namespace) -> dict[str, Any]:
    """RtExecutor + PeriodicTask in the control group (a node is composed, as in bringup)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    from rt_safe_rl.rt.executor import PeriodicTask, RtExecutor, named_group

    rt = _rt_cfg(a.config, a.spin_us)
    period = round(1e9 / a.rate_hz)
    cap = int((a.duration + a.warmup) * a.rate_hz * 1.2) + 1000
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        node = Node('rt_bench_executor', context=ctx)
        ch = get_channel('/rt_bench/loop', 7)
        vals = np.zeros(7)

        first = [0]
        window_ns = int((a.warmup + a.duration) * 1e9)

        def tick(deadline_ns: int) -> None:
            vals[0] = deadline_ns
            ch.try_write(vals, deadline_ns)
            if first[0] == 0:
                first[0] = deadline_ns
            elif deadline_ns - first[0] > window_ns:
                ex.shutdown()  # measured window complete (whatever the process setup took)

        task = PeriodicTask(
            'bench_loop', named_group(node, 'control'), period, tick, enabled=True, stats_capacity=cap
        )
        ex = RtExecutor(rt, context=ctx)
        ex.add_node(node)
        ex.add_task(task)
        ex.spin(a.warmup + a.duration + 30.0)  # ends when the task saw the whole window
        rep = ex.report()
        buf = np.zeros((cap, 3))
        k = task.samples.drain(buf)
        s = buf[:k]
        keep = _warm_cut(s[:, 0], int(s[0, 0]), a.warmup, a.duration) if k else np.zeros(0, bool)
        res = loop_stats(s[keep, 0], s[keep, 1], period)
        res['task'] = rep['tasks']['bench_loop']
        res['report'] = {k2: rep[k2] for k2 in ('process', 'gc', 'threads', 'warnings', 'errors', 'stalls')}
        ex.destroy()
        node.destroy_node()
        return res
    finally:
        rclpy.shutdown(context=ctx)


def phase_rclpy(a: argparse.Namespace, rt_knobs: bool = False) -> dict[str, Any]:
    """rclpy SingleThreadedExecutor + steady-clock timer; optional RT knobs on the spinning thread."""
    import rclpy
    from rclpy.clock import Clock, ClockType
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.timer import TimerInfo

    from rt_safe_rl.rt.rclpy_adapter import with_timer_info

    period = round(1e9 / a.rate_hz)
    n = int((a.duration + a.warmup) * a.rate_hz * 1.2) + 1000
    exp = np.zeros(n, dtype=np.int64)
    st = np.zeros(n, dtype=np.int64)
    idx = [0]
    ctx = Context()
    rclpy.init(context=ctx)
    res: dict[str, Any] = {}
    try:
        node = Node('rt_bench_rclpy', context=ctx)
        mono = time.monotonic_ns

        def cb(info: TimerInfo) -> None:
            t = mono()
            i = idx[0]
            if i < n:
                exp[i] = info.expected_call_time.nanoseconds
                st[i] = t
                idx[0] = i + 1

        node.create_timer(period / 1e9, with_timer_info(cb), clock=Clock(clock_type=ClockType.STEADY_TIME))
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        if rt_knobs:
            rt = _rt_cfg(a.config, a.spin_us)
            g = rt.groups['control']
            gc.collect()
            gc.freeze()
            gc.disable()
            ok, _msg = sched.lock_memory()
            grant = sched.apply_thread_settings(
                'rclpy_fifo', g.policy, g.priority, g.real_cpus, g.timer_slack_ns
            )
            res['grant'] = grant.as_dict()
            res['mlock'] = ok
        end = mono() + int((a.warmup + a.duration + 0.2) * 1e9)
        while mono() < end:
            ex.spin_once(timeout_sec=0.1)
        k = idx[0]
        keep = (
            _warm_cut(exp[:k].astype(np.float64), int(exp[0]), a.warmup, a.duration)
            if k
            else np.zeros(0, bool)
        )
        res.update(loop_stats(exp[:k][keep], st[:k][keep], period))
        ex.shutdown()
        node.destroy_node()
        return res
    finally:
        rclpy.shutdown(context=ctx)


def phase_handoff(a: argparse.Namespace) -> dict[str, Any]:
    """Policy -> safety hand-off through the channel vs a DDS topic, same thread and cross-thread."""
    import rclpy
    from rclpy.context import Context

    rt = _rt_cfg(a.config, a.spin_us)
    n = int((a.duration + a.warmup) * a.rate_hz) + 1000
    lat = {k: np.zeros(n, dtype=np.int64) for k in ('ch_same', 'ch_x', 'dds_same', 'dds_x')}
    cnt = dict.fromkeys(lat, 0)
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        rep = _spin_handoff(a, rt, ctx, lat, cnt)
        return _handoff_result(lat, cnt, rep)
    finally:
        rclpy.shutdown(context=ctx)


def _spin_handoff(
    a: argparse.Namespace, rt: Any, ctx: Any, lat: dict[str, npt.NDArray[np.int64]], cnt: dict[str, int]
) -> dict[str, Any]:
    """The hand-off run: a producer in group control alternates channel/DDS, same-thread/other-thread
    writes each cycle; the consumers record write -> callback latencies (ns) into ``lat`` (``cnt``
    filled) after the warm-up. Returns the RtExecutor's report."""
    from rclpy.node import Node
    from rclpy.qos import QoSProfile

    period = round(1e9 / a.rate_hz)
    n = lat['ch_same'].shape[0]
    t_measure = [0]
    node = Node('rt_bench_handoff', context=ctx)
    qos = QoSProfile(depth=1)
    ch_same, ch_x, pub_same, pub_x, msg = _handoff_writers(node, qos)
    vals = np.zeros(8)
    mono = time.monotonic_ns
    cycle = [0]

    def record(key: str, t_write: float) -> None:
        t = mono()
        if t_write < t_measure[0]:
            return
        i = cnt[key]
        if i < n:
            lat[key][i] = t - int(t_write)
            cnt[key] = i + 1

    first = [0]
    window_ns = int((a.warmup + a.duration) * 1e9)

    def produce(deadline_ns: int) -> None:
        c = cycle[0]
        cycle[0] = c + 1
        if c == 0:
            first[0] = deadline_ns
            t_measure[0] = deadline_ns + int(a.warmup * 1e9)
        elif deadline_ns - first[0] > window_ns:
            ex.shutdown()
        which = c & 3
        if which == 0:
            ch_same.try_write(vals, deadline_ns)
        elif which == 1:
            ch_x.try_write(vals, deadline_ns)
        elif which == 2:
            msg.data[0] = float(mono())
            pub_same.publish(msg)
        else:
            msg.data[0] = float(mono())
            pub_x.publish(msg)

    # Consumers read the producer's row in place (zero-copy view, as the safety node does);
    # latency = write -> consumer callback start with the data readable, like the DDS
    # callback start with the message deserialized.
    sink = np.zeros(2)

    def on_ch_same(seq: int) -> None:
        record('ch_same', ch_same.write_ns)
        sink[0] = ch_same.view_of(seq)[0]

    def on_ch_x(seq: int) -> None:
        record('ch_x', ch_x.write_ns)
        sink[1] = ch_x.view_of(seq)[0]

    _dds_consumers(node, qos, record)
    ex = _handoff_executor(rt, ctx, node, period, produce, (ch_same, on_ch_same), (ch_x, on_ch_x))
    t_measure[0] = 1 << 62  # set by the first produce() call
    ex.spin(a.warmup + a.duration + 30.0)  # ends when the producer saw the whole window
    rep: dict[str, Any] = ex.report()
    ex.destroy()
    node.destroy_node()
    return rep


def _handoff_writers(node: Any, qos: Any) -> tuple[Any, Any, Any, Any, Any]:
    """The producer's ends: the same-thread and cross-thread channels (8 values), their DDS
    publishers, and the one message it reuses: (ch_same, ch_x, pub_same, pub_x, msg)."""
    from std_msgs.msg import Float64MultiArray

    ch_same = get_channel('/rt_bench/handoff_same', 8)
    ch_x = get_channel('/rt_bench/handoff_x', 8)
    pub_same = node.create_publisher(Float64MultiArray, 'rt_bench/handoff_same', qos)
    pub_x = node.create_publisher(Float64MultiArray, 'rt_bench/handoff_x', qos)
    msg = Float64MultiArray()
    msg.data = [0.0] * 8
    return ch_same, ch_x, pub_same, pub_x, msg


def _handoff_executor(
    rt: Any,
    ctx: Any,
    node: Any,
    period_ns: int,
    produce: Callable[[int], None],
    same: tuple[Any, Callable[[int], None]],
    xthread: tuple[Any, Callable[[int], None]],
) -> Any:
    """An RtExecutor spinning ``node`` with the producer (group control, every ``period_ns``) and
    the channel consumers ``same`` (group safety) and ``xthread`` (group safety_monitor), each a
    (channel, callback) pair."""
    from rt_safe_rl.rt.executor import PeriodicTask, RtExecutor, TriggeredTask, named_group

    tasks = [
        PeriodicTask('policy', named_group(node, 'control'), period_ns, produce, enabled=True),
        TriggeredTask('safety_same', named_group(node, 'safety'), same[0], same[1], enabled=True),
        TriggeredTask('safety_x', named_group(node, 'safety_monitor'), xthread[0], xthread[1], enabled=True),
    ]
    node.rt_tasks = lambda: tasks
    ex = RtExecutor(rt, context=ctx)
    ex.add_node(node)
    return ex


def _dds_consumers(node: Any, qos: Any, record: Callable[[str, float], None]) -> None:
    """The DDS consumers of the hand-off: 'dds_same' in group safety (the producer's thread),
    'dds_x' in group safety_monitor (another RT thread); each records its message's write stamp."""
    from std_msgs.msg import Float64MultiArray

    from rt_safe_rl.rt.executor import named_group

    def recorder(key: str) -> Callable[[Any], None]:
        return lambda m: record(key, m.data[0])

    for suffix, group in (('same', 'safety'), ('x', 'safety_monitor')):
        node.create_subscription(
            Float64MultiArray,
            f'rt_bench/handoff_{suffix}',
            recorder(f'dds_{suffix}'),
            qos,
            callback_group=named_group(node, group),
        )


def _handoff_result(
    lat: dict[str, npt.NDArray[np.int64]], cnt: dict[str, int], rep: dict[str, Any]
) -> dict[str, Any]:
    """The phase's result: latency percentiles (us) per hand-off kind; raw samples to _SAMPLES."""
    for key in lat:
        _SAMPLES[key] = lat[key][: cnt[key]]

    def summ(key: str) -> dict[str, Any]:
        x = lat[key][: cnt[key]] / 1e3
        d: dict[str, Any] = _pct(x, ('p50', 'p99', 'p999', 'max'))
        d['count'] = int(x.size)
        return d

    return {
        'channel_us': summ('ch_same'),
        'dds_us': summ('dds_same'),
        'channel_xthread_us': summ('ch_x'),
        'dds_xthread_us': summ('dds_x'),
        'placement': 'producer in group control; *_us consumers in group safety (same thread as '
        'control), '
        '*_xthread_us consumers in group safety_monitor (another RT thread)',
        'threads': rep['threads'],
        'errors': rep['errors'],
    }


def run_phase(name: str, a: argparse.Namespace) -> dict[str, Any]:
    """Run phase `name` in this process (a child of ``bench rt``) and return its result."""
    if name == 'floor':
        return phase_floor(a)
    if name == 'floor_c':
        return phase_floor_c(a)
    if name == 'executor':
        return phase_executor(a)
    if name == 'rclpy':
        return phase_rclpy(a)
    if name == 'rclpy_fifo':
        return phase_rclpy(a, rt_knobs=True)
    if name == 'handoff':
        return phase_handoff(a)
    raise ConfigError(f'unknown phase {name!r}')
