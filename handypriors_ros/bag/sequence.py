"""Read a recorded input bag into per-image frames: what offline jobs (refine, demo, benchmarks)
consume.

:func:`read_sequence` plays a bag in the INTERFACES.md layout once, in log-time order, through
the same matching the tracker node uses (:class:`~handypriors_ros.core.frames.
FrameAssembler` in replay mode with a :class:`JointStateBuffer` and a
:class:`TransformBuffer`), and returns one
:class:`~handypriors_ros.core.frames.Frame` per image in stamp order: the image
(RGB, undistorted with its camera_info's distortion) and the camera of the undistorted image,
the object mask of the same stamp when the segmenter published one, the joint positions
interpolated to the image stamp (in the kinematic model's order) and ``T_cam_base`` from TF at
the image stamp. It also returns the first ``/handypriors/initial_pose`` (in the camera frame).

Offline, every image must be usable: a frame the assembler could not complete (no
camera_info, no joint states, no TF at its stamp), a truncated or unreadable bag, a missing
topic or an undecodable message raises :class:`~handypriors_ros.bag.io.BagError` naming the
topic, the stamp and the reason. A missing mask is not an error (``Frame.mask`` is None).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handypriors_ros import interfaces
from handypriors_ros.bag.io import BagError, BagReader
from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry.transform_buffer import TransformBuffer, TransformError
from handypriors_ros.core.frames import AssemblyConfig, FrameAssembler, Frame, JointStateBuffer
from handypriors_ros.ros.conversions import (
    camera_info_to_camera,
    image_to_numpy,
    joint_state_to_arrays,
    mask_to_numpy,
    pose_stamped_to_matrix,
    stamp_to_ns,
    tf_message_to_core,
)

_NO_LIMIT = 1 << 40  # s: keep every sample of an offline bag


@dataclass(frozen=True)
class SequenceTopics:
    """Topic names of an input bag (defaults: INTERFACES.md)."""

    image: str = interfaces.IMAGE_TOPIC
    camera_info: str = interfaces.CAMERA_INFO_TOPIC
    joint_states: str = interfaces.JOINT_STATES_TOPIC
    mask: str = interfaces.MASK_TOPIC
    initial_pose: str = interfaces.INITIAL_POSE_TOPIC
    tf: str = interfaces.TF_TOPIC
    tf_static: str = interfaces.TF_STATIC_TOPIC


@dataclass(frozen=True, eq=False)
class RecordedSequence:
    """An input bag as per-image frames.

    Attributes:
        path: the bag.
        frames: (N,) one :class:`Frame` per image, in stamp order (``q`` in
            ``joint_names`` order).
        joint_names: (J,) the model's joint names.
        camera_frame: the images' frame_id (camera optical frame).
        T_cam_obj_initial: (4, 4) float64 first initial pose in the camera frame, or None.
        notes: non-fatal problems met (e.g. ``'3 images without a mask'``).
    """

    path: Path
    frames: tuple[Frame, ...]
    joint_names: tuple[str, ...]
    camera_frame: str
    T_cam_obj_initial: np.ndarray | None
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def stamps_ns(self) -> np.ndarray:
        """(N,) int64 image stamps."""
        return np.array([f.stamp_ns for f in self.frames], dtype=np.int64)

    @property
    def masks_missing(self) -> int:
        """Number of images without a mask."""
        return sum(f.mask is None for f in self.frames)


def read_sequence(path: str | Path, joint_names: Sequence[str], *,
                  joint_name_map: Mapping[str, str] | None = None,
                  topics: SequenceTopics = SequenceTopics(),
                  hand_root_frame: str = interfaces.HAND_ROOT_FRAME,
                  assembly: AssemblyConfig | None = None) -> RecordedSequence:
    """Read an input bag into per-image frames (module docstring).

    Args:
        path: bag directory or file (MCAP or sqlite3).
        joint_names: (J,) the kinematic model's joint names: ``Frame.q`` follows them.
        joint_name_map: incoming joint name -> model joint name.
        topics: topic names.
        hand_root_frame: TF frame of the hand root (URDF root link).
        assembly: matching tolerances (replay mode is forced); defaults when None.
    Returns:
        :class:`RecordedSequence`.
    Raises:
        BagError: the bag cannot be read, is truncated, lacks a topic, holds an undecodable
            message, or an image cannot be completed (the message says which and why).
    """
    path = Path(path)
    base = assembly or AssemblyConfig()
    config = dataclasses.replace(base, mode='replay', hand_root_frame=hand_root_frame,
                                 use_mask=True, max_pending=_NO_LIMIT)
    joints = JointStateBuffer(joint_names, name_map=joint_name_map, cache_time_s=_NO_LIMIT)
    tf = TransformBuffer(cache_time_s=_NO_LIMIT)
    assembler = FrameAssembler(config, joints, tf)
    frames: list[Frame] = []
    initial_pose = None
    non_fatal: dict[str, int] = {}
    undistorters: dict[tuple, tuple] = {}
    camera_frame: str | None = None

    def take(ready) -> None:
        nonlocal camera_frame
        for frame in ready:
            where = f'bag {path}: image at {frame.stamp_ns} ns'
            fatal = [p for p in frame.problems if p.fatal]
            if fatal:
                raise BagError(f'{where}: ' + '; '.join(f'{p.kind}: {p.message}' for p in fatal))
            for p in frame.problems:
                non_fatal[p.kind] = non_fatal.get(p.kind, 0) + 1
            if camera_frame is None:
                camera_frame = frame.frame_id
            elif frame.frame_id != camera_frame:
                raise BagError(f'{where}: frame_id {frame.frame_id!r}, earlier images '
                               f'{camera_frame!r}: expected one camera frame')
            frames.append(_frame_input(frame, undistorters, where))

    with BagReader(path) as reader:
        available = reader.topics
        for topic in (topics.image, topics.camera_info, topics.joint_states):
            if available.get(topic, ('', 0))[1] == 0:
                raise BagError(f'bag {path}: expected messages on {topic}; the bag has '
                               f'{", ".join(sorted(available)) or "no topic"}')
        wanted = [topics.image, topics.camera_info, topics.joint_states, topics.mask,
                  topics.initial_pose, topics.tf, topics.tf_static]
        for m in reader.messages(wanted, on_truncated='raise'):
            try:
                msg = m.deserialize()
            except Exception as exc:  # rosbags raises several types for corrupt CDR
                raise BagError(f'bag {path}: {m.topic} message at log time {m.log_time_ns} ns '
                               f'cannot be decoded: {exc}') from exc
            try:
                if m.topic == topics.image:
                    assembler.add_image(stamp_to_ns(msg.header.stamp), msg.header.frame_id, msg,
                                        m.log_time_ns)
                elif m.topic == topics.camera_info:
                    assembler.add_camera_info(stamp_to_ns(msg.header.stamp), msg)
                elif m.topic == topics.mask:
                    assembler.add_mask(stamp_to_ns(msg.header.stamp), msg)
                elif m.topic == topics.joint_states:
                    stamp, names, positions = joint_state_to_arrays(msg)
                    joints.add(stamp, names, positions)
                    assembler.advance_data_time(stamp)
                elif m.topic == topics.initial_pose:
                    if initial_pose is None:
                        initial_pose = pose_stamped_to_matrix(msg)
                else:
                    for t in tf_message_to_core(msg):
                        tf.set_transform(t, is_static=m.topic == topics.tf_static,
                                         authority=m.topic)
                        assembler.advance_data_time(t.stamp_ns)
            except (InputError, TransformError) as exc:
                raise BagError(f'bag {path}: {m.topic} message at log time {m.log_time_ns} '
                               f'ns: {exc}') from exc
            take(assembler.pop_ready())
        take(assembler.pop_ready(flush=True))
    if not frames:
        raise BagError(f'bag {path}: no images on {topics.image}')
    T_init = None
    if initial_pose is not None:
        stamp, frame_id, T = initial_pose
        frame_id = frame_id.lstrip('/')
        if frame_id and frame_id != camera_frame:
            try:
                T = tf.lookup_transform(camera_frame, frame_id, stamp) @ T
            except TransformError as exc:
                raise BagError(f'bag {path}: {topics.initial_pose} is in frame {frame_id!r}, '
                               f'which cannot be transformed into the camera frame '
                               f'{camera_frame!r}: {exc}') from exc
        T_init = T
    notes = tuple(f'{n} images with {kind.replace("_", " ")}' for kind, n in
                  sorted(non_fatal.items()))
    return RecordedSequence(path=path, frames=tuple(frames), joint_names=tuple(joint_names),
                            camera_frame=camera_frame, T_cam_obj_initial=T_init, notes=notes)


def _frame_input(frame, undistorters: dict, where: str) -> Frame:
    """Decode an assembled frame's payloads (undistorting image and mask)."""
    info = frame.camera_info
    key = (tuple(np.asarray(info.k)), tuple(np.asarray(info.p)), tuple(np.asarray(info.d)),
           str(info.distortion_model), int(info.width), int(info.height))
    try:
        if key not in undistorters:
            undistorters[key] = camera_info_to_camera(info)
        camera, und = undistorters[key]
        rgb = image_to_numpy(frame.image)
        camera.check_image_size(rgb.shape[1], rgb.shape[0], 'image')
        mask = None
        if frame.mask is not None:
            mask = mask_to_numpy(frame.mask)
            camera.check_image_size(mask.shape[1], mask.shape[0], 'mask')
            if not und.is_identity:
                mask = und.undistort_mask(mask.astype(np.uint8)) > 0
        rgb = np.ascontiguousarray(und.undistort_image(rgb))
    except InputError as exc:
        raise BagError(f'{where}: {exc}') from exc
    return Frame(stamp_ns=frame.stamp_ns, rgb=rgb, camera=camera,
                      q=np.asarray(frame.joints.q, dtype=np.float64),
                      T_cam_base=np.asarray(frame.T_cam_base, dtype=np.float64), mask=mask)
