"""The estimates as output messages and bags: what ``track`` and ``refine`` write (and the nodes
publish): ``/handypriors/object_pose`` (PoseWithCovarianceStamped), ``/handypriors/track``
(TrackedObject) and ``/tf`` (camera optical frame -> object frame), one each per image, stamped
and logged at the image stamp. The messages are rclpy's (:mod:`handypriors_ros.ros.conversions`).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from handypriors_ros import interfaces


def msgtype(msg: Any) -> str:
    """``pkg/msg/Name`` of an rclpy message."""
    return f'{type(msg).__module__.split(".")[0]}/msg/{type(msg).__name__}'


def result_messages(result: Any, camera_frame: str, object_frame: str, *,
                    pose_topic: str = interfaces.OBJECT_POSE_TOPIC,
                    track_topic: str = interfaces.TRACK_TOPIC,
                    latency_s: Mapping[str, float] | None = None) -> list[tuple[str, Any, int]]:
    """``[(topic, rclpy message, log_time_ns)]`` of one :class:`TrackResult`: /tf, the pose,
    the TrackedObject (with ``latency_s`` when given), logged at the image stamp."""
    from handypriors_ros.ros.conversions import (track_result_to_pose, track_result_to_tf,
                                                 track_result_to_tracked_object)
    t = result.stamp_ns
    return [(interfaces.TF_TOPIC, track_result_to_tf(result, camera_frame, object_frame), t),
            (pose_topic, track_result_to_pose(result, camera_frame), t),
            (track_topic, track_result_to_tracked_object(result, camera_frame, object_frame,
                                                         latency_s=latency_s), t)]


def skipped_result(stamp_ns: int, kind: str, reason: str, T_cam_obj: Any = None) -> Any:
    """The :class:`~handypriors_ros.core.tracking.types.TrackResult` answering an image that
    could not be tracked: status LOST, the reason ``'skipped: [kind] reason'``, the last
    estimate's pose (identity before any) with an unknown covariance (``covariance[0, 0] =
    -1``, the ROS convention for "no estimate"), no contacts, no measurement.

    It is written on the track topic only (no pose, no /tf: there is no estimate to give)."""
    import numpy as np

    from handypriors_ros.core.tracking.types import TrackResult, TrackStatus

    covariance = np.zeros((6, 6))
    covariance[0, 0] = -1.0
    return TrackResult(stamp_ns=int(stamp_ns),
                       T_cam_obj=np.eye(4) if T_cam_obj is None else np.asarray(T_cam_obj),
                       covariance=covariance, status=TrackStatus.LOST,
                       status_reason=' '.join(f'skipped: [{kind}] {reason}'.split()))


def write_messages(writer: Any, messages: Iterable[tuple[str, Any, int]]) -> None:
    """Serialise rclpy messages into a :class:`~handypriors_ros.bag.BagWriter`."""
    from rclpy.serialization import serialize_message

    for topic, msg, log_time in messages:
        writer.write_raw(topic, msgtype(msg), log_time, serialize_message(msg))


def write_output_bag(path: str | Path, messages: Iterable[tuple[str, Any, int]], *,
                     overwrite: bool, inputs: Iterable[str | Path] = ()) -> None:
    """Write ``[(topic, rclpy message, log_time_ns)]`` to an MCAP bag atomically (``inputs``:
    the job's inputs, never replaced: :class:`~handypriors_ros.bag.BagWriter`)."""
    from handypriors_ros.bag import BagWriter

    with BagWriter(path, overwrite=overwrite, inputs=inputs) as writer:
        write_messages(writer, messages)
