"""Simulator nodes over real DDS in one process (RtExecutor): the robot publishes 1 kHz state with
its seq, measures e2e latency from commands carrying that seq, audits the limits, holds when the
controller is silent; the human walks; the operator publishes goals."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from _helpers import wait_for

pytestmark = pytest.mark.ros


def _spin_in_thread(ex: Any) -> threading.Thread:
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    return th


@pytest.fixture
def app_cfg() -> Any:
    from rt_safe_rl.config import load_config

    return load_config(None, {'sim': {'robot': {'command_timeout_s': 0.05}}})


def test_sim_robot_state_commands_latency_audit_and_hold(rclpy_context: Any, app_cfg: Any) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    from rt_safe_rl.nodes.msgs import stamp_ns_of
    from rt_safe_rl.nodes.sim_robot_node import SimRobotNode
    from rt_safe_rl.rt.executor import RtExecutor

    robot = SimRobotNode(config=app_cfg, namespace='t1', context=rclpy_context)
    assert robot.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert robot.trigger_activate() == TransitionCallbackReturn.SUCCESS
    ctrl = Node('fake_controller', namespace='t1', context=rclpy_context)
    pub = ctrl.create_publisher(JointState, 'safety/joint_command', 10)
    states: list[tuple[int, list[float]]] = []
    target_offset = np.zeros(7)
    target_offset[0] = 0.002  # a small step: well inside the velocity/acceleration limits

    def on_state(msg: JointState) -> None:
        assert msg.header.frame_id == ''  # no field is repurposed
        stamp = stamp_ns_of(msg)
        states.append((stamp, list(msg.position)))
        if len(states) <= 300:  # command the state it came from (+ a tiny offset), named by its stamp
            out = JointState()
            out.header.stamp = msg.header.stamp
            out.position = list(np.asarray(msg.position) + target_offset * min(1.0, len(states) / 300))
            pub.publish(out)

    ctrl.create_subscription(
        JointState, 'joint_states', on_state, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    ex = RtExecutor(app_cfg.rt, context=rclpy_context)
    ex.add_node(robot)
    ex.add_node(ctrl)
    th = _spin_in_thread(ex)
    try:
        assert wait_for(lambda: robot.commands_rx >= 200, 15.0), robot.stats()
        # controller goes silent after 300 states: the robot latches a hold
        assert wait_for(lambda: robot.holds >= 1 and len(states) > 500, 15.0), robot.stats()
    finally:
        ex.shutdown()
        th.join(5.0)
    seqs = [s for s, _ in states]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert robot.e2e_hist.count >= 200
    p50 = robot.e2e_hist.percentile_ns(50)
    assert 0 < p50 < 1e9
    assert robot.audit is not None and robot.audit.violations == 0, robot.audit.summary()
    assert robot.commands_unmatched == 0
    # robot moved joint 0 by the commanded offset, then stopped after the hold
    assert robot.arm is not None
    assert np.max(np.abs(robot.arm.dq)) < 0.05
    assert robot.trace is not None
    out = np.zeros((robot.trace.capacity, robot.trace.width))
    k = robot.trace.drain(out)
    assert k == robot.ticks or k == robot.trace.capacity - 1
    assert np.all(np.diff(out[:k, 1]) == 1)  # every tick traced, seq consecutive
    ex.destroy()
    robot.destroy_node()
    ctrl.destroy_node()


def test_sim_robot_flags_a_limit_violating_command(rclpy_context: Any, app_cfg: Any) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn
    from sensor_msgs.msg import JointState

    from rt_safe_rl.nodes.msgs import set_stamp
    from rt_safe_rl.nodes.sim_robot_node import SimRobotNode

    robot = SimRobotNode(config=app_cfg, namespace='t2', context=rclpy_context)
    assert robot.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert robot.arm is not None and robot.limits is not None
    q = robot.arm.q.copy()
    for seq, cmd in ((1, q), (2, q + 0.5), (3, np.full(7, np.nan)), (4, robot.limits.q_max + 0.1)):
        stamp = 1_000_000_000 + seq * 1_000_000
        robot._stamps.record(seq, stamp)  # the state the robot published for that period
        m = JointState()
        set_stamp(m, stamp)
        m.position = list(cmd)
        robot._on_command(m)  # the subscription callback, called directly
    assert robot.audit is not None
    s = robot.audit.summary()
    assert s['velocity_violations'] >= 1 and s['nonfinite'] == 1 and s['position_violations'] == 1
    assert robot.commands_rejected == 1  # the NaN command is never applied
    bad = JointState()
    bad.position = [0.0] * 3
    robot._on_command(bad)
    assert robot.commands_rejected == 2
    robot.destroy_node()


def test_sim_human_and_operator_publish(rclpy_context: Any) -> None:
    from geometry_msgs.msg import PointStamped
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.node import Node
    from std_msgs.msg import Float64MultiArray

    from rt_safe_rl.config import load_config
    from rt_safe_rl.nodes.sim_human_node import SimHumanNode
    from rt_safe_rl.nodes.sim_operator_node import SimOperatorNode
    from rt_safe_rl.rt.executor import RtExecutor

    cfg = load_config(
        None, {'sim': {'human': {'noise_m': 0.0, 'start_phase_s': 2.0}, 'operator': {'goal_period_s': 0.3}}}
    )
    human = SimHumanNode(config=cfg, namespace='t3', context=rclpy_context)
    op = SimOperatorNode(config=cfg, namespace='t3', context=rclpy_context)
    for n in (human, op):
        assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert n.trigger_activate() == TransitionCallbackReturn.SUCCESS
    sink = Node('sink', namespace='t3', context=rclpy_context)
    got: dict[str, list[Any]] = {'human': [], 'goal': [], 'op': []}
    sink.create_subscription(PointStamped, 'human/position', lambda m: got['human'].append(m), 10)
    sink.create_subscription(
        Float64MultiArray, 'policy/command', lambda m: got['goal'].append(list(m.data)), 10
    )
    sink.create_subscription(
        Float64MultiArray, 'operator/command', lambda m: got['op'].append(list(m.data)), 10
    )
    ex = RtExecutor(cfg.rt, context=rclpy_context)
    for n in (human, op, sink):
        ex.add_node(n)
    th = _spin_in_thread(ex)
    try:
        assert wait_for(lambda: len(got['human']) > 50 and op.goals_sent >= 2 and len(got['op']) > 20, 15.0)
    finally:
        ex.shutdown()
        th.join(5.0)
    msg = got['human'][-1]
    assert msg.header.frame_id == 'base_link'
    r = [float(np.hypot(m.point.x, m.point.y)) for m in got['human']]
    assert max(r) - min(r) > 0.1  # walking (start_phase 2.0 s: inside the approach)
    goals = {tuple(g) for g in got['goal']}
    assert len(goals) >= 2 and all(len(g) == 7 for g in goals)
    ex.destroy()
    for n in (human, op, sink):
        n.destroy_node()


def test_bad_config_file_fails_at_construction(rclpy_context: Any, tmp_path: Any) -> None:
    from rclpy.parameter import Parameter

    from rt_safe_rl.core.errors import ConfigError
    from rt_safe_rl.nodes.sim_robot_node import SimRobotNode

    bad = tmp_path / 'bad.yaml'
    bad.write_text('sim:\n  robot:\n    comand_timeout_s: 1.0\n')
    with pytest.raises(ConfigError, match=r'bad\.yaml.*comand_timeout_s'):
        SimRobotNode(context=rclpy_context, parameter_overrides=[Parameter('config_file', value=str(bad))])
