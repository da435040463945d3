"""Renderer: outputs, hand occlusion, backends (nvdiffrast tests skip without CUDA)."""
import numpy as np
import pytest
import torch
import trimesh

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry import make_transform, rotate_vectors, se3_exp
from handypriors_ros.core.render import (
    CameraBatch,
    PinholeCamera,
    Renderer,
    RenderMesh,
    RenderSettings,
    mask_loss,
    nvdiffrast_available,
    rgb_loss,
)

CAM = PinholeCamera(150.0, 150.0, 47.5, 47.5, 96, 96)


def sphere_mesh(subdivisions: int = 3, dtype=torch.float32) -> RenderMesh:
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.05)
    m.visual.vertex_colors = (np.abs(m.vertices) / 0.05 * 255).astype(np.uint8)
    return RenderMesh.from_trimesh(m, dtype=dtype)


def finger_box():
    """A 2 cm wide vertical bar standing in for the hand (its own frame at its centre)."""
    return trimesh.creation.box((0.02, 0.3, 0.02))


def pose(t, rotvec=(0.0, 0.0, 0.0), dtype=torch.float32, batch=1) -> torch.Tensor:
    xi = torch.tensor([0.0, 0.0, 0.0, *rotvec], dtype=dtype)
    T = make_transform(se3_exp(xi)[:3, :3], torch.tensor(t, dtype=dtype))
    return T.expand(batch, 4, 4).clone()


def hand_at(z: float, batch: int = 1, dtype=torch.float32) -> torch.Tensor:
    box = finger_box()
    v = torch.tensor(box.vertices, dtype=dtype) + torch.tensor([0.0, 0.0, z], dtype=dtype)
    return v.expand(batch, -1, -1).clone()


def make_renderer(**kwargs) -> Renderer:
    kwargs.setdefault('hand_faces', torch.tensor(finger_box().faces))
    return Renderer(sphere_mesh(), backend='soft', **kwargs)


def test_render_output_shapes_and_ranges():
    r = make_renderer()
    assert r.backend == 'soft'
    T = pose((0.0, 0.0, 0.3), batch=2)
    tips = torch.tensor([[[0.0, 0.0, 0.3], [0.01, 0.02, 0.25]]]).expand(2, -1, -1)
    out = r.render(CAM, T, hand_at(0.24, batch=2), hand_keypoints_cam=tips)
    assert out.object_mask.shape == (2, 96, 96)
    assert out.hand_mask.shape == (2, 96, 96)
    assert out.object_depth.shape == (2, 96, 96)
    assert out.object_rgb.shape == (2, 96, 96, 3)
    assert out.keypoints_2d.shape == (2, 3, 2)
    for x in (out.object_mask, out.hand_mask, out.object_rgb):
        assert x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) <= 1
    # Object centre first: on the optical axis it lands on the principal point.
    torch.testing.assert_close(out.keypoints_2d[:, 0], torch.tensor([[47.5, 47.5]] * 2))
    visible = out.object_depth > 0
    assert float(out.object_depth[visible].min()) == pytest.approx(0.25, abs=2e-3)
    assert float(out.object_depth[visible].max()) <= 0.3
    # The hand bar is in front of the sphere: the object is hidden there, the hand visible.
    assert float(out.object_mask[:, 30:66, 46:50].max()) < 0.01
    assert float(out.hand_mask[:, 30:66, 46:50].min()) == 1.0
    assert not (visible & (out.hand_mask > 0)).any()


def test_hand_behind_object_changes_nothing():
    r = make_renderer()
    T = pose((0.0, 0.0, 0.3))
    alone = r.render(CAM, T)
    behind = r.render(CAM, T, hand_at(0.40))
    torch.testing.assert_close(behind.object_mask, alone.object_mask)
    torch.testing.assert_close(behind.object_rgb, alone.object_rgb)
    assert float(alone.hand_mask.max()) == 0.0
    # The bar is visible above and below the sphere, not over it.
    assert float(behind.hand_mask[:, 0:10, 46:50].min()) == 1.0
    assert float(behind.hand_mask[:, 40:56, 46:50].max()) == 0.0


def test_pose_gradients_flow_through_mask_and_rgb():
    r = make_renderer()
    T0 = pose((0.0, 0.0, 0.3), rotvec=(0.2, 0.3, 0.0))
    target = r.render(CAM, pose((0.004, -0.003, 0.3), rotvec=(0.25, 0.3, 0.0)))
    xi = torch.zeros(1, 6, requires_grad=True)
    out = r.render(CAM, se3_exp(xi) @ T0, hand_at(0.24))
    loss = mask_loss(out.object_mask, target.object_mask).sum() + \
        rgb_loss(out.object_rgb, target.object_rgb, target.object_mask > 0.5).sum()
    grad, = torch.autograd.grad(loss, xi)
    assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0
    # The rgb loss alone also has a gradient (barycentrics and shading).
    out = r.render(CAM, se3_exp(xi) @ T0)
    g_rgb, = torch.autograd.grad(rgb_loss(out.object_rgb, target.object_rgb,
                                          target.object_mask > 0.5).sum(), xi)
    assert float(g_rgb.abs().sum()) > 0


def test_float64_and_to():
    r = make_renderer()
    r64 = r.to(dtype=torch.float64)
    assert r64.object_mesh.vertices.dtype == torch.float64 and r64.backend == 'soft'
    out = r64.render(CAM, pose((0.0, 0.0, 0.3), dtype=torch.float64))
    assert out.object_mask.dtype == torch.float64
    out32 = r.render(CAM, pose((0.0, 0.0, 0.3)))
    torch.testing.assert_close(out.object_mask.float(), out32.object_mask, atol=1e-4, rtol=0)


def test_render_scene_hard_image():
    r = make_renderer()
    scene = r.render_scene(CAM, pose((0.0, 0.0, 0.3)), hand_at(0.24))
    assert scene.rgb.shape == (1, 96, 96, 3) and scene.depth.shape == (1, 96, 96)
    assert not (scene.object_mask & scene.hand_mask).any()
    assert bool(scene.hand_mask[0, 48, 48]) and float(scene.depth[0, 48, 48]) == \
        pytest.approx(0.23, abs=1e-5)
    assert bool(scene.object_mask[0, 48, 40])
    assert float(scene.depth[0, 0, 0]) == 0.0 and float(scene.rgb[0, 0, 0].sum()) == 0.0
    # Lambertian: the sphere is brighter facing the camera than at its rim.
    albedo_free = Renderer(RenderMesh.from_trimesh(trimesh.creation.icosphere(3, 0.05)),
                           backend='soft').render_scene(CAM, pose((0.0, 0.0, 0.3)))
    centre = float(albedo_free.rgb[0, 48, 48, 0])
    rim = float(albedo_free.rgb[0, 48, 47 + 23, 0])
    assert centre == pytest.approx(0.7 * (0.4 + 0.6), abs=0.02) and rim < centre - 0.1


def test_input_validation():
    r = make_renderer()
    with pytest.raises(InputError, match=r'^T_cam_obj: expected a tensor \(B, 4, 4\)'):
        r.render(CAM, torch.eye(4))
    with pytest.raises(InputError, match=r'^T_cam_obj: expected torch.float32'):
        r.render(CAM, pose((0, 0, 0.3), dtype=torch.float64))
    with pytest.raises(InputError, match=r'^hand_vertices_cam: expected a tensor \(2, Vh, 3\)'):
        r.render(CAM, pose((0, 0, 0.3), batch=2), hand_at(0.24))
    no_hand = Renderer(sphere_mesh(1), backend='soft')
    with pytest.raises(InputError, match='built without hand_faces'):
        no_hand.render(CAM, pose((0, 0, 0.3)), hand_at(0.24))
    with pytest.raises(InputError, match='^backend'):
        Renderer(sphere_mesh(1), backend='opengl')
    with pytest.raises(InputError, match='^near_m'):
        RenderSettings(near_m=0.0)
    with pytest.raises(InputError, match='^camera: expected a PinholeCamera'):
        r.render(CAM.K, pose((0, 0, 0.3)))
    with pytest.raises(InputError, match=r'^hand_vertices_cam: expected a tensor \(B, Vh, 3\)'):
        r.hand_depth(CAM, hand_at(0.24)[0])
    with pytest.raises(InputError, match='^camera: expected a CameraBatch of 2'):
        r.render(CameraBatch.of([CAM]), pose((0, 0, 0.3), batch=2))
    with pytest.raises(InputError, match='^far_m'):
        RenderSettings(near_m=1.0, far_m=0.5)


def test_backend_selection_on_cpu():
    assert Renderer(sphere_mesh(1), backend='auto').backend == 'soft'
    with pytest.raises(InputError, match="^backend: 'nvdiffrast' needs a CUDA device"):
        Renderer(sphere_mesh(1), backend='nvdiffrast')


needs_nvdiffrast = pytest.mark.skipif(
    not nvdiffrast_available(),
    reason='nvdiffrast backend needs CUDA and the nvdiffrast package (not on this machine)')


@needs_nvdiffrast
def test_nvdiffrast_matches_soft_backend():
    """Both backends antialias the same hard z-buffer analytically: at 128x128 their
    silhouettes agree (soft IoU >= 0.99) and their pose gradients point the same way."""
    cam = PinholeCamera(200.0, 200.0, 63.5, 63.5, 128, 128)
    faces = torch.tensor(finger_box().faces)
    soft = Renderer(sphere_mesh(), hand_faces=faces, backend='soft', device='cuda')
    nvd = Renderer(sphere_mesh(), hand_faces=faces, backend='auto', device='cuda')
    assert nvd.backend == 'nvdiffrast'
    T = pose((0.005, -0.01, 0.3), rotvec=(0.3, 0.1, 0.0)).cuda()
    hand = hand_at(0.24).cuda()
    a = soft.render(cam, T, hand)
    b = nvd.render(cam, T, hand)
    both = (a.object_depth > 0) & (b.object_depth > 0)
    only = (a.object_depth > 0) ^ (b.object_depth > 0)
    assert only.sum() <= 0.01 * both.sum()  # same pixels (a few on edges may differ)
    torch.testing.assert_close(a.object_depth[both], b.object_depth[both], atol=1e-4, rtol=0)
    torch.testing.assert_close(a.object_rgb[both], b.object_rgb[both], atol=2e-3, rtol=0)
    iou = torch.minimum(a.object_mask, b.object_mask).sum() / \
        torch.maximum(a.object_mask, b.object_mask).sum()
    assert iou >= 0.99, float(iou)
    target = soft.render(cam, pose((0.009, -0.006, 0.31), rotvec=(0.35, 0.1, 0.05)).cuda(),
                         hand).object_mask
    grads = []
    for r in (soft, nvd):
        xi = torch.zeros(1, 6, device='cuda', requires_grad=True)
        out = r.render(cam, se3_exp(xi) @ T, hand)
        grad, = torch.autograd.grad(mask_loss(out.object_mask, target).sum(), xi)
        grads.append(grad[0])
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cosine >= 0.95, (float(cosine), grads)


@needs_nvdiffrast
def test_nvdiffrast_image_orientation_and_gradient():
    r = Renderer(sphere_mesh(), backend='nvdiffrast', device='cuda')
    # Object above the optical axis (negative y, image top): rows above the centre.
    out = r.render(CAM, pose((0.0, -0.04, 0.3)).cuda())
    rows = torch.nonzero(out.object_depth[0] > 0)[:, 0]
    assert float(rows.float().mean()) < 47.5 - 10
    xi = torch.zeros(1, 6, device='cuda', requires_grad=True)
    target = r.render(CAM, pose((0.005, 0.0, 0.3)).cuda()).object_mask
    out = r.render(CAM, se3_exp(xi) @ pose((0.0, 0.0, 0.3)).cuda())
    grad, = torch.autograd.grad(mask_loss(out.object_mask, target).sum(), xi)
    assert torch.isfinite(grad).all() and float(grad[0, 0]) < 0  # move +x towards target


class _FakeNvdiffrast:
    """Stand-in for ``nvdiffrast.torch`` on CPU, following its documented conventions: clip
    coordinates in, raster row 0 at NDC y = -1, pixel centres at NDC (2 i + 1) / W - 1,
    channels (u, v, z/w, triangle_id + 1) with u, v the barycentrics of a triangle's first
    two vertices. It checks the backend's wiring (orientation, ids, attributes), not
    nvdiffrast itself."""

    def rasterize(self, context, pos, tri, resolution, grad_db=True):
        from handypriors_ros.core.render import rasterize_hard
        H, W = resolution
        ndc = pos[..., :2] / pos[..., 3:]
        px = torch.stack([((ndc[..., 0] + 1) * W - 1) / 2, ((ndc[..., 1] + 1) * H - 1) / 2], -1)
        r = rasterize_hard(px, pos[..., 3], tri.long(), H, W)
        zw = torch.zeros_like(r.depth)  # unused by the backend
        rast = torch.stack([r.bary[..., 0], r.bary[..., 1], zw,
                            (r.face_index + 1).to(pos.dtype)], -1)
        return rast * r.covered[..., None], None

    def interpolate(self, attr, rast, tri):
        B, H, W, _ = rast.shape
        fid = (rast[..., 3].long() - 1).clamp(min=0).reshape(B, -1)
        vi = tri.long()[fid]  # (B, HW, 3)
        vals = attr[torch.arange(B)[:, None, None], vi]  # (B, HW, 3, C)
        u, v = rast[..., 0].reshape(B, -1, 1), rast[..., 1].reshape(B, -1, 1)
        out = vals[:, :, 0] * u + vals[:, :, 1] * v + vals[:, :, 2] * (1 - u - v)
        return out.reshape(B, H, W, -1) * (rast[..., 3:] > 0), None

    def antialias(self, color, rast, pos, tri, topology_hash=None):
        return color

    def antialias_construct_topology_hash(self, tri):
        return None


def test_nvdiffrast_backend_wiring_with_a_cpu_stand_in():
    from handypriors_ros.core.render.nvdiffrast_backend import NvdiffrastRasterizer
    backend = NvdiffrastRasterizer.__new__(NvdiffrastRasterizer)
    backend._dr, backend._context, backend._topology = _FakeNvdiffrast(), None, None
    r = make_renderer()
    T = pose((0.01, -0.02, 0.3), rotvec=(0.3, 0.1, 0.0))
    hand = hand_at(0.24)
    verts = r.object_vertices_cam(T)
    colors = r._shaded_colors(r.object_mesh.vertex_colors,
                              rotate_vectors(T, r.object_mesh.vertex_normals))
    mask, hand_mask, depth, rgb = backend.render(CAM, r.settings, verts, r.object_mesh.faces,
                                                 colors, hand, r.hand_faces)
    ref = r.render(CAM, T, hand)
    torch.testing.assert_close(depth, ref.object_depth, atol=1e-5, rtol=0)
    torch.testing.assert_close(rgb, ref.object_rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(hand_mask, ref.hand_mask)
    torch.testing.assert_close(mask, (ref.object_depth > 0).float())
    # rasterize: object and hand in one z-buffer, as the torch path gives it
    r._nvdiffrast, r.backend = backend, 'nvdiffrast'
    via_nvd = r.rasterize(CAM, T, hand)
    r._nvdiffrast, r.backend = None, 'soft'
    via_torch = r.rasterize(CAM, T, hand)
    # (the torch path culls back faces, nvdiffrast does not, and the pixel coordinates come
    # from clip space: where a pixel centre lies on an edge shared by two faces either may win)
    same = via_nvd.raster.face_index == via_torch.raster.face_index
    assert int((~same).sum()) <= 8
    for raster in (via_nvd.raster, via_torch.raster):  # only on edges
        assert float(raster.bary[~same].min(-1).values.abs().max()) < 1e-3
    torch.testing.assert_close(via_nvd.object_visible, via_torch.object_visible)
    torch.testing.assert_close(via_nvd.hand_visible, via_torch.hand_visible)
    torch.testing.assert_close(via_nvd.depth, via_torch.depth, atol=1e-5, rtol=0)
    torch.testing.assert_close(via_nvd.raster.bary[same], via_torch.raster.bary[same], atol=2e-4,
                               rtol=0)
    assert via_nvd.object_visible.any() and via_nvd.hand_visible.any()
