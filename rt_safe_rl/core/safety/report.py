"""The safety filter's fault codes and its per-cycle report (no ROS; preallocated, RT-safe reads).

:class:`FaultCode` (why the filter stopped / holds), :data:`ACTIVE_BITS` (names of the report's
constraint bits) and :class:`SafetyReport` (one float64 array the kernel fills each cycle).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import numpy as np

from rt_safe_rl.core.safety import kernel as kn


class FaultCode(IntEnum):
    """Why the filter stopped. 0 = OK; AWAITING_* hold without latching; the rest latch."""

    OK = 0
    NONFINITE_INPUT = 1
    BAD_SIZE = 2
    STALE_STATE = 3
    CLOCK_JUMP = 4
    POLICY_INVALID = 5
    DEADLINE_MISS = 6
    STATE_OUT_OF_LIMITS = 7
    HUMAN_STALE = 8
    HUMAN_MISSING = 9
    NOT_VIABLE = 10
    MONITOR = 11
    ACTION_TIMEOUT = 12
    AWAITING_POLICY = 13
    AWAITING_HUMAN = 14
    NO_STATE = 15
    OUTPUT_GUARD = 16
    RESYNC = 17
    INPUT_ORDER = 18
    COMPETING_PUBLISHER = 19
    MISSING_VELOCITY = 20
    CONTROLLED_STOP = 21


FAULT_NAMES: tuple[str, ...] = tuple(c.name for c in FaultCode)
"""Name of each :class:`FaultCode` (index = code)."""

ACTIVE_BITS: dict[str, int] = {
    'position': kn.A_POSITION,
    'velocity': kn.A_VELOCITY,
    'acceleration': kn.A_ACCELERATION,
    'jerk': kn.A_JERK,
    'effort': kn.A_EFFORT,
    'workspace': kn.A_WORKSPACE,
    'ssm': kn.A_SSM,
    'ssm_stop': kn.A_SSM_STOP,
    'pfl': kn.A_PFL,
    'jerk_relaxed': kn.A_JERK_RELAXED,
    'effort_relaxed': kn.A_EFFORT_RELAXED,
    'stop': kn.A_STOP,
    'blend': kn.A_BLEND,
    'qp_fallback': kn.A_QP_FALLBACK,
}


class SafetyReport:
    """Per-cycle report, preallocated and reused (values live in one float64 array).

    Attributes (properties): fault_code (int, :class:`FaultCode`), fault (name), active_mask
    (bits of ``ACTIVE_BITS``), intervention_rad (||safe - proposed||_2), safety_intervention_rad
    (the part of this cycle's change made by the human / workspace constraints), human_distance_m
    (min separation, inf when no human), ssm_scale (allowed / proposed speed toward the human,
    <= 1), alpha (operator weight), stopping, latched, command_valid, margins (position rad,
    velocity rad/s, SSM m), qp_iterations, constraint_rows. Reading a property allocates a Python
    scalar; the RT path only writes the array.
    """

    __slots__ = ('_latched', '_rep', '_valid')

    def __init__(self) -> None:
        self._rep = np.zeros(kn.N_REP)
        self._latched = False
        self._valid = False

    @property
    def fault_code(self) -> int:
        """:class:`FaultCode` value (0 = OK)."""
        return int(self._rep[kn.R_FAULT])

    @property
    def fault(self) -> str:
        """Fault name ('OK' when none)."""
        return FAULT_NAMES[int(self._rep[kn.R_FAULT])]

    @property
    def active_mask(self) -> int:
        """Bit mask of active/binding constraints (see ``ACTIVE_BITS``)."""
        return int(self._rep[kn.R_MASK])

    @property
    def intervention_rad(self) -> float:
        """Euclidean distance between the safe command and the (blended) proposal [rad]."""
        return float(self._rep[kn.R_INTERVENTION])

    @property
    def safety_intervention_rad(self) -> float:
        """Change of this cycle's command [rad] made by the coupled constraints (SSM / PFL,
        workspace, the empty-set fallback) beyond what the per-joint limits alone (velocity,
        acceleration, jerk, position braking, effort) make of the proposal: ||safe - per-joint
        limited proposal||_2 of one step (dt x velocity change). 0 while braking (a stop is an
        intervention by itself)."""
        return float(self._rep[kn.R_SAFETY_INTERVENTION])

    @property
    def human_distance_m(self) -> float:
        """Minimum separation monitored point <-> human [m] (inf without human data)."""
        return float(self._rep[kn.R_HUMAN_DIST])

    @property
    def ssm_scale(self) -> float:
        """min over point/human pairs of allowed / proposed speed toward the human, <= 1."""
        return float(self._rep[kn.R_SSM_SCALE])

    @property
    def alpha(self) -> float:
        """Operator weight alpha_h used in the blend (0 = policy only)."""
        return float(self._rep[kn.R_ALPHA])

    @property
    def stopping(self) -> bool:
        """True while braking (controlled stop, SSM stop or fault)."""
        return bool(self._rep[kn.R_STOPPING] != 0.0)

    @property
    def latched(self) -> bool:
        """True while a fault stop is latched (needs :meth:`SafetyFilter.reset`)."""
        return self._latched

    @property
    def command_valid(self) -> bool:
        """False only before any valid state was seen (then no command may be sent)."""
        return self._valid

    @property
    def position_margin_rad(self) -> float:
        """min over joints of the command's distance to its position limits [rad]."""
        return float(self._rep[kn.R_POS_MARGIN])

    @property
    def velocity_margin_rad_s(self) -> float:
        """min over joints of v_max - |v_command| [rad/s]."""
        return float(self._rep[kn.R_VEL_MARGIN])

    @property
    def ssm_margin_m(self) -> float:
        """min over pairs of separation minus the stop distance [m] (inf without human)."""
        return float(self._rep[kn.R_SSM_MARGIN])

    @property
    def qp_iterations(self) -> int:
        """Active-set iterations of the projection this cycle."""
        return int(self._rep[kn.R_QP_ITERS])

    @property
    def constraint_rows(self) -> int:
        """Coupled (SSM + workspace) constraint rows that could bind this cycle."""
        return int(self._rep[kn.R_N_ROWS])

    def active_names(self) -> list[str]:
        """Names of the set bits of ``active_mask`` (allocates; for status messages)."""
        m = self.active_mask
        return [name for name, bit in ACTIVE_BITS.items() if m & bit]

    def copy(self) -> SafetyReport:
        """An independent copy (allocates). Another thread's snapshot of a report that the RT thread
        keeps rewriting: take it under the lock the steps run under, then read it at leisure."""
        c = SafetyReport.__new__(SafetyReport)  # no zero-filled array to overwrite (API per-call path)
        c._rep = self._rep.copy()
        c._latched = self._latched
        c._valid = self._valid
        return c

    def as_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (allocates; for status topics and logs)."""
        return {
            'fault_code': self.fault_code,
            'fault': self.fault,
            'latched': self.latched,
            'active': self.active_names(),
            'active_mask': self.active_mask,
            'intervention_rad': self.intervention_rad,
            'safety_intervention_rad': self.safety_intervention_rad,
            'human_distance_m': self.human_distance_m,
            'ssm_scale': self.ssm_scale,
            'alpha': self.alpha,
            'stopping': self.stopping,
            'position_margin_rad': self.position_margin_rad,
            'velocity_margin_rad_s': self.velocity_margin_rad_s,
            'ssm_margin_m': self.ssm_margin_m,
            'qp_iterations': self.qp_iterations,
            'constraint_rows': self.constraint_rows,
            'command_valid': self.command_valid,
        }
