"""A tracking session: one :class:`~handypriors_ros.core.tracking.tracker.ObjectTracker` fed frame
by frame, as ``handypriors track`` and the tracker node both run it (pure Python + the core; no
ROS).

What the session adds to the tracker:

- initial poses wait for their frame: an :class:`InitialPose` (from the input bag's or the
  topic's ``/handypriors/initial_pose``, or the ``initial_pose`` parameter: stamp 0) is applied
  at the first frame whose stamp is at or after its stamp (within ``stamp_tolerance_ns``); of
  several due at once the newest wins. A pose in another frame than the camera's is brought
  into the camera frame through TF at its stamp (the latest TF for stamp 0); one that cannot be
  is reported (``bad_initial_pose``) and dropped;
- :meth:`TrackingSession.step` tracks a frame: a frame before any initial pose
  (``no_initial_pose``) or one the tracker rejects (``bad_frame``) is reported and skipped,
  never an exception;
- counters: frames tracked, results by status, the last result (problems go to the shared
  :class:`~handypriors_ros.core.frames.problems.ProblemCounter`).
"""
from __future__ import annotations

import collections
from collections.abc import Callable, Collection

import numpy as np

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.frames import Frame, InitialPose, ProblemCounter
from handypriors_ros.core.geometry.transform_buffer import TransformBuffer, TransformError
from handypriors_ros.core.tracking.tracker import NotInitialisedError, ObjectTracker
from handypriors_ros.core.tracking.types import TrackResult


class TrackingSession:
    """Feeds frames to a tracker (module docstring).

    Args:
        tracker: the tracker.
        tf: the transform buffer the frames' inputs went into (initial poses in other frames).
        problems: where problems are counted.
        stamp_tolerance_ns: an initial pose applies to a frame at most this before its stamp.
        log: informational messages (initialisation), one line each; None: none.
    """

    def __init__(self, tracker: ObjectTracker, tf: TransformBuffer, problems: ProblemCounter,
                 *, stamp_tolerance_ns: int = 1_000_000,
                 log: Callable[[str], None] | None = None) -> None:
        self.tracker = tracker
        self.tf = tf
        self.problems = problems
        self.stamp_tolerance_ns = int(stamp_tolerance_ns)
        self.log = log
        self.frames_tracked = 0
        self.frames_predicted = 0  # answered by predict_only (images not assembled)
        self.status_counts: collections.Counter[str] = collections.Counter()
        self.last_result: TrackResult | None = None
        self._pending: list[InitialPose] = []

    @property
    def pending_initial_poses(self) -> int:
        """Initial poses waiting for their frame."""
        return len(self._pending)

    def add_initial_pose(self, pose: InitialPose) -> None:
        """Hold an initial pose until the first frame at or after its stamp."""
        if not isinstance(pose, InitialPose):
            raise InputError(f'pose: expected an InitialPose, got {type(pose).__name__}')
        self._pending.append(pose)

    def initialised_for(self, stamp_ns: int) -> bool:
        """Whether a frame at ``stamp_ns`` will have an initial pose (the tracker has one, or
        one is due by then): what the frame assembler's replay waits for."""
        return self.tracker.ekf is not None or any(
            p.stamp_ns <= stamp_ns + self.stamp_tolerance_ns for p in self._pending)

    def step(self, frame: Frame, camera_frame: str, *, apply_initial_poses: bool = True,
             skip: Collection[str] = ()) -> TrackResult | None:
        """Track one frame (initial poses due are applied first).

        Args:
            frame: the decoded frame.
            camera_frame: its camera optical frame (the image's frame_id).
            apply_initial_poses: False when the caller has applied them already
                (:meth:`apply_initial_poses`, e.g. under a lock that the step must not hold).
            skip: measurements not made for this frame (:meth:`ObjectTracker.step`).
        Returns:
            The result, or None when the frame was skipped (reported).
        """
        if apply_initial_poses:
            self.apply_initial_poses(frame.stamp_ns, camera_frame)
        try:
            result = self.tracker.step(frame, skip=skip)
        except NotInitialisedError as exc:
            self.problems.report('no_initial_pose', f'frame {frame.stamp_ns} ns skipped: {exc}')
            return None
        except InputError as exc:
            self.problems.report('bad_frame', f'frame {frame.stamp_ns} ns skipped: {exc}')
            return None
        self.frames_tracked += 1
        self.status_counts[result.status.name.lower()] += 1
        self.last_result = result
        return result

    def predict_only(self, stamp_ns: int, reason: str, *, q: np.ndarray | None = None,
                     T_cam_base: np.ndarray | None = None) -> TrackResult | None:
        """An estimate for an image that could not be assembled into a frame (``reason``: why),
        so that every image after initialisation is answered: the tracker's predict-only step
        (:meth:`ObjectTracker.predict_only`), status reason ``'predict only: ...'``. None (and
        nothing reported: the assembler reported the frame's problem) before any initial pose
        or for a stamp not after the last answered one. ``q``, ``T_cam_base``: the hand at the
        stamp when known (a live frame dropped for a newer one): the hand-driven predict
        (:meth:`ObjectTracker.predict_only`).
        """
        try:
            result = self.tracker.predict_only(stamp_ns, reason, q=q, T_cam_base=T_cam_base)
        except (NotInitialisedError, InputError):
            return None
        self.frames_predicted += 1
        self.status_counts[result.status.name.lower()] += 1
        self.last_result = result
        return result

    def reset(self) -> None:
        """Re-initialise the tracker from its last initial pose.

        Raises:
            NotInitialisedError: no initial pose was ever applied.
        """
        self.tracker.reset()

    def apply_initial_poses(self, stamp_ns: int, camera_frame: str) -> None:
        """(Re-)initialise the tracker from the newest initial pose due at a frame's stamp
        (within ``stamp_tolerance_ns``; one in another frame is looked up in TF); the
        others due are dropped. A pose without a transform is reported and dropped."""
        limit = stamp_ns + self.stamp_tolerance_ns
        due = [p for p in self._pending if p.stamp_ns <= limit]
        if not due:
            return
        self._pending = [p for p in self._pending if p.stamp_ns > limit]
        pose = max(due, key=lambda p: p.stamp_ns)
        T = pose.T_frame_obj
        if pose.frame_id and pose.frame_id != camera_frame.lstrip('/'):
            try:
                T_cam_frame = self.tf.lookup_transform(camera_frame, pose.frame_id,
                                                       pose.stamp_ns or None)
            except TransformError as exc:
                self.problems.report('bad_initial_pose', f'initial pose in {pose.frame_id!r} '
                                     f'ignored: no transform to {camera_frame!r}: {exc}')
                return
            T = T_cam_frame @ T
        self.tracker.initialise(T)
        if self.log is not None:
            self.log(f'tracker initialised at frame {stamp_ns} ns from the initial pose at '
                     f'{pose.stamp_ns} ns')
