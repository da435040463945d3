"""HandKinematics: FK against yourdfpy and hand-computed figures, geometry, mesh loading, joint
name maps, input validation and gradients, the hand protocol (fingertip radius), CUDA."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
import yourdfpy
from scipy.spatial.transform import Rotation

from handypriors_ros.core.errors import InputError, ModelError
from handypriors_ros.core.models.joint_names import (
    allegro_joint_names,
    allegro_ros1_joint_names,
    joint_vector_from_state,
    ros1_to_ros2_name_map,
)
from handypriors_ros.core.models.hand import HandModel
from handypriors_ros.core.models.kinematics import HandKinematics, HandState, resolve_mesh_path

URDF_DIR = Path(__file__).resolve().parents[1] / 'urdf'
RIGHT = URDF_DIR / 'allegro_hand_right.urdf'
LEFT = URDF_DIR / 'allegro_hand_left.urdf'
F64 = torch.float64


@pytest.fixture(scope='module')
def hand() -> HandKinematics:
    return HandKinematics.from_urdf(RIGHT, dtype=F64, surface_points=500)


def _random_q(model: HandKinematics, batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    lower, upper = model.joint_limits.T
    u = torch.rand(batch, model.num_joints, generator=gen, dtype=model.dtype)
    return lower + (upper - lower) * u


def _random_T(batch: int, seed: int = 0) -> torch.Tensor:
    T = np.tile(np.eye(4), (batch, 1, 1))
    T[:, :3, :3] = Rotation.random(batch, random_state=seed).as_matrix()
    T[:, :3, 3] = np.random.default_rng(seed).normal(size=(batch, 3))
    return torch.as_tensor(T)


# -- forward kinematics ------------------------------------------------------------------------

@pytest.mark.parametrize('path', [RIGHT, LEFT])
def test_fk_matches_yourdfpy(path):
    model = HandKinematics.from_urdf(path, dtype=F64, surface_points=0)
    reference = yourdfpy.URDF.load(str(path), build_scene_graph=True, load_meshes=False)
    assert list(model.joint_names) == reference.actuated_joint_names
    q = _random_q(model, 6, seed=3)
    T_root_link = model.forward(q).T_root_link
    assert T_root_link.shape == (6, len(model.link_names), 4, 4)
    for b in range(6):
        reference.update_cfg(q[b].numpy())
        for i, link in enumerate(model.link_names):
            expected = reference.get_transform(link, 'ah_base_link')
            np.testing.assert_allclose(T_root_link[b, i].numpy(), expected, atol=1e-9,
                                       err_msg=link)


def test_zero_pose_fingertips_by_hand(hand):
    state = hand.forward(torch.zeros(1, 16, dtype=F64))
    assert hand.fingertip_links == ('ah_link_04', 'ah_link_14', 'ah_link_24', 'ah_link_34')
    palm = np.array([0.0, 0.0, 0.095])
    length = 0.0164 + 0.054 + 0.0384 + 0.0267  # finger offsets along the rotated z
    roll = 0.08726646  # index base rpy (-roll, 0, 0); ring (+roll, 0, 0)
    index = palm + [0, 0.0435, 0] + length * np.array([0, math.sin(roll), math.cos(roll)])
    middle = palm + [0, 0, length]
    ring = palm + [0, -0.0435, 0] + length * np.array([0, -math.sin(roll), math.cos(roll)])
    R_thumb = Rotation.from_euler('xyz', [0, -1.65806279, -1.57079633]).as_matrix()
    thumb = palm + [-0.0182, 0.019333, -0.045987] + R_thumb @ (
        np.array([-0.027, 0.005, 0.0399]) + [0, 0, 0.0177 + 0.0514 + 0.0267])
    expected = np.stack([thumb, index, middle, ring])
    np.testing.assert_allclose(state.fingertips[0].numpy(), expected, atol=1e-7)
    np.testing.assert_allclose(index, [0, 0.055309, 0.229985], atol=1e-6)  # figures sanity


def test_left_fingertips_mirror_right(hand):
    left = HandKinematics.from_urdf(LEFT, dtype=F64, surface_points=0)
    q = _random_q(hand, 4, seed=5)
    mirror = torch.tensor([1.0, -1.0, 1.0], dtype=F64)
    torch.testing.assert_close(left.forward(q).fingertips, hand.forward(q).fingertips * mirror)


def test_world_frame_and_state_fields(hand):
    q = _random_q(hand, 3, seed=1)
    T_world_base = _random_T(3, seed=2)
    root = hand.forward(q)
    world = hand.forward(q, T_world_base)
    assert isinstance(world, HandState)
    assert root.frame == 'ah_base_link' and root.T_world_link is None and world.frame == 'world'
    torch.testing.assert_close(world.T_root_link, root.T_root_link)
    torch.testing.assert_close(world.T_world_link, T_world_base[:, None] @ root.T_root_link)
    R, t = T_world_base[:, None, :3, :3], T_world_base[:, None, :3, 3]
    for name in ('fingertips', 'surface_points'):
        expected = (R @ getattr(root, name)[..., None])[..., 0] + t
        torch.testing.assert_close(getattr(world, name), expected)
    torch.testing.assert_close(world.surface_normals, (R @ root.surface_normals[..., None])[..., 0])
    tips = [hand.link_names.index(n) for n in hand.fingertip_links]
    torch.testing.assert_close(root.fingertips, root.T_root_link[:, tips, :3, 3])
    assert root.surface_points.shape == root.surface_normals.shape == (3, 500, 3)
    assert root.point_link_ids.shape == (500,) and root.point_link_ids.dtype == torch.int64


def test_surface_samples_lie_on_the_posed_mesh(hand):
    q = _random_q(hand, 1, seed=7)
    state = hand.forward(q)
    vertices, faces = hand.posed_mesh(q)
    mesh = trimesh.Trimesh(vertices[0].numpy(), faces.numpy(), process=False)
    points = state.surface_points[0].numpy()
    closest, distance, face = trimesh.proximity.closest_point(mesh, points)
    assert distance.max() < 1e-9
    normals = state.surface_normals[0].numpy()
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-12)
    # Where the closest face is unambiguous (not on an edge), its normal is the sample's.
    agree = np.einsum('ij,ij->i', normals, mesh.face_normals[face])
    assert np.mean(agree > 1 - 1e-9) > 0.95
    # Area weighting: the share of samples per link follows the share of area.
    ids = state.point_link_ids.numpy()
    area = np.bincount(hand.vertex_link_ids[faces[:, 0].long()].numpy(),
                       weights=mesh.area_faces, minlength=len(hand.link_names))
    palm = hand.link_index('ah_palm_link')
    assert abs(np.mean(ids == palm) - area[palm] / area.sum()) < 0.07


def test_sampling_is_seeded():
    a = HandKinematics.from_urdf(RIGHT, surface_points=100, seed=4).surface_points_link
    b = HandKinematics.from_urdf(RIGHT, surface_points=100, seed=4).surface_points_link
    c = HandKinematics.from_urdf(RIGHT, surface_points=100, seed=5).surface_points_link
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_posed_mesh_matches_yourdfpy_scene(hand):
    q = _random_q(hand, 2, seed=9)
    vertices, faces = hand.posed_mesh(q)
    assert vertices.shape == (2, hand.mesh_vertices_link.shape[0], 3) and vertices.dtype == F64
    assert faces.dtype == torch.int32 and faces.is_contiguous() and faces.shape[1] == 3
    assert int(faces.min()) == 0 and int(faces.max()) == vertices.shape[1] - 1
    reference = yourdfpy.URDF.load(str(RIGHT), build_scene_graph=True, load_meshes=True)
    reference.update_cfg(q[1].numpy())
    expected = reference.scene.bounds  # yourdfpy's own primitives, posed by its own FK
    np.testing.assert_allclose(vertices[1].numpy().min(0), expected[0], atol=1e-3)
    np.testing.assert_allclose(vertices[1].numpy().max(0), expected[1], atol=1e-3)


def test_link_mesh_and_description(hand):
    vertices, faces = hand.link_mesh('ah_palm_link')
    assert vertices.shape == (8, 3) and faces.shape == (12, 3) and faces.dtype == torch.int32
    np.testing.assert_allclose(vertices.numpy().max(0) - vertices.numpy().min(0),
                               (0.0408, 0.1130, 0.095))
    empty_v, empty_f = hand.link_mesh('ah_base_link')
    assert empty_v.shape == (0, 3) and empty_f.shape == (0, 3)
    assert hand.link_names[0] == hand.root_link == 'ah_base_link'
    assert hand.joint_names == allegro_joint_names()
    torch.testing.assert_close(hand.joint_limits[4], torch.tensor([-0.47, 0.47], dtype=F64))
    torch.testing.assert_close(hand.joint_limits[0], torch.tensor([0.263, 1.396], dtype=F64))
    with pytest.raises(InputError, match="link 'nope' is not in the model"):
        hand.link_index('nope')


def test_to_changes_dtype_and_keeps_values(hand):
    f32 = hand.to(dtype=torch.float32)
    assert f32.dtype == torch.float32 and f32.joint_limits.dtype == torch.float32
    q = _random_q(hand, 2)
    state = f32.forward(q.float())
    assert state.surface_points.dtype == torch.float32
    torch.testing.assert_close(state.surface_points.double(), hand.forward(q).surface_points,
                               atol=1e-6, rtol=0)
    assert f32.to('cpu', torch.float64).forward(q).fingertips.dtype == F64


def test_forward_rejects_bad_inputs(hand):
    with pytest.raises(InputError, match=r'q: expected shape \(B, 16\), got \(16,\)'):
        hand.forward(torch.zeros(16, dtype=F64))
    with pytest.raises(InputError, match='q: expected torch.float64 on cpu, got torch.float32'):
        hand.forward(torch.zeros(1, 16))
    with pytest.raises(InputError, match='q: expected a torch.Tensor'):
        hand.forward(np.zeros((1, 16)))
    with pytest.raises(InputError, match=r'T_world_base: expected shape \(2, 4, 4\)'):
        hand.forward(torch.zeros(2, 16, dtype=F64), torch.eye(4, dtype=F64)[None])
    with pytest.raises(InputError, match='dtype'):
        HandKinematics.from_urdf(RIGHT, dtype=torch.float16)
    with pytest.raises(InputError, match='surface_points'):
        HandKinematics.from_urdf(RIGHT, surface_points=-1)
    with pytest.raises(InputError, match='geometry'):
        HandKinematics.from_urdf(RIGHT, geometry='both')


def test_gradients_wrt_joints_and_root():
    model = HandKinematics.from_urdf(RIGHT, dtype=F64, surface_points=40)
    q = _random_q(model, 2, seed=11).requires_grad_(True)
    T_world_base = _random_T(2, seed=12).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q, T: model.forward(q, T).fingertips,
                                    (q, T_world_base))

    def everything(q, T):
        s = model.forward(q, T)
        return s.T_world_link, s.surface_points, s.surface_normals, model.posed_mesh(q, T)[0]

    assert torch.autograd.gradcheck(everything, (q, T_world_base), fast_mode=True)
    assert torch.autograd.gradcheck(lambda q: model.forward(q).T_root_link, (q,),
                                    fast_mode=True)


# -- other URDFs: joint types, mesh files ---------------------------------------------------

_TINY = """<?xml version="1.0"?>
<robot name="tiny">
  <link name="base">
    <visual><geometry><mesh filename="{base_mesh}"/></geometry></visual>
  </link>
  <link name="slider">
    <collision><origin xyz="0 0 0.05" rpy="0 0 0"/>
      <geometry><cylinder radius="0.01" length="0.1"/></geometry></collision>
  </link>
  <link name="arm">
    <visual><origin xyz="0.02 0 0" rpy="0.3 0 0"/>
      <geometry><mesh filename="{arm_mesh}" scale="2 1 1"/></geometry></visual>
  </link>
  <link name="follower"><visual><geometry><sphere radius="0.01"/></geometry></visual></link>
  <joint name="slide" type="prismatic">
    <parent link="base"/><child link="slider"/>
    <origin xyz="0.1 0 0" rpy="0 0.2 0"/><axis xyz="0.6 0.8 0"/>
    <limit lower="-0.05" upper="0.05" effort="1" velocity="1"/>
  </joint>
  <joint name="spin" type="continuous">
    <parent link="slider"/><child link="arm"/>
    <origin xyz="0 0 0.1" rpy="0.1 0.2 0.3"/><axis xyz="0 0 1"/>
  </joint>
  <joint name="copy" type="revolute">
    <parent link="arm"/><child link="follower"/>
    <origin xyz="0.05 0 0" rpy="0 0 0"/><axis xyz="0 1 0"/>
    <limit lower="-3" upper="3" effort="1" velocity="1"/>
    <mimic joint="spin" multiplier="-0.5" offset="0.1"/>
  </joint>
</robot>
"""


def _write_mesh_files(folder: Path) -> None:
    (folder / 'meshes').mkdir(parents=True, exist_ok=True)
    trimesh.creation.box(extents=(0.02, 0.04, 0.06)).export(folder / 'meshes' / 'box.stl')
    trimesh.creation.box(extents=(0.01, 0.01, 0.01)).export(folder / 'meshes' / 'cube.obj')


def test_package_and_relative_mesh_paths_and_other_joint_types(tmp_path):
    _write_mesh_files(tmp_path / 'my_pkg')
    urdf = tmp_path / 'robot' / 'tiny.urdf'
    urdf.parent.mkdir()
    urdf.write_text(_TINY.format(base_mesh='../my_pkg/meshes/box.stl',
                                 arm_mesh='package://my_pkg/meshes/cube.obj'))
    model = HandKinematics.from_urdf(urdf, dtype=F64, surface_points=200,
                                     package_paths={'my_pkg': tmp_path / 'my_pkg'})
    assert model.joint_names == ('slide', 'spin')  # the mimic joint is not in the vector
    assert model.fingertip_links == ('follower',)
    torch.testing.assert_close(model.joint_limits[1],
                               torch.tensor([-math.inf, math.inf], dtype=F64))
    base_v, _ = model.link_mesh('base')
    np.testing.assert_allclose(np.ptp(base_v.numpy(), axis=0), (0.02, 0.04, 0.06))
    arm_v, _ = model.link_mesh('arm')  # scale 2 on x, then the visual origin
    assert arm_v.shape == (8, 3)
    np.testing.assert_allclose(arm_v.numpy().mean(0), (0.02, 0, 0), atol=1e-12)
    assert np.ptp(arm_v.numpy()[:, 0]) == pytest.approx(0.02)

    reference = yourdfpy.URDF.load(str(urdf), build_scene_graph=True, load_meshes=False)
    assert reference.actuated_joint_names == ['slide', 'spin']
    q = torch.tensor([[0.03, 1.2], [-0.02, -2.5]], dtype=F64)
    T = model.forward(q).T_root_link
    for b in range(2):
        reference.update_cfg(q[b].numpy())
        for i, link in enumerate(model.link_names):
            np.testing.assert_allclose(T[b, i].numpy(), reference.get_transform(link, 'base'),
                                       atol=1e-12, err_msg=link)

    # The same URDF as text: relative paths resolve against the working directory.
    text = _TINY.format(base_mesh='my_pkg/meshes/box.stl', arm_mesh='my_pkg/meshes/cube.obj')
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        from_text = HandKinematics.from_urdf(text, surface_points=10)
    assert from_text.link_mesh('base')[0].shape == (8, 3)


def test_package_path_from_the_ament_index(tmp_path, monkeypatch):
    pytest.importorskip('ament_index_python')
    prefix = tmp_path / 'install'
    index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
    index.mkdir(parents=True)
    (index / 'indexed_pkg').touch()
    _write_mesh_files(prefix / 'share' / 'indexed_pkg')
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(prefix))
    path = resolve_mesh_path('package://indexed_pkg/meshes/box.stl')
    assert path == prefix / 'share' / 'indexed_pkg' / 'meshes' / 'box.stl'
    text = _TINY.format(base_mesh='package://indexed_pkg/meshes/box.stl',
                        arm_mesh='package://indexed_pkg/meshes/cube.obj')
    assert HandKinematics.from_urdf(text, surface_points=10).link_mesh('base')[0].shape == (8, 3)
    with pytest.raises(ModelError, match="package 'unknown_pkg' is not in package_paths"):
        resolve_mesh_path('package://unknown_pkg/a.stl', package_paths={'other': tmp_path})


def test_resolve_mesh_path_forms(tmp_path):
    assert resolve_mesh_path('file:///a/b.stl') == Path('/a/b.stl')
    assert resolve_mesh_path('/a/b.stl', base_dir=tmp_path) == Path('/a/b.stl')
    assert resolve_mesh_path('m/b.stl', base_dir=tmp_path) == tmp_path / 'm' / 'b.stl'
    assert resolve_mesh_path('package://p/m/b.stl', package_paths={'p': tmp_path}) == \
        tmp_path / 'm' / 'b.stl'


def test_broken_mesh_and_urdf_raise_model_error(tmp_path):
    _write_mesh_files(tmp_path)
    missing = tmp_path / 'meshes' / 'missing.stl'
    text = _TINY.format(base_mesh=str(missing), arm_mesh=str(tmp_path / 'meshes' / 'cube.obj'))
    with pytest.raises(ModelError, match=f"link 'base': mesh file '{missing}'"):
        HandKinematics.from_urdf(text)
    garbage = tmp_path / 'meshes' / 'garbage.stl'
    garbage.write_bytes(b'not a mesh')
    text = _TINY.format(base_mesh=str(garbage), arm_mesh=str(tmp_path / 'meshes' / 'cube.obj'))
    with pytest.raises(ModelError, match=str(garbage)):
        HandKinematics.from_urdf(text)
    with pytest.raises(ModelError, match='cannot parse'):
        HandKinematics.from_urdf('<robot name="x"><link name="a"></robot>')
    with pytest.raises(ModelError, match='does not exist'):
        HandKinematics.from_urdf(tmp_path / 'nope.urdf')
    two_roots = '<robot name="x"><link name="a"/><link name="b"/></robot>'
    with pytest.raises(ModelError, match='expected one root link'):
        HandKinematics.from_urdf(two_roots, surface_points=0)
    with pytest.raises(ModelError, match='no visual or collision geometry'):
        HandKinematics.from_urdf('<robot name="x"><link name="a"/></robot>')
    with pytest.raises(InputError, match='fingertip_links'):
        HandKinematics.from_urdf(RIGHT, fingertip_links=['ah_link_99'])


# -- joint names --------------------------------------------------------------------------------

def test_ros1_name_map():
    mapping = ros1_to_ros2_name_map()
    assert mapping['joint_0.0'] == 'ah_joint10'  # index base
    assert mapping['joint_4.0'] == 'ah_joint20'  # middle
    assert mapping['joint_8.0'] == 'ah_joint30'  # ring
    assert mapping['joint_12.0'] == 'ah_joint00'  # thumb base
    assert mapping['joint_15.0'] == 'ah_joint03'
    assert sorted(mapping) == sorted(allegro_ros1_joint_names())
    assert sorted(mapping.values()) == sorted(allegro_joint_names())


def test_joint_vector_from_permuted_and_old_names():
    model_names = allegro_joint_names()
    q = np.arange(16) / 10.0
    order = np.random.default_rng(0).permutation(16)
    names = [model_names[i] for i in order] + ['arm_joint_1']  # other robots' joints: ignored
    positions = np.append(q[order], 99.0)
    np.testing.assert_array_equal(joint_vector_from_state(names, positions, model_names), q)

    inverse = {v: k for k, v in ros1_to_ros2_name_map().items()}
    old = [inverse[n] for n in model_names]
    mapped = HandKinematics.from_urdf(RIGHT, dtype=F64, surface_points=0,
                                      joint_name_map=ros1_to_ros2_name_map())
    np.testing.assert_array_equal(mapped.joint_vector(old[::-1], q[::-1]).numpy(), q)
    assert mapped.joint_vector(old, list(q)).dtype == F64


def test_joint_vector_errors():
    model_names = allegro_joint_names()
    names, q = list(model_names), np.zeros(16)
    with pytest.raises(InputError, match='missing joints ah_joint13'):
        joint_vector_from_state(names[:7] + names[8:], np.zeros(15), model_names)
    with pytest.raises(InputError, match=r'missing joints ah_joint10 \(or joint_0.0\)'):
        joint_vector_from_state(names[:4] + names[5:], np.zeros(15), model_names,
                                name_map=ros1_to_ros2_name_map())
    bad = q.copy()
    bad[5], bad[9] = np.nan, np.inf
    with pytest.raises(InputError, match='NaN/Inf for ah_joint11=nan, ah_joint21=inf'):
        joint_vector_from_state(names, bad, model_names)
    with pytest.raises(InputError, match=r'positions: expected shape \(16,\)'):
        joint_vector_from_state(names, np.zeros(15), model_names)
    with pytest.raises(InputError, match="joint 'ah_joint10' given twice"):
        joint_vector_from_state(names + ['joint_0.0'], np.zeros(17), model_names,
                                name_map=ros1_to_ros2_name_map())


def test_core_models_do_not_import_ros():
    code = ('import sys, handypriors_ros.core.models.kinematics, '
            'handypriors_ros.core.models.joint_names, handypriors_ros.core.models.urdf_writer; '
            'assert "rclpy" not in sys.modules and not any(m.endswith("_msgs") for m in '
            'sys.modules)')
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, '-c', code], check=True, cwd=root)


# -- the hand protocol ----------------------------------------------------------------------------

def test_fingertip_radius_from_the_fingertip_geometry():
    """The Allegro tips are 12 mm spheres on the link origins (as yourdfpy reads the URDF)."""
    reference = yourdfpy.URDF.load(str(RIGHT), build_scene_graph=False, load_meshes=False)
    model = HandKinematics.from_urdf(RIGHT, surface_points=0)
    assert isinstance(model, HandModel)
    for name in model.fingertip_links:
        (visual,) = reference.link_map[name].visuals
        assert visual.geometry.sphere.radius == 0.012
        np.testing.assert_array_equal(visual.origin, np.eye(4))
    assert model.fingertip_radius_m == pytest.approx(0.012, abs=1e-7)
    given = HandKinematics.from_urdf(RIGHT, surface_points=0, fingertip_radius_m=0.01)
    assert given.fingertip_radius_m == 0.01 and given.to(dtype=F64).fingertip_radius_m == 0.01
    with pytest.raises(InputError, match='fingertip_radius_m: expected a finite float >= 0'):
        HandKinematics.from_urdf(RIGHT, surface_points=0, fingertip_radius_m=-0.01)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason='no CUDA device (torch.cuda.is_available() False)')
def test_forward_and_posed_mesh_on_cuda_match_the_cpu(hand):
    cuda = hand.to('cuda', torch.float32)
    cpu = hand.to('cpu', torch.float32)
    q, T = _random_q(cpu, 3, seed=5), _random_T(3, seed=5).float()
    a, b = cpu.forward(q, T), cuda.forward(q.cuda(), T.cuda())
    assert b.surface_points.device.type == 'cuda'
    for field in ('fingertips', 'surface_points', 'surface_normals', 'T_world_link'):
        torch.testing.assert_close(getattr(b, field).cpu(), getattr(a, field), atol=1e-5,
                                   rtol=1e-5)
    torch.testing.assert_close(cuda.posed_mesh(q.cuda(), T.cuda())[0].cpu(),
                               cpu.posed_mesh(q, T)[0], atol=1e-5, rtol=1e-5)
