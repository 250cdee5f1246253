"""The safety node's command output: the publishers of the safe command, their preallocated
messages, and the publish-only-to-listeners gate (moved out of :mod:`._safety_io`).

Outputs: the safe command on ``forward_position_controller/commands`` (``Float64MultiArray``, rad,
a plain forward command; or the ros2_control output mode's message, :mod:`.command_output`) and
on ``safety/joint_command`` (``sensor_msgs/JointState``: ``header.stamp`` = the stamp of the joint
state the command answers -- for the commands the monitor sends while states have stopped, that
stamp + one robot period per period since -- ``position`` rad, ``velocity`` rad/s: what a robot
simulator or a latency probe matches to its states; no field is repurposed); optionally
``trajectory_msgs/JointTrajectory`` on ``safety/joint_trajectory``; channel ``<command topic>``
(``[state_seq, q...]``).

Publishing only to listeners: the command, joint_command and trajectory topics are published only
while they have a matched subscription (``get_subscription_count``, ~0.5 us, may take an rmw lock:
not called on the RT path). Their counts are cached at activate and refreshed every
:data:`LISTENER_REFRESH_PERIOD_S` by a task in the low-priority ``observers`` group; a subscriber
that joins gets the commands from the next refresh on (a late joiner of a volatile topic misses
the earlier ones anyway). Everything else happens for every command whether or not anyone
listens: the message fill, the command channel (and through the cycle the in-process robot and
its audit). ``commands_unheard`` counts the joint_command publishes skipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.exceptions import InvalidHandle
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety import SafetyConfig
from rt_safe_rl.core.safety.supervisor import SafetySupervisor
from rt_safe_rl.nodes.command_output import CommandOutput
from rt_safe_rl.nodes.msgs import set_stamp

TRAJECTORY_TOPIC = 'safety/joint_trajectory'
LISTENER_REFRESH_PERIOD_S = 0.1
"""Period [s] of the listener-count refresh (``observers`` group): a new subscriber of the command
topics gets them at most this long after DDS matched it."""


class SafetyCommandPublisher:
    """The safe command's publishers and preallocated messages on a lifecycle node (configure).

    :meth:`emit` is the RT path (numpy copies into the messages, ``publish`` in C); the
    listener refresh is not (see the module docstring)."""

    def __init__(self, node: Any, model: RobotModel, cfg: SafetyConfig, topics: Any, period_ns: int) -> None:
        depth = topics.qos_depth
        self.cmd_pub = node.create_lifecycle_publisher(Float64MultiArray, topics.robot_command, depth)
        self.jc_pub = node.create_lifecycle_publisher(JointState, topics.joint_command, depth)
        self.publishers: list[Any] = [self.cmd_pub, self.jc_pub]
        self.output: CommandOutput | None = None  # a ros2_control output besides the position stream
        if cfg.output_mode != 'position' or cfg.output_topic:
            self.output = CommandOutput(
                node,
                cfg.output_mode,
                cfg.output_topic,
                period_ns * 1e-9,
                joint_names=model.joint_names,
                qos_depth=depth,
            )
            self.publishers.append(self.output.publisher)
        self.traj_pub: Any = None
        if cfg.publish_trajectory:
            self.traj_pub = node.create_lifecycle_publisher(JointTrajectory, TRAJECTORY_TOPIC, depth)
            self.publishers.append(self.traj_pub)
        self.cmd_heard = self.jc_heard = self.traj_heard = True  # until the first count
        self.commands_unheard = 0
        self._make_messages(model, period_ns)

    def _make_messages(self, model: RobotModel, period_ns: int) -> None:
        """The preallocated outgoing messages and the numpy views the RT path writes into."""
        n = model.n_joints
        cmd = Float64MultiArray()
        cmd.layout.dim = [MultiArrayDimension(label='position', size=n, stride=n)]
        cmd.data = [0.0] * n
        self._cmd_msg = cmd
        self._cmd_view = np.frombuffer(cmd.data, dtype=np.float64)
        jc = JointState()
        jc.name = list(model.joint_names)
        jc.position = [0.0] * n
        jc.velocity = [0.0] * n
        self._jc_msg = jc
        self._jc_q = np.frombuffer(jc.position, dtype=np.float64)
        self._jc_v = np.frombuffer(jc.velocity, dtype=np.float64)
        pt = JointTrajectoryPoint(positions=[0.0] * n, time_from_start=Duration(sec=0, nanosec=period_ns))
        self._traj_msg = JointTrajectory(joint_names=list(model.joint_names), points=[pt])
        self._traj_view = np.frombuffer(pt.positions, dtype=np.float64)

    def refresh_listeners(self) -> None:
        """Cache whether each gated publisher has a matched subscription (``observers`` group task
        and activate; not the RT path: ``get_subscription_count`` may take an rmw lock)."""
        try:
            self.cmd_heard = self.cmd_pub.get_subscription_count() > 0
            self.jc_heard = self.jc_pub.get_subscription_count() > 0
            tp = self.traj_pub
            self.traj_heard = tp is not None and tp.get_subscription_count() > 0
        except (InvalidHandle, RuntimeError):
            pass  # publishers being destroyed (cleanup): nothing is emitted any more

    def emit(
        self,
        cmd: np.ndarray,
        seq: int,
        t_ns: int,
        repeat: bool,
        sup: SafetySupervisor | None,
        channel: Any,
    ) -> None:
        """Publish a command (called by the supervisor under its lock). RT path."""
        out = self.output
        if repeat:
            if self.cmd_heard:
                self.cmd_pub.publish(self._cmd_msg)  # the held command again
            if self.jc_heard:
                self.jc_pub.publish(self._jc_msg)  # same stamp: the same robot period's command
            else:
                self.commands_unheard += 1
            if out is not None:
                out.republish()
            return
        # the messages are filled for every command (a repeat after a listener joined sends the
        # latest); only the DDS publish is skipped while nobody listens (see the module docstring)
        np.copyto(self._cmd_view, cmd)
        if self.cmd_heard:
            self.cmd_pub.publish(self._cmd_msg)
        if sup is not None:
            set_stamp(self._jc_msg, sup.stamp_for_label(seq))
            np.copyto(self._jc_q, cmd)
            sup.copy_command_velocity(self._jc_v)
        if self.jc_heard:
            self.jc_pub.publish(self._jc_msg)
        else:
            self.commands_unheard += 1
        if out is not None:
            out.publish(cmd)
        if self.traj_pub is not None:
            np.copyto(self._traj_view, cmd)
            if self.traj_heard:
                self.traj_pub.publish(self._traj_msg)
        if channel is not None:
            buf = channel.loan()
            buf[0] = seq
            buf[1:] = cmd
            channel.commit(t_ns)
