"""The simulated arm as an in-process robot: :class:`SimArmInterface` (read / write, no ROS).

The arm's physics run in wall-clock time, like a real robot's own 1 kHz controller: every
:meth:`SimArmInterface.read` first integrates the arm over every control period that elapsed
since the previous read (periods on the absolute-deadline grid of the caller), applying the
latest command -- or, when no command came for ``command_timeout_s``, holding the position, as a
position-controlled robot does. The state's sequence number is the period index, so a period
that was not read shows up as a seq gap (the command audit then measures velocities over the
real elapsed time) and the trace's time axis is the wall clock. This is what the e2e test reads:
a loop that skips periods no longer slows the simulated world down with it.

Used by :class:`~rt_safe_rl.rt.cycle.ControlCycle` directly (the demo's direct cycle) and by the
``sim_robot`` node's own periodic task (DDS mode: robot in its own thread or process).
RT path (:meth:`read`, :meth:`write`): preallocated arrays, no allocation, no logging.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.stats import LogHistogram
from rt_safe_rl.rt.metrics import registry
from rt_safe_rl.rt.ring import SpscRing
from rt_safe_rl.sim.arm import ArmLimits, ArmSim, CommandAudit

F64 = npt.NDArray[np.float64]
PUB_RING = 1 << 12  # state read times kept for latency matching (4 s at 1 kHz)
TRACE_CAPACITY = 1 << 15  # per-period trace for tests / the demo (32 s at 1 kHz between drains)
MAX_STEPS_PER_READ = 1000  # a longer gap (1 s at 1 kHz) is integrated as this many periods


class SimArmInterface:
    """Simulated 7-DoF arm behind the :class:`~rt_safe_rl.rt.cycle.RobotInterface` calls.

    Attributes (non-RT readers in the same process):
        arm: the :class:`ArmSim`; audit: the :class:`CommandAudit` of every command written.
        e2e_hist / e2e_ring: state read -> command write latency (ns); ring rows
            ``(t_rx_ns, latency_ns)`` (one reader: the demo).
        trace: ``(t_ns, seq, max |dq| / v_max, q...)`` per simulated period, t on the wall clock
            grid (one reader: the demo / e2e test).
        ticks: simulated periods; reads: states read; commands_rx, commands_rejected, holds:
        counters; commands_extrapolated: commands for a period whose state was never read (the
        safety monitor keeps the robot's rate while states are late: for a period the late robot
        integrated without a read, or one it has not reached yet), no latency measured;
        commands_unmatched: commands for no known period (older than the ring, or unknown);
        first_command_ns: monotonic time of the first command.
    """

    def __init__(self, limits: ArmLimits, q0: F64, period_ns: int, command_timeout_s: float, tol: float):
        self.limits = limits
        self.n_joints = limits.n_joints
        self.period_ns = int(period_ns)
        dt = self.period_ns * 1e-9
        self.arm = ArmSim(limits, dt, q0)
        self.audit = CommandAudit(limits, dt, tol)
        self._timeout_ns = int(command_timeout_s * 1e9)
        n = limits.n_joints
        self._cmd = q0.copy()
        self._pub_seq = np.zeros(PUB_RING, dtype=np.int64)
        self._pub_ns = np.zeros(PUB_RING, dtype=np.int64)
        self.trace = SpscRing(TRACE_CAPACITY, 3 + n)
        self._row = np.zeros(3 + n)
        self.e2e_hist = LogHistogram()
        self.e2e_ring = SpscRing(1 << 14, 2)
        reg = registry()
        self._period_stage = reg.stage('period')
        self._e2e_stage = reg.stage('e2e')
        self._violations = reg.counter('command_limit_violations')
        self.restart()

    def restart(self) -> None:
        """Counters and the period grid start over (activation); the arm keeps its state."""
        self.ticks = 0
        self.reads = 0
        self.commands_rx = 0
        self.commands_unmatched = 0
        self.commands_extrapolated = 0
        self.commands_rejected = 0
        self.holds = 0
        self.seq = 0
        self.first_command_ns = 0
        self._last_dl_ns = 0
        self._last_read_ns = 0
        self._cmd_t_ns = 0  # grid time of the latest command (0 = none yet: hold)
        self._holding = True

    # ------------------------------------------------------------------ RT path
    def read(self, deadline_ns: int, out: Any) -> bool:
        """Integrate the arm up to the period of `deadline_ns`, fill `out` (q, dq, seq, stamp_ns)."""
        per = self.period_ns
        last = self._last_dl_ns
        k = 1 if last == 0 else (deadline_ns - last + per // 2) // per
        if k <= 0:
            k = 1  # same or earlier deadline: one period (caller's grid restarted)
        if k > MAX_STEPS_PER_READ:
            k = MAX_STEPS_PER_READ
        arm = self.arm
        row = self._row
        t0 = deadline_ns - (k - 1) * per
        for i in range(k):
            t = t0 + i * per
            if self._cmd_t_ns and t - self._cmd_t_ns <= self._timeout_ns:
                arm.set_command(self._cmd)
                self._holding = False
            elif not self._holding:
                arm.hold()  # controller silent: latch the current position
                self._holding = True
                self.holds += 1
            arm.step()
            self.seq += 1
            row[0] = t
            row[1] = self.seq
            row[2] = arm.speed_ratio  # max |dq| / v_max of this step (the kernel's)
            row[3:] = arm.q
            self.trace.try_push(row)
        self.ticks += k
        self._last_dl_ns = deadline_ns
        now = time.monotonic_ns()
        if self._last_read_ns:
            self._period_stage.record_ns(now, now - self._last_read_ns)
        self._last_read_ns = now
        self.reads += 1
        seq = self.seq
        slot = seq & (PUB_RING - 1)
        self._pub_seq[slot] = seq
        self._pub_ns[slot] = now
        np.copyto(out.q, arm.q)
        np.copyto(out.dq, arm.dq)
        out.seq = seq
        out.stamp_ns = now
        return True

    def write(self, seq: int, cmd: F64) -> None:
        """A position command [rad] computed from state `seq`: audit, latency by seq, keep it."""
        now = time.monotonic_ns()
        if cmd.shape[0] != self._cmd.shape[0]:
            self.commands_rejected += 1
            return
        self.commands_rx += 1
        audit = self.audit
        nonfinite = audit.nonfinite
        if not audit.check(seq, cmd):
            self._violations.inc()
            if audit.nonfinite != nonfinite:
                self.commands_rejected += 1  # a robot never moves to NaN: keep the previous command
                return
        np.copyto(self._cmd, cmd)
        self._cmd_t_ns = self._last_dl_ns if self._last_dl_ns else now
        if not self.first_command_ns:
            self.first_command_ns = now
        slot = seq & (PUB_RING - 1)
        if seq > 0 and self._pub_seq[slot] == seq:
            lat = now - int(self._pub_ns[slot])
            self.e2e_hist.record_ns(lat)
            self.e2e_ring.try_push_values(float(now), float(lat))
            self._e2e_stage.record_ns(now, lat)
        elif self.seq - PUB_RING < seq <= self.seq + MAX_STEPS_PER_READ and seq > 0:
            self.commands_extrapolated += 1
        else:
            self.commands_unmatched += 1

    # ------------------------------------------------------------------ non-RT readers
    def stats(self) -> dict[str, Any]:
        """Counters and the command audit as a plain dict (non-RT)."""
        return {
            'ticks': self.ticks,
            'reads': self.reads,
            'commands_rx': self.commands_rx,
            'commands_unmatched': self.commands_unmatched,
            'commands_extrapolated': self.commands_extrapolated,
            'commands_rejected': self.commands_rejected,
            'holds': self.holds,
            'audit': self.audit.summary(),
        }
