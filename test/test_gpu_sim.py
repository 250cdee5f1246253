"""The GPU batch filter on numba's CUDA simulator (no GPU needed): same results as the CPU batch path.

The simulator must be switched on before numba is imported (``NUMBA_ENABLE_CUDASIM=1``), so each
check runs in a child process. Small batches (the simulator runs every CUDA thread in Python); the
10^5-case version of the same comparison runs on a real GPU in ``test_gpu.py``.
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
TOL_RAD = 1e-9


def _run_sim(args: list[str], timeout_s: float = 240.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM='1', RT_GPU_MEMORY_POOL_MB='8', PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture(scope='module')
def sim_report() -> dict[str, Any]:
    # chunk 5 with 2 streams: several chunks per stream, so slots are reused (the pipeline's path)
    p = _run_sim(['-m', 'rt_safe_rl.gpu.cases', '--states', '23', '--chunk-states', '5', '--streams', '2'])
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)


def test_simulator_kernel_matches_cpu_batch(sim_report: dict[str, Any]) -> None:
    assert sim_report['available'] and sim_report['simulator']
    deferred = 0
    for name, r in sim_report['configs'].items():
        assert r['max_abs_diff_out_rad'] <= TOL_RAD, name
        assert r['max_abs_diff_cmd_state'] <= TOL_RAD, name
        assert r['max_abs_diff_report'] <= TOL_RAD, name
        assert r['fault_mismatches'] == 0 and r['mask_mismatches'] == 0 and r['stopping_mismatches'] == 0, (
            name
        )
        assert r['gpu_resolved'] > 0, name  # the kernel resolved states itself, not only the CPU
        assert r['stats']['chunks'] == 5  # 23 states in chunks of 5
        deferred += r['deferred_to_cpu']
    assert deferred > 0  # and the CPU fallback for active coupled rows was exercised too


_POOL_SCRIPT = """
import numpy as np
from rt_safe_rl.gpu.memory import DevicePool, PoolExhaustedError
pool = DevicePool(0, 1, use_cupy=False)
a = pool.alloc((10, 3), np.float64)
b = pool.alloc(7, np.int64)
assert a.shape == (10, 3) and b.shape == (7,)
assert pool.used_bytes >= 240 + 56 and pool.used_bytes % 8 == 0
try:
    pool.alloc((1 << 20,), np.float64)
    raise SystemExit('no PoolExhaustedError')
except PoolExhaustedError as err:
    assert 'RT_GPU_MEMORY_POOL_MB' in str(err)
pool.free_all()
assert pool.used_bytes == 0
c = pool.alloc((1 << 17) - 64, np.float64)  # nearly the whole MiB again after free_all
print('pool ok', pool.kind)
"""


def test_simulator_memory_pool_alloc_exhaust_free() -> None:
    p = _run_sim(['-c', _POOL_SCRIPT], timeout_s=60)
    assert p.returncode == 0, p.stderr[-2000:]
    assert 'pool ok numba' in p.stdout


def test_simulator_bench_gpu_runs_every_section(tmp_path: Path) -> None:
    out = tmp_path / 'gpu.json'
    p = _run_sim(
        [
            '-m',
            'rt_safe_rl.cli',
            'bench',
            'gpu',
            '--allow-simulator',
            '--states',
            '12',
            '--check-states',
            '6',
            '--cpu-states',
            '6',
            '--iters',
            '5',
            '--json',
            str(out),
        ]
    )
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep['available'] is True
    b = rep['batch']
    for key in ('device_resident', 'with_transfers', 'cpu_batch', 'stream_overlap', 'memory_pool', 'check'):
        assert key in b
    assert b['device_resident']['joint_checks_per_s'] > 0 and b['with_transfers']['joint_checks_per_s'] > 0
    assert all(c['max_abs_diff_out_rad'] <= TOL_RAD for c in b['check'].values())
    pol = rep['policies'][0]['backends']
    assert set(pol) >= {'cuda', 'tensorrt', 'tensorrt_fp16'}


def test_gpu_tests_pass_on_the_simulator() -> None:
    """test_gpu.py's split/chunk and pool tests on the simulator (its per-config kernel comparison is
    the fixture's run above, at a size the simulator affords)."""
    p = _run_sim(
        ['-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'test/test_gpu.py', '-k', 'split or pool'],
        timeout_s=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert ' passed' in p.stdout and 'skipped' not in p.stdout.splitlines()[-1]
