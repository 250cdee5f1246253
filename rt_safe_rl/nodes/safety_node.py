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

Outputs: the safe command on ``forward_position_controller/commands`` (``Float64MultiArray``, rad,
a plain forward command; or the ros2_control output mode's message, :mod:`.command_output`) and
on ``safety/joint_command`` (``sensor_msgs/JointState``: ``header.stamp`` = the stamp of the joint
state the command answers -- for the commands the monitor sends while states have stopped, that
stamp + one robot period per period since -- ``position`` rad, ``velocity`` rad/s: what a robot
simulator or a latency probe matches to its states; no field is repurposed); optionally
``trajectory_msgs/JointTrajectory`` on ``safety/joint_trajectory``; channel ``<command topic>``
(``[state_seq, q...]``),
``safety/status`` (``DiagnosticStatus`` at ``safety.status_rate_hz``: OK / WARN (limiting, holding)
/ ERROR (latched), message = fault [+ detail] [+ active constraints], values = the report and the
counters), metrics (stage ``safety``; counters ``safety_interventions``, ``faults``,
``output_guard_errors``, ``dropped_states``; gauge ``human_distance_m``).

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
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PointStamped, PoseArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from rt_safe_rl.config import AppConfig
from rt_safe_rl.core.errors import ConfigError, RtSafeRlError
from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety import FaultCode, SafetyConfig, SafetyFilter
from rt_safe_rl.core.safety.filter import MAX_HUMAN_POINTS
from rt_safe_rl.core.safety.supervisor import SafetySupervisor
from rt_safe_rl.core.safety.tuning import loosenings
from rt_safe_rl.nodes._safety_params import (  # noqa: F401  (re-exported)
    READ_ONLY,
    config_from_values,
    declare_safety_parameters,
    flatten_config,
)
from rt_safe_rl.nodes._sim_base import SimNodeBase, run_node
from rt_safe_rl.nodes.command_output import CommandOutput
from rt_safe_rl.nodes.msgs import (
    ActionRecord,
    JointStateReader,
    publisher_conflict,
    set_stamp,
    status_message,
)
from rt_safe_rl.rt.metrics import registry

ACTION_HEADER = ActionRecord.HEADER
"""Action channel row = [state_seq, valid, q_target...] (see :class:`ActionRecord`)."""
HUMAN_POINTS_TOPIC = 'human/points'
TRAJECTORY_TOPIC = 'safety/joint_trajectory'
_mono = time.monotonic_ns


_pause = time.sleep


def _clock() -> int:
    return _mono()  # looked up at each call, so tests can replace ``_mono``


def _sleep(seconds: float) -> None:
    _pause(seconds)  # tests on a fake ``_mono`` replace ``_pause`` to advance it


class SafetyFilterNode(SimNodeBase):
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
        self._output: CommandOutput | None = None  # configure creates it (mode other than position)
        self._operator_rejected = 0  # operator commands of the wrong size (dropped)
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

    # ------------------------------------------------------------------ read-only views
    @property
    def filter(self) -> SafetyFilter | None:
        """The core filter (``filter.report`` is the last report), None before configure."""
        return self.supervisor.filter if self.supervisor is not None else None

    def _count(self, name: str) -> int:
        return int(getattr(self.supervisor, name)) if self.supervisor is not None else 0

    cycles = property(lambda self: self._count('cycles'), doc='Filter steps for policy actions.')
    monitor_publishes = property(lambda self: self._count('monitor_publishes'), doc='Monitor commands.')
    monitor_stops = property(lambda self: self._count('monitor_stops'), doc='Monitor state-limit stops.')
    deadline_misses = property(lambda self: self._count('deadline_misses'), doc='Late commands.')
    skipped_actions = property(lambda self: self._count('skipped_actions'), doc='Actions dropped.')

    # ------------------------------------------------------------------ parameters
    def current_config(self) -> SafetyConfig:
        """The SafetyConfig in force (last accepted parameter set)."""
        return self._cfg

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        values = {name: self.get_parameter(name).value for name, _, _ in flatten_config(self._cfg)}
        reset = False
        for p in params:
            if p.name == 'safety.reset':
                reset = bool(p.value)
            elif p.name in values:
                values[p.name] = p.value
        sup = self.supervisor
        try:
            new_cfg = config_from_values(values, self._cfg)
            loose = loosenings(self.model, self._cfg, new_cfg) if self._is_active() and self.model else []
            if loose:
                why = '; '.join(loose)
                return SetParametersResult(
                    successful=False,
                    reason=f'refused while active (safety parameters may only tighten): {why}. '
                    'Deactivate, set, activate to loosen.',
                )
            if sup is not None:
                sup.validate_config(new_cfg)  # against the robot; nothing changes yet
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        if reset:  # before the config is applied: a refused set changes nothing
            ok, why = self.reset_filter()
            if not ok:
                return SetParametersResult(successful=False, reason=why)
        if sup is not None and new_cfg != self._cfg:
            sup.update_config(new_cfg)  # applies at the next cycle
        self._cfg = new_cfg
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: list[Any]) -> None:
        """`safety.reset` is a momentary switch: it falls back to false once acted upon."""
        if any(p.name == 'safety.reset' and p.value for p in params):
            self.set_parameters([Parameter('safety.reset', Parameter.Type.BOOL, False)])

    def _is_active(self) -> bool:
        return self.supervisor is not None and self.supervisor.active

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
        self.get_logger().info(
            f'configured: {self.model.n_joints} joints, {self.model.n_points} monitored points, SSM '
            f'{"on" if self._cfg.ssm.enabled else "off"}, monitor {self._cfg.monitor_rate_hz:g} Hz, '
            f'actions from {"channel" if self.intra_process else "topic"} '
            f'{self.resolve_topic_name(app.topics.policy_action)}, commands on {self._cmd_pub.topic_name}'
        )
        return TransitionCallbackReturn.SUCCESS

    def _create_io(self, model: RobotModel) -> None:
        """Preallocated messages, publishers, subscriptions, channels and RT tasks (configure)."""
        from rt_safe_rl.rt.channel import get_channel
        from rt_safe_rl.rt.executor import PeriodicTask, TriggeredTask, named_group

        n = model.n_joints
        period_ns = round(1e9 / self.app.control.rate_hz)
        self._reader = JointStateReader(list(model.joint_names), 4 * period_ns)
        self._act = np.zeros(ActionRecord.size(n))
        self._act_stamp_ns = 0
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
        topics = self.app.topics
        depth = topics.qos_depth
        grp = named_group(self, 'safety')
        self._cmd_pub = self.create_lifecycle_publisher(Float64MultiArray, topics.robot_command, depth)
        self._jc_pub = self.create_lifecycle_publisher(JointState, topics.joint_command, depth)
        self._status_pub = self.create_lifecycle_publisher(DiagnosticStatus, topics.safety_status, depth)
        self._pubs = [self._cmd_pub, self._jc_pub, self._status_pub]
        self._output = None  # a ros2_control output besides the position stream (README)
        if self._cfg.output_mode != 'position' or self._cfg.output_topic:
            self._output = CommandOutput(
                self,
                self._cfg.output_mode,
                self._cfg.output_topic,
                period_ns * 1e-9,
                joint_names=model.joint_names,
                qos_depth=depth,
            )
            self._pubs.append(self._output.publisher)
        self._traj_pub = None
        if self._cfg.publish_trajectory:
            self._traj_pub = self.create_lifecycle_publisher(JointTrajectory, TRAJECTORY_TOPIC, depth)
            self._pubs.append(self._traj_pub)
        self._input_topics = [
            topics.joint_states,
            topics.human_position,
            HUMAN_POINTS_TOPIC,
            topics.operator_command,
        ]
        self._subs = [
            self.create_subscription(
                JointState, topics.joint_states, self._on_joint_state, depth, callback_group=grp
            ),
            self.create_subscription(
                PointStamped, topics.human_position, self._on_human_point, depth, callback_group=grp
            ),
            self.create_subscription(
                PoseArray, HUMAN_POINTS_TOPIC, self._on_human_poses, depth, callback_group=grp
            ),
            self.create_subscription(
                Float64MultiArray, topics.operator_command, self._on_operator, depth, callback_group=grp
            ),
        ]
        self.command_channel = get_channel(self.resolve_topic_name(topics.robot_command), n + 1)
        self._tasks = []
        if self.intra_process:
            self.action_channel = get_channel(
                self.resolve_topic_name(topics.policy_action), ActionRecord.size(n)
            )
            self._tasks.append(
                TriggeredTask(f'{self.get_name()}_action', grp, self.action_channel, self.process_action)
            )
        else:
            self._input_topics.append(topics.policy_action)
            self._subs.append(
                self.create_subscription(
                    JointState, topics.policy_action, self._on_action, depth, callback_group=grp
                )
            )
        mon_grp = named_group(self, 'safety_monitor')
        self._monitor_task = PeriodicTask(
            f'{self.get_name()}_monitor', mon_grp, round(1e9 / self._cfg.monitor_rate_hz), self._monitor
        )
        self._tasks.append(self._monitor_task)
        self._srv = self.create_service(Trigger, '~/reset', self._on_reset)
        # status as a task in the low-priority FIFO 'observers' group, not an rclpy timer: each wake
        # of the non-RT spinning thread rebuilds its wait set holding the GIL for 0.4-0.5 ms
        status_period_ns = round(1e9 / self._cfg.status_rate_hz)
        self._status_task = PeriodicTask(
            f'{self.get_name()}_status',
            named_group(self, 'observers'),
            status_period_ns,
            self._publish_status,
        )
        self._tasks.append(self._status_task)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start filtering: the command re-synchronises (no jump) and holds until a valid action."""
        ret = super().on_activate(state)
        if self._output is not None:
            self._output.reset()  # the first derived velocity after (re)activation is 0
        if self.supervisor is not None:
            self.supervisor.activate()
        for t in self._tasks:
            t.enabled = True
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Brake a moving command to rest within the limits (velocity outputs end with zeros), then
        stop filtering and publishing. Fails (the node stays active, braking, latched) when the
        command still moves after twice its braking time."""
        sup = self.supervisor
        if sup is not None:
            at_rest, why = sup.brake_to_rest('deactivating: braking to rest first')
            if not at_rest:
                self.get_logger().error(f'deactivate refused: {why}; the stop stays latched, try again')
                return TransitionCallbackReturn.FAILURE
            sup.deactivate()
        for t in self._tasks:
            t.enabled = False
        return super().on_deactivate(state)

    def _release(self) -> None:
        """Release I/O, tasks and the supervisor (cleanup and shutdown, see SimNodeBase)."""
        if self.supervisor is not None:
            self.supervisor.deactivate()
        for t in self._tasks:
            t.enabled = False
        self._tasks = []
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        for p in self._pubs:
            self.destroy_publisher(p)
        self._pubs = []
        if self._srv is not None:
            self.destroy_service(self._srv)
            self._srv = None
        self.supervisor = None
        self.action_channel = None
        self.command_channel = None

    def rt_tasks(self) -> list[Any]:
        """The action TriggeredTask (intra_process), the safety monitor and the status PeriodicTasks."""
        return list(self._tasks)

    # ------------------------------------------------------------------ services / status
    def reset_filter(self) -> tuple[bool, str]:
        """Clear a latched stop (next cycle); ``(accepted, why)`` -- see :meth:`SafetySupervisor.reset`."""
        if self.supervisor is None:
            return False, 'not configured'
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
        """Command the braking stop and hold, latched (SIGTERM / SIGINT path). Any thread."""
        if self.supervisor is not None:
            self.supervisor.controlled_stop(reason)
            self.get_logger().warning(f'controlled stop: {reason}')

    def status(self) -> dict[str, Any]:
        """The last report plus counters as a dict (non-RT; one step's values, copied under the lock)."""
        sup = self.supervisor
        if sup is None:
            return {'fault': 'NOT_CONFIGURED', 'last_command_seq': -1}
        d = sup.status()
        d['velocity_estimated_states'] = self._reader.estimated
        d['operator_rejected'] = self._operator_rejected
        if self._tasks:
            d['monitor'] = self._monitor_task.stats()
        return d

    def check_publishers(self) -> str:
        """Fail closed (COMPETING_PUBLISHER) when an input topic has more than one publisher, or one
        outside ``safety.inputs.allowed_publishers``; returns the detail ('' = fine). Non-RT."""
        for topic in self._input_topics:
            name = self.resolve_topic_name(topic)
            detail = publisher_conflict(
                name, self.get_publishers_info_by_topic(name), self._cfg.inputs.allowed_publishers
            )
            sup = self.supervisor
            if detail and sup is not None:
                if not sup.filter.stop_latched:
                    self.get_logger().error(f'fail closed: {detail}')
                    sup.fail_closed(FaultCode.COMPETING_PUBLISHER, detail)
                elif sup.add_detail(detail):  # latched by another fault first (e.g. INPUT_ORDER)
                    self.get_logger().error(f'also: {detail}')
                return detail
        return ''

    def _publish_status(self, deadline_ns: int) -> None:
        """The status PeriodicTask (observers group): publisher check, the report as a DiagnosticStatus."""
        if not self._is_active():
            return
        every = max(1, round(self._cfg.inputs.publisher_check_period_s * self._cfg.status_rate_hz))
        if self._status_ticks % every == 0:
            self.check_publishers()
        self._status_ticks += 1
        self._status_pub.publish(status_message(self.get_fully_qualified_name(), self.status()))

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

    def _emit(self, cmd: np.ndarray, seq: int, t_ns: int, repeat: bool) -> None:
        """Publish a command (called by the supervisor under its lock). RT path."""
        out = self._output
        if repeat:
            self._cmd_pub.publish(self._cmd_msg)  # the held command again
            self._jc_pub.publish(self._jc_msg)  # same stamp: the same robot period's command
            if out is not None:
                out.republish()
            return
        np.copyto(self._cmd_view, cmd)
        self._cmd_pub.publish(self._cmd_msg)
        sup = self.supervisor
        if sup is not None:
            set_stamp(self._jc_msg, sup.stamp_for_label(seq))
            np.copyto(self._jc_q, cmd)
            sup.copy_command_velocity(self._jc_v)
        self._jc_pub.publish(self._jc_msg)
        if out is not None:
            out.publish(cmd)
        if self._traj_pub is not None:
            np.copyto(self._traj_view, cmd)
            self._traj_pub.publish(self._traj_msg)
        ch = self.command_channel
        if ch is not None:
            buf = ch.loan()
            buf[0] = seq
            buf[1:] = cmd
            ch.commit(t_ns)

    def read_command(self, out: np.ndarray) -> int:
        """Copy the latest safe command into `out`; return its state seq (-1 before the first)."""
        return self.supervisor.read_command(out) if self.supervisor is not None else -1

    def _monitor(self, deadline_ns: int) -> None:
        """The safety monitor PeriodicTask (>= 2 kHz): :meth:`SafetySupervisor.monitor_tick`."""
        if self.supervisor is not None:
            self.supervisor.monitor_tick(deadline_ns)


def main(argv: list[str] | None = None) -> int:
    """`safety_node` executable (ROS args in `argv`, e.g. ``--ros-args -p safety.velocity_scale:=0.5``)."""
    return run_node('safety_node', SafetyFilterNode, argv)


if __name__ == '__main__':
    sys.exit(main())
