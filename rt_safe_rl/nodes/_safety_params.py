"""Safety parameters <-> SafetyConfig: every ``safety.*`` config leaf is a ROS parameter.

:func:`flatten_config` lists (name, value, type) of the leaves; :func:`config_from_values` builds
the validated config back from flat values; :func:`declare_safety_parameters` declares them on a
node (read-only: ``READ_ONLY``) -- all three through the one mapping of :mod:`._params`;
:class:`SafetyNodeParams` is the safety node's parameter callbacks and status / publisher checks
(moved unchanged out of :mod:`.safety_node`).
Non-RT (construction / parameter callback).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.parameter import Parameter

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety import FaultCode, SafetyConfig
from rt_safe_rl.core.safety.supervisor import SafetySupervisor
from rt_safe_rl.core.safety.tuning import loosenings
from rt_safe_rl.nodes._params import config_from_values as _from_values
from rt_safe_rl.nodes._params import config_leaves, declare_config
from rt_safe_rl.nodes._sim_base import SimNodeBase
from rt_safe_rl.nodes.msgs import publisher_conflict, status_message

READ_ONLY = (
    'rate_hz',
    'monitor_rate_hz',
    'status_rate_hz',
    'publish_trajectory',
    'output_mode',
    'output_topic',
)


def flatten_config(obj: Any, prefix: str = 'safety') -> list[tuple[str, Any, int]]:
    """(parameter name, value, ParameterType) for every leaf of a config dataclass (see
    :func:`~rt_safe_rl.nodes._params.config_leaves`)."""
    return [(leaf.name, leaf.value, leaf.ptype) for leaf in config_leaves(obj, prefix)]


def config_from_values(
    values: dict[str, Any], base: SafetyConfig | None = None, prefix: str = 'safety'
) -> SafetyConfig:
    """SafetyConfig from flat parameter values (``safety.ssm.reaction_time_s`` -> nested) on top of
    `base` (fields without a parameter keep base's value).

    Raises:
        ConfigError: an invalid value (names the parameter).
    """
    return _from_values(SafetyConfig, values, base, prefix)


def declare_safety_parameters(node: Any, cfg: SafetyConfig) -> SafetyConfig:
    """Declare every leaf of `cfg` as a parameter of `node` (descriptors from
    :func:`~rt_safe_rl.nodes._params.declare_config`; read-only: ``READ_ONLY``) plus
    ``safety.reset``; return the config with the parameter overrides (launch files,
    ``-p safety.x:=v``) applied."""
    values = declare_config(node, cfg, 'safety', lambda leaf: leaf in READ_ONLY)
    node.declare_parameter(
        'safety.reset',
        False,
        ParameterDescriptor(
            type=ParameterType.PARAMETER_BOOL,
            description='set true to clear a latched stop (refused, with the reason, while braking or '
            'when it would latch again at once); falls back to false once acted upon',
        ),
    )
    return config_from_values(values, cfg)


class SafetyNodeParams(SimNodeBase):
    """Base of the safety node: live ``safety.*`` parameter updates, validated as a whole, applied
    at the next cycle (while active they may only tighten); the status and the publisher check.
    The subclass sets the attributes."""

    _cfg: SafetyConfig
    model: RobotModel | None
    supervisor: SafetySupervisor | None

    reset_filter: Callable[[], tuple[bool, str]]
    _reader: Any
    _operator_rejected: int
    _tasks: list[Any]
    _monitor_task: Any
    _input_topics: list[str]
    _status_ticks: int
    _status_pub: Any

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

    # ------------------------------------------------------------------ status
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
