"""Simulated position-controlled arm: an internal PD controller with effort, acceleration,
velocity and position limits, integrated at the control rate (1 kHz).

This is the model the default policy is trained on (``tools/train_default_policy.py`` has the
same equations in torch; ``test_sim_arm.py`` checks they agree) and the robot the demo drives.
Pure numpy, no ROS. :meth:`ArmSim.step` and :meth:`CommandAudit.check` are RT-safe (in-place
numpy on preallocated arrays, no allocation of Python containers).

Per joint, per step of ``dt_s`` (semi-implicit Euler)::

    tau   = clip(kp * (q_cmd - q) - kd * dq, -effort_max, effort_max)      [N m]
    ddq   = clip(tau / inertia, -a_max, a_max)                             [rad/s^2]
    dq'   = clip(dq + ddq * dt, -v_max, v_max)                             [rad/s]
    q'    = q + dq' * dt, clamped to [q_min, q_max] (velocity zeroed at the stop)
    effort = inertia * (dq' - dq) / dt                                     [N m, reported]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba as nb
import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.sim.config import SimRobotConfig

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ArmLimits:
    """Per-joint limits and PD gains of the simulated arm (all arrays of shape (n,), SI units)."""

    joint_names: tuple[str, ...]
    q_min: F64  # rad
    q_max: F64  # rad
    v_max: F64  # rad/s
    a_max: F64  # rad/s^2
    effort_max: F64  # N m
    kp: F64  # N m / rad
    kd: F64  # N m s / rad
    inertia: F64  # kg m^2

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        for name in ('q_min', 'q_max', 'v_max', 'a_max', 'effort_max', 'kp', 'kd', 'inertia'):
            arr = getattr(self, name)
            if np.shape(arr) != (n,):
                raise ConfigError(f'arm limits: {name} has shape {np.shape(arr)}, expected ({n},)')
            if not np.all(np.isfinite(arr)):
                raise ConfigError(f'arm limits: {name} has non-finite values')
        if np.any(self.q_min >= self.q_max):
            raise ConfigError('arm limits: q_min must be < q_max for every joint')
        for name in ('v_max', 'a_max', 'effort_max', 'inertia'):
            if np.any(getattr(self, name) <= 0.0):
                raise ConfigError(f'arm limits: {name} must be > 0')

    @property
    def n_joints(self) -> int:
        """Number of joints."""
        return len(self.joint_names)

    @classmethod
    def from_model(cls, model: Any, cfg: SimRobotConfig) -> ArmLimits:
        """Build from a :class:`rt_safe_rl.core.robot_model.RobotModel` and the sim config.

        Raises:
            ConfigError: ``inertia_kg_m2`` has the wrong length.
        """
        n = int(model.n_joints)
        if cfg.inertia_kg_m2 and len(cfg.inertia_kg_m2) != n:
            raise ConfigError(f'sim.robot.inertia_kg_m2: expected {n} values, got {len(cfg.inertia_kg_m2)}')
        inertia = np.array(cfg.inertia_kg_m2 or [1.0] * n, dtype=np.float64)

        def arr(x: Any) -> F64:
            return np.array(x, dtype=np.float64).reshape(n)

        return cls(
            joint_names=tuple(model.joint_names),
            q_min=arr(model.q_min),
            q_max=arr(model.q_max),
            v_max=arr(model.v_max),
            a_max=arr(model.a_max),
            effort_max=arr(model.effort_max),
            kp=arr(model.kp),
            kd=arr(model.kd),
            inertia=inertia,
        )

    def initial_q(self, cfg: SimRobotConfig) -> F64:
        """Start configuration from the config (middle of the range when empty).

        Raises:
            ConfigError: wrong length or outside the position limits.
        """
        if not cfg.initial_q_rad:
            return 0.5 * (self.q_min + self.q_max)
        q0 = np.array(cfg.initial_q_rad, dtype=np.float64)
        if q0.shape != (self.n_joints,):
            raise ConfigError(f'sim.robot.initial_q_rad: expected {self.n_joints} values, got {q0.size}')
        if np.any(q0 < self.q_min) or np.any(q0 > self.q_max):
            raise ConfigError('sim.robot.initial_q_rad: outside the position limits')
        return q0


@nb.njit(cache=True, nogil=True)
def _arm_step(q: F64, dq: F64, q_cmd: F64, effort: F64, p: F64, dt: float) -> float:
    """One semi-implicit Euler step of every joint (the module docstring's equations), in place.

    `p` rows: kp, kd, effort_max, inertia, a_max, v_max, q_min, q_max. Returns max |dq| / v_max.
    RT-safe (compiled, no allocation)."""
    worst = 0.0
    for j in range(q.shape[0]):
        dq0 = dq[j]
        tau = p[0, j] * (q_cmd[j] - q[j]) - p[1, j] * dq0
        em = p[2, j]
        tau = min(max(tau, -em), em)
        am = p[4, j]
        ddq = min(max(tau / p[3, j], -am), am)
        vm = p[5, j]
        v = min(max(dq0 + ddq * dt, -vm), vm)
        x = q[j] + v * dt
        if x <= p[6, j]:
            x = p[6, j]
            if v < 0.0:
                v = 0.0
        if x >= p[7, j]:
            x = p[7, j]
            if v > 0.0:
                v = 0.0
        q[j] = x
        dq[j] = v
        effort[j] = p[3, j] * (v - dq0) / dt
        r = abs(v) / vm
        if r > worst:
            worst = r
    return worst


@nb.njit(cache=True, nogil=True)
def _audit_diff(cmd: F64, prev: F64, prev_v: F64, v: F64, v_max: F64, a_max: F64, dt: float, acc: bool):
    """Velocity of the command stream into `v`; returns (max |v| / v_max, joint, max |dv| / (dt a_max),
    joint) (acceleration ratio -1 when `acc` is False). RT-safe."""
    vr = 0.0
    vj = 0
    ar = -1.0
    aj = 0
    for j in range(cmd.shape[0]):
        v[j] = (cmd[j] - prev[j]) / dt
        r = abs(v[j]) / v_max[j]
        if r > vr:
            vr = r
            vj = j
        if acc:
            a = abs(v[j] - prev_v[j]) / (dt * a_max[j])
            if a > ar:
                ar = a
                aj = j
    return vr, vj, ar, aj


@nb.njit(cache=True, nogil=True)
def _audit_position(cmd: F64, lo: F64, hi: F64) -> int:
    """0: every joint within [lo, hi]; 1: some outside; 2: a non-finite value. RT-safe."""
    out = 0
    for j in range(cmd.shape[0]):
        x = cmd[j]
        if not math.isfinite(x):
            return 2
        if x < lo[j] or x > hi[j]:
            out = 1
    return out


def warm_up_kernels(n_joints: int) -> None:
    """Run each numba kernel of this module once on scratch arrays (not RT-safe: at configure).

    The first call of a ``cache=True`` kernel loads it from numba's cache, ~0.3 s here: done in
    the control thread's first cycle it stalled the loop long enough to latch HUMAN_STALE."""
    z = np.zeros(n_joints)
    one = np.ones(n_joints)
    p = np.ones((8, n_joints))
    _arm_step(z.copy(), z.copy(), z.copy(), z.copy(), p, 1e-3)
    _audit_diff(z, z, z, z.copy(), one, one, 1e-3, True)
    _audit_position(z, z - 1.0, one)


class ArmSim:
    """State and integration of the simulated arm. Preallocates everything at construction."""

    def __init__(self, limits: ArmLimits, dt_s: float, q0: F64 | None = None) -> None:
        if dt_s <= 0.0:
            raise ValueError(f'dt_s must be > 0, got {dt_s}')
        self.limits = limits
        self.dt_s = float(dt_s)
        n = limits.n_joints
        self.q = np.zeros(n)
        self.dq = np.zeros(n)
        self.effort = np.zeros(n)
        self.q_cmd = np.zeros(n)
        self._tmp = np.zeros(n)
        self._dq_prev = np.zeros(n)
        self._b1 = np.zeros(n, dtype=bool)
        self._b2 = np.zeros(n, dtype=bool)
        self._p = np.ascontiguousarray(
            np.stack(
                [
                    limits.kp,
                    limits.kd,
                    limits.effort_max,
                    limits.inertia,
                    limits.a_max,
                    limits.v_max,
                    limits.q_min,
                    limits.q_max,
                ]
            ).astype(np.float64)
        )
        #: max |dq| / v_max after the last :meth:`step`
        self.speed_ratio = 0.0
        self.reset(q0 if q0 is not None else 0.5 * (limits.q_min + limits.q_max))
        warm_up_kernels(n)

    def reset(self, q0: F64) -> None:
        """Put the arm at rest at ``q0`` (rad), commanding to hold it."""
        np.copyto(self.q, np.clip(q0, self.limits.q_min, self.limits.q_max))
        self.dq.fill(0.0)
        self.effort.fill(0.0)
        np.copyto(self.q_cmd, self.q)

    def hold(self) -> None:
        """Command the current position (the robot's own reaction to a silent controller)."""
        np.copyto(self.q_cmd, self.q)

    def set_command(self, q_cmd: F64) -> None:
        """Set the position target (rad) used from the next :meth:`step` (RT-safe)."""
        np.copyto(self.q_cmd, q_cmd)

    def step(self) -> None:
        """Advance one period ``dt_s`` towards ``q_cmd`` (RT-safe, in place; compiled kernel)."""
        self.speed_ratio = _arm_step(self.q, self.dq, self.q_cmd, self.effort, self._p, self.dt_s)

    def step_numpy(self) -> None:
        """The same step written with numpy (reference for the kernel's tests; allocates nothing)."""
        lim = self.limits
        t = self._tmp
        dt = self.dt_s
        np.copyto(self._dq_prev, self.dq)
        # tau = clip(kp (q_cmd - q) - kd dq, +-effort_max)
        np.subtract(self.q_cmd, self.q, out=t)
        t *= lim.kp
        np.multiply(lim.kd, self.dq, out=self.effort)
        t -= self.effort
        np.clip(t, -lim.effort_max, lim.effort_max, out=t)
        # ddq = clip(tau / I, +-a_max)
        t /= lim.inertia
        np.clip(t, -lim.a_max, lim.a_max, out=t)
        # dq = clip(dq + ddq dt, +-v_max); q += dq dt
        t *= dt
        self.dq += t
        np.clip(self.dq, -lim.v_max, lim.v_max, out=self.dq)
        np.multiply(self.dq, dt, out=t)
        self.q += t
        # hard stops: clamp and zero the velocity into the stop
        np.clip(self.q, lim.q_min, lim.q_max, out=self.q)
        b1, b2 = self._b1, self._b2
        np.less_equal(self.q, lim.q_min, out=b1)
        np.less(self.dq, 0.0, out=b2)
        np.logical_and(b1, b2, out=b1)
        np.copyto(self.dq, 0.0, where=b1)
        np.greater_equal(self.q, lim.q_max, out=b1)
        np.greater(self.dq, 0.0, out=b2)
        np.logical_and(b1, b2, out=b1)
        np.copyto(self.dq, 0.0, where=b1)
        # reported effort = I * actual acceleration
        np.subtract(self.dq, self._dq_prev, out=self.effort)
        self.effort *= lim.inertia / dt


class CommandAudit:
    """Checks every received position command against the arm's limits (the e2e test's oracle).

    A command violates the limits when its position is outside ``[q_min, q_max]``, or when the
    finite-difference velocity / acceleration of the command stream exceeds ``v_max`` / ``a_max``.
    ``dt_s`` must be the robot's real period (the sim robot passes ``control.period_ns``). The
    differences use the state sequence numbers the commands carry: a skipped seq counts as
    ``k * dt`` for the velocity (counted in ``seq_gaps``: a robot period without a command is a
    timing miss of the chain, not a limit violation), the acceleration is the second difference
    over three consecutive seqs only. A command with the same or an older seq than the previous
    one (``duplicates``: two commands for one robot period, or out of order) gets its position
    checked, and the next command is compared with the FIRST command of the previous seq, so a
    filter that advanced twice for one robot period shows up as a velocity / acceleration
    violation. ``tolerance`` is a relative slack (numerical rounding). RT-safe ``check``.
    """

    def __init__(self, limits: ArmLimits, dt_s: float, tolerance: float = 1e-6) -> None:
        self.limits = limits
        self.dt_s = float(dt_s)
        self.tolerance = float(tolerance)
        n = limits.n_joints
        self._prev = np.zeros(n)
        self._prev_v = np.zeros(n)
        self._v = np.zeros(n)
        self._tmp = np.zeros(n)
        span = limits.q_max - limits.q_min
        self._q_lo = limits.q_min - self.tolerance * span
        self._q_hi = limits.q_max + self.tolerance * span
        self._prev_seq = -1
        self._has_prev_v = False
        self.commands = 0
        self.seq_gaps = 0
        self.duplicates = 0
        self.position_violations = 0
        self.velocity_violations = 0
        self.acceleration_violations = 0
        self.nonfinite = 0
        self.max_velocity_ratio = 0.0  # max over commands of |v| / v_max
        self.max_acceleration_ratio = 0.0
        #: first violations as (kind, seq, previous seq, joint, ratio); appended only on a violation
        self.violation_log: list[tuple[str, int, int, int, float]] = []

    def reset_stream(self) -> None:
        """Forget the previous command (e.g. after a reset of the robot)."""
        self._prev_seq = -1
        self._has_prev_v = False

    def check(self, seq: int, q_cmd: F64) -> bool:
        """Audit one command computed from state ``seq``; return True when it respects the limits."""
        lim = self.limits
        self.commands += 1
        pos = _audit_position(q_cmd, self._q_lo, self._q_hi)
        if pos == 2:
            self.nonfinite += 1
            self.reset_stream()
            return False
        ok = True
        slack = 1.0 + self.tolerance
        if pos == 1:
            self.position_violations += 1
            self._log('position', seq, math.nan)
            ok = False
        steps = seq - self._prev_seq
        if self._prev_seq >= 0 and steps <= 0:
            self.duplicates += 1  # position checked above; no derivative, the first one stays
            return ok
        if self._prev_seq >= 0:
            if steps > 1:
                self.seq_gaps += 1
            dt = steps * self.dt_s
            acc = self._has_prev_v and steps == 1  # the previous difference was one seq
            ratio, vj, aratio, aj = _audit_diff(
                q_cmd, self._prev, self._prev_v, self._v, lim.v_max, lim.a_max, dt, acc
            )
            if ratio > self.max_velocity_ratio:
                self.max_velocity_ratio = ratio
            if ratio > slack:
                self.velocity_violations += 1
                self._log('velocity', seq, ratio, vj)
                ok = False
            if acc:
                if aratio > self.max_acceleration_ratio:
                    self.max_acceleration_ratio = aratio
                if aratio > slack:
                    self.acceleration_violations += 1
                    self._log('acceleration', seq, aratio, aj)
                    ok = False
            np.copyto(self._prev_v, self._v)
            self._has_prev_v = steps == 1
        np.copyto(self._prev, q_cmd)
        self._prev_seq = seq
        return ok

    def _log(self, kind: str, seq: int, ratio: float, joint: int = -1) -> None:
        if len(self.violation_log) < 20:
            j = int(np.argmax(self._tmp)) if joint < 0 else joint
            self.violation_log.append((kind, seq, self._prev_seq, j, round(ratio, 4)))

    @property
    def violations(self) -> int:
        """Total number of commands that broke a limit (position, velocity, acceleration, NaN)."""
        return (
            self.position_violations
            + self.velocity_violations
            + self.acceleration_violations
            + self.nonfinite
        )

    def summary(self) -> dict[str, Any]:
        """Counts and worst ratios as a plain dict (non-RT)."""
        return {
            'commands': self.commands,
            'position_violations': self.position_violations,
            'velocity_violations': self.velocity_violations,
            'acceleration_violations': self.acceleration_violations,
            'nonfinite': self.nonfinite,
            'seq_gaps': self.seq_gaps,
            'duplicates': self.duplicates,
            'max_velocity_ratio': round(self.max_velocity_ratio, 6),
            'max_acceleration_ratio': round(self.max_acceleration_ratio, 6),
            'first_violations': [list(v) for v in self.violation_log],
        }
