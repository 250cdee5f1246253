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
runs those on the CPU kernel. Everything but the closed-form projection is the CPU kernel's own
code: :func:`kernel.cycle_rows` (up to the projection) and :func:`kernel.cycle_finish` (report,
command update) with every numba function they call, compiled as CUDA device functions from their
Python source (:func:`device_function`) and called on the rows of state b, so the arithmetic is the
same up to the device's fused multiply-adds.

Work arrays are per-thread local arrays whose sizes are compile-time constants (one kernel per robot
size, :func:`get_kernel`). FP64 throughout. Importing this module needs numba only (no GPU; under
``NUMBA_ENABLE_CUDASIM=1`` it runs on numba's CUDA simulator). Not RT code: a throughput path.
"""

from __future__ import annotations

import math
import types
from typing import Any

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


# the CPU kernel's parts, compiled for the device from their own Python source (with every numba
# function they call: kinematics, formulas, ...)
_max2 = device_function(fm.max2)
_cycle_rows = device_function(kn.cycle_rows)
_cycle_finish = device_function(kn.cycle_finish)

# kernel constants (module globals are compile-time constants in numba.cuda)
SP_QP_TOL, VEC_VDES, B_TIERED = kn.SP_QP_TOL, kn.VEC_VDES, kn.B_TIERED
W_VEC, W_BOUNDS, W_G, W_H = kn.W_VEC, kn.W_BOUNDS, kn.W_G, kn.W_H
W_QX = kn.W_QP
"""work[W_QX]: this thread's next command velocity (where the CPU work tuple has the QP workspace)."""
QP_ACCEPT_TOL = ACTIVE_TOL
N_VEC_GPU = max(kn.VEC_VDES, kn.VEC_TARGET) + 1
"""Rows of the GPU's vec work array: VEC_REF (the CPU QP retry's) is not needed here."""


@cuda.jit(device=True)
def _closed_form(sp: Any, k_rows: int, box: Any, vdes: Any, g_mat: Any, hvec: Any, qx: Any) -> bool:
    """Box clip into `qx`; True when it is the CPU solver's answer (no row violated at iteration 0)."""
    n = vdes.shape[0]
    for j in range(n):
        v = vdes[j]
        if v > box[1, j]:
            qx[j] = box[1, j]
        elif v < box[0, j]:
            qx[j] = box[0, j]
        else:
            qx[j] = v
    best = _max2(sp[SP_QP_TOL], QP_ACCEPT_TOL)
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
def _filter_state(b: int, params: Any, model: Any, ins: Any, outs: Any, work: Any) -> int:
    """One filter cycle of state b (see the module docstring); returns FLAG_DONE or FLAG_DEFERRED.

    :func:`kernel.filter_kernel` on the rows of state b with the closed-form projection. Arguments
    grouped as the kernel's (:func:`get_kernel`); `work` holds this thread's local arrays (the CPU
    kernel's work tuple with ``qx`` in place of the QP workspace).
    """
    cs_all, q, dq, q_pol, q_op, has_op, human, n_human, v_h, mode = ins
    cs = cs_all[b]
    inputs = (q[b], dq[b], q_pol[b], q_op[b], has_op[b], human[b], n_human[b], v_h[b], mode[b])
    cycle = _cycle_rows(params, model, cs, inputs, work)
    vdes = work[W_VEC][VEC_VDES]
    qx = work[W_QX]
    if cycle[4][0]:  # identity: the proposal satisfies every row
        for j in range(vdes.shape[0]):
            qx[j] = vdes[j]
    elif not _closed_form(params[1], cycle[3], work[W_BOUNDS][B_TIERED], vdes, work[W_G], work[W_H], qx):
        return FLAG_DEFERRED
    _cycle_finish(params, cs, inputs, work, qx, cycle, (0, 0, 0), outs[0][b], outs[1][b])
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
            cuda.local.array((N_VEC_GPU, nn), float64),  # vec: rows VEC_VDES, VEC_TARGET
            cuda.local.array((2, 2, nn), float64),  # bounds: B_TIERED, B_HARD x (lower, upper)
            cuda.local.array((kk, nn), float64),  # g_mat
            cuda.local.array(kk, float64),  # hvec
            cuda.local.array(kk, int64),  # rowkind
            cuda.local.array(nn, float64),  # qx
        )
        flag = outs[2]
        start = cuda.grid(1)  # type: ignore[call-arg,var-annotated]
        stride = cuda.gridsize(1)  # type: ignore[call-arg,var-annotated]
        for b in range(start, flag.shape[0], stride):
            flag[b] = _filter_state(b, params, model, ins, outs, work)

    _KERNELS[key] = batch_filter
    return batch_filter
