"""The RT group thread: one OS thread per ``rt.groups`` thread (:class:`~rt_safe_rl.rt.executor.RtExecutor`).

Each thread runs, in this order every loop: the :class:`~rt_safe_rl.rt.tasks.TriggeredTask` s whose
channel was written (a same-thread producer hands off with no wake-up), the due
:class:`~rt_safe_rl.rt.tasks.PeriodicTask` s (absolute deadlines, skip or bounded catch-up after a
miss), then it waits for the next deadline, a channel write or one of its rclpy subscriptions/timers
(through :mod:`rt_safe_rl.rt.rclpy_adapter`, the only module that touches rclpy internals). It
never logs: errors go to ``error_log``, drained by the executor's non-RT housekeeping thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from rclpy.exceptions import InvalidHandle
from rclpy.guard_condition import GuardCondition
from rclpy.subscription import Subscription
from rclpy.timer import Timer

from rt_safe_rl.rt import rclpy_adapter, sched
from rt_safe_rl.rt.config import GroupConfig
from rt_safe_rl.rt.tasks import PeriodicTask, TriggeredTask

if TYPE_CHECKING:
    from rt_safe_rl.rt.executor import RtExecutor

FAR_NS = 1 << 62  # "no deadline"
_IDLE_WAIT_NS = 50_000_000  # an idle thread re-checks its task set at least this often
_POLL_MAX = 16  # messages taken from one polled subscription per loop (more wait for the next)


def _is_polled(sub: Subscription[Any]) -> bool:
    return bool(getattr(sub.callback_group, 'polled', False))


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
        self.subs: tuple[Subscription[Any], ...] = ()  # waited on
        self.polled: tuple[Subscription[Any], ...] = ()  # taken at each loop (named_group polled)
        self.timers: tuple[Timer, ...] = ()
        self._next: tuple[Any, ...] | None = None  # pending (periodic, triggered, subs, timers)
        self._stop = False
        self._pending = False
        self._sem = threading.Lock()
        self._sem.acquire()  # locked = no signal pending
        self._sig_guard = threading.Lock()
        self._guard: GuardCondition | None = None
        self._ws: rclpy_adapter.EntityWaitSet | None = None
        # bound once: the wait passes them on every call (no bound-method object per wait)
        self._skip_wait = self._should_skip_wait
        self._on_sub = self._take_sub
        self._on_timer = self._call_timer
        self._sleeper = sched.AbsSleeper()
        self.ident = 0
        self.tid = 0
        self.grant: sched.ThreadGrant | None = None
        self.busy_since_ns = 0
        self.busy_task = ''
        self.ros_dispatches = 0
        self.polled_dispatches = 0
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
        subs: tuple[Subscription[Any], ...],
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
        self.periodic, self.triggered, subs, self.timers = nxt
        # polled subscriptions only where periodic tasks wake the thread anyway (else waited on)
        polled = [bool(self.periodic) and _is_polled(s) for s in subs]
        self.polled = tuple(s for s, p in zip(subs, polled, strict=True) if p)
        self.subs = tuple(s for s, p in zip(subs, polled, strict=True) if not p)
        if self.subs or self.timers:
            if self._guard is None:
                self._guard = GuardCondition(None, None, context=self.owner.context)
            sizes = (len(self.subs), len(self.timers))
            if self._ws is None or sizes != self._ws.sizes:
                self._ws = rclpy_adapter.EntityWaitSet(self.owner.context, sizes[0], sizes[1])

    def _loop(self) -> None:
        mono = time.monotonic_ns
        while not self._stop:
            if self._next is not None:
                self._apply_next()
            self._pending = False
            if self.polled:  # 0. sampled inputs: the latest messages before the tasks run
                self._poll()
            # 1. consumers of channels written since the last look (same-thread hand-off first)
            for t in self.triggered:
                if t._enabled and t.channel.seq - t.last_seq >= t.decimation:
                    self._run_triggered(t)
            # 2. periodic tasks that are due
            now = mono()
            next_dl = FAR_NS
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
            elif self.triggered or next_dl == FAR_NS:
                if wake_at > now:
                    got = self._sem.acquire(True, (wake_at - now) * 1e-9)
                else:
                    got = self._sem.acquire(False)
                if got:
                    self.wakeups += 1
            elif wake_at > now:
                self._sleeper.sleep_until(wake_at)
            if self.spin_ns and next_dl != FAR_NS and not self._pending:
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
        p.samples.try_push_values(dl, start, end)
        nxt = dl + per
        after = p.run_after_ns
        if after:
            p.run_after_ns = 0
            if after > nxt:  # the task has nothing to do before `after`: sleep through those periods
                k = (after - nxt + per - 1) // per
                p.deferred += k
                nxt += k * per
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
        t.samples.try_push_values(ch.write_ns, start, end)

    def _wait_ros(self, timeout_ns: int) -> None:
        ws = self._ws
        guard = self._guard
        if ws is None or guard is None:
            return
        try:
            ws.wait(
                self.owner.context,
                self.subs,
                self.timers,
                guard,
                timeout_ns,
                self._skip_wait,
                self._on_sub,
                self._on_timer,
            )
        except InvalidHandle:
            self.owner._entities_dirty = True  # an entity was destroyed; the non-RT thread rebuilds

    def _should_skip_wait(self) -> bool:
        return self._pending or self._stop

    def _poll(self) -> None:
        """Take and dispatch what the polled subscriptions received (at most ``_POLL_MAX`` each). RT-safe."""
        for sub in self.polled:
            for _ in range(_POLL_MAX):
                try:
                    msg_info = rclpy_adapter.take_now(sub)
                except InvalidHandle:
                    self.owner._entities_dirty = True  # destroyed; the non-RT thread rebuilds
                    return
                if msg_info is None:
                    break
                self._dispatch(sub, msg_info)
                self.polled_dispatches += 1

    def _take_sub(self, sub: Subscription[Any]) -> None:
        msg_info = rclpy_adapter.try_take(sub)
        if msg_info is None:
            return
        self._dispatch(sub, msg_info)
        self.ros_dispatches += 1

    def _dispatch(self, sub: Subscription[Any], msg_info: Any) -> None:
        """Run `sub`'s callback with a taken message (errors counted and logged by the non-RT
        thread). RT-safe."""
        self.busy_task = sub.topic_name
        self.busy_since_ns = time.monotonic_ns()
        try:
            rclpy_adapter.call_subscription(sub, msg_info)
        except Exception:
            self.ros_errors += 1
            if self.ros_errors <= 3:
                self.error_log.append(f'subscription {sub.topic_name}: {traceback.format_exc()}')
        self.busy_since_ns = 0
        if self._pending:  # e.g. policy wrote policy/action: safety runs right now, same thread
            self._run_pending_triggered()

    def _call_timer(self, tmr: Timer) -> None:
        if not rclpy_adapter.try_fire_timer(tmr):
            return
        self.busy_task = 'timer'
        self.busy_since_ns = time.monotonic_ns()
        try:
            tmr.callback()  # type: ignore[call-arg,misc]  # rclpy: Optional, or TimerInfo-taking; ours take none
        except Exception:
            self.ros_errors += 1
            if self.ros_errors <= 3:
                self.error_log.append(f'timer callback: {traceback.format_exc()}')
        self.busy_since_ns = 0
        self.ros_dispatches += 1
