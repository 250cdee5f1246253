"""Device memory pool of ``gpu.memory_pool_mb`` on one GPU, handing out numba device arrays.

With cupy installed the memory comes from a ``cupy.cuda.MemoryPool`` limited to the pool size
(blocks are cached and reused after :meth:`DevicePool.free_all`); without cupy, from one numba
block of that size with an aligned bump allocator. Either way allocations after warm-up cost no
``cudaMalloc``/``cudaFree`` (the bench measures the difference). Not thread-safe; not RT code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rt_safe_rl.core.errors import RtSafeRlError

ALIGN_BYTES = 256


class PoolExhaustedError(RtSafeRlError):
    """The pool has not enough free memory for an allocation (message says how much)."""


class DevicePool:
    """Device memory for GPU `device` (numba index), at most `limit_mb` MiB.

    Args:
        device: CUDA device index.
        limit_mb: pool size [MiB].
        use_cupy: take cupy's pool when cupy is importable (default); False forces the numba block.
    """

    def __init__(self, device: int, limit_mb: int, use_cupy: bool = True) -> None:
        from numba import cuda

        self.device = device
        self.limit_bytes = int(limit_mb) << 20
        self._cuda = cuda
        self._held: list[Any] = []
        self._offset = 0
        self._cp: Any = None
        self._pool: Any = None
        self._block: Any = None
        if use_cupy:
            try:
                import cupy

                self._cp = cupy
            except Exception:
                self._cp = None
        if self._cp is not None:
            with self._cp.cuda.Device(device):
                self._pool = self._cp.cuda.MemoryPool()
                self._pool.set_limit(size=self.limit_bytes)
            self.kind = 'cupy'
        else:
            with cuda.gpus[device]:
                self._block = cuda.device_array(self.limit_bytes, dtype=np.uint8)
            self.kind = 'numba'

    @property
    def used_bytes(self) -> int:
        """Bytes handed out and not freed."""
        if self._pool is not None:
            return int(self._pool.used_bytes())
        return self._offset

    def alloc(self, shape: tuple[int, ...] | int, dtype: Any = np.float64) -> Any:
        """A numba device array of `shape`/`dtype` from the pool.

        Raises:
            PoolExhaustedError: not enough room left in the pool.
        """
        shp = (shape,) if isinstance(shape, int) else tuple(shape)
        dt = np.dtype(dtype)
        nbytes = max(1, int(np.prod(shp, dtype=np.int64)) * dt.itemsize)
        if self._pool is not None:
            cp = self._cp
            try:
                with cp.cuda.Device(self.device):
                    mem = self._pool.malloc(nbytes)
                    arr = cp.ndarray(shp, dtype=dt, memptr=mem)
            except cp.cuda.memory.OutOfMemoryError:
                raise PoolExhaustedError(self._full_msg(nbytes)) from None
            self._held.append(arr)
            with self._cuda.gpus[self.device]:
                return self._cuda.as_cuda_array(arr)
        start = -(-self._offset // ALIGN_BYTES) * ALIGN_BYTES
        if start + nbytes > self.limit_bytes:
            raise PoolExhaustedError(self._full_msg(nbytes))
        self._offset = start + nbytes
        view = self._block[start : start + nbytes].view(dt)
        count = int(np.prod(shp, dtype=np.int64))
        return view[:count].reshape(shp) if count else view[:0]

    def _full_msg(self, nbytes: int) -> str:
        return (
            f'gpu memory pool on device {self.device} is full: {nbytes} bytes requested, '
            f'{self.used_bytes} of {self.limit_bytes} used (raise gpu.memory_pool_mb / RT_GPU_MEMORY_POOL_MB)'
        )

    def free_all(self) -> None:
        """Return every allocation to the pool (arrays handed out must no longer be used)."""
        self._held.clear()
        self._offset = 0

    def release(self) -> None:
        """Give the pool's memory back to the driver."""
        self.free_all()
        if self._pool is not None:
            self._pool.free_all_blocks()
        self._block = None
