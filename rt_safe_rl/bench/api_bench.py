"""``rt-safe-rl bench api``: the Python API's cost over calling the core directly, same run.

    rt-safe-rl bench api [--iterations N] [--rounds R] [--rate-hz HZ] [--profile P]
                         [--backend B] [--memory] [--json FILE]

Three modes, interleaved in ``--rounds`` rounds so a drifting shared machine affects them alike,
each call paced at ``--rate-hz`` (a control loop, not a tight loop):

* ``direct``: ``PolicyRuntime.control_step`` + ``SafetyFilter.step`` on preallocated arrays, in the
  caller's thread made RT by ``with system:`` (the same objects the API uses);
* ``sync``: ``system.execute_rt_inference_sync(state)`` in that same thread;
* ``async``: ``await system.execute_rt_inference(state)`` from an asyncio loop made RT by
  ``async with system:`` (``async_mode='inline'``, the default);
* ``async_worker``: the same with ``async_mode='worker'`` (a dedicated RT thread runs the cycle;
  the loop thread stays SCHED_OTHER): reported, no target.

Latency per call (us, from the call to its return) as p50/p90/p99/p999/max. ``overhead_us``:
per call, its wall time minus the core time measured inside the same call (paired, so the
machine's noise cancels), as percentiles; ``percentile_diff_vs_direct_us``: API percentile -
direct percentile (independent samples: noisy on a shared machine). Targets on ``overhead_us``
p99: async <= 30 us, sync <= 5 us.
``floor_us``: the machine's floor beside them, in the same run and thread: a reference block of
plain Python + two small numpy copies, calibrated to take as long as the sync overhead's median
in a tight loop, timed like the sync calls and interleaved with them period by period (the sync
calls then come every other period). Its p99 is what this machine adds to that much Python woken
once per period (on the 2-vCPU VM a 1 us block has p99 2-9 us); a sync overhead p99 well above
``floor_us.p99`` is the API's own tail. Calibrated on the sync overhead only: for the async modes it
is a smaller-work reference.
``--memory`` also measures the resident memory (VmRSS, VmHWM) of a development, an edge and a
production system, each built in a fresh interpreter and measured inside ``with system:`` after
one call (so mlockall, where the profile asks for it, has happened). JSON on stdout (and
``--json FILE``); the doctor's verdict line on stderr and in ``machine.verdict``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np

from rt_safe_rl.api import create_system
from rt_safe_rl.bench.child import emit_json
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.stats import percentile, percentiles
from rt_safe_rl.doctor import verdict_line
from rt_safe_rl.rt.sched import AbsSleeper

FAR_HUMAN = np.array([[3.0, 3.0, 0.5]])
TARGETS_US = {'async': 30.0, 'sync': 5.0}


def _pct(x: list[int]) -> dict[str, float]:
    p = percentiles(np.asarray(x, dtype=np.float64) / 1e3)
    return {k: round(float(p[k]), 2) for k in ('p50', 'p90', 'p99', 'p999', 'max')} | {'count': len(x)}


def _reference_block(reps: int, a: np.ndarray, b: np.ndarray) -> int:
    """The floor's reference work: `reps` plain-Python additions and two (n,) numpy copies (the
    kind of work the API adds around the core). Returns a checksum (keeps it from being idle)."""
    x = 0
    for i in range(reps):
        x += i
    np.copyto(a, b)
    return x + len(b.copy())


def _calibrate_reference(system: Any, a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    """(reps, target ns): the sync overhead's median over 300 back-to-back calls, and the number of
    reference repetitions whose back-to-back median matches it (doubling, then linear)."""
    s = system.initial_state()
    s.human_points = FAR_HUMAN
    mono, call = time.monotonic_ns, system.execute_rt_inference_sync
    over = []
    for _ in range(300):
        t0 = mono()
        _a, m = call(s)
        over.append(mono() - t0 - (m._t[4] - m._t[2]))
    target = percentile(over, 50)

    def med(reps: int) -> float:
        ts = []
        for _ in range(200):
            t0 = mono()
            _reference_block(reps, a, b)
            ts.append(mono() - t0)
        return percentile(ts, 50)

    reps, t = 1, med(1)
    while t < target and reps < 100_000:
        reps *= 2
        t = med(reps)
    return max(1, round(reps * target / max(t, 1.0))), target


def _direct_and_sync(
    system: Any, n: int, period_ns: int, ref: tuple[int, np.ndarray, np.ndarray], out: dict[str, list[int]]
) -> None:
    """A block of `n` direct core calls, then `n` sync API calls interleaved period by period with
    `n` reference blocks (the floor: ``ref`` = (reps, a, b) of :func:`_reference_block`), one per
    period, this thread. Appends to ``out['direct' | 'sync' | 'sync_overhead' | 'floor']`` [ns]."""
    s = system.initial_state()
    s.human_points = FAR_HUMAN
    q, dq, inputs = np.asarray(s.q, np.float64), np.asarray(s.dq, np.float64), s.inputs
    rt, filt = system.runtime, system.safety._filter
    target, cmd = np.zeros(system.n_joints), np.zeros(system.n_joints)
    sleeper, mono = AbsSleeper(), time.monotonic_ns
    pc = mono  # the clock of the metadata's stage stamps
    call = system.execute_rt_inference_sync
    reps, ref_a, ref_b = ref
    out_d, out_s, over_s, floor = out['direct'], out['sync'], out['sync_overhead'], out['floor']
    dl = mono() + period_ns
    for i in range(3 * n):
        sleeper.sleep_until(dl)
        dl += period_ns
        if i < n:
            t0 = pc()
            now = mono()
            valid = rt.control_step(now, q, dq, inputs, target)
            filt.step(now, q, dq, target, valid, FAR_HUMAN, now, None, cmd, state_stamp_ns=now)
            action = cmd.copy()
            out_d.append(pc() - t0)
        elif (i - n) % 2:  # the floor, at the same moments as the sync calls (every other period)
            t0 = pc()
            _reference_block(reps, ref_a, ref_b)
            floor.append(pc() - t0)
        else:
            t0 = pc()
            action, m = call(s)
            wall = pc() - t0
            out_s.append(wall)
            over_s.append(wall - (m._t[4] - m._t[2]))  # paired: this call's wall time minus its core time
    del action


async def _async_calls(system: Any, n: int, period_ns: int, out: list[int], over: list[int]) -> None:
    s = system.initial_state()
    s.human_points = FAR_HUMAN
    pc = mono = time.monotonic_ns
    call = system.execute_rt_inference
    async with system:
        dl = mono() + period_ns
        for _ in range(n):
            rem = dl - mono()
            if rem > 0:
                await asyncio.sleep(rem / 1e9)
            dl = max(dl + period_ns, mono())
            t0 = pc()
            _a, m = await call(s)
            wall = pc() - t0
            out.append(wall)
            over.append(wall - (m._t[4] - m._t[2]))


def _memory(profile: str, backend: str) -> dict[str, Any]:
    code = (
        'import json; from rt_safe_rl.api import create_system; '
        f's = create_system(profile={profile!r}, overrides={{"policy": {{"backend": {backend!r}}}}}, '
        'log=lambda m: None); st = s.initial_state()\n'
        'with s:\n    s.execute_rt_inference_sync(st); print(json.dumps(s.info()["memory"]))'
    )
    proc = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, timeout=300, check=False
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
    if proc.returncode != 0 or not lines:
        return {'error': ' | '.join((proc.stderr or '').strip().splitlines()[-2:])}
    res: dict[str, Any] = json.loads(lines[-1])
    return {k: round(v, 1) for k, v in res.items()}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='rt-safe-rl bench api', description=(__doc__ or '').split('\n\n')[0])
    p.add_argument('--iterations', type=int, default=1500, help='calls per mode (default 1500)')
    p.add_argument('--rounds', type=int, default=3, help='interleaved rounds (default 3)')
    p.add_argument('--rate-hz', type=float, default=1000.0, help='call rate (default 1000)')
    p.add_argument(
        '--profile', default='production', help='deployment profile of the system (default production)'
    )
    p.add_argument('--backend', default='', help="policy backend ('' = the profile's, auto)")
    p.add_argument(
        '--memory', action='store_true', help='also measure RSS of a development and an edge system'
    )
    p.add_argument('--json', default='', help='also write the JSON result to this file')
    return p


def _memory_mb(backend: str) -> dict[str, Any]:
    """Resident memory (MB) of a development, an edge and a production system, each measured in a
    fresh interpreter, plus the edge/development RSS ratio when both were measured."""
    print('[bench api] memory: development and edge systems in fresh interpreters...', file=sys.stderr)
    dev, edge = _memory('development', backend), _memory('edge', backend)
    out: dict[str, Any] = {'development': dev, 'edge': edge, 'production': _memory('production', backend)}
    if 'rss_mb' in dev and 'rss_mb' in edge and dev['rss_mb'] > 0:
        out['edge_over_development_rss'] = round(edge['rss_mb'] / dev['rss_mb'], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rt-safe-rl bench api``; prints one JSON document."""
    a = _parser().parse_args(argv)
    if not 10 <= a.iterations <= 1_000_000 or not 1 <= a.rounds <= 50:
        raise ConfigError('--iterations must be in [10, 1e6] and --rounds in [1, 50]')
    if not 10.0 <= a.rate_hz <= 20000.0:
        raise ConfigError(f'--rate-hz must be in [10, 20000], got {a.rate_hz}')
    overrides = {'policy': {'backend': a.backend}} if a.backend else None
    system = create_system(profile=a.profile, overrides=overrides, log=lambda m: None)
    period_ns = round(1e9 / a.rate_hz)
    per = max(a.iterations // a.rounds, 1)
    direct: list[int] = []
    sync: list[int] = []
    asy: list[int] = []
    wrk: list[int] = []
    paired: dict[str, list[int]] = {'sync': [], 'async': [], 'async_worker': []}
    floor: list[int] = []
    ref_a, ref_b = np.zeros(system.n_joints), np.zeros(system.n_joints)
    try:
        with system:
            reps, ref_target_ns = _calibrate_reference(system, ref_a, ref_b)
        for r in range(a.rounds):
            print(
                f'[bench api] round {r + 1}/{a.rounds}: direct+sync, async ({per} calls each)...',
                file=sys.stderr,
            )
            with system:
                grant = system.info()['rt']
                lists = {'direct': direct, 'sync': sync, 'sync_overhead': paired['sync'], 'floor': floor}
                _direct_and_sync(system, per, period_ns, (reps, ref_a, ref_b), lists)
            system.async_mode = 'inline'
            asyncio.run(_async_calls(system, per, period_ns, asy, paired['async']))
            system.async_mode = 'worker'
            asyncio.run(_async_calls(system, per, period_ns, wrk, paired['async_worker']))
            system.async_mode = 'inline'
    finally:
        system.close()
    d, s, x, w = _pct(direct), _pct(sync), _pct(asy), _pct(wrk)
    diff = {
        m: {k: round(v[k] - d[k], 2) for k in ('p50', 'p99')}
        for m, v in (('sync', s), ('async', x), ('async_worker', w))
    }
    over = {m: _pct(v) for m, v in paired.items()}
    fl = _pct(floor) | {'block_median_target_us': round(ref_target_ns / 1e3, 2), 'reps': reps}
    res: dict[str, Any] = {
        'profile': a.profile,
        'backend': system.info()['backend'],
        'rate_hz': a.rate_hz,
        'rounds': a.rounds,
        'rt': grant,
        'direct_us': d,
        'sync_us': s,
        'async_us': x,
        'async_worker_us': w,
        'overhead_us': over,
        'percentile_diff_vs_direct_us': diff,
        'floor_us': fl,
        'targets': {
            f'{m}_overhead_p99_us': {
                'value': over[m]['p99'],
                'target': f'<= {t:g}',
                'pass': over[m]['p99'] <= t,
                'machine_floor_p99_us': fl['p99'],
            }
            for m, t in TARGETS_US.items()
        },
    }
    if a.memory:
        res['memory_mb'] = _memory_mb(a.backend or 'auto')
    line = verdict_line(measure_s=1.0)
    res['machine'] = {'verdict': line}
    print(line, file=sys.stderr)
    emit_json(res, a.json)
    return 0


if __name__ == '__main__':
    sys.exit(main())
