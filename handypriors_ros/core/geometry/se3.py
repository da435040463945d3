"""Batched, differentiable rigid transforms (SE(3)) in torch.

Conventions:
- A transform is a homogeneous matrix ``T_a_b`` of shape (..., 4, 4); it maps points from frame
  b into frame a: ``p_a = R_a_b @ p_b + t_a_b``. Compose with ``T_a_c = T_a_b @ T_b_c``.
- A twist ``xi`` (the se(3) coordinates, shape (..., 6)) is ``(rho, phi)``: translation part
  ``rho`` first (metres), rotation vector ``phi`` second (radians). ``se3_exp(xi)`` has rotation
  ``exp(phi)`` and translation ``J_l(phi) @ rho``. The same ordering is used for 6x6
  covariances (x y z rx ry rz, as ROS' PoseWithCovariance).
- Perturbations for error-state filters come in two clearly named flavours:
  ``apply_right_perturbation(T, d) = T @ exp(d)`` (d in the local / child frame b), and
  ``apply_left_perturbation(T, d) = exp(d) @ T`` (d in the parent frame a).

Every function accepts any leading batch dims (broadcast where two inputs meet), float32 or
float64, and is differentiable.
"""

from __future__ import annotations

import torch

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry.rotations import (
    _check_tensor,
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_quat_xyzw,
    quat_xyzw_to_matrix,
    skew,
    so3_left_jacobian,
    so3_left_jacobian_inverse,
)


def make_transform(R_a_b: torch.Tensor, t_a_b: torch.Tensor) -> torch.Tensor:
    """Homogeneous transform from a rotation and a translation; batch dims broadcast.

    Args:
        R_a_b: (..., 3, 3).
        t_a_b: (..., 3).
    Returns:
        T_a_b: (..., 4, 4).
    """
    _check_tensor('R_a_b', R_a_b, (3, 3))
    _check_tensor('t_a_b', t_a_b, (3,))
    batch = torch.broadcast_shapes(R_a_b.shape[:-2], t_a_b.shape[:-1])
    dtype = torch.promote_types(R_a_b.dtype, t_a_b.dtype)
    top = torch.cat([R_a_b.to(dtype).expand(*batch, 3, 3),
                     t_a_b.to(dtype).expand(*batch, 3)[..., None]], dim=-1)  # (..., 3, 4)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=dtype, device=R_a_b.device)
    return torch.cat([top, bottom.expand(*batch, 1, 4)], dim=-2)


def identity_transform(*batch: int, dtype: torch.dtype = torch.float32,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Identity transforms of shape (*batch, 4, 4)."""
    return torch.eye(4, dtype=dtype, device=device).expand(*batch, 4, 4).clone()


def invert_transform(T_a_b: torch.Tensor) -> torch.Tensor:
    """Inverse of a rigid transform in closed form: ``R^T``, ``-R^T t``.

    Args:
        T_a_b: (..., 4, 4).
    Returns:
        T_b_a: (..., 4, 4).
    """
    _check_tensor('T_a_b', T_a_b, (4, 4))
    R_b_a = T_a_b[..., :3, :3].transpose(-1, -2)
    t_b_a = -(R_b_a @ T_a_b[..., :3, 3:]).squeeze(-1)
    return make_transform(R_b_a, t_b_a)


def transform_points(T_a_b: torch.Tensor, p_b: torch.Tensor) -> torch.Tensor:
    """Map points from frame b into frame a: ``p_a = R_a_b p_b + t_a_b``.

    Args:
        T_a_b: (..., 4, 4).
        p_b: (..., N, 3); batch dims broadcast with those of ``T_a_b``.
    Returns:
        p_a: (..., N, 3).
    """
    _check_tensor('T_a_b', T_a_b, (4, 4))
    _check_tensor('p_b', p_b, (3,))
    if p_b.dim() < 2:
        raise InputError(f'p_b: expected shape (..., N, 3), got {tuple(p_b.shape)}')
    R_a_b = T_a_b[..., :3, :3]
    t_a_b = T_a_b[..., None, :3, 3]  # (..., 1, 3)
    return p_b @ R_a_b.transpose(-1, -2) + t_a_b


def rotate_vectors(T_a_b: torch.Tensor, v_b: torch.Tensor) -> torch.Tensor:
    """Rotate direction vectors (no translation): ``v_a = R_a_b v_b``.

    Args:
        T_a_b: (..., 4, 4).
        v_b: (..., N, 3).
    Returns:
        v_a: (..., N, 3).
    """
    _check_tensor('T_a_b', T_a_b, (4, 4))
    _check_tensor('v_b', v_b, (3,))
    return v_b @ T_a_b[..., :3, :3].transpose(-1, -2)


def se3_exp(xi: torch.Tensor) -> torch.Tensor:
    """Exponential map se(3) -> SE(3).

    Args:
        xi: (..., 6) twist ``(rho, phi)``: translation part first, rotation vector second.
    Returns:
        T: (..., 4, 4) with ``R = exp(phi)``, ``t = J_l(phi) @ rho``.
    """
    _check_tensor('xi', xi, (6,))
    rho, phi = xi[..., :3], xi[..., 3:]
    R = axis_angle_to_matrix(phi)
    t = (so3_left_jacobian(phi) @ rho[..., None]).squeeze(-1)
    return make_transform(R, t)


def se3_log(T: torch.Tensor) -> torch.Tensor:
    """Logarithm SE(3) -> se(3); rotation angle in [0, pi].

    Args:
        T: (..., 4, 4).
    Returns:
        xi: (..., 6) twist ``(rho, phi)``, ``phi = log(R)``, ``rho = J_l(phi)^-1 @ t``.
    """
    _check_tensor('T', T, (4, 4))
    phi = matrix_to_axis_angle(T[..., :3, :3])
    rho = (so3_left_jacobian_inverse(phi) @ T[..., :3, 3:]).squeeze(-1)
    return torch.cat([rho, phi], dim=-1)


def se3_adjoint(T_a_b: torch.Tensor) -> torch.Tensor:
    """Adjoint of a transform for ``(rho, phi)`` twists: ``T exp(xi) T^-1 = exp(Ad_T xi)``.

    ``Ad_T = [[R, skew(t) R], [0, R]]``. Use it to move a right (local) perturbation or its
    covariance into the parent frame: ``xi_a = Ad(T_a_b) xi_b``, ``P_a = Ad P_b Ad^T``.

    Args:
        T_a_b: (..., 4, 4).
    Returns:
        (..., 6, 6).
    """
    _check_tensor('T_a_b', T_a_b, (4, 4))
    R = T_a_b[..., :3, :3]
    tR = skew(T_a_b[..., :3, 3]) @ R
    zero = torch.zeros_like(R)
    top = torch.cat([R, tR], dim=-1)
    bottom = torch.cat([zero, R], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def pose_to_transform(t_a_b: torch.Tensor, q_a_b_xyzw: torch.Tensor) -> torch.Tensor:
    """Transform from a translation and a quaternion (normalised); batch dims broadcast.

    Args:
        t_a_b: (..., 3).
        q_a_b_xyzw: (..., 4).
    Returns:
        T_a_b: (..., 4, 4).
    """
    return make_transform(quat_xyzw_to_matrix(q_a_b_xyzw), t_a_b)


def transform_to_pose(T_a_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Translation and quaternion (``w >= 0``) of a transform.

    Args:
        T_a_b: (..., 4, 4).
    Returns:
        (t_a_b (..., 3), q_a_b_xyzw (..., 4)).
    """
    _check_tensor('T_a_b', T_a_b, (4, 4))
    return T_a_b[..., :3, 3], matrix_to_quat_xyzw(T_a_b[..., :3, :3])


def apply_right_perturbation(T_a_b: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``T_new = T_a_b @ se3_exp(delta)``: the perturbation is expressed in the local frame b.

    Args:
        T_a_b: (..., 4, 4).
        delta: (..., 6) twist ``(rho, phi)`` in frame b.
    Returns:
        (..., 4, 4).
    """
    _check_tensor('T_a_b', T_a_b, (4, 4))
    return T_a_b @ se3_exp(delta)


def apply_left_perturbation(T_a_b: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``T_new = se3_exp(delta) @ T_a_b``: the perturbation is expressed in the parent frame a.

    Args:
        T_a_b: (..., 4, 4).
        delta: (..., 6) twist ``(rho, phi)`` in frame a.
    Returns:
        (..., 4, 4).
    """
    _check_tensor('T_a_b', T_a_b, (4, 4))
    return se3_exp(delta) @ T_a_b


def interpolate_transform(T0_a_b: torch.Tensor, T1_a_b: torch.Tensor,
                          alpha: torch.Tensor | float) -> torch.Tensor:
    """Interpolate two transforms: linear in translation, slerp in rotation (like tf2).

    ``t = (1 - alpha) t0 + alpha t1``, ``R = R0 exp(alpha log(R0^T R1))`` (shorter arc).

    Args:
        T0_a_b: (..., 4, 4), returned at ``alpha = 0``.
        T1_a_b: (..., 4, 4), returned at ``alpha = 1``.
        alpha: float or (...) tensor; batch dims broadcast.
    Returns:
        (..., 4, 4).
    """
    _check_tensor('T0_a_b', T0_a_b, (4, 4))
    _check_tensor('T1_a_b', T1_a_b, (4, 4))
    alpha = torch.as_tensor(alpha, dtype=T0_a_b.dtype, device=T0_a_b.device)
    R0, R1 = T0_a_b[..., :3, :3], T1_a_b[..., :3, :3]
    t0, t1 = T0_a_b[..., :3, 3], T1_a_b[..., :3, 3]
    a = alpha[..., None]
    t = (1 - a) * t0 + a * t1
    R = R0 @ axis_angle_to_matrix(matrix_to_axis_angle(R0.transpose(-1, -2) @ R1) * a)
    return make_transform(R, t)
