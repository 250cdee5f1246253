"""Scalar safety formulas (numba ``njit``, also callable from Python): the building blocks of the
filter kernel and the objects of the reference test vectors (references/safety.md section 8).

Every function is RT-safe: scalars in, scalars out, no allocation. Units in the names / docs.

- ISO/TS 15066 speed and separation monitoring: :func:`ssm_v_max`, :func:`protective_distance`,
  :func:`ssm_scale`.
- ISO/TS 15066 Annex A power and force limiting: :func:`pfl_reduced_mass`, :func:`pfl_v_max`.
- Shared control: :func:`blend_alpha_from_distance`.
- Joint limits: :func:`viability_vel_bounds` (the filter's braking-consistent position bound for
  its semi-implicit command integrator), :func:`del_prete_acc_bounds` (Del Prete RA-L 2018 / tsid,
  for the trapezoidal integrator; used as a cross-check), libfranka-style rate limiting
  (:func:`limit_rate_velocity`, :func:`limit_rate_derivative`, :func:`accel_shaping_bounds`) and
  the single-constraint CBF projection (:func:`cbf_single_halfspace`).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(inline='always', cache=True, nogil=True)
def max2(a: float, b: float) -> float:
    """``max(a, b)`` by numba's own rule (``b if b > a else a``, so ``max(x, y, z) ==
    max2(max2(x, y), z)`` bit for bit): the kernels' max, which the CUDA target compiles too
    (numba.cuda does not type the builtin)."""
    return b if b > a else a


@nb.njit(inline='always', cache=True, nogil=True)
def min2(a: float, b: float) -> float:
    """``min(a, b)`` by numba's own rule (``b if b < a else a``); see :func:`max2`."""
    return b if b < a else a


@nb.njit(cache=True, nogil=True)
def ssm_v_max(d_m: float, v_h_m_s: float, a_m_s2: float, t_r_s: float, c_tot_m: float) -> float:
    """Maximum robot speed toward the human [m/s] at separation `d_m` (ISO/TS 15066, closed form).

    ``sqrt(v_h^2 + (a T_r)^2 + 2 a (d - C_tot)) - (a T_r + v_h)``, clamped at >= 0. Zero at and
    below ``d0 = C_tot + v_h T_r``.
    """
    arg = v_h_m_s * v_h_m_s + (a_m_s2 * t_r_s) ** 2 + 2.0 * a_m_s2 * (d_m - c_tot_m)
    if arg <= 0.0:
        return 0.0
    v = math.sqrt(arg) - (a_m_s2 * t_r_s + v_h_m_s)
    return v if v > 0.0 else 0.0


@nb.njit(cache=True, nogil=True)
def protective_distance(
    v_h_m_s: float,
    v_r_m_s: float,
    t_r_s: float,
    t_s_s: float,
    b_m: float,
    c_m: float,
    z_d_m: float,
    z_r_m: float,
) -> float:
    """Protective separation distance S_p [m], constant-speed form.

    ``S_p = v_h (T_r + T_s) + v_r T_r + B + C + Z_d + Z_r``.
    """
    return v_h_m_s * (t_r_s + t_s_s) + v_r_m_s * t_r_s + b_m + c_m + z_d_m + z_r_m


@nb.njit(cache=True, nogil=True)
def ssm_scale(v_max_m_s: float, v_toward_m_s: float) -> float:
    """Speed scale for one point/human pair: 1 when moving away, else min(1, v_max / v_toward)."""
    if v_toward_m_s <= 0.0:
        return 1.0
    s = v_max_m_s / v_toward_m_s
    return s if s < 1.0 else 1.0


@nb.njit(cache=True, nogil=True)
def pfl_reduced_mass(m_h_kg: float, m_r_kg: float) -> float:
    """Two-body reduced mass mu = (1/m_H + 1/m_R)^-1 [kg]."""
    return 1.0 / (1.0 / m_h_kg + 1.0 / m_r_kg)


@nb.njit(cache=True, nogil=True)
def pfl_v_max(f_max_n: float, k_n_m: float, m_h_kg: float, m_r_kg: float) -> float:
    """Maximum relative contact speed [m/s]: ``F_max / sqrt(mu k)`` (ISO/TS 15066 A.3)."""
    return f_max_n / math.sqrt(pfl_reduced_mass(m_h_kg, m_r_kg) * k_n_m)


@nb.njit(cache=True, nogil=True)
def blend_alpha_from_distance(d_m: float, d_min_m: float, d_max_m: float) -> float:
    """Operator weight alpha_h(d) = clip((d - d_min) / (d_max - d_min), 0, 1)."""
    a = (d_m - d_min_m) / (d_max_m - d_min_m)
    if a < 0.0:
        return 0.0
    if a > 1.0:
        return 1.0
    return a


@nb.njit(cache=True, nogil=True)
def viability_upper_vel(dist_m: float, a_brake: float, dt_s: float) -> float:
    """Largest next velocity v' that can still stop before a limit `dist_m` ahead.

    Command integrator: ``v' = v + a dt; q' = q + v' dt`` (semi-implicit Euler). Braking at
    `a_brake` from (q', v') travels at most ``v'^2 / (2 a)``, so require
    ``v' dt + v'^2 / (2 a) <= dist``: ``v' <= sqrt((a dt)^2 + 2 a dist) - a dt``. For a negative
    distance (already beyond the limit) the bound is ``dist / dt`` (come back within one step).
    Infinite distance -> +inf. The set is invariant: braking at `a_brake` keeps the bound
    satisfied (see module docs of ``kernel``).
    """
    if dist_m == np.inf:
        return np.inf
    if dist_m < 0.0:
        return dist_m / dt_s
    ad = a_brake * dt_s
    return math.sqrt(ad * ad + 2.0 * a_brake * dist_m) - ad


@nb.njit(cache=True, nogil=True)
def viability_vel_bounds(
    q: float, q_min: float, q_max: float, a_brake: float, dt_s: float
) -> tuple[float, float]:
    """(lower, upper) bounds on the next command velocity from the position limits (see above)."""
    return (-viability_upper_vel(q - q_min, a_brake, dt_s), viability_upper_vel(q_max - q, a_brake, dt_s))


@nb.njit(cache=True, nogil=True)
def _del_prete_upper(q: float, dq: float, q_max: float, a_m: float, dt: float) -> float:
    # position bound (ub3 with the braking rule)
    ub_pos = 2.0 * (q_max - q - dt * dq) / (dt * dt)
    if dq > 0.0 and ub_pos <= -dq / dt:
        ub_pos = min(-dq * dq / (2.0 * (q_max - q)), -dq / dt)
    # viability bound
    b = 2.0 * dt * dq + a_m * dt * dt
    c = dq * dq - 2.0 * a_m * (q_max - q - dt * dq)
    disc = b * b - 4.0 * dt * dt * c
    if disc < 0.0:
        x = -dq / dt
    else:
        x = (-b + math.sqrt(disc)) / (2.0 * dt * dt)
    ub_via = max(x, -dq / dt)
    return min(ub_pos, ub_via)


@nb.njit(cache=True, nogil=True)
def del_prete_acc_bounds(
    q: float, dq: float, q_min: float, q_max: float, v_m: float, a_m: float, dt_s: float
) -> tuple[float, float]:
    """Acceleration bounds (lb, ub) [rad/s^2] of Del Prete (RA-L 2018), as implemented by tsid.

    Integrator ``q' = q + dt dq + dt^2 a / 2``. Combines acceleration, velocity, position and
    viability bounds; ``lb > ub`` means the state is not viable.
    """
    ub = min(a_m, (v_m - dq) / dt_s, _del_prete_upper(q, dq, q_max, a_m, dt_s))
    lb = max(-a_m, (-v_m - dq) / dt_s, -_del_prete_upper(-q, -dq, -q_min, a_m, dt_s))
    return lb, ub


@nb.njit(cache=True, nogil=True)
def accel_shaping_bounds(
    v: float, v_lo: float, v_up: float, a_max: float, j_max: float
) -> tuple[float, float]:
    """libfranka step 4: acceleration bounds that shrink near the velocity limits.

    ``a+ = min((j/a)(v_up - v), a_max)``, ``a- = max((j/a)(v_lo - v), -a_max)`` so the velocity
    limit is reached without jerk overshoot.
    """
    k = j_max / a_max
    return max2(k * (v_lo - v), -a_max), min2(k * (v_up - v), a_max)


@nb.njit(cache=True, nogil=True)
def limit_rate_velocity(
    v_up: float,
    v_lo: float,
    a_max: float,
    j_max: float,
    v_cmd: float,
    v_last: float,
    a_last: float,
    dt_s: float,
) -> float:
    """libfranka ``limitRate`` (scalar velocity form). NaN/inf command -> NaN (caller must stop).

    jerk-clamp the implied acceleration change, then clamp the acceleration into the shaped
    bounds of :func:`accel_shaping_bounds`.
    """
    if not math.isfinite(v_cmd):
        return np.nan
    j = ((v_cmd - v_last) / dt_s - a_last) / dt_s
    j = min(max(j, -j_max), j_max)
    a = a_last + j * dt_s
    a_lo, a_up = accel_shaping_bounds(v_last, v_lo, v_up, a_max, j_max)
    a = min(max(a, a_lo), a_up)
    return v_last + a * dt_s


@nb.njit(cache=True, nogil=True)
def limit_rate_derivative(max_derivative: float, cmd: float, last: float, dt_s: float) -> float:
    """libfranka derivative form (e.g. torque rate): ``last + clamp((cmd-last)/dt, +-max) dt``."""
    d = (cmd - last) / dt_s
    d = min(max(d, -max_derivative), max_derivative)
    return last + d * dt_s


@nb.njit(cache=True, nogil=True)
def cbf_single_halfspace(u_nom: float, a: float, b: float) -> float:
    """Closed-form projection of scalar `u_nom` onto {u : a u <= b} (single CBF constraint)."""
    viol = (a * u_nom - b) / (a * a)
    return u_nom - max(0.0, viol) * a


@nb.njit(cache=True, nogil=True)
def position_dependent_velocity_limits(
    q: float, q_min: float, q_max: float, v_max: float, offset: float, decel: float, tol: float
) -> tuple[float, float]:
    """libfranka-style position-dependent joint velocity limits (lower, upper) [rad/s].

    ``up = min(v_max, max(0, -offset + sqrt(max(0, 2 decel (q_max - q))))) - tol`` and the mirror
    image for the lower limit: the square-root shape lets the joint brake before its end stop.
    """
    up = min(v_max, max(0.0, -offset + math.sqrt(max(0.0, 2.0 * decel * (q_max - q))))) - tol
    lo = max(-v_max, min(0.0, offset - math.sqrt(max(0.0, 2.0 * decel * (q - q_min))))) + tol
    return lo, up


@nb.njit(cache=True, nogil=True)
def jerk_limited_stop_distance(v: float, a: float, a_max: float, j_max: float) -> float:
    """Distance [rad] to stop from velocity `v` >= 0 and acceleration `a` with jerk <= j_max and
    deceleration <= a_max (continuous time; 0 for v <= 0).

    Plan: ramp the acceleration down to -a_max at j_max, hold, ramp back to 0 as v reaches 0.
    At low speed (the ramp alone stops the joint) a conservative bound is used.
    """
    if v <= 0.0:
        return 0.0
    if a > a_max:
        a = a_max
    if a < -a_max:
        a = -a_max
    t1 = (a + a_max) / j_max
    v1 = v + (a * a - a_max * a_max) / (2.0 * j_max)
    v3 = a_max * a_max / (2.0 * j_max)
    if v1 >= v3:
        d1 = v * t1 + 0.5 * a * t1 * t1 - j_max * t1 * t1 * t1 / 6.0
        return d1 + (v1 * v1 - v3 * v3) / (2.0 * a_max) + a_max * a_max * a_max / (6.0 * j_max * j_max)
    ap = a if a > 0.0 else 0.0
    vp = v + ap * ap / (2.0 * j_max)
    return vp * math.sqrt(vp / j_max) + vp * ap / j_max


@nb.njit(cache=True, nogil=True)
def jerk_viability_upper_vel(
    dist_m: float, v: float, a_max: float, j_max: float, dt_s: float, v_lo: float, v_hi: float
) -> float:
    """Largest next velocity v' in [v_lo, v_hi] with ``v' dt + S(v', (v' - v)/dt) <= dist``
    (S = :func:`jerk_limited_stop_distance`): a jerk-consistent braking bound, used to shape the
    command before the (jerk-free) viability bound forces a jerk violation. Returns v_lo when even
    v_lo does not satisfy it, v_hi when v_hi does. Bisection, RT-safe.
    """

    def g(x: float) -> float:
        return x * dt_s + jerk_limited_stop_distance(x, (x - v) / dt_s, a_max, j_max) - dist_m

    if g(v_hi) <= 0.0:
        return v_hi
    if g(v_lo) > 0.0:
        return v_lo
    lo = v_lo
    hi = v_hi
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if g(mid) <= 0.0:
            lo = mid
        else:
            hi = mid
    return lo
