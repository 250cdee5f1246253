"""Throughput path of the API (cloud profile): many independent robots' states per call, the
safety filter run on all of them at once by :class:`~rt_safe_rl.core.safety.batch.BatchSafetyFilter`
(the same kernel as the per-cycle filter, bit-identical, numba-parallel over the batch).

For fleets of simulated robots / offline evaluation served from one process. Each robot slot is
what one :class:`~rt_safe_rl.core.safety.SafetyFilter` is for ``execute_rt_inference``, with the
same rules in the same order (see :meth:`SafetyFilter.step`), so slot ``i`` of successive batches
returns exactly what a fresh system's single steps return for the same states (tested):

- one call is one control cycle of every slot at the call time ``now`` (monotonic ns): a gap
  between calls over ``safety.max_step_gap_s`` or a state older than ``safety.state_timeout_s``
  (its ``stamp_ns``) is a timing fault (before the slot's first valid action a hold, then a
  latched stop); human points are kept per slot with their stamp (``human_stamp_ns``, else the
  call time) and go stale after ``safety.ssm.human_timeout_s`` (``HUMAN_STALE``);
- a kernel fault (non-finite input, a state beyond the limits, a non-viable command) or an
  invalid policy output after the first valid one latches a controlled stop for that slot;
  no human data with ``safety.ssm.require_human`` holds it (``AWAITING_HUMAN``, not latched);
- ``operator_command`` is blended by the kernel exactly as in the single step (shared control);
- every command passes the slot's own :class:`~rt_safe_rl.core.safety.guard.OutputGuard`
  against the slot's previous command over the real elapsed time; a violation sends the braking
  command instead and latches ``OUTPUT_GUARD``; after a pause longer than ``max_step_gap_s`` the
  slot's command restarts from rest.

A latched slot stays latched until :meth:`RtSystem.reset_batch` (fresh slots, like a fresh
filter). Policy: one :class:`PolicyRuntime` per slot sharing the loaded model (feed-forward
policies only; a recurrent policy is refused). Not RT-safe (allocates per call).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rt_safe_rl.api.state import StateError
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.policy.runtime import PolicyRuntime
from rt_safe_rl.core.safety import kernel as kn
from rt_safe_rl.core.safety.batch import BatchSafetyFilter
from rt_safe_rl.core.safety.filter import MAX_HUMAN_POINTS, FaultCode, build_params
from rt_safe_rl.core.safety.guard import OutputGuard

_TIMING = frozenset(
    int(c)
    for c in (FaultCode.STALE_STATE, FaultCode.CLOCK_JUMP, FaultCode.DEADLINE_MISS, FaultCode.HUMAN_STALE)
)
"""Timing faults: before a slot's first valid action they hold without latching (as in the filter)."""


class BatchStage:
    """B robot slots (B fixed at the first call) of one :class:`RtSystem`'s policy and robot."""

    def __init__(self, system: Any, batch: int) -> None:
        rt = system.runtime
        if rt.model.info.recurrent:
            raise ConfigError('execute_batch: refused for a recurrent policy (one state per robot needed)')
        self.system = system
        self.batch = batch
        n = system.n_joints
        cfg = system.app.safety
        self.runtimes = [PolicyRuntime(rt.cfg, rt.pipeline, rt.model, rt.joint_names) for _ in range(batch)]
        for r in self.runtimes:
            r.reset()
        self.filter = BatchSafetyFilter(system.model, cfg)
        self._lim = build_params(system.model, cfg)[0]  # the same limits the batch kernel uses
        self.guards = [OutputGuard(self._lim, cfg.dt_s, cfg.max_step_gap_s) for _ in range(batch)]
        self.cmd_state = np.zeros((batch, 3, n))
        self.initialized = [False] * batch
        self.latched = [0] * batch  # latched fault code per slot (0 = none)
        self.had_valid = [False] * batch
        self.human_seen = [False] * batch
        self.last_t_ns = [-1] * batch
        self.human = np.zeros((batch, MAX_HUMAN_POINTS, 3))  # latest human points per slot [m]
        self.n_human = np.zeros(batch, dtype=np.int64)
        self.human_stamp_ns = [0] * batch
        self._targets = np.zeros((batch, n))
        self._op = np.zeros((batch, n))
        self._has_op = np.zeros(batch, dtype=np.bool_)
        self._state_timeout_ns = int(cfg.state_timeout_s * 1e9)
        self._max_gap_ns = int(cfg.max_step_gap_s * 1e9)
        self._human_timeout_ns = int(cfg.ssm.human_timeout_s * 1e9)
        self._jerk_on = bool(cfg.enforce_jerk)
        self._ssm_on = bool(cfg.ssm.enabled)
        self._require_human = bool(cfg.ssm.require_human)
        self._warm_up()

    def _warm_up(self) -> None:
        """One throw-away batch run: the first call loads the compiled batch kernel (~0.1-1 s),
        which must not fall between two cycles (that gap would be a CLOCK_JUMP of every slot)."""
        n = self.system.n_joints
        q = np.clip(np.zeros((1, n)), self._lim[kn.L_QMIN], self._lim[kn.L_QMAX])
        cs = np.zeros((1, 3, n))
        cs[:, 0] = q
        human = np.array([[[5.0, 5.0, 0.0]]])
        self.filter.run(cs, q, np.zeros((1, n)), q, q, human, None, None, None, has_operator=np.ones(1, bool))
        g = OutputGuard(self._lim, self.guards[0].dt_s, 1.0)
        g.check(0, self._lim, q[0], True)
        g.brake(q[0])
        g.record(0, q[0])

    def _latch(self, i: int, code: int) -> None:
        if not self.latched[i]:
            self.latched[i] = int(code)

    def _rules(self, i: int, now_ns: int, st_ns: int, valid: bool) -> int:
        """Timing, policy and human rules of slot `i` this cycle (SafetyFilter.step's order);
        latches what latches, returns the hold code (0 = none)."""
        code = hold = 0
        last = self.last_t_ns[i]
        if last >= 0 and (now_ns < last or now_ns - last > self._max_gap_ns):
            code = FaultCode.CLOCK_JUMP
        self.last_t_ns[i] = now_ns
        if code == 0 and now_ns - st_ns > self._state_timeout_ns:
            code = FaultCode.STALE_STATE
        if code == 0 and st_ns - now_ns > self._max_gap_ns:
            code = FaultCode.CLOCK_JUMP
        if not valid:
            if self.had_valid[i]:
                code = code or FaultCode.POLICY_INVALID
            else:
                hold = FaultCode.AWAITING_POLICY
        elif not self.latched[i]:
            self.had_valid[i] = True
        if self._ssm_on:
            if self.n_human[i] == 0:
                if self.human_seen[i]:
                    code = code or FaultCode.HUMAN_MISSING
                elif self._require_human and hold == 0:
                    hold = FaultCode.AWAITING_HUMAN
            else:
                self.human_seen[i] = True
                if code == 0 and now_ns - self.human_stamp_ns[i] > self._human_timeout_ns:
                    code = FaultCode.HUMAN_STALE
        if code:
            if not self.had_valid[i] and code in _TIMING:
                hold = code  # nothing has moved yet: hold and report, do not latch
            else:
                self._latch(i, code)
        return int(hold)

    def _inputs(self, states: Sequence[Any], now_ns: int, q: np.ndarray, dq: np.ndarray) -> list[int]:
        """Parse every state into `q`, `dq`, the slots' human / operator buffers; run the policies
        and the rules. Returns the hold code per slot (-1: no valid state yet, nothing commanded)."""
        parse = self.system._parse
        parsed = [parse(st) for st in states]  # every shape checked before anything runs
        holds: list[int] = []
        lim = self._lim
        for i, (qi, dqi, inputs, human, h_stamp, op, stamp) in enumerate(parsed):
            q[i] = qi
            dq[i] = dqi
            if human is not None:
                k = 1 if human.ndim == 1 else human.shape[0]
                self.human[i, :k] = human
                self.n_human[i] = k
                self.human_stamp_ns[i] = now_ns if h_stamp is None else int(h_stamp)
            self._has_op[i] = op is not None
            if op is not None:
                self._op[i] = op
            st_ns = now_ns if stamp is None else int(stamp)
            valid = self.runtimes[i].control_step(st_ns, q[i], dq[i], inputs, self._targets[i])
            hold = self._rules(i, now_ns, st_ns, valid)
            if not self.initialized[i]:
                if not all(math.isfinite(v) for v in q[i]):
                    holds.append(-1)
                    continue
                np.clip(q[i], lim[kn.L_QMIN], lim[kn.L_QMAX], out=self.cmd_state[i, 0])
                self.cmd_state[i, 1:] = 0.0
                self.initialized[i] = True
            if self.guards[i].held(now_ns):  # the robot held the last command: restart from rest
                self.cmd_state[i, 1:] = 0.0
            holds.append(hold)
        return holds

    def run(self, states: Sequence[Any], now_ns: int) -> tuple[np.ndarray, list[str]]:
        """One cycle of every slot at `now_ns` [ns]: (actions (B, n) rad, fault name per slot)."""
        b, n = self.batch, self.system.n_joints
        q = np.zeros((b, n))
        dq = np.zeros((b, n))
        holds = self._inputs(states, now_ns, q, dq)
        mode = np.array([1 if (self.latched[i] or holds[i]) else 0 for i in range(b)], dtype=np.int64)
        h_max = max(1, int(self.n_human.max()))
        out, rep = self.filter.run(
            self.cmd_state,
            q,
            dq,
            self._targets,
            self._op,
            self.human[:, :h_max],
            self.n_human,
            None,
            mode,
            has_operator=self._has_op,
        )
        faults: list[str] = []
        for i in range(b):
            if holds[i] < 0:  # no finite state before the first one: nothing may be commanded
                out[i] = 0.0
                faults.append(FaultCode(self.latched[i] or FaultCode.NO_STATE).name)
                continue
            kf = int(rep[i, kn.R_FAULT])
            if kf:
                self._latch(i, kf)
            self._guard(i, now_ns, out[i], int(rep[i, kn.R_MASK]))
            faults.append(FaultCode(self.latched[i] or holds[i]).name)
        return out, faults

    def _guard(self, i: int, now_ns: int, cmd: np.ndarray, mask: int) -> None:
        """Slot `i`'s last-line output check (as SafetyFilter's): a violation sends the braking
        command from the last command sent instead, continues from it and latches OUTPUT_GUARD."""
        g = self.guards[i]
        jerk_on = self._jerk_on and not (mask & kn.A_JERK_RELAXED)
        if g.check(now_ns, self._lim, cmd, jerk_on):
            g.brake(cmd)
            g.record(now_ns, cmd)
            self.cmd_state[i] = g.last_sent
            self._latch(i, FaultCode.OUTPUT_GUARD)
        else:
            g.record(now_ns, cmd)


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
