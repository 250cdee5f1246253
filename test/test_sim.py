"""Simulator core: arm dynamics honour the limits, the command audit catches violations, the
human walker goes in and out of the workspace reproducibly, goals stay inside the limits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.sim.arm import ArmLimits, ArmSim, CommandAudit
from rt_safe_rl.sim.config import SimHumanConfig, SimRobotConfig
from rt_safe_rl.sim.human import HumanWalker
from rt_safe_rl.sim.operator import GoalGenerator, OperatorCommand

DT = 1e-3


def panda_like() -> ArmLimits:
    """Franka-Panda-like limits (independent of the URDF, so these tests stand alone)."""
    return ArmLimits(
        joint_names=tuple(f'j{i + 1}' for i in range(7)),
        q_min=np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]),
        q_max=np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]),
        v_max=np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61]),
        a_max=np.array([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0]),
        effort_max=np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0]),
        kp=np.array([600.0, 600.0, 600.0, 600.0, 250.0, 150.0, 50.0]),
        kd=np.array([50.0, 50.0, 50.0, 20.0, 20.0, 20.0, 10.0]),
        inertia=np.array([0.6, 0.6, 0.4, 0.4, 0.15, 0.1, 0.05]),
    )


def test_arm_tracks_a_reachable_target_and_settles() -> None:
    lim = panda_like()
    q0 = 0.5 * (lim.q_min + lim.q_max)
    arm = ArmSim(lim, DT, q0)
    target = q0 + 0.3
    arm.set_command(target)
    for _ in range(3000):
        arm.step()
    np.testing.assert_allclose(arm.q, target, atol=2e-3)
    assert np.all(np.abs(arm.dq) < 1e-2)


def test_arm_never_exceeds_its_limits_under_wild_commands() -> None:
    lim = panda_like()
    arm = ArmSim(lim, DT, 0.5 * (lim.q_min + lim.q_max))
    rng = np.random.default_rng(0)
    prev_dq = arm.dq.copy()
    for k in range(4000):
        if k % 50 == 0:
            arm.set_command(rng.uniform(lim.q_min - 2.0, lim.q_max + 2.0))
        arm.step()
        assert np.all(arm.q >= lim.q_min) and np.all(arm.q <= lim.q_max)
        assert np.all(np.abs(arm.dq) <= lim.v_max + 1e-12)
        acc = (arm.dq - prev_dq) / DT
        # velocity clamps and end stops only ever reduce |dq|; otherwise |ddq| <= a_max
        assert np.all(
            (np.abs(acc) <= lim.a_max + 1e-6)
            | (np.abs(arm.dq) <= np.abs(prev_dq) + 1e-12)
            | (arm.q == lim.q_min)
            | (arm.q == lim.q_max)
        )
        assert np.all(np.abs(arm.effort) <= lim.inertia * lim.a_max + 1e-6)
        np.copyto(prev_dq, arm.dq)


def test_hold_stops_the_arm_within_the_braking_distance() -> None:
    lim = panda_like()
    q0 = 0.5 * (lim.q_min + lim.q_max)
    arm = ArmSim(lim, DT, q0)
    arm.set_command(q0 + 1.0)
    for _ in range(300):
        arm.step()
    assert np.max(np.abs(arm.dq)) > 0.5
    arm.hold()
    for _ in range(1500):
        arm.step()
    assert np.max(np.abs(arm.dq)) < 1e-2


def test_limits_are_validated() -> None:
    lim = panda_like()
    with pytest.raises(ConfigError, match='q_min must be < q_max'):
        ArmLimits(**{**lim.__dict__, 'q_min': lim.q_max + 1.0})
    with pytest.raises(ConfigError, match='v_max'):
        ArmLimits(**{**lim.__dict__, 'v_max': np.zeros(7)})
    with pytest.raises(ConfigError, match='shape'):
        ArmLimits(**{**lim.__dict__, 'kp': np.ones(6)})
    with pytest.raises(ConfigError, match='initial_q_rad'):
        lim.initial_q(SimRobotConfig(initial_q_rad=[0.0] * 6))
    with pytest.raises(ConfigError, match='outside'):
        lim.initial_q(SimRobotConfig(initial_q_rad=[10.0] * 7))


def test_audit_accepts_a_smooth_stream_and_flags_each_kind_of_violation() -> None:
    lim = panda_like()
    audit = CommandAudit(lim, DT)
    q = 0.5 * (lim.q_min + lim.q_max)
    for seq in range(800):  # smooth: ramp to half the velocity limit, then constant
        v = 0.5 * lim.v_max * min(1.0, seq * DT * 2.0)  # acc = v_max / s < a_max
        q = q + v * DT
        assert audit.check(seq, q)
    assert audit.violations == 0 and audit.max_velocity_ratio <= 0.5 + 1e-9

    a = CommandAudit(lim, DT)
    q = 0.5 * (lim.q_min + lim.q_max)
    a.check(0, q)
    assert not a.check(1, q + 1.2 * lim.v_max * DT)  # velocity (and acceleration) jump
    assert a.velocity_violations == 1

    b = CommandAudit(lim, DT)
    b.check(0, q)
    b.check(1, q + 0.5 * lim.v_max * DT)
    assert not b.check(2, q + 1.5 * 0.5 * lim.v_max * DT + 2.0 * lim.a_max * DT * DT)
    assert b.acceleration_violations == 1 and b.velocity_violations == 0

    c = CommandAudit(lim, DT)
    bad = q.copy()
    bad[3] = lim.q_max[3] + 0.01
    assert not c.check(0, bad)
    assert c.position_violations == 1
    nan = q.copy()
    nan[0] = math.nan
    assert not c.check(1, nan)
    assert c.nonfinite == 1 and c.violations == 2


def test_audit_uses_sequence_gaps_for_the_velocity() -> None:
    lim = panda_like()
    a = CommandAudit(lim, DT)
    q = 0.5 * (lim.q_min + lim.q_max)
    a.check(10, q)
    # 3 cycles later, a step of 2.5 * v_max * dt is 0.83 v_max: fine
    assert a.check(13, q + 2.5 * lim.v_max * DT)
    assert a.violations == 0


def test_walker_goes_in_and_out_reproducibly() -> None:
    cfg = SimHumanConfig(
        seed=5, far_m=2.0, near_m=0.2, speed_m_s=1.0, pause_far_s=0.5, pause_near_s=0.5, noise_m=0.0
    )
    w1, w2 = HumanWalker(cfg), HumanWalker(cfg)
    out1, out2 = np.zeros(3), np.zeros(3)
    radii = []
    for k in range(int(2 * w1.cycle_s / 0.01)):
        t = k * 0.01
        w1.position(t, out1)
        w2.position(t, out2)
        np.testing.assert_array_equal(out1, out2)
        radii.append(math.hypot(out1[0], out1[1]))
        assert out1[0] >= -1e-9  # in front of the robot
    assert min(radii) == pytest.approx(0.2, abs=1e-9) and max(radii) == pytest.approx(2.0)
    assert w1.cycle_s == pytest.approx(0.5 + 1.8 + 0.5 + 1.8)
    assert w1.first_time_within_s(0.2) == pytest.approx(0.5 + 1.8, abs=2e-3)
    # different cycles come from different directions
    assert w1.azimuth_rad(0) != w1.azimuth_rad(1)


def test_walker_noise_is_bounded_and_seeded() -> None:
    cfg = SimHumanConfig(noise_m=0.01)
    w = HumanWalker(cfg)
    clean, noisy = np.zeros(3), np.zeros(3)
    errs = [
        np.linalg.norm(w.position(t, noisy) - w.position(t, clean, noisy=False))
        for t in np.linspace(0.0, 5.0, 500)
    ]
    assert 0.0 < float(np.mean(errs)) < 0.05


def test_goals_stay_inside_the_margin_and_are_seeded() -> None:
    lim = panda_like()
    home = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
    g1 = GoalGenerator(lim.q_min, lim.q_max, home, 0.3, 0.5, seed=1)
    g2 = GoalGenerator(lim.q_min, lim.q_max, home, 0.3, 0.5, seed=1)
    goals = g1.sample(1000)
    np.testing.assert_array_equal(goals, g2.sample(1000))
    assert np.all(goals >= lim.q_min + 0.3 - 1e-12) and np.all(goals <= lim.q_max - 0.3 + 1e-12)
    with pytest.raises(ConfigError, match='margin'):
        GoalGenerator(lim.q_min, lim.q_max, home, 5.0, 0.5, seed=1)


def test_operator_command_oscillates_around_the_goal_inside_limits() -> None:
    lim = panda_like()
    op = OperatorCommand(7, 0.2, 2.0, lim.q_min, lim.q_max)
    goal = 0.5 * (lim.q_min + lim.q_max)
    out = np.zeros(7)
    vals = np.array([op.value(t, goal, out).copy() for t in np.linspace(0, 2, 200)])
    assert np.all(np.abs(vals - goal) <= 0.2 + 1e-12)
    assert np.ptp(vals[:, 0]) > 0.3


def test_protective_stop_distance_follows_the_ssm_config() -> None:
    from rt_safe_rl.core.safety.config import SsmConfig
    from rt_safe_rl.demo import protective_stop_distance_m

    ssm = SsmConfig()  # C_tot 0.21 m + 2.0 m/s * 0.1 s (within near_distance 0.5 m)
    assert protective_stop_distance_m(ssm) == pytest.approx(ssm.c_total_m + 2.0 * 0.1)
    far = SsmConfig(reaction_time_s=0.5, near_distance_m=0.5)  # 0.21 + 1.0 > 0.5: ISO 13855 K = 1.6 m/s
    assert protective_stop_distance_m(far) == pytest.approx(far.c_total_m + 1.6 * 0.5)


def test_human_distance_is_measured_to_the_robot_spheres() -> None:
    from rt_safe_rl.config import load_config
    from rt_safe_rl.demo import HumanDistance

    cfg = load_config()
    dist = HumanDistance(cfg)
    q = np.array(cfg.sim.robot.initial_q_rad)
    pts = dist.model.fk_points(q, np.zeros((dist.model.n_points, 3))).copy()
    on_sphere = pts[0] + np.array([dist.model.point_radius_m[0], 0.0, 0.0])
    assert dist(q, on_sphere) <= 1e-9
    far = np.array([5.0, 0.0, 0.5])
    expected = float(np.min(np.linalg.norm(pts - far, axis=1) - dist.model.point_radius_m))
    assert dist(q, far) == pytest.approx(expected)


def test_audit_flags_two_commands_for_one_period_and_skips_acceleration_across_gaps() -> None:
    lim = panda_like()
    q = 0.5 * (lim.q_min + lim.q_max)
    step = 0.9 * lim.v_max * DT
    a = CommandAudit(lim, DT)
    for seq in range(3):  # steady 0.9 v_max
        assert a.check(seq, q + seq * step)
    assert a.check(2, q + 3 * step)  # a second command for seq 2 (the filter stepped twice) ...
    assert not a.check(3, q + 4 * step)  # ... shows as 2 periods of motion in one
    assert a.duplicates == 1 and a.velocity_violations == 1
    # a robot period without a command (seq 4 missing) is a gap, not an acceleration violation
    b = CommandAudit(lim, DT)
    for seq, k in ((0, 0), (1, 1), (2, 2), (4, 3), (5, 4), (6, 5)):
        assert b.check(seq, q + k * step), b.summary()
    assert b.seq_gaps == 1 and b.violations == 0


def test_audit_period_is_the_robots() -> None:
    """At a 500 Hz robot the same step is half the velocity of a 1 kHz one."""
    lim = panda_like()
    q = 0.5 * (lim.q_min + lim.q_max)
    fast, slow = CommandAudit(lim, DT), CommandAudit(lim, 2 * DT)
    for au in (fast, slow):
        au.check(0, q)
        au.check(1, q + 1.5 * lim.v_max * DT)
    assert fast.velocity_violations == 1 and slow.velocity_violations == 0
    assert slow.max_velocity_ratio == pytest.approx(0.75)
