"""Throughput path of the API (cloud profile): many independent robots' states per call, the
safety filter run on all of them at once by :class:`~rt_safe_rl.core.safety.batch.BatchSafetyFilter`
(the same kernel as the per-cycle filter, bit-identical, numba-parallel over the batch).

For fleets of simulated robots / offline evaluation served from one process. Per robot slot it keeps
the command state and these fail-closed rules: a kernel fault (non-finite or wrong input, a state
beyond the limits, a non-viable command) or an invalid policy output after the first valid one
latches a controlled stop for that slot until :meth:`BatchStage.reset`; no human data with
``safety.ssm.require_human`` holds the slot (``AWAITING_HUMAN``, not latched). There is no
per-robot clock here, so the timing rules of the per-cycle path (stale state, clock jump, deadline)
do not apply: drive a real robot with ``execute_rt_inference``, one system per robot.

Policy: one :class:`PolicyRuntime` per slot sharing the loaded model (feed-forward policies only;
a recurrent policy is refused). Not RT-safe (allocates per call).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rt_safe_rl.api.state import StateError
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.safety import kernel as kn
from rt_safe_rl.core.safety.filter import FaultCode


class BatchStage:
    """B robot slots (B fixed at the first call) of one :class:`RtSystem`'s policy and robot."""

    def __init__(self, system: Any, batch: int) -> None:
        from rt_safe_rl.core.policy.runtime import PolicyRuntime
        from rt_safe_rl.core.safety.batch import BatchSafetyFilter

        rt = system.runtime
        if rt.model.info.recurrent:
            raise ConfigError('execute_batch: refused for a recurrent policy (one state per robot needed)')
        self.system = system
        self.batch = batch
        n = system.n_joints
        self.runtimes = [PolicyRuntime(rt.cfg, rt.pipeline, rt.model, rt.joint_names) for _ in range(batch)]
        for r in self.runtimes:
            r.reset()
        self.filter = BatchSafetyFilter(system.model, system.app.safety)
        self.cmd_state = np.zeros((batch, 3, n))
        self.initialized = np.zeros(batch, dtype=bool)
        self.latched = np.zeros(batch, dtype=np.int64)  # latched fault code per slot (0 = none)
        self.had_valid = np.zeros(batch, dtype=bool)
        self._targets = np.zeros((batch, n))
        ssm = system.app.safety.ssm
        self._require_human = bool(ssm.enabled and ssm.require_human)

    def reset(self) -> None:
        """Clear every slot's latched stop; the command states restart from the measured states."""
        self.latched[:] = 0
        self.had_valid[:] = False
        self.initialized[:] = False
        for r in self.runtimes:
            r.reset()

    def run(self, states: Sequence[Any], now_ns: int) -> tuple[np.ndarray, list[str]]:
        """One cycle of every slot: (actions (B, n) rad, fault name per slot)."""
        b, n, sys_ = self.batch, self.system.n_joints, self.system
        q = np.zeros((b, n))
        dq = np.zeros((b, n))
        hmax = 1
        parsed = []
        for i, st in enumerate(states):
            p = sys_._parse(st)
            q[i], dq[i] = p[0], p[1]
            if p[3] is not None:
                hmax = max(hmax, 1 if p[3].ndim == 1 else p[3].shape[0])
            parsed.append(p)
        human = np.zeros((b, hmax, 3))
        n_human = np.zeros(b, dtype=np.int64)
        mode = np.zeros(b, dtype=np.int64)
        hold = np.zeros(b, dtype=np.int64)
        for i, p in enumerate(parsed):
            st = now_ns if p[6] is None else int(p[6])
            valid = self.runtimes[i].control_step(st, q[i], dq[i], p[2], self._targets[i])
            if valid:
                self.had_valid[i] = True
            elif self.had_valid[i] and not self.latched[i]:
                self.latched[i] = FaultCode.POLICY_INVALID
            elif not self.had_valid[i]:
                hold[i] = FaultCode.AWAITING_POLICY
            if p[3] is not None:
                h = p[3].reshape(-1, 3)
                human[i, : len(h)] = h
                n_human[i] = len(h)
            elif self._require_human and not hold[i]:
                hold[i] = FaultCode.AWAITING_HUMAN
            if not self.initialized[i] and np.isfinite(q[i]).all():
                lim = self.filter._lim
                self.cmd_state[i, 0] = np.clip(q[i], lim[kn.L_QMIN], lim[kn.L_QMAX])
                self.cmd_state[i, 1:] = 0.0
                self.initialized[i] = True
            mode[i] = 1 if (self.latched[i] or hold[i]) else 0
        op = None
        out, rep = self.filter.run(self.cmd_state, q, dq, self._targets, op, human, n_human, None, mode)
        faults: list[str] = []
        for i in range(b):
            kf = int(rep[i, kn.R_FAULT])
            if kf and not self.latched[i]:
                self.latched[i] = kf
            code = self.latched[i] or hold[i]
            faults.append(FaultCode(int(code)).name)
        return out, faults


def check_batch(states: Sequence[Any], batch: int | None) -> int:
    """Validate the batch size (fixed after the first call). Raises StateError."""
    if not isinstance(states, Sequence) or isinstance(states, (str, bytes)) or not states:
        raise StateError('execute_batch: expected a non-empty sequence of states')
    if batch is not None and len(states) != batch:
        raise StateError(
            f'execute_batch: {len(states)} states, this system serves {batch} robots '
            '(reset_batch() to change)'
        )
    return len(states)
