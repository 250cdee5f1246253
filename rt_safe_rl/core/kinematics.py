"""Forward-kinematics numba kernels of :class:`~rt_safe_rl.core.robot_model.RobotModel` (RT path).

Flat arrays in (one row per frame: parent index, fixed origin transform, joint type/axis/index,
mimic multiplier/offset, as compiled by ``RobotModel``), preallocated arrays out: no allocation,
no Python objects per call. Units: rad / m, positions in metres. The GPU batch kernel
(:mod:`rt_safe_rl.gpu.kernels`) compiles these same functions as CUDA device functions, so they
keep to what numba.cuda compiles (loops, scalar ``math``; no allocation, no builtin ``min`` /
``max``, which numba.cuda does not type).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

JT_FIXED = 0
JT_REVOLUTE = 1
JT_PRISMATIC = 2

# --------------------------------------------------------------------------------------------
# numba kernels (RT path): no allocation, arrays in, arrays out.
# --------------------------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True, fastmath=False)
def fk_frames_kernel(
    q: np.ndarray,
    parent: np.ndarray,
    origin: np.ndarray,
    jtype: np.ndarray,
    qidx: np.ndarray,
    mult: np.ndarray,
    offs: np.ndarray,
    axis: np.ndarray,
    frames: np.ndarray,
) -> None:
    """World transforms of all compiled frames into `frames` (F,4,4). RT-safe, no allocation."""
    n_frames = parent.shape[0]
    for f in range(n_frames):
        # M = origin[f] @ motion(q)
        jt = jtype[f]
        if jt == JT_FIXED or qidx[f] < 0:
            x = 0.0
        else:
            x = mult[f] * q[qidx[f]] + offs[f]
        # motion transform entries
        m00 = 1.0
        m01 = 0.0
        m02 = 0.0
        m10 = 0.0
        m11 = 1.0
        m12 = 0.0
        m20 = 0.0
        m21 = 0.0
        m22 = 1.0
        tx = 0.0
        ty = 0.0
        tz = 0.0
        ax = axis[f, 0]
        ay = axis[f, 1]
        az = axis[f, 2]
        if jt == JT_REVOLUTE:
            c = math.cos(x)
            s = math.sin(x)
            t = 1.0 - c
            m00 = t * ax * ax + c
            m01 = t * ax * ay - s * az
            m02 = t * ax * az + s * ay
            m10 = t * ax * ay + s * az
            m11 = t * ay * ay + c
            m12 = t * ay * az - s * ax
            m20 = t * ax * az - s * ay
            m21 = t * ay * az + s * ax
            m22 = t * az * az + c
        elif jt == JT_PRISMATIC:
            tx = ax * x
            ty = ay * x
            tz = az * x
        p = parent[f]
        for r in range(3):
            # L = (parent world, or identity) @ origin  (row r)
            if p >= 0:
                l0 = (
                    frames[p, r, 0] * origin[f, 0, 0]
                    + frames[p, r, 1] * origin[f, 1, 0]
                    + frames[p, r, 2] * origin[f, 2, 0]
                )
                l1 = (
                    frames[p, r, 0] * origin[f, 0, 1]
                    + frames[p, r, 1] * origin[f, 1, 1]
                    + frames[p, r, 2] * origin[f, 2, 1]
                )
                l2 = (
                    frames[p, r, 0] * origin[f, 0, 2]
                    + frames[p, r, 1] * origin[f, 1, 2]
                    + frames[p, r, 2] * origin[f, 2, 2]
                )
                l3 = (
                    frames[p, r, 0] * origin[f, 0, 3]
                    + frames[p, r, 1] * origin[f, 1, 3]
                    + frames[p, r, 2] * origin[f, 2, 3]
                    + frames[p, r, 3]
                )
            else:
                l0 = origin[f, r, 0]
                l1 = origin[f, r, 1]
                l2 = origin[f, r, 2]
                l3 = origin[f, r, 3]
            frames[f, r, 0] = l0 * m00 + l1 * m10 + l2 * m20
            frames[f, r, 1] = l0 * m01 + l1 * m11 + l2 * m21
            frames[f, r, 2] = l0 * m02 + l1 * m12 + l2 * m22
            frames[f, r, 3] = l0 * tx + l1 * ty + l2 * tz + l3
        frames[f, 3, 0] = 0.0
        frames[f, 3, 1] = 0.0
        frames[f, 3, 2] = 0.0
        frames[f, 3, 3] = 1.0


@nb.njit(cache=True, nogil=True)
def points_kernel(frames: np.ndarray, pt_frame: np.ndarray, pt_offset: np.ndarray, out_p: np.ndarray) -> None:
    """World positions (M,3) of the monitored points from computed `frames`. RT-safe."""
    for i in range(pt_frame.shape[0]):
        f = pt_frame[i]
        for r in range(3):
            out_p[i, r] = (
                frames[f, r, 0] * pt_offset[i, 0]
                + frames[f, r, 1] * pt_offset[i, 1]
                + frames[f, r, 2] * pt_offset[i, 2]
                + frames[f, r, 3]
            )


@nb.njit(cache=True, nogil=True)
def jacobian_kernel(
    frames: np.ndarray,
    jtype: np.ndarray,
    qidx: np.ndarray,
    mult: np.ndarray,
    axis: np.ndarray,
    pt_frame: np.ndarray,
    ancestor: np.ndarray,
    points: np.ndarray,
    out_j: np.ndarray,
) -> None:
    """Positional Jacobians d p_i / d q (M,3,N) of the monitored points. RT-safe, no allocation.

    `ancestor[f_point, f]` is True when frame f moves the point's frame (f on its root path).
    """
    m_pts = pt_frame.shape[0]
    n_frames = jtype.shape[0]
    out_j[:, :, :] = 0.0
    for i in range(m_pts):
        fp = pt_frame[i]
        for f in range(n_frames):
            if not ancestor[fp, f]:
                continue
            jt = jtype[f]
            k = qidx[f]
            if jt == JT_FIXED or k < 0:
                continue
            # joint axis in world: R_f @ axis (frames[f] already includes the joint rotation,
            # which leaves the axis unchanged)
            zx = frames[f, 0, 0] * axis[f, 0] + frames[f, 0, 1] * axis[f, 1] + frames[f, 0, 2] * axis[f, 2]
            zy = frames[f, 1, 0] * axis[f, 0] + frames[f, 1, 1] * axis[f, 1] + frames[f, 1, 2] * axis[f, 2]
            zz = frames[f, 2, 0] * axis[f, 0] + frames[f, 2, 1] * axis[f, 1] + frames[f, 2, 2] * axis[f, 2]
            w = mult[f]
            if jt == JT_REVOLUTE:
                dx = points[i, 0] - frames[f, 0, 3]
                dy = points[i, 1] - frames[f, 1, 3]
                dz = points[i, 2] - frames[f, 2, 3]
                out_j[i, 0, k] += w * (zy * dz - zz * dy)
                out_j[i, 1, k] += w * (zz * dx - zx * dz)
                out_j[i, 2, k] += w * (zx * dy - zy * dx)
            else:
                out_j[i, 0, k] += w * zx
                out_j[i, 1, k] += w * zy
                out_j[i, 2, k] += w * zz
