"""Rendering losses: mask / rgb losses, distance fields, the contour residual for the EKF."""
import numpy as np
import pytest
import torch
import trimesh

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry import make_transform, se3_exp
from handypriors_ros.core.render import (
    PinholeCamera,
    Renderer,
    RenderMesh,
    bilinear_sample,
    contour_points,
    contour_residual,
    mask_loss,
    rgb_loss,
    signed_distance_transform,
)

CAM = PinholeCamera(200.0, 200.0, 63.5, 63.5, 128, 128)

# torch.func.jacfwd loads torch's own forward-AD decompositions through torch.jit.script.
jit_deprecation = pytest.mark.filterwarnings(
    'ignore:`torch.jit.script` is deprecated:DeprecationWarning')


def pose(t, rotvec=(0.3, -0.2, 0.1)) -> torch.Tensor:
    xi = torch.tensor([0.0, 0.0, 0.0, *rotvec])
    return make_transform(se3_exp(xi)[:3, :3], torch.tensor(t, dtype=torch.float32))[None]


def box_renderer(**kwargs) -> Renderer:
    box = trimesh.creation.box((0.08, 0.05, 0.04))
    return Renderer(RenderMesh.from_trimesh(box), backend='soft', **kwargs)


def test_mask_loss_values_weights_and_errors():
    a = torch.zeros(2, 4, 4)
    b = torch.zeros(2, 4, 4, dtype=torch.bool)
    b[0, :2] = True  # 8 of 16 pixels differ by 1
    torch.testing.assert_close(mask_loss(a, b), torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(mask_loss(a, b, reduction='sum'), torch.tensor([8.0, 0.0]))
    w = torch.zeros(2, 4, 4)
    w[:, 2:] = 1.0  # only the rows that agree
    torch.testing.assert_close(mask_loss(a, b, weights=w), torch.tensor([0.0, 0.0]))
    with pytest.raises(InputError, match=r'^observed: expected shape \(2, 4, 4\)'):
        mask_loss(a, b[0])
    with pytest.raises(InputError, match='^reduction'):
        mask_loss(a, b, reduction='max')


def test_rgb_loss_only_inside_the_mask():
    rendered = torch.zeros(1, 4, 4, 3)
    observed = torch.ones(1, 4, 4, 3)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert float(rgb_loss(rendered, observed, mask)) == 0.0
    mask[0, 0, 0] = True
    torch.testing.assert_close(rgb_loss(rendered, observed, mask), torch.tensor([1.0]))
    torch.testing.assert_close(rgb_loss(rendered, observed, mask, reduction='sum'),
                               torch.tensor([3.0]))
    with pytest.raises(InputError, match='^observed_rgb: expected floats'):
        rgb_loss(rendered, observed.to(torch.uint8), mask)


def test_signed_distance_transform_convention():
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 10:20] = 1
    sdt = signed_distance_transform(mask)
    assert sdt.dtype == torch.float32 and sdt.shape == (20, 30)
    assert float(sdt[10, 10]) == pytest.approx(-0.5)  # inside, next to the left boundary
    assert float(sdt[10, 9]) == pytest.approx(0.5)  # outside, next to it
    assert float(sdt[10, 5]) == pytest.approx(4.5)
    assert float(sdt[10, 14]) == pytest.approx(-4.5)
    # The boundary (zero crossing) lies half-way between pixel centres.
    assert float(bilinear_sample(sdt[None], torch.tensor([[[9.5, 10.0]]]))) == \
        pytest.approx(0.0)
    batch = signed_distance_transform(torch.stack([torch.from_numpy(mask).bool(),
                                                   torch.zeros(20, 30, dtype=torch.bool)]))
    assert batch.shape == (2, 20, 30) and float(batch[1].min()) == 50.0


@jit_deprecation
def test_bilinear_sample_is_exact_for_linear_fields_and_jacfwd_works():
    v, u = torch.meshgrid(torch.arange(6.0), torch.arange(8.0), indexing='ij')
    image = (2.0 * u - 3.0 * v + 1.0)[None]
    pts = torch.tensor([[[1.25, 2.5], [6.9, 4.1], [0.0, 0.0], [7.0, 5.0]]])
    torch.testing.assert_close(bilinear_sample(image, pts),
                               2.0 * pts[..., 0] - 3.0 * pts[..., 1] + 1.0)
    jac = torch.func.jacfwd(lambda p: bilinear_sample(image, p))(pts[:, :2])  # (1,2,1,2,2)
    torch.testing.assert_close(jac[0, 0, 0, 0], torch.tensor([2.0, -3.0]))


def test_contour_residual_is_zero_at_the_observed_pose():
    r = box_renderer()
    T = pose((0.01, -0.005, 0.4))
    observed = r.render_scene(CAM, T).object_mask
    res = contour_residual(r, CAM, T, signed_distance_transform(observed), num_points=150)
    assert res.residual.shape == (1, 150) and res.points_2d.shape == (1, 150, 2)
    assert bool(res.valid.all())
    # The observed mask is the pixel-sampled silhouette: residuals within its quantisation.
    assert float(res.residual.abs().mean()) < 0.3
    assert float(res.residual.abs().max()) < 0.75


@jit_deprecation
def test_contour_residual_gauss_newton_step_recovers_a_shift():
    r = box_renderer()
    T_true = pose((0.01, -0.005, 0.4))
    shift_px = 2.0
    dx = shift_px * 0.4 / CAM.fx  # metres at the box's depth
    T_est = pose((0.01 - dx, -0.005, 0.4))
    sdt = signed_distance_transform(r.render_scene(CAM, T_true).object_mask)
    res = contour_residual(r, CAM, T_est, sdt, num_points=200)
    assert float(res.residual[res.valid].abs().max()) > 1.5
    samples = res.samples

    def residual_of(xi):  # left perturbation in the camera frame, fixed association
        return contour_residual(r, CAM, se3_exp(xi) @ T_est, sdt, samples=samples).residual[0]

    xi0 = torch.zeros(1, 6)
    J = torch.func.jacfwd(residual_of)(xi0)[:, 0, :]  # (K, 6)
    rv = residual_of(xi0)
    H = J.T @ J + 1e-6 * torch.eye(6)
    step = -torch.linalg.solve(H, J.T @ rv)
    # The gradient of 0.5 |r|^2 points against +x: the step moves the box towards the mask.
    assert float((J.T @ rv)[0]) < 0
    assert float(step[0]) == pytest.approx(dx, rel=0.35)
    after = contour_residual(r, CAM, se3_exp(step[None]) @ T_est, sdt, num_points=200)
    assert float(after.residual[after.valid].abs().mean()) < \
        0.5 * float(res.residual[res.valid].abs().mean())
    # The analytic Jacobian (left perturbation) equals the autodiff one.
    analytic = contour_residual(r, CAM, T_est, sdt, samples=samples, with_jacobian=True)
    torch.testing.assert_close(analytic.residual[0], rv)
    torch.testing.assert_close(analytic.jacobian[0], J, rtol=1e-4, atol=1e-2)


def test_contour_points_hidden_by_the_hand_are_excluded():
    bar = trimesh.creation.box((0.02, 0.3, 0.02))
    r = box_renderer(hand_faces=torch.tensor(bar.faces))
    T = pose((0.0, 0.0, 0.4), rotvec=(0.0, 0.0, 0.0))
    hand = torch.tensor(bar.vertices, dtype=torch.float32)[None] + torch.tensor([0.0, 0.0, 0.3])
    sdt = signed_distance_transform(r.render_scene(CAM, T).object_mask)
    free = contour_residual(r, CAM, T, sdt, num_points=100)
    occluded = contour_residual(r, CAM, T, sdt, hand_vertices_cam=hand, num_points=100)
    u_free = free.points_2d[0, :, 0][free.valid[0]]
    u_occ = occluded.points_2d[0, :, 0][occluded.valid[0]]
    bar_half_px = 0.01 / 0.3 * CAM.fx  # the bar's half width in pixels at its depth
    assert bool(((u_free - 63.5).abs() < bar_half_px - 1).any())  # top/bottom edges
    assert not bool(((u_occ - 63.5).abs() < bar_half_px - 1).any())
    assert bool(occluded.valid.all())  # still K points, all on the visible contour


def test_contour_points_are_differentiable_and_validated():
    r = box_renderer()
    T = pose((0.0, 0.0, 0.4))
    sdt = signed_distance_transform(r.render_scene(CAM, T).object_mask)
    res = contour_residual(r, CAM, T, sdt, num_points=50)
    xi = torch.zeros(1, 6, requires_grad=True)
    p = contour_points(r, CAM, se3_exp(xi) @ T, res.samples)
    torch.testing.assert_close(p.detach(), res.points_2d)
    g, = torch.autograd.grad(p[..., 0].sum(), xi)
    assert float(g[0, 0]) == pytest.approx(50 * CAM.fx / 0.4, rel=0.2)  # d u / d x = fx / z
    with pytest.raises(InputError, match=r'^observed_sdt: expected shape \(1, 128, 128\)'):
        contour_residual(r, CAM, T, sdt[0])
