"""The fingertip-contact measurement: fingertips that touched the object in the last frame still
touch it (signed distance unchanged), paper III-E's contact observation.

The contact set is remembered after each step at the posterior pose (fingertip centres within
the hand's fingertip radius plus the contact threshold of the surface); the next step measures
the same fingertips' distances. Always gated (it is not an image measurement).
"""
from __future__ import annotations

import numpy as np
import torch

from handypriors_ros.core.physics.sdf import SDFResult, WarpMeshSDF
from handypriors_ros.core.tracking.ekf import LinearisedResidual, oplus_linear
from handypriors_ros.core.tracking.measurements.base import (Linearisation, Linearise,
                                                             Measurement, Residual,
                                                             StepContext)


def fingertip_contact_measurement(T_cam_obj: torch.Tensor, tips_cam: torch.Tensor,
                                  normal_obj: torch.Tensor, closest_obj: torch.Tensor,
                                  target: torch.Tensor) -> Residual:
    """Fingertips that touched the object keep touching it: residual = target distance -
    distance of the tip centre to the surface, linearised at the prior (the Warp query gives
    the distance and the normal; the plane through the closest point carries the pose's
    effect, so the Jacobian is autodiff of the tip's object-frame position).

    Args:
        T_cam_obj: (4, 4) pose of the linearisation.
        tips_cam: (n, 3) fingertip centres, camera frame.
        normal_obj: (n, 3) outward normals at their closest object points, object frame.
        closest_obj: (n, 3) those closest points.
        target: (n,) the distances to keep [m].
    Returns:
        ``delta (n, 6) -> (n,)`` residual [m] (all inputs on the CPU).
    """
    T = T_cam_obj.to(torch.float64)
    tips = tips_cam.to(torch.float64)
    n = normal_obj.to(torch.float64)
    c = closest_obj.to(torch.float64)
    tgt = target.to(torch.float64)

    def residual(delta: torch.Tensor) -> torch.Tensor:  # (n, 6) -> (n,)
        Td = oplus_linear(T, delta)
        p_obj = ((tips - Td[:, :3, 3])[:, None, :] @ Td[:, :3, :3])[:, 0]  # R^T (p - t)
        d = ((p_obj - c) * n).sum(-1)  # signed distance to the tangent plane
        return tgt - d

    def value_and_jacobian() -> tuple[torch.Tensor, torch.Tensor]:
        a = tips - T[:3, 3]
        b = n @ T[:3, :3].T
        d = ((a @ T[:3, :3] - c) * n).sum(-1)
        return tgt - d, torch.cat([b, torch.linalg.cross(a, b, dim=-1)], dim=-1)

    return LinearisedResidual(residual, value_and_jacobian)


def query_fingertips(sdf: WarpMeshSDF, tips_cam: torch.Tensor, T_cam_obj: np.ndarray
                     ) -> SDFResult:
    """The object's SDF at fingertip centres (F, 3) (camera frame, any device) at a pose; the
    result's fields are (1, F) / (1, F, 3) on the SDF's device."""
    T_obj_cam = np.linalg.inv(T_cam_obj)
    p = tips_cam.detach().cpu().double().numpy() @ T_obj_cam[:3, :3].T + T_obj_cam[:3, 3]
    return sdf.signed_distance(torch.as_tensor(p[None], dtype=torch.float32, device=sdf.device))


class FingertipContact(Measurement):
    """``'fingertip_contact'``: :func:`fingertip_contact_measurement` for the fingertips
    remembered from the last frame, noise ``fingertip_sigma_m``."""
    name = 'fingertip_contact'
    from_image = False

    def __init__(self, config) -> None:
        super().__init__(config)
        self._targets: dict[int, float] = {}  # fingertip index -> signed distance to keep

    def reset(self) -> None:
        self._targets = {}

    def prepare(self, ctx: StepContext) -> Linearise | None:
        if not self._targets:
            return None
        targets = dict(self._targets)

        def linearise(T_cam_obj: torch.Tensor, iteration: int) -> Linearisation | None:
            tips = ctx.hand.fingertips_cam
            res = query_fingertips(ctx.scene.sdf, tips, T_cam_obj.numpy())
            valid = res.valid[0].cpu().numpy()
            idx = [i for i in sorted(targets) if valid[i]]
            if not idx:
                return None
            ii = torch.as_tensor(idx)
            residual = fingertip_contact_measurement(
                T_cam_obj, tips.detach().cpu()[ii], res.normal[0].cpu()[ii],
                res.closest_point[0].cpu()[ii],
                torch.as_tensor([targets[i] for i in idx]))
            R = torch.full((len(idx),), self.config.fingertip_sigma_m ** 2, dtype=torch.float64)
            return Linearisation(residual, len(idx), R)

        return linearise

    def finish(self, ctx: StepContext, T_cam_obj: np.ndarray) -> None:
        """The fingertips touching the object at the posterior become next frame's targets."""
        res = query_fingertips(ctx.scene.sdf, ctx.hand.fingertips_cam, T_cam_obj)
        d = res.distance[0].detach().cpu().numpy()
        touch = d < ctx.hand_model.fingertip_radius_m + self.config.contact_threshold_m
        self._targets = {int(i): float(d[i]) for i in np.nonzero(touch)[0]}
