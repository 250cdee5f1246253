"""SafetyFilterNode: the lifecycle node that makes every command safe -- ROS glue (parameters,
lifecycle, message conversion, publisher checks) around
:class:`~rt_safe_rl.core.safety.supervisor.SafetySupervisor`, which owns the filter, the step lock,
the command labels, the safety monitor, the deadline latch and the input-integrity rules.

Inputs (names relative, so a namespace applies): ``joint_states`` (``sensor_msgs/JointState``,
read by :class:`~rt_safe_rl.nodes.msgs.JointStateReader`) -> :meth:`process_state` (group
``safety``); the proposed action (:class:`~rt_safe_rl.nodes.msgs.ActionRecord`): channel
``policy/action`` (a TriggeredTask in group ``safety``) when ``intra_process``, else the topic;
either runs :meth:`process_action`; ``human/position`` (``PointStamped``) or ``human/points``
(``PoseArray``), robot base frame [m]; ``operator/command`` (``Float64MultiArray``, rad).

Outputs: see :mod:`._safety_io` (command, joint_command, trajectory, channel, status, metrics).

Fail-closed: see the supervisor and the filter. More than one publisher on the state, action,
human or operator topics (or one not in ``safety.inputs.allowed_publishers``) latches
``COMPETING_PUBLISHER`` naming them (checked every ``inputs.publisher_check_period_s`` while
active). A latched stop is cleared with ``~/reset`` (``std_srvs/Trigger``) or ``safety.reset``
(momentary): refused with the reason while braking or when it would latch again at once.

Every ``safety.*`` config value is a ROS parameter (:mod:`._safety_params`); all but ``rate_hz``,
``monitor_rate_hz``, ``status_rate_hz``, ``publish_trajectory`` are live-tunable, validated as a
whole, applied at the next cycle -- and while ACTIVE they may only tighten
(:func:`~rt_safe_rl.core.safety.tuning.loosenings`; loosen: deactivate, set, activate).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PointStamped, PoseArray
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from rt_safe_rl.config import AppConfig
from rt_safe_rl.core.errors import ConfigError, RtSafeRlError
from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety import FaultCode, SafetyConfig
from rt_safe_rl.core.safety.filter import MAX_HUMAN_POINTS
from rt_safe_rl.core.safety.supervisor import SafetySupervisor
from rt_safe_rl.nodes._safety_io import HUMAN_POINTS_TOPIC, SafetyNodeIO  # noqa: F401
from rt_safe_rl.nodes._safety_output import SafetyCommandPublisher
from rt_safe_rl.nodes._safety_params import (  # noqa: F401  (re-exported)
    READ_ONLY,
    config_from_values,
    declare_safety_parameters,
    flatten_config,
)
from rt_safe_rl.nodes._sim_base import run_node
from rt_safe_rl.nodes.msgs import (
    ActionRecord,
)
from rt_safe_rl.rt.metrics import registry

ACTION_HEADER = ActionRecord.HEADER
"""Action channel row = [state_seq, valid, q_target...] (see :class:`ActionRecord`)."""
_mono = time.monotonic_ns


_pause = time.sleep


def _clock() -> int:
    return _mono()  # looked up at each call, so tests can replace ``_mono``


def _sleep(seconds: float) -> None:
    _pause(seconds)  # tests on a fake ``_mono`` replace ``_pause`` to advance it


class SafetyFilterNode(SafetyNodeIO):
    """Lifecycle node around :class:`SafetySupervisor` (see the module docstring).

    Attributes after configure (non-RT readers): model, supervisor, filter, cycles,
    monitor_publishes, last_error, command_channel.
    """

    def __init__(
        self,
        *,
        config: AppConfig | None = None,
        node_name: str = 'safety_node',
        namespace: str = '',
        intra_process: bool = False,
        **node_kwargs: Any,
    ) -> None:
        super().__init__(
            node_name, config=config, namespace=namespace, intra_process=intra_process, **node_kwargs
        )
        self._cfg: SafetyConfig = declare_safety_parameters(self, self.app.safety)
        self.command_out: SafetyCommandPublisher | None = None  # configure creates it
        self._operator_rejected = 0  # operator commands of the wrong size (dropped)
        # set True before configure when a ControlCycle feeds the robot's state (no joint_states
        # subscription: the in-process robot is the only source of states)
        self.direct_cycle = False
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self.model: RobotModel | None = None
        self.supervisor: SafetySupervisor | None = None
        self.command_channel: Any = None
        self.action_channel: Any = None
        self.last_error = ''
        self._tasks: list[Any] = []
        self._subs: list[Any] = []
        self._pubs: list[Any] = []
        self._srv: Any = None
        self._status_ticks = 0
        self._final_stop = ''  # the reason of a controlled_stop (SIGTERM / SIGINT): no reset after it

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the robot model, build + warm up the supervisor, preallocate, create the I/O."""
        app = self.app
        try:
            if abs(self._cfg.rate_hz - app.control.rate_hz) > 1e-9 * app.control.rate_hz:
                raise ConfigError(
                    f'safety.rate_hz ({self._cfg.rate_hz:g}) must equal control.rate_hz '
                    f'({app.control.rate_hz:g}): each command advances the filter by one robot period'
                )
            self.model = RobotModel.from_config(app.robot, app.base_dir)
            self.supervisor = SafetySupervisor(
                self.model, self._cfg, self._emit, metrics=registry(), clock=_clock, sleep=_sleep
            )
            self.supervisor.warm_up()
        except RtSafeRlError as err:
            self.last_error = str(err)
            self.get_logger().error(f'configure failed: {err}')
            return TransitionCallbackReturn.FAILURE
        self._create_io(self.model)
        cmd_topic = self.command_out.cmd_pub.topic_name if self.command_out is not None else '?'
        self.get_logger().info(
            f'configured: {self.model.n_joints} joints, {self.model.n_points} monitored points, SSM '
            f'{"on" if self._cfg.ssm.enabled else "off"}, monitor {self._cfg.monitor_rate_hz:g} Hz, '
            f'actions from {"channel" if self.intra_process else "topic"} '
            f'{self.resolve_topic_name(app.topics.policy_action)}, commands on {cmd_topic}'
        )
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ services / status
    def reset_filter(self) -> tuple[bool, str]:
        """Clear a latched stop (next cycle); ``(accepted, why)`` -- see :meth:`SafetySupervisor.reset`."""
        if self.supervisor is None:
            return False, 'not configured'
        if self._final_stop:
            return False, f'reset refused: the node is stopping ({self._final_stop}); restart it'
        conflict = self.check_publishers()  # (its periodic check only adds to a latched stop's detail)
        if conflict:
            return False, f'reset refused: {conflict}'
        return self.supervisor.reset()

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.reset_filter()
        return response

    def reset_for_replay(self) -> None:
        """Fresh filter state (benchmarks between repeats; the caller owns the control thread)."""
        if self.supervisor is not None:
            self.supervisor.replace_filter()
            self._reader.reset()

    def controlled_stop(self, reason: str) -> None:
        """Command the braking stop and hold, latched (SIGTERM / SIGINT path): final, no reset
        clears it (the process is going down). Any thread."""
        self._final_stop = reason
        if self.supervisor is not None:
            self.supervisor.controlled_stop(reason)
            self.get_logger().warning(f'controlled stop: {reason}')

    # ------------------------------------------------------------------ inputs (group 'safety')
    def _on_joint_state(self, msg: JointState) -> None:
        r = self._reader
        now = _mono()
        r.read(msg, now)
        if r.last_error and r.last_error != self.last_error:
            self.last_error = r.last_error
            self.get_logger().error(r.last_error)
        if r.velocity_estimated and self.supervisor is not None:
            if self._cfg.inputs.missing_velocity == 'fail':
                if not self.supervisor.filter.stop_latched:
                    self.supervisor.fail_closed(
                        FaultCode.MISSING_VELOCITY,
                        f'joint_states velocity has {len(msg.velocity)} values for {len(msg.position)} '
                        'positions (safety.inputs.missing_velocity: fail)',
                    )
            elif r.estimated == 1:
                self.get_logger().warning(
                    f'joint_states velocity has {len(msg.velocity)} values for {len(msg.position)} '
                    'positions: estimated by finite differences (safety.inputs.missing_velocity: estimate)'
                )
        if self.process_state(now, r.seq, r.q, r.dq, header_stamp_ns=r.stamp_ns):
            r.accept()

    def process_state(
        self, stamp_ns: int, seq: int, q: np.ndarray, dq: np.ndarray, *, header_stamp_ns: int = 0
    ) -> bool:
        """Latest measured state (rad, rad/s, robot order), robot seq (< 0: none), receipt time [ns];
        False when dropped (out of order / duplicate). RT-safe; see :meth:`SafetySupervisor.process_state`."""
        sup = self.supervisor
        return sup.process_state(stamp_ns, seq, q, dq, header_stamp_ns=header_stamp_ns) if sup else False

    def _on_human_point(self, msg: PointStamped) -> None:
        if self.supervisor is not None:
            buf = self.supervisor.human_buffer()
            buf[0, 0], buf[0, 1], buf[0, 2] = msg.point.x, msg.point.y, msg.point.z
            self.supervisor.commit_human(1, _mono())

    def _on_human_poses(self, msg: PoseArray) -> None:
        if self.supervisor is None:
            return
        buf = self.supervisor.human_buffer()
        k = min(len(msg.poses), MAX_HUMAN_POINTS)
        for i in range(k):
            p = msg.poses[i].position
            buf[i, 0], buf[i, 1], buf[i, 2] = p.x, p.y, p.z
        if len(msg.poses) > MAX_HUMAN_POINTS:
            buf[0, 0] = np.nan  # more points than we can check: fail closed
        self.supervisor.commit_human(k, _mono())

    def set_human(self, stamp_ns: int, xyz: np.ndarray, speed_m_s: float = -1.0) -> None:
        """Latest human point(s) [m] ((3,) or (M,3)) at `stamp_ns`; speed toward the robot (< 0 unknown)."""
        if self.supervisor is not None:
            self.supervisor.set_human(stamp_ns, xyz, speed_m_s)

    def _on_operator(self, msg: Float64MultiArray) -> None:
        if self.model is None:
            return
        if len(msg.data) != self.model.n_joints:  # dropped, counted (status operator_rejected), said once
            self._operator_rejected += 1
            if self._operator_rejected == 1:
                self.get_logger().error(
                    f'operator command with {len(msg.data)} values for {self.model.n_joints} joints: '
                    'dropped (counted in the status as operator_rejected)'
                )
            return
        self.set_operator(_mono(), np.frombuffer(msg.data, dtype=np.float64))

    def set_operator(self, stamp_ns: int, values: np.ndarray) -> None:
        """Latest operator position targets [rad] for shared control and their time [ns]."""
        if self.supervisor is not None:
            self.supervisor.set_operator(stamp_ns, values)

    def _on_action(self, msg: JointState) -> None:
        """DDS action (not intra_process): decode into the action row, then process it."""
        self._act_stamp_ns = ActionRecord.from_msg(msg, self._act)
        self.process_action(-1)

    # ------------------------------------------------------------------ RT path
    def process_action(self, seq: int) -> None:
        """Filter the latest proposed action and publish the safe command (RT path, group 'safety').
        `seq` is the channel sequence (intra_process) or -1 (DDS: the row was just filled)."""
        sup = self.supervisor
        if sup is None:
            return
        row = self._act
        stamp_ns = self._act_stamp_ns
        if self.action_channel is not None and seq != -1:
            ch_seq, stamp_ns = self.action_channel.try_read(row)
            if ch_seq <= 0:
                row[ActionRecord.VALID] = 0.0
        state_seq = ActionRecord.seq(row)
        sup.process_action(
            state_seq,
            ActionRecord.target(row),
            ActionRecord.valid(row),
            state_stamp_ns=stamp_ns if state_seq < 0 else 0,  # no seq: the state is named by its stamp
        )

    def _monitor(self, deadline_ns: int) -> None:
        """The safety monitor PeriodicTask (a >= 2 kHz grid): :meth:`SafetySupervisor.monitor_tick`;
        the task sleeps through the periods in which no timeout can expire (it wakes at the
        first that could, every period while the monitor steps or holds). RT-safe."""
        if self.supervisor is not None:
            idle_ns = self.supervisor.monitor_tick(deadline_ns)
            # from the tick's own deadline (<= now: a late tick wakes early rather than late)
            self._monitor_task.run_after_ns = deadline_ns + idle_ns if idle_ns > 0 else 0


def main(argv: list[str] | None = None) -> int:
    """`safety_node` executable (ROS args in `argv`, e.g. ``--ros-args -p safety.velocity_scale:=0.5``)."""
    return run_node('safety_node', SafetyFilterNode, argv)


if __name__ == '__main__':
    sys.exit(main())
