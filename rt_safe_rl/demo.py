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

Measurements come from the simulated robot itself: loop rate = its ticks per second; e2e latency =
state publish -> command receipt matched by the state's seq; human distance = distance from the
person to the robot's monitored spheres (FK of the current joint state), computed here; safety
interventions and deadline misses from the process-wide metrics registry.
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
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.rt.metrics import registry

F64 = npt.NDArray[np.float64]


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

    def restart_rate(self) -> None:
        """Start the loop-rate window now (call when the executor starts spinning)."""
        self._last_ticks = self.robot.ticks
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
        ticks = self.robot.ticks
        if now > self._last_t:
            self.rate_hz = (ticks - self._last_ticks) / (now - self._last_t)
        self._last_ticks, self._last_t = ticks, now

    @staticmethod
    def _cat(parts: list[F64], width: int) -> F64:
        return np.concatenate(parts) if parts else np.zeros((0, width))


def _loop_rate_hz(trace: F64) -> float:
    """Mean tick rate of the robot (Hz) from its per-tick trace (first to last tick)."""
    if trace.shape[0] < 2:
        return math.nan
    span_s = (trace[-1, 0] - trace[0, 0]) * 1e-9
    return round((trace.shape[0] - 1) / span_s, 1) if span_s > 0 else math.nan


def _pct_us(x_ns: F64, q: float) -> float:
    return float(np.percentile(x_ns, q) / 1e3) if x_ns.size else math.nan


def _status_text(
    col: _Collector, dist_m: float, misses: int, interventions: int, elapsed_s: float, stop_m: float
) -> str:
    w = col.window_e2e_ns
    flag = ' STOP' if dist_m <= stop_m else ''
    return (
        f't {elapsed_s:4.1f}s | loop {col.rate_hz:4.0f} Hz | e2e p50 {_pct_us(w, 50):4.0f} '
        f'p99 {_pct_us(w, 99):5.0f} us | miss {misses:3d} | interv {interventions:5d} | '
        f'human {dist_m:4.2f} m{flag}'
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
) -> DemoResult:
    """Compose sim + safety + policy (+ monitor), run `duration_s` (0 = until Ctrl-C / `stop_event`),
    return the measurements. rclpy must be initialised for `context` (default: the global one).

    Raises:
        RtSafeRlError: the config or a node constructor is invalid.
    """
    cfg = config
    keys = select_nodes(
        with_sim=True, with_operator=cfg.demo.with_operator, with_monitor=cfg.demo.with_monitor
    )
    dist = HumanDistance(cfg)
    stop_m = protective_stop_distance_m(cfg.safety.ssm)
    reg = registry()
    c_miss, c_int = reg.counter('deadline_misses'), reg.counter('safety_interventions')
    miss0, int0 = c_miss.value, c_int.value
    comp = compose(cfg, keys, context=context, namespace=namespace, cli_args=cli_args)
    interrupted = False
    thread: threading.Thread | None = None
    spin_error: list[BaseException] = []
    col = _Collector(comp)
    min_dist = math.inf
    dist_m = math.nan
    live_ctx: Any = None
    t_start = time.monotonic()
    try:
        comp.start(log=log)

        def _spin() -> None:
            try:
                comp.executor.spin()
            except BaseException as err:
                spin_error.append(err)

        thread = threading.Thread(target=_spin, name='rt_safe_rl_demo_spin', daemon=True)
        thread.start()
        t_start = time.monotonic()
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
                col, dist_m, c_miss.value - miss0, c_int.value - int0, time.monotonic() - t_start, stop_m
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
        if live_ctx is not None:
            live_ctx.__exit__(None, None, None)
        if interrupted and thread is not None and thread.is_alive():  # SIGINT/SIGTERM: stop, hold
            signals.stop_while_spinning(comp.nodes.values(), 'demo: controlled shutdown')
        comp.executor.shutdown()
        if thread is not None:
            thread.join(10.0)
        col.drain()
        robot = comp.nodes['sim_robot']
        robot_stats = robot.stats()
        safety_state = _safety_state(comp.nodes.get('safety'))
        errors = dict(comp.errors)
        if spin_error:
            errors['executor'] = repr(spin_error[0])
        try:
            rt_report = comp.executor.report()
        except Exception:
            rt_report = {}
        comp.destroy()
    robot_trace = _Collector._cat(col.rows, col._buf_r.shape[1])
    human_trace = _Collector._cat(col.hrows, 4)
    e2e = _Collector._cat(col.e2e, 2)
    lat = e2e[:, 1] if e2e.size else np.zeros(0)
    audit = robot_stats.get('audit', {})
    summary = {
        'duration_s': round(run_s, 3),
        'loop_rate_hz': _loop_rate_hz(robot_trace),
        'e2e_latency_us': {
            'p50': round(_pct_us(lat, 50), 1),
            'p99': round(_pct_us(lat, 99), 1),
            'max': round(float(lat.max()) / 1e3, 1) if lat.size else math.nan,
            'count': int(lat.size),
        },
        'deadline_misses': int(c_miss.value - miss0),
        'safety_interventions': int(c_int.value - int0),
        'human_distance_m': {
            'min': round(min_dist, 3) if math.isfinite(min_dist) else math.nan,
            'last': round(dist_m, 3) if math.isfinite(dist_m) else math.nan,
            'stop_distance': round(stop_m, 3),
        },
        'robot_ticks': robot_stats['ticks'],
        'commands_received': robot_stats['commands_rx'],
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
        'robot_holds': robot_stats['holds'],
        'safety': safety_state,
        'nodes_active': [k for k in keys if k not in errors],
        'node_errors': errors,
        'rt': {
            **{k: rt_report[k] for k in ('os', 'warnings', 'non_rt_wakeups', 'stalls') if k in rt_report},
            'tasks': {
                name: {k: t.get(k) for k in ('runs', 'misses', 'skipped', 'max_lateness_us')}
                for name, t in rt_report.get('tasks', {}).items()
            },
        },
        'interrupted': interrupted,
        'signal': signals.signal_name(signals.received()) if interrupted else None,
    }
    return DemoResult(
        summary=summary,
        robot_trace=robot_trace,
        human_trace=human_trace,
        e2e_ns=e2e,
        errors=errors,
        interrupted=interrupted,
    )


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
