"""Loading policy files: TorchScript, state-dict checkpoints (weights_only=True) and ONNX.

What is loaded is described by :class:`PolicyInfo` (format, sizes, recurrent state, SHA-256). Every
backend gets its *own* copy of the model from :func:`load_torch_module` (recurrent state lives inside
TorchScript modules, so sharing one object between backends would mix their states).

Never unpickles code: TorchScript is a restricted format, checkpoints go through
``torch.load(weights_only=True)`` and are rebuilt from an architecture described in config
(:class:`~rt_safe_rl.core.policy.config.ArchitectureConfig`).

Not RT-safe (file I/O, allocation): configure time only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rt_safe_rl.core.errors import PolicyLoadError
from rt_safe_rl.core.policy.config import ArchitectureConfig, ModelConfig

STATE_BUFFER_NAMES = ('hidden_state', 'cell_state')
"""Buffer names that hold recurrent state in the exporters of legged_gym / rsl_rl / rl_sar."""


def error_line(err: BaseException) -> str:
    """One informative line of an exception (TorchScript errors put the cause on their last line)."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    if lines[0].startswith('The following operation failed in the TorchScript interpreter'):
        return lines[-1]
    return lines[0]


def sha256_file(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class PolicyInfo:
    """What a policy file holds (reported by the node and the benchmark).

    Attributes:
        path: resolved file path.
        format: 'torchscript' | 'state_dict' | 'onnx'.
        sha256: hex digest of the file.
        obs_dim: input size (float32 [1, obs_dim]).
        act_dim: output size.
        recurrent: the model keeps state between calls.
        state_buffers: names and shapes of the recurrent state buffers.
        has_reset_memory: the module has a ``reset_memory()`` method.
        onnx_input / onnx_output: tensor names (ONNX only).
    """

    path: str
    format: str
    sha256: str
    obs_dim: int = 0
    act_dim: int = 0
    recurrent: bool = False
    state_buffers: dict[str, list[int]] = field(default_factory=dict)
    has_reset_memory: bool = False
    onnx_input: str = ''
    onnx_output: str = ''

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return dict(self.__dict__)


def detect_format(path: Path, declared: str = 'auto') -> str:
    """'torchscript' | 'state_dict' | 'onnx' from the declared format or the file's content."""
    if declared != 'auto':
        return declared
    if path.suffix.lower() == '.onnx':
        return 'onnx'
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.split('/', 1)[-1].startswith('code/') or '/constants.pkl' in n for n in names):
            return 'torchscript'
        return 'state_dict'
    head = path.read_bytes()[:64]
    if head[:1] == b'\x08':  # protobuf field 1 (ir_version), varint: an ONNX ModelProto
        return 'onnx'
    return 'state_dict'


def _kind(mod: Any) -> str:
    """Class name of a module, also for TorchScript modules (their ``original_name``)."""
    return str(getattr(mod, 'original_name', None) or type(mod).__name__)


def build_arch_module(arch: ArchitectureConfig, state: dict[str, Any]) -> Any:
    """Build an ``nn.Module`` (MLP or LSTM+MLP with state buffers) and load `state` into it.

    Linear layers are matched to the state dict's 2-D ``*weight`` tensors in key order; the LSTM to
    ``*weight_ih_l0`` etc. Sizes come from the weights; ``arch.hidden`` (when given) must agree.

    Raises:
        PolicyLoadError: the weights do not fit the architecture.
    """
    import torch
    from torch import nn

    tensors = {
        k[len(arch.prefix) :]: v
        for k, v in state.items()
        if k.startswith(arch.prefix) and isinstance(v, torch.Tensor)
    }
    lstm_keys = [
        k for k in tensors if k.endswith(('weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0'))
    ]
    linear_w = [k for k in tensors if k.endswith('weight') and tensors[k].dim() == 2 and k not in lstm_keys]
    if not linear_w:
        raise PolicyLoadError('state dict holds no Linear weights (2-D *.weight tensors)')
    acts = {
        'elu': nn.ELU,
        'relu': nn.ReLU,
        'tanh': nn.Tanh,
        'leaky_relu': nn.LeakyReLU,
        'identity': nn.Identity,
    }
    layers: list[nn.Module] = []
    for i, wk in enumerate(linear_w):
        w = tensors[wk]
        bk = wk[: -len('weight')] + 'bias'
        lin = nn.Linear(w.shape[1], w.shape[0], bias=bk in tensors)
        with torch.no_grad():
            lin.weight.copy_(w)
            if bk in tensors:
                lin.bias.copy_(tensors[bk])
        layers.append(lin)
        if i < len(linear_w) - 1:
            layers.append(acts[arch.activation]())
    hidden = [int(tensors[k].shape[0]) for k in linear_w[:-1]]
    if arch.hidden and list(arch.hidden) != hidden:
        raise PolicyLoadError(f'architecture.hidden {arch.hidden} does not match the weights {hidden}')
    for a, b in itertools.pairwise(linear_w):
        if tensors[a].shape[0] != tensors[b].shape[1]:
            raise PolicyLoadError(
                f'Linear weights {a} -> {b} do not chain ({tuple(tensors[a].shape)} -> '
                f'{tuple(tensors[b].shape)})'
            )
    actor = nn.Sequential(*layers)
    if arch.type == 'mlp':
        if lstm_keys:
            raise PolicyLoadError('state dict holds LSTM weights but architecture.type is mlp')
        return actor.eval()

    def one(suffix: str) -> Any:
        keys = [k for k in lstm_keys if k.endswith(suffix)]
        if len(keys) != 1:
            raise PolicyLoadError(f'lstm_mlp: expected one *{suffix} tensor, found {len(keys)}')
        return tensors[keys[0]]

    w_ih = one('weight_ih_l0')
    hsize = int(w_ih.shape[0]) // 4
    if hsize != arch.lstm_hidden:
        raise PolicyLoadError(
            f'architecture.lstm_hidden {arch.lstm_hidden} does not match the weights ({hsize})'
        )
    rnn: Any = nn.LSTM(int(w_ih.shape[1]), hsize, num_layers=1)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(w_ih)
        rnn.weight_hh_l0.copy_(one('weight_hh_l0'))
        rnn.bias_ih_l0.copy_(one('bias_ih_l0'))
        rnn.bias_hh_l0.copy_(one('bias_hh_l0'))
    if actor[0].in_features != hsize:
        raise PolicyLoadError(f'first Linear takes {actor[0].in_features} inputs, LSTM gives {hsize}')
    return _LstmPolicy(rnn, actor).eval()


def _lstm_policy_cls() -> Any:
    import torch
    from torch import nn

    class LstmPolicy(nn.Module):
        """LSTM(1 layer, batch 1) + MLP with the state in buffers, as legged_gym's PolicyExporterLSTM."""

        def __init__(self, memory: nn.LSTM, actor: nn.Sequential) -> None:
            super().__init__()
            self.memory = memory
            self.actor = actor
            h = memory.hidden_size
            self.register_buffer('hidden_state', torch.zeros(1, 1, h))
            self.register_buffer('cell_state', torch.zeros(1, 1, h))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, (h, c) = self.memory(x.unsqueeze(0), (self.hidden_state, self.cell_state))
            self.hidden_state.copy_(h)  # type: ignore[operator]
            self.cell_state.copy_(c)  # type: ignore[operator]
            return self.actor(out.squeeze(0))

        @torch.jit.export
        def reset_memory(self) -> None:
            self.hidden_state.zero_()  # type: ignore[operator]
            self.cell_state.zero_()  # type: ignore[operator]

    return LstmPolicy


def _LstmPolicy(memory: Any, actor: Any) -> Any:  # noqa: N802 - factory standing in for a class
    return _lstm_policy_cls()(memory, actor)


@contextlib.contextmanager
def _torch_errors(path: Path, what: str) -> Iterator[None]:
    try:
        yield
    except PolicyLoadError:
        raise
    except Exception as err:
        msg = error_line(err)
        raise PolicyLoadError(f'{path}: cannot load as {what}: {msg}') from None


def load_torch_module(path: Path, fmt: str, model_cfg: ModelConfig) -> Any:
    """A fresh torch module (eval mode) from a TorchScript file or a state-dict checkpoint.

    Raises:
        PolicyLoadError: corrupt file, missing architecture, weights that do not fit.
    """
    import torch

    if fmt == 'torchscript':
        with _torch_errors(path, 'TorchScript'):
            return torch.jit.load(str(path), map_location='cpu').eval()
    if fmt == 'state_dict':
        if model_cfg.architecture is None:
            raise PolicyLoadError(
                f'{path}: not TorchScript or ONNX; as a plain checkpoint it needs model.architecture '
                'in the policy config (code is never unpickled)'
            )
        with _torch_errors(path, 'a weights_only checkpoint'):
            obj = torch.load(io.BytesIO(path.read_bytes()), map_location='cpu', weights_only=True)
        arch = model_cfg.architecture
        if arch.state_dict_key:
            if not isinstance(obj, dict) or arch.state_dict_key not in obj:
                raise PolicyLoadError(f'{path}: checkpoint has no key {arch.state_dict_key!r}')
            obj = obj[arch.state_dict_key]
        if not isinstance(obj, dict):
            raise PolicyLoadError(f'{path}: checkpoint is a {type(obj).__name__}, expected a state dict')
        return build_arch_module(arch, obj)
    raise PolicyLoadError(f'{path}: format {fmt!r} is not a torch format')


def state_buffers(module: Any) -> dict[str, Any]:
    """Recurrent state buffers of a module (top-level ``hidden_state`` / ``cell_state``)."""
    bufs = dict(module.named_buffers(recurse=False)) if hasattr(module, 'named_buffers') else {}
    return {n: b for n, b in bufs.items() if n in STATE_BUFFER_NAMES}


def reset_torch_state(module: Any) -> None:
    """Reset recurrent state: ``reset_memory()`` where it exists, else zero the state buffers."""
    import torch

    if hasattr(module, 'reset_memory'):
        module.reset_memory()
        return
    with torch.no_grad():
        for b in state_buffers(module).values():
            b.zero_()


def _candidate_dims(module: Any) -> list[int]:
    """Plausible input sizes: in_features of every Linear/LSTM and normalizer sizes, in module order."""
    dims: list[int] = []
    for _name, mod in module.named_modules():
        k = _kind(mod)
        w = None
        if k == 'Linear':
            w = getattr(mod, 'weight', None)
        elif k in ('LSTM', 'GRU'):
            w = getattr(mod, 'weight_ih_l0', None)
        if w is not None and w.dim() == 2:
            dims.append(int(w.shape[1]))
        for bname in ('_mean', 'mean', 'running_mean'):
            b = getattr(mod, bname, None) if k != 'Linear' else None
            if b is not None and hasattr(b, 'shape') and len(b.shape) >= 1:
                dims.append(int(b.shape[-1]))
    seen: list[int] = []
    for d in dims:
        if d not in seen:
            seen.append(d)
    return seen


def probe_torch(module: Any, obs_dim: int | None) -> tuple[int, int]:
    """Find (obs_dim, act_dim) by running zeros [1, D]; state is reset afterwards.

    With `obs_dim` given only that size is tried; else the candidates from the module's layers.

    Raises:
        PolicyLoadError: no candidate size runs, or the output is not [1, A] / [A].
    """
    import torch

    cands = [obs_dim] if obs_dim else _candidate_dims(module)
    last = ''
    for d in cands:
        try:
            with torch.inference_mode():
                y = module(torch.zeros(1, d))
        except Exception as err:
            last = error_line(err)
            continue
        finally:
            reset_torch_state(module)
        if not isinstance(y, torch.Tensor) or y.dim() not in (1, 2) or (y.dim() == 2 and y.shape[0] != 1):
            raise PolicyLoadError(
                f'policy output must be a tensor [1, A], got {getattr(y, "shape", type(y))}'
            )
        return int(d), int(y.shape[-1])
    if obs_dim:
        raise PolicyLoadError(
            f'the model does not accept an observation of size {obs_dim} '
            f'(the policy config builds {obs_dim} values): {last}'
        )
    raise PolicyLoadError(f'cannot find the input size of the model (tried {cands}): {last}')


def is_recurrent(module: Any, obs_dim: int) -> bool:
    """True when the module has state buffers or two identical calls give different outputs."""
    import torch

    if state_buffers(module):
        return True
    x = torch.linspace(-1.0, 1.0, obs_dim).reshape(1, obs_dim)
    try:
        with torch.inference_mode():
            a = module(x).clone()
            b = module(x).clone()
    finally:
        reset_torch_state(module)
    return not bool(torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True))


def inspect_policy(
    path: str | Path,
    model_cfg: ModelConfig | None = None,
    obs_dim: int | None = None,
    expected_sha256: str = '',
) -> PolicyInfo:
    """Check a policy file and describe it.

    Args:
        path: the policy file.
        model_cfg: format / architecture / ONNX names (defaults: auto-detect).
        obs_dim: the observation size the pipeline builds; the model must accept it (None: probe).
        expected_sha256: refuse a file with another hash ('' = no check).

    Raises:
        PolicyLoadError: missing, corrupt, wrong hash, unsupported, or does not accept `obs_dim`.
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
        _inspect_onnx(p, model_cfg, obs_dim, info)
        return info
    module = load_torch_module(p, fmt, model_cfg)
    info.obs_dim, info.act_dim = probe_torch(module, obs_dim)
    info.state_buffers = {n: list(b.shape) for n, b in state_buffers(module).items()}
    info.has_reset_memory = hasattr(module, 'reset_memory')
    info.recurrent = is_recurrent(module, info.obs_dim)
    if info.recurrent and not info.state_buffers and not info.has_reset_memory:
        raise PolicyLoadError(
            f'{p}: the model keeps state between calls but has neither reset_memory() nor '
            f'{"/".join(STATE_BUFFER_NAMES)} buffers: it cannot be reset'
        )
    return info


def _inspect_onnx(p: Path, model_cfg: ModelConfig, obs_dim: int | None, info: PolicyInfo) -> None:
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
    d = inp.shape[-1] if isinstance(inp.shape[-1], int) else obs_dim
    a = out.shape[-1] if isinstance(out.shape[-1], int) else None
    if d is None:
        raise PolicyLoadError(f'{p}: ONNX input size is symbolic; set it through the policy config')
    if obs_dim is not None and d != obs_dim:
        raise PolicyLoadError(f'{p}: the model takes {d} inputs, the policy config builds {obs_dim}')
    if a is None:
        y = sess.run([out.name], {inp.name: np.zeros((1, d), np.float32)})[0]
        a = int(np.asarray(y).shape[-1])
    info.obs_dim, info.act_dim = int(d), int(a)
    info.onnx_input, info.onnx_output = inp.name, out.name


def make_onnx_session(p: Path, threads: int = 1, providers: list[str] | None = None) -> Any:
    """An onnxruntime session with `threads` intra-op threads (sequential execution)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(
            str(p), sess_options=opts, providers=providers or ['CPUExecutionProvider']
        )
    except Exception as err:
        msg = error_line(err)
        raise PolicyLoadError(f'{p}: cannot load as ONNX: {msg}') from None
