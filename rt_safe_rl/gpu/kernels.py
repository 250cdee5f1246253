"""numba.cuda twin of :func:`rt_safe_rl.core.safety.kernel.filter_kernel`: one thread per state.

Each thread runs one filter cycle for one state of a batch: input validation, forward kinematics of
the monitored points and their Jacobians at the command configuration, SSM distances, ISO/TS 15066
speed bounds and their half-space rows, the shared-control blend, the per-joint limit rows
(velocity, acceleration, braking viability, effort, jerk), synchronised braking, the workspace rows,
row pruning, and the projection where it is closed-form:

* the proposal already satisfies every row (identity), or
* the box clip ``clip(v_des, lo, hi)`` satisfies every kept coupled row within the accuracy the
  CPU solver accepts at its first iteration (``max(qp_tol, ACTIVE_TOL)`` scaled by the row norm):
  then the Goldfarb-Idnani solver of :mod:`rt_safe_rl.core.safety.qp` returns that same clip with
  0 iterations, and so does this kernel.

Any other state (an active coupled row: a real QP, or its empty-set fallback) is *deferred*:
``flag[b] = 1`` and nothing of that state is written; :class:`rt_safe_rl.gpu.batch.GpuBatchSafetyFilter`
runs those on the CPU kernel. Scalar formulas are the CPU ones (their Python source compiled as CUDA
device functions), so the arithmetic is the same up to the device's fused multiply-adds.

Work arrays are per-thread local arrays whose sizes are compile-time constants (one kernel per robot
size, :func:`get_kernel`). FP64 throughout. Importing this module needs numba only (no GPU; under
``NUMBA_ENABLE_CUDASIM=1`` it runs on numba's CUDA simulator). Not RT code: a throughput path.

This module is over the house limit of 600 lines on purpose: it mirrors the CPU kernel
(:mod:`rt_safe_rl.core.safety.kernel`) step by step as one numba.cuda kernel with its device
functions, so a change to one is checked against the other side by side.
"""

from __future__ import annotations

import math
import types
from typing import Any

import numpy as np
from numba import cuda, float64, int64
from numba.core.registry import CPUDispatcher

from rt_safe_rl.core.safety import formulas as fm
from rt_safe_rl.core.safety import kernel as kn
from rt_safe_rl.core.safety.qp import ACTIVE_TOL

FLAG_DONE = 0
FLAG_DEFERRED = 1
"""flag[b]: 0 = resolved on the GPU (out, rep, cs written); 1 = needs the CPU QP (nothing written)."""

_DEVICE_FUNCTIONS: dict[Any, Any] = {}


def _code_names(code: types.CodeType) -> set[str]:
    """Global names a code object and its nested functions (closures) refer to."""
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _code_names(c)
    return names


def device_function(f: Any) -> Any:
    """The CUDA device function of the CPU numba function `f`, compiled from its own Python source
    (``f.py_func``); the numba functions it calls are taken the same way (recursively, memoised),
    so one definition serves both kernels, on the GPU and on the CUDA simulator alike (which
    cannot call a CPU function with its device arrays)."""
    if f in _DEVICE_FUNCTIONS:
        return _DEVICE_FUNCTIONS[f]
    py = f.py_func
    env = dict(py.__globals__)
    for name in _code_names(py.__code__):
        if isinstance(env.get(name), CPUDispatcher):
            env[name] = device_function(env[name])
    fn = types.FunctionType(py.__code__, env, py.__name__, py.__defaults__, py.__closure__)
    dev = cuda.jit(device=True)(fn)
    _DEVICE_FUNCTIONS[f] = dev
    return dev


# the CPU formulas and kernel parts, compiled for the device from their own Python source
_ssm_v_max = device_function(fm.ssm_v_max)
_ssm_scale = device_function(fm.ssm_scale)
_blend_alpha = device_function(fm.blend_alpha_from_distance)
_viab_up = device_function(fm.viability_upper_vel)
_jerk_stop_dist = device_function(fm.jerk_limited_stop_distance)
_kinematics = device_function(kn.kinematics)  # frames, points, Jacobians (core.kinematics)

# kernel constants (module globals are compile-time constants in numba.cuda)
L_QMIN, L_QMAX, L_VMAX, L_AMAX, L_JMAX = kn.L_QMIN, kn.L_QMAX, kn.L_VMAX, kn.L_AMAX, kn.L_JMAX
L_EFF, L_KP, L_KD = kn.L_EFF, kn.L_KP, kn.L_KD
SP_DT, SP_SSM_ON, SP_SSM_A, SP_SSM_TR = kn.SP_DT, kn.SP_SSM_ON, kn.SP_SSM_A, kn.SP_SSM_TR
SP_SSM_CTOT, SP_SSM_VH, SP_SSM_VH_NEAR, SP_SSM_NEAR_D = (
    kn.SP_SSM_CTOT,
    kn.SP_SSM_VH,
    kn.SP_SSM_VH_NEAR,
    kn.SP_SSM_NEAR_D,
)
SP_PFL_ON, SP_PFL_V, SP_PFL_BASE, PFL_SLOTS = kn.SP_PFL_ON, kn.SP_PFL_V, kn.SP_PFL_BASE, kn.PFL_SLOTS
SP_WS_ON, SP_WS_A, SP_WS_MIN_X, SP_WS_MAX_X = kn.SP_WS_ON, kn.SP_WS_A, kn.SP_WS_MIN_X, kn.SP_WS_MAX_X
SP_BLEND_MODE, SP_ALPHA_FIXED, SP_BLEND_DMIN, SP_BLEND_DMAX = (
    kn.SP_BLEND_MODE,
    kn.SP_ALPHA_FIXED,
    kn.SP_BLEND_DMIN,
    kn.SP_BLEND_DMAX,
)
SP_JERK_ON, SP_EFFORT_ON, SP_POS_TOL, SP_VEL_TOL, SP_QP_TOL = (
    kn.SP_JERK_ON,
    kn.SP_EFFORT_ON,
    kn.SP_POS_TOL,
    kn.SP_VEL_TOL,
    kn.SP_QP_TOL,
)
A_POSITION, A_VELOCITY, A_ACCELERATION, A_JERK, A_EFFORT = (
    kn.A_POSITION,
    kn.A_VELOCITY,
    kn.A_ACCELERATION,
    kn.A_JERK,
    kn.A_EFFORT,
)
A_WORKSPACE, A_SSM, A_SSM_STOP, A_PFL, A_JERK_RELAXED = (
    kn.A_WORKSPACE,
    kn.A_SSM,
    kn.A_SSM_STOP,
    kn.A_PFL,
    kn.A_JERK_RELAXED,
)
A_EFFORT_RELAXED, A_STOP, A_BLEND = kn.A_EFFORT_RELAXED, kn.A_STOP, kn.A_BLEND
K_OK, K_NONFINITE, K_STATE_LIMITS, K_NOT_VIABLE = kn.K_OK, kn.K_NONFINITE, kn.K_STATE_LIMITS, kn.K_NOT_VIABLE
R_FAULT, R_MASK, R_INTERVENTION, R_HUMAN_DIST = kn.R_FAULT, kn.R_MASK, kn.R_INTERVENTION, kn.R_HUMAN_DIST
R_SSM_SCALE, R_ALPHA, R_STOPPING, R_POS_MARGIN = kn.R_SSM_SCALE, kn.R_ALPHA, kn.R_STOPPING, kn.R_POS_MARGIN
R_VEL_MARGIN, R_SSM_MARGIN, R_QP_ITERS, R_QP_STATUS = (
    kn.R_VEL_MARGIN,
    kn.R_SSM_MARGIN,
    kn.R_QP_ITERS,
    kn.R_QP_STATUS,
)
R_N_ROWS, R_SAFETY_INTERVENTION = kn.R_N_ROWS, kn.R_SAFETY_INTERVENTION
QP_ACCEPT_TOL = ACTIVE_TOL
INF = np.inf


@cuda.jit(device=True)
def _fmax(a: float, b: float) -> float:
    """Python's ``max(a, b)`` for two floats (numba's CUDA typing of the builtin is not relied on)."""
    return b if b > a else a


@cuda.jit(device=True)
def _fmin(a: float, b: float) -> float:
    """Python's ``min(a, b)`` for two floats."""
    return b if b < a else a


@cuda.jit(device=True)
def _accel_shaping(v: float, v_lo: float, v_up: float, a_max: float, j_max: float) -> tuple[float, float]:
    """:func:`formulas.accel_shaping_bounds` (same arithmetic, device max/min)."""
    k = j_max / a_max
    return _fmax(k * (v_lo - v), -a_max), _fmin(k * (v_up - v), a_max)


@cuda.jit(device=True)
def _jerk_viab_up(
    dist_m: float, v: float, a_max: float, j_max: float, dt_s: float, v_lo: float, v_hi: float
) -> float:
    """:func:`formulas.jerk_viability_upper_vel` without the inner closure (same bisection)."""
    if v_hi * dt_s + _jerk_stop_dist(v_hi, (v_hi - v) / dt_s, a_max, j_max) - dist_m <= 0.0:
        return v_hi
    if v_lo * dt_s + _jerk_stop_dist(v_lo, (v_lo - v) / dt_s, a_max, j_max) - dist_m > 0.0:
        return v_lo
    lo = v_lo
    hi = v_hi
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if mid * dt_s + _jerk_stop_dist(mid, (mid - v) / dt_s, a_max, j_max) - dist_m <= 0.0:
            lo = mid
        else:
            hi = mid
    return lo


@cuda.jit(device=True)
def _validate(
    b: int,
    lim: Any,
    sp: Any,
    q_meas: Any,
    dq_meas: Any,
    q_pol: Any,
    q_op: Any,
    has_op: Any,
    human: Any,
    n_human: Any,
) -> tuple[int, bool, bool]:
    """(fault, measurement finite, human points finite) of state b: the kernel's input checks."""
    n = lim.shape[1]
    fault = K_OK
    meas_ok = True
    pol_ok = True
    op_ok = True
    for j in range(n):
        if not (math.isfinite(q_meas[b, j]) and math.isfinite(dq_meas[b, j])):
            meas_ok = False
        if not math.isfinite(q_pol[b, j]):
            pol_ok = False
        if has_op[b] and not math.isfinite(q_op[b, j]):
            op_ok = False
    if not (meas_ok and pol_ok and op_ok):
        fault = K_NONFINITE
    human_ok = True
    for c in range(n_human[b]):
        for r in range(3):
            if not math.isfinite(human[b, c, r]):
                human_ok = False
    if not human_ok:
        fault = K_NONFINITE
    if meas_ok:
        ptol = sp[SP_POS_TOL]
        vtol = sp[SP_VEL_TOL]
        for j in range(n):
            if (
                q_meas[b, j] < lim[L_QMIN, j] - ptol
                or q_meas[b, j] > lim[L_QMAX, j] + ptol
                or abs(dq_meas[b, j]) > lim[L_VMAX, j] + vtol
            ):
                if fault == K_OK:
                    fault = K_STATE_LIMITS
    return fault, meas_ok, human_ok


@cuda.jit(device=True)
def _sync_brake(cs: Any, b: int, lim: Any, dt: float, out: Any) -> None:
    """:func:`kernel.sync_brake_velocity` of the command velocity ``cs[b, 1]`` into `out`."""
    n = lim.shape[1]
    t_stop = 0.0
    for j in range(n):
        t = abs(cs[b, 1, j]) / lim[L_AMAX, j]
        if t > t_stop:
            t_stop = t
    s = 1.0 - dt / t_stop if t_stop > dt else 0.0
    for j in range(n):
        out[j] = cs[b, 1, j] * s


@cuda.jit(device=True)
def _joint_bounds(
    b: int,
    lim: Any,
    sp: Any,
    cs: Any,
    q_meas: Any,
    dq_meas: Any,
    eff_on: bool,
    lo: Any,
    hi: Any,
    lo_hard: Any,
    hi_hard: Any,
) -> tuple[int, int]:
    """Per-joint box [lo, hi] of the next command velocity (kernel's per-joint bounds section).

    Returns (mask bits, not_viable 0/1)."""
    n = lim.shape[1]
    dt = sp[SP_DT]
    jerk_on = sp[SP_JERK_ON] != 0.0
    mask = 0
    not_viable = 0
    for j in range(n):
        qc = cs[b, 0, j]
        vc = cs[b, 1, j]
        ac = cs[b, 2, j]
        a_m = lim[L_AMAX, j]
        v_m = lim[L_VMAX, j]
        v_up_via = _viab_up(lim[L_QMAX, j] - qc, a_m, dt)
        v_lo_via = -_viab_up(qc - lim[L_QMIN, j], a_m, dt)
        lo_h = _fmax(_fmax(-v_m, vc - a_m * dt), v_lo_via)
        hi_h = _fmin(_fmin(v_m, vc + a_m * dt), v_up_via)
        if lo_h > hi_h:
            not_viable = 1
            mask |= A_STOP
            lo_h = vc - a_m * dt
            hi_h = vc + a_m * dt
        lo_j = lo_h
        hi_j = hi_h
        if eff_on and lim[L_KP, j] > 0.0 and lim[L_EFF, j] < INF:
            kp = lim[L_KP, j]
            base = q_meas[b, j] + lim[L_KD, j] * dq_meas[b, j] / kp
            el = (base - lim[L_EFF, j] / kp - qc) / dt
            eu = (base + lim[L_EFF, j] / kp - qc) / dt
            if _fmax(lo_j, el) <= _fmin(hi_j, eu):
                lo_j = _fmax(lo_j, el)
                hi_j = _fmin(hi_j, eu)
            else:
                mask |= A_EFFORT_RELAXED
        lo_hard[j] = lo_j
        hi_hard[j] = hi_j
        if jerk_on:
            j_m = lim[L_JMAX, j]
            a_lo_s, a_up_s = _accel_shaping(vc, _fmax(-v_m, v_lo_via), _fmin(v_m, v_up_via), a_m, j_m)
            sl = vc + _fmax(ac - j_m * dt, a_lo_s) * dt
            su = vc + _fmin(ac + j_m * dt, a_up_s) * dt
            if su > 0.0 and su > sl:
                su = _jerk_viab_up(lim[L_QMAX, j] - qc, vc, a_m, j_m, dt, _fmax(sl, 0.0), su)
            if sl < 0.0 and sl < su:
                sl = -_jerk_viab_up(qc - lim[L_QMIN, j], -vc, a_m, j_m, dt, _fmax(-su, 0.0), -sl)
            if _fmax(lo_j, sl) <= _fmin(hi_j, su):
                lo_j = _fmax(lo_j, sl)
                hi_j = _fmin(hi_j, su)
            else:
                mask |= A_JERK_RELAXED
                if su < lo_j:
                    hi_j = lo_j
                else:
                    lo_j = hi_j
        lo[j] = lo_j
        hi[j] = hi_j
    return mask, not_viable


@cuda.jit(device=True)
def _ssm_rows(
    b: int,
    sp: Any,
    pts: Any,
    jac: Any,
    pt_radius: Any,
    human: Any,
    n_human: Any,
    v_h_meas: Any,
    human_ok: bool,
    g_mat: Any,
    hvec: Any,
    rowkind: Any,
) -> tuple[int, float, float, bool]:
    """Separation distances and SSM rows (kernel's SSM section). Returns (rows, d_min, margin, stop)."""
    n = jac.shape[2]
    m_pts = pt_radius.shape[0]
    k_rows = 0
    d_min = INF
    ssm_margin = INF
    ssm_stop = False
    pfl_on = sp[SP_PFL_ON] != 0.0
    nh = n_human[b]
    if sp[SP_SSM_ON] != 0.0 and human_ok:
        for i in range(m_pts):
            for c in range(nh):
                dx = human[b, c, 0] - pts[i, 0]
                dy = human[b, c, 1] - pts[i, 1]
                dz = human[b, c, 2] - pts[i, 2]
                dist = math.sqrt(dx * dx + dy * dy + dz * dz)
                d = dist - pt_radius[i]
                if d < d_min:
                    d_min = d
                if v_h_meas[b] >= 0.0:
                    v_h = v_h_meas[b]
                else:
                    v_h = sp[SP_SSM_VH_NEAR] if d <= sp[SP_SSM_NEAR_D] else sp[SP_SSM_VH]
                d0 = sp[SP_SSM_CTOT] + v_h * sp[SP_SSM_TR]
                if d - d0 < ssm_margin:
                    ssm_margin = d - d0
                vmax = _ssm_v_max(d, v_h, sp[SP_SSM_A], sp[SP_SSM_TR], sp[SP_SSM_CTOT])
                if pfl_on:
                    v_pfl = sp[SP_PFL_BASE + c] if c < PFL_SLOTS else sp[SP_PFL_V]
                    if v_pfl > vmax:
                        vmax = v_pfl
                elif vmax <= 0.0:
                    ssm_stop = True
                if dist < 1e-9:
                    ssm_stop = True
                    continue
                inv = 1.0 / dist
                for j in range(n):
                    g_mat[k_rows, j] = (dx * jac[i, 0, j] + dy * jac[i, 1, j] + dz * jac[i, 2, j]) * inv
                hvec[k_rows] = vmax
                rowkind[k_rows] = 0
                k_rows += 1
    elif sp[SP_SSM_ON] == 0.0:
        for i in range(m_pts):
            for c in range(nh):
                dx = human[b, c, 0] - pts[i, 0]
                dy = human[b, c, 1] - pts[i, 1]
                dz = human[b, c, 2] - pts[i, 2]
                d = math.sqrt(dx * dx + dy * dy + dz * dz) - pt_radius[i]
                if d < d_min:
                    d_min = d
    return k_rows, d_min, ssm_margin, ssm_stop


@cuda.jit(device=True)
def _ws_rows(
    sp: Any, ws_mask: Any, pts: Any, jac: Any, k_rows: int, g_mat: Any, hvec: Any, rowkind: Any
) -> int:
    """Workspace-box rows appended after row `k_rows`; returns the new row count."""
    n = jac.shape[2]
    dt = sp[SP_DT]
    a_ws = sp[SP_WS_A]
    for i in range(ws_mask.shape[0]):
        if not ws_mask[i]:
            continue
        for ax in range(3):
            d_up = sp[SP_WS_MAX_X + ax] - pts[i, ax]
            d_dn = pts[i, ax] - sp[SP_WS_MIN_X + ax]
            up = _viab_up(d_up, a_ws, dt) if d_up >= 0.0 else 0.0
            dn = _viab_up(d_dn, a_ws, dt) if d_dn >= 0.0 else 0.0
            for j in range(n):
                g_mat[k_rows, j] = jac[i, ax, j]
                g_mat[k_rows + 1, j] = -jac[i, ax, j]
            hvec[k_rows] = up
            hvec[k_rows + 1] = dn
            rowkind[k_rows] = 1
            rowkind[k_rows + 1] = 1
            k_rows += 2
    return k_rows


@cuda.jit(device=True)
def _prune(
    braking: bool, k_rows: int, lo: Any, hi: Any, vdes: Any, g_mat: Any, hvec: Any, rowkind: Any
) -> tuple[int, bool, float]:
    """Drop rows that cannot be active in the box; (kept rows, identity, ssm scale of the proposal)."""
    n = lo.shape[0]
    ssm_sc = 1.0
    kept = 0
    identity = not braking
    for j in range(n):
        if vdes[j] < lo[j] or vdes[j] > hi[j]:
            identity = False
    if braking:
        k_rows = 0
    for k in range(k_rows):
        reach = 0.0
        gv = 0.0
        for j in range(n):
            reach += abs(g_mat[k, j]) * _fmax(abs(lo[j]), abs(hi[j]))
            gv += g_mat[k, j] * vdes[j]
        if gv > hvec[k]:
            identity = False
        if rowkind[k] == 0:
            s = _ssm_scale(hvec[k], gv)
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


@cuda.jit(device=True)
def _closed_form(sp: Any, k_rows: int, lo: Any, hi: Any, vdes: Any, g_mat: Any, hvec: Any, qx: Any) -> bool:
    """Box clip into `qx`; True when it is the CPU solver's answer (no row violated at iteration 0)."""
    n = lo.shape[0]
    for j in range(n):
        v = vdes[j]
        if v > hi[j]:
            qx[j] = hi[j]
        elif v < lo[j]:
            qx[j] = lo[j]
        else:
            qx[j] = v
    best = _fmax(sp[SP_QP_TOL], QP_ACCEPT_TOL)
    for k in range(k_rows):
        s = -hvec[k]
        nrm = 0.0
        for j in range(n):
            s += g_mat[k, j] * qx[j]
            nrm += g_mat[k, j] * g_mat[k, j]
        if nrm > 0.0:
            s /= math.sqrt(nrm)
        elif s > 0.0:
            return False
        if s > best:
            return False
    return True


@cuda.jit(device=True)
def _joint_report(
    b: int,
    lim: Any,
    sp: Any,
    cs: Any,
    q_meas: Any,
    dq_meas: Any,
    identity: bool,
    braking: bool,
    meas_ok: bool,
    eff_on: bool,
    qx: Any,
    vdes: Any,
    lo: Any,
    hi: Any,
) -> tuple[int, float]:
    """Active per-joint constraint bits and the velocity margin (kernel's report section)."""
    n = lim.shape[1]
    dt = sp[SP_DT]
    jerk_on = sp[SP_JERK_ON] != 0.0
    mask = 0
    vel_margin = INF
    for j in range(n):
        x = qx[j]
        if not identity and x != vdes[j]:
            qc = cs[b, 0, j]
            vc = cs[b, 1, j]
            a_m = lim[L_AMAX, j]
            v_m = lim[L_VMAX, j]
            up_side = vdes[j] > x
            eps = 1e-12 * (1.0 + abs(x))
            if up_side:
                if x >= v_m - eps:
                    mask |= A_VELOCITY
                if x >= vc + a_m * dt - eps:
                    mask |= A_ACCELERATION
                if x >= _viab_up(lim[L_QMAX, j] - qc, a_m, dt) - eps:
                    mask |= A_POSITION
            else:
                if x <= -v_m + eps:
                    mask |= A_VELOCITY
                if x <= vc - a_m * dt + eps:
                    mask |= A_ACCELERATION
                if x <= -_viab_up(qc - lim[L_QMIN, j], a_m, dt) + eps:
                    mask |= A_POSITION
            if (up_side and x >= hi[j] - eps) or (not up_side and x <= lo[j] + eps):
                if jerk_on and abs((x - vc) / dt - cs[b, 2, j]) >= lim[L_JMAX, j] * dt - 1e-9:
                    mask |= A_JERK
                if eff_on and lim[L_KP, j] > 0.0:
                    tau = lim[L_KP, j] * (qc + x * dt - q_meas[b, j]) - lim[L_KD, j] * dq_meas[b, j]
                    if abs(tau) >= lim[L_EFF, j] * (1.0 - 1e-9):
                        mask |= A_EFFORT
        if braking and meas_ok and sp[SP_EFFORT_ON] != 0.0 and lim[L_KP, j] > 0.0:
            tau = lim[L_KP, j] * (cs[b, 0, j] + x * dt - q_meas[b, j]) - lim[L_KD, j] * dq_meas[b, j]
            if abs(tau) > lim[L_EFF, j]:
                mask |= A_EFFORT_RELAXED
        vm = lim[L_VMAX, j] - abs(x)
        if vm < vel_margin:
            vel_margin = vm
    return mask, vel_margin


@cuda.jit(device=True)
def _filter_state(b: int, params: Any, model: Any, ins: Any, outs: Any, work: Any) -> int:
    """One filter cycle of state b (see the module docstring); returns FLAG_DONE or FLAG_DEFERRED.

    Arguments grouped as the kernel's (:func:`get_kernel`); `work` holds this thread's local arrays.
    """
    lim, sp, ws_mask = params
    cs, q_meas, dq_meas, q_pol, q_op, has_op, human, n_human, v_h_meas, mode = ins
    out, rep = outs[0], outs[1]
    frames, pts, jac, lo, hi, vdes, target, g_mat, hvec, rowkind, lo_hard, hi_hard, qx = work
    pt_radius = model[10]
    n = lim.shape[1]
    dt = sp[SP_DT]
    fault, meas_ok, human_ok = _validate(b, lim, sp, q_meas, dq_meas, q_pol, q_op, has_op, human, n_human)
    stop = mode[b] != 0 or fault != K_OK
    mask = 0
    _kinematics(cs[b, 0], model, frames, pts, jac)
    k_rows, d_min, ssm_margin, ssm_stop = _ssm_rows(
        b, sp, pts, jac, pt_radius, human, n_human, v_h_meas, human_ok, g_mat, hvec, rowkind
    )
    pfl_on = sp[SP_PFL_ON] != 0.0
    alpha = 0.0
    if has_op[b] and fault == K_OK:
        if sp[SP_BLEND_MODE] == 0.0:
            alpha = sp[SP_ALPHA_FIXED]
        else:
            alpha = _blend_alpha(d_min, sp[SP_BLEND_DMIN], sp[SP_BLEND_DMAX])
        for j in range(n):
            target[j] = alpha * q_op[b, j] + (1.0 - alpha) * q_pol[b, j]
        if alpha > 0.0:
            mask |= A_BLEND
    else:
        for j in range(n):
            target[j] = q_pol[b, j]
    braking = stop or ssm_stop
    if stop:
        mask |= A_STOP
    if ssm_stop and not stop:
        mask |= A_SSM_STOP
    for j in range(n):
        vdes[j] = 0.0 if braking else (target[j] - cs[b, 0, j]) / dt
    eff_on = sp[SP_EFFORT_ON] != 0.0 and meas_ok and not braking
    jmask, not_viable = _joint_bounds(b, lim, sp, cs, q_meas, dq_meas, eff_on, lo, hi, lo_hard, hi_hard)
    mask |= jmask
    if not_viable != 0:
        if fault == K_OK:
            fault = K_NOT_VIABLE
        braking = True
    if braking:
        _sync_brake(cs, b, lim, dt, vdes)
    if sp[SP_WS_ON] != 0.0 and not braking:
        k_rows = _ws_rows(sp, ws_mask, pts, jac, k_rows, g_mat, hvec, rowkind)
    k_rows, identity, ssm_sc = _prune(braking, k_rows, lo, hi, vdes, g_mat, hvec, rowkind)
    if identity:
        for j in range(n):
            qx[j] = vdes[j]
    elif not _closed_form(sp, k_rows, lo, hi, vdes, g_mat, hvec, qx):
        return FLAG_DEFERRED
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
    rmask, vel_margin = _joint_report(
        b, lim, sp, cs, q_meas, dq_meas, identity, braking, meas_ok, eff_on, qx, vdes, lo, hi
    )
    mask |= rmask
    pos_margin = INF
    inter2 = 0.0
    safety2 = 0.0
    for j in range(n):
        x = qx[j]
        if not braking:
            e = (x - _fmin(_fmax(vdes[j], lo[j]), hi[j])) * dt
            safety2 += e * e
        q_new = target[j] if identity else cs[b, 0, j] + x * dt
        out[b, j] = q_new
        if fault == K_OK and not braking:
            e = q_new - target[j]
            inter2 += e * e
        cs[b, 2, j] = (x - cs[b, 1, j]) / dt
        cs[b, 1, j] = x
        cs[b, 0, j] = q_new
        pm = _fmin(lim[L_QMAX, j] - q_new, q_new - lim[L_QMIN, j])
        if pm < pos_margin:
            pos_margin = pm
    if braking and fault == K_OK:
        for j in range(n):
            e = out[b, j] - target[j]
            inter2 += e * e
    rep[b, R_FAULT] = fault
    rep[b, R_MASK] = mask
    rep[b, R_INTERVENTION] = math.sqrt(inter2)
    rep[b, R_HUMAN_DIST] = d_min
    rep[b, R_SSM_SCALE] = 0.0 if ssm_stop else ssm_sc
    rep[b, R_ALPHA] = alpha
    rep[b, R_STOPPING] = 1.0 if braking else 0.0
    rep[b, R_POS_MARGIN] = pos_margin
    rep[b, R_VEL_MARGIN] = vel_margin
    rep[b, R_SSM_MARGIN] = ssm_margin
    rep[b, R_QP_ITERS] = 0.0
    rep[b, R_QP_STATUS] = 0.0
    rep[b, R_N_ROWS] = k_rows
    rep[b, R_SAFETY_INTERVENTION] = math.sqrt(safety2)
    return FLAG_DONE


_KERNELS: dict[tuple[int, int, int, int], Any] = {}


def work_sizes(n: int, n_frames: int, m_points: int, h_max: int) -> tuple[int, int, int, int]:
    """Local-array sizes (n, frames, points, rows) of one thread; >= 1 each (no empty local arrays)."""
    k_max = max(1, m_points * h_max + 6 * m_points)
    return max(1, n), max(1, n_frames), max(1, m_points), k_max


def get_kernel(n: int, n_frames: int, m_points: int, h_max: int) -> Any:
    """The batch kernel for a robot of that size (compiled at first launch, cached per size).

    Launch: ``kernel[blocks, threads, stream](params, model, ins, outs)``, four tuples of device
    arrays: ``params = (lim, sp, ws_mask)`` and ``model`` (``parent`` .. ``pt_radius``) as
    :func:`rt_safe_rl.gpu.batch.host_constants` builds them, ``ins = (cs, q, dq, q_pol, q_op, has_op,
    human, n_human, v_h, mode)`` and ``outs = (out, rep, flag)`` shaped like :class:`BatchSafetyFilter`'s
    (B leading), ``flag`` int64 (B,); ``cs`` is updated in place. numba passes a tuple's arrays as
    separate kernel parameters (flattened in order). Grid-stride over B: any grid size works.
    """
    key = work_sizes(n, n_frames, m_points, h_max)
    if key in _KERNELS:
        return _KERNELS[key]
    nn, nf, mm, kk = key

    @cuda.jit
    def batch_filter(params, model, ins, outs):  # type: ignore[no-untyped-def]
        work = (
            cuda.local.array((nf, 4, 4), float64),  # frames
            cuda.local.array((mm, 3), float64),  # pts
            cuda.local.array((mm, 3, nn), float64),  # jac
            cuda.local.array(nn, float64),  # lo
            cuda.local.array(nn, float64),  # hi
            cuda.local.array(nn, float64),  # vdes
            cuda.local.array(nn, float64),  # target
            cuda.local.array((kk, nn), float64),  # g_mat
            cuda.local.array(kk, float64),  # hvec
            cuda.local.array(kk, int64),  # rowkind
            cuda.local.array(nn, float64),  # lo_hard
            cuda.local.array(nn, float64),  # hi_hard
            cuda.local.array(nn, float64),  # qx
        )
        flag = outs[2]
        start = cuda.grid(1)  # type: ignore[call-arg,var-annotated]
        stride = cuda.gridsize(1)  # type: ignore[call-arg,var-annotated]
        for b in range(start, flag.shape[0], stride):
            flag[b] = _filter_state(b, params, model, ins, outs, work)

    _KERNELS[key] = batch_filter
    return batch_filter
