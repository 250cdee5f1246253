"""`sim_robot`: the simulated position-controlled arm as a ROS 2 lifecycle node.

Behaves like a ros2_control robot with a forward_position_controller and a
joint_state_broadcaster: a :class:`~rt_safe_rl.rt.executor.PeriodicTask` (rt group ``sim``,
``control.rate_hz``, absolute deadlines) integrates the latest position command through the PD +
limits model (:class:`~rt_safe_rl.sim.arm.ArmSim`) and publishes ``sensor_msgs/JointState`` on
``topics.joint_states``; ``std_msgs/Float64MultiArray`` commands arrive on ``topics.robot_command``
(subscription in the same ``sim`` group, so state and command never race).

End-to-end latency (DEVELOPERS.md): each state carries its sequence number in
``header.frame_id``; commands carry the seq of the state they were computed from in
``layout.data_offset``; the robot measures state publish -> command receipt by seq, exactly.
Every received command is audited against the limits (:class:`~rt_safe_rl.sim.arm.CommandAudit`).
With no command for ``sim.robot.command_timeout_s`` the robot holds its position.

Topics: pub ``joint_states`` (JointState, reliable), sub ``forward_position_controller/commands``
(Float64MultiArray, best effort, so it matches reliable and best-effort publishers).
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
from std_msgs.msg import Float64MultiArray

from rt_safe_rl.config import AppConfig
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.core.stats import LogHistogram
from rt_safe_rl.nodes._sim_base import PeriodicSimNode, run_node
from rt_safe_rl.rt.metrics import registry
from rt_safe_rl.rt.ring import SpscRing
from rt_safe_rl.sim.arm import ArmLimits, ArmSim, CommandAudit

_PUB_RING = 1 << 12  # publish times kept for latency matching (4 s at 1 kHz)
_TRACE_CAPACITY = 1 << 15  # per-tick trace for tests / the demo (32 s at 1 kHz between drains)


class SimRobotNode(PeriodicSimNode):
    """Simulated 7-DoF arm (see the module docstring).

    Attributes after configure (read by the demo / tests in the same process, non-RT readers):
        arm: the :class:`ArmSim` state; audit: the :class:`CommandAudit`.
        e2e_hist: :class:`LogHistogram` of state publish -> command receipt (ns).
        e2e_ring: ``(t_rx_ns, latency_ns)`` per matched command (one reader: the demo).
        trace: ``(t_ns, seq, max |dq| / v_max, q_0..q_{n-1})`` per tick (one reader: a test).
        ticks, commands_rx, commands_unmatched, commands_rejected, holds: counters.
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
        self.limits: ArmLimits | None = None
        self.arm: ArmSim | None = None
        self.audit: CommandAudit | None = None
        self.e2e_hist = LogHistogram()
        self.e2e_ring = SpscRing(1 << 14, 2)
        self.trace: SpscRing | None = None
        self._pub: Any = None
        self._sub: Any = None
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.ticks = 0
        self.commands_rx = 0
        self.commands_unmatched = 0
        self.commands_rejected = 0
        self.holds = 0
        self.seq = 0
        self.last_tick_ns = 0

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Build the robot model, the simulator, the message, publisher, subscription and task."""
        from rt_safe_rl.core.robot_model import RobotModel
        from rt_safe_rl.rt.executor import PeriodicTask, named_group

        app = self.app
        try:
            model = RobotModel.from_config(app.robot, app.base_dir)
            self.limits = ArmLimits.from_model(model, app.sim.robot)
            q0 = self.limits.initial_q(app.sim.robot)
        except RtSafeRlError as err:
            self.get_logger().error(f'configure failed: {err}')
            return TransitionCallbackReturn.FAILURE
        lim = self.limits
        n = lim.n_joints
        self._period_ns = app.control.period_ns
        self._timeout_ns = int(app.sim.robot.command_timeout_s * 1e9)
        self.arm = ArmSim(lim, self._period_ns * 1e-9, q0)
        self.audit = CommandAudit(lim, self._period_ns * 1e-9, app.sim.robot.limit_tolerance)
        self._cmd = q0.copy()
        self._cmd_rx_ns = 0
        self._holding = True
        self._inv_vmax = 1.0 / lim.v_max
        self._tmp = np.zeros(n)
        self._pub_seq = np.zeros(_PUB_RING, dtype=np.int64)
        self._pub_ns = np.zeros(_PUB_RING, dtype=np.int64)
        self.trace = SpscRing(_TRACE_CAPACITY, 3 + n)
        self._trace_row = np.zeros(3 + n)
        self._reset_counters()
        # preallocated message; numpy views write straight into its float64 buffers
        msg = JointState()
        msg.name = list(lim.joint_names)
        msg.position = [0.0] * n
        msg.velocity = [0.0] * n
        msg.effort = [0.0] * n
        self._msg = msg
        self._pos_view = np.frombuffer(msg.position, dtype=np.float64)
        self._vel_view = np.frombuffer(msg.velocity, dtype=np.float64)
        self._eff_view = np.frombuffer(msg.effort, dtype=np.float64)
        depth = app.topics.qos_depth
        group = named_group(self, 'sim')
        self._pub = self.create_lifecycle_publisher(JointState, app.topics.joint_states, depth)
        self._sub = self.create_subscription(
            Float64MultiArray,
            app.topics.robot_command,
            self._on_command,
            QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT),
            callback_group=group,
        )
        self._task = PeriodicTask(f'{self.get_name()}_tick', group, self._period_ns, self._tick)
        reg = registry()
        self._period_stage = reg.stage('period')
        self._e2e_stage = reg.stage('e2e')
        self._violations_counter = reg.counter('command_limit_violations')
        self.get_logger().info(
            f'configured: {n} joints {list(lim.joint_names)}, {app.control.rate_hz:.0f} Hz, '
            f'state on {self._pub.topic_name}, commands on {self._sub.topic_name}'
        )
        return TransitionCallbackReturn.SUCCESS

    def _release_entities(self) -> None:
        if self._sub is not None:
            self.destroy_subscription(self._sub)
            self._sub = None
        if self._pub is not None:
            self.destroy_publisher(self._pub)
            self._pub = None

    # ------------------------------------------------------------------ RT path
    def _tick(self, deadline_ns: int) -> None:
        """One control period: apply the latest command (or hold), integrate, publish the state."""
        arm = self.arm
        assert arm is not None
        now = time.monotonic_ns()
        if self.last_tick_ns:
            self._period_stage.record_ns(now, now - self.last_tick_ns)
        self.last_tick_ns = now
        if self._cmd_rx_ns and now - self._cmd_rx_ns <= self._timeout_ns:
            arm.set_command(self._cmd)
            self._holding = False
        elif not self._holding:
            arm.hold()  # controller silent: latch the current position
            self._holding = True
            self.holds += 1
        arm.step()
        self.ticks += 1
        seq = self.seq + 1
        self.seq = seq
        np.copyto(self._pos_view, arm.q)
        np.copyto(self._vel_view, arm.dq)
        np.copyto(self._eff_view, arm.effort)
        msg = self._msg
        wall = time.time_ns()
        msg.header.stamp.sec = wall // 1_000_000_000
        msg.header.stamp.nanosec = wall % 1_000_000_000
        msg.header.frame_id = str(seq)
        slot = seq & (_PUB_RING - 1)
        self._pub_seq[slot] = seq
        self._pub_ns[slot] = time.monotonic_ns()
        self._pub.publish(msg)
        row = self._trace_row
        row[0] = now
        row[1] = seq
        np.abs(arm.dq, out=self._tmp)
        self._tmp *= self._inv_vmax
        row[2] = self._tmp.max()
        row[3:] = arm.q
        assert self.trace is not None
        self.trace.try_push(row)

    def _on_command(self, msg: Float64MultiArray) -> None:
        """A position command (rad): audit it, match its seq for the e2e latency, keep it."""
        now = time.monotonic_ns()
        audit = self.audit
        assert audit is not None
        data = msg.data
        if len(data) != self._cmd.size:
            self.commands_rejected += 1
            return
        self.commands_rx += 1
        seq = int(msg.layout.data_offset)
        cmd = np.frombuffer(data, dtype=np.float64) if not isinstance(data, list) else np.asarray(data)
        if not audit.check(seq, cmd):
            self._violations_counter.inc()
        if not np.all(np.isfinite(cmd)):
            self.commands_rejected += 1  # a robot never moves to NaN: keep the previous command
            return
        np.copyto(self._cmd, cmd)
        self._cmd_rx_ns = now
        slot = seq & (_PUB_RING - 1)
        if seq > 0 and self._pub_seq[slot] == seq:
            lat = now - int(self._pub_ns[slot])
            self.e2e_hist.record_ns(lat)
            self.e2e_ring.try_push2(float(now), float(lat))
            self._e2e_stage.record_ns(now, lat)
        else:
            self.commands_unmatched += 1

    # ------------------------------------------------------------------ non-RT readers
    def stats(self) -> dict[str, Any]:
        """Counters and the command audit as a plain dict (non-RT)."""
        out: dict[str, Any] = {
            'ticks': self.ticks,
            'commands_rx': self.commands_rx,
            'commands_unmatched': self.commands_unmatched,
            'commands_rejected': self.commands_rejected,
            'holds': self.holds,
        }
        if self.audit is not None:
            out['audit'] = self.audit.summary()
        if self._task is not None:
            out['task'] = self._task.stats()
        return out


def main(argv: list[str] | None = None) -> int:
    """`sim_robot` executable (ROS args in `argv`, e.g. ``--ros-args -r __ns:=/arm``)."""
    return run_node('sim_robot', SimRobotNode, argv)


if __name__ == '__main__':
    sys.exit(main())
