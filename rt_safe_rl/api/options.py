"""``RTOptimizationConfig`` / ``TimingRequirements``: the seed's option objects, mapped onto THE
config (``config/default.yaml`` sections) as overrides -- there is no second configuration system.

=========================================  ====================================================
option                                      config keys it sets
=========================================  ====================================================
TimingRequirements.min_frequency_hz         control.rate_hz, safety.rate_hz (the filter's dt),
                                            monitor.thresholds.expected_rate_hz
TimingRequirements.max_execution_time_us    monitor.thresholds.e2e_budget_s (the API's per-call
                                            deadline and the monitor's e2e p99 alert)
TimingRequirements.max_jitter_us            monitor.thresholds.period_budget_s = 1/f + jitter
RTOptimizationConfig.enable_system_optimization   deployment.system_optimization
RTOptimizationConfig.enable_gpu_acceleration      deployment.gpu
RTOptimizationConfig.enable_continuous_monitoring monitor.enabled
RTOptimizationConfig.deployment_mode              the profile (config/profiles/<mode>.yaml)
=========================================  ====================================================

Pure Python; not RT code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rt_safe_rl.api.profiles import PROFILES
from rt_safe_rl.config import deep_merge
from rt_safe_rl.core.errors import ConfigError


@dataclass(frozen=True)
class TimingRequirements:
    """Timing the application needs (microseconds, Hz); see the module table for the mapping.

    Raises:
        ConfigError: a non-finite or non-positive value, or a frequency outside [1, 20000] Hz.
    """

    max_execution_time_us: float = 1000.0
    max_jitter_us: float = 500.0
    min_frequency_hz: float = 1000.0

    def __post_init__(self) -> None:
        for name in ('max_execution_time_us', 'max_jitter_us', 'min_frequency_hz'):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f'TimingRequirements.{name} must be a finite number > 0, got {v!r}')
        if not 1.0 <= self.min_frequency_hz <= 20000.0:
            raise ConfigError(
                f'TimingRequirements.min_frequency_hz must be in [1, 20000], got {self.min_frequency_hz}'
            )

    def to_overrides(self) -> dict[str, Any]:
        """Nested config overrides (see the module table)."""
        f = float(self.min_frequency_hz)
        return {
            'control': {'rate_hz': f},
            'safety': {'rate_hz': f, 'monitor_rate_hz': max(2.0 * f, 2000.0)},
            'monitor': {
                'thresholds': {
                    'expected_rate_hz': f,
                    'e2e_budget_s': self.max_execution_time_us * 1e-6,
                    'period_budget_s': 1.0 / f + self.max_jitter_us * 1e-6,
                }
            },
        }


@dataclass(frozen=True)
class RTOptimizationConfig:
    """What the seed's ``RTOptimizationConfig`` asks for, as config overrides (module table).

    Raises:
        ConfigError: an unknown ``deployment_mode``.
    """

    timing_requirements: TimingRequirements = field(default_factory=TimingRequirements)
    enable_system_optimization: bool = True
    enable_gpu_acceleration: bool = True
    enable_continuous_monitoring: bool = True
    deployment_mode: str = 'development'

    def __post_init__(self) -> None:
        if self.deployment_mode not in PROFILES:
            raise ConfigError(
                f'RTOptimizationConfig.deployment_mode: expected one of {list(PROFILES)}, '
                f'got {self.deployment_mode!r}'
            )
        if not isinstance(self.timing_requirements, TimingRequirements):
            raise ConfigError('RTOptimizationConfig.timing_requirements must be a TimingRequirements')

    def to_overrides(self) -> dict[str, Any]:
        """Nested config overrides (the profile itself is ``deployment_mode``)."""
        own = {
            'deployment': {
                'system_optimization': bool(self.enable_system_optimization),
                'gpu': bool(self.enable_gpu_acceleration),
            },
            'monitor': {'enabled': bool(self.enable_continuous_monitoring)},
        }
        return deep_merge(self.timing_requirements.to_overrides(), own)
