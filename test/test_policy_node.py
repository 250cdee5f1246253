"""PolicyInferenceNode: lifecycle, parameters, channel/topic output, inputs, reset service, bad policy."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _helpers import wait_for

pytestmark = pytest.mark.ros

FAST = {'backend': 'numba', 'auto_samples': 20, 'auto_timing_iters': 5, 'warmup_iters': 2}


def _app(**policy: Any) -> Any:
    from rt_safe_rl.config import load_config

    return load_config(None, {'policy': {**FAST, **policy}})


def test_missing_policy_file_fails_configure_with_the_path(rclpy_context: Any, tmp_path: Path) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn

    from rt_safe_rl.nodes.policy_node import PolicyInferenceNode

    missing = tmp_path / 'no_such_policy.pt'
    node = PolicyInferenceNode(config=_app(path=str(missing)), namespace='pm', context=rclpy_context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert str(missing) in node.last_error
    finally:
        node.destroy_node()


def test_rate_override_out_of_range_is_rejected_at_construction(rclpy_context: Any) -> None:
    from rclpy.exceptions import InvalidParameterValueException
    from rclpy.parameter import Parameter

    from rt_safe_rl.nodes.policy_node import PolicyInferenceNode

    with pytest.raises(InvalidParameterValueException):
        PolicyInferenceNode(
            config=_app(),
            namespace='pr',
            context=rclpy_context,
            parameter_overrides=[Parameter('policy.rate_hz', value=0.0)],
        )


def test_intra_process_channel_record_params_and_invalid_state(rclpy_context: Any) -> None:
    from rcl_interfaces.msg import Parameter as ParamMsg
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from rt_safe_rl.nodes.policy_node import ACTION_HEADER, PolicyInferenceNode

    app = _app()
    node = PolicyInferenceNode(config=app, namespace='pc', intra_process=True, context=rclpy_context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        rt = node.runtime
        assert rt.info['backend'] == 'numba' and rt.n_joints == 7
        ch = node.action_channel
        assert ch is not None and ch.name == '/pc/policy/action' and ch.n == 7 + ACTION_HEADER
        q = np.array(app.sim.robot.initial_q_rad)
        dq = np.zeros(7)
        for i in range(1, 41):
            node.process_state(i * 1_000_000, 1000 + i, q, dq)
        row = ch.view()
        assert row[0] == 1040 and row[1] == 1.0 and np.all(np.isfinite(row[ACTION_HEADER:]))
        assert rt.steps == 2  # 40 ms at 50 Hz
        node.process_state(41_000_000, 1041, np.full(7, np.nan), dq)
        row = ch.view()
        assert row[0] == 1041 and row[1] == 0.0  # flagged invalid: safety stops
        # structural parameters are read-only; interpolation is tunable and validated
        res = node.set_parameters([Parameter('policy.path', value='/tmp/other.pt')])
        assert not res[0].successful
        res = node.set_parameters([Parameter('policy.interpolation', value='cubic')])
        assert not res[0].successful
        res = node.set_parameters([Parameter('policy.interpolation', value='linear')])
        assert res[0].successful and rt.interpolate
        desc = node.describe_parameter('policy.backend')
        assert desc.read_only and desc.description
        del ParamMsg
    finally:
        node.trigger_deactivate()
        node.trigger_cleanup()
        node.destroy_node()


def test_dds_topic_command_input_and_reset_service(rclpy_context: Any) -> None:
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from std_srvs.srv import Trigger

    from rt_safe_rl.nodes.msgs import set_stamp, stamp_ns_of
    from rt_safe_rl.nodes.policy_node import PolicyInferenceNode
    from rt_safe_rl.rt.executor import RtExecutor

    app = _app()
    node = PolicyInferenceNode(config=app, namespace='pd', context=rclpy_context)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    peer = Node('peer', namespace='pd', context=rclpy_context)
    actions: list[tuple[int, str, list[float]]] = []  # (state seq from the stamp, valid?, targets)

    def on_action(m: Any) -> None:
        seq = round((stamp_ns_of(m) - 1_000_000_000) / 1_000_000)
        data = list(m.position)
        actions.append((seq, 'valid' if np.all(np.isfinite(data)) else 'invalid', data))

    peer.create_subscription(JointState, 'policy/action', on_action, 10)
    state_pub = peer.create_publisher(JointState, 'joint_states', 10)
    cmd_pub = peer.create_publisher(Float64MultiArray, 'policy/command', 10)
    client = peer.create_client(Trigger, 'policy_node/reset_memory')
    ex = RtExecutor(app.rt, context=rclpy_context)
    ex.add_node(node)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    pex = SingleThreadedExecutor(context=rclpy_context)
    pex.add_node(peer)
    try:
        q0 = list(app.sim.robot.initial_q_rad)
        goal = [v + 0.1 for v in q0]

        def publish_state(seq: int) -> None:
            msg = JointState()
            set_stamp(msg, 1_000_000_000 + seq * 1_000_000)
            msg.name = [f'joint{i + 1}' for i in range(7)]
            msg.position = q0
            msg.velocity = [0.0] * 7
            state_pub.publish(msg)

        assert wait_for(
            lambda: state_pub.get_subscription_count() > 0 and cmd_pub.get_subscription_count() > 0, 5.0
        )
        cmd_pub.publish(Float64MultiArray(data=goal))
        assert wait_for(lambda: np.allclose(node.runtime.obs_builder.inputs['command'], goal), 5.0)
        for seq in range(1, 30):
            publish_state(seq)
            pex.spin_once(timeout_sec=0.005)
        assert wait_for(lambda: (pex.spin_once(timeout_sec=0.01), len(actions) >= 5)[1], 5.0)
        seq, label, data = actions[-1]
        assert 0 < seq <= 29 and label == 'valid' and len(data) == 7 and np.all(np.isfinite(data))
        assert wait_for(client.service_is_ready, 5.0)
        fut = client.call_async(Trigger.Request())
        pex.spin_until_future_complete(fut, timeout_sec=5.0)
        assert fut.result() is not None and fut.result().success
        assert node._reset_requested
        publish_state(100)
        assert wait_for(lambda: not node._reset_requested, 5.0)  # done by the control thread
        # joints matched by name: a shuffled message gives the same robot-order state
        shuffled = JointState()
        set_stamp(shuffled, 1_000_000_000 + 200 * 1_000_000)
        shuffled.name = [f'joint{i + 1}' for i in reversed(range(7))]
        shuffled.position = list(reversed(q0))
        shuffled.velocity = [float(i) for i in reversed(range(7))]
        state_pub.publish(shuffled)
        r = node._reader
        assert wait_for(lambda: np.allclose(r.q, q0) and np.allclose(r.dq, np.arange(7.0)), 5.0)
        lacking = JointState()
        set_stamp(lacking, 1_000_000_000 + 201 * 1_000_000)
        lacking.name = [f'joint{i + 1}' for i in range(6)]
        lacking.position = q0[:6]
        state_pub.publish(lacking)
        assert wait_for(lambda: (pex.spin_once(timeout_sec=0.01), any(a[0] == 201 for a in actions))[1], 5.0)
        assert next(a for a in actions if a[0] == 201)[1] == 'invalid'
        # wrong-size state: flagged invalid, published as NaN
        bad = JointState()
        set_stamp(bad, 1_000_000_000 + 101 * 1_000_000)
        bad.position = [0.0] * 3
        state_pub.publish(bad)
        assert wait_for(lambda: (pex.spin_once(timeout_sec=0.01), any(a[0] == 101 for a in actions))[1], 5.0)
        seq, label, data = next(a for a in actions if a[0] == 101)
        assert label == 'invalid' and np.all(np.isnan(data))
    finally:
        ex.shutdown()
        th.join(timeout=5.0)
        ex.destroy()
        pex.shutdown()
        peer.destroy_node()
        node.trigger_deactivate()
        node.destroy_node()
