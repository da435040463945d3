"""The EKF's motion model: quasistatic contact dynamics driven by the hand (paper eq. 9).

Between two images the hand moves (joints through forward kinematics, root through TF). Hand
surface points closer than a threshold to the object at the previous estimate are contacts;
quasistatically they keep their place on the object, so the object's motion is the weighted
rigid fit of the contact points' motion. Fallbacks when the fit cannot determine a rotation
(fewer than three contacts, collinear ones): the motion of the hand root when the object is
near the hand, else constant pose. The process noise grows with the fallback and with the fit's
residual (contacts that slid).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from handypriors_ros.core.models.kinematics import HandKinematics
from handypriors_ros.core.physics.contacts import find_contacts
from handypriors_ros.core.physics.rigid_fit import FitStatus, weighted_rigid_fit
from handypriors_ros.core.physics.sdf import WarpMeshSDF
from handypriors_ros.core.tracking.config import TrackerConfig
from handypriors_ros.core.tracking.types import ContactReport


@dataclass(frozen=True)
class HandFrame:
    """The hand at one image stamp, posed in the camera frame (float32 torch).

    Attributes:
        q: (J,) joint positions; T_cam_base: (4, 4) float64 numpy root pose.
        points_cam: (P, 3) surface samples; normals_cam: (P, 3).
        fingertips_cam: (F, 3) fingertip link origins.
    """
    q: np.ndarray
    T_cam_base: np.ndarray
    points_cam: torch.Tensor
    normals_cam: torch.Tensor
    fingertips_cam: torch.Tensor


def pose_hand(kin: HandKinematics, q: np.ndarray, T_cam_base: np.ndarray) -> HandFrame:
    """Forward kinematics of one hand configuration into the camera frame."""
    qt = torch.as_tensor(np.asarray(q)[None], dtype=kin.dtype, device=kin.device)
    Tt = torch.as_tensor(np.asarray(T_cam_base)[None], dtype=kin.dtype, device=kin.device)
    state = kin.forward(qt, Tt)
    return HandFrame(q=np.asarray(q, dtype=np.float64), T_cam_base=np.asarray(T_cam_base),
                     points_cam=state.surface_points[0], normals_cam=state.surface_normals[0],
                     fingertips_cam=state.fingertips[0])


@dataclass(frozen=True)
class MotionPrediction:
    """The predicted object motion between two frames.

    Attributes:
        dT: (4, 4) float64, T_cam_obj(t) = dT T_cam_obj(t-1).
        q_std: (6,) process noise std of this step.
        mode: ``'contact'``, ``'hand_rigid'`` or ``'constant'`` (what was used).
        contacts: the contact set at t-1 (camera frame at t-1).
        fit_rms_m: rms residual of the rigid fit (NaN when not fitted).
        min_distance_m: closest hand point to the object at t-1.
    """
    dT: np.ndarray
    q_std: np.ndarray
    mode: str
    contacts: ContactReport
    fit_rms_m: float
    min_distance_m: float


def _to_obj(T_cam_obj: np.ndarray, points_cam: torch.Tensor) -> torch.Tensor:
    T_obj_cam = torch.as_tensor(np.linalg.inv(T_cam_obj), dtype=points_cam.dtype,
                                device=points_cam.device)
    return points_cam @ T_obj_cam[:3, :3].T + T_obj_cam[:3, 3]


def contact_report(kin: HandKinematics, hand: HandFrame, T_cam_obj: np.ndarray,
                   sdf: WarpMeshSDF, threshold: float):
    """Contacts of a posed hand with the object at a pose. Returns (ContactSet, ContactReport)."""
    pts_obj = _to_obj(T_cam_obj, hand.points_cam)[None].to(sdf.device)
    cs = find_contacts(pts_obj, sdf, threshold=threshold, link_ids=kin.point_link_ids)
    mask = cs.mask[0].cpu()
    idx = torch.nonzero(mask)[:, 0]
    R = T_cam_obj[:3, :3]
    t = T_cam_obj[:3, 3]
    names = kin.link_names
    link_ids = kin.point_link_ids.cpu()[idx].tolist()
    report = ContactReport(
        link_names=tuple(names[i] for i in link_ids),
        points_hand=hand.points_cam[idx].detach().cpu().numpy().astype(np.float64),
        points_object=cs.closest_point_obj[0, idx].cpu().numpy().astype(np.float64) @ R.T + t,
        normals=cs.normal_obj[0, idx].cpu().numpy().astype(np.float64) @ R.T,
        signed_distance=cs.distance[0, idx].detach().cpu().numpy().astype(np.float64))
    return cs, report


def predict_motion(kin: HandKinematics, sdf: WarpMeshSDF, prev: HandFrame, curr: HandFrame,
                   T_cam_obj_prev: np.ndarray, config: TrackerConfig) -> MotionPrediction:
    """The object's motion from the hand's motion between two frames (module docstring)."""
    hand_dT = curr.T_cam_base @ np.linalg.inv(prev.T_cam_base)
    if config.dynamics == 'constant':
        return MotionPrediction(np.eye(4), np.asarray(config.q_constant), 'constant',
                                ContactReport(), float('nan'), float('nan'))
    cs, report = contact_report(kin, prev, T_cam_obj_prev, sdf, config.contact_threshold_m)
    min_d = float(cs.distance.min())
    if config.dynamics == 'contact' and report.count >= 3:
        mask = cs.mask[0]
        # Points deeper inside or closer count more: w = 1 at contact, 0.5 at the threshold.
        d = cs.distance[0].detach().clamp(min=0.0)
        w = torch.where(mask, 1.0 / (1.0 + d / config.contact_threshold_m), 0.0)
        X_prev = prev.points_cam[mask][None].to(torch.float64)
        X_curr = curr.points_cam[mask][None].to(torch.float64)
        fit = weighted_rigid_fit(X_prev, X_curr, w[mask][None].to(torch.float64))
        if int(fit.status[0]) == FitStatus.FULL:
            rms = float(fit.rms_residual[0])
            q_std = np.sqrt(np.asarray(config.q_contact) ** 2
                            + np.array([rms] * 3 + [rms / 0.03] * 3) ** 2)
            return MotionPrediction(fit.T[0].detach().cpu().numpy(), q_std, 'contact', report,
                                    rms, min_d)
    if min_d < config.near_hand_m and config.dynamics in ('contact', 'hand_rigid'):
        q = config.q_hand_rigid if config.dynamics == 'contact' else config.q_contact
        return MotionPrediction(hand_dT, np.asarray(q), 'hand_rigid', report, float('nan'),
                                min_d)
    return MotionPrediction(np.eye(4), np.asarray(config.q_constant), 'constant', report,
                            float('nan'), min_d)
