"""TensorRT policy backends ``tensorrt`` (FP32) and ``tensorrt_fp16`` (reduced precision).

The engine is built from the policy's ONNX file, or from an ONNX export of the torch module
(TorchScript or rebuilt checkpoint: :func:`export_onnx`), once per (model SHA-256, precision,
TensorRT version, GPU): :func:`engine_cache_path` under ``$RT_TRT_CACHE_DIR`` (default
``~/.cache/rt_safe_rl/tensorrt``); later loads deserialize the cached engine. FP32 engines are
built with TF32 off, so they go through ``auto``'s FP32 tolerance like every backend; FP16 ones
through the reduced-precision tolerance (``allow_reduced_precision``).

Recurrent policies are refused (their state lives in module buffers; an engine is stateless).
Without a CUDA device or the ``tensorrt`` package, :func:`build_tensorrt_backend` raises
:class:`PolicyLoadError` saying which, so ``bench policy --backends all`` lists the backends as
unavailable with that reason. Construction is not RT-safe; ``forward`` (pinned staging, one stream,
async copies, ``execute_async_v3``, one synchronize) is the RT path like the CUDA-graph backend's.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.errors import PolicyLoadError
from rt_safe_rl.core.policy.backends import Backend
from rt_safe_rl.core.policy.loading import load_torch_module

TRT_BACKENDS: tuple[str, ...] = ('tensorrt', 'tensorrt_fp16')
ENV_CACHE_DIR = 'RT_TRT_CACHE_DIR'
WORKSPACE_BYTES = 256 << 20
F32 = npt.NDArray[np.float32]


def cache_dir() -> Path:
    """Engine cache folder (``$RT_TRT_CACHE_DIR`` or ``~/.cache/rt_safe_rl/tensorrt``)."""
    env = os.environ.get(ENV_CACHE_DIR, '').strip()
    return Path(env) if env else Path.home() / '.cache' / 'rt_safe_rl' / 'tensorrt'


def engine_cache_path(model_sha256: str, precision: str, trt_version: str, gpu_name: str) -> Path:
    """Cache file of an engine: one per model hash, precision, TensorRT version and GPU model."""
    gpu = re.sub(r'[^A-Za-z0-9]+', '-', gpu_name).strip('-') or 'gpu'
    ver = re.sub(r'[^A-Za-z0-9.]+', '-', trt_version)
    return cache_dir() / f'{model_sha256[:32]}_{precision}_trt{ver}_{gpu}.engine'


def export_onnx(module: Any, obs_dim: int, out_path: Path) -> Path:
    """Export a torch module (TorchScript or eager) to ONNX with input ``obs`` [1, obs_dim] and
    output ``action``; the TorchScript-based exporter first, then the dynamo one.

    Raises:
        PolicyLoadError: neither exporter could export the module (first line of the error).
    """
    import torch

    x = torch.zeros(1, obs_dim, dtype=torch.float32)
    errors: list[str] = []
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter('ignore')
                torch.onnx.export(
                    module,
                    (x,),
                    str(out_path),
                    input_names=['obs'],
                    output_names=['action'],
                    opset_version=17,
                    dynamo=dynamo,
                )
            return out_path
        except Exception as err:
            lines = str(err).strip().splitlines()
            errors.append(
                f'{"dynamo" if dynamo else "torchscript"} exporter: '
                f'{lines[0] if lines else type(err).__name__}'
            )
    raise PolicyLoadError('tensorrt: ONNX export failed: ' + '; '.join(errors))


def _trt() -> Any:
    try:
        import tensorrt as trt
    except Exception as err:
        raise PolicyLoadError(
            f'tensorrt: the tensorrt package is not installed ({type(err).__name__}; '
            'pip install tensorrt-cu12, or the wheel matching the CUDA runtime)'
        ) from None
    return trt


def build_engine(onnx_bytes: bytes, fp16: bool, trt: Any, logger: Any) -> bytes:
    """Serialized engine for a fixed input shape [1, obs_dim] (dynamic batch pinned to 1)."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise PolicyLoadError(f'tensorrt: ONNX parse failed: {errs[0] if errs else "unknown error"}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if hasattr(trt.BuilderFlag, 'TF32'):
        config.clear_flag(trt.BuilderFlag.TF32)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    inp = network.get_input(0)
    shape = tuple(inp.shape)
    if any(d < 0 for d in shape):
        fixed = tuple(1 if d < 0 else d for d in shape)
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, fixed, fixed, fixed)
        config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise PolicyLoadError('tensorrt: engine build failed (see the TensorRT log)')
    return bytes(blob)


class TensorRtBackend(Backend):
    """A TensorRT engine on the GPU; pinned host staging, one CUDA stream (RT path: forward)."""

    def __init__(
        self, name: str, engine_bytes: bytes, obs_dim: int, act_dim: int, trt: Any, logger: Any
    ) -> None:
        import torch

        super().__init__(obs_dim, act_dim)
        self.name = name
        self._torch = torch
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise PolicyLoadError('tensorrt: cannot deserialize the engine')
        self._ctx = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        ins = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if n not in ins]
        if len(ins) != 1 or len(outs) != 1:
            raise PolicyLoadError(f'tensorrt: expected 1 input and 1 output, engine has {ins} -> {outs}')
        in_shape = tuple(self._engine.get_tensor_shape(ins[0]))
        self._ctx.set_input_shape(ins[0], tuple(1 if d < 0 else d for d in in_shape))
        out_shape = tuple(self._ctx.get_tensor_shape(outs[0]))
        if int(np.prod(out_shape)) != act_dim:
            raise PolicyLoadError(
                f'tensorrt: engine output shape {out_shape}, the model has {act_dim} actions'
            )
        self._xd = torch.zeros(1, obs_dim, device='cuda')
        self._yd = torch.zeros(out_shape, device='cuda')
        self._xh = torch.zeros(1, obs_dim).pin_memory()
        self._yh = torch.zeros(out_shape).pin_memory()
        self._xnp = self._xh.numpy().reshape(obs_dim)
        self._ynp = self._yh.numpy().reshape(act_dim)
        self._ctx.set_tensor_address(ins[0], self._xd.data_ptr())
        self._ctx.set_tensor_address(outs[0], self._yd.data_ptr())
        self._stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # torch: untyped __new__

    def forward(self, obs: F32, out: F32) -> None:
        """One inference with host-device copies (pinned staging). RT path."""
        np.copyto(self._xnp, obs, casting='same_kind')
        with self._torch.cuda.stream(self._stream):
            self._xd.copy_(self._xh, non_blocking=True)
            self._ctx.execute_async_v3(self._stream.cuda_stream)
            self._yh.copy_(self._yd, non_blocking=True)
        self._stream.synchronize()
        np.copyto(out, self._ynp)

    def run_device(self) -> None:
        """One inference on the device-resident input, no copies (the bench's device-only latency)."""
        self._ctx.execute_async_v3(self._stream.cuda_stream)
        self._stream.synchronize()

    def reset(self) -> None:
        """No state (recurrent models are refused)."""


def build_tensorrt_backend(name: str, path: Path, info: Any, model_cfg: Any) -> TensorRtBackend:
    """Backend `name` ('tensorrt' | 'tensorrt_fp16') for the policy at `path` (engine cached).

    Raises:
        PolicyLoadError: no CUDA device, tensorrt not installed, a recurrent model, export / parse /
            build failure (the message says which).
    """
    if name not in TRT_BACKENDS:
        raise PolicyLoadError(f'unknown TensorRT backend {name!r}; known: {list(TRT_BACKENDS)}')
    import torch

    if not torch.cuda.is_available():
        raise PolicyLoadError(f'{name}: no CUDA device visible to torch')
    trt = _trt()
    if info.recurrent:
        raise PolicyLoadError(f'{name}: recurrent models are not supported (an engine holds no state)')
    precision = 'fp16' if name.endswith('fp16') else 'fp32'
    gpu_name = torch.cuda.get_device_name(torch.cuda.current_device())
    cached = engine_cache_path(info.sha256, precision, str(trt.__version__), gpu_name)
    logger = trt.Logger(trt.Logger.WARNING)
    if cached.is_file():
        blob = cached.read_bytes()
    else:
        if info.format == 'onnx':
            onnx_bytes = Path(path).read_bytes()
        else:
            module = load_torch_module(Path(path), info.format, model_cfg)
            with tempfile.TemporaryDirectory() as tmp:
                onnx_bytes = export_onnx(module, info.obs_dim, Path(tmp) / 'policy.onnx').read_bytes()
        blob = build_engine(onnx_bytes, precision == 'fp16', trt, logger)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = cached.with_suffix(f'.{os.getpid()}.tmp')
        tmp_path.write_bytes(blob)
        os.replace(tmp_path, cached)
    try:
        return TensorRtBackend(name, blob, info.obs_dim, info.act_dim, trt, logger)
    except PolicyLoadError:
        raise
    except Exception as err:
        lines = str(err).strip().splitlines()
        raise PolicyLoadError(f'{name}: {lines[0] if lines else type(err).__name__}') from None


def engine_sha256(blob: bytes) -> str:
    """SHA-256 of a serialized engine (reports)."""
    return hashlib.sha256(blob).hexdigest()
