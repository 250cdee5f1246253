"""rt.executor with real rclpy nodes: lifecycle + plain nodes, RT-group dispatch, tasks, errors."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy not installed (ROS 2 wheels or a sourced ROS 2 needed)')

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from rt_safe_rl.core.configutil import from_mapping  # noqa: E402
from rt_safe_rl.core.errors import ConfigError  # noqa: E402
from rt_safe_rl.rt.channel import Channel  # noqa: E402
from rt_safe_rl.rt.config import RtConfig  # noqa: E402
from rt_safe_rl.rt.executor import PeriodicTask, RtExecutor, TriggeredTask, named_group  # noqa: E402


def quick_cfg(**kw: Any) -> RtConfig:
    """Default groups, but no mlock/heap prefault (keeps the test process light)."""
    return RtConfig(mlock=False, prefault_heap_bytes=0, **kw)


class ChainNode(LifecycleNode):
    """Lifecycle node: configure creates the tasks, activate enables them (the project pattern)."""

    def __init__(self, context: Any, channel: Channel) -> None:
        super().__init__('chain', context=context)
        self.channel = channel
        self.tasks: list[PeriodicTask | TriggeredTask] = []
        self.produced = 0
        self.consumed: list[int] = []
        self.threads: set[str] = set()
        self.sub_msgs = 0
        self.pub: Any = None

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pub = self.create_publisher(Float64MultiArray, 'chain_topic', 10)
        self.create_subscription(
            Float64MultiArray, 'chain_topic', self._on_msg, 10, callback_group=named_group(self, 'control')
        )
        self.vals = np.zeros(2)
        self.msg = Float64MultiArray()
        self.msg.data = [0.0, 0.0]
        self.tasks = [
            PeriodicTask('chain_tick', named_group(self, 'sim'), 2_000_000, self._tick),
            TriggeredTask('chain_consume', named_group(self, 'safety'), self.channel, self._consume),
        ]
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        for t in self.tasks:
            t.enabled = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        for t in self.tasks:
            t.enabled = False
        return super().on_deactivate(state)

    def rt_tasks(self) -> list[PeriodicTask | TriggeredTask]:
        return self.tasks

    def _tick(self, deadline_ns: int) -> None:
        self.threads.add(threading.current_thread().name)
        self.produced += 1
        self.vals[0] = self.produced
        self.channel.try_write(self.vals, deadline_ns)
        self.pub.publish(self.msg)

    def _consume(self, seq: int) -> None:
        self.threads.add(threading.current_thread().name)
        self.consumed.append(seq)

    def _on_msg(self, msg: Float64MultiArray) -> None:
        self.threads.add(threading.current_thread().name)
        self.sub_msgs += 1


def test_lifecycle_node_tasks_run_only_when_active(rclpy_context: Any) -> None:
    ch = Channel('/test/chain', 2)
    node = ChainNode(rclpy_context, ch)
    ex = RtExecutor(quick_cfg(), context=rclpy_context)
    ex.add_node(node)  # before configure: tasks appear later and are picked up
    node.trigger_configure()
    ex.spin(0.2)
    assert node.produced == 0  # configured, not active
    node.trigger_activate()
    ex.spin(0.5)
    produced = node.produced
    assert produced > 50
    assert len(node.consumed) > 50
    assert node.sub_msgs > 10
    # periodic in the sim thread; consumer and subscription in the control thread
    assert node.threads == {'rt_sim', 'rt_control'}
    node.trigger_deactivate()
    ex.spin(0.2)
    assert node.produced == produced
    rep = ex.report()
    assert rep['tasks']['chain_tick']['runs'] == produced
    assert rep['threads']['sim']['granted']['tid'] > 0
    assert rep['gc']['rt_collections'] == 0
    ex.destroy()
    node.destroy_node()


def test_plain_node_timer_in_rt_group_and_nonrt_default(rclpy_context: Any) -> None:
    node = Node('plain', context=rclpy_context)
    seen: dict[str, int] = {}

    def rec(tag: str) -> None:
        name = threading.current_thread().name
        seen[f'{tag}@{name}'] = seen.get(f'{tag}@{name}', 0) + 1

    node.create_timer(0.005, lambda: rec('rt'), callback_group=named_group(node, 'control'))
    node.create_timer(0.005, lambda: rec('default'))
    ex = RtExecutor(quick_cfg(), context=rclpy_context)
    ex.add_node(node)
    ex.spin(0.3)
    main = threading.current_thread().name
    assert seen.get('rt@rt_control', 0) > 10
    assert seen.get(f'default@{main}', 0) > 10
    assert set(seen) == {'rt@rt_control', f'default@{main}'}
    ex.destroy()
    node.destroy_node()


def test_frequent_non_rt_wakes_are_counted_and_warned(rclpy_context: Any) -> None:
    """A busy rclpy timer in the default group wakes the non-RT thread (each wake rebuilds its wait
    set holding the GIL): counted, and the executor says where to move it; the same timer in an rt
    group does not wake the non-RT thread at all."""
    busy = Node('busy_default', context=rclpy_context)
    busy.create_timer(0.01, lambda: None)
    ex = RtExecutor(quick_cfg(), context=rclpy_context)
    ex.add_node(busy)
    ex.spin(2.3)
    rep = ex.report()
    assert rep['non_rt_wakeups'] >= 100
    assert any('non-RT thread wakes' in w and 'named_group' in w for w in rep['warnings']), rep['warnings']
    ex.destroy()
    busy.destroy_node()

    quiet = Node('busy_rt', context=rclpy_context)
    quiet.create_timer(0.01, lambda: None, callback_group=named_group(quiet, 'control'))
    ex = RtExecutor(quick_cfg(), context=rclpy_context)
    ex.add_node(quiet)
    ex.spin(2.3)
    rep = ex.report()
    assert rep['non_rt_wakeups'] <= 3
    assert not any('non-RT thread wakes' in w for w in rep['warnings']), rep['warnings']
    ex.destroy()
    quiet.destroy_node()


def test_task_errors_are_counted_not_fatal(rclpy_context: Any) -> None:
    calls = [0]

    def boom(deadline_ns: int) -> None:
        calls[0] += 1
        raise RuntimeError('boom')

    ex = RtExecutor(quick_cfg(), context=rclpy_context)
    task = PeriodicTask('boom', 'control', 1_000_000, boom, enabled=True)
    ex.add_task(task)
    ex.spin(0.2)
    assert calls[0] > 20
    assert task.errors == calls[0]
    rep = ex.report()
    assert rep['tasks']['boom']['errors'] == calls[0]
    assert any('boom' in e for e in rep['errors'])
    ex.destroy()


def test_overrun_and_skip_policy_counted(rclpy_context: Any) -> None:
    def slow(deadline_ns: int) -> None:
        t_end = time.monotonic_ns() + 3_500_000
        while time.monotonic_ns() < t_end:  # 3.5 periods of busy work
            pass

    ex = RtExecutor(quick_cfg(), context=rclpy_context)
    task = PeriodicTask('slow', 'control', 1_000_000, slow, enabled=True)
    ex.add_task(task)
    ex.spin(0.1)
    assert task.runs >= 3
    assert task.overruns == task.runs
    assert task.skipped >= 3 * (task.runs - 1)
    ex.destroy()


def test_unknown_group_is_config_error(rclpy_context: Any) -> None:
    ex = RtExecutor(quick_cfg(), context=rclpy_context)
    with pytest.raises(ConfigError, match="unknown rt group 'nope'"):
        ex.add_task(PeriodicTask('x', 'nope', 1_000_000, lambda d: None))
    node = Node('grp', context=rclpy_context)
    ex.add_node(node)
    with pytest.raises(ConfigError, match="unknown rt group 'nope'"):
        named_group(node, 'nope')
    ex.destroy()
    node.destroy_node()


def test_without_privileges_warns_and_runs(rclpy_context: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from rt_safe_rl.rt import sched

    def refuse(*a: Any) -> None:
        raise PermissionError(1, 'Operation not permitted')

    monkeypatch.setattr(os, 'sched_setscheduler', refuse)
    monkeypatch.setattr(sched, 'lock_memory', lambda: (False, 'mlockall refused (EPERM): needs CAP_IPC_LOCK'))
    cfg = from_mapping(RtConfig, {'mlock': True, 'prefault_heap_bytes': 0}, 'test')
    ex = RtExecutor(cfg, context=rclpy_context)
    n = [0]
    ex.add_task(PeriodicTask('p', 'control', 1_000_000, lambda d: n.__setitem__(0, n[0] + 1), enabled=True))
    ex.spin(0.2)
    rep = ex.report()
    assert n[0] > 50
    assert any('CAP_SYS_NICE' in w for w in rep['warnings'])
    assert any('CAP_IPC_LOCK' in w for w in rep['warnings'])
    assert rep['threads']['control']['granted']['policy'] == 'other'
    ex.destroy()


def test_channel_mirror_publishes_decimated_off_the_producer_thread(rclpy_context: Any) -> None:
    from rt_safe_rl.rt.observer import ChannelMirror

    producer = Node('mirror_producer', context=rclpy_context)
    listener = Node('mirror_listener', context=rclpy_context)
    ch = Channel('/test/mirror', 3)
    vals = np.zeros(3)
    got: list[tuple[float, int]] = []
    listener.create_subscription(
        Float64MultiArray, 'mirror_topic', lambda m: got.append((m.data[0], m.layout.data_offset)), 50
    )

    def tick(deadline_ns: int) -> None:
        vals[0] += 1.0
        ch.try_write(vals, deadline_ns)

    mirror = ChannelMirror(producer, ch, Float64MultiArray, 'mirror_topic', decimation=5)
    task = PeriodicTask('mirror_tick', named_group(producer, 'control'), 2_000_000, tick)
    producer.rt_tasks = lambda: [task, mirror.task]  # type: ignore[attr-defined]
    task.enabled = True
    mirror.task.enabled = True
    ex = RtExecutor(quick_cfg(), context=rclpy_context)
    ex.add_node(producer)
    ex.add_node(listener)
    ex.spin(0.6)
    task.enabled = False
    mirror.task.enabled = False
    ex.spin(0.3)  # let the listener (non_rt thread) take what is still in flight
    writes = ch.seq
    assert writes > 0
    # at most one message per 5 records (a late observer thread coalesces triggers: fewer, never more)
    assert 1 <= mirror.published <= writes // 5 + 1, (mirror.published, writes, mirror.task.stats())
    assert mirror.task.runs == mirror.published + mirror.skipped
    assert len(got) >= mirror.published - 1, (len(got), mirror.published)  # via DDS to the non_rt thread
    values = [value for value, _ in got]  # each message carries a record written (value = its count)
    assert values == sorted(values) and all(1 <= v <= writes and v == int(v) for v in values)
    assert all(offset == 0 for _, offset in got)  # no field repurposed for the seq
    ex.destroy()
    producer.destroy_node()
    listener.destroy_node()


def _spin_until(ex: Any, cond: Any, timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < end:
        ex.spin(0.05)


def test_channel_mirror_of_a_periodic_producer_runs_off_its_cycle_and_never_repeats(
    rclpy_context: Any,
) -> None:
    from rt_safe_rl.rt.observer import ChannelMirror

    producer = Node('mirror_periodic_producer', context=rclpy_context)
    listener = Node('mirror_periodic_listener', context=rclpy_context)
    ch = Channel('/test/mirror_periodic', 3)
    vals = np.zeros(3)
    got: list[float] = []
    listener.create_subscription(Float64MultiArray, 'mirror_periodic', lambda m: got.append(m.data[0]), 50)
    period_ns = 2_000_000
    writes_at: list[int] = []
    limit = [100]

    def tick(deadline_ns: int) -> None:
        if len(writes_at) < limit[0]:  # then the producer stops writing: nothing may be published again
            vals[0] += 1.0
            ch.try_write(vals, deadline_ns)
            writes_at.append(deadline_ns)

    mirror = ChannelMirror(
        producer, ch, Float64MultiArray, 'mirror_periodic', decimation=5, producer_period_ns=period_ns, slot=1
    )
    assert isinstance(mirror.task, PeriodicTask)
    # every 5 producer periods, half a period off its deadlines, in the second period (slot 1)
    assert mirror.task.period_ns == 5 * period_ns and mirror.task.phase_ns == period_ns + period_ns // 2
    task = PeriodicTask('mirror_periodic_tick', named_group(producer, 'control'), period_ns, tick)
    producer.rt_tasks = lambda: [task, mirror.task]  # type: ignore[attr-defined]
    task.enabled = True
    mirror.task.enabled = True
    ex = RtExecutor(quick_cfg(), context=rclpy_context)
    ex.add_node(producer)
    ex.add_node(listener)
    try:
        _spin_until(ex, lambda: len(writes_at) == 100)
        runs = mirror.task.runs
        _spin_until(ex, lambda: mirror.task.runs >= runs + 3)  # runs after the last write: skips only
        done = mirror.published
        assert len(writes_at) == 100 and all(d % period_ns == 0 for d in writes_at)
        span_periods = (writes_at[-1] - writes_at[0]) // period_ns + 1
        assert 1 <= done <= span_periods // 5 + 2, (done, span_periods, mirror.task.stats())
        assert mirror.task.runs == mirror.published + mirror.skipped
        # records written while the mirror was disabled (node inactive) are never published later
        mirror.task.enabled = False
        limit[0] = 110
        _spin_until(ex, lambda: len(writes_at) == 110)
        mirror.task.enabled = True
        runs = mirror.task.runs
        _spin_until(ex, lambda: mirror.task.runs >= runs + 3)
        assert mirror.published == done, 'published a record written while the mirror was disabled'
        _spin_until(ex, lambda: len(got) >= done, 10.0)  # via DDS to the non_rt thread
    finally:
        task.enabled = False
        mirror.task.enabled = False
        ex.destroy()
    assert got == sorted(set(got)) and len(got) >= done - 1, got  # distinct records, in order
    producer.destroy_node()
    listener.destroy_node()


def test_catch_up_policy_runs_missed_periods_back_to_back(rclpy_context: Any) -> None:
    cfg = from_mapping(
        RtConfig,
        {
            'groups': {
                'non_rt': {'policy': 'other', 'priority': 0},
                'control': {'policy': 'other', 'priority': 0, 'miss_policy': 'catch_up', 'max_catch_up': 2},
            },
            'mlock': False,
            'prefault_heap_bytes': 0,
        },
        'test',
    )
    starts: list[tuple[int, int]] = []

    def fn(deadline_ns: int) -> None:
        starts.append((deadline_ns, time.monotonic_ns()))
        if len(starts) == 5:  # one long stall of ~5.5 periods
            t_end = time.monotonic_ns() + 5_500_000
            while time.monotonic_ns() < t_end:
                pass

    ex = RtExecutor(cfg, context=rclpy_context)
    task = PeriodicTask('cu', 'control', 1_000_000, fn, enabled=True)
    ex.add_task(task)
    ex.spin(0.1)
    ex.destroy()
    deadlines = [d for d, _ in starts]
    assert task.caught_up >= 2
    assert task.skipped >= 3  # the rest of the missed periods were skipped
    # after the stall: two catch-up runs for the next deadlines on the grid, back to back, then
    # the loop skips to the next future deadline (max_catch_up = 2)
    assert deadlines[5] - deadlines[4] == 1_000_000 and deadlines[6] - deadlines[5] == 1_000_000
    assert starts[6][1] - starts[5][1] < 1_000_000
    assert deadlines[7] - deadlines[6] > 1_000_000


def test_a_task_that_defers_its_next_run_sleeps_through_those_periods_on_its_grid(
    rclpy_context: Any,
) -> None:
    """A periodic task (the safety monitor) that sets run_after_ns runs next at the first deadline
    of its own grid at or after that time; the periods in between are counted as deferred, not as
    misses or skips; a task that stops deferring runs every period again."""
    period = 1_000_000
    phase = 250_000
    runs: list[int] = []

    def fn(deadline_ns: int) -> None:
        runs.append(deadline_ns)
        if len(runs) <= 10:
            task.run_after_ns = deadline_ns + 4 * period + 1  # nothing to do for 4 periods and a bit
        elif len(runs) == 11:
            task.run_after_ns = deadline_ns - period  # in the past: ignored (the next period)

    ex = RtExecutor(quick_cfg(), context=rclpy_context)
    task = PeriodicTask('deferring', 'control', period, fn, phase_ns=phase, enabled=True)
    ex.add_task(task)
    t_end = time.monotonic() + 10.0
    while len(runs) < 20 and time.monotonic() < t_end:
        ex.spin(0.05)
    ex.destroy()
    assert len(runs) >= 20, runs
    assert all((d - phase) % period == 0 for d in runs), 'every run on the task grid'
    gaps = np.diff(runs[:12]) // period
    assert (gaps[:10] >= 5).all(), gaps  # deferred past 4 periods + 1 ns: the 5th deadline on
    assert task.deferred >= 10 * 4, task.stats()
    if task.misses == 0 and task.skipped == 0:  # (a loaded machine may still skip: counted apart)
        assert (gaps[:10] == 5).all(), gaps
        assert (np.diff(runs[11:20]) == period).all(), 'no longer deferring: every period'


@pytest.mark.parametrize('with_periodic', [True, False], ids=['periodic_thread', 'no_periodic_task'])
def test_a_polled_subscription_is_taken_at_each_loop_of_a_periodic_thread(
    rclpy_context: Any, with_periodic: bool
) -> None:
    """named_group(polled=True): in a thread that runs a periodic task (the control cycle) the
    subscription is not waited on, its messages are taken at the start of the thread's loops
    (every message, in order, in that thread, none through the wait set); in a thread without
    periodic tasks it is waited on like any other."""
    node = Node('polled', context=rclpy_context)
    got: list[tuple[float, str]] = []
    node.create_subscription(
        Float64MultiArray,
        'polled_topic',
        lambda m: got.append((m.data[0], threading.current_thread().name)),
        50,
        callback_group=named_group(node, 'control', polled=True),
    )
    pub = node.create_publisher(Float64MultiArray, 'polled_topic', 50)
    ex = RtExecutor(quick_cfg(), context=rclpy_context)
    ex.add_node(node)
    if with_periodic:
        ex.add_task(PeriodicTask('tick', 'control', 1_000_000, lambda dl: None, enabled=True))
    t = threading.Thread(target=ex.spin, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 20.0
        while not pub.get_subscription_count() and time.monotonic() < deadline:
            time.sleep(0.01)
        msg = Float64MultiArray()
        for i in range(40):
            msg.data = [float(i)]
            pub.publish(msg)
            time.sleep(0.005)
        while len(got) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        th = ex._threads['control']
    finally:
        ex.shutdown()
        t.join(5.0)
        ex.destroy()
        node.destroy_node()
    assert [v for v, _ in got] == [float(i) for i in range(40)]
    assert {name for _, name in got} == {'rt_control'}
    if with_periodic:
        assert th.polled_dispatches == 40 and th.ros_dispatches == 0
    else:
        assert th.ros_dispatches == 40 and th.polled_dispatches == 0


def test_stall_is_reported_not_silent(rclpy_context: Any) -> None:
    ex = RtExecutor(quick_cfg(), context=rclpy_context)
    calls = [0]

    def hang(deadline_ns: int) -> None:
        calls[0] += 1
        if calls[0] == 3:
            time.sleep(0.35)  # a callback that hangs for 350 periods

    ex.add_task(PeriodicTask('hang', 'control', 1_000_000, hang, enabled=True))
    ex.spin(0.6)
    rep = ex.report()
    ex.destroy()
    assert rep['stalls'] >= 1
    assert rep['tasks']['hang']['overruns'] == 1
    assert rep['tasks']['hang']['skipped'] >= 300


def test_loss_of_rt_policy_at_runtime_is_counted(rclpy_context: Any) -> None:
    import os

    ex = RtExecutor(RtConfig(mlock=False, prefault_heap_bytes=0), context=rclpy_context)
    ex.add_task(PeriodicTask('p', 'control', 1_000_000, lambda d: None, enabled=True))
    demoted: list[int] = []

    def demote() -> None:
        end = time.monotonic() + 1.0  # until the control thread runs (the set-up collects first)
        th = ex._threads.get('control')
        while (th is None or th.grant is None) and time.monotonic() < end:
            time.sleep(0.01)
            th = ex._threads.get('control')
        time.sleep(0.1)
        if th is not None and th.grant is not None and th.grant.granted.get('policy') == 'fifo':
            os.sched_setscheduler(th.tid, os.SCHED_OTHER, os.sched_param(0))
            demoted.append(th.tid)

    helper = threading.Thread(target=demote)
    helper.start()
    ex.spin(1.5)
    helper.join()
    rep = ex.report()
    ex.destroy()
    if not demoted:
        pytest.skip(reason='SCHED_FIFO not granted here (no CAP_SYS_NICE / rtprio limit): nothing to lose')
    assert rep['privilege_losses'] == 1
    assert any('changed from fifo to other' in w for w in rep['warnings'])


def test_dds_helper_threads_get_the_configured_policy(rclpy_context: Any) -> None:
    import os

    node = Node('helpers', context=rclpy_context)
    ex = RtExecutor(quick_cfg(), context=rclpy_context)
    ex.add_node(node)
    ex.spin(0.2)
    helpers = ex.report()['helper_threads']
    ex.destroy()
    assert helpers, 'no dds.* threads found (rmw_fastrtps names its threads dds.*)'
    tid = next(iter(helpers))
    if 'refused' in helpers[tid]:
        pytest.skip(reason=f'no privilege to schedule helper threads here: {helpers[tid]}')
    assert all('SCHED_FIFO 60' in v for v in helpers.values())
    assert os.sched_getscheduler(tid) == os.SCHED_FIFO
    assert os.sched_getparam(tid).sched_priority == 60
    node.destroy_node()


def test_spin_applies_and_restores_process_settings(rclpy_context: Any) -> None:
    import gc
    import sys

    assert gc.isenabled()
    before = sys.getswitchinterval()
    seen: list[tuple[bool, float]] = []
    ex = RtExecutor(quick_cfg(gil_switch_interval_s=0.0002), context=rclpy_context)
    ex.add_task(
        PeriodicTask(
            'probe',
            'control',
            5_000_000,
            lambda d: seen.append((gc.isenabled(), sys.getswitchinterval())),
            enabled=True,
        )
    )
    for _ in range(2):  # a second spin applies them again
        seen.clear()
        ex.spin(0.1)
        assert seen and all(not g and abs(sw - 0.0002) < 1e-9 for g, sw in seen)  # GC off, short interval
        assert gc.isenabled() and sys.getswitchinterval() == before  # restored after spin
    ex.destroy()


def test_format_report_is_readable(rclpy_context: Any) -> None:
    from rt_safe_rl.rt.executor import format_report

    ex = RtExecutor(quick_cfg(), context=rclpy_context)
    ex.add_task(PeriodicTask('fmt', 'control', 1_000_000, lambda d: None, enabled=True))
    ex.spin(0.1)
    text = format_report(ex.report())
    ex.destroy()
    lines = text.splitlines()
    assert lines[0].startswith('kernel ')
    assert any(line.startswith("thread control ['control', 'safety']: SCHED_") for line in lines)
    assert any(line.startswith('task fmt: ') and ' misses' in line for line in lines)


def test_objects_frozen_while_spinning_are_freed_afterwards() -> None:
    """The executor freezes the GC while it spins; afterwards a finished context (nodes, wait sets,
    the DDS participant and its threads) must be collectable again, not pinned for the rest of the
    process (seen as DDS participants of earlier tests piling up in one pytest process)."""
    import gc
    import weakref

    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    node = Node('gc_probe', context=ctx)
    node.create_timer(0.005, lambda: None, callback_group=named_group(node, 'control'))
    ex = RtExecutor(quick_cfg(), context=ctx)
    ex.add_node(node)
    ex.spin(0.2)
    assert ex.report()['gc']['frozen_objects'] > 0  # the freeze did happen
    ex.destroy()
    node.destroy_node()
    rclpy.shutdown(context=ctx)
    refs = [weakref.ref(o) for o in (ctx, node, ex)]
    del ctx, node, ex
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
