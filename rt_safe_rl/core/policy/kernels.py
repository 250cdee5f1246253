"""The compiled form of a policy: a :class:`Program` (op rows over one float32 scratch vector) and
the numba interpreter that runs it (:func:`run_program`) with no Python per op and no allocation.

Producers: :mod:`rt_safe_rl.core.policy.graph` (any TorchScript / fx / plain torch module, traced at
the aten level), :mod:`rt_safe_rl.core.policy.extract` (module-structure matcher and ONNX graphs).

Ops (one int64 row of :data:`ROW` fields each; offsets index the scratch ``s``, ``p`` the params,
``ip`` the int64 index params):

============= =====================================================================================
OP_LINEAR     ``s[dst:dst+n] = act(W @ s[src:src+k] + b)`` (W row-major [n, k] in p)
OP_NORMALIZE  ``(x - mean) / (std + eps)``
OP_LSTM       one LSTM cell step, h and c updated in place (gates i, f, g, o; biases summed)
OP_COPY / OP_ADD / OP_L2NORM   contiguous copy, in-place add, L2 normalisation
OP_MAP        element-wise ``dst[i] = f(a[i], b[i])`` where every operand is contiguous (mode 0),
              a broadcast scalar (mode 1) or gathered / scattered through ``ip`` (mode 2):
              copies, slicing, concat, index_put, activations, arithmetic, clamps
OP_GRU        one GRU cell step (gates r, z, n), h updated in place
OP_ROWS       per-row reductions / normalisations over the last dim: sum, mean, L2 norm, layer
              norm, softmax
============= =====================================================================================

Transcendentals on the linear/LSTM path use a vectorisable float32 exp (Cody-Waite reduction +
degree-7 expm1 polynomial, abs error < 1e-7 on the ranges used); OP_MAP uses libm.
RT-safety: :func:`run_program` is allocation-free and lock-free once compiled (compile at configure).

This module exceeds the house limit of 600 lines on purpose: the numba kernels are one compilation
unit cached on disk (``cache=True``), and numba's cache does not notice a change in an njit function
defined in another file, so :func:`run_program` and every kernel it calls stay in this module (with
the op-code constants and the row layout they read).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numba as nb
import numpy as np
import numpy.typing as npt

OP_LINEAR, OP_NORMALIZE, OP_LSTM, OP_COPY, OP_L2NORM, OP_ADD = 1, 2, 3, 4, 5, 6
OP_MAP, OP_GRU, OP_ROWS = 7, 8, 9
ACT_NONE, ACT_ELU, ACT_RELU, ACT_TANH, ACT_LEAKY = 0, 1, 2, 3, 4
ROW = 12  # ints per op row
PAD = 16  # scratch regions and weight rows are padded to this many floats (one AVX-512 vector)

# OP_MAP kinds: unary 1..39 (operand a), binary 40.. (a, b); float arguments at p[p0], p[p0 + 1]
M_COPY, M_ELU, M_RELU, M_TANH, M_LEAKY, M_SIGMOID, M_SILU, M_NEG, M_ABS, M_EXP = range(10)
M_LOG, M_SQRT, M_RSQRT, M_RECIP, M_SIN, M_COS, M_CLAMP, M_SOFTPLUS, M_GELU, M_GELU_TANH = range(10, 20)
M_HARDSWISH, M_HARDSIGMOID, M_SQUARE, M_SIGN, M_AFFINE, M_MISH, M_SELU = range(20, 27)
M_ADD, M_SUB, M_MUL, M_DIV, M_MAX, M_MIN, M_POW, M_RSUB = range(40, 48)
# OP_ROWS kinds
R_SUM, R_MEAN, R_L2, R_LAYERNORM, R_SOFTMAX, R_MAX = range(6)
# operand modes
CONTIG, SCALAR, INDEXED = 0, 1, 2


def pad(n: int) -> int:
    """n rounded up to a multiple of PAD."""
    return -(-n // PAD) * PAD


@dataclass
class Program:
    """A compiled op list plus its parameters and scratch layout.

    Attributes:
        ops: int64 [n_ops, ROW] rows ``[op, a1, ...]``.
        params: float32 weights, biases, statistics, op arguments.
        scratch_size: floats of scratch (input, intermediates, constants, recurrent state, output).
        ibuf_size: work area for the vectorised exp (largest activation width).
        in_off, in_dim, out_off, out_dim: where the observation goes and the action comes from.
        state: (offset, length) scratch regions holding recurrent state.
        summary: human-readable structure, e.g. 'norm(96) > lstm(96->256) > mlp 256-256-128-29'.
        iparams: int64 scratch addresses for gathered / scattered operands.
        template: float32 [scratch_size] scratch content at reset (constants, initial state);
            None = zeros.
        source: which compiler produced it ('graph' or 'structure').
    """

    ops: npt.NDArray[np.int64]
    params: npt.NDArray[np.float32]
    scratch_size: int
    ibuf_size: int
    in_off: int
    in_dim: int
    out_off: int
    out_dim: int
    state: list[tuple[int, int]] = field(default_factory=list)
    summary: str = ''
    iparams: npt.NDArray[np.int64] | None = None
    template: npt.NDArray[np.float32] | None = None
    source: str = 'structure'

    @property
    def recurrent(self) -> bool:
        """True when the program keeps recurrent state."""
        return bool(self.state)


class Builder:
    """Accumulates op rows, params, index params and the scratch layout of a :class:`Program`."""

    def __init__(self) -> None:
        self.rows: list[list[int]] = []
        self.params: list[npt.NDArray[np.float32]] = []
        self.n_params = 0
        self.iparams: list[npt.NDArray[np.int64]] = []
        self.n_iparams = 0
        self.n_scratch = 0
        self.ibuf = 1
        self.state: list[tuple[int, int]] = []
        self.init: list[tuple[int, npt.NDArray[np.float32]]] = []
        self.desc: list[str] = []

    def param(self, a: Any) -> int:
        """Append float32 values to the params; returns their offset."""
        arr = np.ascontiguousarray(np.asarray(a, dtype=np.float32).ravel())
        off = self.n_params
        self.params.append(arr)
        self.n_params += arr.size
        return off

    def iparam(self, a: Any) -> int:
        """Append int64 scratch addresses to the index params; returns their offset."""
        arr = np.ascontiguousarray(np.asarray(a, dtype=np.int64).ravel())
        off = self.n_iparams
        self.iparams.append(arr)
        self.n_iparams += arr.size
        return off

    def alloc(self, n: int) -> int:
        """Scratch region of n floats, padded to a multiple of PAD (the padding stays zero)."""
        off = self.n_scratch
        self.n_scratch += pad(max(n, 1))
        return off

    def const(self, values: Any) -> int:
        """Scratch region holding `values` from reset on (never written by an op)."""
        v = np.asarray(values, dtype=np.float32).ravel()
        off = self.alloc(v.size)
        self.init.append((off, v))
        return off

    def weights(self, w: Any, padded: bool = True) -> tuple[int, int]:
        """Store W [n, k] (zero-padded to [n, pad(k)] when `padded`); returns (offset, row width)."""
        w = np.asarray(w, dtype=np.float32)
        n, k = w.shape
        kp = pad(k) if padded else k
        wp = np.zeros((n, kp), np.float32)
        wp[:, :k] = w
        return self.param(wp), kp

    def op(self, *fields: int) -> None:
        """Append one op row."""
        row = [int(f) for f in fields]
        if len(row) > ROW:
            raise ValueError(f'op row with {len(row)} fields > {ROW}')
        self.rows.append(row + [0] * (ROW - len(row)))

    def linear(self, src: int, w: Any, b: Any | None, act: int, padded: bool = True) -> tuple[int, int]:
        """Linear layer from scratch `src` into a new region; returns (dst, n)."""
        w = np.asarray(w, dtype=np.float32)
        n = w.shape[0]
        dst = self.alloc(n)
        self.linear_into(src, w, b, act, dst, padded)
        return dst, n

    def linear_into(self, src: int, w: Any, b: Any | None, act: int, dst: int, padded: bool = True) -> None:
        """Linear layer from scratch `src` into the existing region `dst`."""
        w = np.asarray(w, dtype=np.float32)
        n = w.shape[0]
        b_off = self.param(b) if b is not None else -1
        w_off, kp = self.weights(w, padded)
        self.op(OP_LINEAR, src, kp, dst, n, w_off, b_off, act)
        self.ibuf = max(self.ibuf, n)

    def build(
        self, in_off: int, in_dim: int, out_off: int, out_dim: int, source: str = 'structure'
    ) -> Program:
        """The finished :class:`Program`."""
        params = np.concatenate(self.params) if self.params else np.zeros(1, np.float32)
        ip = np.concatenate(self.iparams) if self.iparams else np.zeros(1, np.int64)
        size = max(self.n_scratch, 1)
        template = None
        if self.init:
            template = np.zeros(size, np.float32)
            for off, v in self.init:
                template[off : off + v.size] = v
        return Program(
            ops=np.array(self.rows, dtype=np.int64).reshape(-1, ROW),
            params=params.astype(np.float32),
            scratch_size=size,
            ibuf_size=self.ibuf,
            in_off=in_off,
            in_dim=in_dim,
            out_off=out_off,
            out_dim=out_dim,
            state=list(self.state),
            summary=' > '.join(self.desc),
            iparams=ip,
            template=template,
            source=source,
        )


# numba kernels (compiled once per process; cache=True keeps the machine code on disk)


# All kernels index views with the loop variable only: numba's wraparound check on a computed
# index (``s[off + i]``) blocks vectorisation, a slice view does not allocate.


@nb.njit(cache=True, fastmath=True, boundscheck=False, nogil=True)
def _exp_inplace(v: Any, ibuf: Any, k: float) -> None:
    """v[:] = exp(k * v) (vectorised; argument clamped to the float32 range)."""
    l2e = np.float32(1.4426950408889634)
    ln2hi = np.float32(0.693359375)
    ln2lo = np.float32(-2.12194440e-4)
    kf = np.float32(k)
    n = v.shape[0]
    ib = ibuf[:n]
    for i in range(n):
        x = min(max(kf * v[i], np.float32(-87.0)), np.float32(88.0))
        nf = np.floor(x * l2e + np.float32(0.5))
        ib[i] = (np.int32(nf) + np.int32(127)) << np.int32(23)
    p2 = ib.view(np.float32)
    for i in range(n):
        x = min(max(kf * v[i], np.float32(-87.0)), np.float32(88.0))
        nf = np.floor(x * l2e + np.float32(0.5))
        r = x - nf * ln2hi - nf * ln2lo
        p = np.float32(1.0 / 5040.0)
        p = p * r + np.float32(1.0 / 720.0)
        p = p * r + np.float32(1.0 / 120.0)
        p = p * r + np.float32(1.0 / 24.0)
        p = p * r + np.float32(1.0 / 6.0)
        p = p * r + np.float32(0.5)
        em1 = r + r * r * p
        v[i] = p2[i] * em1 + p2[i]


@nb.njit(cache=True, fastmath=True, boundscheck=False, nogil=True)
def _activate(y: Any, act: int, ibuf: Any, t: Any) -> None:
    """In-place activation of view `y`; `t` is a float work view of at least y's size."""
    n = y.shape[0]
    if act == ACT_ELU:
        tv = t[:n]
        for i in range(n):
            tv[i] = min(y[i], np.float32(0.0))
        _exp_inplace(tv, ibuf, 1.0)
        for i in range(n):
            v = y[i]
            y[i] = v if v > np.float32(0.0) else tv[i] - np.float32(1.0)
    elif act == ACT_RELU:
        for i in range(n):
            y[i] = max(y[i], np.float32(0.0))
    elif act == ACT_LEAKY:
        for i in range(n):
            v = y[i]
            y[i] = v if v > np.float32(0.0) else np.float32(0.01) * v
    elif act == ACT_TANH:
        _exp_inplace(y, ibuf, 2.0)
        for i in range(n):
            y[i] = np.float32(1.0) - np.float32(2.0) / (y[i] + np.float32(1.0))


@nb.njit(cache=True, fastmath=True, boundscheck=False, nogil=True)
def _matvec(wm: Any, x: Any, y: Any, acc: bool) -> None:
    """y (+)= wm @ x for a 2-D row-major view `wm`."""
    n, k = wm.shape
    for i in range(n):
        t = np.float32(0.0)
        for j in range(k):
            t += wm[i, j] * x[j]
        if acc:
            y[i] += t
        else:
            y[i] = t


@nb.njit(cache=True, fastmath=False, boundscheck=False, nogil=True)
def _ld(s: Any, ip: Any, mode: int, off: int, i: int) -> Any:
    if mode == CONTIG:
        return s[off + i]
    if mode == SCALAR:
        return s[off]
    return s[ip[off + i]]


@nb.njit(cache=True, fastmath=False, boundscheck=False, nogil=True)
def _unary(kind: int, x: Any, a0: Any, a1: Any, a2: Any) -> Any:
    one = np.float32(1.0)
    zero = np.float32(0.0)
    if kind == M_COPY:
        return x
    if kind == M_ELU:  # a0 alpha, a1 scale, a2 input_scale
        return a1 * x if x > zero else a1 * a0 * (np.float32(math.exp(a2 * x)) - one)
    if kind == M_RELU:
        return x if x > zero else zero
    if kind == M_TANH:
        return np.float32(math.tanh(x))
    if kind == M_LEAKY:
        return x if x > zero else a0 * x
    if kind == M_SIGMOID:
        return one / (one + np.float32(math.exp(-x)))
    if kind == M_SILU:
        return x / (one + np.float32(math.exp(-x)))
    if kind == M_NEG:
        return -x
    if kind == M_ABS:
        return abs(x)
    if kind == M_EXP:
        return np.float32(math.exp(x))
    if kind == M_LOG:
        return (
            np.float32(math.log(x))
            if x > zero
            else (np.float32(-np.inf) if x == zero else np.float32(np.nan))
        )
    if kind == M_SQRT:
        return np.float32(math.sqrt(x)) if x >= zero else np.float32(np.nan)
    if kind == M_RSQRT:
        return one / np.float32(math.sqrt(x)) if x >= zero else np.float32(np.nan)
    if kind == M_RECIP:
        return one / x
    if kind == M_SIN:
        return np.float32(math.sin(x))
    if kind == M_COS:
        return np.float32(math.cos(x))
    if kind == M_CLAMP:  # a0 low, a1 high (+-inf when absent)
        return min(max(x, a0), a1)
    if kind == M_SOFTPLUS:  # a0 beta, a1 threshold
        bx = a0 * x
        return x if bx > a1 else np.float32(math.log1p(math.exp(bx))) / a0
    if kind == M_GELU:
        return np.float32(0.5) * x * (one + np.float32(math.erf(x * np.float32(0.7071067811865476))))
    if kind == M_GELU_TANH:
        u = np.float32(0.7978845608028654) * (x + np.float32(0.044715) * x * x * x)
        return np.float32(0.5) * x * (one + np.float32(math.tanh(u)))
    if kind == M_HARDSWISH:
        return x * min(max(x + np.float32(3.0), zero), np.float32(6.0)) / np.float32(6.0)
    if kind == M_HARDSIGMOID:
        return min(max(x + np.float32(3.0), zero), np.float32(6.0)) / np.float32(6.0)
    if kind == M_SQUARE:
        return x * x
    if kind == M_SIGN:
        return one if x > zero else (-one if x < zero else zero)
    if kind == M_AFFINE:  # a0 * x + a1
        return a0 * x + a1
    if kind == M_MISH:
        return x * np.float32(math.tanh(math.log1p(math.exp(x))))
    if kind == M_SELU:
        sc = np.float32(1.0507009873554805)
        al = np.float32(1.6732632423543772)
        return sc * x if x > zero else sc * al * (np.float32(math.exp(x)) - one)
    return np.float32(np.nan)


@nb.njit(cache=True, fastmath=False, boundscheck=False, nogil=True)
def _binary(kind: int, x: Any, y: Any) -> Any:
    if kind == M_ADD:
        return x + y
    if kind == M_SUB:
        return x - y
    if kind == M_MUL:
        return x * y
    if kind == M_DIV:
        return x / y
    if kind == M_MAX:
        return max(x, y)
    if kind == M_MIN:
        return min(x, y)
    if kind == M_POW:
        return np.float32(math.pow(x, y))
    if kind == M_RSUB:
        return y - x
    return np.float32(np.nan)


@nb.njit(cache=True, fastmath=False, boundscheck=False, nogil=True)
def _map(row: Any, p: Any, s: Any, ip: Any) -> None:
    """OP_MAP row: [op, kind, n, dst_mode, dst, a_mode, a, b_mode, b, p0]."""
    kind, n, dm, d, am, a, bm, b, p0 = row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9]
    a0 = p[p0] if p0 >= 0 else np.float32(0.0)
    a1 = p[p0 + 1] if p0 >= 0 else np.float32(0.0)
    a2 = p[p0 + 2] if p0 >= 0 else np.float32(0.0)
    if kind < 40:
        if dm == CONTIG and am == CONTIG and kind == M_COPY:
            dv, av = s[d : d + n], s[a : a + n]
            for i in range(n):
                dv[i] = av[i]
            return
        for i in range(n):
            v = _unary(kind, _ld(s, ip, am, a, i), a0, a1, a2)
            if dm == CONTIG:
                s[d + i] = v
            else:
                s[ip[d + i]] = v
    else:
        for i in range(n):
            v = _binary(kind, _ld(s, ip, am, a, i), _ld(s, ip, bm, b, i))
            if dm == CONTIG:
                s[d + i] = v
            else:
                s[ip[d + i]] = v


@nb.njit(cache=True, fastmath=False, boundscheck=False, nogil=True)
def _rows(row: Any, p: Any, s: Any) -> None:
    """OP_ROWS row: [op, kind, src, dst, rows, d, w (-1), b (-1), p0] over contiguous rows of d."""
    kind, src, dst, nr, d, w, b, p0 = row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8]
    for r in range(nr):
        x = s[src + r * d : src + (r + 1) * d]
        if kind == R_SUM or kind == R_MEAN or kind == R_L2 or kind == R_MAX:
            acc = np.float64(0.0) if kind != R_MAX else np.float64(-np.inf)
            for i in range(d):
                if kind == R_L2:
                    acc += np.float64(x[i]) * np.float64(x[i])
                elif kind == R_MAX:
                    acc = max(acc, np.float64(x[i]))
                else:
                    acc += np.float64(x[i])
            if kind == R_MEAN:
                acc /= d
            elif kind == R_L2:
                acc = np.float64(math.sqrt(acc))
            s[dst + r] = np.float32(acc)
        elif kind == R_LAYERNORM:
            y = s[dst + r * d : dst + (r + 1) * d]
            mu = np.float64(0.0)
            for i in range(d):
                mu += x[i]
            mu /= d
            var = np.float64(0.0)
            for i in range(d):
                var += (x[i] - mu) * (x[i] - mu)
            var /= d
            inv = np.float32(1.0 / math.sqrt(var + p[p0]))
            for i in range(d):
                v = np.float32(x[i] - mu) * inv
                if w >= 0:
                    v = v * p[w + i]
                if b >= 0:
                    v = v + p[b + i]
                y[i] = v
        elif kind == R_SOFTMAX:
            y = s[dst + r * d : dst + (r + 1) * d]
            m = np.float32(-np.inf)
            for i in range(d):
                m = max(m, x[i])
            tot = np.float32(0.0)
            for i in range(d):
                e = np.float32(math.exp(x[i] - m))
                y[i] = e
                tot += e
            for i in range(d):
                y[i] = y[i] / tot


@nb.njit(cache=True, fastmath=True, boundscheck=False, nogil=True)
def _gru(row: Any, p: Any, s: Any, ibuf: Any, t: Any) -> None:
    """OP_GRU row: [op, src, k, h, hs, wih, whh, bih, bhh, gx, gh]; h updated in place."""
    src, k, h, hs, wih, whh, bih, bhh, gx, gh = (
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
    )
    h3 = 3 * hs
    gxv = s[gx : gx + h3]
    ghv = s[gh : gh + h3]
    hv = s[h : h + hs]
    _matvec(p[wih : wih + h3 * k].reshape((h3, k)), s[src : src + k], gxv, False)
    _matvec(p[whh : whh + h3 * hs].reshape((h3, hs)), hv, ghv, False)
    bxv = p[bih : bih + h3]
    bhv = p[bhh : bhh + h3]
    one = np.float32(1.0)
    for i in range(hs):
        rg = one / (one + np.float32(math.exp(-(gxv[i] + bxv[i] + ghv[i] + bhv[i]))))
        zg = one / (one + np.float32(math.exp(-(gxv[hs + i] + bxv[hs + i] + ghv[hs + i] + bhv[hs + i]))))
        ng = np.float32(
            math.tanh(gxv[2 * hs + i] + bxv[2 * hs + i] + rg * (ghv[2 * hs + i] + bhv[2 * hs + i]))
        )
        hv[i] = (one - zg) * ng + zg * hv[i]


@nb.njit(cache=True, fastmath=True, boundscheck=False, nogil=True)
def _run_ops(ops: Any, p: Any, s: Any, ibuf: Any, t: Any, ip: Any) -> None:
    for r in range(ops.shape[0]):
        op = ops[r, 0]
        if op == OP_MAP:
            _map(ops[r], p, s, ip)
        elif op == OP_ROWS:
            _rows(ops[r], p, s)
        elif op == OP_GRU:
            _gru(ops[r], p, s, ibuf, t)
        elif op == OP_LINEAR:
            src, k, dst, n, w, b, act = (
                ops[r, 1],
                ops[r, 2],
                ops[r, 3],
                ops[r, 4],
                ops[r, 5],
                ops[r, 6],
                ops[r, 7],
            )
            y = s[dst : dst + n]
            _matvec(p[w : w + n * k].reshape((n, k)), s[src : src + k], y, False)
            if b >= 0:
                bv = p[b : b + n]
                for i in range(n):
                    y[i] += bv[i]
            if act != ACT_NONE:
                _activate(y, act, ibuf, t)
        elif op == OP_NORMALIZE:
            src, n, dst, mean, std, eps = ops[r, 1], ops[r, 2], ops[r, 3], ops[r, 4], ops[r, 5], ops[r, 6]
            e = p[eps]
            xv, yv, mv, sv = s[src : src + n], s[dst : dst + n], p[mean : mean + n], p[std : std + n]
            for i in range(n):
                yv[i] = (xv[i] - mv[i]) / (sv[i] + e)
        elif op == OP_LSTM:
            src, k, h, c, hs = ops[r, 1], ops[r, 2], ops[r, 3], ops[r, 4], ops[r, 5]
            wih, whh, b, g = ops[r, 6], ops[r, 7], ops[r, 8], ops[r, 9]
            h4 = 4 * hs
            gv = s[g : g + h4]
            hv = s[h : h + hs]
            cv = s[c : c + hs]
            _matvec(p[wih : wih + h4 * k].reshape((h4, k)), s[src : src + k], gv, False)
            _matvec(p[whh : whh + h4 * hs].reshape((h4, hs)), hv, gv, True)
            bv = p[b : b + h4]
            for i in range(h4):
                gv[i] += bv[i]
            # gates i, f, o: sigmoid = 1 / (1 + exp(-x)); g: tanh = 1 - 2 / (exp(2x) + 1)
            gi, gf, gg, go = gv[0:hs], gv[hs : 2 * hs], gv[2 * hs : 3 * hs], gv[3 * hs : h4]
            _exp_inplace(gv[0 : 2 * hs], ibuf, -1.0)
            _exp_inplace(gg, ibuf, 2.0)
            _exp_inplace(go, ibuf, -1.0)
            tv = t[:hs]
            for i in range(hs):
                ig = np.float32(1.0) / (np.float32(1.0) + gi[i])
                fg = np.float32(1.0) / (np.float32(1.0) + gf[i])
                ggt = np.float32(1.0) - np.float32(2.0) / (gg[i] + np.float32(1.0))
                cn = fg * cv[i] + ig * ggt
                cv[i] = cn
                tv[i] = cn
            _exp_inplace(tv, ibuf, 2.0)
            for i in range(hs):
                og = np.float32(1.0) / (np.float32(1.0) + go[i])
                hv[i] = og * (np.float32(1.0) - np.float32(2.0) / (tv[i] + np.float32(1.0)))
        elif op == OP_COPY:
            src, n, dst = ops[r, 1], ops[r, 2], ops[r, 3]
            xv, yv = s[src : src + n], s[dst : dst + n]
            for i in range(n):
                yv[i] = xv[i]
        elif op == OP_ADD:
            src, n, dst = ops[r, 1], ops[r, 2], ops[r, 3]
            xv, yv = s[src : src + n], s[dst : dst + n]
            for i in range(n):
                yv[i] += xv[i]
        elif op == OP_L2NORM:
            src, n, dst, eps = ops[r, 1], ops[r, 2], ops[r, 3], ops[r, 4]
            xv, yv = s[src : src + n], s[dst : dst + n]
            acc = np.float32(0.0)
            for i in range(n):
                acc += xv[i] * xv[i]
            nrm = max(np.sqrt(acc), p[eps])
            for i in range(n):
                yv[i] = xv[i] / nrm


@nb.njit(cache=True, fastmath=True, boundscheck=False, nogil=True)
def run_program(
    x: Any, ops: Any, p: Any, s: Any, ibuf: Any, tmp: Any, ip: Any, in_off: int, out_off: int, out: Any
) -> None:
    """One forward pass: x (float32 [in_dim]) -> out (float32 [out_dim]). RT-safe (no allocation).

    `s`: scratch (``scratch_size`` floats, holds LSTM state); `ibuf` int32 / `tmp` float32 work
    areas of ``ibuf_size``; `ip` the index params.
    """
    xi = s[in_off : in_off + x.shape[0]]
    for i in range(x.shape[0]):
        xi[i] = x[i]
    _run_ops(ops, p, s, ibuf, tmp, ip)
    yo = s[out_off : out_off + out.shape[0]]
    for i in range(out.shape[0]):
        out[i] = yo[i]


class CompiledProgram:
    """A :class:`Program` bound to its own scratch/state buffers (one per backend instance)."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self._ops = np.ascontiguousarray(program.ops)
        self._params = np.ascontiguousarray(program.params)
        self._ip = np.ascontiguousarray(
            program.iparams if program.iparams is not None else np.zeros(1, np.int64)
        )
        self._ibuf = np.zeros(program.ibuf_size, np.int32)
        self._tmp = np.zeros(program.ibuf_size, np.float32)
        self._template = program.template
        self._scratch = np.zeros(program.scratch_size, np.float32)
        self.reset()

    def forward(self, x: npt.NDArray[np.float32], out: npt.NDArray[np.float32]) -> None:
        """x float32 [in_dim] -> out float32 [out_dim]; advances recurrent state. RT-safe."""
        run_program(
            x,
            self._ops,
            self._params,
            self._scratch,
            self._ibuf,
            self._tmp,
            self._ip,
            self.program.in_off,
            self.program.out_off,
            out,
        )

    def reset(self) -> None:
        """Restore the scratch to its reset content (constants, zero state)."""
        if self._template is None:
            self._scratch[:] = 0.0
        else:
            self._scratch[:] = self._template
