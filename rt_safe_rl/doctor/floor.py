"""The measured floor: C and Python SCHED_FIFO absolute-deadline sleep loops on the RT CPU.

Reuses ``rt-safe-rl bench rt``'s loops unchanged: :class:`~rt_safe_rl.bench.rt_bench.CFloorLoop`
(compiled on the fly; skipped with the reason when there is no C compiler) and its Python
``floor`` phase, run in a fresh interpreter (its mlockall / GC freeze stay out of this process).
Steal time is sampled over the C loop. Not RT code (it measures; it runs for ``2 x seconds``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np

from rt_safe_rl.bench.rt_loops import CFloorLoop, loop_stats
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.doctor.sysfs import SysRoot, cpu_times, steal_percent

WARMUP_S = 0.2


def _loop_summary(stats: dict[str, Any], rate_hz: float) -> dict[str, Any]:
    keys = ('lateness_us', 'period_dev_us', 'misses', 'cycles', 'misses_per_1e4')
    out = {k: stats[k] for k in keys if k in stats}
    out['rate_hz'] = rate_hz
    return out


def c_floor(seconds: float, cpu: int, priority: int, rate_hz: float = 1000.0) -> dict[str, Any]:
    """The C loop for `seconds` (+ warm-up) on `cpu` at SCHED_FIFO `priority`; loop statistics."""
    period = round(1e9 / rate_hz)
    try:
        loop = CFloorLoop(period, seconds + WARMUP_S, priority, cpu)
    except RtSafeRlError as err:
        return {'skipped': str(err)}
    dl, st, fifo = loop.samples()
    if dl.size == 0:
        return {'skipped': 'the C loop recorded nothing'}
    lo = int(dl[0]) + int(WARMUP_S * 1e9)
    keep = np.asarray(dl >= lo)
    res = _loop_summary(loop_stats(dl[keep], st[keep], period), rate_hz)
    res['fifo'] = fifo
    res['cpu'] = cpu
    return res


def python_floor(seconds: float, rate_hz: float = 1000.0, config: str = '') -> dict[str, Any]:
    """``bench rt``'s Python floor phase (the control group's thread settings) in a child process."""
    cmd = [sys.executable, '-m', 'rt_safe_rl.bench.rt_bench', '--phase', 'floor', '--rate-hz', str(rate_hz)]
    cmd += ['--duration', str(seconds), '--warmup', str(WARMUP_S)]
    if config:
        cmd += ['--config', config]
    env = {k: v for k, v in os.environ.items() if k != 'RT_PROFILE'}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {'skipped': 'the Python floor loop did not finish'}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
    if proc.returncode != 0 or not lines:
        tail = ' | '.join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
        return {'skipped': f'the Python floor loop failed (rc {proc.returncode}): {tail}'}
    data = json.loads(lines[-1])
    res = _loop_summary(data, rate_hz)
    grant = (data.get('grant') or {}).get('granted') or {}
    res['policy'] = grant.get('policy')
    res['cpus'] = grant.get('cpus')
    res['mlock'] = data.get('mlock')
    return res


def measure_floor(
    seconds: float, cpu: int, priority: int, rate_hz: float = 1000.0, config: str = ''
) -> dict[str, Any]:
    """Both loops, one after the other, plus the steal time per CPU during the C loop.

    Returns ``{'seconds', 'c': {...}, 'python': {...}, 'steal_percent': {cpu: %}}``; each loop has
    ``lateness_us`` / ``period_dev_us`` percentiles (p50, p99, p999, max), ``misses`` (cycles
    starting more than a period late) and ``misses_per_1e4``.
    """
    root = SysRoot('/')
    before = cpu_times(root.read('/proc/stat'))
    c = c_floor(seconds, cpu, priority, rate_hz)
    steal = steal_percent(before, cpu_times(root.read('/proc/stat')))
    py = python_floor(seconds, rate_hz, config)
    return {'seconds': seconds, 'rate_hz': rate_hz, 'c': c, 'python': py, 'steal_percent': steal}
