"""int8 backend: dynamic quantization of Linear / LSTM layers (rebuilt from a compiled Program where
the model is TorchScript, since ``quantize_dynamic`` needs plain ``nn`` modules).

Not RT-safe (construction). The result runs as a :class:`~rt_safe_rl.core.policy.backends.TorchBackend`.
"""

from __future__ import annotations

import warnings
from typing import Any

from rt_safe_rl.core.errors import PolicyLoadError
from rt_safe_rl.core.policy.loading import PolicyInfo, error_line


def _program_steps(program: Any) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """The Program's ops as torch layers (nn.Linear / nn.LSTMCell holding its weights, in op order)
    and the step tuples :func:`_program_module`'s forward runs (layer index, scratch offsets, ...)."""
    import torch
    from torch import nn

    from rt_safe_rl.core.policy import kernels as kn

    layers: list[Any] = []
    steps: list[tuple[Any, ...]] = []
    p = torch.from_numpy(program.params.copy())
    for row in program.ops.tolist():
        op = row[0]
        if op == kn.OP_LINEAR:
            src, k, dst, n, w, b, act = row[1:8]
            lin = nn.Linear(k, n, bias=b >= 0)
            with torch.no_grad():
                lin.weight.copy_(p[w : w + n * k].reshape(n, k))
                if b >= 0:
                    lin.bias.copy_(p[b : b + n])
            steps.append(('linear', len(layers), src, k, dst, n, act))
            layers.append(lin)
        elif op == kn.OP_LSTM:
            src, k, h, c, hs, wih, whh, b = row[1:9]
            cell = nn.LSTMCell(k, hs)
            with torch.no_grad():
                cell.weight_ih.copy_(p[wih : wih + 4 * hs * k].reshape(4 * hs, k))
                cell.weight_hh.copy_(p[whh : whh + 4 * hs * hs].reshape(4 * hs, hs))
                cell.bias_ih.copy_(p[b : b + 4 * hs])
                cell.bias_hh.zero_()
            steps.append(('lstm', len(layers), src, k, h, c, hs))
            layers.append(cell)
        elif op == kn.OP_NORMALIZE:
            src, n, dst, mean, std, eps = row[1:7]
            steps.append(
                (
                    'norm',
                    p[mean : mean + n].clone(),
                    p[std : std + n].clone(),
                    float(p[eps]),
                    src,
                    n,
                    dst,
                )
            )
        elif op == kn.OP_COPY:
            steps.append(('copy', row[1], row[2], row[3]))
        elif op == kn.OP_ADD:
            steps.append(('add', row[1], row[2], row[3]))
        elif op == kn.OP_L2NORM:
            steps.append(('l2', row[1], row[2], row[3], float(p[row[4]])))
    return layers, steps


def _program_module(program: Any) -> Any:
    """A plain nn.Module that executes a Program with nn.Linear / nn.LSTMCell (for quantization)."""
    import torch
    from torch import nn

    from rt_safe_rl.core.policy import kernels as kn

    class ProgramModule(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers, self.steps = _program_steps(program)
            self.layers = nn.ModuleList(layers)
            self.register_buffer('scratch', torch.zeros(1, program.scratch_size))
            self.in_off, self.in_dim = program.in_off, program.in_dim
            self.out_off, self.out_dim = program.out_off, program.out_dim

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s: Any = self.scratch
            s[:, self.in_off : self.in_off + self.in_dim] = x
            acts = {
                kn.ACT_ELU: torch.nn.functional.elu,
                kn.ACT_RELU: torch.relu,
                kn.ACT_TANH: torch.tanh,
                kn.ACT_LEAKY: torch.nn.functional.leaky_relu,
            }
            for st in self.steps:
                if st[0] == 'linear':
                    _, i, src, k, dst, n, act = st
                    layer: Any = self.layers[i]
                    y = layer(s[:, src : src + k])
                    s[:, dst : dst + n] = acts[act](y) if act in acts else y
                elif st[0] == 'lstm':
                    _, i, src, k, h, c, hs = st
                    hn, cn = self.layers[i](
                        s[:, src : src + k], (s[:, h : h + hs].clone(), s[:, c : c + hs].clone())
                    )
                    s[:, h : h + hs] = hn
                    s[:, c : c + hs] = cn
                elif st[0] == 'norm':
                    _, mean, std, eps, src, n, dst = st
                    s[:, dst : dst + n] = (s[:, src : src + n] - mean) / (std + eps)
                elif st[0] == 'copy':
                    _, src, n, dst = st
                    s[:, dst : dst + n] = s[:, src : src + n]
                elif st[0] == 'add':
                    _, src, n, dst = st
                    s[:, dst : dst + n] += s[:, src : src + n]
                else:
                    _, src, n, dst, eps = st
                    v = s[:, src : src + n]
                    s[:, dst : dst + n] = v / torch.clamp(v.norm(dim=1, keepdim=True), min=eps)
            out: torch.Tensor = s[:, self.out_off : self.out_off + self.out_dim].clone()
            return out

        def reset_memory(self) -> None:
            scratch: Any = self.scratch
            scratch.zero_()

    return ProgramModule().eval()


def int8_module(module: Any, info: PolicyInfo, program: Any = None) -> Any:
    """Dynamically quantized copy of `module` (or of `program` when given / needed).

    Raises:
        PolicyLoadError: the model cannot be quantized (says why).
    """
    import torch
    from torch import nn

    if program is not None:
        module = _program_module(program)
    elif isinstance(module, torch.jit.ScriptModule):
        from rt_safe_rl.core.policy.extract import Unsupported, extract_program

        try:
            module = _program_module(extract_program(module))
        except Unsupported as err:
            raise PolicyLoadError(
                f'int8: TorchScript model cannot be rebuilt for quantization: {err}'
            ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]  # torch: untyped
                module, {nn.Linear, nn.LSTMCell, nn.LSTM}, dtype=torch.qint8
            )
    except Exception as err:
        raise PolicyLoadError(f'int8: dynamic quantization failed: {error_line(err)}') from None
