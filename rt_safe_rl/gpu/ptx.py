"""Compile the GPU batch kernel to PTX, and assemble it for a target GPU, on a machine without one.

``numba.cuda.compile_ptx`` needs libNVVM only (no driver, no device); ``ptxas`` (CUDA toolkit) then
assembles that PTX for the target architecture and reports the kernel's registers, stack frame and
spills. This checks what the CUDA simulator cannot: that the kernel and its device functions type
and lower for the real target with the launch's argument types, and that a block of
``threads_per_block`` threads fits the register file. It does not run the kernel (the simulator
does that, in Python; a real GPU in ``test_gpu.py``).

``python -m rt_safe_rl.gpu.ptx [--cc 9.0] [--humans 1,2]`` prints a JSON report:
``{"available": false, "reason": ...}`` when NVVM is not found, else one row per kernel size. Run
it in its own process: compiling device functions for a chosen compute capability patches numba's
current-device lookup for the duration (see :func:`_target_cc`). Not RT code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from rt_safe_rl.core.robot_model import RobotConfig, RobotModel
from rt_safe_rl.core.safety.config import SafetyConfig

REGISTERS_PER_SM = 65536
"""32-bit registers per SM (and the most one block may use) on sm_70 .. sm_90."""
MAX_REGISTERS_PER_THREAD = 255


def nvvm_status() -> tuple[bool, str]:
    """(libNVVM usable, why not / where it was found). Never raises."""
    try:
        from numba.cuda.cuda_paths import get_cuda_paths
        from numba.cuda.cudadrv import nvvm

        if not nvvm.is_available():
            return False, 'libNVVM not found (no CUDA toolkit / nvidia-nvvm; set CUDA_HOME)'
        found = get_cuda_paths()['nvvm']
        where = found.info or 'the library search path'
        return True, f'libNVVM {nvvm.NVVM().get_version()} ({found.by}: {where})'
    except Exception as err:
        return False, f'libNVVM unusable: {type(err).__name__}: {err}'


def find_ptxas() -> str | None:
    """Path of ``ptxas``: ``$CUDA_HOME/bin``, then PATH, then ``/usr/local/cuda/bin``; None if absent."""
    home = os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH')
    for cand in (
        str(Path(home) / 'bin' / 'ptxas') if home else None,
        shutil.which('ptxas'),
        '/usr/local/cuda/bin/ptxas',
    ):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


@contextmanager
def _target_cc(cc: tuple[int, int]) -> Iterator[None]:
    """Device functions compile for ``get_current_device().compute_capability`` (numba's
    dispatcher); without a device that raises, so it answers `cc` while the block runs."""
    import numba.cuda.dispatcher as disp

    saved = disp.get_current_device
    disp.get_current_device = lambda: SimpleNamespace(compute_capability=cc)  # type: ignore[assignment]
    try:
        yield
    finally:
        disp.get_current_device = saved  # type: ignore[assignment]


def launch_types(model: RobotModel, cfg: SafetyConfig | None, h: int) -> tuple[Any, ...]:
    """numba types of the kernel's four argument tuples as :meth:`GpuBatchSafetyFilter.launch`
    passes them (C-contiguous arrays; `h` human slots)."""
    from numba import typeof

    from rt_safe_rl.core.safety.batch import BatchSafetyFilter
    from rt_safe_rl.gpu.batch import INPUTS, host_constants, state_layout

    params, arrays = host_constants(BatchSafetyFilter(model, cfg))
    lay = state_layout(model.n_joints, h)
    ins = tuple(np.zeros((2, *lay[k][0]), lay[k][1]) for k in INPUTS)
    outs = tuple(np.zeros((2, *lay[k][0]), lay[k][1]) for k in ('out', 'rep', 'flag'))
    return tuple(typeof(t) for t in (params, arrays, ins, outs))


def compile_kernel_ptx(model: RobotModel, h: int, cc: tuple[int, int] = (9, 0)) -> str:
    """PTX of the batch kernel for `model` with `h` human slots, for compute capability `cc`."""
    from numba import cuda

    from rt_safe_rl.gpu.kernels import get_kernel

    kern = get_kernel(model.n_joints, model.parent.shape[0], model.n_points, h)
    with _target_cc(cc):
        ptx, _ret = cuda.compile_ptx(kern.py_func, launch_types(model, None, h), cc=cc)
    return str(ptx)


def assemble(ptx: str, arch: str, ptxas: str) -> dict[str, Any]:
    """``ptxas -v`` of `ptx` for `arch` (e.g. ``sm_90``): the entry kernel's registers, stack frame
    and spill bytes. Raises RuntimeError with ptxas's output when it rejects the PTX."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / 'kernel.ptx'
        src.write_text(ptx)
        p = subprocess.run(
            [ptxas, f'-arch={arch}', '-v', str(src), '-o', str(Path(tmp) / 'kernel.cubin')],
            capture_output=True,
            text=True,
            timeout=300,
        )
    if p.returncode != 0:
        raise RuntimeError(f'ptxas failed ({p.returncode}): {p.stderr[-2000:]}')
    entry = p.stderr.split("Compiling entry function '", 1)[-1]
    regs = re.search(r'Used (\d+) registers', entry)
    frame = re.search(r'(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads', entry)
    if regs is None or frame is None:
        raise RuntimeError(f'unexpected ptxas output: {p.stderr[-2000:]}')
    return {
        'registers': int(regs.group(1)),
        'stack_frame_bytes': int(frame.group(1)),
        'spill_store_bytes': int(frame.group(2)),
        'spill_load_bytes': int(frame.group(3)),
    }


def report(cc: tuple[int, int], humans: list[int]) -> dict[str, Any]:
    """Compile (and assemble, when ptxas is found) the kernel of the default robot for each
    human-slot count; the JSON report of :func:`main`."""
    ok, why = nvvm_status()
    if not ok:
        return {'available': False, 'reason': why}
    from rt_safe_rl.gpu.config import GpuConfig

    model = RobotModel.from_config(RobotConfig())
    ptxas = find_ptxas()
    arch = f'sm_{cc[0]}{cc[1]}'
    tpb = GpuConfig().threads_per_block
    rows = []
    for h in humans:
        t0 = time.perf_counter()
        ptx = compile_kernel_ptx(model, h, cc)
        row: dict[str, Any] = {'humans': h, 'ptx_chars': len(ptx), 'compile_s': time.perf_counter() - t0}
        row['target_ok'] = f'.target {arch}' in ptx and '.entry ' in ptx
        if ptxas is not None:
            row.update(assemble(ptx, arch, ptxas))
            row['fits_block'] = (
                row['registers'] <= MAX_REGISTERS_PER_THREAD and row['registers'] * tpb <= REGISTERS_PER_SM
            )
        rows.append(row)
    return {
        'available': True,
        'nvvm': why,
        'ptxas': ptxas or '',
        'arch': arch,
        'threads_per_block': tpb,
        'kernels': rows,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: JSON report on stdout (exit 0 also when NVVM is absent: ``available`` says so)."""
    ap = argparse.ArgumentParser(prog='python -m rt_safe_rl.gpu.ptx', description=__doc__)
    ap.add_argument('--cc', default='9.0', help='compute capability, e.g. 9.0 (H100/H200), 8.0 (A100)')
    ap.add_argument('--humans', default='1,2', help='human-slot counts to compile for (comma-separated)')
    args = ap.parse_args(argv)
    major, minor = (int(x) for x in args.cc.split('.'))
    humans = [int(x) for x in args.humans.split(',') if x]
    json.dump(report((major, minor), humans), sys.stdout, indent=1)
    print()
    return 0


if __name__ == '__main__':
    sys.exit(main())
