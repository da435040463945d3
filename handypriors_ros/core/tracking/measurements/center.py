"""The object-centre measurement: the projected object centre vs the observed mask's centroid,
corrected for the hand's occlusion (paper III-E, a keypoint observation).

Nearly linear in the pose, it pulls a poor initial guess into the contour's basin; configure it
before ``'contour'`` in ``TrackerConfig.measurements`` (the default) so that it is applied
first. Residuals are in pixels of the full-resolution image.
"""
from __future__ import annotations

import numpy as np
import torch

from handypriors_ros.core.render.camera import PinholeCamera
from handypriors_ros.core.tracking.ekf import (LinearisedResidual, oplus_linear,
                                               point_jacobian)
from handypriors_ros.core.tracking.measurements.base import (Linearisation, Linearise,
                                                             Measurement, Residual,
                                                             StepContext)
from handypriors_ros.core.tracking.measurements.roi import RoiRender, RoiView


def mask_centroid(mask: np.ndarray) -> np.ndarray | None:
    """(2,) (u, v) centroid of a bool mask, None when empty."""
    vs, us = np.nonzero(mask)
    if len(us) == 0:
        return None
    return np.array([us.mean(), vs.mean()])


def center_measurement(camera: PinholeCamera, roi: RoiView, render: RoiRender,
                       T_cam_obj: torch.Tensor, center_obj: torch.Tensor,
                       observed_mask_roi: np.ndarray) -> Residual | None:
    """The object centre keypoint: the observed mask's centroid corrected by the offset between
    the rendered visible silhouette's centroid and the projected centre (so the hand's occlusion
    does not bias it). None when the masks disagree too much in area to be comparable.

    Returns:
        ``delta (1, 6) -> (1, 2)`` residual [full-resolution px], or None.
    """
    a_vis = render.object_visible.sum()
    a_obs = observed_mask_roi.sum()
    if a_vis < 20 or not 0.5 < a_obs / a_vis < 2.0:
        return None
    c_obs = roi.to_full(mask_centroid(observed_mask_roi)[None])[0]
    c_vis = roi.to_full(mask_centroid(render.object_visible)[None])[0]
    T = T_cam_obj.to(torch.float64)
    c = center_obj.to(torch.float64)[None]
    proj_c = camera.project((c @ T[:3, :3].T + T[:3, 3])[None])[0, 0].detach().numpy()
    z = torch.as_tensor(c_obs - (c_vis - proj_c))

    def residual(delta: torch.Tensor) -> torch.Tensor:  # (1, 6) -> (1, 2)
        Td = oplus_linear(T, delta)[0]
        return (z - camera.project((c @ Td[:3, :3].T + Td[:3, 3])[None])[0, 0])[None]

    def value_and_jacobian() -> tuple[torch.Tensor, torch.Tensor]:
        q = c @ T[:3, :3].T + T[:3, 3]  # (1, 3)
        J = -(camera.project_jacobian(q) @ point_jacobian(q, T[:3, 3]))  # (1, 2, 6)
        return (z - camera.project(q[None])[0, 0])[None], J

    return LinearisedResidual(residual, value_and_jacobian)


class ObjectCenter(Measurement):
    """``'object_center'``: :func:`center_measurement`, noise ``center_sigma_px`` per axis."""
    name = 'object_center'

    def prepare(self, ctx: StepContext) -> Linearise | None:
        if ctx.roi is None or ctx.mask_roi is None or ctx.render is None:
            return None
        R = torch.full((2,), self.config.center_sigma_px ** 2, dtype=torch.float64)

        def linearise(T_cam_obj: torch.Tensor, iteration: int) -> Linearisation | None:
            residual = center_measurement(ctx.frame.camera, ctx.roi, ctx.render, T_cam_obj,
                                          ctx.scene.center, ctx.mask_roi)
            return None if residual is None else Linearisation(residual, 1, R)

        return linearise
