"""Hard rasterizer (z-buffer) against ray casting, and the renderer's occlusion and batching."""
import numpy as np
import pytest
import torch
import trimesh

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry import make_transform, se3_exp, transform_points
from handypriors_ros.core.render import (
    PinholeCamera,
    Renderer,
    RenderMesh,
    front_facing,
    interpolate,
    rasterize_hard,
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


def test_depth_only_raster_matches_ray_casting_and_the_full_raster():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    cam = CAM32
    verts = posed(mesh, (-0.006, 0.002, 0.25))
    faces = torch.tensor(mesh.faces)
    px, z = cam.project(verts), verts[..., 2]
    full = rasterize_hard(px, z, faces, cam.height, cam.width)
    lean = rasterize_hard(px, z, faces, cam.height, cam.width, barycentrics=False,
                          max_pairs=300)  # chunked too
    assert lean.bary is None and lean.depth.dtype == torch.float32
    torch.testing.assert_close(lean.face_index, full.face_index, rtol=0, atol=0)
    torch.testing.assert_close(lean.pixels, full.pixels, rtol=0, atol=0)
    empty = full.face_index < 0
    assert torch.isinf(lean.depth[empty]).all()
    # The depth test's own float32 depth: trimesh's ray hits within float32 precision.
    scene = trimesh.Trimesh(verts[0].numpy(), mesh.faces, process=False)
    v, u = np.mgrid[0:cam.height, 0:cam.width]
    dirs = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u, float)],
                    -1).reshape(-1, 3)
    locs, rays, _ = scene.ray.intersects_location(np.zeros_like(dirs), dirs,
                                                  multiple_hits=False)
    depth_ref = np.full(len(dirs), np.inf)
    depth_ref[rays] = locs[:, 2]
    got = lean.depth[0].reshape(-1).numpy().astype(np.float64)
    hit = ~empty[0].reshape(-1).numpy() & np.isfinite(depth_ref)
    assert hit.sum() > 100
    np.testing.assert_allclose(got[hit], depth_ref[hit], rtol=1e-5)
    with pytest.raises(InputError, match='depth-only'):
        interpolate(torch.ones(1, len(mesh.vertices), 3, dtype=torch.float64), faces, lean)


def test_hard_raster_nearest_face_wins_and_chunking_is_exact():
    box = trimesh.creation.box((0.1, 0.1, 0.1))
    cam = CAM64
    near = posed(box, (0.0, 0.0, 0.5), rotvec=(0.0, 0.0, 0.0))
    far = posed(box, (0.02, 0.01, 0.8), rotvec=(0.0, 0.0, 0.0))
    verts = torch.cat([far, near], dim=1)  # the far box first in the list
    faces = torch.cat([torch.tensor(box.faces), torch.tensor(box.faces) + len(box.vertices)])
    px, z = cam.project(verts), verts[..., 2]
    whole = rasterize_hard(px, z, faces, 64, 64)
    chunked = rasterize_hard(px, z, faces, 64, 64, max_pairs=500, zbuffer='torch')
    torch.testing.assert_close(whole.face_index, chunked.face_index, rtol=0, atol=0)
    torch.testing.assert_close(whole.depth, chunked.depth, rtol=0, atol=0)
    centre = whole.depth[0, 32, 32]
    assert centre == pytest.approx(0.45, abs=1e-9)  # the near box's front face
    assert int(whole.face_index[0, 32, 32]) >= len(box.faces)
    assert torch.isinf(whole.depth[0, 0, 0]) and int(whole.face_index[0, 0, 0]) == -1


def test_warp_and_torch_depth_tests_agree():
    """The Warp kernel against the torch pairs + scatter_reduce path: a batch of two poses of a
    mesh with degenerate faces, a face crossing the near plane, one with a non-finite vertex,
    faces off the image and a face mask."""
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    cam = CAM64
    verts = torch.cat([posed(mesh, (0.01, -0.004, 0.22)),
                       posed(mesh, (0.05, 0.02, 0.2), rotvec=(-0.4, 0.9, 0.2))])
    faces = torch.tensor(mesh.faces)
    faces = torch.cat([faces, faces[:3, [0, 0, 1]]])  # zero-area faces
    px, z = cam.project(verts), verts[..., 2].clone()
    z[1, faces[7, 0]] = 1e-4  # face 7 (and its neighbours) cross the near plane in pose 1
    px[0, faces[11, 1]] = float('nan')  # a vertex that did not project
    mask = torch.rand(2, faces.shape[0], generator=torch.Generator().manual_seed(3)) > 0.2
    for face_mask in (None, mask):
        for barycentrics in (False, True):
            ref = rasterize_hard(px, z, faces, 64, 64, face_mask=face_mask,
                                 barycentrics=barycentrics, zbuffer='torch')
            got = rasterize_hard(px, z, faces, 64, 64, face_mask=face_mask,
                                 barycentrics=barycentrics, zbuffer='warp')
            torch.testing.assert_close(got.pixels, ref.pixels, rtol=0, atol=0)
            same = got.face_index == ref.face_index
            assert int((~same).sum()) <= 4  # a pixel centre on a shared edge: either face
            assert ref.covered.sum() > 1000 and not (got.face_index == 7)[1].any()
            assert not (got.face_index == 11)[0].any()
            if face_mask is not None:
                hit = got.face_index[got.covered]
                b = torch.nonzero(got.covered)[:, 0]
                assert face_mask[b, hit].all()
            # depth-only: the float32 depth of the test itself (the order of its float32
            # operations differs); with barycentrics it is recomputed from the vertices
            torch.testing.assert_close(got.depth[same], ref.depth[same],
                                       rtol=1e-12 if barycentrics else 2e-4, atol=0)
            if barycentrics:
                edge = got.bary[~same].min(-1).values
                assert edge.numel() == 0 or float(edge.abs().max()) < 1e-3


def test_the_serial_and_atomic_depth_tests_are_the_same():
    """On the CPU the Warp depth test is one serial launch; the two atomic launches a GPU runs
    must give the same faces and depths bit for bit (same arithmetic, same tie rule)."""
    from handypriors_ros.core.render.zbuffer_warp import nearest_faces
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    verts = torch.cat([posed(mesh, (0.01, -0.004, 0.22)),
                       posed(mesh, (0.05, 0.02, 0.2), rotvec=(-0.4, 0.9, 0.2))])
    faces = torch.tensor(mesh.faces)
    faces = torch.cat([faces, faces.flip(0)[:40]])  # duplicated faces: equal depths, ties
    px, z = CAM64.project(verts), verts[..., 2].clone()
    serial = nearest_faces(px, z, faces, 64, 64, None, 1e-3, atomic=False)
    atomic = nearest_faces(px, z, faces, 64, 64, None, 1e-3, atomic=True)
    assert int((serial[0] >= 0).sum()) > 1000
    assert int((serial[0] >= len(mesh.faces)).sum()) == 0  # a tie goes to the lower index
    torch.testing.assert_close(serial[0], atomic[0], rtol=0, atol=0)
    torch.testing.assert_close(serial[1], atomic[1], rtol=0, atol=0)


def test_culling_on_the_image_is_front_facing():
    """``cullable`` (the winding on the image) drops exactly the faces ``front_facing`` (the
    3D normal against the view ray) calls back faces, in both depth tests; the others stay."""
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    verts = posed(mesh, (0.01, 0.0, 0.2))
    faces = torch.tensor(mesh.faces)
    front = front_facing(verts, faces)
    px, z = CAM64.project(verts), verts[..., 2]
    some = torch.arange(faces.shape[0]) % 2 == 0  # only the even faces may be culled
    for zbuffer in ('torch', 'warp'):
        for cullable, keep in ((torch.ones_like(some), front), (some, front | ~some)):
            ref = rasterize_hard(px, z, faces, 64, 64, face_mask=keep, zbuffer=zbuffer)
            got = rasterize_hard(px, z, faces, 64, 64, cullable=cullable, zbuffer=zbuffer)
            torch.testing.assert_close(got.face_index, ref.face_index, rtol=0, atol=0)
        back = rasterize_hard(px, z, faces, 64, 64, face_mask=~front, zbuffer=zbuffer)
        assert back.covered.sum() > 500 and not torch.equal(back.face_index, ref.face_index)
    with pytest.raises(InputError, match=r'^cullable: expected a bool tensor'):
        rasterize_hard(px, z, faces, 64, 64, cullable=some[:-1])


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
    with pytest.raises(InputError, match=r"^zbuffer: expected 'auto'"):
        rasterize_hard(CAM32.project(verts), verts[..., 2], faces, 32, 32, zbuffer='cuda')


def _sphere_renderer(subdivisions=3):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.05)
    return Renderer(RenderMesh.from_trimesh(mesh), backend='soft')


def _pose(t, rotvec=(0.3, -0.2, 0.1)):
    R = se3_exp(torch.tensor([0.0, 0.0, 0.0, *rotvec]))[:3, :3]
    return make_transform(R, torch.tensor(t, dtype=torch.float32))[None]


def test_occluder_hides_only_what_it_is_in_front_of():
    r = _sphere_renderer()
    T = _pose((0.0, 0.0, 0.25))
    free = r.render(CAM64, T).object_mask
    bar = torch.zeros(1, 64, 64, dtype=torch.bool)
    bar[:, :, 28:36] = True
    inf = torch.full((1, 64, 64), float('inf'))
    in_front = torch.where(bar, torch.full_like(inf, 0.15), inf)  # sphere front at 0.20
    behind = torch.where(bar, torch.full_like(inf, 0.35), inf)  # sphere back at 0.30
    hidden = r.render(CAM64, T, hand_depth=in_front)
    shown = r.render(CAM64, T, hand_depth=behind).object_mask
    assert float(free[bar].max()) > 0.9
    assert float(hidden.object_mask[bar].max()) == 0.0  # removed where the hand is in front
    assert bool((hidden.hand_mask[bar] == 1).all()) and float(hidden.hand_mask[~bar].max()) == 0
    # elsewhere untouched, except the object's pixels next to the hand (no object edge there:
    # the hand's edge is not the object's, so they stay as the hard mask has them)
    near_bar = torch.zeros_like(bar)
    near_bar[:, :, 27:37] = True
    torch.testing.assert_close(hidden.object_mask[~near_bar], free[~near_bar])
    torch.testing.assert_close(shown, free)  # a hand behind changes nothing


def test_faces_behind_the_camera_are_dropped():
    r = _sphere_renderer(1)
    out = r.render(CAM32, _pose((0.0, 0.0, -0.3)))
    assert float(out.object_mask.max()) == 0.0 and float(out.object_depth.max()) == 0.0


def test_batches_render_like_single_frames():
    r = _sphere_renderer(2)
    T = torch.cat([_pose((0.01, 0.0, 0.25)), _pose((-0.01, 0.005, 0.3), (0.0, 0.5, 0.0))])
    occ = torch.full((2, 32, 32), float('inf'))
    occ[:, 10:14] = 0.2
    both = r.render(CAM32, T, hand_depth=occ)
    hard2 = r.rasterize(CAM32, T)
    for i in range(2):
        one = r.render(CAM32, T[i:i + 1], hand_depth=occ[i:i + 1])
        hard1 = r.rasterize(CAM32, T[i:i + 1])
        torch.testing.assert_close(hard2.raster.face_index[i:i + 1], hard1.raster.face_index)
        torch.testing.assert_close(hard2.depth[i:i + 1], hard1.depth)
        torch.testing.assert_close(both.object_mask[i:i + 1], one.object_mask)
