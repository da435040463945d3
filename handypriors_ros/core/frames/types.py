"""The frame pipeline's types: a decoded :class:`Frame` (what the tracker and the refinement
consume), what the assembler says about an image (:class:`AssembledFrame`, its
:class:`FrameProblem` s) and an :class:`InitialPose` of the object. Pure Python + numpy; no
ROS."""
from __future__ import annotations

from collections.abc import Callable
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
        late_mask: live, with ``mask`` None: the mask is still on its way; a callable that
            waits for it (at most until its deadline) and returns it ((H, W) bool; anything
            else counts as no mask), or None. The tracker calls it once, after the work that needs no mask (predict, the ROI render), so that work
            overlaps the segmenter's latency. None: ``mask`` is final.
    """
    stamp_ns: int
    rgb: np.ndarray
    camera: PinholeCamera
    q: np.ndarray
    T_cam_base: np.ndarray
    mask: np.ndarray | None = None
    late_mask: Callable[[], np.ndarray | None] | None = None


@dataclass(frozen=True)
class FrameProblem:
    """Why a frame was skipped (``fatal``) or is processed with less than it should have.

    Attributes:
        kind: ``dropped`` (live: a newer frame arrived), ``evicted`` (too many pending),
            ``no_camera_info``, ``reused_camera_info``, ``no_joint_states``,
            ``stale_joint_states``, ``early_joint_states``, ``missing_tf``, ``early_tf``,
            ``no_initial_pose`` or ``missing_mask`` (the assembler's); decoding adds
            ``bad_image``, ``bad_camera_info`` (fatal) and ``bad_mask``.
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
        mask_deadline_ns: live, released before its mask (``release_before_mask``): the mask
            may still come until this time (the caller's monotonic clock) [ns]; take it with
            :meth:`~handypriors_ros.core.frames.assembler.FrameAssembler.take_mask`. None: the
            mask is final.
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
    mask_deadline_ns: int | None = None

    @property
    def usable(self) -> bool:
        """True when the frame can be tracked (no fatal problem)."""
        return not any(p.fatal for p in self.problems)


@dataclass(frozen=True, eq=False)
class InitialPose:
    """An initial (or re-initialisation) pose of the object.

    Attributes:
        stamp_ns: applies to the first frame at or after this stamp; 0: the next frame [ns].
        frame_id: the frame the pose is given in; ``''``: the camera optical frame.
        T_frame_obj: (4, 4) float64 object pose in ``frame_id``.
    """
    stamp_ns: int
    frame_id: str
    T_frame_obj: np.ndarray

    def __post_init__(self) -> None:
        T = np.asarray(self.T_frame_obj, dtype=np.float64)
        if T.shape != (4, 4) or not np.isfinite(T).all():
            raise InputError(f'T_frame_obj: expected a finite (4, 4) pose, got shape {T.shape}')
        object.__setattr__(self, 'T_frame_obj', T)
        object.__setattr__(self, 'frame_id', str(self.frame_id).lstrip('/'))
        object.__setattr__(self, 'stamp_ns', int(self.stamp_ns))
