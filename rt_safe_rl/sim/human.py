"""Simulated human walking in and out of the robot's workspace (pure numpy, seeded).

The walker moves on a straight line through the robot base (origin, z up): it waits at
``far_m`` for ``pause_far_s``, walks in to ``near_m`` at ``speed_m_s``, waits ``pause_near_s`` and
walks back out. Each cycle's approach direction (azimuth in [-90, 90] deg, i.e. in front of the
robot) is drawn from ``seed`` and the cycle index, so the path is a pure function of time and
seed (reproducible across runs and processes). Sensor noise is Gaussian with std ``noise_m``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from rt_safe_rl.sim.config import SimHumanConfig

F64 = npt.NDArray[np.float64]


class HumanWalker:
    """Position of the simulated human as a function of time. ``position`` is cheap, not RT-critical."""

    def __init__(self, cfg: SimHumanConfig) -> None:
        self.cfg = cfg
        self.walk_s = (cfg.far_m - cfg.near_m) / cfg.speed_m_s
        self.cycle_s = cfg.pause_far_s + 2.0 * self.walk_s + cfg.pause_near_s
        self._noise = np.random.default_rng(cfg.seed + 1_000_003)
        self._cycle = -1
        self._azimuth_rad = 0.0

    def azimuth_rad(self, cycle: int) -> float:
        """Approach direction of cycle ``cycle`` (rad, about z; 0 = +x in front of the robot)."""
        rng = np.random.default_rng([self.cfg.seed, cycle])
        return float(rng.uniform(-0.5 * math.pi, 0.5 * math.pi))

    def radius_m(self, t_s: float) -> float:
        """Horizontal distance of the walker from the robot base at time ``t_s`` (s), noise-free."""
        c = self.cfg
        tau = (t_s + c.start_phase_s) % self.cycle_s
        if tau < c.pause_far_s:
            return c.far_m
        tau -= c.pause_far_s
        if tau < self.walk_s:
            return c.far_m - c.speed_m_s * tau
        tau -= self.walk_s
        if tau < c.pause_near_s:
            return c.near_m
        tau -= c.pause_near_s
        return c.near_m + c.speed_m_s * tau

    def cycle_index(self, t_s: float) -> int:
        """Index of the walk cycle at time ``t_s``."""
        return int((t_s + self.cfg.start_phase_s) // self.cycle_s)

    def position(self, t_s: float, out: F64, noisy: bool = True) -> F64:
        """Fill ``out`` (3,) with the walker's position (m, robot base frame) at ``t_s``; return it."""
        k = self.cycle_index(t_s)
        if k != self._cycle:
            self._cycle = k
            self._azimuth_rad = self.azimuth_rad(k)
        r = self.radius_m(t_s)
        out[0] = r * math.cos(self._azimuth_rad)
        out[1] = r * math.sin(self._azimuth_rad)
        out[2] = self.cfg.height_m
        if noisy and self.cfg.noise_m > 0.0:
            out += self._noise.normal(0.0, self.cfg.noise_m, 3)
        return out

    def first_time_within_s(self, radius_m: float, t0_s: float = 0.0, horizon_s: float = 60.0) -> float:
        """First time >= ``t0_s`` at which the noise-free radius is <= ``radius_m`` (inf if none)."""
        step = 1e-3
        t = t0_s
        while t <= t0_s + horizon_s:
            if self.radius_m(t) <= radius_m:
                return t
            t += step
        return math.inf
