"""Plain-numpy implementation of the safety filter's per-cycle checks (the benchmark baseline).

Same constraint set, same tiers and the same Goldfarb-Idnani projection as :mod:`.kernel`, written
the way one would without a compiler: numpy 4x4 matrix products for the forward kinematics,
vectorised per-joint bounds, numpy linear algebra in the active-set loop. It is what the numba
kernel is measured against (``rt-safe-rl bench safety``) and an independent cross-check of it
(the outputs agree to ~1e-12 rad; summation order differs). Not RT-safe: allocates every call.
Faults / timing (the :class:`SafetyFilter` wrapper logic) are not part of it: it assumes valid,
finite inputs and a viable state, like the benchmark's steady state.
"""

from __future__ import annotations

import numpy as np

from rt_safe_rl.core.robot_model import JT_PRISMATIC, JT_REVOLUTE, RobotModel
from rt_safe_rl.core.safety import kernel as kn
from rt_safe_rl.core.safety.config import SafetyConfig
from rt_safe_rl.core.safety.filter import build_params
from rt_safe_rl.core.safety.qp import ACTIVE_TOL


def _motion(jt: int, axis: np.ndarray, x: float) -> np.ndarray:
    m = np.eye(4)
    if jt == JT_REVOLUTE:
        ax, ay, az = axis
        c, s = np.cos(x), np.sin(x)
        t = 1.0 - c
        m[:3, :3] = [
            [t * ax * ax + c, t * ax * ay - s * az, t * ax * az + s * ay],
            [t * ax * ay + s * az, t * ay * ay + c, t * ay * az - s * ax],
            [t * ax * az - s * ay, t * ay * az + s * ax, t * az * az + c],
        ]
    elif jt == JT_PRISMATIC:
        m[:3, 3] = axis * x
    return m


def _sync_brake(v: np.ndarray, a_max: np.ndarray, dt: float) -> np.ndarray:
    """Synchronised stop velocity (mirror of kernel.sync_brake_velocity)."""
    t_stop = float(np.max(np.abs(v) / a_max)) if v.size else 0.0
    return v * (1.0 - dt / t_stop) if t_stop > dt else np.zeros_like(v)


def _viab(dist: np.ndarray, a: np.ndarray | float, dt: float) -> np.ndarray:
    ad = a * dt
    with np.errstate(invalid='ignore'):
        v = np.sqrt(ad * ad + 2.0 * a * np.maximum(dist, 0.0)) - ad
    return np.where(dist < 0.0, dist / dt, v)


def _stop_dist(v: np.ndarray, a: np.ndarray, a_max: np.ndarray, j_max: np.ndarray) -> np.ndarray:
    a = np.clip(a, -a_max, a_max)
    t1 = (a + a_max) / j_max
    v1 = v + (a * a - a_max * a_max) / (2 * j_max)
    v3 = a_max * a_max / (2 * j_max)
    full = (
        v * t1
        + 0.5 * a * t1 * t1
        - j_max * t1**3 / 6
        + (v1 * v1 - v3 * v3) / (2 * a_max)
        + a_max**3 / (6 * j_max * j_max)
    )
    ap = np.maximum(a, 0.0)
    vp = v + ap * ap / (2 * j_max)
    with np.errstate(invalid='ignore'):
        low = vp * np.sqrt(np.maximum(vp, 0.0) / j_max) + vp * ap / j_max
    return np.where(v <= 0.0, 0.0, np.where(v1 >= v3, full, low))


def _jerk_viab(
    dist: np.ndarray,
    v: np.ndarray,
    a_max: np.ndarray,
    j_max: np.ndarray,
    dt: float,
    v_lo: np.ndarray,
    v_hi: np.ndarray,
) -> np.ndarray:
    """Vectorised bisection of the jerk-consistent braking bound (see formulas)."""

    def g(x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid='ignore'):
            return x * dt + _stop_dist(x, (x - v) / dt, a_max, j_max) - dist

    out = v_hi.copy()
    need = np.flatnonzero(g(v_hi) > 0.0)  # usually none: only joints near a position limit
    if need.size == 0:
        return out
    dist, v, a_max, j_max = dist[need], v[need], a_max[need], j_max[need]
    lo, hi = v_lo[need].copy(), v_hi[need].copy()

    def g_sub(x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid='ignore'):
            return x * dt + _stop_dist(x, (x - v) / dt, a_max, j_max) - dist

    bad_lo = g_sub(lo) > 0.0
    lo0 = lo.copy()
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        good = g_sub(mid) <= 0.0
        lo = np.where(good, mid, lo)
        hi = np.where(good, hi, mid)
    out[need] = np.where(bad_lo, lo0, lo)
    return out


def _project_or_retry(
    vdes: np.ndarray, lo: np.ndarray, hi: np.ndarray, g: np.ndarray, h: np.ndarray, sp: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Projection of vdes; on failure once more from the clipped proposal (kernel._project_or_retry)."""
    x, ok = project_numpy(vdes, lo, hi, g, h, sp[kn.SP_QP_TOL], int(sp[kn.SP_QP_MAXIT]))
    if not ok:
        x, ok = project_numpy(np.clip(vdes, lo, hi), lo, hi, g, h, sp[kn.SP_QP_TOL], int(sp[kn.SP_QP_MAXIT]))
    return x, ok


def project_numpy(
    x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, g: np.ndarray, h: np.ndarray, tol: float, max_iter: int
) -> tuple[np.ndarray, bool]:
    """Goldfarb-Idnani projection onto box + half-spaces, numpy version. Returns (x, ok)."""
    x = np.clip(x0, lo, hi)
    bsign = np.where(x0 > hi, 1, np.where(x0 < lo, -1, 0))
    u_b = np.where(bsign == 1, x0 - hi, np.where(bsign == -1, lo - x0, 0.0))
    if g.shape[0] == 0:
        return x, True
    norms = np.linalg.norm(g, axis=1)
    active: list[int] = []
    u_s: list[float] = []
    for it in range(max_iter):
        viol = (g @ x - h) / np.where(norms > 0, norms, 1.0)
        if np.any((norms == 0) & (g @ x - h > 0)):
            return x, False
        if active:
            viol[active] = -np.inf
        free = bsign == 0
        over = np.where(free, x - hi, -np.inf)
        under = np.where(free, lo - x, -np.inf)
        cands = (viol.max(), over.max(), under.max())
        best = max(cands)
        if best <= (tol if it > 0 else max(tol, ACTIVE_TOL)):  # start point: see qp.py
            if active:  # the active rows must still be tight (see qp.ACTIVE_TOL)
                act = np.asarray(active)
                if np.any(g[act] @ x - h[act] > ACTIVE_TOL * norms[act]):
                    return x, False
            return x, True
        w, p_row, p_col = _violated_direction(cands, best, viol, over, under, g)
        x, u_b, u_s, ok = _gi_add_constraint(x, w, p_row, p_col, lo, hi, g, h, bsign, u_b, active, u_s)
        if not ok:
            return x, False
    return x, False


def _violated_direction(
    cands: tuple[float, float, float],
    best: float,
    viol: np.ndarray,
    over: np.ndarray,
    under: np.ndarray,
    g: np.ndarray,
) -> tuple[np.ndarray, int, int]:
    """The most violated constraint of :func:`project_numpy`'s iterate as (normal w, half-space row
    or -1, box column or -1): a half-space row first, then an upper, then a lower box bound."""
    n = g.shape[1]
    if cands[0] == best:
        w = g[int(np.argmax(viol))].copy()
        p_row, p_col = int(np.argmax(viol)), -1
    elif cands[1] == best:
        p_col = int(np.argmax(over))
        w, p_row = np.zeros(n), -1
        w[p_col] = 1.0
    else:
        p_col = int(np.argmax(under))
        w, p_row = np.zeros(n), -1
        w[p_col] = -1.0
    return w, p_row, p_col


def _gi_add_constraint(
    x: np.ndarray,
    w: np.ndarray,
    p_row: int,
    p_col: int,
    lo: np.ndarray,
    hi: np.ndarray,
    g: np.ndarray,
    h: np.ndarray,
    bsign: np.ndarray,
    u_b: np.ndarray,
    active: list[int],
    u_s: list[float],
) -> tuple[np.ndarray, np.ndarray, list[float], bool]:
    """Inner loop of :func:`project_numpy`: step toward the violated constraint (w, p_row, p_col),
    dropping blocking active rows / fixed box bounds, until it is added. Updates `bsign` and
    `active` in place; returns (x, u_b, u_s, ok), ok False when no step is possible."""
    n, k_rows = x.shape[0], g.shape[0]
    u_p = 0.0
    for _inner in range(n + k_rows + 2):
        free = bsign == 0
        gs = g[active] if active else np.zeros((0, n))
        gsf = gs[:, free]
        if active:
            c = np.linalg.solve(gsf @ gsf.T, gsf @ w[free])
        else:
            c = np.zeros(0)
        r = w - gs.T @ c
        z = np.where(free, r, 0.0)
        r_b = np.where(free, 0.0, r * bsign)
        viol_p = (
            (w @ x - h[p_row])
            if p_row >= 0
            else (x[p_col] - hi[p_col] if w[p_col] > 0 else lo[p_col] - x[p_col])
        )
        wz = float(w @ z)
        t2 = max(viol_p / wz, 0.0) if wz > 1e-14 * float(w @ w) else np.inf
        t1, drop_s, drop_b = np.inf, -1, -1
        for a, ca in enumerate(c):
            if ca > 1e-15 and u_s[a] / ca < t1:
                t1, drop_s, drop_b = u_s[a] / ca, a, -1
        fixed = np.flatnonzero((bsign != 0) & (r_b > 1e-15))
        if fixed.size:
            ratios = u_b[fixed] / r_b[fixed]
            j = int(np.argmin(ratios))
            if ratios[j] < t1:
                t1, drop_b, drop_s = float(ratios[j]), int(fixed[j]), -1
        if t1 == np.inf and t2 == np.inf:
            return x, u_b, u_s, False
        t = t2 if t2 <= t1 else t1
        if t2 < np.inf:
            x = x - t * z
        u_s = [u - t * ca for u, ca in zip(u_s, c, strict=True)]
        u_b = np.where(bsign != 0, u_b - t * r_b, u_b)
        u_p += t
        if t2 <= t1:
            if p_row >= 0:
                active.append(p_row)
                u_s.append(u_p)
            else:
                x[p_col] = hi[p_col] if w[p_col] > 0 else lo[p_col]
                bsign[p_col] = 1 if w[p_col] > 0 else -1
                u_b[p_col] = u_p
            break
        if drop_s >= 0:
            del active[drop_s]
            del u_s[drop_s]
        else:
            bsign[drop_b] = 0
            u_b[drop_b] = 0.0
    return x, u_b, u_s, True


def _stacked_rows(
    rows: list[np.ndarray],
    hs: list[np.ndarray],
    braking: bool,
    vdes: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The coupled rows (g, h) that can bind within the box [lo, hi], and whether vdes already
    satisfies every constraint (identity: no projection needed). No rows while braking."""
    identity = False
    if braking or not rows:
        g, h = np.zeros((0, n)), np.zeros(0)
    else:
        g, h = np.concatenate(rows), np.concatenate(hs)
        reach = np.abs(g) @ np.maximum(np.abs(lo), np.abs(hi))
        keep = reach > h
        identity = bool(np.all((vdes >= lo) & (vdes <= hi)) and np.all(g @ vdes <= h))
        g, h = g[keep], h[keep]
    if braking:
        identity = False
    elif not rows:
        identity = bool(np.all((vdes >= lo) & (vdes <= hi)))
    return g, h, identity


def _least_violation(
    vdes: np.ndarray,
    x: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    g: np.ndarray,
    h: np.ndarray,
    sp: np.ndarray,
) -> np.ndarray:
    """Fallback when the projection fails: from the braking point `x` (in the box), bisect the
    smallest uniform relaxation s [m/s] of the rows that makes the set non-empty, then project vdes
    onto it (from the braking point if that fails). Returns `x` when no relaxation is found."""
    s_hi = float(np.max(g @ x - h)) if h.size else 0.0
    if s_hi > 0.0:
        s_lo = 0.0
        for _ in range(kn.FALLBACK_BISECTIONS):  # non-empty? tested from the braking point
            s_mid = 0.5 * (s_lo + s_hi)
            _, ok = project_numpy(x, lo, hi, g, h + s_mid, sp[kn.SP_QP_TOL], int(sp[kn.SP_QP_MAXIT]))
            s_lo, s_hi = (s_lo, s_mid) if ok else (s_mid, s_hi)
        x2, ok = project_numpy(vdes, lo, hi, g, h + s_hi, sp[kn.SP_QP_TOL], int(sp[kn.SP_QP_MAXIT]))
        if not ok:  # from the braking point, where the bisection found the set
            x2, ok = project_numpy(x, lo, hi, g, h + s_hi, sp[kn.SP_QP_TOL], int(sp[kn.SP_QP_MAXIT]))
        if ok:
            x = x2
    return x


class NumpySafetyFilter:
    """Per-cycle filter in plain numpy (see the module docstring). ``cmd_state`` is (3, n)."""

    def __init__(self, model: RobotModel, cfg: SafetyConfig | None = None) -> None:
        self.model = model
        self.cfg = cfg or SafetyConfig()
        self.lim, self.sp, self.ws = build_params(model, self.cfg)
        self.cmd_state = np.zeros((3, model.n_joints))

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Monitored points (M,3) and Jacobians (M,3,n) by numpy 4x4 products."""
        m = self.model
        frames: list[np.ndarray] = []
        for f in range(m.parent.shape[0]):
            x = 0.0 if m.qidx[f] < 0 else m.mult[f] * q[m.qidx[f]] + m.offs[f]
            local = m.origin[f] @ _motion(int(m.jtype[f]), m.axis[f], x)
            frames.append(local if m.parent[f] < 0 else frames[m.parent[f]] @ local)
        tf = np.stack(frames) if frames else np.zeros((0, 4, 4))
        pts = np.einsum('mij,mj->mi', tf[m.pt_frame, :3, :3], m.pt_offset) + tf[m.pt_frame, :3, 3]
        jac = np.zeros((m.n_points, 3, m.n_joints))
        for f in range(len(frames)):
            k = m.qidx[f]
            if m.jtype[f] == 0 or k < 0:
                continue
            z = tf[f, :3, :3] @ m.axis[f]
            sel = m.ancestor[m.pt_frame, f]
            if not np.any(sel):
                continue
            if m.jtype[f] == JT_REVOLUTE:
                jac[sel, :, k] += m.mult[f] * np.cross(z, pts[sel] - tf[f, :3, 3])
            else:
                jac[sel, :, k] += m.mult[f] * z
        return pts, jac

    def step(
        self, q_meas: np.ndarray, dq_meas: np.ndarray, q_pol: np.ndarray, human: np.ndarray | None
    ) -> np.ndarray:
        """One cycle (normal mode, no operator): returns the safe command [rad]; updates cmd_state."""
        lim, sp, cs = self.lim, self.sp, self.cmd_state
        dt = sp[kn.SP_DT]
        qc, vc, ac = cs[0], cs[1], cs[2]
        a_m = lim[kn.L_AMAX]
        pts, jac = self.fk(qc)
        rows: list[np.ndarray] = []
        hs: list[np.ndarray] = []
        ssm_stop = False
        if sp[kn.SP_SSM_ON] and human is not None and len(human):
            ssm_stop = self._ssm_rows(pts, jac, human, rows, hs)
        braking = ssm_stop
        vdes = _sync_brake(vc, a_m, dt) if braking else (q_pol - qc) / dt
        lo, hi, lo_via, up_via = self._joint_bounds(qc, vc, q_meas, dq_meas, braking)
        lo_hard, hi_hard = lo.copy(), hi.copy()
        if sp[kn.SP_JERK_ON]:
            lo, hi = self._jerk_bounds(qc, vc, ac, lo, hi, lo_via, up_via)
        if sp[kn.SP_WS_ON] and not braking and np.any(self.ws):
            self._ws_rows(pts, jac, rows, hs)
        g, h, identity = _stacked_rows(rows, hs, braking, vdes, lo, hi, qc.shape[0])
        if identity:
            x = vdes
            out = q_pol.copy()
        else:
            x = self._solve(vdes, vc, lo, hi, lo_hard, hi_hard, g, h)
            out = qc + x * dt
        cs[2] = (x - vc) / dt
        cs[1] = x
        cs[0] = out
        return out

    def _ssm_rows(
        self,
        pts: np.ndarray,
        jac: np.ndarray,
        human: np.ndarray,
        rows: list[np.ndarray],
        hs: list[np.ndarray],
    ) -> bool:
        """Append the SSM rows (joint-velocity space, per monitored point x human point) and their
        bounds [m/s] to `rows` / `hs`; True when SSM demands a stop (a zero bound, PFL off)."""
        sp = self.sp
        ssm_stop = False
        diff = human[None, :, :] - pts[:, None, :]
        dist = np.linalg.norm(diff, axis=2)
        d = dist - self.model.point_radius_m[:, None]
        v_h = np.where(d <= sp[kn.SP_SSM_NEAR_D], sp[kn.SP_SSM_VH_NEAR], sp[kn.SP_SSM_VH])
        a, tr = sp[kn.SP_SSM_A], sp[kn.SP_SSM_TR]
        arg = v_h**2 + (a * tr) ** 2 + 2 * a * (d - sp[kn.SP_SSM_CTOT])
        vmax = np.maximum(np.sqrt(np.maximum(arg, 0.0)) - (a * tr + v_h), 0.0)
        vmax = np.where(arg <= 0, 0.0, vmax)
        if sp[kn.SP_PFL_ON]:
            n_h = human.shape[0]
            slots = np.arange(n_h)
            per_point = sp[kn.SP_PFL_BASE + np.minimum(slots, kn.PFL_SLOTS - 1)]
            v_pfl = np.where(slots < kn.PFL_SLOTS, per_point, sp[kn.SP_PFL_V])
            vmax = np.maximum(vmax, v_pfl[None, :])
        elif np.any(vmax <= 0.0):
            ssm_stop = True
        unit = diff / dist[:, :, None]
        rows.append(np.einsum('mhk,mkn->mhn', unit, jac).reshape(-1, jac.shape[2]))
        hs.append(vmax.reshape(-1))
        return ssm_stop

    def _joint_bounds(
        self, qc: np.ndarray, vc: np.ndarray, q_meas: np.ndarray, dq_meas: np.ndarray, braking: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-joint velocity bounds [rad/s] from the velocity, acceleration and braking-viable
        position limits, tightened by the effort limits (PD model) unless braking. Returns
        (lo, hi, lo_via, up_via), the last two the position-viability bounds alone."""
        lim, sp = self.lim, self.sp
        dt = sp[kn.SP_DT]
        q_min, q_max, v_m, a_m = lim[kn.L_QMIN], lim[kn.L_QMAX], lim[kn.L_VMAX], lim[kn.L_AMAX]
        up_via = _viab(q_max - qc, a_m, dt)
        lo_via = -_viab(qc - q_min, a_m, dt)
        lo = np.maximum.reduce([-v_m, vc - a_m * dt, lo_via])
        hi = np.minimum.reduce([v_m, vc + a_m * dt, up_via])
        if sp[kn.SP_EFFORT_ON] and not braking:
            kp, kd, eff = lim[kn.L_KP], lim[kn.L_KD], lim[kn.L_EFF]
            use = (kp > 0) & np.isfinite(eff)
            with np.errstate(divide='ignore', invalid='ignore'):
                base = q_meas + kd * dq_meas / kp
                el = np.where(use, (base - eff / kp - qc) / dt, -np.inf)
                eu = np.where(use, (base + eff / kp - qc) / dt, np.inf)
            eff_ok = np.maximum(lo, el) <= np.minimum(hi, eu)
            lo = np.where(eff_ok, np.maximum(lo, el), lo)
            hi = np.where(eff_ok, np.minimum(hi, eu), hi)
        return lo, hi, lo_via, up_via

    def _jerk_bounds(
        self,
        qc: np.ndarray,
        vc: np.ndarray,
        ac: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        lo_via: np.ndarray,
        up_via: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) [rad/s] tightened by the jerk limit, the acceleration shaping near the velocity
        limit and the jerk-consistent braking bound; where incompatible with (lo, hi), kept hard."""
        lim, dt = self.lim, self.sp[kn.SP_DT]
        q_min, q_max, v_m = lim[kn.L_QMIN], lim[kn.L_QMAX], lim[kn.L_VMAX]
        a_m, j_m = lim[kn.L_AMAX], lim[kn.L_JMAX]
        k = j_m / a_m
        a_lo_s = np.maximum(k * (np.maximum(-v_m, lo_via) - vc), -a_m)
        a_up_s = np.minimum(k * (np.minimum(v_m, up_via) - vc), a_m)
        sl = vc + np.maximum(ac - j_m * dt, a_lo_s) * dt
        su = vc + np.minimum(ac + j_m * dt, a_up_s) * dt
        up_mask = (su > 0.0) & (su > sl)
        su = np.where(up_mask, _jerk_viab(q_max - qc, vc, a_m, j_m, dt, np.maximum(sl, 0.0), su), su)
        dn_mask = (sl < 0.0) & (sl < su)
        sl = np.where(dn_mask, -_jerk_viab(qc - q_min, -vc, a_m, j_m, dt, np.maximum(-su, 0.0), -sl), sl)
        jerk_ok = np.maximum(lo, sl) <= np.minimum(hi, su)
        new_lo = np.where(jerk_ok, np.maximum(lo, sl), np.where(su < lo, lo, hi))
        new_hi = np.where(jerk_ok, np.minimum(hi, su), np.where(su < lo, lo, hi))
        return new_lo, new_hi

    def _ws_rows(
        self, pts: np.ndarray, jac: np.ndarray, rows: list[np.ndarray], hs: list[np.ndarray]
    ) -> None:
        """Append the workspace-box rows (toward each face, per chosen point) and their braking-viable
        bounds [m/s] to `rows` / `hs`."""
        sp, dt, n = self.sp, self.sp[kn.SP_DT], jac.shape[2]
        wp, wj = pts[self.ws], jac[self.ws]
        d_up = sp[kn.SP_WS_MAX_X : kn.SP_WS_MAX_X + 3] - wp
        d_dn = wp - sp[kn.SP_WS_MIN_X : kn.SP_WS_MIN_X + 3]
        up = np.where(d_up >= 0, _viab(d_up, sp[kn.SP_WS_A], dt), 0.0)
        dn = np.where(d_dn >= 0, _viab(d_dn, sp[kn.SP_WS_A], dt), 0.0)
        rows.append(np.concatenate([wj.reshape(-1, n), -wj.reshape(-1, n)]))
        hs.append(np.concatenate([up.reshape(-1), dn.reshape(-1)]))

    def _solve(
        self,
        vdes: np.ndarray,
        vc: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        lo_hard: np.ndarray,
        hi_hard: np.ndarray,
        g: np.ndarray,
        h: np.ndarray,
    ) -> np.ndarray:
        """The commanded velocity [rad/s]: the projection of vdes; without the jerk tier when that
        fails; else the least-violation fallback from the braking point (kernel tiers)."""
        sp = self.sp
        x, qp_ok = _project_or_retry(vdes, lo, hi, g, h, sp)
        if not qp_ok and sp[kn.SP_JERK_ON]:
            lo, hi = lo_hard, hi_hard
            x, qp_ok = _project_or_retry(vdes, lo, hi, g, h, sp)
        if not qp_ok:
            x_brake = np.clip(_sync_brake(vc, self.lim[kn.L_AMAX], sp[kn.SP_DT]), lo, hi)
            x = _least_violation(vdes, x_brake, lo, hi, g, h, sp)
        return x
