"""Warp signed distance and contacts: against a brute-force trimesh reference and trimesh's
signed distance (opposite sign), gradients against central finite differences, on every device
available."""

import numpy as np
import pytest
import torch
import trimesh

from handypriors_ros.core.errors import InputError, ModelError
from handypriors_ros.core.geometry.se3 import invert_transform, se3_exp, transform_points
from handypriors_ros.core.physics import (
    DEFAULT_CONTACT_THRESHOLD_M,
    WarpMeshSDF,
    find_contacts,
    penetration_loss,
)

DEVICES = [
    'cpu',
    pytest.param('cuda', marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason='no CUDA device (torch.cuda.is_available() False)')),
]


def _box():
    return trimesh.creation.box(extents=(0.08, 0.05, 0.03))


def _icosphere():
    return trimesh.creation.icosphere(subdivisions=2, radius=0.04)


def _convex_hull():
    pts = np.random.default_rng(7).normal(size=(40, 3)) * 0.03
    return trimesh.convex.convex_hull(pts)


MESHES = {'box': _box, 'icosphere': _icosphere, 'convex_hull': _convex_hull}


def _brute_force(mesh: trimesh.Trimesh, points: np.ndarray):
    """Unsigned distance, closest point and gap to the second-best face, over all faces."""
    n, f = len(points), len(mesh.faces)
    tris = np.repeat(mesh.triangles[None], n, axis=0).reshape(-1, 3, 3)
    pts = np.repeat(points, f, axis=0)
    closest = trimesh.triangles.closest_point(tris, pts).reshape(n, f, 3)
    dist = np.linalg.norm(closest - points[:, None], axis=-1)  # (n, f)
    order = np.argsort(dist, axis=1)
    best = dist[np.arange(n), order[:, 0]]
    best_point = closest[np.arange(n), order[:, 0]]
    # Faces sharing the best closest point (edge/vertex) are not a different answer.
    others = np.linalg.norm(closest - best_point[:, None], axis=-1) > 1e-7
    gap = np.where(others, dist - best[:, None], np.inf).min(axis=1)
    return best, best_point, gap


def _query_points(mesh: trimesh.Trimesh, n: int, seed: int) -> np.ndarray:
    """Points around the mesh: half in its padded box, half within 5 mm of the surface."""
    rng = np.random.default_rng(seed)
    lo, hi = mesh.bounds[0] - 0.02, mesh.bounds[1] + 0.02
    box_pts = rng.uniform(lo, hi, size=(n // 2, 3))
    surf, face = trimesh.sample.sample_surface(mesh, n - n // 2, seed=seed)
    near = surf + mesh.face_normals[face] * rng.uniform(-0.005, 0.005, size=(len(surf), 1))
    return np.concatenate([box_pts, near])


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('sign_method', ['normal', 'winding'])
@pytest.mark.parametrize('name', sorted(MESHES))
def test_signed_distance_matches_trimesh(name, sign_method, device):
    mesh = MESHES[name]()
    assert mesh.is_watertight
    sdf = WarpMeshSDF.from_trimesh(mesh, device=device, sign_method=sign_method)
    points = _query_points(mesh, 300, seed=1)
    ref_dist, ref_closest, gap = _brute_force(mesh, points)
    keep = ref_dist > 1e-5  # the sign is undefined on the surface itself
    points, ref_dist, ref_closest, gap = points[keep], ref_dist[keep], ref_closest[keep], gap[keep]
    inside = mesh.contains(points)

    res = sdf.signed_distance(torch.tensor(points, device=device)[None])
    assert res.distance.shape == (1, len(points)) and res.distance.dtype == torch.float64
    assert res.closest_point.shape == (1, len(points), 3)
    assert bool(res.valid.all())
    dist = res.distance[0].cpu().numpy()
    closest = res.closest_point[0].cpu().numpy()

    # trimesh's own signed distance is positive inside: ours is its negative.
    np.testing.assert_allclose(dist, -trimesh.proximity.signed_distance(mesh, points),
                               atol=1e-5, rtol=0)
    # Tighter against the brute-force reference with the sign from trimesh.contains.
    np.testing.assert_allclose(dist, np.where(inside, -ref_dist, ref_dist), atol=1e-6, rtol=0)
    # Closest points: unique unless a different face is (nearly) as close.
    unique = gap > 1e-5
    assert unique.mean() > 0.8
    np.testing.assert_allclose(closest[unique], ref_closest[unique], atol=1e-5, rtol=0)
    np.testing.assert_allclose(trimesh.proximity.closest_point(mesh, points)[0][unique],
                               closest[unique], atol=1e-5, rtol=0)
    # Everywhere, the returned point is at the returned distance.
    np.testing.assert_allclose(np.linalg.norm(points - closest, axis=1), np.abs(dist), atol=1e-6)
    # Normals are unit, outward: along (p - c) outside, against it inside (checked away from
    # the surface, where the direction is not dominated by float32 rounding of c).
    normal = res.normal[0].cpu().numpy()
    np.testing.assert_allclose(np.linalg.norm(normal, axis=1), 1.0, atol=1e-5)
    expected_normal = (points - ref_closest) / ref_dist[:, None] * np.sign(dist)[:, None]
    away = unique & (ref_dist > 1e-3)
    np.testing.assert_allclose(normal[away], expected_normal[away], atol=1e-4)


@pytest.mark.parametrize('device', DEVICES)
def test_faces_and_on_surface_normals(device):
    mesh = _box()
    sdf = WarpMeshSDF.from_trimesh(mesh, device=device)
    centres = torch.tensor(mesh.triangles_center, device=device)[None]  # on the surface
    res = sdf.signed_distance(centres)
    torch.testing.assert_close(res.distance, torch.zeros_like(res.distance), atol=1e-7, rtol=0)
    normals = torch.tensor(mesh.face_normals, device=device)
    torch.testing.assert_close(res.normal[0], normals, atol=1e-6, rtol=0)
    # The box's diagonal splits each face in two; the triangle centres lie strictly inside.
    torch.testing.assert_close(res.face_index[0].cpu(), torch.arange(len(mesh.faces)))


@pytest.mark.parametrize('device', DEVICES)
def test_batch_float32_and_empty(device):
    sdf = WarpMeshSDF.from_trimesh(_icosphere(), device=device)
    pts = torch.randn(3, 50, 3, device=device, generator=None) * 0.05
    res = sdf.signed_distance(pts.float())
    assert res.distance.dtype == torch.float32 and res.distance.shape == (3, 50)
    flat = sdf.signed_distance(pts.float().reshape(1, 150, 3))
    torch.testing.assert_close(res.distance.reshape(1, 150), flat.distance)
    empty = sdf.signed_distance(torch.zeros(2, 0, 3, device=device))
    assert empty.distance.shape == (2, 0) and empty.normal.shape == (2, 0, 3)


def _central_difference(f, x: torch.Tensor, h: float) -> torch.Tensor:
    grad = torch.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for k in range(flat.numel()):
        e = torch.zeros_like(flat)
        e[k] = h
        gflat[k] = (f((flat + e).reshape(x.shape)) - f((flat - e).reshape(x.shape))) / (2 * h)
    return grad


def _box_inside_points(rng, n: int, half: np.ndarray) -> np.ndarray:
    """Points 1-4 mm under the box's +x/+y/+z faces, >= 8 mm from every edge (no medial axis)."""
    pts = []
    for k in range(n):
        axis = k % 3
        p = rng.uniform(-(half - 0.008), half - 0.008)
        p[axis] = half[axis] - rng.uniform(0.001, 0.004)
        pts.append(p)
    return np.array(pts)


@pytest.mark.parametrize('device', DEVICES)
def test_distance_gradient_matches_finite_differences(device):
    mesh = _box()
    sdf = WarpMeshSDF.from_trimesh(mesh, device=device)
    rng = np.random.default_rng(3)
    half = mesh.extents / 2
    outside = rng.normal(size=(6, 3))
    outside = outside / np.linalg.norm(outside, axis=1, keepdims=True) * 0.06  # outside, C1 there
    pts = np.concatenate([outside, _box_inside_points(rng, 6, half)])
    x = torch.tensor(pts, device=device)[None].requires_grad_(True)
    sdf.signed_distance(x).distance.sum().backward()
    fd = _central_difference(lambda p: sdf.signed_distance(p).distance.sum(), x.detach(), 1e-4)
    torch.testing.assert_close(x.grad, fd, atol=2e-3, rtol=0)
    torch.testing.assert_close(x.grad, sdf.signed_distance(x.detach()).normal)


@pytest.mark.parametrize('device', DEVICES)
def test_penetration_gradient_wrt_object_pose(device):
    """d L_pen / d xi for T_cam_obj = exp(xi) T0, through the caller's torch transforms."""
    mesh = _box()
    sdf = WarpMeshSDF.from_trimesh(mesh, device=device)
    rng = np.random.default_rng(4)
    T0 = se3_exp(torch.tensor([0.02, -0.01, 0.4, 0.3, -0.2, 0.5], dtype=torch.float64))
    inside_obj = torch.tensor(_box_inside_points(rng, 9, mesh.extents / 2))
    outside_obj = torch.tensor(rng.normal(size=(5, 3)) * 0.001 + [0.07, 0.0, 0.0])
    hand_cam = transform_points(T0, torch.cat([inside_obj, outside_obj]))[None].to(device)
    T0 = T0.to(device)

    def loss(xi: torch.Tensor) -> torch.Tensor:
        T_cam_obj = se3_exp(xi) @ T0
        hand_obj = transform_points(invert_transform(T_cam_obj), hand_cam)
        return penetration_loss(sdf.signed_distance(hand_obj).distance).sum()

    xi = torch.zeros(6, dtype=torch.float64, device=device, requires_grad=True)
    value = loss(xi)
    assert value.item() > 0
    value.backward()
    fd = _central_difference(loss, xi.detach(), 1e-5)
    torch.testing.assert_close(xi.grad, fd, atol=1e-6, rtol=1e-3)


@pytest.mark.parametrize('device', DEVICES)
def test_find_contacts(device):
    sdf = WarpMeshSDF.from_trimesh(_icosphere(), device=device)
    # Radii around the 4 cm sphere: deep inside, touching, within/outside the threshold, far.
    radii = torch.tensor([0.02, 0.0395, 0.0402, 0.0443, 0.0460, 0.5], dtype=torch.float64)
    direction = torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64)
    pts = (radii[:, None] * direction)[None].repeat(2, 1, 1).to(device)  # (2, 6, 3)
    link_ids = torch.arange(6, device=device)
    contacts = find_contacts(pts, sdf.to(device), link_ids=link_ids)
    assert contacts.threshold == DEFAULT_CONTACT_THRESHOLD_M == 0.005
    expected = torch.tensor([True, True, True, True, False, False], device=device)
    torch.testing.assert_close(contacts.mask, expected[None].expand(2, 6))
    torch.testing.assert_close(contacts.count, torch.tensor([4, 4], device=device))
    assert contacts.link_ids is link_ids
    assert contacts.face_index.shape == (2, 6) and contacts.normal_obj.shape == (2, 6, 3)
    tight = find_contacts(pts, sdf, threshold=0.001)
    torch.testing.assert_close(tight.mask[0], expected & (radii.to(device) < 0.041))


@pytest.mark.parametrize('sign_method', ['normal', 'winding'])
def test_near_queries_resolve_the_near_and_inside_points_as_the_full_query(sign_method):
    """``near_m``: points within it of the surface, or inside the bounding box, get exactly the
    full query's answer; points outside the box and farther are out of range. On a torus the
    hole is inside the box but outside the object, so the box test is not 'inside'."""
    torus = trimesh.creation.torus(major_radius=0.04, minor_radius=0.012)
    sdf = WarpMeshSDF.from_trimesh(torus, sign_method=sign_method, max_distance=0.06)
    rng = np.random.default_rng(5)
    points = rng.uniform(torus.bounds[0] - 0.03, torus.bounds[1] + 0.03, size=(600, 3))
    p = torch.tensor(points)[None]
    full = sdf.signed_distance(p)
    near = sdf.signed_distance(p, near_m=0.005)
    in_box = np.all((points >= torus.bounds[0]) & (points <= torus.bounds[1]), axis=1)
    d_full = full.distance[0].numpy()
    expect = torch.tensor(in_box | (np.abs(d_full) < 0.005)) & full.valid[0]
    assert 50 < int(expect.sum()) < 500 and bool((torch.tensor(d_full) < 0)[~expect].sum() == 0)
    torch.testing.assert_close(near.valid[0], expect)
    torch.testing.assert_close(near.distance[0][expect], full.distance[0][expect], rtol=0,
                               atol=0)
    torch.testing.assert_close(near.face_index[0][expect], full.face_index[0][expect])
    far = near.distance[0][~expect]
    torch.testing.assert_close(far, torch.full_like(far, 0.06))
    assert not bool(near.valid[0][~expect].any())
    # the hole's centre: inside the box, 2.8 cm from the surface, resolved and positive
    hole = sdf.signed_distance(torch.zeros(1, 1, 3, dtype=torch.float64), near_m=0.005)
    assert hole.distance.item() == pytest.approx(0.028, abs=2e-4)
    with pytest.raises(InputError, match='near_m'):
        sdf.signed_distance(p, near_m=0.0)
    with pytest.raises(InputError, match='near_m'):
        find_contacts(p, sdf, threshold=0.005, near_m=0.002)


def test_max_distance_gives_invalid_points_with_zero_gradient():
    sdf = WarpMeshSDF.from_trimesh(_icosphere(), max_distance=0.1)
    pts = torch.tensor([[[0.0, 0.0, 0.3], [0.0, 0.0, 0.05]]], requires_grad=True)
    res = sdf.signed_distance(pts)
    torch.testing.assert_close(res.valid, torch.tensor([[False, True]]))
    assert res.distance[0, 0].item() == pytest.approx(0.1)
    assert res.face_index[0, 0].item() == -1
    res.distance.sum().backward()
    torch.testing.assert_close(pts.grad[0, 0], torch.zeros(3))
    assert not bool(find_contacts(pts.detach(), sdf, threshold=1.0).mask[0, 0])


def test_auto_sign_method_and_open_mesh():
    closed = _box()
    assert WarpMeshSDF.from_trimesh(closed).sign_method == 'normal'
    open_box = trimesh.Trimesh(closed.vertices, closed.faces[1:], process=False)  # one hole
    sdf = WarpMeshSDF.from_trimesh(open_box)
    assert sdf.sign_method == 'winding' and not sdf.is_watertight
    # Away from the hole, inside points are still inside.
    res = sdf.signed_distance(torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.05]]]))
    assert res.distance[0, 0].item() == pytest.approx(-0.015, abs=1e-6)
    assert res.distance[0, 1].item() == pytest.approx(0.035, abs=1e-6)


def test_accessors_and_to():
    mesh = _box()
    sdf = WarpMeshSDF(torch.tensor(mesh.vertices), torch.tensor(mesh.faces))
    assert sdf.num_vertices == 8 and sdf.num_faces == 12
    assert sdf.faces.dtype == torch.int32 and sdf.vertices.dtype == torch.float32
    assert sdf.to('cpu') is sdf and sdf.device == torch.device('cpu')
    assert 'faces=12' in repr(sdf)


def test_bad_inputs_raise_clear_errors():
    mesh = _box()
    with pytest.raises(ModelError, match='faces: indices must lie in'):
        WarpMeshSDF(mesh.vertices, mesh.faces + 100)
    with pytest.raises(ModelError, match='vertices: expected shape'):
        WarpMeshSDF(mesh.vertices[:, :2], mesh.faces)
    with pytest.raises(ModelError, match='faces: expected an integer dtype'):
        WarpMeshSDF(mesh.vertices, mesh.faces.astype(float))
    with pytest.raises(InputError, match='sign_method'):
        WarpMeshSDF(mesh.vertices, mesh.faces, sign_method='parity')
    with pytest.raises(InputError, match='max_distance'):
        WarpMeshSDF(mesh.vertices, mesh.faces, max_distance=-1.0)
    with pytest.raises(InputError, match='device'):
        WarpMeshSDF(mesh.vertices, mesh.faces, device='tpu')
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match='no CUDA device'):
            WarpMeshSDF(mesh.vertices, mesh.faces, device='cuda')
    sdf = WarpMeshSDF.from_trimesh(mesh)
    with pytest.raises(InputError, match=r'points_obj: expected shape \(B, N, 3\), got \(5, 3\)'):
        sdf.signed_distance(torch.zeros(5, 3))
    with pytest.raises(InputError, match='points_obj: expected a floating dtype'):
        sdf.signed_distance(torch.zeros(1, 5, 3, dtype=torch.int64))
    with pytest.raises(InputError, match='link_ids: expected shape'):
        find_contacts(torch.zeros(1, 5, 3), sdf, link_ids=torch.zeros(4, dtype=torch.int64))
