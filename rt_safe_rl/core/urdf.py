"""A small URDF reader: what :class:`~rt_safe_rl.core.robot_model.RobotModel` needs, nothing else.

Reads with the standard library (``xml.etree.ElementTree``; no lxml, trimesh or mesh loading): the
robot name; links (name, inertial mass); joints (name, type, parent, child, origin xyz/rpy as a 4x4
transform, axis, limit lower/upper/velocity/effort, mimic joint/multiplier/offset). Geometry,
materials, transmissions, gazebo tags and anything else are ignored.

The values are those yourdfpy gives for the same file (a test compares FK and limits): a missing
``<origin>`` is None (identity), a missing ``<axis>`` is ``[1, 0, 0]``, a missing limit attribute
is None, a missing mimic multiplier / offset is 1 / 0, the origin transform is ``T(xyz) R`` with
``R = Rz(yaw) Ry(pitch) Rx(roll)`` (URDF's fixed-axis roll-pitch-yaw).

Hardened like defusedxml for what a URDF never needs: a document with a ``<!DOCTYPE`` or
``<!ENTITY`` declaration (entity expansion, external entities) is refused before parsing. Errors
are one line (:class:`~rt_safe_rl.core.errors.ConfigError`) naming the file and what is wrong.

Not RT code (configure time).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rt_safe_rl.core.errors import ConfigError

JOINT_TYPES = ('revolute', 'continuous', 'prismatic', 'fixed', 'floating', 'planar')
_DTD = re.compile(r'<!\s*(DOCTYPE|ENTITY)', re.IGNORECASE)


@dataclass
class Limit:
    """``<limit>``: None where the attribute is absent (rad or m; rad/s or m/s; N*m or N)."""

    lower: float | None = None
    upper: float | None = None
    velocity: float | None = None
    effort: float | None = None


@dataclass
class Mimic:
    """``<mimic>``: q = multiplier * q[joint] + offset."""

    joint: str
    multiplier: float = 1.0
    offset: float = 0.0


@dataclass
class Inertial:
    """``<inertial>``: only the mass (kg) is read; None when ``<mass>`` is absent."""

    mass: float | None = None


@dataclass
class Link:
    """``<link>``."""

    name: str
    inertial: Inertial | None = None


@dataclass
class Joint:
    """``<joint>``; `origin` is a 4x4 float64 transform parent -> joint frame (None = identity)."""

    name: str
    type: str
    parent: str
    child: str
    origin: np.ndarray | None = None
    axis: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    limit: Limit | None = None
    mimic: Mimic | None = None


@dataclass
class Robot:
    """``<robot>``: links and joints in document order."""

    name: str
    links: list[Link] = field(default_factory=list)
    joints: list[Joint] = field(default_factory=list)


def rpy_xyz_matrix(xyz: tuple[float, float, float], rpy: tuple[float, float, float]) -> np.ndarray:
    """4x4 transform ``T(xyz) @ Rz(y) Ry(p) Rx(r)`` (float64), element for element as
    ``trimesh.transformations.compose_matrix(translate=xyz, angles=rpy)``."""
    ai, aj, ak = rpy
    si, sj, sk = math.sin(ai), math.sin(aj), math.sin(ak)
    ci, cj, ck = math.cos(ai), math.cos(aj), math.cos(ak)
    cc, cs = ci * ck, ci * sk
    sc, ss = si * ck, si * sk
    m = np.eye(4)
    m[0, 0], m[0, 1], m[0, 2] = cj * ck, sj * sc - cs, sj * cc + ss
    m[1, 0], m[1, 1], m[1, 2] = cj * sk, sj * ss + cc, sj * cs - sc
    m[2, 0], m[2, 1], m[2, 2] = -sj, cj * si, cj * ci
    m[0, 3], m[1, 3], m[2, 3] = xyz
    return m


def read_urdf(path: str | Path) -> Robot:
    """Parse the URDF file at `path`.

    Raises:
        ConfigError: unreadable file, not UTF-8, a DOCTYPE / ENTITY declaration, malformed XML or a
            URDF element missing what it must have (one line naming the file).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ConfigError(f'robot.urdf: cannot read {p}: {err.strerror or err}') from None
    try:
        text = raw.decode('utf-8-sig')
    except UnicodeDecodeError as err:
        raise ConfigError(f'robot.urdf: {p} is not UTF-8 text (byte {err.start})') from None
    return parse_urdf(text, str(p))


def parse_urdf(text: str, where: str = '<urdf string>') -> Robot:
    """Parse URDF XML text; `where` names the source in errors. Raises ConfigError (see :func:`read_urdf`)."""
    m = _DTD.search(text)
    if m:
        line = text.count('\n', 0, m.start()) + 1
        raise ConfigError(
            f'robot.urdf: {where} line {line}: <!{m.group(1).upper()} declarations are refused '
            '(entity expansion / external entities); a URDF needs none'
        )
    parser = ET.XMLParser()
    try:
        parser.feed(text)
        root = parser.close()
    except ET.ParseError as err:
        raise ConfigError(f'robot.urdf: cannot parse {where}: {err}') from None
    if _local(root.tag) != 'robot':
        raise ConfigError(f'robot.urdf: {where}: the root element is <{_local(root.tag)}>, not <robot>')
    try:
        return _robot(root)
    except _UrdfError as err:
        raise ConfigError(f'robot.urdf: {where}: {err}') from None


class _UrdfError(Exception):
    """A structural problem in the document (the message says which element)."""


def _local(tag: str) -> str:
    return tag.rsplit('}', 1)[-1] if isinstance(tag, str) else ''


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _float(el: ET.Element, attr: str, what: str, default: float | None = None) -> float | None:
    v = el.get(attr)
    if v is None:
        return default
    try:
        return float(v)
    except ValueError:
        raise _UrdfError(f'{what}: {attr}="{v}" is not a number') from None


def _float_or(el: ET.Element, attr: str, what: str, default: float) -> float:
    v = _float(el, attr, what)
    return default if v is None else v


def _vec3(el: ET.Element, attr: str, default: str, what: str) -> tuple[float, float, float]:
    v = el.get(attr, default)
    parts = v.split()
    try:
        vals = [float(x) for x in parts]
    except ValueError:
        raise _UrdfError(f'{what}: {attr}="{v}" is not 3 numbers') from None
    if len(vals) != 3:
        raise _UrdfError(f'{what}: {attr}="{v}" is not 3 numbers')
    return vals[0], vals[1], vals[2]


def _name(el: ET.Element, what: str) -> str:
    n = el.get('name')
    if not n:
        raise _UrdfError(f'a <{what}> without a name')
    return n


def _robot(root: ET.Element) -> Robot:
    robot = Robot(name=root.get('name', ''))
    for el in _children(root, 'link'):
        name = _name(el, 'link')
        inertial = None
        iel = _child(el, 'inertial')
        if iel is not None:
            mel = _child(iel, 'mass')
            inertial = Inertial(
                mass=None if mel is None else _float_or(mel, 'value', f'link {name!r} mass', 0.0)
            )
        robot.links.append(Link(name, inertial))
    for el in _children(root, 'joint'):
        robot.joints.append(_joint(el))
    return robot


def _joint(el: ET.Element) -> Joint:
    name = _name(el, 'joint')
    what = f'joint {name!r}'
    jtype = el.get('type', '')
    if jtype not in JOINT_TYPES:
        raise _UrdfError(f'{what}: type {jtype!r} is not one of {list(JOINT_TYPES)}')
    links = []
    for tag in ('parent', 'child'):
        c = _child(el, tag)
        if c is None or not c.get('link'):
            raise _UrdfError(f'{what}: no <{tag} link="..."/>')
        links.append(str(c.get('link')))
    joint = Joint(name=name, type=jtype, parent=links[0], child=links[1])
    o = _child(el, 'origin')
    if o is not None:
        joint.origin = rpy_xyz_matrix(
            _vec3(o, 'xyz', '0 0 0', f'{what} origin'), _vec3(o, 'rpy', '0 0 0', f'{what} origin')
        )
    a = _child(el, 'axis')
    if a is not None:
        joint.axis = np.array(_vec3(a, 'xyz', '1 0 0', f'{what} axis'), dtype=np.float64)
    lim = _child(el, 'limit')
    if lim is not None:
        joint.limit = Limit(
            lower=_float(lim, 'lower', f'{what} limit'),
            upper=_float(lim, 'upper', f'{what} limit'),
            velocity=_float(lim, 'velocity', f'{what} limit'),
            effort=_float(lim, 'effort', f'{what} limit'),
        )
    mim = _child(el, 'mimic')
    if mim is not None:
        if not mim.get('joint'):
            raise _UrdfError(f'{what}: <mimic> without joint=')
        joint.mimic = Mimic(
            joint=str(mim.get('joint')),
            multiplier=_float_or(mim, 'multiplier', f'{what} mimic', 1.0),
            offset=_float_or(mim, 'offset', f'{what} mimic', 0.0),
        )
    return joint


def chain_urdf(n_joints: int, name: str = 'chain', link_length_m: float = 0.1) -> str:
    """URDF text of a serial chain of `n_joints` revolute joints with alternating z/y axes.

    Used by benchmarks and tests to build robots of any size (e.g. 29 joints like a humanoid).
    Limits: +-2.5 rad, 2 rad/s, 50 Nm. Each link carries 1 kg.
    """
    parts = [f'<?xml version="1.0"?>\n<robot name="{name}">', '<link name="base_link"/>']
    for i in range(1, n_joints + 1):
        ax = '0 0 1' if i % 2 else '0 1 0'
        parts.append(
            f'<link name="link{i}"><inertial><mass value="1.0"/>'
            '<inertia ixx="0.01" ixy="0" ixz="0" iyy="0.01" iyz="0" izz="0.01"/></inertial></link>'
        )
        prev = 'base_link' if i == 1 else f'link{i - 1}'
        z = 0.0 if i == 1 else link_length_m
        parts.append(
            f'<joint name="j{i}" type="revolute"><parent link="{prev}"/><child link="link{i}"/>'
            f'<origin xyz="0 0 {z}" rpy="0 0 0"/><axis xyz="{ax}"/>'
            '<limit lower="-2.5" upper="2.5" velocity="2.0" effort="50"/></joint>'
        )
    parts.append('</robot>\n')
    return '\n'.join(parts)
