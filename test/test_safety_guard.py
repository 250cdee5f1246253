"""Output invariant: no command that leaves the filter breaks a limit relative to the previous one,
whatever happens (reset while moving, re-synchronisation, a filter bug injected into the command
state). The audit below is the robot's view: per-command differences at the robot period."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rt_safe_rl.core.robot_model import RobotConfig, RobotModel
from rt_safe_rl.core.safety import FaultCode, SafetyConfig, SafetyFilter
from rt_safe_rl.core.safety.guard import G_ACCELERATION, G_OK, G_POSITION, G_VELOCITY, OutputGuard
from rt_safe_rl.core.safety.kernel import L_AMAX, L_QMAX, L_VMAX

MS = 1_000_000
DT = 1e-3


@pytest.fixture(scope='module')
def arm7() -> RobotModel:
    return RobotModel.from_config(RobotConfig())


def audit(model: RobotModel, cmds: list[np.ndarray], v_scale: float = 1.0) -> list[str]:
    """Every limit violation of a command stream sent at the robot period (position, velocity,
    acceleration as first / second differences), as the robot would see it."""
    out: list[str] = []
    tol = 1e-6
    for k, c in enumerate(cmds):
        if np.any(c < model.q_min - 1e-9) or np.any(c > model.q_max + 1e-9):
            out.append(f'{k}: position')
        if k >= 1:
            v = (c - cmds[k - 1]) / DT
            r = np.max(np.abs(v) / (model.v_max * v_scale))
            if r > 1 + tol:
                out.append(f'{k}: velocity {r:.1f}x v_max')
            if k >= 2:
                a = (v - (cmds[k - 1] - cmds[k - 2]) / DT) / DT
                ra = np.max(np.abs(a) / model.a_max)
                if ra > 1 + tol:
                    out.append(f'{k}: acceleration {ra:.1f}x a_max')
    return out


class LaggingRobot:
    """A position-controlled robot that lags its command (first-order, as a real arm does), at 1 kHz."""

    def __init__(self, f: SafetyFilter, q0: np.ndarray, lag: float = 0.05) -> None:
        self.f = f
        self.q = q0.copy()
        self.dq = np.zeros_like(q0)
        self.out = np.zeros_like(q0)
        self.t = 1_000 * MS
        self.lag = lag
        self.cmds: list[np.ndarray] = []
        self.human = np.array([[2.0, 2.0, 0.5]])

    def step(self, prop: np.ndarray | None, valid: bool = True) -> object:
        self.t += MS
        rep = self.f.step(self.t, self.q, self.dq, prop, valid, self.human, self.t, None, self.out)
        if rep.command_valid:
            self.cmds.append(self.out.copy())
            q_new = self.q + self.lag * (self.out - self.q)
            self.dq = (q_new - self.q) / DT
            self.q = q_new
        return rep


def test_reset_while_moving_never_jumps(arm7: RobotModel) -> None:
    """Issue 11 item 1: ``reset`` with nothing latched while the arm moves made the next command
    jump to the (lagging) measured state: 8-138x v_max, >1000x a_max in one cycle."""
    f = SafetyFilter(arm7, SafetyConfig())
    rb = LaggingRobot(f, arm7.home())
    target = arm7.home() + np.array([0.6, 0.3, -0.4, 0.3, 0.5, 0.3, 0.5])
    for _ in range(200):
        rb.step(target)
    assert np.abs(rb.out - rb.q).max() > SafetyConfig().position_tolerance_rad  # the robot lags
    f.reset()
    for _ in range(50):
        rb.step(target)
    assert audit(arm7, rb.cmds) == []


def test_guard_brakes_and_latches_on_an_injected_jump(arm7: RobotModel) -> None:
    """A discontinuity made anywhere before the output (here: the command state corrupted, as a
    filter bug would) never leaves: the guard sends the braking command instead, latches
    OUTPUT_GUARD and counts it."""
    f = SafetyFilter(arm7, SafetyConfig())
    rb = LaggingRobot(f, arm7.home(), lag=1.0)
    target = arm7.home() + np.array([0.6, 0.3, -0.4, 0.3, 0.5, 0.3, 0.5])
    for _ in range(150):
        rb.step(target)
    f._cs[0, 2] += 0.05  # fault injection: a 50 mrad jump in the command trajectory
    rep = rb.step(target)
    assert rep.latched and rep.fault_code == FaultCode.OUTPUT_GUARD and rep.stopping  # type: ignore[attr-defined]
    assert f.guard_violations == 1
    assert 'velocity of joint 2' in f.guard.describe() or 'acceleration of joint 2' in f.guard.describe()
    for _ in range(400):
        rb.step(target)
    assert f.is_stopped
    assert audit(arm7, rb.cmds) == []
    assert f.guard_violations == 1  # the controlled stop that follows is within the limits


def test_guard_check_codes() -> None:
    """Unit: position / velocity / acceleration violations are told apart; a tightened velocity
    limit lets a faster joint brake down; the brake is within the limits of the last command."""
    lim = np.zeros((8, 1))
    lim[0], lim[L_QMAX], lim[L_VMAX], lim[L_AMAX], lim[4] = -1.0, 1.0, 2.0, 10.0, 5000.0
    g = OutputGuard(lim, DT, 0.1)
    g.record(0, np.array([0.0]))
    assert g.check(MS, lim, np.array([0.0015]), True) == G_OK
    assert g.check(MS, lim, np.array([0.0025]), True) == G_VELOCITY
    g.record(MS, np.array([0.001]))  # v = 1 rad/s
    assert g.check(2 * MS, lim, np.array([0.002 + 0.00002]), True) == G_ACCELERATION  # +20 rad/s^2
    assert g.check(2 * MS, lim, np.array([0.002 + 0.000005]), True) == G_OK  # +5 rad/s^2
    assert g.check(2 * MS, lim, np.array([1.5]), True) == G_POSITION
    tight = lim.copy()
    tight[L_VMAX] = 0.5
    assert g.check(2 * MS, tight, np.array([0.002 - 0.000005]), True) == G_OK  # braking from 1 rad/s
    out = np.zeros(1)
    g.brake(out)
    assert 0.001 < out[0] < 0.002  # decelerating at <= a_max from (0.001 rad, 1 rad/s)


def test_long_pause_restarts_the_stream_from_rest(arm7: RobotModel) -> None:
    """After more than max_step_gap_s without a command the robot has been holding the last one:
    the filter continues from rest (no velocity carried across the gap), and the guard agrees."""
    f = SafetyFilter(arm7, SafetyConfig())
    rb = LaggingRobot(f, arm7.home(), lag=1.0)
    target = arm7.home() + 0.3
    for _ in range(100):
        rb.step(target)
    f.reset()
    rb.t += 500 * MS
    rb.cmds.clear()
    for _ in range(5):
        rb.step(target)
    assert np.abs(rb.cmds[0] - rb.cmds[-1]).max() < 1e-3
    assert f.guard_violations == 0


def _latched_at_rest(arm7: RobotModel, lag: float = 1.0) -> LaggingRobot:
    f = SafetyFilter(arm7, SafetyConfig())
    rb = LaggingRobot(f, arm7.home(), lag=lag)
    target = arm7.home() + 0.3
    for _ in range(100):
        rb.step(target)
    f.trigger_stop(FaultCode.MONITOR)
    for _ in range(600):
        rb.step(target)
    assert f.stop_latched and f.is_stopped
    return rb


def test_reset_with_nothing_latched_is_a_no_op(arm7: RobotModel) -> None:
    """The command stream is bit-identical to that of a filter that was never reset."""
    a, b = SafetyFilter(arm7, SafetyConfig()), SafetyFilter(arm7, SafetyConfig())
    ra, rb = LaggingRobot(a, arm7.home()), LaggingRobot(b, arm7.home())
    target = arm7.home() + 0.4
    for k in range(300):
        if k == 100:
            ok, why = a.reset()
            assert ok and 'no-op' in why
        ra.step(target)
        rb.step(target)
    np.testing.assert_array_equal(np.array(ra.cmds), np.array(rb.cmds))


def test_reset_when_latched_resumes_from_the_held_command(arm7: RobotModel) -> None:
    rb = _latched_at_rest(arm7)
    f = rb.f
    held = rb.out.copy()
    ok, why = f.reset()
    assert ok and 'resumes from the held command' in why, why
    rep = rb.step(None, valid=False)
    assert not rep.latched and rep.fault_code == FaultCode.AWAITING_POLICY  # type: ignore[attr-defined]
    np.testing.assert_array_equal(rb.out, held)
    rep = rb.step(arm7.home())
    assert rep.fault_code == FaultCode.OK  # type: ignore[attr-defined]
    assert audit(arm7, rb.cmds) == [] and f.guard_violations == 0


def test_reset_after_the_robot_was_moved_ramps_to_it(arm7: RobotModel) -> None:
    """The robot moved away from the held command (by hand, 0.2 rad): the command ramps there
    from where it held, within every limit, then waits for a fresh valid action."""
    rb = _latched_at_rest(arm7)
    f = rb.f
    rb.q = rb.q + np.array([0.2, -0.1, 0.0, 0.1, 0.0, 0.0, -0.2])
    goal = rb.q.copy()
    rb.lag = 0.0  # the robot stays where it was put while the command comes to it
    rb.step(None, valid=False)  # the filter sees the moved robot
    ok, why = f.reset()
    assert ok and 'ramps' in why, why
    codes = set()
    for _ in range(1500):
        rep = rb.step(arm7.home() + 0.3)
        codes.add(rep.fault_code)  # type: ignore[attr-defined]
        if not f.ramping and rep.fault_code == FaultCode.OK:  # type: ignore[attr-defined]
            break
    assert FaultCode.RESYNC in codes and not rep.latched  # type: ignore[attr-defined]
    assert audit(arm7, rb.cmds) == [] and f.guard_violations == 0
    i_end = max(i for i, c in enumerate(rb.cmds) if np.abs(c - goal).max() < 1e-3)
    assert i_end > 10


def test_resync_while_moving_brakes_then_resumes(arm7: RobotModel) -> None:
    """A re-activation (new policy) while the command moves: no jump, a stop, then the policy."""
    f = SafetyFilter(arm7, SafetyConfig())
    rb = LaggingRobot(f, arm7.home(), lag=0.05)
    target = arm7.home() + 0.5
    for _ in range(150):
        rb.step(target)
    f.resync()
    codes = [rb.step(arm7.home()).fault_code for _ in range(1500)]  # type: ignore[attr-defined]
    assert audit(arm7, rb.cmds) == [] and f.guard_violations == 0
    assert codes[0] == FaultCode.RESYNC and codes[-1] == FaultCode.OK  # braked, then the new policy
    assert np.abs(rb.out - arm7.home()).max() < 0.5 * np.abs(target - arm7.home()).max()


def test_after_a_pause_the_guard_checks_acceleration_from_rest() -> None:
    """Unit: after more than max_gap_s without a command the stream restarts from rest, with
    velocity and acceleration 0 known: a step from rest to full speed is an acceleration
    violation (on the old code only the velocity was checked after a pause: 2000 rad/s^2 passed)."""
    lim = np.zeros((8, 1))
    lim[0], lim[L_QMAX], lim[L_VMAX], lim[L_AMAX], lim[4] = -1.0, 1.0, 2.0, 10.0, 5000.0
    g = OutputGuard(lim, DT, 0.1)
    for k in range(3):
        g.record(k * MS, np.array([0.0]))
    t = 2 * MS + 500 * MS  # a 0.5 s pause > max_gap_s 0.1 s
    assert g.held(t)
    assert g.check(t, lim, np.array([0.002]), True) == G_ACCELERATION  # 0 -> 2 rad/s in 1 ms
    assert g.check(t, lim, np.array([0.000005]), True) == G_OK  # 0 -> 5 mrad/s: 5 rad/s^2


def test_first_command_of_a_fresh_filter_is_checked_for_velocity(arm7: RobotModel, monkeypatch: Any) -> None:
    """A fresh filter starts its stream at rest at the measured state, and the guard knows it:
    a first command that jumps (a kernel fault, injected here) is braked and latched, not only
    checked against the position limits."""
    from rt_safe_rl.core.safety import kernel as kn

    original = kn.filter_kernel

    def jumping_kernel(*args: Any) -> None:
        original(*args)
        args[-2][2] += 0.05  # out_cmd: 50 mrad away from the measured state in one period

    monkeypatch.setattr(kn, 'filter_kernel', jumping_kernel)
    f = SafetyFilter(arm7, SafetyConfig())
    q0 = arm7.home()
    rb = LaggingRobot(f, q0, lag=1.0)
    rep = rb.step(q0 + 0.1)
    assert rep.latched and rep.fault_code == FaultCode.OUTPUT_GUARD, f.guard.describe()  # type: ignore[attr-defined]
    assert 'joint 2' in f.guard.describe()
    assert np.abs(rb.cmds[0] - q0).max() < 1e-9  # the brake from rest at q0 is q0


def test_strict_velocity_never_lets_a_late_command_move_two_periods() -> None:
    """Velocity / trajectory outputs send (c_k - c_k-1) / period as a velocity: there the guard
    checks each increment against one period of v_max even when the command is late."""
    lim = np.zeros((8, 1))
    lim[0], lim[L_QMAX], lim[L_VMAX], lim[L_AMAX], lim[4] = -1.0, 1.0, 2.0, 1e6, 1e9
    for strict, expected in ((False, G_OK), (True, G_VELOCITY)):
        g = OutputGuard(lim, DT, 0.1)
        g.strict_velocity = strict
        g.record(0, np.array([0.0]))
        # 2 ms late: 1.5 periods of v_max is within the real elapsed time, not within one period
        assert g.check(2 * MS, lim, np.array([0.003]), False) == expected


def test_velocity_output_mode_makes_the_filter_guard_strict(arm7: RobotModel) -> None:
    from dataclasses import replace

    assert not SafetyFilter(arm7, SafetyConfig()).guard.strict_velocity
    for mode in ('velocity', 'trajectory'):
        assert SafetyFilter(arm7, replace(SafetyConfig(), output_mode=mode)).guard.strict_velocity
