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
        obs_dim: input size (float32, ``in_shape``).
        act_dim: output size.
        recurrent: the model keeps state between calls.
        state_buffers: names and shapes of the recurrent state buffers.
        has_reset_memory: the module has a ``reset_memory()`` method.
        onnx_input / onnx_output: tensor names (ONNX only).
        in_shape / out_shape: the tensor shapes the model takes and gives ([1, n], [n], [n, 1]).
        input_used: [first, last + 1] of the input elements the model reads ([] = not known);
            narrower than [0, obs_dim] when the model slices its input.
        actor_of: non-empty when the file is an actor-critic container and its ``actor`` is run.
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
    in_shape: list[int] = field(default_factory=list)
    out_shape: list[int] = field(default_factory=list)
    input_used: list[int] = field(default_factory=list)
    actor_of: str = ''

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return dict(self.__dict__)


def content_format(path: Path) -> tuple[str, str]:
    """(format, evidence) read from the file's bytes: 'torchscript' | 'state_dict' | 'onnx' | 'unknown'."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.split('/', 1)[-1].startswith('code/') or '/constants.pkl' in n for n in names):
            return 'torchscript', 'a zip archive with TorchScript code/'
        if any(n.endswith('data.pkl') for n in names):
            return 'state_dict', 'a torch.save zip archive without code'
        return 'unknown', 'a zip archive that is not a torch file'
    with open(path, 'rb') as f:
        head = f.read(64)
    if head[:1] == b'\x08' and len(head) > 2:  # protobuf field 1 (ir_version), varint: ONNX ModelProto
        return 'onnx', 'an ONNX protobuf'
    if head[:1] == b'\x80':
        return 'state_dict', 'a legacy pickle checkpoint'
    return 'unknown', 'neither a torch zip archive nor an ONNX protobuf'


def detect_format(path: Path, declared: str = 'auto') -> str:
    """'torchscript' | 'state_dict' | 'onnx': found in the file's content, checked against `declared`.

    Raises:
        PolicyLoadError: `declared` (not 'auto') differs from what the file holds (says both).
    """
    found, why = content_format(path)
    if declared == 'auto':
        if found == 'unknown':
            return 'onnx' if path.suffix.lower() == '.onnx' else 'state_dict'
        return found
    if found not in ('unknown', declared):
        raise PolicyLoadError(
            f'{path}: model.format says {declared}, but the file is {found} ({why}); '
            f'set model.format: {found} (or auto)'
        )
    return declared


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
            y: torch.Tensor = self.actor(out.squeeze(0))
            return y

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


def load_torch_module(path: Path, fmt: str, model_cfg: ModelConfig, use_actor: bool = False) -> Any:
    """A fresh torch module (eval mode) from a TorchScript file or a state-dict checkpoint.

    `use_actor`: return the container's ``actor`` child (actor-critic files, see ``PolicyInfo.actor_of``).

    Raises:
        PolicyLoadError: corrupt file, missing architecture, weights that do not fit.
    """
    import torch

    if fmt == 'torchscript':
        with _torch_errors(path, 'TorchScript'):
            mod = torch.jit.load(str(path), map_location='cpu').eval()  # type: ignore[no-untyped-call]  # torch: untyped
        return mod.actor if use_actor else mod
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


def inspect_policy(*args: Any, **kwargs: Any) -> PolicyInfo:
    """Check a policy file and describe it (see :func:`rt_safe_rl.core.policy.probe.inspect_policy`)."""
    from rt_safe_rl.core.policy.probe import inspect_policy as inspect  # lazy: cycle: probe imports loading

    return inspect(*args, **kwargs)


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
