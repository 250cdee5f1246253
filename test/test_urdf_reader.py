"""The standard-library URDF reader (rt_safe_rl.core.urdf): same values as yourdfpy, refuses DTDs.

The yourdfpy comparisons skip when yourdfpy is not installed (it is no longer a dependency); the
shared robots (../shared/data/robots) skip when ../shared is absent.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rt_safe_rl import paths
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.robot_model import MonitoredPoint, RobotConfig, RobotModel
from rt_safe_rl.core.urdf import chain_urdf, parse_urdf, read_urdf

SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'robots'
SHARED_URDFS = sorted(SHARED.rglob('*.urdf')) if SHARED.is_dir() else []
ARM7 = paths.resolve('package://rt_safe_rl/description/arm7.urdf')

MIXED = """<?xml version="1.0" encoding="UTF-8"?>
<robot name="mixed">
  <link name="base"/>
  <link name="a"><inertial><mass value="2.5"/></inertial></link>
  <link name="b"><inertial><origin xyz="0 0 1"/></inertial></link>
  <link name="c"><inertial><mass/></inertial></link>
  <link name="d"/>
  <link name="e"/>
  <joint name="j_rev" type="revolute"><parent link="base"/><child link="a"/>
    <origin xyz="0.1 -0.2 0.3" rpy="0.3 -1.1 2.7"/><axis xyz="0 0 2"/>
    <limit lower="-1.5" upper="1.25" velocity="2" effort="40"/></joint>
  <joint name="j_pri" type="prismatic"><parent link="a"/><child link="b"/>
    <origin rpy="1.5707963267948966 0 0"/><axis xyz="1 1 0"/>
    <limit lower="0" upper="0.4" velocity="0.5" effort="100"/></joint>
  <joint name="j_cont" type="continuous"><parent link="b"/><child link="c"/>
    <origin xyz="0 0 0.2"/><limit velocity="3" effort="5"/></joint>
  <joint name="j_mimic" type="revolute"><parent link="c"/><child link="d"/>
    <axis xyz="0 1 0"/><limit lower="-1" upper="1" velocity="1"/>
    <mimic joint="j_rev" multiplier="-0.5" offset="0.1"/></joint>
  <joint name="j_fixed" type="fixed"><parent link="d"/><child link="e"/><origin xyz="0 0 0.05"/></joint>
</robot>
"""


def _yourdfpy_robot(source: Path | str) -> object:
    yourdfpy = pytest.importorskip('yourdfpy', reason='yourdfpy is not installed (no longer a dependency)')
    import io

    arg = str(source) if isinstance(source, Path) else io.BytesIO(source.encode())
    return yourdfpy.URDF.load(
        arg,
        load_meshes=False,
        build_scene_graph=False,
        build_collision_scene_graph=False,
        load_collision_meshes=False,
    ).robot


def _same_values(ours: object, theirs: object) -> None:
    assert ours.name == theirs.name  # type: ignore[attr-defined]
    assert [lk.name for lk in ours.links] == [lk.name for lk in theirs.links]  # type: ignore[attr-defined]
    for a, b in zip(ours.links, theirs.links, strict=True):  # type: ignore[attr-defined]
        ma = a.inertial.mass if a.inertial is not None else None
        mb = b.inertial.mass if b.inertial is not None else None
        assert ma == mb, a.name
    assert [j.name for j in ours.joints] == [j.name for j in theirs.joints]  # type: ignore[attr-defined]
    for a, b in zip(ours.joints, theirs.joints, strict=True):  # type: ignore[attr-defined]
        assert (a.type, a.parent, a.child) == (b.type, b.parent, b.child), a.name
        if b.origin is None:
            assert a.origin is None, a.name
        else:
            np.testing.assert_array_equal(a.origin, b.origin, err_msg=a.name)
        np.testing.assert_array_equal(a.axis, b.axis, err_msg=a.name)
        if b.limit is None:
            assert a.limit is None, a.name
        else:
            for f in ('lower', 'upper', 'velocity', 'effort'):
                assert getattr(a.limit, f) == getattr(b.limit, f), (a.name, f)
        if b.mimic is None:
            assert a.mimic is None, a.name
        else:
            assert (a.mimic.joint, a.mimic.multiplier, a.mimic.offset) == (
                b.mimic.joint,
                b.mimic.multiplier,
                b.mimic.offset,
            ), a.name


def _leaf_config(robot: object) -> RobotConfig:
    """Monitored points on every leaf link (plus an offset point), scalar limits for any joint count."""
    parents = {j.parent for j in robot.joints}  # type: ignore[attr-defined]
    leaves = [j.child for j in robot.joints if j.child not in parents]  # type: ignore[attr-defined]
    pts = [MonitoredPoint(f'p{i}', lk, [0.01 * i, -0.02, 0.03], 0.05) for i, lk in enumerate(leaves)]
    return RobotConfig(
        a_max_rad_s2=[10.0], j_max_rad_s3=[1000.0], kp=[100.0], kd=[10.0], monitored_points=pts
    )


def _same_model(a: RobotModel, b: RobotModel) -> None:
    assert a.joint_names == b.joint_names and a.name == b.name
    for f in ('q_min', 'q_max', 'v_max', 'a_max', 'j_max', 'effort_max', 'kp', 'kd', 'origin', 'axis'):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert a.moving_mass_kg == b.moving_mass_kg
    rng = np.random.default_rng(3)
    lo = np.where(np.isfinite(a.q_min), a.q_min, -np.pi)
    hi = np.where(np.isfinite(a.q_max), a.q_max, np.pi)
    for _ in range(20):
        q = rng.uniform(lo, hi)
        pa, pb = np.zeros((a.n_points, 3)), np.zeros((b.n_points, 3))
        ja, jb = np.zeros((a.n_points, 3, a.n_joints)), np.zeros((b.n_points, 3, b.n_joints))
        a.fk_points_jacobian(q, pa, ja)
        b.fk_points_jacobian(q, pb, jb)
        np.testing.assert_array_equal(pa, pb)
        np.testing.assert_array_equal(ja, jb)


def test_arm7_same_values_and_model_as_yourdfpy() -> None:
    theirs = _yourdfpy_robot(ARM7)
    _same_values(read_urdf(ARM7), theirs)
    cfg = RobotConfig()
    _same_model(RobotModel.from_urdf(ARM7, cfg), RobotModel._compile(theirs, cfg, str(ARM7)))  # type: ignore[arg-type]


def test_mixed_joint_kinds_same_as_yourdfpy() -> None:
    """Prismatic, continuous, mimic, fixed, missing origin / axis / rpy / mass attributes."""
    theirs = _yourdfpy_robot(MIXED)
    ours = parse_urdf(MIXED)
    _same_values(ours, theirs)
    cfg = RobotConfig(
        a_max_rad_s2=[5.0],
        j_max_rad_s3=[500.0],
        kp=[10.0],
        kd=[1.0],
        overrides={},
        monitored_points=[MonitoredPoint('tip', 'e', [0.0, 0.1, 0.0], 0.02)],
    )
    m = RobotModel.from_urdf_string(MIXED, cfg)
    assert m.joint_names == ['j_rev', 'j_pri', 'j_cont']
    assert m.q_min[2] == -np.inf and m.effort_max[2] == 5.0
    _same_model(m, RobotModel._compile(theirs, cfg, 'mixed'))  # type: ignore[arg-type]


def test_chain_same_as_yourdfpy() -> None:
    text = chain_urdf(9)
    theirs = _yourdfpy_robot(text)
    _same_values(parse_urdf(text), theirs)
    cfg = _leaf_config(theirs)
    _same_model(RobotModel.from_urdf_string(text, cfg), RobotModel._compile(theirs, cfg, 'chain'))  # type: ignore[arg-type]


@pytest.mark.skipif(not SHARED_URDFS, reason='../shared/data/robots is absent (no shared URDFs to compare)')
@pytest.mark.parametrize('path', SHARED_URDFS, ids=lambda p: p.name)
def test_shared_robots_same_as_yourdfpy(path: Path) -> None:
    theirs = _yourdfpy_robot(path)
    ours = read_urdf(path)
    _same_values(ours, theirs)
    cfg = _leaf_config(ours)
    _same_model(RobotModel.from_urdf(path, cfg), RobotModel._compile(theirs, cfg, str(path)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    'doc',
    [
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        '<robot name="&b;"><link name="x"/></robot>',
        '<!DOCTYPE robot SYSTEM "file:///etc/passwd"><robot name="x"/>',
        '<robot name="x"><!ENTITY e "1"><link name="l"/></robot>',
    ],
    ids=['billion_laughs', 'external_dtd', 'entity'],
)
def test_dtd_and_entities_are_refused(doc: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'declarations are refused') as ei:
        parse_urdf(doc, 'evil.urdf')
    assert '\n' not in str(ei.value) and 'evil.urdf' in str(ei.value)
    f = tmp_path / 'evil.urdf'
    f.write_text(doc)
    with pytest.raises(ConfigError, match=r'declarations are refused'):
        RobotModel.from_urdf(f)


@pytest.mark.parametrize(
    ('doc', 'match'),
    [
        ('<robot name="x"><link name="a">', 'cannot parse'),
        ('<model name="x"/>', r'root element is <model>'),
        ('<robot name="x"><joint name="j" type="hinge"/></robot>', r"type 'hinge'"),
        ('<robot name="x"><joint name="j" type="fixed"><child link="a"/></joint></robot>', 'no <parent'),
        (
            '<robot name="x"><link name="a"/><link name="b"/><joint name="j" type="revolute">'
            '<parent link="a"/><child link="b"/><limit lower="zero"/></joint></robot>',
            r'lower="zero" is not a number',
        ),
        (
            '<robot name="x"><joint name="j" type="fixed"><parent link="a"/><child link="b"/>'
            '<origin xyz="1 2"/></joint></robot>',
            r'xyz="1 2" is not 3 numbers',
        ),
    ],
)
def test_bad_documents_give_one_line_errors(doc: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as ei:
        RobotModel.from_urdf_string(doc, where='bad.urdf')
    assert '\n' not in str(ei.value) and 'bad.urdf' in str(ei.value)


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / 'latin1.urdf'
    f.write_bytes('<robot name="\xe9"/>'.encode('latin-1'))
    with pytest.raises(ConfigError, match='not UTF-8'):
        read_urdf(f)
    with pytest.raises(ConfigError, match='file not found'):
        RobotModel.from_urdf(tmp_path / 'none.urdf')


def test_loading_the_model_imports_no_mesh_or_xml_library() -> None:
    """The reason for the reader: yourdfpy pulls in trimesh and lxml (~1 s at every start)."""
    code = (
        'import sys\n'
        'from rt_safe_rl.core.robot_model import RobotModel, RobotConfig\n'
        'RobotModel.from_config(RobotConfig())\n'
        "print(sorted(m for m in ('yourdfpy', 'trimesh', 'lxml') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == '[]', out.stdout + out.stderr
