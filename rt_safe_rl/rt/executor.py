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

Modules: :mod:`~rt_safe_rl.rt.tasks` (groups and tasks), :mod:`~rt_safe_rl.rt.group_thread` (the
per-thread loop), :mod:`~rt_safe_rl.rt.collect` (which thread runs what), :mod:`~rt_safe_rl.rt.report`
(the report), :mod:`~rt_safe_rl.rt.rclpy_adapter` (the only module touching rclpy internals); this
module keeps the executor and re-exports the public names (``from rt_safe_rl.rt.executor import ...``).

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
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.event_handler import EventHandler
from rclpy.executors import ExternalShutdownException, ShutdownException, SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.subscription import Subscription
from rclpy.timer import Timer

from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.rt import placement, rclpy_adapter, sched
from rt_safe_rl.rt.collect import collect_work
from rt_safe_rl.rt.config import NON_RT, RtConfig, resolve_cpus
from rt_safe_rl.rt.group_thread import FAR_NS, _GroupThread
from rt_safe_rl.rt.memory import GcPolicy
from rt_safe_rl.rt.report import format_report, kernel_report, threads_report
from rt_safe_rl.rt.tasks import (
    OFF_CYCLE_SLOTS,
    PeriodicTask,
    RtCallbackGroup,
    TriggeredTask,
    _DecimatedWake,
    named_group,
    off_cycle_phase_ns,
)

__all__ = [
    'OFF_CYCLE_SLOTS',
    'PeriodicTask',
    'RtCallbackGroup',
    'RtExecutor',
    'TriggeredTask',
    'format_report',
    'named_group',
    'off_cycle_phase_ns',
]

_REFRESH_NS = 500_000_000  # rt_tasks() re-read at least this often (and after any non-RT callback)
_NO_WORK: tuple[tuple[Any, ...], ...] = ((), (), (), ())
_HOUSEKEEPING_S = 0.1  # period of the non-RT housekeeping thread
_NON_RT_WAKES_WARN = 5  # non-RT wakes per second above which the executor warns (see _housekeeping)
_STALL_NS = 100_000_000  # a callback running this long is reported as a stall

_log = get_logger('rt_executor')


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
        """Raises:
        RtSafeRlError: the installed rclpy lacks an internal the RT threads use (the message
            names it; see :mod:`~rt_safe_rl.rt.rclpy_adapter`).
        """
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
        version_note = rclpy_adapter.check_rclpy()  # raises naming missing rclpy internals
        if version_note:
            self._warn_once('rclpy_version', version_note)

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

    def _refresh(self, strict: bool = False) -> None:
        """Re-collect tasks/entities and hand changes to the group threads (non-RT)."""
        with self._lock:
            self._entities_dirty = False
            self._last_refresh_ns = time.monotonic_ns()
            work = collect_work(self.config, self._nodes, self._extra_tasks, strict, self._warn_once)
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
        end_ns = FAR_NS
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
                timeout_s = None if end_ns == FAR_NS else (end_ns - now) * 1e-9
                try:
                    rclpy_adapter.spin_once_until(self._nonrt, timeout_s, self._nonrt_should_return)
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
        threads = list(getattr(self, '_retired', [])) + list(self._threads.values())
        return {
            'kernel': kernel_report(),
            'process': dict(self._os),
            'gc': self.gc_policy.report(),
            'threads': threads_report(self.config, threads),
            'housekeeping': self._housekeeping_grant.as_dict() if self._housekeeping_grant else None,
            'helper_threads': dict(sorted(self._helpers_done.items())),
            'tasks': {t.name: t.stats() for t in self.tasks()},
            'stalls': self.stalls,
            'non_rt_wakeups': self.non_rt_wakeups,
            'privilege_losses': self.privilege_losses,
            'warnings': list(self.warnings),
            'errors': list(self.errors),
        }
