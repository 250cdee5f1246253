"""Robot command output for stock ros2_control controllers: the safe command as the message the
chosen controller takes, on its topic, from preallocated messages.

===============  ==================================  ===========================================
mode             message                             default topic (relative; namespace applies)
===============  ==================================  ===========================================
``position``     ``std_msgs/Float64MultiArray``      ``topics.robot_command``
                 (position targets, rad)             (``forward_position_controller/commands``)
``trajectory``   ``trajectory_msgs/JointTrajectory`` ``joint_trajectory_controller/joint_trajectory``
                 one point: positions + velocities,  (the controller's ``~/joint_trajectory``)
                 ``time_from_start`` = one period,
                 ``header.stamp`` 0 (= start now)
``velocity``     ``std_msgs/Float64MultiArray``      ``forward_velocity_controller/commands``
                 (rad/s; given, or derived from the
                 safe position command: (q_k - q_k-1)
                 / period)
===============  ==================================  ===========================================

Config: ``safety.output_mode`` and ``safety.output_topic`` ('' = the mode's default above); launch
arguments ``output_mode`` / ``output_topic``. No sequence number is carried in any field
(``layout.data_offset`` stays 0, ``frame_id`` stays empty): stock controllers see plain messages.

:meth:`CommandOutput.publish` is RT-safe in the package's sense: it copies into preallocated numpy
views of the message arrays and calls ``publish`` (rclpy serialises in C); no Python allocation
besides small ints for a stamp.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from builtin_interfaces.msg import Duration
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from rt_safe_rl.core.errors import ConfigError

MODES: tuple[str, ...] = ('position', 'trajectory', 'velocity')
DEFAULT_TOPICS: dict[str, str] = {
    'position': 'forward_position_controller/commands',
    'trajectory': 'joint_trajectory_controller/joint_trajectory',
    'velocity': 'forward_velocity_controller/commands',
}


def check_mode(mode: str, where: str = 'safety.output_mode') -> str:
    """`mode` if it is one of :data:`MODES`, else ConfigError naming the choices."""
    if mode not in MODES:
        raise ConfigError(f'{where}: unknown output mode {mode!r}; choose one of {", ".join(MODES)}')
    return mode


def default_topic(mode: str, position_topic: str = DEFAULT_TOPICS['position']) -> str:
    """The mode's default topic (``position`` uses `position_topic`, i.e. ``topics.robot_command``)."""
    check_mode(mode)
    return position_topic if mode == 'position' else DEFAULT_TOPICS[mode]


def _view(arr: Any) -> npt.NDArray[np.float64]:
    """A writable numpy view of a message's float64[] field (an ``array.array('d')``)."""
    return np.frombuffer(arr, dtype=np.float64)


class CommandOutput:
    """Publishes the safe command in output `mode` on `topic` (one message per control period).

    Args:
        node: the publishing node (a lifecycle publisher when it has ``create_lifecycle_publisher``
            and ``lifecycle`` is true).
        mode: 'position' | 'trajectory' | 'velocity'.
        topic: the controller's topic ('' = :func:`default_topic`).
        period_s: control period (trajectory ``time_from_start``; velocity derivation).
        joint_names: the robot's joints (trajectory ``joint_names``; sizes every message).
        qos_depth: publisher depth.

    Raises:
        ConfigError: unknown mode, no joints, or a non-positive period.
    """

    def __init__(
        self,
        node: Any,
        mode: str,
        topic: str,
        period_s: float,
        *,
        joint_names: Sequence[str],
        qos_depth: int = 10,
        lifecycle: bool = True,
    ) -> None:
        self.mode = check_mode(mode)
        if not period_s > 0.0:
            raise ConfigError(f'command output: period_s must be > 0, got {period_s}')
        n = len(joint_names)
        if n == 0:
            raise ConfigError('command output: no joints')
        self.period_s = float(period_s)
        self.n = n
        self._prev = np.zeros(n)
        self._has_prev = False
        self._dq = np.zeros(n)
        msg_type: Any = JointTrajectory if mode == 'trajectory' else Float64MultiArray
        make = getattr(node, 'create_lifecycle_publisher', None) if lifecycle else None
        if make is None:
            make = node.create_publisher
        self.publisher = make(msg_type, topic or default_topic(mode), qos_depth)
        self.topic = self.publisher.topic_name
        if mode == 'trajectory':
            msg = JointTrajectory()
            msg.joint_names = list(joint_names)
            pt = JointTrajectoryPoint()
            pt.positions = [0.0] * n
            pt.velocities = [0.0] * n
            sec, nsec = divmod(round(period_s * 1e9), 1_000_000_000)
            pt.time_from_start = Duration(sec=int(sec), nanosec=int(nsec))
            msg.points = [pt]
            self._q_view = _view(pt.positions)
            self._dq_view = _view(pt.velocities)
        else:
            msg = Float64MultiArray()
            label = 'velocity' if mode == 'velocity' else 'position'
            msg.layout.dim = [MultiArrayDimension(label=label, size=n, stride=n)]
            msg.data = [0.0] * n
            self._q_view = _view(msg.data)
            self._dq_view = self._q_view
        self.msg = msg
        self.published = 0

    def publish(
        self, q_cmd: npt.NDArray[np.float64], dq_cmd: npt.NDArray[np.float64] | None = None, stamp_ns: int = 0
    ) -> None:
        """Publish one command: positions `q_cmd` (rad), velocities `dq_cmd` (rad/s; None = derived
        from the previous command over one period, 0 for the first). `stamp_ns` is unused by stock
        controllers (trajectory ``header.stamp`` stays 0 = start now). RT-safe (no allocation).
        """
        if dq_cmd is None:
            if self._has_prev:
                np.subtract(q_cmd, self._prev, out=self._dq)
                self._dq *= 1.0 / self.period_s
            else:
                self._dq.fill(0.0)
            dq_cmd = self._dq
        self._prev[:] = q_cmd
        self._has_prev = True
        if self.mode == 'velocity':
            self._q_view[:] = dq_cmd
        else:
            self._q_view[:] = q_cmd
            if self.mode == 'trajectory':
                self._dq_view[:] = dq_cmd
        self.publisher.publish(self.msg)
        self.published += 1

    def republish(self) -> None:
        """Send the last message again (holding at rest). Velocity mode sends zeros: a repeated
        position means no motion. RT-safe."""
        if self.mode == 'velocity':
            self._q_view.fill(0.0)
        elif self.mode == 'trajectory':
            self._dq_view.fill(0.0)
        self.publisher.publish(self.msg)
        self.published += 1

    def reset(self) -> None:
        """Forget the previous command (after activation / a reset): the next derived velocity is 0."""
        self._has_prev = False
