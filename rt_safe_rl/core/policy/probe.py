"""What a policy file takes and gives: sizes, tensor ranks, recurrence, input slicing.

:func:`inspect_policy` is the one entry (configure time, the benchmark, ``rt-safe-rl policy
inspect``). For torch models the input size comes from the model itself: every plausible size
(Linear / LSTM input widths, buffer lengths, integer constants of the TorchScript code) is run, in
the ranks ``[1, n]``, ``[n]`` and ``[n, 1]``; where several sizes run, the one whose every element
the model reads wins (a model that slices ``x[:, :45]`` out of 57 inputs runs at 45 as well, but
reads all of 57 only at 57 when something else uses the rest). ONNX sizes and ranks come from the
graph's declared input/output shapes (symbolic dims -> 1).

Actor-critic containers (children ``actor`` and ``critic``) whose own ``forward`` does not give
one tensor run their ``actor``; :attr:`PolicyInfo.actor_of` says so.

Not RT-safe (configure time).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from rt_safe_rl.core.errors import PolicyLoadError
from rt_safe_rl.core.policy.config import ModelConfig
from rt_safe_rl.core.policy.loading import (
    STATE_BUFFER_NAMES,
    PolicyInfo,
    _kind,
    detect_format,
    error_line,
    load_torch_module,
    make_onnx_session,
    reset_torch_state,
    sha256_file,
    state_buffers,
)

RANKS = ('row', 'flat', 'column')
"""Input ranks tried, in order: [1, n], [n], [n, 1]."""


def shape_of(rank: str, n: int) -> tuple[int, ...]:
    """Tensor shape of an n-value observation in `rank`."""
    return {'row': (1, n), 'flat': (n,), 'column': (n, 1)}[rank]


def candidate_dims(module: Any) -> list[int]:
    """Plausible input sizes, most likely first: layer input widths, buffer lengths, code constants."""
    dims: list[int] = []
    for _name, mod in module.named_modules():
        k = _kind(mod)
        w = None
        if k == 'Linear':
            w = getattr(mod, 'weight', None)
        elif k in ('LSTM', 'GRU', 'LSTMCell', 'GRUCell'):
            w = getattr(mod, 'weight_ih_l0', None)
            if w is None:
                w = getattr(mod, 'weight_ih', None)
        if w is not None and w.dim() == 2:
            dims.append(int(w.shape[1]))
    buf_dims: list[int] = []
    for _name, b in module.named_buffers() if hasattr(module, 'named_buffers') else []:
        if hasattr(b, 'shape') and 1 <= len(b.shape) <= 2 and b.shape[-1] > 1 and b.numel() == b.shape[-1]:
            buf_dims.append(int(b.shape[-1]))
    code_dims: list[int] = []
    for _name, mod in module.named_modules():
        code = str(getattr(mod, 'code', '') or '')
        code_dims += [int(v) for v in re.findall(r'(?<![\w.])(\d{1,5})(?![\w.])', code) if 1 < int(v) <= 8192]
    seen: list[int] = []
    for d in buf_dims + dims + sorted(set(code_dims)):
        if d not in seen:
            seen.append(d)
    return seen


def _run(module: Any, shape: tuple[int, ...]) -> Any:
    import torch

    try:
        with torch.inference_mode():
            return module(torch.zeros(shape))
    finally:
        reset_torch_state(module)


def _out_shape(y: Any) -> list[int] | None:
    """The output shape when `y` is one tensor with at most one non-1 dim (a vector of actions)."""
    import torch

    if not isinstance(y, torch.Tensor) or y.dim() > 3 or sum(1 for d in y.shape if d != 1) > 1:
        return None
    return [int(d) for d in y.shape]


def probe_torch(module: Any, obs_dim: int | None) -> tuple[int, int, list[int], list[int]]:
    """(obs_dim, act_dim, in_shape, out_shape) by running zeros; state is reset afterwards.

    With `obs_dim` given only that size is tried (in the three ranks); else :func:`candidate_dims`.

    Raises:
        PolicyLoadError: no size runs, or the output is not one vector-shaped tensor.
    """
    cands = [obs_dim] if obs_dim else candidate_dims(module)
    last = ''
    working: list[tuple[int, str, list[int]]] = []
    for rank in RANKS:
        for d in cands:
            try:
                y = _run(module, shape_of(rank, d))
            except Exception as err:
                last = last or error_line(err)
                continue
            out = _out_shape(y)
            if out is None:
                last = f'output {getattr(y, "shape", type(y).__name__)} is not one vector of actions'
                continue
            working.append((d, rank, out))
        if working:
            break
    if not working:
        if obs_dim:
            raise PolicyLoadError(f'the model does not run on {obs_dim} inputs: {last}')
        raise PolicyLoadError(f'cannot find the input size of the model (tried {cands[:12]}): {last}')
    chosen = working[0]
    if len(working) > 1:  # several sizes run: the model slices its input
        from rt_safe_rl.core.policy.graph import input_usage

        usage = [
            input_usage(module, shape_of(r, d), lambda: reset_torch_state(module)) for d, r, _ in working
        ]
        full = [w for w, u in zip(working, usage, strict=True) if u == (0, w[0])]
        # none read whole: the smallest size that holds every element the model reads at any size
        hi = max((u[1] for u in usage if u is not None), default=0)
        chosen = (
            full[0] if full else min((w for w in working if w[0] >= hi), key=lambda w: w[0], default=chosen)
        )
    d, rank, out = chosen
    return d, int(np.prod(out)), list(shape_of(rank, d)), out


def is_recurrent(module: Any, in_shape: list[int]) -> bool:
    """True when the module has state buffers or two identical calls give different outputs."""
    import torch

    if state_buffers(module):
        return True
    n = int(np.prod(in_shape))
    x = torch.linspace(-1.0, 1.0, n).reshape(in_shape)
    try:
        with torch.inference_mode():
            a = module(x).clone()
            b = module(x).clone()
    finally:
        reset_torch_state(module)
    return not bool(torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True))


def _actor_needed(module: Any) -> bool:
    """An actor-critic container whose forward does not give one vector tensor for any candidate."""
    ch = dict(module.named_children()) if hasattr(module, 'named_children') else {}
    if 'actor' not in ch or 'critic' not in ch:
        return False
    try:
        probe_torch(module, None)
    except PolicyLoadError:
        return True
    return False


def inspect_policy(
    path: str | Path,
    model_cfg: ModelConfig | None = None,
    obs_dim: int | None = None,
    expected_sha256: str = '',
    size_note: str = '',
    input_usage_needed: bool = True,
) -> PolicyInfo:
    """Check a policy file and describe it.

    Args:
        path: the policy file.
        model_cfg: format / architecture / ONNX names (defaults: auto-detect).
        obs_dim: the observation size the pipeline builds; the model must accept it (None: probe).
        expected_sha256: refuse a file with another hash ('' = no check).
        size_note: which terms build `obs_dim` (for the mismatch message).
        input_usage_needed: trace which input elements the model reads (``input_used``; costs
            the torch graph tracer's import, ~1.5 s: ``policy inspect`` wants it, loading does not).

    Raises:
        PolicyLoadError: missing, corrupt, wrong hash or format, unsupported, or does not accept `obs_dim`
            (one line naming the file, the size the model expects and the size the config builds).
    """
    p = Path(path)
    model_cfg = model_cfg or ModelConfig()
    if not p.is_file():
        raise PolicyLoadError(f'policy file not found: {p}')
    digest = sha256_file(p)
    if expected_sha256 and digest.lower() != expected_sha256.lower():
        raise PolicyLoadError(f'{p}: SHA-256 {digest} differs from the configured {expected_sha256.lower()}')
    fmt = detect_format(p, model_cfg.format)
    info = PolicyInfo(path=str(p), format=fmt, sha256=digest)
    if fmt == 'onnx':
        _inspect_onnx(p, model_cfg, obs_dim, info, size_note)
        return info
    module = load_torch_module(p, fmt, model_cfg)
    if _actor_needed(module):
        info.actor_of = 'actor-critic container: its actor is run'
        module = module.actor
    try:
        info.obs_dim, info.act_dim, info.in_shape, info.out_shape = probe_torch(module, obs_dim)
    except PolicyLoadError as err:
        if not obs_dim:
            raise PolicyLoadError(f'{p}: {err}') from None
        try:
            want = probe_torch(module, None)[0]
        except PolicyLoadError:
            raise PolicyLoadError(f'{p}: {err} (the policy config builds {obs_dim}{size_note})') from None
        raise PolicyLoadError(
            f'{p}: the model expects {want} inputs, the policy config builds {obs_dim}{size_note}'
        ) from None
    if input_usage_needed:
        from rt_safe_rl.core.policy.graph import input_usage

        used = input_usage(module, tuple(info.in_shape), lambda: reset_torch_state(module))
        info.input_used = list(used) if used is not None else []
    info.state_buffers = {n: list(b.shape) for n, b in state_buffers(module).items()}
    info.has_reset_memory = hasattr(module, 'reset_memory')
    info.recurrent = is_recurrent(module, info.in_shape)
    if info.recurrent and not info.state_buffers and not info.has_reset_memory:
        raise PolicyLoadError(
            f'{p}: the model keeps state between calls but has neither reset_memory() nor '
            f'{"/".join(STATE_BUFFER_NAMES)} buffers: it cannot be reset'
        )
    return info


def _dims(shape: Any) -> list[int]:
    return [int(d) if isinstance(d, int) and d > 0 else 1 for d in shape]


def _inspect_onnx(p: Path, model_cfg: ModelConfig, obs_dim: int | None, info: PolicyInfo, note: str) -> None:
    try:
        import onnxruntime  # noqa: F401 - availability check
    except ImportError:
        raise PolicyLoadError(f'{p}: ONNX policies need onnxruntime (pip install onnxruntime)') from None
    sess = make_onnx_session(p)
    ins, outs = sess.get_inputs(), sess.get_outputs()
    inp = next((i for i in ins if i.name == model_cfg.input_name), None) if model_cfg.input_name else ins[0]
    out = (
        next((o for o in outs if o.name == model_cfg.output_name), None) if model_cfg.output_name else outs[0]
    )
    if inp is None or out is None:
        raise PolicyLoadError(
            f'{p}: no ONNX input {model_cfg.input_name!r} / output {model_cfg.output_name!r}; '
            f'has inputs {[i.name for i in ins]} outputs {[o.name for o in outs]}'
        )
    if len(ins) != 1:
        raise PolicyLoadError(
            f'{p}: ONNX policies with {len(ins)} inputs (recurrent state as inputs) are not supported'
        )
    in_shape = _dims(inp.shape)
    last = inp.shape[-1] if inp.shape else 1
    if not isinstance(last, int):
        if obs_dim is None:
            raise PolicyLoadError(f'{p}: ONNX input size is symbolic; set it through the policy config')
        in_shape[-1] = obs_dim
    d = int(np.prod(in_shape))
    if obs_dim is not None and d != obs_dim:
        raise PolicyLoadError(f'{p}: the model expects {d} inputs, the policy config builds {obs_dim}{note}')
    y = sess.run([out.name], {inp.name: np.zeros(in_shape, np.float32)})[0]
    info.obs_dim, info.act_dim = d, int(np.asarray(y).size)
    info.in_shape, info.out_shape = in_shape, [int(v) for v in np.asarray(y).shape]
    info.onnx_input, info.onnx_output = inp.name, out.name
    info.input_used = [0, d]
