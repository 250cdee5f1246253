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

The compiler is split over :mod:`.graph_trace` (recording), :mod:`.graph_base` (storage model,
operands) and :mod:`.graph_ops` (operator handlers); this module is the entry point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rt_safe_rl.core.policy import kernels as K  # noqa: N812 - K.OP_* reads like the kernel tables
from rt_safe_rl.core.policy.extract import Unsupported
from rt_safe_rl.core.policy.graph_ops import Compiler
from rt_safe_rl.core.policy.graph_trace import OpRec, TRec, input_slices, input_usage, rec_of, trace

__all__ = ['OpRec', 'TRec', 'compile_module', 'input_slices', 'input_usage', 'trace']


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
    yr = rec_of(y)
    c = Compiler(ops, xr)
    c.out_ptr = yr.ptr
    c.run()
    if yr.ptr not in c.dyn:
        raise Unsupported('the output does not depend on the observation')
    out = c.contiguous(yr)
    prog = c.b.build(c.in_off, n, out, yr.numel, source='graph')
    prog.summary = 'graph: ' + (prog.summary or 'element-wise')
    return prog
