"""`rt-safe-rl bench monitor`: cost of monitoring, on vs off in the same run (prints JSON).

Loops (``--executor``):

* ``pipeline`` (default): the real closed loop composed by :mod:`rt_safe_rl.bringup` (sim robot,
  human, operator, safety, policy and the MonitorNode) on the RtExecutor; e2e is the sim robot's
  own seq-matched state publish -> command receipt latency.
* ``rt``: a synthetic 1 kHz :class:`~rt_safe_rl.rt.executor.PeriodicTask` in the 'control' group;
  each cycle does a small preallocated MLP step ("inference") and a clamp ("safety") and records
  'inference', 'safety', 'e2e' and 'period' samples plus counters into a private metrics registry,
  exactly as the RT nodes do; e2e = cycle end - deadline (wake-up latency + work), very sensitive
  to GIL/CPU contention (and to the noise of a shared VM).
* ``thread``: the same loop in a plain thread, the monitor on a SingleThreadedExecutor.

The run alternates segments with the MonitorNode *off* (deactivated: nobody drains, no timer, no
HTTP) and *on* (active with the given config: drains, evaluates, publishes /diagnostics, serves
/metrics, which a separate scraper process fetches once per second), ``--pairs`` times, after a
warm-up. Reported:

* ``e2e_p50_change_pct``: (p50 on - p50 off) / p50 off over all samples of each mode (target <= 5 %);
  also per pair (ABBA order, each segment measured after a 0.5 s settle), their median with a
  bootstrap 95 % interval, and ``e2e_p50_resolved`` (interval narrower than +-5 %): on a noisy
  shared VM an unresolved run says nothing either way;
* ``monitor_cpu_percent_of_core``: thread CPU time of the monitor's callbacks per wall second
  while on (target <= 2 % of one core at 1 kHz), and the process CPU difference on - off (all
  monitor threads: executor, HTTP server, DDS) for reference;
* a ``stages`` block (off-mode e2e/inference/safety p50/p99 in us) usable as
  ``monitor.regression.baseline_report``.

Timings are noisy on a shared machine: compare only within one run. Not RT-safe itself (a tool).
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from rt_safe_rl.bench import monitor_rigs
from rt_safe_rl.bench.child import emit_json, run_as_script
from rt_safe_rl.config import load_config
from rt_safe_rl.core import stats
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.rt.metrics import MetricsRegistry

TARGET_P50_CHANGE_PCT = 5.0
TARGET_MONITOR_CPU_PCT = 2.0
SETTLE_S = 0.5  # wait after switching the monitor on/off before measuring a segment

_SCRAPER = r"""
import sys, time, urllib.request
port, period = int(sys.argv[1]), float(sys.argv[2])
while True:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except Exception:
        pass
    time.sleep(period)
"""


class ControlLikeLoop:
    """1 kHz loop thread writing metrics like the RT nodes; keeps its own e2e samples per segment."""

    def __init__(self, rate_hz: float, rt: bool, capacity: int, reg: MetricsRegistry) -> None:
        self.registry = reg
        self.period_ns = round(1e9 / rate_hz)
        self.rt = rt
        self.rt_granted = ''
        self._st_inf = reg.stage('inference')
        self._st_saf = reg.stage('safety')
        self._st_e2e = reg.stage('e2e')
        self._st_per = reg.stage('period')
        self._c_steps = reg.counter('policy_steps')
        self._c_int = reg.counter('safety_interventions')
        self._c_miss = reg.counter('deadline_misses')
        rng = np.random.default_rng(0)
        self._w1 = rng.standard_normal((64, 21)) * 0.1
        self._w2 = rng.standard_normal((7, 64)) * 0.1
        self._x = rng.standard_normal(21)
        self._h = np.zeros(64)
        self._y = np.zeros(7)
        self._lim = np.full(7, 0.05)
        self.e2e_ns = np.zeros(capacity, dtype=np.int64)
        self.n = 0
        self.misses = 0
        self._prev_end = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='ctl_loop', daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def mark(self) -> int:
        """Index of the next sample (only the loop thread writes ``n``; readers just read it)."""
        return self.n

    def between(self, i0: int, i1: int) -> npt.NDArray[np.int64]:
        """e2e samples (ns) recorded between two marks (a copy)."""
        return self.e2e_ns[i0:i1].copy()

    def _setup_rt(self) -> None:
        if not self.rt:
            return
        try:
            os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(80))
            self.rt_granted = 'SCHED_FIFO 80, pinned'
        except (PermissionError, OSError) as err:
            self.rt_granted = f'not granted: {err}'

    def step(self, deadline_ns: int) -> int:
        """One cycle (the RT path): work, metrics, own e2e sample; returns its end time (ns)."""
        mono = time.monotonic_ns
        t0 = mono()
        # "inference": a small MLP on preallocated arrays
        np.dot(self._w1, self._x, out=self._h)
        np.tanh(self._h, out=self._h)
        np.dot(self._w2, self._h, out=self._y)
        t1 = mono()
        self._st_inf.record_ns(t1, t1 - t0)
        self._c_steps.inc()
        # "safety": clamp to limits
        np.clip(self._y, -self._lim, self._lim, out=self._y)
        t2 = mono()
        self._st_saf.record_ns(t2, t2 - t1)
        if self._y[0] >= self._lim[0]:
            self._c_int.inc()
        e2e = t2 - deadline_ns
        self._st_e2e.record_ns(t2, e2e)
        if self._prev_end:
            self._st_per.record_ns(t2, t2 - self._prev_end)
        self._prev_end = t2
        n = self.n
        if n < self.e2e_ns.shape[0]:
            self.e2e_ns[n] = e2e
            self.n = n + 1
        return t2

    def _run(self) -> None:
        self._setup_rt()
        period = self.period_ns
        deadline = time.monotonic_ns() + period
        while not self._stop.is_set():
            wait_ns = deadline - time.monotonic_ns()
            if wait_ns > 0:
                time.sleep(wait_ns / 1e9)
            t2 = self.step(deadline)
            deadline += period
            if t2 > deadline:  # missed the next deadline: skip to the grid
                self.misses += 1
                self._c_miss.inc()
                deadline += ((t2 - deadline) // period + 1) * period


class RobotE2E:
    """Pipeline mode: the sim robot's own e2e measurement (state publish -> command receipt, by seq).

    Drains ``SimRobotNode.e2e_ring`` (we are its only reader in this process) into a preallocated
    array at each :meth:`mark` (non-RT, main thread).
    """

    def __init__(self, robot: Any, capacity: int, reg: MetricsRegistry) -> None:
        self.registry = reg  # the process-wide registry the composed nodes write to
        self._ring = robot.e2e_ring
        self._buf = np.zeros((4096, 2), dtype=np.float64)
        self.e2e_ns = np.zeros(capacity, dtype=np.int64)
        self.n = 0
        self.rt_granted = ''

    def mark(self) -> int:
        """Drain pending samples; index of the next one."""
        while True:
            k = self._ring.drain(self._buf)
            m = min(k, self.e2e_ns.shape[0] - self.n)
            self.e2e_ns[self.n : self.n + m] = self._buf[:m, 1].astype(np.int64)
            self.n += m
            if k < self._buf.shape[0]:
                return self.n

    def between(self, i0: int, i1: int) -> npt.NDArray[np.int64]:
        """e2e samples (ns) between two marks (a copy)."""
        return self.e2e_ns[i0:i1].copy()


def _pct(a: npt.NDArray[np.int64], q: float) -> float:
    return stats.percentile(a, q) / 1e3  # nearest rank (= numpy's inverted_cdf): NaN when empty


def _summary_us(a: npt.NDArray[np.int64]) -> dict[str, float]:
    return {
        'n': int(a.size),
        'p50_us': _pct(a, 50),
        'p99_us': _pct(a, 99),
        'p999_us': _pct(a, 99.9),
        'max_us': float(a.max()) / 1e3 if a.size else math.nan,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


def _default_switch_interval_s() -> float:
    """rt.gil_switch_interval_s of the shipped config (what the RtExecutor applies), else 0.5 ms."""
    try:
        return float(load_config(None).rt.gil_switch_interval_s) or 0.005
    except (ImportError, AttributeError, RtSafeRlError):
        return 0.0005


def _start_scraper(port: int) -> subprocess.Popen[bytes]:
    """A separate process fetching ``http://127.0.0.1:<port>/metrics`` once per second."""
    return subprocess.Popen(
        [sys.executable, '-c', _SCRAPER, str(port), '1.0'],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run(
    duration_s: float,
    pairs: int,
    rate_hz: float,
    rt: bool,
    warmup_s: float,
    monitor_overrides: dict[str, Any],
    switch_interval_s: float = 0.0005,
    executor: str = 'rt',
    spin_us: int = 0,
) -> dict[str, Any]:
    """Run the on/off comparison; returns the report dict.

    ``switch_interval_s`` is applied with ``sys.setswitchinterval`` for the run (as the RtExecutor
    does while spinning): the longest a waiting thread waits for the GIL held by Python code.
    """
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn

    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval_s)
    try:
        port = _free_port()
        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        reg = MetricsRegistry()
        cap = int(rate_hz * (warmup_s + 2 * pairs * duration_s + 30))
        loop: Any = ControlLikeLoop(rate_hz, rt and executor == 'thread', cap, reg)
        stop = threading.Event()
        rig = monitor_rigs.build_rig(executor, ctx, port, monitor_overrides, reg, loop, stop, cap, spin_us)
        node, loop = rig.node, rig.loop
        if rig.comp is None and node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise RtSafeRlError(f'monitor bench: MonitorNode configure failed: {node.last_error}')
        scraper = _start_scraper(port)
        try:
            rig.spinner.start()
            if executor == 'thread':
                loop.start()
            time.sleep(warmup_s)
            # drain what warm-up left in the rings so 'on' segments start clean
            node.drain()
            segments, samples = _segments(node, loop, rig.misses, pairs, duration_s)
        finally:
            monitor_rigs.shut_down(rig, executor, stop, ctx, scraper)
    finally:
        sys.setswitchinterval(old_switch)
    config = {
        'executor': executor,
        'duration_s': duration_s,
        'pairs': pairs,
        'rate_hz': rate_hz if rig.rate_hz is None else rig.rate_hz,
        'warmup_s': warmup_s,
        'monitor_overrides': monitor_overrides,
        'scrape_period_s': 1.0,
        'gil_switch_interval_s': switch_interval_s,
        'control_spin_us': spin_us,
        'settle_s': SETTLE_S,
    }
    return _report(config, segments, samples, loop)


def _segments(
    node: Any, loop: Any, misses: Callable[[], int], pairs: int, duration_s: float
) -> tuple[list[dict[str, Any]], dict[str, list[npt.NDArray[np.int64]]]]:
    """Measure ``pairs`` off/on segment pairs of ``duration_s`` [s] each (ABBA order), the monitor
    ``node`` deactivated / activated around each; returns the segments and their e2e samples [ns]
    per mode."""
    segments: list[dict[str, Any]] = []
    samples: dict[str, list[npt.NDArray[np.int64]]] = {'off': [], 'on': []}
    for i in range(pairs):
        order = ('off', 'on') if i % 2 == 0 else ('on', 'off')  # ABBA: cancel slow drifts
        for mode in order:
            if mode == 'on':
                node.trigger_activate()
            time.sleep(SETTLE_S)  # steady state only: the (de)activation transient is not measured
            i0 = loop.mark()
            cpu0, proc0, w0, miss0 = node.cpu_time_s, time.process_time(), time.monotonic(), misses()
            time.sleep(duration_s)
            e2e = loop.between(i0, loop.mark())
            wall = time.monotonic() - w0
            seg = {
                'pair': i,
                'mode': mode,
                'wall_s': round(wall, 3),
                **_summary_us(e2e),
                'misses': misses() - miss0,
                'process_cpu_percent': 100.0 * (time.process_time() - proc0) / wall,
                'monitor_callbacks_cpu_percent': 100.0 * (node.cpu_time_s - cpu0) / wall,
            }
            if mode == 'on':
                node.trigger_deactivate()
                node.drain()  # nothing left for the off segment to inherit
            segments.append(seg)
            samples[mode].append(e2e)
    return segments, samples


def _report(
    config: dict[str, Any],
    segments: list[dict[str, Any]],
    samples: dict[str, list[npt.NDArray[np.int64]]],
    loop: Any,
) -> dict[str, Any]:
    """The report (module docstring) from the run's ``config`` block, its segments, their e2e
    samples (ns) per mode and the loop that measured them."""
    pairs = int(config['pairs'])
    allv = {m: np.concatenate(v) if v else np.zeros(0, np.int64) for m, v in samples.items()}
    off, on = _summary_us(allv['off']), _summary_us(allv['on'])
    change = 100.0 * (on['p50_us'] - off['p50_us']) / off['p50_us'] if off['p50_us'] > 0 else math.nan
    per_pair = []
    for i in range(pairs):
        p = {s['mode']: s for s in segments if s['pair'] == i}
        per_pair.append(round(100.0 * (p['on']['p50_us'] - p['off']['p50_us']) / p['off']['p50_us'], 2))
    rng = np.random.default_rng(0)
    boot = np.median(rng.choice(np.asarray(per_pair), size=(2000, len(per_pair))), axis=1)
    ci = [round(stats.percentile(boot, 2.5), 2), round(stats.percentile(boot, 97.5), 2)]
    on_segs = [s for s in segments if s['mode'] == 'on']
    off_segs = [s for s in segments if s['mode'] == 'off']
    mon_cpu = float(np.mean([s['monitor_callbacks_cpu_percent'] for s in on_segs]))
    proc_delta = float(
        np.mean([s['process_cpu_percent'] for s in on_segs])
        - np.mean([s['process_cpu_percent'] for s in off_segs])
    )
    reg = loop.registry
    return {
        'bench': 'monitor',
        'machine': {'cpus': os.cpu_count(), 'loop_rt': loop.rt_granted or 'off', 'host': os.uname().nodename},
        'config': config,
        'off': off,
        'on': on,
        'e2e_p50_change_pct': round(change, 2),
        'e2e_p50_change_pct_per_pair': per_pair,
        'e2e_p50_change_pct_median_pair': round(stats.percentile(per_pair, 50), 2),
        # Bootstrap 95 % interval of the median per-pair change: if it is wider than the target, this
        # machine is too noisy to resolve the target in this run.
        'e2e_p50_change_pct_ci95': ci,
        'e2e_p50_resolved': bool(ci[1] - ci[0] <= 2 * TARGET_P50_CHANGE_PCT),
        'e2e_p99_change_pct': round(100.0 * (on['p99_us'] - off['p99_us']) / off['p99_us'], 2),
        'monitor_cpu_percent_of_core': {
            'callbacks': round(mon_cpu, 3),
            'process_delta_on_minus_off': round(proc_delta, 3),
        },
        'targets': {
            'e2e_p50_change_pct_max': TARGET_P50_CHANGE_PCT,
            'monitor_cpu_percent_max': TARGET_MONITOR_CPU_PCT,
        },
        'meets_targets': {
            'e2e_p50': bool(change <= TARGET_P50_CHANGE_PCT),
            'monitor_cpu': bool(mon_cpu <= TARGET_MONITOR_CPU_PCT),
        },
        'stages': {'e2e': {'p50_us': off['p50_us'], 'p99_us': off['p99_us']}},
        'ring_dropped': {n: s.ring.dropped for n, s in reg.stages.items()},
        'segments': segments,
    }


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition('=')
    if not sep or not key:
        raise RtSafeRlError(f'--set {text!r}: expected KEY=VALUE (e.g. drain_period_s=0.25)')
    return key.strip().removeprefix('monitor.'), yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    """Entry point (`rt-safe-rl bench monitor ...` or `python -m rt_safe_rl.bench.monitor_bench`)."""
    ap = argparse.ArgumentParser(prog='rt-safe-rl bench monitor', description=__doc__.split('\n\n')[0])
    ap.add_argument('--duration-s', type=float, default=2.0, help='seconds per segment (default 2)')
    ap.add_argument('--pairs', type=int, default=10, help='off/on segment pairs (default 10)')
    ap.add_argument(
        '--rate-hz',
        type=float,
        default=1000.0,
        help='synthetic loop rate (default 1000; pipeline uses control.rate_hz)',
    )
    ap.add_argument('--warmup-s', type=float, default=2.0)
    ap.add_argument(
        '--executor',
        choices=('pipeline', 'rt', 'thread'),
        default='pipeline',
        help='pipeline (default): the real closed loop composed by bringup, e2e = the sim '
        "robot's state -> command latency; rt: a synthetic 1 kHz PeriodicTask on the "
        'RtExecutor (e2e = cycle end - deadline); thread: plain thread + rclpy executor',
    )
    ap.add_argument(
        '--rt', action='store_true', help='thread mode: SCHED_FIFO 80 + pin the loop (needs root)'
    )
    ap.add_argument(
        '--gil-switch-interval-s',
        type=float,
        default=None,
        help="sys.setswitchinterval for the run (default: the config's rt.gil_switch_interval_s)",
    )
    ap.add_argument(
        '--spin-us',
        type=int,
        default=0,
        help="rt mode: spin_us of the loop's control group (default 0: the busy-wait makes "
        'e2e bimodal on this VM whatever the monitor does; -1 = keep the shipped value)',
    )
    ap.add_argument(
        '--set',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='monitor parameter override, e.g. --set drain_period_s=0.25 (repeatable)',
    )
    ap.add_argument('--out', default='', help='also write the JSON report here')
    args = ap.parse_args(argv)
    if args.duration_s <= 0 or args.pairs < 1 or args.rate_hz <= 0 or args.warmup_s < 0:
        raise RtSafeRlError('need --duration-s > 0, --pairs >= 1, --rate-hz > 0, --warmup-s >= 0')
    overrides = dict(_parse_override(s) for s in args.set)
    switch = args.gil_switch_interval_s or _default_switch_interval_s()
    report = run(
        args.duration_s,
        args.pairs,
        args.rate_hz,
        args.rt,
        args.warmup_s,
        overrides,
        switch,
        args.executor,
        args.spin_us,
    )
    emit_json(report, args.out, '--out')
    return 0


if __name__ == '__main__':
    run_as_script(main, 'monitor_bench')
