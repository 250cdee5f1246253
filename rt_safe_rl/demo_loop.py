"""The demo's running loop (:func:`rt_safe_rl.demo.run_demo`): the spin thread, the rings' reader,
the status line and the shutdown that collects the last figures.

Not RT code: everything here runs in the demo's non-RT main thread (the spin thread runs the
executor, see :mod:`rt_safe_rl.rt`).
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl import signals
from rt_safe_rl.bench.rt_bench import CFloorLoop, loop_stats
from rt_safe_rl.bringup import Composition
from rt_safe_rl.config import AppConfig
from rt_safe_rl.core import stats
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.rt.cycle import cpu_share, thread_cpu_s

if TYPE_CHECKING:
    from rt_safe_rl.demo import HumanDistance

F64 = npt.NDArray[np.float64]


class Collector:
    """Drains the sim nodes' rings (their single reader) and keeps running figures."""

    def __init__(self, comp: Composition) -> None:
        self.robot = comp.nodes['sim_robot']
        self.human = comp.nodes['sim_human']
        self.rows: list[F64] = []
        self.hrows: list[F64] = []
        self.e2e: list[F64] = []
        self._buf_r = np.zeros((0, 3))  # sized at the first drain (the trace exists after configure)
        self._buf_h = np.zeros((1 << 13, 4))
        self._buf_e = np.zeros((1 << 14, 2))
        self._last_ticks = 0
        self._last_t = time.monotonic()
        self.rate_hz = math.nan
        self.window_e2e_ns: F64 = np.zeros(0)

    def _cycles(self) -> int:
        iface = self.robot.interface
        return int(iface.reads) if iface is not None else 0

    def restart_rate(self) -> None:
        """Start the loop-rate window now (call when the executor starts spinning)."""
        self._last_ticks = self._cycles()
        self._last_t = time.monotonic()

    def drain(self) -> None:
        if self.robot.trace is not None:
            if self._buf_r.shape[1] != self.robot.trace.width:
                self._buf_r = np.zeros((self.robot.trace.capacity, self.robot.trace.width))
            k = self.robot.trace.drain(self._buf_r)
            if k:
                self.rows.append(self._buf_r[:k].copy())
        k = self.human.trace.drain(self._buf_h)
        if k:
            self.hrows.append(self._buf_h[:k].copy())
        k = self.robot.e2e_ring.drain(self._buf_e)
        self.window_e2e_ns = self._buf_e[:k, 1].copy()
        if k:
            self.e2e.append(self._buf_e[:k].copy())
        now = time.monotonic()
        ticks = self._cycles()
        if now > self._last_t:
            self.rate_hz = (ticks - self._last_ticks) / (now - self._last_t)
        self._last_ticks, self._last_t = ticks, now

    def robot_trace(self) -> F64:
        """All robot-trace rows drained so far, (n, width): (t_ns, seq, max|dq|/v_max, q...)."""
        return _cat(self.rows, self._buf_r.shape[1])

    def human_trace(self) -> F64:
        """All human-trace rows drained so far, (n, 4): (t_ns, x, y, z) [ns, m]."""
        return _cat(self.hrows, 4)

    def e2e_ns(self) -> F64:
        """All end-to-end latency rows drained so far, (n, 2): (t_rx_ns, latency_ns)."""
        return _cat(self.e2e, 2)


def _cat(parts: list[F64], width: int) -> F64:
    return np.concatenate(parts) if parts else np.zeros((0, width))


def per_1e4(misses: int, cycles: int) -> float:
    return round(misses * 1e4 / cycles, 2) if cycles else math.nan


def pct_us(x_ns: F64, q: float) -> float:
    return stats.percentile(x_ns, q) / 1e3


def status_text(
    col: Collector,
    dist_m: float,
    cycle: Any,
    floor_1e4: float,
    interventions: int,
    elapsed_s: float,
    stop_m: float,
) -> str:
    w = col.window_e2e_ns
    flag = ' STOP' if dist_m <= stop_m else ''
    misses = cycle.misses if cycle is not None else 0
    runs = cycle.runs if cycle is not None else 0
    cpu = cycle.budget.summary()['total']['mean_us'] if cycle is not None else math.nan
    return (
        f't {elapsed_s:4.1f}s | loop {col.rate_hz:4.0f} Hz | miss {misses:3d} = {per_1e4(misses, runs):5.1f}'
        f'/1e4 (floor {floor_1e4:4.1f}) | e2e p50 {pct_us(w, 50):4.0f} p99 {pct_us(w, 99):5.0f} us | '
        f'cpu {cpu:4.0f} us/cycle | interv {interventions:5d} | human {dist_m:4.2f} m{flag}'
    )


@dataclass
class Watch:
    """What the status loop saw (kept across a Ctrl-C) and its rich Live display (None: plain)."""

    min_dist_m: float = math.inf
    dist_m: float = math.nan
    live: Any = None


def start_spin(comp: Composition, spin_error: list[BaseException]) -> threading.Thread:
    """Spin the composition's executor in a daemon thread; its exception lands in `spin_error`."""

    def _spin() -> None:
        try:
            comp.executor.spin()
        except BaseException as err:
            spin_error.append(err)

    thread = threading.Thread(target=_spin, name='rt_safe_rl_demo_spin', daemon=True)
    thread.start()
    return thread


def watch_loop(
    comp: Composition,
    col: Collector,
    watch: Watch,
    thread: threading.Thread,
    spin_error: list[BaseException],
    dist: HumanDistance,
    status: Callable[..., str],
    interventions: Callable[[], int],
    *,
    t_start: float,
    duration_s: float,
    period_s: float,
    stop_event: threading.Event | None,
    live: bool,
    log: Any,
) -> None:
    """Every `period_s`: drain the rings, update the human distance [m] and show the status line
    (rich Live when `live`, else `log` once a second), until `duration_s` (0: forever), `stop_event`
    or the end of the spin. Not RT-safe (the demo's main thread); the caller exits ``watch.live``."""
    if live:
        from rich.console import Console
        from rich.live import Live

        watch.live = Live('', console=Console(stderr=True), refresh_per_second=8, transient=False)
        watch.live.__enter__()
    last_plain = 0.0
    while True:
        elapsed = time.monotonic() - t_start
        if (duration_s > 0 and elapsed >= duration_s) or (stop_event is not None and stop_event.is_set()):
            break
        if spin_error or not thread.is_alive():
            break
        time.sleep(min(period_s, max(0.0, duration_s - elapsed)) if duration_s > 0 else period_s)
        col.drain()
        arm = comp.nodes['sim_robot'].arm
        robot_q = arm.q.copy() if arm is not None else None
        human = comp.nodes['sim_human']._pos.copy()
        if robot_q is not None and comp.nodes['sim_human'].published:
            watch.dist_m = dist(robot_q, human)
            watch.min_dist_m = min(watch.min_dist_m, watch.dist_m)
        text = status(
            col, watch.dist_m, comp.cycle, interventions=interventions(), elapsed_s=time.monotonic() - t_start
        )
        if watch.live is not None:
            watch.live.update(text)
        elif log is not None and time.monotonic() - last_plain >= 1.0:
            last_plain = time.monotonic()
            log(text)


@dataclass
class Ending:
    """What :func:`shut_down` read from the composition before destroying it."""

    safety_state: dict[str, Any]
    robot_stats: dict[str, Any]
    first_command_ns: int
    cycle_stats: dict[str, Any]
    errors: dict[str, str]
    rt_report: dict[str, Any]


def shut_down(
    comp: Composition,
    thread: threading.Thread | None,
    col: Collector,
    spin_error: list[BaseException],
    interrupted: bool,
) -> Ending:
    """Stop the loop (a controlled stop-and-hold after SIGINT/SIGTERM), collect the last figures,
    destroy the composition. Not RT-safe."""
    if interrupted and thread is not None and thread.is_alive():  # SIGINT/SIGTERM: stop, hold
        signals.stop_while_spinning(comp.nodes.values(), 'demo: controlled shutdown')
    # the filter's state while the loop still runs (once the control thread has stopped, the
    # safety monitor would latch STALE_STATE on the silence of our own shutdown)
    safety_state = filter_state(comp.nodes.get('safety'))
    comp.executor.shutdown()
    if thread is not None:
        thread.join(10.0)
    col.drain()
    robot = comp.nodes['sim_robot']
    robot_stats = robot.stats()
    first_ns = robot.interface.first_command_ns if robot.interface is not None else 0
    cycle_stats = comp.cycle.stats() if comp.cycle is not None else {}
    errors = dict(comp.errors)
    if spin_error:
        errors['executor'] = repr(spin_error[0])
    try:
        rt_report = comp.executor.report()
    except Exception:
        rt_report = {}
    comp.destroy()
    return Ending(safety_state, robot_stats, first_ns, cycle_stats, errors, rt_report)


def wait_first_cycle(comp: Composition, thread: threading.Thread, stop: threading.Event | None) -> None:
    """Block until the control cycle ran once and is on time (its next deadline is ahead: the
    periods that fell behind during the executor's set-up are caught up or skipped), or the spin
    ended / 60 s. The demo's duration and its loop rate then count the loop's own periods, not
    the set-up or its backlog (counted in, a 2 s run read 1049 states per second)."""
    end = time.monotonic() + 60.0
    cyc = comp.cycle
    while cyc is not None and thread.is_alive() and time.monotonic() < end:
        if stop is not None and stop.is_set():
            return
        if cyc.runs > 0 and cyc.next_deadline_ns > time.monotonic_ns():
            return
        time.sleep(0.001)


def start_floor(cfg: AppConfig, seconds: float) -> Any:
    """Start the C floor loop on the control group's CPU and priority (None: unavailable)."""
    if seconds <= 0:
        return None
    g = cfg.rt.groups['control']
    cpu = g.real_cpus[0] if g.real_cpus else -1
    try:
        return CFloorLoop(cfg.control.period_ns, seconds, g.priority if g.is_rt else 1, cpu)
    except RtSafeRlError as err:
        return str(err)


def floor_result(floor: Any, period_ns: int) -> dict[str, Any]:
    """Misses per 10^4 and lateness of the floor loop (or why it did not run)."""
    if floor is None:
        return {'skipped': 'not run'}
    if isinstance(floor, str):
        return {'skipped': floor}
    dl, st, fifo = floor.samples()
    res = loop_stats(dl, st, period_ns)
    return {
        'misses_per_1e4': res['misses_per_1e4'],
        'misses': res['misses'],
        'cycles': res['cycles'],
        'lateness_us': res['lateness_us'],
        'fifo': fifo,
    }


def floor_text(res: dict[str, Any]) -> str:
    if 'skipped' in res:
        return f'skipped ({res["skipped"]})'
    lat = res.get('lateness_us', {})
    return (
        f'{res["misses_per_1e4"]} misses per 1e4 ({res["misses"]} of {res["cycles"]}), lateness p50 '
        f'{lat.get("p50")} p99 {lat.get("p99")} max {lat.get("max")} us'
        + ('' if res.get('fifo') else ' (NOT SCHED_FIFO)')
    )


@dataclass
class LoopOutcome:
    """What :func:`run_loop` measured."""

    col: Collector
    watch: Watch
    floor_res: dict[str, Any]
    run_s: float
    loop_reads: int  # states the loop read in run_s (the shutdown's own reads are not the loop's rate)
    loop_runs: int  # control-cycle runs in run_s (start-up backlog and shutdown excluded)
    loop_misses: int  # of them, cycles that started more than one period late
    cpu: dict[str, float]  # per-thread CPU share over run_s ({}: the loop did not start)
    end: Ending
    interrupted: bool


def run_loop(
    comp: Composition,
    cfg: AppConfig,
    floor: Any,
    floor_s: float,
    dist: HumanDistance,
    stop_m: float,
    interventions: Callable[[], int],
    *,
    duration_s: float,
    stop_event: threading.Event | None,
    live: bool,
    log: Any,
) -> LoopOutcome:
    """Start the composed nodes, read the C `floor` loop's result (:func:`start_floor`), spin the
    executor and watch it (:func:`watch_loop`) for `duration_s` (0: until Ctrl-C / `stop_event`),
    then shut down (:func:`shut_down`). Ctrl-C ends it cleanly (``interrupted``); other exceptions
    propagate after the shutdown. Not RT-safe (the demo's main thread)."""
    interrupted = False
    thread: threading.Thread | None = None
    spin_error: list[BaseException] = []
    col = Collector(comp)
    watch = Watch()
    floor_res: dict[str, Any] = {'skipped': 'not run'}
    t_start = time.monotonic()
    reads0 = runs0 = misses0 = 0
    cpu0: dict[str, float] = {}
    try:
        comp.start(log=log)
        floor_res = floor_result(floor, cfg.control.period_ns)
        floor = None
        if log is not None:
            log(f'floor (C SCHED_FIFO loop, {floor_s:g} s before the loop): {floor_text(floor_res)}')
        thread = start_spin(comp, spin_error)
        wait_first_cycle(comp, thread, stop_event)  # the executor's set-up (GC freeze, mlock) first
        t_start = time.monotonic()
        reads0 = col._cycles()
        runs0, misses0 = _cycle_counts(comp)
        cpu0 = thread_cpu_s()
        col.restart_rate()
        status = functools.partial(
            status_text, floor_1e4=float(floor_res.get('misses_per_1e4', math.nan)), stop_m=stop_m
        )
        watch_loop(
            comp,
            col,
            watch,
            thread,
            spin_error,
            dist,
            status,
            interventions,
            t_start=t_start,
            duration_s=duration_s,
            period_s=cfg.demo.status_period_s,
            stop_event=stop_event,
            live=live,
            log=log,
        )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        run_s = time.monotonic() - t_start
        loop_reads = col._cycles() - reads0 if cpu0 else 0
        runs1, misses1 = _cycle_counts(comp)
        loop_runs, loop_misses = (runs1 - runs0, misses1 - misses0) if cpu0 else (0, 0)
        cpu1 = thread_cpu_s()
        if floor is not None and not isinstance(floor, str):
            floor.stop()
        if watch.live is not None:
            watch.live.__exit__(None, None, None)
        end = shut_down(comp, thread, col, spin_error, interrupted)
    cpu = cpu_share(cpu0, cpu1, run_s) if cpu0 else {}
    counts = (loop_reads, loop_runs, loop_misses)
    return LoopOutcome(col, watch, floor_res, run_s, *counts, cpu, end, interrupted)


def _cycle_counts(comp: Composition) -> tuple[int, int]:
    """(runs, misses) of the control cycle so far ((0, 0) without one). Any thread."""
    cyc = comp.cycle
    return (int(cyc.runs), int(cyc.misses)) if cyc is not None else (0, 0)


def filter_state(node: Any) -> dict[str, Any]:
    """Latched stop and last fault of the safety filter at the end of the run ({} if absent)."""
    f = getattr(node, 'filter', None)
    if f is None:
        return {}
    try:
        return {'stop_latched': bool(f.stop_latched), 'fault': str(f.report.fault)}
    except Exception:
        return {}
