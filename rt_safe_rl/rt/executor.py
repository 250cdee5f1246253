"""RtExecutor: rclpy callback groups mapped to dedicated RT threads, absolute-deadline periodic tasks.

Model (see DEVELOPERS.md, "RT APIs"):

* :func:`named_group` tags an rclpy callback group with a group name from ``rt.groups``.
  Subscriptions and timers created in a named RT group are dispatched by that group's thread
  (its own SCHED_FIFO/RR priority and CPU set); everything else (parameters, services,
  lifecycle transitions, diagnostics, and the default callback group) runs in the ``non_rt``
  group, i.e. the thread that calls :meth:`RtExecutor.spin` (a filtered rclpy
  SingleThreadedExecutor).
* :class:`PeriodicTask` runs ``fn(deadline_ns)`` at absolute deadlines ``t0 + k * period_ns``
  (no drift): the group thread sleeps until ``deadline - spin_us`` (``clock_nanosleep`` with
  TIMER_ABSTIME, or the group's wait set when it also has rclpy entities) and optionally
  busy-waits the rest. Late starts (> one period) are *misses*, runs longer than a period are
  *overruns*; after a miss the ``miss_policy`` skips to the next deadline on the grid or catches
  up (bounded), all counted.
* :class:`TriggeredTask` runs ``fn(seq)`` when its :class:`~rt_safe_rl.rt.channel.Channel` is
  written. A producer in the same thread triggers it right after the producing callback returns
  (a same-thread hand-off: no wake-up at all); a producer in another thread wakes the group
  thread (lock release or rcl guard condition).
* Nodes expose ``rt_tasks()``; the executor re-reads it whenever the node's entities change,
  after every non-RT callback and at least every 0.5 s, so tasks created at configure time are
  picked up without re-adding the node.

RT threads never log, never collect garbage (see :class:`~rt_safe_rl.rt.memory.GcPolicy`) and never
block on anything but their own wait and the GIL; errors and stalls are recorded and reported by
the non-RT housekeeping thread (log + :meth:`RtExecutor.report`). QoS event callbacks of RT-group
subscriptions/timers are not dispatched (see :class:`_NonRtExecutor`); services and clients in an
RT group run in the non_rt thread (warned once).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from rclpy.callback_groups import CallbackGroup, MutuallyExclusiveCallbackGroup
from rclpy.context import Context
from rclpy.event_handler import EventHandler
from rclpy.exceptions import InvalidHandle
from rclpy.executors import ExternalShutdownException, ShutdownException, SingleThreadedExecutor
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.subscription import Subscription
from rclpy.timer import Timer

from rt_safe_rl.core.errors import ConfigError, RtSafeRlError
from rt_safe_rl.rt import placement, sched
from rt_safe_rl.rt.channel import Channel
from rt_safe_rl.rt.config import NON_RT, GroupConfig, RtConfig, resolve_cpus
from rt_safe_rl.rt.memory import GcPolicy
from rt_safe_rl.rt.metrics import registry
from rt_safe_rl.rt.ring import SpscRing

_FAR_NS = 1 << 62
_IDLE_WAIT_NS = 50_000_000  # an idle thread re-checks its task set at least this often
_REFRESH_NS = 500_000_000  # rt_tasks() re-read at least this often (and after any non-RT callback)
_NO_WORK: tuple[tuple[Any, ...], ...] = ((), (), (), ())
_HOUSEKEEPING_S = 0.1  # period of the non-RT housekeeping thread
_NON_RT_WAKES_WARN = 5  # non-RT wakes per second above which the executor warns (see _housekeeping)
_STALL_NS = 100_000_000  # a callback running this long is reported as a stall

_log = get_logger('rt_executor')


# ------------------------------------------------------------------------------------------------
# groups and tasks
# ------------------------------------------------------------------------------------------------
class RtCallbackGroup(MutuallyExclusiveCallbackGroup):
    """A MutuallyExclusiveCallbackGroup tagged with an ``rt.groups`` name."""

    def __init__(self, rt_group: str) -> None:
        super().__init__()
        self.rt_group = rt_group


def named_group(node: Node, name: str) -> RtCallbackGroup:
    """The node's callback group for rt group `name` (created once per node and name).

    Use it as ``callback_group=`` for subscriptions/timers that must run in that group's thread,
    and as the `group` of :class:`PeriodicTask` / :class:`TriggeredTask`. If the node is already in
    an :class:`RtExecutor`, an unknown name raises :class:`ConfigError` here. Not RT-safe.
    """
    groups: dict[str, RtCallbackGroup] = node.__dict__.setdefault('_rt_safe_rl_groups', {})
    grp = groups.get(name)
    if grp is None:
        owner = getattr(node.executor, '_rt_owner', None)
        if owner is not None:
            owner.config.thread_of(name)  # raises ConfigError for an unknown group
        grp = RtCallbackGroup(name)
        groups[name] = grp
    return grp


def _group_name(group: CallbackGroup | str) -> str:
    if isinstance(group, str):
        return group
    if isinstance(group, RtCallbackGroup):
        return group.rt_group
    raise ConfigError(f'task group must be an rt group name or named_group(node, name), got {group!r}')


class _TaskBase:
    """Shared statistics of periodic and triggered tasks (written by the owning RT thread only)."""

    def __init__(self, name: str, group: CallbackGroup | str, stats_capacity: int) -> None:
        if not name:
            raise ConfigError('task name must not be empty')
        self.name = name
        self.group = _group_name(group)
        self._enabled = False
        self.runs = 0
        self.errors = 0
        self.last_error = ''
        self.max_duration_ns = 0
        # (reference_ns, start_ns, end_ns): deadline or channel write time, callback start, end
        self.samples = SpscRing(stats_capacity, 3)

    @property
    def enabled(self) -> bool:
        """Whether the task runs (toggled by the node at activate/deactivate)."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._on_enable(bool(value))
        self._enabled = bool(value)

    def _on_enable(self, value: bool) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        """Counters as a plain dict (non-RT)."""
        return {
            'group': self.group,
            'enabled': self._enabled,
            'runs': self.runs,
            'errors': self.errors,
            'last_error': self.last_error,
            'max_duration_us': round(self.max_duration_ns / 1e3, 1),
            'samples_dropped': self.samples.dropped,
        }


class PeriodicTask(_TaskBase):
    """``fn(deadline_ns)`` every `period_ns` at absolute ``CLOCK_MONOTONIC`` deadlines.

    Created disabled (``enabled=False``): nodes create tasks at configure and enable them at
    activate (a plain user sets ``task.enabled = True``). Deadlines are aligned to multiples of
    the period plus `phase_ns`. ``fn`` must not block; it runs in the group's RT thread.

    Counters: ``runs``, ``misses`` (started more than one period late; a catch-up run is not a
    new miss), ``overruns`` (ran longer
    than a period), ``skipped`` (periods dropped by the skip policy), ``caught_up`` (extra
    back-to-back runs by the catch-up policy), ``errors`` (exceptions raised by ``fn``).
    """

    def __init__(
        self,
        name: str,
        group: CallbackGroup | str,
        period_ns: int,
        fn: Callable[[int], None],
        *,
        phase_ns: int = 0,
        enabled: bool = False,
        stats_capacity: int = 1 << 14,
    ) -> None:
        super().__init__(name, group, stats_capacity)
        if int(period_ns) < 10_000:
            raise ConfigError(f'task {name!r}: period_ns must be >= 10000 (100 kHz), got {period_ns}')
        self.period_ns = int(period_ns)
        self.phase_ns = int(phase_ns) % self.period_ns
        self.fn = fn
        self.next_deadline_ns = 0  # 0 = (re)start at the next grid point
        self.misses = 0
        self.overruns = 0
        self.skipped = 0
        self.caught_up = 0
        self.max_lateness_ns = 0
        self._catch_up_left = 0
        self._catching_up = False  # the next run is a catch-up run (not counted as a miss)
        self._miss_counter = registry().counter('deadline_misses')
        self.enabled = enabled

    def _on_enable(self, value: bool) -> None:
        if value and not self._enabled:
            self.next_deadline_ns = 0

    def stats(self) -> dict[str, Any]:
        """Counters as a plain dict (non-RT)."""
        d = super().stats()
        d.update(
            period_us=self.period_ns / 1e3,
            misses=self.misses,
            overruns=self.overruns,
            skipped=self.skipped,
            caught_up=self.caught_up,
            max_lateness_us=round(self.max_lateness_ns / 1e3, 1),
        )
        return d


class TriggeredTask(_TaskBase):
    """``fn(seq)`` whenever `channel` gets a new record (latest-value: records written while the
    task was busy collapse into one run with the newest seq; counted in ``coalesced``).

    Created disabled like :class:`PeriodicTask`. The hand-off latency (channel write -> ``fn``
    start) is recorded per run in ``samples``. With ``decimation=N`` the task runs (and its thread
    is woken) once per N records, e.g. to mirror a 1 kHz channel to a ROS topic at 100 Hz.
    """

    def __init__(
        self,
        name: str,
        group: CallbackGroup | str,
        channel: Channel,
        fn: Callable[[int], None],
        *,
        enabled: bool = False,
        decimation: int = 1,
        stats_capacity: int = 1 << 14,
    ) -> None:
        super().__init__(name, group, stats_capacity)
        if not isinstance(channel, Channel):
            raise ConfigError(
                f'task {name!r}: channel must be an rt.channel.Channel, got {type(channel).__name__}'
            )
        if not 1 <= int(decimation) <= 1_000_000:
            raise ConfigError(f'task {name!r}: decimation must be >= 1, got {decimation}')
        self.channel = channel
        self.fn = fn
        self.decimation = int(decimation)
        self.last_seq = channel.seq
        self.coalesced = 0
        self._waker: Callable[[], None] | None = None
        self.enabled = enabled

    def _on_enable(self, value: bool) -> None:
        if value and not self._enabled:
            self.last_seq = self.channel.seq  # do not replay a record written while disabled

    def stats(self) -> dict[str, Any]:
        """Counters as a plain dict (non-RT)."""
        d = super().stats()
        d.update(channel=self.channel.name, coalesced=self.coalesced)
        return d


class _DecimatedWake:
    """Waker that passes on every Nth call (called in the producer's thread only; RT-safe)."""

    __slots__ = ('k', 'n', 'wake')

    def __init__(self, wake: Callable[[], None], n: int) -> None:
        self.wake = wake
        self.n = n
        self.k = 0

    def __call__(self) -> None:
        k = self.k + 1
        if k >= self.n:
            k = 0
            self.wake()
        self.k = k


# ------------------------------------------------------------------------------------------------
# the per-group thread
# ------------------------------------------------------------------------------------------------
class _GroupThread:
    """One OS thread running the periodic/triggered tasks and rclpy subscriptions/timers of the
    rt groups that map to it."""

    def __init__(self, name: str, cfg: GroupConfig, owner: RtExecutor) -> None:
        self.name = name
        self.cfg = cfg
        self.owner = owner
        self.spin_ns = cfg.spin_us * 1000
        self.catch_up = cfg.miss_policy == 'catch_up'
        self.max_catch_up = cfg.max_catch_up
        self.periodic: tuple[PeriodicTask, ...] = ()
        self.triggered: tuple[TriggeredTask, ...] = ()
        self.subs: tuple[Subscription, ...] = ()
        self.timers: tuple[Timer, ...] = ()
        self._next: tuple[Any, ...] | None = None  # pending (periodic, triggered, subs, timers)
        self._stop = False
        self._pending = False
        self._sem = threading.Lock()
        self._sem.acquire()  # locked = no signal pending
        self._sig_guard = threading.Lock()
        self._guard: GuardCondition | None = None
        self._ws: Any = None
        self._ws_sizes = (-1, -1)
        self._sleeper = sched.AbsSleeper()
        self.ident = 0
        self.tid = 0
        self.grant: sched.ThreadGrant | None = None
        self.busy_since_ns = 0
        self.busy_task = ''
        self.ros_dispatches = 0
        self.ros_errors = 0
        self.error_log: list[str] = []  # appended by the RT thread on errors only, drained by non-RT
        self.wakeups = 0
        self.thread = threading.Thread(target=self._main, name=f'rt_{name}', daemon=True)
        self.started = False

    # -- called from other threads -----------------------------------------------------------
    def wake(self) -> None:
        """Signal the thread (channel write, new tasks, stop). Non-blocking, RT-safe."""
        self._pending = True
        if threading.get_ident() == self.ident:
            return  # same thread: the loop checks _pending before it waits
        with self._sig_guard:
            if self._sem.locked():
                self._sem.release()
        g = self._guard
        if g is not None:
            with contextlib.suppress(InvalidHandle, RuntimeError):
                g.trigger()

    def set_work(
        self,
        periodic: tuple[PeriodicTask, ...],
        triggered: tuple[TriggeredTask, ...],
        subs: tuple[Subscription, ...],
        timers: tuple[Timer, ...],
    ) -> None:
        """Hand a new task/entity set to the thread (applied at its next loop iteration)."""
        self._next = (periodic, triggered, subs, timers)
        self.wake()

    def start(self, stack_bytes: int) -> None:
        if self.started:
            return
        self.started = True
        if stack_bytes:
            old = threading.stack_size(stack_bytes)
            try:
                self.thread.start()
            finally:
                threading.stack_size(old)
        else:
            self.thread.start()

    def stop(self) -> None:
        self._stop = True
        self.wake()

    def join(self, timeout_s: float) -> bool:
        if self.started:
            self.thread.join(timeout_s)
            return not self.thread.is_alive()
        return True

    # -- the RT thread ---------------------------------------------------------------------------
    def _main(self) -> None:
        self.ident = threading.get_ident()
        self.tid = threading.get_native_id()
        self.grant = sched.apply_thread_settings(
            f'rt_{self.name}'[:15],
            self.cfg.policy,
            self.cfg.priority,
            self.cfg.real_cpus,
            self.cfg.timer_slack_ns,
        )
        self.owner.gc_policy.register_rt_thread()
        self.owner._go.wait(5.0)  # all threads start their schedules once the process setup is done
        try:
            self._loop()
        except BaseException as err:
            self.error_log.append(f'thread {self.name} died: {err!r}\n{traceback.format_exc()}')
        finally:
            if self._guard is not None:
                with contextlib.suppress(Exception):
                    self._guard.destroy()
                self._guard = None

    def _apply_next(self) -> None:
        nxt = self._next
        self._next = None
        if nxt is None:
            return
        self.periodic, self.triggered, self.subs, self.timers = nxt
        if self.subs or self.timers:
            if self._guard is None:
                self._guard = GuardCondition(None, None, context=self.owner.context)
            sizes = (len(self.subs), len(self.timers))
            if sizes != self._ws_sizes:
                ctx_handle: Any = self.owner.context.handle
                with ctx_handle:
                    self._ws = _rclpy.WaitSet(sizes[0], 1, sizes[1], 0, 0, 0, ctx_handle)
                self._ws_sizes = sizes

    def _loop(self) -> None:
        mono = time.monotonic_ns
        while not self._stop:
            if self._next is not None:
                self._apply_next()
            self._pending = False
            # 1. consumers of channels written since the last look (same-thread hand-off first)
            for t in self.triggered:
                if t._enabled and t.channel.seq - t.last_seq >= t.decimation:
                    self._run_triggered(t)
            # 2. periodic tasks that are due
            now = mono()
            next_dl = _FAR_NS
            ran = False
            for p in self.periodic:
                if not p._enabled:
                    continue
                dl = p.next_deadline_ns
                if dl == 0:
                    per = p.period_ns
                    dl = (now // per + 1) * per + p.phase_ns
                    p.next_deadline_ns = dl
                if dl <= now:
                    self._run_periodic(p, dl)
                    ran = True
                elif dl < next_dl:
                    next_dl = dl
            if ran or self._pending or self._stop:
                continue
            # 3. wait for the next deadline, a channel write, or an rclpy entity
            now = mono()
            wake_at = next_dl - self.spin_ns
            if wake_at > now + _IDLE_WAIT_NS:
                wake_at = now + _IDLE_WAIT_NS
            if self.subs or self.timers:
                self._wait_ros(wake_at - now)
            elif self.triggered or next_dl == _FAR_NS:
                if wake_at > now:
                    got = self._sem.acquire(True, (wake_at - now) * 1e-9)
                else:
                    got = self._sem.acquire(False)
                if got:
                    self.wakeups += 1
            elif wake_at > now:
                self._sleeper.sleep_until(wake_at)
            if self.spin_ns and next_dl != _FAR_NS and not self._pending:
                now = mono()
                if next_dl - now <= self.spin_ns:  # woke for this deadline (not for a message)
                    while now < next_dl:
                        now = mono()

    def _run_periodic(self, p: PeriodicTask, dl: int) -> None:
        mono = time.monotonic_ns
        per = p.period_ns
        start = mono()
        late = start - dl
        if late > p.max_lateness_ns:
            p.max_lateness_ns = late
        if late > per and not p._catching_up:
            # one miss per late start on the grid; the catch-up runs that follow it are counted
            # in caught_up (a stall is one miss, as for a loop that skips)
            p.misses += 1
            p._miss_counter.inc()
        self.busy_task = p.name
        self.busy_since_ns = start
        try:
            p.fn(dl)
        except Exception as err:
            p.errors += 1
            p.last_error = repr(err)
            if p.errors <= 3:
                self.error_log.append(f'periodic task {p.name}: {traceback.format_exc()}')
        end = mono()
        self.busy_since_ns = 0
        if self._pending:  # fn wrote a channel consumed in this thread: hand off before bookkeeping
            self._run_pending_triggered()
        p.runs += 1
        dur = end - start
        if dur > p.max_duration_ns:
            p.max_duration_ns = dur
        if dur > per:
            p.overruns += 1
        p.samples.try_push3(dl, start, end)
        nxt = dl + per
        p._catching_up = False
        if nxt <= end:
            if self.catch_up and p._catch_up_left > 0:
                p._catch_up_left -= 1
                p.caught_up += 1
                p._catching_up = True
            else:
                k = (end - dl) // per  # periods whose deadline has passed, beyond this one
                p.skipped += k
                nxt = dl + (k + 1) * per
                p._catch_up_left = self.max_catch_up
        else:
            p._catch_up_left = self.max_catch_up
        p.next_deadline_ns = nxt

    def _run_pending_triggered(self) -> None:
        self._pending = False
        for t in self.triggered:
            if t._enabled and t.channel.seq - t.last_seq >= t.decimation:
                self._run_triggered(t)

    def _run_triggered(self, t: TriggeredTask) -> None:
        mono = time.monotonic_ns
        ch = t.channel
        seq = ch.seq
        gap = seq - t.last_seq
        if gap > t.decimation:
            t.coalesced += gap - t.decimation
        t.last_seq = seq
        start = mono()
        self.busy_task = t.name
        self.busy_since_ns = start
        try:
            t.fn(seq)
        except Exception as err:
            t.errors += 1
            t.last_error = repr(err)
            if t.errors <= 3:
                self.error_log.append(f'triggered task {t.name}: {traceback.format_exc()}')
        end = mono()
        self.busy_since_ns = 0
        t.runs += 1
        dur = end - start
        if dur > t.max_duration_ns:
            t.max_duration_ns = dur
        t.samples.try_push3(ch.write_ns, start, end)

    def _wait_ros(self, timeout_ns: int) -> None:
        ws = self._ws
        guard = self._guard
        if ws is None or guard is None:
            return
        subs = self.subs
        timers = self.timers
        ctx: Any = self.owner.context
        entered: list[Any] = []
        try:
            for s in subs:
                s.handle.__enter__()
                entered.append(s.handle)
            for tm in timers:
                tm.handle.__enter__()
                entered.append(tm.handle)
            guard.handle.__enter__()
            entered.append(guard.handle)
            ctx.handle.__enter__()
            entered.append(ctx.handle)
            ws.clear_entities()
            for s in subs:
                ws.add_subscription(s.handle)
            for tm in timers:
                ws.add_timer(tm.handle)
            ws.add_guard_condition(guard.handle)
            if self._pending or self._stop:
                return
            ws.wait(timeout_ns if timeout_ns > 0 else 0)
            for i in range(len(subs)):
                if ws.is_ready('subscription', i):
                    self._take_sub(subs[i])
            for i in range(len(timers)):
                if ws.is_ready('timer', i):
                    self._call_timer(timers[i])
        except InvalidHandle:
            self.owner._entities_dirty = True  # an entity was destroyed; the non-RT thread rebuilds
        finally:
            for h in reversed(entered):
                h.__exit__(None, None, None)

    def _take_sub(self, sub: Subscription) -> None:
        msg_info = sub.handle.take_message(sub.msg_type, sub.raw)
        if msg_info is None:
            return
        self.busy_task = sub.topic_name
        self.busy_since_ns = time.monotonic_ns()
        try:
            if sub._callback_type is Subscription.CallbackType.MessageOnly:
                sub.callback(msg_info[0])  # type: ignore[call-arg]
            else:
                sub.callback(*msg_info)  # type: ignore[call-arg]
        except Exception:
            self.ros_errors += 1
            if self.ros_errors <= 3:
                self.error_log.append(f'subscription {sub.topic_name}: {traceback.format_exc()}')
        self.busy_since_ns = 0
        self.ros_dispatches += 1
        if self._pending:  # e.g. policy wrote policy/action: safety runs right now, same thread
            self._run_pending_triggered()

    def _call_timer(self, tmr: Timer) -> None:
        try:
            if not tmr.handle.is_timer_ready():
                return
            tmr.handle.call_timer()
        except Exception:
            return
        self.busy_task = 'timer'
        self.busy_since_ns = time.monotonic_ns()
        try:
            tmr.callback()  # type: ignore[call-arg,misc]
        except Exception:
            self.ros_errors += 1
            if self.ros_errors <= 3:
                self.error_log.append(f'timer callback: {traceback.format_exc()}')
        self.busy_since_ns = 0
        self.ros_dispatches += 1


# ------------------------------------------------------------------------------------------------
# the non-RT executor and the RtExecutor
# ------------------------------------------------------------------------------------------------
class _NonRtExecutor(SingleThreadedExecutor):
    """rclpy SingleThreadedExecutor that leaves subscriptions/timers of RT groups alone.

    QoS event handlers of RT-group entities are left out too: they would wake this thread (and
    make it rebuild its wait set, holding the GIL for ~1 ms each time) on every event, which the
    RT threads feel. Their callbacks (e.g. incompatible-QoS warnings) are therefore not run.
    """

    def __init__(self, owner: RtExecutor, context: Context | None) -> None:
        super().__init__(context=context)
        self._rt_owner = owner

    def can_execute(self, entity: Any) -> bool:
        cg = entity.callback_group
        if (
            isinstance(cg, RtCallbackGroup)
            and cg.rt_group != NON_RT
            and isinstance(entity, (Subscription, Timer, EventHandler))
        ):
            return False
        return bool(super().can_execute(entity))

    def wake(self) -> None:
        self._rt_owner._entities_dirty = True
        super().wake()


class RtExecutor:
    """Executor for composed nodes: one thread per rt group thread, the non-RT group in ``spin()``.

    Usage::

        ex = RtExecutor(app_cfg.rt, context=ctx)
        ex.add_node(node)            # collects node.rt_tasks() (again whenever they change)
        ex.spin()                    # until shutdown() / context shutdown; Ctrl-C propagates
        print(ex.report())

    At the start of ``spin``: GC collect + freeze + automatic GC off, heap prefault, GIL switch
    interval, ``mlockall`` (last, so configure/warm-up allocations are resident), then the group
    threads start with their policy/priority/CPU set. Each step that the OS refuses is a warning
    naming the missing capability (or an error with ``rt.require_rt``); the loop still runs.
    """

    def __init__(self, rt_cfg: RtConfig | None = None, context: Context | None = None) -> None:
        import rclpy

        self.config = rt_cfg if rt_cfg is not None else RtConfig()
        self.context = context if context is not None else rclpy.get_default_context()
        self._nonrt = _NonRtExecutor(self, self.context)
        self._nodes: list[Node] = []
        self._extra_tasks: list[PeriodicTask | TriggeredTask] = []
        self._threads: dict[str, _GroupThread] = {}
        self._entities_dirty = True
        self._work_signature: dict[str, tuple[Any, ...]] = {}
        self._stop = False
        self._spinning = False
        self._setup_done = False
        self._lock = threading.Lock()
        self.gc_policy = GcPolicy(self.config.gc_freeze, self.config.gc_collect_period_s)
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.stalls = 0
        self.privilege_losses = 0
        self.non_rt_wakeups = 0  # returns of the non-RT rclpy wait (each rebuilds its wait set)
        self._non_rt_wakeups_checked = 0
        self._warned: set[str] = set()
        self._os: dict[str, Any] = {}
        self._old_switch_interval = sys.getswitchinterval()
        self._last_refresh_ns = 0
        self._last_check_ns = 0
        self._stall_reported: dict[str, int] = {}
        self._housekeeping_grant: sched.ThreadGrant | None = None
        self._go = threading.Event()  # released by spin() when setup and start-up logging are done
        self._helpers_done: dict[int, str] = {}
        self._threads_seen: set[int] = set()

    # -- nodes and tasks -------------------------------------------------------------------------
    def add_node(self, node: Node) -> bool:
        """Add a node (lifecycle or plain): its non-RT entities run in ``spin``'s thread, its
        RT-group subscriptions/timers and ``rt_tasks()`` in the group threads.

        Raises:
            ConfigError: a task or callback group names an rt group that is not configured.
        """
        with self._lock:
            if node in self._nodes:
                return False
            self._nodes.append(node)
        self._nonrt.add_node(node)
        self._entities_dirty = True
        self._refresh(strict=True)
        return True

    def remove_node(self, node: Node) -> None:
        """Stop dispatching `node` (its tasks stop at the next refresh)."""
        with self._lock:
            if node in self._nodes:
                self._nodes.remove(node)
        self._nonrt.remove_node(node)
        self._entities_dirty = True
        self._refresh()

    def add_task(self, task: PeriodicTask | TriggeredTask) -> None:
        """Run a task that belongs to no node (e.g. a benchmark loop). Raises ConfigError for an
        unknown group."""
        self.config.thread_of(task.group)
        with self._lock:
            if task not in self._extra_tasks:
                self._extra_tasks.append(task)
        self._entities_dirty = True
        self._refresh(strict=True)

    def remove_task(self, task: PeriodicTask | TriggeredTask) -> None:
        """Stop running a task added with :meth:`add_task`."""
        with self._lock:
            if task in self._extra_tasks:
                self._extra_tasks.remove(task)
        self._entities_dirty = True
        self._refresh()

    def get_nodes(self) -> list[Node]:
        """Nodes added to this executor."""
        return list(self._nodes)

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(msg)
            _log.warning(msg)

    def _collect(self, strict: bool) -> dict[str, tuple[list[Any], list[Any], list[Any], list[Any]]]:
        work: dict[str, tuple[list[Any], list[Any], list[Any], list[Any]]] = {}

        def slot(group: str, what: str) -> tuple[list[Any], list[Any], list[Any], list[Any]] | None:
            try:
                thread = self.config.thread_of(group)
            except ConfigError as err:
                if strict:
                    raise ConfigError(f'{what}: {err}') from None
                self._warn_once(f'unknown:{what}', f'{what} is not run: {err}')
                return None
            if thread == NON_RT:
                return None
            return work.setdefault(thread, ([], [], [], []))

        tasks: list[Any] = list(self._extra_tasks)
        for node in list(self._nodes):
            get = getattr(node, 'rt_tasks', None)
            if callable(get):
                try:
                    tasks.extend(get() or [])
                except Exception as err:
                    self._warn_once(
                        f'rt_tasks:{node.get_name()}', f'{node.get_name()}.rt_tasks() failed: {err!r}'
                    )
            for sub in node.subscriptions:
                cg = sub.callback_group
                if isinstance(cg, RtCallbackGroup) and cg.rt_group != NON_RT:
                    s = slot(cg.rt_group, f'subscription {sub.topic_name}')
                    if s is not None:
                        s[2].append(sub)
            for tmr in node.timers:
                cg = tmr.callback_group  # type: ignore[assignment]
                if isinstance(cg, RtCallbackGroup) and cg.rt_group != NON_RT:
                    s = slot(cg.rt_group, f'timer of {node.get_name()}')
                    if s is not None:
                        s[3].append(tmr)
            for kind, ents in (('service', node.services), ('client', node.clients)):
                for ent in ents:
                    cg = ent.callback_group
                    if isinstance(cg, RtCallbackGroup) and cg.rt_group != NON_RT:
                        self._warn_once(
                            f'{kind}:{id(ent)}',
                            f'{node.get_name()}: a {kind} in rt group '
                            f'{cg.rt_group!r} runs in the non_rt thread (services are never RT)',
                        )
        # channels that a periodic task consumes inline (rt.cycle.ControlCycle): a triggered
        # consumer of such a channel in the same thread would run the same step a second time
        inline: set[tuple[int, str]] = set()
        for t in tasks:
            for ch in getattr(t, 'inline_channels', ()):
                with contextlib.suppress(ConfigError):
                    inline.add((id(ch), self.config.thread_of(t.group)))
        for t in tasks:
            if isinstance(t, TriggeredTask) and inline:
                with contextlib.suppress(ConfigError):
                    if (id(t.channel), self.config.thread_of(t.group)) in inline:
                        continue
            if not isinstance(t, (PeriodicTask, TriggeredTask)):
                self._warn_once(
                    f'badtask:{id(t)}', f'rt_tasks() returned {t!r}, not a PeriodicTask/TriggeredTask'
                )
                continue
            s = slot(t.group, f'task {t.name}')
            if s is None:
                if self.config.thread_of(t.group) == NON_RT:
                    self._warn_once(
                        f'nonrt:{t.name}',
                        f'task {t.name} is in group {NON_RT}, which runs no RT tasks; put it in an RT group',
                    )
                continue
            s[0 if isinstance(t, PeriodicTask) else 1].append(t)
        return work

    def _refresh(self, strict: bool = False) -> None:
        """Re-collect tasks/entities and hand changes to the group threads (non-RT)."""
        with self._lock:
            self._entities_dirty = False
            self._last_refresh_ns = time.monotonic_ns()
            work = self._collect(strict)
            for name in set(self._threads) | set(work):
                w = work.get(name)
                sig = (tuple(w[0]), tuple(w[1]), tuple(w[2]), tuple(w[3])) if w is not None else _NO_WORK
                if self._work_signature.get(name) == sig:
                    continue
                self._work_signature[name] = sig
                th = self._threads.get(name)
                if th is None:
                    th = _GroupThread(name, self.config.groups[name], self)
                    self._threads[name] = th
                old_triggered = set(th.triggered) | set(th._next[1] if th._next else ())
                for task in old_triggered - set(sig[1]):
                    if task._waker is not None:
                        task.channel.remove_waker(task._waker)
                        task._waker = None
                for task in sig[1]:  # (re-)add after removals: tasks of one thread may share th.wake
                    if task._waker is None:
                        dec = task.decimation
                        task._waker = th.wake if dec == 1 else _DecimatedWake(th.wake, dec)
                    task.channel.add_waker(task._waker)
                th.set_work(*sig)
                if self._spinning and self._setup_done:
                    gc.freeze()  # objects created by configure join the permanent generation
                    if any(sig):
                        th.start(self.config.thread_stack_bytes)

    # -- process setup ---------------------------------------------------------------------------
    def _setup_process(self) -> None:
        cfg = self.config
        self.gc_policy.apply()  # every spin: collect + freeze what configure created (restored after)
        self._old_switch_interval = sys.getswitchinterval()
        if cfg.gil_switch_interval_s > 0:
            sys.setswitchinterval(cfg.gil_switch_interval_s)
        self._os['gil_switch_interval_s'] = sys.getswitchinterval()
        if self._setup_done:
            return
        ok, msg = sched.configure_malloc_for_rt(cfg.prefault_heap_bytes)
        self._os['heap'] = msg
        if not ok:
            self._warn_once('heap', msg)
        if cfg.mlock:
            ok, msg = sched.lock_memory()
            self._os['mlock'] = {'requested': True, 'granted': ok, 'message': msg}
            if not ok:
                if cfg.require_rt:
                    raise RtSafeRlError(f'rt.require_rt is set but {msg}')
                self._warn_once('mlock', msg)
        else:
            self._os['mlock'] = {
                'requested': False,
                'granted': sched.memory_locked(),
                'message': 'not requested',
            }
        self._setup_done = True

    def _start_threads(self) -> None:
        for th in self._threads.values():
            sig = self._work_signature.get(th.name, ())
            if any(sig):
                th.start(self.config.thread_stack_bytes)
        deadline = time.monotonic() + 2.0
        for th in self._threads.values():
            while th.started and th.grant is None and th.thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.001)
            if th.grant is not None:
                for w in th.grant.warnings:
                    self._warn_once(f'grant:{th.name}:{w}', w)
                if self.config.require_rt and th.grant.warnings:
                    self._stop_threads()
                    raise RtSafeRlError('rt.require_rt is set but: ' + '; '.join(th.grant.warnings))

    # -- spinning -----------------------------------------------------------------------------
    def spin(self, duration_s: float | None = None) -> None:
        """Run until :meth:`shutdown`, the context shuts down, or `duration_s` elapsed (counted
        once the group threads run: the set-up's full GC collection and freeze come before).

        The calling thread becomes the non-RT group (parameters, services, lifecycle, diagnostics,
        garbage collection, stall/privilege checks). KeyboardInterrupt propagates after the group
        threads are stopped.

        Raises:
            RtSafeRlError: ``rt.require_rt`` is set and the OS refused a real-time setting.
        """
        self._stop = False
        self._spinning = True
        end_ns = _FAR_NS
        hk = threading.Thread(target=self._housekeeping_loop, name='rt_housekeeping', daemon=True)
        self._go.clear()
        try:
            self._refresh()
            self._setup_process()
            self._apply_helper_threads()
            self._start_threads()
            placement.warn_competitors(self.config, self._threads.values(), self._warn_once)
            hk.start()
            for line in format_report(self.report()).splitlines():
                if not line.startswith(('task ', 'WARNING')):  # warnings were logged already
                    _log.info(line)
            self._go.set()
            if duration_s is not None:  # counted from here: set-up (GC collect + freeze) excluded
                end_ns = time.monotonic_ns() + int(duration_s * 1e9)
            while not self._stop and self.context.ok():
                now = time.monotonic_ns()
                if now >= end_ns:
                    break
                # Block until non-RT work arrives (no periodic timeouts: every rclpy wait-set rebuild
                # holds the GIL for a few hundred us, which the RT threads would feel as lateness).
                timeout_s = None if end_ns == _FAR_NS else (end_ns - now) * 1e-9
                try:
                    self._nonrt._spin_once_impl(timeout_s, self._nonrt_should_return)
                except (ExternalShutdownException, ShutdownException):
                    break
                self._entities_dirty = True  # a non-RT callback ran (e.g. a lifecycle transition)
                self.non_rt_wakeups += 1
        finally:
            self._go.set()
            self._spinning = False
            if hk.is_alive():
                hk.join(1.0)
            self._stop_threads()
            self._housekeeping()
            sys.setswitchinterval(self._old_switch_interval)
            self.gc_policy.restore()  # automatic GC back on while nothing runs in RT threads

    def _nonrt_should_return(self) -> bool:
        return self._stop

    def _housekeeping_loop(self) -> None:
        """Non-RT helper thread: task refresh, GC, error logging, stall and privilege checks."""
        cfg = self.config
        pol = 'fifo' if cfg.housekeeping_priority > 0 else 'other'
        grant = sched.apply_thread_settings(
            'rt_housekeeping', pol, cfg.housekeeping_priority, resolve_cpus(cfg.housekeeping_cpus)
        )
        self._housekeeping_grant = grant
        for w in grant.warnings:
            self._warn_once(f'hk:{w}', w)
        while self._spinning and not self._stop:
            time.sleep(_HOUSEKEEPING_S)
            try:
                self._housekeeping()
            except Exception as err:
                self._warn_once(f'hk:{err!r}', f'rt executor housekeeping failed: {err!r}')

    def _housekeeping(self) -> None:
        now = time.monotonic_ns()
        if self._entities_dirty or now - self._last_refresh_ns > _REFRESH_NS:
            self._refresh()
            if self._spinning:
                self._start_threads_lazy()
        self.gc_policy.maybe_collect(now)
        for th in list(self._threads.values()):
            while th.error_log:
                msg = th.error_log.pop(0)
                self.errors.append(msg)
                _log.error(msg)
            busy = th.busy_since_ns
            if busy and now - busy > _STALL_NS and self._stall_reported.get(th.name) != busy:
                self._stall_reported[th.name] = busy
                self.stalls += 1
                _log.warning(
                    f'rt thread {th.name}: {th.busy_task} has been running for '
                    f'{(now - busy) / 1e6:.0f} ms (stall)'
                )
        if now - self._last_check_ns > 1_000_000_000:
            wakes = self.non_rt_wakeups - self._non_rt_wakeups_checked
            self._non_rt_wakeups_checked = self.non_rt_wakeups
            rate_hz = wakes * 1e9 / (now - self._last_check_ns) if self._last_check_ns else 0.0
            if rate_hz > _NON_RT_WAKES_WARN:
                self._warn_once(
                    'non_rt_wakes',
                    f'the non-RT thread wakes {rate_hz:.0f} times a second: each wake rebuilds the '
                    'rclpy wait set of every non-RT entity while holding the GIL (0.4-0.5 ms measured '
                    'on a 2-vCPU VM), which RT threads feel as lateness; run periodic timers and busy '
                    'subscriptions in an rt group (named_group) or as a PeriodicTask',
                )
            self._last_check_ns = now
            self._apply_helper_threads()
            for th in self._threads.values():
                if th.grant is None or not th.tid or not th.thread.is_alive():
                    continue
                want = th.grant.granted.get('policy')
                try:
                    have = sched.POLICY_NAMES.get(os.sched_getscheduler(th.tid))
                except OSError:
                    continue
                if have != want:
                    self.privilege_losses += 1
                    th.grant.granted['policy'] = have
                    self._warn_once(
                        f'lost:{th.name}:{have}',
                        f'rt thread {th.name}: scheduling policy changed from {want} to {have} at runtime',
                    )

    def _apply_helper_threads(self) -> None:
        """Schedule matching helper threads (e.g. Fast DDS ``dds.*``) as ``rt.helper_threads`` says."""
        cfg = self.config.helper_threads
        prefixes = tuple(self.config.helper_thread_prefixes)
        if not prefixes or (cfg.policy == 'other' and not cfg.cpus):
            return
        try:
            tids = [int(t) for t in os.listdir('/proc/self/task')]
        except OSError:
            return
        for tid in tids:
            if tid in self._helpers_done or tid in self._threads_seen:
                continue
            self._threads_seen.add(tid)  # each thread's name is read once (the scan runs every second)
            name = sched.thread_name(tid)
            if not name.startswith(prefixes):
                continue
            ok, msg = sched.apply_to_thread(tid, cfg.policy, cfg.priority, cfg.real_cpus)
            self._helpers_done[tid] = f'{name}: {msg}'
            if not ok:
                self._warn_once(f'helper:{msg}', f'helper thread {name}: {msg}')

    def _start_threads_lazy(self) -> None:
        for th in self._threads.values():
            if not th.started and any(self._work_signature.get(th.name, ())):
                th.start(self.config.thread_stack_bytes)

    def _stop_threads(self) -> None:
        for th in self._threads.values():
            th.stop()
        for th in self._threads.values():
            if not th.join(2.0):
                self.errors.append(f'rt thread {th.name} did not stop within 2 s (busy in {th.busy_task})')
        for th in self._threads.values():
            for task in th.triggered:
                if task._waker is not None:
                    task.channel.remove_waker(task._waker)
                    task._waker = None
        # threads cannot be restarted: make fresh ones for a later spin()
        old = self._threads
        self._threads = {}
        self._work_signature = {}
        self._retired = getattr(self, '_retired', []) + list(old.values())

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        """Stop spinning (from any thread, or a callback); group threads are joined by ``spin``."""
        self._stop = True
        with contextlib.suppress(Exception):
            self._nonrt.wake()
        return True

    def destroy(self) -> None:
        """Release the inner rclpy executor (after spin returned)."""
        self.gc_policy.restore()
        self._nonrt.shutdown(timeout_sec=1.0)

    # -- reporting -------------------------------------------------------------------------------
    def tasks(self) -> list[PeriodicTask | TriggeredTask]:
        """All tasks currently known (from nodes and add_task)."""
        out: list[PeriodicTask | TriggeredTask] = []
        for th in list(self._threads.values()) + list(getattr(self, '_retired', [])):
            for t in (*th.periodic, *th.triggered):
                if t not in out:
                    out.append(t)
        for t in self._extra_tasks:
            if t not in out:
                out.append(t)
        return out

    def report(self) -> dict[str, Any]:
        """What the OS granted and per-group/per-task statistics (plain dict, JSON-able; non-RT)."""
        threads: dict[str, Any] = {}
        for th in list(getattr(self, '_retired', [])) + list(self._threads.values()):
            if not th.started and th.name in threads:
                continue  # a fresh, never started thread does not hide the one that ran
            g = th.grant
            threads[th.name] = {
                'groups': sorted(n for n in self.config.groups if self.config.thread_of(n) == th.name),
                'requested': {
                    'policy': th.cfg.policy,
                    'priority': th.cfg.priority,
                    'cpus': list(th.cfg.real_cpus),
                    'spin_us': th.cfg.spin_us,
                    'miss_policy': th.cfg.miss_policy,
                },
                'granted': g.granted if g else None,
                'warnings': g.warnings if g else [],
                'ros_dispatches': th.ros_dispatches,
                'ros_errors': th.ros_errors,
                'wakeups': th.wakeups,
            }
        return {
            'kernel': {
                'release': os.uname().release,
                'preempt_rt': sched.has_realtime_kernel(),
                'rt_throttling': sched.rt_throttling(),
            },
            'process': dict(self._os),
            'gc': self.gc_policy.report(),
            'threads': threads,
            'housekeeping': self._housekeeping_grant.as_dict() if self._housekeeping_grant else None,
            'helper_threads': dict(sorted(self._helpers_done.items())),
            'tasks': {t.name: t.stats() for t in self.tasks()},
            'stalls': self.stalls,
            'non_rt_wakeups': self.non_rt_wakeups,
            'privilege_losses': self.privilege_losses,
            'warnings': list(self.warnings),
            'errors': list(self.errors),
        }


def format_report(rep: dict[str, Any]) -> str:
    """Human-readable summary of :meth:`RtExecutor.report` (what the OS granted; counters)."""
    k = rep.get('kernel', {})
    proc = rep.get('process', {})
    gcr = rep.get('gc', {})
    ml = proc.get('mlock') or {}
    sw = proc.get('gil_switch_interval_s')
    mlock = 'granted' if ml.get('granted') else 'NOT granted'
    auto = 'on' if gcr.get('automatic_gc_while_running') else 'off'
    lines = [
        f'kernel {k.get("release")} ({"PREEMPT_RT" if k.get("preempt_rt") else "not PREEMPT_RT"}), '
        f'RT throttling {k.get("rt_throttling")}',
        f'mlockall: {mlock}; {proc.get("heap", "heap not prefaulted")}; GC: {gcr.get("frozen_objects", 0)} '
        f'objects frozen, automatic {auto}, {gcr.get("rt_collections", 0)} collections in RT threads; '
        + (f'GIL switch interval {sw * 1e6:.0f} us' if sw else 'GIL switch interval unchanged'),
    ]
    for name, th in rep.get('threads', {}).items():
        g = th.get('granted') or {}
        r = th.get('requested', {})
        got = (
            f'SCHED_{str(g.get("policy", "?")).upper()} {g.get("priority", "?")} on CPUs {g.get("cpus", "?")}'
        )
        ok = g.get('policy') == r.get('policy') and (not r.get('cpus') or g.get('cpus') == r.get('cpus'))
        lines.append(
            f'thread {name} {th.get("groups")}: {got}'
            + ('' if ok else f' (requested {r.get("policy")} {r.get("priority")} on {r.get("cpus")})')
        )
    for tname, t in rep.get('tasks', {}).items():
        if 'period_us' in t:
            lines.append(
                f'task {tname}: {t["runs"]} runs, {t["misses"]} misses, {t["overruns"]} overruns, '
                f'{t["skipped"]} skipped, max lateness {t["max_lateness_us"]} us, errors {t["errors"]}'
            )
        else:
            lines.append(f'task {tname}: {t["runs"]} runs, {t["coalesced"]} coalesced, errors {t["errors"]}')
    if rep.get('stalls') or rep.get('privilege_losses'):
        lines.append(f'stalls {rep.get("stalls")}, privilege losses {rep.get("privilege_losses")}')
    lines.extend(f'WARNING {w}' for w in rep.get('warnings', []))
    return '\n'.join(lines)


def spin_nodes(
    nodes: Iterable[Node],
    rt_cfg: RtConfig | None = None,
    context: Context | None = None,
    duration_s: float | None = None,
) -> dict[str, Any]:
    """Convenience: add `nodes` to a fresh RtExecutor, spin, return its report."""
    ex = RtExecutor(rt_cfg, context)
    for n in nodes:
        ex.add_node(n)
    try:
        ex.spin(duration_s)
    finally:
        ex.destroy()
    return ex.report()
