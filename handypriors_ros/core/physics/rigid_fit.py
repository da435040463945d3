"""Quasistatic dynamics (eq. 9): the object follows the rigid motion of the hand's contacts.

With the same contact points on the hand at two times, X^{t-1} and X^t, the weighted Kabsch
(Procrustes) fit gives the rigid motion [R | t] with X^t ~ R X^{t-1} + t, and the object moves
with it: T_cam_obj^t = [R | t] T_cam_obj^{t-1}.

Guards. The rotation is only determined when the weighted contact set spans a plane: with
centred sets, A = sum_i w_i xc_i xp_i^T = U diag(s) V^T and signed singular values
sigma = (s1, s2, det(U V^T) s3), R is unique iff sigma_2 + sigma_3 > 0. Hence:

- ``FULL``: at least ``min_points`` positively weighted points, spread ``s1 > min_spread^2``
  and ``sigma_2 + sigma_3 > rank_tol * s1``. Repeated singular values (e.g. a symmetric planar
  square of contacts, s1 == s2) are fine: the rotation is still unique and the fit uses its
  own backward (below), not torch.linalg.svd's, which is non-finite there.
- ``TRANSLATION_ONLY``: some positive weight but fewer than ``min_points`` points, all points
  (nearly) coincident, or (nearly) collinear: R = I, t = weighted centroid motion.
- ``NONE``: all weights zero: identity (the object stays).

Gradients are finite in every case. The rotation's backward is the derivative of the polar
decomposition A = R S (S symmetric): R^T dR = skew(omega) with
(tr(S) I - S) omega = vee(R^T dA - dA^T R); the matrix tr(S) I - S has eigenvalues
sigma_i + sigma_j, bounded away from zero by the FULL guard.
"""

from __future__ import annotations

import dataclasses
import enum

import torch

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry.rotations import skew
from handypriors_ros.core.geometry.se3 import make_transform
from handypriors_ros.core.physics._validation import (
    check_finite,
    check_float_tensor,
    check_same_device,
    check_same_size,
)


class FitStatus(enum.IntEnum):
    """What a :func:`weighted_rigid_fit` could determine, per frame."""

    NONE = 0  # no weighted point: identity motion
    TRANSLATION_ONLY = 1  # rotation undetermined: centroid motion only
    FULL = 2  # rotation and translation


@dataclasses.dataclass(frozen=True)
class RigidFit:
    """Result of :func:`weighted_rigid_fit`.

    Attributes:
        T: (B, 4, 4) rigid motion in the points' frame: ``X_curr ~ R X_prev + t``.
        status: (B,) int64 :class:`FitStatus` values.
        singular_values: (B, 3) signed singular values (s1, s2, det(U V^T) s3) of the weighted,
            centred cross-covariance (m^2, weights normalised to sum 1); detached.
        num_points: (B,) int64 number of points with positive weight.
        rms_residual: (B,) weighted RMS of ``|R X_prev + t - X_curr|`` (m); detached.
    """

    T: torch.Tensor
    status: torch.Tensor
    singular_values: torch.Tensor
    num_points: torch.Tensor
    rms_residual: torch.Tensor


def _det3(M: torch.Tensor) -> torch.Tensor:
    """(...) determinant of (..., 3, 3) matrices in closed form (no LAPACK call per matrix)."""
    return (M[..., 0, :] * torch.linalg.cross(M[..., 1, :], M[..., 2, :])).sum(-1)


def _solve3(M: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., 3) solution of M x = b for (..., 3, 3) invertible M, by the adjugate (Cramer)."""
    r0, r1, r2 = M[..., 0, :], M[..., 1, :], M[..., 2, :]
    adj_t = torch.stack([torch.linalg.cross(r1, r2), torch.linalg.cross(r2, r0),
                         torch.linalg.cross(r0, r1)], dim=-1)  # adj(M): columns are crosses of rows
    return (adj_t @ b[..., None])[..., 0] / _det3(M)[..., None]


def _vee(M: torch.Tensor) -> torch.Tensor:
    """(..., 3) vector of a 3x3 matrix's antisymmetric part times 2: vee(M - M^T)."""
    return torch.stack([M[..., 2, 1] - M[..., 1, 2],
                        M[..., 0, 2] - M[..., 2, 0],
                        M[..., 1, 0] - M[..., 0, 1]], dim=-1)


class _ProperPolarRotation(torch.autograd.Function):
    """R in SO(3) maximising tr(R^T A), i.e. the rotation factor of A = R S; (B, 3, 3).

    Forward by SVD; backward by the polar-decomposition derivative (module docstring), which
    stays finite for repeated singular values as long as sigma_i + sigma_j != 0.
    """

    @staticmethod
    def forward(ctx, A: torch.Tensor) -> torch.Tensor:  # noqa: D102
        U, _, Vh = torch.linalg.svd(A)
        d = torch.where(_det3(U @ Vh) < 0, -1.0, 1.0).to(A.dtype)  # (B,) +-1
        D = torch.ones_like(A[..., 0])  # (B, 3)
        D[..., 2] = d
        R = U @ (D[..., None] * Vh)
        S = R.transpose(-1, -2) @ A
        ctx.save_for_backward(R, 0.5 * (S + S.transpose(-1, -2)))
        return R

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_R: torch.Tensor) -> torch.Tensor:  # noqa: D102
        R, S = ctx.saved_tensors
        g = _vee(R.transpose(-1, -2) @ grad_R)  # (B, 3)
        eye = torch.eye(3, dtype=S.dtype, device=S.device)
        M = S.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] * eye - S  # (B, 3, 3)
        h = _solve3(M, g)  # (B, 3)
        return R @ skew(h)


def weighted_rigid_fit(X_prev: torch.Tensor, X_curr: torch.Tensor, weights: torch.Tensor, *,
                       min_points: int = 3, rank_tol: float = 1e-3,
                       min_spread: float = 1e-4) -> RigidFit:
    """Weighted Kabsch fit of the rigid motion taking ``X_prev`` to ``X_curr`` (eq. 9), guarded.

    Minimises ``sum_i w_i |R x_prev_i + t - x_curr_i|^2`` per frame.

    Args:
        X_prev: (B, N, 3) contact points at t-1 (m), any frame (the motion is expressed in it).
        X_curr: (B, N, 3) the same points at t, same frame.
        weights: (B, N) non-negative float weights, or a bool contact mask; zero excludes a
            point.
        min_points: fewest positively weighted points for a rotation (>= 3).
        rank_tol: a rotation needs ``sigma_2 + sigma_3 > rank_tol * s1`` (relative planarity;
            1e-3 means the contacts' cross-section is at least ~3 % of their length).
        min_spread: metres; a rotation needs ``s1 > min_spread^2`` (the points are not all
            within ~``min_spread`` of their centroid).
    Returns:
        :class:`RigidFit`; differentiable w.r.t. the points and weights, finite gradients in all
        cases.
    """
    check_float_tensor('X_prev', X_prev, ('B', 'N', 3))
    check_float_tensor('X_curr', X_curr, ('B', 'N', 3))
    if isinstance(weights, torch.Tensor) and weights.dtype == torch.bool:
        weights = weights.to(X_prev.dtype)  # a contact mask
    check_float_tensor('weights', weights, ('B', 'N'))
    names = ('X_prev', 'X_curr', 'weights')
    check_same_size(names, (X_prev, X_curr, weights), (0, 1))
    check_same_device(names, (X_prev, X_curr, weights))
    for name, x in zip(names, (X_prev, X_curr, weights)):
        check_finite(name, x)
    if bool((weights < 0).any()):
        raise InputError('weights: expected non-negative values, got negative ones')
    if not isinstance(min_points, int) or min_points < 3:
        raise InputError(f'min_points: expected an int >= 3, got {min_points!r}')
    dtype = torch.promote_types(torch.promote_types(X_prev.dtype, X_curr.dtype), weights.dtype)
    X_prev, X_curr, weights = X_prev.to(dtype), X_curr.to(dtype), weights.to(dtype)

    w_sum = weights.sum(dim=-1)  # (B,)
    has_any = w_sum > 0
    w = weights / torch.where(has_any, w_sum, torch.ones_like(w_sum))[:, None]  # (B, N)
    c_prev = (w[..., None] * X_prev).sum(dim=1)  # (B, 3)
    c_curr = (w[..., None] * X_curr).sum(dim=1)
    Xp = X_prev - c_prev[:, None]
    Xc = X_curr - c_curr[:, None]
    A = (w[..., None] * Xc).transpose(1, 2) @ Xp  # (B, 3, 3) = sum_i w_i xc_i xp_i^T

    with torch.no_grad():
        s = torch.linalg.svdvals(A)  # (B, 3) descending, >= 0
        det_sign = torch.where(_det3(A) < 0, -1.0, 1.0).to(dtype)
        sigma = torch.stack([s[:, 0], s[:, 1], det_sign * s[:, 2]], dim=-1)
        num_points = (weights > 0).sum(dim=-1)
        full = (has_any & (num_points >= min_points) & (s[:, 0] > min_spread ** 2)
                & (sigma[:, 1] + sigma[:, 2] > rank_tol * s[:, 0]))
        status = torch.where(full, int(FitStatus.FULL),
                             torch.where(has_any, int(FitStatus.TRANSLATION_ONLY),
                                         int(FitStatus.NONE)))

    eye = torch.eye(3, dtype=dtype, device=A.device).expand_as(A)
    # Degenerate frames get the identity as input, so the polar backward solves a regular
    # system there; torch.where then routes them zero gradient.
    R_full = _ProperPolarRotation.apply(torch.where(full[:, None, None], A, eye))
    R = torch.where(full[:, None, None], R_full, eye)  # (B, 3, 3)
    t = c_curr - (R @ c_prev[..., None])[..., 0]
    t = torch.where(has_any[:, None], t, torch.zeros_like(t))
    T = make_transform(R, t)

    with torch.no_grad():
        res_sq = ((X_prev @ R.transpose(1, 2) + t[:, None] - X_curr).square().sum(-1) * w)
        rms = res_sq.sum(-1).clamp_min(0).sqrt()
    return RigidFit(T=T, status=status.to(torch.int64), singular_values=sigma,
                    num_points=num_points.to(torch.int64), rms_residual=rms)

