"""GPU twin of :class:`rt_safe_rl.core.safety.batch.BatchSafetyFilter` (same ``run`` interface).

Pipeline: the batch is split across the GPUs (all visible ones when ``gpu.multi_gpu``, else
``gpu.device``), then into chunks of ``gpu.chunk_states``; chunk k of a GPU goes to its stream
``k % gpu.streams``: host rows -> that stream's pinned staging buffers -> async copy to the device ->
kernel (:mod:`.kernels`) -> async copy back -> results scattered into the caller's arrays when the
stream is next reused (or at the end), so one chunk's copies overlap another's compute. Device
buffers come from a :class:`~rt_safe_rl.gpu.memory.DevicePool` per GPU and are reused across calls.

States whose projection is not closed-form (an active SSM/workspace row: a real QP) come back
flagged and run on the CPU kernel (:class:`BatchSafetyFilter`) afterwards; :attr:`stats` says how
many. Results match the CPU batch path to rounding (fused multiply-adds on the device); tested
within 1e-9 rad. Not RT code: a throughput path (allocates at the first call of a shape).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety import kernel as kn
from rt_safe_rl.core.safety.batch import BatchSafetyFilter
from rt_safe_rl.core.safety.config import SafetyConfig
from rt_safe_rl.gpu.config import GpuConfig
from rt_safe_rl.gpu.device import probe
from rt_safe_rl.gpu.memory import DevicePool

INPUTS = ('cs', 'q', 'dq', 'q_pol', 'q_op', 'has_op', 'human', 'n_human', 'v_h', 'mode')
OUTPUTS = ('cs', 'out', 'rep', 'flag')
"""Device buffers of one chunk; ``cs`` goes both ways (the kernel updates it in place)."""


P = ParamSpec('P')
R = TypeVar('R')
_CPU_RUN = inspect.signature(BatchSafetyFilter.run)


def same_arguments_as(
    cpu: Callable[Concatenate[BatchSafetyFilter, P], R],
) -> Callable[[Callable[..., R]], Callable[Concatenate[GpuBatchSafetyFilter, P], R]]:
    """Give a ``(self, *args, **kwargs)`` method the parameters of `cpu` (the CPU method it
    mirrors) for type checkers and :func:`inspect.signature`: one definition of the interface."""

    def deco(f: Callable[..., R]) -> Callable[Concatenate[GpuBatchSafetyFilter, P], R]:
        f.__signature__ = inspect.signature(cpu)  # type: ignore[attr-defined]
        return f

    return deco


class GpuUnavailableError(RtSafeRlError):
    """No usable CUDA device (the message says why)."""


def state_layout(n: int, h: int) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Per-state shape and dtype of every chunk buffer (``h`` human points, at least 1)."""
    return {
        'cs': ((3, n), np.float64),
        'q': ((n,), np.float64),
        'dq': ((n,), np.float64),
        'q_pol': ((n,), np.float64),
        'q_op': ((n,), np.float64),
        'has_op': ((), np.bool_),
        'human': ((h, 3), np.float64),
        'n_human': ((), np.int64),
        'v_h': ((), np.float64),
        'mode': ((), np.int64),
        'out': ((n,), np.float64),
        'rep': ((kn.N_REP,), np.float64),
        'flag': ((), np.int64),
    }


def host_constants(cpu: BatchSafetyFilter) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """The kernel's constant arguments, C-contiguous: ((lim, sp, ws_mask), the robot model's arrays
    in :func:`rt_safe_rl.core.safety.kernel.model_arrays` order, ``parent`` .. ``pt_radius``)."""
    params = (cpu._lim, cpu._sp, cpu._ws)
    model = tuple(kn.model_arrays(cpu.model))
    return tuple(np.ascontiguousarray(a) for a in params), tuple(np.ascontiguousarray(a) for a in model)


def bytes_per_state(n: int, h: int) -> tuple[int, int]:
    """(bytes copied to the device, bytes copied back) per state."""
    lay = state_layout(n, h)

    def size(k: str) -> int:
        shp, dt = lay[k]
        return int(np.prod(shp, dtype=np.int64)) * np.dtype(dt).itemsize

    return sum(size(k) for k in INPUTS), sum(size(k) for k in OUTPUTS)


@dataclass
class _Slot:
    """One stream with its pinned host staging and device buffers (chunk-sized)."""

    stream: Any
    host: dict[str, np.ndarray]
    dev: dict[str, Any]
    pending: tuple[int, int] | None = None


@dataclass
class _Gpu:
    index: int
    pool: DevicePool
    consts: tuple[tuple[Any, ...], ...]
    """Device copies of :func:`host_constants` (same nesting)."""
    slots: list[_Slot] = field(default_factory=list)
    key: tuple[int, int, int] = (0, 0, 0)
    states: int = 0


class GpuBatchSafetyFilter:
    """Filter B states per call on the GPU(s) with the parameters of (`model`, `cfg`).

    Args:
        model: robot model. cfg: safety config (validated like :class:`SafetyFilter`'s).
        gpu: device, pool, chunking (default: :meth:`GpuConfig.from_env`).

    Raises:
        GpuUnavailableError: no usable CUDA device (or ``gpu.device`` is not one of them).
    """

    def __init__(
        self, model: RobotModel, cfg: SafetyConfig | None = None, gpu: GpuConfig | None = None
    ) -> None:
        from numba import cuda

        self._cuda = cuda
        self.gpu_cfg = gpu or GpuConfig.from_env()
        info = probe()
        if not info.available:
            raise GpuUnavailableError(info.reason)
        n_dev = len(info.devices)
        if self.gpu_cfg.device >= n_dev:
            raise GpuUnavailableError(f'gpu.device {self.gpu_cfg.device} not visible ({n_dev} device(s))')
        self.info = info
        self.model = model
        self.cpu = BatchSafetyFilter(model, cfg)
        self.cfg = self.cpu.cfg
        ids = list(range(n_dev)) if self.gpu_cfg.multi_gpu else [self.gpu_cfg.device]
        if self.gpu_cfg.device in ids:  # the configured device first (it gets the first share)
            ids.remove(self.gpu_cfg.device)
            ids.insert(0, self.gpu_cfg.device)
        host_consts = host_constants(self.cpu)
        self.gpus: list[_Gpu] = []
        for d in ids:
            pool = DevicePool(d, self.gpu_cfg.memory_pool_mb)
            with cuda.gpus[d]:
                consts = tuple(tuple(cuda.to_device(a) for a in group) for group in host_consts)
            self.gpus.append(_Gpu(d, pool, consts))
        self.stats: dict[str, Any] = {}

    def chunk_for(self, h: int) -> int:
        """States per chunk: ``gpu.chunk_states``, reduced so every stream's buffers fit the pool."""
        up, down = bytes_per_state(self.model.n_joints, h)
        per = up + down + kn.N_REP * 8  # + alignment slack
        fit = int(0.9 * self.gpu_cfg.memory_pool_mb * (1 << 20)) // (per * self.gpu_cfg.streams)
        return max(1, min(self.gpu_cfg.chunk_states, fit))

    def _ensure_slots(self, g: _Gpu, chunk: int, h: int) -> None:
        key = (chunk, h, self.model.n_joints)
        if g.key == key and g.slots:
            return
        cuda = self._cuda
        g.slots.clear()
        g.pool.free_all()
        lay = state_layout(self.model.n_joints, h)
        with cuda.gpus[g.index]:
            for _ in range(self.gpu_cfg.streams):
                host = {k: cuda.pinned_array((chunk, *s), dtype=dt) for k, (s, dt) in lay.items()}
                dev = {k: g.pool.alloc((chunk, *s), dt) for k, (s, dt) in lay.items()}
                g.slots.append(_Slot(cuda.stream(), host, dev))
        g.key = key

    def launch(self, g: _Gpu, dev: dict[str, Any], m: int, stream: Any = 0) -> None:
        """Launch the kernel on the first `m` states of device buffers `dev` (asynchronous)."""
        from rt_safe_rl.gpu.kernels import get_kernel

        mdl = self.model
        h = dev['human'].shape[1]
        kern = get_kernel(mdl.n_joints, mdl.parent.shape[0], mdl.n_points, h)
        tpb = self.gpu_cfg.threads_per_block
        blocks = max(1, min(-(-m // tpb), 65535))
        ins = tuple(dev[k][:m] for k in INPUTS)
        outs = tuple(dev[k][:m] for k in ('out', 'rep', 'flag'))
        kern[blocks, tpb, stream](*g.consts, ins, outs)

    @same_arguments_as(BatchSafetyFilter.run)
    def run(self, *args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Filter every state b; returns (out (B,n), rep (B, N_REP)); `cmd_state` updated in place.

        :meth:`BatchSafetyFilter.run`'s arguments (bound against its signature, defaults
        included) and results; ``n_threads`` is the CPU pass's, for the deferred states.
        """
        t0 = time.perf_counter()
        kw = self._bind(*args, **kwargs)
        cmd_state, q, out = kw['cmd_state'], kw['q'], kw['out']
        b, n = q.shape
        if cmd_state.shape != (b, 3, n) or n != self.model.n_joints:
            raise ValueError(f'cmd_state must be (B, 3, {self.model.n_joints}), got {cmd_state.shape}')
        src = self._inputs(**kw)
        h = src['human'].shape[1]
        res = {
            'cs': cmd_state,
            'out': out if out is not None else np.zeros((b, n)),
            'rep': np.zeros((b, kn.N_REP)),
            'flag': np.zeros(b, dtype=np.int64),
        }
        chunk = min(self.chunk_for(h), max(1, -(-b // len(self.gpus))))
        tasks = self._tasks(b, chunk)
        for g in self.gpus:
            self._ensure_slots(g, chunk, h)
            g.states = 0
        counters = {g.index: 0 for g in self.gpus}
        for gi, start, stop in tasks:
            g = self.gpus[gi]
            slot = g.slots[counters[g.index] % len(g.slots)]
            counters[g.index] += 1
            g.states += stop - start
            with self._cuda.gpus[g.index]:
                if slot.pending is not None:
                    self._finish(slot, res)
                self._issue(g, slot, src, start, stop)
        for g in self.gpus:
            with self._cuda.gpus[g.index]:
                for slot in g.slots:
                    if slot.pending is not None:
                        self._finish(slot, res)
        t_gpu = time.perf_counter()
        idx = np.flatnonzero(res['flag'] != 0)
        if idx.size:
            self._run_cpu(idx, src, res, kw['n_threads'])
        self.stats = {
            'states': b,
            'deferred_to_cpu': int(idx.size),
            'chunk_states': chunk,
            'chunks': len(tasks),
            'per_gpu_states': {g.index: g.states for g in self.gpus},
            'gpu_s': t_gpu - t0,
            'cpu_s': time.perf_counter() - t_gpu,
        }
        return res['out'], res['rep']

    def _bind(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """:meth:`run`'s arguments by name, defaults applied (TypeError as the CPU run would raise)."""
        bound = _CPU_RUN.bind(self.cpu, *args, **kwargs)
        bound.apply_defaults()
        return {k: v for k, v in bound.arguments.items() if k != 'self'}

    def _inputs(self, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        """The kernel's inputs for :meth:`run`'s arguments, with :class:`BatchSafetyFilter`'s
        defaults (and >= 1 human slot). Also used by ``bench gpu`` (device-resident timing)."""
        kw = self._bind(*args, **kwargs)
        q = kw['q']
        b, n = q.shape
        f64 = np.float64
        human, n_human, q_op = kw['human'], kw['n_human'], kw['q_operator']
        if human is None or human.shape[1] == 0:
            hum = np.zeros((b, 1, 3))
            nh = np.zeros(b, dtype=np.int64)
        else:
            hum = np.ascontiguousarray(human, dtype=f64)
            nh = np.full(b, human.shape[1], np.int64) if n_human is None else np.asarray(n_human, np.int64)
        has_op = np.zeros(b, dtype=np.bool_)  # BatchSafetyFilter.run's rule
        if q_op is not None:
            has_op[:] = True if kw['has_operator'] is None else kw['has_operator']
        v_h, mode = kw['human_speed_m_s'], kw['mode']
        return {
            'cs': kw['cmd_state'],
            'q': np.ascontiguousarray(q, dtype=f64),
            'dq': np.ascontiguousarray(kw['dq'], dtype=f64),
            'q_pol': np.ascontiguousarray(kw['q_policy'], dtype=f64),
            'q_op': np.zeros((b, n)) if q_op is None else np.ascontiguousarray(q_op, dtype=f64),
            'has_op': has_op,
            'human': hum,
            'n_human': nh,
            'v_h': np.full(b, -1.0) if v_h is None else np.asarray(v_h, dtype=f64),
            'mode': np.zeros(b, dtype=np.int64) if mode is None else np.asarray(mode, dtype=np.int64),
        }

    def _tasks(self, b: int, chunk: int) -> list[tuple[int, int, int]]:
        """(gpu position, start, stop) chunks: contiguous shares per GPU, interleaved in issue order."""
        n_g = len(self.gpus)
        bounds = [round(i * b / n_g) for i in range(n_g + 1)]
        per = [
            [(gi, s, min(s + chunk, bounds[gi + 1])) for s in range(bounds[gi], bounds[gi + 1], chunk)]
            for gi in range(n_g)
        ]
        out: list[tuple[int, int, int]] = []
        for k in range(max((len(p) for p in per), default=0)):
            out.extend(p[k] for p in per if k < len(p))
        return out

    def _issue(self, g: _Gpu, slot: _Slot, src: dict[str, np.ndarray], start: int, stop: int) -> None:
        m = stop - start
        for k in INPUTS:
            np.copyto(slot.host[k][:m], src[k][start:stop])
            slot.dev[k][:m].copy_to_device(slot.host[k][:m], stream=slot.stream)
        self.launch(g, slot.dev, m, slot.stream)
        for k in OUTPUTS:
            slot.dev[k][:m].copy_to_host(slot.host[k][:m], stream=slot.stream)
        slot.pending = (start, stop)

    def _finish(self, slot: _Slot, res: dict[str, np.ndarray]) -> None:
        slot.stream.synchronize()
        assert slot.pending is not None
        start, stop = slot.pending
        m = stop - start
        for k in OUTPUTS:
            res[k][start:stop] = slot.host[k][:m]
        slot.pending = None

    def _run_cpu(
        self, idx: np.ndarray, src: dict[str, np.ndarray], res: dict[str, np.ndarray], n_threads: int | None
    ) -> None:
        """The deferred states on the CPU kernel (their command states were left unchanged)."""
        cs = np.ascontiguousarray(res['cs'][idx])
        o, r = self.cpu.run(
            cs,
            src['q'][idx],
            src['dq'][idx],
            src['q_pol'][idx],
            src['q_op'][idx],
            src['human'][idx],
            src['n_human'][idx],
            src['v_h'][idx],
            src['mode'][idx],
            n_threads=n_threads,
            has_operator=src['has_op'][idx],
        )
        res['cs'][idx] = cs
        res['out'][idx] = o
        res['rep'][idx] = r
