"""The EKF's motion model: quasistatic contact dynamics driven by the hand (paper eq. 9).

Between two images the hand moves (joints through forward kinematics, root through TF). The
object's motion is one step of ``core.physics.quasistatic`` (the weighted rigid fit of the
contacts' motion, else the hand root's motion near the hand, else constant pose); this module
poses the hand (:func:`pose_hand`, any :class:`~handypriors_ros.core.models.hand.HandModel`),
chooses the step's variant from ``TrackerConfig.dynamics`` and sets the process noise, which
grows with the fallback and with the fit's residual (contacts that slid).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from handypriors_ros.core.models.hand import HandModel
from handypriors_ros.core.physics.contacts import ContactSet
from handypriors_ros.core.physics.quasistatic import quasistatic_step
from handypriors_ros.core.physics.sdf import WarpMeshSDF
from handypriors_ros.core.tracking.config import TrackerConfig
from handypriors_ros.core.tracking.types import ContactReport

# A fit residual of r metres at the contacts, a lever arm of this length away, is a rotation
# error of about r / lever radians.
_ROTATION_LEVER_M = 0.03


@dataclass(frozen=True)
class HandFrame:
    """The hand at one image stamp, posed in the camera frame (the hand's dtype and device).

    Attributes:
        q: (J,) float64 numpy joint positions; T_cam_base: (4, 4) float64 numpy root pose.
        points_cam: (P, 3) surface samples; normals_cam: (P, 3).
        fingertips_cam: (F, 3) fingertip centres.
    """
    q: np.ndarray
    T_cam_base: np.ndarray
    points_cam: torch.Tensor
    normals_cam: torch.Tensor
    fingertips_cam: torch.Tensor


def pose_hand(hand: HandModel, q: np.ndarray, T_cam_base: np.ndarray) -> HandFrame:
    """Forward kinematics of one hand configuration into the camera frame."""
    qt = torch.as_tensor(np.asarray(q)[None], dtype=hand.dtype, device=hand.device)
    Tt = torch.as_tensor(np.asarray(T_cam_base)[None], dtype=hand.dtype, device=hand.device)
    state = hand.forward(qt, Tt)
    return HandFrame(q=np.asarray(q, dtype=np.float64), T_cam_base=np.asarray(T_cam_base),
                     points_cam=state.surface_points[0], normals_cam=state.surface_normals[0],
                     fingertips_cam=state.fingertips[0])


@dataclass(frozen=True)
class MotionPrediction:
    """The predicted object motion between two frames.

    Attributes:
        dT: (4, 4) float64, T_cam_obj(t) = dT T_cam_obj(t-1).
        q_std: (6,) process noise std of this step.
        mode: what moved the object: ``'contact'``, ``'hand_root'`` or ``'constant'``
            (``core.physics.quasistatic.MODES``).
        contacts: the contact set at t-1 (camera frame at t-1).
        fit_rms_m: rms residual of the rigid fit (NaN when not fitted).
        min_distance_m: closest hand point to the object at t-1 (NaN when not queried).
    """
    dT: np.ndarray
    q_std: np.ndarray
    mode: str
    contacts: ContactReport
    fit_rms_m: float
    min_distance_m: float


def contact_report(hand: HandModel, contacts: ContactSet, points_cam: torch.Tensor,
                   T_cam_obj: np.ndarray) -> ContactReport:
    """The contacts of a contact set (batch of one, object frame) in the camera frame.

    Args:
        hand: names the points' links (``point_link_ids``, ``link_names``).
        contacts: the SDF query of ``points_cam`` at ``T_cam_obj``.
        points_cam: (P, 3) the hand points queried, camera frame.
        T_cam_obj: (4, 4) the object pose of the query.
    """
    idx = torch.nonzero(contacts.mask[0])[:, 0]
    R = T_cam_obj[:3, :3]
    t = T_cam_obj[:3, 3]
    names = hand.link_names
    link_ids = hand.point_link_ids[idx.to(hand.point_link_ids.device)].cpu().tolist()

    def numpy(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy().astype(np.float64)

    return ContactReport(
        link_names=tuple(names[i] for i in link_ids),
        points_hand=numpy(points_cam[idx]),
        points_object=numpy(contacts.closest_point_obj[0, idx]) @ R.T + t,
        normals=numpy(contacts.normal_obj[0, idx]) @ R.T,
        signed_distance=numpy(contacts.distance[0, idx]))


def predict_motion(hand: HandModel, sdf: WarpMeshSDF, prev: HandFrame, curr: HandFrame,
                   T_cam_obj_prev: np.ndarray, config: TrackerConfig, *,
                   contacts: ContactSet | None = None) -> MotionPrediction:
    """The object's motion from the hand's motion between two frames (module docstring).

    ``contacts``: ``contact_query(prev.points_cam, T_cam_obj_prev, ...)`` made earlier (None:
    made here).

    ``config.dynamics``: ``'contact'``: the full quasistatic step; ``'hand_rigid'``: the step
    without the contact fit (the object moves with the hand root when near it); ``'constant'``:
    constant pose, no query.
    """
    if config.dynamics == 'constant':
        return MotionPrediction(np.eye(4), np.asarray(config.q_constant), 'constant',
                                ContactReport(), float('nan'), float('nan'))
    step = quasistatic_step(prev.points_cam, curr.points_cam, T_cam_obj_prev, sdf,
                            contact_threshold_m=config.contact_threshold_m,
                            near_hand_m=config.near_hand_m,
                            T_cam_base_prev=prev.T_cam_base, T_cam_base_curr=curr.T_cam_base,
                            link_ids=hand.point_link_ids,
                            fit_contacts=config.dynamics == 'contact', contacts=contacts)
    report = contact_report(hand, step.contacts, prev.points_cam, T_cam_obj_prev)
    if step.mode == 'contact':
        rms = step.fit_rms_m
        q_std = np.sqrt(np.asarray(config.q_contact) ** 2
                        + np.array([rms] * 3 + [rms / _ROTATION_LEVER_M] * 3) ** 2)
    elif step.mode == 'hand_root':
        # The hand-root motion is the fallback of 'contact' dynamics but the model itself of
        # 'hand_rigid' dynamics: the latter trusts it as much as a contact fit.
        q_std = np.asarray(config.q_hand_rigid if config.dynamics == 'contact'
                           else config.q_contact)
    else:
        q_std = np.asarray(config.q_constant)
    return MotionPrediction(step.dT.cpu().numpy(), q_std, step.mode, report, step.fit_rms_m,
                            step.min_distance_m)
