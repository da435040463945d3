"""The soft backend's silhouette against an exact reference: the area of each pixel covered
by the projected (convex) object, computed independently by clipping the convex hull of the
projected vertices (scipy) against every pixel square; and its pose gradient against finite
differences of that exact coverage."""
import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import ConvexHull

from handypriors_ros.core.geometry import make_transform, se3_exp
from handypriors_ros.core.render import (
    CameraBatch,
    PinholeCamera,
    Renderer,
    RenderMesh,
    RenderSettings,
    mask_loss,
)

CAM = PinholeCamera(160.0, 160.0, 63.5, 63.5, 128, 128)


def _clip(poly: list, axis: int, bound: float, keep_below: bool) -> list:
    """Sutherland-Hodgman: the part of a convex polygon on one side of x[axis] = bound."""
    out = []
    n = len(poly)
    for i in range(n):
        p, q = poly[i], poly[(i + 1) % n]
        p_in = (p[axis] <= bound) if keep_below else (p[axis] >= bound)
        q_in = (q[axis] <= bound) if keep_below else (q[axis] >= bound)
        if p_in:
            out.append(p)
        if p_in != q_in:
            t = (bound - p[axis]) / (q[axis] - p[axis])
            out.append(p + t * (q - p))
    return out


def _area(poly: list) -> float:
    if len(poly) < 3:
        return 0.0
    x = np.array([p[0] for p in poly])
    y = np.array([p[1] for p in poly])
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def exact_coverage(mesh: trimesh.Trimesh, T: np.ndarray, cam: PinholeCamera) -> np.ndarray:
    """(H, W) area of each pixel square inside the projection of a convex mesh."""
    p = mesh.vertices @ T[:3, :3].T + T[:3, 3]
    uv = np.stack([cam.fx * p[:, 0] / p[:, 2] + cam.cx, cam.fy * p[:, 1] / p[:, 2] + cam.cy], 1)
    hull = [uv[i] for i in ConvexHull(uv).vertices]
    cov = np.zeros((cam.height, cam.width))
    u0, v0 = np.floor(uv.min(0) - 1).astype(int)
    u1, v1 = np.ceil(uv.max(0) + 1).astype(int)
    for j in range(max(v0, 0), min(v1, cam.height - 1) + 1):
        row = _clip(_clip(hull, 1, j - 0.5, False), 1, j + 0.5, True)
        if len(row) < 3:
            continue
        for i in range(max(u0, 0), min(u1, cam.width - 1) + 1):
            cov[j, i] = _area(_clip(_clip(row, 0, i - 0.5, False), 0, i + 0.5, True))
    return cov


def pose(t, rotvec, dtype=torch.float64) -> torch.Tensor:
    xi = torch.tensor([0.0, 0.0, 0.0, *rotvec], dtype=dtype)
    return make_transform(se3_exp(xi)[:3, :3], torch.tensor(t, dtype=dtype))[None]


def soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum() / np.maximum(a, b).sum())


MESHES = {
    'box': lambda: trimesh.creation.box((0.08, 0.05, 0.06)),
    'sphere': lambda: trimesh.creation.icosphere(subdivisions=3, radius=0.04),
}


@pytest.mark.parametrize('name', sorted(MESHES))
def test_soft_silhouette_matches_exact_area_coverage(name):
    mesh = MESHES[name]()
    r = Renderer(RenderMesh.from_trimesh(mesh, dtype=torch.float64), backend='soft',
                 dtype=torch.float64)
    hard = Renderer(RenderMesh.from_trimesh(mesh, dtype=torch.float64), backend='soft',
                    dtype=torch.float64, settings=RenderSettings(antialias=False))
    for t, rv in (((0.003, -0.002, 0.35), (0.4, 0.7, 0.2)), ((-0.011, 0.007, 0.3), (1.1, -0.3, 0.5))):
        T = pose(t, rv)
        ref = exact_coverage(mesh, T[0].numpy(), CAM)
        soft = r.render(CAM, T).object_mask[0].numpy()
        aliased = hard.render(CAM, T).object_mask[0].numpy()
        assert soft_iou(soft, ref) >= 0.998, soft_iou(soft, ref)
        # antialiasing is what gets there: the hard mask is measurably worse
        assert soft_iou(aliased, ref) < soft_iou(soft, ref)
        assert abs(soft.sum() - ref.sum()) < 0.002 * ref.sum()


def test_soft_silhouette_pose_gradient_matches_finite_differences_of_exact_coverage():
    mesh = MESHES['box']()
    r = Renderer(RenderMesh.from_trimesh(mesh, dtype=torch.float64), backend='soft',
                 dtype=torch.float64)
    T0 = pose((0.002, -0.001, 0.35), (0.4, 0.7, 0.2))
    target = torch.as_tensor(exact_coverage(mesh, pose((0.006, 0.003, 0.345),
                                                       (0.45, 0.65, 0.2))[0].numpy(), CAM))
    xi = torch.zeros(1, 6, dtype=torch.float64, requires_grad=True)
    out = r.render(CAM, se3_exp(xi) @ T0)
    loss = mask_loss(out.object_mask, target[None], reduction='sum')[0]
    grad, = torch.autograd.grad(loss, xi)

    def exact_loss(x: np.ndarray) -> float:
        T = (se3_exp(torch.as_tensor(x)[None]) @ T0)[0].numpy()
        return float(((exact_coverage(mesh, T, CAM) - target.numpy()) ** 2).sum())

    fd = np.zeros(6)
    for k, eps in enumerate([2e-4] * 3 + [2e-3] * 3):
        e = np.zeros(6)
        e[k] = eps
        fd[k] = (exact_loss(e) - exact_loss(-e)) / (2 * eps)
    g = grad[0].numpy()
    cosine = float(g @ fd / (np.linalg.norm(g) * np.linalg.norm(fd)))
    assert cosine >= 0.99, (cosine, g, fd)


def test_soft_silhouette_is_continuous_when_an_edge_passes_pixel_centres():
    """Sliding the object by small steps changes the coverage sum smoothly (the hard mask's
    jumps are met by the correction's)."""
    mesh = MESHES['box']()
    r = Renderer(RenderMesh.from_trimesh(mesh, dtype=torch.float64), backend='soft',
                 dtype=torch.float64)
    sums = []
    for dx in np.linspace(0.0, 0.003, 31):  # ~1.4 px in steps of 0.05 px
        sums.append(float(r.render(CAM, pose((dx, 0.0, 0.35), (0.4, 0.7, 0.2)))
                          .object_mask.sum()))
    steps = np.abs(np.diff(sums))
    assert steps.max() < 1.0  # a pixel-centre crossing would jump by ~ a pixel per row


def test_camera_batch_renders_each_frame_with_its_camera():
    mesh = RenderMesh.from_trimesh(MESHES['box'](), dtype=torch.float64)
    r = Renderer(mesh, backend='soft', dtype=torch.float64)
    small = PinholeCamera(80.0, 80.0, 31.5, 23.5, 64, 48)
    T = torch.cat([pose((0.0, 0.0, 0.35), (0.4, 0.7, 0.2)),
                   pose((0.01, 0.0, 0.3), (0.1, 0.2, 0.3))])
    batch = r.render(CameraBatch.of([CAM, small]), T)
    assert batch.object_mask.shape == (2, 128, 128)
    a = r.render(CAM, T[:1])
    b = r.render(small, T[1:])
    torch.testing.assert_close(batch.object_mask[0], a.object_mask[0])
    torch.testing.assert_close(batch.object_mask[1, :48, :64], b.object_mask[0])
    torch.testing.assert_close(batch.object_rgb[1, :48, :64], b.object_rgb[0])
