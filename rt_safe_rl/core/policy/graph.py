"""Graph-level compiler: any torch policy (TorchScript, ``fx.GraphModule``, plain module) -> Program.

Instead of matching module names, the model is run once on a batch-1 observation under a
``TorchDispatchMode`` that records every aten operator it executes (TorchScript, fx and eager code
all reach the dispatcher, so actor-critic containers, fx exports, wrappers with constant buffers,
input slicing, ``index_put`` and printing models look the same here). The record is then compiled
offline with torch's own storage model mirrored in the scratch vector:

- a tensor is *dynamic* when its storage holds the input, recurrent state, or the result of an op
  on dynamic data; everything else is a constant whose value the trace already computed (constant
  folding is free: ``std + eps``, ``w.t()``, ``torch.zeros``);
- state = storages from outside the trace (module buffers) that the forward writes in place
  (``hidden_state.copy_(h)``); they persist across calls and are restored at reset;
- every dynamic storage gets a scratch block; a view's elements live at
  ``base + storage_offset + sum(index * stride)`` exactly as in torch, so views cost nothing and
  data movement (slice, cat, index, index_put, expand, permute, ...) is compiled by running the same
  operator on int64 *address* tensors and emitting one gather/scatter copy;
- compute operators map to kernels: linear / addmm / mm / matmul with constant weights (activation
  fused when the result feeds only it), element-wise unary and binary ops with broadcasting, row
  reductions (sum, mean, L2 norm), layer norm, softmax, eval batch norm, LSTM / GRU (layers and cells).

Anything else raises :class:`~rt_safe_rl.core.policy.extract.Unsupported` naming the operator (the
backend table shows it). Value-dependent control flow is invisible to a trace, which is why every
program is compared against the reference over a rollout before it may be selected.

Not RT-safe (configure time). The compiled program runs with :class:`~.kernels.CompiledProgram`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rt_safe_rl.core.policy import kernels as K  # noqa: N812 - K.OP_* reads like the kernel tables
from rt_safe_rl.core.policy.extract import Unsupported

SHAPE_QUERIES = {
    'size', 'sym_size', 'dim', 'stride', 'sym_stride', 'numel', 'sym_numel', 'is_contiguous',
    'storage_offset', 'sym_storage_offset', 'is_floating_point', 'is_complex', 'is_same_size',
}  # fmt: skip
"""Operators that only read shape metadata (ignored; the trace is shape-specialised)."""

MOVEMENT = {
    'slice', 'select', 'index', 'index_select', 'gather', 'cat', 'concat', 'stack', 'clone', 'contiguous',
    '_to_copy', 'to', 'copy', 'copy_', 'flip', 'roll', 'permute', 't', 'transpose', 'view', 'reshape',
    '_unsafe_view', 'unsqueeze', 'squeeze', 'expand', 'expand_as', 'repeat', 'narrow', 'split',
    'split_with_sizes', 'unbind', 'chunk', 'alias', 'detach', 'lift_fresh', 'lift_fresh_copy', 'as_strided',
    'flatten', 'unflatten', 'movedim', 'tile', 'narrow_copy', 'slice_copy', 'select_copy', 'view_copy',
    'expand_copy', 'permute_copy', 'squeeze_copy', 'unsqueeze_copy', 't_copy', 'transpose_copy',
    'index_put', 'index_put_', 'masked_fill', 'masked_fill_', 'repeat_interleave', 'hstack', 'vstack',
    'column_stack', 'swapaxes', 'adjoint', 'mT', 'ravel', 'reshape_as', 'view_as', 'where',
}  # fmt: skip
LIKE = {
    'zeros_like', 'ones_like', 'full_like', 'empty_like', 'new_zeros', 'new_ones', 'new_full', 'new_empty',
    'empty_strided', 'rand_like', 'randn_like',
}  # fmt: skip
"""Operators that only use a tensor's shape: their result is a constant."""
"""Pure data movement: compiled by evaluating the operator on address tensors."""

UNARY: dict[str, int] = {
    'relu': K.M_RELU, 'tanh': K.M_TANH, 'sigmoid': K.M_SIGMOID, 'silu': K.M_SILU, 'neg': K.M_NEG,
    'abs': K.M_ABS, 'exp': K.M_EXP, 'log': K.M_LOG, 'sqrt': K.M_SQRT, 'rsqrt': K.M_RSQRT,
    'reciprocal': K.M_RECIP, 'sin': K.M_SIN, 'cos': K.M_COS, 'hardswish': K.M_HARDSWISH,
    'hardsigmoid': K.M_HARDSIGMOID, 'mish': K.M_MISH, 'selu': K.M_SELU, 'sign': K.M_SIGN,
    'square': K.M_SQUARE, 'positive': K.M_COPY,
}  # fmt: skip
BINARY: dict[str, int] = {
    'add': K.M_ADD, 'sub': K.M_SUB, 'mul': K.M_MUL, 'div': K.M_DIV, 'maximum': K.M_MAX,
    'minimum': K.M_MIN, 'max': K.M_MAX, 'min': K.M_MIN, 'rsub': K.M_RSUB, 'true_divide': K.M_DIV,
    'multiply': K.M_MUL, 'subtract': K.M_SUB,
}  # fmt: skip
FUSABLE = {'elu': K.ACT_ELU, 'relu': K.ACT_RELU, 'tanh': K.ACT_TANH, 'leaky_relu': K.ACT_LEAKY}


@dataclass
class TRec:
    """A tensor seen in the trace: where it lives and (a copy of) its value at that point."""

    ptr: int
    snumel: int
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: Any
    value: Any

    @property
    def numel(self) -> int:
        """Elements in the view."""
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass
class OpRec:
    """One executed operator."""

    name: str
    overload: str
    func: Any
    args: list[Any]
    kwargs: dict[str, Any]
    out: Any
    written: list[TRec] = field(default_factory=list)
    pre: dict[int, Any] = field(default_factory=dict)


def _rec(t: Any) -> TRec:
    s = t.untyped_storage()
    return TRec(
        ptr=int(s.data_ptr()),
        snumel=int(s.nbytes() // max(t.element_size(), 1)),
        offset=int(t.storage_offset()),
        shape=tuple(int(d) for d in t.shape),
        stride=tuple(int(d) for d in t.stride()),
        dtype=t.dtype,
        value=t.detach().clone(),
    )


def trace(module: Any, x: Any) -> tuple[list[OpRec], TRec, Any]:
    """Run ``module(x)`` once, recording every aten operator. Returns (ops, input rec, output)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map

    ops: list[OpRec] = []
    keep: list[Any] = []

    def rec_any(a: Any) -> Any:
        return _rec(a) if isinstance(a, torch.Tensor) else a

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            schema = func._schema
            written = []
            for i, a in enumerate(schema.arguments):
                if a.alias_info is not None and a.alias_info.is_write:
                    v = args[i] if i < len(args) else kwargs.get(a.name)
                    if isinstance(v, torch.Tensor):
                        written.append(v)
            pre = {}
            for w in written:
                st = w.untyped_storage()
                n = st.nbytes() // max(w.element_size(), 1)
                flat = torch.empty(0, dtype=w.dtype).set_(st, 0, (n,), (1,))
                pre[int(st.data_ptr())] = flat.clone()
            a_rec = tree_map(rec_any, list(args))
            k_rec = tree_map(rec_any, dict(kwargs))
            out = func(*args, **kwargs)
            keep.append((args, kwargs, out))
            name = schema.name.split('::')[-1]
            ops.append(
                OpRec(
                    name, func._overloadname, func, a_rec, k_rec, tree_map(rec_any, out),
                    [_rec(w) for w in written], pre,
                )
            )  # fmt: skip
            return out

    keep.append(x)
    with torch.inference_mode(), Recorder():
        y = module(x)
    return ops, _rec(x), y


def _tensors(obj: Any) -> list[TRec]:
    if isinstance(obj, TRec):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


class _Compiler:
    def __init__(self, ops: list[OpRec], x: TRec) -> None:
        self.ops = ops
        self.b = K.Builder()
        self.base: dict[int, int] = {}
        self.dyn: set[int] = set()
        self.poison: set[int] = set()
        self.consts: dict[tuple[Any, ...], int] = {}
        self.created: set[int] = set()
        seen: set[int] = {x.ptr}
        state: dict[int, Any] = {}
        self.uses: dict[int, int] = {}
        for op in ops:
            for t in _tensors(op.args) + _tensors(op.kwargs):
                seen.add(t.ptr)
                self.uses[t.ptr] = self.uses.get(t.ptr, 0) + 1
            for t in _tensors(op.out):
                if t.ptr not in seen:
                    self.created.add(t.ptr)
                    seen.add(t.ptr)
            for w in op.written:
                if w.ptr not in self.created and w.ptr != x.ptr and w.ptr not in state:
                    state[w.ptr] = op.pre[w.ptr]
        self.x = x
        self.base[x.ptr] = self.b.alloc(x.snumel)
        self.dyn.add(x.ptr)
        self.in_off = self.base[x.ptr] + x.offset
        for ptr, val in state.items():
            v = val.float().numpy().ravel()
            off = self.b.const(v)
            self.base[ptr] = off
            self.dyn.add(ptr)
            self.b.state.append((off, v.size))
        self.last_linear: tuple[int, list[int]] | None = None
        self.out_ptr = -1
        self.n_linear = 0
        self.kinds: list[str] = []

    # -- addresses -------------------------------------------------------------------------
    def is_dyn(self, t: TRec) -> bool:
        if t.ptr in self.poison:
            raise Unsupported('uses a secondary output of an operator that is not compiled')
        return t.ptr in self.dyn

    def addr(self, t: TRec) -> Any:
        """int64 tensor of t's shape: the scratch address of each element."""
        import torch

        if self.is_dyn(t):
            if t.dtype != torch.float32:
                raise Unsupported(f'a {t.dtype} tensor computed from the observation')
            full = torch.arange(t.snumel, dtype=torch.int64) + self.base[t.ptr]
            return full.as_strided(t.shape, t.stride, t.offset)
        return self.const_addr(t)

    def const_addr(self, t: TRec) -> Any:
        import torch

        v = t.value.float().contiguous().numpy()
        key = (t.ptr, t.offset, t.shape, t.stride, hash(v.tobytes()))
        if key not in self.consts:
            self.consts[key] = self.b.const(v)
        return torch.arange(t.numel, dtype=torch.int64).reshape(t.shape) + self.consts[key]

    def scalar_addr(self, v: float) -> Any:
        import torch

        return torch.tensor(self.b.const([float(v)]), dtype=torch.int64)

    def operand(self, a: Any, shape: tuple[int, ...]) -> tuple[int, int]:
        """(mode, offset) of `a` (TRec, address tensor or python number) broadcast to `shape`."""
        import torch

        if isinstance(a, TRec):
            a = self.addr(a)
        elif not isinstance(a, torch.Tensor):
            a = self.scalar_addr(a)
        flat = a.expand(shape).reshape(-1) if shape else a.reshape(-1)
        first = int(flat[0])
        if flat.numel() == 1 or bool((flat == first).all()):
            return (K.SCALAR, first) if flat.numel() > 1 else (K.CONTIG, first)
        if bool((flat == first + torch.arange(flat.numel())).all()):
            return K.CONTIG, first
        return K.INDEXED, self.b.iparam(flat.numpy())

    def out_region(self, t: TRec) -> Any:
        """Allocate the storage of a fresh output; returns its address tensor."""
        if t.ptr not in self.dyn:
            if t.ptr in self.created and t.ptr not in self.base:
                self.base[t.ptr] = self.b.alloc(t.snumel)
            elif t.ptr not in self.base:
                raise Unsupported('writes into a tensor it did not create')
            self.dyn.add(t.ptr)
        return self.addr(t)

    def contiguous(self, t: TRec) -> int:
        """Scratch offset of t's elements as one contiguous run (copied when needed)."""
        mode, off = self.operand(self.addr(t), t.shape)
        if mode == K.CONTIG:
            return off
        dst = self.b.alloc(t.numel)
        self.b.op(K.OP_MAP, K.M_COPY, t.numel, K.CONTIG, dst, mode, off, K.CONTIG, 0, -1)
        return dst

    def padded_input(self, t: TRec, k: int) -> int:
        """Offset of a k-vector followed by zero padding (for padded weight rows)."""
        mode, off = self.operand(self.addr(t), t.shape)
        if mode == K.CONTIG and t.ptr in self.base and off == self.base[t.ptr] and t.snumel == k:
            return off  # a whole padded block: the padding after it stays zero
        dst = self.b.alloc(k)
        self.b.op(K.OP_MAP, K.M_COPY, k, K.CONTIG, dst, mode, off, K.CONTIG, 0, -1)
        return dst

    def copy_to(self, dst_addr: Any, src: Any) -> None:
        """Emit dst[i] = src[i] for address tensors (src broadcast to dst's shape)."""
        shape = tuple(dst_addr.shape)
        n = int(dst_addr.numel())
        if n == 0:
            return
        dm, d = self.operand(dst_addr, shape)
        if dm == K.SCALAR:
            raise Unsupported('write through a broadcast view')
        sm, s = self.operand(src, shape)
        if dm == K.CONTIG and sm == K.CONTIG and d == s:
            return
        self.b.op(K.OP_MAP, K.M_COPY, n, dm, d, sm, s, K.CONTIG, 0, -1)

    # -- operators ---------------------------------------------------------------------------
    def run(self) -> None:
        for i, op in enumerate(self.ops):
            self.step(i, op)

    def step(self, i: int, op: OpRec) -> None:
        ins = _tensors(op.args) + _tensors(op.kwargs)
        dyn_in = [t for t in ins if self.is_dyn(t)]
        outs = _tensors(op.out)
        if not dyn_in:
            for w in op.written:
                if w.ptr in self.dyn:  # a constant written into state / a dynamic tensor
                    self.copy_to(self.addr(w), self.const_addr(_post(op, w)))
            return
        if op.name in SHAPE_QUERIES or op.name in LIKE:
            return
        if not outs and op.out is not None and not op.written:
            raise Unsupported(f'data-dependent value from {op.name} (control flow on the observation)')
        for t in dyn_in:
            if t.dtype.is_floating_point and t.dtype != _f32():
                raise Unsupported(f'{op.name} on a {t.dtype} tensor')
        for w in op.written:
            if w.ptr not in self.dyn:
                if w.ptr not in self.created:
                    raise Unsupported(f'{op.name} writes into a tensor it did not create')
                self.base[w.ptr] = self.b.alloc(w.snumel)
                self.dyn.add(w.ptr)
                pre = op.pre[w.ptr].float().numpy()
                src = self.b.const(pre)
                self.b.op(
                    K.OP_MAP, K.M_COPY, pre.size, K.CONTIG, self.base[w.ptr], K.CONTIG, src, K.CONTIG, 0, -1
                )
        in_ptrs = {t.ptr for t in ins}
        if not op.written and outs and all(o.ptr in in_ptrs for o in outs):
            return  # a view: addresses follow torch's strides
        h = getattr(self, f'op_{op.name}', None)
        if h is not None:
            h(op)
        elif op.name.rstrip('_') in UNARY:
            self.unary(op, UNARY[op.name.rstrip('_')])
        elif op.name.rstrip('_') in BINARY:
            self.binary(op, BINARY[op.name.rstrip('_')])
        elif op.name in MOVEMENT:
            self.movement(op)
        else:
            raise Unsupported(f'operator aten::{op.name}.{op.overload} is not compiled')
        self.kinds.append(op.name)

    def target(self, op: OpRec) -> TRec:
        if op.written:
            return op.written[0]
        outs = _tensors(op.out)
        if len(outs) != 1:
            raise Unsupported(f'{op.name} with {len(outs)} outputs')
        return outs[0]

    def map_op(self, op: OpRec, kind: int, a: Any, b: Any = None, params: list[float] | None = None) -> None:
        t = self.target(op)
        dst = self.out_region(t) if not op.written else self.addr(t)
        shape = tuple(dst.shape)
        dm, d = self.operand(dst, shape)
        am, ao = self.operand(a, shape)
        bm, bo = self.operand(b, shape) if b is not None else (K.CONTIG, 0)
        p0 = self.b.param(params + [0.0] * (3 - len(params))) if params else -1
        self.b.op(K.OP_MAP, kind, int(dst.numel()), dm, d, am, ao, bm, bo, p0)

    def unary(self, op: OpRec, kind: int, params: list[float] | None = None) -> None:
        a = op.args[0]
        t = self.target(op)
        fuse = FUSABLE.get(op.name)
        if fuse is not None and not op.written and self.try_fuse(a, t, fuse, op, params):
            return
        self.map_op(op, kind, a, None, params)

    def try_fuse(self, a: TRec, t: TRec, act: int, op: OpRec, params: list[float] | None) -> bool:
        if self.last_linear is None or self.last_linear[0] != a.ptr or self.uses.get(a.ptr, 0) != 1:
            return False
        if a.ptr == self.out_ptr:
            return False
        if op.name == 'elu' and params != [1.0, 1.0, 1.0]:
            return False
        if op.name == 'leaky_relu' and params is not None and abs(params[0] - 0.01) > 0.0:
            return False
        if a.offset != 0 or a.numel != a.snumel or t.snumel != a.snumel or t.ptr in self.base:
            return False
        rows = self.last_linear[1]
        if any(self.b.rows[r][7] != K.ACT_NONE for r in rows):
            return False
        for r in rows:
            self.b.rows[r][7] = act
        self.base[t.ptr] = self.base[a.ptr]
        self.dyn.add(t.ptr)
        self.last_linear = None
        return True

    def binary(self, op: OpRec, kind: int) -> None:
        a, b = op.args[0], op.args[1]
        alpha = op.kwargs.get('alpha', 1)
        if len(op.args) > 2 and op.name.rstrip('_') in ('add', 'sub', 'rsub'):
            alpha = op.args[2]
        if alpha != 1 and op.name == 'rsub':
            raise Unsupported('rsub with alpha')
        if op.name == 'div' and (op.kwargs.get('rounding_mode') or op.overload.endswith('mode')):
            raise Unsupported('div with a rounding mode')
        if alpha != 1:
            if isinstance(b, TRec) and not self.is_dyn(b):
                b = self.const_addr(_scaled(b, alpha))
            elif not isinstance(b, TRec):
                b = float(b) * float(alpha)
            else:
                raise Unsupported(f'{op.name} with alpha {alpha} of a computed tensor')
        self.map_op(op, kind, a, b)

    def op_elu(self, op: OpRec) -> None:
        al, sc, isc = [*list(op.args[1:4]), 1.0, 1.0, 1.0][:3]
        self.unary(op, K.M_ELU, [float(al), float(sc), float(isc)])

    def op_celu(self, op: OpRec) -> None:
        al = float(op.args[1]) if len(op.args) > 1 else 1.0
        self.unary(op, K.M_ELU, [al, 1.0, 1.0 / al])

    def op_leaky_relu(self, op: OpRec) -> None:
        self.unary(op, K.M_LEAKY, [float(op.args[1]) if len(op.args) > 1 else 0.01])

    op_leaky_relu_ = op_leaky_relu

    def op_zero_(self, op: OpRec) -> None:
        w = op.written[0]
        self.copy_to(self.addr(w), self.const_addr(_post(op, w)))

    def op_fill_(self, op: OpRec) -> None:
        if isinstance(op.args[1], TRec) and self.is_dyn(op.args[1]):
            self.map_op(op, K.M_COPY, op.args[1])
        else:
            self.op_zero_(op)

    def op_clamp(self, op: OpRec) -> None:
        lo = op.args[1] if len(op.args) > 1 else op.kwargs.get('min')
        hi = op.args[2] if len(op.args) > 2 else op.kwargs.get('max')
        if isinstance(lo, TRec) or isinstance(hi, TRec):
            raise Unsupported('clamp with tensor bounds')
        self.unary(op, K.M_CLAMP, [-np.inf if lo is None else float(lo), np.inf if hi is None else float(hi)])

    def op_clamp_(self, op: OpRec) -> None:
        self.op_clamp(op)

    def op_elu_(self, op: OpRec) -> None:
        self.op_elu(op)

    def op_clamp_min(self, op: OpRec) -> None:
        if isinstance(op.args[1], TRec):
            self.map_op(op, K.M_MAX, op.args[0], op.args[1])
        else:
            self.unary(op, K.M_CLAMP, [float(op.args[1]), np.inf])

    def op_clamp_max(self, op: OpRec) -> None:
        if isinstance(op.args[1], TRec):
            self.map_op(op, K.M_MIN, op.args[0], op.args[1])
        else:
            self.unary(op, K.M_CLAMP, [-np.inf, float(op.args[1])])

    def op_hardtanh(self, op: OpRec) -> None:
        lo = float(op.args[1]) if len(op.args) > 1 else -1.0
        hi = float(op.args[2]) if len(op.args) > 2 else 1.0
        self.unary(op, K.M_CLAMP, [lo, hi])

    def op_softplus(self, op: OpRec) -> None:
        beta = float(op.args[1]) if len(op.args) > 1 else 1.0
        thr = float(op.args[2]) if len(op.args) > 2 else 20.0
        self.unary(op, K.M_SOFTPLUS, [beta, thr])

    def op_gelu(self, op: OpRec) -> None:
        approx = op.kwargs.get('approximate', op.args[1] if len(op.args) > 1 else 'none')
        self.unary(op, K.M_GELU_TANH if approx == 'tanh' else K.M_GELU)

    def op_pow(self, op: OpRec) -> None:
        e = op.args[1]
        if not isinstance(op.args[0], TRec):
            raise Unsupported('pow with a scalar base')
        if not isinstance(e, TRec) and float(e) == 2.0:
            self.unary(op, K.M_SQUARE)
        else:
            self.map_op(op, K.M_POW, op.args[0], e)

    def op_where(self, op: OpRec) -> None:
        cond = op.args[0]
        if self.is_dyn(cond):
            raise Unsupported('where() with a condition computed from the observation')
        self.movement(op)

    # -- matrix products -----------------------------------------------------------------------
    def matmul(self, op: OpRec, x: TRec, w: Any, bias: Any) -> None:
        """out = x @ w.T + bias for constant w [n, k] (numpy) and bias (numpy [n] or None)."""
        n, k = w.shape
        t = self.target(op)
        if x.shape[-1] != k:
            raise Unsupported(f'matmul sizes {x.shape} x {w.shape}')
        m = x.numel // k
        dst = self.out_region(t)
        dm, d = self.operand(dst, tuple(dst.shape))
        if dm != K.CONTIG:
            raise Unsupported('matmul into a strided view')
        rows: list[int] = []
        if m == 1:
            src = self.padded_input(x, k)
            self.b.linear_into(src, w, bias, K.ACT_NONE, d, padded=True)
            rows.append(len(self.b.rows) - 1)
        else:
            src = self.contiguous(x)
            w_off, kp = self.b.weights(w, padded=False)
            b_off = self.b.param(bias) if bias is not None else -1
            for r in range(m):
                self.b.op(K.OP_LINEAR, src + r * k, kp, d + r * n, n, w_off, b_off, K.ACT_NONE)
                rows.append(len(self.b.rows) - 1)
            self.b.ibuf = max(self.b.ibuf, n)
        self.last_linear = (t.ptr, rows)
        self.n_linear += 1
        self.b.desc.append(f'linear {k}-{n}' + (f' x{m}' if m > 1 else ''))

    def _const_np(self, t: Any, what: str) -> Any:
        if not isinstance(t, TRec) or self.is_dyn(t):
            raise Unsupported(f'{what} computed from the observation (only constant weights are compiled)')
        return t.value.float().numpy()

    def op_linear(self, op: OpRec) -> None:
        w = self._const_np(op.args[1], 'linear weight')
        b = op.args[2] if len(op.args) > 2 else op.kwargs.get('bias')
        self.matmul(op, op.args[0], w, None if b is None else self._const_np(b, 'bias').ravel())

    def op_addmm(self, op: OpRec) -> None:
        beta = op.kwargs.get('beta', 1)
        alpha = op.kwargs.get('alpha', 1)
        if beta != 1 or alpha != 1:
            raise Unsupported('addmm with beta/alpha')
        bias = self._const_np(op.args[0], 'bias')
        wt = self._const_np(op.args[2], 'weight')
        n = wt.shape[1]
        if bias.size not in (1, n):
            raise Unsupported('addmm with a per-row bias')
        self.matmul(op, op.args[1], np.ascontiguousarray(wt.T), np.broadcast_to(bias.ravel(), (n,)).copy())

    def op_mm(self, op: OpRec) -> None:
        wt = self._const_np(op.args[1], 'weight')
        if wt.ndim != 2:
            raise Unsupported('matmul with a non-2-D constant')
        self.matmul(op, op.args[0], np.ascontiguousarray(wt.T), None)

    op_matmul = op_mm

    # -- reductions and normalisation ----------------------------------------------------------
    def _rows_op(
        self, op: OpRec, kind: int, x: TRec, dims: Any, w: Any = None, b: Any = None, eps: float = 0.0
    ) -> None:
        nd = len(x.shape)
        if dims is None or (isinstance(dims, (list, tuple)) and not dims):
            dims = list(range(nd))
        dl = [d % nd for d in (dims if isinstance(dims, (list, tuple)) else [dims])] if nd else [0]
        if dl != [nd - 1] and not (nd >= 1 and sorted(dl) == list(range(nd - len(dl), nd))):
            raise Unsupported(f'{op.name} over dims {dims} of a {nd}-D tensor (only the last dims)')
        d = int(np.prod([x.shape[i] for i in dl])) if nd else 1
        src = self.contiguous(x)
        t = _tensors(op.out)[0]
        dst = self.out_region(t)
        dm, do = self.operand(dst, tuple(dst.shape))
        if dm != K.CONTIG:
            raise Unsupported(f'{op.name} into a strided view')
        w_off = self.b.param(w) if w is not None else -1
        b_off = self.b.param(b) if b is not None else -1
        self.b.op(K.OP_ROWS, kind, src, do, x.numel // max(d, 1), d, w_off, b_off, self.b.param([eps]))
        for extra in _tensors(op.out)[1:]:
            self.poison.add(extra.ptr)

    def op_linalg_vector_norm(self, op: OpRec) -> None:
        ordv = op.args[1] if len(op.args) > 1 else op.kwargs.get('ord', 2)
        if float(ordv) != 2.0:
            raise Unsupported(f'vector norm of order {ordv}')
        self._rows_op(op, K.R_L2, op.args[0], op.args[2] if len(op.args) > 2 else op.kwargs.get('dim', -1))

    def op_norm(self, op: OpRec) -> None:
        p = op.args[1] if len(op.args) > 1 else 2
        if p is None or float(p) != 2.0 or len(op.args) < 3:
            raise Unsupported('norm other than the 2-norm over a dim')
        self._rows_op(op, K.R_L2, op.args[0], op.args[2])

    def op_sum(self, op: OpRec) -> None:
        if len(op.args) < 2:
            raise Unsupported('sum over all elements')
        self._rows_op(op, K.R_SUM, op.args[0], op.args[1])

    def op_mean(self, op: OpRec) -> None:
        if len(op.args) < 2:
            raise Unsupported('mean over all elements')
        self._rows_op(op, K.R_MEAN, op.args[0], op.args[1])

    def op_amax(self, op: OpRec) -> None:
        self._rows_op(op, K.R_MAX, op.args[0], op.args[1] if len(op.args) > 1 else -1)

    def op__softmax(self, op: OpRec) -> None:
        self._rows_op(op, K.R_SOFTMAX, op.args[0], op.args[1])

    op_softmax = op__softmax

    def op_layer_norm(self, op: OpRec) -> None:
        x, shape = op.args[0], op.args[1]
        w = op.args[2] if len(op.args) > 2 else None
        b = op.args[3] if len(op.args) > 3 else None
        eps = float(op.args[4]) if len(op.args) > 4 else 1e-5
        nd = len(shape)
        wv = None if w is None else self._const_np(w, 'layer norm weight').ravel()
        bv = None if b is None else self._const_np(b, 'layer norm bias').ravel()
        self._rows_op(op, K.R_LAYERNORM, x, list(range(-nd, 0)), wv, bv, eps)
        self.b.desc.append('layer_norm')

    op_native_layer_norm = op_layer_norm

    def op__native_batch_norm_legit_no_training(self, op: OpRec) -> None:
        x, w, b, mean, var = op.args[:5]
        eps = float(op.args[6])
        self._batch_norm(op, x, w, b, mean, var, eps)

    def op_batch_norm(self, op: OpRec) -> None:
        x, w, b, mean, var, training = op.args[:6]
        if training:
            raise Unsupported('batch norm in training mode')
        self._batch_norm(op, x, w, b, mean, var, float(op.args[7]))

    def _batch_norm(self, op: OpRec, x: TRec, w: Any, b: Any, mean: Any, var: Any, eps: float) -> None:
        import torch

        mv, vv = self._const_np(mean, 'mean'), self._const_np(var, 'var')
        wv = self._const_np(w, 'weight') if w is not None else np.ones_like(mv)
        bv = self._const_np(b, 'bias') if b is not None else np.zeros_like(mv)
        scale = wv / np.sqrt(vv + eps)
        shift = bv - mv * scale
        shp = [1] * len(x.shape)
        shp[1 if len(x.shape) > 1 else 0] = scale.size
        t = _tensors(op.out)[0]
        dst = self.out_region(t)
        s_addr = torch.arange(scale.size).reshape(shp) + self.b.const(scale)
        sh_addr = torch.arange(scale.size).reshape(shp) + self.b.const(shift)
        shape = tuple(dst.shape)
        dm, d = self.operand(dst, shape)
        for kind, a, c in ((K.M_MUL, self.addr(x), s_addr), (K.M_ADD, dst, sh_addr)):
            am, ao = self.operand(a, shape)
            cm, co = self.operand(c, shape)
            self.b.op(K.OP_MAP, kind, int(dst.numel()), dm, d, am, ao, cm, co, -1)
        for extra in _tensors(op.out)[1:]:
            self.poison.add(extra.ptr)

    # -- recurrent layers -------------------------------------------------------------------------
    def _rnn(
        self,
        op: OpRec,
        cell: str,
        x: TRec,
        h0: list[Any],
        params: list[Any],
        layers: int,
        outs: list[TRec | None],
    ) -> None:
        """Run `layers` LSTM/GRU cells; outs = [output, h_n(, c_n)] recs (None for absent)."""
        per = len(params) // layers
        if per not in (2, 4):
            raise Unsupported(f'{cell} with {per} parameter tensors per layer (projections?)')
        w0 = self._const_np(params[0], f'{cell} weight')
        gates = 4 if cell == 'lstm' else 3
        hs = w0.shape[0] // gates
        if x.numel != w0.shape[1]:
            raise Unsupported(
                f'{cell} over a sequence or batch (input {x.shape}); one step of batch 1 is compiled'
            )
        hbuf = self.b.alloc(layers * hs)
        self.copy_to(_arange(hbuf, layers * hs), self._flat(h0[0], layers * hs))
        cbuf = -1
        if cell == 'lstm':
            cbuf = self.b.alloc(layers * hs)
            self.copy_to(_arange(cbuf, layers * hs), self._flat(h0[1], layers * hs))
        for layer in range(layers):
            p = params[layer * per : (layer + 1) * per]
            wih, whh = self._const_np(p[0], 'weight_ih'), self._const_np(p[1], 'weight_hh')
            bih = self._const_np(p[2], 'bias_ih').ravel() if per == 4 else np.zeros(gates * hs, np.float32)
            bhh = self._const_np(p[3], 'bias_hh').ravel() if per == 4 else np.zeros(gates * hs, np.float32)
            k = wih.shape[1]
            if layer == 0:
                src = self.padded_input(x, k)
                wih_off, kp = self.b.weights(wih, padded=True)
            else:
                src = self.b.alloc(k)
                self.copy_to(_arange(src, k), _arange(hbuf + (layer - 1) * hs, k))
                wih_off, kp = self.b.weights(wih, padded=True)
            whh_off, _ = self.b.weights(whh, padded=False)
            h = hbuf + layer * hs
            if cell == 'lstm':
                g = self.b.alloc(4 * hs)
                self.b.op(
                    K.OP_LSTM, src, kp, h, cbuf + layer * hs, hs, wih_off, whh_off, self.b.param(bih + bhh), g
                )
            else:
                gx, gh = self.b.alloc(3 * hs), self.b.alloc(3 * hs)
                self.b.op(
                    K.OP_GRU, src, kp, h, hs, wih_off, whh_off, self.b.param(bih), self.b.param(bhh), gx, gh
                )
            self.b.ibuf = max(self.b.ibuf, gates * hs)
        self.b.desc.append(f'{cell}({w0.shape[1]}->{hs}' + (f' x{layers})' if layers > 1 else ')'))
        last = _arange(hbuf + (layers - 1) * hs, hs)
        sources = [last, _arange(hbuf, layers * hs), _arange(cbuf, layers * hs)]
        for rec, src_addr in zip(outs, sources, strict=False):
            if rec is not None:
                dst = self.out_region(rec)
                self.copy_to(dst, src_addr.reshape(dst.shape))

    def _flat(self, t: Any, n: int) -> Any:
        a = self.addr(t).reshape(-1)
        if a.numel() != n:
            raise Unsupported(f'recurrent state of {a.numel()} values, expected {n}')
        return a

    def op_lstm(self, op: OpRec) -> None:
        x, hx, params, _has_b, layers, _drop, train, bidir, _batch_first = op.args[:9]
        if bidir or train:
            raise Unsupported('bidirectional or training-mode LSTM')
        self._rnn(op, 'lstm', x, list(hx), list(params), int(layers), list(op.out))

    def op_gru(self, op: OpRec) -> None:
        x, hx, params, _has_b, layers, _drop, train, bidir, _batch_first = op.args[:9]
        if bidir or train:
            raise Unsupported('bidirectional or training-mode GRU')
        self._rnn(op, 'gru', x, [hx], list(params), int(layers), list(op.out))

    def op_lstm_cell(self, op: OpRec) -> None:
        x, hx, wih, whh = op.args[:4]
        b = [t for t in op.args[4:6] if t is not None]
        h1, c1 = op.out
        self._rnn(op, 'lstm', x, list(hx), [wih, whh, *b], 1, [None, h1, c1])

    def op_gru_cell(self, op: OpRec) -> None:
        x, hx, wih, whh = op.args[:4]
        b = [t for t in op.args[4:6] if t is not None]
        self._rnn(op, 'gru', x, [hx], [wih, whh, *b], 1, [None, op.out])

    # -- data movement ----------------------------------------------------------------------------
    def movement(self, op: OpRec) -> None:
        import torch

        def sub(a: Any) -> Any:
            if isinstance(a, TRec):
                if a.dtype.is_floating_point:
                    return self.addr(a).clone()
                if self.is_dyn(a):
                    raise Unsupported(f'{op.name} with an index computed from the observation')
                return a.value
            if isinstance(a, (list, tuple)):
                return type(a)(sub(v) for v in a)
            return a

        args = [sub(a) for a in op.args]
        kwargs = {
            k: sub(v) for k, v in op.kwargs.items() if k not in ('dtype', 'memory_format', 'layout', 'device')
        }
        if op.name in ('_to_copy', 'to'):
            t = self.target(op)
            if t.dtype != _f32():
                raise Unsupported(f'conversion to {t.dtype}')
            kwargs = {}
            args = args[:1]
            res = args[0].clone()
        elif op.name in ('masked_fill', 'masked_fill_'):
            val = op.args[2]
            args[2] = int(self.scalar_addr(float(val.value if isinstance(val, TRec) else val)))
            res = op.func(*args, **kwargs)
        elif op.name.startswith('index_put') and (
            (len(op.args) > 3 and op.args[3]) or op.kwargs.get('accumulate')
        ):
            raise Unsupported('index_put with accumulate')
        else:
            res = op.func(*args, **kwargs)
        if op.written:
            w = op.written[0]
            before = self.addr(w)
            after = args[0] if op.name.endswith('_') else res
            changed = after != before
            self.copy_to(before[changed], after[changed])
            return
        outs = _tensors(op.out)
        results = list(res) if isinstance(res, (list, tuple)) else [res]
        for rec, r in zip(outs, results, strict=True):
            if rec.ptr in self.base or rec.ptr in self.dyn:
                continue  # a view of a dynamic tensor
            if not isinstance(r, torch.Tensor) or r.dtype != torch.int64:
                raise Unsupported(f'{op.name} did not give addresses')
            self.copy_to(self.out_region(rec), r.reshape(rec.shape))


def _f32() -> Any:
    import torch

    return torch.float32


def _arange(off: int, n: int) -> Any:
    import torch

    return torch.arange(n, dtype=torch.int64) + off


def _post(op: OpRec, w: TRec) -> TRec:
    """The value of written tensor `w` after `op` (in-place ops return it)."""
    for t in _tensors(op.out):
        if t.ptr == w.ptr and t.offset == w.offset and t.shape == w.shape:
            return t
    raise Unsupported(f'{op.name}: cannot tell what it wrote')


def _scaled(t: TRec, alpha: Any) -> TRec:
    v = t.value * alpha
    return TRec(-id(v), t.snumel, 0, t.shape, t.stride, t.dtype, v)


def compile_module(module: Any, in_shape: tuple[int, ...], reset: Any = None) -> K.Program:
    """Trace `module` on one observation of `in_shape` (float32) and compile it.

    `reset` (callable) restores the module's recurrent state before and after the trace.

    Raises:
        Unsupported: an operator, dtype or structure the compiler does not handle (says which).
    """
    import torch

    n = int(np.prod(in_shape))
    x = torch.from_numpy(np.random.default_rng(7).standard_normal(n).astype(np.float32).reshape(in_shape))
    if reset is not None:
        reset()
    try:
        ops, xr, y = trace(module, x)
    except Unsupported:
        raise
    except Exception as err:
        raise Unsupported(
            f'the model raised while traced: {str(err).strip().splitlines()[-1][:160]}'
        ) from None
    finally:
        if reset is not None:
            reset()
    if isinstance(y, (list, tuple)):
        raise Unsupported(f'the model returns a {type(y).__name__}, not one tensor')
    if not isinstance(y, torch.Tensor):
        raise Unsupported('the model does not return a tensor')
    yr = _rec(y)
    c = _Compiler(ops, xr)
    c.out_ptr = yr.ptr
    c.run()
    if yr.ptr not in c.dyn:
        raise Unsupported('the output does not depend on the observation')
    out = c.contiguous(yr)
    prog = c.b.build(c.in_off, n, out, yr.numel, source='graph')
    prog.summary = 'graph: ' + (prog.summary or 'element-wise')
    return prog


def input_usage(module: Any, in_shape: tuple[int, ...], reset: Any = None) -> tuple[int, int] | None:
    """(first, last + 1) input indices the model reads, from a trace; None when it cannot be traced."""
    import torch

    n = int(np.prod(in_shape))
    x = torch.zeros(in_shape, dtype=torch.float32)
    if reset is not None:
        reset()
    try:
        ops, xr, _y = trace(module, x)
    except Exception:
        return None
    finally:
        if reset is not None:
            reset()
    used = np.zeros(n, bool)
    views: dict[tuple[int, tuple[int, ...], tuple[int, ...]], bool] = {}
    in_ptrs = {xr.ptr}
    for op in ops:
        ins = _tensors(op.args) + _tensors(op.kwargs)
        outs = _tensors(op.out)
        is_view = bool(outs) and all(o.ptr in {t.ptr for t in ins} for o in outs) and not op.written
        for t in ins:
            if t.ptr in in_ptrs and not is_view and t.dtype == torch.float32:
                key = (t.offset, t.shape, t.stride)
                if key in views:
                    continue
                views[key] = True
                idx = torch.arange(t.snumel).as_strided(t.shape, t.stride, t.offset).reshape(-1).numpy()
                used[idx[idx < n]] = True
    if not used.any():
        return None
    nz = np.nonzero(used)[0]
    return int(nz[0]), int(nz[-1]) + 1


def input_slices(module: Any, in_shape: tuple[int, ...], reset: Any = None) -> list[tuple[int, int]]:
    """Contiguous runs [start, stop) of the input that the model reads through views (slices), from
    a trace; [] when it cannot be traced or reads the whole input at once."""
    import torch

    n = int(np.prod(in_shape))
    if reset is not None:
        reset()
    try:
        ops, xr, _y = trace(module, torch.zeros(in_shape, dtype=torch.float32))
    except Exception:
        return []
    finally:
        if reset is not None:
            reset()
    runs: list[tuple[int, int]] = []
    for op in ops:
        for t in _tensors(op.out):
            if t.ptr != xr.ptr or t.numel >= n or t.numel == 0:
                continue
            idx = torch.arange(t.snumel).as_strided(t.shape, t.stride, t.offset).reshape(-1)
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            if (
                hi - lo == t.numel
                and bool((idx == lo + torch.arange(t.numel)).all())
                and (lo, hi) not in runs
            ):
                runs.append((lo, hi))
    return runs
