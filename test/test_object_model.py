"""ObjectModel loading, checks, derived data and symmetry; built-in objects round trips."""

import warnings

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from scipy.spatial.distance import pdist

from handypriors_ros.core.errors import InputError, ModelError
from handypriors_ros.core.models.builtin_objects import (
    BUILTIN_OBJECTS, export_builtin, make_builtin)
from handypriors_ros.core.models.object_model import (
    DEFAULT_GREY, MeshWarning, ObjectModel, _max_pairwise_distance, decimate_vertex_clustering,
    detect_symmetry, load_object_mesh)

# Published YCB sizes (mm) in the axes builtin_objects documents: x, y, z.
PUBLISHED_EXTENTS_MM = {
    'cracker_box': (158, 60, 210),
    'sugar_box': (89, 38, 175),
    'soup_can': (66, 66, 101),
    'mustard_bottle': (85, 50, 175),
}


def quiet_model(mesh, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter('error', MeshWarning)   # a built-in must load without warnings
        return ObjectModel.from_trimesh(mesh, **kwargs)


@pytest.fixture(scope='module')
def builtin_models():
    return {name: quiet_model(make_builtin(name), name=name) for name in BUILTIN_OBJECTS}


# ---- built-in objects -----------------------------------------------------------------------


@pytest.mark.parametrize('name', sorted(BUILTIN_OBJECTS))
def test_builtin_is_closed_metric_coloured_and_modest(name):
    mesh = make_builtin(name)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    np.testing.assert_allclose(mesh.extents * 1000, PUBLISHED_EXTENTS_MM[name], atol=1e-6)
    np.testing.assert_allclose(mesh.bounds.mean(axis=0), 0.0, atol=1e-12)
    assert len(mesh.faces) <= 1500
    colours = mesh.visual.vertex_colors[:, :3]
    assert len(np.unique(colours, axis=0)) >= 3     # printed, not uniform


@pytest.mark.parametrize('suffix', ['.ply', '.obj'])
@pytest.mark.parametrize('name', sorted(BUILTIN_OBJECTS))
def test_builtin_round_trip_through_a_file(tmp_path, builtin_models, name, suffix):
    path = export_builtin(name, tmp_path / f'{name}{suffix}')
    with warnings.catch_warnings():
        warnings.simplefilter('error', MeshWarning)
        loaded = ObjectModel.from_file(path)
    direct = builtin_models[name]
    assert loaded.name == name and loaded.source == str(path)
    assert loaded.vertices.shape == direct.vertices.shape
    assert loaded.faces.dtype == torch.int32 and len(loaded.faces) == len(direct.faces)
    assert loaded.is_watertight
    # same geometry and the same colours (compared as sorted rows; file order may differ)
    def rows(model):
        return np.unique(np.round(np.hstack([model.vertices.numpy(),
                                             model.vertex_colors.numpy()]), 5), axis=0)
    np.testing.assert_allclose(rows(loaded), rows(direct), atol=1e-5)
    assert loaded.diameter == pytest.approx(direct.diameter, rel=1e-6)
    assert loaded.symmetry.kind == direct.symmetry.kind


def test_unknown_builtin_and_bad_export_suffix(tmp_path):
    with pytest.raises(InputError, match="name: expected one of"):
        make_builtin('banana')
    with pytest.raises(InputError, match='path: expected a .ply or .obj'):
        export_builtin('soup_can', tmp_path / 'can.stl')


# ---- loading and checks ---------------------------------------------------------------------


def test_millimetre_file_with_scale_matches_and_warns_without(tmp_path):
    mesh = make_builtin('soup_can')
    metres = quiet_model(mesh)
    mm = mesh.copy()
    mm.apply_scale(1000.0)
    path = tmp_path / 'can_mm.ply'
    mm.export(path)
    scaled = ObjectModel.from_file(path, scale=0.001)
    np.testing.assert_allclose(np.unique(scaled.vertices.numpy().round(6), axis=0),
                               np.unique(metres.vertices.numpy().round(6), axis=0), atol=2e-6)
    assert scaled.diameter == pytest.approx(metres.diameter, rel=1e-5)
    with pytest.warns(MeshWarning, match='millimetres: pass scale=0.001'):
        ObjectModel.from_file(path)


def test_garbage_file_raises_model_error_naming_it(tmp_path):
    for suffix in ('.ply', '.obj', '.stl', '.glb'):
        path = tmp_path / f'broken{suffix}'
        path.write_bytes(bytes(range(256)) * 8)
        with pytest.raises(ModelError, match=f'broken\\{suffix}'):
            ObjectModel.from_file(path)


def test_missing_empty_unsupported_and_nan_files(tmp_path):
    with pytest.raises(ModelError, match='not found'):
        ObjectModel.from_file(tmp_path / 'nothere.obj')
    (tmp_path / 'empty.obj').write_text('')
    with pytest.raises(ModelError, match='empty.obj: the file holds no triangle mesh'):
        ObjectModel.from_file(tmp_path / 'empty.obj')
    (tmp_path / 'mesh.xyz').write_text('0 0 0\n')
    with pytest.raises(ModelError, match="unsupported mesh file type '.xyz'"):
        load_object_mesh(tmp_path / 'mesh.xyz')
    (tmp_path / 'nan.obj').write_text('v 0 0 0\nv 1 0 0\nv nan 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\n')
    with pytest.raises(ModelError, match=r'nan.obj: 1 of 4 vertices are NaN'):
        ObjectModel.from_file(tmp_path / 'nan.obj')


def test_degenerate_faces_are_removed_with_a_warning():
    box = trimesh.creation.box((0.1, 0.2, 0.3))
    v = np.vstack([box.vertices, [[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [0.02, 0.0, 0.0]]])
    extra = np.array([[0, 0, 1], [8, 9, 10]])                 # repeated index; collinear points
    mesh = trimesh.Trimesh(v, np.vstack([box.faces, extra]), process=False)
    with pytest.warns(MeshWarning, match='removed 2 degenerate'):
        model = ObjectModel.from_trimesh(mesh)
    assert len(model.faces) == 12 and len(model.vertices) == 8
    assert model.is_watertight


def test_open_mesh_warns_not_watertight():
    box = trimesh.creation.box((0.1, 0.1, 0.1))
    open_box = trimesh.Trimesh(box.vertices, box.faces[:-2], process=False)
    with pytest.warns(MeshWarning, match='not watertight'):
        model = ObjectModel.from_trimesh(open_box)
    assert not model.is_watertight
    assert len(model.faces) == 10


def test_inward_winding_is_flipped_with_a_warning():
    box = trimesh.creation.box((0.1, 0.2, 0.3))
    inverted = trimesh.Trimesh(box.vertices, box.faces[:, ::-1], process=False)
    with pytest.warns(MeshWarning, match='12 faces were wound inwards'):
        model = ObjectModel.from_trimesh(inverted)
    assert model.mesh.volume > 0
    tri = model.vertices[model.faces.long()]                                    # (F, 3, 3)
    normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    assert ((normals * tri.mean(1)).sum(-1) > 0).all()                         # outward


def test_scene_parts_are_merged_with_transforms_and_colours(tmp_path):
    red_box = trimesh.creation.box((0.02, 0.02, 0.02))
    red_box.visual.face_colors = [255, 0, 0, 255]
    ball = trimesh.creation.icosphere(2, radius=0.01)           # no colour -> grey
    scene = trimesh.Scene()
    scene.add_geometry(red_box, transform=trimesh.transformations.translation_matrix([0.05, 0, 0]))
    scene.add_geometry(ball, transform=trimesh.transformations.translation_matrix([0, 0.04, 0]))
    path = tmp_path / 'two.glb'
    scene.export(path)
    model = ObjectModel.from_file(path)
    bounds = model.mesh.bounds
    np.testing.assert_allclose(bounds[0], [-0.01, -0.01, -0.01], atol=1e-4)
    np.testing.assert_allclose(bounds[1], [0.06, 0.05, 0.01], atol=1e-4)
    colours = model.vertex_colors.numpy()
    on_box = model.vertices.numpy()[:, 0] > 0.035
    np.testing.assert_allclose(colours[on_box], [[1.0, 0.0, 0.0]] * int(on_box.sum()), atol=1e-6)
    np.testing.assert_allclose(colours[~on_box], [DEFAULT_GREY] * int((~on_box).sum()), atol=3e-3)


def test_texture_is_kept_and_baked_into_vertex_colours(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    image[:2, :] = [255, 0, 0]      # top half red (v > 0.5)
    image[2:, :] = [0, 0, 255]      # bottom half blue
    box = trimesh.creation.box((0.1, 0.1, 0.1))
    uv = np.where(box.vertices[:, 2:3] > 0, [[0.5, 0.9]], [[0.5, 0.1]])
    box.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(image))
    path = tmp_path / 'textured.obj'
    box.export(path)
    model = ObjectModel.from_file(path)
    assert model.uv is not None and model.uv.shape == (len(model.vertices), 2)
    assert model.texture.shape == (4, 4, 3)
    top = model.vertices[:, 2] > 0
    np.testing.assert_allclose(model.vertex_colors[top].numpy(), [[1, 0, 0]] * int(top.sum()))
    np.testing.assert_allclose(model.vertex_colors[~top].numpy(), [[0, 0, 1]] * int((~top).sum()))


def test_face_colours_stay_per_face():
    box = trimesh.creation.box((0.1, 0.1, 0.1))
    rng = np.random.default_rng(0)
    face_colours = np.repeat(rng.integers(0, 256, (6, 3)), 2, axis=0)        # one per side
    box.visual.face_colors = np.hstack([face_colours, np.full((12, 1), 255)])
    model = ObjectModel.from_trimesh(box)
    got = model.vertex_colors[model.faces.long()].numpy()                     # (F, 3, 3)
    np.testing.assert_allclose(got, np.repeat(face_colours[:, None] / 255.0, 3, 1), atol=1e-6)
    assert model.is_watertight


def test_uncoloured_mesh_is_grey_and_bad_arguments_raise():
    box = trimesh.creation.box((0.1, 0.1, 0.1))
    model = ObjectModel.from_trimesh(box)
    np.testing.assert_allclose(model.vertex_colors.numpy(), [DEFAULT_GREY] * 8, atol=3e-3)
    with pytest.raises(InputError, match='face_budget: expected an integer >= 4'):
        ObjectModel.from_trimesh(box, face_budget=2)
    with pytest.raises(InputError, match='scale: expected a positive finite number'):
        ObjectModel.from_trimesh(box, scale=-1.0)
    with pytest.raises(InputError, match='dtype: expected a floating torch dtype'):
        ObjectModel.from_trimesh(box, dtype=torch.int64)
    with pytest.raises(InputError, match='n_sample_points'):
        ObjectModel.from_trimesh(box, n_sample_points=0)
    with pytest.raises(InputError, match='mesh: expected a trimesh.Trimesh'):
        ObjectModel.from_trimesh(box.vertices)


# ---- derived data ---------------------------------------------------------------------------


def test_proxy_respects_the_face_budget_and_keeps_shape_and_colour():
    sphere = trimesh.creation.icosphere(4, radius=0.05)                       # 5120 faces
    sphere.visual.vertex_colors = np.where(sphere.vertices[:, 2:3] > 0, [255, 0, 0, 255],
                                           [0, 0, 255, 255]).astype(np.uint8)
    model = quiet_model(sphere, face_budget=500)
    proxy = model.proxy
    assert 250 <= len(proxy.faces) <= 500
    assert proxy.faces.dtype == torch.int32 and proxy.vertices.dtype == torch.float32
    radius = proxy.vertices.norm(dim=1)
    assert (radius > 0.045).all() and (radius <= 0.0500001).all()
    top = proxy.vertices[:, 2] > 0.02
    assert (proxy.vertex_colors[top, 0] > 0.9).all() and (proxy.vertex_colors[top, 2] < 0.1).all()
    # within budget: the render mesh itself
    small = quiet_model(sphere, face_budget=6000)
    assert torch.equal(small.proxy.faces, small.faces)


def test_vertex_clustering_direct():
    mesh = trimesh.creation.icosphere(3)
    colours = np.random.default_rng(1).random((len(mesh.vertices), 3))
    for budget in (4, 50, 300, 1279):
        v, f, c = decimate_vertex_clustering(mesh.vertices, mesh.faces, colours, budget)
        assert 0 < len(f) <= budget and f.max() < len(v) and c.shape == (len(v), 3)
        assert ((c >= 0) & (c <= 1)).all()
    with pytest.raises(InputError, match='face_budget'):
        decimate_vertex_clustering(mesh.vertices, mesh.faces, colours, 3)


def test_samples_are_on_the_surface_outward_and_seeded(builtin_models):
    box = builtin_models['cracker_box']
    half = box.extents / 2
    points, normals = box.sample_points, box.sample_normals
    assert points.shape == (1000, 3) and normals.shape == (1000, 3)
    # on the surface of the box: the largest normalised coordinate is 1
    torch.testing.assert_close((points.abs() / half).max(dim=1).values, torch.ones(1000))
    torch.testing.assert_close(normals.norm(dim=1), torch.ones(1000))
    assert ((points * normals).sum(1) > 0).all()
    again = quiet_model(make_builtin('cracker_box'))
    torch.testing.assert_close(again.sample_points, points)
    other = quiet_model(make_builtin('cracker_box'), seed=1)
    assert not torch.allclose(other.sample_points, points)


def test_diameter_center_extents_against_brute_force(builtin_models):
    for name, model in builtin_models.items():
        brute = pdist(model.mesh.vertices).max()
        assert model.diameter == pytest.approx(brute, rel=1e-12), name
        torch.testing.assert_close(model.center.double(),
                                   torch.as_tensor(model.mesh.bounds.mean(0)), atol=1e-7, rtol=0)
        torch.testing.assert_close(model.extents.double(),
                                   torch.tensor(PUBLISHED_EXTENTS_MM[name],
                                                dtype=torch.float64) / 1000.0,
                                   atol=1e-7, rtol=0)
    # above 8192 points: extreme points along 4096 directions, at most 0.08% short
    points = np.random.default_rng(3).normal(size=(9000, 3)) * [1.0, 0.5, 0.2]
    exact = _max_pairwise_distance(points, exact_limit=10 ** 9)
    assert exact * (1 - 8e-4) <= _max_pairwise_distance(points) <= exact


def test_to_moves_and_casts(builtin_models):
    model = builtin_models['soup_can']
    double = model.to(dtype=torch.float64)
    for t in (double.vertices, double.vertex_colors, double.sample_points, double.center,
              double.proxy.vertices, double.proxy.vertex_colors):
        assert t.dtype == torch.float64
    assert double.faces.dtype == torch.int32 and double.proxy.faces.dtype == torch.int32
    assert model.vertices.dtype == torch.float32           # the original is unchanged
    assert double.diameter == model.diameter and double.mesh is model.mesh
    if torch.cuda.is_available():
        on_gpu = model.to('cuda')
        assert on_gpu.vertices.is_cuda and on_gpu.proxy.faces.is_cuda
    else:
        with pytest.raises(InputError, match='CUDA is not available'):
            model.to('cuda')


# ---- symmetry -------------------------------------------------------------------------------


def test_symmetry_of_the_builtins(builtin_models):
    can = builtin_models['soup_can'].symmetry
    assert can.kind == 'continuous' and can.is_symmetric
    assert abs(abs(can.axis @ [0.0, 0.0, 1.0]) - 1.0) < 1e-9
    box = builtin_models['cracker_box'].symmetry
    assert box.kind == 'discrete' and len(box.rotations) == 4
    np.testing.assert_allclose(box.rotations[0], np.eye(3))
    # the three half turns about x, y and z: diagonal with two -1
    diagonals = sorted(tuple(np.round(np.diag(R)).astype(int)) for R in box.rotations[1:])
    assert diagonals == [(-1, -1, 1), (-1, 1, -1), (1, -1, -1)]
    for R in box.rotations:
        np.testing.assert_allclose(R, np.diag(np.diag(R)), atol=1e-9)
    assert box.transforms().shape == (4, 4, 4)
    mustard = builtin_models['mustard_bottle'].symmetry
    assert mustard.kind == 'none' and not mustard.is_symmetric and len(mustard.rotations) == 1


def test_symmetry_of_a_cube_and_a_sphere():
    cube = detect_symmetry(trimesh.creation.box((0.1, 0.1, 0.1)))
    assert cube.kind == 'discrete' and len(cube.rotations) == 24
    dets = np.linalg.det(cube.rotations)
    np.testing.assert_allclose(dets, 1.0)
    sphere = detect_symmetry(trimesh.creation.icosphere(3, radius=0.05))
    assert sphere.kind == 'continuous'
