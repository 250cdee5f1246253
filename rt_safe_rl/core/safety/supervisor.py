"""SafetySupervisor: everything the safety node does besides ROS message conversion (no ROS).

It owns the :class:`~rt_safe_rl.core.safety.SafetyFilter` and runs it for a node (or a bench, or
a test) from two threads:

- the control thread: :meth:`SafetySupervisor.process_state` (latest measured state; input
  integrity: out-of-order / duplicate sequence numbers and header stamps are dropped and counted,
  more than ``inputs.max_dropped_states`` within ``inputs.drop_window_s`` fail closed with
  ``INPUT_ORDER``), :meth:`process_action` (filter step for the policy's action + emit);
- the safety monitor thread: :meth:`monitor_tick` (staleness, action timeout; steps the filter
  itself while the chain is silent or the state stale; sleeps while no timeout can expire).
Both step and emit under one lock, read the step time under it and claim the robot period (state
seq, the command's label) they command: the filter advances exactly once per emitted command and
labels strictly increase (:meth:`_claim_label`). A command later than ``deadline_s`` after its
state latches DEADLINE_MISS. The filter's output guard (:mod:`.guard`) checks every command
against those sent before; its trips are counted (``output_guard_errors``).

Emission: the ``emit(cmd, seq, t_ns, repeat)`` callback (under the lock; ``repeat`` = the held
command re-sent at rest). Metrics: an optional registry (``stage``/``counter``/``gauge``).

Reset tells the truth (:meth:`reset`): a no-op when nothing is latched, refused with the reason
while braking or when the stop would latch again at once. :meth:`fail_closed` latches a stop with
a one-line detail; :meth:`controlled_stop` is the shutdown path (SIGTERM): brake, hold, latched.

RT-safety: process_state, process_action, monitor_tick, read_command, set_human, set_operator are
allocation-free in the steady state; reset, status, update_config, fail_closed are non-RT.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety.config import SafetyConfig
from rt_safe_rl.core.safety.filter import (
    MAX_HUMAN_POINTS,
    FaultCode,
    SafetyFilter,
    SafetyReport,
    build_params,
)
from rt_safe_rl.core.safety.intake import DUPLICATE, DropBudget, order_drop
from rt_safe_rl.core.safety.labels import (
    MONITOR_IDLE_MAX_NS,
    STATE_BEYOND_LIMITS,
    StampLabels,
    monitor_idle_ns,
    next_label,
    state_check,
    state_violation,
    state_violation_detail,
)
from rt_safe_rl.core.safety.stops import brake_to_rest, reset_blocker, reset_dropped_detail

EmitFn = Callable[[np.ndarray, int, int, bool], None]


class SafetySupervisor:
    """Runs a :class:`SafetyFilter` for one robot (see the module docstring).

    Args:
        model: robot model. cfg: safety config (``rate_hz`` = the robot's rate).
        emit: ``emit(cmd (n,) rad, state seq, t_ns, repeat)`` publishes a command (under the lock).
        metrics: optional registry (``stage``/``counter``/``gauge``), e.g. ``rt.metrics.registry()``.
        clock: monotonic clock [ns] (tests may replace ``clock`` at any time); sleep: wait [s] (the
            same clock, for tests on a fake one: :meth:`brake_to_rest`).

    Public counters (non-RT readers): cycles, monitor_publishes, monitor_stops, deadline_misses,
    skipped_actions, dropped_states, duplicate_states, monitor_engaged_ns (when the monitor last
    began to step / hold); ``filter``.
    """

    def __init__(
        self,
        model: RobotModel,
        cfg: SafetyConfig,
        emit: EmitFn,
        *,
        metrics: Any = None,
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.model = model
        self._cfg = cfg
        self.emit = emit
        self.clock = clock
        self.sleep = sleep
        self.filter = SafetyFilter(model, cfg, MAX_HUMAN_POINTS)
        n = model.n_joints
        self.period_ns = round(1e9 / cfg.rate_hz)
        self._labels = StampLabels(self.period_ns)
        self._drops = DropBudget()
        self._q = np.zeros(n)
        self._dq = np.zeros(n)
        self._out = np.zeros(n)
        self._op = np.zeros(n)
        self._human = np.zeros((MAX_HUMAN_POINTS, 3))
        self._human_views = [self._human[:k] for k in range(MAX_HUMAN_POINTS + 1)]
        self._lock = threading.Lock()
        self.active = False
        self.fault_detail = ''
        self._stage: Any = None
        self._counters: dict[str, Any] = {}
        self._gauge_d: Any = None
        if metrics is not None:
            self._stage = metrics.stage('safety')
            for name in ('safety_interventions', 'faults', 'output_guard_errors', 'dropped_states'):
                self._counters[name] = metrics.counter(name)
            self._gauge_d = metrics.gauge('human_distance_m')
        self._clear_stream()

    def _clear_stream(self) -> None:
        self._n_human = 0
        self._human_stamp_ns = 0
        self._human_speed = -1.0
        self._op_stamp_ns = 0
        self._state_seq = -1
        self._state_rx_ns = 0
        self._action_rx_ns = 0
        self._last_pub_ns = 0
        self._last_pub_seq = -1
        self._last_label = -1
        self._seq_restart = False
        self._was_latched = False
        self._resets_seen = 0  # filter.resets_applied at the last step
        self._rest_stop = False
        self._deferred_label = -1
        self._labels.clear()
        self._guard_seen = 0
        self._drops.clear()
        self.cycles = 0
        self.monitor_publishes = 0
        self.monitor_stops = 0
        self.monitor_engaged_ns, self._monitor_engaged = 0, False  # (this clock)
        self.deadline_misses = self.skipped_actions = 0

    # ------------------------------------------------------------------ configuration
    @property
    def cfg(self) -> SafetyConfig:
        """The SafetyConfig in force."""
        return self._cfg

    def validate_config(self, cfg: SafetyConfig) -> None:
        """Raise ConfigError when `cfg` is inconsistent with the robot; changes nothing (non-RT)."""
        build_params(self.model, cfg)

    def update_config(self, cfg: SafetyConfig) -> None:
        """Validate `cfg` against the robot and apply it at the next step (non-RT; ConfigError)."""
        self.filter.update_config(cfg)
        self._cfg = cfg

    def warm_up(self) -> None:
        """Compile / load the numba kernels on a throwaway filter (configure time)."""
        f = SafetyFilter(self.model, self._cfg)
        q = self.model.home()
        out = np.zeros(self.model.n_joints)
        for k in range(3):
            f.step(k, q, np.zeros_like(q), q, True, np.array([[2.0, 0.0, 1.0]]), k, q, out)
        state_violation(q, q * 0.0, f.limits, 0.0, 0.0)

    def replace_filter(self) -> None:
        """Fresh filter and stream state (benchmarks between repeats; caller owns the control thread)."""
        with self._lock:
            self.filter = SafetyFilter(self.model, self._cfg, MAX_HUMAN_POINTS)
            self._clear_stream()
            self.fault_detail = ''
            self._resets_seen = 0

    def activate(self) -> None:
        """Start: the command re-synchronises (no jump) and holds until a valid action arrives. The
        stop that :meth:`brake_to_rest` latched for a deactivation is cleared (the command is at
        rest); any other latched stop stays latched."""
        f = self.filter
        if self._rest_stop and f.latched_fault == FaultCode.CONTROLLED_STOP:
            ok, _ = f.reset()
            if ok:
                self.fault_detail = ''
        self._rest_stop = False
        f.resync()
        self._action_rx_ns = 0
        self._last_pub_ns = 0
        self._last_label = -1
        self.active = True

    def deactivate(self) -> None:
        """Stop stepping and emitting (see :meth:`brake_to_rest` for a command still moving)."""
        self.active = False

    def brake_to_rest(self, reason: str, timeout_s: float | None = None) -> tuple[bool, str]:
        """Brake a moving command to rest before the output goes silent (deactivation); see
        :func:`~rt_safe_rl.core.safety.stops.brake_to_rest`. Blocks: lifecycle thread, non-RT."""
        if not self.active or self._state_rx_ns == 0 or self.filter.is_stopped:
            return True, 'at rest'
        if not self.filter.stop_latched:
            self._rest_stop = True
        self.fail_closed(FaultCode.CONTROLLED_STOP, f'controlled stop: {reason}')
        return brake_to_rest(self, timeout_s)

    def step_at_rest_check(self) -> bool:
        """One monitor step under the lock (it steps when the chain has not for this period); when
        the command was already at rest and latched, sends the rest command once more and returns
        True. For :func:`~rt_safe_rl.core.safety.stops.brake_to_rest`. RT-safe."""
        f = self.filter
        with self._lock:
            stopped = f.is_stopped and f.stop_latched
            self._monitor_step(f)
            if stopped and self._last_pub_seq >= 0:
                self.emit(self._out, self._last_pub_seq, self.clock(), True)
                return True
        return False

    # ------------------------------------------------------------------ inputs
    def process_state(
        self, stamp_ns: int, seq: int, q: np.ndarray, dq: np.ndarray, *, header_stamp_ns: int = 0
    ) -> bool:
        """Store the latest measured state (rad, rad/s, robot order) with its robot sequence number
        (< 0: none, the states are counted), receipt time [ns] and header stamp [ns] (0 = unset).
        Returns False when the state was dropped: its seq or stamp is not newer than the last
        accepted one (out of order, duplicate). A seq far below the last (``SEQ_RESTART_GAP``) is
        a restart of the robot's numbering: the one-step-per-seq bookkeeping starts over
        (:func:`~rt_safe_rl.core.safety.intake.order_drop`). RT-safe."""
        last = self._state_seq
        hs = self._labels.latest_stamp_ns  # of the last accepted state that had one
        if seq < 0:  # ROS 2 headers have none: the robot periods elapsed between the stamps
            seq = next_label(last, header_stamp_ns, hs, self.period_ns)
        drop = order_drop(seq, last, header_stamp_ns, hs)
        if drop:
            self._count_drop(stamp_ns, drop == DUPLICATE)
            return False
        if q is not self._q:
            np.copyto(self._q, q)
        if dq is not self._dq:
            np.copyto(self._dq, dq)
        if seq < last:
            self._seq_restart = True
        self._check_state_limits()
        self._labels.record(seq, header_stamp_ns, stamp_ns)
        # receipt time first, seq second: the monitor reads seq first, so it never pairs a new
        # seq with the previous state's receipt time (which would predict a seq too far ahead)
        self._state_rx_ns = stamp_ns
        self._state_seq = seq
        if self._deferred_label == seq:
            self._deferred_label = -1
            self.process_action(seq, None, False)  # judged now, with the state it was computed from
        return True

    def copy_command_velocity(self, out: np.ndarray) -> None:
        """Copy the command trajectory's velocity [rad/s] (n,) into `out` (in `emit`: that of the
        command being sent). RT-safe (no view allocated)."""
        np.copyto(out, self.filter._cs[1])

    def stamp_for_label(self, label: int) -> int:
        """Header stamp [ns] a command for `label` is sent with (:meth:`StampLabels.stamp_for_label`)."""
        return self._labels.stamp_for_label(label)

    def label_for_stamp(self, stamp_ns: int) -> int:
        """Label of the state stamped `stamp_ns` (:meth:`StampLabels.label_for_stamp`). RT-safe."""
        return self._labels.label_for_stamp(stamp_ns)

    def _count_drop(self, now_ns: int, duplicate: bool) -> None:
        """Count a dropped state; fail closed above the configured rate (leaky bucket). RT-safe."""
        c = self._counters.get('dropped_states')
        if c is not None:
            c.inc()
        inp = self._cfg.inputs
        over = self._drops.count(now_ns, duplicate, inp)
        f = self.filter
        if over and not f.stop_latched and not f.event_pending:
            f.trigger_stop(FaultCode.INPUT_ORDER)
            self.fault_detail = self._drops.detail(inp)

    @property
    def dropped_states(self) -> int:
        """Joint states dropped (out of order or duplicated) since activation."""
        return self._drops.dropped

    @property
    def duplicate_states(self) -> int:
        """Of those, duplicates (the same seq / stamp again)."""
        return self._drops.duplicates

    def human_buffer(self) -> np.ndarray:
        """Writable (MAX_HUMAN_POINTS, 3) buffer for the human points; then :meth:`commit_human`."""
        return self._human

    def commit_human(self, k: int, stamp_ns: int, speed_m_s: float = -1.0) -> None:
        """`k` points of :meth:`human_buffer` are the latest human data at `stamp_ns` [ns]. RT-safe."""
        self._n_human = k
        self._human_speed = float(speed_m_s)
        self._human_stamp_ns = stamp_ns

    def set_human(self, stamp_ns: int, xyz: np.ndarray, speed_m_s: float = -1.0) -> None:
        """Latest human point(s) [m] ((3,) or (M,3), robot base frame) and their time [ns];
        `speed_m_s` the measured speed toward the robot (< 0 unknown: ISO 13855 default)."""
        pts = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        k = min(pts.shape[0], MAX_HUMAN_POINTS)
        self._human[:k] = pts[:k]
        self.commit_human(k, stamp_ns, speed_m_s)

    @property
    def measured_q(self) -> np.ndarray:
        """Copy of the latest accepted measured positions (n,) [rad] (allocates)."""
        return self._q.copy()

    @property
    def state_seq(self) -> int:
        """Robot seq of the latest accepted state (-1 before the first)."""
        return self._state_seq

    @property
    def human_points(self) -> np.ndarray:
        """Copy of the latest human points (M, 3) [m] (allocates)."""
        return self._human[: self._n_human].copy()

    def set_operator(self, stamp_ns: int, values: np.ndarray) -> None:
        """Latest operator position targets [rad] for shared control and their time [ns]. RT-safe."""
        np.copyto(self._op, values)
        self._op_stamp_ns = stamp_ns

    # ------------------------------------------------------------------ RT path
    def process_action(
        self, state_seq: int, target: np.ndarray | None, valid: bool, *, state_stamp_ns: int = 0
    ) -> bool:
        """Filter the policy's action for robot state `state_seq` and emit the safe command (RT
        path, control thread). Returns False when it was dropped: that period already has its
        command (the monitor covered it while the chain was late) -- the filter advances at most
        once per robot period. `state_seq` <= 0: the latest state's own count; `state_stamp_ns`
        (> 0) names the state by its header stamp instead (:meth:`label_for_stamp`). An invalid
        action for a state that has not arrived here yet is judged when it arrives (so a stop
        names the bad state, not the policy's reaction to it)."""
        f = self.filter
        if not self.active or self._state_rx_ns == 0:
            return False
        if state_stamp_ns > 0:
            state_seq = self.label_for_stamp(state_stamp_ns)
            if state_seq < 0:
                self.skipped_actions += 1  # older than every state kept: its period is long gone
                return False
            if not valid and state_seq > self._state_seq:
                self._deferred_label = state_seq
                return False
        t0 = self.clock()
        self._action_rx_ns = t0
        with self._lock:
            label = state_seq if state_seq > 0 else self._state_seq
            stepped = self._claim_label(label)
            if stepped:
                t_ns = self.clock()  # under the lock: step times never go backwards across threads
                # the deadline runs from the receipt of the state the action answers (an action for
                # an older state than the latest is that much later)
                rx_ns = self._labels.named_rx_ns if state_stamp_ns > 0 and state_seq <= self._state_seq else 0
                if t_ns - (rx_ns or self._state_rx_ns) > int(self._cfg.deadline_s * 1e9):
                    self.deadline_misses += 1
                    f.trigger_stop(FaultCode.DEADLINE_MISS)
                self._step_and_emit(f, t_ns, target, valid, label)
        if not stepped:
            self.skipped_actions += 1
            return False
        self.cycles += 1
        t1 = self.clock()
        if self._stage is not None:
            self._stage.record_ns(t1, t1 - t0)
        rep = f.report
        c = self._counters.get('safety_interventions')
        if c is not None and (
            rep.safety_intervention_rad > self._cfg.intervention_threshold_rad or rep.stopping or rep.latched
        ):
            c.inc()
        d = rep.human_distance_m
        if self._gauge_d is not None and d < 1e300:
            self._gauge_d.set(d)
        return True

    def _claim_label(self, label: int) -> bool:
        """True (and `label` recorded) when no command was emitted yet for robot period `label`
        and none for a later one (caller holds the lock). RT-safe."""
        if self._seq_restart:
            self._seq_restart = False
            self._last_label = -1
        if label <= self._last_label:
            return False
        self._last_label = label
        return True

    def _step_and_emit(
        self, f: SafetyFilter, t_ns: int, proposal: np.ndarray | None, valid: bool, state_seq: int
    ) -> None:
        """filter.step + emit (caller holds the lock and has claimed `state_seq`): one filter step
        per emitted command, in step order. RT-safe."""
        n_h = self._n_human
        human = self._human_views[n_h] if n_h else None
        cfg = self._cfg
        op = (
            self._op
            if (self._op_stamp_ns and t_ns - self._op_stamp_ns <= int(cfg.operator_timeout_s * 1e9))
            else None
        )
        rep: SafetyReport = f.step(
            t_ns,
            self._q,
            self._dq,
            proposal,
            valid,
            human,
            self._human_stamp_ns,
            op,
            self._out,
            state_stamp_ns=self._state_rx_ns,
            human_speed_m_s=self._human_speed,
        )
        latched = rep.latched
        if f.resets_applied != self._resets_seen:  # this step applied a reset: that latch is over
            self._resets_seen, self._was_latched = f.resets_applied, False
            self.fault_detail, self._drop_bucket = '', 0.0
        if latched and not self._was_latched:
            c = self._counters.get('faults')
            if c is not None:
                c.inc()
            if not self.fault_detail and f.latched_fault == FaultCode.STATE_OUT_OF_LIMITS:
                self.fault_detail = state_violation_detail(  # the fault path: allocates once
                    self._q, self._dq, f.limits, cfg.position_tolerance_rad, cfg.velocity_tolerance_rad_s
                )
        self._was_latched = latched
        gv = f.guard_violations
        if gv != self._guard_seen:
            c = self._counters.get('output_guard_errors')
            if c is not None:
                c.inc(gv - self._guard_seen)
            self._guard_seen = gv
        if not rep.command_valid:
            return  # no valid state yet: nothing may be commanded
        self.emit(self._out, state_seq if state_seq >= 0 else 0, t_ns, False)
        self._last_pub_ns = t_ns
        self._last_pub_seq = state_seq

    def read_command(self, out: np.ndarray) -> int:
        """Copy the latest safe command into `out`; return the state seq it was computed from
        (-1 before the first command). Same thread as process_action. RT-safe.

        Under the step lock: the monitor thread steps the filter into the same buffer, and the
        buffer holds the filter's raw output until the output guard has checked it; outside
        the lock a late cycle could copy an unchecked command (or a pair of command and seq
        from two different steps)."""
        with self._lock:
            seq = self._last_pub_seq
            if seq >= 0:
                np.copyto(out, self._out[: out.shape[0]])
        return seq

    @property
    def last_command_seq(self) -> int:
        """State seq of the last emitted command (-1 before the first)."""
        return self._last_pub_seq

    def monitor_tick(self, deadline_ns: int = 0) -> int:
        """Safety monitor (own thread, >= 2 kHz grid): state staleness, action timeout; while the
        chain is silent or the state stale it steps the filter itself (stop / hold) and emits once
        per robot period (:meth:`_monitor_step`: braking goes on at the robot's rate when states
        stop). Returns how long [ns] the next tick cannot change anything: 0 while it steps or
        holds (the next period), else :func:`~.labels.monitor_idle_ns`. RT-safe."""
        f = self.filter
        if not self.active or self._state_rx_ns == 0:
            return MONITOR_IDLE_MAX_NS
        now = self.clock()
        cfg = self._cfg
        rx = self._state_rx_ns
        state_timeout_ns = int(cfg.state_timeout_s * 1e9)
        stale = now - rx > state_timeout_ns
        if stale:
            f.trigger_stop(FaultCode.STALE_STATE)
        act = self._action_rx_ns
        timeout_ns = int(cfg.action_timeout_s * 1e9)
        if act and now - act > timeout_ns and f.had_valid_action:
            f.trigger_stop(FaultCode.ACTION_TIMEOUT)
        silent = act == 0 or now - act > timeout_ns
        if silent or stale:
            if not self._monitor_engaged:
                self._monitor_engaged = True
                self.monitor_engaged_ns = now
            if self._lock.acquire(blocking=False):
                try:
                    self._monitor_step(f)
                finally:
                    self._lock.release()
            return 0
        self._monitor_engaged = False
        return monitor_idle_ns(now, rx, state_timeout_ns, act, timeout_ns)

    def _check_state_limits(self) -> None:
        """STATE_OUT_OF_LIMITS for an accepted state beyond the limits + tolerance, on receipt (a
        non-finite one is the filter's NONFINITE_INPUT at its step). RT-safe."""
        f = self.filter
        cfg = self._cfg
        ptol, vtol = cfg.position_tolerance_rad, cfg.velocity_tolerance_rad_s
        if state_check(self._q, self._dq, f.limits, ptol, vtol) == STATE_BEYOND_LIMITS:
            if not f.stop_latched and not f.event_pending:  # (a pending event's detail stands)
                self.monitor_stops += 1
                self.fault_detail = state_violation_detail(self._q, self._dq, f.limits, ptol, vtol)
            f.trigger_stop(FaultCode.STATE_OUT_OF_LIMITS)

    def _monitor_step(self, f: SafetyFilter) -> None:
        """The monitor's step (once per new state seq and, while moving, per period since the last
        state; none for a period that has its command) or hold re-emission at rest (caller holds
        the lock). RT-safe."""
        seq = self._state_seq  # seq before receipt time (process_state writes them reversed)
        rx_ns = self._state_rx_ns
        t_ns = self.clock()
        label = seq
        if not f.is_stopped:
            # still moving and no new state for a period or more: keep braking at the robot's rate;
            # only while braking, so labels run ahead of the robot's seq by at most one stopping time
            label += max(0, (t_ns - rx_ns) // self.period_ns)
        if self._claim_label(label):
            self._step_and_emit(f, t_ns, None, False, label)
            self.monitor_publishes += 1
        elif f.is_stopped and self._last_pub_seq >= 0 and t_ns - self._last_pub_ns >= self.period_ns:
            self.emit(self._out, self._last_pub_seq, t_ns, True)  # holding at rest: re-send, no step
            self._last_pub_ns = t_ns
            self.monitor_publishes += 1

    # ------------------------------------------------------------------ faults, reset, status
    def fail_closed(self, code: int, detail: str) -> None:
        """Latch a controlled stop with `code` (:class:`FaultCode`) at the next step, with a one-line
        `detail` for the status (the first detail of a latch is kept). Any thread."""
        if not self.filter.stop_latched or not self.fault_detail:
            self.fault_detail = detail
        self.filter.trigger_stop(code)

    def add_detail(self, detail: str) -> bool:
        """Append `detail` to the latched stop's status detail (a second input fault found while
        latched, e.g. the competing publisher behind an INPUT_ORDER latch), once. Returns True
        when it was added. Any thread (non-RT: builds a string)."""
        if not detail or detail in self.fault_detail:
            return False
        self.fault_detail = f'{self.fault_detail}; also: {detail}' if self.fault_detail else detail
        return True

    def controlled_stop(self, reason: str) -> None:
        """Brake within the limits and hold, latched (``CONTROLLED_STOP``): the shutdown path
        (SIGTERM / SIGINT). The next filter step (the chain's or the monitor's) starts the stop."""
        self.fail_closed(FaultCode.CONTROLLED_STOP, f'controlled stop: {reason}')

    def reset(self) -> tuple[bool, str]:
        """Clear a latched stop at the next cycle; ``(accepted, why)``: a no-op (says so) when nothing
        is latched; refused with the reason while braking or when it would latch again. Non-RT."""
        f = self.filter
        gen = f.latch_gen  # the latch judged here (a stop that latches meanwhile refuses the reset)
        why = self.reset_blocker() if f.stop_latched else ''
        if why:
            return False, f'reset refused: {why}'
        return f.reset(gen)  # (its detail is cleared by the step that applies it: _step_and_emit)

    def reset_blocker(self) -> str:
        """Why a reset now would latch again at once ('' = it would not): :func:`.stops.reset_blocker`."""
        args = (self._state_rx_ns, self._q, self._dq, self.filter.limits, self._human_stamp_ns)
        return reset_blocker(self._cfg, self.clock(), *args)

    def status(self) -> dict[str, Any]:
        """The last report plus counters as a dict (non-RT). The report is copied under the lock
        the steps run under (a ~1 us hold), so fault, latch and margins are of one step."""
        f = self.filter
        with self._lock:
            rep = f.report.copy()
            guard_last = f.guard.describe()
            detail, resets, dropped_by = self.fault_detail, f.resets_applied, f.reset_dropped_by
        d = rep.as_dict()
        d.update(
            fault_detail=detail if rep.latched else '',
            cycles=self.cycles,
            monitor_publishes=self.monitor_publishes,
            deadline_misses=self.deadline_misses,
            skipped_actions=self.skipped_actions,
            dropped_states=self.dropped_states,
            duplicate_states=self.duplicate_states,
            guard_violations=f.guard_violations,
            guard_last=guard_last,
            ramping=f.ramping,
            last_command_seq=self._last_pub_seq,
            resets_applied=resets,
        )
        if dropped_by and rep.latched:
            d['fault_detail'] = reset_dropped_detail(d['fault_detail'], dropped_by)
        if rep.fault_code == FaultCode.OUTPUT_GUARD and not d['fault_detail']:
            d['fault_detail'] = guard_last
        return d

    @property
    def report(self) -> SafetyReport:
        """The filter's last report (reused; read it in the control thread or copy via status)."""
        return self.filter.report

    @property
    def intervention_rad(self) -> float:
        """Last cycle's safety intervention [rad] (the report's ``safety_intervention_rad``)."""
        return float(self.filter.report.safety_intervention_rad)
