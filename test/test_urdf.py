"""The Allegro v4 URDF files: generated from the figures, valid, and the left one a true mirror."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yourdfpy
from scipy.spatial.transform import Rotation

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.models.urdf_writer import allegro_v4_urdf, write_allegro_v4_urdf

URDF_DIR = Path(__file__).resolve().parents[1] / 'urdf'
SIDES = ('right', 'left')
M = np.diag([1.0, -1.0, 1.0])  # the mirror of the left hand (y -> -y)

# Figures of ALLEGRO_V4.md (right hand): joint -> (parent, child, xyz, rpy, axis, lower, upper).
_FINGER = ((0.0164, -0.196, 1.61), (0.054, -0.174, 1.709), (0.0384, -0.227, 1.618))
FIGURES = {
    'ah_joint00': ('ah_palm_link', 'ah_link_00', (-0.0182, 0.019333, -0.045987),
                   (0, -1.65806279, -1.57079633), (-1, 0, 0), 0.263, 1.396),
    'ah_joint01': ('ah_link_00', 'ah_link_01', (-0.027, 0.005, 0.0399), (0, 0, 0), (0, 0, 1),
                   -0.105, 1.163),
    'ah_joint02': ('ah_link_01', 'ah_link_02', (0, 0, 0.0177), (0, 0, 0), (0, 1, 0),
                   -0.189, 1.644),
    'ah_joint03': ('ah_link_02', 'ah_link_03', (0, 0, 0.0514), (0, 0, 0), (0, 1, 0),
                   -0.162, 1.719),
}
for _f, (_y, _roll) in enumerate(((0.0435, -0.08726646), (0.0, 0.0), (-0.0435, 0.08726646)),
                                 start=1):
    FIGURES[f'ah_joint{_f}0'] = ('ah_palm_link', f'ah_link_{_f}0', (0, _y, 0), (_roll, 0, 0),
                                 (0, 0, 1), -0.47, 0.47)
    for _k, (_z, _lo, _hi) in enumerate(_FINGER, start=1):
        FIGURES[f'ah_joint{_f}{_k}'] = (f'ah_link_{_f}{_k - 1}', f'ah_link_{_f}{_k}', (0, 0, _z),
                                        (0, 0, 0), (0, 1, 0), _lo, _hi)
TIPS = {'ah_joint03_tip': ('ah_link_03', 'ah_link_04', 0.0267),
        **{f'ah_joint{f}3_tip': (f'ah_link_{f}3', f'ah_link_{f}4', 0.0267) for f in (1, 2, 3)}}


def _load(side: str) -> yourdfpy.URDF:
    return yourdfpy.URDF.load(str(URDF_DIR / f'allegro_hand_{side}.urdf'),
                              build_scene_graph=True, load_meshes=False)


@pytest.fixture(scope='module')
def robots() -> dict[str, yourdfpy.URDF]:
    return {side: _load(side) for side in SIDES}


@pytest.mark.parametrize('side', SIDES)
def test_committed_file_is_the_writer_output(side):
    committed = (URDF_DIR / f'allegro_hand_{side}.urdf').read_text(encoding='utf-8')
    assert committed == allegro_v4_urdf(side), \
        'regenerate: python -m handypriors_ros.core.models.urdf_writer urdf/'


def test_write_is_atomic_and_identical(tmp_path):
    path = write_allegro_v4_urdf(tmp_path / 'sub' / 'hand.urdf', 'left', prefix='xy_')
    assert path.read_text(encoding='utf-8') == allegro_v4_urdf('left', 'xy_')
    assert [p.name for p in path.parent.iterdir()] == ['hand.urdf']  # no temporary left over


@pytest.mark.parametrize('side', SIDES)
def test_parses_and_validates(robots, side):
    robot = robots[side]
    assert robot.validate(), robot.errors
    link_names = {link.name for link in robot.robot.links}
    expected = {'ah_base_link', 'ah_palm_link'} | {f'ah_link_{f}{k}' for f in range(4)
                                                   for k in range(5)}
    assert link_names == expected
    children = {j.child for j in robot.robot.joints}
    assert link_names - children == {'ah_base_link'}  # one root
    assert len(children) == len(robot.robot.joints)  # each link has at most one parent
    assert robot.actuated_joint_names == [f'ah_joint{f}{k}' for f in range(4) for k in range(4)]
    fixed = sorted(j.name for j in robot.robot.joints if j.type == 'fixed')
    assert fixed == sorted(['ah_palm_joint', *TIPS])


@pytest.mark.parametrize('side', SIDES)
def test_xml_structure_for_robot_state_publisher(side):
    root = ET.fromstring((URDF_DIR / f'allegro_hand_{side}.urdf').read_bytes())
    assert root.tag == 'robot' and root.get('name') == f'allegro_hand_{side}'
    for link in root.iter('link'):
        assert link.get('name')
    for joint in root.iter('joint'):
        assert joint.get('name') and joint.get('type') in ('revolute', 'fixed')
        for tag in ('parent', 'child'):
            assert joint.find(tag).get('link')
        origin = joint.find('origin')
        assert len(origin.get('xyz').split()) == 3 and len(origin.get('rpy').split()) == 3
        if joint.get('type') == 'revolute':
            assert len(joint.find('axis').get('xyz').split()) == 3
            limit = joint.find('limit')
            assert {'lower', 'upper', 'effort', 'velocity'} <= set(limit.attrib)
    materials = {m.get('name') for m in root.findall('material')}
    for visual in root.iter('visual'):
        assert visual.find('material').get('name') in materials


def test_right_joints_match_the_figures(robots):
    joints = robots['right'].joint_map
    for name, (parent, child, xyz, rpy, axis, lower, upper) in FIGURES.items():
        joint = joints[name]
        assert (joint.type, joint.parent, joint.child) == ('revolute', parent, child), name
        np.testing.assert_allclose(joint.origin[:3, 3], xyz, atol=1e-12, err_msg=name)
        R = Rotation.from_euler('xyz', rpy).as_matrix()  # URDF rpy: fixed axes x, y, z
        np.testing.assert_allclose(joint.origin[:3, :3], R, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(joint.axis, axis, err_msg=name)
        assert (joint.limit.lower, joint.limit.upper) == (lower, upper), name
        assert (joint.limit.effort, joint.limit.velocity) == (15.0, 7.0), name
    for name, (parent, child, z) in TIPS.items():
        joint = joints[name]
        assert (joint.type, joint.parent, joint.child) == ('fixed', parent, child)
        np.testing.assert_allclose(joint.origin, np.array(
            [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, z], [0, 0, 0, 1]]), atol=1e-12)
    np.testing.assert_allclose(joints['ah_palm_joint'].origin[:3, 3], (0, 0, 0.095))


def _single_shape(robot: yourdfpy.URDF, link: str, kind: str = 'collisions'):
    (element,) = getattr(robot.link_map[link], kind)
    return element


def test_right_geometry_matches_the_figures(robots):
    robot = robots['right']
    palm = _single_shape(robot, 'ah_palm_link')
    np.testing.assert_allclose(palm.geometry.box.size, (0.0408, 0.1130, 0.095))
    np.testing.assert_allclose(palm.origin[:3, 3], (-0.0093, 0, -0.0475))
    base = _single_shape(robot, 'ah_link_00')
    np.testing.assert_allclose(base.geometry.box.size, (0.0358, 0.034, 0.0455))
    np.testing.assert_allclose(base.origin[:3, 3], (-0.0179, 0.017, 0.02275))
    lengths = {0: (None, 0.0177, 0.0514, 0.0423), 1: (0.0164, 0.054, 0.0384, 0.0267)}
    for f in range(4):
        for k in range(4):
            length = lengths[min(f, 1)][k]
            if length is None:
                continue
            box = _single_shape(robot, f'ah_link_{f}{k}')
            np.testing.assert_allclose(box.geometry.box.size, (0.0196, 0.0275, length))
            np.testing.assert_allclose(box.origin[:3, 3], (0, 0, length / 2))
        tip = _single_shape(robot, f'ah_link_{f}4')
        assert tip.geometry.sphere.radius == 0.012
        np.testing.assert_allclose(tip.origin, np.eye(4))
        assert _single_shape(robot, f'ah_link_{f}4', 'visuals').material.name == 'white'
    assert _single_shape(robot, 'ah_link_12', 'visuals').material.name == 'black'


@pytest.mark.parametrize('side', SIDES)
def test_visual_equals_collision_and_inertials_are_plausible(robots, side):
    for link in robots[side].robot.links:
        if link.name == 'ah_base_link':  # the root carries nothing (KDL ignores root inertia)
            assert not link.visuals and not link.collisions and link.inertial is None
            continue
        (visual,), (collision,) = link.visuals, link.collisions
        assert visual.geometry == collision.geometry
        np.testing.assert_allclose(visual.origin, collision.origin)
        mass = link.inertial.mass
        assert 0.005 < mass < 0.5, link.name
        moments = np.linalg.eigvalsh(link.inertial.inertia)
        assert np.all(moments > 0) and np.all(moments < 1e-2), link.name
        a, b, c = sorted(moments)
        assert a + b >= c * (1 - 1e-9), link.name  # triangle inequality of a physical body
        np.testing.assert_allclose(link.inertial.origin, visual.origin, err_msg=link.name)


def test_left_hand_is_the_mirror_of_the_right(robots):
    right, left = robots['right'], robots['left']
    for joint in right.robot.joints:
        mirrored = left.joint_map[joint.name]
        assert (mirrored.parent, mirrored.child, mirrored.type) == \
            (joint.parent, joint.child, joint.type)
        np.testing.assert_allclose(mirrored.origin[:3, 3], M @ joint.origin[:3, 3], atol=1e-12)
        np.testing.assert_allclose(mirrored.origin[:3, :3], M @ joint.origin[:3, :3] @ M,
                                   atol=1e-9)
        if joint.type == 'revolute':
            np.testing.assert_allclose(mirrored.axis, -M @ joint.axis)
            assert mirrored.limit == joint.limit
    for link in right.robot.links:
        for element, mirrored in zip(link.collisions, left.link_map[link.name].collisions):
            assert element.geometry == mirrored.geometry
            np.testing.assert_allclose(mirrored.origin[:3, 3], M @ element.origin[:3, 3])

    # Same joint vector: every posed link frame of the left hand is the mirror image
    # (positions y -> -y, rotations M R M, which keeps them proper rotations).
    rng = np.random.default_rng(1)
    limits = np.array([[j.limit.lower, j.limit.upper] for j in right.actuated_joints])
    for _ in range(3):
        q = rng.uniform(limits[:, 0], limits[:, 1])
        right.update_cfg(q)
        left.update_cfg(q)
        for link in right.link_map:
            T_r = right.get_transform(link, 'ah_base_link')
            T_l = left.get_transform(link, 'ah_base_link')
            np.testing.assert_allclose(T_l[:3, 3], M @ T_r[:3, 3], atol=1e-12)
            np.testing.assert_allclose(T_l[:3, :3], M @ T_r[:3, :3] @ M, atol=1e-9)
            assert np.linalg.det(T_l[:3, :3]) == pytest.approx(1.0)


def test_prefix_and_bad_arguments():
    text = allegro_v4_urdf('right', prefix='')
    assert 'name="base_link"' in text and 'name="joint00"' in text and 'ah_' not in text
    root = ET.fromstring(allegro_v4_urdf('left', prefix='r1_'))
    for element in (*root.iter('link'), *root.iter('joint')):
        assert element.get('name').startswith('r1_')
    for tag in ('parent', 'child'):
        assert all(e.get('link').startswith('r1_') for e in root.iter(tag))
    with pytest.raises(InputError, match="side: expected 'right' or 'left', got 'centre'"):
        allegro_v4_urdf('centre')
    with pytest.raises(InputError, match='prefix'):
        allegro_v4_urdf('right', prefix='a b')
