"""Every test vector of references/safety.md section 8, run against our code.

Where the vector describes a limiter behaviour (libfranka rate limiting A2/A3/A6, ros2_control
limiters B1-B3, blending G1, ramp stop H1, Del Prete viability E2) it is run through the full
:class:`SafetyFilter` configured with the vector's limits, not only through a helper formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rt_safe_rl.core.safety import FaultCode, SafetyFilter
from rt_safe_rl.core.safety.config import BlendConfig
from rt_safe_rl.core.safety.formulas import (
    blend_alpha_from_distance,
    cbf_single_halfspace,
    del_prete_acc_bounds,
    limit_rate_derivative,
    limit_rate_velocity,
    pfl_reduced_mass,
    pfl_v_max,
    position_dependent_velocity_limits,
    protective_distance,
    ssm_scale,
    ssm_v_max,
)
from rt_safe_rl.core.safety.qp import QpWorkspace
from rt_safe_rl.core.safety.testing import chain_model, plain_config

DT = 1e-3


def _one_joint(
    q_lim: float = 1e3,
    v: float = 2.0,
    a: float = 10.0,
    j: float = 5000.0,
    rate_hz: float = 1000.0,
    jerk: bool = True,
    n: int = 1,
) -> SafetyFilter:
    return SafetyFilter(
        chain_model(n, q_lim=q_lim, v_max=v, a_max=a, j_max=j), plain_config(rate_hz, jerk=jerk)
    )


def _step(f: SafetyFilter, target: np.ndarray | list[float], t_ns: int = 0) -> np.ndarray:
    out = np.zeros(f.n_joints)
    q = np.array(f.command_state[0])
    f.step(t_ns, q, np.zeros(f.n_joints), np.asarray(target, dtype=float), True, None, t_ns, None, out)
    return out


# ---------------------------------------------------------------- A: libfranka rate limiting
def test_a1_derivative_form() -> None:
    assert limit_rate_derivative(999.999, 1.5, 0.0, DT) == pytest.approx(0.999999, abs=1e-12)


@pytest.mark.parametrize('sign', [1.0, -1.0])
def test_a2_a3_limit_rate_through_the_filter(sign: float) -> None:
    """A2 (jerk-limited start: 0.005) and A3 (shaped approach to the velocity limit: 1.9995)."""
    assert limit_rate_velocity(2, -2, 10, 5000, sign * 0.1, 0, 0, DT) == pytest.approx(
        sign * 0.005, abs=1e-12
    )
    assert limit_rate_velocity(2, -2, 10, 5000, sign * 2.5, sign * 1.999, sign * 5, DT) == pytest.approx(
        sign * 1.9995, abs=1e-12
    )
    f = _one_joint()
    f.set_command_state(np.zeros(1))
    out = _step(f, [sign * 0.1 * DT])
    assert out[0] / DT == pytest.approx(sign * 0.005, abs=1e-9)
    f = _one_joint()
    f.set_command_state(np.zeros(1), np.array([sign * 1.999]), np.array([sign * 5.0]))
    out = _step(f, [sign * 2.5 * DT])
    assert out[0] / DT == pytest.approx(sign * 1.9995, abs=1e-9)


FR3_Q_LO = [-2.7501, -1.7918, -2.9065, -3.0481, -2.8101, 0.54092, -3.0196]
FR3_Q_UP = [2.7501, 1.7918, 2.9065, -0.1458, 2.8101, 4.5205, 3.0196]
FR3_V = [2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]
FR3_OFFSET = [0.30, 0.20, 0.20, 0.30, 0.35, 0.35, 0.35]
FR3_DECEL = [6.0, 2.585, 3.50, 4.00, 17.0, 5.5, 17.0]


def test_a4_a5_position_dependent_velocity_limits() -> None:
    q = [0, -math.pi / 4, 0, -3 * math.pi / 4, 0, math.pi / 2, math.pi / 4]
    lims = [
        position_dependent_velocity_limits(
            q[i], FR3_Q_LO[i], FR3_Q_UP[i], FR3_V[i], FR3_OFFSET[i], FR3_DECEL[i], 1e-3
        )
        for i in range(7)
    ]
    np.testing.assert_allclose(
        [u for _, u in lims], [2.619, 2.619, 2.619, 2.619, 5.259, 4.179, 5.259], atol=1e-5
    )
    np.testing.assert_allclose(
        [lo for lo, _ in lims], [-2.619, -2.08003, -2.619, -2.05171, -5.259, -3.014804, -5.259], atol=1e-5
    )
    _, up = position_dependent_velocity_limits(
        2.7, FR3_Q_LO[0], FR3_Q_UP[0], FR3_V[0], FR3_OFFSET[0], FR3_DECEL[0], 1e-3
    )
    assert up == pytest.approx(0.474371, abs=1e-6)


def test_a6_jerk_limited_stop_through_the_filter() -> None:
    """Commanding v = 0 from 0.5 rad/s (a 10, j 5000) stops in 51 cycles after 0.0125 rad."""
    f = _one_joint()
    f.set_command_state(np.zeros(1), np.array([0.5]))
    cycles = 0
    while abs(f.command_state[1, 0]) > 1e-12 and cycles < 1000:
        _step(f, [f.command_state[0, 0]], t_ns=cycles)
        cycles += 1
    assert cycles == 51  # (the last 1e-16 of rounding residue is removed in the next cycles)
    assert f.command_state[0, 0] == pytest.approx(0.0125, abs=1e-9)
    # the same sequence as the scalar libfranka recurrence
    v, a, q = 0.5, 0.0, 0.0
    for _ in range(51):
        v_new = limit_rate_velocity(2, -2, 10, 5000, 0.0, v, a, DT)
        a, v = (v_new - v) / DT, v_new
        q += v * DT
    assert q == pytest.approx(f.command_state[0, 0], abs=1e-15)


def test_a7_nonfinite_command_is_a_controlled_stop() -> None:
    f = _one_joint()
    f.set_command_state(np.zeros(1), np.array([0.5]))
    for bad in (np.nan, np.inf, -np.inf):
        out = _step(f, [bad])
        assert np.all(np.isfinite(out))
        assert f.report.fault_code == FaultCode.NONFINITE_INPUT and f.report.stopping and f.stop_latched


# ---------------------------------------------------------------- B: ros2_control limiters
@pytest.mark.parametrize('sign', [1.0, -1.0])
def test_b1_saturation_limiter(sign: float) -> None:
    """±5 rad, v 2, a 5, dt 1 s: q -2 -> target 1 gives q 0, v 2, a 2 (mirrored: 0, -2, -2)."""
    f = SafetyFilter(chain_model(1, q_lim=5.0, v_max=2.0, a_max=5.0), plain_config(1.0))
    f.set_command_state(np.array([-2.0 * sign]))
    out = _step(f, [1.0 * sign])
    assert out[0] == pytest.approx(0.0, abs=1e-12)
    assert f.command_state[1, 0] == pytest.approx(2.0 * sign)
    assert f.command_state[2, 0] == pytest.approx(2.0 * sign)


def test_b2_saturation_limiter_velocity_from_position() -> None:
    """q 0, v 1.9, target 4 (no velocity command): q 2.0, a 0.1."""
    f = SafetyFilter(chain_model(1, q_lim=5.0, v_max=2.0, a_max=5.0), plain_config(1.0))
    f.set_command_state(np.array([0.0]), np.array([1.9]))
    out = _step(f, [4.0])
    assert out[0] == pytest.approx(2.0, abs=1e-12)
    assert f.command_state[2, 0] == pytest.approx(0.1, abs=1e-12)


def test_b3_soft_limiter() -> None:
    """Soft range ±0.75, v 1, dt 1: target 2 then -3 gives 0.75 then -0.25 (a_max very large)."""
    f = SafetyFilter(chain_model(1, q_lim=0.75, v_max=1.0, a_max=1e7), plain_config(1.0))
    f.set_command_state(np.array([0.0]))
    assert _step(f, [2.0])[0] == pytest.approx(0.75, abs=1e-6)
    assert _step(f, [-3.0], t_ns=1)[0] == pytest.approx(-0.25, abs=1e-6)


# ---------------------------------------------------------------- C: SSM
def test_c1_protective_distance() -> None:
    assert protective_distance(1.6, 1.0, 0.1, 0.3, 0.15, 0.2, 0.1, 0.05) == pytest.approx(1.24, abs=1e-12)


def test_c2_c3_v_max_and_round_trip() -> None:
    for d, v in ((2.0, 1.485041), (1.0, 0.624369), (0.5, 0.053287), (0.45, 0.0)):
        assert ssm_v_max(d, 1.6, 2.5, 0.1, 0.3) == pytest.approx(v, abs=1e-6)
    assert ssm_v_max(0.46, 1.6, 2.5, 0.1, 0.3) == pytest.approx(0.0, abs=1e-7)  # d0 = 0.46
    v = ssm_v_max(1.0, 1.6, 2.5, 0.1, 0.3)
    sp = protective_distance(1.6, v, 0.1, v / 2.5, v * v / 5.0, 0.3, 0.0, 0.0)
    assert sp == pytest.approx(1.0, abs=1e-12)


def test_c4_cnr_defaults_and_scale() -> None:
    v = ssm_v_max(1.0, 0.0, 0.1, 0.15, 0.3)
    assert v == pytest.approx(0.359466, abs=1e-6)
    assert ssm_scale(v, -0.5) == 1.0 and ssm_scale(v, 0.0) == 1.0
    assert ssm_scale(v, 0.2) == 1.0
    assert ssm_scale(v, 0.72) == pytest.approx(v / 0.72)


# ---------------------------------------------------------------- D: PFL
def test_d1_d2_power_and_force_limiting() -> None:
    mu = pfl_reduced_mass(0.6, 20 / 2 + 1)
    assert mu == pytest.approx(0.568966, abs=1e-6)
    v = pfl_v_max(280, 75e3, 0.6, 11)
    assert v == pytest.approx(1.355453, abs=1e-6)
    assert 0.5 * mu * v * v == pytest.approx(0.522667, abs=1e-6)
    v_chest = pfl_v_max(280, 25e3, 40, 11)
    assert v_chest == pytest.approx(0.602902, abs=1e-6)
    assert 0.5 * pfl_reduced_mass(40, 11) * v_chest**2 == pytest.approx(1.568, abs=1e-3)
    v_arm = pfl_v_max(300, 30e3, 3, 11)
    assert v_arm == pytest.approx(1.128152, abs=1e-6)
    assert 0.5 * pfl_reduced_mass(3, 11) * v_arm**2 == pytest.approx(1.5, abs=1e-9)


# ---------------------------------------------------------------- E: viability
def test_e1_del_prete_bounds() -> None:
    for q, ub in ((0.94, 10.0), (0.949, 0.0), (0.95, -10.0)):
        lb, u = del_prete_acc_bounds(q, 1.0, -1.0, 1.0, 2.0, 10.0, DT)
        assert u == pytest.approx(ub, abs=1e-6) and lb == -10.0


def test_e2_not_viable_is_a_fault_with_max_braking() -> None:
    lb, ub = del_prete_acc_bounds(0.96, 1.0, -1.0, 1.0, 2.0, 10.0, DT)
    assert ub == pytest.approx(-116.17, abs=0.01) and ub < lb
    f = SafetyFilter(chain_model(1, q_lim=1.0, v_max=2.0, a_max=10.0), plain_config())
    f.set_command_state(np.array([0.96]), np.array([1.0]))
    _step(f, [1.0])
    assert f.report.fault_code == FaultCode.NOT_VIABLE and f.stop_latched
    assert f.command_state[1, 0] == pytest.approx(1.0 - 10.0 * DT)  # maximum braking


# ---------------------------------------------------------------- F: CBF / projection
def test_f1_cbf() -> None:
    assert cbf_single_halfspace(1.0, 1.0, 5 * (1 - 0.9)) == pytest.approx(0.5)
    assert cbf_single_halfspace(0.2, 1.0, 5 * (1 - 0.9)) == pytest.approx(0.2)
    assert 0.1 * (1 - 0.9) / DT == pytest.approx(10.0)


def test_f2_f3_projection() -> None:
    ws = QpWorkspace(2, 1)
    g = np.array([[1.0, 1.0]])
    st, _ = ws.solve(np.array([1.0, 2.0]), np.full(2, -np.inf), np.full(2, np.inf), g, np.array([1.0]), 1)
    assert st == 0
    np.testing.assert_allclose(ws.x, [0.0, 1.0], atol=1e-12)
    st, _ = ws.solve(np.array([2.0, 0.5]), -np.ones(2), np.ones(2), g, np.array([1.0]), 1)
    assert st == 0
    np.testing.assert_allclose(ws.x, [1.0, 0.0], atol=1e-12)
    # the two wrong answers really are different
    clipped = np.clip([2.0, 0.5], -1, 1)
    clip_then_project = clipped - max(0.0, (clipped.sum() - 1) / 2) * np.ones(2)
    np.testing.assert_allclose(clip_then_project, [0.75, 0.25])
    assert not np.allclose(ws.x, clip_then_project)


# ---------------------------------------------------------------- G: blending
def test_g1_blend_through_the_filter() -> None:
    cfg = plain_config(1.0, blend=BlendConfig(mode='fixed', alpha_operator=0.25))
    f = SafetyFilter(chain_model(2, v_max=10.0, a_max=100.0), cfg)
    f.set_command_state(np.zeros(2))
    out = np.zeros(2)
    rep = f.step(0, np.zeros(2), np.zeros(2), np.array([0.0, 0.4]), True, None, 0, np.array([0.2, 0.0]), out)
    np.testing.assert_allclose(out, [0.05, 0.3], atol=1e-15)
    assert rep.alpha == 0.25 and rep.intervention_rad == 0.0
    alphas = [blend_alpha_from_distance(d, 0.5, 1.5) for d in (0.4, 0.5, 1.0, 1.5, 2.0)]
    assert alphas == [0.0, 0.0, 0.5, 1.0, 1.0]


# ---------------------------------------------------------------- H: ramp stop
def test_h1_stale_input_ramp_stop() -> None:
    """Stale state: ramp stop from 0.5 rad/s at 10 rad/s^2 takes 50 cycles and 0.01225 rad."""
    cfg = plain_config(jerk=False, state_timeout_s=0.005)
    f = SafetyFilter(chain_model(1, q_lim=10.0, a_max=10.0), cfg)
    f.set_command_state(np.zeros(1), np.array([0.5]))
    out = np.zeros(1)

    def step_at_rest(t_ns: int, human_stamp_ns: int, state_stamp_ns: int) -> None:
        """One cycle at ``t_ns`` [ns]: measured q = dq = 0, target 1 rad, no human points (stamped
        ``human_stamp_ns``), the state stamped ``state_stamp_ns`` [ns]; the command into ``out``."""
        f.step(
            t_ns,
            np.zeros(1),
            np.zeros(1),
            np.array([1.0]),
            True,
            None,
            human_stamp_ns,
            None,
            out,
            state_stamp_ns=state_stamp_ns,
        )

    cycles = 0
    t0 = 10_000_000_000
    while f.command_state[1, 0] != 0.0 and cycles < 1000:
        t = t0 + cycles * 1_000_000
        step_at_rest(t, t, state_stamp_ns=t0 - 10_000_000)
        assert f.report.fault_code == FaultCode.STALE_STATE
        cycles += 1
    assert cycles == 50
    assert out[0] == pytest.approx(0.01225, abs=1e-12)
    # held afterwards, latched until reset
    step_at_rest(t0 + 60_000_000, 0, state_stamp_ns=t0 + 60_000_000)
    assert out[0] == pytest.approx(0.01225, abs=1e-12) and f.stop_latched


@pytest.mark.parametrize(
    ('v', 'a'), [(2.0, 0.0), (2.0, 10.0), (2.0, -10.0), (0.5, 5.0), (0.01, 3.0), (0.005, -2.0)]
)
def test_jerk_limited_stop_distance_bounds_a_fine_simulation(v: float, a: float) -> None:
    """The closed-form stop distance used by the jerk-consistent bound is >= the distance of the
    jerk-limited braking plan simulated finely (and tight at speed)."""
    from rt_safe_rl.core.safety.formulas import jerk_limited_stop_distance

    a_max, j_max, h = 10.0, 5000.0, 1e-7
    x, vel, acc = 0.0, v, a
    while vel > 0.0:
        # decelerate at full jerk, but release in time to end at v = 0 with a = 0
        release = vel <= acc * acc / (2 * j_max) and acc < 0
        acc = min(acc + j_max * h, 0.0) if release else max(acc - j_max * h, -a_max)
        vel += acc * h
        x += max(vel, 0.0) * h
    s = jerk_limited_stop_distance(v, a, a_max, j_max)
    assert s >= x - 1e-6
    if v >= 0.5:
        assert s <= x * 1.01 + 1e-6
