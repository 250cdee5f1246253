"""``rt-safe-rl record``: record the control topics to an mcap rosbag2 bag (no ros2 CLI needed).

    rt-safe-rl record [--out DIR] [--duration S] [--config C] [--topics NAME,...] [--with-sim]

Subscribes (raw CDR, no deserialisation) to the robot state, human, operator, policy command,
policy action and robot command topics of the config's ``topics:`` section and writes every
message with its receive time (system clock, as rosbag2 does) to ``DIR`` (mcap storage,
metadata.yaml written on close). ``--with-sim`` composes the simulated robot (1 kHz), human and
operator in this process, plus the policy and safety nodes when they are available, so the
recording holds the full closed loop; without it, the tool records whatever runs on the ROS graph.

Ctrl-C (or the end of ``--duration``) closes the bag cleanly: nothing recorded is lost. Prints a
JSON summary (path, duration, messages per topic). Bad input exits 2 with one line. Not RT code:
the recorder's callbacks run in the executor's non-RT thread.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
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
    p.add_argument('--topics', default='', help=f'comma-separated keys of the topics section '
                   f'(default: all of {",".join(TOPIC_TYPES)})')
    p.add_argument('--with-sim', action='store_true',
                   help='run the simulated robot/human/operator (and policy + safety if available) here')
    p.add_argument('--settle', type=float, default=0.5, help='seconds the sim runs before recording starts')
    return p


def _sim_nodes(app: Any, ctx: Any) -> tuple[list[Any], list[str]]:
    """Simulator nodes (always) and the policy/safety nodes (when importable)."""
    from rt_safe_rl.nodes.sim_human_node import SimHumanNode
    from rt_safe_rl.nodes.sim_operator_node import SimOperatorNode
    from rt_safe_rl.nodes.sim_robot_node import SimRobotNode

    nodes: list[Any] = [SimRobotNode(config=app, context=ctx), SimHumanNode(config=app, context=ctx),
                        SimOperatorNode(config=app, context=ctx)]
    notes: list[str] = []
    try:
        from rt_safe_rl.nodes.policy_node import PolicyInferenceNode
        from rt_safe_rl.nodes.safety_node import SafetyFilterNode

        ip = bool(app.control.intra_process)
        nodes += [PolicyInferenceNode(config=app, intra_process=ip, context=ctx),
                  SafetyFilterNode(config=app, intra_process=ip, context=ctx)]
    except ImportError as err:
        notes.append(f'policy/safety nodes not available ({err}); the robot holds its pose')
    return nodes, notes


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
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.node import Node

    from rt_safe_rl.config import load_config
    from rt_safe_rl.rt.executor import RtExecutor

    if args.duration < 0:
        raise ConfigError(f'--duration must be >= 0, got {args.duration}')
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
    rclpy.init(context=ctx, args=[])
    executor = RtExecutor(app.rt, context=ctx)
    nodes: list[Any] = []
    recorder: Recorder | None = None
    rnode: Any = None
    notes: list[str] = []
    interrupted = False
    t0 = time.monotonic()
    try:
        if args.with_sim:
            nodes, notes = _sim_nodes(app, ctx)
            for n in nodes:
                executor.add_node(n)
            for which in ('configure', 'activate'):
                for n in nodes:
                    if getattr(n, f'trigger_{which}')() != TransitionCallbackReturn.SUCCESS:
                        raise RtSafeRlError(f'{n.get_name()}: {which} failed (see the log above)')
            if args.settle > 0:
                executor.spin(args.settle)
        rnode = Node('rt_safe_rl_recorder', context=ctx)
        recorder = Recorder(rnode, out, topics)
        executor.add_node(rnode)
        t0 = time.monotonic()
        try:
            executor.spin(args.duration if args.duration > 0 else None)
        except KeyboardInterrupt:
            interrupted = True
    finally:
        if recorder is not None:
            recorder.close()
        for n in reversed(nodes):
            try:
                n.trigger_deactivate()
            except Exception:  # broad on purpose: best-effort teardown
                pass
        executor.destroy()
        for n in [*nodes, rnode]:
            if n is not None:
                n.destroy_node()
        if ctx.ok():
            rclpy.shutdown(context=ctx)
    assert recorder is not None
    summary = {
        'bag': str(out), 'storage': 'mcap', 'recorded_s': round(time.monotonic() - t0, 3),
        'interrupted': interrupted, 'messages': dict(recorder.counts), 'with_sim': bool(args.with_sim),
        'notes': notes,
    }
    print(json.dumps(summary, indent=1))
    if sum(recorder.counts.values()) == 0:
        print('rt-safe-rl record: warning: no message received on any topic', file=sys.stderr)
    return 0
