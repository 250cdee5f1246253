"""The per-state safety filter kernel (numba): one cycle for one robot state, allocation-free.

Decision variable: the next command velocity v' (per joint); the command trajectory is
integrated semi-implicitly, ``v' = v + a dt; q' = q + v' dt`` (the position form of libfranka's
rate limiting). The safe command is the Euclidean projection (in q, equivalently in v' since
q' = q + v' dt) of the (blended) target onto

* hard per-joint bounds: velocity ``|v'| <= v_max``; acceleration ``|v' - v| <= a_max dt``;
  braking-consistent position (viability) ``v' dt + v'^2/(2 a_max) <= q_max - q`` (and mirrored):
  braking at a_max from any state that satisfies them keeps satisfying them, so the set is
  invariant and the position limit is never crossed;
* soft per-joint bounds, kept whenever compatible with the hard ones (else relaxed and
  reported): effort through the PD model ``|kp (q' - q_meas) - kd dq_meas| <= effort_max``
  (higher priority; dropped for the cycle when incompatible, and not applied while braking),
  then jerk ``|a' - a| <= j_max dt`` with libfranka's shaping ``a' <= (j/a)(v_up - v)`` near the
  velocity limits and a jerk-consistent braking bound near the position limits
  (``v' dt + S_jerk(v', a') <= q_max - q``, S_jerk = jerk-limited stopping distance, so the hard
  viability bound is approached without a jerk violation); when incompatible, the hard-feasible
  value nearest to it is taken;
* coupled half-spaces ``G v' <= h``: speed and separation monitoring (speed of each monitored
  point toward each human point <= ISO/TS 15066 v_max(d), or the PFL contact speed) and the
  Cartesian workspace box (braking-consistent distance to each face), both linear in v' through
  the point Jacobians at the current command configuration.

The projection is exact (:mod:`.qp`); a proposal that already satisfies every constraint is
returned bit-identical. Braking (controlled stop, SSM stop, faults, and an empty coupled set)
is synchronised (:func:`sync_brake_velocity`): every joint decelerates in proportion to its
velocity, within its limits, so all stop together after the slowest joint's ``|v| / a_max`` and
the points keep their path (no toward-the-person swing while stopping); then hold.

Faults detected here (per state, so the batch API sees them too): non-finite inputs, measured
state outside the limits (+ tolerance), a non-viable command state. Time-based faults (stale
data, clock jumps, missing policy output, deadline misses) are decided by :class:`SafetyFilter`
and passed in as ``mode = 1`` (stop).

This module is over the house limit of 600 lines on purpose: :func:`filter_kernel` and the njit
helpers it calls are compiled together by numba into one allocation-free cycle, and the constraint
set reads best in one place. The GPU batch kernel (:mod:`rt_safe_rl.gpu.kernels`) runs the same
helpers (:func:`kinematics`, :func:`validate_inputs` ... :func:`write_report`), compiled as CUDA
device functions from this source, so they keep to what numba.cuda compiles: 1-D rows of one state
and preallocated outputs, loops, scalar ``math``, :func:`.formulas.max2` / ``min2`` for the builtins.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba as nb
import numpy as np

from rt_safe_rl.core.robot_model import fk_frames_kernel, jacobian_kernel, points_kernel
from rt_safe_rl.core.safety.formulas import (
    accel_shaping_bounds,
    blend_alpha_from_distance,
    jerk_viability_upper_vel,
    max2,
    min2,
    ssm_scale,
    ssm_v_max,
    viability_upper_vel,
)
from rt_safe_rl.core.safety.qp import (
    QN_X,
    QP_OK,
    QW_N,
    QpWork,
    alloc_workspace,
    project_box_halfspaces,
)

# rows of the per-joint limit array `lim` (8, n)
L_QMIN, L_QMAX, L_VMAX, L_AMAX, L_JMAX, L_EFF, L_KP, L_KD = range(8)
N_LIM_ROWS = 8

# slots of the scalar parameter array `sp`
(
    SP_DT,
    SP_SSM_ON,
    SP_SSM_A,
    SP_SSM_TR,
    SP_SSM_CTOT,
    SP_SSM_VH,
    SP_SSM_VH_NEAR,
    SP_SSM_NEAR_D,
    SP_PFL_ON,
    SP_PFL_V,
    SP_WS_ON,
    SP_WS_A,
    SP_WS_MIN_X,
    SP_WS_MIN_Y,
    SP_WS_MIN_Z,
    SP_WS_MAX_X,
    SP_WS_MAX_Y,
    SP_WS_MAX_Z,
    SP_BLEND_MODE,
    SP_ALPHA_FIXED,
    SP_BLEND_DMIN,
    SP_BLEND_DMAX,
    SP_JERK_ON,
    SP_EFFORT_ON,
    SP_POS_TOL,
    SP_VEL_TOL,
    SP_QP_TOL,
    SP_QP_MAXIT,
) = range(28)
PFL_SLOTS = 32
"""sp[SP_PFL_BASE + c]: PFL contact speed for human point c (its body region); later points use
sp[SP_PFL_V]."""
SP_PFL_BASE = 28
N_SP = SP_PFL_BASE + PFL_SLOTS

# slots of the report array `rep`
(
    R_FAULT,
    R_MASK,
    R_INTERVENTION,
    R_HUMAN_DIST,
    R_SSM_SCALE,
    R_ALPHA,
    R_STOPPING,
    R_POS_MARGIN,
    R_VEL_MARGIN,
    R_SSM_MARGIN,
    R_QP_ITERS,
    R_QP_STATUS,
    R_N_ROWS,
    R_SAFETY_INTERVENTION,
) = range(14)
N_REP = 14

# active-constraint bits (report.active_mask)
A_POSITION = 1
A_VELOCITY = 2
A_ACCELERATION = 4
A_JERK = 8
A_EFFORT = 16
A_WORKSPACE = 32
A_SSM = 64
A_SSM_STOP = 128
A_PFL = 256
A_JERK_RELAXED = 512
A_EFFORT_RELAXED = 1024
A_STOP = 2048
A_BLEND = 4096
A_QP_FALLBACK = 8192

# kernel fault codes (must match filter.FaultCode)
K_OK = 0
K_NONFINITE = 1
K_STATE_LIMITS = 7
K_NOT_VIABLE = 10

FALLBACK_BISECTIONS = 10
"""Bisection steps on the uniform slack of the coupled rows when the projection is empty."""

# the per-state work tuple `work` of :func:`alloc_work` (fields in this order)
W_FRAMES, W_PTS, W_JAC, W_VEC, W_BOUNDS, W_G, W_H, W_ROWKIND, W_QP = range(9)
# rows of work[W_VEC] (3, n) float64
VEC_VDES = 0
"""Desired command velocity [rad/s]: toward the blended target in one period, 0 when braking."""
VEC_TARGET = 1
"""Blended target position [rad] (policy, or policy and operator)."""
VEC_REF = 2
"""[rad/s] The clipped proposal of a retried solve; in the fallback the clipped braking velocity,
the fixed start point of the slack bisection."""
N_VEC = 3
# first index of work[W_BOUNDS] (2, 2, n) float64 [rad/s]; the second is 0 lower, 1 upper
B_TIERED = 0
"""The box the projection uses: hard, effort and jerk tiers (as far as they are compatible)."""
B_HARD = 1
"""Hard (+ effort) per-joint bounds, used when the jerk tier makes the coupled set empty."""

Work = tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, QpWork
]
"""The per-state work arrays of :func:`filter_kernel` (see :func:`alloc_work`)."""

Params = tuple[np.ndarray, np.ndarray, np.ndarray]
"""The parameter argument `params` of the kernels: (``lim`` (8, n), ``sp`` (N_SP,), ``ws_mask`` (M,))."""
Inputs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool, np.ndarray, int, float, int]
"""One state's inputs of :func:`filter_kernel`: (q_meas, dq_meas, q_pol, q_op, has_op, human, n_human,
v_h_meas, mode)."""
BatchInputs = tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray
]
""":data:`Inputs` of B states for :func:`batch_kernel` (each with a leading dimension B)."""
Cycle = tuple[int, int, float, int, tuple[bool, bool, bool, bool], tuple[float, float, float, bool]]
"""What :func:`cycle_rows` hands the rest of the cycle: (fault, mask bits, alpha, kept rows,
(identity, braking, measurement finite, effort on), (smallest distance, SSM scale, SSM margin,
SSM stop))."""

ModelArrays = tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
]  # fmt: skip
"""The robot-model argument `model` of the kernels (see :func:`model_arrays`)."""


def model_arrays(model: Any) -> ModelArrays:
    """The robot model's arrays as the one `model` argument of :func:`filter_kernel` /
    :func:`batch_kernel`, built once at configure time. In order (F compiled frames, M monitored
    points): per frame ``parent`` (F,) int (-1 = root), ``origin`` (F, 4, 4) fixed transform [m],
    ``jtype`` (F,) int, ``qidx`` (F,) int (joint index, -1 = none), ``mult``, ``offs`` (F,) mimic
    multiplier / offset [rad or m], ``axis`` (F, 3); per point ``pt_frame`` (M,) int, ``pt_offset``
    (M, 3) [m] in its frame, then ``ancestor`` (F, F) bool (frame f moves frame g), and
    ``pt_radius`` (M,) [m] (the point's sphere)."""
    m = model
    return (
        m.parent,
        m.origin,
        m.jtype,
        m.qidx,
        m.mult,
        m.offs,
        m.axis,
        m.pt_frame,
        m.pt_offset,
        m.ancestor,
        m.point_radius_m,
    )


@nb.njit(cache=True, nogil=True)
def alloc_work(n: int, n_frames: int, m_points: int, h_max: int) -> Work:
    """Preallocate every work array of :func:`filter_kernel` for n joints, F = `n_frames` frames,
    M = `m_points` monitored points and up to `h_max` human points: configure time (and once per
    chunk in :func:`batch_kernel`), never per cycle. The tuple ``work``, indexed by ``W_*``:

    * ``W_FRAMES`` (F, 4, 4) world transforms [m]; ``W_PTS`` (M, 3) point positions [m];
      ``W_JAC`` (M, 3, n) point Jacobians [m/rad], all at the command configuration;
    * ``W_VEC`` (3, n) float64, rows ``VEC_VDES`` [rad/s], ``VEC_TARGET`` [rad], ``VEC_REF``
      [rad/s];
    * ``W_BOUNDS`` (2, 2, n) float64 [rad/s]: ``[B_TIERED]`` and ``[B_HARD]``, each (lower, upper);
    * ``W_G`` (K, n), ``W_H`` (K,), ``W_ROWKIND`` (K,) int64: coupled rows ``G v' <= h`` [m/s]
      (kind 0 SSM / PFL, 1 workspace), K = M * h_max + 6 M;
    * ``W_QP``: the projection's workspace (:func:`.qp.alloc_workspace`).
    """
    k_max = max(1, m_points * h_max + 6 * m_points)
    return (
        np.zeros((n_frames, 4, 4)),
        np.zeros((m_points, 3)),
        np.zeros((m_points, 3, n)),
        np.zeros((N_VEC, n)),
        np.zeros((2, 2, n)),
        np.zeros((k_max, n)),
        np.zeros(k_max),
        np.zeros(k_max, dtype=np.int64),
        alloc_workspace(n, k_max),
    )


@nb.njit(inline='always', cache=True, nogil=True)
def kinematics(
    q: np.ndarray, model: ModelArrays, frames: np.ndarray, pts: np.ndarray, jac: np.ndarray
) -> None:
    """Frames (F, 4, 4), monitored points (M, 3) and their positional Jacobians (M, 3, n) at the
    configuration `q` (n,) into the work arrays; `model` as :func:`model_arrays`. Shared with the
    GPU kernel (compiled there as a CUDA device function). RT-safe."""
    parent, origin, jtype, qidx, mult, offs, axis, pt_frame, pt_offset, ancestor, _radius = model
    fk_frames_kernel(q, parent, origin, jtype, qidx, mult, offs, axis, frames)
    points_kernel(frames, pt_frame, pt_offset, pts)
    jacobian_kernel(frames, jtype, qidx, mult, axis, pt_frame, ancestor, pts, jac)


@nb.njit(cache=True, nogil=True)
def _finite_all(a: np.ndarray) -> bool:
    for v in a.ravel():
        if not math.isfinite(v):
            return False
    return True


@nb.njit(cache=True, nogil=True)
def sync_brake_velocity(v: np.ndarray, a_max: np.ndarray, dt: float, out: np.ndarray) -> None:
    """Next command velocity of a path-consistent (synchronised) stop: every joint decelerates in
    proportion to its velocity so that all reach zero together after ``T = max_j |v_j| / a_max_j``
    (the stopping time of the slowest joint at its acceleration limit; no joint exceeds its own
    limit). The joint-space direction of motion is kept, so the Cartesian velocity of every point
    shrinks along its path instead of bending toward a person the way independent per-joint
    braking can. RT-safe."""
    n = v.shape[0]
    t_stop = 0.0
    for j in range(n):
        t = abs(v[j]) / a_max[j]
        if t > t_stop:
            t_stop = t
    s = 1.0 - dt / t_stop if t_stop > dt else 0.0
    for j in range(n):
        out[j] = v[j] * s


@nb.njit(cache=True, nogil=True)
def _project_or_retry(
    vdes: np.ndarray,
    box: np.ndarray,
    g_mat: np.ndarray,
    hvec: np.ndarray,
    k_rows: int,
    sp: np.ndarray,
    vtmp: np.ndarray,
    qw: QpWork,
) -> tuple[int, int]:
    """Project `vdes` onto {box[0] <= x <= box[1], G x <= h} (solver limits of `sp`, workspace
    `qw`, result in ``qw[QW_N][QN_X]``); if the solver fails, once more from
    ``clip(vdes, box[0], box[1])`` (in `vtmp`). A far proposal (say 1e15 rad/s) gives box
    multipliers that large and the solve can fail numerically on a set that is not empty; the set's
    emptiness must not depend on how far away the proposal is (else re-filtering the output would
    find a set the first pass gave up on). The retry's result is the closest point to the clipped
    proposal. RT-safe."""
    max_iter = int(sp[SP_QP_MAXIT])
    tol = sp[SP_QP_TOL]
    st, it = project_box_halfspaces(vdes, box, g_mat, hvec, k_rows, max_iter, tol, qw)
    if st == QP_OK:
        return st, it
    for j in range(vdes.shape[0]):
        vtmp[j] = min(max(vdes[j], box[0, j]), box[1, j])
    st, it2 = project_box_halfspaces(vtmp, box, g_mat, hvec, k_rows, max_iter, tol, qw)
    return st, it + it2


# ---- the parts of one cycle shared with the GPU kernel (:mod:`rt_safe_rl.gpu.kernels` compiles
# them as CUDA device functions from this source): 1-D rows of one state, preallocated outputs;
# loops, scalar math and the formulas only (numba.cuda types neither builtin min / max nor
# allocation). inline='always': numba inlines them into filter_kernel (no call in the cycle).


@nb.njit(inline='always', cache=True, nogil=True)
def validate_inputs(
    lim: np.ndarray,
    sp: np.ndarray,
    q_meas: np.ndarray,
    dq_meas: np.ndarray,
    q_pol: np.ndarray,
    q_op: np.ndarray,
    has_op: bool,
    human: np.ndarray,
    n_human: int,
) -> tuple[int, bool, bool]:
    """Input validation (fail closed): (fault code, measurement finite, human points finite)."""
    n = lim.shape[1]
    fault = K_OK
    meas_ok = True
    pol_ok = True
    op_ok = True
    for j in range(n):
        if not (math.isfinite(q_meas[j]) and math.isfinite(dq_meas[j])):
            meas_ok = False
        if not math.isfinite(q_pol[j]):
            pol_ok = False
        if has_op and not math.isfinite(q_op[j]):
            op_ok = False
    if not (meas_ok and pol_ok and op_ok):
        fault = K_NONFINITE
    human_ok = True
    for c in range(n_human):
        for r in range(3):
            if not math.isfinite(human[c, r]):
                human_ok = False
    if not human_ok:
        fault = K_NONFINITE
    if meas_ok:
        ptol = sp[SP_POS_TOL]
        vtol = sp[SP_VEL_TOL]
        for j in range(n):
            if (
                q_meas[j] < lim[L_QMIN, j] - ptol
                or q_meas[j] > lim[L_QMAX, j] + ptol
                or abs(dq_meas[j]) > lim[L_VMAX, j] + vtol
            ):
                if fault == K_OK:
                    fault = K_STATE_LIMITS
    return fault, meas_ok, human_ok


@nb.njit(inline='always', cache=True, nogil=True)
def ssm_rows(
    sp: np.ndarray,
    pts: np.ndarray,
    jac: np.ndarray,
    pt_radius: np.ndarray,
    human: np.ndarray,
    n_human: int,
    v_h_meas: float,
    human_ok: bool,
    g_mat: np.ndarray,
    hvec: np.ndarray,
    rowkind: np.ndarray,
) -> tuple[int, float, float, bool]:
    """Separation distances and the SSM / PFL rows from row 0 (kind 0). Returns (rows, smallest
    distance [m], smallest SSM margin [m], SSM stop)."""
    n = jac.shape[2]
    m_pts = pt_radius.shape[0]
    k_rows = 0
    d_min = np.inf
    ssm_margin = np.inf
    ssm_stop = False
    pfl_on = sp[SP_PFL_ON] != 0.0
    if sp[SP_SSM_ON] != 0.0 and human_ok:
        for i in range(m_pts):
            for c in range(n_human):
                dx = human[c, 0] - pts[i, 0]
                dy = human[c, 1] - pts[i, 1]
                dz = human[c, 2] - pts[i, 2]
                dist = math.sqrt(dx * dx + dy * dy + dz * dz)
                d = dist - pt_radius[i]
                if d < d_min:
                    d_min = d
                if v_h_meas >= 0.0:
                    v_h = v_h_meas
                else:
                    v_h = sp[SP_SSM_VH_NEAR] if d <= sp[SP_SSM_NEAR_D] else sp[SP_SSM_VH]
                d0 = sp[SP_SSM_CTOT] + v_h * sp[SP_SSM_TR]
                if d - d0 < ssm_margin:
                    ssm_margin = d - d0
                vmax = ssm_v_max(d, v_h, sp[SP_SSM_A], sp[SP_SSM_TR], sp[SP_SSM_CTOT])
                if pfl_on:
                    v_pfl = sp[SP_PFL_BASE + c] if c < PFL_SLOTS else sp[SP_PFL_V]
                    if v_pfl > vmax:
                        vmax = v_pfl
                elif vmax <= 0.0:
                    ssm_stop = True
                if dist < 1e-9:
                    ssm_stop = True  # no direction to limit the speed along: stop (even with PFL)
                    continue
                inv = 1.0 / dist
                for j in range(n):
                    g_mat[k_rows, j] = (dx * jac[i, 0, j] + dy * jac[i, 1, j] + dz * jac[i, 2, j]) * inv
                hvec[k_rows] = vmax
                rowkind[k_rows] = 0
                k_rows += 1
    elif sp[SP_SSM_ON] == 0.0:
        for i in range(m_pts):
            for c in range(n_human):
                dx = human[c, 0] - pts[i, 0]
                dy = human[c, 1] - pts[i, 1]
                dz = human[c, 2] - pts[i, 2]
                d = math.sqrt(dx * dx + dy * dy + dz * dz) - pt_radius[i]
                if d < d_min:
                    d_min = d
    return k_rows, d_min, ssm_margin, ssm_stop


@nb.njit(inline='always', cache=True, nogil=True)
def proposal(
    sp: np.ndarray,
    cs: np.ndarray,
    q_pol: np.ndarray,
    q_op: np.ndarray,
    has_op: bool,
    fault: int,
    stop: bool,
    ssm_stop: bool,
    d_min: float,
    target: np.ndarray,
    vdes: np.ndarray,
) -> tuple[float, int, bool]:
    """Shared-control blend into `target` and the desired velocity into `vdes` (0 when braking).
    Returns (operator weight alpha, mask bits, braking)."""
    n = cs.shape[1]
    dt = sp[SP_DT]
    mask = 0
    alpha = 0.0
    if has_op and fault == K_OK:
        if sp[SP_BLEND_MODE] == 0.0:
            alpha = sp[SP_ALPHA_FIXED]
        else:
            alpha = blend_alpha_from_distance(d_min, sp[SP_BLEND_DMIN], sp[SP_BLEND_DMAX])
        for j in range(n):
            target[j] = alpha * q_op[j] + (1.0 - alpha) * q_pol[j]
        if alpha > 0.0:
            mask |= A_BLEND
    else:
        for j in range(n):
            target[j] = q_pol[j]
    braking = stop or ssm_stop
    if stop:
        mask |= A_STOP
    if ssm_stop and not stop:
        mask |= A_SSM_STOP
    for j in range(n):
        vdes[j] = 0.0 if braking else (target[j] - cs[0, j]) / dt
    return alpha, mask, braking


@nb.njit(inline='always', cache=True, nogil=True)
def joint_bounds(
    lim: np.ndarray,
    sp: np.ndarray,
    cs: np.ndarray,
    q_meas: np.ndarray,
    dq_meas: np.ndarray,
    eff_on: bool,
    box: np.ndarray,
    hard: np.ndarray,
) -> tuple[int, bool]:
    """Per-joint bounds of the next command velocity: the tiered box into `box` (2, n) (lower,
    upper) and the hard (+ effort) one into `hard` (2, n). Returns (mask bits, not viable: the
    hard bounds are empty for some joint, which then brakes as hard as allowed)."""
    n = lim.shape[1]
    dt = sp[SP_DT]
    jerk_on = sp[SP_JERK_ON] != 0.0
    mask = 0
    not_viable = False
    for j in range(n):
        qc = cs[0, j]
        vc = cs[1, j]
        ac = cs[2, j]
        a_m = lim[L_AMAX, j]
        v_m = lim[L_VMAX, j]
        v_up_via = viability_upper_vel(lim[L_QMAX, j] - qc, a_m, dt)
        v_lo_via = -viability_upper_vel(qc - lim[L_QMIN, j], a_m, dt)
        lo_h = max2(max2(-v_m, vc - a_m * dt), v_lo_via)
        hi_h = min2(min2(v_m, vc + a_m * dt), v_up_via)
        if lo_h > hi_h:
            # not viable (or velocity beyond what acceleration can fix): brake as hard as allowed
            not_viable = True
            mask |= A_STOP
            lo_h = vc - a_m * dt
            hi_h = vc + a_m * dt
        lo_j = lo_h
        hi_j = hi_h
        if eff_on and lim[L_KP, j] > 0.0 and lim[L_EFF, j] < np.inf:
            kp = lim[L_KP, j]
            base = q_meas[j] + lim[L_KD, j] * dq_meas[j] / kp
            el = (base - lim[L_EFF, j] / kp - qc) / dt
            eu = (base + lim[L_EFF, j] / kp - qc) / dt
            if max2(lo_j, el) <= min2(hi_j, eu):
                lo_j = max2(lo_j, el)
                hi_j = min2(hi_j, eu)
            else:
                # incompatible with the hard limits: dropped for this cycle (reported)
                mask |= A_EFFORT_RELAXED
        hard[0, j] = lo_j
        hard[1, j] = hi_j
        if jerk_on:
            j_m = lim[L_JMAX, j]
            a_lo_s, a_up_s = accel_shaping_bounds(vc, max2(-v_m, v_lo_via), min2(v_m, v_up_via), a_m, j_m)
            sl = vc + max2(ac - j_m * dt, a_lo_s) * dt
            su = vc + min2(ac + j_m * dt, a_up_s) * dt
            # near a position limit: also keep a jerk-limited stop possible (shaping, soft tier)
            if su > 0.0 and su > sl:
                su = jerk_viability_upper_vel(lim[L_QMAX, j] - qc, vc, a_m, j_m, dt, max2(sl, 0.0), su)
            if sl < 0.0 and sl < su:
                sl = -jerk_viability_upper_vel(qc - lim[L_QMIN, j], -vc, a_m, j_m, dt, max2(-su, 0.0), -sl)
            if max2(lo_j, sl) <= min2(hi_j, su):
                lo_j = max2(lo_j, sl)
                hi_j = min2(hi_j, su)
            else:
                mask |= A_JERK_RELAXED
                if su < lo_j:
                    hi_j = lo_j
                else:
                    lo_j = hi_j
        box[0, j] = lo_j
        box[1, j] = hi_j
    return mask, not_viable


@nb.njit(inline='always', cache=True, nogil=True)
def workspace_rows(
    sp: np.ndarray,
    ws_mask: np.ndarray,
    pts: np.ndarray,
    jac: np.ndarray,
    k_rows: int,
    g_mat: np.ndarray,
    hvec: np.ndarray,
    rowkind: np.ndarray,
) -> int:
    """Workspace-box rows (kind 1) appended after row `k_rows`; returns the new row count."""
    n = jac.shape[2]
    dt = sp[SP_DT]
    a_ws = sp[SP_WS_A]
    for i in range(ws_mask.shape[0]):
        if not ws_mask[i]:
            continue
        for ax in range(3):
            # a point already outside the box may move back in, never further out
            d_up = sp[SP_WS_MAX_X + ax] - pts[i, ax]
            d_dn = pts[i, ax] - sp[SP_WS_MIN_X + ax]
            up = viability_upper_vel(d_up, a_ws, dt) if d_up >= 0.0 else 0.0
            dn = viability_upper_vel(d_dn, a_ws, dt) if d_dn >= 0.0 else 0.0
            for j in range(n):
                g_mat[k_rows, j] = jac[i, ax, j]
                g_mat[k_rows + 1, j] = -jac[i, ax, j]
            hvec[k_rows] = up
            hvec[k_rows + 1] = dn
            rowkind[k_rows] = 1
            rowkind[k_rows + 1] = 1
            k_rows += 2
    return k_rows


@nb.njit(inline='always', cache=True, nogil=True)
def prune_rows(
    braking: bool,
    k_rows: int,
    box: np.ndarray,
    vdes: np.ndarray,
    g_mat: np.ndarray,
    hvec: np.ndarray,
    rowkind: np.ndarray,
) -> tuple[int, bool, float]:
    """Drop the rows that can never be active inside the box (none kept while braking) and
    evaluate the proposal. Returns (kept rows, proposal satisfies everything, its SSM scale)."""
    n = vdes.shape[0]
    ssm_sc = 1.0
    kept = 0
    identity = not braking
    for j in range(n):
        if vdes[j] < box[0, j] or vdes[j] > box[1, j]:
            identity = False
    if braking:
        k_rows = 0
    for k in range(k_rows):
        reach = 0.0
        gv = 0.0
        for j in range(n):
            reach += abs(g_mat[k, j]) * max2(abs(box[0, j]), abs(box[1, j]))
            gv += g_mat[k, j] * vdes[j]
        if gv > hvec[k]:
            identity = False
        if rowkind[k] == 0:
            s = ssm_scale(hvec[k], gv)
            if s < ssm_sc:
                ssm_sc = s
        if reach <= hvec[k]:
            continue
        if kept != k:
            for j in range(n):
                g_mat[kept, j] = g_mat[k, j]
            hvec[kept] = hvec[k]
            rowkind[kept] = rowkind[k]
        kept += 1
    return kept, identity, ssm_sc


@nb.njit(inline='always', cache=True, nogil=True)
def coupled_report(
    pfl_on: bool, k_rows: int, qx: np.ndarray, vdes: np.ndarray, g_mat: np.ndarray, hvec: np.ndarray,
    rowkind: np.ndarray,
) -> int:  # fmt: skip
    """Mask bits of the binding coupled rows: tight at the result `qx` and violated by `vdes`."""
    n = qx.shape[0]
    mask = 0
    for k in range(k_rows):
        gx = 0.0
        gv = 0.0
        for j in range(n):
            gx += g_mat[k, j] * qx[j]
            gv += g_mat[k, j] * vdes[j]
        if gv > hvec[k] and gx >= hvec[k] - 1e-9 * (1.0 + abs(hvec[k])):
            if rowkind[k] == 0:
                mask |= A_SSM
                if pfl_on:
                    mask |= A_PFL
            else:
                mask |= A_WORKSPACE
    return mask


@nb.njit(inline='always', cache=True, nogil=True)
def joint_report(
    lim: np.ndarray,
    sp: np.ndarray,
    cs: np.ndarray,
    q_meas: np.ndarray,
    dq_meas: np.ndarray,
    flags: tuple[bool, bool, bool, bool],
    qx: np.ndarray,
    vdes: np.ndarray,
    box: np.ndarray,
) -> tuple[int, float]:
    """Mask bits of the active per-joint constraints at the result `qx` and the velocity margin
    [rad/s]; `flags` = (identity, braking, measurement finite, effort on)."""
    identity, braking, meas_ok, eff_on = flags
    n = lim.shape[1]
    dt = sp[SP_DT]
    jerk_on = sp[SP_JERK_ON] != 0.0
    mask = 0
    vel_margin = np.inf
    for j in range(n):
        x = qx[j]
        if not identity and x != vdes[j]:
            qc = cs[0, j]
            vc = cs[1, j]
            a_m = lim[L_AMAX, j]
            v_m = lim[L_VMAX, j]
            up_side = vdes[j] > x
            eps = 1e-12 * (1.0 + abs(x))
            if up_side:
                if x >= v_m - eps:
                    mask |= A_VELOCITY
                if x >= vc + a_m * dt - eps:
                    mask |= A_ACCELERATION
                if x >= viability_upper_vel(lim[L_QMAX, j] - qc, a_m, dt) - eps:
                    mask |= A_POSITION
            else:
                if x <= -v_m + eps:
                    mask |= A_VELOCITY
                if x <= vc - a_m * dt + eps:
                    mask |= A_ACCELERATION
                if x <= -viability_upper_vel(qc - lim[L_QMIN, j], a_m, dt) + eps:
                    mask |= A_POSITION
            if (up_side and x >= box[1, j] - eps) or (not up_side and x <= box[0, j] + eps):
                if jerk_on and abs((x - vc) / dt - cs[2, j]) >= lim[L_JMAX, j] * dt - 1e-9:
                    mask |= A_JERK
                if eff_on and lim[L_KP, j] > 0.0:
                    tau = lim[L_KP, j] * (qc + x * dt - q_meas[j]) - lim[L_KD, j] * dq_meas[j]
                    if abs(tau) >= lim[L_EFF, j] * (1.0 - 1e-9):
                        mask |= A_EFFORT
        if braking and meas_ok and sp[SP_EFFORT_ON] != 0.0 and lim[L_KP, j] > 0.0:
            tau = lim[L_KP, j] * (cs[0, j] + x * dt - q_meas[j]) - lim[L_KD, j] * dq_meas[j]
            if abs(tau) > lim[L_EFF, j]:
                mask |= A_EFFORT_RELAXED  # effort is not enforced while braking: report it
        vm = lim[L_VMAX, j] - abs(x)
        if vm < vel_margin:
            vel_margin = vm
    return mask, vel_margin


@nb.njit(inline='always', cache=True, nogil=True)
def command_update(
    lim: np.ndarray,
    sp: np.ndarray,
    cs: np.ndarray,
    qx: np.ndarray,
    vec: np.ndarray,
    box: np.ndarray,
    identity: bool,
    braking: bool,
    fault: int,
    out: np.ndarray,
) -> tuple[float, float, float]:
    """The safe command into `out` and the command state `cs` (q, v, a) from the next velocity
    `qx`; `vec` rows ``VEC_VDES``, ``VEC_TARGET``. Returns (position margin [rad], intervention
    [rad], safety intervention [rad])."""
    vdes = vec[VEC_VDES]
    target = vec[VEC_TARGET]
    n = lim.shape[1]
    dt = sp[SP_DT]
    pos_margin = np.inf
    inter2 = 0.0
    safety2 = 0.0
    for j in range(n):
        x = qx[j]
        if not braking:
            # change made by the coupled rows (SSM / PFL, workspace, empty-set fallback) beyond
            # what the per-joint limits alone (velocity, acceleration, position braking, effort,
            # jerk) make of the target this cycle
            e = (x - min2(max2(vdes[j], box[0, j]), box[1, j])) * dt
            safety2 += e * e
        q_new = target[j] if identity else cs[0, j] + x * dt
        out[j] = q_new
        if fault == K_OK and not braking:
            e = q_new - target[j]
            inter2 += e * e
        cs[2, j] = (x - cs[1, j]) / dt
        cs[1, j] = x
        cs[0, j] = q_new
        pm = min2(lim[L_QMAX, j] - q_new, q_new - lim[L_QMIN, j])
        if pm < pos_margin:
            pos_margin = pm
    if braking and fault == K_OK:
        # intervention of a stop: distance of the held command from the proposal (if any)
        for j in range(n):
            e = out[j] - target[j]
            inter2 += e * e
    return pos_margin, math.sqrt(inter2), math.sqrt(safety2)


@nb.njit(inline='always', cache=True, nogil=True)
def write_report(
    rep: np.ndarray,
    fault: int,
    mask: int,
    separation: tuple[float, float, float, bool],
    margins: tuple[float, float],
    interventions: tuple[float, float],
    alpha: float,
    braking: bool,
    qp: tuple[int, int, int],
) -> None:
    """The report `rep` (``R_*``): `separation` = (smallest distance, SSM scale of the proposal,
    SSM margin, SSM stop), `margins` = (position, velocity), `interventions` = (intervention,
    safety intervention), `qp` = (iterations, status, rows)."""
    d_min, ssm_sc, ssm_margin, ssm_stop = separation
    rep[R_FAULT] = fault
    rep[R_MASK] = mask
    rep[R_INTERVENTION] = interventions[0]
    rep[R_HUMAN_DIST] = d_min
    rep[R_SSM_SCALE] = 0.0 if ssm_stop else ssm_sc
    rep[R_ALPHA] = alpha
    rep[R_STOPPING] = 1.0 if braking else 0.0
    rep[R_POS_MARGIN] = margins[0]
    rep[R_VEL_MARGIN] = margins[1]
    rep[R_SSM_MARGIN] = ssm_margin
    rep[R_QP_ITERS] = qp[0]
    rep[R_QP_STATUS] = qp[1]
    rep[R_N_ROWS] = qp[2]
    rep[R_SAFETY_INTERVENTION] = interventions[1]


_F = TypeVar('_F', bound=Callable[..., Any])
_NO_NRT: dict[str, Any] = {'_nrt': False}


def _njit_without_refcounts(fn: _F) -> _F:
    """``nb.njit(cache=True, nogil=True)`` compiled without numba's reference counting
    (``_nrt=False``, an option numba's type stubs do not list): for a function that allocates
    nothing (an allocation in it does not compile) and keeps no array beyond the call."""
    return cast(_F, nb.njit(cache=True, nogil=True, **_NO_NRT)(fn))


@nb.njit(inline='always', cache=True, nogil=True)
def cycle_rows(params: Params, model: ModelArrays, cs: np.ndarray, inputs: Inputs, work: Work) -> Cycle:
    """The cycle up to the projection (shared with the GPU kernel): validation, kinematics at the
    command configuration, SSM rows, blend and desired velocity (``work[W_VEC]``), per-joint box
    (``work[W_BOUNDS]``), synchronised braking, workspace rows, pruning. Reads ``work[:8]`` only
    (``work[W_QP]`` may be anything). Returns the :data:`Cycle` tuple."""
    lim, sp, ws_mask = params
    q_meas, dq_meas, q_pol, q_op, has_op, human, n_human, v_h_meas, mode = inputs
    frames, pts, jac, vec, bounds, g_mat, hvec, rowkind, _qp = work
    vdes = vec[VEC_VDES]
    box = bounds[B_TIERED]
    fault, meas_ok, human_ok = validate_inputs(lim, sp, q_meas, dq_meas, q_pol, q_op, has_op, human, n_human)
    stop = mode != 0 or fault != K_OK
    kinematics(cs[0], model, frames, pts, jac)
    k_rows, d_min, ssm_margin, ssm_stop = ssm_rows(
        sp, pts, jac, model[10], human, n_human, v_h_meas, human_ok, g_mat, hvec, rowkind
    )
    alpha, mask, braking = proposal(
        sp, cs, q_pol, q_op, has_op, fault, stop, ssm_stop, d_min, vec[VEC_TARGET], vdes
    )
    # effort (PD model) is not applied while braking: it would forbid decelerating faster than the
    # damping torque allows, i.e. it could keep a stopping robot at speed
    eff_on = sp[SP_EFFORT_ON] != 0.0 and meas_ok and not braking
    jmask, not_viable = joint_bounds(lim, sp, cs, q_meas, dq_meas, eff_on, box, bounds[B_HARD])
    mask |= jmask
    if not_viable:
        if fault == K_OK:
            fault = K_NOT_VIABLE
        braking = True
    if braking:
        # controlled stop: synchronised braking (the per-joint box then adds jerk / viability)
        sync_brake_velocity(cs[1], lim[L_AMAX], sp[SP_DT], vdes)
    if sp[SP_WS_ON] != 0.0 and not braking:
        k_rows = workspace_rows(sp, ws_mask, pts, jac, k_rows, g_mat, hvec, rowkind)
    k_rows, identity, ssm_sc = prune_rows(braking, k_rows, box, vdes, g_mat, hvec, rowkind)
    return (
        fault,
        mask,
        alpha,
        k_rows,
        (identity, braking, meas_ok, eff_on),
        (d_min, ssm_sc, ssm_margin, ssm_stop),
    )


@nb.njit(inline='always', cache=True, nogil=True)
def cycle_finish(
    params: Params,
    cs: np.ndarray,
    inputs: Inputs,
    work: Work,
    qx: np.ndarray,
    cycle: Cycle,
    qp: tuple[int, int, int],
    out: np.ndarray,
    rep: np.ndarray,
) -> None:
    """The cycle after the projection (shared with the GPU kernel): from the next command velocity
    `qx` and `cycle` (:func:`cycle_rows`), the active-constraint report, the command-state update,
    the safe command into `out` and the report into `rep`; `qp` = (solver iterations, status, mask
    bits the projection added)."""
    lim, sp, _ws_mask = params
    q_meas, dq_meas = inputs[0], inputs[1]
    _frames, _pts, _jac, vec, bounds, g_mat, hvec, rowkind, _qp = work
    box = bounds[B_TIERED]
    vdes = vec[VEC_VDES]
    fault, mask, alpha, k_rows, flags, separation = cycle
    identity, braking = flags[0], flags[1]
    mask |= qp[2] | coupled_report(sp[SP_PFL_ON] != 0.0, k_rows, qx, vdes, g_mat, hvec, rowkind)
    jmask, vel_margin = joint_report(lim, sp, cs, q_meas, dq_meas, flags, qx, vdes, box)
    pos_margin, inter, safety = command_update(lim, sp, cs, qx, vec, box, identity, braking, fault, out)
    write_report(
        rep,
        fault,
        mask | jmask,
        separation,
        (pos_margin, vel_margin),
        (inter, safety),
        alpha,
        braking,
        (qp[0], qp[1], k_rows),
    )


@nb.njit(inline='always', cache=True, nogil=True)
def _project(params: Params, cs: np.ndarray, work: Work, k_rows: int, identity: bool) -> tuple[int, int, int]:
    """The projection of ``work[W_VEC][VEC_VDES]`` onto the box and the kept coupled rows into
    ``work[W_QP][QW_N][QN_X]`` (the proposal itself when `identity`), with the jerk relaxation and
    the empty-set fallback. Returns (iterations, status, mask bits): :func:`cycle_finish`'s `qp`."""
    lim, sp, _ws_mask = params
    _frames, _pts, _jac, vec, bounds, g_mat, hvec, _rowkind, qw = work
    vdes = vec[VEC_VDES]
    vref = vec[VEC_REF]
    box = bounds[B_TIERED]
    lo = box[0]
    hi = box[1]
    lo_hard = bounds[B_HARD, 0]
    hi_hard = bounds[B_HARD, 1]
    qx = qw[QW_N][QN_X]
    n = lim.shape[1]
    dt = sp[SP_DT]
    jerk_on = sp[SP_JERK_ON] != 0.0
    mask = 0
    qp_status = QP_OK
    qp_iters = 0
    if identity:
        for j in range(n):
            qx[j] = vdes[j]
    else:
        qp_status, qp_iters = _project_or_retry(vdes, box, g_mat, hvec, k_rows, sp, vref, qw)
        if qp_status != QP_OK and jerk_on:
            # the jerk tier made the coupled set empty: relax jerk (reported), keep the hard box
            mask |= A_JERK_RELAXED
            for j in range(n):
                lo[j] = lo_hard[j]
                hi[j] = hi_hard[j]
            qp_status, it2 = _project_or_retry(vdes, box, g_mat, hvec, k_rows, sp, vref, qw)
            qp_iters += it2
        if qp_status != QP_OK:
            # still empty: the bound dropped faster than the joint limits let the command follow
            # (human data arrives in steps at the sensor rate; the ISO 13855 speed switches at
            # near_distance_m). Least violation (reported): relax every coupled row by the same
            # smallest slack that makes the set non-empty (bisection), then project onto it; the
            # toward-speed in excess then falls as fast as the joint limits allow. The bisection
            # tests non-emptiness from the braking point, not from the proposal, so the slack is a
            # function of the state alone: re-filtering the output finds the same relaxed set and
            # returns the output (idempotence).
            mask |= A_QP_FALLBACK
            max_iter = int(sp[SP_QP_MAXIT])
            tol = sp[SP_QP_TOL]
            sync_brake_velocity(cs[1], lim[L_AMAX], dt, qx)
            s_hi = 0.0
            for j in range(n):
                qx[j] = min(max(qx[j], lo[j]), hi[j])
                vref[j] = qx[j]
            for k in range(k_rows):
                gx = 0.0
                for j in range(n):
                    gx += g_mat[k, j] * qx[j]
                if gx - hvec[k] > s_hi:
                    s_hi = gx - hvec[k]
            if s_hi > 0.0:
                s_lo = 0.0
                s_cur = 0.0
                for _ in range(FALLBACK_BISECTIONS):
                    s_mid = 0.5 * (s_lo + s_hi)
                    for k in range(k_rows):
                        hvec[k] += s_mid - s_cur
                    s_cur = s_mid
                    st, it3 = project_box_halfspaces(vref, box, g_mat, hvec, k_rows, max_iter, tol, qw)
                    qp_iters += it3
                    if st == QP_OK:
                        s_hi = s_mid
                    else:
                        s_lo = s_mid
                for k in range(k_rows):
                    hvec[k] += s_hi - s_cur
                st, it3 = project_box_halfspaces(vdes, box, g_mat, hvec, k_rows, max_iter, tol, qw)
                qp_iters += it3
                if st != QP_OK:  # from the braking point, where the bisection found the set
                    st, it3 = project_box_halfspaces(vref, box, g_mat, hvec, k_rows, max_iter, tol, qw)
                    qp_iters += it3
                if st != QP_OK:  # numerically at the edge: the braking point satisfies s_hi
                    for j in range(n):
                        qx[j] = vref[j]
                for k in range(k_rows):
                    hvec[k] -= s_hi  # the unrelaxed rows again (report, qp_problem)
    return qp_iters, qp_status, mask


@_njit_without_refcounts
def filter_kernel(
    params: Params,
    model: ModelArrays,
    cs: np.ndarray,
    inputs: Inputs,
    work: Work,
    out: np.ndarray,
    rep: np.ndarray,
) -> None:
    """One filter cycle for one state. Reads/updates the command state `cs` (3, n) = (q, v, a).

    `params` = (`lim` (8, n) per-joint limits (rows ``L_*``), `sp` scalars (``SP_*``), `ws_mask`
    (M,) bool: points kept in the workspace box); `model`, the robot model's arrays
    (:func:`model_arrays`); `inputs` = (measured `q_meas`, `dq_meas`, policy target `q_pol`,
    operator target `q_op` (used when `has_op`), `has_op`, human points `human` (H, 3) of which the
    first `n_human` count (m, robot base frame), measured human speed `v_h_meas` (m/s, < 0 = unknown
    -> ISO 13855 defaults), `mode` (0 normal, 1 controlled stop)); `work`, the preallocated work
    arrays (:func:`alloc_work`). Writes the safe command into `out` (rad) and the report into `rep`
    (``R_*``). RT-safe: no allocation (unpacking the tuples and taking rows of the stacked arrays
    makes views). Compiled without numba's reference counting (``_nrt=False``): nothing here
    allocates or outlives the call (an allocation would not even compile), and the count of the
    views' and the inlined parts' array arguments (~500 increfs / decrefs in the cycle) is what
    made the split kernel slower than the monolithic one.
    """
    cycle = cycle_rows(params, model, cs, inputs, work)
    qp = _project(params, cs, work, cycle[3], cycle[4][0])
    qx = work[W_QP][QW_N][QN_X]
    cycle_finish(params, cs, inputs, work, qx, cycle, qp, out, rep)


@nb.njit(cache=True, nogil=True, parallel=True)
def batch_kernel(
    params: Params, model: ModelArrays, cs: np.ndarray, inputs: BatchInputs, out: np.ndarray, rep: np.ndarray,
    n_chunks: int,
) -> None:  # fmt: skip
    """:func:`filter_kernel` over B independent states (numba prange over chunks of states).

    The arguments of :func:`filter_kernel` (without `work`), `cs`, `out`, `rep` and each of
    `inputs` with a leading batch dimension B. Work buffers are allocated once per chunk
    (:func:`alloc_work`; not RT-safe, this is the throughput path). Results are bit-identical to the
    per-cycle kernel.
    """
    q_meas, dq_meas, q_pol, q_op, has_op, human, n_human, v_h_meas, mode = inputs
    b_total = cs.shape[0]
    n = cs.shape[2]
    n_frames = model[0].shape[0]  # parent
    m_pts = model[7].shape[0]  # pt_frame
    h_max = human.shape[1]
    chunk = (b_total + n_chunks - 1) // n_chunks
    for ch in nb.prange(n_chunks):
        start = ch * chunk
        stop = min(b_total, start + chunk)
        if start >= stop:
            continue
        work = alloc_work(n, n_frames, m_pts, h_max)
        for b in range(start, stop):
            state = (
                q_meas[b],
                dq_meas[b],
                q_pol[b],
                q_op[b],
                has_op[b],
                human[b],
                n_human[b],
                v_h_meas[b],
                mode[b],
            )
            filter_kernel(params, model, cs[b], state, work, out[b], rep[b])
