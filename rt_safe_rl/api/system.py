"""RtSystem: the package's core (policy runtime + fail-closed safety filter) as a Python object.

Built by the factories in :mod:`rt_safe_rl.api.factory` (configure: load + check the policy,
choose its backend, build the filter). Entering it starts the real-time execution:

* ``with system:`` gives the *calling* thread the ``control`` group's scheduling
  (``rt.groups.control``: SCHED_FIFO 80 pinned to the last CPU as shipped; restored on exit),
  plus mlockall, heap prefault and GC freeze as ``rt.*`` says;
  ``system.execute_rt_inference_sync(state)`` runs the core inline in it (no hand-off).
* ``async with system:`` does the same for the event-loop thread (``async_mode='inline'``, the
  default): ``await system.execute_rt_inference(state)`` runs the cycle inline and returns
  ``(safe_action, metadata)`` -- every coroutine of that loop then runs at RT priority on the RT
  CPU, so keep them short. ``async_mode='worker'`` runs the cycles on a dedicated RT thread
  instead and leaves the loop thread alone; each call then pays two thread wake-ups (the loop
  thread's at SCHED_OTHER: unbounded on a loaded machine, see ``rt-safe-rl bench api``).

Refused privileges degrade to SCHED_OTHER with a warning (``info()['rt']``), unless
``rt.require_rt``. Each call is one control cycle: call at ``control.rate_hz`` (the filter
integrates with dt = 1 / ``safety.rate_hz``); a gap over ``safety.max_step_gap_s`` or a state older
than ``safety.state_timeout_s`` latches a controlled stop like in the nodes (``reset()`` clears it
once stopped). A bad state (NaN, beyond limits) returns a controlled-stop action with the fault in
``metadata.fault``; a state of the wrong shape raises :class:`~rt_safe_rl.api.state.StateError`.

Human data works like the safety node's topic: ``state.human_points`` is a new measurement, stamped
``state.human_stamp_ns`` or, without one, at its arrival (the call's entry time); the system keeps
the latest one, and a state without ``human_points`` reuses it with its stamp. So a caller who
stops sending a human gets ``HUMAN_STALE`` (a latched stop) once the last measurement is older than
``safety.ssm.human_timeout_s``. Pass ``human_points`` only with a new measurement (or give its
``human_stamp_ns``): points passed again unstamped every call are taken as fresh each time.
Entering the system (a fresh filter) forgets the human.

RT-safety: the per-call path allocates only the returned action and metadata (small objects).
"""

from __future__ import annotations

import asyncio
import gc
import os
import queue
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from rt_safe_rl.api.metadata import InferenceMetadata
from rt_safe_rl.api.state import F64, RobotState, StateError, as_vector, human_array, split_mapping
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.doctor.sysfs import SysRoot, meminfo
from rt_safe_rl.rt import sched
from rt_safe_rl.rt.memory import GcPolicy

_mono = time.monotonic_ns  # the clock of every stamp here (CLOCK_MONOTONIC, = perf_counter_ns on Linux)
_NDARRAY = np.ndarray
_F64 = np.dtype(np.float64)


class SystemNotRunningError(RtSafeRlError, RuntimeError):
    """execute_rt_inference called outside ``async with`` / ``with`` (or after close)."""


def _resolve(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.cancelled():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class RtSystem:
    """Policy runtime + safety stage of one robot; see the module docstring. Build with a factory."""

    def __init__(
        self, app: Any, model: Any, runtime: Any, safety: Any, cleanup: Any = None, async_mode: str = 'inline'
    ) -> None:
        if async_mode not in ('inline', 'worker'):
            raise ValueError(f"async_mode: expected 'inline' or 'worker', got {async_mode!r}")
        self.async_mode = async_mode
        self.app = app
        self.model = model
        self.runtime = runtime
        self.safety = safety
        self._cleanup = cleanup
        n = model.n_joints
        self.n_joints = n
        self.joint_names: list[str] = list(model.joint_names)
        self.input_names: tuple[str, ...] = tuple(runtime.obs_builder.inputs)
        self._input_set = frozenset(self.input_names)
        self._max_human = int(safety.max_human_points)
        self._shape = (n,)
        self._human_shapes = frozenset([(3,), *((k, 3) for k in range(1, self._max_human + 1))])
        self._target = np.zeros(n)
        self._cmd = np.zeros(n)
        # latest human points [m] with their stamp [ns] (kept across calls, like the node's)
        self._human = np.zeros((self._max_human, 3))
        self._human_views = [self._human[:k] for k in range(self._max_human + 1)]
        self._n_human = 0
        self._human_stamp_ns = 0
        self._lock = threading.Lock()
        self._seq = 0
        self._deadline_us = float(app.monitor.thresholds.e2e_budget_s) * 1e6
        self._deadline_ns = self._deadline_us * 1e3  # compared with int ns (no division per call)
        self._backend = str(runtime.info['backend'])
        self._mode = ''  # '' | 'sync' | 'async'
        self._worker: _Worker | None = None
        self._batch: Any = None
        self._saved_sched: tuple[int, int, set[int]] | None = None
        self._gc: Any = None
        self._unfreeze = False
        self._locked_memory = False
        self._grant: dict[str, Any] = {}
        self.rt_warnings: list[str] = []
        self.calls = 0
        self.deadline_misses = 0

    # ------------------------------------------------------------------ states
    def initial_state(self) -> RobotState:
        """A valid state of the configured robot at rest: ``sim.robot.initial_q_rad`` (else the
        model's home pose), zero velocity, the policy inputs at their defaults, no human."""
        q0 = list(self.app.sim.robot.initial_q_rad)
        q = (
            np.asarray(q0, np.float64)
            if len(q0) == self.n_joints
            else np.asarray(self.model.home(), np.float64)
        )
        q = np.clip(q, self.model.q_min, self.model.q_max)
        inputs = {k: v.copy() for k, v in self.runtime.obs_builder._input_defaults.items()}
        return RobotState(q=q, dq=np.zeros(self.n_joints), inputs=inputs)

    def _parse(self, state: Any) -> tuple[Any, ...]:
        """Shape checks at the boundary: (q, dq, inputs, human, human_stamp_ns, operator, stamp_ns).
        Arrays that already are float64 of the right shape pass as they are (one identity and one
        shape test each); anything else goes through the converting checks of :mod:`.state`.
        Raises StateError (one line)."""
        if type(state) is not RobotState:
            if isinstance(state, Mapping):
                state = split_mapping(state, self.input_names)
            elif not isinstance(state, RobotState):
                raise StateError(f'state: expected a RobotState or a dict, got {type(state).__name__}')
        shape = self._shape
        q = state.q
        if type(q) is not _NDARRAY or q.dtype is not _F64 or q.shape != shape:
            q = as_vector(q, self.n_joints, 'q')
        dq = state.dq
        if type(dq) is not _NDARRAY or dq.dtype is not _F64 or dq.shape != shape:
            dq = as_vector(dq, self.n_joints, 'dq')
        inputs = state.inputs or None
        if inputs and not self._input_set.issuperset(inputs):
            bad = next(k for k in inputs if k not in self._input_set)
            raise StateError(
                f'state.inputs: unknown input {bad!r}; the policy takes {list(self.input_names)}'
            )
        human = state.human_points
        if human is not None and (
            type(human) is not _NDARRAY or human.dtype is not _F64 or human.shape not in self._human_shapes
        ):
            human = human_array(human, self._max_human)
        op = state.operator_command
        if op is not None and (type(op) is not _NDARRAY or op.dtype is not _F64 or op.shape != shape):
            op = as_vector(op, self.n_joints, 'operator_command')
        return q, dq, inputs, human, state.human_stamp_ns, op, state.stamp_ns

    # ------------------------------------------------------------------ the core
    def _run(
        self, parsed: tuple[Any, ...], t_entry_ns: int, t_submit_ns: int, thread: str
    ) -> tuple[F64, InferenceMetadata]:
        q, dq, inputs, human, human_stamp, op, stamp = parsed
        mono = _mono
        with self._lock:
            if human is not None:  # a new human measurement: stamped at its arrival when unstamped
                k = 1 if human.ndim == 1 else human.shape[0]
                self._human_views[k][...] = human
                self._n_human = k
                self._human_stamp_ns = t_entry_ns if human_stamp is None else int(human_stamp)
            k = self._n_human
            t0 = mono()
            st = t0 if stamp is None else int(stamp)
            valid = self.runtime.control_step(st, q, dq, inputs, self._target)
            t1 = mono()
            rep = self.safety.step(
                t0,
                q,
                dq,
                self._target,
                valid,
                self._human_views[k] if k else None,
                self._human_stamp_ns,
                op,
                self._cmd,
                state_stamp_ns=st,
            )
            t2 = mono()
            action = self._cmd.copy()
            report = rep.copy()
            self._seq = seq = self._seq + 1
            ran = self.runtime.ran_policy
        meta = InferenceMetadata(
            (
                report,
                t_entry_ns,
                t_submit_ns,
                t0,
                t1,
                t2,
                seq,
                st,
                ran,
                valid,
                self._backend,
                thread,
                self._deadline_us,
            )
        )
        self.calls += 1
        if t2 - t_entry_ns > self._deadline_ns:
            self.deadline_misses += 1
        return action, meta

    def execute_rt_inference_sync(self, state: Any) -> tuple[F64, InferenceMetadata]:
        """One control cycle in the calling thread (inside ``with system:``).

        Returns (safe action (n,) rad, :class:`InferenceMetadata`). ``state.human_points`` without
        ``human_stamp_ns`` are stamped at this call's entry; a state without them reuses the last
        ones with their stamp (``HUMAN_STALE`` after ``safety.ssm.human_timeout_s``, see the module
        docstring).

        Raises:
            StateError: wrong shape / unknown key. SystemNotRunningError: not inside ``with``/``async with``.
        """
        t_entry = _mono()
        if not self._mode:
            raise SystemNotRunningError('execute_rt_inference_sync: enter the system first (`with system:`)')
        parsed = self._parse(state)
        return self._run(parsed, t_entry, _mono(), 'caller')

    async def execute_rt_inference(self, state: Any) -> tuple[F64, InferenceMetadata]:
        """One control cycle on the RT worker thread (inside ``async with system:``).

        Raises:
            StateError: wrong shape / unknown key (before anything runs).
            SystemNotRunningError: not inside ``async with system:``.
        """
        t_entry = _mono()
        worker = self._worker
        if worker is None:
            if self._mode != 'async':
                raise SystemNotRunningError(
                    'execute_rt_inference: enter the system first (`async with system:`)'
                )
            parsed = self._parse(state)  # inline: this (event-loop) thread was made RT by `async with`
            return self._run(parsed, t_entry, _mono(), 'event_loop')
        parsed = self._parse(state)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[F64, InferenceMetadata]] = loop.create_future()
        worker.submit((parsed, t_entry, _mono(), fut, loop))
        return await fut

    def execute_batch(self, states: Any) -> tuple[F64, list[str]]:
        """Throughput path (cloud profile): one cycle of B independent robots (B fixed at the first
        call) at the call time, safety filter batched (:mod:`rt_safe_rl.api.batch`). Each robot
        slot follows the single step's rules: the same output guard against its previous command
        over the real elapsed time, ``operator_command`` blended, human points kept with their
        stamp, timing faults; slot i returns what a fresh system's ``execute_rt_inference_sync``
        returns for the same states.

        Returns (actions (B, n) rad, fault name per robot). Not RT code; no context needed.

        Raises:
            StateError: not a sequence, another B than before, a state of the wrong shape.
        """
        from rt_safe_rl.api.batch import BatchStage, check_batch

        stage = self._batch
        b = check_batch(states, None if stage is None else stage.batch)
        if stage is None:
            stage = self._batch = BatchStage(self, b)
        with self._lock:
            return stage.run(states, time.monotonic_ns())

    def reset_batch(self) -> None:
        """Forget the batch slots (latched stops, command states, batch size)."""
        self._batch = None

    def reset(self) -> tuple[bool, str]:
        """Clear a latched stop (refused while still moving) and reset the policy's state."""
        ok, why = self.safety.reset()
        if ok:
            with self._lock:
                self.runtime.reset()
        return ok, why

    # ------------------------------------------------------------------ RT set-up / tear-down
    def _activate(self) -> None:
        """Like a node's activate: fresh filter state, policy state reset."""
        with self._lock:
            self.safety.restart()
            self.runtime.reset()
            self._n_human = 0  # a fresh filter: the human must be seen again

    def _process_rt_on(self) -> None:
        self._activate()
        rt = self.app.rt
        if rt.prefault_heap_bytes > 0:
            ok, msg = sched.configure_malloc_for_rt(rt.prefault_heap_bytes)
            if not ok:
                self.rt_warnings.append(msg)
        if rt.mlock and not sched.memory_locked():
            ok, msg = sched.lock_memory()
            self._locked_memory = ok
            if not ok:
                self.rt_warnings.append(msg)
        if rt.gc_freeze:
            self._gc = GcPolicy(True, rt.gc_collect_period_s)
            self._gc.apply()
        else:  # automatic GC stays on, but collections skip what exists now (torch: ~ms per full scan)
            gc.collect()
            gc.freeze()
            self._unfreeze = True

    def _process_rt_off(self) -> None:
        if self._gc is not None:
            self._gc.restore()
            self._gc = None
        if self._unfreeze:
            gc.unfreeze()
            self._unfreeze = False
        if self._locked_memory:
            sched.unlock_memory()
            self._locked_memory = False

    def _check_grant(self, warnings: list[str]) -> None:
        self.rt_warnings.extend(warnings)
        if warnings and self.app.rt.require_rt:
            raise RtSafeRlError('rt.require_rt is set but: ' + '; '.join(warnings))
        if warnings and self.app.deployment.system_checks != 'off':
            print(
                '!' * 78
                + f'\n{self.app.deployment.profile or "this"} profile: RT privileges refused: '
                + '; '.join(warnings)
                + '\n'
                + '!' * 78,
                file=sys.stderr,
            )

    def _promote_caller(self, mode: str) -> None:
        """Give the calling thread the control group's CPUs and scheduling (saved for restore)."""
        if self._mode:
            raise SystemNotRunningError(f'the system is already running ({self._mode})')
        g = self.app.rt.groups['control']
        self._saved_sched = (
            os.sched_getscheduler(0),
            os.sched_getparam(0).sched_priority,
            os.sched_getaffinity(0),
        )
        warnings: list[str] = []
        ok, msg = sched.set_thread_affinity(g.real_cpus)
        if not ok:
            warnings.append(msg)
        ok, msg = sched.set_thread_scheduler(g.policy, g.priority)
        if not ok:
            warnings.append(msg)
        self._grant = sched.thread_state(threading.get_native_id())
        self._mode = mode
        try:
            self._check_grant(warnings)
            self._process_rt_on()
        except BaseException:
            self._demote_caller()
            raise

    def _demote_caller(self) -> None:
        if self._saved_sched is not None:
            pol, prio, cpus = self._saved_sched
            self._saved_sched = None
            try:
                os.sched_setscheduler(0, pol, os.sched_param(prio))
                os.sched_setaffinity(0, cpus)
            except OSError:
                pass
        self._process_rt_off()
        self._mode = ''

    def __enter__(self) -> RtSystem:
        """Make the calling thread RT (``rt.groups.control``) for ``execute_rt_inference_sync``."""
        self._promote_caller('sync')
        return self

    def __exit__(self, *exc: object) -> None:
        if self._mode == 'sync':
            self._demote_caller()

    async def __aenter__(self) -> RtSystem:
        """``async_mode='inline'`` (default): the event-loop thread is made RT and runs each cycle
        inline; ``'worker'``: a dedicated RT thread runs them (the loop thread stays as it is)."""
        if self.async_mode == 'inline':
            self._promote_caller('async')
            return self
        if self._mode:
            raise SystemNotRunningError(f'the system is already running ({self._mode})')
        worker = _Worker(self)
        worker.start()
        worker.ready.wait(10.0)
        self._grant = worker.grant
        self._mode = 'async'
        try:
            if worker.error is not None:
                raise worker.error
            self._check_grant(worker.warnings)
            self._process_rt_on()
        except BaseException:
            worker.stop()
            self._mode = ''
            raise
        self._worker = worker
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._mode != 'async':
            return
        worker, self._worker = self._worker, None
        if worker is None:
            self._demote_caller()
            return
        await asyncio.get_running_loop().run_in_executor(None, worker.stop)
        self._process_rt_off()
        self._mode = ''

    def close(self) -> None:
        """Release temporary files (a policy module saved for loading). Idempotent."""
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ reports
    def info(self) -> dict[str, Any]:
        """Profile, backend (+ table), robot, RT grant and warnings, counters, memory (RSS)."""
        status = meminfo(SysRoot('/').read('/proc/self/status'))
        return {
            'profile': self.app.deployment.profile,
            'backend': self._backend,
            'policy': self.runtime.info,
            'joint_names': self.joint_names,
            'inputs': list(self.input_names),
            'rate_hz': self.app.control.rate_hz,
            'deadline_us': self._deadline_us,
            'rt': {'mode': self._mode, 'granted': self._grant, 'warnings': list(self.rt_warnings)},
            'counters': {'calls': self.calls, 'deadline_misses': self.deadline_misses},
            'memory': {'rss_mb': status.get('VmRSS', 0) / 1024, 'hwm_mb': status.get('VmHWM', 0) / 1024},
        }


class _Worker:
    """The RT thread of ``async with``: applies ``rt.groups.control``, runs submitted cycles."""

    def __init__(self, system: RtSystem) -> None:
        self._system = system
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.grant: dict[str, Any] = {}
        self.warnings: list[str] = []
        self._thread = threading.Thread(target=self._main, name='rt_safe_rl_api', daemon=True)

    def start(self) -> None:
        """Start the thread (it signals ``ready`` once its scheduling is set)."""
        self._thread.start()

    def submit(self, item: Any) -> None:
        """Queue one cycle (never blocks)."""
        self._q.put(item)

    def stop(self) -> None:
        """Ask the thread to finish and join it."""
        self._q.put(None)
        self._thread.join(5.0)

    def _main(self) -> None:
        g = self._system.app.rt.groups['control']
        try:
            grant = sched.apply_thread_settings('rt_api', g.policy, g.priority, g.real_cpus, g.timer_slack_ns)
            self.grant = grant.granted
            self.warnings = list(grant.warnings)
        except BaseException as err:
            self.error = err
        self.ready.set()
        run = self._system._run
        get = self._q.get
        while True:
            item = get()
            if item is None:
                return
            parsed, t_entry, t_submit, fut, loop = item
            try:
                res = run(parsed, t_entry, t_submit, 'rt_worker')
            except BaseException as err:
                loop.call_soon_threadsafe(_resolve, fut, None, err)
                continue
            loop.call_soon_threadsafe(_resolve, fut, res, None)
