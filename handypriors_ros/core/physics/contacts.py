"""Contact sets between the hand and the object, per frame, from the object's signed distance.

A hand surface point is in contact when its signed distance to the object surface is below a
threshold (the paper's C_t = {i : phi(v_i) < threshold}); penetrating points (phi < 0) are in
contact too.
"""

from __future__ import annotations

import dataclasses

import torch

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.physics._validation import check_float_tensor
from handypriors_ros.core.physics.sdf import WarpMeshSDF

# Default contact threshold (metres). The paper uses 0.1 "in its units" for the priors and 1 mm
# for "in contact" in its contact-refinement section. For the robot: the Allegro hand's surface
# points are sampled ~2-3 mm apart and its fingertips are spheres, so with a 1 mm band a
# fingertip touching a flat face would often have no sample inside the band; the tracked object
# pose is also a few mm off between refinements. 5 mm keeps the nearest samples of every
# touching link in the set while a finger hovering a centimetre away is not.
DEFAULT_CONTACT_THRESHOLD_M = 0.005


@dataclasses.dataclass(frozen=True)
class ContactSet:
    """Hand-object contacts per frame; geometry in the object frame.

    Attributes:
        mask: (B, P) bool, true for hand points with ``distance < threshold``.
        distance: (B, P) signed distance (m, negative inside) of every hand point, contact or
            not; differentiable w.r.t. the query points (use it for the penetration loss).
        closest_point_obj: (B, P, 3) closest object surface point (detached).
        normal_obj: (B, P, 3) outward object normal at the closest point (detached).
        face_index: (B, P) int64 closest object face; -1 beyond the SDF's ``max_distance``.
        link_ids: (P,) or (B, P) integer link index of each hand point, passed through from the
            caller (None when not given).
        threshold: the contact threshold used (m).
    """

    mask: torch.Tensor
    distance: torch.Tensor
    closest_point_obj: torch.Tensor
    normal_obj: torch.Tensor
    face_index: torch.Tensor
    link_ids: torch.Tensor | None
    threshold: float

    @property
    def count(self) -> torch.Tensor:
        """(B,) int64 number of contact points per frame."""
        return self.mask.sum(dim=-1)


def find_contacts(hand_points_obj: torch.Tensor, sdf: WarpMeshSDF, *,
                  threshold: float = DEFAULT_CONTACT_THRESHOLD_M,
                  link_ids: torch.Tensor | None = None,
                  near_m: float | None = None) -> ContactSet:
    """Query the object's SDF at the hand points and threshold the distance.

    Args:
        hand_points_obj: (B, P, 3) hand surface points in the object frame (m), on the SDF's
            device. Transform them there with torch ops to keep gradients to the pose.
        sdf: the object's :class:`WarpMeshSDF`.
        threshold: contact threshold (m); see ``DEFAULT_CONTACT_THRESHOLD_M`` for the choice.
        link_ids: optional (P,) or (B, P) integer tensor naming each point's hand link; returned
            unchanged so callers can group contacts per finger.
        near_m: passed to :meth:`WarpMeshSDF.signed_distance` (None: every point within the
            SDF's range is resolved); at least ``threshold`` so no contact is missed.
    Returns:
        :class:`ContactSet`.
    """
    check_float_tensor('hand_points_obj', hand_points_obj, ('B', 'P', 3))
    if not isinstance(threshold, (int, float)) or not threshold == threshold:
        raise InputError(f'threshold: expected a float in metres, got {threshold!r}')
    if link_ids is not None:
        batch, count = hand_points_obj.shape[:2]
        if not isinstance(link_ids, torch.Tensor) or link_ids.is_floating_point():
            raise InputError(f'link_ids: expected an integer torch.Tensor of shape ({count},) '
                             f'or ({batch}, {count}), got '
                             f'{getattr(link_ids, "dtype", type(link_ids).__name__)}')
        if tuple(link_ids.shape) not in ((count,), (batch, count)):
            raise InputError(f'link_ids: expected shape ({count},) or ({batch}, {count}), got '
                             f'{tuple(link_ids.shape)}')
    if near_m is not None and not near_m >= threshold:
        raise InputError(f'near_m: expected None or >= threshold ({threshold}), got {near_m!r}')
    result = sdf.signed_distance(hand_points_obj, near_m=near_m)
    mask = (result.distance.detach() < threshold) & result.valid
    return ContactSet(mask=mask, distance=result.distance,
                      closest_point_obj=result.closest_point, normal_obj=result.normal,
                      face_index=result.face_index, link_ids=link_ids,
                      threshold=float(threshold))
