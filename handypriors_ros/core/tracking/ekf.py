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
- :meth:`PoseEKF.update` takes a residual function ``r(delta) = z - h(T (+) delta)`` whose
  Jacobian comes from automatic differentiation (torch.func.jacfwd, forward mode: 6 tangents
  whatever the measurement size); Mahalanobis gating; Joseph-form covariance update; the
  innovation, S, NIS and the gate outcome are kept in :class:`UpdateRecord` for inspection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.stats import chi2

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle


def oplus(T: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``T (+) delta = [exp(phi) R | t + rho]`` (module docstring).

    Args:
        T: (..., 4, 4); delta: (..., 6) as (rho, phi).
    Returns:
        (..., 4, 4).
    """
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


def motion_jacobian(dT: torch.Tensor) -> torch.Tensor:
    """Jacobian of ``T -> dT T`` in the error coordinates, by autodiff.

    For this parameterisation it equals ``blockdiag(dR, dR)``; computing it by forward-mode
    autodiff keeps it right if the motion model changes (a test checks the closed form).

    Args:
        dT: (4, 4) float64. Returns: (6, 6) float64.
    """
    T0 = torch.eye(4, dtype=dT.dtype, device=dT.device)

    def f(delta: torch.Tensor) -> torch.Tensor:
        return ominus(dT @ oplus(T0, delta), dT @ T0)

    return torch.func.jacfwd(f)(torch.zeros(6, dtype=dT.dtype, device=dT.device))


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
               R: torch.Tensor, *, gate: bool = True) -> UpdateRecord:
        """One EKF measurement update.

        Args:
            name: measurement type (for the record).
            residual: ``delta (6,) float64 -> z - h(T (+) delta)`` of size m, differentiable in
                forward mode (no F.grid_sample: sample images with explicit bilinear weights).
            R: (m, m) or (m,) (diagonal) measurement noise.
            gate: apply the Mahalanobis gate.
        Returns:
            :class:`UpdateRecord`; the state changes only when ``accepted``.
        """
        zero = torch.zeros(6, dtype=torch.float64)
        nu = residual(zero).detach().to(torch.float64)
        m = int(nu.numel())
        if m == 0:
            return UpdateRecord(name, 0, np.zeros(0), np.zeros((0, 0)), float('nan'), 0.0,
                                False, 'no measurement')
        # r(delta) = z - h(T (+) delta)  =>  dr/ddelta = -H
        H = -torch.func.jacfwd(residual)(zero).reshape(m, 6).to(torch.float64)
        R = torch.as_tensor(R, dtype=torch.float64)
        if R.dim() == 1:
            R = torch.diag(R)
        if R.shape != (m, m):
            raise InputError(f'R: expected ({m}, {m}) for measurement {name!r}, got '
                             f'{tuple(R.shape)}')
        S = H @ self.P @ H.T + R
        S = 0.5 * (S + S.T)
        gate_value = float(chi2.ppf(self.gate_probability, m))
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

    # -- inspection ---------------------------------------------------------------------------

    def position_std_m(self) -> float:
        """RMS positional standard deviation sqrt(trace(P_tt) / 3) [m]."""
        return math.sqrt(max(float(torch.trace(self.P[:3, :3])) / 3.0, 0.0))

    def rotation_std_rad(self) -> float:
        """RMS rotational standard deviation sqrt(trace(P_rr) / 3) [rad]."""
        return math.sqrt(max(float(torch.trace(self.P[3:, 3:])) / 3.0, 0.0))
