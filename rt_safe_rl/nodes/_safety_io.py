"""The safety node's I/O half (moved unchanged out of :mod:`.safety_node`): read-only views, the
preallocated messages / publishers / subscriptions / channels / RT tasks (:meth:`_create_io`),
lifecycle enable/disable/release, and the command output
(:meth:`_emit`, RT path, called by the supervisor under its lock).

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

Publishing only to listeners: the command, joint_command and trajectory topics are published only
while they have a matched subscription (``get_subscription_count``, ~0.5 us, may take an rmw lock:
not called on the RT path). Their counts are cached at activate and refreshed every
:data:`LISTENER_REFRESH_PERIOD_S` by a task in the low-priority ``observers`` group; a subscriber
that joins gets the commands from the next refresh on (a late joiner of a volatile topic misses
the earlier ones anyway). Everything else happens for every command whether or not anyone
listens: the filter's step and output guard, the message fill, the command channel (and through
the cycle the in-process robot and its audit). ``commands_unheard`` counts the joint_command
publishes skipped.

The input callbacks, ``on_configure`` and the RT input path stay in :mod:`.safety_node` (they read
its ``_mono`` clock, which tests replace).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PointStamped, PoseArray
from rclpy.exceptions import InvalidHandle
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety import SafetyFilter
from rt_safe_rl.nodes._safety_params import SafetyNodeParams
from rt_safe_rl.nodes.command_output import CommandOutput
from rt_safe_rl.nodes.msgs import (
    ActionRecord,
    JointStateReader,
    set_stamp,
)

HUMAN_POINTS_TOPIC = 'human/points'
TRAJECTORY_TOPIC = 'safety/joint_trajectory'
LISTENER_REFRESH_PERIOD_S = 0.1
"""Period [s] of the listener-count refresh (``observers`` group): a new subscriber of the command
topics gets them at most this long after DDS matched it."""


class SafetyNodeIO(SafetyNodeParams):
    """Base of :class:`~rt_safe_rl.nodes.safety_node.SafetyFilterNode`: its I/O (see the module
    docstring). The subclass defines the callbacks named below and sets the attributes."""

    command_channel: Any
    action_channel: Any
    _output: CommandOutput | None
    _operator_rejected: int
    _tasks: list[Any]
    _subs: list[Any]
    _pubs: list[Any]
    _srv: Any
    _status_ticks: int
    _reader: JointStateReader
    _on_joint_state: Callable[[JointState], None]
    _on_human_point: Callable[[PointStamped], None]
    _on_human_poses: Callable[[PoseArray], None]
    _on_operator: Callable[[Float64MultiArray], None]
    _on_action: Callable[[JointState], None]
    _on_reset: Callable[[Trigger.Request, Trigger.Response], Trigger.Response]
    process_action: Callable[[int], None]
    _monitor: Callable[[int], None]

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

    def _create_io(self, model: RobotModel) -> None:
        """Preallocated messages, publishers, subscriptions, channels and RT tasks (configure)."""
        from rt_safe_rl.rt.channel import get_channel
        from rt_safe_rl.rt.executor import PeriodicTask, TriggeredTask, named_group

        n = model.n_joints
        period_ns = round(1e9 / self.app.control.rate_hz)
        self._reader = JointStateReader(list(model.joint_names), 4 * period_ns)
        self._act = np.zeros(ActionRecord.size(n))
        self._act_stamp_ns = 0
        self._make_messages(model, period_ns)
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
        self._add_observer_tasks()

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

    def _add_observer_tasks(self) -> None:
        """The status report and the listener count, tasks of the low-priority ``observers`` group."""
        from rt_safe_rl.rt.executor import PeriodicTask, named_group

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
        self._cmd_heard = self._jc_heard = self._traj_heard = True  # until the first count
        self.commands_unheard = 0
        self._listener_task = PeriodicTask(
            f'{self.get_name()}_listeners',
            named_group(self, 'observers'),
            round(LISTENER_REFRESH_PERIOD_S * 1e9),
            self._refresh_listeners,
        )
        self._tasks.append(self._listener_task)

    def _refresh_listeners(self, deadline_ns: int = 0) -> None:
        """Cache whether each gated publisher has a matched subscription (``observers`` group task
        and activate; not the RT path: ``get_subscription_count`` may take an rmw lock)."""
        try:
            self._cmd_heard = self._cmd_pub.get_subscription_count() > 0
            self._jc_heard = self._jc_pub.get_subscription_count() > 0
            tp = self._traj_pub
            self._traj_heard = tp is not None and tp.get_subscription_count() > 0
        except (InvalidHandle, RuntimeError):
            pass  # publishers being destroyed (cleanup): nothing is emitted any more

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start filtering: the command re-synchronises (no jump) and holds until a valid action."""
        ret = super().on_activate(state)
        if self._output is not None:
            self._output.reset()  # the first derived velocity after (re)activation is 0
        self._refresh_listeners()  # the first commands already go to those listening now
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
        """The action TriggeredTask (intra_process), the safety monitor, status and listener PeriodicTasks."""
        return list(self._tasks)

    # ------------------------------------------------------------------ output (RT path)
    def _emit(self, cmd: np.ndarray, seq: int, t_ns: int, repeat: bool) -> None:
        """Publish a command (called by the supervisor under its lock). RT path."""
        out = self._output
        if repeat:
            if self._cmd_heard:
                self._cmd_pub.publish(self._cmd_msg)  # the held command again
            if self._jc_heard:
                self._jc_pub.publish(self._jc_msg)  # same stamp: the same robot period's command
            else:
                self.commands_unheard += 1
            if out is not None:
                out.republish()
            return
        # the messages are filled for every command (a repeat after a listener joined sends the
        # latest); only the DDS publish is skipped while nobody listens (see the module docstring)
        np.copyto(self._cmd_view, cmd)
        if self._cmd_heard:
            self._cmd_pub.publish(self._cmd_msg)
        sup = self.supervisor
        if sup is not None:
            set_stamp(self._jc_msg, sup.stamp_for_label(seq))
            np.copyto(self._jc_q, cmd)
            sup.copy_command_velocity(self._jc_v)
        if self._jc_heard:
            self._jc_pub.publish(self._jc_msg)
        else:
            self.commands_unheard += 1
        if out is not None:
            out.publish(cmd)
        if self._traj_pub is not None:
            np.copyto(self._traj_view, cmd)
            if self._traj_heard:
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
