"""Load and validate THE configuration file (``config/default.yaml`` layout) into an :class:`AppConfig`.

Each top-level section is a frozen dataclass owned by its module (see DEVELOPERS.md, "Config");
:func:`load_config` builds every one of them with
:func:`rt_safe_rl.core.configutil.from_mapping`, so an unknown key or a wrong type anywhere fails
at load time with a :class:`~rt_safe_rl.core.errors.ConfigError` naming the file and the key path.
Pure Python (no rclpy). Not RT-safe: call at configure time only.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rt_safe_rl.core.configutil import from_mapping, load_yaml
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.paths import config_path
from rt_safe_rl.sim.config import SimConfig


@dataclass(frozen=True)
class TopicsConfig:
    """Topic names (relative names, so a node namespace applies) and QoS depth.

    Attributes:
        joint_states: robot state, ``sensor_msgs/JointState``.
        robot_command: position targets to the robot, ``std_msgs/Float64MultiArray`` (rad); the
            interface of ros2_control's forward_command_controller.
        joint_command: the safe command as ``sensor_msgs/JointState`` (position rad, velocity
            rad/s; ``header.stamp`` = the stamp of the joint state it answers): the package's own
            command stream, which the simulated robot and the benches match to their states.
        policy_action: proposed targets from the policy, ``sensor_msgs/JointState`` (``header.stamp``
            = the stamp of the joint state they were computed from).
        policy_command: task command for the policy (e.g. joint-space goal), ``Float64MultiArray``.
        human_position: tracked human, ``geometry_msgs/PointStamped``.
        operator_command: operator's position targets for shared control, ``Float64MultiArray``.
        safety_status: safety filter report.
        diagnostics: ``diagnostic_msgs/DiagnosticArray`` (absolute by convention).
        qos_depth: history depth of the control topics.
        observer_decimation: with intra-process transport, ``policy_action`` (and the direct
            cycle's ``joint_states``) are still published for observers: the latest record every
            N control periods, from the ``observers`` thread (records in between are not
            published; 1 = every record).
    """

    joint_states: str = 'joint_states'
    robot_command: str = 'forward_position_controller/commands'
    joint_command: str = 'safety/joint_command'
    policy_action: str = 'policy/action'
    policy_command: str = 'policy/command'
    human_position: str = 'human/position'
    operator_command: str = 'operator/command'
    safety_status: str = 'safety/status'
    diagnostics: str = '/diagnostics'
    qos_depth: int = 10
    observer_decimation: int = 10

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and (not value or ' ' in value or value.endswith('/')):
                raise ValueError(f'{f.name}: invalid topic name {value!r}')
        if self.qos_depth < 1:
            raise ValueError(f'qos_depth must be >= 1, got {self.qos_depth}')
        if self.observer_decimation < 1:
            raise ValueError(f'observer_decimation must be >= 1, got {self.observer_decimation}')


@dataclass(frozen=True)
class ControlConfig:
    """The control loop.

    Attributes:
        rate_hz: robot state / command rate (Hz); the loop is driven by the robot's state.
        intra_process: policy -> safety over the in-process zero-copy channel when composed in
            one process (the DDS topic is still published, decimated, for observers).
        autostart: node executables configure and activate their node on start.
    """

    rate_hz: float = 1000.0
    intra_process: bool = True
    autostart: bool = True

    def __post_init__(self) -> None:
        if not 1.0 <= self.rate_hz <= 20000.0:
            raise ValueError(f'rate_hz must be in [1, 20000], got {self.rate_hz}')

    @property
    def period_ns(self) -> int:
        """Control period in integer nanoseconds."""
        return round(1e9 / self.rate_hz)


@dataclass(frozen=True)
class DemoConfig:
    """``rt-safe-rl demo``.

    Attributes:
        duration_s: how long the loop runs (s); 0 = until Ctrl-C.
        status_period_s: refresh period of the live status line (s).
        summary_path: where the summary JSON is written (relative = current directory).
        with_monitor: compose the monitor node too (when available).
        with_operator: compose the simulated operator (task goals + shared-control command).
        live_status: show the live status line (rich) on a terminal.
    """

    duration_s: float = 10.0
    status_period_s: float = 0.25
    summary_path: str = 'demo_summary.json'
    with_monitor: bool = True
    with_operator: bool = True
    live_status: bool = True

    def __post_init__(self) -> None:
        if self.duration_s < 0.0:
            raise ValueError(f'duration_s must be >= 0, got {self.duration_s}')
        if self.status_period_s <= 0.0:
            raise ValueError(f'status_period_s must be > 0, got {self.status_period_s}')
        if not self.summary_path:
            raise ValueError('summary_path must not be empty')


# section -> 'module:Class' of the owner's dataclass (see DEVELOPERS.md)
SECTIONS: dict[str, str] = {
    'robot': 'rt_safe_rl.core.robot_model:RobotConfig',
    'topics': 'rt_safe_rl.config:TopicsConfig',
    'control': 'rt_safe_rl.config:ControlConfig',
    'policy': 'rt_safe_rl.core.policy.config:PolicyNodeConfig',
    'safety': 'rt_safe_rl.core.safety.config:SafetyConfig',
    'rt': 'rt_safe_rl.rt.config:RtConfig',
    'monitor': 'rt_safe_rl.core.monitoring:MonitorConfig',
    'benchmark': 'rt_safe_rl.bench.config:BenchmarkConfig',
    'sim': 'rt_safe_rl.sim.config:SimConfig',
    'demo': 'rt_safe_rl.config:DemoConfig',
    'deployment': 'rt_safe_rl.api.profiles:DeploymentConfig',  # profiles, RT_* env [api]
}


def section_class(section: str) -> type:
    """The dataclass of a config section (imported on first use).

    Raises:
        ConfigError: unknown section name.
        ImportError: the owner module is not importable (a broken installation).
    """
    try:
        target = SECTIONS[section]
    except KeyError:
        raise ConfigError(f'unknown config section {section!r}; allowed: {sorted(SECTIONS)}') from None
    module_name, cls_name = target.split(':')
    module = importlib.import_module(module_name)
    cls = getattr(module, cls_name)
    assert isinstance(cls, type)
    return cls


@dataclass(frozen=True)
class AppConfig:
    """All sections of the configuration, validated. ``source`` is the file it came from.

    Relative file paths inside sections are resolved against ``base_dir`` (the file's folder)
    by the consumers (see :func:`rt_safe_rl.paths.resolve`).
    """

    robot: Any
    topics: TopicsConfig
    control: ControlConfig
    policy: Any
    safety: Any
    rt: Any
    monitor: Any
    benchmark: Any
    sim: SimConfig
    demo: DemoConfig
    deployment: Any
    source: Path = field(default_factory=lambda: Path('<defaults>'))
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def base_dir(self) -> Path:
        """Folder of the source file (for relative paths in the config)."""
        return self.source.parent

    def replace(self, **sections: Any) -> AppConfig:
        """A copy with some sections replaced by already-built dataclasses."""
        return dataclasses.replace(self, **sections)

    def to_dict(self) -> dict[str, Any]:
        """Plain (JSON/YAML-able) dict of all sections, e.g. for benchmark metadata."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            value = getattr(self, name)
            is_instance = dataclasses.is_dataclass(value) and not isinstance(value, type)
            out[name] = _plain(dataclasses.asdict(value) if is_instance else value)  # type: ignore[arg-type]
        out['source'] = str(self.source)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, 'tolist'):
        return value.tolist()
    return value


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``overrides`` merged in recursively (mappings merge, others replace)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict[str, Any]:
    """Parse ``'section.key.sub=value'`` (value in YAML syntax) into a nested mapping.

    Raises:
        ConfigError: no ``=`` or an empty key.
    """
    key, sep, value = text.partition('=')
    if not sep or not key.strip():
        raise ConfigError(f'override {text!r}: expected KEY.PATH=VALUE')
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    node: dict[str, Any] = {}
    cursor = node
    parts = key.strip().split('.')
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = parsed
    return node


def build_config(data: dict[str, Any], source: str | Path = '<mapping>') -> AppConfig:
    """Validate a full config mapping (as read from YAML) into an :class:`AppConfig`.

    Raises:
        ConfigError: unknown top-level section, unknown key or wrong type in a section; the
            message names ``source`` and the key path.
    """
    src = Path(source)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f'{src}: unknown top-level key(s) {unknown}; allowed: {sorted(SECTIONS)}')
    built: dict[str, Any] = {}
    for name in SECTIONS:
        section = data.get(name)
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f'{src}: {name}: expected a mapping, got {type(section).__name__}')
        built[name] = from_mapping(section_class(name), section, f'{src}: {name}')
    return AppConfig(**built, source=src, raw=copy.deepcopy(data))


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    profile: str | None = None,
) -> AppConfig:
    """Read and validate a config file (default: the shipped ``config/default.yaml``).

    Args:
        path: YAML file; None = the shipped default.
        overrides: nested mapping merged over the file before validation (e.g. from
            :func:`parse_override` or launch arguments).
        profile: deployment profile merged over the file, below the ``RT_*`` variables and
            `overrides` (:mod:`rt_safe_rl.api.profiles`); None = ``RT_PROFILE`` or none.

    Raises:
        ConfigError: missing/unreadable file, invalid YAML, unknown key or wrong type; the
            message names the file and the key (``override <key path>: ...`` when the file is
            valid and an override is not).
    """
    p = Path(path) if path is not None else config_path('default.yaml')
    src = p.resolve()
    from rt_safe_rl.api.profiles import layer_profile_and_env  # lazy: cycle (profiles imports config)

    data = layer_profile_and_env(load_yaml(p), src, profile, build_config)
    if not overrides:
        return build_config(data, src)
    build_config(data, src)  # the file alone first, so that its own errors name the file
    try:
        return build_config(deep_merge(data, overrides), src)
    except ConfigError as err:  # the file is valid: the override is the culprit
        msg = str(err)
        msg = msg[len(f'{src}: ') :] if msg.startswith(f'{src}: ') else msg
        raise ConfigError(f'override {msg}') from None
