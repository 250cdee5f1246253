"""Robot description -> :class:`RobotModel`: joint names, limits, PD gains, compiled kinematics.

The URDF is parsed once (configure time) by :mod:`rt_safe_rl.core.urdf` (standard-library XML, no
DOCTYPE / entities); the kinematic tree from the base to
every monitored link is then *compiled* into flat numpy arrays (one row per frame: parent index,
fixed origin transform, joint type/axis/index, mimic multiplier/offset). The per-cycle forward
kinematics of the monitored points (and their positional Jacobians) run in numba ``njit`` kernels
over those arrays and preallocated work buffers (:mod:`rt_safe_rl.core.kinematics`): no Python
objects, no heap allocation per call.

Units: rad, rad/s, rad/s^2, rad/s^3, N*m (revolute) or m, m/s, ... (prismatic), metres for points.

Acceleration and jerk limits are not part of URDF; they come from :class:`RobotConfig`
(defaults: Franka Panda datasheet values for the shipped 7-DoF ``arm7``). Any limit can be
overridden per joint in YAML (``robot.overrides.<joint>.<field>``).

Not thread-safe: one :class:`RobotModel` owns one set of FK work buffers. Use
:meth:`RobotModel.new_workspace` for a second thread (e.g. the batch API).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.kinematics import (  # fk kernels re-exported (__all__): safety kernels import them here
    JT_FIXED,
    JT_PRISMATIC,
    JT_REVOLUTE,
    fk_frames_kernel,
    jacobian_kernel,
    points_kernel,
)
from rt_safe_rl.core.urdf import Joint, Robot, chain_urdf, parse_urdf, read_urdf
from rt_safe_rl.paths import resolve

__all__ = [  # the public names, re-exports included (explicit for `mypy --strict` and ruff)
    'JT_FIXED',
    'JT_PRISMATIC',
    'JT_REVOLUTE',
    'PANDA_ACC_RAD_S2',
    'PANDA_JERK_RAD_S3',
    'PANDA_KD',
    'PANDA_KP',
    'JointLimitOverride',
    'MonitoredPoint',
    'RobotConfig',
    'RobotModel',
    'chain_urdf',
    'fk_frames_kernel',
    'jacobian_kernel',
    'points_kernel',
]

# Franka Panda datasheet values (per joint, joint 1..7).
PANDA_ACC_RAD_S2: tuple[float, ...] = (15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0)
PANDA_JERK_RAD_S3: tuple[float, ...] = (7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0)
# libfranka joint-impedance example gains (used by the PD model of the position-controlled arm).
PANDA_KP: tuple[float, ...] = (600.0, 600.0, 600.0, 600.0, 250.0, 150.0, 50.0)
PANDA_KD: tuple[float, ...] = (50.0, 50.0, 50.0, 20.0, 20.0, 20.0, 10.0)


@dataclass(frozen=True)
class JointLimitOverride:
    """Per-joint limit override (None keeps the URDF / RobotConfig value). Units per field name."""

    q_min_rad: float | None = None
    q_max_rad: float | None = None
    v_max_rad_s: float | None = None
    a_max_rad_s2: float | None = None
    j_max_rad_s3: float | None = None
    effort_max_nm: float | None = None
    kp: float | None = None
    kd: float | None = None


@dataclass(frozen=True)
class MonitoredPoint:
    """A point rigidly attached to `link` at `offset_m` (link frame), watched by SSM/workspace.

    `radius_m` is the radius of a sphere around the point that covers the link's surface there;
    SSM subtracts it from the separation distance.
    """

    name: str
    link: str
    offset_m: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    radius_m: float = 0.0

    def __post_init__(self) -> None:
        if len(self.offset_m) != 3 or not all(math.isfinite(v) for v in self.offset_m):
            raise ConfigError(f'monitored point {self.name!r}: offset_m must be 3 finite numbers')
        if self.radius_m < 0 or not math.isfinite(self.radius_m):
            raise ConfigError(f'monitored point {self.name!r}: radius_m must be finite and >= 0')


def _default_points() -> list[MonitoredPoint]:
    return [
        MonitoredPoint('upper_arm', 'link3', [0.0, 0.0, -0.08], 0.08),
        MonitoredPoint('elbow', 'link4', [0.0, 0.0, 0.0], 0.09),
        MonitoredPoint('forearm', 'link4', [-0.04125, 0.192, 0.0], 0.08),
        MonitoredPoint('wrist', 'link5', [0.0, 0.0, 0.0], 0.08),
        MonitoredPoint('wrist2', 'link7', [0.0, 0.0, 0.0], 0.08),
        MonitoredPoint('flange', 'flange', [0.0, 0.0, 0.0], 0.07),
        MonitoredPoint('tcp', 'tcp', [0.0, 0.0, 0.0], 0.05),
    ]


@dataclass(frozen=True)
class RobotConfig:
    """`robot:` section of the config. Built strictly with ``configutil.from_mapping``.

    Attributes:
        urdf: URDF path; ``package://rt_safe_rl/...`` resolves inside the package.
        joint_names: controlled joints in command order; empty = all actuated URDF joints in order.
        a_max_rad_s2: acceleration limits, one per joint or a single value for all.
        j_max_rad_s3: jerk limits, one per joint or a single value for all.
        kp, kd: PD gains of the position-controlled robot (effort model), per joint or single.
        overrides: per-joint limit/gain overrides keyed by joint name.
        monitored_points: points watched by speed-and-separation monitoring and the workspace box.
        payload_kg: payload mass including tool (power-and-force limiting effective mass).
    """

    urdf: str = 'package://rt_safe_rl/description/arm7.urdf'
    joint_names: list[str] = field(default_factory=list)
    a_max_rad_s2: list[float] = field(default_factory=lambda: list(PANDA_ACC_RAD_S2))
    j_max_rad_s3: list[float] = field(default_factory=lambda: list(PANDA_JERK_RAD_S3))
    kp: list[float] = field(default_factory=lambda: list(PANDA_KP))
    kd: list[float] = field(default_factory=lambda: list(PANDA_KD))
    overrides: dict[str, JointLimitOverride] = field(default_factory=dict)
    monitored_points: list[MonitoredPoint] = field(default_factory=_default_points)
    payload_kg: float = 1.0

    def __post_init__(self) -> None:
        if self.payload_kg < 0 or not math.isfinite(self.payload_kg):
            raise ConfigError(f'payload_kg must be finite and >= 0, got {self.payload_kg}')
        names = [p.name for p in self.monitored_points]
        if len(set(names)) != len(names):
            raise ConfigError(f'monitored_points: duplicate point names in {names}')


# --------------------------------------------------------------------------------------------


def _per_joint(values: list[float] | tuple[float, ...], n: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size not in (1, n):
        raise ConfigError(f'robot.{what}: expected 1 or {n} values (one per joint), got {arr.size}')
    if arr.size == 1:
        arr = np.full(n, float(arr[0]))
    return arr.copy()


def _rpy_xyz_matrix(origin: np.ndarray | None) -> np.ndarray:
    return np.eye(4) if origin is None else np.asarray(origin, dtype=np.float64).copy()


def _controlled_joints(robot: Robot, cfg: RobotConfig, joints: dict[str, Joint], where: str) -> list[str]:
    """The controlled joints in command order (``cfg.joint_names`` or the URDF's actuated, non-mimic
    joints), checked. Not RT-safe.

    Raises:
        ConfigError: none, unknown, not actuated or duplicate names; overrides of unknown joints.
    """
    actuated = [
        j.name for j in robot.joints if j.type in ('revolute', 'continuous', 'prismatic') and j.mimic is None
    ]
    names = list(cfg.joint_names) if cfg.joint_names else actuated
    if not names:
        raise ConfigError(f'{where}: no actuated joints')
    for jn in names:
        if jn not in joints:
            raise ConfigError(f'robot.joint_names: joint {jn!r} not in {where} (has {sorted(joints)})')
        if joints[jn].type not in ('revolute', 'continuous', 'prismatic'):
            raise ConfigError(f'robot.joint_names: joint {jn!r} is {joints[jn].type}, not actuated')
    if len(set(names)) != len(names):
        raise ConfigError(f'robot.joint_names: duplicates in {names}')
    unknown = sorted(set(cfg.overrides) - set(names))
    if unknown:
        raise ConfigError(f'robot.overrides: unknown joint(s) {unknown}; joints: {names}')
    return names


# RobotModel limit field -> JointLimitOverride field
_OVERRIDE_FIELDS = (
    ('q_min', 'q_min_rad'),
    ('q_max', 'q_max_rad'),
    ('v_max', 'v_max_rad_s'),
    ('a_max', 'a_max_rad_s2'),
    ('j_max', 'j_max_rad_s3'),
    ('effort_max', 'effort_max_nm'),
    ('kp', 'kp'),
    ('kd', 'kd'),
)


def _joint_limits(joints: dict[str, Joint], names: list[str], cfg: RobotConfig) -> dict[str, np.ndarray]:
    """Per-joint limits and gains (the RobotModel fields q_min, q_max [rad], v_max [rad/s], a_max
    [rad/s^2], j_max [rad/s^3], effort_max [Nm], kp, kd) from the URDF, the config lists and the
    overrides, unchecked (NaN: missing in the URDF). Not RT-safe.

    Raises:
        ConfigError: a config list of the wrong size.
    """
    n = len(names)
    q_min = np.empty(n)
    q_max = np.empty(n)
    v_max = np.empty(n)
    eff = np.empty(n)
    for i, jn in enumerate(names):
        j = joints[jn]
        lim = j.limit
        if j.type == 'continuous':
            q_min[i], q_max[i] = -np.inf, np.inf
        else:
            if lim is None or lim.lower is None or lim.upper is None:
                q_min[i], q_max[i] = np.nan, np.nan
            else:
                q_min[i], q_max[i] = float(lim.lower), float(lim.upper)
        v_max[i] = float(lim.velocity) if lim is not None and lim.velocity else np.nan
        eff[i] = float(lim.effort) if lim is not None and lim.effort else np.inf
    limits = {
        'q_min': q_min,
        'q_max': q_max,
        'v_max': v_max,
        'a_max': _per_joint(cfg.a_max_rad_s2, n, 'a_max_rad_s2'),
        'j_max': _per_joint(cfg.j_max_rad_s3, n, 'j_max_rad_s3'),
        'effort_max': eff,
        'kp': _per_joint(cfg.kp, n, 'kp'),
        'kd': _per_joint(cfg.kd, n, 'kd'),
    }
    for jn, ov in cfg.overrides.items():
        i = names.index(jn)
        for field_name, attr in _OVERRIDE_FIELDS:
            val = getattr(ov, attr)
            if val is not None:
                limits[field_name][i] = float(val)
    return limits


def _check_limits(names: list[str], limits: dict[str, np.ndarray], where: str) -> None:
    """Raise ConfigError for a joint with missing or inconsistent limits (see :func:`_joint_limits`)."""
    q_min, q_max, eff, kp, kd = (limits[k] for k in ('q_min', 'q_max', 'effort_max', 'kp', 'kd'))
    for i, jn in enumerate(names):
        if np.isnan(q_min[i]) or np.isnan(q_max[i]):
            raise ConfigError(f'{where}: joint {jn!r} has no position limits (set robot.overrides.{jn})')
        if not q_min[i] < q_max[i]:
            raise ConfigError(f'joint {jn!r}: lower limit {q_min[i]} must be < upper {q_max[i]}')
        for label, key in (('velocity', 'v_max'), ('acceleration', 'a_max'), ('jerk', 'j_max')):
            arr = limits[key]
            if not (np.isfinite(arr[i]) and arr[i] > 0):
                raise ConfigError(
                    f'joint {jn!r}: {label} limit must be finite and > 0, got {arr[i]}'
                    f' (set robot.overrides.{jn})'
                )
        if not eff[i] > 0:
            raise ConfigError(f'joint {jn!r}: effort limit must be > 0, got {eff[i]}')
        if not (np.isfinite(kp[i]) and kp[i] >= 0 and np.isfinite(kd[i]) and kd[i] >= 0):
            raise ConfigError(f'joint {jn!r}: kp/kd must be finite and >= 0')


def _frame_names(
    robot: Robot, cfg: RobotConfig, child_joint: dict[str, Joint], where: str
) -> tuple[str, list[str]]:
    """The root link and the frames FK needs: the links on the root paths of the monitored links,
    parents before children. Not RT-safe.

    Raises:
        ConfigError: not exactly one root link; a monitored link not in the URDF.
    """
    links = {lk.name: lk for lk in robot.links}
    roots = [lk.name for lk in robot.links if lk.name not in child_joint]
    if len(roots) != 1:
        raise ConfigError(f'{where}: expected one root link, found {roots}')
    root = roots[0]
    needed: list[str] = []
    for pt in cfg.monitored_points:
        if pt.link not in links:
            raise ConfigError(f'robot.monitored_points: link {pt.link!r} (point {pt.name!r}) not in {where}')
        chain = []
        lk = pt.link
        while lk != root:
            chain.append(lk)
            lk = child_joint[lk].parent
        for c in reversed(chain):
            if c not in needed:
                needed.append(c)
    return root, needed  # root paths are already ordered parents first


_JOINT_TYPE = {'revolute': JT_REVOLUTE, 'continuous': JT_REVOLUTE, 'prismatic': JT_PRISMATIC}


def _compile_chain(
    frame_names: list[str], child_joint: dict[str, Joint], root: str, names: list[str]
) -> dict[str, np.ndarray]:
    """The flat kinematic-chain arrays of the RobotModel fields parent, origin, jtype, qidx, mult,
    offs, axis and ancestor (one row per frame, see :mod:`rt_safe_rl.core.kinematics`). Not RT-safe."""
    index = {name: f for f, name in enumerate(frame_names)}
    nf = len(frame_names)
    parent = np.full(nf, -1, dtype=np.int64)
    origin = np.zeros((nf, 4, 4))
    jtype = np.zeros(nf, dtype=np.int64)
    qidx = np.full(nf, -1, dtype=np.int64)
    mult = np.ones(nf)
    offs = np.zeros(nf)
    axis = np.zeros((nf, 3))
    for f, lk in enumerate(frame_names):
        j = child_joint[lk]
        parent[f] = index[j.parent] if j.parent != root else -1
        origin[f] = _rpy_xyz_matrix(j.origin)
        ax = np.asarray(j.axis if j.axis is not None else (1.0, 0.0, 0.0), dtype=np.float64)
        nrm = float(np.linalg.norm(ax))
        axis[f] = ax / nrm if nrm > 0 else ax
        jt = _JOINT_TYPE.get(j.type, JT_FIXED)
        jtype[f] = jt
        src = j.name
        if j.mimic is not None:
            src = j.mimic.joint
            mult[f] = float(j.mimic.multiplier if j.mimic.multiplier is not None else 1.0)
            offs[f] = float(j.mimic.offset if j.mimic.offset is not None else 0.0)
        if jt != JT_FIXED and src in names:
            qidx[f] = names.index(src)
    ancestor = np.zeros((nf, nf), dtype=np.bool_)
    for f in range(nf):
        g = f
        while g >= 0:
            ancestor[f, g] = True
            g = int(parent[g])
    return {
        'parent': parent,
        'origin': origin,
        'jtype': jtype,
        'qidx': qidx,
        'mult': mult,
        'offs': offs,
        'axis': axis,
        'ancestor': ancestor,
    }


@dataclass
class RobotModel:
    """Compiled robot: limits (numpy, per joint in command order) and FK of monitored points.

    Attributes (arrays of shape (n_joints,)): q_min, q_max [rad], v_max [rad/s], a_max [rad/s^2],
    j_max [rad/s^3], effort_max [Nm] (inf = no limit), kp, kd (PD model gains).
    Continuous joints get q_min = -inf, q_max = +inf.
    """

    name: str
    joint_names: list[str]
    q_min: np.ndarray
    q_max: np.ndarray
    v_max: np.ndarray
    a_max: np.ndarray
    j_max: np.ndarray
    effort_max: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    point_names: list[str]
    point_radius_m: np.ndarray
    moving_mass_kg: float
    payload_kg: float
    # compiled kinematic chain
    parent: np.ndarray
    origin: np.ndarray
    jtype: np.ndarray
    qidx: np.ndarray
    mult: np.ndarray
    offs: np.ndarray
    axis: np.ndarray
    pt_frame: np.ndarray
    pt_offset: np.ndarray
    ancestor: np.ndarray
    frame_names: list[str]
    _frames: np.ndarray = dataclasses.field(repr=False, default_factory=lambda: np.zeros((0, 4, 4)))

    def __post_init__(self) -> None:
        self._frames = np.zeros((self.parent.shape[0], 4, 4))
        for f in range(self._frames.shape[0]):
            self._frames[f] = np.eye(4)

    @property
    def n_joints(self) -> int:
        """Number of controlled joints."""
        return len(self.joint_names)

    @property
    def n_points(self) -> int:
        """Number of monitored points."""
        return len(self.point_names)

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: RobotConfig, base: Path | None = None) -> RobotModel:
        """Resolve ``config.urdf`` (package:// or relative to `base`) and build the model."""
        return cls.from_urdf(resolve(config.urdf, base), config)

    @classmethod
    def from_urdf(cls, path: str | Path, config: RobotConfig | None = None) -> RobotModel:
        """Parse a URDF file and compile the model. Not RT-safe (parses XML, allocates).

        Raises:
            ConfigError: file missing/unparsable, unknown joint/link names, missing velocity
                limits, inconsistent limits (lower > upper, non-positive v/a/j), bad list sizes.
        """
        cfg = config or RobotConfig()
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f'robot.urdf: file not found: {p}')
        urdf = read_urdf(p)
        return cls._compile(urdf, cfg, str(p))

    @classmethod
    def from_urdf_string(
        cls, text: str, config: RobotConfig | None = None, where: str = '<urdf string>'
    ) -> RobotModel:
        """Like :meth:`from_urdf` for URDF XML text (generated robots, tests). Not RT-safe."""
        cfg = config or RobotConfig()
        urdf = parse_urdf(text, where)
        return cls._compile(urdf, cfg, where)

    @classmethod
    def _compile(cls, robot: Robot, cfg: RobotConfig, where: str) -> RobotModel:
        joints = {j.name: j for j in robot.joints}
        child_joint = {j.child: j for j in robot.joints}
        names = _controlled_joints(robot, cfg, joints, where)
        limits = _joint_limits(joints, names, cfg)
        _check_limits(names, limits, where)
        root, frame_names = _frame_names(robot, cfg, child_joint, where)
        chain = _compile_chain(frame_names, child_joint, root, names)
        index = {name: f for f, name in enumerate(frame_names)}
        pt_frame = np.array([index[pt.link] for pt in cfg.monitored_points], dtype=np.int64)
        pt_offset = np.array([list(pt.offset_m) for pt in cfg.monitored_points], dtype=np.float64).reshape(
            -1, 3
        )
        radius = np.array([pt.radius_m for pt in cfg.monitored_points], dtype=np.float64)
        mass = 0.0
        for link in robot.links:
            if link.name != root and link.inertial is not None and link.inertial.mass is not None:
                mass += float(link.inertial.mass)
        return cls(
            name=str(robot.name),
            joint_names=names,
            q_min=limits['q_min'],
            q_max=limits['q_max'],
            v_max=limits['v_max'],
            a_max=limits['a_max'],
            j_max=limits['j_max'],
            effort_max=limits['effort_max'],
            kp=limits['kp'],
            kd=limits['kd'],
            point_names=[pt.name for pt in cfg.monitored_points],
            point_radius_m=radius,
            moving_mass_kg=mass,
            payload_kg=float(cfg.payload_kg),
            parent=chain['parent'],
            origin=chain['origin'],
            jtype=chain['jtype'],
            qidx=chain['qidx'],
            mult=chain['mult'],
            offs=chain['offs'],
            axis=chain['axis'],
            pt_frame=pt_frame,
            pt_offset=pt_offset,
            ancestor=chain['ancestor'],
            frame_names=frame_names,
        )

    # ---- per-cycle kinematics (RT-safe) ------------------------------------------------
    def new_workspace(self) -> np.ndarray:
        """A fresh (F,4,4) frame buffer for FK in another thread. Allocates (call at configure)."""
        return np.zeros_like(self._frames)

    def fk_points(self, q: np.ndarray, out: np.ndarray, frames: np.ndarray | None = None) -> np.ndarray:
        """World positions of the monitored points at joint positions `q` into `out` (M,3) [m].

        RT-safe: numba kernel over preallocated buffers (pass `frames` from :meth:`new_workspace`
        when calling from a second thread). Returns `out`.
        """
        fr = self._frames if frames is None else frames
        fk_frames_kernel(
            q, self.parent, self.origin, self.jtype, self.qidx, self.mult, self.offs, self.axis, fr
        )
        points_kernel(fr, self.pt_frame, self.pt_offset, out)
        return out

    def fk_points_jacobian(
        self, q: np.ndarray, out_p: np.ndarray, out_j: np.ndarray, frames: np.ndarray | None = None
    ) -> None:
        """Monitored points (M,3) [m] and their positional Jacobians (M,3,N) [m/rad]. RT-safe."""
        fr = self._frames if frames is None else frames
        fk_frames_kernel(
            q, self.parent, self.origin, self.jtype, self.qidx, self.mult, self.offs, self.axis, fr
        )
        points_kernel(fr, self.pt_frame, self.pt_offset, out_p)
        jacobian_kernel(
            fr, self.jtype, self.qidx, self.mult, self.axis, self.pt_frame, self.ancestor, out_p, out_j
        )

    def home(self) -> np.ndarray:
        """A safe default configuration: mid-range per joint (Panda ready pose for arm7). Allocates."""
        if self.name == 'arm7' and self.n_joints == 7:
            return np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
        mid = 0.5 * (self.q_min + self.q_max)
        return np.where(np.isfinite(mid), mid, 0.0)
