"""RobotModel: URDF parsing, limits/overrides, compiled FK and Jacobians vs yourdfpy (independent)."""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yourdfpy

from rt_safe_rl.core.configutil import from_mapping
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.robot_model import (
    PANDA_ACC_RAD_S2,
    PANDA_JERK_RAD_S3,
    MonitoredPoint,
    RobotConfig,
    RobotModel,
    chain_urdf,
)
from rt_safe_rl.paths import resolve


@pytest.fixture(scope='module')
def arm7() -> RobotModel:
    return RobotModel.from_config(RobotConfig())


def test_arm7_limits_match_panda_datasheet(arm7: RobotModel) -> None:
    """Joint limits come from the URDF, acc/jerk from RobotConfig defaults (Panda values)."""
    assert arm7.joint_names == [f'joint{i}' for i in range(1, 8)]
    np.testing.assert_allclose(arm7.q_max, [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
    np.testing.assert_allclose(arm7.q_min, [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
    np.testing.assert_allclose(arm7.v_max, [2.175] * 4 + [2.61] * 3)
    np.testing.assert_allclose(arm7.effort_max, [87] * 4 + [12] * 3)
    np.testing.assert_allclose(arm7.a_max, PANDA_ACC_RAD_S2)
    np.testing.assert_allclose(arm7.j_max, PANDA_JERK_RAD_S3)
    assert arm7.n_points == 7 and arm7.moving_mass_kg > 10


def test_ready_pose_flange_matches_panda(arm7: RobotModel) -> None:
    """Panda ready pose puts the flange at (0.307, 0, 0.590) m: checks the kinematics are Panda's."""
    p = np.zeros((arm7.n_points, 3))
    arm7.fk_points(arm7.home(), p)
    np.testing.assert_allclose(p[arm7.point_names.index('flange')], [0.30689, 0.0, 0.59028], atol=1e-4)


def test_fk_and_jacobian_match_yourdfpy_and_finite_differences(arm7: RobotModel) -> None:
    """Compiled numba FK equals yourdfpy's scene-graph FK; Jacobian equals finite differences."""
    cfg = RobotConfig()
    urdf = yourdfpy.URDF.load(str(resolve(cfg.urdf)), load_meshes=False)
    rng = np.random.default_rng(1)
    p = np.zeros((arm7.n_points, 3))
    jac = np.zeros((arm7.n_points, 3, 7))
    p2 = np.zeros_like(p)
    for _ in range(20):
        q = rng.uniform(arm7.q_min, arm7.q_max)
        arm7.fk_points_jacobian(q, p, jac)
        urdf.update_cfg(q)
        for i, pt in enumerate(cfg.monitored_points):
            tf = urdf.get_transform(pt.link, 'base_link')
            np.testing.assert_allclose(p[i], tf[:3, :3] @ np.array(pt.offset_m) + tf[:3, 3], atol=1e-12)
        num = np.zeros_like(jac)
        for k in range(7):
            dq = q.copy()
            dq[k] += 1e-7
            arm7.fk_points(dq, p2)
            num[:, :, k] = (p2 - p) / 1e-7
        np.testing.assert_allclose(jac, num, atol=2e-6)


def test_fk_does_not_allocate(arm7: RobotModel) -> None:
    """Steady-state FK + Jacobian leave no net Python heap growth (tracemalloc)."""
    q = arm7.home()
    p = np.zeros((arm7.n_points, 3))
    jac = np.zeros((arm7.n_points, 3, 7))
    for _ in range(100):
        arm7.fk_points_jacobian(q, p, jac)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(2000):
        arm7.fk_points_jacobian(q, p, jac)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert after - before < 1024


def test_overrides_from_yaml_mapping(tmp_path: Path) -> None:
    """robot.overrides and single-value lists apply; unknown joints and bad limits are rejected."""
    cfg = from_mapping(
        RobotConfig,
        {
            'a_max_rad_s2': [5.0],
            'overrides': {'joint2': {'v_max_rad_s': 1.0, 'q_max_rad': 1.0}},
        },
        'test: robot',
    )
    m = RobotModel.from_config(cfg)
    assert m.v_max[1] == 1.0 and m.q_max[1] == 1.0 and np.all(m.a_max == 5.0)
    with pytest.raises(ConfigError, match='unknown joint'):
        RobotModel.from_config(
            RobotConfig(overrides=from_mapping(RobotConfig, {'overrides': {'nope': {'kp': 1.0}}}).overrides)
        )
    with pytest.raises(ConfigError, match='must be <'):
        RobotModel.from_config(from_mapping(RobotConfig, {'overrides': {'joint1': {'q_min_rad': 3.0}}}))
    with pytest.raises(ConfigError, match='expected 1 or 7'):
        RobotModel.from_config(RobotConfig(j_max_rad_s3=[1.0, 2.0]))
    with pytest.raises(ConfigError, match='not found'):
        RobotModel.from_urdf(tmp_path / 'missing.urdf')
    bad = tmp_path / 'bad.urdf'
    bad.write_text('<robot name="x"><link')
    with pytest.raises(ConfigError, match='cannot parse'):
        RobotModel.from_urdf(bad)
    with pytest.raises(ConfigError, match='link'):
        RobotModel.from_config(
            from_mapping(RobotConfig, {'monitored_points': [{'name': 'a', 'link': 'nolink'}]})
        )


def test_chain_urdf_any_size(tmp_path: Path) -> None:
    """A generated 29-joint chain parses; its straight-up tip is at 28 link lengths."""
    path = tmp_path / 'chain.urdf'
    path.write_text(chain_urdf(29))
    cfg = RobotConfig(
        a_max_rad_s2=[10.0],
        j_max_rad_s3=[5000.0],
        kp=[100.0],
        kd=[5.0],
        monitored_points=[MonitoredPoint('tip', 'link29')],
    )
    m = RobotModel.from_urdf(path, cfg)
    assert m.n_joints == 29
    p = np.zeros((1, 3))
    m.fk_points(np.zeros(29), p)
    np.testing.assert_allclose(p[0], [0, 0, 2.8], atol=1e-12)
    q = np.zeros(29)
    q[1] = math.pi / 2  # second joint (y axis) bends the rest of the chain along +x
    m.fk_points(q, p)
    np.testing.assert_allclose(p[0], [2.7, 0, 0.1], atol=1e-12)


def test_continuous_and_prismatic_joints() -> None:
    """Continuous joints get infinite position limits (the filter then limits velocity only);
    prismatic joints keep theirs. Checked through the safety filter."""
    from rt_safe_rl.core.safety import SafetyFilter
    from rt_safe_rl.core.safety.testing import plain_config

    urdf = """<robot name="c"><link name="base_link"/><link name="l1"/><link name="l2"/>
<joint name="j1" type="continuous"><parent link="base_link"/><child link="l1"/><axis xyz="0 0 1"/>
<limit velocity="2" effort="10"/></joint>
<joint name="j2" type="prismatic"><parent link="l1"/><child link="l2"/><origin xyz="0.5 0 0"/>
<axis xyz="1 0 0"/><limit lower="0" upper="0.3" velocity="0.5" effort="100"/></joint></robot>"""
    cfg = RobotConfig(
        urdf='',
        a_max_rad_s2=[5.0],
        j_max_rad_s3=[1000.0],
        kp=[0.0],
        kd=[0.0],
        monitored_points=[MonitoredPoint('tip', 'l2')],
    )
    m = RobotModel.from_urdf_string(urdf, cfg)
    assert m.q_min[0] == -np.inf and m.q_max[0] == np.inf and m.q_max[1] == 0.3
    p = np.zeros((1, 3))
    m.fk_points(np.array([math.pi / 2, 0.2]), p)
    np.testing.assert_allclose(p[0], [0.0, 0.7, 0.0], atol=1e-12)
    f = SafetyFilter(m, plain_config(jerk=True))
    f.set_command_state(np.array([0.0, 0.1]))
    out = np.zeros(2)
    for k in range(3000):
        q = f.command_state[0].copy()
        rep = f.step(k, q, np.zeros(2), np.array([100.0, 5.0]), True, None, k, None, out)
        assert rep.fault_code == 0 and np.all(np.isfinite(out))
    assert out[1] == pytest.approx(0.3) and f.command_state[1, 0] == pytest.approx(2.0)
