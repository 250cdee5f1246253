"""Simulated task goals and operator command for shared control (pure numpy, seeded).

* :class:`GoalGenerator` draws joint-space reaching goals (rad) around a home pose, inside the
  position limits shrunk by a margin. The same distribution trains the default policy
  (``tools/train_default_policy.py``), so demo goals are in-distribution.
* :class:`OperatorCommand` is what a human operator would command for shared control: the current
  goal plus a slow per-joint sinusoid.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.errors import ConfigError

F64 = npt.NDArray[np.float64]


class GoalGenerator:
    """Seeded joint-space goals: ``home + span * U(-1, 1) * half_range``, clipped inside the margin."""

    def __init__(self, q_min: F64, q_max: F64, home: F64, margin_rad: float, span: float, seed: int) -> None:
        self.lo = np.asarray(q_min, dtype=np.float64) + margin_rad
        self.hi = np.asarray(q_max, dtype=np.float64) - margin_rad
        if np.any(self.lo >= self.hi):
            raise ConfigError(f'goal margin {margin_rad} rad leaves no room inside the position limits')
        self.home = np.clip(np.asarray(home, dtype=np.float64), self.lo, self.hi)
        self.half_range = 0.5 * (self.hi - self.lo)
        self.span = float(span)
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int | None = None) -> F64:
        """One goal (shape (J,)) or ``n`` goals (shape (n, J)), rad."""
        shape = (self.home.size,) if n is None else (n, self.home.size)
        u = self.rng.uniform(-1.0, 1.0, shape)
        return np.clip(self.home + self.span * u * self.half_range, self.lo, self.hi)


class OperatorCommand:
    """Operator position targets (rad): ``goal + amplitude * sin(2 pi t / period + phase_j)``."""

    def __init__(self, n_joints: int, amplitude_rad: float, period_s: float, q_min: F64, q_max: F64) -> None:
        self.amplitude_rad = float(amplitude_rad)
        self.omega = 2.0 * math.pi / float(period_s)
        self.phase = np.linspace(0.0, math.pi, n_joints)
        self.q_min = np.asarray(q_min, dtype=np.float64)
        self.q_max = np.asarray(q_max, dtype=np.float64)
        self._tmp = np.zeros(n_joints)

    def value(self, t_s: float, goal: F64, out: F64) -> F64:
        """Fill ``out`` with the operator's target at ``t_s`` around ``goal``; return it."""
        np.multiply(self.phase, 1.0, out=self._tmp)
        self._tmp += self.omega * t_s
        np.sin(self._tmp, out=out)
        out *= self.amplitude_rad
        out += goal
        np.clip(out, self.q_min, self.q_max, out=out)
        return out
