"""OutputGuard: the last-line check of every command that leaves the safety filter (no ROS, no QP).

The filter's projection (:mod:`.kernel`) is meant to keep the command stream within the limits;
the guard checks that it did, from the stream alone, independently of how the command was made
(projection, re-synchronisation, reset, ramp, stop). For each outgoing command ``c_k`` it compares
``c_k`` with the previous command SENT ``c_{k-1}`` (and the two before, for acceleration and jerk):

- position: ``q_min <= c_k <= q_max`` (a joint already outside a bound, e.g. after a live
  tightening of the limits, may stay outside while it brakes; it may not leave the range anew);
- velocity: ``|c_k - c_{k-1}| <= v_lim * dt_v`` with ``dt_v`` the REAL elapsed time since the
  previous command was sent, floored at one robot period (the robot consumes at most one target
  per period, so two commands closer than a period are not faster motion) and capped at two
  periods (a command never moves more than two periods of v_max, however late it is); with
  ``strict_velocity`` (velocity and trajectory output modes: the controller receives the increment
  divided by one period as a velocity) ``dt_v`` is always one period, so no velocity sent exceeds
  ``v_lim``;
  ``v_lim = max(v_max, |v_{k-1}|)`` so a joint faster than a just-tightened limit may brake down;
- acceleration ``|(v_k - v_{k-1}) / dt| <= a_max`` and, when ``enforce_jerk`` (and the filter did
  not report the jerk tier relaxed this cycle), jerk ``|(a_k - a_{k-1}) / dt| <= j_max``: second
  and third differences per command at the robot period ``dt`` (``v_k = (c_k - c_{k-1}) / dt``),
  as the robot's own audit computes them over consecutive sequence numbers. Real-time jitter does
  not enter these: a late command is a deadline miss (latched elsewhere), not an acceleration.

When the previous command was sent longer than ``max_step_gap_s`` ago the robot has been holding
it: the stream restarts from rest (velocity and acceleration history cleared), and the filter
continues its command trajectory from rest too (see :meth:`OutputGuard.held`).

On a violation the guard replaces the command by the braking command computed from the previous
command sent (synchronised deceleration at a_max, within the position braking bounds, see
:func:`guard_brake`), and the filter latches ``FaultCode.OUTPUT_GUARD``. Limits tightened while
running take effect in the guard once the command complies (velocity, position) or at once
(acceleration, jerk), so a legitimate braking from above a new limit is not flagged.

RT-safety: :meth:`OutputGuard.check` and :meth:`OutputGuard.brake` are allocation-free (numba).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from rt_safe_rl.core.safety.formulas import viability_upper_vel
from rt_safe_rl.core.safety.kernel import L_AMAX, L_JMAX, L_QMAX, L_QMIN, L_VMAX, sync_brake_velocity

G_OK, G_NONFINITE, G_POSITION, G_VELOCITY, G_ACCELERATION, G_JERK = range(6)
GUARD_CHECKS: tuple[str, ...] = ('ok', 'non-finite', 'position', 'velocity', 'acceleration', 'jerk')
"""Name of each guard result code (index = code)."""
REL_TOL = 1e-6
"""Relative tolerance on each limit."""
VEL_TOL_RAD_S = 1e-8
"""Absolute tolerance in command-velocity space [rad/s] (QP residual 1e-9 + float rounding),
propagated to acceleration (2 tol / dt) and jerk (4 tol / dt^2)."""
# info slots written by guard_check: joint index, measured value, allowed value
I_JOINT, I_VALUE, I_LIMIT = range(3)


@nb.njit(cache=True, nogil=True)
def guard_adopt_limits(lim: np.ndarray, glim: np.ndarray, prev: np.ndarray, hist: int) -> None:
    """Take the filter's limits `lim` into the guard's `glim`: looser values and acceleration / jerk
    at once, a tighter velocity or position bound once the last command sent complies. RT-safe."""
    n = lim.shape[1]
    for j in range(n):
        glim[L_AMAX, j] = lim[L_AMAX, j]
        glim[L_JMAX, j] = lim[L_JMAX, j]
        v_new = lim[L_VMAX, j]
        if v_new >= glim[L_VMAX, j] or hist < 2 or abs(prev[1, j]) <= v_new:
            glim[L_VMAX, j] = v_new
        lo = lim[L_QMIN, j]
        if lo <= glim[L_QMIN, j] or hist < 1 or prev[0, j] >= lo:
            glim[L_QMIN, j] = lo
        hi = lim[L_QMAX, j]
        if hi >= glim[L_QMAX, j] or hist < 1 or prev[0, j] <= hi:
            glim[L_QMAX, j] = hi


@nb.njit(cache=True, nogil=True)
def guard_check(
    glim: np.ndarray,
    prev: np.ndarray,
    hist: int,
    cmd: np.ndarray,
    dt: float,
    dt_v: float,
    jerk_on: bool,
    info: np.ndarray,
) -> int:
    """Check command `cmd` (n,) [rad] against the stream history `prev` (3, n: last command sent
    [rad], its per-period velocity [rad/s] and acceleration [rad/s^2]; `hist` of them known, 0..3)
    and the limits `glim` (kernel ``lim`` layout). `dt` the robot period [s], `dt_v` the real
    elapsed time for the velocity check [s]. Returns a ``G_*`` code (first violation; `info`
    = joint, value, allowed). RT-safe."""
    n = cmd.shape[0]
    tv = VEL_TOL_RAD_S
    for j in range(n):
        c = cmd[j]
        if not math.isfinite(c):
            info[I_JOINT] = j
            info[I_VALUE] = c
            info[I_LIMIT] = 0.0
            return G_NONFINITE
        lo = glim[L_QMIN, j]
        hi = glim[L_QMAX, j]
        tq = tv * dt
        if (c < lo - tq and (hist == 0 or prev[0, j] >= lo - tq)) or (
            c > hi + tq and (hist == 0 or prev[0, j] <= hi + tq)
        ):
            info[I_JOINT] = j
            info[I_VALUE] = c
            info[I_LIMIT] = lo if c < lo else hi
            return G_POSITION
        if hist < 1:
            continue
        dq = c - prev[0, j]
        v_lim = glim[L_VMAX, j]
        if hist >= 2 and abs(prev[1, j]) > v_lim:
            v_lim = abs(prev[1, j])
        allowed = v_lim * (1.0 + REL_TOL) * dt_v + tv * dt
        if abs(dq) > allowed:
            info[I_JOINT] = j
            info[I_VALUE] = abs(dq) / dt_v
            info[I_LIMIT] = v_lim
            return G_VELOCITY
        if hist < 2:
            continue
        v = dq / dt
        a = (v - prev[1, j]) / dt
        a_m = glim[L_AMAX, j]
        if abs(a) > a_m * (1.0 + REL_TOL) + 2.0 * tv / dt:
            info[I_JOINT] = j
            info[I_VALUE] = abs(a)
            info[I_LIMIT] = a_m
            return G_ACCELERATION
        if hist < 3 or not jerk_on:
            continue
        jr = (a - prev[2, j]) / dt
        j_m = glim[L_JMAX, j]
        if abs(jr) > j_m * (1.0 + REL_TOL) + 4.0 * tv / (dt * dt):
            info[I_JOINT] = j
            info[I_VALUE] = abs(jr)
            info[I_LIMIT] = j_m
            return G_JERK
    return G_OK


@nb.njit(cache=True, nogil=True)
def guard_brake(glim: np.ndarray, prev: np.ndarray, hist: int, dt: float, out: np.ndarray) -> None:
    """The braking command from the last command sent: synchronised deceleration (every joint
    reaches zero together, at most a_max each), made harder per joint where the position braking
    bound needs it (never beyond a_max). Without a previous command: `out` clipped into the
    position limits (non-finite -> the lower limit). RT-safe; writes `out` (n,) [rad]."""
    n = out.shape[0]
    if hist < 1:
        for j in range(n):
            c = out[j]
            if not math.isfinite(c):
                c = glim[L_QMIN, j]
            out[j] = min(max(c, glim[L_QMIN, j]), glim[L_QMAX, j])
        return
    for j in range(n):
        out[j] = prev[1, j] if hist >= 2 else 0.0
    sync_brake_velocity(out, glim[L_AMAX], dt, out)  # in place: reads every v before writing
    for j in range(n):
        v0 = prev[1, j] if hist >= 2 else 0.0
        a_m = glim[L_AMAX, j]
        up = viability_upper_vel(glim[L_QMAX, j] - prev[0, j], a_m, dt)
        dn = -viability_upper_vel(prev[0, j] - glim[L_QMIN, j], a_m, dt)
        v = min(max(out[j], dn), up)
        v = min(max(v, v0 - a_m * dt), v0 + a_m * dt)
        out[j] = prev[0, j] + v * dt


@nb.njit(cache=True, nogil=True)
def ramp_proposal(cs: np.ndarray, goal: np.ndarray, lim: np.ndarray, dt: float, out: np.ndarray) -> float:
    """Next position target of a re-synchronisation ramp from the command state `cs` (3, n) to
    `goal` (n,) [rad]: per joint the fastest velocity that can still stop at the goal at a_max
    (and <= v_max), so the filter's projection (acceleration, jerk, SSM, workspace) turns it into
    a limit-respecting approach without a jump. Writes `out` (n,) [rad]; returns max |goal - q|
    [rad]. RT-safe."""
    n = goal.shape[0]
    err = 0.0
    for j in range(n):
        e = goal[j] - cs[0, j]
        if abs(e) > err:
            err = abs(e)
        v = min(lim[L_VMAX, j], viability_upper_vel(abs(e), lim[L_AMAX, j], dt))
        out[j] = cs[0, j] + (v if e >= 0.0 else -v) * dt
    return err


@nb.njit(cache=True, nogil=True)
def guard_record(prev: np.ndarray, hist: int, cmd: np.ndarray, dt: float) -> None:
    """Shift `cmd` (n,) [rad] into the stream history `prev` (3, n): position, velocity by
    difference over `dt` [s] (0 without a previous position), acceleration likewise. RT-safe."""
    for j in range(cmd.shape[0]):
        v = (cmd[j] - prev[0, j]) / dt if hist >= 1 else 0.0
        prev[2, j] = (v - prev[1, j]) / dt if hist >= 2 else 0.0
        prev[1, j] = v
        prev[0, j] = cmd[j]


class OutputGuard:
    """Stream history + limits of the last-line output check (see the module docstring).

    Args:
        lim: the filter's limit array (kernel ``lim`` layout, (8, n)); copied.
        dt_s: robot period [s]. max_gap_s: a longer pause means the robot has been holding.

    Counters (non-RT readers): ``violations`` (commands replaced by the brake), ``last_check``
    (``GUARD_CHECKS`` name of the last violation), :meth:`describe`.
    """

    def __init__(self, lim: np.ndarray, dt_s: float, max_gap_s: float) -> None:
        n = lim.shape[1]
        self.dt_s = float(dt_s)
        self.max_gap_ns = int(max_gap_s * 1e9)
        self._glim = lim.copy()
        self._prev = np.zeros((3, n))
        self._hist = 0
        self._t_prev_ns = -1
        self._info = np.zeros(3)
        self._code = 0
        self.violations = 0
        self.strict_velocity = False
        """True: the velocity check uses one robot period, never the real elapsed time."""

    @property
    def history(self) -> int:
        """How many of (position, velocity, acceleration) of the stream are known (0..3)."""
        return self._hist

    @property
    def last_sent(self) -> np.ndarray:
        """Read-only view (3, n): last command sent [rad], its velocity [rad/s], acceleration [rad/s^2]."""
        v = self._prev.view()
        v.flags.writeable = False
        return v

    def held(self, t_ns: int) -> bool:
        """True when the last command was sent more than ``max_gap_s`` before `t_ns` (the robot has
        been holding it): the stream restarts from rest, velocity and acceleration 0 -- known, so
        the next commands are checked against them (no step from rest to speed). RT-safe."""
        if self._hist >= 1 and self._t_prev_ns >= 0 and t_ns - self._t_prev_ns > self.max_gap_ns:
            self._prev[1].fill(0.0)
            self._prev[2].fill(0.0)
            self._hist = 3
            return True
        return False

    def check(self, t_ns: int, lim: np.ndarray, cmd: np.ndarray, jerk_on: bool) -> int:
        """Check `cmd` (n,) [rad], about to be sent at `t_ns` [ns], against the stream; returns a
        ``G_*`` code (0 = ok). Does not record it (see :meth:`record`). RT-safe."""
        guard_adopt_limits(lim, self._glim, self._prev, self._hist)
        dt = self.dt_s
        dt_v = dt
        if self._t_prev_ns >= 0 and not self.strict_velocity:
            el = (t_ns - self._t_prev_ns) * 1e-9
            dt_v = min(max(el, dt), 2.0 * dt)
        code = guard_check(self._glim, self._prev, self._hist, cmd, dt, dt_v, jerk_on, self._info)
        if code:
            self._code = code
            self.violations += 1
        return code

    def brake(self, out: np.ndarray) -> None:
        """Write the braking command from the last command sent into `out` (n,) [rad]. RT-safe."""
        guard_brake(self._glim, self._prev, self._hist, self.dt_s, out)

    def record(self, t_ns: int, cmd: np.ndarray) -> None:
        """`cmd` (n,) [rad] was sent at `t_ns` [ns]: shift it into the stream history. RT-safe."""
        h = self._hist
        guard_record(self._prev, h, cmd, self.dt_s)
        self._hist = min(h + 1, 3)
        self._t_prev_ns = t_ns

    def seed(self, q: np.ndarray, v: np.ndarray, a: np.ndarray, t_ns: int = -1) -> None:
        """Declare the stream state (tests, replay; :meth:`SafetyFilter.set_command_state`)."""
        self._prev[0] = q
        self._prev[1] = v
        self._prev[2] = a
        self._hist = 3
        self._t_prev_ns = t_ns

    def clear(self) -> None:
        """Forget the stream (a fresh filter / replay from scratch)."""
        self._hist = 0
        self._t_prev_ns = -1

    def describe(self) -> str:
        """One line about the last violation (allocates; non-RT)."""
        if not self._code:
            return 'no violation'
        name = GUARD_CHECKS[self._code]
        j = int(self._info[I_JOINT])
        value, limit = self._info[I_VALUE], self._info[I_LIMIT]
        if self._code == G_POSITION:
            return f'position of joint {j}: {value:.6g} rad beyond the limit {limit:.6g}'
        units = {G_VELOCITY: 'rad/s', G_ACCELERATION: 'rad/s^2', G_JERK: 'rad/s^3'}.get(self._code, '')
        return f'{name} of joint {j}: {value:.6g} {units} > allowed {limit:.6g}'
