"""The GPU batch kernel compiles to PTX for sm_90 (H100/H200) and assembles with ptxas, without a GPU.

``numba.cuda.compile_ptx`` needs libNVVM only; ``ptxas`` (CUDA toolkit) turns the PTX into SASS and
reports registers and spills. Both run in a child process (:mod:`rt_safe_rl.gpu.ptx` patches numba's
current-device lookup to compile device functions for a chosen compute capability). Skips, with
the reason, where libNVVM or ptxas is not installed. The kernel's results are checked on the CUDA
simulator (``test_gpu_sim.py``) and on a real GPU (``test_gpu.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def ptx_report() -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop('NUMBA_ENABLE_CUDASIM', None)  # the real CUDA target, not the simulator
    p = subprocess.run(
        [sys.executable, '-m', 'rt_safe_rl.gpu.ptx', '--cc', '9.0', '--humans', '1,2'],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    rep: dict[str, Any] = json.loads(p.stdout)
    if not rep['available']:
        pytest.skip(reason=f'cannot compile CUDA without libNVVM: {rep["reason"]}')
    return rep


def test_batch_kernel_compiles_to_ptx_for_sm90(ptx_report: dict[str, Any]) -> None:
    assert ptx_report['arch'] == 'sm_90'
    assert [k['humans'] for k in ptx_report['kernels']] == [1, 2]
    for k in ptx_report['kernels']:
        assert k['target_ok'], k  # a '.target sm_90' module with an '.entry' kernel
        assert k['ptx_chars'] > 10_000, k


def test_batch_kernel_assembles_for_sm90_and_a_block_fits(ptx_report: dict[str, Any]) -> None:
    if not ptx_report['ptxas']:
        pytest.skip(reason='ptxas (CUDA toolkit) not found: PTX not assembled')
    for k in ptx_report['kernels']:
        # a launch of threads_per_block threads needs registers * threads <= 64 Ki registers
        assert k['registers'] > 0 and k['fits_block'], (k, ptx_report['threads_per_block'])
        assert k['stack_frame_bytes'] > 0  # the per-thread work arrays are local memory
