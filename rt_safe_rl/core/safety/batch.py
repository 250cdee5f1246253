"""Batch API: run the safety filter kernel on many independent states at once.

Vectorised over a leading batch dimension with numba ``prange`` (CPU threads); the kernel is the
very same :func:`.kernel.filter_kernel` the per-cycle path runs, so results are bit-identical
(tested). Stateless from the caller's view except for the command states it passes in and gets
back updated. Used by the benchmark and by property tests; a GPU path can mirror this interface.
Not RT-safe (allocates work buffers per call).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety import kernel as kn
from rt_safe_rl.core.safety.config import SafetyConfig
from rt_safe_rl.core.safety.filter import build_params


class BatchSafetyFilter:
    """Filter B states per call with the parameters of (`model`, `cfg`).

    Args:
        model: robot model.
        cfg: safety config (validated like :class:`SafetyFilter`'s).
    """

    def __init__(self, model: RobotModel, cfg: SafetyConfig | None = None) -> None:
        self.model = model
        self._model_arrays = kn.model_arrays(model)  # the kernels' `model` argument, once
        self.cfg = cfg or SafetyConfig()
        self._lim, self._sp, self._ws = build_params(model, self.cfg)

    def run(
        self,
        cmd_state: np.ndarray,
        q: np.ndarray,
        dq: np.ndarray,
        q_policy: np.ndarray,
        q_operator: np.ndarray | None = None,
        human: np.ndarray | None = None,
        n_human: np.ndarray | None = None,
        human_speed_m_s: np.ndarray | None = None,
        mode: np.ndarray | None = None,
        out: np.ndarray | None = None,
        n_threads: int | None = None,
        has_operator: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Filter every state b; returns (out (B,n) safe commands, rep (B, N_REP) reports).

        Args:
            cmd_state: (B, 3, n) command states (q, v, a), updated in place.
            q, dq: (B, n) measured states. q_policy: (B, n) proposals.
            q_operator: (B, n) operator targets or None (no blending).
            human: (B, H, 3) human points; n_human (B,) how many are valid (default H).
            human_speed_m_s: (B,) measured human speeds (< 0 unknown; default unknown).
            mode: (B,) 0 normal / 1 controlled stop (default 0).
            out: optional (B, n) output array.
            n_threads: chunks run in parallel (default numba's thread count).
            has_operator: (B,) bool, which states blend `q_operator` (default: all of them
                when `q_operator` is given).
        """
        b, n = q.shape
        if cmd_state.shape != (b, 3, n) or n != self.model.n_joints:
            raise ValueError(f'cmd_state must be (B, 3, {self.model.n_joints}), got {cmd_state.shape}')
        has_op = np.zeros(b, dtype=np.bool_)
        if q_operator is None:
            q_operator = np.zeros((b, n))
        elif has_operator is None:
            has_op[:] = True
        else:
            has_op[:] = has_operator
        if human is None:
            human = np.zeros((b, 0, 3))
        if n_human is None:
            n_human = np.full(b, human.shape[1], dtype=np.int64)
        if human_speed_m_s is None:
            human_speed_m_s = np.full(b, -1.0)
        if mode is None:
            mode = np.zeros(b, dtype=np.int64)
        if out is None:
            out = np.zeros((b, n))
        rep = np.zeros((b, kn.N_REP))
        chunks = int(n_threads or nb.get_num_threads())
        kn.batch_kernel(
            (self._lim, self._sp, self._ws),
            self._model_arrays,
            cmd_state,
            (
                np.ascontiguousarray(q, dtype=np.float64),
                np.ascontiguousarray(dq, dtype=np.float64),
                np.ascontiguousarray(q_policy, dtype=np.float64),
                np.ascontiguousarray(q_operator, dtype=np.float64),
                has_op,
                np.ascontiguousarray(human, dtype=np.float64),
                np.asarray(n_human, dtype=np.int64),
                np.asarray(human_speed_m_s, dtype=np.float64),
                np.asarray(mode, dtype=np.int64),
            ),
            out,
            rep,
            max(1, min(chunks, b)),
        )
        return out, rep
