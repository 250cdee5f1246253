"""``rt-safe-rl record``: record the control topics to an mcap rosbag2 bag (no ros2 CLI needed).

    rt-safe-rl record [--out DIR] [--duration S] [--config C] [--topics NAME,...] [--with-sim]
        [--seed N] [--human-speed M_S] [--human-near M] [--human-far M] [--human-phase S]
        [--goal-period S] [--goal-span F] [--no-operator] [--no-monitor] [--set KEY=VALUE]...

Subscribes (raw CDR, no deserialisation) to every topic of the config's ``topics:`` section
(robot state and command, policy action and command, human, operator, ``safety/status`` and
``/diagnostics``) and writes every message with its receive time (system clock, as rosbag2 does)
to ``DIR`` (mcap storage, metadata.yaml written on close). ``--with-sim`` starts ``bringup --sim``
(simulated robot at 1 kHz, human, operator, policy, safety and the monitor: the full closed loop)
in a child process and records it; the scenario options make a varied archive (``--seed`` draws
the person's approach directions and the operator's goals; speed, near/far distance and phase of
the person's walk; goal period and span). Without it, the tool records whatever runs on the ROS
graph. The recorder runs in its own process on an EventsExecutor.

Ctrl-C (or the end of ``--duration``) closes the bag cleanly: nothing recorded is lost. Prints a
JSON summary (path, duration, per topic: messages, rate, and for the robot state the expected
count at ``control.rate_hz`` over the header stamps' span, the sequence gaps and the missing
messages) and one line per topic on stderr, stating any drops. Bad input exits 2 with one line.
Not RT code: the recorder's callbacks run in the executor's non-RT thread.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rt_safe_rl.bench import bag as bagmod
from rt_safe_rl.bench.bag import typestore
from rt_safe_rl.config import load_config
from rt_safe_rl.core.errors import ConfigError, RtSafeRlError

# topics-section key -> message type (DEVELOPERS.md topic table)
TOPIC_TYPES: dict[str, str] = {
    'joint_states': 'sensor_msgs/msg/JointState',
    'human_position': 'geometry_msgs/msg/PointStamped',
    'operator_command': 'std_msgs/msg/Float64MultiArray',
    'policy_command': 'std_msgs/msg/Float64MultiArray',
    'policy_action': 'sensor_msgs/msg/JointState',
    'robot_command': 'std_msgs/msg/Float64MultiArray',
    'joint_command': 'sensor_msgs/msg/JointState',
    'safety_status': 'diagnostic_msgs/msg/DiagnosticStatus',
    'diagnostics': 'diagnostic_msgs/msg/DiagnosticArray',
}
# scenario option -> sim config key (``--with-sim``)
SCENARIO: dict[str, str] = {
    'human_speed': 'sim.human.speed_m_s',
    'human_near': 'sim.human.near_m',
    'human_far': 'sim.human.far_m',
    'human_phase': 'sim.human.start_phase_s',
    'goal_period': 'sim.operator.goal_period_s',
    'goal_span': 'sim.operator.goal_span',
}


def _msg_class(msgtype: str) -> Any:
    pkg, _, name = msgtype.split('/')
    module = __import__(f'{pkg}.msg', fromlist=[name])
    return getattr(module, name)


class Recorder:
    """A plain rclpy node whose raw subscriptions append to an mcap bag (non-RT callbacks)."""

    def __init__(self, node: Any, out: Path, topics: dict[str, str]) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.node = node
        self.out = out
        self.counts: dict[str, int] = {}
        self._writer: Any = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        store = typestore()
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT)
        self._subs = []
        self.t_first_ns = 0
        self.t_last_ns = 0
        for name, msgtype in topics.items():
            resolved = node.resolve_topic_name(name)
            conn = self._writer.add_connection(resolved, msgtype, typestore=store)
            self.counts[resolved] = 0
            cb = self._callback(resolved, conn)
            self._subs.append(node.create_subscription(_msg_class(msgtype), name, cb, qos, raw=True))

    def _callback(self, topic: str, conn: Any) -> Any:
        writer = self._writer
        counts = self.counts

        def on_raw(data: bytes) -> None:
            t = time.time_ns()
            if writer is not None and self._writer is not None:
                writer.write(conn, t, data)
                counts[topic] += 1
                if not self.t_first_ns:
                    self.t_first_ns = t
                self.t_last_ns = t

        return on_raw

    def close(self) -> None:
        """Finish the bag (metadata.yaml). Idempotent."""
        if self._writer is not None:
            w, self._writer = self._writer, None
            w.close()


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(prog='rt-safe-rl record', description=__doc__.split('\n\n')[0])
    p.add_argument('--out', help='bag directory to create (default: rt_safe_rl_<UTC time>)')
    p.add_argument('--duration', type=float, default=10.0, help='seconds to record (0 = until Ctrl-C)')
    p.add_argument('--config', help='config YAML (default: the shipped config/default.yaml)')
    p.add_argument(
        '--topics',
        default='',
        help=f'comma-separated keys of the topics section (default: all of {",".join(TOPIC_TYPES)})',
    )
    p.add_argument(
        '--with-sim',
        action='store_true',
        help='start `bringup --sim` (the full simulated closed loop) and record it',
    )
    p.add_argument('--settle', type=float, default=0.5, help='seconds the sim runs before recording starts')
    p.add_argument('--start-timeout', type=float, default=180.0, help='seconds to wait for the simulator')
    g = p.add_argument_group('scenario (--with-sim)')
    g.add_argument(
        '--seed', type=int, help="seed of the person's approach directions and the operator's goals"
    )
    g.add_argument('--human-speed', type=float, metavar='M_S', help="the person's walking speed (m/s)")
    g.add_argument(
        '--human-near', type=float, metavar='M', help='closest distance of the walk to the base (m)'
    )
    g.add_argument('--human-far', type=float, metavar='M', help='farthest distance of the walk (m)')
    g.add_argument('--human-phase', type=float, metavar='S', help='shift of the walk cycle (s)')
    g.add_argument('--goal-period', type=float, metavar='S', help='a new operator goal every S seconds')
    g.add_argument(
        '--goal-span', type=float, metavar='F', help='goal spread, fraction of the joint range (0, 1]'
    )
    g.add_argument('--no-operator', action='store_true', help='no operator command (policy goals only)')
    g.add_argument('--no-monitor', action='store_true', help='no monitor node (then no /diagnostics)')
    g.add_argument(
        '--set', dest='sets', action='append', default=[], metavar='KEY=VALUE', help='any config override'
    )
    return p


def scenario_sets(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides of the simulated scenario (seed, walk, goals) for ``bringup``.

    The simulated robot's state is mirrored on joint_states every period (the direct cycle
    mirrors every ``topics.observer_decimation``-th by default): the bag holds the full-rate
    state stream a replay needs. A user ``--set`` comes last and wins."""
    out: list[str] = ['topics.observer_decimation=1']
    if args.seed is not None:
        out += [f'sim.human.seed={args.seed}', f'sim.operator.seed={args.seed}']
    for opt, key in SCENARIO.items():
        value = getattr(args, opt)
        if value is not None:
            out.append(f'{key}={value}')
    if args.no_operator:
        out.append('sim.operator.publish_operator_command=false')
    return out + list(args.sets)


def _start_sim(args: argparse.Namespace, run_s: float) -> subprocess.Popen[bytes]:
    """`bringup --sim` (robot, human, operator, policy, safety) in its own process."""
    cmd = [sys.executable, '-m', 'rt_safe_rl.bringup', '--sim', '--duration', f'{run_s:.3f}']
    if args.no_monitor:
        cmd.append('--no-monitor')
    if args.config:
        cmd += ['--config', str(args.config)]
    for text in scenario_sets(args):
        cmd += ['--set', text]
    env = dict(os.environ)
    env.setdefault('RT_ENABLE_PROMETHEUS', '0')  # the recording needs /diagnostics, not an HTTP port
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )


def _make_executor(ctx: Any) -> Any:
    """EventsExecutor when available (a third of SingleThreaded's cost per callback)."""
    try:
        from rclpy.experimental import EventsExecutor

        return EventsExecutor(context=ctx)
    except ImportError:
        from rclpy.executors import SingleThreadedExecutor

        return SingleThreadedExecutor(context=ctx)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rt-safe-rl record``."""
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except RtSafeRlError as err:
        print(f'rt-safe-rl record: error: {err}', file=sys.stderr)
        return 2


def _topics(spec: str, app: Any) -> dict[str, str]:
    """``--topics`` (comma-separated keys of TOPIC_TYPES, '' = all) as topic name -> message type."""
    keys = [k.strip() for k in spec.split(',') if k.strip()] or list(TOPIC_TYPES)
    unknown = [k for k in keys if k not in TOPIC_TYPES]
    if unknown:
        raise ConfigError(f'--topics: unknown {unknown}; allowed: {list(TOPIC_TYPES)}')
    return {getattr(app.topics, k): TOPIC_TYPES[k] for k in keys}


def _out_path(out: str) -> Path:
    """The bag folder: ``--out`` or ``rt_safe_rl_<UTC time>``; an existing one is refused."""
    stamp = _dt.datetime.now(_dt.UTC).strftime('%Y%m%d_%H%M%S')
    path = Path(out or f'rt_safe_rl_{stamp}')
    if path.exists():
        raise ConfigError(f'{path} already exists; refusing to overwrite a recording')
    return path


def _stop_sim(sim: subprocess.Popen[bytes]) -> None:
    """Stop the simulator if it still runs: SIGINT, then kill after 10 s."""
    if sim.poll() is None:
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait(timeout=5)


def _main(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions

    if args.duration < 0:
        raise ConfigError(f'--duration must be >= 0, got {args.duration}')
    if args.with_sim and args.duration == 0:
        raise ConfigError('--with-sim needs a finite --duration')
    app = load_config(args.config)
    topics = _topics(args.topics, app)
    out = _out_path(args.out)

    ctx = Context()
    rclpy.init(context=ctx, args=[], signal_handler_options=SignalHandlerOptions.NO)  # Ctrl-C closes the bag
    executor = _make_executor(ctx)
    recorder: Recorder | None = None
    rnode: Any = None
    sim: subprocess.Popen[bytes] | None = None
    notes: list[str] = []
    interrupted = False
    t0 = time.monotonic()
    recorded_s = 0.0
    try:
        rnode = Node('rt_safe_rl_recorder', context=ctx)
        executor.add_node(rnode)
        if args.with_sim:
            sim = _start_sim(args, args.settle + args.duration + 30.0)
            _wait_for_publisher(rnode, executor, app.topics.joint_states, sim, args.start_timeout)
            end = time.monotonic() + args.settle
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.05)
        recorder = Recorder(rnode, out, topics)
        t0 = time.monotonic()
        end = t0 + args.duration if args.duration > 0 else float('inf')
        try:
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.05)
                if sim is not None and sim.poll() is not None:
                    notes.append(f'the simulator exited early ({sim.returncode})')
                    break
        except KeyboardInterrupt:
            interrupted = True
        recorded_s = time.monotonic() - t0
    finally:
        if recorder is not None:
            recorder.close()
        if sim is not None:
            _stop_sim(sim)
        executor.shutdown()
        if rnode is not None:
            rnode.destroy_node()
        if ctx.ok():
            rclpy.shutdown(context=ctx)
    assert recorder is not None
    topics_out = topic_summary(out, recorder.counts, recorded_s, app)
    summary = {
        'bag': str(out),
        'storage': 'mcap',
        'recorded_s': round(recorded_s, 3),
        'interrupted': interrupted,
        'messages': dict(recorder.counts),
        'topics': topics_out,
        'with_sim': bool(args.with_sim),
        'scenario': scenario_sets(args) if args.with_sim else [],
        'notes': notes,
    }
    print(json.dumps(summary, indent=1))
    for name, t in topics_out.items():
        print(f'rt-safe-rl record: {name}: {t["text"]}', file=sys.stderr)
    if sum(recorder.counts.values()) == 0:
        print('rt-safe-rl record: warning: no message received on any topic', file=sys.stderr)
    return 0


def state_drops(bag: Path, topic: str, rate_hz: float) -> dict[str, Any]:
    """Read the robot state back from the bag: the header stamps' span against ``rate_hz``
    (periods without a recorded state: the publisher skipped them or they were lost) and the
    stamps not newer than the one before (duplicates or out of order)."""
    info = bagmod.inspect_bag(bag)
    store = bagmod.typestore()
    stamps: list[int] = []
    for _t, _recv, raw in bagmod.iter_raw(info, [topic]):
        msg = store.deserialize_cdr(raw, bagmod.JOINT_STATE)
        stamps.append(int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec))
    out: dict[str, Any] = {}
    if len(stamps) >= 2:
        out['stamps_not_increasing'] = int((np.diff(np.asarray(stamps, dtype=np.int64)) <= 0).sum())
        st = np.sort(np.asarray(stamps, dtype=np.int64))
        period = 1e9 / rate_hz
        span_s = float(st[-1] - st[0]) / 1e9
        expected = round(span_s * rate_hz) + 1
        gaps = np.rint(np.diff(st) / period).astype(np.int64) - 1
        out.update(
            expected_at_rate=expected,
            stamp_span_s=round(span_s, 6),
            missing_periods=int(gaps[gaps > 0].sum()),
        )
    return out


def topic_summary(
    bag: Path, counts: dict[str, int], recorded_s: float, app: Any
) -> dict[str, dict[str, Any]]:
    """Per topic: messages, rate (Hz) and, for the robot state, the drops (see :func:`state_drops`)
    with a one-line text that says them."""
    out: dict[str, dict[str, Any]] = {}
    js = '/' + app.topics.joint_states.lstrip('/')
    for name, n in counts.items():
        rate = n / recorded_s if recorded_s > 0 else 0.0
        t: dict[str, Any] = {'messages': n, 'rate_hz': round(rate, 2)}
        text = f'{n} messages, {rate:.1f} Hz'
        if name == js and n >= 2:
            try:
                t.update(state_drops(bag, name, float(app.control.rate_hz)))
            except RtSafeRlError as err:
                t['drops_error'] = str(err)
            if 'expected_at_rate' in t:
                text += (
                    f'; {t["expected_at_rate"]} expected at {app.control.rate_hz:g} Hz over the '
                    f'{t["stamp_span_s"]:.3f} s of header stamps: '
                    f'{t["missing_periods"]} periods without a state'
                )
            if t.get('stamps_not_increasing', 0):
                text += f', {t["stamps_not_increasing"]} stamps not newer than the one before'
            if t.get('missing_periods', 0) == 0 and t.get('stamps_not_increasing', 0) == 0:
                text += ' (no drops)'
        out[name] = {**t, 'text': text}
    return out


def _wait_for_publisher(
    node: Any, executor: Any, topic: str, sim: subprocess.Popen[bytes], timeout_s: float
) -> None:
    """Wait until `topic` carries messages (the simulated loop is configured and active)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    seen: list[int] = []
    sub = node.create_subscription(
        JointState,
        topic,
        lambda _m: seen.append(1),
        QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT),
    )
    try:
        _wait(node, executor, sim, timeout_s, lambda: bool(seen), f'no message on {topic}')
    finally:
        node.destroy_subscription(sub)


def _wait(
    node: Any, executor: Any, sim: subprocess.Popen[bytes], timeout_s: float, done: Any, what: str
) -> None:
    end = time.monotonic() + timeout_s
    while not done():
        if sim.poll() is not None:
            err = (sim.stderr.read() if sim.stderr else b'').decode(errors='replace').strip().splitlines()
            raise RtSafeRlError(
                f'the simulator (bringup --sim) exited ({sim.returncode}): {err[-1] if err else "no output"}'
            )
        if time.monotonic() > end:
            raise RtSafeRlError(f'{what} within {timeout_s:.0f} s')
        executor.spin_once(timeout_sec=0.1)
