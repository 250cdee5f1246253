"""``benchmark:`` section of the configuration: :class:`BenchmarkConfig` (rosbag2 replay bench).

Pure Python; built once by :func:`rt_safe_rl.config.load_config` (strict: unknown key -> ConfigError).
The CLI (`rt-safe-rl bench replay`) and the BenchmarkNode's parameters override single fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

RATE_MODES = ('recorded', 'max')


def parse_rate(rate: str) -> tuple[str, float]:
    """Parse a replay rate: ``'recorded'``, ``'max'`` or a positive number of Hz.

    Returns ``(mode, hz)`` with mode in ``recorded|max|fixed`` (hz is 0.0 unless fixed).

    Raises:
        ValueError: anything else (the message lists the allowed forms).
    """
    text = str(rate).strip().lower()
    if text in RATE_MODES:
        return text, 0.0
    try:
        hz = float(text.removesuffix('hz'))
    except ValueError:
        raise ValueError(f"rate must be 'recorded', 'max' or a number of Hz, got {rate!r}") from None
    if not math.isfinite(hz) or not 0.1 <= hz <= 1_000_000.0:
        raise ValueError(f'rate in Hz must be in [0.1, 1e6], got {rate!r}')
    return 'fixed', hz


@dataclass(frozen=True)
class BenchmarkConfig:
    """Replay benchmark settings.

    Attributes:
        state_topic: JointState topic to replay; '' = the bag's only JointState topic (or the one
            named like ``topics.joint_states``).
        human_topic: PointStamped human position topic fed to the safety filter; '' = auto
            (a topic ending in ``topics.human_position`` if the bag has one), '-' = none.
        operator_topic: Float64MultiArray operator targets; '' = auto, '-' = none.
        policy_command_topic: Float64MultiArray task command for the policy; '' = auto, '-' = none.
        command_topic: the recorded safe commands (Float64MultiArray, seq in
            ``layout.data_offset``), compared with the replayed ones (fidelity); '' = auto (a topic
            ending in ``topics.robot_command``), '-' = none.
        joint_map: bag joint name -> policy joint name, for bags whose names differ from the
            robot's; unmapped robot joints are then held at ``fill_q_rad``/0 velocity.
        fill_q_rad: position used for robot joints absent from a mapped bag ({} = mid-range/0).
        pipeline: ``inprocess`` (policy + safety nodes composed in the bench process, driven by
            direct calls) or ``external`` (a running pipeline reached over DDS topics, lockstep).
        rate: ``'recorded'`` (bag timing), ``'max'`` (as fast as the pipeline goes) or Hz.
        rt_settings: measure our pipeline as it runs in production: GC collected, frozen and
            disabled during the replays, which run in a thread with the ``rt.groups.control``
            scheduling (SCHED_FIFO, CPU pinning) when the OS grants it. Under FIFO a max-rate
            replay pauses 15 ms every 100 ms between messages (RT throttling would otherwise
            stall a 100 % busy FIFO thread for 50 ms each second).
        repeat: replays of the bag (>= 2 also checks determinism across them).
        warmup_messages: messages replayed (and discarded) before measuring, per repeat.
        max_messages: replay at most this many state messages per repeat (0 = all).
        deadline_us: e2e deadline for the miss count (us); 0 = the control period.
        stress_workers: CPU-burning worker processes during the replay (0 = none).
        stress_duty: fraction of each 10 ms slice a stress worker burns (0..1].
        naive: also measure the naive plain-rclpy pipeline in the same run.
        naive_max_messages: cap of messages for the naive pipeline (it is slow); 0 = all.
        naive_timeout_s: per-message wait for a command over DDS (naive and external pipelines) (s).
        naive_torch_threads: torch threads in the naive pipeline (0 = torch's default).
        regression_tolerance: relative worsening of e2e p99 / miss rate that fails ``--baseline``.
        histogram_bins: bins of the latency histogram in the report.
        out_dir: where report.json/md/html and plots go.
        results_topic: BenchmarkNode publishes the summary JSON (std_msgs/String) here.
        progress: show a progress bar on a terminal.
    """

    state_topic: str = ''
    human_topic: str = ''
    operator_topic: str = ''
    policy_command_topic: str = ''
    command_topic: str = ''
    joint_map: dict[str, str] = field(default_factory=dict)
    fill_q_rad: dict[str, float] = field(default_factory=dict)
    pipeline: str = 'inprocess'
    rate: str = 'max'
    repeat: int = 2
    rt_settings: bool = True
    warmup_messages: int = 200
    max_messages: int = 0
    deadline_us: float = 0.0
    stress_workers: int = 0
    stress_duty: float = 1.0
    naive: bool = False
    naive_max_messages: int = 3000
    naive_timeout_s: float = 1.0
    naive_torch_threads: int = 0
    regression_tolerance: float = 0.10
    histogram_bins: int = 60
    out_dir: str = 'bench_replay'
    results_topic: str = 'benchmark/results'
    progress: bool = True

    def __post_init__(self) -> None:
        parse_rate(self.rate)
        if self.pipeline not in ('inprocess', 'external'):
            raise ValueError(f"pipeline must be 'inprocess' or 'external', got {self.pipeline!r}")
        if self.repeat < 1:
            raise ValueError(f'repeat must be >= 1, got {self.repeat}')
        for name in (
            'warmup_messages',
            'max_messages',
            'naive_max_messages',
            'stress_workers',
            'naive_torch_threads',
        ):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        if self.stress_workers > 64:
            raise ValueError(f'stress_workers must be <= 64, got {self.stress_workers}')
        if not 0.0 < self.stress_duty <= 1.0:
            raise ValueError(f'stress_duty must be in (0, 1], got {self.stress_duty}')
        if self.deadline_us < 0.0:
            raise ValueError(f'deadline_us must be >= 0, got {self.deadline_us}')
        if self.naive_timeout_s <= 0.0:
            raise ValueError(f'naive_timeout_s must be > 0, got {self.naive_timeout_s}')
        if not 0.0 <= self.regression_tolerance <= 10.0:
            raise ValueError(f'regression_tolerance must be in [0, 10], got {self.regression_tolerance}')
        if not 5 <= self.histogram_bins <= 1000:
            raise ValueError(f'histogram_bins must be in [5, 1000], got {self.histogram_bins}')
        if not self.out_dir:
            raise ValueError('out_dir must not be empty')
        if not self.results_topic:
            raise ValueError('results_topic must not be empty')
