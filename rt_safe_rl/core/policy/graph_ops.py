"""Graph compiler, part 2: :class:`Compiler`, the operator handlers (activations, clamps, matrix
products, reductions and normalisation, LSTM / GRU layers and cells, data movement) over
:class:`~.graph_base.CompilerBase`.

Not RT-safe (configure time).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rt_safe_rl.core.policy import kernels as K  # noqa: N812 - K.OP_* reads like the kernel tables
from rt_safe_rl.core.policy.extract import Unsupported
from rt_safe_rl.core.policy.graph_base import BINARY, LIKE, MOVEMENT, SHAPE_QUERIES, UNARY, CompilerBase
from rt_safe_rl.core.policy.graph_trace import OpRec, TRec, addr_range, f32_dtype, post_value, tensors_of


class Compiler(CompilerBase):
    """Compiles a trace (:func:`.graph_trace.trace`) into a :class:`~.kernels.Builder`, op by op."""

    # -- operators ---------------------------------------------------------------------------
    def run(self) -> None:
        for i, op in enumerate(self.ops):
            self.step(i, op)

    def step(self, i: int, op: OpRec) -> None:
        ins = tensors_of(op.args) + tensors_of(op.kwargs)
        dyn_in = [t for t in ins if self.is_dyn(t)]
        outs = tensors_of(op.out)
        if not dyn_in:
            for w in op.written:
                if w.ptr in self.dyn:  # a constant written into state / a dynamic tensor
                    self.copy_to(self.addr(w), self.const_addr(post_value(op, w)))
            return
        if op.name in SHAPE_QUERIES or op.name in LIKE:
            return
        if not outs and op.out is not None and not op.written:
            raise Unsupported(f'data-dependent value from {op.name} (control flow on the observation)')
        for t in dyn_in:
            if t.dtype.is_floating_point and t.dtype != f32_dtype():
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
        self.copy_to(self.addr(w), self.const_addr(post_value(op, w)))

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
        t = tensors_of(op.out)[0]
        dst = self.out_region(t)
        dm, do = self.operand(dst, tuple(dst.shape))
        if dm != K.CONTIG:
            raise Unsupported(f'{op.name} into a strided view')
        w_off = self.b.param(w) if w is not None else -1
        b_off = self.b.param(b) if b is not None else -1
        self.b.op(K.OP_ROWS, kind, src, do, x.numel // max(d, 1), d, w_off, b_off, self.b.param([eps]))
        for extra in tensors_of(op.out)[1:]:
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
        t = tensors_of(op.out)[0]
        dst = self.out_region(t)
        s_addr = torch.arange(scale.size).reshape(shp) + self.b.const(scale)
        sh_addr = torch.arange(scale.size).reshape(shp) + self.b.const(shift)
        shape = tuple(dst.shape)
        dm, d = self.operand(dst, shape)
        for kind, a, c in ((K.M_MUL, self.addr(x), s_addr), (K.M_ADD, dst, sh_addr)):
            am, ao = self.operand(a, shape)
            cm, co = self.operand(c, shape)
            self.b.op(K.OP_MAP, kind, int(dst.numel()), dm, d, am, ao, cm, co, -1)
        for extra in tensors_of(op.out)[1:]:
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
        self.copy_to(addr_range(hbuf, layers * hs), self._flat(h0[0], layers * hs))
        cbuf = -1
        if cell == 'lstm':
            cbuf = self.b.alloc(layers * hs)
            self.copy_to(addr_range(cbuf, layers * hs), self._flat(h0[1], layers * hs))
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
                self.copy_to(addr_range(src, k), addr_range(hbuf + (layer - 1) * hs, k))
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
        last = addr_range(hbuf + (layers - 1) * hs, hs)
        sources = [last, addr_range(hbuf, layers * hs), addr_range(cbuf, layers * hs)]
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
            if t.dtype != f32_dtype():
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
        outs = tensors_of(op.out)
        results = list(res) if isinstance(res, (list, tuple)) else [res]
        for rec, r in zip(outs, results, strict=True):
            if rec.ptr in self.base or rec.ptr in self.dyn:
                continue  # a view of a dynamic tensor
            if not isinstance(r, torch.Tensor) or r.dtype != torch.int64:
                raise Unsupported(f'{op.name} did not give addresses')
            self.copy_to(self.out_region(rec), r.reshape(rec.shape))
