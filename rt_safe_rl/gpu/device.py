"""Which CUDA devices are usable, and their peak figures (for the bench's roofline fractions).

:func:`probe` never raises: without a driver, a device or numba's CUDA target it returns
``available=False`` with the reason. Under ``NUMBA_ENABLE_CUDASIM=1`` it reports the simulator
(``simulator=True``; usable for correctness, not for speed). Not RT code.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

# FP64 FMA units per SM by compute capability (datasheets): 8.0 A100, 9.0 H100/H200; others 1/64 rate
_FP64_PER_SM: dict[tuple[int, int], int] = {(6, 0): 32, (7, 0): 32, (8, 0): 32, (9, 0): 64, (10, 0): 64}
# datasheet HBM bandwidth [B/s] by product name (when the driver attributes are missing)
_BANDWIDTH_BY_NAME: dict[str, float] = {'H200': 4.8e12, 'H100': 3.35e12, 'A100': 2.0e12, 'GH200': 4.0e12}
# datasheet boost clock [Hz] (CUDA 13 drivers may no longer report CLOCK_RATE)
_CLOCK_BY_NAME: dict[str, float] = {'H200': 1.98e9, 'H100': 1.98e9, 'A100': 1.41e9, 'GH200': 1.98e9}


@dataclass
class GpuDevice:
    """One visible CUDA device."""

    index: int
    name: str
    compute_capability: tuple[int, int]
    memory_bytes: int
    sm_count: int
    clock_hz: float = float('nan')
    peak_bandwidth_bytes_s: float = float('nan')
    peak_fp64_flops: float = float('nan')


@dataclass
class GpuInfo:
    """Result of :func:`probe`."""

    available: bool
    reason: str = ''
    simulator: bool = False
    devices: list[GpuDevice] = field(default_factory=list)
    cupy: str = ''
    """cupy version, '' when not installed."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f'{type(err).__name__}: {text[0] if text else ""}'.rstrip(': ')


def _attr(dev: Any, name: str) -> float:
    try:
        return float(getattr(dev, name))
    except Exception:
        return float('nan')


def _describe(index: int, dev: Any) -> GpuDevice:
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    cc = tuple(int(x) for x in dev.compute_capability)
    sm_attr = _attr(dev, 'MULTIPROCESSOR_COUNT')
    sms = int(sm_attr) if sm_attr == sm_attr else 0
    clock_hz = _attr(dev, 'CLOCK_RATE') * 1e3  # kHz
    if not clock_hz == clock_hz or clock_hz <= 0:
        clock_hz = next((v for k, v in _CLOCK_BY_NAME.items() if k in name), float('nan'))
    mem_clock_hz = _attr(dev, 'MEMORY_CLOCK_RATE') * 1e3
    bus_bits = _attr(dev, 'GLOBAL_MEMORY_BUS_WIDTH')
    bw = 2.0 * mem_clock_hz * bus_bits / 8.0  # DDR
    if not bw == bw or bw <= 0:
        bw = next((v for k, v in _BANDWIDTH_BY_NAME.items() if k in name), float('nan'))
    per_sm = _FP64_PER_SM.get((cc[0], cc[1]), 2)
    fp64 = 2.0 * per_sm * sms * clock_hz
    mem = 0
    try:
        from numba import cuda

        with cuda.gpus[index]:
            _free_b, total_b = cuda.current_context().get_memory_info()
            mem = int(total_b)
    except Exception:
        pass
    return GpuDevice(index, name, (cc[0], cc[1]), mem, sms, clock_hz, bw, fp64)


def probe() -> GpuInfo:
    """Usable CUDA devices (numba's view) and whether cupy is installed. Never raises."""
    sim = os.environ.get('NUMBA_ENABLE_CUDASIM', '') not in ('', '0')
    cupy_v = ''
    try:
        import importlib.util

        if importlib.util.find_spec('cupy') is not None:
            import cupy

            cupy_v = str(cupy.__version__)
    except Exception:
        cupy_v = ''
    try:
        from numba import cuda
    except Exception as err:
        return GpuInfo(False, f'numba.cuda cannot be imported: {_first_line(err)}', sim, cupy=cupy_v)
    if sim:
        return GpuInfo(
            True,
            'numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1): correctness only',
            True,
            [GpuDevice(0, 'numba-cuda-simulator', (0, 0), 0, 1)],
            cupy_v,
        )
    try:
        if not cuda.is_available():
            why = 'no CUDA device visible'
            try:
                from numba.cuda.cudadrv import driver as drv

                init_err = str(getattr(drv.driver, 'initialization_error', '') or '').strip()
                if init_err:
                    why = init_err.splitlines()[0]
            except Exception:
                pass
            return GpuInfo(False, f'no usable CUDA device: {why}', cupy=cupy_v)
        devs = [_describe(i, d) for i, d in enumerate(cuda.list_devices())]
    except Exception as err:
        return GpuInfo(False, f'CUDA initialisation failed: {_first_line(err)}', cupy=cupy_v)
    if not devs:
        return GpuInfo(False, 'no CUDA device visible', cupy=cupy_v)
    return GpuInfo(True, '', False, devs, cupy_v)
