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

from handypriors_ros.core.tracking.measurements.base import (Linearisation, Linearise,
                                                             Measurement, StepContext)
from handypriors_ros.core.tracking.measurements.fingertip import fingertip_contact_measurement


#: Gauss-Newton iterations of the non-penetration update at most; a later one is made only
#: while some link is more than ITERATE_M deeper than the tolerance.
ITERATIONS = 3
ITERATE_M = 0.002


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
    overlap leaves part of it (the tests' pose 19 mm into the fingers: 5.3 mm left after one,
    2.7 mm after these iterations, and the next frames push on). Gated like every
    measurement that is not from the image: ungated, it pushed a wrongly re-initialised object
    further out of view (devbench sugar box, seed 9007)."""
    name = 'penetration'
    from_image = False
    iterated = True

    def iterations(self, ctx: StepContext) -> int:
        return ITERATIONS

    def prepare(self, ctx: StepContext) -> Linearise | None:
        points = ctx.hand.points_cam
        if points is None or points.shape[0] == 0:
            return None
        tolerance = self.config.penetration_tolerance_m
        sigma = self.config.penetration_sigma_m
        sdf = ctx.scene.sdf
        link_ids = ctx.hand_model.point_link_ids.detach().cpu().numpy()
        p_cam = points.detach().to('cpu', torch.float64).numpy()

        def linearise(T_cam_obj: torch.Tensor, iteration: int) -> Linearisation | None:
            T = T_cam_obj.to(torch.float64)
            R, t = T[:3, :3].numpy(), T[:3, 3].numpy()
            p_obj = (p_cam - t) @ R  # R^T (p - t), (P, 3)
            # (only the points inside the bounding box or at the surface are resolved)
            res = sdf.signed_distance(
                torch.from_numpy(p_obj.astype(np.float32))[None].to(sdf.device), near_m=1e-3)
            d = res.distance[0].detach().cpu().numpy().astype(np.float64)
            d[~res.valid[0].cpu().numpy()] = np.inf
            idx = deepest_per_link(d, link_ids, -tolerance)
            # A later iteration only while some link is still clearly inside: a shallow
            # overlap is done in one (each iteration is an SDF query, ~0.2 ms, and an update).
            if idx.size == 0 or (iteration > 0 and d[idx].min() > -tolerance - ITERATE_M):
                return None
            ii = torch.as_tensor(idx)
            residual = fingertip_contact_measurement(
                T, torch.from_numpy(p_cam[idx]), res.normal[0].detach().cpu()[ii],
                res.closest_point[0].detach().cpu()[ii],
                torch.full((idx.size,), -tolerance, dtype=torch.float64))
            R_noise = torch.full((idx.size,), sigma ** 2, dtype=torch.float64)
            return Linearisation(residual, int(idx.size), R_noise)

        return linearise
