"""Random batch cases and the GPU-vs-CPU comparison (tests, ``bench gpu``, the simulator check).

``python -m rt_safe_rl.gpu.cases --states N [--seed S]`` prints the comparison as JSON; run it with
``NUMBA_ENABLE_CUDASIM=1`` to check the kernel on numba's CUDA simulator (no GPU). Not RT code.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

import numpy as np

from rt_safe_rl.core.robot_model import RobotConfig, RobotModel
from rt_safe_rl.core.safety import kernel as kn
from rt_safe_rl.core.safety.config import SafetyConfig, SsmConfig, WorkspaceConfig

DT_S = 1e-3
CONFIGS = ('default', 'jerk_effort', 'workspace', 'no_ssm')


def case_config(name: str) -> SafetyConfig:
    """Safety configs that exercise the constraint families (tolerances wide: random states)."""
    base = replace(
        SafetyConfig(),
        max_step_gap_s=1e3,
        state_timeout_s=1e3,
        position_tolerance_rad=1e3,
        velocity_tolerance_rad_s=1e3,
        ssm=SsmConfig(require_human=False),
    )
    if name == 'default':
        return base
    if name == 'jerk_effort':
        return replace(base, enforce_jerk=True, enforce_effort=True)
    if name == 'workspace':
        return replace(base, workspace=WorkspaceConfig(enabled=True, points=[]))
    if name == 'no_ssm':
        return replace(base, ssm=SsmConfig(enabled=False, require_human=False))
    raise ValueError(f'unknown case config {name!r}; known: {CONFIGS}')


def random_cases(model: RobotModel, b: int, seed: int = 0, h: int = 2) -> dict[str, np.ndarray]:
    """b random viable command states with measurements, proposals (1e-4 .. 1e12 rad off), up to
    `h` human points, operator targets (and which states use them), measured human speeds and some
    controlled stops."""
    rng = np.random.default_rng(seed)
    n = model.n_joints
    q = rng.uniform(model.q_min, model.q_max, (b, n))

    def viab(dist: np.ndarray, acc: np.ndarray, dt: float) -> np.ndarray:  # viability_upper_vel, vectorised
        ad = acc * dt
        with np.errstate(invalid='ignore'):
            v = np.sqrt(ad * ad + 2.0 * acc * np.maximum(dist, 0.0)) - ad
        return np.where(dist < 0.0, dist / dt, np.where(np.isinf(dist), np.inf, v))

    up = np.minimum(viab(model.q_max - q, model.a_max, DT_S), model.v_max)
    lo = np.maximum(-viab(q - model.q_min, model.a_max, DT_S), -model.v_max)
    v = (lo + rng.uniform(0, 1, (b, n)) * (up - lo)) * rng.uniform(0, 1, (b, 1)) ** 2
    a = rng.uniform(-1, 1, (b, n)) * model.a_max
    scale = rng.choice([1e-4, 1e-3, 1e-2, 0.3, 3.0, 1e3, 1e12], size=(b, 1))
    return {
        'cs': np.ascontiguousarray(np.stack([q, v, a], axis=1)),
        'q': np.clip(q + rng.normal(0, 0.005, (b, n)), model.q_min, model.q_max),
        'dq': np.clip(v + rng.normal(0, 0.05, (b, n)), -model.v_max, model.v_max),
        'prop': q + rng.normal(0, 1, (b, n)) * scale,
        'op': q + rng.normal(0, 0.01, (b, n)),
        'human': rng.uniform([-1.2, -1.2, 0.0], [1.2, 1.2, 1.6], size=(b, h, 3)),
        'n_h': rng.integers(0, h + 1, b),
        'v_h': np.where(rng.random(b) < 0.3, rng.uniform(0, 2, b), -1.0),
        'mode': (rng.random(b) < 0.05).astype(np.int64),
        'has_op': rng.random(b) < 0.7,  # which states blend the operator target (when one is given)
    }


def compare(
    model: RobotModel, cfg: SafetyConfig, b: int, seed: int, with_op: bool, gpu_filter: Any = None
) -> dict[str, Any]:
    """Run the same cases through the CPU batch path and the GPU one; differences as a dict."""
    from rt_safe_rl.core.safety.batch import BatchSafetyFilter
    from rt_safe_rl.gpu.batch import GpuBatchSafetyFilter

    d = random_cases(model, b, seed)
    args = (
        d['q'],
        d['dq'],
        d['prop'],
        d['op'] if with_op else None,
        d['human'],
        d['n_h'],
        d['v_h'],
        d['mode'],
    )
    has_op = d['has_op'] if with_op else None
    cs_cpu = d['cs'].copy()
    out_c, rep_c = BatchSafetyFilter(model, cfg).run(cs_cpu, *args, has_operator=has_op)
    gf = gpu_filter or GpuBatchSafetyFilter(model, cfg)
    cs_gpu = d['cs'].copy()
    out_g, rep_g = gf.run(cs_gpu, *args, has_operator=has_op)
    gpu_rows = np.asarray(rep_g[:, kn.R_QP_ITERS] >= 0)  # all rows; deferred ones came from the CPU
    mask_diff = rep_c[:, kn.R_MASK] != rep_g[:, kn.R_MASK]
    fin = np.isfinite(rep_c) & np.isfinite(rep_g)
    rep_diff = np.where(fin, np.abs(rep_c - rep_g), np.where(np.isnan(rep_c) == np.isnan(rep_g), 0.0, np.inf))
    return {
        'states': b,
        'deferred_to_cpu': int(gf.stats['deferred_to_cpu']),
        'gpu_resolved': int(b - gf.stats['deferred_to_cpu']),
        'max_abs_diff_out_rad': float(np.max(np.abs(out_c - out_g))) if b else 0.0,
        'max_abs_diff_cmd_state': float(np.max(np.abs(cs_cpu - cs_gpu))) if b else 0.0,
        'max_abs_diff_report': float(
            np.max(
                rep_diff[
                    :,
                    [
                        kn.R_INTERVENTION,
                        kn.R_HUMAN_DIST,
                        kn.R_SSM_SCALE,
                        kn.R_ALPHA,
                        kn.R_POS_MARGIN,
                        kn.R_VEL_MARGIN,
                        kn.R_SSM_MARGIN,
                    ],
                ]
            )
        )
        if b
        else 0.0,
        'fault_mismatches': int(np.sum(rep_c[:, kn.R_FAULT] != rep_g[:, kn.R_FAULT])),
        'mask_mismatches': int(np.sum(mask_diff & gpu_rows)),
        'stopping_mismatches': int(np.sum(rep_c[:, kn.R_STOPPING] != rep_g[:, kn.R_STOPPING])),
        'stats': gf.stats,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: compare CPU and GPU on random cases for every case config; JSON on stdout."""
    ap = argparse.ArgumentParser(prog='python -m rt_safe_rl.gpu.cases', description=__doc__)
    ap.add_argument('--states', type=int, default=64)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--chunk-states', type=int, default=0, help='states per chunk (0 = GpuConfig default)')
    ap.add_argument('--streams', type=int, default=0, help='streams per GPU (0 = GpuConfig default)')
    args = ap.parse_args(argv)
    from rt_safe_rl.gpu.batch import GpuBatchSafetyFilter
    from rt_safe_rl.gpu.config import GpuConfig
    from rt_safe_rl.gpu.device import probe

    info = probe()
    if not info.available:
        print(json.dumps({'available': False, 'reason': info.reason}))
        return 0
    model = RobotModel.from_config(RobotConfig())
    res: dict[str, Any] = {'available': True, 'simulator': info.simulator, 'configs': {}}
    gcfg = GpuConfig.from_env()
    over = {k: v for k, v in (('chunk_states', args.chunk_states), ('streams', args.streams)) if v > 0}
    gcfg = replace(gcfg, **over)  # type: ignore[arg-type]
    for i, name in enumerate(CONFIGS):
        cfg = case_config(name)
        gf = GpuBatchSafetyFilter(model, cfg, gcfg)
        res['configs'][name] = compare(
            model, cfg, args.states, args.seed + i, with_op=i % 2 == 1, gpu_filter=gf
        )
    json.dump(res, sys.stdout, indent=1, default=str)
    print()
    return 0


if __name__ == '__main__':
    sys.exit(main())
