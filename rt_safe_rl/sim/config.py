"""Configuration of the simulated robot, human and operator (the ``sim`` section of the YAML).

Pure dataclasses (no ROS); built strictly by :func:`rt_safe_rl.core.configutil.from_mapping`.
Not RT-relevant: read at configure time only.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SimRobotConfig:
    """Simulated position-controlled arm.

    Attributes:
        initial_q_rad: start configuration (rad), one per joint; empty = middle of the limits.
        inertia_kg_m2: effective inertia per joint (kg m^2), used to turn the PD acceleration into
            an effort (N m) that is checked against the effort limit; empty = 1.0 for every joint.
        command_timeout_s: with no command for this long (s) the robot holds its position.
        limit_tolerance: relative slack when auditing received commands against the limits.
    """

    initial_q_rad: list[float] = field(default_factory=list)
    inertia_kg_m2: list[float] = field(default_factory=list)
    command_timeout_s: float = 0.05
    limit_tolerance: float = 1e-6

    def __post_init__(self) -> None:
        if self.command_timeout_s <= 0.0:
            raise ValueError(f'command_timeout_s must be > 0, got {self.command_timeout_s}')
        if any(i <= 0.0 for i in self.inertia_kg_m2):
            raise ValueError('inertia_kg_m2 entries must be > 0')
        if not 0.0 <= self.limit_tolerance < 0.5:
            raise ValueError(f'limit_tolerance must be in [0, 0.5), got {self.limit_tolerance}')


@dataclass(frozen=True)
class SimHumanConfig:
    """A person walking in and out of the robot's workspace along a straight line.

    The walker goes from ``far_m`` to ``near_m`` (horizontal distance from the robot base) at
    ``speed_m_s``, waits ``pause_near_s``, walks back and waits ``pause_far_s``; the approach
    direction is drawn per cycle from ``seed``. ``noise_m`` is the sensor noise (std, m).
    ``start_phase_s`` shifts the cycle (e.g. start right before the approach); ``frame_id`` is
    the robot base frame the position is expressed in.
    """

    rate_hz: float = 100.0
    seed: int = 7
    far_m: float = 2.5
    near_m: float = 0.25
    height_m: float = 0.6
    speed_m_s: float = 0.8
    pause_far_s: float = 1.5
    pause_near_s: float = 1.0
    noise_m: float = 0.005
    start_phase_s: float = 0.0
    frame_id: str = 'base_link'

    def __post_init__(self) -> None:
        if self.rate_hz <= 0.0:
            raise ValueError(f'rate_hz must be > 0, got {self.rate_hz}')
        if not 0.0 <= self.near_m < self.far_m:
            raise ValueError(f'need 0 <= near_m < far_m, got near_m={self.near_m}, far_m={self.far_m}')
        if self.speed_m_s <= 0.0:
            raise ValueError(f'speed_m_s must be > 0, got {self.speed_m_s}')
        if self.pause_far_s < 0.0 or self.pause_near_s < 0.0 or self.noise_m < 0.0:
            raise ValueError('pause_far_s, pause_near_s and noise_m must be >= 0')


@dataclass(frozen=True)
class SimOperatorConfig:
    """Task goals for the policy and an optional operator command for shared control.

    Every ``goal_period_s`` a new joint-space goal (seeded) is published on ``policy/command``;
    the operator command is the current goal plus a sinusoid of ``amplitude_rad`` / ``period_s``.
    """

    rate_hz: float = 100.0
    seed: int = 3
    publish_operator_command: bool = True
    amplitude_rad: float = 0.2
    period_s: float = 4.0
    goal_period_s: float = 2.5
    goal_margin_rad: float = 0.3
    goal_span: float = 0.5

    def __post_init__(self) -> None:
        if self.rate_hz <= 0.0 or self.period_s <= 0.0 or self.goal_period_s <= 0.0:
            raise ValueError('rate_hz, period_s and goal_period_s must be > 0')
        if not 0.0 < self.goal_span <= 1.0:
            raise ValueError(f'goal_span must be in (0, 1], got {self.goal_span}')
        if self.goal_margin_rad < 0.0 or self.amplitude_rad < 0.0:
            raise ValueError('goal_margin_rad and amplitude_rad must be >= 0')


@dataclass(frozen=True)
class SimConfig:
    """The ``sim`` section: robot, human, operator."""

    robot: SimRobotConfig = field(default_factory=SimRobotConfig)
    human: SimHumanConfig = field(default_factory=SimHumanConfig)
    operator: SimOperatorConfig = field(default_factory=SimOperatorConfig)
