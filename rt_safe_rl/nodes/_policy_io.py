"""The policy node's I/O (moved out of :mod:`.policy_node`): the preallocated action message, the
``policy/action`` publisher, the ``joint_states`` and input subscriptions in the ``control`` group,
the action channel with its observer mirror (intra_process) and the ``~/reset_memory`` service,
created at configure by :meth:`PolicyNodeIO._create_io`; released by
:meth:`~rt_safe_rl.nodes._policy_params.PolicyNodeParams._release`. Non-RT, except
:meth:`PolicyNodeIO._fill_action` (the mirror's filler, observers thread, no allocation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from rt_safe_rl.nodes._policy_params import PolicyNodeParams
from rt_safe_rl.nodes.msgs import ActionRecord, JointStateReader
from rt_safe_rl.rt.channel import get_channel
from rt_safe_rl.rt.executor import OFF_CYCLE_SLOTS, named_group
from rt_safe_rl.rt.observer import ChannelMirror


class PolicyNodeIO(PolicyNodeParams):
    """Base of :class:`~rt_safe_rl.nodes.policy_node.PolicyInferenceNode`: its ROS and channel I/O
    (see the module docstring). The callbacks are the node's."""

    joint_names: list[str]
    direct_cycle: bool
    intra_process: bool
    _match_names: bool
    _on_joint_state: Callable[[JointState], None]
    _input_callback: Callable[[str], Any]
    _on_reset: Callable[[Trigger.Request, Trigger.Response], Trigger.Response]

    def _create_io(self, rt: Any) -> dict[str, str]:
        """Messages, publisher, subscriptions, channel + mirror, service for runtime `rt`
        (configure); returns the input topics by input name."""
        app = self.app
        n = rt.n_joints
        self._target = np.zeros(n)
        self._reader = JointStateReader(list(self.joint_names), match_names=self._match_names)
        msg = JointState()
        msg.name = list(self.joint_names)
        msg.position = [0.0] * n
        self._msg = msg
        self._msg_view = np.frombuffer(msg.position, dtype=np.float64)
        depth = app.topics.qos_depth
        group = named_group(self, 'control')
        self._pub = self.create_lifecycle_publisher(JointState, app.topics.policy_action, depth)
        if not self.direct_cycle:
            self._subs.append(
                self.create_subscription(
                    JointState, app.topics.joint_states, self._on_joint_state, depth, callback_group=group
                )
            )
        topics = {name: ic.topic for name, ic in rt.pipeline.inputs.items() if ic.topic}
        if 'command' in rt.obs_builder.inputs and 'command' not in topics:
            topics['command'] = app.topics.policy_command
        inputs = named_group(self, 'control', polled=True)  # sampled at the cycle's start (direct)
        for name, topic in topics.items():
            self._subs.append(
                self.create_subscription(
                    Float64MultiArray,
                    topic,
                    self._input_callback(name),
                    QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT),
                    callback_group=inputs,
                )
            )
        if self.intra_process:
            self.action_channel = get_channel(
                self.resolve_topic_name(app.topics.policy_action), ActionRecord.size(n)
            )
            self._mirror = ChannelMirror(
                self,
                self.action_channel,
                JointState,
                app.topics.policy_action,
                decimation=max(1, int(app.topics.observer_decimation)),
                # on the control grid only in the direct cycle (else states arrive when they arrive)
                producer_period_ns=app.control.period_ns if self.direct_cycle else 0,
                slot=OFF_CYCLE_SLOTS['mirror_policy_action'],
                fill=self._fill_action,
                publisher=self._pub,
            )
            self._mirror.msg = self._msg  # filled in place through self._msg_view
        self._srv = self.create_service(Trigger, '~/reset_memory', self._on_reset)
        return topics

    def _fill_action(self, msg: Any, row: Any, seq: int, stamp_ns: int) -> None:
        """Observer mirror (observers thread): channel row -> the preallocated JointState."""
        ActionRecord.to_msg(msg, self._msg_view, stamp_ns, ActionRecord.valid(row), ActionRecord.target(row))

    def rt_tasks(self) -> list[Any]:
        """The observer mirror of the action topic (intra_process), else none."""
        return [self._mirror.task] if self._mirror is not None else []
