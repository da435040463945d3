"""Hard and soft rasterizers: against ray casting, gradients against finite differences."""
import numpy as np
import pytest
import torch
import trimesh

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry import make_transform, se3_exp, transform_points
from handypriors_ros.core.render import (
    PinholeCamera,
    front_facing,
    interpolate,
    rasterize_hard,
    soft_silhouette,
)

CAM32 = PinholeCamera(40.0, 40.0, 15.5, 15.5, 32, 32)
CAM64 = PinholeCamera(90.0, 90.0, 31.2, 32.1, 64, 64)


def posed(mesh: trimesh.Trimesh, t, dtype=torch.float64, rotvec=(0.3, -0.2, 0.1)):
    """(1, V, 3) vertices of ``mesh`` rotated by ``rotvec`` and moved by ``t``."""
    xi = torch.tensor([*t, *rotvec], dtype=dtype)
    T = se3_exp(xi)
    T = make_transform(T[:3, :3], torch.tensor(t, dtype=dtype))
    V = torch.tensor(mesh.vertices, dtype=dtype)
    return transform_points(T[None], V[None])


def test_hard_raster_matches_ray_casting():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    cam = CAM32
    verts = posed(mesh, (0.004, -0.003, 0.2))
    faces = torch.tensor(mesh.faces)
    r = rasterize_hard(cam.project(verts), verts[..., 2], faces, cam.height, cam.width)
    # Reference: the first hit of the ray through every pixel centre (trimesh).
    scene = trimesh.Trimesh(verts[0].numpy(), mesh.faces, process=False)
    v, u = np.mgrid[0:cam.height, 0:cam.width]
    dirs = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u, float)],
                    -1).reshape(-1, 3)
    hit = scene.ray.intersects_first(np.zeros_like(dirs), dirs)  # face index or -1
    got = r.face_index[0].reshape(-1).numpy()
    agree = (got == hit) | ((got >= 0) & (hit >= 0))  # ties on shared edges may differ
    assert agree.mean() > 0.995
    assert (got >= 0).sum() == pytest.approx((hit >= 0).sum(), abs=3)
    same = (got == hit) & (got >= 0)
    # Depth along z of the hit point on the same face.
    locs, rays, tri = scene.ray.intersects_location(np.zeros_like(dirs), dirs,
                                                    multiple_hits=False)
    depth_ref = np.full(len(dirs), np.inf)
    depth_ref[rays] = locs[:, 2]
    np.testing.assert_allclose(r.depth[0].reshape(-1).numpy()[same], depth_ref[same],
                               rtol=1e-9)
    # Barycentrics reproduce the 3D surface point (perspective-correct).
    fi = r.face_index[0].reshape(-1)[torch.as_tensor(same)]
    bary = r.bary[0].reshape(-1, 3)[torch.as_tensor(same)]
    p3 = (verts[0][faces[fi]] * bary[..., None]).sum(1)
    np.testing.assert_allclose(p3[:, 2].numpy(), depth_ref[same], rtol=1e-9)


def test_hard_raster_nearest_face_wins_and_chunking_is_exact():
    box = trimesh.creation.box((0.1, 0.1, 0.1))
    cam = CAM64
    near = posed(box, (0.0, 0.0, 0.5), rotvec=(0.0, 0.0, 0.0))
    far = posed(box, (0.02, 0.01, 0.8), rotvec=(0.0, 0.0, 0.0))
    verts = torch.cat([far, near], dim=1)  # the far box first in the list
    faces = torch.cat([torch.tensor(box.faces), torch.tensor(box.faces) + len(box.vertices)])
    px, z = cam.project(verts), verts[..., 2]
    whole = rasterize_hard(px, z, faces, 64, 64)
    chunked = rasterize_hard(px, z, faces, 64, 64, max_pairs=500)
    torch.testing.assert_close(whole.face_index, chunked.face_index, rtol=0, atol=0)
    torch.testing.assert_close(whole.depth, chunked.depth, rtol=0, atol=0)
    centre = whole.depth[0, 32, 32]
    assert centre == pytest.approx(0.45, abs=1e-9)  # the near box's front face
    assert int(whole.face_index[0, 32, 32]) >= len(box.faces)
    assert torch.isinf(whole.depth[0, 0, 0]) and int(whole.face_index[0, 0, 0]) == -1


def test_interpolate_and_validation():
    mesh = trimesh.creation.icosphere(subdivisions=1, radius=0.05)
    verts = posed(mesh, (0.0, 0.0, 0.3))
    faces = torch.tensor(mesh.faces)
    r = rasterize_hard(CAM32.project(verts), verts[..., 2], faces, 32, 32)
    # Interpolating the vertex positions gives the surface point: z equals the depth.
    xyz = interpolate(verts, faces, r, background=0.0)
    covered = r.covered
    torch.testing.assert_close(xyz[..., 2][covered], r.depth[covered])
    assert (xyz[~covered] == 0).all()
    with pytest.raises(InputError, match=r'^faces: expected an integer dtype'):
        rasterize_hard(CAM32.project(verts), verts[..., 2], faces.double(), 32, 32)
    with pytest.raises(InputError, match=r'^verts_z: expected shape'):
        rasterize_hard(CAM32.project(verts), verts[0, :, 2], faces, 32, 32)


def test_soft_silhouette_matches_hard_at_small_sigma():
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    cam = CAM64
    verts = posed(mesh, (0.003, -0.002, 0.22), dtype=torch.float32)
    faces = torch.tensor(mesh.faces)
    front = front_facing(verts, faces)
    px, z = cam.project(verts), verts[..., 2]
    hard = rasterize_hard(px, z, faces, 64, 64, face_mask=front).covered
    soft = soft_silhouette(px, z, faces, 64, 64, sigma=0.05, face_mask=front)
    assert soft.shape == (1, 64, 64) and soft.dtype == torch.float32
    assert float(soft.min()) >= 0.0 and float(soft.max()) <= 1.0
    s = soft > 0.5
    iou = (s & hard).sum() / (s | hard).sum()
    assert iou > 0.98
    # Culling to front faces does not change the silhouette of a closed mesh.
    soft_all = soft_silhouette(px, z, faces, 64, 64, sigma=0.05)
    iou_all = ((soft_all > 0.5) & s).sum() / ((soft_all > 0.5) | s).sum()
    assert iou_all > 0.99


def test_soft_silhouette_culling_changes_values_by_at_most_eps():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    verts = posed(mesh, (0.0, 0.004, 0.25))
    faces = torch.tensor(mesh.faces)
    px, z = CAM32.project(verts), verts[..., 2]
    dense = soft_silhouette(px, z, faces, 32, 32, sigma=0.7, cull_eps=1e-14)
    culled = soft_silhouette(px, z, faces, 32, 32, sigma=0.7, cull_eps=1e-4)
    # Each skipped pair had coverage < eps; a pixel skips at most a few dozen pairs.
    assert float((dense - culled).abs().max()) < 50 * 1e-4


def _silhouette_of_pose(xi, V, faces, T0, front, occluder=None, sigma=0.7):
    T = se3_exp(xi) @ T0
    verts = transform_points(T, V)[None]
    return soft_silhouette(CAM32.project(verts), verts[..., 2], faces, 32, 32, sigma=sigma,
                           cull_eps=1e-10, face_mask=front, occluder_depth=occluder,
                           depth_softness=0.01)


@pytest.mark.parametrize('with_occluder', [False, True])
def test_soft_silhouette_pose_gradient_matches_finite_differences(with_occluder):
    mesh = trimesh.creation.icosphere(subdivisions=1, radius=0.05)
    V = torch.tensor(mesh.vertices, dtype=torch.float64)
    faces = torch.tensor(mesh.faces)
    T0 = make_transform(se3_exp(torch.tensor([0, 0, 0, 0.4, -0.3, 0.2],
                                             dtype=torch.float64))[:3, :3],
                        torch.tensor([0.01, -0.005, 0.25], dtype=torch.float64))
    # Fixed culling mask (the one of T0), so the function is smooth in the pose.
    front = front_facing(transform_points(T0, V)[None], faces)
    occluder = None
    if with_occluder:
        occluder = torch.full((1, 32, 32), float('inf'), dtype=torch.float64)
        occluder[:, :, 12:18] = 0.22  # a bar in front of the sphere (its front is at 0.20)
    xi = (torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
          * 0.01).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: _silhouette_of_pose(x, V, faces, T0, front, occluder), (xi,),
        eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
    # And a full 6-DoF gradient of a weighted sum against central differences.
    w = torch.rand(1, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    def loss(x):
        return (w * _silhouette_of_pose(x, V, faces, T0, front, occluder)).sum()

    grad, = torch.autograd.grad(loss(xi), xi)
    h = 1e-6
    with torch.no_grad():
        fd = torch.stack([(loss(xi + h * e) - loss(xi - h * e)) / (2 * h)
                          for e in torch.eye(6, dtype=torch.float64)])
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-6)
    assert grad.abs().max() > 1.0  # not trivially zero


def test_occluder_hides_only_what_it_is_in_front_of():
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    verts = posed(mesh, (0.0, 0.0, 0.25), dtype=torch.float32)
    faces = torch.tensor(mesh.faces)
    front = front_facing(verts, faces)
    px, z = CAM64.project(verts), verts[..., 2]
    free = soft_silhouette(px, z, faces, 64, 64, sigma=0.5, face_mask=front)
    bar = torch.zeros(1, 64, 64, dtype=torch.bool)
    bar[:, :, 28:36] = True
    inf = torch.full((1, 64, 64), float('inf'))
    in_front = torch.where(bar, torch.full_like(inf, 0.15), inf)  # sphere front at 0.20
    behind = torch.where(bar, torch.full_like(inf, 0.35), inf)  # sphere back at 0.30
    hidden = soft_silhouette(px, z, faces, 64, 64, sigma=0.5, face_mask=front,
                             occluder_depth=in_front)
    shown = soft_silhouette(px, z, faces, 64, 64, sigma=0.5, face_mask=front,
                            occluder_depth=behind)
    assert float(free[bar].max()) > 0.9
    assert float(hidden[bar].max()) < 1e-3  # removed where the hand is in front
    torch.testing.assert_close(hidden[~bar], free[~bar])  # untouched elsewhere
    torch.testing.assert_close(shown, free)  # a hand behind changes nothing


def test_soft_silhouette_validation():
    verts = torch.rand(1, 4, 3) + torch.tensor([0.0, 0.0, 1.0])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    px = CAM32.project(verts)
    with pytest.raises(InputError, match='^sigma'):
        soft_silhouette(px, verts[..., 2], faces, 32, 32, sigma=0.0)
    with pytest.raises(InputError, match='^cull_eps'):
        soft_silhouette(px, verts[..., 2], faces, 32, 32, sigma=1.0, cull_eps=0.7)
    with pytest.raises(InputError, match='^occluder_depth'):
        soft_silhouette(px, verts[..., 2], faces, 32, 32, sigma=1.0,
                        occluder_depth=torch.zeros(1, 16, 16))
    # Faces behind the camera are dropped, not rendered mirrored.
    behind = verts * torch.tensor([1.0, 1.0, -1.0])
    out = soft_silhouette(CAM32.project(behind), behind[..., 2], faces, 32, 32, sigma=1.0)
    assert float(out.max()) == 0.0


def test_batches_render_like_single_frames():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    faces = torch.tensor(mesh.faces)
    a = posed(mesh, (0.01, 0.0, 0.25), dtype=torch.float32)
    b = posed(mesh, (-0.01, 0.005, 0.3), dtype=torch.float32, rotvec=(0.0, 0.5, 0.0))
    both = torch.cat([a, b])
    occ = torch.full((2, 32, 32), float('inf'))
    occ[:, 10:14] = 0.2

    def run(v, o):
        px, z = CAM32.project(v), v[..., 2]
        fm = front_facing(v, faces)
        hard = rasterize_hard(px, z, faces, 32, 32, face_mask=fm)
        soft = soft_silhouette(px, z, faces, 32, 32, sigma=0.5, face_mask=fm, occluder_depth=o)
        return hard, soft

    hard2, soft2 = run(both, occ)
    for i, v in enumerate((a, b)):
        hard1, soft1 = run(v, occ[i:i + 1])
        torch.testing.assert_close(hard2.face_index[i:i + 1], hard1.face_index)
        torch.testing.assert_close(hard2.depth[i:i + 1], hard1.depth)
        torch.testing.assert_close(soft2[i:i + 1], soft1)
