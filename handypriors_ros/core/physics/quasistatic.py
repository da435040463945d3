"""Quasistatic contact dynamics (paper eq. 9), one step from t-1 to t: written once, used by the
tracker's prediction (``core.tracking.dynamics.predict_motion``) and by the refinement's
initialisation (``core.refine.problem.quasistatic_poses``).

Hand surface points closer than ``contact_threshold_m`` to the object at its pose of t-1 are
contacts; quasistatically they keep their place on the object, so the object moves with the
weighted rigid (Kabsch) fit of their motion from t-1 to t (:func:`weighted_rigid_fit`): contacts
count ``w = 1 / (1 + max(d, 0) / threshold)``, 1 on or inside the surface and 1/2 at the
threshold. Fallbacks, when the fit cannot determine a rotation (fewer than three contacts,
collinear ones) or is not wanted:

- ``'hand_root'``: an object within ``near_hand_m`` of the hand moves with the hand root;
- ``'constant'``: farther (or without the root poses), it keeps its pose.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry.se3 import invert_transform
from handypriors_ros.core.physics.contacts import ContactSet, find_contacts
from handypriors_ros.core.physics.rigid_fit import FitStatus, weighted_rigid_fit
from handypriors_ros.core.physics.sdf import WarpMeshSDF

#: What moved the object in a :class:`QuasistaticStep`.
MODES = ('contact', 'hand_root', 'constant')


@dataclass(frozen=True)
class QuasistaticStep:
    """One step of the quasistatic dynamics.

    Attributes:
        dT: (4, 4) float64 object motion in the camera frame on the points' device:
            ``T_cam_obj(t) = dT @ T_cam_obj(t-1)``.
        mode: one of :data:`MODES`.
        contacts: the SDF query of every hand point at t-1 (object frame, batch of one):
            ``contacts.mask[0]`` the contact set, ``contacts.distance[0]`` the distances.
        weights: (P,) contact weights of the fit (0 off the contact set), the points' dtype.
        fit_rms_m: weighted RMS residual of the rigid fit [m] (NaN when not fitted).
        min_distance_m: closest hand point to the object at t-1 [m] (the SDF's
            ``max_distance`` when none is within it).
    """
    dT: torch.Tensor
    mode: str
    contacts: ContactSet
    weights: torch.Tensor
    fit_rms_m: float
    min_distance_m: float

    @property
    def contact_mask(self) -> torch.Tensor:
        """(P,) bool: the hand points in contact at t-1."""
        return self.contacts.mask[0]


def contact_query(points_cam: torch.Tensor, T_cam_obj: torch.Tensor, sdf: WarpMeshSDF, *,
                  contact_threshold_m: float,
                  link_ids: torch.Tensor | None = None) -> ContactSet:
    """The SDF query of hand points (P, 3) (camera frame, on the SDF's device) at an object
    pose (4, 4): the contact set of :func:`quasistatic_step` (batch of one, object frame, no
    gradients).

    Only what the step reads is resolved: the points within ``contact_threshold_m`` of the
    surface or inside the object's bounding box (the contacts and any penetration), and
    whatever is needed for the smallest distance to be exact: when no point is closer than
    the threshold, all points within the SDF's range are queried again. The other points
    read as out of range (their distance is the SDF's ``max_distance``). Measured on a
    devbench sugar box (2000 hand points, 1500 within 3.5 cm): 3.8 -> ~1 ms."""
    device, dtype = points_cam.device, points_cam.dtype
    with torch.no_grad():
        # p_obj = T_obj_cam p_cam, in the points' dtype (float32 hand samples stay float32)
        T_obj_cam = invert_transform(torch.as_tensor(T_cam_obj, dtype=torch.float64)
                                     .to(device)).to(dtype)
        p_obj = points_cam @ T_obj_cam[:3, :3].T + T_obj_cam[:3, 3]  # (P, 3)
        near = find_contacts(p_obj[None], sdf, threshold=contact_threshold_m,
                             link_ids=link_ids, near_m=contact_threshold_m)
        d = near.distance.detach()
        if d.numel() and bool((d < contact_threshold_m).any()):
            return near  # the smallest distance is among the resolved points
        return find_contacts(p_obj[None], sdf, threshold=contact_threshold_m,
                             link_ids=link_ids)


def quasistatic_step(points_prev_cam: torch.Tensor, points_curr_cam: torch.Tensor,
                     T_cam_obj_prev: torch.Tensor, sdf: WarpMeshSDF, *,
                     contact_threshold_m: float, near_hand_m: float,
                     T_cam_base_prev: torch.Tensor | None = None,
                     T_cam_base_curr: torch.Tensor | None = None,
                     link_ids: torch.Tensor | None = None,
                     fit_contacts: bool = True,
                     contacts: ContactSet | None = None) -> QuasistaticStep:
    """The object's motion from the hand's between two frames (module docstring).

    Args:
        points_prev_cam: (P, 3) hand surface samples at t-1, camera frame [m], float32 or
            float64, on the SDF's device.
        points_curr_cam: (P, 3) the same samples at t.
        T_cam_obj_prev: (4, 4) object pose at t-1 (any float dtype and device).
        sdf: the object's signed distance field.
        contact_threshold_m: hand points closer than this are contacts.
        near_hand_m: without a contact fit, an object closer than this to the hand moves with
            the hand root.
        T_cam_base_prev, T_cam_base_curr: (4, 4) hand root poses at t-1 and t (both or neither;
            neither: no hand-root fallback).
        link_ids: optional (P,) link index of each point, passed to the contact set.
        fit_contacts: False skips the rigid fit (the hand-root and constant modes only).
        contacts: :func:`contact_query` of these points at this pose with this threshold,
            made earlier (the tracker makes it between frames); None: made here.
    Returns:
        :class:`QuasistaticStep`.
    Raises:
        InputError: mismatched shapes, one root pose without the other, points not on the
            SDF's device.
    """
    if (points_prev_cam.dim() != 2 or points_prev_cam.shape[-1] != 3
            or points_curr_cam.shape != points_prev_cam.shape):
        raise InputError(f'points_prev_cam, points_curr_cam: expected two (P, 3) tensors, got '
                         f'{tuple(points_prev_cam.shape)} and {tuple(points_curr_cam.shape)}')
    if tuple(T_cam_obj_prev.shape) != (4, 4):
        raise InputError(f'T_cam_obj_prev: expected (4, 4), got {tuple(T_cam_obj_prev.shape)}')
    if (T_cam_base_prev is None) != (T_cam_base_curr is None):
        raise InputError('T_cam_base_prev, T_cam_base_curr: expected both or neither')
    if not contact_threshold_m > 0:
        raise InputError(f'contact_threshold_m: expected > 0, got {contact_threshold_m!r}')
    device = points_prev_cam.device
    if contacts is None:
        contacts = contact_query(points_prev_cam, T_cam_obj_prev, sdf,
                                 contact_threshold_m=contact_threshold_m, link_ids=link_ids)
    elif contacts.threshold != float(contact_threshold_m) or \
            tuple(contacts.mask.shape) != (1, points_prev_cam.shape[0]):
        raise InputError('contacts: not a query of these points with this threshold')
    with torch.no_grad():
        mask = contacts.mask[0]
        d = contacts.distance[0].detach()
        # Points deeper inside or closer count more: w = 1 at contact, 0.5 at the threshold.
        weights = torch.where(mask, 1.0 / (1.0 + d.clamp(min=0.0) / contact_threshold_m),
                              torch.zeros((), dtype=d.dtype, device=d.device))
        min_d = float(d.min()) if d.numel() else float('inf')
        if fit_contacts and int(mask.sum()) >= 3:
            idx = torch.nonzero(mask)[:, 0]
            fit = weighted_rigid_fit(points_prev_cam[idx][None].to(torch.float64),
                                     points_curr_cam[idx][None].to(torch.float64),
                                     weights[idx][None].to(torch.float64))
            if int(fit.status[0]) == FitStatus.FULL:
                return QuasistaticStep(fit.T[0], 'contact', contacts, weights,
                                       float(fit.rms_residual[0]), min_d)
        if T_cam_base_prev is not None and min_d < near_hand_m:
            T_prev = torch.as_tensor(T_cam_base_prev, dtype=torch.float64).to(device)
            T_curr = torch.as_tensor(T_cam_base_curr, dtype=torch.float64).to(device)
            return QuasistaticStep(T_curr @ invert_transform(T_prev), 'hand_root', contacts,
                                   weights, float('nan'), min_d)
        return QuasistaticStep(torch.eye(4, dtype=torch.float64, device=device), 'constant',
                               contacts, weights, float('nan'), min_d)
