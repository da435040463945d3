"""THE offline reader: a recorded input bag as per-image frames. ``handypriors track``,
``refine`` and ``demo`` and the benchmarks read bags only through it.

:class:`FrameReader` plays a bag in the INTERFACES.md layout once, in log-time order, through
the frame pipeline the tracker node runs live: each message is read by
:class:`~handypriors_ros.ros.conversions.FrameInputs` into a
:class:`~handypriors_ros.core.frames.FrameAssembler` in replay mode (every image, in stamp
order, released when the data has passed its stamp: deterministic), and each assembled frame
is decoded by :class:`~handypriors_ros.ros.conversions.FrameDecoder`: the image (RGB,
undistorted with its camera_info's distortion) and the camera of the undistorted image, the
object mask of the same stamp when the segmenter published one, the joint positions
interpolated to the image stamp in the hand model's order (:class:`HandNaming` maps the robot's
names) and ``T_cam_base`` from TF at the image stamp. ``/handypriors/initial_pose`` messages
come out as :class:`InitialPose` events, in order with the frames.

Nothing short of an unreadable bag fails the whole bag: an image that cannot be assembled (no
joint states or TF at its stamp, beyond the tolerances of
:class:`~handypriors_ros.core.frames.AssemblyConfig`), a message that cannot be decoded or used
(wrong encoding, NaN joints, time going backwards, ...) is skipped and counted by kind in a
:class:`~handypriors_ros.core.frames.ProblemCounter`, as the tracker node counts it; a
truncated or damaged bag is read up to the damage (:class:`~handypriors_ros.bag.io.BagReader`)
and reported as a ``truncated_bag`` problem. A missing or unreadable file, or a bag without
images, camera_info or joint states at all, raise :class:`~handypriors_ros.bag.io.BagError`
naming the bag and the reason.

Every image gets an answer: with ``skipped=True`` :meth:`FrameReader.events` also yields a
:class:`SkippedImage` (stamp, frame, problem kind and reason) for each image that cannot be
used, so that ``track`` writes one status per input image. ``strict`` makes a truncated bag an
error instead.

:func:`read_sequence` keeps every frame in memory (refine, demo, benchmarks); ``track`` iterates
:meth:`FrameReader.events` and tracks each frame as it comes.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from handypriors_ros import interfaces
from handypriors_ros.bag.io import BagError, BagReader
from handypriors_ros.core.frames import (AssemblyConfig, Frame, FrameAssembler, HandNaming,
                                         InitialPose, LastProblem, ProblemCounter)
from handypriors_ros.core.geometry.transform_buffer import TransformBuffer, TransformError
from handypriors_ros.ros.conversions import FrameDecoder, FrameInputs, stamp_to_ns

_NO_LIMIT = 1 << 40  # s: keep every sample of an offline bag


@dataclass(frozen=True)
class SequenceTopics:
    """Topic names of an input bag (defaults: INTERFACES.md); an empty mask or initial pose
    topic is not read."""

    image: str = interfaces.IMAGE_TOPIC
    camera_info: str = interfaces.CAMERA_INFO_TOPIC
    joint_states: str = interfaces.JOINT_STATES_TOPIC
    mask: str = interfaces.MASK_TOPIC
    initial_pose: str = interfaces.INITIAL_POSE_TOPIC
    tf: str = interfaces.TF_TOPIC
    tf_static: str = interfaces.TF_STATIC_TOPIC


@dataclass(frozen=True, eq=False)
class BagFrame:
    """A frame read from a bag.

    Attributes:
        frame: the decoded frame.
        frame_id: its camera optical frame (the image's frame_id).
        arrival_ns: when its image was read (monotonic clock) [ns].
        release_ns: when the assembler released it (monotonic clock) [ns].
        decode_s: time spent decoding its messages [s].
    """
    frame: Frame
    frame_id: str
    arrival_ns: int
    release_ns: int
    decode_s: float


@dataclass(frozen=True)
class SkippedImage:
    """An image of the bag that cannot be used (``FrameReader.events(skipped=True)``).

    Attributes:
        stamp_ns: the image stamp [ns]. frame_id: its frame.
        kind: the problem kind (``missing_tf``, ``bad_image``, ``time_backwards``, ...).
        reason: the problem's message.
    """
    stamp_ns: int
    frame_id: str
    kind: str
    reason: str


class FrameReader:
    """Plays an input bag through the frame pipeline (module docstring). A context manager.

    Args:
        path: bag directory or file (MCAP or sqlite3).
        naming: the hand's names on the robot (``Frame.q`` follows ``naming.joint_names``).
        topics: topic names.
        assembly: matching tolerances; replay mode, the hand root frame of ``naming``, unlimited
            pending frames and masks only when the bag has the mask topic are forced.
        problems: where problems are counted (a new counter when None).
        ignore_child_frames: transforms to these frames are not inputs (a tracker's output).
        strict: a truncated or damaged bag is an error (BagError) instead of being read up to
            the damage.
    Raises:
        BagError: the bag cannot be opened (or, ``strict``, is truncated).
    """

    def __init__(self, path: str | Path, naming: HandNaming, *,
                 topics: SequenceTopics = SequenceTopics(),
                 assembly: AssemblyConfig | None = None,
                 problems: ProblemCounter | None = None,
                 ignore_child_frames: Iterable[str] = (), strict: bool = False) -> None:
        self.path = Path(path)
        self.naming = naming
        self.topics = topics
        self.problems = problems if problems is not None else ProblemCounter()
        self.strict = strict
        self._reader = BagReader(self.path, on_truncated='recover')  # reported by events()
        if strict and self._reader.truncation is not None:
            report = self._reader.truncation
            self._reader.close()
            raise BagError(f'--strict: {report.message}; leave out --strict to use the '
                           f'{report.messages_recovered} complete messages before the damage')
        try:
            has_masks = bool(topics.mask) and self.topic_counts.get(topics.mask, 0) > 0
            self.assembly = dataclasses.replace(
                assembly or AssemblyConfig(), mode='replay',
                hand_root_frame=naming.hand_root_frame, use_mask=has_masks,
                max_pending=_NO_LIMIT)
        except BaseException:
            self._reader.close()
            raise
        self.tf = TransformBuffer(cache_time_s=_NO_LIMIT)
        self.assembler = FrameAssembler(self.assembly,
                                        naming.joint_buffer(cache_time_s=_NO_LIMIT), self.tf)
        self._last = LastProblem(self.problems)
        self.inputs = FrameInputs(self.assembler, self._last,
                                  ignore_child_frames=ignore_child_frames)
        self.decoder = FrameDecoder(self._last)
        self.images_read = 0
        self.frames_skipped = 0
        self._rejected: list[SkippedImage] = []

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    @property
    def topic_counts(self) -> dict[str, int]:
        """``{topic: message count}`` of the bag."""
        return {topic: count for topic, (_, count) in self._reader.topics.items()}

    def events(self, initialised: Callable[[int], bool] | None = None, *,
               initial_poses: bool = True, skipped: bool = False
               ) -> Iterator[BagFrame | InitialPose | SkippedImage]:
        """Frames (:class:`BagFrame`) in stamp order and initial poses (:class:`InitialPose`,
        as they come in the bag), interleaved as the bag's log times order them.

        Args:
            initialised: whether a frame at a stamp will have an initial pose (a tracker's);
                replay holds a frame until then (until the data passes its stamp). None:
                frames never wait for one.
            initial_poses: read the initial pose topic.
            skipped: also yield a :class:`SkippedImage` for each image that cannot be used
                (when it is known: at once for one rejected on arrival, e.g. time going
                backwards; when the data passes its stamp for the others).
        Raises:
            BagError: the bag lacks images, camera_info or joint states (a truncated bag's
                readable messages included).
        """
        t = self.topics
        counts = self.topic_counts
        if self._reader.truncation is not None:
            self.problems.report('truncated_bag', self._reader.truncation.message
                                 + '; its readable messages are used')
        for topic, option in ((t.image, 'image_topic'), (t.camera_info, 'camera_info_topic'),
                              (t.joint_states, 'joint_states_topic')):
            if counts.get(topic, 0) == 0:
                raise BagError(f'bag {self.path}: expected messages on {topic}; the bag has '
                               f'{", ".join(sorted(counts)) or "no topic"} (set {option} in '
                               '--params if they are recorded under another name)')
        inputs = self.inputs
        handlers: dict[str, Callable] = {
            t.image: self._on_image,
            t.camera_info: inputs.camera_info,
            t.joint_states: inputs.joint_state,
            t.tf: lambda msg: inputs.tf(msg, is_static=False),
            t.tf_static: lambda msg: inputs.tf(msg, is_static=True),
        }
        if self.assembly.use_mask:
            handlers[t.mask] = inputs.mask
        if initial_poses and t.initial_pose:
            handlers[t.initial_pose] = inputs.initial_pose
        for m in self._reader.messages(list(handlers),
                                       on_truncated='raise' if self.strict else None):
            try:
                msg = m.deserialize()
            except Exception as exc:  # rosbags raises several types for corrupt CDR
                self._last.report('bad_message', f'{m.topic} message at log time '
                                                 f'{m.log_time_ns} ns cannot be decoded: {exc}')
                if m.topic == t.image:  # an image without a stamp to answer: counted
                    self.images_read += 1
                    self.frames_skipped += 1
                continue
            try:
                out = handlers[m.topic](msg)
            except Exception as exc:  # a well-formed CDR message with unusable content
                self._last.report('bad_message', f'{m.topic} message at log time '
                                                 f'{m.log_time_ns} ns rejected: {exc}')
                continue
            if isinstance(out, InitialPose):
                yield out
            if self._rejected:
                rejected, self._rejected = self._rejected, []
                if skipped:
                    yield from rejected
            yield from self._release(self.assembler.pop_ready(initialised=initialised),
                                     skipped)
        yield from self._release(self.assembler.pop_ready(flush=True, initialised=initialised),
                                 skipped)

    def _on_image(self, msg) -> None:
        self.images_read += 1
        before = self._last.reports
        self.inputs.image(msg, time.monotonic_ns())
        if self._last.reports != before:  # rejected on arrival (time backwards, no frame_id)
            self.frames_skipped += 1
            kind, reason = self._last.last
            self._rejected.append(SkippedImage(stamp_to_ns(msg.header.stamp),
                                               str(msg.header.frame_id), kind, reason))

    def _release(self, ready: list, skipped: bool = False
                 ) -> Iterator[BagFrame | SkippedImage]:
        for assembled in ready:
            self.problems.report_frame(assembled)
            if not assembled.usable:
                self.frames_skipped += 1
                if skipped:
                    fatal = next(p for p in assembled.problems if p.fatal)
                    yield SkippedImage(assembled.stamp_ns, assembled.frame_id, fatal.kind,
                                       fatal.message)
                continue
            start = time.monotonic_ns()
            before = self._last.reports
            frame = self.decoder.decode(assembled)
            if frame is None:
                self.frames_skipped += 1
                if skipped:
                    kind, reason = self._last.last if self._last.reports != before \
                        else ('bad_frame', 'the frame cannot be decoded')
                    yield SkippedImage(assembled.stamp_ns, assembled.frame_id, kind, reason)
                continue
            yield BagFrame(frame, assembled.frame_id, assembled.arrival_ns, start,
                           (time.monotonic_ns() - start) / 1e9)


@dataclass(frozen=True, eq=False)
class RecordedSequence:
    """An input bag as per-image frames.

    Attributes:
        path: the bag.
        frames: (N,) one :class:`Frame` per usable image, in stamp order (``q`` in
            ``joint_names`` order).
        joint_names: (J,) the model's joint names.
        camera_frame: the images' frame_id (camera optical frame).
        T_cam_obj_initial: (4, 4) float64 first initial pose in the camera frame, or None.
        images: images in the bag (N plus those skipped).
        problems: problem kind -> count (skipped images and non-fatal problems alike).
    """

    path: Path
    frames: tuple[Frame, ...]
    joint_names: tuple[str, ...]
    camera_frame: str
    T_cam_obj_initial: np.ndarray | None
    images: int = 0
    problems: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def skipped(self) -> int:
        """Images that could not be used."""
        return self.images - len(self.frames)

    @property
    def notes(self) -> tuple[str, ...]:
        """One line per problem kind, e.g. ``'2 early_joint_states'``."""
        return tuple(f'{n} {kind}' for kind, n in sorted(self.problems.items()))

    @property
    def stamps_ns(self) -> np.ndarray:
        """(N,) int64 image stamps."""
        return np.array([f.stamp_ns for f in self.frames], dtype=np.int64)

    @property
    def masks_missing(self) -> int:
        """Number of frames without a mask."""
        return sum(f.mask is None for f in self.frames)


def read_sequence(path: str | Path, naming: HandNaming, *,
                  topics: SequenceTopics = SequenceTopics(),
                  assembly: AssemblyConfig | None = None,
                  problems: ProblemCounter | None = None,
                  strict: bool = False) -> RecordedSequence:
    """Read an input bag into per-image frames, all in memory (module docstring).

    Images whose frame_id is not the first image's are skipped (``other_camera_frame``): one
    sequence, one camera.

    Args:
        path: bag directory or file (MCAP or sqlite3).
        naming: the hand's names on the robot.
        topics: topic names.
        assembly: matching tolerances (see :class:`FrameReader`).
        problems: where problems are counted (a new counter when None).
        strict: a truncated or damaged bag is an error (see :class:`FrameReader`).
    Returns:
        :class:`RecordedSequence`.
    Raises:
        BagError: the bag cannot be read or is truncated, lacks a needed topic, or no image
            of it could be used (the problems are listed).
    """
    frames: list[Frame] = []
    first_pose: InitialPose | None = None
    camera_frame: str | None = None
    with FrameReader(path, naming, topics=topics, assembly=assembly,
                     problems=problems, strict=strict) as reader:
        counter = reader.problems
        for event in reader.events():
            if isinstance(event, InitialPose):
                first_pose = first_pose or event
                continue
            if camera_frame is None:
                camera_frame = event.frame_id
            elif event.frame_id != camera_frame:
                counter.report('other_camera_frame', f'frame {event.frame.stamp_ns} ns skipped: '
                               f'frame_id {event.frame_id!r}, earlier images {camera_frame!r}')
                continue
            frames.append(event.frame)
        images = reader.images_read
        if not frames:
            raise BagError(f'bag {reader.path}: none of its {images} images could be used '
                           f'({counter.summary()}); the warnings above say why: check the '
                           'topic names, joint_prefix / hand_root_frame and the TF tree')
        T_init = None
        if first_pose is not None:
            T_init = first_pose.T_frame_obj
            if first_pose.frame_id and first_pose.frame_id != camera_frame:
                try:
                    T_init = reader.tf.lookup_transform(camera_frame, first_pose.frame_id,
                                                        first_pose.stamp_ns or None) @ T_init
                except TransformError as exc:
                    raise BagError(f'bag {reader.path}: {topics.initial_pose} is in frame '
                                   f'{first_pose.frame_id!r}, which cannot be transformed into '
                                   f'the camera frame {camera_frame!r}: {exc}') from exc
    return RecordedSequence(path=Path(path), frames=tuple(frames),
                            joint_names=naming.joint_names, camera_frame=camera_frame,
                            T_cam_obj_initial=T_init, images=images,
                            problems=dict(counter.counts))
