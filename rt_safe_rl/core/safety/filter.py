"""SafetyFilter: the fail-closed, per-cycle safety filter (pure Python + numba, no ROS).

Every cycle :meth:`SafetyFilter.step` takes the measured state, the policy's proposed position
target, the human points and the operator command, and writes the closest safe command (see
:mod:`.kernel` for the constraint set and the projection) into a caller-owned array, plus a
preallocated :class:`SafetyReport`.

Fail-closed: non-finite or wrong-sized inputs, a measured state outside the limits, a
non-viable command state, a state older than ``state_timeout_s``, a clock jump (time going
backwards or a gap > ``max_step_gap_s``), a missing/invalid policy output (after the first
valid one), stale human data, or an external trigger (:meth:`trigger_stop`: deadline miss,
safety monitor) each start a controlled stop -- decelerate within the limits, then hold -- that
stays latched until :meth:`reset` succeeds (only once the command has stopped). Until the first
valid policy action (and, with SSM requiring a human, the first human data) after activation or
reset, the filter holds without latching (``AWAITING_*`` codes); timing faults in that phase
(stale state / human data, clock jump, deadline miss, action timeout: start-up transients while
the other nodes load) are reported but hold without latching too -- the command is a hold anyway.

Speed and separation monitoring, what to expect in traces (checked in the closed-loop tests
with the simulated walker): every cycle the speed of each monitored point toward each human
point is bounded by ISO/TS 15066 ``v_max(d)`` (exactly, up to the ~1e-3 m/s linearisation of a
1 ms step, whenever the projection is feasible); SSM does not limit motion tangential to or
away from the person, so the robot may pass near the person fast. At ``d <= d0 = C_tot + v_h
T_r`` a stop is commanded every cycle: synchronised braking at the joint acceleration limits
(no point swings toward the person while stopping), complete after the slowest joint's
``|v| / a_max``. Before that the bound can drop faster than the joint limits let the command
follow -- the person is sampled in steps (12 mm at 1.2 m/s and 100 Hz) and ISO 13855's speed
switches from 1.6 to 2.0 m/s at ``near_distance_m`` -- then the projection is empty for a few
cycles and the least-violating command is taken (``qp_fallback`` reported; excess seen in the
demo scenario <= 0.08 m/s for tens of ms, within the reaction time the formula budgets). The
distance to a person who walks in keeps shrinking during a stop because the person moves
(``v_h`` is part of ``d0``), and the physical robot stops after the command by its own tracking
lag (the simulated arm's PD has no velocity feed-forward: up to ~0.5 s more from full speed).

Threading: :meth:`step` runs on the RT thread. :meth:`reset`, :meth:`trigger_stop` and
:meth:`update_config` may be called from other threads: they only set flags / swap prepared
arrays that :meth:`step` picks up atomically at the start of the next cycle.
"""

from __future__ import annotations

import math

import numpy as np

from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety import kernel as kn
from rt_safe_rl.core.safety.config import SafetyConfig
from rt_safe_rl.core.safety.guard import OutputGuard, ramp_proposal
from rt_safe_rl.core.safety.params import build_params
from rt_safe_rl.core.safety.report import ACTIVE_BITS, FAULT_NAMES, FaultCode, SafetyReport
from rt_safe_rl.core.safety.requests import FilterRequests

MAX_HUMAN_POINTS = kn.PFL_SLOTS
RESET_MAX_SPEED_RAD_S = 0.05
"""A latched stop can only be reset once every measured joint speed is below this [rad/s]."""

_FAULT_NAMES = FAULT_NAMES
__all__ = ['ACTIVE_BITS', 'MAX_HUMAN_POINTS', 'FaultCode', 'SafetyFilter', 'SafetyReport', 'build_params']

# timing faults: before the first valid action (the command is a hold anyway) they hold without latching
_TIMING = frozenset(
    int(c)
    for c in (
        FaultCode.STALE_STATE,
        FaultCode.CLOCK_JUMP,
        FaultCode.DEADLINE_MISS,
        FaultCode.ACTION_TIMEOUT,
        FaultCode.HUMAN_STALE,
    )
)
_AWAITING = (int(FaultCode.AWAITING_POLICY), int(FaultCode.AWAITING_HUMAN), int(FaultCode.RESYNC))
RAMP_DONE_RAD = 1e-5
"""A re-synchronisation ramp ends this close to the measured state [rad] (then holds there)."""


class SafetyFilter:
    """The fail-closed safety filter for one robot. See the module docstring.

    Args:
        model: compiled robot model (limits, kinematics, monitored points).
        cfg: safety configuration (validated against the model).
        max_human_points: capacity of the human-point buffer (more points -> BAD_SIZE fault).

    Raises:
        ConfigError: `cfg` is inconsistent with `model` (see :func:`build_params`).
    """

    def __init__(
        self, model: RobotModel, cfg: SafetyConfig | None = None, max_human_points: int = MAX_HUMAN_POINTS
    ) -> None:
        self.model = model
        self._model_arrays = kn.model_arrays(model)  # filter_kernel's `model` argument, once
        self.cfg = cfg or SafetyConfig()
        n = model.n_joints
        self.n_joints = n
        self._lim, self._sp, self._ws = build_params(model, self.cfg)
        self._max_h = int(max_human_points)
        self._work = kn.alloc_work(n, model.parent.shape[0], model.n_points, self._max_h)
        self._cs = np.zeros((3, n))
        self._q = np.zeros(n)
        self._dq = np.zeros(n)
        self._prop = np.zeros(n)
        self._op = np.zeros(n)
        self._human = np.zeros((self._max_h, 3))
        self.report = SafetyReport()
        self._shape_n = (n,)
        self._initialized = False
        self._resync = False
        self._latched = False
        self._latched_code = 0
        self._req = FilterRequests()  # what other threads ask (trigger_stop, reset, resync, update_config)
        self.resets_applied = 0  # accepted resets that cleared the latch at the next step
        self.reset_dropped_by = 0  # FaultCode of the fault that came first and kept the last one latched
        self._ramping = False
        self._ramp_goal = np.zeros(n)
        self._ramp_prop = np.zeros(n)
        self._had_valid = False
        self._human_seen = False
        self._last_t_ns = -1
        self.guard = OutputGuard(self._lim, self.cfg.dt_s, self.cfg.max_step_gap_s)
        self._apply_timing(self.cfg)

    # ------------------------------------------------------------------ configuration
    def _apply_timing(self, cfg: SafetyConfig) -> None:
        self._state_timeout_ns = int(cfg.state_timeout_s * 1e9)
        self._max_gap_ns = int(cfg.max_step_gap_s * 1e9)
        self._human_timeout_ns = int(cfg.ssm.human_timeout_s * 1e9)
        self._jerk_on = bool(cfg.enforce_jerk)
        if hasattr(self, 'guard'):
            self.guard.max_gap_ns = self._max_gap_ns
            self.guard.strict_velocity = cfg.output_mode != 'position'
        self._ssm_on = bool(cfg.ssm.enabled)
        self._require_human = bool(cfg.ssm.require_human)

    def update_config(self, new_cfg: SafetyConfig) -> None:
        """Validate `new_cfg` and apply it atomically at the start of the next :meth:`step`.

        Not RT-safe (allocates); call from the parameter thread. Raises ConfigError (the current
        configuration stays in force).
        """
        lim, sp, ws = build_params(self.model, new_cfg)
        self._req.request_config((lim, sp, ws, new_cfg))

    @property
    def limits(self) -> np.ndarray:
        """Read-only view of the limits in force (kernel layout (8, n): rows ``kernel.L_QMIN``,
        ``L_QMAX``, ``L_VMAX`` (velocity_scale applied), ``L_AMAX``, ``L_JMAX``, ``L_EFF``, ``L_KP``,
        ``L_KD``). A live update swaps the array at the next step: re-read it, do not keep it."""
        v = self._lim.view()
        v.flags.writeable = False
        return v

    @property
    def stop_latched(self) -> bool:
        """True while a fault stop is latched."""
        return self._latched

    @property
    def latched_fault(self) -> int:
        """:class:`FaultCode` of the latched stop (0 when not latched)."""
        return self._latched_code

    @property
    def command_state(self) -> np.ndarray:
        """Read-only view (3, n) of the command trajectory state: q [rad], v [rad/s], a [rad/s^2]."""
        v = self._cs.view()
        v.flags.writeable = False
        return v

    @property
    def had_valid_action(self) -> bool:
        """True once a valid policy action was seen since activation / reset."""
        return self._had_valid

    @property
    def is_stopped(self) -> bool:
        """True when the command velocity is zero on every joint (the stop has completed)."""
        return bool(not np.any(self._cs[1]))

    def set_command_state(
        self,
        q: np.ndarray,
        v: np.ndarray | None = None,
        a: np.ndarray | None = None,
        *,
        clear_latch: bool = False,
    ) -> None:
        """Set the command trajectory state (q [rad], v [rad/s], a [rad/s^2]); marks it initialised
        and declares it the stream the output guard continues from.

        For tests, benchmarks and replay (not the RT path): it teleports the command, so it must
        never be used on a running robot. Zero v / a when None. `clear_latch`: also forget a
        latched stop (independent per-state evaluations in a benchmark loop).
        """
        self._cs[0] = q
        self._cs[1] = 0.0 if v is None else v
        self._cs[2] = 0.0 if a is None else a
        self._initialized = True
        self.guard.seed(self._cs[0], self._cs[1], self._cs[2])
        if clear_latch:
            self._latched = False
            self._latched_code = 0

    def qp_problem(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the last cycle's projection problem (v_des, lo, hi, G, h) in command-velocity
        space [rad/s]; the safe command is q_prev + dt * argmin. For differential tests. Allocates.
        """
        _frames, _pts, _jac, vec, bounds, g_mat, hvec, _rowkind, _qw = self._work
        k = int(self.report._rep[kn.R_N_ROWS])
        box = bounds[kn.B_TIERED]
        return vec[kn.VEC_VDES].copy(), box[0].copy(), box[1].copy(), g_mat[:k].copy(), hvec[:k].copy()

    def trigger_stop(self, code: int = FaultCode.MONITOR) -> None:
        """Request a latched controlled stop from another thread (deadline miss, monitor).

        RT-safe (sets a flag under a lock held for a few bytecodes); takes effect at the next
        :meth:`step`. A pending event is never replaced (the first one is the cause); see
        :mod:`.requests` for events and conditions.
        """
        self._req.trigger(int(code))

    @property
    def event_pending(self) -> bool:
        """True while a stop event (not a condition) waits for the next step. Any thread."""
        return self._req.event != 0

    @property
    def latch_gen(self) -> int:
        """Latches and events taken into a latch in force so far; a :meth:`reset` judged at one
        value is refused once it has moved on. Any thread."""
        return self._req.latch_gen

    def reset(self, latch_gen: int | None = None) -> tuple[bool, str]:
        """Clear a latched stop; ``(accepted, why)``. Refused while the command or the robot is
        still moving. With nothing latched it is a no-op (and says so): the command continues.
        An accepted reset applies at the next step and re-synchronises (:meth:`resync`): the command
        resumes from where it holds when the measured state is within ``position_tolerance_rad``
        of it, else it ramps there from the held command within every limit; a fresh valid policy
        action is required before the robot moves again. A condition flagged before it applies
        (stale state, state out of limits, the policy's silence) is re-evaluated then; an event
        triggered before then (deadline miss, input order, a controlled stop, ...) keeps the stop
        latched (``reset_dropped_by``). `latch_gen`: :attr:`latch_gen` when the caller judged the
        latch (None: now); a stop latched or triggered since then refuses the reset.
        """
        req = self._req
        gen0 = req.latch_gen if latch_gen is None else latch_gen
        event = req.event
        pending = event or req.cond  # what the next step takes (event first)
        if not self._latched and pending == 0:
            return True, 'nothing latched: reset is a no-op (the command continues unchanged)'
        if not self._latched or event:
            code = pending if not self._latched else event
            name = _FAULT_NAMES[code] if code < len(_FAULT_NAMES) else str(code)
            return False, f'a {name} stop was just triggered: it latches at the next cycle'
        if np.any(self._cs[1] != 0.0):
            return False, 'still stopping: the command velocity is not zero yet'
        if np.any(np.abs(self._dq) > RESET_MAX_SPEED_RAD_S):
            return False, f'still stopping: the robot moves faster than {RESET_MAX_SPEED_RAD_S} rad/s'
        if not req.try_request_reset(gen0):  # a stop came while it was checked
            return False, 'a stop was triggered while the reset was checked: try again'
        err = float(np.max(np.abs(self._q - self._cs[0]))) if self._initialized else 0.0
        how = (
            'resumes from the held command'
            if err <= self.cfg.position_tolerance_rad or not math.isfinite(err)
            else f'ramps from the held command to the measured state ({err:.3g} rad away)'
        )
        return (
            True,
            f'reset of {_FAULT_NAMES[self._latched_code]} applies at the next cycle; the command {how}',
        )

    def resync(self) -> None:
        """Re-synchronise at the next step (activation, a new policy): hold until a fresh valid
        action, from the last command without a jump: a moving command brakes first; then, when
        the measured state is more than ``position_tolerance_rad`` away, the command ramps to it
        (:func:`~rt_safe_rl.core.safety.guard.ramp_proposal`, filtered like any proposal; report
        ``RESYNC``). A latched stop stays latched. RT-safe (sets a flag)."""
        self._req.request_resync()

    @property
    def ramping(self) -> bool:
        """True while a re-synchronisation ramp moves the command toward the measured state."""
        return self._ramping

    # ------------------------------------------------------------------ the RT path
    def _resync_step(self, mode: int, hold: int, code: int) -> tuple[int, int, np.ndarray]:
        """(mode, hold code, proposal) of a re-synchronising step: brake to rest first, then ramp
        to the measured state when it disagrees with the command (caller: :meth:`step`). RT-safe."""
        if self._latched or code or (hold and hold != FaultCode.AWAITING_POLICY):
            self._ramping = False  # a fault / another hold wins; the re-synchronisation waits
            self._resync = True
            return mode, hold, self._prop
        resync = int(FaultCode.RESYNC)
        if self._resync:
            if not self.is_stopped:
                return 1, resync, self._prop  # brake to rest first (the policy waits)
            self._resync = False
            np.clip(self._q, self._lim[kn.L_QMIN], self._lim[kn.L_QMAX], out=self._ramp_goal)
            err = 0.0
            for j in range(self.n_joints):
                e = abs(self._ramp_goal[j] - self._cs[0, j])
                if not math.isfinite(e):
                    return 1, resync, self._prop  # non-finite state: the kernel latches it
                err = max(err, e)
            if err <= self.cfg.position_tolerance_rad:
                return mode, hold, self._prop  # robot and command agree: resume from the held command
            self._ramping = True
        remaining = ramp_proposal(self._cs, self._ramp_goal, self._lim, self.cfg.dt_s, self._ramp_prop)
        if remaining <= RAMP_DONE_RAD:
            self._ramping = False
            return 1, resync, self._prop  # arrived: this step holds (brakes the last mm/s to rest)
        return 0, resync, self._ramp_prop

    def _guard_output(self, t_ns: int, out_cmd: np.ndarray, rep: SafetyReport) -> None:
        """Last line (independent of the projection): check `out_cmd` against the commands sent
        before it; on a violation send the braking command from the last command sent instead,
        continue the command trajectory from it and latch OUTPUT_GUARD. RT-safe."""
        g = self.guard
        jerk_on = self._jerk_on and not (int(rep._rep[kn.R_MASK]) & kn.A_JERK_RELAXED)
        if g.check(t_ns, self._lim, out_cmd, jerk_on):
            g.brake(out_cmd)
            g.record(t_ns, out_cmd)
            np.copyto(self._cs, g.last_sent)
            self._latch(FaultCode.OUTPUT_GUARD)
            rep._rep[kn.R_STOPPING] = 1.0
            rep._rep[kn.R_MASK] = int(rep._rep[kn.R_MASK]) | kn.A_STOP
        else:
            g.record(t_ns, out_cmd)

    @property
    def guard_violations(self) -> int:
        """Commands the output guard replaced by the braking command (since construction)."""
        return self.guard.violations

    def _latch(self, code: int) -> None:
        """Latch a stop with `code` (a latch in force keeps its cause). The generation advances
        before the flag is set: a reset thread that sees the latch sees its generation too, so a
        reset judged before it is refused (the step thread is latch_gen's only writer)."""
        if not self._latched:
            self._req.latch_gen += 1
            self._latched_code = code
            self._latched = True

    def step(
        self,
        t_ns: int,
        q: np.ndarray,
        dq: np.ndarray,
        q_proposed: np.ndarray | None,
        proposed_valid: bool,
        human_points: np.ndarray | None,
        human_stamp_ns: int,
        operator_cmd: np.ndarray | None,
        out_cmd: np.ndarray,
        *,
        state_stamp_ns: int | None = None,
        human_speed_m_s: float = -1.0,
    ) -> SafetyReport:
        """One filter cycle. RT-safe: no array allocation; writes `out_cmd` (n,) [rad].

        Args:
            t_ns: now, monotonic clock [ns].
            q, dq: measured joint positions [rad] / velocities [rad/s] (n,).
            q_proposed: policy's proposed position target [rad] (n,) or None (= missing).
            proposed_valid: the policy's own validity flag for this action.
            human_points: (M, 3) human points [m] in the robot base frame, or None.
            human_stamp_ns: time of the human measurement [ns] (same clock as t_ns).
            operator_cmd: operator's position target [rad] (n,) for shared control, or None.
            out_cmd: output array (n,) float64, filled with the safe command.
            state_stamp_ns: time of the joint state [ns]; None = t_ns.
            human_speed_m_s: measured human speed toward the robot; < 0 = unknown (ISO 13855).

        Returns:
            the reused :class:`SafetyReport` (valid until the next call).
        """
        code = self._take_requests()
        n_h = self._copy_inputs(q, dq, q_proposed, operator_cmd, human_points)
        if n_h < 0 and code == 0:
            code = FaultCode.BAD_SIZE
        if code == 0 and self._initialized and not (kn._finite_all(self._q) and kn._finite_all(self._dq)):
            code = FaultCode.NONFINITE_INPUT  # the state itself, before the policy's reaction to it
        code = self._time_fault(t_ns, t_ns if state_stamp_ns is None else state_stamp_ns, code)
        hold = 0
        if q_proposed is None or not proposed_valid:  # ---- policy ----
            if self._had_valid:
                if code == 0:
                    code = FaultCode.POLICY_INVALID
            else:
                hold = FaultCode.AWAITING_POLICY
            if q_proposed is None:
                self._prop[:] = self._cs[0] if self._initialized else self._q
        elif not self._latched and not (self._resync or self._ramping):
            self._had_valid = True  # (a re-synchronisation makes the policy wait until it is done)
        if self._ssm_on:  # ---- human ----
            if n_h <= 0:
                if self._human_seen:
                    if code == 0:
                        code = FaultCode.HUMAN_MISSING
                elif self._require_human and hold == 0:
                    hold = FaultCode.AWAITING_HUMAN
            else:
                self._human_seen = True
                if code == 0 and t_ns - human_stamp_ns > self._human_timeout_ns:
                    code = FaultCode.HUMAN_STALE
        if code:
            if not self._had_valid and code in _TIMING:
                hold = code  # nothing has moved yet: hold and report, do not latch
            else:
                self._latch(code)
        rep = self.report
        if not self._initialized and not self._start_stream(n_h >= 0, out_cmd, rep):
            return rep
        if self.guard.held(t_ns):
            # the last command was sent longer than max_step_gap_s ago: the robot has been holding
            # it, so the command trajectory continues from rest (no velocity carried over the gap)
            self._cs[1].fill(0.0)
            self._cs[2].fill(0.0)
        mode = 1 if (self._latched or hold) else 0
        prop = self._prop
        if self._resync or self._ramping:
            mode, hold, prop = self._resync_step(mode, hold, code)
        has_op = operator_cmd is not None and prop is self._prop
        return self._project(t_ns, prop, has_op, max(n_h, 0), float(human_speed_m_s), mode, hold, out_cmd)

    def _project(
        self,
        t_ns: int,
        prop: np.ndarray,
        has_op: bool,
        n_h: int,
        human_speed_m_s: float,
        mode: int,
        hold: int,
        out_cmd: np.ndarray,
    ) -> SafetyReport:
        """The projection of proposal `prop` (kernel, ``mode`` 1 = brake / hold), then the output
        guard on `out_cmd`; the report says the latched fault, else the hold reason. RT-safe."""
        rep = self.report
        kn.filter_kernel(
            (self._lim, self._sp, self._ws),
            self._model_arrays,
            self._cs,
            (self._q, self._dq, prop, self._op, has_op, self._human, n_h, human_speed_m_s, mode),
            self._work,  # the preallocated work arrays (kn.alloc_work)
            out_cmd,
            rep._rep,
        )
        kf = int(rep._rep[kn.R_FAULT])
        if kf:
            self._latch(kf)
        self._guard_output(t_ns, out_cmd, rep)
        if self._latched:
            rep._rep[kn.R_FAULT] = self._latched_code
        elif hold:
            rep._rep[kn.R_FAULT] = hold
        rep._latched = self._latched
        rep._valid = True
        return rep

    def _take_requests(self) -> int:
        """Apply what was asked between cycles (a config update, reset, re-synchronisation, an
        external fault); the external fault's code, else 0. Each request is read and cleared
        under the lock its writer takes (none is lost to a thread switch). RT-safe."""
        if not self._req.any():
            return 0  # nothing asked (the usual cycle): no lock; a request set now waits a step
        # (an event taken into the latch in force advances latch_gen: a reset checked before is void)
        pend, reset, resync, event, cond = self._req.take(self._latched)
        if pend is not None:
            self._lim, self._sp, self._ws, cfg = pend
            self.cfg = cfg
            self._apply_timing(cfg)
        if reset:
            cond = 0  # a condition flagged before the reset is re-evaluated from now on
            if event == 0:
                self._latched = False
                self._latched_code = 0
                resync = True
                self.resets_applied += 1
                self.reset_dropped_by = 0
            else:
                self.reset_dropped_by = event  # an event came before it: still latched
        if resync:
            self._resync = True
            self._ramping = False
            self._had_valid = False
            self._human_seen = False
            self._last_t_ns = -1
        return event or cond

    def _copy_inputs(
        self,
        q: np.ndarray,
        dq: np.ndarray,
        q_proposed: np.ndarray | None,
        operator_cmd: np.ndarray | None,
        human_points: np.ndarray | None,
    ) -> int:
        """Copy the inputs into the owned, typed buffers; the number of human points (0: none),
        -1 when an input has the wrong size. RT-safe (no allocation)."""
        try:
            np.copyto(self._q, q)
            np.copyto(self._dq, dq)
            if q_proposed is not None:
                np.copyto(self._prop, q_proposed)
            if operator_cmd is not None:
                np.copyto(self._op, operator_cmd)
        except (ValueError, TypeError):
            return -1
        if human_points is None:
            return 0
        hp = human_points
        if hp.ndim == 1 and hp.shape[0] == 3:
            self._human[0, 0] = hp[0]
            self._human[0, 1] = hp[1]
            self._human[0, 2] = hp[2]
            return 1
        if hp.ndim == 2 and hp.shape[1] == 3 and hp.shape[0] <= self._max_h:
            n_h = hp.shape[0]
            for i in range(n_h):
                self._human[i, 0] = hp[i, 0]
                self._human[i, 1] = hp[i, 1]
                self._human[i, 2] = hp[i, 2]
            return int(n_h)
        return -1

    def _time_fault(self, t_ns: int, st_ns: int, code: int) -> int:
        """`code`, else the timing fault of this cycle at `t_ns` for a state stamped `st_ns` [ns]:
        a clock jump (backwards, or a gap > max_step_gap_s) or a stale state. RT-safe."""
        last = self._last_t_ns
        self._last_t_ns = t_ns
        if code:
            return code
        if last >= 0 and (t_ns < last or t_ns - last > self._max_gap_ns):
            return FaultCode.CLOCK_JUMP
        if t_ns - st_ns > self._state_timeout_ns:
            return FaultCode.STALE_STATE
        if st_ns - t_ns > self._max_gap_ns:
            return FaultCode.CLOCK_JUMP
        return 0

    def _start_stream(self, size_ok: bool, out_cmd: np.ndarray, rep: SafetyReport) -> bool:
        """First cycle: the command stream starts at rest at the measured state (clipped into the
        position range); False (an invalid report, zero command) while no valid state has come."""
        ok = size_ok
        for v in self._q:
            if not math.isfinite(v):
                ok = False
        if not ok:
            out_cmd.fill(0.0)
            rep._rep.fill(0.0)
            rep._rep[kn.R_FAULT] = self._latched_code if self._latched else FaultCode.NO_STATE
            rep._rep[kn.R_STOPPING] = 1.0
            rep._latched = self._latched
            rep._valid = False
            return False
        np.clip(self._q, self._lim[kn.L_QMIN], self._lim[kn.L_QMAX], out=self._cs[0])
        self._cs[1].fill(0.0)
        self._cs[2].fill(0.0)
        self._initialized = True
        self._resync = False
        self._ramping = False
        if self.guard.history == 0:
            # the stream starts at rest at the measured state: the first command is checked for
            # velocity and acceleration too, not only for position
            self.guard.seed(self._cs[0], self._cs[1], self._cs[2])
        return True
