"""Compile pure Linear/activation policies to a numba kernel from the module's own weights.

:func:`extract_program` reads the weights of a torch module (TorchScript or plain) or of an ONNX
graph and builds a :class:`Program`: a short list of ops over one float32 scratch vector. A single
numba-compiled interpreter (:func:`run_program`) executes it with no Python per op and no allocation.

Supported structures (anything else raises :class:`Unsupported`, and the numba backend is simply
not available for that model):

- ``nn.Sequential`` of Linear + ELU(alpha=1) / ReLU / Tanh / LeakyReLU / Identity (legged_gym actors);
- a module with ``actor`` (such a Sequential), optionally ``normalizer`` (Identity or an empirical
  normalizer with ``_mean``, ``_std``, ``eps``: ``(x - mean) / (std + eps)``) and optionally a 1-layer
  LSTM ``rnn`` / ``memory`` with ``hidden_state`` / ``cell_state`` buffers (rsl_rl / rl_sar exporters);
- HIMLoco (``estimator`` + ``actor``): ``actor([obs[:frame], v, normalize(z)])`` with
  ``[v, z] = estimator(obs_history)``;
- ONNX graphs made of Gemm / MatMul+Add / Elu / Relu / Tanh / Identity.

The extraction is checked, never trusted: the backends compare every candidate against the
reference (eager torch, or onnxruntime for ONNX files) before it may be selected.

Transcendentals use a vectorisable float32 exp (Cody-Waite reduction + degree-7 expm1 polynomial,
abs error < 1e-7 on the ranges used), so ELU/sigmoid/tanh layers vectorise.
RT-safety: :func:`run_program` is allocation-free and lock-free once compiled (compile at configure).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.policy.kernels import (  # noqa: F401 - re-exported for existing importers
    ACT_ELU,
    ACT_LEAKY,
    ACT_NONE,
    ACT_RELU,
    ACT_TANH,
    OP_ADD,
    OP_COPY,
    OP_L2NORM,
    OP_LINEAR,
    OP_LSTM,
    OP_NORMALIZE,
    PAD,
    ROW,
    CompiledProgram,
    Program,
    run_program,
)
from rt_safe_rl.core.policy.kernels import Builder as _Builder

_ACT_BY_KIND = {
    'ELU': ACT_ELU,
    'ReLU': ACT_RELU,
    'Tanh': ACT_TANH,
    'LeakyReLU': ACT_LEAKY,
    'Identity': ACT_NONE,
}


class Unsupported(Exception):  # noqa: N818 - reads as "raise Unsupported(why)"
    """The model is not a structure that this compiler handles (the message says what)."""


def _kind(mod: Any) -> str:
    return str(getattr(mod, 'original_name', None) or type(mod).__name__)


def _np(t: Any) -> npt.NDArray[np.float32]:
    return np.asarray(t.detach().cpu().numpy(), dtype=np.float32)


def _children(mod: Any) -> dict[str, Any]:
    return dict(mod.named_children())


def _mlp(b: _Builder, seq: Any, src: int, in_dim: int) -> tuple[int, int]:
    """Sequential of Linear/activations starting at scratch `src`; returns (dst, width)."""
    layers = list(_children(seq).values())
    if not layers or _kind(layers[0]) != 'Linear':
        raise Unsupported('a Sequential that does not start with Linear')
    sizes = [in_dim]
    i = 0
    while i < len(layers):
        lin = layers[i]
        if _kind(lin) != 'Linear':
            raise Unsupported(f'unsupported layer {_kind(lin)} in Sequential')
        w = _np(lin.weight)
        if w.shape[1] != sizes[-1]:
            raise Unsupported(f'Linear expects {w.shape[1]} inputs, gets {sizes[-1]}')
        bias = getattr(lin, 'bias', None)
        act = ACT_NONE
        if i + 1 < len(layers) and _kind(layers[i + 1]) != 'Linear':
            a = layers[i + 1]
            k = _kind(a)
            if k not in _ACT_BY_KIND:
                raise Unsupported(f'unsupported activation {k}')
            if k == 'ELU' and abs(float(getattr(a, 'alpha', 1.0)) - 1.0) > 0.0:
                raise Unsupported('ELU with alpha != 1')
            if k == 'LeakyReLU' and abs(float(getattr(a, 'negative_slope', 0.01)) - 0.01) > 0.0:
                raise Unsupported('LeakyReLU with a slope other than 0.01')
            act = _ACT_BY_KIND[k]
            i += 1
        src, n = b.linear(src, w, _np(bias) if bias is not None else None, act)
        sizes.append(n)
        i += 1
    b.desc.append('mlp ' + '-'.join(str(s) for s in sizes))
    return src, sizes[-1]


def _normalizer(b: _Builder, mod: Any, src: int, n: int) -> int:
    k = _kind(mod)
    if k == 'Identity':
        return src
    mean, std, eps = getattr(mod, '_mean', None), getattr(mod, '_std', None), getattr(mod, 'eps', None)
    if mean is None or std is None or eps is None:
        raise Unsupported(f'normalizer {k} without _mean/_std/eps')
    mean_a, std_a = _np(mean).ravel(), _np(std).ravel()
    if mean_a.size != n or std_a.size != n:
        raise Unsupported('normalizer size differs from the input size')
    dst = b.alloc(n)
    b.op(OP_NORMALIZE, src, n, dst, b.param(mean_a), b.param(std_a), b.param([float(eps)]))
    b.desc.append(f'norm({n})')
    return dst


def _lstm(b: _Builder, mod: Any, src: int, k: int) -> tuple[int, int]:
    if int(getattr(mod, 'num_layers', 1)) != 1 or bool(getattr(mod, 'bidirectional', False)):
        raise Unsupported('only 1-layer unidirectional LSTMs are compiled')
    if bool(getattr(mod, 'batch_first', False)):
        raise Unsupported('batch_first LSTM')
    w_ih, w_hh = _np(mod.weight_ih_l0), _np(mod.weight_hh_l0)
    bias = (
        _np(mod.bias_ih_l0) + _np(mod.bias_hh_l0) if hasattr(mod, 'bias_ih_l0') else np.zeros(w_ih.shape[0])
    )
    h4 = w_ih.shape[0]
    if w_ih.shape[1] != k or h4 % 4:
        raise Unsupported('LSTM sizes do not fit')
    hs = h4 // 4
    h_off, c_off, g_off = b.alloc(hs), b.alloc(hs), b.alloc(h4)
    wih_off, kp = b.weights(w_ih)
    whh_off, hsp = b.weights(w_hh)
    if hsp != hs:
        raise Unsupported(f'LSTM hidden size {hs} is not a multiple of {PAD}')
    b.op(OP_LSTM, src, kp, h_off, c_off, hs, wih_off, whh_off, b.param(bias), g_off)
    b.state += [(h_off, hs), (c_off, hs)]
    b.ibuf = max(b.ibuf, h4)
    b.desc.append(f'lstm({k}->{hs})')
    return h_off, hs


def _in_dim_of(mod: Any) -> int:
    """Input size: the first of normalizer statistics, recurrent layer, estimator/actor first Linear."""
    ch = _children(mod)
    order = [ch[k] for k in ('normalizer', 'rnn', 'memory', 'estimator', 'actor') if k in ch] or [mod]
    for m in order:
        if hasattr(m, '_mean'):
            return int(m._mean.numel())
        if _kind(m) == 'LSTM':
            return int(m.weight_ih_l0.shape[1])
        if _kind(m) == 'Sequential':
            first = next(iter(_children(m).values()), None)
            if first is not None and _kind(first) == 'Linear':
                return int(first.weight.shape[1])
    for _n, m in mod.named_modules():
        if _kind(m) == 'Linear':
            return int(m.weight.shape[1])
    raise Unsupported('cannot tell the input size (no normalizer, LSTM or Linear first)')


def extract_program(module: Any) -> Program:
    """Compile a torch module (TorchScript or plain) to a :class:`Program`.

    Raises:
        Unsupported: the structure is not one listed in the module docstring.
    """
    b = _Builder()
    kind = _kind(module)
    ch = _children(module)
    in_dim = _in_dim_of(module)
    x = b.alloc(in_dim)
    if kind == 'Sequential':
        out, n = _mlp(b, module, x, in_dim)
        return b.build(x, in_dim, out, n)
    if set(ch) == {'estimator', 'actor'}:
        return _himloco(b, module, x, in_dim)
    if len(ch) == 2 and all(_kind(c) in ('Linear', 'Sequential') for c in ch.values()):
        return _sum_of_branches(b, module, x, in_dim)
    names = set(ch)
    rnn_name = next((r for r in ('rnn', 'memory') if r in names), None)
    if 'actor' not in names or not names <= {'actor', 'normalizer', 'rnn', 'memory'}:
        raise Unsupported(f'unknown module structure {kind} with children {sorted(names)}')
    src, n = x, in_dim
    if 'normalizer' in ch:
        src = _normalizer(b, ch['normalizer'], src, n)
    if rnn_name is not None:
        if _kind(ch[rnn_name]) != 'LSTM':
            raise Unsupported(f'recurrent layer {_kind(ch[rnn_name])} is not an LSTM')
        bufs = dict(module.named_buffers(recurse=False))
        if 'hidden_state' not in bufs or 'cell_state' not in bufs:
            raise Unsupported('LSTM without hidden_state/cell_state buffers')
        src, n = _lstm(b, ch[rnn_name], src, n)
    out, n = _mlp(b, ch['actor'], src, n)
    return b.build(x, in_dim, out, n)


def _branch(b: _Builder, mod: Any, src: int, in_dim: int) -> tuple[int, int]:
    if _kind(mod) == 'Linear':
        w = _np(mod.weight)
        if w.shape[1] != in_dim:
            raise Unsupported(f'Linear expects {w.shape[1]} inputs, gets {in_dim}')
        bias = getattr(mod, 'bias', None)
        b.desc.append(f'linear {in_dim}-{w.shape[0]}')
        return b.linear(src, w, _np(bias) if bias is not None else None, ACT_NONE)
    return _mlp(b, mod, src, in_dim)


def _is_sum_of_two_calls(module: Any) -> bool:
    """TorchScript graph check: forward(x) = add(child1.forward(x), child2.forward(x), alpha=1)."""
    graph = getattr(module, 'graph', None)
    if graph is None:
        return False
    x = list(graph.inputs())[1]
    nodes = list(graph.nodes())
    calls = [n for n in nodes if n.kind() == 'prim::CallMethod']
    adds = [n for n in nodes if n.kind() == 'aten::add']
    allowed = {'prim::GetAttr', 'prim::CallMethod', 'aten::add', 'prim::Constant'}
    if len(calls) != 2 or len(adds) != 1 or any(n.kind() not in allowed for n in nodes):
        return False
    if any(list(c.inputs())[1].unique() != x.unique() for c in calls):
        return False
    add_in = list(adds[0].inputs())
    outs = {c.output().unique() for c in calls}
    if {add_in[0].unique(), add_in[1].unique()} != outs or len(add_in) != 3:
        return False
    alpha = add_in[2].node()
    if alpha.kind() != 'prim::Constant' or alpha.output().toIValue() != 1:
        return False
    return bool(next(iter(graph.outputs())).unique() == adds[0].output().unique())


def _sum_of_branches(b: _Builder, module: Any, x: int, in_dim: int) -> Program:
    """``forward(obs) = a(obs) + b(obs)`` for two Linear/Sequential children (a residual linear head)."""
    names = list(_children(module))
    if not _is_sum_of_two_calls(module):
        raise Unsupported('two-branch module whose forward is not a(obs) + b(obs)')
    ch = _children(module)
    y1, n1 = _branch(b, ch[names[0]], x, in_dim)
    y2, n2 = _branch(b, ch[names[1]], x, in_dim)
    if n1 != n2:
        raise Unsupported('branches of different output sizes')
    b.op(OP_ADD, y2, n1, y1)
    b.desc.append('sum')
    return b.build(x, in_dim, y1, n1)


def _himloco(b: _Builder, module: Any, x: int, in_dim: int) -> Program:
    code = str(getattr(module, 'code', ''))
    est, n_est = _mlp(b, module.estimator, x, in_dim)
    m_vel = re.search(r'slice\(parts, -1, None, (\d+)\)', code)
    if 'normalize' not in code or m_vel is None:
        raise Unsupported('estimator/actor module whose forward is not the HIMLoco pattern')
    n_vel = int(m_vel.group(1))
    actor_in = int(next(iter(_children(module.actor).values())).weight.shape[1])
    frame = actor_in - n_est
    if frame <= 0 or frame > in_dim or n_vel >= n_est:
        raise Unsupported('HIMLoco sizes do not fit')
    cat = b.alloc(actor_in)
    b.op(OP_COPY, x, frame, cat)
    b.op(OP_COPY, est, n_vel, cat + frame)
    b.op(OP_L2NORM, est + n_vel, n_est - n_vel, cat + frame + n_vel, b.param([1e-12]))
    b.desc.append(f'cat(obs[:{frame}], v[{n_vel}], l2norm(z[{n_est - n_vel}]))')
    out, n = _mlp(b, module.actor, cat, actor_in)
    return b.build(x, in_dim, out, n)


def _onnx_constants(g: Any, numpy_helper: Any) -> dict[str, Any]:
    """Initializers and ``Constant`` node outputs of the ONNX graph `g`, by tensor name (arrays)."""
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consts = {}
    for node in g.node:
        if node.op_type == 'Constant':
            for a in node.attribute:
                if a.name == 'value':
                    consts[node.output[0]] = numpy_helper.to_array(a.t)
    inits.update(consts)
    return inits


# ONNX activation operator -> the activation code fused into the Linear before it
_ONNX_ACT = {'Elu': ACT_ELU, 'Relu': ACT_RELU, 'Tanh': ACT_TANH, 'LeakyRelu': ACT_LEAKY, 'Identity': ACT_NONE}


def _fuse_onnx_activation(row: list[int], t: str, attrs: dict[str, Any]) -> None:
    """Set the activation of the Linear op `row` (its column 7) to ONNX operator `t`.

    Raises:
        Unsupported: the Linear has an activation already; Elu alpha != 1; LeakyRelu alpha != 0.01.
    """
    if row[7] != ACT_NONE:
        raise Unsupported('two activations in a row')
    if t == 'Elu' and abs(float(attrs.get('alpha', 1.0)) - 1.0) > 0.0:
        raise Unsupported('Elu alpha != 1')
    if t == 'LeakyRelu' and abs(float(attrs.get('alpha', 0.01)) - 0.01) > 1e-9:
        raise Unsupported('LeakyRelu alpha != 0.01')
    row[7] = _ONNX_ACT[t]


def extract_onnx_program(path: str | Path) -> Program:
    """Compile an ONNX graph of Gemm / MatMul+Add / activations to a :class:`Program`.

    Raises:
        Unsupported: other operators, attributes or shapes.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise Unsupported('the onnx package is not installed') from None
    model = onnx.load(str(path))
    g = model.graph
    inits = _onnx_constants(g, numpy_helper)
    graph_inputs = [i for i in g.input if i.name not in inits]
    if len(graph_inputs) != 1 or len(g.output) != 1:
        raise Unsupported('ONNX graph with several inputs or outputs')
    dims = graph_inputs[0].type.tensor_type.shape.dim
    if not dims or not dims[-1].dim_value:
        raise Unsupported('ONNX input with a symbolic feature size')
    in_dim = int(dims[-1].dim_value)
    b = _Builder()
    x = b.alloc(in_dim)
    where: dict[str, tuple[int, int]] = {graph_inputs[0].name: (x, in_dim)}
    pending: dict[str, tuple[npt.NDArray[np.float32], str]] = {}  # MatMul output -> (W[n,k], input)
    last_linear: dict[str, int] = {}  # tensor name -> op row index of the Linear that wrote it
    sizes = [in_dim]
    for node in g.node:
        t = node.op_type
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if t == 'Constant':
            continue
        if t == 'Gemm':
            a, w_name = node.input[0], node.input[1]
            if attrs.get('transA', 0) or attrs.get('alpha', 1.0) != 1.0 or attrs.get('beta', 1.0) != 1.0:
                raise Unsupported('Gemm with transA/alpha/beta')
            w = inits[w_name].astype(np.float32)
            w = w if attrs.get('transB', 0) else w.T
            bias = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            src, _k = where[a]
            dst, n = b.linear(src, w, bias, ACT_NONE)
            where[node.output[0]] = (dst, n)
            last_linear[node.output[0]] = len(b.rows) - 1
            sizes.append(n)
        elif t == 'MatMul' and node.input[1] in inits:
            pending[node.output[0]] = (inits[node.input[1]].astype(np.float32).T, node.input[0])
        elif t == 'Add' and node.input[0] in pending and node.input[1] in inits:
            w, a = pending.pop(node.input[0])
            src, _k = where[a]
            dst, n = b.linear(src, w, inits[node.input[1]], ACT_NONE)
            where[node.output[0]] = (dst, n)
            last_linear[node.output[0]] = len(b.rows) - 1
            sizes.append(n)
        elif t in _ONNX_ACT:
            a = node.input[0]
            if a not in last_linear:
                raise Unsupported(f'{t} that does not follow a Linear')
            _fuse_onnx_activation(b.rows[last_linear[a]], t, attrs)
            where[node.output[0]] = where[a]
            last_linear[node.output[0]] = last_linear[a]
        else:
            raise Unsupported(f'ONNX operator {t}')
    out_name = g.output[0].name
    if out_name not in where or pending:
        raise Unsupported('ONNX output is not produced by a Linear chain')
    out, n = where[out_name]
    b.desc.append('onnx mlp ' + '-'.join(str(s) for s in sizes))
    return b.build(x, in_dim, out, n)
