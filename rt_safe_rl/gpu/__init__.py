"""GPU acceleration (optional): batch safety-filter kernels, memory pool, streams, multi-GPU split.

Everything here imports without a GPU and without cupy or TensorRT; :func:`probe` says whether a
CUDA device is usable and why not. Modules:

- :mod:`.config`   ``GpuConfig`` (device, memory pool, chunking; env ``RT_GPU_DEVICE``,
  ``RT_GPU_MEMORY_POOL_MB``)
- :mod:`.device`   ``probe()`` -> ``GpuInfo`` (devices, peak bandwidth / FP64 figures, simulator)
- :mod:`.memory`   ``DevicePool`` (cupy's pool if installed, else a numba block allocator)
- :mod:`.kernels`  numba.cuda twin of the filter kernel (one thread per state)
- :mod:`.batch`    ``GpuBatchSafetyFilter``: ``BatchSafetyFilter``'s interface on the GPU(s)
- :mod:`.cases`    random batch cases shared by the tests and ``bench gpu``
- :mod:`.ptx`      the kernel compiled to PTX / assembled by ptxas for a target GPU, without one
"""

from rt_safe_rl.gpu.config import GpuConfig
from rt_safe_rl.gpu.device import GpuInfo, probe

__all__ = ['GpuConfig', 'GpuInfo', 'probe']
