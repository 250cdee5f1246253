"""`sim_robot`: the simulated position-controlled arm as a ROS 2 lifecycle node.

The arm itself is :class:`~rt_safe_rl.sim.interface.SimArmInterface` (physics in wall-clock
time: every read integrates every control period elapsed since the previous one). Two ways to
drive it:

* **direct** (``direct_cycle = True`` before configure; what ``bringup.compose`` does whenever the
  robot is composed in-process, i.e. ``rt-safe-rl demo``): the
  :class:`~rt_safe_rl.rt.cycle.ControlCycle` calls :attr:`SimRobotNode.interface` ``read`` /
  ``write`` itself; the node only mirrors the state on ``topics.joint_states`` for observers,
  every ``topics.observer_decimation`` periods from the low-priority ``observers`` group.
* **DDS** (default; the robot as its own process, like a ros2_control robot with a
  forward_position_controller and a joint_state_broadcaster): a
  :class:`~rt_safe_rl.rt.executor.PeriodicTask` (rt group ``sim``, ``control.rate_hz``, absolute
  deadlines) reads the arm and publishes ``sensor_msgs/JointState``; the commands arriving on
  ``topics.joint_command`` (``sensor_msgs/JointState`` from the safety node; subscription in the
  same ``sim`` group, best effort) are written to it.

End-to-end latency (DEVELOPERS.md): each state is stamped (``header.stamp``: its period's scheduled
time on the wall clock) and the
robot remembers which period each stamp was (:class:`~rt_safe_rl.nodes.msgs.StateStamps`); each
command names the state it answers by that stamp; the robot measures state read -> command
receipt per period, exactly. No field is repurposed (``frame_id`` stays empty). Every
command is audited against the limits (:class:`~rt_safe_rl.sim.arm.CommandAudit`). With no
command for ``sim.robot.command_timeout_s`` the robot holds its position.
RT path (``_tick`` and ``_on_command``): preallocated arrays and message, no logging.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from rt_safe_rl.config import AppConfig
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.nodes._sim_base import run_node
from rt_safe_rl.nodes._sim_robot_views import SimRobotViews
from rt_safe_rl.nodes.msgs import StateStamps, set_stamp, stamp_ns_of
from rt_safe_rl.rt.channel import get_channel
from rt_safe_rl.rt.cycle import RobotState
from rt_safe_rl.rt.executor import OFF_CYCLE_SLOTS, PeriodicTask, named_group
from rt_safe_rl.rt.observer import ChannelMirror
from rt_safe_rl.sim.arm import ArmLimits
from rt_safe_rl.sim.interface import SimArmInterface


class SimRobotNode(SimRobotViews):
    """Simulated 7-DoF arm (see the module docstring).

    Attributes after configure (read by the demo / tests in the same process, non-RT readers):
        interface: the :class:`SimArmInterface` (the robot the cycle reads and writes).
        arm, audit, e2e_hist, e2e_ring, trace: the interface's (see there).
        direct_cycle: set True before configure when a ControlCycle drives the interface.
    """

    def __init__(
        self,
        *,
        config: AppConfig | None = None,
        node_name: str = 'sim_robot',
        namespace: str = '',
        intra_process: bool = False,
        **node_kwargs: Any,
    ) -> None:
        super().__init__(
            node_name, config=config, namespace=namespace, intra_process=intra_process, **node_kwargs
        )
        self.direct_cycle = False
        self.interface: SimArmInterface | None = None
        self._pub: Any = None
        self._sub: Any = None
        self._mirror: Any = None
        self._state_ch: Any = None

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Build the robot model, the simulated arm and (by mode) the I/O and task."""
        app = self.app
        try:
            model = RobotModel.from_config(app.robot, app.base_dir)
            lim = ArmLimits.from_model(model, app.sim.robot)
            q0 = lim.initial_q(app.sim.robot)
        except RtSafeRlError as err:
            self.get_logger().error(f'configure failed: {err}')
            return TransitionCallbackReturn.FAILURE
        n = lim.n_joints
        period_ns = app.control.period_ns
        sc = app.sim.robot
        self.interface = SimArmInterface(lim, q0, period_ns, sc.command_timeout_s, sc.limit_tolerance)
        self._state = RobotState(n)
        self._stamps = StateStamps(period_ns)
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()
        depth = app.topics.qos_depth
        self._pub = self.create_lifecycle_publisher(JointState, app.topics.joint_states, depth)
        msg = JointState()
        msg.name = list(lim.joint_names)
        msg.position = [0.0] * n
        msg.velocity = [0.0] * n
        msg.effort = [0.0] * n
        self._msg = msg
        self._pos_view = np.frombuffer(msg.position, dtype=np.float64)
        self._vel_view = np.frombuffer(msg.velocity, dtype=np.float64)
        self._eff_view = np.frombuffer(msg.effort, dtype=np.float64)
        if self.direct_cycle:
            ch = get_channel(self.resolve_topic_name(app.topics.joint_states) + '/_sim_state', 1 + 3 * n)
            self._state_ch = ch
            self._mirror = ChannelMirror(
                self,
                ch,
                JointState,
                app.topics.joint_states,
                decimation=max(1, int(app.topics.observer_decimation)),
                producer_period_ns=period_ns,
                slot=OFF_CYCLE_SLOTS['mirror_joint_states'],
                fill=self._fill_state,
                publisher=self._pub,
            )
            self._mirror.msg = self._msg  # filled in place through the numpy views
            self._task = None
            where = f'direct cycle; state mirrored on {self._pub.topic_name}'
        else:
            group = named_group(self, 'sim')
            self._sub = self.create_subscription(
                JointState,
                app.topics.joint_command,
                self._on_command,
                QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT),
                callback_group=group,
            )
            self._task = PeriodicTask(f'{self.get_name()}_tick', group, period_ns, self._tick)
            where = f'state on {self._pub.topic_name}, commands on {self._sub.topic_name}'
        self.get_logger().info(
            f'configured: {n} joints {list(lim.joint_names)}, {app.control.rate_hz:.0f} Hz, {where}'
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Counters and the period grid start over; start the task (DDS) or the mirror (direct)."""
        if self.interface is not None:
            self.interface.restart()
        if self._mirror is not None:
            self._mirror.task.enabled = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the task / mirror (the arm then holds by its command timeout when driven again)."""
        if self._mirror is not None:
            self._mirror.task.enabled = False
        return super().on_deactivate(state)

    def rt_tasks(self) -> list[Any]:
        """The periodic task (DDS mode) or the observer mirror (direct mode)."""
        if self._mirror is not None:
            return [self._mirror.task]
        return super().rt_tasks()

    def _release_entities(self) -> None:
        if self._mirror is not None:
            self._mirror.task.enabled = False
            self._mirror = None
        if self._sub is not None:
            self.destroy_subscription(self._sub)
            self._sub = None
        if self._pub is not None:
            self.destroy_publisher(self._pub)
            self._pub = None

    # ------------------------------------------------------------------ RT path
    def read(self, deadline_ns: int, out: RobotState) -> bool:
        """Direct cycle: the interface's read, plus the state record for the observer mirror."""
        iface = self.interface
        if iface is None:
            return False
        iface.read(deadline_ns, out)
        ch = self._state_ch
        if ch is None:
            return True
        row = ch.loan()
        n = out.q.shape[0]
        row[0] = out.seq
        row[1 : 1 + n] = out.q
        row[1 + n : 1 + 2 * n] = out.dq
        row[1 + 2 * n :] = iface.arm.effort
        ch.commit(out.stamp_ns)
        return True

    def write(self, seq: int, cmd: Any) -> None:
        """Direct cycle: the interface's write (position command [rad] for state `seq`)."""
        if self.interface is not None:
            self.interface.write(seq, cmd)

    @property
    def n_joints(self) -> int:
        """Number of joints (0 before configure)."""
        return self.interface.n_joints if self.interface is not None else 0

    def _fill_state(self, msg: Any, row: Any, seq: int, stamp_ns: int) -> None:
        """Observer mirror (observers thread): channel row -> the preallocated JointState."""
        n = self._pos_view.shape[0]
        np.copyto(self._pos_view, row[1 : 1 + n])
        np.copyto(self._vel_view, row[1 + n : 1 + 2 * n])
        np.copyto(self._eff_view, row[1 + 2 * n :])
        self._stamp(int(row[0]))

    def _stamp(self, seq: int, deadline_ns: int = 0) -> None:
        """Stamp the state of period `seq`: its scheduled time `deadline_ns` (monotonic) on the wall
        clock, as a robot stamps its control cycle (0: now)."""
        wall = self._wall_offset_ns + deadline_ns if deadline_ns else time.time_ns()
        set_stamp(self._msg, wall)
        self._stamps.record(seq, wall)

    def _tick(self, deadline_ns: int) -> None:
        """DDS mode, one control period: read the arm, publish the state."""
        iface = self.interface
        assert iface is not None
        st = self._state
        iface.read(deadline_ns, st)
        np.copyto(self._pos_view, st.q)
        np.copyto(self._vel_view, st.dq)
        np.copyto(self._eff_view, iface.arm.effort)
        self._stamp(st.seq, deadline_ns)
        self._pub.publish(self._msg)

    def _on_command(self, msg: JointState) -> None:
        """DDS mode: a position command (rad), for the period its stamp names -> the interface."""
        iface = self.interface
        assert iface is not None
        data = msg.position
        if len(data) != iface.n_joints:
            iface.commands_rejected += 1
            return
        cmd = np.frombuffer(data, dtype=np.float64) if not isinstance(data, list) else np.asarray(data)
        iface.write(self._stamps.seq_of(stamp_ns_of(msg)), cmd)


def main(argv: list[str] | None = None) -> int:
    """`sim_robot` executable (ROS args in `argv`, e.g. ``--ros-args -r __ns:=/arm``)."""
    return run_node('sim_robot', SimRobotNode, argv)


if __name__ == '__main__':
    sys.exit(main())
