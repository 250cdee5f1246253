"""``rt-safe-rl record``: record the control topics to an mcap rosbag2 bag (no ros2 CLI needed).

    rt-safe-rl record [--out DIR] [--duration S] [--config C] [--topics NAME,...] [--with-sim]

Subscribes (raw CDR, no deserialisation) to the robot state, human, operator, policy command,
policy action and robot command topics of the config's ``topics:`` section and writes every
message with its receive time (system clock, as rosbag2 does) to ``DIR`` (mcap storage,
metadata.yaml written on close). ``--with-sim`` starts ``bringup --sim`` (simulated robot at 1 kHz,
human, operator, policy and safety: the full closed loop) in a child process and records it; without
it, the tool records whatever runs on the ROS graph. The recorder runs in its own process on an
EventsExecutor so that it keeps up with ~2,500 messages/s.

Ctrl-C (or the end of ``--duration``) closes the bag cleanly: nothing recorded is lost. Prints a
JSON summary (path, duration, messages per topic). Bad input exits 2 with one line. Not RT code:
the recorder's callbacks run in the executor's non-RT thread.
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

from rt_safe_rl.core.errors import ConfigError, RtSafeRlError

# topics-section key -> message type (DEVELOPERS.md topic table)
TOPIC_TYPES: dict[str, str] = {
    'joint_states': 'sensor_msgs/msg/JointState',
    'human_position': 'geometry_msgs/msg/PointStamped',
    'operator_command': 'std_msgs/msg/Float64MultiArray',
    'policy_command': 'std_msgs/msg/Float64MultiArray',
    'policy_action': 'std_msgs/msg/Float64MultiArray',
    'robot_command': 'std_msgs/msg/Float64MultiArray',
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

        from rt_safe_rl.bench.bag import typestore

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
    return p


def _start_sim(args: argparse.Namespace, run_s: float) -> subprocess.Popen[bytes]:
    """`bringup --sim` (robot, human, operator, policy, safety) in its own process."""
    cmd = [sys.executable, '-m', 'rt_safe_rl.bringup', '--sim', '--no-monitor', '--duration', f'{run_s:.3f}']
    if args.config:
        cmd += ['--config', str(args.config)]
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ)
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


def _main(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions

    from rt_safe_rl.config import load_config

    if args.duration < 0:
        raise ConfigError(f'--duration must be >= 0, got {args.duration}')
    if args.with_sim and args.duration == 0:
        raise ConfigError('--with-sim needs a finite --duration')
    app = load_config(args.config)
    keys = [k.strip() for k in args.topics.split(',') if k.strip()] or list(TOPIC_TYPES)
    unknown = [k for k in keys if k not in TOPIC_TYPES]
    if unknown:
        raise ConfigError(f'--topics: unknown {unknown}; allowed: {list(TOPIC_TYPES)}')
    topics = {getattr(app.topics, k): TOPIC_TYPES[k] for k in keys}
    stamp = _dt.datetime.now(_dt.UTC).strftime('%Y%m%d_%H%M%S')
    out = Path(args.out or f'rt_safe_rl_{stamp}')
    if out.exists():
        raise ConfigError(f'{out} already exists; refusing to overwrite a recording')

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
            _wait_for_publisher(rnode, executor, app.topics.joint_states, sim, 60.0)
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
        if sim is not None and sim.poll() is None:
            sim.send_signal(signal.SIGINT)
            try:
                sim.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait(timeout=5)
        executor.shutdown()
        if rnode is not None:
            rnode.destroy_node()
        if ctx.ok():
            rclpy.shutdown(context=ctx)
    assert recorder is not None
    summary = {
        'bag': str(out),
        'storage': 'mcap',
        'recorded_s': round(recorded_s, 3),
        'interrupted': interrupted,
        'messages': dict(recorder.counts),
        'with_sim': bool(args.with_sim),
        'notes': notes,
    }
    print(json.dumps(summary, indent=1))
    if sum(recorder.counts.values()) == 0:
        print('rt-safe-rl record: warning: no message received on any topic', file=sys.stderr)
    return 0


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
