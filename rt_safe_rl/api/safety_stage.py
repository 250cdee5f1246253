"""The one place the API touches the safety core: a small adapter over
:class:`~rt_safe_rl.core.safety.filter.SafetyFilter`'s public API (same fail-closed rules as the
safety node). Switching to another ROS-free supervisor means changing this class only.

``SafetyStage.step`` IS :meth:`SafetyFilter.step` of the current filter (a bound method, rebound by
:meth:`SafetyStage.restart`): the API's per-call path pays no adapter call. RT-safety: that step is
RT-safe (no allocation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rt_safe_rl.core.safety.filter import MAX_HUMAN_POINTS, FaultCode, SafetyFilter, SafetyReport


class SafetyStage:
    """Safety filter stage of the API system (see module docstring).

    ``step(t_ns, q, dq, q_proposed, proposed_valid, human_points, human_stamp_ns, operator_cmd,
    out_cmd, *, state_stamp_ns)``: one filter cycle, writes the safe command into `out_cmd` (rad),
    returns the reused report (:meth:`SafetyFilter.step`).
    """

    max_human_points = MAX_HUMAN_POINTS

    def __init__(self, model: Any, cfg: Any) -> None:
        self._model = model
        self._cfg = cfg
        self.n_joints = model.n_joints
        self._filter = SafetyFilter(model, cfg, MAX_HUMAN_POINTS)
        self.step: Callable[..., SafetyReport] = self._filter.step
        self._warm_up()

    def _warm_up(self) -> None:
        """One step on a throw-away filter: the first call loads the compiled kernels (~0.1 s),
        which must not happen inside the first control cycle (it would be a clock jump)."""
        f = SafetyFilter(self._model, self._cfg, MAX_HUMAN_POINTS)
        q = np.clip(np.zeros(self.n_joints), self._model.q_min, self._model.q_max)
        out = np.zeros(self.n_joints)
        human = np.array([[5.0, 5.0, 0.0]])
        f.step(1, q, np.zeros(self.n_joints), q, True, human, 1, None, out)
        f.step(1_000_001, q, np.zeros(self.n_joints), q, True, human, 1_000_001, q, out)
        f.guard.brake(out)  # and the output guard's brake, which runs first on a guard trip

    def restart(self) -> None:
        """A fresh filter (activation: no latched stop, no history), like the node's activate."""
        self._filter = SafetyFilter(self._model, self._cfg, MAX_HUMAN_POINTS)
        self.step = self._filter.step

    def reset(self) -> tuple[bool, str]:
        """Clear a latched stop (refused while moving); (ok, reason)."""
        return self._filter.reset()

    def trigger_stop(self, code: int = FaultCode.MONITOR) -> None:
        """Latched controlled stop at the next step (any thread)."""
        self._filter.trigger_stop(code)

    @property
    def latched(self) -> bool:
        """True while a fault stop is latched."""
        return self._filter.stop_latched
