"""GPU settings: :class:`GpuConfig` from a mapping (a ``gpu:`` YAML section) and the environment.

Environment overrides (read by :meth:`GpuConfig.from_env`): ``RT_GPU_DEVICE`` (int), and
``RT_GPU_MEMORY_POOL_MB`` (int). Not RT code (configure time).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from rt_safe_rl.core.configutil import from_mapping
from rt_safe_rl.core.errors import ConfigError

ENV_DEVICE = 'RT_GPU_DEVICE'
ENV_POOL_MB = 'RT_GPU_MEMORY_POOL_MB'


@dataclass(frozen=True)
class GpuConfig:
    """GPU batch-filter and policy settings.

    Attributes:
        device: CUDA device index of the memory pool, the policy backends and single-GPU work.
        memory_pool_mb: device memory pool per GPU [MiB] (cupy's pool when cupy is installed, else a
            preallocated numba block); bounds the batch filter's chunk buffers.
        multi_gpu: split batch work across every visible GPU (else only ``device``).
        chunk_states: states per transfer/compute chunk (the stream pipeline's unit).
        streams: CUDA streams per GPU (>= 2 overlaps copies of one chunk with compute of another).
        threads_per_block: CUDA block size of the batch kernel.
    """

    device: int = 0
    memory_pool_mb: int = 1024
    multi_gpu: bool = True
    chunk_states: int = 1 << 17
    streams: int = 3
    threads_per_block: int = 128

    def __post_init__(self) -> None:
        if self.device < 0:
            raise ConfigError(f'gpu.device must be >= 0, got {self.device}')
        if self.memory_pool_mb < 1:
            raise ConfigError(f'gpu.memory_pool_mb must be >= 1, got {self.memory_pool_mb}')
        if self.chunk_states < 1 or self.streams < 1:
            raise ConfigError('gpu.chunk_states and gpu.streams must be >= 1')
        if not 32 <= self.threads_per_block <= 1024 or self.threads_per_block % 32:
            raise ConfigError(
                f'gpu.threads_per_block must be a multiple of 32 in [32, 1024], got {self.threads_per_block}'
            )

    @classmethod
    def from_env(
        cls, mapping: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> GpuConfig:
        """Build from `mapping` (strict: unknown keys fail), then apply the environment overrides."""
        cfg = from_mapping(cls, dict(mapping or {}), 'gpu')
        e = os.environ if env is None else env
        over: dict[str, Any] = {}
        for var, field in ((ENV_DEVICE, 'device'), (ENV_POOL_MB, 'memory_pool_mb')):
            raw = e.get(var, '').strip()
            if not raw:
                continue
            try:
                over[field] = int(raw)
            except ValueError:
                raise ConfigError(f'{var}={raw!r}: expected an integer') from None
        return replace(cfg, **over) if over else cfg
