"""The fault injector's robot clock (``bench/fault_injector.next_period``) and the audit labels it
gives the commands (no ROS): a stall of the injector's own process must not make the audit flag
commands that moved within the limits over the real elapsed time."""

from __future__ import annotations

import numpy as np

from rt_safe_rl.bench.fault_injector import next_period
from rt_safe_rl.nodes.msgs import StateStamps
from rt_safe_rl.sim.arm import ArmLimits, CommandAudit

PERIOD_NS = 1_000_000


def test_next_period_catches_up_a_little_and_skips_a_stall_on_the_grid() -> None:
    assert next_period(0, 500_000, PERIOD_NS) == (PERIOD_NS, 0)  # on time: sleep to it
    assert next_period(0, 5 * PERIOD_NS, PERIOD_NS) == (PERIOD_NS, 0)  # a little late: catch up
    nxt, skipped = next_period(0, 54 * PERIOD_NS + 300_000, PERIOD_NS)
    assert nxt % PERIOD_NS == 0  # the stamp stays on the period grid
    assert skipped == nxt // PERIOD_NS - 1  # every period since the last sample is counted
    assert 54 * PERIOD_NS - 20 * PERIOD_NS <= nxt <= 54 * PERIOD_NS + 300_000


def _audit_after_stall(count_skipped: bool) -> CommandAudit:
    """States 1..10, a 54-period stall of the robot's process while the safety monitor sends one
    command per period (stamped with the last state's stamp + k periods, moving 0.5 v_max), then
    the robot's next state and commands answering each state at 0.5 v_max per period."""
    one = np.ones(1)
    limits = ArmLimits(('j',), -10 * one, 10 * one, one, 100 * one, one, one, one, one)
    audit = CommandAudit(limits, PERIOD_NS * 1e-9)
    stamps = StateStamps(PERIOD_NS)
    step_rad = 0.5 * PERIOD_NS * 1e-9
    q, seq, t_ns = 0.0, 0, 0
    for _ in range(10):
        seq, t_ns = seq + 1, t_ns + PERIOD_NS
        stamps.record(seq, t_ns)
        q += step_rad
        assert audit.check(stamps.seq_of(t_ns), np.array([q]))
    for k in range(1, 55):  # the monitor's commands for periods whose state never came
        q += step_rad
        audit.check(stamps.seq_of(t_ns + k * PERIOD_NS), np.array([q]))
    nxt, skipped = next_period(t_ns, t_ns + 55 * PERIOD_NS, PERIOD_NS)
    seq += skipped if count_skipped else 0
    t_ns = nxt - PERIOD_NS  # the loop below publishes the state sampled at `nxt` first
    for _ in range(80):
        seq, t_ns = seq + 1, t_ns + PERIOD_NS
        stamps.record(seq, t_ns)
        q += step_rad
        audit.check(stamps.seq_of(t_ns), np.array([q]))
    return audit


def test_a_stall_of_the_robot_process_is_no_false_violation() -> None:
    audit = _audit_after_stall(count_skipped=True)
    assert audit.velocity_violations + audit.acceleration_violations == 0, audit.violation_log


def test_counting_messages_instead_of_periods_would_flag_a_false_jump() -> None:
    # the injector's old clock (seq + 1 per message whatever the time): the audit compared a
    # command with one ~50 periods older over one period ("velocity x54")
    audit = _audit_after_stall(count_skipped=False)
    assert audit.velocity_violations > 0


def test_a_case_names_the_injectors_own_late_periods_of_its_window_only() -> None:
    """Ctx.late_states: the robot-loop gaps logged since the case's mark, none before it."""
    from types import SimpleNamespace

    from rt_safe_rl.bench.faults import Ctx

    inj = SimpleNamespace(state_gaps=[(100, 80 * PERIOD_NS)])
    ctx = Ctx(inj, None, 1.5, None)  # type: ignore[arg-type]
    ctx.t0_ns = 200
    assert ctx.late_states() == ''  # a gap before the window is not this case's
    inj.state_gaps += [(300, 12 * PERIOD_NS), (400, 61 * PERIOD_NS)]
    assert ctx.late_states() == 'the injector published states late 2x (longest gap 61.0 ms)'
