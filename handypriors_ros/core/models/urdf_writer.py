"""Writes the URDF of the Allegro Hand v4 (right or left) from its published figures.

The figures (joint origins, axes, limits, primitive geometry) are those of the makers' ROS 2
description, as listed in the project's ``ALLEGRO_V4.md``; the committed files
``urdf/allegro_hand_right.urdf`` and ``urdf/allegro_hand_left.urdf`` are this module's output:

    python -m handypriors_ros.core.models.urdf_writer urdf/

Tree: ``<p>base_link`` --fixed, z 0.095--> ``<p>palm_link`` --> four chains
``<p>link_F0 .. <p>link_F3`` (revolute joints ``<p>jointF0 .. <p>jointF3``) ending in a fixed tip
link ``<p>link_F4`` (joint ``<p>jointF3_tip``), with finger F = 0 thumb, 1 index, 2 middle,
3 ring. Geometry is made of primitives only (boxes, tip spheres), the same for visual and
collision, so the file needs no mesh package.

The left hand is the right hand mirrored across the palm's x-z plane (y -> -y). Every link frame
``R`` becomes ``M R M`` with ``M = diag(1, -1, 1)``, which keeps frames right-handed: origins
``(x, y, z) -> (x, -y, z)``, rpy ``(r, p, y) -> (-r, p, -y)``, joint axes
``(ax, ay, az) -> (-ax, ay, -az)``, geometry centres ``y -> -y``. With those axes, the same joint
vector poses the left hand as the exact mirror image of the right hand, and the limits stay as
they are.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from handypriors_ros.core.errors import InputError

Vec3 = tuple[float, float, float]

#: Finger numbering used in the joint and link names (0 thumb, 1 index, 2 middle, 3 ring).
FINGERS: tuple[str, ...] = ('thumb', 'index', 'middle', 'ring')

PALM_HEIGHT = 0.095  # base_link -> palm_link along z [m]
EFFORT_LIMIT = 15.0  # [N m], every revolute joint
VELOCITY_LIMIT = 7.0  # [rad/s], every revolute joint
TIP_RADIUS = 0.012  # fingertip sphere [m]
LINK_BOX_XY = (0.0196, 0.0275)  # cross-section of the phalanx boxes [m]


@dataclass(frozen=True)
class _Joint:
    """One revolute joint of a finger chain (parent link is the previous one in the chain)."""

    xyz: Vec3
    rpy: Vec3
    axis: Vec3
    lower: float
    upper: float


@dataclass(frozen=True)
class _Finger:
    """A finger: four revolute joints, the tip offset and the boxes of its four links."""

    joints: tuple[_Joint, _Joint, _Joint, _Joint]
    tip_xyz: Vec3
    # Per link F0..F3: (size xyz, centre xyz) of its box, in the link frame.
    boxes: tuple[tuple[Vec3, Vec3], ...]
    masses: tuple[float, float, float, float]


def _phalanx_box(length: float) -> tuple[Vec3, Vec3]:
    """A box of the phalanx cross-section, ``length`` long on z, from the joint at z = 0."""
    return (LINK_BOX_XY[0], LINK_BOX_XY[1], length), (0.0, 0.0, 0.5 * length)


_Y = (0.0, 1.0, 0.0)
_Z = (0.0, 0.0, 1.0)
_FINGER_LENGTHS = (0.0164, 0.054, 0.0384, 0.0267)  # link_F0 .. link_F3, also the joint offsets
_FINGER_MASSES = (0.0119, 0.065, 0.0355, 0.0096)  # [kg], link_F0 .. link_F3


def _long_finger(base_xyz: Vec3, base_rpy: Vec3) -> _Finger:
    """Index, middle and ring share everything but the base joint's origin."""
    lo = (-0.47, -0.196, -0.174, -0.227)
    hi = (0.47, 1.61, 1.709, 1.618)
    joints = (
        _Joint(base_xyz, base_rpy, _Z, lo[0], hi[0]),
        _Joint((0.0, 0.0, _FINGER_LENGTHS[0]), (0.0, 0.0, 0.0), _Y, lo[1], hi[1]),
        _Joint((0.0, 0.0, _FINGER_LENGTHS[1]), (0.0, 0.0, 0.0), _Y, lo[2], hi[2]),
        _Joint((0.0, 0.0, _FINGER_LENGTHS[2]), (0.0, 0.0, 0.0), _Y, lo[3], hi[3]),
    )
    return _Finger(joints, (0.0, 0.0, _FINGER_LENGTHS[3]),
                   tuple(_phalanx_box(length) for length in _FINGER_LENGTHS), _FINGER_MASSES)


#: The right hand, finger order thumb, index, middle, ring (ALLEGRO_V4.md).
_RIGHT_HAND: tuple[_Finger, ...] = (
    _Finger(
        joints=(
            _Joint((-0.0182, 0.019333, -0.045987), (0.0, -1.65806279, -1.57079633),
                   (-1.0, 0.0, 0.0), 0.263, 1.396),
            _Joint((-0.027, 0.005, 0.0399), (0.0, 0.0, 0.0), _Z, -0.105, 1.163),
            _Joint((0.0, 0.0, 0.0177), (0.0, 0.0, 0.0), _Y, -0.189, 1.644),
            _Joint((0.0, 0.0, 0.0514), (0.0, 0.0, 0.0), _Y, -0.162, 1.719),
        ),
        tip_xyz=(0.0, 0.0, 0.0267),
        boxes=(((0.0358, 0.034, 0.0455), (-0.0179, 0.017, 0.02275)),
               _phalanx_box(0.0177), _phalanx_box(0.0514), _phalanx_box(0.0423)),
        masses=(0.0176, 0.0119, 0.038, 0.0388),
    ),
    _long_finger((0.0, 0.0435, 0.0), (-0.08726646, 0.0, 0.0)),
    _long_finger((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    _long_finger((0.0, -0.0435, 0.0), (0.08726646, 0.0, 0.0)),
)

_PALM_BOX: tuple[Vec3, Vec3] = ((0.0408, 0.1130, 0.095), (-0.0093, 0.0, -0.0475))
_PALM_MASS = 0.4154  # [kg]
_TIP_MASS = 0.0168  # [kg]


class _Mirror:
    """Maps figures of the right hand to the left one (identity for the right hand)."""

    def __init__(self, left: bool) -> None:
        self.left = left

    def point(self, v: Vec3) -> Vec3:
        return (v[0], -v[1], v[2]) if self.left else v

    def rpy(self, v: Vec3) -> Vec3:
        # M Rz(y) Ry(p) Rx(r) M = Rz(-y) Ry(p) Rx(-r) for M = diag(1, -1, 1).
        return (-v[0], v[1], -v[2]) if self.left else v

    def axis(self, v: Vec3) -> Vec3:
        # M R(a, q) M = R(-M a, q): a reflection turns a rotation's axis into minus its image.
        return (-v[0], v[1], -v[2]) if self.left else v


def _num(x: float) -> str:
    """A figure as URDF text: up to 10 significant digits, no ``-0``."""
    return format(float(x) + 0.0, '.10g')


def _vec(v: Vec3) -> str:
    return ' '.join(_num(x) for x in v)


def _origin(parent: ET.Element, xyz: Vec3, rpy: Vec3 = (0.0, 0.0, 0.0)) -> None:
    ET.SubElement(parent, 'origin', xyz=_vec(xyz), rpy=_vec(rpy))


def _box_inertia(mass: float, size: Vec3) -> tuple[float, float, float]:
    """Principal moments of a solid box about its centre [kg m^2]."""
    x, y, z = size
    return (mass * (y * y + z * z) / 12, mass * (x * x + z * z) / 12,
            mass * (x * x + y * y) / 12)


def _inertial(link: ET.Element, mass: float, centre: Vec3, moments: Vec3) -> None:
    inertial = ET.SubElement(link, 'inertial')
    _origin(inertial, centre)
    ET.SubElement(inertial, 'mass', value=_num(mass))
    ET.SubElement(inertial, 'inertia', ixx=_num(moments[0]), ixy='0', ixz='0',
                  iyy=_num(moments[1]), iyz='0', izz=_num(moments[2]))


def _shape(link: ET.Element, centre: Vec3, material: str, *, box: Vec3 | None = None,
           sphere: float | None = None) -> None:
    """The same primitive as the link's visual (with a material) and its collision."""
    for tag in ('visual', 'collision'):
        element = ET.SubElement(link, tag)
        _origin(element, centre)
        geometry = ET.SubElement(element, 'geometry')
        if box is not None:
            ET.SubElement(geometry, 'box', size=_vec(box))
        else:
            ET.SubElement(geometry, 'sphere', radius=_num(sphere))
        if tag == 'visual':
            ET.SubElement(element, 'material', name=material)


def _box_link(robot: ET.Element, name: str, mass: float, size: Vec3, centre: Vec3) -> None:
    link = ET.SubElement(robot, 'link', name=name)
    _shape(link, centre, 'black', box=size)
    _inertial(link, mass, centre, _box_inertia(mass, size))


def _joint(robot: ET.Element, name: str, kind: str, parent: str, child: str, xyz: Vec3,
           rpy: Vec3 = (0.0, 0.0, 0.0), axis: Vec3 | None = None,
           limits: tuple[float, float] | None = None) -> None:
    joint = ET.SubElement(robot, 'joint', name=name, type=kind)
    ET.SubElement(joint, 'parent', link=parent)
    ET.SubElement(joint, 'child', link=child)
    _origin(joint, xyz, rpy)
    if axis is not None:
        ET.SubElement(joint, 'axis', xyz=_vec(axis))
    if limits is not None:
        ET.SubElement(joint, 'limit', lower=_num(limits[0]), upper=_num(limits[1]),
                      effort=_num(EFFORT_LIMIT), velocity=_num(VELOCITY_LIMIT))


def allegro_v4_urdf(side: str = 'right', prefix: str = 'ah_') -> str:
    """URDF text of the Allegro Hand v4.

    Args:
        side: ``'right'`` or ``'left'`` (the mirror image, see the module docstring).
        prefix: prepended to every link and joint name (``'ah_'`` gives ``ah_base_link``,
            ``ah_joint00``, ...); may be empty.
    Returns:
        The URDF document (str), with an XML declaration and a trailing newline.
    Raises:
        InputError: ``side`` is not right/left, or ``prefix`` is not a string usable in names.
    """
    if side not in ('right', 'left'):
        raise InputError(f"side: expected 'right' or 'left', got {side!r}")
    if not isinstance(prefix, str) or any(c.isspace() or c in '<>&"\'' for c in prefix):
        raise InputError(f'prefix: expected a string without spaces or XML special characters, '
                         f'got {prefix!r}')
    m = _Mirror(side == 'left')
    p = prefix
    robot = ET.Element('robot', name=f'allegro_hand_{side}')
    robot.append(ET.Comment(
        f' Allegro Hand v4, {side} hand. Written by handypriors_ros.core.models.urdf_writer '
        f'from the makers\' published figures; do not edit by hand. Metres, radians. '))
    for name, rgba in (('black', '0.2 0.2 0.2 1'), ('white', '0.9 0.9 0.9 1')):
        material = ET.SubElement(robot, 'material', name=name)
        ET.SubElement(material, 'color', rgba=rgba)

    ET.SubElement(robot, 'link', name=f'{p}base_link')
    palm_size, palm_centre = _PALM_BOX
    _box_link(robot, f'{p}palm_link', _PALM_MASS, palm_size, m.point(palm_centre))
    _joint(robot, f'{p}palm_joint', 'fixed', f'{p}base_link', f'{p}palm_link',
           (0.0, 0.0, PALM_HEIGHT))

    for f, finger in enumerate(_RIGHT_HAND):
        robot.append(ET.Comment(f' {FINGERS[f]} '))
        parent = f'{p}palm_link'
        for k, (jnt, (size, centre), mass) in enumerate(
                zip(finger.joints, finger.boxes, finger.masses)):
            child = f'{p}link_{f}{k}'
            _box_link(robot, child, mass, size, m.point(centre))
            _joint(robot, f'{p}joint{f}{k}', 'revolute', parent, child, m.point(jnt.xyz),
                   m.rpy(jnt.rpy), m.axis(jnt.axis), (jnt.lower, jnt.upper))
            parent = child
        tip = ET.SubElement(robot, 'link', name=f'{p}link_{f}4')
        _shape(tip, (0.0, 0.0, 0.0), 'white', sphere=TIP_RADIUS)
        moment = 0.4 * _TIP_MASS * TIP_RADIUS ** 2
        _inertial(tip, _TIP_MASS, (0.0, 0.0, 0.0), (moment, moment, moment))
        _joint(robot, f'{p}joint{f}3_tip', 'fixed', parent, f'{p}link_{f}4',
               m.point(finger.tip_xyz))

    ET.indent(robot, space='  ')
    return '<?xml version="1.0"?>\n' + ET.tostring(robot, encoding='unicode') + '\n'


def write_allegro_v4_urdf(path: str | os.PathLike, side: str = 'right',
                          prefix: str = 'ah_') -> Path:
    """Write :func:`allegro_v4_urdf` to ``path`` atomically (temporary file, then rename).

    Returns:
        The path written.
    """
    path = Path(path)
    text = allegro_v4_urdf(side, prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def main(argv: list[str] | None = None) -> int:
    """Write ``allegro_hand_right.urdf`` and ``allegro_hand_left.urdf`` into a folder."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument('out_dir', type=Path, help='folder to write the two URDF files into')
    parser.add_argument('--prefix', default='ah_', help="link/joint name prefix (default 'ah_')")
    args = parser.parse_args(argv)
    for side in ('right', 'left'):
        written = write_allegro_v4_urdf(args.out_dir / f'allegro_hand_{side}.urdf', side,
                                        args.prefix)
        print(written)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
