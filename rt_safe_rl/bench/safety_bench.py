"""`rt-safe-rl bench safety [--joints N] [--points M] [--json FILE] ...`: safety filter benchmark.

Measures, in one run on one machine (so the ratios are meaningful on a noisy host):

1. ``per_cycle``: p50/p99/max of one full filter cycle (:class:`SafetyFilter.step`: validation,
   FK + Jacobians of M monitored points, ISO/TS 15066 SSM rows, workspace rows, viability / vel /
   acc / jerk / effort bounds, exact projection) for an N-joint chain with M monitored points and a
   moving person, against a plain numpy implementation of the same checks
   (:mod:`rt_safe_rl.core.safety.numpy_ref`) fed the same inputs in the same loop (interleaved).
   Both outputs are compared every cycle from the same command state (``agreement_max_abs_rad``).
   Target: ours p99 <= 1/5 of numpy's p99. ``allocation``: tracemalloc growth and
   ``sys.getallocatedblocks`` delta over the steady-state cycles (target: no growth).
2. ``batch``: :class:`BatchSafetyFilter` throughput (states/s) with numba's thread count, plus the
   single-thread per-state rate for reference.
3. ``properties`` (``--cases``, default 10^5): random viable states of the 7-DoF arm with random
   finite proposals (scales 1e-4 .. 1e12 rad), people and operator commands through the batch
   path; checks that every output respects the position, velocity, acceleration and viability
   limits (and jerk / effort unless the report says they were relaxed), is finite, and that
   re-filtering the output returns it (idempotence, to 1e-9 rad; non-bit-identical cases are
   counted too). Counts violations (target: 0).
4. ``closed_loop`` (``--closed-loop-steps`` per proposer): the simulated PD arm under random,
   bang-bang and noise proposers; the simulator's CommandAudit counts limit violations (target 0).
5. ``monitor`` (``--monitor-s`` seconds, 0 = skip): the real :class:`SafetyFilterNode` composed
   in-process on the :class:`RtExecutor`, a 1 kHz control task playing robot + policy and the
   node's safety monitor on its ``safety.monitor_rate_hz`` grid: monitor runs/s, periods it
   deferred (no timeout could expire) and missed periods per 10^4 (periods it should have run and
   did not, as the task counts them under the ``skip`` miss policy; starts more than one period
   late are reported separately); then the chain goes silent (``engaged``): the time from the
   state timeout's expiry to the monitor's first braking tick, and its runs/s and missed periods
   while it brakes and holds (every period).

Prints one JSON document (and writes it with ``--json FILE``). Exit 0 when it ran (targets are
reported as ``*_met`` booleans, never asserted), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np

from rt_safe_rl.bench.safety_monitor_bench import bench_monitor
from rt_safe_rl.config import load_config
from rt_safe_rl.core.robot_model import RobotConfig, RobotModel
from rt_safe_rl.core.safety import ACTIVE_BITS, SafetyConfig, SafetyFilter
from rt_safe_rl.core.safety import kernel as kn
from rt_safe_rl.core.safety.batch import BatchSafetyFilter
from rt_safe_rl.core.safety.config import SsmConfig, WorkspaceConfig
from rt_safe_rl.core.safety.formulas import viability_upper_vel
from rt_safe_rl.core.safety.numpy_ref import NumpySafetyFilter
from rt_safe_rl.core.safety.testing import IDEMPOTENCE_TOL_RAD, chain_model
from rt_safe_rl.core.stats import summarize_ns
from rt_safe_rl.gpu.cases import case_config  # GPU-free at import (numba.cuda only in its functions)
from rt_safe_rl.sim.arm import ArmLimits, ArmSim, CommandAudit
from rt_safe_rl.sim.human import HumanWalker

__all__ = ['bench_batch', 'bench_closed_loop', 'bench_monitor', 'bench_per_cycle', 'bench_properties', 'main']

DT = 1e-3
MS = 1_000_000


def _bench_config(link_length_m: float, n_joints: int) -> SafetyConfig:
    reach = link_length_m * n_joints
    return SafetyConfig(
        ssm=SsmConfig(require_human=True),
        workspace=WorkspaceConfig(
            min_m=[-reach - 0.5, -reach - 0.5, -0.5], max_m=[reach + 0.5, reach + 0.5, reach + 0.5], points=[]
        ),
        max_step_gap_s=1e3,
        state_timeout_s=1e3,
    )


def bench_per_cycle(n_joints: int, n_points: int, cycles: int, seed: int) -> dict[str, Any]:
    """Full filter vs plain numpy, interleaved, same inputs; agreement and allocation."""
    link = 0.05
    model = _bench_model(n_joints, n_points, link)
    cfg = _bench_config(link, n_joints)
    ours = SafetyFilter(model, cfg)
    ref = NumpySafetyFilter(model, cfg)
    rng = np.random.default_rng(seed)
    q = np.zeros(n_joints)
    ours.set_command_state(q)
    ref.cmd_state[0] = q
    out = np.zeros(n_joints)
    dq = np.zeros(n_joints)
    human = np.zeros((1, 3))
    target = q.copy()
    warm = min(500, cycles // 10)
    t_ours = np.zeros(cycles, dtype=np.int64)
    t_ref = np.zeros(cycles, dtype=np.int64)
    worst = 0.0
    active = 0
    reach = link * n_joints
    perf = time.perf_counter_ns
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for k in range(warm + cycles):
            if k % 400 == 0:
                target = np.clip(q + rng.normal(0, 0.6, n_joints), model.q_min, model.q_max)
            ang = 0.7 * k * DT
            human[0, 0] = 0.8 * reach * math.cos(ang)
            human[0, 1] = 0.8 * reach * math.sin(ang)
            human[0, 2] = 0.5 * reach
            t = k * MS
            # the reference starts every cycle from our command state: per-cycle agreement (a long
            # trajectory would amplify 1e-15 summation-order differences at the tier switches)
            np.copyto(ref.cmd_state, ours.command_state)
            a = perf()
            ours.step(t, q, dq, target, True, human, t, None, out)
            b = perf()
            o2 = ref.step(q, dq, target, human)
            c = perf()
            if k >= warm:
                t_ours[k - warm] = b - a
                t_ref[k - warm] = c - b
                worst = max(worst, float(np.abs(o2 - out).max()))
                active += ours.report.active_mask != 0
            np.subtract(out, q, out=dq)
            dq /= DT
            q[:] = out
        # allocation: steady state, same inputs, many cycles
        for _ in range(200):
            ours.step(t, q, dq, target, True, human, t, None, out)
        blocks0 = sys.getallocatedblocks()
        tracemalloc.start()
        m0, _ = tracemalloc.get_traced_memory()
        n_alloc = 5000
        for _ in range(n_alloc):
            t += MS
            ours.step(t, q, dq, target, True, human, t, None, out)
        m1, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        blocks1 = sys.getallocatedblocks()
    finally:
        if gc_was:
            gc.enable()
    allocation = {
        'cycles': n_alloc,
        'tracemalloc_growth_bytes': int(m1 - m0),
        'tracemalloc_peak_bytes': int(peak - m0),
        'allocated_blocks_delta': int(blocks1 - blocks0),
        'no_growth': bool(m1 - m0 < 1024),
    }
    return _per_cycle_report(n_joints, n_points, t_ours, t_ref, worst, active, allocation)


def _per_cycle_report(
    n_joints: int,
    n_points: int,
    t_ours: np.ndarray,
    t_ref: np.ndarray,
    worst: float,
    active: int,
    allocation: dict[str, Any],
) -> dict[str, Any]:
    """The ``per_cycle`` section: our and numpy's cycle times (``t_*``: ns per cycle) summarised in
    us with their ratios, the worst disagreement (rad), the cycles with an active constraint."""
    s_ours = summarize_ns(t_ours)
    s_ref = summarize_ns(t_ref)
    ratio = s_ref['p99'] / s_ours['p99'] if s_ours['p99'] > 0 else math.nan
    return {
        'robot': f'{n_joints}-joint chain, {n_points} monitored points, 1 person, SSM + workspace + '
        f'jerk + effort on',
        'cycles': int(t_ours.size),
        'filter_us': s_ours,
        'numpy_reference_us': s_ref,
        'p99_ratio_numpy_over_ours': ratio,
        'p50_ratio_numpy_over_ours': s_ref['p50'] / s_ours['p50'] if s_ours['p50'] > 0 else math.nan,
        'target_p99_ratio_min': 5.0,
        'target_met': bool(ratio >= 5.0),
        'agreement_max_abs_rad': worst,
        'cycles_with_active_constraints': int(active),
        'allocation': allocation,
    }


def _bench_model(n_joints: int, n_points: int, link_m: float) -> RobotModel:
    """The per-cycle benchmark's robot: an ``n_joints`` chain of ``link_m`` links, ``n_points``
    monitored points, PD gains 200/10, effort 150 N m, a_max 10 rad/s^2, j_max 5000 rad/s^3."""
    return chain_model(
        n_joints,
        n_points=n_points,
        kp=200.0,
        kd=10.0,
        effort=150.0,
        link_length_m=link_m,
        a_max=10.0,
        j_max=5000.0,
    )


def _random_batch(model: RobotModel, b: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random viable command states, measurements, proposals, people and operator commands."""
    n = model.n_joints
    q = rng.uniform(model.q_min, model.q_max, (b, n))
    up = (
        np.array(
            [
                [viability_upper_vel(model.q_max[j] - q[i, j], model.a_max[j], DT) for j in range(n)]
                for i in range(b)
            ]
        )
        if b <= 2000
        else None
    )
    if up is None:  # vectorised version of viability_upper_vel for large batches

        def viab(dist: np.ndarray, a: np.ndarray) -> np.ndarray:
            return np.sqrt((a * DT) ** 2 + 2 * a * np.maximum(dist, 0)) - a * DT

        up = viab(model.q_max - q, model.a_max)
        lo = -viab(q - model.q_min, model.a_max)
    else:
        lo = -np.array(
            [
                [viability_upper_vel(q[i, j] - model.q_min[j], model.a_max[j], DT) for j in range(n)]
                for i in range(b)
            ]
        )
    up = np.minimum(up, model.v_max)
    lo = np.maximum(lo, -model.v_max)
    v = (lo + rng.uniform(0, 1, (b, n)) * (up - lo)) * rng.uniform(0, 1, (b, 1)) ** 2
    a = rng.uniform(-1, 1, (b, n)) * model.a_max
    cs = np.stack([q, v, a], axis=1)
    scale = rng.choice([1e-4, 1e-3, 1e-2, 0.3, 3.0, 1e3, 1e12], size=(b, 1))
    prop = q + rng.normal(0, 1, (b, n)) * scale
    q_meas = np.clip(q + rng.normal(0, 0.005, (b, n)), model.q_min, model.q_max)
    dq_meas = np.clip(v + rng.normal(0, 0.05, (b, n)), -model.v_max, model.v_max)
    human = rng.uniform([-1.2, -1.2, 0.0], [1.2, 1.2, 1.6], size=(b, 2, 3))
    n_h = rng.integers(0, 3, b)
    op = q + rng.normal(0, 0.01, (b, n))
    return {'cs': cs, 'q': q_meas, 'dq': dq_meas, 'prop': prop, 'human': human, 'n_h': n_h, 'op': op}


def _check_batch(
    model: RobotModel,
    cfg: SafetyConfig,
    cs0: np.ndarray,
    cs1: np.ndarray,
    out: np.ndarray,
    rep: np.ndarray,
    q_meas: np.ndarray,
    dq_meas: np.ndarray,
) -> dict[str, int]:
    """Count limit violations of one batch step (vectorised)."""
    v0, a0 = cs0[:, 1], cs0[:, 2]
    v = cs1[:, 1]
    acc = (v - v0) / DT
    mask = rep[:, kn.R_MASK].astype(np.int64)
    stopping = rep[:, kn.R_STOPPING] != 0
    tol = 1e-9
    viol = {
        'nonfinite': int(np.sum(~np.all(np.isfinite(out), axis=1))),
        'position': int(np.sum(np.any((out > model.q_max + tol) | (out < model.q_min - tol), axis=1))),
        'velocity': int(np.sum(np.any(np.abs(v) > model.v_max * (1 + 1e-12) + tol, axis=1))),
        'acceleration': int(np.sum(np.any(np.abs(acc) > model.a_max * (1 + 1e-9) + 1e-6, axis=1))),
        'viability': int(
            np.sum(
                np.any(
                    ((v > 0) & (v * v / (2 * model.a_max) > model.q_max - out + 1e-9))
                    | ((v < 0) & (v * v / (2 * model.a_max) > out - model.q_min + 1e-9)),
                    axis=1,
                )
            )
        ),
    }
    jerk_ok = (mask & ACTIVE_BITS['jerk_relaxed']) != 0
    jerk_bad = np.any(np.abs(acc - a0) > model.j_max * DT * (1 + 1e-9) + 1e-5, axis=1)
    viol['jerk_unreported'] = int(np.sum(jerk_bad & ~jerk_ok)) if cfg.enforce_jerk else 0
    tau = model.kp * (out - q_meas) - model.kd * dq_meas
    eff_bad = np.any(np.abs(tau) > model.effort_max * (1 + 1e-9) + 1e-6, axis=1)
    eff_ok = (mask & ACTIVE_BITS['effort_relaxed']) != 0
    viol['effort_unreported'] = int(np.sum(eff_bad & ~eff_ok & ~stopping)) if cfg.enforce_effort else 0
    return viol


def _run_split(
    bf: BatchSafetyFilter,
    d: dict[str, np.ndarray],
    cs: np.ndarray,
    op: np.ndarray,
    with_op: np.ndarray,
    threads: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """One batch step of the random cases ``d`` from the command states ``cs`` (updated in place):
    operator blending only for the rows ``with_op`` (split: the batch API takes all-or-none).
    Returns (outputs [rad], reports)."""
    b = cs.shape[0]
    out = np.zeros((b, cs.shape[2]))
    rep = np.zeros((b, kn.N_REP))
    for sel, use_op in ((with_op, True), (~with_op, False)):
        idx = np.flatnonzero(sel)
        if idx.size == 0:
            continue
        cs_sel = cs[idx]
        o, r = bf.run(
            cs_sel,
            d['q'][idx],
            d['dq'][idx],
            d['prop'][idx],
            op[idx] if use_op else None,
            d['human'][idx],
            d['n_h'][idx],
            n_threads=threads,
        )
        cs[idx] = cs_sel
        out[idx] = o
        rep[idx] = r
    return out, rep


def _idempotence_dev(
    bf: BatchSafetyFilter,
    d: dict[str, np.ndarray],
    cs0: np.ndarray,
    out: np.ndarray,
    rep: np.ndarray,
    threads: int | None,
) -> np.ndarray:
    """Idempotence: re-filter the outputs ``out`` from the same states ``cs0`` (policy rows only,
    not stopping); per re-filtered row not stopping again, its max deviation (rad)."""
    rows_sel = np.flatnonzero((rep[:, kn.R_STOPPING] == 0) & (rep[:, kn.R_ALPHA] == 0))
    if not rows_sel.size:
        return np.zeros(0)
    cs_again = cs0[rows_sel].copy()
    o2, r2 = bf.run(
        cs_again,
        d['q'][rows_sel],
        d['dq'][rows_sel],
        out[rows_sel],
        None,
        d['human'][rows_sel],
        d['n_h'][rows_sel],
        n_threads=threads,
    )
    again_ok = r2[:, kn.R_STOPPING] == 0
    dev: np.ndarray = np.max(np.abs(o2[again_ok] - out[rows_sel][again_ok]), axis=1, initial=0.0)
    return dev


def bench_properties(cases: int, seed: int, threads: int | None) -> dict[str, Any]:
    """>= 10^5 randomized property cases through the batch path (see the module docstring)."""
    model = RobotModel.from_config(RobotConfig())
    cfg = case_config('default')  # step-gap/timeout/tracking checks opened up, no person required
    bf = BatchSafetyFilter(model, cfg)
    rng = np.random.default_rng(seed)
    totals: dict[str, int] = {}
    idem_checked = idem_failed = idem_not_bitwise = relaxed_jerk = fallback = faults = 0
    idem_max_dev = 0.0
    done = 0
    t0 = time.perf_counter()
    chunk = 20000
    while done < cases:
        b = min(chunk, cases - done)
        d = _random_batch(model, b, rng)
        with_op = rng.random(b) < 0.3
        op = np.where(with_op[:, None], d['op'], np.nan)
        cs0 = d['cs'].copy()
        cs1 = d['cs'].copy()
        out, rep = _run_split(bf, d, cs1, op, with_op, threads)
        for k, v in _check_batch(model, cfg, cs0, cs1, out, rep, d['q'], d['dq']).items():
            totals[k] = totals.get(k, 0) + v
        mask = rep[:, kn.R_MASK].astype(np.int64)
        relaxed_jerk += int(np.sum((mask & ACTIVE_BITS['jerk_relaxed']) != 0))
        fallback += int(np.sum((mask & ACTIVE_BITS['qp_fallback']) != 0))
        faults += int(np.sum(rep[:, kn.R_FAULT] != 0))
        dev = _idempotence_dev(bf, d, cs0, out, rep, threads)
        idem_checked += int(dev.size)
        idem_not_bitwise += int(np.count_nonzero(dev > 0.0))
        idem_failed += int(np.count_nonzero(dev > IDEMPOTENCE_TOL_RAD))
        idem_max_dev = max(idem_max_dev, float(dev.max(initial=0.0)))
        done += b
    elapsed = time.perf_counter() - t0
    violations = sum(totals.values()) + idem_failed
    return {
        'robot': 'arm7 (Panda-like), default safety config, random viable states, proposals 1e-4..1e12 rad',
        'cases': done,
        'violations': totals,
        'idempotence_checked': idem_checked,
        'idempotence_failed': idem_failed,
        'idempotence_tolerance_rad': IDEMPOTENCE_TOL_RAD,
        'idempotence_not_bitwise': idem_not_bitwise,
        'idempotence_max_dev_rad': idem_max_dev,
        'jerk_relaxed_cases': relaxed_jerk,
        'qp_fallback_cases': fallback,
        'fault_cases': faults,
        'seconds': round(elapsed, 2),
        'total_violations': int(violations),
        'target_met': bool(violations == 0 and done >= 100_000),
    }


def bench_closed_loop(steps: int, seed: int) -> dict[str, Any]:
    """Simulated arm under adversarial proposers; the simulator's CommandAudit is the oracle."""
    app = load_config(None)
    model = RobotModel.from_config(app.robot)
    results: dict[str, Any] = {}
    total = 0
    for kind in ('random_jumps', 'bang_bang', 'noise'):
        limits = ArmLimits.from_model(model, app.sim.robot)
        arm = ArmSim(limits, DT, limits.initial_q(app.sim.robot))
        audit = CommandAudit(limits, DT, tolerance=1e-9)
        human = HumanWalker(app.sim.human)
        f = SafetyFilter(model, app.safety)
        rng = np.random.default_rng(seed)
        out = np.zeros(model.n_joints)
        h = np.zeros((1, 3))
        target = model.home()
        resets = robot_out_of_limits = 0
        flags = {'jerk_relaxed': 0, 'effort_relaxed': 0, 'qp_fallback': 0, 'stop': 0}
        for k in range(steps):
            t = (10_000 + k) * MS
            human.position(k * DT, h[0])
            if kind == 'random_jumps':
                if k % 97 == 0:
                    target = rng.uniform(model.q_min - 2, model.q_max + 2)
                prop = target
            elif kind == 'bang_bang':
                prop = model.q_max + 1.0 if (k // 150) % 2 else model.q_min - 1.0
            else:
                prop = arm.q + rng.normal(0, 1, model.n_joints) * rng.choice([1e-3, 0.1, 10.0])
                if k % 1000 == 500:
                    prop = prop.copy()
                    prop[0] = np.nan
            rep = f.step(t, arm.q, arm.dq, prop, True, h, t, None, out)
            mask = rep.active_mask
            for name in flags:
                flags[name] += bool(mask & ACTIVE_BITS[name])
            audit.check(k, out)
            arm.set_command(out)
            arm.step()
            robot_out_of_limits += int(
                np.any(arm.q < model.q_min - 1e-9) or np.any(arm.q > model.q_max + 1e-9)
            )
            if f.stop_latched and f.is_stopped:
                ok, _ = f.reset()
                resets += ok
        s = audit.summary()
        results[kind] = {
            'steps': steps,
            'audit': s,
            'robot_out_of_limits': robot_out_of_limits,
            'resets_after_injected_faults': resets,
            'cycles_flagged': flags,
        }
        total += audit.violations + robot_out_of_limits
    results['total_violations'] = total
    results['target_met'] = total == 0
    return results


def bench_batch(n_states: int, seed: int, threads: int | None) -> dict[str, Any]:
    """Batch throughput (states/s) vs a per-state loop, arm7 with 1 person."""
    model = RobotModel.from_config(RobotConfig())
    cfg = replace(SafetyConfig(), ssm=SsmConfig(require_human=False))
    rng = np.random.default_rng(seed)
    d = _random_batch(model, n_states, rng)
    bf = BatchSafetyFilter(model, cfg)
    bf.run(
        d['cs'][:64].copy(),
        d['q'][:64],
        d['dq'][:64],
        d['prop'][:64],
        None,
        d['human'][:64],
        d['n_h'][:64],
        n_threads=threads,
    )
    best = math.inf
    for _ in range(3):
        cs = d['cs'].copy()
        t0 = time.perf_counter()
        bf.run(cs, d['q'], d['dq'], d['prop'], None, d['human'], d['n_h'], n_threads=threads)
        best = min(best, time.perf_counter() - t0)
    f = SafetyFilter(model, cfg)
    out = np.zeros(model.n_joints)
    m = min(n_states, 5000)
    t0 = time.perf_counter()
    for i in range(m):
        f.set_command_state(d['cs'][i, 0], d['cs'][i, 1], d['cs'][i, 2], clear_latch=True)
        n_h = int(d['n_h'][i])
        hp = d['human'][i, :n_h] if n_h else None
        f.step(0, d['q'][i], d['dq'][i], d['prop'][i], True, hp, 0, None, out)
    per_state = (time.perf_counter() - t0) / m
    return {
        'robot': 'arm7, up to 2 person points',
        'states': n_states,
        'threads': int(threads or nb.get_num_threads()),
        'batch_states_per_s': n_states / best,
        'per_cycle_api_states_per_s': 1.0 / per_state,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rt-safe-rl bench safety``."""
    ap = argparse.ArgumentParser(prog='rt-safe-rl bench safety', description=__doc__.split('\n\n')[0])
    ap.add_argument('--joints', type=int, default=29, help='joints of the benchmark chain (default 29)')
    ap.add_argument('--points', type=int, default=10, help='monitored points for SSM (default 10)')
    ap.add_argument('--cycles', type=int, default=20000, help='timed per-cycle iterations (default 20000)')
    ap.add_argument(
        '--batch', type=int, default=20000, help='states for the batch throughput (default 20000)'
    )
    ap.add_argument('--threads', type=int, default=0, help='numba threads for the batch path (0 = default)')
    ap.add_argument(
        '--cases', type=int, default=100_000, help='randomized property cases (default 1e5; 0 = skip)'
    )
    ap.add_argument(
        '--closed-loop-steps',
        type=int,
        default=20000,
        help='closed-loop steps per proposer (default 20000; 0 = skip)',
    )
    ap.add_argument(
        '--monitor-s',
        type=float,
        default=10.0,
        help='seconds of the 2 kHz safety-monitor run (default 10; 0 = skip)',
    )
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--json', help='also write the JSON report to this file')
    args = ap.parse_args(argv)
    if args.joints < 1 or args.points < 1 or args.cycles < 100 or args.batch < 1 or args.cases < 0:
        print(
            'rt-safe-rl bench safety: error: --joints/--points >= 1, --cycles >= 100, --batch >= 1, '
            '--cases >= 0',
            file=sys.stderr,
        )
        return 2
    threads = args.threads or None
    report: dict[str, Any] = {
        'benchmark': 'safety',
        'machine': {
            'platform': platform.platform(),
            'python': platform.python_version(),
            'cpus': os.cpu_count(),
            'loadavg': list(os.getloadavg()),
        },
        'args': vars(args),
    }
    report['per_cycle'] = bench_per_cycle(args.joints, args.points, args.cycles, args.seed)
    report['batch'] = bench_batch(args.batch, args.seed, threads)
    if args.cases:
        report['properties'] = bench_properties(args.cases, args.seed, threads)
    if args.closed_loop_steps:
        report['closed_loop'] = bench_closed_loop(args.closed_loop_steps, args.seed)
    if args.monitor_s > 0:
        report['monitor'] = bench_monitor(args.monitor_s)
    report['machine']['loadavg_end'] = list(os.getloadavg())
    text = json.dumps(report, indent=2, default=_json_default)
    print(text)
    if args.json:
        Path(args.json).write_text(text + '\n')
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


if __name__ == '__main__':
    sys.exit(main())
