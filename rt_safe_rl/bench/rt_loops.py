"""The loops of ``rt-safe-rl bench rt`` and their statistics: jitter/lateness/miss summaries, the C
floor loop (:class:`CFloorLoop`), machine metadata and foreign RT threads.

Used by ``bench rt`` (:mod:`rt_safe_rl.bench.rt_bench`), ``bench loop``, ``doctor`` and the demo.
Not RT-safe (numpy summaries, files, subprocesses): called before or after a measured loop.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.bench.report import cpu_model
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.core.stats import percentiles
from rt_safe_rl.rt import sched


# ------------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------------
def _pct(
    x: npt.NDArray[np.float64], keys: tuple[str, ...] = ('p50', 'p99', 'p999', 'max')
) -> dict[str, float]:
    p = percentiles(x)
    return {k: round(float(p[k]), 1) for k in keys}


_SAMPLES: dict[str, npt.NDArray[Any]] = {}  # raw samples of the phase run by this process (--samples)


def loop_stats(deadline_ns: npt.ArrayLike, start_ns: npt.ArrayLike, period_ns: int) -> dict[str, Any]:
    """Jitter/lateness/miss summary (us) of one loop from per-cycle deadline and start times."""
    dl = np.asarray(deadline_ns, dtype=np.float64)
    st = np.asarray(start_ns, dtype=np.float64)
    _SAMPLES['dl'] = dl
    _SAMPLES['st'] = st
    return loop_stats_segments([(dl, st)], period_ns)


def loop_stats_segments(
    segments: list[tuple[npt.NDArray[Any], npt.NDArray[Any]]], period_ns: int
) -> dict[str, Any]:
    """:func:`loop_stats` pooled over separate runs (intervals are never taken across runs)."""
    lates, devs = [], []
    skipped = 0
    for dl, st in segments:
        lates.append((st - dl) / 1e3)
        devs.append(np.abs(np.diff(st) - period_ns) / 1e3)
        # periods that never ran (skipped by the loop's policy): grid slots between consecutive deadlines
        if dl.size > 1:
            skipped += int(np.sum(np.maximum(np.rint(np.diff(dl) / period_ns) - 1, 0)))
    late = np.concatenate(lates) if lates else np.zeros(0)
    dev = np.concatenate(devs) if devs else np.zeros(0)
    misses = int(np.count_nonzero(late > period_ns / 1e3))
    cycles = int(late.size)
    return {
        'period_dev_us': _pct(dev),
        'lateness_us': _pct(late),
        'misses': misses,
        'cycles': cycles,
        'skipped_periods': skipped,
        'misses_per_1e4': round(misses * 1e4 / max(cycles, 1), 2),
        'over_1ms_late': int(np.count_nonzero(late > 1000.0)),
    }


def foreign_rt_threads() -> list[str]:
    """RT (FIFO/RR) threads of *other* user processes: they compete with the benchmark's threads.

    Kernel threads (no command line) are left out. Returns 'pid/tid name FIFO prio cpu N' lines.
    """
    out: list[str] = []
    me = os.getpid()
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            if not Path(f'/proc/{pid}/cmdline').read_bytes():
                continue  # kernel thread
            for tid in os.listdir(f'/proc/{pid}/task'):
                stat = Path(f'/proc/{pid}/task/{tid}/stat').read_text()
                name = stat[stat.index('(') + 1 : stat.rindex(')')]
                fields = stat[stat.rindex(')') + 2 :].split()
                cpu, rtprio, policy = int(fields[36]), int(fields[37]), int(fields[38])
                if policy in (1, 2):
                    out.append(f'{pid}/{tid} {name} {"FIFO" if policy == 1 else "RR"} {rtprio} cpu {cpu}')
        except (OSError, ValueError, IndexError):
            continue
    return out


def _machine() -> dict[str, Any]:
    cpu = cpu_model()
    return {
        'host': platform.node(),
        'kernel': platform.release(),
        'preempt_rt': sched.has_realtime_kernel(),
        'cpus': os.cpu_count(),
        'cpu_model': cpu,
        'python': platform.python_version(),
        'rt_throttling': sched.rt_throttling(),
        'load_avg_1m': round(os.getloadavg()[0], 2),
    }


def _warm_cut(
    dl: npt.NDArray[np.float64], t0_ns: int, warmup_s: float, duration_s: float = 1e9
) -> npt.NDArray[np.bool_]:
    """Cycles whose deadline lies in the measured window [t0 + warmup, t0 + warmup + duration)."""
    lo = t0_ns + warmup_s * 1e9
    return np.asarray((dl >= lo) & (dl < lo + duration_s * 1e9))


_FLOOR_C = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include <sys/mman.h>
int main(int argc, char** argv) {
  long period = atol(argv[1]); long n = atol(argv[2]); int prio = atoi(argv[3]); int cpu = atoi(argv[4]);
  FILE* f = fopen(argv[5], "wb");
  int64_t* buf = calloc(2 * n, sizeof(int64_t));
  mlockall(MCL_CURRENT | MCL_FUTURE);
  if (cpu >= 0) { cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s); sched_setaffinity(0, sizeof(s), &s); }
  struct sched_param p = { .sched_priority = prio };
  int fifo = sched_setscheduler(0, SCHED_FIFO, &p) == 0;
  struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t now = ts.tv_sec * 1000000000LL + ts.tv_nsec;
  int64_t dl = (now / period + 1) * period;
  struct timespec c0, c1; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
  for (long i = 0; i < n; i++) {
    struct timespec d = { dl / 1000000000LL, dl % 1000000000LL };
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &d, NULL);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t t = ts.tv_sec * 1000000000LL + ts.tv_nsec;
    buf[2 * i] = dl; buf[2 * i + 1] = t;
    dl += period;
    if (dl <= t) dl += ((t - dl) / period + 1) * period;
  }
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
  fwrite(buf, sizeof(int64_t), 2 * n, f); fclose(f);
  printf("%d %lld\n", fifo, (long long)((c1.tv_sec - c0.tv_sec) * 1000000000LL + (c1.tv_nsec - c0.tv_nsec)));
  return 0;
}
"""


class CFloorLoop:
    """The floor loop in C as a background process: a SCHED_FIFO absolute-deadline sleep loop at
    `period_ns` on `cpu` (-1 = not pinned) for `seconds`. Started next to a Python loop it is a
    witness: a stall it sees too (VM pause, another tenant, kernel work) is the machine's, not ours.

    Raises:
        RtSafeRlError: no C compiler on PATH or the compile failed (the message says which).
    """

    def __init__(self, period_ns: int, seconds: float, priority: int, cpu: int) -> None:
        cc = shutil.which('cc') or shutil.which('gcc')
        if cc is None:
            raise RtSafeRlError('no C compiler (cc/gcc) on PATH')
        self.period_ns = period_ns
        #: the loop's own CPU (user + system) per period [us] once :meth:`samples` returned (what
        #: one sleep + wake-up costs this machine; None before / when the loop did not say)
        self.cpu_per_period_us: float | None = None
        self._tmp = tempfile.TemporaryDirectory()
        src = Path(self._tmp.name) / 'floor.c'
        exe = Path(self._tmp.name) / 'floor'
        self._data = Path(self._tmp.name) / 'floor.bin'
        src.write_text(_FLOOR_C)
        comp = subprocess.run(
            [cc, '-O2', '-o', str(exe), str(src)], capture_output=True, text=True, check=False
        )
        if comp.returncode != 0:
            self._tmp.cleanup()
            raise RtSafeRlError(f'C compile failed: {comp.stderr.strip()[:200]}')
        n = int(seconds * 1e9 / period_ns) + 10
        self._timeout_s = seconds + 30.0
        self._proc = subprocess.Popen(
            [str(exe), str(period_ns), str(n), str(priority), str(cpu), str(self._data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def samples(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], bool]:
        """Wait for the loop to end; (deadline_ns, start_ns, got_fifo). Removes the temp files."""
        try:
            out, _err = self._proc.communicate(timeout=self._timeout_s)
            raw = np.fromfile(self._data, dtype=np.int64).reshape(-1, 2)
        finally:
            self.stop()
        words = out.split()
        if len(words) == 2 and raw.shape[0]:
            self.cpu_per_period_us = round(int(words[1]) / raw.shape[0] / 1e3, 2)
        return raw[:, 0], raw[:, 1], bool(words) and words[0] == '1'

    def stop(self) -> None:
        """Kill the loop if it still runs and remove its files (idempotent)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._tmp.cleanup()

    def stats(self, lo_ns: int, hi_ns: int) -> dict[str, Any]:
        """:func:`loop_stats` of the cycles whose deadline lies in [lo_ns, hi_ns), plus ``fifo``."""
        dl, st, fifo = self.samples()
        keep = (dl >= lo_ns) & (dl < hi_ns)
        res = loop_stats(dl[keep], st[keep], self.period_ns)
        res['fifo'] = fifo
        return res
