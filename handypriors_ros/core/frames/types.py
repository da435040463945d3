"""The frame pipeline's types: a decoded :class:`Frame` (what the tracker and the refinement
consume), and what the assembler says about an image (:class:`AssembledFrame`, its
:class:`FrameProblem` s). Pure Python + numpy; no ROS."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.frames.joints import JointLookup
from handypriors_ros.core.render.camera import PinholeCamera


@dataclass(frozen=True)
class Frame:
    """Everything the tracker and the refinement need for one camera image, at the image stamp.

    Attributes:
        stamp_ns: image stamp [ns].
        rgb: (H, W, 3) uint8 colour image, RGB order, undistorted.
        camera: its pinhole camera (size must match ``rgb``).
        q: (J,) float64 hand joint positions at the stamp, in the hand model's joint order [rad].
        T_cam_base: (4, 4) float64 pose of the hand root (``ah_base_link``) in the camera
            optical frame at the stamp.
        mask: (H, W) bool observed object mask from an external segmenter, or None when the
            segmenter published nothing for this image (the tracker then uses its built-in one).
    """
    stamp_ns: int
    rgb: np.ndarray
    camera: PinholeCamera
    q: np.ndarray
    T_cam_base: np.ndarray
    mask: np.ndarray | None = None


@dataclass(frozen=True)
class FrameProblem:
    """Why a frame was skipped (``fatal``) or is processed with less than it should have.

    Attributes:
        kind: ``dropped`` (live: a newer frame arrived), ``evicted`` (too many pending),
            ``no_camera_info``, ``reused_camera_info``, ``no_joint_states``,
            ``stale_joint_states``, ``missing_tf``, ``no_initial_pose`` or ``missing_mask``.
        message: human-readable detail.
        fatal: the frame cannot be tracked.
    """
    kind: str
    message: str
    fatal: bool


@dataclass(frozen=True, eq=False)
class AssembledFrame:
    """An image with what was found for it at its stamp.

    Attributes:
        stamp_ns: image stamp [ns]; frame_id: the image's frame (the camera optical frame).
        image, camera_info, mask: the payloads as given (camera_info / mask None if missing).
        arrival_ns: when the image arrived (monotonic clock of the caller) [ns].
        joints: joint positions at the stamp, or None.
        T_cam_base: (4, 4) float64 hand root pose in the camera frame, or None.
        problems: what went wrong (see :class:`FrameProblem`).
    """
    stamp_ns: int
    frame_id: str
    image: Any
    camera_info: Any
    mask: Any
    arrival_ns: int
    joints: JointLookup | None
    T_cam_base: np.ndarray | None
    problems: tuple[FrameProblem, ...] = ()

    @property
    def usable(self) -> bool:
        """True when the frame can be tracked (no fatal problem)."""
        return not any(p.fatal for p in self.problems)
