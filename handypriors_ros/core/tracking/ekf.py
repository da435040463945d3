"""Error-state EKF on the object pose T_cam_obj (SE(3)), float64.

State: the pose estimate ``T`` (4x4, the object's mesh frame in the camera optical frame) and
the covariance ``P`` (6x6) of the error ``delta = (rho, phi)`` with the composition

    T (+) delta = [exp(phi) R | t + rho]

i.e. translation error in metres along the camera axes and rotation error in radians about the
camera axes: exactly the (x y z rx ry rz) covariance of geometry_msgs/PoseWithCovariance that
robot_localization expects, so ``P`` is published as it is.

Filter steps follow filterpy's EKF conventions:
- :meth:`PoseEKF.predict` takes the motion ``dT`` (T_new = dT T) with its Jacobian and the
  process noise; a frame without a usable measurement is predict-only, never a reset.
- :meth:`PoseEKF.update` takes a residual function ``r(delta) = z - h(T (+) delta)``. Its
  Jacobian is the closed form a measurement attaches (:class:`LinearisedResidual`, built from
  :func:`point_jacobian` and the camera's projection Jacobian) or else comes from automatic
  differentiation (reverse mode, one backward pass per output column of a row-separable
  measurement: :func:`separable_jacobian`); the tests check every closed form against the
  autodiff of its own residual. Mahalanobis gating; Joseph-form covariance update; the
  innovation, S, NIS and the gate outcome are kept in :class:`UpdateRecord` for inspection.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
from scipy.stats import chi2

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle


@functools.lru_cache(maxsize=512)
def chi2_quantile(probability: float, dof: int) -> float:
    """The chi-square ``probability`` quantile with ``dof`` degrees of freedom (cached: scipy's
    ppf costs ~0.1 ms and the gates ask for the same few values every frame)."""
    return float(chi2.ppf(probability, dof))


def oplus(T: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``T (+) delta = [exp(phi) R | t + rho]`` (module docstring).

    Args:
        T: (..., 4, 4); delta: (..., 6) as (rho, phi).
    Returns:
        (..., 4, 4).
    """
    if T.dim() == 2 and delta.dim() == 1 and not (T.requires_grad or delta.requires_grad):
        # one pose, no graph (the filter's updates): the same values, fewer small-tensor ops
        out = torch.zeros(4, 4, dtype=T.dtype, device=T.device)
        out[:3, :3] = axis_angle_to_matrix(delta[3:]) @ T[:3, :3]
        out[:3, 3] = T[:3, 3] + delta[:3]
        out[3, 3] = 1.0
        return out
    R = axis_angle_to_matrix(delta[..., 3:]) @ T[..., :3, :3]
    t = T[..., :3, 3] + delta[..., :3]
    top = torch.cat([R, t[..., None]], dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom = bottom + torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=T.dtype, device=T.device)
    return torch.cat([top, bottom], dim=-2)


def ominus(T_a: torch.Tensor, T_b: torch.Tensor) -> torch.Tensor:
    """The ``delta`` with ``T_b (+) delta = T_a``: (..., 6) as (rho, phi)."""
    rho = T_a[..., :3, 3] - T_b[..., :3, 3]
    phi = matrix_to_axis_angle(T_a[..., :3, :3] @ T_b[..., :3, :3].transpose(-1, -2))
    return torch.cat([rho, phi], dim=-1)


def oplus_linear(T: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """First-order ``T (+) delta``: ``[(I + [phi]x) R | t + rho]``, batched over delta.

    Equal to :func:`oplus` in value and first derivative at ``delta = 0``, which is all an EKF
    linearisation uses; measurement residuals are built on it.

    Args:
        T: (4, 4); delta: (..., 6) as (rho, phi). Returns: (..., 4, 4).
    """
    phi = delta[..., 3:]
    zero = torch.zeros_like(phi[..., 0])
    K = torch.stack([torch.stack([zero, -phi[..., 2], phi[..., 1]], -1),
                     torch.stack([phi[..., 2], zero, -phi[..., 0]], -1),
                     torch.stack([-phi[..., 1], phi[..., 0], zero], -1)], -2)
    R = T[:3, :3] + K @ T[:3, :3]
    t = T[:3, 3] + delta[..., :3]
    top = torch.cat([R, t[..., None]], dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def ominus_linear(T_a: torch.Tensor, T_b: torch.Tensor) -> torch.Tensor:
    """First-order :func:`ominus` (exact value and derivative where ``T_a = T_b``): the rotation
    part is ``vee(skew part of R_a R_b^T)``."""
    rho = T_a[:3, 3] - T_b[:3, 3]
    M = T_a[:3, :3] @ T_b[:3, :3].T
    phi = 0.5 * torch.stack([M[2, 1] - M[1, 2], M[0, 2] - M[2, 0], M[1, 0] - M[0, 1]])
    return torch.cat([rho, phi])


def axis_twist(T_cam_obj: torch.Tensor, origin_obj: torch.Tensor,
               axis_obj: torch.Tensor) -> torch.Tensor:
    """(6,) the error-state direction that turns the object about an axis of its own.

    ``T (+) theta v`` moves every camera-frame point ``x`` by ``theta a x (x - p)`` to first
    order, with ``a = R axis`` and ``p = R origin + t`` (a point of the axis): since the error
    state turns about the object frame's origin ``t``, ``v = [(R origin) x a, a]``.

    Args:
        T_cam_obj: (4, 4) the pose; origin_obj, axis_obj: (3,) a point of the axis and its unit
            direction, object frame.
    """
    R = T_cam_obj[:3, :3].to(torch.float64)
    a = R @ axis_obj.to(torch.float64)
    return torch.cat([torch.linalg.cross(R @ origin_obj.to(torch.float64), a), a])


class LinearisedResidual:
    """A row-separable residual ``delta (rows, 6) -> (rows, d)`` together with its value and
    Jacobian at ``delta = 0`` in closed form.

    Calling it evaluates the residual: that stays the measurement's definition (and what the
    tests differentiate by autodiff to check the closed form). :func:`separable_jacobian` takes
    :meth:`value_and_jacobian` instead of autodiff: no graph, no backward passes (on the CPU,
    ~0.5-2 ms per update saved).

    Args:
        residual: the residual function.
        value_and_jacobian: ``() -> (value (rows, d), J (rows, d, 6))``, both float64.
    """

    def __init__(self, residual: Callable[[torch.Tensor], torch.Tensor],
                 value_and_jacobian: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._residual = residual
        self._value_and_jacobian = value_and_jacobian

    def __call__(self, delta: torch.Tensor) -> torch.Tensor:
        return self._residual(delta)

    def value_and_jacobian(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(value (rows, d), J (rows, d, 6))`` at ``delta = 0``."""
        return self._value_and_jacobian()


def point_jacobian(q_cam: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(N, 3, 6) Jacobian of the camera-frame points ``q = (T (+) delta) x`` w.r.t. ``delta``
    at 0, from the points ``q`` (N, 3) at ``T`` and its translation ``t`` (3,).

    With ``T (+) delta = [exp(phi) R | t + rho]``: ``dq = rho + phi x (q - t)``, so the
    Jacobian is ``[I, -[q - t]x]``.
    """
    a = (q_cam - t).to(torch.float64)
    zero = torch.zeros_like(a[:, 0])
    # -[a]x = [[0, a_z, -a_y], [-a_z, 0, a_x], [a_y, -a_x, 0]]
    neg_skew = torch.stack([torch.stack([zero, a[:, 2], -a[:, 1]], -1),
                            torch.stack([-a[:, 2], zero, a[:, 0]], -1),
                            torch.stack([a[:, 1], -a[:, 0], zero], -1)], -2)
    eye = torch.eye(3, dtype=torch.float64).expand(a.shape[0], 3, 3)
    return torch.cat([eye, neg_skew], dim=-1)


def without_direction(residual: Callable[[torch.Tensor], torch.Tensor],
                      v: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A residual that does not see the error-state direction ``v`` (6,): ``delta`` is first
    stripped of its component along ``v`` (``delta - (delta . w) v``, ``w = v / |v|^2``), so
    the Jacobian becomes ``J (I - v w^T)``: zero along ``v``, unchanged across it. An update
    then cannot move the state along ``v`` through this measurement (for a silhouette, the
    turn of a can about its axis, which only its mesh's small asymmetries and mask noise
    would otherwise 'see')."""
    v = v.to(torch.float64)
    w = v / (v @ v)

    def projected(delta: torch.Tensor) -> torch.Tensor:
        return residual(delta - (delta @ w)[..., None] * v)

    if isinstance(residual, LinearisedResidual):
        def value_and_jacobian() -> tuple[torch.Tensor, torch.Tensor]:
            value, J = residual.value_and_jacobian()
            return value, J - (J @ v)[..., None] * w  # J (I - v w^T)

        return LinearisedResidual(projected, value_and_jacobian)
    return projected


def separable_jacobian(f: Callable[[torch.Tensor], torch.Tensor], rows: int, *,
                       autodiff: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Value and Jacobian of a row-separable measurement at ``delta = 0``: the closed form of
    a :class:`LinearisedResidual` (unless ``autodiff``), else by reverse-mode autodiff.

    ``f`` maps per-row perturbations ``delta (rows, 6)`` to ``(rows, d)`` residuals where row i
    depends only on ``delta[i]`` (each silhouette point, each fingertip sees the state through
    its own copy of the perturbation; evaluated at zero all copies are the same state). Then
    one backward pass per output column gives every row's gradient: ``d`` passes instead of
    ``rows * d``, and no forward-mode AD (which is slow on the CPU in eager mode).

    Returns:
        value: (rows * d,); J: (rows * d, 6), rows major.
    """
    if isinstance(f, LinearisedResidual) and not autodiff:
        value, J = f.value_and_jacobian()
        if value.dim() == 1:
            value, J = value[:, None], J[:, None]
        if value.shape[0] != rows or J.shape != (*value.shape, 6):
            raise InputError(f'residual: expected {rows} rows and a ({rows}, d, 6) Jacobian, '
                             f'got {tuple(value.shape)} and {tuple(J.shape)}')
        return (value.detach().reshape(-1).to(torch.float64),
                J.detach().reshape(-1, 6).to(torch.float64))
    delta = torch.zeros(rows, 6, dtype=torch.float64, requires_grad=True)
    out = f(delta)
    if out.dim() == 1:
        out = out[:, None]
    if out.shape[0] != rows:
        raise InputError(f'residual: expected {rows} rows, got shape {tuple(out.shape)}')
    d = out.shape[1]
    J = torch.empty(rows, d, 6, dtype=torch.float64)
    for j in range(d):
        (g,) = torch.autograd.grad(out[:, j].sum(), delta, retain_graph=j < d - 1,
                                   allow_unused=True)
        J[:, j] = 0.0 if g is None else g
    return out.detach().reshape(-1).to(torch.float64), J.reshape(rows * d, 6)


def motion_jacobian(dT: torch.Tensor) -> torch.Tensor:
    """Jacobian of ``T -> dT T`` in the error coordinates: ``blockdiag(dR, dR)``.

    (With ``T (+) delta = [exp(phi) R | t + rho]``: ``dR exp(phi) R = exp(dR phi) dR R`` and
    ``dR (t + rho) + dt = (dR t + dt) + dR rho``.) A test checks it against autodiff
    (:func:`motion_jacobian_autodiff`); the closed form is used per frame because it is exact
    and costs nothing.

    Args:
        dT: (4, 4) float64. Returns: (6, 6) float64.
    """
    F = torch.zeros(6, 6, dtype=dT.dtype, device=dT.device)
    F[:3, :3] = dT[:3, :3]
    F[3:, 3:] = dT[:3, :3]
    return F


def motion_jacobian_autodiff(dT: torch.Tensor) -> torch.Tensor:
    """:func:`motion_jacobian` by reverse-mode autodiff of ``delta -> (dT (T0 (+) delta)) (-)
    (dT T0)`` (the reference the closed form is tested against)."""
    T0 = torch.eye(4, dtype=dT.dtype, device=dT.device)

    def f(delta: torch.Tensor) -> torch.Tensor:
        return ominus_linear(dT @ oplus_linear(T0, delta), dT @ T0)

    return separable_jacobian(lambda delta: f(delta[0])[None], 1)[1]


@dataclass(frozen=True)
class UpdateRecord:
    """What one measurement update saw and did.

    Attributes:
        name: measurement type.
        dimension: measurement size m.
        innovation: (m,) residual at the prior estimate.
        S: (m, m) innovation covariance.
        nis: squared Mahalanobis distance ``nu^T S^-1 nu``.
        gate: the chi-square threshold it was tested against.
        accepted: False when gated out or not finite (predict-only for this measurement).
        reason: why it was rejected ('' when accepted).
    """
    name: str
    dimension: int
    innovation: np.ndarray
    S: np.ndarray
    nis: float
    gate: float
    accepted: bool
    reason: str = ''

    @property
    def rms(self) -> float:
        return float(np.sqrt(np.mean(self.innovation ** 2))) if self.dimension else float('nan')


class PoseEKF:
    """Error-state EKF on T_cam_obj (module docstring).

    Args:
        T: (4, 4) initial pose (any float dtype; kept as float64).
        P: (6, 6) initial covariance (m², rad²).
        gate_probability: the Mahalanobis gate accepts this probability mass of a consistent
            measurement (chi-square quantile with m degrees of freedom).
    """

    def __init__(self, T: torch.Tensor, P: torch.Tensor, *, gate_probability: float = 0.999
                 ) -> None:
        if not 0.0 < gate_probability < 1.0:
            raise InputError(f'gate_probability: expected in (0, 1), got {gate_probability}')
        self.gate_probability = gate_probability
        self.reset(T, P)

    def reset(self, T: torch.Tensor, P: torch.Tensor) -> None:
        """Set the state (e.g. a re-initialisation); validates shapes and finiteness."""
        T = torch.as_tensor(T, dtype=torch.float64)
        P = torch.as_tensor(P, dtype=torch.float64)
        if T.shape != (4, 4) or not bool(torch.isfinite(T).all()):
            raise InputError(f'T: expected a finite (4, 4) transform, got {tuple(T.shape)}')
        if P.shape != (6, 6) or not bool(torch.isfinite(P).all()):
            raise InputError(f'P: expected a finite (6, 6) covariance, got {tuple(P.shape)}')
        R = T[:3, :3]
        if float((R @ R.T - torch.eye(3, dtype=R.dtype)).abs().max()) > 1e-4:
            raise InputError('T: the rotation block is not orthonormal')
        self.T = T.clone()
        self.P = 0.5 * (P + P.T)

    # -- predict ------------------------------------------------------------------------------

    def predict(self, dT: torch.Tensor, Q: torch.Tensor) -> None:
        """``T <- dT T``, ``P <- F P F^T + Q`` with ``F`` the motion Jacobian.

        Args:
            dT: (4, 4) motion of the object in the camera frame; identity for constant pose.
            Q: (6, 6) process noise of this step.
        Raises:
            InputError: non-finite inputs (the state is left unchanged).
        """
        dT = torch.as_tensor(dT, dtype=torch.float64)
        Q = torch.as_tensor(Q, dtype=torch.float64)
        if not (bool(torch.isfinite(dT).all()) and bool(torch.isfinite(Q).all())):
            raise InputError('predict: dT and Q must be finite')
        F = motion_jacobian(dT)
        self.T = dT @ self.T
        self.P = F @ self.P @ F.T + Q
        self.P = 0.5 * (self.P + self.P.T)

    # -- update -------------------------------------------------------------------------------

    def update(self, name: str, residual: Callable[[torch.Tensor], torch.Tensor],
               R: torch.Tensor, *, rows: int = 1, gate: bool = True,
               pose_noise: torch.Tensor | None = None) -> UpdateRecord:
        """One EKF measurement update.

        Args:
            name: measurement type (for the record).
            residual: ``delta (rows, 6) float64 -> (rows, d)`` residuals ``z - h(T (+) delta)``,
                row i depending only on ``delta[i]`` (see :func:`separable_jacobian`); the
                measurement vector is the rows concatenated (size m = rows * d).
            R: (m, m) or (m,) (diagonal) measurement noise.
            rows: number of rows (1 for a measurement that is not separable).
            gate: apply the Mahalanobis gate.
            pose_noise: (6, 6) covariance of an error of the measurement model expressed as a
                pose error (the object's or the hand's model mismatch): added to the
                measurement noise as ``H M H^T``, so the gate, the NIS and the gain know that
                the measurement cannot pin the pose closer than that. None: none.
        Returns:
            :class:`UpdateRecord`; the state changes only when ``accepted``.
        """
        if rows == 0:
            return UpdateRecord(name, 0, np.zeros(0), np.zeros((0, 0)), float('nan'), 0.0,
                                False, 'no measurement')
        # r(delta) = z - h(T (+) delta)  =>  dr/ddelta = -H
        nu, J = separable_jacobian(residual, rows)
        m = int(nu.numel())
        if m == 0:
            return UpdateRecord(name, 0, np.zeros(0), np.zeros((0, 0)), float('nan'), 0.0,
                                False, 'no measurement')
        H = -J.reshape(m, 6).to(torch.float64)
        R = torch.as_tensor(R, dtype=torch.float64)
        if R.dim() == 1:
            R = torch.diag(R)
        if R.shape != (m, m):
            raise InputError(f'R: expected ({m}, {m}) for measurement {name!r}, got '
                             f'{tuple(R.shape)}')
        if pose_noise is not None:
            R = R + H @ torch.as_tensor(pose_noise, dtype=torch.float64) @ H.T
        S = H @ self.P @ H.T + R
        S = 0.5 * (S + S.T)
        gate_value = chi2_quantile(self.gate_probability, m)
        if not (bool(torch.isfinite(nu).all()) and bool(torch.isfinite(H).all())):
            return UpdateRecord(name, m, nu.numpy(), S.numpy(), float('nan'), gate_value, False,
                                'non-finite residual or Jacobian')
        try:
            L = torch.linalg.cholesky(S)
        except torch.linalg.LinAlgError:
            return UpdateRecord(name, m, nu.numpy(), S.numpy(), float('nan'), gate_value, False,
                                'innovation covariance not positive definite')
        w = torch.cholesky_solve(nu[:, None], L)[:, 0]
        nis = float(nu @ w)
        if gate and nis > gate_value:
            return UpdateRecord(name, m, nu.numpy(), S.numpy(), nis, gate_value, False,
                                f'gated: NIS {nis:.1f} > {gate_value:.1f}')
        PHt = self.P @ H.T
        K = torch.cholesky_solve(PHt.T, L).T  # P H^T S^-1, (6, m)
        delta = K @ nu
        self.T = oplus(self.T, delta)
        # Joseph form, (I - K H) P (I - K H)^T + K R K^T: stays symmetric positive
        # semi-definite under rounding and for a suboptimal K, unlike (I - K H) P.
        I_KH = torch.eye(6, dtype=torch.float64) - K @ H
        self.P = I_KH @ self.P @ I_KH.T + K @ R @ K.T
        self.P = 0.5 * (self.P + self.P.T)
        return UpdateRecord(name, m, nu.numpy(), S.numpy(), nis, gate_value, True)

    def update_iterated(self, name: str, build: Callable[[torch.Tensor], tuple | None], *,
                        iterations: int, gate: bool = True,
                        pose_noise: torch.Tensor | None = None) -> UpdateRecord:
        """Iterated EKF update (Gauss-Newton on the posterior, keeping the prior).

        Re-linearises the measurement at each new estimate: ``build(T)`` returns
        ``(residual, rows, R)`` for a measurement linearised at ``T`` (rendered there), or None
        when it cannot be made. With ``delta_i = x_i (-) x_0``:
        ``delta_{i+1} = K_i (nu_i + H_i delta_i)``, ``K_i = P H_i^T (H_i P H_i^T + R_i)^-1``;
        the covariance is updated once, in Joseph form, with the last ``K`` and ``H``. One
        iteration is the ordinary EKF update. The gate applies to the first (prior) innovation.
        ``pose_noise``: as in :meth:`update`.
        """
        T0 = self.T.clone()
        P0 = self.P.clone()
        first: UpdateRecord | None = None
        T_i = T0
        K = H = R = None
        for i in range(max(1, iterations)):
            built = build(T_i)
            if built is None:
                break
            residual, rows, R_i = built
            nu, J = separable_jacobian(residual, rows)
            m = int(nu.numel())
            H_i = -J.reshape(m, 6)
            R_i = torch.as_tensor(R_i, dtype=torch.float64)
            if R_i.dim() == 1:
                R_i = torch.diag(R_i)
            if pose_noise is not None:  # see update()
                R_i = R_i + H_i @ torch.as_tensor(pose_noise, dtype=torch.float64) @ H_i.T
            S = H_i @ P0 @ H_i.T + R_i
            S = 0.5 * (S + S.T)
            if not (bool(torch.isfinite(nu).all()) and bool(torch.isfinite(H_i).all())):
                break
            try:
                L = torch.linalg.cholesky(S)
            except torch.linalg.LinAlgError:
                break
            if i == 0:
                nis = float(nu @ torch.cholesky_solve(nu[:, None], L)[:, 0])
                gate_value = chi2_quantile(self.gate_probability, m)
                first = UpdateRecord(name, m, nu.numpy(), S.numpy(), nis, gate_value, True)
                if gate and nis > gate_value:
                    return replace(first, accepted=False,
                                   reason=f'gated: NIS {nis:.1f} > {gate_value:.1f}')
            delta_i = ominus(T_i, T0) if i else torch.zeros(6, dtype=torch.float64)
            K = torch.cholesky_solve((P0 @ H_i.T).T, L).T
            delta = K @ (nu + H_i @ delta_i)
            T_i = oplus(T0, delta)
            H, R = H_i, R_i
        if first is None or K is None:
            reason = 'no measurement' if first is None else 'not usable'
            return UpdateRecord(name, 0, np.zeros(0), np.zeros((0, 0)), float('nan'), 0.0,
                                False, reason)
        self.T = T_i
        I_KH = torch.eye(6, dtype=torch.float64) - K @ H
        self.P = I_KH @ P0 @ I_KH.T + K @ R @ K.T  # Joseph form (see update)
        self.P = 0.5 * (self.P + self.P.T)
        return first

    # -- inspection ---------------------------------------------------------------------------

    def position_std_m(self) -> float:
        """RMS positional standard deviation sqrt(trace(P_tt) / 3) [m]."""
        return math.sqrt(max(float(torch.trace(self.P[:3, :3])) / 3.0, 0.0))

    def rotation_std_rad(self) -> float:
        """RMS rotational standard deviation sqrt(trace(P_rr) / 3) [rad]."""
        return math.sqrt(max(float(torch.trace(self.P[3:, 3:])) / 3.0, 0.0))
