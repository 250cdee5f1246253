"""``rt-safe-rl bench loop``: the assembled 1 kHz loop against the machine's floor, in one run.

    rt-safe-rl bench loop [--duration S] [--rounds R] [--stress N] [--json FILE] [--external]
                          [--config FILE] [--set KEY=VALUE ...] [--no-naive]

Interleaved rounds (``--rounds``, default 2, each ``--duration / rounds`` measured seconds), each
phase in a fresh process, while ``--stress N`` bounded CPU burners load the machine:

1. ``floor_c``: the C SCHED_FIFO absolute-deadline sleep loop
   (:class:`~rt_safe_rl.bench.rt_bench.CFloorLoop`) on the control group's CPU and priority: what
   the machine allows.
2. ``loop``: the composed loop exactly as ``make demo`` runs it (:func:`rt_safe_rl.demo.run_demo`:
   simulated arm, human, operator, policy, safety filter, monitor; the direct
   :class:`~rt_safe_rl.rt.cycle.ControlCycle`). With ``--external`` the simulated robot is a
   separate process on DDS (``joint_states`` in, commands out) and the chain starts from each
   state arriving; the figures then come from the robot process.
3. ``naive``: the plain-rclpy pipeline of :mod:`rt_safe_rl.bench.naive` (separate nodes over DDS,
   default executor, eager torch), driven by states of the same simulated arm published at the
   control rate, as the simulator drives a robot stack (the pipeline waits idle for each state).
4. ``naive_lockstep``: the same pipeline in lockstep (each state published once the previous
   command came back: never idle, never more than one state in flight; its best case). Reported
   beside it, no target (on the idle 2-vCPU VM its e2e p99 is about half the paced one's).

Reported: loop rate, misses per 10^4 cycles (a miss = a cycle starting more than one period
late; one stall is one miss), e2e state -> command p50/p99/max (us, pooled over rounds), CPU per
cycle per stage and the process's CPU share per thread, the machine and a verdict on it; beside
the CPU target, the C floor loop's own CPU per period (``floor_c.cpu_per_period_us``: what one
1 kHz sleep and wake-up costs this machine, doing nothing else). JSON (stdout and ``--json``)
contract: ``{"floor_c": {"misses_per_1e4", "cpu_per_period_us"}, "loop": {"rate_hz",
"misses_per_1e4", "e2e_us": {"p50", "p99"}, "cpu_per_cycle_us"}, "naive": {"e2e_us": {"p99"}},
"naive_lockstep": {...}, "ratios": {"loop_misses_over_floor", "e2e_p99_naive_over_loop",
"e2e_p99_naive_lockstep_over_loop"}, "targets": {...}}`` (the e2e target is on the paced ``naive``).
Figures are only meaningful against the floor of the same run (the machine is shared).
Exit 0 (targets are reported, not enforced), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl import paths
from rt_safe_rl.bench.child import run_as_script, run_child
from rt_safe_rl.bench.naive import NaiveRunner
from rt_safe_rl.bench.rt_bench import CFloorLoop, _machine, loop_stats, loop_stats_segments
from rt_safe_rl.bench.stress import StressWorkers
from rt_safe_rl.bringup import compose
from rt_safe_rl.config import deep_merge, load_config, parse_override
from rt_safe_rl.core.errors import ConfigError, RtSafeRlError
from rt_safe_rl.core.stats import percentiles
from rt_safe_rl.sim.operator import GoalGenerator

F64 = npt.NDArray[np.float64]
PHASES = ('floor_c', 'loop', 'naive', 'naive_lockstep')
NAIVE_PHASES = ('naive', 'naive_lockstep')


def _pct_us(x_us: F64) -> dict[str, float]:
    if x_us.size == 0:
        return {'p50': math.nan, 'p99': math.nan, 'max': math.nan, 'count': 0}
    p = percentiles(x_us)
    return {
        'p50': round(float(p['p50']), 1),
        'p99': round(float(p['p99']), 1),
        'max': round(float(p['max']), 1),
        'count': int(x_us.size),
    }


def _config(a: argparse.Namespace) -> Any:
    overrides: dict[str, Any] = {'demo': {'live_status': False}}
    for text in a.set or []:
        overrides = deep_merge(overrides, parse_override(text))
    return load_config(a.config or None, overrides)


# ------------------------------------------------------------------------------------------------
# phases run in child processes
# ------------------------------------------------------------------------------------------------
def phase_loop(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The demo's composed loop for ``a.duration`` s (in-process robot, direct cycle)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    from rt_safe_rl.demo import run_demo

    cfg = _config(a)
    ctx = Context()
    rclpy.init(args=['loop_bench'], context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    try:
        res = run_demo(cfg, duration_s=a.duration, context=ctx, floor_s=0.0)
    finally:
        if ctx.ok():
            rclpy.shutdown(context=ctx)
    s = res.summary
    lat_us = res.e2e_ns[:, 1] / 1e3 if res.e2e_ns.size else np.zeros(0)
    np.save(out, lat_us)
    return {
        'rate_hz': s['loop_rate_hz'],
        'runs': s['cycles_measured'],  # of the measured window, like the rate
        'misses': s['deadline_misses'],
        'caught_up': s['cycle'].get('caught_up'),
        'skipped': s['cycle'].get('skipped'),
        'duration_s': s['duration_s'],
        'cpu_per_cycle_us': s['cpu_per_cycle_us'],
        'cpu_percent_of_one_cpu': s['cpu_percent_of_one_cpu'],
        'time_to_first_command_s': s['time_to_first_command_s'],
        'command_limit_violations': s['command_limit_violations'],
        'node_errors': s['node_errors'],
    }


def phase_robot(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The simulated robot alone (DDS mode) for ``a.duration`` s: the external robot process."""
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    cfg = _config(a)
    ctx = Context()
    rclpy.init(args=['loop_bench_robot'], context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    comp = compose(cfg, ['sim_robot'], context=ctx, direct=False)
    try:
        comp.start()
        robot = comp.nodes['sim_robot']
        comp.executor.spin(a.duration)
        st = robot.stats()
        task = st.get('task', {})
        buf = np.zeros((robot.e2e_ring.capacity, 2))
        k = robot.e2e_ring.drain(buf)
        np.save(out, buf[:k, 1] / 1e3)
    finally:
        comp.destroy()
        if ctx.ok():
            rclpy.shutdown(context=ctx)
    return {
        'rate_hz': round(task.get('runs', 0) / a.duration, 1),
        'runs': task.get('runs'),
        'misses': task.get('misses'),
        'skipped': task.get('skipped'),
        'duration_s': a.duration,
        'commands_rx': st.get('commands_rx'),
        'command_limit_violations': st.get('audit', {}).get('velocity_violations', 0)
        + st.get('audit', {}).get('position_violations', 0)
        + st.get('audit', {}).get('acceleration_violations', 0),
    }


def phase_external(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Chain (policy, safety, human, operator, monitor) composed here; the robot in a child
    process over DDS (its figures are the loop's: it measures state publish -> command)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    cfg = _config(a)
    ctx = Context()
    rclpy.init(args=['loop_bench_chain'], context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    keys = ['sim_human', 'sim_operator', 'safety', 'policy'] + (['monitor'] if cfg.demo.with_monitor else [])
    comp = compose(cfg, keys, context=ctx, direct=False)
    th = threading.Thread(target=comp.executor.spin, daemon=True)
    try:
        comp.start()
        th.start()
        res = _child('robot', a, a.duration, out)
    finally:
        comp.executor.shutdown()
        th.join(10.0)
        comp.destroy()
        if ctx.ok():
            rclpy.shutdown(context=ctx)
    res['external'] = True
    return res


def _sim_states(cfg: Any, n: int) -> tuple[F64, F64]:
    """`n` states of the simulated arm reaching for the operator's goals (rad, rad/s)."""
    from rt_safe_rl.core.robot_model import RobotModel
    from rt_safe_rl.sim.arm import ArmLimits, ArmSim

    model = RobotModel.from_config(cfg.robot, cfg.base_dir)
    lim = ArmLimits.from_model(model, cfg.sim.robot)
    q0 = lim.initial_q(cfg.sim.robot)
    oc = cfg.sim.operator
    goals = GoalGenerator(lim.q_min, lim.q_max, q0, oc.goal_margin_rad, oc.goal_span, oc.seed)
    arm = ArmSim(lim, cfg.control.period_ns * 1e-9, q0)
    q, dq = np.zeros((n, lim.n_joints)), np.zeros((n, lim.n_joints))
    goal_every = max(1, round(oc.goal_period_s * cfg.control.rate_hz))
    cmd = q0.copy()
    goal = q0.copy()
    for i in range(n):
        if i % goal_every == 0:
            goal = goals.sample()
        cmd += np.clip(goal - cmd, -lim.v_max * 0.2e-3, lim.v_max * 0.2e-3)
        arm.set_command(cmd)
        arm.step()
        q[i], dq[i] = arm.q, arm.dq
    return q, dq


def phase_naive(a: argparse.Namespace, out: Path, lockstep: bool = False) -> dict[str, Any]:
    """The naive plain-rclpy pipeline on states of the simulated arm, published at the control
    rate as the simulator drives a robot stack (``lockstep``: each state after the previous
    command came back, never idle: its best case)."""
    from rt_safe_rl.core.robot_model import RobotModel

    cfg = _config(a)
    model = RobotModel.from_config(cfg.robot, cfg.base_dir)
    n = max(100, int(a.duration * cfg.control.rate_hz))
    q, dq = _sim_states(cfg, n)
    runner = NaiveRunner(
        str(paths.resolve(cfg.policy.path, cfg.base_dir)),
        list(model.joint_names),
        list(model.q_min),
        list(model.q_max),
        list(model.home()),
        decimation=max(1, round(cfg.control.rate_hz / cfg.policy.rate_hz)),
    )
    res = runner.run(q, dq, max_messages=n, rate_hz=0.0 if lockstep else cfg.control.rate_hz)
    samples = np.asarray(res.pop('_samples'), dtype=np.float64)
    np.save(out, samples)
    return {
        'rate_hz': round(float(res['throughput_msgs_per_s']), 1),  # answered states / replay time
        'paced_skipped': res.get('paced_skipped', 0),
        'messages': res['messages'],
        'lost': res['lost'],
        'mode': res['mode'],
        'description': res['description'],
    }


def phase_naive_lockstep(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The naive pipeline in lockstep (:func:`phase_naive`)."""
    return phase_naive(a, out, lockstep=True)


def phase_floor_c(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The C floor loop for ``a.duration`` s on the control group's CPU and priority."""
    cfg = _config(a)
    g = cfg.rt.groups['control']
    try:
        floor = CFloorLoop(
            cfg.control.period_ns,
            a.duration,
            g.priority if g.is_rt else 1,
            g.real_cpus[0] if g.real_cpus else -1,
        )
    except RtSafeRlError as err:
        return {'skipped': str(err)}
    dl, st, fifo = floor.samples()
    np.save(out, np.stack([dl, st]).astype(np.int64))
    res = loop_stats(dl, st, cfg.control.period_ns)
    res['fifo'] = fifo
    res['cpu_per_period_us'] = floor.cpu_per_period_us
    return res


_PHASE_FNS = {
    'floor_c': phase_floor_c,
    'loop': phase_loop,
    'external': phase_external,
    'robot': phase_robot,
    'naive': phase_naive,
    'naive_lockstep': phase_naive_lockstep,
}


def _child(name: str, a: argparse.Namespace, duration_s: float, out: Path) -> dict[str, Any]:
    """Run phase `name` in a fresh interpreter; its JSON result (or an error record)."""
    cmd = [
        sys.executable,
        '-m',
        'rt_safe_rl.bench.loop_bench',
        '--phase',
        name,
        '--duration',
        str(duration_s),
    ]
    cmd += ['--out', str(out)]
    if a.config:
        cmd += ['--config', a.config]
    for s in a.set or []:
        cmd += ['--set', s]
    return run_child(cmd, name, duration_s + 240.0)


# ------------------------------------------------------------------------------------------------
# pooling, ratios, targets
# ------------------------------------------------------------------------------------------------
def _pool_floor(rounds: list[dict[str, Any]], files: list[Path], period_ns: int) -> dict[str, Any]:
    segs = []
    for r, f in zip(rounds, files, strict=True):
        if 'error' in r or 'skipped' in r or not f.exists():
            continue
        d = np.load(f)
        segs.append((d[0].astype(np.float64), d[1].astype(np.float64)))
    if not segs:
        return rounds[-1] if rounds else {'skipped': 'not run'}
    res = loop_stats_segments(segs, period_ns)
    res['fifo'] = all(r.get('fifo', False) for r in rounds if 'fifo' in r)
    cpu = [float(r['cpu_per_period_us']) for r in rounds if r.get('cpu_per_period_us') is not None]
    # what one 1 kHz sleep + wake-up costs here (C, no work): the machine's share of a loop's CPU
    res['cpu_per_period_us'] = round(sum(cpu) / len(cpu), 2) if cpu else None
    res['rounds'] = len(segs)
    return res


def _pool_e2e(rounds: list[dict[str, Any]], files: list[Path]) -> tuple[list[dict[str, Any]], F64]:
    ok = [(r, f) for r, f in zip(rounds, files, strict=True) if 'error' not in r and f.exists()]
    lat = np.concatenate([np.load(f) for _, f in ok]) if ok else np.zeros(0)
    return [r for r, _ in ok], lat


def _pool_loop(rounds: list[dict[str, Any]], files: list[Path]) -> dict[str, Any]:
    ok, lat = _pool_e2e(rounds, files)
    if not ok:
        return rounds[-1] if rounds else {'skipped': 'not run'}
    runs = sum(int(r.get('runs') or 0) for r in ok)
    misses = sum(int(r.get('misses') or 0) for r in ok)
    dur = sum(float(r.get('duration_s') or 0.0) for r in ok)
    # each round's own rate (periods read inside its window), weighted by its window: the runs
    # also count the start-up backlog and the shutdown's cycles (10,104 runs in 2 x 5 s: "1010 Hz")
    periods = sum(float(r.get('rate_hz') or 0.0) * float(r.get('duration_s') or 0.0) for r in ok)
    last = ok[-1]
    return {
        'rate_hz': round(periods / dur, 1) if dur > 0 else math.nan,
        'misses_per_1e4': round(misses * 1e4 / runs, 2) if runs else math.nan,
        'misses': misses,
        'cycles': runs,
        'e2e_us': _pct_us(lat),
        'cpu_per_cycle_us': last.get('cpu_per_cycle_us', {}),
        'cpu_percent_of_one_cpu': last.get('cpu_percent_of_one_cpu', {}),
        'time_to_first_command_s': last.get('time_to_first_command_s'),
        'command_limit_violations': sum(int(r.get('command_limit_violations') or 0) for r in ok),
        'external': bool(last.get('external', False)),
        'per_round': [
            {k: r.get(k) for k in ('rate_hz', 'misses', 'runs', 'caught_up', 'skipped')} for r in ok
        ],
    }


def _pool_naive(rounds: list[dict[str, Any]], files: list[Path]) -> dict[str, Any]:
    ok, lat = _pool_e2e(rounds, files)
    if not ok:
        return rounds[-1] if rounds else {'skipped': 'not run'}
    return {
        'e2e_us': _pct_us(lat),
        'rate_hz': round(float(np.mean([r['rate_hz'] for r in ok])), 1),
        'lost': sum(int(r.get('lost', 0)) for r in ok),
        'paced_skipped': sum(int(r.get('paced_skipped', 0)) for r in ok),
        'mode': ok[-1].get('mode', ''),
        'description': ok[-1].get('description', ''),
    }


def _ratio(num: Any, den: Any) -> float | None:
    try:
        n, d = float(num), float(den)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(n) and math.isfinite(d)):
        return None
    if d == 0.0:
        return 1.0 if n == 0.0 else None
    return round(n / d, 2)


def _targets(res: dict[str, Any], nominal_hz: float) -> dict[str, Any]:
    fl, lp = res['floor_c'], res['loop']
    t: dict[str, Any] = {}
    f1e4, l1e4 = fl.get('misses_per_1e4'), lp.get('misses_per_1e4')
    if f1e4 is not None and l1e4 is not None:
        lim = 2.0 * float(f1e4) + 1.0
        t['loop_misses_per_1e4'] = {
            'value': l1e4,
            'target': f'<= 2 x floor + 1 = {lim:.2f}',
            'pass': l1e4 <= lim,
        }
    if 'rate_hz' in lp:
        floor_ok = f1e4 is not None and float(f1e4) <= 10.0
        t['loop_rate_hz'] = {
            'value': lp['rate_hz'],
            'target': f'>= {0.999 * nominal_hz:.1f} (where the floor holds)',
            'pass': bool(lp['rate_hz'] >= 0.999 * nominal_hz) if floor_ok else None,
        }
    r = res['ratios'].get('e2e_p99_naive_over_loop')
    if r is not None:
        t['e2e_p99_naive_over_loop'] = {'value': r, 'target': '>= 20', 'pass': r >= 20}
    cpu = (lp.get('cpu_percent_of_one_cpu') or {}).get('_process')
    if cpu is not None:
        t['process_cpu_percent'] = {
            'value': cpu,
            'target': '< 25',
            'pass': cpu < 25,
            'machine_floor_cpu_per_period_us': fl.get('cpu_per_period_us'),
        }
    return t


def _verdict(floor: dict[str, Any]) -> str:
    m = floor.get('misses_per_1e4')
    if m is None:
        return 'unknown (no C floor: ' + str(floor.get('skipped') or floor.get('error')) + ')'
    if not floor.get('fifo', False):
        return 'no SCHED_FIFO: the floor itself is not real-time'
    if m <= 1.0:
        return f'good: the machine holds 1 kHz ({m} misses per 1e4 at the floor)'
    if m <= 10.0:
        return f'noisy: the floor misses {m} per 1e4 (shared / idle-halting vCPUs)'
    return f'bad: the floor misses {m} per 1e4; no loop can do better here'


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='rt-safe-rl bench loop', description=(__doc__ or '').split('\n\n')[0])
    p.add_argument('--duration', type=float, default=10.0, help='measured seconds per phase over all rounds')
    p.add_argument('--rounds', type=int, default=2, help='interleaved rounds (default 2)')
    p.add_argument('--stress', type=int, default=0, help='CPU-burning worker processes during the run')
    p.add_argument('--json', default='', help='also write the JSON result to this file')
    p.add_argument('--config', default='', help='config file (default: the shipped config/default.yaml)')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='config override')
    p.add_argument('--external', action='store_true', help='the robot in a separate process over DDS')
    p.add_argument('--no-naive', action='store_true', help='skip the naive pipeline (both modes)')
    p.add_argument('--phase', default='', help=argparse.SUPPRESS)
    p.add_argument('--out', default='', help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; prints one JSON document. Returns the exit code."""
    a = _parser().parse_args(argv)
    if not 0.5 <= a.duration <= 3600.0:
        raise ConfigError(f'--duration must be in [0.5, 3600] s, got {a.duration}')
    if not 1 <= a.rounds <= 100:
        raise ConfigError(f'--rounds must be in 1..100, got {a.rounds}')
    if not 0 <= a.stress <= 64:
        raise ConfigError(f'--stress must be in 0..64, got {a.stress}')
    if a.phase:
        if a.phase not in _PHASE_FNS:
            raise ConfigError(f'unknown phase {a.phase!r}')
        print(json.dumps(_PHASE_FNS[a.phase](a, Path(a.out))), flush=True)
        return 0
    cfg = _config(a)  # validates --config / --set before anything runs
    per_round = a.duration / a.rounds
    phases = [p for p in PHASES if not (p in NAIVE_PHASES and a.no_naive)]
    raw: dict[str, list[dict[str, Any]]] = {p: [] for p in phases}
    files: dict[str, list[Path]] = {p: [] for p in phases}
    t0 = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix='rt_loop_bench_') as tmp,
        StressWorkers(a.stress, max_s=3600.0) as stress,
    ):
        for r in range(a.rounds):
            for p in phases:
                f = Path(tmp) / f'{p}_{r}.npy'
                name = 'external' if (p == 'loop' and a.external) else p
                print(
                    f'bench loop: round {r + 1}/{a.rounds}: {name} ({per_round:g} s)',
                    file=sys.stderr,
                    flush=True,
                )
                raw[p].append(_child(name, a, per_round, f))
                files[p].append(f)
        stress_summary = stress.summary()
        res: dict[str, Any] = {
            'floor_c': _pool_floor(raw['floor_c'], files['floor_c'], cfg.control.period_ns),
            'loop': _pool_loop(raw['loop'], files['loop']),
        }
        for p in NAIVE_PHASES:
            res[p] = _pool_naive(raw[p], files[p]) if p in raw else {'skipped': '--no-naive'}
    res['ratios'] = {
        'loop_misses_over_floor': _ratio(
            res['loop'].get('misses_per_1e4'), res['floor_c'].get('misses_per_1e4')
        ),
        **{
            f'e2e_p99_{p}_over_loop': _ratio(
                (res[p].get('e2e_us') or {}).get('p99'), (res['loop'].get('e2e_us') or {}).get('p99')
            )
            for p in NAIVE_PHASES
        },
    }
    res['targets'] = _targets(res, cfg.control.rate_hz)
    res['machine'] = {**_machine(), 'verdict': _verdict(res['floor_c'])}
    res['run'] = {
        'duration_s': a.duration,
        'rounds': a.rounds,
        'stress': stress_summary,
        'external': a.external,
        'wall_s': round(time.monotonic() - t0, 1),
        'errors': {
            p: [r['error'] for r in rs if 'error' in r]
            for p, rs in raw.items()
            if any('error' in r for r in rs)
        },
    }
    from rt_safe_rl.demo import jsonable  # (imports rclpy: only once the phases have run)

    text = json.dumps(jsonable(res))
    if a.json:
        Path(a.json).write_text(json.dumps(jsonable(res), indent=2) + '\n')
    print(text)
    return 0


if __name__ == '__main__':
    run_as_script(main, 'rt-safe-rl bench loop')
