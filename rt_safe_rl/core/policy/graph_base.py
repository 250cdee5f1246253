"""Graph compiler, part 1: the operator tables and :class:`CompilerBase`, which mirrors torch's
storage model in the program's scratch vector (dynamic vs constant storages, recurrent state,
element addresses of views, operands, copies) and emits element-wise ops with activation fusion.

The operator handlers are in :mod:`.graph_ops`; the entry point is :func:`.graph.compile_module`.
Not RT-safe (configure time).
"""

from __future__ import annotations

from typing import Any

from rt_safe_rl.core.policy import kernels as K  # noqa: N812 - K.OP_* reads like the kernel tables
from rt_safe_rl.core.policy.extract import Unsupported
from rt_safe_rl.core.policy.graph_trace import OpRec, TRec, scaled_rec, tensors_of

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


class CompilerBase:
    """Scratch layout and operand addressing shared by every operator handler."""

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
            for t in tensors_of(op.args) + tensors_of(op.kwargs):
                seen.add(t.ptr)
                self.uses[t.ptr] = self.uses.get(t.ptr, 0) + 1
            for t in tensors_of(op.out):
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

    def target(self, op: OpRec) -> TRec:
        if op.written:
            return op.written[0]
        outs = tensors_of(op.out)
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
                b = self.const_addr(scaled_rec(b, alpha))
            elif not isinstance(b, TRec):
                b = float(b) * float(alpha)
            else:
                raise Unsupported(f'{op.name} with alpha {alpha} of a computed tensor')
        self.map_op(op, kind, a, b)

    def _const_np(self, t: Any, what: str) -> Any:
        if not isinstance(t, TRec) or self.is_dyn(t):
            raise Unsupported(f'{what} computed from the observation (only constant weights are compiled)')
        return t.value.float().numpy()
