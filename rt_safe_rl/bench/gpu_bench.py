"""`rt-safe-rl bench gpu [--states N] [--check-states N] [--policy P ...] [--json FILE]`: GPU figures.

One run measures, on the visible CUDA device(s):

1. ``ceilings``: the device-to-device copy bandwidth (the kernel's practical memory ceiling) beside
   the datasheet/driver peaks (memory bandwidth, FP64).
2. ``batch``: the GPU batch safety filter (:mod:`rt_safe_rl.gpu`) on random arm7 cases: max
   difference against the CPU batch path, the fraction resolved on the GPU (the rest is deferred to
   the CPU QP), states/s and joint-checks/s (one joint of one state through FK, limit rows and SSM)
   device-resident (kernel only) and with host-device transfers (the stream pipeline), the CPU batch
   path's rate in the same run, the fraction of memory bandwidth and of FP64 peak the kernel reaches
   (bytes moved per state are counted exactly; FP64 operations per state are an analytical estimate),
   the stream overlap gain (1 stream vs ``gpu.streams``) and the memory pool's effect on allocation
   latency (``cudaMalloc``/``cudaFree`` per buffer vs the pool).
3. ``policies``: per policy, the CUDA-graph and TensorRT (FP32, FP16) backends against eager FP32:
   max abs error over a rollout, latency per call with host-device copies and device-only.

Without a GPU it prints ``{"available": false, "reason": ...}`` and exits 0. JSON on stdout (and
in ``--json FILE``); a section that raises is reported as ``{"error", "traceback"}`` and the exit
code is 1 (the other sections still run). Timings: wall clock around synchronised work, medians
over repeats.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rt_safe_rl.core import stats
from rt_safe_rl.core.errors import PolicyLoadError
from rt_safe_rl.core.policy.backends import build_backend, rollout, sample_observations
from rt_safe_rl.core.policy.config import ModelConfig
from rt_safe_rl.core.policy.loading import inspect_policy
from rt_safe_rl.gpu.config import GpuConfig
from rt_safe_rl.gpu.device import GpuInfo, probe
from rt_safe_rl.gpu.memory import DevicePool

REPO_MODEL = Path(__file__).resolve().parent.parent / 'models' / 'arm7_reach.pt'


def _median_s(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return stats.percentile(times, 50)


def flops_per_state_estimate(model: Any, h: int, jerk: bool) -> float:
    """Analytical FP64 operation count of one kernel state (sqrt, sin, cos counted as 1 each)."""
    nf, m, n = model.parent.shape[0], model.n_points, model.n_joints
    anc = int(sum(model.ancestor[model.pt_frame[i]].sum() for i in range(m)))
    fk = nf * (20 + 3 * 24) + m * 3 * 6 + anc * 33
    ssm = m * h * (12 + 6 * n)
    joints = n * (30 + (2 * 40 * 30 if jerk else 0))
    rows = m * h * 4 * n + n * 20
    return float(fk + ssm + joints + rows)


def copy_bandwidth(cuda: Any, nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """Device-to-device copy rate [B/s], counting bytes read plus written."""
    a = cuda.device_array(nbytes // 8, dtype=np.float64)
    b = cuda.device_array(nbytes // 8, dtype=np.float64)
    b.copy_to_device(a)
    cuda.synchronize()

    def once() -> None:
        b.copy_to_device(a)
        cuda.synchronize()

    t = _median_s(once, repeats)
    return 2.0 * nbytes / t


def _time_device_resident(
    cuda: Any, gf: Any, src: dict[str, Any], states: int, n: int, h: int
) -> tuple[float, Any]:
    """Upload every GPU's share of the inputs ``src`` once, then time the kernels alone:
    (median seconds per run over all states, the per-state deferral flags)."""
    from rt_safe_rl.gpu.batch import state_layout

    shares = np.array_split(np.arange(states), len(gf.gpus))
    resident: list[tuple[Any, dict[str, Any], int]] = []
    for g, idx in zip(gf.gpus, shares, strict=True):
        with cuda.gpus[g.index]:
            dev = {
                k: cuda.to_device(np.ascontiguousarray(src[k][idx]))
                for k in ('cs', 'q', 'dq', 'q_pol', 'q_op', 'has_op', 'human', 'n_human', 'v_h', 'mode')
            }
            lay = state_layout(n, h)
            for k in ('out', 'rep', 'flag'):
                shp, dt = lay[k]
                dev[k] = cuda.device_array((len(idx), *shp), dtype=dt)
            resident.append((g, dev, len(idx)))

    def kernels_only() -> None:
        for g, dev, m in resident:
            with cuda.gpus[g.index]:
                gf.launch(g, dev, m)
        for g, _dev, _m in resident:
            with cuda.gpus[g.index]:
                cuda.synchronize()

    kernels_only()  # compile + warm up
    t_res = _median_s(kernels_only, 5)
    flags = np.concatenate([dev['flag'].copy_to_host() for _g, dev, _m in resident])
    return t_res, flags


def _pipeline_figures(
    model: Any, cfg: Any, gcfg: Any, gf: Any, d: dict[str, Any], args: tuple[Any, ...], states: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stream pipeline with host-device transfers (and the CPU fallback), then the same with one
    stream: the report's (``with_transfers``, ``stream_overlap``) sections (seconds, states/s)."""
    from rt_safe_rl.gpu.batch import GpuBatchSafetyFilter

    n = model.n_joints
    gf.run(d['cs'].copy(), *args)
    runs = []
    for _ in range(3):
        gf.run(d['cs'].copy(), *args)
        runs.append(dict(gf.stats))
    gpu_s = stats.percentile([r['gpu_s'] for r in runs], 50)
    total_s = stats.percentile([r['gpu_s'] + r['cpu_s'] for r in runs], 50)
    one = GpuBatchSafetyFilter(model, cfg, replace(gcfg, streams=1))
    one.run(d['cs'].copy(), *args)
    t_one = _median_s(lambda: one.run(d['cs'].copy(), *args), 3)
    t_one_gpu = float(one.stats['gpu_s'])
    with_transfers = {
        'seconds_gpu_pipeline': gpu_s,
        'states_per_s': states / gpu_s,
        'joint_checks_per_s': states * n / gpu_s,
        'seconds_including_cpu_fallback': total_s,
        'joint_checks_per_s_including_cpu_fallback': states * n / total_s,
        'stats': runs[-1],
    }
    overlap = {
        'streams': gcfg.streams,
        'seconds_1_stream': t_one_gpu,
        'seconds_n_streams': gpu_s,
        'gain': t_one_gpu / gpu_s,
        'seconds_1_stream_total': t_one,
    }
    return with_transfers, overlap


def _cpu_batch_figures(
    model: Any, cfg: Any, d: dict[str, Any], args: tuple[Any, ...], m_cpu: int
) -> dict[str, Any]:
    """The CPU batch path on the first ``m_cpu`` states: the report's ``cpu_batch`` section."""
    from rt_safe_rl.core.safety.batch import BatchSafetyFilter

    cpu = BatchSafetyFilter(model, cfg)
    cpu_args: tuple[Any, ...] = tuple(a[:m_cpu] if a is not None else None for a in args)
    warm: tuple[Any, ...] = tuple(a[:8] if a is not None else None for a in args)
    cpu.run(d['cs'][:8].copy(), *warm)
    t_cpu = _median_s(lambda: cpu.run(d['cs'][:m_cpu].copy(), *cpu_args), 3)
    return {
        'states': m_cpu,
        'states_per_s': m_cpu / t_cpu,
        'joint_checks_per_s': m_cpu * model.n_joints / t_cpu,
    }


def _memory_pool_figures(cuda: Any, gf: Any, gcfg: Any, n: int, h: int) -> dict[str, Any]:
    """Chunk-sized buffers, cudaMalloc/cudaFree each time vs the pool: the ``memory_pool`` section
    (us per buffer)."""
    from rt_safe_rl.gpu.batch import state_layout

    lay = state_layout(n, h)
    chunk = gf.chunk_for(h)
    shapes = [((chunk, *s), dt) for s, dt in lay.values()]
    g0 = gf.gpus[0].index
    with cuda.gpus[g0]:
        ctx = cuda.current_context()

        def raw() -> None:
            arrs = [cuda.device_array(s, dtype=dt) for s, dt in shapes]
            del arrs
            dealloc = getattr(ctx, 'deallocations', None)
            if dealloc is not None:
                dealloc.clear()  # numba defers cudaFree: force it inside the timed region
            cuda.synchronize()

        pool = DevicePool(g0, gcfg.memory_pool_mb)

        def pooled() -> None:
            arrs = [pool.alloc(s, dt) for s, dt in shapes]
            del arrs
            pool.free_all()
            cuda.synchronize()

        raw()
        pooled()
        t_raw = _median_s(raw, 20)
        t_pool = _median_s(pooled, 20)
        pool.release()
    return {
        'kind': pool.kind,
        'buffers': len(shapes),
        'chunk_states': chunk,
        'us_per_buffer_malloc_free': t_raw / len(shapes) * 1e6,
        'us_per_buffer_pool': t_pool / len(shapes) * 1e6,
        'speedup': t_raw / t_pool,
    }


def bench_batch(info: GpuInfo, states: int, check_states: int, seed: int, cpu_states: int) -> dict[str, Any]:
    """Section 2 (see the module docstring)."""
    from numba import cuda

    from rt_safe_rl.core.robot_model import RobotConfig, RobotModel
    from rt_safe_rl.gpu.batch import GpuBatchSafetyFilter, bytes_per_state
    from rt_safe_rl.gpu.cases import CONFIGS, case_config, compare, random_cases

    model = RobotModel.from_config(RobotConfig())
    n = model.n_joints
    gcfg = GpuConfig.from_env()
    res: dict[str, Any] = {
        'robot': model.name,
        'n_joints': n,
        'monitored_points': model.n_points,
        'gpu_config': gcfg.__dict__,
    }
    res['check'] = {
        name: compare(model, case_config(name), check_states, seed + i, with_op=i % 2 == 1)
        for i, name in enumerate(CONFIGS)
    }
    cfg = case_config('default')
    gf = GpuBatchSafetyFilter(model, cfg, gcfg)
    d = random_cases(model, states, seed + 100)
    args = (d['q'], d['dq'], d['prop'], None, d['human'], d['n_h'], d['v_h'], d['mode'])
    h = d['human'].shape[1]
    # device-resident: every GPU gets its share uploaded once; time the kernels alone
    src = gf._inputs(d['cs'].copy(), *args)
    t_res, flags = _time_device_resident(cuda, gf, src, states, n, h)
    up_b, down_b = bytes_per_state(n, h)
    # with transfers: the stream pipeline (host arrays in, host arrays out), and the CPU fallback
    with_transfers, overlap = _pipeline_figures(model, cfg, gcfg, gf, d, args, states)
    cpu_batch = _cpu_batch_figures(model, cfg, d, args, min(states, cpu_states))
    dev0 = info.devices[gf.gpus[0].index]
    peak_bw = sum(info.devices[g.index].peak_bandwidth_bytes_s for g in gf.gpus)
    peak_fp64 = sum(info.devices[g.index].peak_fp64_flops for g in gf.gpus)
    flops = flops_per_state_estimate(model, h, cfg.enforce_jerk)
    res.update(
        {
            'states': states,
            'gpus_used': [g.index for g in gf.gpus],
            'gpu_resolved_fraction': float(np.mean(flags == 0)),
            'bytes_per_state': {'to_device': up_b, 'to_host': down_b},
            'device_resident': {
                'seconds': t_res,
                'states_per_s': states / t_res,
                'joint_checks_per_s': states * n / t_res,
                'bandwidth_bytes_s': states * (up_b + down_b) / t_res,
                'fraction_of_peak_bandwidth': states * (up_b + down_b) / t_res / peak_bw,
                'fp64_flops_per_state_estimate': flops,
                'fraction_of_fp64_peak_estimate': states * flops / t_res / peak_fp64,
            },
            'with_transfers': with_transfers,
            'cpu_batch': cpu_batch,
            'stream_overlap': overlap,
            'device': dev0.name,
        }
    )
    # memory pool: chunk-sized buffers, cudaMalloc/cudaFree each time vs the pool
    res['memory_pool'] = _memory_pool_figures(cuda, gf, gcfg, n, h)
    return res


def _graph_replay(torch: Any, graph: Any) -> Any:
    """Device-only call of the CUDA-graph backend: replay + synchronize, no copies."""

    def run() -> None:
        graph.replay()
        torch.cuda.current_stream().synchronize()

    return run


def bench_policies(paths: list[Path], iters: int) -> list[dict[str, Any]]:
    """Section 3: CUDA graph and TensorRT against eager per policy."""
    out: list[dict[str, Any]] = []
    for p in paths:
        try:
            out.append(_bench_policy(p, iters))
        except PolicyLoadError as err:  # one unloadable file does not lose the others
            out.append({'policy': p.name, 'error': str(err)})
    return out


def _bench_policy(p: Path, iters: int) -> dict[str, Any]:
    """One policy: cuda / tensorrt / tensorrt_fp16 against the reference (error, latency)."""
    import torch

    info = inspect_policy(p, ModelConfig())
    eager = build_backend('eager', p, info, ModelConfig()) if info.format != 'onnx' else None
    ref_name = 'eager' if eager is not None else 'onnxruntime'
    ref_be = eager or build_backend('onnxruntime', p, info, ModelConfig())
    obs = sample_observations(info.obs_dim, 1000, seed=1)
    ref = rollout(ref_be, obs)
    row: dict[str, Any] = {
        'policy': p.name,
        'sha256': info.sha256,
        'recurrent': info.recurrent,
        'reference': ref_name,
        'backends': {},
    }
    for name in ('cuda', 'tensorrt', 'tensorrt_fp16'):
        try:
            t0 = time.perf_counter()
            be = build_backend(name, p, info, ModelConfig())
            build_s = time.perf_counter() - t0
        except PolicyLoadError as err:
            row['backends'][name] = {'available': False, 'reason': str(err)}
            continue
        got = rollout(be, obs)
        y = np.zeros(info.act_dim, np.float32)
        lat = []
        for i in range(iters):
            t0 = time.perf_counter_ns()
            be.forward(obs[i % len(obs)], y)
            lat.append(time.perf_counter_ns() - t0)
        dev_fn = getattr(be, 'run_device', None)
        graph = getattr(be, '_graph', None)
        if dev_fn is None and graph is not None:
            dev_fn = _graph_replay(torch, graph)

        dlat = []
        if dev_fn is not None:
            for _ in range(iters):
                t0 = time.perf_counter_ns()
                dev_fn()
                dlat.append(time.perf_counter_ns() - t0)
        be.reset()
        a = np.asarray(lat) / 1e3
        row['backends'][name] = {
            'available': True,
            'build_s': build_s,
            'max_abs_err': float(np.max(np.abs(got.astype(np.float64) - ref))),
            'median_us_with_copies': stats.percentile(a, 50),
            'p99_us_with_copies': stats.percentile(a, 99),
            'median_us_device_only': stats.percentile(dlat, 50) / 1e3 if dlat else None,
            'p99_us_device_only': stats.percentile(dlat, 99) / 1e3 if dlat else None,
        }
    lat_e = []
    y = np.zeros(info.act_dim, np.float32)
    for i in range(iters):
        t0 = time.perf_counter_ns()
        ref_be.forward(obs[i % len(obs)], y)
        lat_e.append(time.perf_counter_ns() - t0)
    row['backends'][ref_name] = {
        'available': True,
        'median_us_with_copies': stats.percentile(lat_e, 50) / 1e3,
    }
    return row


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rt-safe-rl bench gpu``."""
    ap = argparse.ArgumentParser(prog='rt-safe-rl bench gpu', description=__doc__.split('\n\n')[0])
    ap.add_argument(
        '--states', type=int, default=1_000_000, help='states for the throughput runs (default 1e6)'
    )
    ap.add_argument(
        '--check-states', type=int, default=100_000, help='random cases per config vs the CPU (1e5)'
    )
    ap.add_argument('--cpu-states', type=int, default=100_000, help='states for the CPU batch rate (1e5)')
    ap.add_argument(
        '--policy', action='append', default=[], help='policy file (repeatable; default: arm7_reach.pt)'
    )
    ap.add_argument('--iters', type=int, default=2000, help='timed calls per policy backend (2000)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--skip-batch', action='store_true')
    ap.add_argument('--skip-policies', action='store_true')
    ap.add_argument('--json', help='also write the JSON report to this file')
    ap.add_argument(
        '--allow-simulator',
        action='store_true',
        help="run on numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1): code paths only, no figures",
    )
    args = ap.parse_args(argv)
    if args.states < 1 or args.check_states < 1 or args.iters < 1 or args.cpu_states < 1:
        print(
            'rt-safe-rl bench gpu: error: --states, --check-states, --cpu-states and --iters must be >= 1',
            file=sys.stderr,
        )
        return 2
    info = probe()
    report: dict[str, Any]
    failed = False
    if not info.available or (info.simulator and not args.allow_simulator):
        reason = info.reason if not info.available else 'numba CUDA simulator: no timings on a simulator'
        report = {'available': False, 'reason': reason}
    else:
        report = {
            'available': True,
            'devices': [d.__dict__ for d in info.devices],
            'cupy': info.cupy,
            'host': platform.node(),
        }
        from numba import cuda

        def ceilings() -> dict[str, Any]:
            with cuda.gpus[info.devices[0].index]:
                return {
                    'copy_bandwidth_bytes_s': copy_bandwidth(cuda, 1 << 20 if info.simulator else 1 << 30)
                }

        sections: list[tuple[str, Any]] = [('ceilings', ceilings)]
        if not args.skip_batch:
            sections.append(
                (
                    'batch',
                    lambda: bench_batch(info, args.states, args.check_states, args.seed, args.cpu_states),
                )
            )
        if not args.skip_policies:
            paths = [Path(p) for p in args.policy] or [REPO_MODEL]
            sections.append(('policies', lambda: bench_policies(paths, args.iters)))
        for name, fn in sections:  # one failing section does not lose the others' figures
            try:
                report[name] = fn()
            except Exception as err:
                report[name] = {
                    'error': f'{type(err).__name__}: {err}',
                    'traceback': traceback.format_exc()[-3000:],
                }
                failed = True
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + '\n')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
