"""`rt-safe-rl demo`: the closed loop on the embedded default, in one process.

    rt-safe-rl demo [--duration S] [--config FILE] [--set KEY=VALUE ...] [--summary PATH] [--no-live]

Composes the simulated arm (1 kHz), the simulated human walking in and out of the workspace, the
simulated operator (task goals + shared-control command), the safety filter, the shipped default
policy and the monitor (see :mod:`rt_safe_rl.bringup`) on the RtExecutor; shows a live status
line (loop rate, end-to-end latency p50/p99, deadline misses, safety interventions, human
distance) and ends with ONE JSON object ``{"summary": {...}}`` on stdout, also written to the
file it names (``demo.summary_path``, default ``./demo_summary.json``). Ctrl-C stops cleanly (the
summary still comes). No external files, GPU or root needed (without privileges the RT settings
degrade to warnings).

The loop is the direct cycle (:class:`~rt_safe_rl.rt.cycle.ControlCycle`: read the simulated arm,
policy, safety filter, write, in one RT thread per period). Before it starts, the C SCHED_FIFO
floor loop (:class:`~rt_safe_rl.bench.rt_bench.CFloorLoop`, same CPU and priority) measures the
machine for ``FLOOR_S`` seconds, so the live line shows the loop's misses next to the floor's:
a miss the floor has too is the machine's, not ours.

Measurements: loop rate = cycles per second; misses = cycles that started more than one period
late (per 10^4 cycles, next to the floor's); e2e latency = state read -> command written,
matched by seq (measured by the simulated robot); CPU per cycle per stage (``thread_time_ns``)
and the process's CPU share per thread; ``time_to_first_command_s`` = from the start of
:func:`run_demo` (configure, policy load and backend choice included) to the robot's first
command, ``process_start_to_first_command_s`` the same from the process's exec (Python start,
imports, config: what a user waits); human distance = distance from the person to the robot's
monitored spheres (FK of the current joint state), computed here; safety interventions from the
metrics registry.
Not RT code: everything here runs in the non-RT main thread.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl import signals
from rt_safe_rl.bringup import (
    Composition,
    build_arg_parser,
    compose,
    config_from_args,
    select_nodes,
    split_ros_args,
)
from rt_safe_rl.config import AppConfig
from rt_safe_rl.core import stats
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.rt.cycle import cpu_share, thread_cpu_s
from rt_safe_rl.rt.metrics import registry

F64 = npt.NDArray[np.float64]
FLOOR_S = 1.0
"""C floor loop measured this long (s) before the loop starts, while the nodes configure: 1000
periods at 1 kHz (the floor's misses per 10^4 then step by 10). It was 2 s, which made the start wait
for it: ``rt-safe-rl bench loop`` measures the floor for as long as asked."""


def process_age_s() -> float:
    """Seconds since this process was started (exec), from ``/proc/self/stat`` (10 ms resolution on
    CLOCK_BOOTTIME); NaN where that is unavailable."""
    try:
        fields = Path('/proc/self/stat').read_text().rsplit(')', 1)[1].split()
        start_s = int(fields[19]) / os.sysconf('SC_CLK_TCK')
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_s
    except (OSError, ValueError, IndexError, AttributeError):
        return math.nan


def protective_stop_distance_m(ssm: Any) -> float:
    """Separation (m, from the robot's covering spheres) at or below which SSM allows no motion
    toward the person: ``d0 = C_tot + v_h T_r`` (v_h = the near speed when d0 is within
    ``near_distance_m``). See :class:`rt_safe_rl.core.safety.config.SsmConfig`."""
    d_near = ssm.c_total_m + ssm.human_speed_near_m_s * ssm.reaction_time_s
    if d_near <= ssm.near_distance_m:
        return float(d_near)
    return float(ssm.c_total_m + ssm.human_speed_m_s * ssm.reaction_time_s)


class HumanDistance:
    """Distance (m) from a point to the robot's monitored spheres at joint state ``q`` (non-RT)."""

    def __init__(self, config: AppConfig) -> None:
        from rt_safe_rl.core.robot_model import RobotModel

        self.model = RobotModel.from_config(config.robot, config.base_dir)
        self._pts = np.zeros((self.model.n_points, 3))

    def __call__(self, q: F64, human: F64) -> float:
        """min over monitored points of ``|p_i(q) - human| - radius_i``."""
        pts = self.model.fk_points(np.ascontiguousarray(q, dtype=np.float64), self._pts)
        d = np.linalg.norm(pts - human[None, :], axis=1) - self.model.point_radius_m
        return float(d.min())


@dataclass
class DemoResult:
    """Everything the demo measured (the e2e test reads the traces)."""

    summary: dict[str, Any]
    robot_trace: F64  # (t_ns, seq, max|dq|/v_max, q...)
    human_trace: F64  # (t_ns, x, y, z)
    e2e_ns: F64  # (t_rx_ns, latency_ns)
    errors: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False


class _Collector:
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

    @staticmethod
    def _cat(parts: list[F64], width: int) -> F64:
        return np.concatenate(parts) if parts else np.zeros((0, width))


def _floor(cfg: AppConfig, seconds: float) -> Any:
    """Start the C floor loop on the control group's CPU and priority (None: unavailable)."""
    from rt_safe_rl.bench.rt_bench import CFloorLoop

    if seconds <= 0:
        return None
    g = cfg.rt.groups['control']
    cpu = g.real_cpus[0] if g.real_cpus else -1
    try:
        return CFloorLoop(cfg.control.period_ns, seconds, g.priority if g.is_rt else 1, cpu)
    except RtSafeRlError as err:
        return str(err)


def _floor_result(floor: Any, period_ns: int) -> dict[str, Any]:
    """Misses per 10^4 and lateness of the floor loop (or why it did not run)."""
    from rt_safe_rl.bench.rt_bench import loop_stats

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


def _per_1e4(misses: int, cycles: int) -> float:
    return round(misses * 1e4 / cycles, 2) if cycles else math.nan


def _pct_us(x_ns: F64, q: float) -> float:
    return stats.percentile(x_ns, q) / 1e3


def _status_text(
    col: _Collector,
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
        f't {elapsed_s:4.1f}s | loop {col.rate_hz:4.0f} Hz | miss {misses:3d} = {_per_1e4(misses, runs):5.1f}'
        f'/1e4 (floor {floor_1e4:4.1f}) | e2e p50 {_pct_us(w, 50):4.0f} p99 {_pct_us(w, 99):5.0f} us | '
        f'cpu {cpu:4.0f} us/cycle | interv {interventions:5d} | human {dist_m:4.2f} m{flag}'
    )


def run_demo(
    config: AppConfig,
    *,
    duration_s: float,
    live: bool = False,
    namespace: str = '',
    context: Any = None,
    cli_args: list[str] | None = None,
    stop_event: threading.Event | None = None,
    log: Any = None,
    floor_s: float = FLOOR_S,
) -> DemoResult:
    """Compose sim + safety + policy (+ monitor), run `duration_s` (0 = until Ctrl-C / `stop_event`),
    return the measurements. rclpy must be initialised for `context` (default: the global one).
    `floor_s` > 0 measures the C floor loop that long (while the nodes configure) before the loop.

    Raises:
        RtSafeRlError: the config or a node constructor is invalid.
    """
    cfg = config
    t_begin_ns = time.monotonic_ns()
    age_at_begin_s = process_age_s()
    keys = select_nodes(
        with_sim=True, with_operator=cfg.demo.with_operator, with_monitor=cfg.demo.with_monitor
    )
    dist = HumanDistance(cfg)
    stop_m = protective_stop_distance_m(cfg.safety.ssm)
    reg = registry()
    c_int = reg.counter('safety_interventions')
    int0 = c_int.value
    floor = _floor(cfg, floor_s)
    try:
        comp = compose(cfg, keys, context=context, namespace=namespace, cli_args=cli_args)
    except BaseException:
        if floor is not None and not isinstance(floor, str):
            floor.stop()
        raise
    interrupted = False
    thread: threading.Thread | None = None
    spin_error: list[BaseException] = []
    col = _Collector(comp)
    min_dist = math.inf
    dist_m = math.nan
    live_ctx: Any = None
    floor_res: dict[str, Any] = {'skipped': 'not run'}
    t_start = time.monotonic()
    reads0 = loop_reads = 0
    cpu0: dict[str, float] = {}
    try:
        comp.start(log=log)
        floor_res = _floor_result(floor, cfg.control.period_ns)
        floor = None
        floor_1e4 = float(floor_res.get('misses_per_1e4', math.nan))
        if log is not None:
            log(f'floor (C SCHED_FIFO loop, {floor_s:g} s before the loop): {_floor_text(floor_res)}')

        def _spin() -> None:
            try:
                comp.executor.spin()
            except BaseException as err:
                spin_error.append(err)

        thread = threading.Thread(target=_spin, name='rt_safe_rl_demo_spin', daemon=True)
        thread.start()
        _wait_first_cycle(comp, thread, stop_event)  # the executor's set-up (GC freeze, mlock) first
        t_start = time.monotonic()
        reads0 = _robot_reads(comp)
        cpu0 = thread_cpu_s()
        col.restart_rate()
        if live:
            from rich.console import Console
            from rich.live import Live

            live_ctx = Live('', console=Console(stderr=True), refresh_per_second=8, transient=False)
            live_ctx.__enter__()
        last_plain = 0.0
        period = cfg.demo.status_period_s
        while True:
            elapsed = time.monotonic() - t_start
            if (duration_s > 0 and elapsed >= duration_s) or (stop_event is not None and stop_event.is_set()):
                break
            if spin_error or not thread.is_alive():
                break
            time.sleep(min(period, max(0.0, duration_s - elapsed)) if duration_s > 0 else period)
            col.drain()
            arm = comp.nodes['sim_robot'].arm
            robot_q = arm.q.copy() if arm is not None else None
            human = comp.nodes['sim_human']._pos.copy()
            if robot_q is not None and comp.nodes['sim_human'].published:
                dist_m = dist(robot_q, human)
                min_dist = min(min_dist, dist_m)
            text = _status_text(
                col,
                dist_m,
                comp.cycle,
                floor_1e4,
                c_int.value - int0,
                time.monotonic() - t_start,
                stop_m,
            )
            if live_ctx is not None:
                live_ctx.update(text)
            elif log is not None and time.monotonic() - last_plain >= 1.0:
                last_plain = time.monotonic()
                log(text)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        run_s = time.monotonic() - t_start
        loop_reads = _robot_reads(comp) - reads0  # the shutdown's own reads are not the loop's rate
        cpu1 = thread_cpu_s()
        if floor is not None and not isinstance(floor, str):
            floor.stop()
        if live_ctx is not None:
            live_ctx.__exit__(None, None, None)
        if interrupted and thread is not None and thread.is_alive():  # SIGINT/SIGTERM: stop, hold
            signals.stop_while_spinning(comp.nodes.values(), 'demo: controlled shutdown')
        # the filter's state while the loop still runs (once the control thread has stopped, the
        # safety monitor would latch STALE_STATE on the silence of our own shutdown)
        safety_state = _safety_state(comp.nodes.get('safety'))
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
    summary = _summary(
        col=col,
        run_s=run_s,
        loop_reads=loop_reads,
        robot_stats=robot_stats,
        cycle_stats=cycle_stats,
        floor_res=floor_res,
        cpu=cpu_share(cpu0, cpu1, run_s) if cpu0 else {},
        first_command_s=(first_ns - t_begin_ns) * 1e-9 if first_ns else math.nan,
        age_at_begin_s=age_at_begin_s,
        interventions=int(c_int.value - int0),
        dist=(min_dist, dist_m, stop_m),
        safety_state=safety_state,
        nodes_active=[k for k in keys if k not in errors],
        errors=errors,
        rt_report=rt_report,
        interrupted=interrupted,
    )
    return DemoResult(
        summary=summary,
        robot_trace=_Collector._cat(col.rows, col._buf_r.shape[1]),
        human_trace=_Collector._cat(col.hrows, 4),
        e2e_ns=_Collector._cat(col.e2e, 2),
        errors=errors,
        interrupted=interrupted,
    )


def _wait_first_cycle(comp: Composition, thread: threading.Thread, stop: threading.Event | None) -> None:
    """Block until the control cycle ran once (or the spin ended / 60 s), so the demo's duration
    counts the loop, not the executor's set-up."""
    end = time.monotonic() + 60.0
    while comp.cycle is not None and comp.cycle.runs == 0 and thread.is_alive() and time.monotonic() < end:
        if stop is not None and stop.is_set():
            return
        time.sleep(0.01)


def _floor_text(res: dict[str, Any]) -> str:
    if 'skipped' in res:
        return f'skipped ({res["skipped"]})'
    lat = res.get('lateness_us', {})
    return (
        f'{res["misses_per_1e4"]} misses per 1e4 ({res["misses"]} of {res["cycles"]}), lateness p50 '
        f'{lat.get("p50")} p99 {lat.get("p99")} max {lat.get("max")} us'
        + ('' if res.get('fifo') else ' (NOT SCHED_FIFO)')
    )


def _robot_reads(comp: Any) -> int:
    """States the in-process robot has handed to the control cycle so far (0 without one)."""
    robot = comp.nodes.get('sim_robot')
    iface = getattr(robot, 'interface', None)
    return int(iface.reads) if iface is not None else 0


def _summary(
    *,
    col: _Collector,
    run_s: float,
    loop_reads: int,
    robot_stats: dict[str, Any],
    cycle_stats: dict[str, Any],
    floor_res: dict[str, Any],
    cpu: dict[str, float],
    first_command_s: float,
    interventions: int,
    age_at_begin_s: float = math.nan,
    dist: tuple[float, float, float],
    safety_state: dict[str, Any],
    nodes_active: list[str],
    errors: dict[str, str],
    rt_report: dict[str, Any],
    interrupted: bool,
) -> dict[str, Any]:
    """The summary dict (see the module docstring)."""
    e2e = _Collector._cat(col.e2e, 2)
    lat = e2e[:, 1] if e2e.size else np.zeros(0)
    audit = robot_stats.get('audit', {})
    min_dist, dist_m, stop_m = dist
    runs = int(cycle_stats.get('runs', 0))
    misses = int(cycle_stats.get('misses', 0))
    return {
        'duration_s': round(run_s, 3),
        'loop_rate_hz': round(loop_reads / run_s, 1) if run_s > 0 else math.nan,
        'e2e_latency_us': {
            'p50': round(_pct_us(lat, 50), 1),
            'p99': round(_pct_us(lat, 99), 1),
            'max': round(float(lat.max()) / 1e3, 1) if lat.size else math.nan,
            'count': int(lat.size),
        },
        'deadline_misses': misses,
        'misses_per_1e4': _per_1e4(misses, runs),
        'floor': floor_res,
        'cycle': {
            k: cycle_stats.get(k) for k in ('runs', 'misses', 'caught_up', 'skipped', 'max_lateness_us')
        },
        'cpu_per_cycle_us': cycle_stats.get('cpu_per_cycle_us', {}),
        'cpu_percent_of_one_cpu': cpu,
        'time_to_first_command_s': round(first_command_s, 3) if math.isfinite(first_command_s) else math.nan,
        'process_start_to_first_command_s': (
            round(age_at_begin_s + first_command_s, 2)
            if math.isfinite(first_command_s + age_at_begin_s)
            else math.nan
        ),
        'safety_interventions': interventions,
        'human_distance_m': {
            'min': round(min_dist, 3) if math.isfinite(min_dist) else math.nan,
            'last': round(dist_m, 3) if math.isfinite(dist_m) else math.nan,
            'stop_distance': round(stop_m, 3),
        },
        'robot_ticks': robot_stats.get('ticks', 0),
        'robot_reads': robot_stats.get('reads', 0),
        'commands_received': robot_stats.get('commands_rx', 0),
        'command_limit_violations': int(
            sum(
                audit.get(k, 0)
                for k in (
                    'position_violations',
                    'velocity_violations',
                    'acceleration_violations',
                    'nonfinite',
                )
            )
        ),
        'command_audit': audit,
        'robot_holds': robot_stats.get('holds', 0),
        'safety': safety_state,
        'nodes_active': nodes_active,
        'node_errors': errors,
        'rt': {
            **{k: rt_report[k] for k in ('os', 'warnings', 'non_rt_wakeups', 'stalls') if k in rt_report},
            'tasks': {
                name: {k: t.get(k) for k in ('runs', 'misses', 'skipped', 'caught_up', 'max_lateness_us')}
                for name, t in rt_report.get('tasks', {}).items()
            },
        },
        'interrupted': interrupted,
        'signal': signals.signal_name(signals.received()) if interrupted else None,
    }


def _safety_state(node: Any) -> dict[str, Any]:
    """Latched stop and last fault of the safety filter at the end of the run ({} if absent)."""
    f = getattr(node, 'filter', None)
    if f is None:
        return {}
    try:
        return {'stop_latched': bool(f.stop_latched), 'fault': str(f.report.fault)}
    except Exception:
        return {}


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return _jsonable(x.item())
    return x


def main(argv: list[str] | None = None) -> int:
    """`rt-safe-rl demo` entry point; returns the exit code (2 when a node failed to start)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    signals.install()
    own, ros_args = split_ros_args(list(sys.argv[1:] if argv is None else argv))
    ap = build_arg_parser('rt-safe-rl demo', (__doc__ or '').split('\n\n')[0])
    ap.add_argument(
        '--duration',
        type=float,
        default=None,
        help='seconds to run (default demo.duration_s = 10; 0 = until Ctrl-C)',
    )
    ap.add_argument('--summary', default=None, help='summary JSON path (default demo.summary_path)')
    ap.add_argument('--no-live', action='store_true', help='plain status lines instead of the live line')
    args = ap.parse_args(own)
    extra: dict[str, Any] = {}
    if args.duration is not None:
        if not args.duration >= 0:
            raise RtSafeRlError(f'--duration must be >= 0, got {args.duration}')
        extra['demo'] = {'duration_s': float(args.duration)}
    cfg = config_from_args(args, extra)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    live = cfg.demo.live_status and not args.no_live and sys.stderr.isatty()
    summary_path = Path(args.summary or cfg.demo.summary_path)

    def log(msg: str) -> None:
        print(f'demo: {msg}', file=sys.stderr, flush=True)

    log(
        f'config {cfg.source}; running {cfg.demo.duration_s:g} s'
        + (' (Ctrl-C to stop)' if cfg.demo.duration_s else ' until Ctrl-C')
    )
    if live and '--log-level' not in ros_args:  # keep the live line readable: node logs at WARN and above
        ros_args = [*(ros_args or ['--ros-args']), '--log-level', 'warn']
    ctx = Context()
    rclpy.init(args=['rt-safe-rl', *ros_args], context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    try:
        result = run_demo(
            cfg, duration_s=cfg.demo.duration_s, live=live, namespace=args.namespace, context=ctx, log=log
        )
    finally:
        if ctx.ok():
            rclpy.shutdown(context=ctx)
    summary = _jsonable(result.summary)
    summary['summary_path'] = str(summary_path.resolve())
    text = json.dumps({'summary': summary})
    try:
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps({'summary': summary}, indent=2) + '\n')
    except OSError as err:
        raise RtSafeRlError(f'cannot write the summary to {summary_path}: {err}') from None
    print(text, flush=True)
    log(f'summary written to {summary_path}')
    if result.errors:
        first = next(iter(result.errors.items()))
        print(f'rt-safe-rl demo: error: {first[0]}: {first[1]}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
