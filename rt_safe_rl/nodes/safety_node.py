"""SafetyFilterNode: the lifecycle node that makes every command safe (thin ROS glue around
:class:`~rt_safe_rl.core.safety.SafetyFilter`).

Inputs (all names relative, so a namespace applies):

- ``joint_states`` (``sensor_msgs/JointState``, mapped to the robot's joint order by name) ->
  :meth:`SafetyFilterNode.process_state` (callback group ``safety``);
- the proposed action: channel ``policy/action`` (``[state_seq, valid, q_target...]``, a
  :class:`~rt_safe_rl.rt.executor.TriggeredTask` in group ``safety``) when ``intra_process``,
  else topic ``policy/action`` (``std_msgs/Float64MultiArray``: ``layout.data_offset`` = state seq,
  ``layout.dim[0].label`` 'valid' / 'invalid'); either runs :meth:`process_action`;
- ``human/position`` (``geometry_msgs/PointStamped``) or ``human/points`` (``PoseArray``), robot base
  frame [m]; ``operator/command`` (``Float64MultiArray``, rad) for shared control.

Outputs: the safe command on ``forward_position_controller/commands`` (``Float64MultiArray``, rad,
``layout.data_offset`` = the state seq it was computed from; optionally also a
``trajectory_msgs/JointTrajectory`` on ``safety/joint_trajectory``), channel ``<command topic>``
(``[state_seq, q...]``, in-process observers), ``safety/status`` (``diagnostic_msgs/DiagnosticStatus``
at ``safety.status_rate_hz``: level OK / WARN (limiting, holding) / ERROR (latched fault), message =
fault + active constraints, values = the full report), metrics (stage ``safety``; counters
``safety_interventions`` (cycles where a stop / hold / fault is active, or where the filter changed
the command by more than ``safety.intervention_threshold_rad`` beyond what the robot's own joint
limits make of the blended proposal: report ``safety_intervention_rad``), ``faults``; gauge
``human_distance_m``).

Fail-closed: from activation the robot is commanded to hold until valid policy actions arrive.
A safety monitor (:class:`~rt_safe_rl.rt.executor.PeriodicTask` at ``safety.monitor_rate_hz`` >=
2 kHz in group ``safety_monitor``, its own thread) checks the measured state against the limits
and the age of the state and of the actions; it latches a stop on a violation and, while the chain
is silent, steps the filter itself and publishes the braking / hold command at the control rate.
Both threads step and publish under one lock, read the step time under it, and claim the robot
period (state seq) they command: the filter advances exactly once per published command, seqs
strictly increase, so two consecutive commands never differ by more than one robot period of
motion within the limits (an action for a period the monitor already commanded is dropped).
A command later than ``safety.deadline_s`` after its state latches a deadline-miss stop. A latched
stop is cleared with the ``~/reset`` service (``std_srvs/Trigger``) or ``ros2 param set
<node> safety.reset true`` (refused while the robot is still braking).

Every ``safety.*`` value of the config is a ROS parameter (e.g. ``safety.ssm.reaction_time_s``,
``safety.v_max_rad_s``); all but ``rate_hz``, ``monitor_rate_hz``, ``status_rate_hz`` and
``publish_trajectory`` are live-tunable: a set is validated as a whole (negative limits, lower >
upper, NaN, limits looser than the robot's are rejected with the reason) and applied atomically
at the next cycle.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
import time
import typing
from typing import Any

import numba as nb
import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped, PoseArray
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from rt_safe_rl.config import AppConfig
from rt_safe_rl.core.configutil import from_mapping
from rt_safe_rl.core.errors import ConfigError, RtSafeRlError
from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety import FaultCode, SafetyConfig, SafetyFilter
from rt_safe_rl.core.safety import kernel as kn
from rt_safe_rl.core.safety.filter import MAX_HUMAN_POINTS
from rt_safe_rl.core.safety.tuning import loosenings
from rt_safe_rl.nodes._sim_base import SimNodeBase, run_node
from rt_safe_rl.rt.metrics import registry

ACTION_HEADER = 2
"""Action channel row = [state_seq, valid, q_target...]."""
HUMAN_POINTS_TOPIC = 'human/points'
TRAJECTORY_TOPIC = 'safety/joint_trajectory'
READ_ONLY = ('rate_hz', 'monitor_rate_hz', 'status_rate_hz', 'publish_trajectory')
_mono = time.monotonic_ns


@nb.njit(cache=True, nogil=True)
def _state_violation(q: np.ndarray, dq: np.ndarray, lim: np.ndarray, ptol: float, vtol: float) -> bool:
    """True when the measured state is non-finite or beyond the limits + tolerance. RT-safe."""
    for j in range(q.shape[0]):
        if not (math.isfinite(q[j]) and math.isfinite(dq[j])):
            return True
        if q[j] < lim[0, j] - ptol or q[j] > lim[1, j] + ptol or abs(dq[j]) > lim[2, j] + vtol:
            return True
    return False


def _param_type(tp: Any) -> int:
    origin = typing.get_origin(tp)
    if tp is bool:
        return ParameterType.PARAMETER_BOOL
    if tp is int:
        return ParameterType.PARAMETER_INTEGER
    if tp is float:
        return ParameterType.PARAMETER_DOUBLE
    if tp is str or origin is typing.Literal:
        return ParameterType.PARAMETER_STRING
    if origin is list:
        (item,) = typing.get_args(tp)
        return ParameterType.PARAMETER_STRING_ARRAY if item is str else ParameterType.PARAMETER_DOUBLE_ARRAY
    raise TypeError(f'unsupported parameter type {tp}')


def flatten_config(obj: Any, prefix: str = 'safety') -> list[tuple[str, Any, int]]:
    """(parameter name, value, ParameterType) for every leaf of a config dataclass.

    Mapping-valued fields (e.g. ``pfl.max_force_by_region_n``) have no ROS parameter type: they
    are set in the config file only.
    """
    out: list[tuple[str, Any, int]] = []
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f'{prefix}.{f.name}'
        if dataclasses.is_dataclass(value):
            out.extend(flatten_config(value, name))
        elif isinstance(value, dict):
            continue
        else:
            out.append((name, list(value) if isinstance(value, list) else value, _param_type(hints[f.name])))
    return out


def config_from_values(
    values: dict[str, Any], base: SafetyConfig | None = None, prefix: str = 'safety'
) -> SafetyConfig:
    """SafetyConfig from flat parameter values (``safety.ssm.reaction_time_s`` -> nested) on top of
    `base` (fields without a parameter keep base's value).

    Raises:
        ConfigError: an invalid value (names the parameter).
    """
    nested: dict[str, Any] = dataclasses.asdict(base) if base is not None else {}
    for name, value in values.items():
        parts = name.split('.')[1:] if name.startswith(prefix + '.') else name.split('.')
        d = nested
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        if not isinstance(value, (bool, int, float, str)) and value is not None:
            value = list(value)
        d[parts[-1]] = value
    return from_mapping(SafetyConfig, nested, 'parameters: safety')


class SafetyFilterNode(SimNodeBase):
    """Lifecycle node around :class:`SafetyFilter` (see the module docstring).

    Attributes after configure (non-RT readers): model, filter (the core filter; ``filter.report``
    is the last report), cycles, monitor_publishes, last_error, command_channel.
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
        self._cfg: SafetyConfig = self.app.safety
        empty: list[Parameter] = []
        for name, value, ptype in flatten_config(self._cfg):
            leaf = name.split('.', 1)[1]
            desc = ParameterDescriptor(
                type=ptype,
                read_only=leaf in READ_ONLY,
                description=f'safety filter: {leaf} (see rt_safe_rl.core.safety.config)',
            )
            if isinstance(value, list) and not value:
                # an empty list has no element type: declare typed, then set [] with that type
                ptype_enum = Parameter.Type(ptype)
                p: Any = self.declare_parameter(name, ptype_enum, desc)
                if p.type_ == Parameter.Type.NOT_SET:
                    empty.append(Parameter(name, ptype_enum, []))
            else:
                self.declare_parameter(name, value, desc)
        if empty:
            self.set_parameters(empty)
        # parameter overrides (launch files, --ros-args -p safety.x:=v) take part in the config
        values = {name: self.get_parameter(name).value for name, _, _ in flatten_config(self._cfg)}
        self._cfg = config_from_values(values, self._cfg)
        self.declare_parameter(
            'safety.reset',
            False,
            ParameterDescriptor(
                type=ParameterType.PARAMETER_BOOL,
                description='set true to clear a latched stop (refused while still braking)',
            ),
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self.model: RobotModel | None = None
        self.filter: SafetyFilter | None = None
        self.command_channel: Any = None
        self.action_channel: Any = None
        self.last_error = ''
        self.cycles = 0
        self.monitor_publishes = 0
        self.monitor_stops = 0
        self.deadline_misses = 0
        self.skipped_actions = 0
        self._active = False
        self._lock = threading.Lock()
        self._tasks: list[Any] = []
        self._subs: list[Any] = []
        self._pubs: list[Any] = []
        self._srv: Any = None

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
        try:
            new_cfg = config_from_values(values, self._cfg)
            if self._active and self.model is not None:
                loose = loosenings(self.model, self._cfg, new_cfg)
                if loose:
                    return SetParametersResult(
                        successful=False,
                        reason='refused while active (safety parameters may only tighten): '
                        + '; '.join(loose)
                        + '. Deactivate, set, activate to loosen.',
                    )
            if self.filter is not None:
                self.filter.update_config(new_cfg)  # validated against the robot; next cycle
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        self._cfg = new_cfg
        if reset:
            ok, why = self.reset_filter()
            if not ok:
                return SetParametersResult(successful=False, reason=why)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: list[Any]) -> None:
        """`safety.reset` is a momentary switch: it falls back to false once acted upon."""
        if any(p.name == 'safety.reset' and p.value for p in params):
            self.set_parameters([Parameter('safety.reset', Parameter.Type.BOOL, False)])

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the robot model, build + warm up the filter, preallocate, create the I/O and tasks."""
        from rt_safe_rl.rt.executor import PeriodicTask, TriggeredTask, named_group

        app = self.app
        try:
            if abs(self._cfg.rate_hz - app.control.rate_hz) > 1e-9 * app.control.rate_hz:
                raise ConfigError(
                    f'safety.rate_hz ({self._cfg.rate_hz:g}) must equal control.rate_hz '
                    f'({app.control.rate_hz:g}): each command advances the filter by one robot period'
                )
            self.model = RobotModel.from_config(app.robot, app.base_dir)
            self.filter = SafetyFilter(self.model, self._cfg, MAX_HUMAN_POINTS)
            self._warm_up()
        except RtSafeRlError as err:
            self.last_error = str(err)
            self.get_logger().error(f'configure failed: {err}')
            return TransitionCallbackReturn.FAILURE
        model = self.model
        n = model.n_joints
        self._q = np.zeros(n)
        self._dq = np.zeros(n)
        self._out = np.zeros(n)
        self._act = np.zeros(n + ACTION_HEADER)
        self._op = np.zeros(n)
        self._human = np.zeros((MAX_HUMAN_POINTS, 3))
        self._human_views = [self._human[:k] for k in range(MAX_HUMAN_POINTS + 1)]
        self._n_human = 0
        self._human_stamp_ns = 0
        self._human_speed = -1.0
        self._op_stamp_ns = 0
        self._state_seq = -1
        self._state_rx_ns = 0
        self._action_rx_ns = 0
        self._last_pub_ns = 0
        self._last_pub_seq = -1
        self._last_label = -1
        self._seq_restart = False
        self._was_latched = False
        self._name_index: np.ndarray | None = None
        self._names_seen: list[str] = []
        self._period_ns = round(1e9 / app.control.rate_hz)
        # preallocated messages
        cmd = Float64MultiArray()
        cmd.layout.dim = [MultiArrayDimension(label='position', size=n, stride=n)]
        cmd.data = [0.0] * n
        self._cmd_msg = cmd
        self._cmd_view = np.frombuffer(cmd.data, dtype=np.float64)
        traj = JointTrajectory()
        traj.joint_names = list(model.joint_names)
        pt = JointTrajectoryPoint()
        pt.positions = [0.0] * n
        pt.time_from_start = Duration(sec=0, nanosec=self._period_ns)
        traj.points = [pt]
        self._traj_msg = traj
        self._traj_view = np.frombuffer(pt.positions, dtype=np.float64)
        # I/O
        topics = app.topics
        depth = topics.qos_depth
        grp = named_group(self, 'safety')
        mon_grp = named_group(self, 'safety_monitor')
        self._cmd_pub = self.create_lifecycle_publisher(Float64MultiArray, topics.robot_command, depth)
        self._status_pub = self.create_lifecycle_publisher(DiagnosticStatus, topics.safety_status, depth)
        self._pubs = [self._cmd_pub, self._status_pub]
        self._traj_pub = None
        if self._cfg.publish_trajectory:
            self._traj_pub = self.create_lifecycle_publisher(JointTrajectory, TRAJECTORY_TOPIC, depth)
            self._pubs.append(self._traj_pub)
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
        from rt_safe_rl.rt.channel import get_channel

        self.command_channel = get_channel(self.resolve_topic_name(topics.robot_command), n + 1)
        self._tasks = []
        if self.intra_process:
            self.action_channel = get_channel(
                self.resolve_topic_name(topics.policy_action), n + ACTION_HEADER
            )
            self._tasks.append(
                TriggeredTask(f'{self.get_name()}_action', grp, self.action_channel, self.process_action)
            )
        else:
            self._subs.append(
                self.create_subscription(
                    Float64MultiArray, topics.policy_action, self._on_action, depth, callback_group=grp
                )
            )
        mon_period = round(1e9 / self._cfg.monitor_rate_hz)
        self._monitor_task = PeriodicTask(f'{self.get_name()}_monitor', mon_grp, mon_period, self._monitor)
        self._tasks.append(self._monitor_task)
        self._srv = self.create_service(Trigger, '~/reset', self._on_reset)
        # status at status_rate_hz as a task in the low-priority FIFO 'observers' group, not an
        # rclpy timer: each wake of the non-RT spinning thread rebuilds its wait set, holding the
        # GIL in C for 0.4-0.5 ms (measured with perf sched), which delayed the 2 kHz monitor past
        # its period 20 times a second
        self._status_task = PeriodicTask(
            f'{self.get_name()}_status',
            named_group(self, 'observers'),
            round(1e9 / self._cfg.status_rate_hz),
            self._publish_status,
        )
        self._tasks.append(self._status_task)
        reg = registry()
        self._stage = reg.stage('safety')
        self._interventions = reg.counter('safety_interventions')
        self._faults = reg.counter('faults')
        self._guard_errors = reg.counter('output_guard_errors')
        self._guard_seen = 0
        self._gauge_d = reg.gauge('human_distance_m')
        self.get_logger().info(
            f'configured: {n} joints, {model.n_points} monitored points, SSM '
            f'{"on" if self._cfg.ssm.enabled else "off"}, monitor {self._cfg.monitor_rate_hz:g} Hz, '
            f'actions from {"channel" if self.intra_process else "topic"} '
            f'{self.resolve_topic_name(topics.policy_action)}, commands on {self._cmd_pub.topic_name}'
        )
        return TransitionCallbackReturn.SUCCESS

    def _warm_up(self) -> None:
        """Compile/load the numba kernels on a throwaway filter (not the node's)."""
        assert self.model is not None
        f = SafetyFilter(self.model, self._cfg)
        q = self.model.home()
        out = np.zeros(self.model.n_joints)
        for k in range(3):
            f.step(k, q, np.zeros_like(q), q, True, np.array([[2.0, 0.0, 1.0]]), k, q, out)
        _state_violation(q, q * 0.0, f.limits, 0.0, 0.0)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start filtering: the command re-synchronises to the measured state and holds until a
        valid policy action arrives (a latched stop stays latched)."""
        ret = super().on_activate(state)
        if self.filter is not None:
            self.filter.resync()
        self._action_rx_ns = 0
        self._last_pub_ns = 0
        self._last_label = -1
        self._active = True
        for t in self._tasks:
            t.enabled = True
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop filtering and publishing (the robot's own command timeout then holds it)."""
        self._active = False
        for t in self._tasks:
            t.enabled = False
        return super().on_deactivate(state)

    def _release(self) -> None:
        """Release I/O, tasks and the filter. (cleanup and shutdown, see SimNodeBase)."""
        self._active = False
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
        self.filter = None
        self.action_channel = None
        self.command_channel = None

    def rt_tasks(self) -> list[Any]:
        """The action TriggeredTask (intra_process), the safety monitor and the status PeriodicTasks."""
        return list(self._tasks)

    # ------------------------------------------------------------------ services / status
    def reset_filter(self) -> tuple[bool, str]:
        """Clear a latched stop (applies at the next cycle); ``(accepted, why)``. A no-op (and says
        so) when nothing is latched; refused, with the reason, while still braking or when the stop
        would re-latch at once (stale or out-of-limits state, stale human data)."""
        f = self.filter
        if f is None:
            return False, 'not configured'
        if f.stop_latched:
            why = self._reset_blocker(f)
            if why:
                return False, f'reset refused: {why}'
        return f.reset()

    def _reset_blocker(self, f: SafetyFilter) -> str:
        """Why a reset now would latch again at once ('' = it would not). Non-RT."""
        cfg = self._cfg
        now = _mono()
        if self._state_rx_ns == 0:
            return 'no joint state received yet'
        age_s = (now - self._state_rx_ns) * 1e-9
        if age_s > cfg.state_timeout_s:
            return f'state is {age_s * 1e3:.0f} ms old > state_timeout_s {cfg.state_timeout_s * 1e3:g} ms'
        if _state_violation(
            self._q, self._dq, f.limits, cfg.position_tolerance_rad, cfg.velocity_tolerance_rad_s
        ):
            return 'the measured state is non-finite or beyond the limits (+ tolerance)'
        if cfg.ssm.enabled and self._human_stamp_ns:
            h_s = (now - self._human_stamp_ns) * 1e-9
            lim_ms = cfg.ssm.human_timeout_s * 1e3
            if h_s > cfg.ssm.human_timeout_s:
                return f'human data is {h_s * 1e3:.0f} ms old > ssm.human_timeout_s {lim_ms:g} ms'
        return ''

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        ok, why = self.reset_filter()
        response.success = ok
        response.message = why
        return response

    def reset_for_replay(self) -> None:
        """Fresh filter state (benchmarks between repeats; the caller owns the control thread)."""
        if self.model is not None:
            with self._lock:
                self.filter = SafetyFilter(self.model, self._cfg, MAX_HUMAN_POINTS)
                self._action_rx_ns = 0
                self._last_pub_ns = 0
                self._last_label = -1
                self._seq_restart = False
                self._was_latched = False
                self._guard_seen = 0

    def status(self) -> dict[str, Any]:
        """The last report plus node counters as a dict (non-RT). The report is copied under the
        lock the filter steps run under (a ~1 us hold), so fault, latch and margins are of one step."""
        f = self.filter
        if f is None:
            d: dict[str, Any] = {'fault': 'NOT_CONFIGURED'}
        else:
            with self._lock:
                rep = f.report.copy()
            d = rep.as_dict()
        d.update(
            cycles=self.cycles,
            monitor_publishes=self.monitor_publishes,
            deadline_misses=self.deadline_misses,
            skipped_actions=self.skipped_actions,
            last_command_seq=self._last_pub_seq if f is not None else -1,
        )
        if f is not None:
            d['guard_violations'] = f.guard_violations
            d['guard_last'] = f.guard.describe()
        if f is not None and self._tasks:
            d['monitor'] = self._monitor_task.stats()
        return d

    def _publish_status(self, deadline_ns: int) -> None:
        """The status PeriodicTask (observers group): the report as a DiagnosticStatus."""
        if not self._active or self.filter is None:
            return
        d = self.status()
        msg = DiagnosticStatus()
        msg.name = self.get_fully_qualified_name()
        latched = bool(d.get('latched'))
        if latched:
            msg.level = DiagnosticStatus.ERROR
        elif d.get('stopping') or d.get('active'):
            msg.level = DiagnosticStatus.WARN
        else:
            msg.level = DiagnosticStatus.OK
        active = ','.join(d.get('active', []))
        msg.message = f'{d.get("fault", "")}' + (f' [{active}]' if active else '')
        msg.values = [KeyValue(key=k, value=str(v)) for k, v in d.items() if k != 'monitor']
        self._status_pub.publish(msg)

    # ------------------------------------------------------------------ inputs (group 'safety')
    def _on_joint_state(self, msg: JointState) -> None:
        try:
            seq = int(msg.header.frame_id) if msg.header.frame_id else -1
        except ValueError:
            seq = -1
        if seq < 0:
            seq = self._state_seq + 1  # a robot without seq numbers: count the states received
        n = self._q.shape[0]
        names = msg.name
        if names and names != self._names_seen:  # first message / new layout (allocates then only)
            self._map_names(list(names))
        idx = self._name_index if names else None
        if idx is not None:
            if idx.shape[0] == 0 or len(msg.position) < int(idx.max()) + 1:
                self._q.fill(np.nan)  # joints missing: fail closed (non-finite state -> stop)
            else:
                pos = np.frombuffer(msg.position, dtype=np.float64) if len(msg.position) else self._q
                self._q[:] = pos[idx]
                if len(msg.velocity) == len(msg.position):
                    self._dq[:] = np.frombuffer(msg.velocity, dtype=np.float64)[idx]
                else:
                    self._dq.fill(0.0)
            self.process_state(_mono(), seq, self._q, self._dq)
            return
        if len(msg.position) != n:
            self._q.fill(np.nan)
        else:
            self._q[:] = np.frombuffer(msg.position, dtype=np.float64)
        if len(msg.velocity) == n:
            self._dq[:] = np.frombuffer(msg.velocity, dtype=np.float64)
        else:
            self._dq.fill(0.0)
        self.process_state(_mono(), seq, self._q, self._dq)

    def _joint_names(self) -> list[str]:
        return list(self.model.joint_names) if self.model is not None else []

    def _map_names(self, names: list[str]) -> None:
        """Index of each robot joint in the message (first message / changed names; allocates).
        None when the message already has the robot's order."""
        self._names_seen = names
        if names == self._joint_names():
            self._name_index = None
            return
        try:
            self._name_index = np.array([names.index(j) for j in self._joint_names()], dtype=np.int64)
        except ValueError:
            self._name_index = np.zeros(0, dtype=np.int64)
            self.last_error = (
                f'joint_states names {names} do not contain the robot joints {self._joint_names()}'
            )

    def process_state(self, stamp_ns: int, seq: int, q: np.ndarray, dq: np.ndarray) -> None:
        """Store the latest measured state (rad, rad/s, robot order), its robot sequence number
        and its receipt time [ns]. A seq lower than the previous one means the robot restarted its
        numbering: the one-step-per-seq bookkeeping starts over."""
        if q is not self._q:
            np.copyto(self._q, q)
        if dq is not self._dq:
            np.copyto(self._dq, dq)
        if seq < self._state_seq:
            self._seq_restart = True
        # receipt time first, seq second: the monitor reads seq first, so it never pairs a new
        # seq with the previous state's receipt time (which would predict a seq too far ahead)
        self._state_rx_ns = stamp_ns
        self._state_seq = seq

    def _on_human_point(self, msg: PointStamped) -> None:
        p = msg.point
        self._human[0, 0] = p.x
        self._human[0, 1] = p.y
        self._human[0, 2] = p.z
        self._n_human = 1
        self._human_stamp_ns = _mono()

    def _on_human_poses(self, msg: PoseArray) -> None:
        k = min(len(msg.poses), MAX_HUMAN_POINTS)
        for i in range(k):
            pos = msg.poses[i].position
            self._human[i, 0] = pos.x
            self._human[i, 1] = pos.y
            self._human[i, 2] = pos.z
        if len(msg.poses) > MAX_HUMAN_POINTS:
            self._human[0, 0] = np.nan  # more points than we can check: fail closed
        self._n_human = k
        self._human_stamp_ns = _mono()

    def set_human(self, stamp_ns: int, xyz: np.ndarray, speed_m_s: float = -1.0) -> None:
        """Latest human point(s) [m] ((3,) or (M,3), robot base frame) and their time [ns];
        `speed_m_s` the measured speed toward the robot (< 0 unknown: ISO 13855 default)."""
        pts = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        k = min(pts.shape[0], MAX_HUMAN_POINTS)
        self._human[:k] = pts[:k]
        self._n_human = k
        self._human_speed = float(speed_m_s)
        self._human_stamp_ns = stamp_ns

    def _on_operator(self, msg: Float64MultiArray) -> None:
        if len(msg.data) == self._op.shape[0]:
            self.set_operator(_mono(), np.frombuffer(msg.data, dtype=np.float64))

    def set_operator(self, stamp_ns: int, values: np.ndarray) -> None:
        """Latest operator position targets [rad] for shared control and their time [ns]."""
        np.copyto(self._op, values)
        self._op_stamp_ns = stamp_ns

    def _on_action(self, msg: Float64MultiArray) -> None:
        """DDS action (not intra_process): copy into the action row, then process it."""
        row = self._act
        n = row.shape[0] - ACTION_HEADER
        row[0] = float(msg.layout.data_offset)
        if len(msg.data) == n:
            row[ACTION_HEADER:] = np.frombuffer(msg.data, dtype=np.float64)
            label = msg.layout.dim[0].label if msg.layout.dim else 'valid'
            row[1] = 1.0 if label != 'invalid' else 0.0
        else:
            row[1] = 0.0
        self.process_action(-1)

    # ------------------------------------------------------------------ RT path
    def process_action(self, seq: int) -> None:
        """Filter the latest proposed action and publish the safe command (RT path, group 'safety').

        `seq` is the channel sequence (intra_process) or -1 (DDS: the row was just filled).
        The command is labelled with the robot state seq of the action (``layout.data_offset``);
        an action for a seq that already has its command (the safety monitor covered that period
        while the chain was late) is dropped: the filter advances at most once per robot period.
        """
        f = self.filter
        if not self._active or f is None or self._state_rx_ns == 0:
            return
        t0 = _mono()
        row = self._act
        if self.action_channel is not None and seq != -1:
            ch_seq, _stamp = self.action_channel.try_read(row)
            if ch_seq <= 0:
                row[1] = 0.0
        valid = row[1] == 1.0
        state_seq = int(row[0])
        self._action_rx_ns = t0
        with self._lock:
            # no seq on the action (robot without sequence numbers): the latest state's own count
            label = state_seq if state_seq > 0 else self._state_seq
            stepped = self._claim_label(label)
            if stepped:
                t_ns = _mono()  # taken under the lock: step times never go backwards across threads
                if t_ns - self._state_rx_ns > int(self._cfg.deadline_s * 1e9):
                    self.deadline_misses += 1
                    f.trigger_stop(FaultCode.DEADLINE_MISS)
                self._step_and_publish(f, t_ns, row[ACTION_HEADER:], valid, label)
        if not stepped:
            self.skipped_actions += 1
            return
        self.cycles += 1
        t1 = _mono()
        self._stage.record_ns(t1, t1 - t0)
        rep = f.report._rep
        if (
            rep[kn.R_SAFETY_INTERVENTION] > self._cfg.intervention_threshold_rad
            or rep[kn.R_STOPPING] != 0.0
            or f.report._latched
        ):
            self._interventions.inc()
        d = rep[kn.R_HUMAN_DIST]
        if d < 1e300:
            self._gauge_d.set(d)

    def _claim_label(self, label: int) -> bool:
        """True (and `label` recorded) when no command was published yet for robot period `label`
        and none for a later one (caller holds the lock). RT-safe."""
        if self._seq_restart:
            self._seq_restart = False
            self._last_label = -1
        if label <= self._last_label:
            return False
        self._last_label = label
        return True

    def _step_and_publish(
        self, f: SafetyFilter, t_ns: int, proposal: np.ndarray | None, valid: bool, state_seq: int
    ) -> None:
        """filter.step + publish (caller holds the lock and has claimed `state_seq`): one filter
        step per published command, published in step order, so consecutive commands differ by at
        most one robot period of motion within the limits."""
        n_h = self._n_human
        human = self._human_views[n_h] if n_h else None
        op = (
            self._op
            if (self._op_stamp_ns and t_ns - self._op_stamp_ns <= int(self._cfg.operator_timeout_s * 1e9))
            else None
        )
        rep = f.step(
            t_ns,
            self._q,
            self._dq,
            proposal,
            valid,
            human,
            self._human_stamp_ns,
            op,
            self._out,
            state_stamp_ns=self._state_rx_ns,
            human_speed_m_s=self._human_speed,
        )
        if rep._latched and not self._was_latched:
            self._faults.inc()
        self._was_latched = rep._latched
        gv = f.guard_violations
        if gv != self._guard_seen:
            self._guard_errors.inc(gv - self._guard_seen)
            self._guard_seen = gv
        if not rep._valid:
            return  # no valid state yet: nothing may be commanded
        np.copyto(self._cmd_view, self._out)
        self._cmd_msg.layout.data_offset = state_seq if state_seq >= 0 else 0
        self._cmd_pub.publish(self._cmd_msg)
        if self._traj_pub is not None:
            np.copyto(self._traj_view, self._out)
            self._traj_pub.publish(self._traj_msg)
        ch = self.command_channel
        if ch is not None:
            buf = ch.loan()
            buf[0] = state_seq
            buf[1:] = self._out
            ch.commit(t_ns)
        self._last_pub_ns = t_ns
        self._last_pub_seq = state_seq

    def read_command(self, out: np.ndarray) -> int:
        """Copy the latest safe command into `out`; return the state seq it was computed from
        (-1 before the first command). Same thread as process_action."""
        if self._last_pub_seq < 0:
            return -1
        np.copyto(out, self._out[: out.shape[0]])
        return self._last_pub_seq

    def _monitor(self, deadline_ns: int) -> None:
        """Safety monitor (>= 2 kHz, own thread): limits and staleness of the actual state and of
        the actions; while the chain is silent (no action yet / none for ``action_timeout_s``) or
        the state is stale it steps the filter itself (stop / hold) and publishes, once per robot
        period: once per new state seq, and while the command still moves, once per period
        elapsed since the last state's receipt (braking continues at the robot's rate when states
        stop arriving); a period that already has its command gets no second filter step (see
        :meth:`_claim_label`); once the command is at rest the hold is repeated at the control
        rate (identical command and seq)."""
        f = self.filter
        if not self._active or f is None or self._state_rx_ns == 0:
            return
        now = _mono()
        cfg = self._cfg
        if _state_violation(
            self._q, self._dq, f.limits, cfg.position_tolerance_rad, cfg.velocity_tolerance_rad_s
        ):
            if not f.stop_latched:
                self.monitor_stops += 1
            f.trigger_stop(FaultCode.STATE_OUT_OF_LIMITS)
        stale = now - self._state_rx_ns > int(cfg.state_timeout_s * 1e9)
        if stale:
            f.trigger_stop(FaultCode.STALE_STATE)
        act = self._action_rx_ns
        timeout_ns = int(cfg.action_timeout_s * 1e9)
        if act and now - act > timeout_ns and f.had_valid_action:
            f.trigger_stop(FaultCode.ACTION_TIMEOUT)
        silent = act == 0 or now - act > timeout_ns
        if (silent or stale) and self._lock.acquire(blocking=False):
            try:
                seq = self._state_seq  # seq before receipt time (process_state writes them reversed)
                rx_ns = self._state_rx_ns
                t_ns = _mono()
                label = seq
                if not f.is_stopped:
                    # the command still moves and no new state came for a period or more: keep
                    # braking at the robot's rate (the robot keeps executing); only while braking,
                    # so labels run ahead of the robot's own seq by at most one stopping time
                    label += max(0, (t_ns - rx_ns) // self._period_ns)
                if self._claim_label(label):
                    self._step_and_publish(f, t_ns, None, False, label)
                    self.monitor_publishes += 1
                elif f.is_stopped and self._last_pub_seq >= 0 and t_ns - self._last_pub_ns >= self._period_ns:
                    # holding at rest: repeat the last command (same values, same seq) at the
                    # control rate, without a filter step
                    self._cmd_pub.publish(self._cmd_msg)
                    self._last_pub_ns = t_ns
                    self.monitor_publishes += 1
            finally:
                self._lock.release()


def main(argv: list[str] | None = None) -> int:
    """`safety_node` executable (ROS args in `argv`, e.g. ``--ros-args -p safety.velocity_scale:=0.5``)."""
    return run_node('safety_node', SafetyFilterNode, argv)


if __name__ == '__main__':
    sys.exit(main())
