"""Closed loop with the simulated arm (PD + actuator limits) and a walking person: random and
adversarial proposers never drive the commands or the robot out of its limits, never produce a
NaN command, and the speed toward the person respects ISO/TS 15066 SSM whenever it is feasible.
The simulator's CommandAudit (position, velocity, acceleration of the command stream) is the
independent oracle."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from rt_safe_rl.config import load_config
from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety import ACTIVE_BITS, SafetyFilter
from rt_safe_rl.core.safety.formulas import ssm_v_max
from rt_safe_rl.sim.arm import ArmLimits, ArmSim, CommandAudit
from rt_safe_rl.sim.human import HumanWalker

DT = 1e-3
MS = 1_000_000
Proposer = Callable[[int, np.ndarray, np.random.Generator], np.ndarray]


def _bang_bang(model: RobotModel) -> Proposer:
    def p(k: int, q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return model.q_max + 1.0 if (k // 150) % 2 else model.q_min - 1.0

    return p


def _random_jumps(model: RobotModel) -> Proposer:
    state = {'target': model.home()}

    def p(k: int, q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if k % 97 == 0:
            state['target'] = rng.uniform(model.q_min - 2.0, model.q_max + 2.0)
        return state['target'] + rng.normal(0, 0.05, model.n_joints)

    return p


def _noise(model: RobotModel) -> Proposer:
    def p(k: int, q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return q + rng.normal(0, 1.0, model.n_joints) * rng.choice([1e-3, 0.1, 10.0, 1e6])

    return p


def _toward_human(model: RobotModel, human: HumanWalker) -> Proposer:
    """Greedy: move the tool toward the person (pseudo-inverse of the tcp Jacobian)."""
    pts = np.zeros((model.n_points, 3))
    jac = np.zeros((model.n_points, 3, model.n_joints))
    h = np.zeros(3)
    i_tcp = model.point_names.index('tcp')

    def p(k: int, q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        model.fk_points_jacobian(q, pts, jac)
        human.position(k * DT, h, noisy=False)
        dx = h - pts[i_tcp]
        return q + np.linalg.pinv(jac[i_tcp]) @ dx * 0.5

    return p


@pytest.mark.parametrize('kind', ['bang_bang', 'random_jumps', 'noise', 'toward_human'])
def test_adversarial_proposer_never_breaks_limits(kind: str) -> None:
    app = load_config(None)
    model = RobotModel.from_config(app.robot)
    limits = ArmLimits.from_model(model, app.sim.robot)
    arm = ArmSim(limits, DT, limits.initial_q(app.sim.robot))
    audit = CommandAudit(limits, DT, tolerance=1e-9)
    human = HumanWalker(app.sim.human)
    f = SafetyFilter(model, app.safety)
    proposer: Proposer = {
        'bang_bang': _bang_bang(model),
        'random_jumps': _random_jumps(model),
        'noise': _noise(model),
        'toward_human': _toward_human(model, human),
    }[kind]
    rng = np.random.default_rng(['bang_bang', 'random_jumps', 'noise', 'toward_human'].index(kind))
    out = np.zeros(model.n_joints)
    h = np.zeros((1, 3))
    p0 = np.zeros((model.n_points, 3))
    p1 = np.zeros((model.n_points, 3))
    s = app.safety.ssm
    prev_cmd = arm.q.copy()
    resets = nan_injected = ssm_checked = 0
    t0 = 10_000 * MS
    for k in range(3000):
        t = t0 + k * MS
        human.position(k * DT, h[0])
        prop = proposer(k, arm.q.copy(), rng)
        if kind == 'noise' and k % 500 == 250:
            prop[int(rng.integers(0, 7))] = np.nan
            nan_injected += 1
        rep = f.step(t, arm.q, arm.dq, prop, True, h, t, None, out)
        assert rep.command_valid and np.all(np.isfinite(out))
        assert audit.check(k, out), audit.summary()
        # SSM: speed of each monitored point toward the person (commanded motion)
        model.fk_points(prev_cmd, p0)
        model.fk_points(out, p1)
        if not rep.stopping and not rep.active_mask & ACTIVE_BITS['qp_fallback']:
            for i in range(model.n_points):
                diff = h[0] - p0[i]
                dist = float(np.linalg.norm(diff))
                d = dist - model.point_radius_m[i]
                v_h = s.human_speed_near_m_s if d <= s.near_distance_m else s.human_speed_m_s
                v_allowed = ssm_v_max(d, v_h, s.brake_decel_m_s2, s.reaction_time_s, s.c_total_m)
                v_toward = float((p1[i] - p0[i]) @ diff / dist) / DT
                assert v_toward <= v_allowed + 5e-3, (k, i, d, v_toward, v_allowed)
                ssm_checked += 1
        np.copyto(prev_cmd, out)
        arm.set_command(out)
        arm.step()
        assert np.all(arm.q >= model.q_min - 1e-9) and np.all(arm.q <= model.q_max + 1e-9)
        if f.stop_latched and f.is_stopped:
            ok, _ = f.reset()  # refused until the robot itself has (nearly) stopped
            resets += ok
    assert audit.violations == 0
    assert ssm_checked > 1000
    if kind == 'noise':
        assert resets >= nan_injected >= 5  # every NaN latched a stop that was reset afterwards


@pytest.mark.parametrize('kind', ['bang_bang', 'random_jumps'])
def test_jerk_respected_at_the_position_limits(kind: str) -> None:
    """Without people / workspace rows, the jerk-consistent braking bound lets the command reach
    the position limits from full speed without ever relaxing the jerk limit: the finite-difference
    jerk of the command stream stays <= j_max."""
    from dataclasses import replace

    app = load_config(None)
    model = RobotModel.from_config(app.robot)
    cfg = replace(
        app.safety,
        enforce_effort=False,
        ssm=replace(app.safety.ssm, enabled=False),
        workspace=replace(app.safety.workspace, enabled=False),
    )
    f = SafetyFilter(model, cfg)
    proposer = _bang_bang(model) if kind == 'bang_bang' else _random_jumps(model)
    rng = np.random.default_rng(7)
    q = model.home()
    out = np.zeros(7)
    cmds = []
    near_limit = 0
    for k in range(6000):
        rep = f.step(k * MS, q, np.zeros(7), proposer(k, q, rng), True, None, k * MS, None, out)
        assert not rep.active_mask & ACTIVE_BITS['jerk_relaxed'], k
        near_limit += rep.position_margin_rad < 0.01
        cmds.append(out.copy())
        q = out.copy()
    c = np.array(cmds)
    jerk = np.diff(c, n=3, axis=0) / DT**3
    assert np.all(np.abs(jerk) <= model.j_max * (1 + 1e-6) + 1e-3)
    assert near_limit > 100  # the scenario really drove joints to their limits


def test_ssm_stop_inside_the_protective_distance_is_path_consistent_and_timely() -> None:
    """A person walks in (100 Hz samples, held) while the arm swings fast around its base (mostly
    tangential to the person, which SSM does not limit). Every cycle whose separation is at or
    below the protective distance d0 = C_tot + v_h T_r commands a stop; a stop decelerates every
    joint within its limits in proportion to its speed (synchronised), so no monitored point
    speeds up toward the person while stopping, and the command is at rest within the slowest
    joint's |v| / a_max (+ the jerk ramp) after the stop began."""
    from rt_safe_rl.demo import protective_stop_distance_m
    from rt_safe_rl.sim.config import SimHumanConfig

    app = load_config(None)
    model = RobotModel.from_config(app.robot)
    s = app.safety.ssm
    d0 = protective_stop_distance_m(s)
    f = SafetyFilter(model, app.safety)
    human = HumanWalker(
        SimHumanConfig(
            far_m=1.6, near_m=0.2, speed_m_s=1.2, pause_far_s=0.3, pause_near_s=0.6, noise_m=0.0, seed=3
        )
    )
    limits = ArmLimits.from_model(model, app.sim.robot)
    audit = CommandAudit(limits, DT, tolerance=1e-9)
    q = model.home()
    dq = np.zeros(7)
    out = np.zeros(7)
    h = np.zeros((1, 3))
    p0 = np.zeros((model.n_points, 3))
    p1 = np.zeros((model.n_points, 3))
    swing = model.home() + np.array([1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    prev_toward = np.full(model.n_points, np.inf)
    stop_k = -1
    t_rest = 0.0
    stops = rest_checked = 0
    for k in range(3500):
        if k % 10 == 0:
            human.position(k * DT, h[0], noisy=False)  # 100 Hz sensor, sample and hold
        prop = swing if (k // 600) % 2 == 0 else 2 * model.home() - swing
        rep = f.step(10_000 * MS + k * MS, q, dq, prop, True, h, 10_000 * MS + (k - k % 10) * MS, None, out)
        assert audit.check(k, out), audit.summary()
        if rep.human_distance_m <= d0:
            assert rep.stopping, (k, rep.human_distance_m, rep.as_dict())
        model.fk_points(q, p0)
        model.fk_points(out, p1)
        diff = h[0] - p0
        toward = np.einsum('ij,ij->i', p1 - p0, diff) / np.linalg.norm(diff, axis=1) / DT
        if rep.stopping:
            if stop_k < 0:
                stop_k = k
                stops += 1
                t_rest = (
                    float(np.max(np.abs(dq) / model.a_max))
                    + float(np.max(model.a_max / model.j_max))
                    + 3 * DT
                )
            elif k - stop_k > 3:  # after the jerk-limited onset of the deceleration
                # 2 mm/s: at the end of a full-deceleration stop the jerk limit lets the velocity
                # pass zero by <= (a_max - j_max dt) dt for a cycle or two (micrometres of travel)
                assert np.all(toward <= np.maximum(prev_toward, 0.0) + 2e-3), (k, toward, prev_toward)
            if (k - stop_k) * DT > t_rest:
                assert f.is_stopped, (k - stop_k, t_rest)
                rest_checked += 1
        else:
            stop_k = -1
        prev_toward = toward
        dq = (out - q) / DT
        q = out.copy()
    assert stops >= 1 and rest_checked > 100, (stops, rest_checked)
    assert audit.violations == 0
