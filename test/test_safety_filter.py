"""SafetyFilter behaviour: fail-closed faults and latching, reset, SSM/PFL, blending, live config
updates, workspace box, report fields and allocation-free steady state."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.robot_model import RobotConfig, RobotModel
from rt_safe_rl.core.safety import ACTIVE_BITS, FaultCode, SafetyConfig, SafetyFilter, SafetyReport
from rt_safe_rl.core.safety.config import BlendConfig, PflConfig, SsmConfig, WorkspaceConfig
from rt_safe_rl.core.safety.formulas import ssm_v_max

MS = 1_000_000
DT = 1e-3


@pytest.fixture(scope='module')
def arm7() -> RobotModel:
    return RobotModel.from_config(RobotConfig())


class Loop:
    """Drive a filter with a perfectly tracking robot (measured = commanded) at 1 kHz."""

    def __init__(self, f: SafetyFilter, q0: np.ndarray) -> None:
        self.f = f
        self.q = q0.copy()
        self.dq = np.zeros_like(q0)
        self.out = np.zeros_like(q0)
        self.t = 1_000 * MS
        self.human: np.ndarray | None = np.array([[2.0, 2.0, 0.5]])

    def step(
        self, prop: np.ndarray | None, valid: bool = True, op: np.ndarray | None = None, **kw: object
    ) -> SafetyReport:
        self.t += MS
        rep = self.f.step(self.t, self.q, self.dq, prop, valid, self.human, self.t, op, self.out, **kw)  # type: ignore[arg-type]
        if rep.command_valid:
            self.dq = (self.out - self.q) / DT
            self.q = self.out.copy()
        return rep

    def run_until_stopped(self, prop: np.ndarray | None, valid: bool = True, max_steps: int = 2000) -> int:
        for k in range(max_steps):
            self.step(prop, valid)
            if self.f.is_stopped:
                return k + 1
        raise AssertionError('did not stop')


def _moving(arm7: RobotModel, cfg: SafetyConfig | None = None) -> Loop:
    f = SafetyFilter(arm7, cfg or SafetyConfig())
    lp = Loop(f, arm7.home())
    target = arm7.home() + np.array([0.6, 0.3, -0.4, 0.3, 0.5, 0.3, 0.5])
    for _ in range(150):
        lp.step(target)
    assert np.abs(f.command_state[1]).max() > 0.2
    return lp


def test_holds_until_first_valid_action_without_latching(arm7: RobotModel) -> None:
    f = SafetyFilter(arm7)
    lp = Loop(f, arm7.home())
    rep = lp.step(None, valid=False)
    assert rep.fault_code == FaultCode.AWAITING_POLICY and rep.stopping and not rep.latched
    np.testing.assert_array_equal(lp.out, arm7.home())
    rep = lp.step(arm7.home() + 0.01)
    assert rep.fault_code == FaultCode.OK and not rep.stopping
    assert np.any(lp.out != arm7.home())


def test_awaiting_human_holds_when_ssm_requires_one(arm7: RobotModel) -> None:
    f = SafetyFilter(arm7)
    lp = Loop(f, arm7.home())
    lp.human = None
    rep = lp.step(arm7.home() + 0.01)
    assert rep.fault_code == FaultCode.AWAITING_HUMAN and rep.stopping and not rep.latched
    lp.human = np.array([[2.0, 0.0, 0.5]])
    assert lp.step(arm7.home() + 0.01).fault_code == FaultCode.OK
    lp.human = None
    assert lp.step(arm7.home() + 0.01).fault_code == FaultCode.HUMAN_MISSING
    assert f.stop_latched


@pytest.mark.parametrize(
    'fault',
    [
        'policy_invalid',
        'nan',
        'clock_back',
        'clock_gap',
        'stale_state',
        'stale_human',
        'bad_size',
        'deadline',
        'state_out_of_limits',
    ],
)
def test_each_fault_gives_latched_controlled_stop_then_reset(arm7: RobotModel, fault: str) -> None:
    lp = _moving(arm7)
    f = lp.f
    target = arm7.home() + 0.5
    v_before = f.command_state[1].copy()
    expected = {
        'policy_invalid': FaultCode.POLICY_INVALID,
        'nan': FaultCode.NONFINITE_INPUT,
        'clock_back': FaultCode.CLOCK_JUMP,
        'clock_gap': FaultCode.CLOCK_JUMP,
        'stale_state': FaultCode.STALE_STATE,
        'stale_human': FaultCode.HUMAN_STALE,
        'bad_size': FaultCode.BAD_SIZE,
        'deadline': FaultCode.DEADLINE_MISS,
        'state_out_of_limits': FaultCode.STATE_OUT_OF_LIMITS,
    }[fault]
    out = lp.out
    t = lp.t + MS
    if fault == 'policy_invalid':
        rep = f.step(t, lp.q, lp.dq, target, False, lp.human, t, None, out)
    elif fault == 'nan':
        bad = target.copy()
        bad[2] = np.nan
        rep = f.step(t, lp.q, lp.dq, bad, True, lp.human, t, None, out)
    elif fault == 'clock_back':
        rep = f.step(t - 5 * MS, lp.q, lp.dq, target, True, lp.human, t - 5 * MS, None, out)
    elif fault == 'clock_gap':
        rep = f.step(t + 500 * MS, lp.q, lp.dq, target, True, lp.human, t + 500 * MS, None, out)
    elif fault == 'stale_state':
        rep = f.step(t, lp.q, lp.dq, target, True, lp.human, t, None, out, state_stamp_ns=t - 50 * MS)
    elif fault == 'stale_human':
        rep = f.step(t, lp.q, lp.dq, target, True, lp.human, t - 500 * MS, None, out)
    elif fault == 'bad_size':
        rep = f.step(t, lp.q, lp.dq, target[:5], True, lp.human, t, None, out)
    elif fault == 'deadline':
        f.trigger_stop(FaultCode.DEADLINE_MISS)
        rep = f.step(t, lp.q, lp.dq, target, True, lp.human, t, None, out)
    else:
        q_bad = lp.q.copy()
        q_bad[0] = arm7.q_max[0] + 0.5
        rep = f.step(t, q_bad, lp.dq, target, True, lp.human, t, None, out)
    lp.t = t
    if fault == 'clock_gap':
        # no command for 500 ms: the robot has been holding the last one, the stop starts from rest
        v_before = np.zeros_like(v_before)
    assert rep.fault_code == expected and rep.stopping and rep.latched
    assert np.all(np.isfinite(out))
    # braking within the limits: velocity changes by at most a_max dt per cycle; the jerk limit may
    # delay the deceleration by a few cycles (acceleration ramps down at j_max), then speed drops
    v_now = f.command_state[1].copy()
    assert np.all(np.abs(v_now - v_before) <= arm7.a_max * DT * (1 + 1e-9))
    for _ in range(10):
        lp.step(target)
    moving = np.abs(v_before) > 0.05
    assert np.all(np.abs(f.command_state[1])[moving] < np.abs(v_before)[moving])
    if fault != 'clock_gap':  # (after the gap the command holds at once)
        # reset is refused while still moving
        ok, reason = f.reset()
        assert not ok and 'stopping' in reason
    # keep feeding valid inputs: still stops (latched), then holds
    n = lp.run_until_stopped(target)
    assert n < 400
    held = lp.out.copy()
    for _ in range(5):
        rep = lp.step(target)
        np.testing.assert_array_equal(lp.out, held)
        assert rep.latched and rep.fault_code == expected
    ok, _ = f.reset()
    assert ok
    rep = lp.step(None, valid=False)  # after reset: wait for a fresh valid action, unlatched
    assert rep.fault_code == FaultCode.AWAITING_POLICY and not rep.latched
    rep = lp.step(target)
    assert rep.fault_code == FaultCode.OK and not rep.stopping


def test_missing_policy_after_valid_is_a_fault(arm7: RobotModel) -> None:
    lp = _moving(arm7)
    rep = lp.step(None, valid=False)
    assert rep.fault_code == FaultCode.POLICY_INVALID and rep.latched


def test_ssm_limits_speed_toward_human_and_stops_at_protective_distance(arm7: RobotModel) -> None:
    """A person at the tool: the speed of every monitored point toward them stays <= v_max(d);
    at or below the protective distance the robot stops, and resumes when the person leaves."""
    cfg = SafetyConfig(enforce_effort=False)
    f = SafetyFilter(arm7, cfg)
    lp = Loop(f, arm7.home())
    p0 = np.zeros((arm7.n_points, 3))
    p1 = np.zeros((arm7.n_points, 3))
    arm7.fk_points(arm7.home(), p0)
    tcp = p0[arm7.point_names.index('tcp')]
    lp.human = (tcp + np.array([0.55, 0.0, 0.0]))[None, :]
    # the target drives the tcp toward +x (toward the person)
    target = arm7.home() + np.array([0.0, 0.6, 0.0, 0.8, 0.0, 0.0, 0.0])
    s = cfg.ssm
    saw_limit = False
    for _ in range(1500):
        arm7.fk_points(lp.q, p0)
        rep = lp.step(target)
        arm7.fk_points(lp.q, p1)
        for i in range(arm7.n_points):
            diff = lp.human[0] - p0[i]
            dist = float(np.linalg.norm(diff))
            d = dist - arm7.point_radius_m[i]
            v_h = s.human_speed_near_m_s if d <= s.near_distance_m else s.human_speed_m_s
            v_allowed = ssm_v_max(d, v_h, s.brake_decel_m_s2, s.reaction_time_s, s.c_total_m)
            v_toward = float((p1[i] - p0[i]) @ diff / dist) / DT
            # linearisation (first order in dt) + braking transients: small tolerance
            if not rep.stopping:
                assert v_toward <= v_allowed + 2e-3
        if rep.active_mask & ACTIVE_BITS['ssm']:
            saw_limit = True
        assert not rep.latched
    assert saw_limit
    # the person steps to within the protective distance: stop (not latched)
    lp.human = (p1[arm7.point_names.index('tcp')] + np.array([0.15, 0.0, 0.0]))[None, :]
    rep = lp.step(target)
    assert rep.active_mask & ACTIVE_BITS['ssm_stop'] and rep.stopping and not rep.latched
    lp.run_until_stopped(target)
    held = lp.out.copy()
    lp.step(target)
    np.testing.assert_array_equal(lp.out, held)
    # the person leaves: motion resumes without a reset
    lp.human = np.array([[-2.0, -2.0, 0.5]])
    for _ in range(50):
        rep = lp.step(target)
    assert not rep.stopping and np.any(lp.out != held)


def test_pfl_allows_contact_speed_instead_of_stopping(arm7: RobotModel) -> None:
    cfg = SafetyConfig(enforce_effort=False, pfl=PflConfig(enabled=True, body_region='hands'))
    f = SafetyFilter(arm7, cfg)
    lp = Loop(f, arm7.home())
    p = np.zeros((arm7.n_points, 3))
    arm7.fk_points(arm7.home(), p)
    lp.human = (p[arm7.point_names.index('tcp')] + np.array([0.1, 0.0, 0.0]))[None, :]
    rep = lp.step(arm7.home() + 0.01)
    assert not rep.stopping and not rep.active_mask & ACTIVE_BITS['ssm_stop']


def test_blend_distance_mode_gives_operator_authority_when_nobody_is_near(arm7: RobotModel) -> None:
    cfg = SafetyConfig(blend=BlendConfig(mode='distance', d_min_m=0.5, d_max_m=1.5))
    f = SafetyFilter(arm7, cfg)
    lp = Loop(f, arm7.home())
    lp.human = np.array([[5.0, 5.0, 0.5]])
    rep = lp.step(arm7.home() + 1e-7, op=arm7.home() - 1e-7)
    assert rep.alpha == 1.0
    lp.human = np.array([[1.0, 0.6, 0.5]])
    rep = lp.step(arm7.home(), op=arm7.home())
    assert 0.0 < rep.alpha < 1.0
    assert rep.alpha == pytest.approx(np.clip((rep.human_distance_m - 0.5) / 1.0, 0, 1))


def test_live_update_validated_and_atomic(arm7: RobotModel) -> None:
    f = SafetyFilter(arm7)
    with pytest.raises(ConfigError, match='looser'):
        f.update_config(replace(SafetyConfig(), v_max_rad_s=[10.0] * 7))
    with pytest.raises(ConfigError, match='expected 7'):
        f.update_config(replace(SafetyConfig(), a_max_rad_s2=[1.0] * 3))
    with pytest.raises(ConfigError):
        replace(SafetyConfig(), v_max_rad_s=[-1.0] * 7)
    with pytest.raises(ConfigError):
        replace(SafetyConfig(), ssm=SsmConfig(reaction_time_s=float('nan')))
    with pytest.raises(ConfigError):
        replace(SafetyConfig(), q_min_rad=[0.0] * 7, q_max_rad=[-1.0] * 7)
    lp = Loop(f, arm7.home())
    lp.human = np.array([[3.0, 3.0, 0.5]])
    target = arm7.home() + np.array([0.0, 0.0, 1.5, 0.0, 0.0, 0.0, 0.0])
    for _ in range(400):
        lp.step(target)
    assert abs(f.command_state[1, 2]) > 1.5
    f.update_config(replace(SafetyConfig(), velocity_scale=0.25, enforce_effort=False))
    assert f.cfg.velocity_scale == 1.0  # not yet: applies at the next step
    for _ in range(400):
        lp.step(target + 1.0)
    assert f.cfg.velocity_scale == 0.25
    assert np.all(np.abs(f.command_state[1]) <= 0.25 * arm7.v_max + 1e-12)


def test_workspace_box_keeps_tool_inside(arm7: RobotModel) -> None:
    """Driving the tool down toward the table (z min 0.3 m here): it stops above it."""
    cfg = SafetyConfig(
        enforce_effort=False,
        ssm=SsmConfig(enabled=False),
        workspace=WorkspaceConfig(min_m=[-1.0, -1.0, 0.3], max_m=[1.0, 1.0, 1.4]),
    )
    f = SafetyFilter(arm7, cfg)
    lp = Loop(f, arm7.home())
    target = arm7.home() + np.array([0.0, 1.2, 0.0, 0.6, 0.0, 0.0, 0.0])  # folds forward and down
    p = np.zeros((arm7.n_points, 3))
    idx = [arm7.point_names.index(n) for n in cfg.workspace.points]
    hit = False
    for _ in range(3000):
        rep = lp.step(target)
        arm7.fk_points(lp.q, p)
        assert p[idx, 2].min() >= 0.3 - 1e-3
        hit |= bool(rep.active_mask & ACTIVE_BITS['workspace'])
    assert hit


def test_report_fields(arm7: RobotModel) -> None:
    f = SafetyFilter(arm7)
    lp = Loop(f, arm7.home())
    rep = lp.step(arm7.home() + 0.3)
    d = rep.as_dict()
    assert d['fault'] == 'OK' and d['intervention_rad'] > 0 and 'jerk' in d['active']
    assert d['human_distance_m'] > 1.0 and d['position_margin_rad'] > 0 and d['command_valid']


def test_no_state_yet_gives_invalid_command(arm7: RobotModel) -> None:
    f = SafetyFilter(arm7)
    out = np.zeros(7)
    q = np.full(7, np.nan)
    rep = f.step(0, q, np.zeros(7), arm7.home(), True, None, 0, None, out)
    assert not rep.command_valid and rep.stopping and np.all(np.isfinite(out))


def test_steady_state_step_does_not_grow_the_heap(arm7: RobotModel) -> None:
    f = SafetyFilter(arm7)
    lp = Loop(f, arm7.home())
    lp.human = np.array([[1.0, 0.3, 0.6]])
    target = arm7.home() + 0.2
    for _ in range(200):
        lp.step(target)
    q, dq, out, human = lp.q, lp.dq, lp.out, lp.human
    t = lp.t
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for _ in range(3000):
        t += MS
        f.step(t, q, dq, target, True, human, t, None, out)
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert after - before < 2048


def test_workspace_point_outside_may_return_but_not_leave_further(arm7: RobotModel) -> None:
    """Box tightened below the tool: it cannot go further down, and can come back up."""
    cfg = SafetyConfig(
        enforce_effort=False,
        ssm=SsmConfig(enabled=False),
        workspace=WorkspaceConfig(min_m=[-1.0, -1.0, 0.6], max_m=[1.0, 1.0, 1.4], points=['tcp']),
    )
    f = SafetyFilter(arm7, cfg)
    lp = Loop(f, arm7.home())
    p = np.zeros((arm7.n_points, 3))
    i = arm7.point_names.index('tcp')
    arm7.fk_points(arm7.home(), p)
    z0 = p[i, 2]
    assert z0 < 0.6  # starts outside (below the floor of the box)
    down = arm7.home() + np.array([0.0, 0.5, 0.0, 0.3, 0.0, 0.0, 0.0])
    for _ in range(300):
        rep = lp.step(down)
        arm7.fk_points(lp.q, p)
        assert p[i, 2] >= z0 - 1e-4  # never further out (first-order constraint)
    assert not rep.stopping
    up = arm7.home() + np.array([0.0, -0.5, 0.0, 0.5, 0.0, 0.0, 0.0])
    for _ in range(1500):
        lp.step(up)
    arm7.fk_points(lp.q, p)
    assert p[i, 2] > z0 + 0.02  # moved back toward / into the box


def test_pfl_per_body_region(arm7: RobotModel) -> None:
    """Two people points, head and hand regions: the allowed contact speed differs per point."""
    from rt_safe_rl.core.safety import kernel as kn
    from rt_safe_rl.core.safety.filter import build_params
    from rt_safe_rl.core.safety.formulas import pfl_v_max

    pfl = PflConfig(
        enabled=True,
        body_region='hands',
        point_regions=['skull', 'hands'],
        max_force_by_region_n={'skull': 130.0},
    )
    _, sp, _ = build_params(arm7, SafetyConfig(pfl=pfl))
    m_r = arm7.moving_mass_kg / 2 + arm7.payload_kg
    assert sp[kn.SP_PFL_BASE] == pytest.approx(pfl_v_max(130.0, 150e3, 4.4, m_r))
    assert sp[kn.SP_PFL_BASE + 1] == pytest.approx(pfl_v_max(280.0, 75e3, 0.6, m_r))
    assert sp[kn.SP_PFL_BASE + 1] > sp[kn.SP_PFL_BASE]
    with pytest.raises(ConfigError, match='unknown body region'):
        PflConfig(point_regions=['tail'])
