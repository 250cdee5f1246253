"""Read-only views of the simulated robot node (moved unchanged out of :mod:`.sim_robot_node`):
the interface's arm, audit, rings, limits and counters as node attributes for the demo and tests,
and :meth:`SimRobotViews.stats`. Non-RT readers.
"""

from __future__ import annotations

from typing import Any

from rt_safe_rl.nodes._sim_base import PeriodicSimNode
from rt_safe_rl.rt.ring import SpscRing
from rt_safe_rl.sim.interface import SimArmInterface


class SimRobotViews(PeriodicSimNode):
    """Base of :class:`~rt_safe_rl.nodes.sim_robot_node.SimRobotNode`: its read-only views; the
    subclass sets ``interface`` (None before configure)."""

    interface: SimArmInterface | None

    # -- the interface's readers (kept as node attributes for the demo and tests)
    @property
    def arm(self) -> Any:
        """The simulated arm (None before configure)."""
        return self.interface.arm if self.interface is not None else None

    @property
    def audit(self) -> Any:
        """The command audit (None before configure)."""
        return self.interface.audit if self.interface is not None else None

    @property
    def trace(self) -> SpscRing | None:
        """Per-period trace ring (None before configure)."""
        return self.interface.trace if self.interface is not None else None

    @property
    def e2e_ring(self) -> SpscRing:
        """``(t_rx_ns, latency_ns)`` per matched command."""
        assert self.interface is not None
        return self.interface.e2e_ring

    @property
    def e2e_hist(self) -> Any:
        """LogHistogram of state read -> command receipt (ns)."""
        assert self.interface is not None
        return self.interface.e2e_hist

    @property
    def limits(self) -> Any:
        """The arm's limits (None before configure)."""
        return self.interface.limits if self.interface is not None else None

    def _count(self, name: str) -> int:
        return int(getattr(self.interface, name)) if self.interface is not None else 0

    @property
    def ticks(self) -> int:
        """Simulated periods since activation."""
        return self._count('ticks')

    @property
    def commands_rx(self) -> int:
        """Commands received (written)."""
        return self._count('commands_rx')

    @property
    def commands_unmatched(self) -> int:
        """Commands for no known robot period (older than the last 4 s of states, or unknown)."""
        return self._count('commands_unmatched')

    @property
    def commands_extrapolated(self) -> int:
        """Commands for a period whose state was never read (the safety monitor's, while late)."""
        return self._count('commands_extrapolated')

    @property
    def commands_rejected(self) -> int:
        """Commands of the wrong size or non-finite (not applied)."""
        return self._count('commands_rejected')

    @property
    def holds(self) -> int:
        """Times the arm latched its position after the command timeout."""
        return self._count('holds')

    # ------------------------------------------------------------------ non-RT readers
    def stats(self) -> dict[str, Any]:
        """Counters and the command audit as a plain dict (non-RT)."""
        out: dict[str, Any] = self.interface.stats() if self.interface is not None else {'ticks': 0}
        if self._task is not None:
            out['task'] = self._task.stats()
        return out
