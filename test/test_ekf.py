"""The error-state pose EKF: Jacobians, consistency (NEES) on simulated data, gating."""
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from scipy.stats import chi2

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.tracking.ekf import (PoseEKF, axis_twist, motion_jacobian, ominus,
                                               oplus, oplus_linear, separable_jacobian,
                                               without_direction)



@pytest.fixture(autouse=True)
def _float64_default():
    """These tests build tensors in float64; restore the default afterwards (it is global)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _T(rotvec, t):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return torch.as_tensor(T)


def test_oplus_ominus_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        T = _T(rng.normal(size=3), rng.normal(size=3))
        d = torch.as_tensor(rng.normal(scale=0.3, size=6))
        torch.testing.assert_close(ominus(oplus(T, d), T), d)


def test_separable_jacobian_matches_finite_differences():
    from handypriors_ros.core.tracking.ekf import separable_jacobian
    rng = np.random.default_rng(5)
    T = _T(rng.normal(size=3), [0.0, 0.0, 0.5])
    pts = torch.as_tensor(rng.normal(scale=0.05, size=(5, 3)))

    def rows(delta):  # (5, 6) -> (5, 2): projections, point i perturbed by delta[i]
        Td = oplus_linear(T, delta)
        p = (Td[:, :3, :3] @ pts[:, :, None])[..., 0] + Td[:, :3, 3]
        return 600 * p[:, :2] / p[:, 2:]

    value, J = separable_jacobian(rows, 5)

    def whole(delta6):  # the same measurement with one shared perturbation, exact oplus
        Td = oplus(T, delta6)
        p = pts @ Td[:3, :3].T + Td[:3, 3]
        return (600 * p[:, :2] / p[:, 2:]).reshape(-1)

    eps = 1e-6
    J_fd = torch.stack([(whole(eps * e) - whole(-eps * e)) / (2 * eps)
                        for e in torch.eye(6)], dim=1)
    torch.testing.assert_close(value, whole(torch.zeros(6)))
    torch.testing.assert_close(J, J_fd, atol=1e-4, rtol=1e-6)


def test_axis_twist_is_the_turn_about_the_axis():
    """``T (+) theta v`` against the exact pose turned about an axis of the object (scipy):
    ``ominus(T_turned, T) / theta`` -> v."""
    rng = np.random.default_rng(2)
    for _ in range(5):
        T = _T(rng.normal(size=3), rng.normal(scale=0.3, size=3))
        origin = rng.normal(scale=0.1, size=3)
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        v = axis_twist(T, torch.as_tensor(origin), torch.as_tensor(axis))
        theta = 1e-6
        turn = np.eye(4)  # about the axis through origin, object frame
        turn[:3, :3] = Rotation.from_rotvec(theta * axis).as_matrix()
        turn[:3, 3] = origin - turn[:3, :3] @ origin
        torch.testing.assert_close(ominus(T @ torch.as_tensor(turn), T) / theta, v,
                                   atol=1e-6, rtol=0)


def test_without_direction_zeroes_the_jacobian_along_it_only():
    rng = np.random.default_rng(4)
    T = _T(rng.normal(size=3), [0.0, 0.0, 0.5])
    pts = torch.as_tensor(rng.normal(scale=0.05, size=(6, 3)))

    def rows(delta):  # (6, 6) -> (6, 2) projections
        Td = oplus_linear(T, delta)
        p = (Td[:, :3, :3] @ pts[:, :, None])[..., 0] + Td[:, :3, 3]
        return 600 * p[:, :2] / p[:, 2:]

    v = torch.as_tensor(rng.normal(size=6))
    value, J = separable_jacobian(rows, 6)
    value_p, J_p = separable_jacobian(without_direction(rows, v), 6)
    torch.testing.assert_close(value_p, value)  # the same residual at delta = 0
    assert float((J @ v).abs().max()) > 1.0
    assert float((J_p @ v).abs().max()) < 1e-9
    u = torch.as_tensor(rng.normal(size=6))
    u = u - (u @ v) / (v @ v) * v  # across v
    torch.testing.assert_close(J_p @ u, J @ u)


def test_motion_jacobian_is_blockdiag_dR():
    from handypriors_ros.core.tracking.ekf import motion_jacobian_autodiff
    dT = _T([0.2, -0.1, 0.3], [0.01, 0.02, -0.03])
    F = motion_jacobian_autodiff(dT)
    torch.testing.assert_close(motion_jacobian(dT), F)
    dR = dT[:3, :3]
    expected = torch.zeros(6, 6)
    expected[:3, :3], expected[3:, 3:] = dR, dR
    torch.testing.assert_close(F, expected, atol=1e-10, rtol=0)


def _simulate(seed, steps=150, sigma_px=1.5, gate=True, outlier_every=0):
    """A pose that moves by known increments with process noise, observed through the pixel
    projections of 8 model points (pinhole, f = 600 px)."""
    rng = np.random.default_rng(seed)
    pts = torch.as_tensor(rng.uniform(-0.04, 0.04, size=(8, 3)))
    f, c = 600.0, 320.0
    q_std = np.array([1e-3, 1e-3, 1e-3, 0.01, 0.01, 0.01])
    Q = torch.diag(torch.as_tensor(q_std ** 2))

    def project(T):
        p = pts @ T[:3, :3].T + T[:3, 3]
        return (f * p[:, :2] / p[:, 2:] + c).reshape(-1)

    def project_rows(T, delta):  # one perturbation per point: (8, 6) -> (8, 2)
        Td = oplus_linear(T, delta)
        p = (Td[:, :3, :3] @ pts[:, :, None])[..., 0] + Td[:, :3, 3]
        return f * p[:, :2] / p[:, 2:] + c

    T_true = _T([0.3, 0.2, 0.1], [0.0, 0.0, 0.5])
    P0 = torch.diag(torch.as_tensor([0.005 ** 2] * 3 + [0.05 ** 2] * 3))
    T0 = oplus(T_true, torch.as_tensor(rng.multivariate_normal(np.zeros(6), P0.numpy())))
    ekf = PoseEKF(T0, P0)
    nees, accepted = [], []
    centre = torch.as_tensor([0.0, 0.0, 0.5])
    for k in range(steps):
        # a rotation about the object's (nominal) centre and a small sideways sway
        dT = _T([0.0, 0.01, 0.005], [0.001 * np.sin(k / 10), 0.0, 0.0])
        dT[:3, 3] += centre - dT[:3, :3] @ centre
        T_true = oplus(dT @ T_true, torch.as_tensor(rng.normal(size=6) * q_std))
        ekf.predict(dT, Q)
        z = project(T_true) + torch.as_tensor(rng.normal(scale=sigma_px, size=16))
        if outlier_every and k % outlier_every == 0:
            z = z + 80.0
        rec = ekf.update('points', lambda d: z.reshape(8, 2) - project_rows(ekf.T, d),
                         torch.full((16,), sigma_px ** 2), rows=8, gate=gate)
        accepted.append(rec.accepted)
        e = ominus(T_true, ekf.T)
        nees.append(float(e @ torch.linalg.solve(ekf.P, e)))
    return np.array(nees), np.array(accepted), ekf


def test_nees_inside_the_95_percent_band_for_most_frames():
    nees, accepted, _ = _simulate(1)
    lo, hi = chi2.ppf(0.025, 6), chi2.ppf(0.975, 6)
    inside = ((nees > lo) & (nees < hi)).mean()
    assert accepted.all()
    assert inside > 0.85, f'only {inside:.0%} of frames inside the 95 % band'
    assert abs(nees.mean() - 6.0) < 1.5, nees.mean()


def test_an_overconfident_filter_fails_the_nees_check():
    # The check can fail: with the measurement noise underestimated 10x the NEES explodes.
    rng = np.random.default_rng(2)
    pts = torch.as_tensor(rng.uniform(-0.04, 0.04, size=(8, 3)))

    def project(T):
        p = pts @ T[:3, :3].T + T[:3, 3]
        return (600 * p[:, :2] / p[:, 2:] + 320).reshape(-1)

    def project_rows(T, delta):
        Td = oplus_linear(T, delta)
        p = (Td[:, :3, :3] @ pts[:, :, None])[..., 0] + Td[:, :3, 3]
        return 600 * p[:, :2] / p[:, 2:] + 320

    T_true = _T([0.1, 0.0, 0.0], [0, 0, 0.5])
    ekf = PoseEKF(T_true, torch.eye(6) * 1e-6)
    nees = []
    for _ in range(50):
        z = project(T_true) + torch.as_tensor(rng.normal(scale=3.0, size=16))
        ekf.predict(torch.eye(4), torch.eye(6) * 1e-8)
        ekf.update('points', lambda d: z.reshape(8, 2) - project_rows(ekf.T, d),
                   torch.full((16,), 0.09), rows=8, gate=False)
        e = ominus(T_true, ekf.T)
        nees.append(float(e @ torch.linalg.solve(ekf.P, e)))
    assert np.mean(nees) > 20.0


def test_gate_rejects_outliers_and_keeps_the_state():
    nees, accepted, _ = _simulate(3, steps=60, outlier_every=7)
    assert not accepted[::7].any()
    assert accepted[1::7].all()
    assert np.median(nees) < 10.0


def test_missing_measurement_is_predict_only():
    T = _T([0, 0, 0], [0, 0, 0.5])
    ekf = PoseEKF(T, torch.eye(6) * 1e-4)
    rec = ekf.update('contour', lambda d: torch.zeros(0), torch.zeros(0), rows=0)
    assert not rec.accepted and rec.reason == 'no measurement'
    ekf.predict(torch.eye(4), torch.eye(6) * 1e-4)
    torch.testing.assert_close(ekf.P, torch.eye(6) * 2e-4)
    torch.testing.assert_close(ekf.T, T)


def test_non_finite_measurement_is_rejected_without_nan_state():
    T = _T([0, 0, 0], [0, 0, 0.5])
    ekf = PoseEKF(T, torch.eye(6) * 1e-4)
    rec = ekf.update('bad', lambda d: torch.full((4,), float('nan')) + d.sum(-1), torch.ones(4),
                     rows=4)
    assert not rec.accepted and 'non-finite' in rec.reason
    assert torch.isfinite(ekf.T).all() and torch.isfinite(ekf.P).all()
    with pytest.raises(InputError, match='finite'):
        ekf.predict(torch.full((4, 4), float('nan')), torch.eye(6))


def test_joseph_update_keeps_covariance_symmetric_positive_definite():
    _, _, ekf = _simulate(4, steps=40)
    torch.testing.assert_close(ekf.P, ekf.P.T)
    assert torch.linalg.eigvalsh(ekf.P).min() > 0


def test_pose_noise_is_the_model_error_seen_through_the_measurement():
    """A position measurement (H = [I 0]) with pose noise M equals, in the closed-form Kalman
    update (numpy), the same measurement with noise R + M_tt: NIS, gain, posterior."""
    rng = np.random.default_rng(1)
    A = rng.normal(size=(6, 6))
    P = A @ A.T * 1e-5 + np.eye(6) * 1e-6
    M = np.diag([4e-3, 4e-3, 8e-3, 0.05, 0.05, 0.05]) ** 2
    R = np.eye(3) * 1e-6
    z = np.array([0.004, -0.002, 0.006])
    ekf = PoseEKF(torch.eye(4), torch.as_tensor(P), gate_probability=0.999999)
    rec = ekf.update('position', lambda d: (torch.as_tensor(z) - d[:, :3]), torch.as_tensor(R),
                     rows=1, pose_noise=torch.as_tensor(M))
    H = np.hstack([np.eye(3), np.zeros((3, 3))])
    S = H @ P @ H.T + R + M[:3, :3]
    K = P @ H.T @ np.linalg.inv(S)
    assert rec.accepted and rec.nis == pytest.approx(z @ np.linalg.solve(S, z), rel=1e-9)
    np.testing.assert_allclose(ekf.T[:3, 3].numpy(), K[:3] @ z, atol=1e-12)
    P_post = (np.eye(6) - K @ H) @ P @ (np.eye(6) - K @ H).T + K @ (R + M[:3, :3]) @ K.T
    np.testing.assert_allclose(ekf.P.numpy(), P_post, atol=1e-14)
