"""Quasistatic rigid fit (eq. 9): against scipy's weighted align_vectors, exact recovery, the
guarded degenerate contact sets and their gradients (the dynamics built on it:
test_physics_quasistatic)."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry.se3 import make_transform
from handypriors_ros.core.physics.rigid_fit import (
    FitStatus,
    weighted_rigid_fit,
)


def _motion(seed: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    R = torch.tensor(Rotation.random(batch, random_state=seed).as_matrix())
    t = torch.tensor(np.random.default_rng(seed).normal(size=(batch, 3)) * 0.05)
    return R, t


def _apply(R: torch.Tensor, t: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    return X @ R.transpose(-1, -2) + t[:, None]


def test_matches_scipy_weighted_align_vectors_with_noise():
    rng = np.random.default_rng(0)
    B, N = 4, 30
    R, t = _motion(1, B)
    X_prev = torch.tensor(rng.normal(size=(B, N, 3)) * 0.04)
    X_curr = _apply(R, t, X_prev) + torch.tensor(rng.normal(size=(B, N, 3)) * 1e-3)
    weights = torch.tensor(rng.uniform(0.1, 1.0, size=(B, N)))
    weights[:, :5] = 0.0  # excluded points
    fit = weighted_rigid_fit(X_prev, X_curr, weights)
    assert fit.T.shape == (B, 4, 4) and fit.T.dtype == torch.float64
    assert (fit.status == FitStatus.FULL).all()
    for b in range(B):
        w = weights[b].numpy()
        cp = (w[:, None] * X_prev[b].numpy()).sum(0) / w.sum()
        cc = (w[:, None] * X_curr[b].numpy()).sum(0) / w.sum()
        ref, _ = Rotation.align_vectors(X_curr[b].numpy() - cc, X_prev[b].numpy() - cp,
                                        weights=w)
        np.testing.assert_allclose(fit.T[b, :3, :3].numpy(), ref.as_matrix(), atol=1e-9)
        np.testing.assert_allclose(fit.T[b, :3, 3].numpy(), cc - ref.as_matrix() @ cp,
                                   atol=1e-9)
    assert (fit.rms_residual < 3e-3).all() and (fit.rms_residual > 0).all()
    torch.testing.assert_close(fit.num_points, torch.full((B,), N - 5))


@pytest.mark.parametrize('dtype,atol', [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_exact_recovery_noise_free(dtype, atol):
    R, t = _motion(2, 3)
    X_prev = torch.randn(3, 12, 3, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(0)) * 0.05
    X_curr = _apply(R, t, X_prev)
    fit = weighted_rigid_fit(X_prev.to(dtype), X_curr.to(dtype), torch.ones(3, 12, dtype=dtype))
    torch.testing.assert_close(fit.T, make_transform(R, t).to(dtype), atol=atol, rtol=0)
    assert (fit.status == FitStatus.FULL).all()
    assert (fit.rms_residual < atol * 10).all()


def _degenerate_batch():
    """Frames: generic, 2 points, collinear, symmetric planar square, all-zero weights."""
    N = 6
    R, t = _motion(3, 5)
    gen = torch.Generator().manual_seed(1)
    X_prev = torch.zeros(5, N, 3, dtype=torch.float64)
    weights = torch.zeros(5, N, dtype=torch.float64)
    X_prev[0] = torch.randn(N, 3, dtype=torch.float64, generator=gen) * 0.03
    weights[0] = 1.0
    X_prev[1, :2] = torch.tensor([[0.01, 0.0, 0.0], [-0.02, 0.01, 0.0]])
    weights[1, :2] = torch.tensor([1.0, 2.0])
    X_prev[2] = torch.linspace(-0.03, 0.03, N, dtype=torch.float64)[:, None] * torch.tensor(
        [1.0, 2.0, -0.5], dtype=torch.float64)
    weights[2] = 1.0
    X_prev[3, :4] = 0.02 * torch.tensor([[1, 1, 0], [1, -1, 0], [-1, -1, 0], [-1, 1, 0.0]])
    weights[3, :4] = 1.0
    X_prev[4] = torch.randn(N, 3, dtype=torch.float64, generator=gen) * 0.03
    X_curr = _apply(R, t, X_prev)
    return X_prev, X_curr, weights, R, t


def test_degenerate_contact_sets_fall_back_with_finite_gradients():
    X_prev, X_curr, weights, R, t = _degenerate_batch()
    X_prev.requires_grad_(True)
    X_curr.requires_grad_(True)
    weights.requires_grad_(True)
    fit = weighted_rigid_fit(X_prev, X_curr, weights)
    assert fit.status.tolist() == [FitStatus.FULL, FitStatus.TRANSLATION_ONLY,
                                   FitStatus.TRANSLATION_ONLY, FitStatus.FULL, FitStatus.NONE]
    # Generic set and the symmetric square (repeated singular values): exact rigid motion.
    truth = make_transform(R, t)
    torch.testing.assert_close(fit.T[[0, 3]].detach(), truth[[0, 3]], atol=1e-10, rtol=0)
    sv = fit.singular_values[3]
    assert sv[0] == pytest.approx(sv[1]) and abs(sv[2]) < 1e-12
    # Translation-only frames: R = I and the weighted centroid moves.
    eye = torch.eye(3, dtype=torch.float64)
    for b in (1, 2):
        w = weights[b].detach()
        motion = ((X_curr[b] - X_prev[b]).detach() * w[:, None]).sum(0) / w.sum()
        torch.testing.assert_close(fit.T[b, :3, :3].detach(), eye)
        torch.testing.assert_close(fit.T[b, :3, 3].detach(), motion)
    # No weighted point: identity.
    torch.testing.assert_close(fit.T[4].detach(), torch.eye(4, dtype=torch.float64))
    assert fit.num_points.tolist() == [6, 2, 6, 4, 0]

    probe = torch.randn(5, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    (fit.T * probe).sum().backward()
    for name, x in (('X_prev', X_prev), ('X_curr', X_curr), ('weights', weights)):
        assert bool(torch.isfinite(x.grad).all()), name


def test_square_without_motion_where_naive_svd_backward_is_not_finite():
    """Why the guard exists: an axis-aligned square of contacts that does not move has exactly
    repeated singular values; torch.linalg.svd's backward gives NaN/Inf there, the fit does not."""
    square = 0.02 * torch.tensor([[[1, 1, 0], [1, -1, 0], [-1, -1, 0], [-1, 1, 0.0]]],
                                 dtype=torch.float64)
    A = (square[0].T @ square[0]).requires_grad_(True)
    U, _, Vh = torch.linalg.svd(A)
    (U @ Vh).sum().backward()
    assert not bool(torch.isfinite(A.grad).all())

    X_prev = square.clone().requires_grad_(True)
    X_curr = square.clone().requires_grad_(True)
    fit = weighted_rigid_fit(X_prev, X_curr, torch.ones(1, 4, dtype=torch.float64))
    assert fit.status.tolist() == [FitStatus.FULL]
    torch.testing.assert_close(fit.T[0].detach(), torch.eye(4, dtype=torch.float64))
    probe = torch.randn(1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    (fit.T * probe).sum().backward()
    assert bool(torch.isfinite(X_prev.grad).all()) and bool(torch.isfinite(X_curr.grad).all())


def test_near_collinear_noise_falls_back_and_planar_noise_does_not():
    rng = np.random.default_rng(4)
    line = torch.tensor(np.linspace(-0.03, 0.03, 8)[:, None] * [1.0, 0.0, 0.0])
    nearly = line + torch.tensor(rng.normal(size=(8, 3)) * 1e-6)
    planar = line + torch.tensor(rng.normal(size=(8, 3)) * [0.0, 0.01, 0.0])
    X_prev = torch.stack([nearly, planar]).requires_grad_(True)
    R, t = _motion(5, 2)
    fit = weighted_rigid_fit(X_prev, _apply(R, t, X_prev.detach()), torch.ones(2, 8,
                                                                               dtype=torch.float64))
    assert fit.status.tolist() == [FitStatus.TRANSLATION_ONLY, FitStatus.FULL]
    fit.T.sum().backward()
    assert bool(torch.isfinite(X_prev.grad).all())


def test_gradcheck_generic_fit_and_square():
    gen = torch.Generator().manual_seed(2)
    X_prev = torch.randn(2, 5, 3, dtype=torch.float64, generator=gen).requires_grad_(True)
    X_curr = torch.randn(2, 5, 3, dtype=torch.float64, generator=gen).requires_grad_(True)
    w = torch.rand(2, 5, dtype=torch.float64, generator=gen).add(0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, c: weighted_rigid_fit(a, b, c).T,
                                    (X_prev, X_curr, w))
    # The symmetric square (s1 == s2) under a rigid motion: analytic gradient still right.
    sq_prev, sq_curr, weights, _, _ = _degenerate_batch()
    args = (sq_prev[3:4, :4].clone().requires_grad_(True),
            sq_curr[3:4, :4].clone().requires_grad_(True), weights[3:4, :4].clone())
    assert torch.autograd.gradcheck(lambda a, b: weighted_rigid_fit(a, b, args[2]).T, args[:2])


def test_rigid_fit_rejects_bad_inputs():
    X = torch.zeros(2, 4, 3)
    with pytest.raises(InputError, match='weights: expected non-negative'):
        weighted_rigid_fit(X, X, -torch.ones(2, 4))
    with pytest.raises(InputError, match='X_curr: expected finite'):
        weighted_rigid_fit(X, torch.full((2, 4, 3), float('nan')), torch.ones(2, 4))
    with pytest.raises(InputError, match='X_curr: expected size 4 in dim 1'):
        weighted_rigid_fit(X, torch.zeros(2, 5, 3), torch.ones(2, 4))
    with pytest.raises(InputError, match=r'weights: expected shape \(B, N\)'):
        weighted_rigid_fit(X, X, torch.ones(2, 4, 1))
    with pytest.raises(InputError, match='min_points'):
        weighted_rigid_fit(X, X, torch.ones(2, 4), min_points=2)
