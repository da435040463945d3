"""Inputs and outputs of the per-frame tracker (core types, no ROS)."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from handypriors_ros.core.tracking.ekf import UpdateRecord


class TrackStatus(enum.IntEnum):
    """Tracking status; the values are TrackedObject.STATUS_* of the message."""
    INITIALISING = 0
    TRACKING = 1
    LOST = 2


@dataclass(frozen=True)
class ContactReport:
    """Hand-object contacts used by the dynamics in a frame (camera optical frame, metres).

    Attributes:
        link_names: (C,) hand link of each contact.
        points_hand: (C, 3) hand surface points.
        points_object: (C, 3) closest object surface points.
        normals: (C, 3) outward object normals.
        signed_distance: (C,) negative inside.
    """
    link_names: tuple[str, ...] = ()
    points_hand: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    points_object: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    normals: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    signed_distance: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def count(self) -> int:
        return len(self.link_names)


@dataclass(frozen=True)
class TrackResult:
    """The tracker's output for one image.

    Attributes:
        stamp_ns: the image stamp.
        T_cam_obj: (4, 4) float64 object pose in the camera optical frame.
        covariance: (6, 6) float64 over (x y z rx ry rz), camera-frame axes.
        status: :class:`TrackStatus`; status_reason: why.
        contacts: contacts the dynamics used.
        updates: one record per measurement type considered.
        mask_source: ``'topic'`` (external segmenter), ``'builtin'`` or ``'none'``.
        silhouette_iou: IoU of the rendered (predicted) and observed object silhouettes in the
            region of interest; NaN without a mask.
        latency_s: seconds per stage (``'total'`` included).
    """
    stamp_ns: int
    T_cam_obj: np.ndarray
    covariance: np.ndarray
    status: TrackStatus
    status_reason: str = ''
    contacts: ContactReport = field(default_factory=ContactReport)
    updates: tuple[UpdateRecord, ...] = ()
    mask_source: str = 'none'
    silhouette_iou: float = float('nan')
    latency_s: dict[str, float] = field(default_factory=dict)
