"""Batched, differentiable 3D rotations in torch.

Every function works on any number of leading (batch) dimensions, in float32 or float64, on any
device, and is differentiable (``torch.autograd.gradcheck`` passes in float64). Formulas that
divide by the rotation angle switch to a Taylor series near zero angle so values and gradients
stay finite there; the logarithm goes through Shepperd's quaternion extraction, so it stays
accurate near an angle of pi.

Conventions:
- Quaternions are ``q_xyzw``: vector part first, scalar last (scipy's order). A rotation has two
  quaternions, ``q`` and ``-q``; functions that return one pick ``w >= 0``.
- Rotation vectors (axis-angle, the so(3) coordinates) are ``axis * angle`` in radians.
- Rotation matrices act on column vectors: ``p_a = R_a_b @ p_b``.
- Roll-pitch-yaw follow URDF (fixed axes): ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``, which is
  scipy's extrinsic ``'xyz'`` Euler order.
- The 6D representation (Zhou et al., CVPR 2019) is the first two *columns* of the matrix,
  concatenated: ``(R[..., :, 0], R[..., :, 1])``.
"""

from __future__ import annotations

import torch

from handypriors_ros.core.errors import InputError

# Below this squared angle (rad^2) the angle-divided coefficients use their Taylor series. The
# series are kept to the theta^6 term, so their truncation error stays below float64 rounding.
_SMALL_ANGLE_SQ = 1e-3


def _check_tensor(name: str, x: object, trailing: tuple[int, ...]) -> torch.Tensor:
    """Validate a floating tensor whose last dimensions are ``trailing``; return it."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f'{name}: expected a torch.Tensor of shape (..., '
                         f'{", ".join(map(str, trailing))}), got {type(x).__name__}')
    if not x.is_floating_point():
        raise InputError(f'{name}: expected a floating dtype (float32/float64), got {x.dtype}')
    n = len(trailing)
    if x.dim() < n or tuple(x.shape[x.dim() - n:]) != trailing:
        raise InputError(f'{name}: expected shape (..., {", ".join(map(str, trailing))}), '
                         f'got {tuple(x.shape)}')
    return x


def _safe_norm_sq(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Squared norm over the last dim, a mask of small ones and a sqrt safe to differentiate.

    Returns ``(theta_sq, small, theta)`` with shapes ``(...)``; where ``small`` is true,
    ``theta`` is 1 (a placeholder: callers use a Taylor series there), so no gradient is inf.
    """
    theta_sq = (v * v).sum(-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_sq), theta_sq))
    return theta_sq, small, theta


def skew(v: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric (cross-product) matrix: ``skew(v) @ w == cross(v, w)``.

    Args:
        v: (..., 3).
    Returns:
        (..., 3, 3).
    """
    _check_tensor('v', v, (3,))
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def vee(K: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`skew`: the vector of the skew-symmetric part of ``K``.

    Args:
        K: (..., 3, 3).
    Returns:
        (..., 3).
    """
    _check_tensor('K', K, (3, 3))
    return 0.5 * torch.stack([K[..., 2, 1] - K[..., 1, 2],
                              K[..., 0, 2] - K[..., 2, 0],
                              K[..., 1, 0] - K[..., 0, 1]], dim=-1)


def quat_xyzw_normalize(q_xyzw: torch.Tensor) -> torch.Tensor:
    """Unit quaternion with the same direction (zero stays zero-safe: divides by max(|q|, eps)).

    Args:
        q_xyzw: (..., 4).
    Returns:
        (..., 4).
    """
    _check_tensor('q_xyzw', q_xyzw, (4,))
    eps = torch.finfo(q_xyzw.dtype).tiny
    return q_xyzw / torch.linalg.vector_norm(q_xyzw, dim=-1, keepdim=True).clamp_min(eps)


def quat_xyzw_canonical(q_xyzw: torch.Tensor) -> torch.Tensor:
    """The one of ``q`` and ``-q`` with ``w >= 0``.

    Args:
        q_xyzw: (..., 4).
    Returns:
        (..., 4).
    """
    _check_tensor('q_xyzw', q_xyzw, (4,))
    sign = torch.where(q_xyzw[..., 3:] < 0, -1.0, 1.0).to(q_xyzw.dtype)
    return q_xyzw * sign


def quat_xyzw_multiply(q1_xyzw: torch.Tensor, q2_xyzw: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``q1 * q2`` (rotation by q2, then by q1). Batch dims broadcast.

    Args:
        q1_xyzw: (..., 4).
        q2_xyzw: (..., 4).
    Returns:
        (..., 4), not re-normalised.
    """
    _check_tensor('q1_xyzw', q1_xyzw, (4,))
    _check_tensor('q2_xyzw', q2_xyzw, (4,))
    x1, y1, z1, w1 = q1_xyzw.unbind(-1)
    x2, y2, z2, w2 = q2_xyzw.unbind(-1)
    return torch.stack([
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
    ], dim=-1)


def quat_xyzw_conjugate(q_xyzw: torch.Tensor) -> torch.Tensor:
    """Conjugate ``(-x, -y, -z, w)``: the inverse rotation of a unit quaternion.

    Args:
        q_xyzw: (..., 4).
    Returns:
        (..., 4).
    """
    _check_tensor('q_xyzw', q_xyzw, (4,))
    return torch.cat([-q_xyzw[..., :3], q_xyzw[..., 3:]], dim=-1)


def quat_xyzw_to_matrix(q_xyzw: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of a quaternion; the quaternion is normalised first.

    Args:
        q_xyzw: (..., 4), any non-zero norm.
    Returns:
        R: (..., 3, 3).
    """
    q = quat_xyzw_normalize(q_xyzw)
    x, y, z, w = q.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    R = torch.stack([
        1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
    ], dim=-1)
    return R.reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat_xyzw(R: torch.Tensor) -> torch.Tensor:
    """Unit quaternion of a rotation matrix, canonical ``w >= 0`` (Shepperd's method).

    Of the four candidate formulas, the one dividing by the largest quaternion component is
    chosen per element, so the result is accurate at every angle, including pi.

    Args:
        R: (..., 3, 3), a rotation matrix (not re-orthogonalised).
    Returns:
        q_xyzw: (..., 4).
    """
    _check_tensor('R', R, (3, 3))
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4 * q_i^2 for i = x, y, z, w.
    four_sq = torch.stack([
        1 + m00 - m11 - m22,
        1 - m00 + m11 - m22,
        1 - m00 - m11 + m22,
        1 + m00 + m11 + m22,
    ], dim=-1)  # (..., 4)
    # The clamp keeps the sqrt's gradient finite on the candidates that are not selected.
    two_q = torch.sqrt(four_sq.clamp_min(torch.finfo(R.dtype).eps))  # (..., 4) = 2 |q_i|
    s_xy, s_xz, s_yz = m01 + m10, m02 + m20, m12 + m21
    d_x, d_y, d_z = m21 - m12, m02 - m20, m10 - m01
    # Candidate i: component i is 2|q_i|/2, the others are off-diagonal sums / (2 * 2|q_i|).
    cand = torch.stack([
        torch.stack([two_q[..., 0] ** 2, s_xy, s_xz, d_x], dim=-1),
        torch.stack([s_xy, two_q[..., 1] ** 2, s_yz, d_y], dim=-1),
        torch.stack([s_xz, s_yz, two_q[..., 2] ** 2, d_z], dim=-1),
        torch.stack([d_x, d_y, d_z, two_q[..., 3] ** 2], dim=-1),
    ], dim=-2) / (2 * two_q[..., :, None])  # (..., 4 candidates, 4)
    best = four_sq.argmax(dim=-1)  # (...)
    index = best[..., None, None].expand(*best.shape, 1, 4)
    q = torch.gather(cand, -2, index).squeeze(-2)  # (..., 4)
    return quat_xyzw_canonical(quat_xyzw_normalize(q))


def axis_angle_to_quat_xyzw(rotvec: torch.Tensor) -> torch.Tensor:
    """Unit quaternion of a rotation vector (so(3) exponential into quaternions).

    Args:
        rotvec: (..., 3), axis * angle [rad].
    Returns:
        q_xyzw: (..., 4); ``w >= 0`` for angles up to pi.
    """
    _check_tensor('rotvec', rotvec, (3,))
    theta_sq, small, theta = _safe_norm_sq(rotvec)
    half = 0.5 * theta
    # sin(theta/2)/theta and its Taylor series.
    s_exact = torch.sin(half) / theta
    s_taylor = 0.5 - theta_sq / 48 + theta_sq ** 2 / 3840 - theta_sq ** 3 / 645120
    s = torch.where(small, s_taylor, s_exact)
    c_taylor = 1 - theta_sq / 8 + theta_sq ** 2 / 384 - theta_sq ** 3 / 46080
    c = torch.where(small, c_taylor, torch.cos(half))
    return torch.cat([rotvec * s[..., None], c[..., None]], dim=-1)


def quat_xyzw_to_axis_angle(q_xyzw: torch.Tensor) -> torch.Tensor:
    """Rotation vector of a quaternion (so(3) logarithm); angle in [0, pi].

    The quaternion is normalised and put in the ``w >= 0`` half first.

    Args:
        q_xyzw: (..., 4).
    Returns:
        rotvec: (..., 3).
    """
    q = quat_xyzw_canonical(quat_xyzw_normalize(q_xyzw))
    v, w = q[..., :3], q[..., 3]
    n_sq, small, n = _safe_norm_sq(v)
    # 2 * atan2(|v|, w) / |v|; for small |v| w is near 1, and with x = |v|/w the series is
    # 2/w * (1 - x^2/3 + x^4/5 - x^6/7).
    f_exact = 2 * torch.atan2(n, w) / n
    w_safe = torch.where(small, w, torch.ones_like(w))
    x_sq = n_sq / w_safe ** 2
    f_taylor = 2 / w_safe * (1 - x_sq / 3 + x_sq ** 2 / 5 - x_sq ** 3 / 7)
    f = torch.where(small, f_taylor, f_exact)
    return v * f[..., None]


def _rodrigues_series(theta_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rodrigues' ``A = sin(t)/t`` and ``B = (1 - cos(t))/t^2`` by their Taylor series (small
    angles)."""
    return (1 - theta_sq / 6 + theta_sq ** 2 / 120 - theta_sq ** 3 / 5040,
            0.5 - theta_sq / 24 + theta_sq ** 2 / 720 - theta_sq ** 3 / 40320)


def _rodrigues_exact(theta: torch.Tensor, theta_sq: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rodrigues' ``A`` and ``B = 2 sin^2(t/2)/t^2`` in closed form (no cancellation)."""
    return torch.sin(theta) / theta, 2 * torch.sin(0.5 * theta) ** 2 / theta_sq


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of a rotation vector: the so(3) exponential (Rodrigues' formula).

    ``R = I + A K + B K^2`` with ``K = skew(rotvec)``, ``A = sin(t)/t``,
    ``B = (1 - cos(t))/t^2 = 2 sin^2(t/2)/t^2`` (the second form avoids cancellation).

    Args:
        rotvec: (..., 3), axis * angle [rad].
    Returns:
        R: (..., 3, 3).
    """
    _check_tensor('rotvec', rotvec, (3,))
    if rotvec.dim() == 1 and not rotvec.requires_grad:
        # One vector without a graph (the filter's updates): only the branch torch.where would
        # keep is evaluated; the same operations, so the same values to the bit.
        theta_sq = (rotvec * rotvec).sum(-1)
        if bool(theta_sq < _SMALL_ANGLE_SQ):
            a, b = _rodrigues_series(theta_sq)
        else:
            a, b = _rodrigues_exact(torch.sqrt(theta_sq), theta_sq)
    else:
        theta_sq, small, theta = _safe_norm_sq(rotvec)
        theta_sq_safe = torch.where(small, torch.ones_like(theta_sq), theta_sq)
        a_series, b_series = _rodrigues_series(theta_sq)
        a_exact, b_exact = _rodrigues_exact(theta, theta_sq_safe)
        a = torch.where(small, a_series, a_exact)
        b = torch.where(small, b_series, b_exact)
    K = skew(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation vector of a rotation matrix: the so(3) logarithm; angle in [0, pi].

    Goes through :func:`matrix_to_quat_xyzw`, which stays accurate near pi (at exactly pi the
    sign of the axis is arbitrary, as for any logarithm).

    Args:
        R: (..., 3, 3).
    Returns:
        rotvec: (..., 3).
    """
    return quat_xyzw_to_axis_angle(matrix_to_quat_xyzw(R))


def so3_left_jacobian(phi: torch.Tensor) -> torch.Tensor:
    """Left Jacobian of SO(3), ``J_l(phi) = I + B K + C K^2``.

    ``K = skew(phi)``, ``B = (1 - cos t)/t^2``, ``C = (t - sin t)/t^3``. It is the ``V`` matrix
    of the SE(3) exponential (``t = J_l(phi) @ rho``) and relates a left perturbation of
    ``exp(phi)`` to a perturbation of ``phi``.

    Args:
        phi: (..., 3).
    Returns:
        (..., 3, 3).
    """
    _check_tensor('phi', phi, (3,))
    theta_sq, small, theta = _safe_norm_sq(phi)
    theta_sq_safe = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    b = torch.where(small, 0.5 - theta_sq / 24 + theta_sq ** 2 / 720 - theta_sq ** 3 / 40320,
                    2 * torch.sin(0.5 * theta) ** 2 / theta_sq_safe)
    c = torch.where(small, 1 / 6 - theta_sq / 120 + theta_sq ** 2 / 5040 - theta_sq ** 3 / 362880,
                    (theta - torch.sin(theta)) / (theta_sq_safe * theta))
    K = skew(phi)
    eye = torch.eye(3, dtype=phi.dtype, device=phi.device)
    return eye + b[..., None, None] * K + c[..., None, None] * (K @ K)


def so3_left_jacobian_inverse(phi: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`so3_left_jacobian`: ``I - K/2 + D K^2``.

    ``D = (1 - (t/2) cot(t/2)) / t^2``; finite for angles below 2 pi (in particular at pi).

    Args:
        phi: (..., 3).
    Returns:
        (..., 3, 3).
    """
    _check_tensor('phi', phi, (3,))
    theta_sq, small, theta = _safe_norm_sq(phi)
    theta_sq_safe = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    half = 0.5 * theta
    d_exact = (1 - half * torch.cos(half) / torch.sin(half)) / theta_sq_safe
    d_taylor = 1 / 12 + theta_sq / 720 + theta_sq ** 2 / 30240 + theta_sq ** 3 / 1209600
    d = torch.where(small, d_taylor, d_exact)
    K = skew(phi)
    eye = torch.eye(3, dtype=phi.dtype, device=phi.device)
    return eye - 0.5 * K + d[..., None, None] * (K @ K)


def rpy_to_matrix(rpy: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of URDF roll-pitch-yaw (fixed axes): ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``.

    Equal to scipy's ``Rotation.from_euler('xyz', rpy)`` (lower-case: extrinsic).

    Args:
        rpy: (..., 3), (roll, pitch, yaw) [rad].
    Returns:
        R: (..., 3, 3).
    """
    _check_tensor('rpy', rpy, (3,))
    cr, cp, cy = torch.cos(rpy).unbind(-1)
    sr, sp, sy = torch.sin(rpy).unbind(-1)
    R = torch.stack([
        cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
        sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
        -sp, cp * sr, cp * cr,
    ], dim=-1)
    return R.reshape(*rpy.shape[:-1], 3, 3)


def matrix_to_rpy(R: torch.Tensor) -> torch.Tensor:
    """URDF roll-pitch-yaw of a rotation matrix; inverse of :func:`rpy_to_matrix`.

    Pitch is in [-pi/2, pi/2]. At gimbal lock (pitch = +-pi/2) roll and yaw are not unique:
    roll is set to 0 there and yaw carries the whole rotation about z.

    Args:
        R: (..., 3, 3).
    Returns:
        rpy: (..., 3).
    """
    _check_tensor('R', R, (3, 3))
    cos_pitch = torch.sqrt((R[..., 0, 0] ** 2 + R[..., 1, 0] ** 2).clamp_min(
        torch.finfo(R.dtype).tiny))
    pitch = torch.atan2(-R[..., 2, 0], cos_pitch)
    locked = cos_pitch < 1e3 * torch.finfo(R.dtype).eps
    roll = torch.where(locked, torch.zeros_like(pitch), torch.atan2(R[..., 2, 1], R[..., 2, 2]))
    yaw = torch.where(locked, torch.atan2(-R[..., 0, 1], R[..., 1, 1]),
                      torch.atan2(R[..., 1, 0], R[..., 0, 0]))
    return torch.stack([roll, pitch, yaw], dim=-1)


def quat_xyzw_slerp(q0_xyzw: torch.Tensor, q1_xyzw: torch.Tensor,
                    alpha: torch.Tensor | float) -> torch.Tensor:
    """Spherical linear interpolation along the shorter arc.

    ``q(alpha) = q0 * exp(alpha * log(q0^-1 * q1))``: ``alpha = 0`` gives q0, ``1`` gives q1
    (up to sign). Batch dims of the three inputs broadcast.

    Args:
        q0_xyzw: (..., 4).
        q1_xyzw: (..., 4).
        alpha: float or (...) tensor; values outside [0, 1] extrapolate.
    Returns:
        q_xyzw: (..., 4), unit, ``w >= 0``.
    """
    q0 = quat_xyzw_normalize(q0_xyzw)
    q1 = quat_xyzw_normalize(q1_xyzw)
    alpha = torch.as_tensor(alpha, dtype=q0.dtype, device=q0.device)
    rel = quat_xyzw_multiply(quat_xyzw_conjugate(q0), q1)  # canonicalised by the log: short arc
    step = axis_angle_to_quat_xyzw(quat_xyzw_to_axis_angle(rel) * alpha[..., None])
    return quat_xyzw_canonical(quat_xyzw_normalize(quat_xyzw_multiply(q0, step)))


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Rotation matrix from the continuous 6D representation (Gram-Schmidt on two columns).

    ``d6 = (a1, a2)``: ``b1 = a1/|a1|``, ``b2 = normalise(a2 - (b1.a2) b1)``,
    ``b3 = b1 x b2``, ``R = [b1 b2 b3]`` (as columns). Any ``d6`` with non-parallel, non-zero
    halves gives a rotation, which makes it a good free variable for an optimiser.

    Args:
        d6: (..., 6).
    Returns:
        R: (..., 3, 3).
    """
    _check_tensor('d6', d6, (6,))
    eps = torch.finfo(d6.dtype).tiny
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / torch.linalg.vector_norm(a1, dim=-1, keepdim=True).clamp_min(eps)
    a2_perp = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2_perp / torch.linalg.vector_norm(a2_perp, dim=-1, keepdim=True).clamp_min(eps)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(R: torch.Tensor) -> torch.Tensor:
    """The 6D representation of a rotation matrix: its first two columns, concatenated.

    Args:
        R: (..., 3, 3).
    Returns:
        d6: (..., 6).
    """
    _check_tensor('R', R, (3, 3))
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)
