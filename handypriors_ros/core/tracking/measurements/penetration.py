"""The non-penetration measurement: the hand does not go through the object (paper III-E's
penetration prior, as an EKF observation instead of a loss).

At the estimate, the hand's surface samples (``HandFrame.points_cam``) are queried in the
object's SDF; of each hand link whose samples reach more than ``penetration_tolerance_m``
inside the object, the deepest one becomes a row: its signed distance should be
``-penetration_tolerance_m`` (the tolerance: hand meshes and calibrations are not exact), with
noise ``penetration_sigma_m``. The plane through the sample's closest surface point carries the
pose's effect, as for the fingertip contacts (:func:`fingertip_contact_measurement`). One row
per link, not per sample: the samples of one link are one rigid body, and hundreds of rows
would make a few millimetres of overlap a near-certain measurement.

Why (devbench, 2026-12-07): at the ground-truth poses no hand sample of the tracker's Allegro
model is inside the object (0.0 mm on every frame of three sequences), while the estimates of a
wrist soup can drifted towards the camera through the fingers (4.6 mm inside at the median,
31 mm at worst) until the track was lost.
"""
from __future__ import annotations

import numpy as np
import torch

from handypriors_ros.core.physics.contacts import find_contacts
from handypriors_ros.core.tracking.measurements.base import (Linearisation, Linearise,
                                                             Measurement, StepContext)
from handypriors_ros.core.tracking.measurements.fingertip import fingertip_contact_measurement


#: Gauss-Newton iterations of the non-penetration update (it stops early once nothing is
#: inside: the SDF query of an iteration finds no row).
ITERATIONS = 3


def deepest_per_link(distance: np.ndarray, link_ids: np.ndarray, below: float) -> np.ndarray:
    """Indices of the deepest sample of each link with a sample below ``below``.

    Args:
        distance: (P,) signed distances [m] (negative inside).
        link_ids: (P,) integer link of each sample.
        below: the depth that counts [m] (e.g. -tolerance).
    Returns:
        (k,) int64 sample indices, ordered by link id.
    """
    inside = np.nonzero(distance < below)[0]
    if inside.size == 0:
        return inside.astype(np.int64)
    order = inside[np.lexsort((distance[inside], link_ids[inside]))]  # by link, deepest first
    first = np.ones(order.size, dtype=bool)
    first[1:] = link_ids[order[1:]] != link_ids[order[:-1]]
    return order[first].astype(np.int64)


class HandPenetration(Measurement):
    """``'penetration'``: the deepest sample of each hand link inside the object is pushed to
    ``-penetration_tolerance_m`` (module docstring), noise ``penetration_sigma_m``. Iterated
    (:data:`ITERATIONS` times at most): each iteration queries the SDF again at the new
    estimate, since pushing one link out can move another in, and one linearisation of a deep
    overlap leaves part of it (measured: 19 -> 5.3 mm with one, see the tests). Gated like
    every measurement that is not from the image."""
    name = 'penetration'
    from_image = False
    iterated = True

    def iterations(self, ctx: StepContext) -> int:
        return ITERATIONS

    def prepare(self, ctx: StepContext) -> Linearise | None:
        hand_model = ctx.hand_model
        points = ctx.hand.points_cam
        if points is None or points.shape[0] == 0:
            return None
        tolerance = self.config.penetration_tolerance_m
        sigma = self.config.penetration_sigma_m
        sdf = ctx.scene.sdf
        link_ids = hand_model.point_link_ids.detach().cpu().numpy()

        def linearise(T_cam_obj: torch.Tensor, iteration: int) -> Linearisation | None:
            T = T_cam_obj.to(torch.float64)
            with torch.no_grad():
                T_obj_cam = torch.linalg.inv(T).to(device=points.device, dtype=points.dtype)
                p_obj = points @ T_obj_cam[:3, :3].T + T_obj_cam[:3, 3]
                # (only the points inside the bounding box or at the surface are resolved)
                found = find_contacts(p_obj[None], sdf, threshold=-tolerance, near_m=1e-3)
            valid = found.mask[0].cpu().numpy()
            if not valid.any():
                return None
            d = np.where(valid, found.distance[0].detach().cpu().numpy(), np.inf)
            idx = deepest_per_link(d, link_ids, -tolerance)
            if idx.size == 0:
                return None
            ii = torch.as_tensor(idx)
            residual = fingertip_contact_measurement(
                T, points.detach().cpu()[ii], found.normal_obj[0].detach().cpu()[ii],
                found.closest_point_obj[0].detach().cpu()[ii],
                torch.full((idx.size,), -tolerance, dtype=torch.float64))
            R = torch.full((idx.size,), sigma ** 2, dtype=torch.float64)
            return Linearisation(residual, int(idx.size), R)

        return linearise
