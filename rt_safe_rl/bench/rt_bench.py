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
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.errors import ConfigError, RtSafeRlError

PHASES = ('floor', 'floor_c', 'executor', 'rclpy', 'rclpy_fifo', 'handoff')
DEFAULT_PHASES = PHASES


# ------------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------------
def _pct(
    x: npt.NDArray[np.float64], keys: tuple[str, ...] = ('p50', 'p99', 'p999', 'max')
) -> dict[str, float]:
    from rt_safe_rl.core.stats import percentiles

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
    from rt_safe_rl.bench.report import cpu_model
    from rt_safe_rl.rt import sched

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


# ------------------------------------------------------------------------------------------------
# phases (each runs in a child process: `python -m rt_safe_rl.bench.rt_bench --phase NAME ...`)
# ------------------------------------------------------------------------------------------------
def _rt_cfg(config_path: str | None, spin_us: int | None) -> Any:
    import dataclasses

    from rt_safe_rl.config import load_config
    from rt_safe_rl.paths import config_path as shipped

    app = load_config(config_path or shipped('default.yaml'))
    rt = app.rt
    if spin_us is not None:
        groups = {
            k: (dataclasses.replace(g, spin_us=spin_us) if g.is_rt else g) for k, g in rt.groups.items()
        }
        rt = dataclasses.replace(rt, groups=groups)
    return rt


def _warm_cut(
    dl: npt.NDArray[np.float64], t0_ns: int, warmup_s: float, duration_s: float = 1e9
) -> npt.NDArray[np.bool_]:
    """Cycles whose deadline lies in the measured window [t0 + warmup, t0 + warmup + duration)."""
    lo = t0_ns + warmup_s * 1e9
    return np.asarray((dl >= lo) & (dl < lo + duration_s * 1e9))


def phase_floor(a: argparse.Namespace) -> dict[str, Any]:
    """Bare Python SCHED_FIFO absolute-deadline sleep loop (the floor), same thread settings as control."""
    import gc
    import threading

    from rt_safe_rl.rt import sched

    rt = _rt_cfg(a.config, a.spin_us)
    g = rt.groups['control']
    period = round(1e9 / a.rate_hz)
    n = int((a.duration + a.warmup) * a.rate_hz) + 10
    dl_arr = np.zeros(n, dtype=np.int64)
    st_arr = np.zeros(n, dtype=np.int64)
    out: dict[str, Any] = {}
    ok, msg = sched.lock_memory() if rt.mlock else (False, 'not requested')
    gc.collect()
    gc.freeze()
    gc.disable()

    def run() -> None:
        grant = sched.apply_thread_settings('rt_floor', g.policy, g.priority, g.real_cpus, g.timer_slack_ns)
        out['grant'] = grant.as_dict()
        sleeper = sched.AbsSleeper()
        mono = time.monotonic_ns
        now = mono()
        dl = (now // period + 1) * period
        i = 0
        while i < n:
            sleeper.sleep_until(dl)
            t = mono()
            dl_arr[i] = dl
            st_arr[i] = t
            i += 1
            dl += period
            if dl <= t:  # skip policy, like the executor
                dl += ((t - dl) // period + 1) * period

    th = threading.Thread(target=run)
    th.start()
    th.join()
    keep = _warm_cut(dl_arr.astype(np.float64), int(dl_arr[0]), a.warmup, a.duration)
    res = loop_stats(dl_arr[keep], st_arr[keep], period)
    res['mlock'] = ok
    res['mlock_message'] = msg
    res['grant'] = out.get('grant')
    return res


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
  for (long i = 0; i < n; i++) {
    struct timespec d = { dl / 1000000000LL, dl % 1000000000LL };
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &d, NULL);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t t = ts.tv_sec * 1000000000LL + ts.tv_nsec;
    buf[2 * i] = dl; buf[2 * i + 1] = t;
    dl += period;
    if (dl <= t) dl += ((t - dl) / period + 1) * period;
  }
  fwrite(buf, sizeof(int64_t), 2 * n, f); fclose(f);
  printf("%d\n", fifo);
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
        return raw[:, 0], raw[:, 1], out.strip() == '1'

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


def phase_floor_c(a: argparse.Namespace) -> dict[str, Any]:
    """The same floor loop in C (needs a C compiler; skipped with a reason otherwise)."""
    rt = _rt_cfg(a.config, a.spin_us)
    g = rt.groups['control']
    period = round(1e9 / a.rate_hz)
    cpu = g.real_cpus[0] if g.real_cpus else -1
    prio = g.priority if g.is_rt else 1
    try:
        floor = CFloorLoop(period, a.duration + a.warmup, prio, cpu)
    except RtSafeRlError as err:
        return {'skipped': str(err)}
    dl, st, fifo = floor.samples()
    keep = _warm_cut(dl.astype(np.float64), int(dl[0]) if dl.size else 0, a.warmup, a.duration)
    res = loop_stats(dl[keep], st[keep], period)
    res['fifo'] = fifo
    return res


def phase_executor(a: argparse.Namespace) -> dict[str, Any]:
    """RtExecutor + PeriodicTask in the control group (a node is composed, as in bringup)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    from rt_safe_rl.rt.channel import get_channel
    from rt_safe_rl.rt.executor import PeriodicTask, RtExecutor, named_group

    rt = _rt_cfg(a.config, a.spin_us)
    period = round(1e9 / a.rate_hz)
    cap = int((a.duration + a.warmup) * a.rate_hz * 1.2) + 1000
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        node = Node('rt_bench_executor', context=ctx)
        ch = get_channel('/rt_bench/loop', 7)
        vals = np.zeros(7)

        first = [0]
        window_ns = int((a.warmup + a.duration) * 1e9)

        def tick(deadline_ns: int) -> None:
            vals[0] = deadline_ns
            ch.try_write(vals, deadline_ns)
            if first[0] == 0:
                first[0] = deadline_ns
            elif deadline_ns - first[0] > window_ns:
                ex.shutdown()  # measured window complete (whatever the process setup took)

        task = PeriodicTask(
            'bench_loop', named_group(node, 'control'), period, tick, enabled=True, stats_capacity=cap
        )
        ex = RtExecutor(rt, context=ctx)
        ex.add_node(node)
        ex.add_task(task)
        ex.spin(a.warmup + a.duration + 30.0)  # ends when the task saw the whole window
        rep = ex.report()
        buf = np.zeros((cap, 3))
        k = task.samples.drain(buf)
        s = buf[:k]
        keep = _warm_cut(s[:, 0], int(s[0, 0]), a.warmup, a.duration) if k else np.zeros(0, bool)
        res = loop_stats(s[keep, 0], s[keep, 1], period)
        res['task'] = rep['tasks']['bench_loop']
        res['report'] = {k2: rep[k2] for k2 in ('process', 'gc', 'threads', 'warnings', 'errors', 'stalls')}
        ex.destroy()
        node.destroy_node()
        return res
    finally:
        rclpy.shutdown(context=ctx)


def phase_rclpy(a: argparse.Namespace, rt_knobs: bool = False) -> dict[str, Any]:
    """rclpy SingleThreadedExecutor + steady-clock timer; optional RT knobs on the spinning thread."""
    import gc

    import rclpy
    from rclpy.clock import Clock, ClockType
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.timer import TimerInfo

    from rt_safe_rl.rt import sched

    period = round(1e9 / a.rate_hz)
    n = int((a.duration + a.warmup) * a.rate_hz * 1.2) + 1000
    exp = np.zeros(n, dtype=np.int64)
    st = np.zeros(n, dtype=np.int64)
    idx = [0]
    ctx = Context()
    rclpy.init(context=ctx)
    res: dict[str, Any] = {}
    try:
        node = Node('rt_bench_rclpy', context=ctx)
        mono = time.monotonic_ns

        def cb(info: TimerInfo) -> None:
            t = mono()
            i = idx[0]
            if i < n:
                exp[i] = info.expected_call_time.nanoseconds
                st[i] = t
                idx[0] = i + 1

        cb.__annotations__['info'] = TimerInfo  # rclpy matches the class, not the postponed string
        node.create_timer(period / 1e9, cb, clock=Clock(clock_type=ClockType.STEADY_TIME))
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        if rt_knobs:
            rt = _rt_cfg(a.config, a.spin_us)
            g = rt.groups['control']
            gc.collect()
            gc.freeze()
            gc.disable()
            ok, _msg = sched.lock_memory()
            grant = sched.apply_thread_settings(
                'rclpy_fifo', g.policy, g.priority, g.real_cpus, g.timer_slack_ns
            )
            res['grant'] = grant.as_dict()
            res['mlock'] = ok
        end = mono() + int((a.warmup + a.duration + 0.2) * 1e9)
        while mono() < end:
            ex.spin_once(timeout_sec=0.1)
        k = idx[0]
        keep = (
            _warm_cut(exp[:k].astype(np.float64), int(exp[0]), a.warmup, a.duration)
            if k
            else np.zeros(0, bool)
        )
        res.update(loop_stats(exp[:k][keep], st[:k][keep], period))
        ex.shutdown()
        node.destroy_node()
        return res
    finally:
        rclpy.shutdown(context=ctx)


def phase_handoff(a: argparse.Namespace) -> dict[str, Any]:
    """Policy -> safety hand-off through the channel vs a DDS topic, same thread and cross-thread."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.qos import QoSProfile
    from std_msgs.msg import Float64MultiArray

    from rt_safe_rl.rt.channel import get_channel
    from rt_safe_rl.rt.executor import PeriodicTask, RtExecutor, TriggeredTask, named_group

    rt = _rt_cfg(a.config, a.spin_us)
    period = round(1e9 / a.rate_hz)
    n = int((a.duration + a.warmup) * a.rate_hz) + 1000
    lat = {k: np.zeros(n, dtype=np.int64) for k in ('ch_same', 'ch_x', 'dds_same', 'dds_x')}
    cnt = dict.fromkeys(lat, 0)
    t_measure = [0]
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        node = Node('rt_bench_handoff', context=ctx)
        ch_same = get_channel('/rt_bench/handoff_same', 8)
        ch_x = get_channel('/rt_bench/handoff_x', 8)
        qos = QoSProfile(depth=1)
        pub_same = node.create_publisher(Float64MultiArray, 'rt_bench/handoff_same', qos)
        pub_x = node.create_publisher(Float64MultiArray, 'rt_bench/handoff_x', qos)
        msg = Float64MultiArray()
        msg.data = [0.0] * 8
        vals = np.zeros(8)
        mono = time.monotonic_ns
        cycle = [0]

        def record(key: str, t_write: float) -> None:
            t = mono()
            if t_write < t_measure[0]:
                return
            i = cnt[key]
            if i < n:
                lat[key][i] = t - int(t_write)
                cnt[key] = i + 1

        first = [0]
        window_ns = int((a.warmup + a.duration) * 1e9)

        def produce(deadline_ns: int) -> None:
            c = cycle[0]
            cycle[0] = c + 1
            if c == 0:
                first[0] = deadline_ns
                t_measure[0] = deadline_ns + int(a.warmup * 1e9)
            elif deadline_ns - first[0] > window_ns:
                ex.shutdown()
            which = c & 3
            if which == 0:
                ch_same.try_write(vals, deadline_ns)
            elif which == 1:
                ch_x.try_write(vals, deadline_ns)
            elif which == 2:
                msg.data[0] = float(mono())
                pub_same.publish(msg)
            else:
                msg.data[0] = float(mono())
                pub_x.publish(msg)

        # Consumers read the producer's row in place (zero-copy view, as the safety node does);
        # latency = write -> consumer callback start with the data readable, like the DDS
        # callback start with the message deserialized.
        sink = np.zeros(2)

        def on_ch_same(seq: int) -> None:
            record('ch_same', ch_same.write_ns)
            sink[0] = ch_same.view_of(seq)[0]

        def on_ch_x(seq: int) -> None:
            record('ch_x', ch_x.write_ns)
            sink[1] = ch_x.view_of(seq)[0]

        node.create_subscription(
            Float64MultiArray,
            'rt_bench/handoff_same',
            lambda m: record('dds_same', m.data[0]),
            qos,
            callback_group=named_group(node, 'safety'),
        )
        node.create_subscription(
            Float64MultiArray,
            'rt_bench/handoff_x',
            lambda m: record('dds_x', m.data[0]),
            qos,
            callback_group=named_group(node, 'safety_monitor'),
        )
        tasks = [
            PeriodicTask('policy', named_group(node, 'control'), period, produce, enabled=True),
            TriggeredTask('safety_same', named_group(node, 'safety'), ch_same, on_ch_same, enabled=True),
            TriggeredTask('safety_x', named_group(node, 'safety_monitor'), ch_x, on_ch_x, enabled=True),
        ]
        node.rt_tasks = lambda: tasks  # type: ignore[attr-defined]
        ex = RtExecutor(rt, context=ctx)
        ex.add_node(node)
        t_measure[0] = 1 << 62  # set by the first produce() call
        ex.spin(a.warmup + a.duration + 30.0)  # ends when the producer saw the whole window
        rep = ex.report()
        ex.destroy()
        node.destroy_node()

        for key in lat:
            _SAMPLES[key] = lat[key][: cnt[key]]

        def summ(key: str) -> dict[str, Any]:
            x = lat[key][: cnt[key]] / 1e3
            d: dict[str, Any] = _pct(x, ('p50', 'p99', 'p999', 'max'))
            d['count'] = int(x.size)
            return d

        return {
            'channel_us': summ('ch_same'),
            'dds_us': summ('dds_same'),
            'channel_xthread_us': summ('ch_x'),
            'dds_xthread_us': summ('dds_x'),
            'placement': 'producer in group control; *_us consumers in group safety (same thread as '
            'control), '
            '*_xthread_us consumers in group safety_monitor (another RT thread)',
            'threads': rep['threads'],
            'errors': rep['errors'],
        }
    finally:
        rclpy.shutdown(context=ctx)


def _run_phase(name: str, a: argparse.Namespace) -> dict[str, Any]:
    if name == 'floor':
        return phase_floor(a)
    if name == 'floor_c':
        return phase_floor_c(a)
    if name == 'executor':
        return phase_executor(a)
    if name == 'rclpy':
        return phase_rclpy(a)
    if name == 'rclpy_fifo':
        return phase_rclpy(a, rt_knobs=True)
    if name == 'handoff':
        return phase_handoff(a)
    raise ConfigError(f'unknown phase {name!r}')


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
    env = dict(os.environ)
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    timeout = duration_s + a.warmup + 60
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {'error': f'phase {name} did not finish within {timeout:.0f} s'}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {'error': f'phase {name} failed (rc {proc.returncode}): ' + ' | '.join(tail)}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rt-safe-rl bench rt``; prints one JSON document. Returns the exit code."""
    a = _parser().parse_args(argv)
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
    if a.phase:
        out = _run_phase(a.phase, a)
        if a.samples:
            np.savez(a.samples, **_SAMPLES)  # type: ignore[arg-type]
        print(json.dumps(out), flush=True)
        return 0
    phases = [x.strip() for x in a.phases.split(',') if x.strip()]
    unknown = [x for x in phases if x not in PHASES]
    if unknown or not phases:
        raise ConfigError(f'--phases: unknown {unknown}; allowed: {",".join(PHASES)}')
    from rt_safe_rl.bench.stress import StressWorkers

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
    ex = res.get('executor', {})
    thr = ex.get('report', {}).get('threads', {}).get('control', {}) if isinstance(ex, dict) else {}
    granted = thr.get('granted') or {}
    proc = ex.get('report', {}).get('process', {}) if isinstance(ex, dict) else {}
    res['rt'] = {
        'policy': granted.get('policy'),
        'priority': granted.get('priority'),
        'affinity': granted.get('cpus'),
        'mlock': (proc.get('mlock') or {}).get('granted'),
        'gil_switch_interval_s': proc.get('gil_switch_interval_s'),
        'warnings': ex.get('report', {}).get('warnings', []) if isinstance(ex, dict) else [],
    }
    res['targets'] = _targets(res)
    from rt_safe_rl.doctor import verdict_line  # the machine's share of the misses [api]

    fc = res.get('floor_c')
    given = {'c': {**fc, 'rate_hz': a.rate_hz}} if isinstance(fc, dict) and 'lateness_us' in fc else None
    res['machine']['verdict'] = verdict_line(given)
    print(f'[bench rt] {res["machine"]["verdict"]}', file=sys.stderr)
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        try:
            Path(a.json).write_text(text + '\n')
        except OSError as err:
            raise RtSafeRlError(f'cannot write --json {a.json}: {err}') from None
    failed = [k for k, v in res.items() if isinstance(v, dict) and 'error' in v]
    return 1 if failed else 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except RtSafeRlError as err:
        print(f'rt-safe-rl bench rt: error: {err}', file=sys.stderr)
        sys.exit(2)
