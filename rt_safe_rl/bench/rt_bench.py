"""``rt-safe-rl bench rt``: loop jitter, deadline misses and hand-off latency of the RT layer.

    rt-safe-rl bench rt [--rate-hz 1000] [--duration 10] [--stress N] [--json FILE]
                        [--config FILE] [--spin-us US] [--phases floor,executor,rclpy,...]

Each phase runs in its own fresh Python process (so one phase's mlockall / GC freeze / thread
priorities never leak into another), one after the other, while ``--stress N`` CPU burners (bounded
processes that stop by themselves) load the machine. The sequence of phases is repeated
``--rounds`` times (default 2), each phase measuring ``--duration / rounds`` seconds after
``--warmup`` unmeasured seconds, and the raw samples of the rounds are pooled: on a shared machine
whose load drifts, interleaving compares the phases under the same conditions. Phases:

* ``floor``: the machine's own floor: a bare Python SCHED_FIFO absolute-deadline sleep loop
  (``clock_nanosleep(TIMER_ABSTIME)``), pinned and mlocked like the control thread, no ROS.
* ``floor_c``: the same loop in C (compiled on the fly when a C compiler exists; else skipped).
* ``executor``: the project's :class:`~rt_safe_rl.rt.executor.RtExecutor` running a
  :class:`~rt_safe_rl.rt.executor.PeriodicTask` in the ``control`` group (as configured).
* ``rclpy``: rclpy's SingleThreadedExecutor with a steady-clock timer, stock settings.
* ``rclpy_fifo``: the same with the RT knobs on its thread (FIFO, pinned, mlockall, GC frozen).
* ``handoff``: a 'policy' task in ``control`` hands a record to 'safety' consumers through the
  in-process channel and through a DDS topic in the same process, each both in the producer's
  thread (``safety`` group, the shipped placement) and in another RT thread (``safety_monitor``).

Metrics (microseconds): ``period_dev_us`` = |interval between consecutive cycle starts - period|,
``lateness_us`` = cycle start - its deadline (rclpy: - the timer's expected call time), ``misses``
= cycles starting more than one period late. JSON goes to stdout (and ``--json FILE``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rt_safe_rl.bench.child import emit_json, run_as_script, run_child

# loops, statistics and phases live in rt_loops / rt_phases; re-exported here for their users
# (bench loop, doctor, demo, tests import them from this module)
from rt_safe_rl.bench.rt_loops import (
    _SAMPLES,
    CFloorLoop,
    _machine,
    _pct,
    foreign_rt_threads,
    loop_stats,
    loop_stats_segments,
)
from rt_safe_rl.bench.rt_phases import (
    _rt_cfg,
    phase_executor,
    phase_floor,
    phase_floor_c,
    phase_handoff,
    phase_rclpy,
    run_phase,
)
from rt_safe_rl.bench.stress import StressWorkers
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.doctor import verdict_line

__all__ = [
    'DEFAULT_PHASES',
    'PHASES',
    'CFloorLoop',
    'foreign_rt_threads',
    'loop_stats',
    'loop_stats_segments',
    'main',
    'phase_executor',
    'phase_floor',
    'phase_floor_c',
    'phase_handoff',
    'phase_rclpy',
]

PHASES = ('floor', 'floor_c', 'executor', 'rclpy', 'rclpy_fifo', 'handoff')
DEFAULT_PHASES = PHASES


def _child(name: str, a: argparse.Namespace, duration_s: float, samples: Path) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; returns its JSON (or an error record); raw samples
    go to `samples` (.npz)."""
    cmd = [
        sys.executable,
        '-m',
        'rt_safe_rl.bench.rt_bench',
        '--phase',
        name,
        '--rate-hz',
        str(a.rate_hz),
        '--duration',
        str(duration_s),
        '--warmup',
        str(a.warmup),
        '--samples',
        str(samples),
    ]
    if a.config:
        cmd += ['--config', a.config]
    if a.spin_us is not None:
        cmd += ['--spin-us', str(a.spin_us)]
    return run_child(cmd, name, duration_s + a.warmup + 60)


def _ratio(num: float, den: float) -> float:
    return round(num / den, 2) if den > 0 else float('inf')


def _targets(res: dict[str, Any]) -> dict[str, Any]:
    t: dict[str, Any] = {}
    ex, rc, fl = res.get('executor', {}), res.get('rclpy_timer', {}), res.get('floor', {})
    if 'period_dev_us' in ex and 'period_dev_us' in rc:
        r = _ratio(rc['period_dev_us']['p99'], ex['period_dev_us']['p99'])
        t['jitter_p99_rclpy_over_executor'] = {'value': r, 'target': '>= 5', 'pass': r >= 5}
    if 'misses_per_1e4' in ex:
        v = ex['misses_per_1e4']
        t['executor_misses_per_1e4'] = {'value': v, 'target': '<= 1', 'pass': v <= 1}
    if 'period_dev_us' in ex and 'period_dev_us' in fl:
        r = _ratio(ex['period_dev_us']['p99'], fl['period_dev_us']['p99'])
        t['jitter_p99_executor_over_floor'] = {'value': r, 'target': '<= 2', 'pass': r <= 2}
        r2 = _ratio(ex['lateness_us']['p99'], fl['lateness_us']['p99'])
        t['lateness_p99_executor_over_floor'] = {'value': r2, 'target': '<= 2', 'pass': r2 <= 2}
    ho = res.get('handoff', {})
    if 'channel_us' in ho and 'dds_us' in ho:
        r50 = _ratio(ho['dds_us']['p50'], ho['channel_us']['p50'])
        r99 = _ratio(ho['dds_us']['p99'], ho['channel_us']['p99'])
        t['handoff_p50_dds_over_channel'] = {'value': r50, 'target': '>= 10', 'pass': r50 >= 10}
        t['handoff_p99_dds_over_channel'] = {'value': r99, 'target': '>= 5', 'pass': r99 >= 5}
    return t


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='rt-safe-rl bench rt', description=__doc__.split('\n\n')[0])
    p.add_argument('--rate-hz', type=float, default=1000.0, help='loop rate (Hz), default 1000')
    p.add_argument('--duration', type=float, default=10.0, help='measured seconds per phase (default 10)')
    p.add_argument(
        '--warmup', type=float, default=1.0, help='unmeasured seconds before each phase (default 1)'
    )
    p.add_argument('--stress', type=int, default=0, help='CPU-burning worker processes during the run')
    p.add_argument('--json', default='', help='also write the JSON result to this file')
    p.add_argument('--config', default='', help='config file (default: the shipped config/default.yaml)')
    p.add_argument('--spin-us', type=int, default=None, help='override spin_us of the RT groups')
    p.add_argument('--phases', default=','.join(DEFAULT_PHASES), help=f'comma list of {",".join(PHASES)}')
    p.add_argument(
        '--rounds',
        type=int,
        default=2,
        help='run the phases this many times, interleaved, --duration/rounds each, and pool the samples '
        '(a shared machine drifts: interleaving compares the phases under the same conditions)',
    )
    p.add_argument('--phase', default='', help=argparse.SUPPRESS)  # internal: run one phase, print JSON
    p.add_argument('--samples', default='', help=argparse.SUPPRESS)  # internal: raw samples (.npz)
    return p


_LOOP_KEYS = (
    'period_dev_us',
    'lateness_us',
    'misses',
    'cycles',
    'skipped_periods',
    'misses_per_1e4',
    'over_1ms_late',
)


def _pool(name: str, results: list[dict[str, Any]], files: list[Path], period_ns: int) -> dict[str, Any]:
    """Merge the per-round results of one phase: statistics from the pooled raw samples, the rest
    (grants, reports) from the last round, plus a short per-round summary."""
    ok = [(r, f) for r, f in zip(results, files, strict=True) if 'error' not in r and 'skipped' not in r]
    if not ok:
        return results[-1]
    merged = dict(ok[-1][0])
    data = [dict(np.load(f)) for _, f in ok]
    if name == 'handoff':
        for key, out in (
            ('ch_same', 'channel_us'),
            ('dds_same', 'dds_us'),
            ('ch_x', 'channel_xthread_us'),
            ('dds_x', 'dds_xthread_us'),
        ):
            x = np.concatenate([d[key] for d in data]) / 1e3
            merged[out] = {**_pct(x), 'count': int(x.size)}
        merged['per_round'] = [
            {'channel_p50': r['channel_us']['p50'], 'dds_p50': r['dds_us']['p50']} for r, _ in ok
        ]
        return merged
    merged.update(loop_stats_segments([(d['dl'], d['st']) for d in data], period_ns))
    merged['per_round'] = [
        {
            'period_dev_p99': r['period_dev_us']['p99'],
            'lateness_p99': r['lateness_us']['p99'],
            'misses': r['misses'],
            'cycles': r['cycles'],
        }
        for r, _ in ok
    ]
    return merged


def _check_args(a: argparse.Namespace) -> None:
    """Refuse out-of-range flags and an unreadable ``--config`` (ConfigError) before anything starts."""
    if not 1.0 <= a.rate_hz <= 20000.0:
        raise ConfigError(f'--rate-hz must be in [1, 20000], got {a.rate_hz}')
    if not 0.1 <= a.duration <= 3600.0:
        raise ConfigError(f'--duration must be in [0.1, 3600] s, got {a.duration}')
    if not 0.0 <= a.warmup <= 60.0:
        raise ConfigError(f'--warmup must be in [0, 60] s, got {a.warmup}')
    if not 0 <= a.stress <= 64:
        raise ConfigError(f'--stress must be in [0, 64], got {a.stress}')
    if a.config and not Path(a.config).is_file():
        raise ConfigError(f'--config: file not found: {a.config}')
    _rt_cfg(a.config or None, a.spin_us)  # validate the config before starting anything
    if not 1 <= a.rounds <= 20:
        raise ConfigError(f'--rounds must be in [1, 20], got {a.rounds}')


def _rt_granted(ex: Any) -> dict[str, Any]:
    """The report's ``rt`` block: what the executor phase's control thread and process were
    granted (policy, priority, CPUs, mlock, GIL switch interval in s) and its warnings."""
    thr = ex.get('report', {}).get('threads', {}).get('control', {}) if isinstance(ex, dict) else {}
    granted = thr.get('granted') or {}
    proc = ex.get('report', {}).get('process', {}) if isinstance(ex, dict) else {}
    return {
        'policy': granted.get('policy'),
        'priority': granted.get('priority'),
        'affinity': granted.get('cpus'),
        'mlock': (proc.get('mlock') or {}).get('granted'),
        'gil_switch_interval_s': proc.get('gil_switch_interval_s'),
        'warnings': ex.get('report', {}).get('warnings', []) if isinstance(ex, dict) else [],
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rt-safe-rl bench rt``; prints one JSON document. Returns the exit code."""
    a = _parser().parse_args(argv)
    _check_args(a)
    if a.phase:
        out = run_phase(a.phase, a)
        if a.samples:
            np.savez(a.samples, **_SAMPLES)  # type: ignore[arg-type]
        print(json.dumps(out), flush=True)
        return 0
    phases = [x.strip() for x in a.phases.split(',') if x.strip()]
    unknown = [x for x in phases if x not in PHASES]
    if unknown or not phases:
        raise ConfigError(f'--phases: unknown {unknown}; allowed: {",".join(PHASES)}')
    total_s = len(phases) * (a.duration + a.rounds * (a.warmup + 5)) + 10
    stress = StressWorkers(a.stress, duty=1.0, max_s=total_s)
    res: dict[str, Any] = {
        'rate_hz': a.rate_hz,
        'duration_s': a.duration,
        'warmup_s': a.warmup,
        'rounds': a.rounds,
        'stress': a.stress,
        'machine': _machine(),
    }
    key = {
        'executor': 'executor',
        'rclpy': 'rclpy_timer',
        'rclpy_fifo': 'rclpy_timer_fifo',
        'floor': 'floor',
        'floor_c': 'floor_c',
        'handoff': 'handoff',
    }
    res['machine']['foreign_rt_threads_before'] = foreign_rt_threads()
    per_round = a.duration / a.rounds
    period_ns = round(1e9 / a.rate_hz)
    runs: dict[str, list[dict[str, Any]]] = {ph: [] for ph in phases}
    files: dict[str, list[Path]] = {ph: [] for ph in phases}
    stress.start()
    try:
        with tempfile.TemporaryDirectory(prefix='rt_bench_') as tmp:
            time.sleep(0.5 if a.stress else 0.0)
            for rnd in range(a.rounds):
                for ph in phases:
                    print(
                        f'[bench rt] round {rnd + 1}/{a.rounds} phase {ph} ({a.warmup:g}+{per_round:g} s)...',
                        file=sys.stderr,
                        flush=True,
                    )
                    f = Path(tmp) / f'{ph}_{rnd}.npz'
                    runs[ph].append(_child(ph, a, per_round, f))
                    files[ph].append(f)
            for ph in phases:
                res[key[ph]] = _pool(ph, runs[ph], files[ph], period_ns)
    finally:
        stress.stop()
    res['machine']['foreign_rt_threads_after'] = foreign_rt_threads()
    if res['machine']['foreign_rt_threads_before'] or res['machine']['foreign_rt_threads_after']:
        print(
            '[bench rt] warning: other processes run RT threads on this machine '
            '(machine.foreign_rt_threads_*); they compete with the measured threads',
            file=sys.stderr,
        )
    res['rt'] = _rt_granted(res.get('executor', {}))
    res['targets'] = _targets(res)
    fc = res.get('floor_c')
    given = {'c': {**fc, 'rate_hz': a.rate_hz}} if isinstance(fc, dict) and 'lateness_us' in fc else None
    res['machine']['verdict'] = verdict_line(given)
    print(f'[bench rt] {res["machine"]["verdict"]}', file=sys.stderr)
    emit_json(res, a.json)
    failed = [k for k, v in res.items() if isinstance(v, dict) and 'error' in v]
    return 1 if failed else 0


if __name__ == '__main__':
    run_as_script(main, 'rt-safe-rl bench rt')
