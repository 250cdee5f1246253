"""SafetySupervisor (no ROS): input integrity (out-of-order / duplicate seq and stamps dropped,
counted, fail closed above the rate), controlled stop, reset truth, labels -- audited the way the
robot audits the command stream it receives."""

from __future__ import annotations

import sys
import threading
from dataclasses import replace
from types import FrameType
from typing import Any

import numpy as np
import pytest

from rt_safe_rl.config import load_config
from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety import SafetyConfig
from rt_safe_rl.core.safety.config import InputConfig
from rt_safe_rl.core.safety.labels import MONITOR_IDLE_MAX_NS
from rt_safe_rl.core.safety.report import FaultCode
from rt_safe_rl.core.safety.supervisor import SafetySupervisor
from rt_safe_rl.sim.arm import ArmLimits, CommandAudit

MS = 1_000_000


class Rig:
    """Supervisor on a fake clock; a robot that executes each command it receives (one per period)."""

    def __init__(self, cfg: SafetyConfig | None = None) -> None:
        app = load_config(None)
        self.model = RobotModel.from_config(app.robot, app.base_dir)
        base = replace(app.safety, state_timeout_s=0.5, action_timeout_s=0.5, deadline_s=0.5)
        self.t_ns = 10_000 * MS
        self.cmds: list[tuple[int, np.ndarray]] = []
        self.sup = SafetySupervisor(self.model, cfg or base, self.emit, clock=lambda: self.t_ns)
        self.audit = CommandAudit(ArmLimits.from_model(self.model, app.sim.robot), 1e-3)
        self.q = self.model.home()
        self.sup.activate()

    def emit(self, cmd: np.ndarray, seq: int, t_ns: int, repeat: bool) -> None:
        self.cmds.append((seq, cmd.copy()))
        self.audit.check(seq, cmd)
        self.q = cmd.copy()

    def cycle(self, seq: int, target: np.ndarray, stamp_ns: int = 0) -> bool:
        """One period: the robot's state `seq` (header stamp), the policy's action for it."""
        self.t_ns += MS
        self.sup.set_human(self.t_ns, np.array([2.0, 0.0, 0.5]))
        ok = self.sup.process_state(self.t_ns, seq, self.q, np.zeros(7), header_stamp_ns=stamp_ns)
        self.sup.process_action(seq, target, True)
        return ok


def test_out_of_order_and_duplicate_seqs_are_dropped_and_counted() -> None:
    """Issue 11 item 2: seqs out of order by up to 7 gave 17 commands up to 15x v_max."""
    rig = Rig()
    goal = rig.model.home() + 0.4
    for s in range(1, 200):
        rig.cycle(s, goal)
    rng = np.random.default_rng(3)
    seq = 200
    accepted = dropped = 0
    for k in range(60):
        # every 10th state: an old one re-delivered (1..7 periods late; 1 = a duplicate)
        s = seq - 1 - int(rng.integers(0, 7)) if k % 10 == 5 else seq
        ok = rig.cycle(s, goal)
        accepted += ok
        dropped += not ok
        seq += 1
    st = rig.sup.status()
    assert st['dropped_states'] == dropped == 6
    assert not st['latched'], st  # a few drops: dropped and counted, no stop
    assert rig.audit.violations == 0, rig.audit.summary()
    # a jump ahead by 7: the 7 states that follow are older than it, dropped; 13 drops within
    # 80 ms are above 10 per second: fail closed
    for k in range(20):
        rig.cycle(seq + 7 if k == 0 else seq, goal)
        seq += 1
    st = rig.sup.status()
    assert st['dropped_states'] == 6 + 7 and st['fault'] == 'INPUT_ORDER'
    assert rig.audit.violations == 0, rig.audit.summary()


def test_many_out_of_order_states_fail_closed() -> None:
    rig = Rig()
    goal = rig.model.home() + 0.4
    for s in range(1, 200):
        rig.cycle(s, goal)
    seq = 200
    for k in range(100):
        rig.cycle(seq - 5 if k % 2 else seq, goal)  # every other state is 5 periods old
        seq += 1
    st = rig.sup.status()
    assert st['latched'] and st['fault'] == 'INPUT_ORDER', st
    assert 'out of order or duplicated' in st['fault_detail']
    assert rig.audit.violations == 0, rig.audit.summary()


def test_duplicate_and_old_header_stamps_are_dropped() -> None:
    """Issue 11 item 3: header stamps out of order (same seq numbering, or none)."""
    rig = Rig()
    goal = rig.model.home() + 0.3
    stamp = 1_700_000_000 * 1_000_000_000
    for s in range(1, 100):
        stamp += MS
        assert rig.cycle(s, goal, stamp)
    assert not rig.cycle(100, goal, stamp)  # same stamp as the last accepted one
    assert not rig.cycle(101, goal, stamp - 3 * MS)  # older
    assert rig.cycle(102, goal, stamp + MS)
    st = rig.sup.status()
    assert st['dropped_states'] == 2 and st['duplicate_states'] == 1
    assert rig.audit.violations == 0


def test_a_restart_of_the_robot_numbering_is_accepted() -> None:
    rig = Rig()
    goal = rig.model.home() + 0.3
    for s in range(5000, 7000):
        rig.cycle(s, goal)
    assert rig.cycle(1, goal) and rig.cycle(2, goal)
    assert rig.sup.status()['dropped_states'] == 0
    assert rig.audit.duplicates >= 1  # (the robot sees its own seq restart)


def test_drop_limit_is_configurable() -> None:
    base = load_config(None).safety
    cfg = replace(
        base,
        state_timeout_s=0.5,
        action_timeout_s=0.5,
        deadline_s=0.5,
        inputs=InputConfig(max_dropped_states=0),
    )
    rig = Rig(cfg)
    goal = rig.model.home()
    for s in range(1, 50):
        rig.cycle(s, goal)
    rig.cycle(49, goal)  # one duplicate: above a limit of 0
    rig.cycle(50, goal)
    assert rig.sup.status()['fault'] == 'INPUT_ORDER'


def test_controlled_stop_brakes_within_the_limits_and_holds_latched() -> None:
    rig = Rig()
    goal = rig.model.home() + 0.6
    for s in range(1, 300):
        rig.cycle(s, goal)
    assert np.abs(rig.sup.filter.command_state[1]).max() > 0.2
    rig.sup.controlled_stop('SIGTERM')
    for s in range(300, 1000):
        rig.cycle(s, goal)
    st = rig.sup.status()
    assert st['latched'] and st['fault'] == 'CONTROLLED_STOP' and 'SIGTERM' in st['fault_detail']
    assert rig.sup.filter.is_stopped and rig.audit.violations == 0
    held = rig.cmds[-1][1]
    rig.cycle(1000, goal)
    np.testing.assert_array_equal(rig.cmds[-1][1], held)


@pytest.mark.parametrize('field', ['max_dropped_states', 'drop_window_s', 'publisher_check_period_s'])
def test_input_config_is_validated(field: str) -> None:
    from rt_safe_rl.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f'inputs.{field}'):
        InputConfig(**{field: -1})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match='missing_velocity'):
        InputConfig(missing_velocity='zero')  # type: ignore[arg-type]


def test_read_command_waits_for_a_step_in_progress() -> None:
    """The command buffer holds the filter's raw output until the output guard checked it, and
    the monitor thread steps into it under the step lock: read_command (the control cycle's read
    of what to send) must take that lock, never copy a half-finished step."""
    import threading

    rig = Rig()
    for k in range(1, 4):
        rig.cycle(k, rig.model.home())
    got: list[int] = []
    out = np.zeros(7)
    with rig.sup._lock:  # a step in progress on another thread
        th = threading.Thread(target=lambda: got.append(rig.sup.read_command(out)), daemon=True)
        th.start()
        th.join(0.3)
        assert not got, 'read_command copied the buffer while a step held the lock'
    th.join(10.0)
    assert got == [rig.sup.last_command_seq] and np.array_equal(out, rig.cmds[-1][1])


def test_brake_to_rest_stops_a_moving_command_within_the_limits_then_activate_resumes() -> None:
    """Deactivating while moving used to stop the output mid-motion (a position robot then holds
    a target it had been passing at speed; a velocity controller keeps the last velocity). The
    supervisor brakes to rest first, stepping the filter itself when nobody else does (the
    states have stopped here), ends with the rest command once more, and activation clears that
    stop again."""
    rig = Rig()
    repeats: list[int] = []
    rig.sup.emit = lambda cmd, seq, t_ns, repeat: (repeats.append(repeat), rig.emit(cmd, seq, t_ns, repeat))

    def sleep(seconds: float) -> None:
        rig.t_ns += int(seconds * 1e9)

    rig.sup.sleep = sleep
    goal = rig.model.home() + 0.6
    for s in range(1, 300):
        rig.cycle(s, goal)
    assert np.abs(rig.sup.filter.command_state[1]).max() > 0.2
    n_before = len(rig.cmds)
    at_rest, why = rig.sup.brake_to_rest('deactivating')
    assert at_rest, why
    assert len(rig.cmds) > n_before  # it stepped the braking itself (no states came)
    assert rig.sup.filter.is_stopped and repeats[-1] is True
    assert rig.audit.violations == 0, rig.audit.summary()
    st = rig.sup.status()
    assert st['fault'] == 'CONTROLLED_STOP' and 'deactivating' in st['fault_detail']
    rig.sup.deactivate()
    assert not rig.sup.process_action(300, goal, True)  # inactive: nothing is stepped
    q_rest = rig.q.copy()
    rig.sup.activate()
    s0 = rig.sup.last_command_seq + 1  # the robot's numbering went on while the states were lost
    for s in range(s0, s0 + 600):
        rig.cycle(s, goal)
    st = rig.sup.status()
    assert not st['latched'], st
    assert np.abs(rig.q - q_rest).max() > 0.05  # moving again after the re-activation
    assert rig.audit.violations == 0, rig.audit.summary()


def test_brake_to_rest_at_rest_is_immediate_and_keeps_an_earlier_latch() -> None:
    rig = Rig()
    home = rig.model.home()
    for s in range(1, 20):
        rig.cycle(s, home)
    n = len(rig.cmds)
    assert rig.sup.brake_to_rest('deactivating') == (True, 'at rest') and len(rig.cmds) == n
    rig.sup.controlled_stop('an earlier fault')
    for s in range(20, 40):
        rig.cycle(s, home)
    rig.sup.deactivate()
    rig.sup.activate()
    rig.cycle(40, home)
    assert rig.sup.status()['fault'] == 'CONTROLLED_STOP'  # a stop not made by brake_to_rest stays


@pytest.mark.parametrize(('bad_state', 'expected'), [(True, 'NONFINITE_INPUT'), (False, 'POLICY_INVALID')])
def test_an_invalid_action_ahead_of_its_state_is_judged_with_that_state(
    bad_state: bool, expected: str
) -> None:
    """The policy may see a state before the safety does (two subscriptions). An invalid action
    for a state not here yet is judged when that state arrives: a NaN state is named as such,
    not as the policy's reaction to it; a finite one makes it the policy's fault."""
    rig = Rig()
    home = rig.model.home()
    sup = rig.sup

    def state(k: int, q: np.ndarray) -> None:
        rig.t_ns += MS
        sup.set_human(rig.t_ns, np.array([2.0, 0.0, 0.5]))
        sup.process_state(rig.t_ns, -1, q, np.zeros(7), header_stamp_ns=5_000 * MS + k * MS)

    for k in range(1, 50):
        state(k, rig.q)
        assert sup.process_action(-1, home + 0.1, True, state_stamp_ns=5_000 * MS + k * MS)
    assert not sup.status()['latched']
    # the action for state 50 arrives first
    assert not sup.process_action(-1, None, False, state_stamp_ns=5_000 * MS + 50 * MS)
    assert not sup.status()['latched']
    state(50, np.full(7, np.nan) if bad_state else rig.q)
    st = sup.status()
    assert st['latched'] and st['fault'] == expected, st
    assert rig.audit.violations == 0, rig.audit.summary()


def test_actions_name_their_state_by_stamp() -> None:
    rig = Rig()
    sup = rig.sup
    assert sup.label_for_stamp(0) == -1  # nothing yet
    for k in range(40):
        rig.t_ns += MS
        sup.process_state(rig.t_ns, -1, rig.q, np.zeros(7), header_stamp_ns=1_000 * MS + k * MS)
    assert sup.state_seq == 39  # no seq in ROS 2 headers: states are counted
    assert sup.label_for_stamp(1_000 * MS + 39 * MS) == 39
    assert sup.label_for_stamp(1_000 * MS + 30 * MS) == 30
    assert sup.label_for_stamp(1_000 * MS + 40 * MS) == 40  # not here yet: the next one
    assert sup.stamp_for_label(40) == 1_000 * MS + 40 * MS  # named exactly by that action
    assert sup.label_for_stamp(1_000 * MS - 5 * MS) == -1  # older than every state kept
    assert sup.stamp_for_label(35) == 1_000 * MS + 35 * MS
    assert sup.stamp_for_label(42) == 1_000 * MS + 42 * MS  # ahead (monitor): one period each


def test_the_deadline_runs_from_the_receipt_of_the_state_the_action_answers() -> None:
    """A policy stalled for 20 ms while the safety kept receiving states: its action for the old
    state is 20 ms late, however fresh the latest state is (it was judged on time before)."""
    rig = Rig(replace(load_config(None).safety, state_timeout_s=0.5, action_timeout_s=0.5, deadline_s=0.005))
    sup = rig.sup
    for k in range(1, 30):
        rig.t_ns += MS
        sup.set_human(rig.t_ns, np.array([2.0, 0.0, 0.5]))
        sup.process_state(rig.t_ns, -1, rig.q, np.zeros(7), header_stamp_ns=3_000 * MS + k * MS)
        if k < 10:
            sup.process_action(-1, rig.q, True, state_stamp_ns=3_000 * MS + k * MS)
    assert not sup.status()['latched']
    sup.process_action(-1, rig.q, True, state_stamp_ns=3_000 * MS + 10 * MS)  # 20 ms after its state
    rig.t_ns += MS
    sup.process_state(rig.t_ns, -1, rig.q, np.zeros(7), header_stamp_ns=3_000 * MS + 30 * MS)
    sup.process_action(-1, rig.q, True, state_stamp_ns=3_000 * MS + 30 * MS)
    st = sup.status()
    assert st['fault'] == 'DEADLINE_MISS' and sup.deadline_misses == 1, st


def test_a_reset_accepted_while_the_policy_is_silent_is_applied() -> None:
    """CI found it over DDS: the policy had been silent > action_timeout_s when a reset of its
    ACTION_TIMEOUT latch was accepted; the monitor's next tick re-triggered ACTION_TIMEOUT before
    the reset was applied, the step dropped the reset and the service's "applies at the next
    cycle" was untrue. A reset forgets the valid action (the robot waits for a fresh one), so
    the old silence must not re-latch it."""
    rig = Rig()
    goal = rig.model.home() + 0.3
    for s in range(1, 200):
        rig.cycle(s, goal)
    seq = 200
    for _ in range(1500):  # the policy falls silent; the robot keeps sending its state
        rig.t_ns += MS
        rig.sup.set_human(rig.t_ns, np.array([2.0, 0.0, 0.5]))
        rig.sup.process_state(rig.t_ns, seq, rig.q, np.zeros(7))
        rig.sup.monitor_tick()
        seq += 1
    st = rig.sup.status()
    assert st['latched'] and st['fault'] == 'ACTION_TIMEOUT' and rig.sup.filter.is_stopped, st
    ok, why = rig.sup.reset()
    assert ok, why
    rig.t_ns += MS  # the next period: a new state, the policy still silent (> action_timeout_s)
    rig.sup.set_human(rig.t_ns, np.array([2.0, 0.0, 0.5]))
    rig.sup.process_state(rig.t_ns, seq, rig.q, np.zeros(7))
    seq += 1
    rig.sup.monitor_tick()
    st = rig.sup.status()
    assert not st['latched'], st
    assert st['fault'] in ('AWAITING_POLICY', 'RESYNC'), st
    assert st['resets_applied'] == 1
    q_hold = rig.q.copy()
    for s in range(seq, seq + 300):
        rig.cycle(s, goal)  # a fresh action: it moves again
    assert not rig.sup.status()['latched']
    assert np.abs(rig.q - q_hold).max() > 0.01
    assert rig.audit.violations == 0, rig.audit.summary()


def _latched_at_rest(rig: Rig, goal: np.ndarray) -> int:
    """Move, then a controlled stop ('test') braked to rest; the next state seq."""
    for s in range(1, 100):
        rig.cycle(s, goal)
    rig.sup.controlled_stop('test')
    for s in range(100, 1200):
        rig.cycle(s, goal)
    assert rig.sup.filter.is_stopped and rig.sup.status()['latched']
    return 1200


def _state(rig: Rig, seq: int, dq: np.ndarray | None = None) -> None:
    rig.t_ns += MS
    rig.sup.set_human(rig.t_ns, np.array([2.0, 0.0, 0.5]))
    rig.sup.process_state(rig.t_ns, seq, rig.q, np.zeros(7) if dq is None else dq)


def test_a_reset_overtaken_by_a_new_fault_says_so() -> None:
    """An accepted reset applies at the next step; a new fault triggered before that step wins
    (the stop stays latched) and the status says that the reset was not applied, and why."""
    rig = Rig()
    goal = rig.model.home() + 0.3
    _latched_at_rest(rig, goal)
    assert rig.sup.status()['fault'] == 'CONTROLLED_STOP'
    ok, why = rig.sup.reset()
    assert ok, why
    rig.sup.fail_closed(FaultCode.DEADLINE_MISS, 'a late action')  # before the next step
    rig.cycle(1200, goal)
    st = rig.sup.status()
    assert st['latched'] and st['resets_applied'] == 0, st
    assert 'the last reset was not applied: DEADLINE_MISS came first' in st['fault_detail'], st
    ok, why = rig.sup.reset()  # a second reset, nothing in its way: applied
    assert ok, why
    rig.cycle(1201, goal)
    st = rig.sup.status()
    assert not st['latched'] and st['resets_applied'] == 1 and st['fault_detail'] == '', st
    assert rig.audit.violations == 0, rig.audit.summary()


def test_a_reset_is_not_dropped_for_a_stale_state_that_is_fresh_again() -> None:
    """CI (twice): the states paused > state_timeout_s while latched (the monitor flagged
    STALE_STATE, pending: a stopped command takes no step), then a fresh state arrived, the reset
    was accepted against it, and the step that should apply the reset found the old STALE_STATE
    pending and dropped the reset. Conditions the reset re-checked when it was accepted (state age
    and limits; the policy's silence is void anyway) no longer drop it."""
    rig = Rig()
    goal = rig.model.home() + 0.3
    _latched_at_rest(rig, goal)
    for _ in range(1400):  # no states for 0.7 s > state_timeout_s 0.5 s: STALE_STATE flagged
        rig.t_ns += MS // 2
        rig.sup.monitor_tick()
    # then the policy's next action arrives just before its state (two topics: no order between
    # them): it takes a step (the pending fault is consumed) and the monitor flags the state again
    rig.t_ns += MS
    rig.sup.process_action(1200, goal, True)
    rig.sup.monitor_tick()
    assert rig.sup.filter._req.cond == FaultCode.STALE_STATE  # (what CI had pending)
    rig.t_ns -= MS
    _state(rig, 1200)  # fresh again
    ok, why = rig.sup.reset()
    assert ok, why
    _state(rig, 1201)
    rig.sup.process_action(1201, goal, True)  # the step that applies the reset
    st = rig.sup.status()
    assert not st['latched'] and st['resets_applied'] == 1, st
    for s in range(1202, 1500):
        rig.cycle(s, goal)
    st = rig.sup.status()
    assert not st['latched'] and st['fault'] == 'OK', st
    assert rig.audit.violations == 0, rig.audit.summary()


def test_a_stop_requested_while_a_reset_is_pending_is_not_lost() -> None:
    """Review: SIGTERM's controlled stop arrived after an accepted reset while the policy was
    silent; the monitor's next tick re-flagged the silence into the same single slot, the reset
    voided it and applied, and a fresh action moved the robot after SIGTERM. Events and conditions
    now have their own slots: the event wins, the reset is not applied, the status says so."""
    rig = Rig()
    goal = rig.model.home() + 0.3
    seq = _latched_at_rest(rig, goal)
    for _ in range(700):  # the policy is silent (> action_timeout_s) while latched
        _state(rig, seq)
        rig.sup.monitor_tick()
        seq += 1
    ok, why = rig.sup.reset()
    assert ok, why
    rig.sup.controlled_stop('SIGTERM')  # the signal thread, before the next step
    rig.t_ns += MS // 4
    rig.sup.monitor_tick()  # still silent: ACTION_TIMEOUT flagged again
    _state(rig, seq)
    rig.sup.monitor_tick()  # the step
    seq += 1
    st = rig.sup.status()
    assert st['latched'] and st['fault'] == 'CONTROLLED_STOP' and st['resets_applied'] == 0, st
    assert 'the last reset was not applied: CONTROLLED_STOP came first' in st['fault_detail'], st
    assert 'controlled stop: test' in st['fault_detail'], st  # the latch's own reason is kept
    q0 = rig.q.copy()
    for s in range(seq, seq + 200):
        rig.cycle(s, goal)
    assert rig.sup.status()['latched']
    np.testing.assert_array_equal(rig.q, q0)
    assert rig.audit.violations == 0, rig.audit.summary()


def test_a_reset_is_refused_while_a_stop_event_is_pending() -> None:
    rig = Rig()
    goal = rig.model.home() + 0.3
    seq = _latched_at_rest(rig, goal)
    _state(rig, seq)
    rig.sup.fail_closed(FaultCode.DEADLINE_MISS, 'a late action')  # not yet taken by a step
    ok, why = rig.sup.reset()
    assert not ok and 'DEADLINE_MISS stop was just triggered' in why, why


def test_a_stop_that_latches_again_in_the_step_applying_the_reset_says_why() -> None:
    """Review: the measured velocity beyond v_max at the step that applies the reset re-latched
    STATE_OUT_OF_LIMITS in that step with an empty detail (the latch never went off and on)."""
    rig = Rig()
    goal = rig.model.home() + 0.3
    seq = _latched_at_rest(rig, goal)
    _state(rig, seq)
    ok, why = rig.sup.reset()
    assert ok, why
    dq_bad = np.zeros(7)
    dq_bad[0] = rig.sup.filter.limits[2, 0] + 1.0
    for _ in range(5):
        seq += 1
        _state(rig, seq, dq_bad)
        rig.sup.monitor_tick()
        rig.sup.process_action(seq, goal, True)
    st = rig.sup.status()
    assert st['latched'] and st['fault'] == 'STATE_OUT_OF_LIMITS' and st['resets_applied'] == 1, st
    assert 'beyond v_max' in st['fault_detail'], st


def test_a_pending_stop_keeps_its_reason_when_the_monitor_sees_a_condition_too() -> None:
    """Review: after controlled_stop (pending), the monitor's out-of-limits detail overwrote the
    controlled stop's reason, then the controlled stop won the latch: fault and detail disagreed."""
    rig = Rig()
    goal = rig.model.home() + 0.3
    for s in range(1, 100):
        rig.cycle(s, goal)
    rig.sup.controlled_stop('SIGTERM')
    dq_bad = np.zeros(7)
    dq_bad[0] = rig.sup.filter.limits[2, 0] + 1.0
    _state(rig, 100, dq_bad)
    rig.sup.monitor_tick()
    rig.sup.process_action(100, goal, True)
    st = rig.sup.status()
    assert st['fault'] == 'CONTROLLED_STOP' and st['fault_detail'] == 'controlled stop: SIGTERM', st


def test_a_reset_checked_before_a_stop_was_taken_into_the_latch_is_refused() -> None:
    """Second review: a SIGTERM stop absorbed into the latch in force between the reset's check and
    its request was cleared by that reset. The reset is bound to the latch it judged (latch_gen)."""
    rig = Rig()
    goal = rig.model.home() + 0.3
    seq = _latched_at_rest(rig, goal)
    f = rig.sup.filter
    gen = f.latch_gen  # the service thread judged the latch here ...
    rig.sup.controlled_stop('SIGTERM')  # ... then the stop came and a step took it into the latch
    _state(rig, seq)
    rig.sup.process_action(seq, goal, True)
    assert not f.event_pending
    ok, why = f.reset(gen)
    assert not ok and 'while the reset was checked' in why, why
    for s in range(seq + 1, seq + 200):
        rig.cycle(s, goal)
    assert rig.sup.status()['latched'] and f.is_stopped


def test_a_reset_judged_before_a_new_latch_is_refused_whenever_the_step_pauses() -> None:
    """Third review: a stop that creates a NEW latch after the reset was judged. The step thread is
    paused inside ``SafetyFilter._latch`` at the first moment the latch is visible (sys.settrace;
    before the fix the generation advanced only after the flag, so the reset was accepted there and
    the next step cleared a SIGTERM stop)."""
    rig = Rig()
    home = rig.model.home()
    for s in range(1, 300):
        rig.cycle(s, home)  # at rest, nothing latched
    f = rig.sup.filter
    gen = f.latch_gen  # the service thread judged here: nothing latched
    latched_seen, reset_done = threading.Event(), threading.Event()

    def pause_when_latched(frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code.co_name != '_latch':
            return None

        def local(fr: FrameType, ev: str, a: object) -> Any:
            if ev in ('line', 'return') and f._latched and not latched_seen.is_set():
                latched_seen.set()
                reset_done.wait(10.0)  # the step thread is preempted here
            return local

        return local

    def stepper() -> None:
        rig.sup.controlled_stop('SIGTERM')
        sys.settrace(pause_when_latched)
        try:
            rig.cycle(300, home)
        finally:
            sys.settrace(None)

    t = threading.Thread(target=stepper)
    t.start()
    try:
        assert latched_seen.wait(10.0), 'the step never latched'
        ok, why = f.reset(gen)
    finally:
        reset_done.set()
        t.join(10.0)
    assert not ok, why
    for s in range(301, 320):
        rig.cycle(s, home)
    st = rig.sup.status()
    assert st['latched'] and st['fault'] == 'CONTROLLED_STOP' and st['resets_applied'] == 0, st


@pytest.mark.parametrize(
    ('states_until_ms', 'actions_until_ms', 'fault'),
    [(500, 200, 'ACTION_TIMEOUT'), (200, 200, 'STALE_STATE')],
)
def test_the_monitor_sleeping_until_a_timeout_can_expire_commands_what_a_monitor_every_period_does(
    states_until_ms: int, actions_until_ms: int, fault: str
) -> None:
    """The monitor task sleeps through the periods in which no timeout can expire (the idle time
    monitor_tick returns). Two supervisors get the same inputs on a 0.5 ms monitor grid: one
    ticks every period, the other only when its last tick's idle time has passed. A healthy
    stream for 200 ms, then the policy falls silent (ACTION_TIMEOUT) or the states stop too
    (STALE_STATE, the monitor braking at the robot's rate): both emit the same commands at the
    same times and latch the same fault at the same time; healthy, the sleeper ticks at most
    every MONITOR_IDLE_MAX_NS."""
    app = load_config(None)
    cfg = replace(app.safety, state_timeout_s=0.05, action_timeout_s=0.1, deadline_s=0.05)
    rigs = (Rig(cfg), Rig(cfg))
    every, sleeper = rigs
    times: list[list[int]] = [[], []]
    for i, r in enumerate(rigs):

        def emit(cmd: np.ndarray, seq: int, t_ns: int, rep: bool, r: Rig = r, i: int = i) -> None:
            times[i].append(t_ns)
            Rig.emit(r, cmd, seq, t_ns, rep)

        r.sup.emit = emit
    goal = every.model.home() + 0.3
    half = MS // 2
    ticks = [0, 0]
    healthy_ticks = 0
    next_tick = 0
    seq = 0
    faults: list[tuple[str, str]] = []
    for k in range(2 * 700):  # 700 ms on the 0.5 ms grid
        for r in rigs:
            r.t_ns += half
        t_ms = k // 2
        if k % 2 == 0 and t_ms < states_until_ms:  # the robot's state every 1 ms
            seq += 1
            for r in rigs:
                r.sup.set_human(r.t_ns, np.array([2.0, 0.0, 0.5]))
                r.sup.process_state(r.t_ns, seq, r.q, np.zeros(7))
                if t_ms < actions_until_ms:
                    r.sup.process_action(seq, goal, True)
        every.sup.monitor_tick()
        ticks[0] += 1
        if sleeper.t_ns >= next_tick:
            next_tick = sleeper.t_ns + sleeper.sup.monitor_tick()
            ticks[1] += 1
            healthy_ticks += t_ms < actions_until_ms
        faults.append((every.sup.status()['fault'], sleeper.sup.status()['fault']))
    assert [f[0] for f in faults] == [f[1] for f in faults]
    assert faults[-1][0] == fault, faults[-1]
    assert len(every.cmds) == len(sleeper.cmds) and times[0] == times[1]
    for (s0, c0), (s1, c1) in zip(every.cmds, sleeper.cmds, strict=True):
        assert s0 == s1
        np.testing.assert_array_equal(c0, c1)
    assert every.sup.monitor_publishes == sleeper.sup.monitor_publishes > 0
    assert every.sup.filter.is_stopped and sleeper.sup.filter.is_stopped
    assert every.audit.violations == 0 and sleeper.audit.violations == 0
    assert healthy_ticks <= actions_until_ms * MS // MONITOR_IDLE_MAX_NS + 1, (healthy_ticks, ticks)
    assert ticks[1] < ticks[0], ticks


def test_a_measured_state_beyond_the_limits_latches_on_receipt() -> None:
    """The limits of the measured state are checked when the state is accepted (not at a monitor
    tick), and the stop says which joint."""
    rig = Rig()
    goal = rig.model.home() + 0.3
    for s in range(1, 50):
        rig.cycle(s, goal)
    dq_bad = np.zeros(7)
    dq_bad[3] = rig.sup.filter.limits[2, 3] + 1.0
    _state(rig, 50, dq_bad)
    assert rig.sup.filter._req.cond == FaultCode.STATE_OUT_OF_LIMITS  # requested, before any step
    rig.sup.process_action(50, goal, True)
    st = rig.sup.status()
    assert st['latched'] and st['fault'] == 'STATE_OUT_OF_LIMITS', st
    assert 'joint 3' in st['fault_detail'] and 'beyond v_max' in st['fault_detail'], st
