"""Inference backends and ``auto`` selection by measured error and latency.

Every backend has the same RT interface: ``forward(obs, out)`` with ``obs`` float32 [obs_dim] and
``out`` float32 [act_dim] (preallocated), plus ``reset()`` for recurrent state. Each backend owns its
own copy of the model (own recurrent state); none is ever called from two threads.

======== ==================================================================================
eager    the module as loaded (TorchScript or rebuilt checkpoint), float32: the reference
torchscript  ``torch.jit.freeze`` + ``optimize_for_inference`` (state buffers preserved)
numba    weights compiled to one numba kernel (:mod:`rt_safe_rl.core.policy.extract`)
fp16     the module in half precision (error reported, reduced-precision tolerance)
int8     dynamic quantization of Linear/LSTM layers (error reported, reduced-precision tolerance)
onnxruntime  ONNX files (the reference for them), 1 intra-op thread, IO binding
cuda     module on the GPU with CUDA-graph capture (only where torch sees a GPU)
tensorrt / tensorrt_fp16  TensorRT engine, FP32 / FP16 (:mod:`.trt_backend`; GPU + tensorrt package)
======== ==================================================================================

:func:`evaluate_backends` runs every backend on the same observations (recurrent ones as a rollout
from reset) against the reference, times them interleaved (fair under load), and
:func:`select_backend` keeps the exact ones and returns the fastest.

Not RT-safe: construction, evaluation. ``forward`` is the RT path (torch backends allocate a
result tensor per call that is freed at once: no heap growth).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.errors import PolicyLoadError
from rt_safe_rl.core.policy.config import BACKENDS, ModelConfig, PolicyNodeConfig
from rt_safe_rl.core.policy.loading import (
    PolicyInfo,
    error_line,
    load_torch_module,
    make_onnx_session,
    reset_torch_state,
)
from rt_safe_rl.core.policy.quant import int8_module
from rt_safe_rl.core.policy.stdio import (
    capture_stdout_fd,  # noqa: F401 - re-exported
    drop_stdout,
)
from rt_safe_rl.core.stats import percentiles

F32 = npt.NDArray[np.float32]
REDUCED_PRECISION = ('fp16', 'int8', 'tensorrt_fp16')


class Backend:
    """Base class: a model copy that maps float32 [obs_dim] -> float32 [act_dim]."""

    name = 'base'

    def __init__(self, obs_dim: int, act_dim: int) -> None:
        self.obs_dim = obs_dim
        self.act_dim = act_dim

    def forward(self, obs: F32, out: F32) -> None:
        """Run one step (advances recurrent state). RT path."""
        raise NotImplementedError

    def reset(self) -> None:
        """Reset recurrent state (no-op for feed-forward models)."""


class TorchBackend(Backend):
    """A torch module on CPU (eager / frozen TorchScript / fp16 / int8)."""

    def __init__(
        self,
        name: str,
        module: Any,
        obs_dim: int,
        act_dim: int,
        half: bool = False,
        reset_fn: Callable[[], None] | None = None,
        in_shape: tuple[int, ...] | None = None,
    ) -> None:
        import torch

        super().__init__(obs_dim, act_dim)
        self.name = name
        self._torch = torch
        self._mod = module
        shape = in_shape or (1, obs_dim)
        self._x = torch.zeros(shape, dtype=torch.float32)
        self._xnp = self._x.numpy().reshape(obs_dim)
        self._xh = torch.zeros(shape, dtype=torch.float16) if half else None
        self._reset_fn = reset_fn

    def forward(self, obs: F32, out: F32) -> None:
        np.copyto(self._xnp, obs, casting='same_kind')
        with self._torch.inference_mode():
            if self._xh is not None:
                self._xh.copy_(self._x)
                y = self._mod(self._xh).float()
            else:
                y = self._mod(self._x)
            np.copyto(out, y.numpy().reshape(-1))

    def reset(self) -> None:
        if self._reset_fn is not None:
            self._reset_fn()
        else:
            reset_torch_state(self._mod)


class NumbaBackend(Backend):
    """The numba-compiled program (own scratch and LSTM state)."""

    name = 'numba'

    def __init__(self, program: Any) -> None:
        from rt_safe_rl.core.policy.kernels import CompiledProgram

        super().__init__(program.in_dim, program.out_dim)
        self.program = program  # the Program (kernels.Program): what the program cache stores
        self._cp = CompiledProgram(program)
        self.summary = program.summary

    def forward(self, obs: F32, out: F32) -> None:
        self._cp.forward(obs, out)

    def reset(self) -> None:
        self._cp.reset()


class OnnxBackend(Backend):
    """onnxruntime with preallocated input/output bound by IO binding (1 intra-op thread)."""

    name = 'onnxruntime'

    def __init__(self, path: Path, info: PolicyInfo, threads: int) -> None:
        super().__init__(info.obs_dim, info.act_dim)
        self._sess = make_onnx_session(path, threads)
        in_shape = list(info.in_shape) or [1, info.obs_dim]
        out_shape = list(info.out_shape) or [1, info.act_dim]
        self._x = np.zeros(in_shape, np.float32)
        self._y = np.zeros(out_shape, np.float32)
        self._xf = self._x.reshape(-1)
        self._yf = self._y.reshape(-1)
        self._io = self._sess.io_binding()
        self._io.bind_input(info.onnx_input, 'cpu', 0, np.float32, in_shape, self._x.ctypes.data)
        self._io.bind_output(info.onnx_output, 'cpu', 0, np.float32, out_shape, self._y.ctypes.data)

    def forward(self, obs: F32, out: F32) -> None:
        self._xf[:] = obs
        self._sess.run_with_iobinding(self._io)
        np.copyto(out, self._yf)


class CudaGraphBackend(Backend):
    """Module on the GPU, one forward captured in a CUDA graph; pinned host staging buffers.

    Recurrent state lives in the module's buffers, updated in place by the captured forward, so
    replays carry it on and ``reset`` zeroes the same memory the graph reads. TF32 is switched off
    (process-wide) so the backend stays within the FP32 tolerance."""

    name = 'cuda'

    def __init__(
        self, module: Any, obs_dim: int, act_dim: int, in_shape: tuple[int, ...] | None = None
    ) -> None:
        import torch

        super().__init__(obs_dim, act_dim)
        shape = in_shape or (1, obs_dim)
        self._torch = torch
        # FP32 means FP32: no TF32 in matmuls or cuDNN (LSTM) kernels (process-wide torch flags)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self._mod = module.cuda()
        self._xh = torch.zeros(shape, dtype=torch.float32).pin_memory()
        self._yh = torch.zeros(act_dim, dtype=torch.float32).pin_memory()
        self._xnp = self._xh.numpy().reshape(obs_dim)
        self._ynp = self._yh.numpy().reshape(act_dim)
        self._xd = torch.zeros(shape, device='cuda')
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # torch: untyped __new__
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):
                self._mod(self._xd)
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self._graph):
            self._yd = self._mod(self._xd)
        self.reset()

    def forward(self, obs: F32, out: F32) -> None:
        np.copyto(self._xnp, obs, casting='same_kind')
        self._xd.copy_(self._xh, non_blocking=True)
        self._graph.replay()
        self._yh.copy_(self._yd.view(-1), non_blocking=True)
        self._torch.cuda.current_stream().synchronize()
        np.copyto(out, self._ynp)

    def reset(self) -> None:
        with self._torch.inference_mode():
            reset_torch_state(self._mod)
        self._torch.cuda.current_stream().synchronize()


def _freeze(module: Any) -> tuple[Any, Callable[[], None]]:
    """Frozen + optimized TorchScript copy and a reset function for its preserved state."""
    import torch

    scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
    preserve = [a for a in ('reset_memory', 'hidden_state', 'cell_state') if hasattr(scripted, a)]
    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(scripted.eval(), preserved_attrs=preserve))
    if hasattr(frozen, 'reset_memory'):
        return frozen, frozen.reset_memory

    def zero() -> None:
        with torch.no_grad():
            for a in ('hidden_state', 'cell_state'):
                if hasattr(frozen, a):
                    getattr(frozen, a).zero_()

    return frozen, zero


@dataclass
class BackendResult:
    """One row of the backend table (JSON keys as in the benchmark)."""

    name: str
    available: bool
    ok: bool = False
    max_abs_err: float = float('nan')
    median_us: float = float('nan')
    p99_us: float = float('nan')
    max_us: float = float('nan')
    tolerance: float = float('nan')
    reason: str = ''

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready row."""
        return dict(self.__dict__)


def tolerance_for(name: str, cfg: PolicyNodeConfig) -> float:
    """Max abs error accepted for backend `name`."""
    if name in ('fp16', 'tensorrt_fp16'):
        return cfg.tolerance_fp16
    if name == 'int8':
        return cfg.tolerance_int8
    return cfg.tolerance


def reference_name(info: PolicyInfo) -> str:
    """The reference backend: eager torch, or onnxruntime for ONNX files."""
    return 'onnxruntime' if info.format == 'onnx' else 'eager'


BackendFactory = Callable[[Path, PolicyInfo, ModelConfig, int], Backend]
_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Add a backend built by ``factory(path, info, model_cfg, num_threads)`` (e.g. TensorRT, in its
    own module). The factory raises PolicyLoadError('<name>: why') when unavailable."""
    _REGISTRY[name] = factory


def registered_backends() -> list[str]:
    """Backends added through :func:`register_backend`."""
    return list(_REGISTRY)


def compile_program(path: Path, info: PolicyInfo, model_cfg: ModelConfig) -> Any:
    """The model as a numba :class:`~rt_safe_rl.core.policy.kernels.Program`: graph-level compiler
    first (TorchScript / fx / plain modules), then the module-structure matcher; ONNX graphs by
    :func:`~rt_safe_rl.core.policy.extract.extract_onnx_program`.

    Raises:
        PolicyLoadError: 'numba: <why the graph compiler could not compile it>'.
    """
    from rt_safe_rl.core.policy.extract import Unsupported, extract_onnx_program, extract_program
    from rt_safe_rl.core.policy.graph import compile_module

    if info.format == 'onnx':
        try:
            return extract_onnx_program(path)
        except Unsupported as err:
            raise PolicyLoadError(f'numba: {err}') from None
    module = load_torch_module(path, info.format, model_cfg, use_actor=bool(info.actor_of))
    try:
        with drop_stdout():
            return compile_module(module, tuple(info.in_shape), lambda: reset_torch_state(module))
    except Unsupported as err:
        first = str(err)
    try:
        return extract_program(module)
    except Unsupported:
        raise PolicyLoadError(f'numba: {first}') from None


def build_backend(
    name: str, path: Path, info: PolicyInfo, model_cfg: ModelConfig, num_threads: int = 1
) -> Backend:
    """Construct backend `name` with its own model copy.

    Raises:
        PolicyLoadError: the backend is not available for this model / machine (message says why).
    """
    if name in _REGISTRY:
        return _REGISTRY[name](path, info, model_cfg, num_threads)
    if name not in BACKENDS:
        raise PolicyLoadError(f'unknown backend {name!r}; known: {list(BACKENDS) + list(_REGISTRY)}')
    is_onnx = info.format == 'onnx'
    if name == 'onnxruntime':
        if not is_onnx:
            raise PolicyLoadError('onnxruntime runs ONNX files only (this policy is ' + info.format + ')')
        return OnnxBackend(path, info, num_threads)
    if name == 'numba':
        prog = compile_program(path, info, model_cfg)
        if prog.in_dim != info.obs_dim or prog.out_dim != info.act_dim:
            raise PolicyLoadError(
                f'numba: compiled sizes {prog.in_dim}->{prog.out_dim} differ from the model'
            )
        return NumbaBackend(prog)
    shape = tuple(info.in_shape) or (1, info.obs_dim)
    if name in ('tensorrt', 'tensorrt_fp16'):  # GPU engines: rt_safe_rl/core/policy/trt_backend.py [gpu]
        from rt_safe_rl.core.policy.trt_backend import build_tensorrt_backend  # lazy: cycle (trt_backend)

        return build_tensorrt_backend(name, path, info, model_cfg)
    if is_onnx:
        if name == 'int8':
            from rt_safe_rl.core.policy.extract import Unsupported, extract_onnx_program

            try:
                q = int8_module(None, info, extract_onnx_program(path))
            except Unsupported as err:
                raise PolicyLoadError(f'int8: {err}') from None
            return TorchBackend('int8', q, info.obs_dim, info.act_dim, in_shape=(1, info.obs_dim))
        raise PolicyLoadError(f'{name} needs a torch model (this policy is ONNX)')
    import torch

    module = load_torch_module(path, info.format, model_cfg, use_actor=bool(info.actor_of))
    if name == 'eager':
        return TorchBackend('eager', module, info.obs_dim, info.act_dim, in_shape=shape)
    if name == 'torchscript':
        try:
            frozen, reset = _freeze(module)
        except Exception as err:
            raise PolicyLoadError(f'torchscript: cannot freeze: {_first_line(err)}') from None
        return TorchBackend('torchscript', frozen, info.obs_dim, info.act_dim, reset_fn=reset, in_shape=shape)
    if name == 'fp16':
        return TorchBackend('fp16', module.half(), info.obs_dim, info.act_dim, half=True, in_shape=shape)
    if name == 'int8':
        return TorchBackend('int8', int8_module(module, info), info.obs_dim, info.act_dim, in_shape=shape)
    if name == 'cuda':
        if not torch.cuda.is_available():
            raise PolicyLoadError('cuda: no CUDA device visible to torch')
        try:
            return CudaGraphBackend(module, info.obs_dim, info.act_dim, in_shape=shape)
        except Exception as err:
            raise PolicyLoadError(f'cuda: graph capture failed: {_first_line(err)}') from None
    raise PolicyLoadError(f'backend {name!r} is not implemented')


def _first_line(err: BaseException) -> str:
    return error_line(err)


def sample_observations(obs_dim: int, n: int, seed: int = 0, scale: float = 1.0) -> F32:
    """Deterministic test observations: standard normal times `scale`, float32 [n, obs_dim]."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, obs_dim)) * scale).astype(np.float32)


def rollout(backend: Backend, obs: F32) -> F32:
    """Outputs of `backend` over `obs` (one call per row) starting from reset; resets again after."""
    out = np.zeros((obs.shape[0], backend.act_dim), np.float32)
    backend.reset()
    for i in range(obs.shape[0]):
        backend.forward(obs[i], out[i])
    backend.reset()
    return out


def evaluate_backends(
    backends: dict[str, Backend],
    reference: str,
    obs: F32,
    cfg: PolicyNodeConfig,
    unavailable: dict[str, str] | None = None,
    timing_iters: int | None = None,
    block: int = 50,
) -> list[BackendResult]:
    """Error vs `reference` over `obs` (rollouts from reset) and interleaved latency per backend.

    Args:
        backends: constructed backends, including the reference.
        reference: name of the reference backend.
        obs: float32 [N, obs_dim] observations (a rollout for recurrent models).
        cfg: tolerances.
        unavailable: name -> reason for backends that could not be built (reported as rows).
        timing_iters: timed calls per backend (default cfg.auto_timing_iters).
        block: calls per backend per round (rounds interleave the backends).

    Returns:
        Rows in BACKENDS order; backends are reset on return.
    """
    try:
        ref = rollout(backends[reference], obs)
    except Exception as err:
        raise PolicyLoadError(
            f'the policy raised on test observations ({reference}): {_first_line(err)}'
        ) from None
    rows: dict[str, BackendResult] = {}
    for name, be in backends.items():
        tol = tolerance_for(name, cfg)
        try:
            y = ref if name == reference else rollout(be, obs)
        except Exception as err:  # e.g. fp16 index_put dtype mismatch: unavailable, never a crash
            rows[name] = BackendResult(
                name, False, ok=False, tolerance=tol, reason=f'{name}: {_first_line(err)}'
            )
            continue
        finite = bool(np.all(np.isfinite(y)))
        err_v = float(np.max(np.abs(y.astype(np.float64) - ref))) if finite else float('inf')
        rows[name] = BackendResult(
            name,
            True,
            ok=finite and err_v <= tol,
            max_abs_err=err_v,
            tolerance=tol,
            reason=''
            if finite and err_v <= tol
            else ('non-finite output' if not finite else 'error above tolerance'),
        )
    n_iter = timing_iters or cfg.auto_timing_iters
    timed = [n for n in backends if n in rows and np.isfinite(rows[n].max_abs_err)]
    samples: dict[str, list[int]] = {n: [] for n in timed}
    out = np.zeros(max(b.act_dim for b in backends.values()), np.float32)
    n_obs = obs.shape[0]
    rounds = max(1, -(-n_iter // block))
    k = 0
    for _ in range(rounds):
        for name in timed:
            be = backends[name]
            o = out[: be.act_dim]
            s = samples[name]
            for _i in range(block):
                x = obs[k % n_obs]
                k += 1
                t0 = time.perf_counter_ns()
                be.forward(x, o)
                s.append(time.perf_counter_ns() - t0)
    for name in timed:
        a = np.asarray(samples[name], dtype=np.float64) / 1e3
        r = rows[name]
        pc = percentiles(a)
        r.median_us, r.p99_us, r.max_us = pc['p50'], pc['p99'], pc['max']
        backends[name].reset()
    result = [rows[n] for n in BACKENDS if n in rows]
    for name, reason in (unavailable or {}).items():
        result.append(BackendResult(name, False, reason=reason))
    return result


def select_backend(rows: list[BackendResult], cfg: PolicyNodeConfig, reference: str) -> str:
    """Fastest (median) backend whose error is within its tolerance; reduced precision only if allowed."""
    ok = [
        r
        for r in rows
        if r.available
        and r.ok
        and np.isfinite(r.median_us)
        and (r.name not in REDUCED_PRECISION or cfg.allow_reduced_precision)
    ]
    if not ok:
        return reference
    return min(ok, key=lambda r: r.median_us).name


def format_table(rows: list[BackendResult], selected: str) -> str:
    """Human-readable backend table (for logs and the benchmark)."""
    lines = [
        f'{"backend":<12} {"ok":<4} {"max_abs_err":>12} {"median_us":>10} {"p99_us":>9} {"max_us":>9}  note'
    ]
    for r in rows:
        mark = '*' if r.name == selected else ' '
        if not r.available:
            lines.append(f'{r.name:<12} {"-":<4} {"":>12} {"":>10} {"":>9} {"":>9}  unavailable: {r.reason}')
            continue
        lines.append(
            f'{r.name:<11}{mark} {"yes" if r.ok else "no":<4} {r.max_abs_err:>12.3g} {r.median_us:>10.1f} '
            f'{r.p99_us:>9.1f} {r.max_us:>9.1f}  {r.reason}'
        )
    return '\n'.join(lines)
