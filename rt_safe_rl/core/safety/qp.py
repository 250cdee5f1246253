"""Exact Euclidean projection onto a box intersected with half-spaces (numba, allocation-free).

Solves ``min 1/2 ||x - x0||^2  s.t.  lo <= x <= hi,  G x <= h`` (G: K x n, K small) with the
dual active-set method of Goldfarb and Idnani (Math. Prog. 27, 1983), specialised to an identity
Hessian and to box constraints:

- start from the exact box-only projection ``clip(x0, lo, hi)`` (dual feasible: multipliers of
  the clipped coordinates are the clipping distances);
- repeatedly add the most violated constraint p, moving x along the part z of p's normal that is
  orthogonal to the active normals and the multipliers along r, taking a partial step (dropping
  the constraint whose multiplier hits zero) or a full step (p becomes active);
- active box constraints just fix coordinates, so the only linear algebra is a Cholesky factor of
  ``G_SF G_SF^T`` (active general rows S restricted to free coordinates F), |S| <= K;
- finite termination; the active normals stay linearly independent (a new constraint is only
  added with z != 0); an empty feasible set is detected (no step possible) and reported.

Test F3: box [-1,1]^2 and u1 + u2 <= 1 from [2, 0.5] gives [1, 0] (clip-then-project gives
[0.75, 0.25], project-then-clip [1, -0.25]). Cross-checked against daqp in the tests.
All work arrays are preallocated by the caller (one tuple, :func:`alloc_workspace`): RT-safe.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

QP_OK = 0
QP_MAX_ITER = 1
QP_INFEASIBLE = 2
QP_INACCURATE = 3  # converged, but an active row drifted off its bound (near-degenerate active set)

# an active row may be off its bound by at most this (scaled by the row norm) when QP_OK is returned;
# rounding leaves ~1e-15, a near-degenerate active set (a relaxed set that is almost a point) up to ~1e-3
ACTIVE_TOL = 1e-9

# the QP workspace `qw` (see :func:`alloc_workspace`): a tuple (qn, qk, chol, bsign, sidx, in_s)
QW_N, QW_K, QW_CHOL, QW_BSIGN, QW_SIDX, QW_IN_S = range(6)
# rows of qn (4, n) float64: result, box multipliers, step direction, dual step of fixed coordinates
QN_X, QN_U_B, QN_Z, QN_R_B = range(4)
N_QN = 4
# rows of qk (3, K) float64: active-row multipliers, Cholesky right-hand side, dual step of active rows
QK_U_S, QK_RHS, QK_C_S = range(3)
N_QK = 3

QpWork = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""The QP workspace (qn, qk, chol, bsign, sidx, in_s) of :func:`alloc_workspace`."""


@nb.njit(cache=True, nogil=True)
def _direction(
    g_mat: np.ndarray,
    p_row: int,
    p_col: int,
    p_sign: float,
    sidx: np.ndarray,
    ns: int,
    bsign: np.ndarray,
    chol: np.ndarray,
    rhs: np.ndarray,
    c_s: np.ndarray,
    z: np.ndarray,
    r_b: np.ndarray,
) -> bool:
    """Split constraint p's normal w into z (orthogonal to the active normals) and dual weights.

    p is a general row (p_row >= 0) or a box bound on coordinate p_col with sign p_sign.
    Fills z (n), c_s (ns: weights of active rows), r_b (n: weights of fixed coordinates).
    Returns False when the Gram matrix is numerically singular.
    """
    n = z.shape[0]
    # rhs = G_SF w_F
    for a in range(ns):
        k = sidx[a]
        if p_row >= 0:
            s = 0.0
            for j in range(n):
                if bsign[j] == 0:
                    s += g_mat[k, j] * g_mat[p_row, j]
        else:
            s = g_mat[k, p_col] * p_sign if bsign[p_col] == 0 else 0.0
        rhs[a] = s
    # chol = cholesky(G_SF G_SF^T)
    for a in range(ns):
        ka = sidx[a]
        for b in range(a + 1):
            kb = sidx[b]
            s = 0.0
            for j in range(n):
                if bsign[j] == 0:
                    s += g_mat[ka, j] * g_mat[kb, j]
            chol[a, b] = s
    for a in range(ns):
        s = chol[a, a]
        for c in range(a):
            s -= chol[a, c] * chol[a, c]
        if s <= 1e-24:
            return False
        chol[a, a] = math.sqrt(s)
        for b in range(a + 1, ns):
            t = chol[b, a]
            for c in range(a):
                t -= chol[b, c] * chol[a, c]
            chol[b, a] = t / chol[a, a]
    for a in range(ns):
        s = rhs[a]
        for c in range(a):
            s -= chol[a, c] * c_s[c]
        c_s[a] = s / chol[a, a]
    for a in range(ns - 1, -1, -1):
        s = c_s[a]
        for c in range(a + 1, ns):
            s -= chol[c, a] * c_s[c]
        c_s[a] = s / chol[a, a]
    # z = w - N_A c ; r_b for fixed coordinates
    for j in range(n):
        if p_row >= 0:
            wj = g_mat[p_row, j]
        else:
            wj = p_sign if j == p_col else 0.0
        s = wj
        for a in range(ns):
            s -= g_mat[sidx[a], j] * c_s[a]
        if bsign[j] == 0:
            z[j] = s
            r_b[j] = 0.0
        else:
            z[j] = 0.0
            r_b[j] = s * bsign[j]
    return True


@nb.njit(cache=True, nogil=True)
def project_box_halfspaces(
    x0: np.ndarray,
    box: np.ndarray,
    g_mat: np.ndarray,
    h: np.ndarray,
    k_rows: int,
    max_iter: int,
    tol: float,
    qw: QpWork,
) -> tuple[int, int]:
    """Project `x0` onto {box[0] <= x <= box[1], G[:k_rows] x <= h[:k_rows]}; result in
    ``qw[QW_N][QN_X]``.

    `box` (2, n): lower, upper bound per variable (requires lower <= upper); `qw`: the workspace of
    :func:`alloc_workspace`. Returns (status, iterations): QP_OK, QP_MAX_ITER (x is in the box;
    G x <= h may be violated by more than tol), QP_INFEASIBLE (empty set) or QP_INACCURATE (an
    active row ended more than ``ACTIVE_TOL`` off its bound: numerically degenerate; x is not to
    be trusted). `tol` bounds the residual of G x <= h (scaled by the row norm). RT-safe, no
    allocation (the rows of the stacked workspace are views).
    """
    lo = box[0]
    hi = box[1]
    qn, qk, chol, bsign, sidx, in_s = qw
    x = qn[QN_X]
    u_b = qn[QN_U_B]
    z = qn[QN_Z]
    r_b = qn[QN_R_B]
    u_s = qk[QK_U_S]
    rhs = qk[QK_RHS]
    c_s = qk[QK_C_S]
    n = x0.shape[0]
    for j in range(n):
        v = x0[j]
        if v > hi[j]:
            x[j] = hi[j]
            bsign[j] = 1
            u_b[j] = v - hi[j]
        elif v < lo[j]:
            x[j] = lo[j]
            bsign[j] = -1
            u_b[j] = lo[j] - v
        else:
            x[j] = v
            bsign[j] = 0
            u_b[j] = 0.0
    for k in range(k_rows):
        in_s[k] = False
    if k_rows == 0:
        return QP_OK, 0
    ns = 0
    for it in range(max_iter):
        # most violated constraint (general rows scaled by their norm; box rows have norm 1). A start
        # point within ACTIVE_TOL of the set is returned as it is: that is the accuracy an OK result
        # guarantees, so a result projected again comes back unchanged (idempotence)
        best = tol if it > 0 else max(tol, ACTIVE_TOL)
        p_row = -1
        p_col = -1
        p_sign = 0.0
        for k in range(k_rows):
            if in_s[k]:
                continue
            s = -h[k]
            nrm = 0.0
            for j in range(n):
                s += g_mat[k, j] * x[j]
                nrm += g_mat[k, j] * g_mat[k, j]
            if nrm > 0.0:
                s /= math.sqrt(nrm)
            elif s > 0.0:
                return QP_INFEASIBLE, it  # 0 <= h_k < 0
            if s > best:
                best = s
                p_row = k
        for j in range(n):
            if bsign[j] != 0:
                continue
            if x[j] - hi[j] > best:
                best = x[j] - hi[j]
                p_row = -1
                p_col = j
                p_sign = 1.0
            elif lo[j] - x[j] > best:
                best = lo[j] - x[j]
                p_row = -1
                p_col = j
                p_sign = -1.0
        if p_row < 0 and p_col < 0:
            # the active rows are assumed tight; check it (they drift when the active normals are
            # nearly dependent, and an OK with a violated row would let the caller trust it)
            for a in range(ns):
                k = sidx[a]
                s = -h[k]
                nrm = 0.0
                for j in range(n):
                    s += g_mat[k, j] * x[j]
                    nrm += g_mat[k, j] * g_mat[k, j]
                if s > ACTIVE_TOL * math.sqrt(nrm):
                    return QP_INACCURATE, it
            return QP_OK, it
        u_p = 0.0
        # inner loop: until p becomes active
        for _inner in range(n + k_rows + 2):
            if not _direction(g_mat, p_row, p_col, p_sign, sidx, ns, bsign, chol, rhs, c_s, z, r_b):
                return QP_INFEASIBLE, it
            # violation of p and ||z||^2
            if p_row >= 0:
                viol = -h[p_row]
                wz = 0.0
                for j in range(n):
                    viol += g_mat[p_row, j] * x[j]
                    wz += g_mat[p_row, j] * z[j]
                wnorm2 = 0.0
                for j in range(n):
                    wnorm2 += g_mat[p_row, j] * g_mat[p_row, j]
            else:
                viol = (x[p_col] - hi[p_col]) if p_sign > 0 else (lo[p_col] - x[p_col])
                wz = z[p_col] * p_sign
                wnorm2 = 1.0
            t2 = np.inf
            if wz > 1e-14 * wnorm2:
                t2 = viol / wz
                if t2 < 0.0:
                    t2 = 0.0
            # partial step: first active multiplier that hits zero
            t1 = np.inf
            drop_s = -1
            drop_b = -1
            for a in range(ns):
                if c_s[a] > 1e-15:
                    tt = u_s[a] / c_s[a]
                    if tt < t1:
                        t1 = tt
                        drop_s = a
                        drop_b = -1
            for j in range(n):
                if bsign[j] != 0 and r_b[j] > 1e-15:
                    tt = u_b[j] / r_b[j]
                    if tt < t1:
                        t1 = tt
                        drop_b = j
                        drop_s = -1
            if t1 == np.inf and t2 == np.inf:
                return QP_INFEASIBLE, it
            t = t2 if t2 <= t1 else t1
            # take the step
            if t2 < np.inf:
                for j in range(n):
                    x[j] -= t * z[j]
            for a in range(ns):
                u_s[a] -= t * c_s[a]
            for j in range(n):
                if bsign[j] != 0:
                    u_b[j] -= t * r_b[j]
            u_p += t
            if t2 <= t1:
                # full step: p becomes active
                if p_row >= 0:
                    sidx[ns] = p_row
                    u_s[ns] = u_p
                    in_s[p_row] = True
                    ns += 1
                else:
                    x[p_col] = hi[p_col] if p_sign > 0 else lo[p_col]
                    bsign[p_col] = 1 if p_sign > 0 else -1
                    u_b[p_col] = u_p
                break
            # partial step: drop the blocking constraint
            if drop_s >= 0:
                in_s[sidx[drop_s]] = False
                for a in range(drop_s, ns - 1):
                    sidx[a] = sidx[a + 1]
                    u_s[a] = u_s[a + 1]
                ns -= 1
            else:
                bsign[drop_b] = 0
                u_b[drop_b] = 0.0
    return QP_MAX_ITER, max_iter


@nb.njit(cache=True, nogil=True)
def alloc_workspace(n: int, k_max: int) -> QpWork:
    """Preallocate the work arrays of :func:`project_box_halfspaces` (n variables, up to `k_max`
    rows); configure time (or once per chunk of the batch kernel), never per cycle. The tuple:

    * ``qn`` (4, n) float64, rows ``QN_X`` (the result x), ``QN_U_B`` (box multipliers), ``QN_Z``
      (step direction), ``QN_R_B`` (dual step of the fixed coordinates);
    * ``qk`` (3, K) float64, rows ``QK_U_S`` (multipliers of the active rows), ``QK_RHS``,
      ``QK_C_S`` (dual step of the active rows);
    * ``chol`` (K, K) float64: Cholesky factor of the active rows' Gram matrix;
    * ``bsign`` (n,) int64: -1 / 0 / +1, coordinate fixed at its lower bound / free / upper bound;
    * ``sidx`` (K,) int64: indices of the active rows;
    * ``in_s`` (K,) bool: row k is active.
    """
    k = max(1, k_max)
    return (
        np.zeros((N_QN, n)),
        np.zeros((N_QK, k)),
        np.zeros((k, k)),
        np.zeros(n, dtype=np.int64),
        np.zeros(k, dtype=np.int64),
        np.zeros(k, dtype=np.bool_),
    )


class QpWorkspace:
    """A preallocated workspace (:func:`alloc_workspace`) with a convenience solve (tests)."""

    def __init__(self, n: int, k_max: int) -> None:
        self.qw = alloc_workspace(n, k_max)

    @property
    def x(self) -> np.ndarray:
        """The result of the last :meth:`solve` (n,)."""
        x: np.ndarray = self.qw[QW_N][QN_X]
        return x

    def solve(
        self,
        x0: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        g_mat: np.ndarray,
        h: np.ndarray,
        k_rows: int,
        max_iter: int = 100,
        tol: float = 1e-11,
    ) -> tuple[int, int]:
        """Run the projection of `x0` onto {lo <= x <= hi, G x <= h} into ``self.x``; returns
        (status, iterations). Allocates (the stacked box)."""
        box = np.stack((np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)))
        return project_box_halfspaces(x0, box, g_mat, h, k_rows, max_iter, tol, self.qw)
