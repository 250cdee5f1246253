"""`safety:` section of the config: limits, SSM, PFL, workspace box, shared-control blending.

Pure dataclasses (no ROS), built strictly by :func:`rt_safe_rl.core.configutil.from_mapping`;
``__post_init__`` rejects invalid values (negative limits, lower > upper, NaN, ...) with a
:class:`~rt_safe_rl.core.errors.ConfigError` naming the field. The same validation runs for live
updates (``ros2 param set``): :meth:`SafetyFilter.update_config` only ever sees valid configs.
Not RT-relevant (configure time / parameter callback).

Units: rad, rad/s, rad/s^2, rad/s^3, N*m, m, m/s, m/s^2, s, Hz, N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from rt_safe_rl.core.errors import ConfigError

# ISO/TS 15066 Annex A body model: region -> (spring constant k [N/m], effective mass m_H [kg]).
BODY_MODEL: dict[str, tuple[float, float]] = {
    'skull': (150e3, 4.4),
    'face': (75e3, 4.4),
    'neck': (50e3, 1.2),
    'back': (35e3, 40.0),
    'chest': (25e3, 40.0),
    'abdomen': (10e3, 40.0),
    'pelvis': (25e3, 40.0),
    'upper_arm': (30e3, 3.0),
    'lower_arm': (40e3, 2.0),
    'hands': (75e3, 0.6),
    'thighs': (50e3, 75.0),
    'lower_legs': (60e3, 75.0),
}


def _finite(name: str, value: float, *, positive: bool = False, nonneg: bool = False) -> None:
    if not math.isfinite(value):
        raise ConfigError(f'{name} must be finite, got {value}')
    if positive and not value > 0:
        raise ConfigError(f'{name} must be > 0, got {value}')
    if nonneg and not value >= 0:
        raise ConfigError(f'{name} must be >= 0, got {value}')


@dataclass(frozen=True)
class SsmConfig:
    """Speed and separation monitoring (ISO/TS 15066 5.5.4; formulas in references/safety.md 1).

    Allowed robot speed toward the human at separation d (per monitored point, d measured from the
    point's covering sphere):
    ``v_max(d) = sqrt(v_h^2 + (a T_r)^2 + 2 a (d - C_tot)) - (a T_r + v_h)``, clamped >= 0, with
    ``C_tot = intrusion_m + human_uncertainty_m + robot_uncertainty_m``. At or below the
    protective distance ``d0 = C_tot + v_h T_r`` (where v_max reaches 0) the robot stops
    (controlled stop, not latched: motion resumes when the person moves away).

    Attributes:
        enabled: SSM on/off.
        reaction_time_s: T_r, detection + processing + issuing the stop.
        brake_decel_m_s2: a, the Cartesian braking deceleration the robot achieves.
        intrusion_m, human_uncertainty_m, robot_uncertainty_m: C, Z_d, Z_r.
        human_speed_m_s: v_h when the human's speed is not measured (ISO 13855 K = 1.6 m/s).
        human_speed_near_m_s: v_h used where the separation is <= near_distance_m (ISO 13855: 2.0).
        near_distance_m: separation up to which human_speed_near_m_s applies.
        human_timeout_s: human data older than this -> fault (fail closed).
        require_human: with SSM on and no human data at all -> fault (fail closed). Set false only
            where no person can enter the cell.
    """

    enabled: bool = True
    reaction_time_s: float = 0.1
    brake_decel_m_s2: float = 2.5
    intrusion_m: float = 0.15
    human_uncertainty_m: float = 0.05
    robot_uncertainty_m: float = 0.01
    human_speed_m_s: float = 1.6
    human_speed_near_m_s: float = 2.0
    near_distance_m: float = 0.5
    human_timeout_s: float = 0.2
    require_human: bool = True

    def __post_init__(self) -> None:
        _finite('ssm.reaction_time_s', self.reaction_time_s, nonneg=True)
        _finite('ssm.brake_decel_m_s2', self.brake_decel_m_s2, positive=True)
        for n in (
            'intrusion_m',
            'human_uncertainty_m',
            'robot_uncertainty_m',
            'human_speed_m_s',
            'human_speed_near_m_s',
            'near_distance_m',
        ):
            _finite(f'ssm.{n}', getattr(self, n), nonneg=True)
        _finite('ssm.human_timeout_s', self.human_timeout_s, positive=True)

    @property
    def c_total_m(self) -> float:
        """C + Z_d + Z_r [m]."""
        return self.intrusion_m + self.human_uncertainty_m + self.robot_uncertainty_m


@dataclass(frozen=True)
class PflConfig:
    """Power and force limiting (ISO/TS 15066 Annex A.3), combined with SSM.

    With PFL on, contact is tolerated at speeds up to ``v_rel,max = F_max / sqrt(mu k)``
    (mu = reduced mass of the body region and the robot's effective mass M/2 + payload): the
    allowed speed toward the human becomes ``max(v_ssm(d), v_pfl)`` and SSM no longer stops.

    Per body region: ``point_regions[c]`` is the region of human point c (e.g. the order of a
    tracker's PoseArray: head, chest, hands...); points without an entry use ``body_region``.

    Attributes:
        enabled: PFL on/off.
        body_region: default key of the ISO/TS 15066 body model (``BODY_MODEL``).
        max_force_n: permissible force [N] for regions without an entry in
            ``max_force_by_region_n`` (from the licensed table; default: hands, transient = 2 x 140 N).
        point_regions: body region of each human point, by index.
        max_force_by_region_n: permissible force [N] per region.
    """

    enabled: bool = False
    body_region: str = 'hands'
    max_force_n: float = 280.0
    point_regions: list[str] = field(default_factory=list)
    max_force_by_region_n: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for where, region in [
            ('body_region', self.body_region),
            *((f'point_regions[{i}]', r) for i, r in enumerate(self.point_regions)),
            *((f'max_force_by_region_n.{r}', r) for r in self.max_force_by_region_n),
        ]:
            if region not in BODY_MODEL:
                raise ConfigError(f'pfl.{where}: unknown body region {region!r}; one of {sorted(BODY_MODEL)}')
        _finite('pfl.max_force_n', self.max_force_n, positive=True)
        for r, f in self.max_force_by_region_n.items():
            _finite(f'pfl.max_force_by_region_n.{r}', f, positive=True)


@dataclass(frozen=True)
class BlendConfig:
    """Shared control: ``u = alpha_h * u_operator + (1 - alpha_h) * u_policy``, then filtered.

    ``mode: fixed`` uses ``alpha_operator``. ``mode: distance`` uses
    ``alpha_h(d) = clip((d - d_min_m) / (d_max_m - d_min_m), 0, 1)`` with d the human separation:
    the remote operator has full authority while nobody is near the robot and hands it back to
    the policy (trained for the shared cell) as a person approaches; SSM limits apply either way.
    Without an operator command alpha_h = 0 (policy only).

    Attributes:
        mode: ``fixed`` (alpha_operator) or ``distance`` (alpha_h from the human separation).
        alpha_operator: operator authority alpha_h in [0, 1] with ``mode: fixed``.
        d_min_m: with ``mode: distance``, separation at and below which the operator has none.
        d_max_m: with ``mode: distance``, separation at and above which the operator has full authority.
    """

    mode: Literal['fixed', 'distance'] = 'distance'
    alpha_operator: float = field(default=0.5, metadata={'range': (0.0, 1.0)})
    d_min_m: float = 0.5
    d_max_m: float = 1.5

    def __post_init__(self) -> None:
        _finite('blend.alpha_operator', self.alpha_operator)
        if not 0.0 <= self.alpha_operator <= 1.0:
            raise ConfigError(f'blend.alpha_operator must be in [0, 1], got {self.alpha_operator}')
        _finite('blend.d_min_m', self.d_min_m, nonneg=True)
        _finite('blend.d_max_m', self.d_max_m, nonneg=True)
        if not self.d_min_m < self.d_max_m:
            raise ConfigError(f'blend.d_min_m ({self.d_min_m}) must be < d_max_m ({self.d_max_m})')


@dataclass(frozen=True)
class WorkspaceConfig:
    """Cartesian box (robot base frame) that chosen monitored points must stay in.

    Enforced as a braking-consistent bound on each point's velocity toward each face:
    ``v <= sqrt((a dt)^2 + 2 a D) - a dt`` (D = distance to the face, a = ``brake_decel_m_s2``),
    linearised with the point Jacobian (coupled constraint -> part of the projection). A point
    already outside the box (e.g. a box tightened at run time) may move back in, never further out.

    Attributes:
        enabled: workspace limits on/off.
        points: monitored point names (empty = all).
        min_m, max_m: box corners (x, y, z) in the robot base frame.
        brake_decel_m_s2: a, the Cartesian braking deceleration toward a face.
    """

    enabled: bool = True
    min_m: list[float] = field(default_factory=lambda: [-1.0, -1.0, 0.02])
    max_m: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.4])
    points: list[str] = field(default_factory=lambda: ['wrist', 'wrist2', 'flange', 'tcp'])
    brake_decel_m_s2: float = 2.0

    def __post_init__(self) -> None:
        if len(self.min_m) != 3 or len(self.max_m) != 3:
            raise ConfigError('workspace.min_m / max_m must have 3 values (x, y, z)')
        for i in range(3):
            _finite(f'workspace.min_m[{i}]', self.min_m[i])
            _finite(f'workspace.max_m[{i}]', self.max_m[i])
            if not self.min_m[i] < self.max_m[i]:
                raise ConfigError(
                    f'workspace: min_m[{i}] ({self.min_m[i]}) must be < max_m[{i}] ({self.max_m[i]})'
                )
        _finite('workspace.brake_decel_m_s2', self.brake_decel_m_s2, positive=True)


@dataclass(frozen=True)
class InputConfig:
    """Integrity of the inputs (``safety.inputs``), checked by the supervisor and the node.

    Attributes:
        max_dropped_states: joint states arriving out of order or twice (sequence number or header
            stamp not newer than the last accepted one) are dropped and counted; more than this many
            within ``drop_window_s`` (a leaky bucket) fails closed (``INPUT_ORDER``).
        drop_window_s: the window of the max_dropped_states leaky bucket.
        missing_velocity: a joint state without a velocity field, or with one of the wrong length:
            ``estimate`` (finite differences of consecutive positions over their stamps, with a
            warning) or ``fail`` (latched ``MISSING_VELOCITY`` stop).
        allowed_publishers: fully qualified node names (e.g. ``/sim_robot``) allowed to publish on
            the state, action, human and operator topics. Empty: at most ONE publisher per topic,
            a second one fails closed (``COMPETING_PUBLISHER``, naming them); non-empty: every
            publisher must be listed (several allowed).
        publisher_check_period_s: how often the node checks the publishers (from its status task).
    """

    max_dropped_states: int = 10
    drop_window_s: float = 1.0
    missing_velocity: Literal['estimate', 'fail'] = 'estimate'
    allowed_publishers: list[str] = field(default_factory=list)
    publisher_check_period_s: float = 0.5

    def __post_init__(self) -> None:
        if self.max_dropped_states < 0:
            raise ConfigError(f'inputs.max_dropped_states must be >= 0, got {self.max_dropped_states}')
        _finite('inputs.drop_window_s', self.drop_window_s, positive=True)
        _finite('inputs.publisher_check_period_s', self.publisher_check_period_s, positive=True)
        if self.missing_velocity not in ('estimate', 'fail'):
            raise ConfigError(
                f"inputs.missing_velocity must be 'estimate' or 'fail', got {self.missing_velocity!r}"
            )


@dataclass(frozen=True)
class SafetyConfig:
    """The safety filter (``safety:`` section).

    Joint limits default to the robot model (URDF + ``robot:`` section); the lists here override
    them per joint (empty = model; otherwise one value per joint) and may only *tighten* them (a
    looser value is rejected by :meth:`SafetyFilter.update_config`). ``velocity_scale`` scales
    every velocity limit (0, 1].

    Attributes:
        rate_hz: command rate (the trajectory of commands is integrated with dt = 1 / rate_hz).
        q_min_rad, q_max_rad: position range per joint (empty = the robot model's; may only tighten).
        v_max_rad_s: velocity limit per joint (empty = the robot model's; may only tighten).
        a_max_rad_s2: acceleration limit per joint (empty = the robot model's; may only tighten).
        j_max_rad_s3: jerk limit per joint (empty = the robot model's; may only tighten).
        effort_max_nm: effort limit per joint (empty = the robot model's; may only tighten).
        velocity_scale: factor in (0, 1] on every velocity limit.
        enforce_jerk: jerk + libfranka-style acceleration shaping near the velocity limit
            (relaxed, and reported, only when incompatible with the hard limits).
        enforce_effort: effort limits through the PD model tau = kp (q_cmd - q) - kd dq
            (relaxed, and reported, only when incompatible with the hard limits).
        state_timeout_s: joint state older than this -> fault.
        action_timeout_s: no valid policy action for this long -> fault (node / monitor).
        max_step_gap_s: time between two filter steps larger than this, or going backwards ->
            clock-jump fault.
        position_tolerance_rad, velocity_tolerance_rad_s: measured state beyond the limits by more
            than this -> fault.
        monitor_rate_hz: safety monitor rate (node).
        deadline_s: a command computed later than this after its joint state arrived -> latched
            deadline-miss stop (node).
        operator_timeout_s: an operator command older than this is ignored (policy only) (node).
        status_rate_hz: rate of the ``safety/status`` report (node: a task in the ``observers`` group).
        publish_trajectory: also publish the command as ``trajectory_msgs/JointTrajectory`` on
            ``safety/joint_trajectory`` (node).
        qp_max_iter, qp_tol: projection solver limits (tol on constraint residuals).
        intervention_threshold_rad: a cycle counts as a safety intervention (counter
            ``safety_interventions``, node) while a stop / hold / fault is active, or when the
            human / workspace constraints changed this cycle's command by more than this
            (report ``safety_intervention_rad``: Euclidean norm over the joints of one step, rad;
            1e-6 = a joint velocity change of 1 mrad/s). Not ``intervention_rad`` (distance of the
            command from the blended target): a position target farther than one step at the
            joint limits always differs from the command, so it counts every cycle.
    """

    rate_hz: float = 1000.0
    q_min_rad: list[float] = field(default_factory=list)
    q_max_rad: list[float] = field(default_factory=list)
    v_max_rad_s: list[float] = field(default_factory=list)
    a_max_rad_s2: list[float] = field(default_factory=list)
    j_max_rad_s3: list[float] = field(default_factory=list)
    effort_max_nm: list[float] = field(default_factory=list)
    velocity_scale: float = field(default=1.0, metadata={'range': (0.0, 1.0)})
    enforce_jerk: bool = True
    enforce_effort: bool = True
    state_timeout_s: float = 0.01
    action_timeout_s: float = 0.02
    max_step_gap_s: float = 0.1
    position_tolerance_rad: float = 0.02
    velocity_tolerance_rad_s: float = 0.5
    monitor_rate_hz: float = 2000.0
    deadline_s: float = 0.005
    operator_timeout_s: float = 0.1
    status_rate_hz: float = 20.0
    publish_trajectory: bool = False
    output_mode: str = 'position'  # position | trajectory | velocity (nodes/command_output.py)
    output_topic: str = ''  # '' = the mode's default topic (README table)
    qp_max_iter: int = 100
    qp_tol: float = 1e-11
    intervention_threshold_rad: float = 1e-6
    ssm: SsmConfig = field(default_factory=SsmConfig)
    pfl: PflConfig = field(default_factory=PflConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    workspace: WorkspaceConfig = field(default_factory=WorkspaceConfig)
    inputs: InputConfig = field(default_factory=InputConfig)

    def __post_init__(self) -> None:
        _finite('rate_hz', self.rate_hz, positive=True)
        for name in ('q_min_rad', 'q_max_rad'):
            for i, v in enumerate(getattr(self, name)):
                _finite(f'{name}[{i}]', v)
        for name in ('v_max_rad_s', 'a_max_rad_s2', 'j_max_rad_s3', 'effort_max_nm'):
            for i, v in enumerate(getattr(self, name)):
                if math.isnan(v) or not v > 0:
                    raise ConfigError(f'{name}[{i}] must be > 0, got {v}')
        if self.q_min_rad and self.q_max_rad:
            if len(self.q_min_rad) != len(self.q_max_rad):
                raise ConfigError('q_min_rad and q_max_rad must have the same length')
            for i, (lo, hi) in enumerate(zip(self.q_min_rad, self.q_max_rad, strict=True)):
                if not lo < hi:
                    raise ConfigError(f'q_min_rad[{i}] ({lo}) must be < q_max_rad[{i}] ({hi})')
        _finite('velocity_scale', self.velocity_scale)
        if not 0.0 < self.velocity_scale <= 1.0:
            raise ConfigError(f'velocity_scale must be in (0, 1], got {self.velocity_scale}')
        for name in (
            'state_timeout_s',
            'action_timeout_s',
            'max_step_gap_s',
            'monitor_rate_hz',
            'qp_tol',
            'deadline_s',
            'operator_timeout_s',
            'status_rate_hz',
        ):
            _finite(name, getattr(self, name), positive=True)
        for name in ('position_tolerance_rad', 'velocity_tolerance_rad_s', 'intervention_threshold_rad'):
            _finite(name, getattr(self, name), nonneg=True)
        if self.output_mode not in ('position', 'trajectory', 'velocity'):
            raise ConfigError(
                f'output_mode must be position, trajectory or velocity, got {self.output_mode!r}'
            )
        if self.qp_max_iter < 1:
            raise ConfigError(f'qp_max_iter must be >= 1, got {self.qp_max_iter}')

    @property
    def dt_s(self) -> float:
        """Command period [s]."""
        return 1.0 / self.rate_hz
