"""ControlCycle: ONE read -> policy -> safety -> write cycle per period in ONE RT thread.

This is the controller-manager design of ros2_control: at each absolute deadline the control
thread reads the robot's latest state, steps the policy (decimated inside
:class:`~rt_safe_rl.core.policy.runtime.PolicyRuntime`), steps the safety filter, writes the safe
command and goes back to sleep. Nothing inside the cycle crosses a DDS topic, wakes another thread
or hands the GIL over: the stages are plain method calls on the composed nodes
(``policy.process_state``, ``safety.process_state`` / ``process_action`` / ``read_command``).

In-process robots (the simulator, a user's hardware interface) implement :class:`RobotInterface`
(``read(deadline_ns, out) -> bool`` and ``write(seq, cmd)``, both non-blocking); robots in another
process keep the DDS path (``joint_states`` in, ``forward_position_controller/commands`` out: the
cycle then starts from the state arriving, see DEVELOPERS.md).

A late cycle is caught up (``miss_policy: catch_up`` of the control group, bounded by
``max_catch_up``): the filter advances one robot period per run, so a controlled stop lasts as
long in wall-clock time as the protective distance assumes, whatever rate the machine allows.

Budget: each stage's CPU time (``time.thread_time_ns``) is accumulated per cycle
(:class:`CycleBudget`); the glue between the stages (action record hand-off, command read-back,
the cycle's own bookkeeping) is the ``handoff`` stage. Means over the last window are exported as
registry gauges ``cycle_cpu_<stage>_us`` (shown on /diagnostics by the monitor).
RT-safe: preallocated buffers, no logging, no allocation in steady state.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from rt_safe_rl.rt.channel import Channel
from rt_safe_rl.rt.executor import PeriodicTask
from rt_safe_rl.rt.metrics import registry

F64 = npt.NDArray[np.float64]

#: stages of one cycle, in order; ``handoff`` = total - the others (glue between the stages)
STAGES: tuple[str, ...] = ('read', 'safety_state', 'policy', 'safety', 'write', 'handoff', 'total')
GAUGE_PREFIX = 'cycle_cpu_'
#: gauges exported to the registry (mean CPU per cycle over the last window, microseconds)
GAUGES: tuple[str, ...] = tuple(f'{GAUGE_PREFIX}{s}_us' for s in STAGES)
_WINDOW = 1000  # cycles per gauge update


class RobotState:
    """Preallocated robot state filled by :meth:`RobotInterface.read`.

    Attributes:
        q: joint positions [rad] (robot joint order); dq: joint velocities [rad/s].
        seq: robot period index of the state (strictly increasing; gaps = periods not read).
        stamp_ns: ``CLOCK_MONOTONIC`` time the state was acquired [ns].
    """

    __slots__ = ('dq', 'q', 'seq', 'stamp_ns')

    def __init__(self, n_joints: int) -> None:
        self.q = np.zeros(n_joints)
        self.dq = np.zeros(n_joints)
        self.seq = 0
        self.stamp_ns = 0


class RobotInterface(Protocol):
    """An in-process robot called directly by the cycle (both calls never block; RT-safe)."""

    n_joints: int

    def read(self, deadline_ns: int, out: RobotState) -> bool:
        """Fill `out` with the latest state for the period ending at `deadline_ns`; False = no
        state (the cycle then skips the chain; the safety monitor sees the staleness)."""
        ...

    def write(self, seq: int, cmd: F64) -> None:
        """Send the position command [rad] computed from state `seq`."""
        ...


class CycleBudget:
    """Per-cycle CPU time of each stage (ns sums since the start and over the current window).

    Written by the cycle's thread only; :meth:`summary` is read by non-RT readers (a torn read
    of one running sum is harmless for a mean).
    """

    def __init__(self) -> None:
        n = len(STAGES)
        self.cycles = 0
        self.sum_ns = [0] * n
        self.max_ns = [0] * n
        self._win = [0] * n
        self._win_cycles = 0
        reg = registry()
        self._gauges = [reg.gauge(g) for g in GAUGES]

    def add_cycle(
        self, read: int, safety_state: int, policy: int, safety: int, write: int, total: int
    ) -> None:
        """Add one cycle's stage CPU times [ns] (``handoff`` = total - the others) and close it
        (:meth:`end_cycle`): one call per cycle. RT-safe."""
        handoff = total - read - safety_state - policy - safety - write
        s, w, m = self.sum_ns, self._win, self.max_ns
        for i, ns in enumerate((read, safety_state, policy, safety, write, handoff, total)):
            s[i] += ns
            w[i] += ns
            if ns > m[i]:
                m[i] = ns
        self.end_cycle()

    def end_cycle(self) -> None:
        """Close one cycle; every ``_WINDOW`` cycles the gauges get the window's means (RT-safe)."""
        self.cycles += 1
        self._win_cycles += 1
        if self._win_cycles >= _WINDOW:
            inv = 1e-3 / self._win_cycles
            win = self._win
            for i, g in enumerate(self._gauges):
                g.set(round(win[i] * inv, 2))
                win[i] = 0
            self._win_cycles = 0

    def summary(self) -> dict[str, Any]:
        """``{stage: {'mean_us', 'max_us'}}`` plus ``cycles`` (non-RT)."""
        c = max(self.cycles, 1)
        out: dict[str, Any] = {
            s: {'mean_us': round(self.sum_ns[i] / c / 1e3, 2), 'max_us': round(self.max_ns[i] / 1e3, 1)}
            for i, s in enumerate(STAGES)
        }
        out['cycles'] = self.cycles
        return out


class ControlCycle(PeriodicTask):
    """The control cycle as a :class:`PeriodicTask` (run it in the ``control`` group).

    Args:
        name: task name. group: rt group (``'control'``). period_ns: control period.
        robot: the :class:`RobotInterface`.
        safety: an object with ``process_state(stamp_ns, seq, q, dq)``, ``process_action(seq)``,
            ``read_command(out) -> seq`` (the safety node).
        policy: an object with ``process_state(stamp_ns, seq, q, dq)`` (the policy node) or None.
        action_channel: the policy -> safety action channel; the executor does not schedule
            triggered consumers of it in this thread (the cycle calls ``process_action`` itself).

    Every cycle the filter is stepped, whether or not the policy delivered: no action yet holds
    the robot (AWAITING_POLICY), an invalid action after valid ones latches a stop, exactly as
    the filter decides. A command the safety monitor published from its own thread in between
    (higher seq) is what ``read_command`` returns, so it reaches the robot too.
    """

    def __init__(
        self,
        name: str,
        group: Any,
        period_ns: int,
        robot: RobotInterface,
        safety: Any,
        policy: Any = None,
        *,
        action_channel: Channel | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(name, group, period_ns, self._cycle)
        self.robot = robot
        self.safety = safety
        self.policy = policy
        self.action_channel = action_channel
        self.inline_channels: tuple[Channel, ...] = (action_channel,) if action_channel is not None else ()
        n = int(robot.n_joints)
        self.state = RobotState(n)
        self._cmd = np.zeros(n)
        self.budget = CycleBudget()
        self.last_written_seq = -1
        self.commands_written = 0
        self.no_state = 0
        self.first_command_ns = 0

    def _cycle(self, deadline_ns: int) -> None:
        """One period (RT path)."""
        tt = time.thread_time_ns
        b = self.budget
        st = self.state
        c0 = tt()
        if not self.robot.read(deadline_ns, st):
            self.no_state += 1
            return
        c1 = tt()
        stamp, seq = st.stamp_ns, st.seq
        safety = self.safety
        safety.process_state(stamp, seq, st.q, st.dq)
        c2 = tt()
        if self.policy is not None:
            self.policy.process_state(stamp, seq, st.q, st.dq)
        c3 = tt()
        ch = self.action_channel
        safety.process_action(ch.seq if ch is not None else 0)
        c4 = tt()
        out_seq = safety.read_command(self._cmd)
        c5 = tt()
        if out_seq > self.last_written_seq:
            self.robot.write(out_seq, self._cmd)
            self.last_written_seq = out_seq
            self.commands_written += 1
            if not self.first_command_ns:
                self.first_command_ns = time.monotonic_ns()
        c6 = tt()
        b.add_cycle(c1 - c0, c2 - c1, c3 - c2, c4 - c3, c6 - c5, tt() - c0)

    def stats(self) -> dict[str, Any]:
        """PeriodicTask counters plus the cycle's own (non-RT)."""
        d = super().stats()
        d.update(
            commands_written=self.commands_written,
            no_state=self.no_state,
            cpu_per_cycle_us=self.budget.summary(),
        )
        return d


def thread_cpu_s() -> dict[str, float]:
    """CPU time [s] (user + system) of this process's threads, summed by thread name, plus
    ``'_process'`` for the whole process (``/proc/self/task/*/stat``; Linux only, else {}).
    Not RT-safe (reads /proc)."""
    tick = os.sysconf('SC_CLK_TCK') if hasattr(os, 'sysconf') else 100
    out: dict[str, float] = {}
    try:
        tids = os.listdir('/proc/self/task')
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f'/proc/self/task/{tid}/stat') as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index('(') + 1 : stat.rindex(')')]
        fields = stat[stat.rindex(')') + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        out[name] = out.get(name, 0.0) + cpu
    t = os.times()
    out['_process'] = t.user + t.system
    return out


def cpu_share(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Percent of one CPU per thread name between two :func:`thread_cpu_s` snapshots (non-RT)."""
    if wall_s <= 0:
        return {}
    res = {k: round(100.0 * (v - before.get(k, 0.0)) / wall_s, 1) for k, v in after.items()}
    return {k: v for k, v in sorted(res.items(), key=lambda kv: -kv[1]) if v > 0.0 or k == '_process'}
