"""The paper's physics priors as batched, differentiable torch losses (eqs. 3-5).

Every loss returns one value per frame (or per consecutive pair / triple of frames) so the
caller can weight, mask and sum; none of them averages. Sums follow the paper's squared norms:
over hand points (penetration, sliding) or object points (smoothness, acceleration), so the
weights lambda depend on how many points are sampled.

Frames: ``T_cam_obj`` (..., 4, 4) maps object-frame points into the camera optical frame; hand
points passed as ``*_cam`` are in the camera frame.
"""

from __future__ import annotations

import torch

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry.se3 import invert_transform, transform_points
from handypriors_ros.core.physics._validation import (
    check_float_tensor,
    check_same_device,
    check_same_size,
)


def penetration_loss(distances: torch.Tensor) -> torch.Tensor:
    """Penetration prior (eq. 3b): ``sum_i max(0, -phi(v_i))^2`` per frame.

    Args:
        distances: (B, P) signed distances (m, negative inside) of the hand points, e.g.
            :attr:`ContactSet.distance` or :attr:`SDFResult.distance`.
    Returns:
        (B,) loss per frame (m^2).
    """
    check_float_tensor('distances', distances, ('B', 'P'))
    return torch.clamp(-distances, min=0.0).square().sum(dim=-1)


def sliding_loss(hand_pts_prev_cam: torch.Tensor, hand_pts_cam: torch.Tensor,
                 T_cam_obj_prev: torch.Tensor, T_cam_obj: torch.Tensor,
                 contact_mask: torch.Tensor) -> torch.Tensor:
    """Sliding prior (eq. 3a): contact points move with the object's rigid motion.

    ``sum_{i in C} || (v_i^t - v_i^{t-1}) - (T^t (T^{t-1})^-1 v_i^{t-1} - v_i^{t-1}) ||^2``,
    which simplifies to ``|| v_i^t - T^t (T^{t-1})^-1 v_i^{t-1} ||^2``.

    Args:
        hand_pts_prev_cam: (B, P, 3) hand points at t-1, camera frame (m).
        hand_pts_cam: (B, P, 3) the same hand points at t, camera frame (m).
        T_cam_obj_prev: (B, 4, 4) object pose at t-1.
        T_cam_obj: (B, 4, 4) object pose at t.
        contact_mask: (B, P) bool contact set (typically found at t-1), or float weights.
    Returns:
        (B,) loss per frame pair (m^2).
    """
    check_float_tensor('hand_pts_prev_cam', hand_pts_prev_cam, ('B', 'P', 3))
    check_float_tensor('hand_pts_cam', hand_pts_cam, ('B', 'P', 3))
    check_float_tensor('T_cam_obj_prev', T_cam_obj_prev, ('B', 4, 4))
    check_float_tensor('T_cam_obj', T_cam_obj, ('B', 4, 4))
    if not isinstance(contact_mask, torch.Tensor) or contact_mask.dim() != 2:
        raise InputError(f'contact_mask: expected a (B, P) bool or float tensor, got '
                         f'{tuple(getattr(contact_mask, "shape", ())) or type(contact_mask)}')
    names = ('hand_pts_prev_cam', 'hand_pts_cam', 'T_cam_obj_prev', 'T_cam_obj', 'contact_mask')
    tensors = (hand_pts_prev_cam, hand_pts_cam, T_cam_obj_prev, T_cam_obj, contact_mask)
    check_same_size(names, tensors, (0,))
    check_same_size(names[:2] + names[4:], tensors[:2] + tensors[4:], (1,))
    check_same_device(names, tensors)
    # Rigid motion of the object between the frames, in the camera frame.
    T_motion = T_cam_obj @ invert_transform(T_cam_obj_prev)  # (B, 4, 4)
    carried = transform_points(T_motion, hand_pts_prev_cam)  # (B, P, 3)
    residual_sq = (hand_pts_cam - carried).square().sum(dim=-1)  # (B, P)
    weight = contact_mask.to(residual_sq.dtype)
    return (weight * residual_sq).sum(dim=-1)


def _object_points_in_camera(T_cam_obj: torch.Tensor, object_points: torch.Tensor
                             ) -> torch.Tensor:
    """(T, N, 3) object points in the camera frame; T < 2 or 3 frames give empty losses."""
    check_float_tensor('T_cam_obj', T_cam_obj, ('T', 4, 4))
    check_float_tensor('object_points', object_points, ('N', 3))
    check_same_device(('T_cam_obj', 'object_points'), (T_cam_obj, object_points))
    return transform_points(T_cam_obj, object_points.to(T_cam_obj.dtype))  # (T, N, 3)


def smoothness_loss(T_cam_obj: torch.Tensor, object_points: torch.Tensor,
                    q_hand: torch.Tensor | None = None) -> torch.Tensor:
    """Smoothness prior (eq. 4) between consecutive frames.

    ``|| T^t V - T^{t-1} V ||^2 (+ || q^t - q^{t-1} ||^2)`` for t = 1..T-1.

    Args:
        T_cam_obj: (T, 4, 4) object poses of a sequence.
        object_points: (N, 3) object points V in the object frame (m), e.g. mesh vertices.
        q_hand: optional (T, J) hand configuration (joint angles, rad) per frame.
    Returns:
        (T-1,) loss per consecutive pair (empty for T < 2).
    """
    p_cam = _object_points_in_camera(T_cam_obj, object_points)
    loss = (p_cam[1:] - p_cam[:-1]).square().sum(dim=(-1, -2))
    if q_hand is not None:
        check_float_tensor('q_hand', q_hand, (T_cam_obj.shape[0], 'J'))
        check_same_device(('T_cam_obj', 'q_hand'), (T_cam_obj, q_hand))
        loss = loss + (q_hand[1:] - q_hand[:-1]).square().sum(dim=-1).to(loss.dtype)
    return loss


def acceleration_loss(T_cam_obj: torch.Tensor, object_points: torch.Tensor) -> torch.Tensor:
    """Acceleration prior (eq. 5): ``|| T^{t+1} V - 2 T^t V + T^{t-1} V ||^2`` against jitter.

    Zero for motion at constant velocity of every object point (e.g. constant translational
    velocity).

    Args:
        T_cam_obj: (T, 4, 4) object poses of a sequence.
        object_points: (N, 3) object points V in the object frame (m).
    Returns:
        (T-2,) loss per frame triple centred on t = 1..T-2 (empty for T < 3).
    """
    p_cam = _object_points_in_camera(T_cam_obj, object_points)
    return (p_cam[2:] - 2.0 * p_cam[1:-1] + p_cam[:-2]).square().sum(dim=(-1, -2))
