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

Measurements, over the measured window (from the first on-time cycle to the end of the run; the
start-up backlog and the controlled stop at shutdown are in ``cycle``, the task's lifetime
counters): loop rate = states read per second; misses = cycles that started more than one period
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
import rclpy
from rclpy.context import Context
from rclpy.signals import SignalHandlerOptions

from rt_safe_rl import signals
from rt_safe_rl.bringup import (
    build_arg_parser,
    compose,
    config_from_args,
    select_nodes,
    split_ros_args,
)
from rt_safe_rl.config import AppConfig
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.demo_loop import Collector, pct_us, per_1e4, run_loop, start_floor
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
    floor = start_floor(cfg, floor_s)
    try:
        comp = compose(cfg, keys, context=context, namespace=namespace, cli_args=cli_args)
    except BaseException:
        if floor is not None and not isinstance(floor, str):
            floor.stop()
        raise
    out = run_loop(
        comp,
        cfg,
        floor,
        floor_s,
        dist,
        stop_m,
        lambda: c_int.value - int0,
        duration_s=duration_s,
        stop_event=stop_event,
        live=live,
        log=log,
    )
    col, end = out.col, out.end
    summary = _summary(
        col=col,
        run_s=out.run_s,
        loop_reads=out.loop_reads,
        loop_runs_misses=(out.loop_runs, out.loop_misses),
        robot_stats=end.robot_stats,
        cycle_stats=end.cycle_stats,
        floor_res=out.floor_res,
        cpu=out.cpu,
        first_command_s=(end.first_command_ns - t_begin_ns) * 1e-9 if end.first_command_ns else math.nan,
        age_at_begin_s=age_at_begin_s,
        interventions=int(c_int.value - int0),
        dist=(out.watch.min_dist_m, out.watch.dist_m, stop_m),
        safety_state=end.safety_state,
        nodes_active=[k for k in keys if k not in end.errors],
        errors=end.errors,
        rt_report=end.rt_report,
        interrupted=out.interrupted,
    )
    return DemoResult(
        summary=summary,
        robot_trace=col.robot_trace(),
        human_trace=col.human_trace(),
        e2e_ns=col.e2e_ns(),
        errors=end.errors,
        interrupted=out.interrupted,
    )


# command-audit counters that are limit violations
_VIOLATION_KEYS = ('position_violations', 'velocity_violations', 'acceleration_violations', 'nonfinite')


def _rt_summary(rt_report: dict[str, Any]) -> dict[str, Any]:
    """The summary's ``rt`` part: the executor report's OS / warning / wake-up / stall entries and,
    per task, its runs, misses, skips, catch-ups and max lateness [us]."""
    return {
        **{k: rt_report[k] for k in ('os', 'warnings', 'non_rt_wakeups', 'stalls') if k in rt_report},
        'tasks': {
            name: {k: t.get(k) for k in ('runs', 'misses', 'skipped', 'caught_up', 'max_lateness_us')}
            for name, t in rt_report.get('tasks', {}).items()
        },
    }


def _summary(
    *,
    col: Collector,
    run_s: float,
    loop_reads: int,
    loop_runs_misses: tuple[int, int] = (0, 0),
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
    e2e = col.e2e_ns()
    lat = e2e[:, 1] if e2e.size else np.zeros(0)
    audit = robot_stats.get('audit', {})
    min_dist, dist_m, stop_m = dist
    # misses of the measured window (the floor's are of its own window); the cycle's lifetime
    # counters (start-up backlog and the controlled stop at shutdown too) stay under 'cycle'
    runs, misses = loop_runs_misses
    if runs == 0:
        runs, misses = int(cycle_stats.get('runs', 0)), int(cycle_stats.get('misses', 0))
    return {
        'duration_s': round(run_s, 3),
        'loop_rate_hz': round(loop_reads / run_s, 1) if run_s > 0 else math.nan,
        'e2e_latency_us': {
            'p50': round(pct_us(lat, 50), 1),
            'p99': round(pct_us(lat, 99), 1),
            'max': round(float(lat.max()) / 1e3, 1) if lat.size else math.nan,
            'count': int(lat.size),
        },
        'cycles_measured': runs,
        'deadline_misses': misses,
        'misses_per_1e4': per_1e4(misses, runs),
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
        'command_limit_violations': int(sum(audit.get(k, 0) for k in _VIOLATION_KEYS)),
        'command_audit': audit,
        'robot_holds': robot_stats.get('holds', 0),
        'safety': safety_state,
        'nodes_active': nodes_active,
        'node_errors': errors,
        'rt': _rt_summary(rt_report),
        'interrupted': interrupted,
        'signal': signals.signal_name(signals.received()) if interrupted else None,
    }


def jsonable(x: Any) -> Any:
    """JSON-able copy of a summary: numpy scalars -> Python, non-finite floats -> None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return jsonable(x.item())
    return x


def main(argv: list[str] | None = None) -> int:
    """`rt-safe-rl demo` entry point; returns the exit code (2 when a node failed to start)."""
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
    summary = jsonable(result.summary)
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
