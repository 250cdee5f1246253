"""GPU batch filter, pool, config and ``bench gpu``: without a GPU (CI, dev machines) and on one.

Tests marked for a real GPU skip with the probe's reason elsewhere; the ones for a GPU-free machine
skip where a CUDA device is visible. On a lent GPU machine run them with ``.ci/gpu-check``. The
simulator versions of the kernel checks are in ``test_gpu_sim.py``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rt_safe_rl.core.errors import ConfigError, PolicyLoadError
from rt_safe_rl.gpu import GpuConfig, probe

REPO = Path(__file__).resolve().parent.parent
INFO = probe()
REAL_GPU = INFO.available and not INFO.simulator
# the GPU tests run on a real device, and on numba's simulator when this file runs in a process
# started with NUMBA_ENABLE_CUDASIM=1 (test_gpu_sim.py does): the same checks, small sizes
needs_gpu = pytest.mark.skipif(not INFO.available, reason=f'no CUDA device: {INFO.reason}')
without_gpu = pytest.mark.skipif(INFO.available, reason='a CUDA device (or the simulator) is visible')
TOL_RAD = 1e-9
GPU_CASES = 100_000 if REAL_GPU else 24
SPLIT_CASES, SPLIT_CHUNK = (50_000, 4096) if REAL_GPU else (40, 8)


def test_gpu_modules_import_without_gpu_cupy_or_tensorrt() -> None:
    for mod in (
        'rt_safe_rl.gpu.kernels',
        'rt_safe_rl.gpu.batch',
        'rt_safe_rl.gpu.memory',
        'rt_safe_rl.gpu.cases',
        'rt_safe_rl.bench.gpu_bench',
        'rt_safe_rl.core.policy.trt_backend',
    ):
        importlib.import_module(mod)
    assert isinstance(INFO.available, bool) and (INFO.available or INFO.reason)


def test_gpu_config_from_mapping_and_env() -> None:
    cfg = GpuConfig.from_env({'device': 1, 'streams': 2}, env={})
    assert cfg.device == 1 and cfg.streams == 2 and cfg.memory_pool_mb == GpuConfig().memory_pool_mb
    cfg = GpuConfig.from_env({'device': 1}, env={'RT_GPU_DEVICE': '0', 'RT_GPU_MEMORY_POOL_MB': '64'})
    assert cfg.device == 0 and cfg.memory_pool_mb == 64
    with pytest.raises(ConfigError, match='RT_GPU_MEMORY_POOL_MB'):
        GpuConfig.from_env(env={'RT_GPU_MEMORY_POOL_MB': 'lots'})
    with pytest.raises(ConfigError, match='memory_pool_mb'):
        GpuConfig.from_env(env={'RT_GPU_MEMORY_POOL_MB': '0'})
    with pytest.raises(ConfigError):
        GpuConfig.from_env({'devcie': 0}, env={})
    with pytest.raises(ConfigError, match='threads_per_block'):
        GpuConfig(threads_per_block=100)


def test_engine_cache_key_and_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rt_safe_rl.core.policy.trt_backend import engine_cache_path

    monkeypatch.setenv('RT_TRT_CACHE_DIR', str(tmp_path))
    base = engine_cache_path('ab' * 32, 'fp32', '10.13.0', 'NVIDIA H200')
    assert base.parent == tmp_path and base.suffix == '.engine'
    others = {
        engine_cache_path('cd' * 32, 'fp32', '10.13.0', 'NVIDIA H200'),
        engine_cache_path('ab' * 32, 'fp16', '10.13.0', 'NVIDIA H200'),
        engine_cache_path('ab' * 32, 'fp32', '10.14.1', 'NVIDIA H200'),
        engine_cache_path('ab' * 32, 'fp32', '10.13.0', 'NVIDIA H100 80GB HBM3'),
    }
    assert base not in others and len(others) == 4
    assert all('/' not in p.name and ' ' not in p.name for p in others)


def test_torchscript_to_onnx_export_matches_eager(tmp_path: Path) -> None:
    """The export TensorRT builds from (checked with onnxruntime on the CPU)."""
    import onnxruntime as ort

    from rt_safe_rl.core.policy.backends import build_backend, rollout, sample_observations
    from rt_safe_rl.core.policy.config import ModelConfig
    from rt_safe_rl.core.policy.loading import inspect_policy, load_torch_module
    from rt_safe_rl.core.policy.trt_backend import export_onnx

    p = REPO / 'rt_safe_rl' / 'models' / 'arm7_reach.pt'
    info = inspect_policy(p, ModelConfig())
    onnx_path = export_onnx(
        load_torch_module(p, info.format, ModelConfig()), info.obs_dim, tmp_path / 'p.onnx'
    )
    sess = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    obs = sample_observations(info.obs_dim, 100, seed=4)
    ref = rollout(build_backend('eager', p, info, ModelConfig()), obs)
    got = np.stack([sess.run(None, {'obs': obs[i : i + 1]})[0].reshape(-1) for i in range(len(obs))])
    assert float(np.abs(ref - got).max()) <= 1e-4


@without_gpu
def test_bench_gpu_without_gpu_reports_unavailable_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / 'gpu.json'
    p = subprocess.run(
        [sys.executable, '-m', 'rt_safe_rl.cli', 'bench', 'gpu', '--json', str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    printed = json.loads(p.stdout)
    assert printed == json.loads(out.read_text())
    assert printed['available'] is False and printed['reason']


@without_gpu
def test_gpu_filter_without_gpu_raises_with_the_reason() -> None:
    from rt_safe_rl.core.robot_model import RobotConfig, RobotModel
    from rt_safe_rl.gpu.batch import GpuBatchSafetyFilter, GpuUnavailableError

    with pytest.raises(GpuUnavailableError, match='CUDA'):
        GpuBatchSafetyFilter(RobotModel.from_config(RobotConfig()))


@without_gpu
def test_tensorrt_backends_listed_unavailable_with_reason() -> None:
    from rt_safe_rl.core.policy.backends import build_backend
    from rt_safe_rl.core.policy.config import ModelConfig, PolicyNodeConfig
    from rt_safe_rl.core.policy.loading import inspect_policy
    from rt_safe_rl.core.policy.model import load_policy_model

    p = REPO / 'rt_safe_rl' / 'models' / 'arm7_reach.pt'
    info = inspect_policy(p, ModelConfig())
    for name in ('tensorrt', 'tensorrt_fp16'):
        with pytest.raises(PolicyLoadError, match=name):
            build_backend(name, p, info, ModelConfig())
    pm = load_policy_model(
        p, PolicyNodeConfig(), backends=['eager', 'tensorrt', 'tensorrt_fp16'], n_check=20, timing_iters=20
    )
    rows = {r.name: r for r in pm.table}
    assert pm.selected == 'eager'
    for name in ('tensorrt', 'tensorrt_fp16'):
        assert rows[name].available is False and rows[name].reason


@needs_gpu
@pytest.mark.parametrize('config', ['default', 'jerk_effort', 'workspace', 'no_ssm'])
def test_gpu_kernel_matches_cpu_batch_on_1e5_cases(config: str) -> None:
    from rt_safe_rl.core.robot_model import RobotConfig, RobotModel
    from rt_safe_rl.gpu.cases import case_config, compare

    model = RobotModel.from_config(RobotConfig())
    r = compare(model, case_config(config), GPU_CASES, seed=11, with_op=config != 'default')
    assert r['max_abs_diff_out_rad'] <= TOL_RAD
    assert r['max_abs_diff_cmd_state'] <= TOL_RAD
    assert r['fault_mismatches'] == 0 and r['stopping_mismatches'] == 0
    # fused multiply-adds on the device can flip a report bit whose test sits within rounding of
    # its threshold (the command itself is continuous there); allow 1 in 10^4
    assert r['mask_mismatches'] <= GPU_CASES // 10_000
    assert r['gpu_resolved'] > GPU_CASES // 2 and r['gpu_resolved'] + r['deferred_to_cpu'] == GPU_CASES


@needs_gpu
def test_gpu_split_covers_every_visible_device_and_chunk() -> None:
    from rt_safe_rl.core.robot_model import RobotConfig, RobotModel
    from rt_safe_rl.gpu.batch import GpuBatchSafetyFilter
    from rt_safe_rl.gpu.cases import case_config, compare

    model = RobotModel.from_config(RobotConfig())
    cfg = case_config('default')
    gf = GpuBatchSafetyFilter(model, cfg, GpuConfig(chunk_states=SPLIT_CHUNK, streams=3, memory_pool_mb=64))
    r = compare(model, cfg, SPLIT_CASES, seed=5, with_op=False, gpu_filter=gf)
    assert r['max_abs_diff_out_rad'] <= TOL_RAD
    per = r['stats']['per_gpu_states']
    assert sum(per.values()) == SPLIT_CASES and len(per) == len(INFO.devices)
    assert r['stats']['chunks'] >= SPLIT_CASES // SPLIT_CHUNK


@needs_gpu
def test_pool_uses_cupy_when_installed_and_hands_out_device_arrays() -> None:

    from rt_safe_rl.gpu.memory import DevicePool

    pool = DevicePool(GpuConfig.from_env().device, 16)
    a = pool.alloc((1000, 7), np.float64)
    a.copy_to_device(np.arange(7000.0).reshape(1000, 7))
    assert float(a.copy_to_host()[999, 6]) == 6999.0
    assert pool.kind == ('cupy' if INFO.cupy else 'numba')
    pool.release()
