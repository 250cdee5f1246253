"""The safety node's I/O half (moved unchanged out of :mod:`.safety_node`): read-only views, the
preallocated messages / publishers / subscriptions / channels / RT tasks (:meth:`_create_io`),
lifecycle enable/disable/release, and the command output
(:meth:`_emit`, RT path, called by the supervisor under its lock).

Outputs: the command publishers, their messages and the publish-only-to-listeners gate are
:class:`._safety_output.SafetyCommandPublisher`; here also ``safety/status`` (``DiagnosticStatus``
at ``safety.status_rate_hz``: OK / WARN (limiting, holding) / ERROR (latched), message = fault
[+ detail] [+ active constraints], values = the report and the counters), metrics (stage
``safety``; counters ``safety_interventions``, ``faults``, ``output_guard_errors``,
``dropped_states``; gauge ``human_distance_m``).

The input callbacks, ``on_configure`` and the RT input path stay in :mod:`.safety_node` (they read
its ``_mono`` clock, which tests replace).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PointStamped, PoseArray
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety import SafetyFilter
from rt_safe_rl.nodes._safety_output import LISTENER_REFRESH_PERIOD_S, SafetyCommandPublisher
from rt_safe_rl.nodes._safety_params import SafetyNodeParams
from rt_safe_rl.nodes.msgs import (
    ActionRecord,
    JointStateReader,
)
from rt_safe_rl.rt.channel import get_channel
from rt_safe_rl.rt.executor import (
    OFF_CYCLE_SLOTS,
    PeriodicTask,
    TriggeredTask,
    named_group,
    off_cycle_phase_ns,
)

HUMAN_POINTS_TOPIC = 'human/points'


class SafetyNodeIO(SafetyNodeParams):
    """Base of :class:`~rt_safe_rl.nodes.safety_node.SafetyFilterNode`: its I/O (see the module
    docstring). The subclass defines the callbacks named below and sets the attributes."""

    command_channel: Any
    action_channel: Any
    direct_cycle: bool
    command_out: SafetyCommandPublisher | None
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
        n = model.n_joints
        period_ns = round(1e9 / self.app.control.rate_hz)
        self._reader = JointStateReader(list(model.joint_names), 4 * period_ns)
        self._act = np.zeros(ActionRecord.size(n))
        self._act_stamp_ns = 0
        topics = self.app.topics
        depth = topics.qos_depth
        grp = named_group(self, 'safety')
        self.command_out = SafetyCommandPublisher(self, model, self._cfg, topics, period_ns)
        self._status_pub = self.create_lifecycle_publisher(DiagnosticStatus, topics.safety_status, depth)
        self._pubs = [*self.command_out.publishers, self._status_pub]
        # sampled inputs (human, operator): taken at the start of each control cycle in the direct
        # cycle (no wake-up of their own); waited on where the thread runs no periodic task
        inputs = named_group(self, 'safety', polled=True)
        self._input_topics = [topics.human_position, HUMAN_POINTS_TOPIC, topics.operator_command]
        self._subs = [
            self.create_subscription(
                PointStamped, topics.human_position, self._on_human_point, depth, callback_group=inputs
            ),
            self.create_subscription(
                PoseArray, HUMAN_POINTS_TOPIC, self._on_human_poses, depth, callback_group=inputs
            ),
            self.create_subscription(
                Float64MultiArray, topics.operator_command, self._on_operator, depth, callback_group=inputs
            ),
        ]
        if not self.direct_cycle:  # the robot's state over DDS: each message runs the chain
            self._input_topics.insert(0, topics.joint_states)
            self._subs.insert(
                0,
                self.create_subscription(
                    JointState, topics.joint_states, self._on_joint_state, depth, callback_group=grp
                ),
            )
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
        # its ticks fall between the control cycle's deadlines (a quarter period after them), not on
        # them: both threads waking at once contend for the GIL at the start of every cycle
        # (bench loop, 3 pairs: e2e p50 46.8/38.9/36.9 us on the deadlines, 39.4/36.4/34.9 between)
        self._monitor_task = PeriodicTask(
            f'{self.get_name()}_monitor',
            mon_grp,
            round(1e9 / self._cfg.monitor_rate_hz),
            self._monitor,
            phase_ns=self.app.control.period_ns // 4,
        )
        self._tasks.append(self._monitor_task)
        self._srv = self.create_service(Trigger, '~/reset', self._on_reset)
        self._add_observer_tasks()

    def _add_observer_tasks(self) -> None:
        """The status report and the listener count, tasks of the low-priority ``observers`` group."""
        # status as a task in the low-priority FIFO 'observers' group, not an rclpy timer: each wake
        # of the non-RT spinning thread rebuilds its wait set holding the GIL for 0.4-0.5 ms; both
        # half a control period off the cycle's deadlines (off_cycle_phase_ns: no GIL hand-off in it)
        status_period_ns = round(1e9 / self._cfg.status_rate_hz)
        per = self.app.control.period_ns
        self._status_task = PeriodicTask(
            f'{self.get_name()}_status',
            named_group(self, 'observers'),
            status_period_ns,
            self._publish_status,
            phase_ns=off_cycle_phase_ns(per, OFF_CYCLE_SLOTS['safety_status']),
        )
        self._tasks.append(self._status_task)
        self._listener_task = PeriodicTask(
            f'{self.get_name()}_listeners',
            named_group(self, 'observers'),
            round(LISTENER_REFRESH_PERIOD_S * 1e9),
            self._refresh_listeners,
            phase_ns=off_cycle_phase_ns(per, OFF_CYCLE_SLOTS['safety_listeners']),
        )
        self._tasks.append(self._listener_task)

    def _refresh_listeners(self, deadline_ns: int = 0) -> None:
        """Re-count the command topics' subscribers (``observers`` group task and activate)."""
        if self.command_out is not None:
            self.command_out.refresh_listeners()

    @property
    def commands_unheard(self) -> int:
        """joint_command publishes skipped because nobody listened."""
        return self.command_out.commands_unheard if self.command_out is not None else 0

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start filtering: the command re-synchronises (no jump) and holds until a valid action."""
        ret = super().on_activate(state)
        out = self.command_out.output if self.command_out is not None else None
        if out is not None:
            out.reset()  # the first derived velocity after (re)activation is 0
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
        co = self.command_out
        if co is not None:
            co.emit(cmd, seq, t_ns, repeat, self.supervisor, self.command_channel)

    def read_command(self, out: np.ndarray) -> int:
        """Copy the latest safe command into `out`; return its state seq (-1 before the first)."""
        return self.supervisor.read_command(out) if self.supervisor is not None else -1
