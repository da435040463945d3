"""Pose metrics against known answers, brute-force references and scipy."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.spatial.transform import Rotation

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.metrics import (
    PenetrationStats, add, add_s, auc_add, chamfer_2d, chamfer_2d_masks, chamfer_3d,
    fraction_within, penetration_depth, posed_chamfer_3d, projected_chamfer_2d,
    rotation_error_deg, translation_error)


def pose(R=np.eye(3), t=(0.0, 0.0, 0.0)):
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def random_poses(rng, n):
    R = Rotation.random(n, random_state=rng).as_matrix()
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = R
    T[:, :3, 3] = rng.normal(0.0, 0.1, (n, 3)) + [0.0, 0.0, 0.6]
    return T


def cylinder_points(n_around=90, n_height=12, radius=0.03, height=0.1):
    """Points on a cylinder about z, evenly spaced in angle (a 4-degree step)."""
    t = np.linspace(0, 2 * np.pi, n_around, endpoint=False)
    z = np.linspace(-height / 2, height / 2, n_height)
    tt, zz = np.meshgrid(t, z)
    return np.stack([radius * np.cos(tt), radius * np.sin(tt), zz], -1).reshape(-1, 3)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# ---- ADD / ADD-S ----------------------------------------------------------------------------


def test_identical_poses_give_zero(rng):
    T = random_poses(rng, 5)
    points = rng.normal(size=(200, 3)) * 0.05
    np.testing.assert_allclose(add(T, T, points), 0.0, atol=1e-12)
    np.testing.assert_allclose(add_s(T, T, points), 0.0, atol=1e-12)
    np.testing.assert_allclose(translation_error(T, T), 0.0, atol=1e-12)
    np.testing.assert_allclose(rotation_error_deg(T, T), 0.0, atol=1e-5)
    np.testing.assert_allclose(posed_chamfer_3d(T, T, points), 0.0, atol=1e-12)


def test_pure_translation_gives_add_and_translation_error_d(rng):
    T_gt = random_poses(rng, 4)
    d = 0.023
    direction = rng.normal(size=(4, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    T_est = T_gt.copy()
    T_est[:, :3, 3] += d * direction
    points = rng.normal(size=(300, 3)) * 0.05
    np.testing.assert_allclose(add(T_est, T_gt, points), d, rtol=1e-12)
    np.testing.assert_allclose(translation_error(T_est, T_gt), d, rtol=1e-12)
    np.testing.assert_allclose(rotation_error_deg(T_est, T_gt), 0.0, atol=1e-5)
    assert (add_s(T_est, T_gt, points) <= d + 1e-12).all()


def test_rotation_about_the_axis_of_a_cylinder_is_free_for_add_s_only():
    points = cylinder_points()
    T_gt = pose(t=(0.0, 0.0, 0.5))[None]
    T_est = pose(Rotation.from_euler('z', 40, degrees=True).as_matrix(), (0.0, 0.0, 0.5))[None]
    # 40 degrees is a multiple of the 4-degree spacing: every point lands on another one
    assert add_s(T_est, T_gt, points)[0] < 1e-12
    chord = 2 * 0.03 * np.sin(np.deg2rad(20))
    np.testing.assert_allclose(add(T_est, T_gt, points)[0], chord, rtol=1e-12)
    # an angle between samples: ADD-S stays below half the sample spacing on the circle
    T_est2 = pose(Rotation.from_euler('z', 42, degrees=True).as_matrix(), (0.0, 0.0, 0.5))[None]
    assert add_s(T_est2, T_gt, points)[0] < 0.5 * 2 * np.pi * 0.03 / 90
    assert add(T_est2, T_gt, points)[0] > 0.02


def test_add_s_matches_brute_force_and_is_below_add(rng):
    points = rng.normal(size=(150, 3)) * 0.05
    T_est, T_gt = random_poses(rng, 6), random_poses(rng, 6)
    expected = []
    for i in range(6):
        a = points @ T_est[i, :3, :3].T + T_est[i, :3, 3]
        b = points @ T_gt[i, :3, :3].T + T_gt[i, :3, 3]
        expected.append(cdist(a, b).min(axis=1).mean())
    np.testing.assert_allclose(add_s(T_est, T_gt, points), expected, rtol=1e-10)
    assert (add_s(T_est, T_gt, points) <= add(T_est, T_gt, points) + 1e-12).all()


def test_torch_inputs_and_single_pose(rng):
    points = rng.normal(size=(50, 3)) * 0.05
    T_est, T_gt = random_poses(rng, 3), random_poses(rng, 3)
    expected = add(T_est, T_gt, points)
    got = add(torch.as_tensor(T_est, dtype=torch.float32), torch.as_tensor(T_gt),
              torch.as_tensor(points))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert add(T_est[0], T_gt[0], points).shape == (1,)


# ---- rotation error -------------------------------------------------------------------------


def test_rotation_error_matches_scipy(rng):
    R_est = Rotation.random(200, random_state=rng)
    # relative rotations spread over the whole range, including near 0 and near 180 degrees
    angles = np.concatenate([[0.0, 1e-7, 179.9999, 180.0], rng.uniform(0, 180, 196)])
    axes = rng.normal(size=(200, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    R_rel = Rotation.from_rotvec(axes * np.deg2rad(angles)[:, None])
    R_gt = R_est * R_rel
    expected = np.degrees((R_est.inv() * R_gt).magnitude())
    got = rotation_error_deg(R_est.as_matrix(), R_gt.as_matrix())
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got, angles, atol=1e-6)
    # poses and rotations give the same answer
    T_est = np.tile(np.eye(4), (200, 1, 1))
    T_gt = T_est.copy()
    T_est[:, :3, :3], T_gt[:, :3, :3] = R_est.as_matrix(), R_gt.as_matrix()
    np.testing.assert_allclose(rotation_error_deg(T_est, T_gt), got, atol=1e-9)


# ---- AUC ------------------------------------------------------------------------------------


def test_auc_known_cases():
    assert auc_add(np.zeros(10)) == pytest.approx(1.0)
    assert auc_add(np.array([0.1, 0.15, 1.0, np.inf])) == 0.0
    # by hand: sorted errors 2, 4, 6, 8 cm of n = 4; right-end step rule
    # 0.02 * (1/4 + 2/4 + 3/4 + 4/4) + (0.10 - 0.08) * 4/4 = 0.07 -> / 0.10 = 0.7
    assert auc_add(np.array([0.08, 0.02, 0.06, 0.04])) == pytest.approx(0.7)
    # repeated errors: 0.05 * 1/2 + 0 + 0.05 * 2/2 = 0.075 -> 0.75
    assert auc_add(np.array([0.05, 0.05])) == pytest.approx(0.75)
    # half of the frames lost
    assert auc_add(np.array([0.0, np.inf])) == pytest.approx(0.5)
    # another range: 0.03 fails; (0, 0.01] and (0.01, 0.02] both at accuracy 1/2
    assert auc_add(np.array([0.01, 0.03]), max_threshold=0.02) == pytest.approx(0.5)


def test_auc_is_within_one_over_n_of_the_exact_integral(rng):
    errors = rng.exponential(0.03, size=400)
    thresholds = np.linspace(0, 0.1, 200001)
    accuracy = (errors[None, :] < thresholds[:, None]).mean(axis=1)
    trapezoid = getattr(np, 'trapezoid', None) or np.trapz  # numpy 2 / numpy 1.x (Ubuntu 24.04)
    exact = trapezoid(accuracy, thresholds) / 0.1
    got = auc_add(errors)
    assert exact - 1e-4 <= got <= exact + 1.0 / len(errors) + 1e-4


def test_fraction_within():
    e = np.array([0.001, 0.02, 0.019, np.inf])
    assert fraction_within(e, 0.02) == pytest.approx(0.5)
    assert fraction_within(e, 1.0) == pytest.approx(0.75)


# ---- Chamfer --------------------------------------------------------------------------------


def test_chamfer_3d_self_shift_and_brute_force(rng):
    grid = np.stack(np.meshgrid(*[np.arange(4.0)] * 3), -1).reshape(-1, 3) * 0.05  # 5 cm spacing
    assert chamfer_3d(grid, grid) == 0.0
    shift = np.array([0.003, -0.004, 0.0])                                          # 5 mm
    assert chamfer_3d(grid, grid + shift) == pytest.approx(0.005, rel=1e-12)
    a, b = rng.normal(size=(80, 3)), rng.normal(size=(50, 3))
    d = cdist(a, b)
    expected = 0.5 * (d.min(axis=1).mean() + d.min(axis=0).mean())
    assert chamfer_3d(a, b) == pytest.approx(expected, rel=1e-12)
    assert chamfer_3d(b, a) == pytest.approx(expected, rel=1e-12)


def test_chamfer_2d_points_and_masks():
    pixels = np.array([[10.0, 10.0], [50.0, 12.0], [30.0, 40.0]])
    assert chamfer_2d(pixels, pixels + [3.0, 4.0]) == pytest.approx(5.0)
    a = np.zeros((20, 30), bool)
    b = np.zeros((20, 30), bool)
    a[5, 5] = True
    b[5, 8] = True
    assert chamfer_2d_masks(a, b) == pytest.approx(3.0)
    square = np.zeros((40, 40), bool)
    square[10:20, 10:20] = True
    assert chamfer_2d_masks(square, square) == 0.0
    moved = np.roll(square, 2, axis=1)
    pa, pb = np.argwhere(square), np.argwhere(moved)
    d = cdist(pa, pb)
    assert chamfer_2d_masks(square, moved) == pytest.approx(
        0.5 * (d.min(1).mean() + d.min(0).mean()))
    # contour of the 10 x 10 square: its 36 border pixels; compare with a brute force
    def border(mask):
        rows, cols = np.nonzero(mask)
        on = ((rows == rows.min()) | (rows == rows.max()) | (cols == cols.min())
              | (cols == cols.max()))
        return np.stack([rows[on], cols[on]], 1)
    ca, cb = border(square), border(moved)
    assert len(ca) == 36
    d = cdist(ca, cb)
    assert chamfer_2d_masks(square, moved, contour=True) == pytest.approx(
        0.5 * (d.min(1).mean() + d.min(0).mean()))
    assert chamfer_2d_masks(np.zeros_like(a), np.zeros_like(a)) == 0.0
    assert chamfer_2d_masks(a, np.zeros_like(a)) == np.inf


def test_projected_chamfer_2d_of_a_sideways_shift():
    K = np.array([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])
    # four points 5 cm apart in a plane facing the camera at 0.5 m
    points = np.array([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [0.0, 0.05, 0.0], [0.05, 0.05, 0.0]])
    T_gt = pose(t=(0.0, 0.0, 0.5))[None]
    T_est = pose(t=(0.002, 0.0, 0.5))[None]
    np.testing.assert_allclose(projected_chamfer_2d(T_est, T_gt, points, K), 600 * 0.002 / 0.5)
    np.testing.assert_allclose(projected_chamfer_2d(T_gt, T_gt, points, K), 0.0, atol=1e-12)
    behind = pose(t=(0.0, 0.0, -0.5))[None]
    assert projected_chamfer_2d(behind, T_gt, points, K)[0] == np.inf
    np.testing.assert_allclose(posed_chamfer_3d(T_est, T_gt, points), 0.002)


# ---- penetration ----------------------------------------------------------------------------


def test_penetration_depth():
    stats = penetration_depth(np.array([0.01, -0.002, -0.004, 0.0]))
    assert isinstance(stats, PenetrationStats)
    assert stats.mean_depth == pytest.approx(0.003)
    assert stats.max_depth == pytest.approx(0.004)
    assert stats.fraction_inside == pytest.approx(0.5)
    batch = penetration_depth(torch.tensor([[0.01, 0.02], [-0.001, 0.0]]))
    np.testing.assert_allclose(batch.mean_depth, [0.0, 0.001])
    np.testing.assert_allclose(batch.max_depth, [0.0, 0.001])
    np.testing.assert_allclose(batch.fraction_inside, [0.0, 0.5])


# ---- validation -----------------------------------------------------------------------------


def test_bad_inputs_raise_input_error(rng):
    T = random_poses(rng, 2)
    points = rng.normal(size=(10, 3))
    with pytest.raises(InputError, match=r'points: expected shape \(P, 3\)'):
        add(T, T, points[:, :2])
    with pytest.raises(InputError, match='T_est: expected shape'):
        add(T[:, :3], T, points)
    with pytest.raises(InputError, match='same number of poses'):
        add(T[:1], T, points)
    with pytest.raises(InputError, match='bottom row'):
        add(np.swapaxes(T, 1, 2), T, points)
    scaled = T.copy()
    scaled[:, :3, :3] *= 2.0
    with pytest.raises(InputError, match='rotation blocks'):
        add_s(T, scaled, points)
    bad = T.copy()
    bad[0, 0, 3] = np.nan
    with pytest.raises(InputError, match='NaN'):
        translation_error(bad, T)
    with pytest.raises(InputError, match='errors: expected no NaN'):
        auc_add(np.array([0.01, np.nan]))
    with pytest.raises(InputError, match='mask_a: expected dtype bool'):
        chamfer_2d_masks(np.zeros((4, 4), np.uint8), np.zeros((4, 4), bool))
    with pytest.raises(InputError, match='same size'):
        chamfer_2d_masks(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(InputError, match='K: expected shape'):
        projected_chamfer_2d(T, T, points, np.eye(4))
    with pytest.raises(InputError, match='signed_distances'):
        penetration_depth(np.zeros((2, 2, 2)))
