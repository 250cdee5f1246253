"""CommandOutput: each ros2_control output mode received by a real subscriber over DDS."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy not installed (ROS 2 wheels or a sourced ROS 2 needed)')

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from rt_safe_rl.config import load_config  # noqa: E402
from rt_safe_rl.core.errors import ConfigError  # noqa: E402
from rt_safe_rl.nodes.command_output import MODES, CommandOutput, default_topic  # noqa: E402

JOINTS = [f'joint{i}' for i in range(1, 8)]
DT = 0.001


def _exchange(ctx: Any, mode: str, send: Callable[[CommandOutput], None], n_expected: int) -> list[Any]:
    """Publish with a CommandOutput in `mode` until a subscriber got `n_expected` messages."""
    pub_node = rclpy.create_node('cmd_out_pub', namespace='cmd_out_t', context=ctx)
    sub_node = rclpy.create_node('cmd_out_sub', namespace='cmd_out_t', context=ctx)
    out = CommandOutput(pub_node, mode, '', DT, joint_names=JOINTS, lifecycle=False)
    got: list[Any] = []
    msg_type = JointTrajectory if mode == 'trajectory' else Float64MultiArray
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    sub_node.create_subscription(msg_type, default_topic(mode), got.append, qos)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(sub_node)
    try:
        end = time.monotonic() + 30.0
        while pub_node.count_subscribers(out.topic) == 0 and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        assert pub_node.count_subscribers(out.topic) > 0, 'subscriber never matched'
        send(out)
        while len(got) < n_expected and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
    finally:
        ex.shutdown()
        pub_node.destroy_node()
        sub_node.destroy_node()
    assert len(got) >= n_expected, f'{mode}: got {len(got)} of {n_expected} messages'
    return got


def test_position_mode_is_a_plain_forward_command(rclpy_context: Any) -> None:
    q = np.linspace(-0.5, 0.5, 7)
    got = _exchange(rclpy_context, 'position', lambda o: o.publish(q, None, 123), 1)
    assert np.array_equal(np.asarray(got[0].data), q)
    assert got[0].layout.data_offset == 0  # no sequence number smuggled into the layout


def test_velocity_mode_derives_the_velocity_from_the_safe_command(rclpy_context: Any) -> None:
    q0 = np.zeros(7)
    q1 = np.full(7, 0.002)

    def send(o: CommandOutput) -> None:
        o.publish(q0)
        o.publish(q1)
        o.publish(q1, np.full(7, -0.3))  # a given velocity is sent as is
        o.republish()  # holding: zero velocity

    got = _exchange(rclpy_context, 'velocity', send, 4)
    assert np.allclose(got[0].data, 0.0)
    assert np.allclose(got[1].data, 2.0)  # 0.002 rad in 1 ms
    assert np.allclose(got[2].data, -0.3)
    assert np.allclose(got[3].data, 0.0)
    assert got[0].layout.dim[0].label == 'velocity'


def test_trajectory_mode_is_one_point_one_period_ahead(rclpy_context: Any) -> None:
    q = np.arange(7) * 0.1
    dq = np.arange(7) * -0.01
    got = _exchange(rclpy_context, 'trajectory', lambda o: o.publish(q, dq, 5), 1)
    msg = got[0]
    assert list(msg.joint_names) == JOINTS
    assert len(msg.points) == 1
    pt = msg.points[0]
    assert np.allclose(pt.positions, q) and np.allclose(pt.velocities, dq)
    assert pt.time_from_start.sec == 0 and pt.time_from_start.nanosec == 1_000_000
    assert msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0  # start now


def test_bad_modes_are_refused_in_the_config_and_here(rclpy_context: Any) -> None:
    with pytest.raises(ConfigError, match='output_mode: must be position, trajectory or velocity'):
        load_config(None, {'safety': {'output_mode': 'effort'}})
    node = rclpy.create_node('cmd_out_bad', context=rclpy_context)
    try:
        with pytest.raises(ConfigError, match='unknown output mode'):
            CommandOutput(node, 'effort', '', DT, joint_names=JOINTS)
    finally:
        node.destroy_node()
    assert set(MODES) == {'position', 'trajectory', 'velocity'}
    assert default_topic('position', 'arm/commands') == 'arm/commands'


@pytest.mark.parametrize('mode', ['trajectory', 'velocity'])
def test_the_safety_node_feeds_the_configured_controller(rclpy_context: Any, mode: str) -> None:
    """`safety.output_mode` wired end to end: the composed closed loop (sim robot, policy, safety)
    publishes the safe command as the controller's message on its default topic, every value
    within the robot's limits (position stream unchanged for the package's own robot)."""
    from rt_safe_rl.bringup import compose, select_nodes
    from rt_safe_rl.core.robot_model import RobotModel

    over = {'policy': {'backend': 'torchscript', 'auto_samples': 20, 'warmup_iters': 5}}
    cfg = load_config(None, {**over, 'safety': {'output_mode': mode}})
    model = RobotModel.from_config(cfg.robot, cfg.base_dir)
    comp = compose(
        cfg, select_nodes(with_sim=True, with_monitor=False), context=rclpy_context, namespace='out_t'
    )
    listener = rclpy.create_node('out_listener', namespace='out_t', context=rclpy_context)
    got: list[Any] = []
    msg_type = JointTrajectory if mode == 'trajectory' else Float64MultiArray
    listener.create_subscription(msg_type, default_topic(mode), got.append, 100)
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(listener)
    try:
        assert comp.start() == {}
        th = threading.Thread(target=comp.executor.spin, daemon=True)
        th.start()
        end = time.monotonic() + 60.0
        while len(got) < 20 and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        comp.executor.shutdown()
        th.join(10.0)
    finally:
        ex.shutdown()
        listener.destroy_node()
        comp.destroy()
    assert got, f'{mode}: no message on {default_topic(mode)}'  # every message received is checked
    if mode == 'trajectory':
        for m in got:
            assert list(m.joint_names) == list(model.joint_names) and len(m.points) == 1
            q = np.asarray(m.points[0].positions)
            assert np.all(q >= model.q_min - 1e-9) and np.all(q <= model.q_max + 1e-9)
            assert np.all(np.abs(m.points[0].velocities) <= model.v_max * (1 + 1e-6))
    else:
        for m in got:
            assert np.all(np.abs(np.asarray(m.data)) <= model.v_max * (1 + 1e-6))
