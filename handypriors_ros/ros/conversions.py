"""Conversions between ROS messages and the core's types: the one module that touches both.

Reading functions (``*_to_numpy``, ``camera_info_to_camera``, ``stamp_to_ns``,
``joint_state_to_arrays``, ``transform_to_core``, ``tf_message_to_core``, ``pose_to_matrix``,
``pose_stamped_to_matrix``, ``covariance_to_numpy``) take rclpy messages and ``rosbags``
message dataclasses alike: they read attributes by name only, and
accept ``data`` as bytes / ``array.array`` (rclpy) or a numpy array (rosbags). Writing
functions build rclpy messages; their message packages are imported when first called, so
reading bags needs no ROS installation.

Images: ``sensor_msgs/Image`` rows are ``step`` bytes apart (``step >= width * channels``,
padding allowed); ``data`` holds exactly ``step * height`` bytes. Only 8-bit encodings are
handled: colour ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8`` (alpha dropped) and masks ``mono8``.

Poses: ``T_a_b`` matrices are (4, 4) float64; quaternions are (x, y, z, w) as in the messages.
Covariances are (6, 6) over (x y z rx ry rz), row-major in PoseWithCovariance (the tracker's
error state is exactly that, camera-frame axes: published as it is). Tracker results become
PoseWithCovarianceStamped, TFMessage (camera -> object at the image stamp) and TrackedObject.

The frame pipeline's two message ends, shared by the tracker node and the bag reader
(:mod:`handypriors_ros.bag.sequence`) so that a message is read, and a bad one counted, the
same way everywhere: :class:`FrameInputs` feeds input messages into a
:class:`~handypriors_ros.core.frames.FrameAssembler` and its buffers; :class:`FrameDecoder` turns
an assembled frame's messages into a :class:`~handypriors_ros.core.frames.Frame`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import cv2
import numpy as np

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.frames import (AssembledFrame, Frame, FrameAssembler, InitialPose,
                                         NonFiniteJointsError, ProblemCounter,
                                         TimeWentBackwardsError)
from handypriors_ros.core.geometry.transform_buffer import StampedTransform, TransformError
from handypriors_ros.core.render.camera import PinholeCamera, Undistorter

if TYPE_CHECKING:  # the tracker's types pull in torch; annotations only
    from handypriors_ros.core.tracking.types import TrackResult

#: Colour encodings image_to_numpy can read: name -> (channels, OpenCV code to RGB or None).
COLOUR_ENCODINGS = {'rgb8': (3, None), 'bgr8': (3, cv2.COLOR_BGR2RGB),
                    'rgba8': (4, cv2.COLOR_RGBA2RGB), 'bgra8': (4, cv2.COLOR_BGRA2RGB)}
#: Single-channel 8-bit encodings mask_to_numpy reads (``8UC1`` is mono8 without the name).
MASK_ENCODINGS = ('mono8', '8UC1')
_WRITE_CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}
_NS_PER_S = 1_000_000_000
_DEFAULT_D_SIZE = {'plumb_bob': 5, 'rational_polynomial': 8, 'equidistant': 4}


# --------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------
def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time`` (rclpy or rosbags): ``sec * 1e9 + nanosec``.
    """
    try:
        sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    except AttributeError as exc:
        raise InputError(f'stamp: expected a builtin_interfaces/Time with sec and nanosec, got '
                         f'{type(stamp).__name__}') from exc
    return sec * _NS_PER_S + nanosec


def ns_to_stamp(ns: int) -> Any:
    """An rclpy ``builtin_interfaces/msg/Time`` for integer nanoseconds (negative allowed).

    Raises:
        InputError: ``ns`` is not an integer or its seconds do not fit Time.sec (int32).
    """
    from builtin_interfaces.msg import Time

    if isinstance(ns, bool) or not isinstance(ns, (int, np.integer)):
        raise InputError(f'ns: expected integer nanoseconds, got {type(ns).__name__}')
    sec, nanosec = divmod(int(ns), _NS_PER_S)
    if not -2**31 <= sec < 2**31:
        raise InputError(f'ns: expected a time within int32 seconds, got {int(ns)} ns')
    return Time(sec=sec, nanosec=nanosec)


def _stamp_of(stamp: Any) -> Any:
    """A Time message for ``stamp`` given as a Time message or integer nanoseconds."""
    if isinstance(stamp, (int, np.integer)) and not isinstance(stamp, bool):
        return ns_to_stamp(int(stamp))
    return ns_to_stamp(stamp_to_ns(stamp))


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
def _data_bytes(msg: Any) -> np.ndarray:
    """``msg.data`` as a flat uint8 array, without a copy where the buffer allows it."""
    data = msg.data
    if isinstance(data, np.ndarray):  # rosbags
        if data.dtype != np.uint8:
            raise InputError(f'image data: expected uint8 bytes, got dtype {data.dtype}')
        return data.reshape(-1)
    try:  # bytes, bytearray, array.array('B') (rclpy), memoryview
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _rows(msg: Any, channels: int) -> np.ndarray:
    """(H, W * channels) uint8 view of the pixels, after checking sizes, step and data length.
    """
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise InputError(f'image size: expected height and width > 0, got {width}x{height} '
                         f'(width x height)')
    row_bytes = width * channels
    if step < row_bytes:
        raise InputError(f'image step: expected >= width * channels = {row_bytes} bytes for '
                         f'{width}x{height} {msg.encoding}, got {step}')
    data = _data_bytes(msg)
    if data.size != step * height:
        raise InputError(f'image data: expected step * height = {step} * {height} = '
                         f'{step * height} bytes for {width}x{height} {msg.encoding}, '
                         f'got {data.size}')
    return data.reshape(height, step)[:, :row_bytes]


def image_to_numpy(msg: Any, *, expected: Sequence[str] = ('rgb8', 'bgr8')) -> np.ndarray:
    """RGB pixels of a colour ``sensor_msgs/Image`` (rclpy or rosbags).

    ``rgb8`` comes back as a view of ``msg.data`` (no copy; read-only when the buffer is, e.g.
    bytes; rows keep the message's padding as a stride); ``bgr8``, ``rgba8`` and ``bgra8``
    are converted into a new contiguous array.

    Args:
        msg: the image.
        expected: encodings to accept, a subset of :data:`COLOUR_ENCODINGS`.
    Returns:
        (H, W, 3) uint8, RGB.
    Raises:
        InputError: an encoding not in ``expected`` (naming it and the accepted ones), or
            sizes, step and data length that disagree.
    """
    unknown = [e for e in expected if e not in COLOUR_ENCODINGS]
    if unknown:
        raise InputError(f'expected: encodings {unknown} cannot be read as colour; choose from '
                         f'{list(COLOUR_ENCODINGS)}')
    encoding = msg.encoding
    if encoding not in expected:
        raise InputError(f'image encoding: expected one of {list(expected)}, got {encoding!r}')
    channels, to_rgb = COLOUR_ENCODINGS[encoding]
    pixels = _rows(msg, channels).reshape(int(msg.height), int(msg.width), channels)
    if to_rgb is None:
        return pixels
    # OpenCV: 0.07 ms for 640x480 bgr8 where numpy's reversed-channel copy takes ~6 ms here.
    return cv2.cvtColor(pixels, to_rgb)


def mask_to_numpy(msg: Any) -> np.ndarray:
    """Boolean mask of a ``mono8`` ``sensor_msgs/Image`` (rclpy or rosbags): value > 127.

    Returns:
        (H, W) bool, a new array.
    Raises:
        InputError: an encoding other than :data:`MASK_ENCODINGS`, or inconsistent sizes.
    """
    if msg.encoding not in MASK_ENCODINGS:
        raise InputError(f'mask encoding: expected one of {list(MASK_ENCODINGS)}, '
                         f'got {msg.encoding!r}')
    return _rows(msg, 1) > 127


def numpy_to_image(arr: np.ndarray, encoding: str, stamp: Any, frame_id: str) -> Any:
    """An rclpy ``sensor_msgs/msg/Image`` holding ``arr`` (packed rows, little endian).

    Args:
        arr: (H, W, 3) uint8 for ``rgb8`` / ``bgr8``, (H, W, 4) uint8 for ``rgba8`` /
            ``bgra8``, (H, W) uint8 or bool (True -> 255) for ``mono8``. The channel order
            must already be the encoding's.
        encoding: one of ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``.
        stamp: header stamp, a ``builtin_interfaces/Time`` or integer nanoseconds.
        frame_id: header frame id (the camera optical frame).
    Raises:
        InputError: unknown encoding, or a shape or dtype that does not fit it.
    """
    from sensor_msgs.msg import Image

    if encoding not in _WRITE_CHANNELS:
        raise InputError(f'encoding: expected one of {list(_WRITE_CHANNELS)}, got {encoding!r}')
    channels = _WRITE_CHANNELS[encoding]
    if not isinstance(arr, np.ndarray):
        raise InputError(f'arr: expected a numpy array, got {type(arr).__name__}')
    if encoding == 'mono8' and arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * np.uint8(255)
    shape = '(H, W)' if channels == 1 else f'(H, W, {channels})'
    ok_shape = arr.ndim == 2 if channels == 1 else (arr.ndim == 3 and arr.shape[2] == channels)
    if not ok_shape or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f'arr: expected shape {shape} for {encoding}, got {arr.shape}')
    if arr.dtype != np.uint8:
        raise InputError(f'arr: expected dtype uint8 for {encoding}, got {arr.dtype}')
    height, width = arr.shape[:2]
    msg = Image()
    msg.header.stamp = _stamp_of(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(height), int(width)
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(width * channels)
    msg.data = arr.tobytes()  # PLATFORM.md: bytes are fast; a numpy array is ~1000x slower
    return msg


# --------------------------------------------------------------------------------------------
# Camera info
# --------------------------------------------------------------------------------------------
def camera_info_to_camera(msg: Any, *, image_size: tuple[int, int] | None = None
                          ) -> tuple[PinholeCamera, Undistorter]:
    """The pinhole camera of the rectified image and the undistorter of a CameraInfo.

    Reads K, P, D, R, width, height and distortion_model (rclpy or rosbags message). An
    all-zero R (a default-constructed message) means identity. Binning and a region of
    interest smaller than the image are not supported.

    Args:
        msg: ``sensor_msgs/CameraInfo``.
        image_size: ``(width, height)`` of the images this camera_info goes with; checked
            when given.
    Returns:
        ``(camera, undistorter)`` (see :class:`Undistorter`).
    Raises:
        InputError: naming the field: zero focal length, bad sizes, a distortion model the
            core cannot undo, binning or ROI, or an image size that differs.
    """
    width, height = int(msg.width), int(msg.height)
    for name in ('binning_x', 'binning_y'):
        value = int(getattr(msg, name))
        if value > 1:
            raise InputError(f'camera_info {name}: expected 0 or 1 (no binning), got {value}')
    roi = msg.roi
    roi_full = (int(roi.width) == 0 and int(roi.height) == 0) or (
        int(roi.x_offset) == 0 and int(roi.y_offset) == 0
        and (int(roi.width), int(roi.height)) == (width, height))
    if not roi_full:
        raise InputError(f'camera_info roi: expected the full image (or an empty ROI), got '
                         f'{int(roi.width)}x{int(roi.height)} at '
                         f'({int(roi.x_offset)}, {int(roi.y_offset)})')
    R = np.asarray(msg.r, dtype=np.float64)
    R = None if not np.any(R) else R
    K, P, D = np.asarray(msg.k), np.asarray(msg.p), np.asarray(msg.d)
    undistorter = Undistorter.from_camera_info(K, P, width, height, msg.distortion_model, D,
                                               R=R)
    camera = undistorter.camera
    if image_size is not None:
        camera.check_image_size(image_size[0], image_size[1], 'image')
    return camera, undistorter


def camera_to_camera_info(camera: PinholeCamera, stamp: Any, frame_id: str,
                          distortion_model: str = 'plumb_bob',
                          D: Sequence[float] | None = None) -> Any:
    """An rclpy ``sensor_msgs/msg/CameraInfo`` for a camera: K from its intrinsics, P = [K | 0],
    R = identity, no binning, full ROI.

    Args:
        camera: intrinsics and size of the raw image.
        stamp: header stamp, a ``builtin_interfaces/Time`` or integer nanoseconds.
        frame_id: header frame id.
        distortion_model: ``plumb_bob`` (default), ``rational_polynomial`` or ``equidistant``.
        D: distortion coefficients; ``None`` gives zeros of the model's usual length
            (5, 8 and 4).
    Raises:
        InputError: a model/coefficient combination the core would reject when reading it.
    """
    from sensor_msgs.msg import CameraInfo

    if not isinstance(camera, PinholeCamera):
        raise InputError(f'camera: expected a PinholeCamera, got {type(camera).__name__}')
    if D is None:
        if distortion_model not in _DEFAULT_D_SIZE:
            raise InputError(f'distortion_model: expected one of {list(_DEFAULT_D_SIZE)}, got '
                             f'{distortion_model!r}')
        D = np.zeros(_DEFAULT_D_SIZE[distortion_model])
    K = camera.K.reshape(-1)
    P = np.hstack([camera.K, np.zeros((3, 1))]).reshape(-1)
    D_arr = np.asarray(D, dtype=np.float64).reshape(-1)
    # Validate as a reader will: the same checks, the same messages.
    PinholeCamera.from_camera_info(K, P, camera.width, camera.height, distortion_model, D_arr)
    msg = CameraInfo()
    msg.header.stamp = _stamp_of(stamp)
    msg.header.frame_id = frame_id
    msg.width, msg.height = camera.width, camera.height
    msg.distortion_model = distortion_model
    msg.d = D_arr.tolist()
    msg.k = K
    msg.r = np.eye(3).reshape(-1)
    msg.p = P
    return msg


# --------------------------------------------------------------------------------------------
# Joint states
# --------------------------------------------------------------------------------------------
def joint_state_to_arrays(msg: Any) -> tuple[int, tuple[str, ...], np.ndarray]:
    """Stamp, names and positions of a ``sensor_msgs/JointState`` (rclpy or rosbags).

    Returns:
        ``(stamp_ns, names, positions)``: names (N,) as str, positions (N,) float64 [rad or m]
        (NaN passes through: the joint-state buffer names the joints it rejects).
    Raises:
        InputError: names and positions of different lengths.
    """
    names = tuple(str(n) for n in msg.name)
    positions = np.asarray(msg.position, dtype=np.float64).reshape(-1)
    if positions.shape[0] != len(names):
        raise InputError(f'joint state: expected one position per name ({len(names)}), got '
                         f'{positions.shape[0]}')
    return stamp_to_ns(msg.header.stamp), names, positions


def arrays_to_joint_state(stamp: Any, names: Sequence[str],
                          positions: Sequence[float] | np.ndarray) -> Any:
    """An rclpy ``sensor_msgs/msg/JointState`` with positions only.

    Args:
        stamp: header stamp, a ``builtin_interfaces/Time`` or integer nanoseconds.
        names: (N,) joint names; positions: (N,) values.
    """
    from sensor_msgs.msg import JointState

    values = np.asarray(positions, dtype=np.float64).reshape(-1)
    if values.shape[0] != len(names):
        raise InputError(f'positions: expected {len(names)} values (one per name), got '
                         f'{values.shape[0]}')
    msg = JointState()
    msg.header.stamp = _stamp_of(stamp)
    msg.name = [str(n) for n in names]
    msg.position = values.tolist()
    return msg


# --------------------------------------------------------------------------------------------
# Transforms and poses
# --------------------------------------------------------------------------------------------
def transform_to_core(msg: Any) -> StampedTransform:
    """A ``geometry_msgs/TransformStamped`` (rclpy or rosbags) as a core StampedTransform
    (``T_parent_child`` with parent = header.frame_id, child = child_frame_id).

    Raises:
        InputError: empty frame ids, non-finite values, a zero quaternion, a negative stamp.
    """
    t, r = msg.transform.translation, msg.transform.rotation
    return StampedTransform(msg.header.frame_id, msg.child_frame_id,
                            stamp_to_ns(msg.header.stamp), [t.x, t.y, t.z],
                            [r.x, r.y, r.z, r.w])


def tf_message_to_core(msg: Any) -> list[StampedTransform]:
    """Every transform of a ``tf2_msgs/TFMessage`` (rclpy or rosbags).

    Raises:
        InputError: naming the first bad transform's index and frames.
    """
    out = []
    for i, tf in enumerate(msg.transforms):
        try:
            out.append(transform_to_core(tf))
        except InputError as exc:
            raise InputError(f'transforms[{i}] ({tf.header.frame_id!r} -> '
                             f'{tf.child_frame_id!r}): {exc}') from exc
    return out


def core_to_transform(tf: StampedTransform) -> Any:
    """An rclpy ``geometry_msgs/msg/TransformStamped`` for a core StampedTransform."""
    from geometry_msgs.msg import TransformStamped

    if not isinstance(tf, StampedTransform):
        raise InputError(f'tf: expected a StampedTransform, got {type(tf).__name__}')
    msg = TransformStamped()
    msg.header.stamp = ns_to_stamp(tf.stamp_ns)
    msg.header.frame_id = tf.parent_frame
    msg.child_frame_id = tf.child_frame
    t, q = tf.translation, tf.rotation_xyzw
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (
        float(t[0]), float(t[1]), float(t[2]))
    (msg.transform.rotation.x, msg.transform.rotation.y, msg.transform.rotation.z,
     msg.transform.rotation.w) = (float(q[0]), float(q[1]), float(q[2]), float(q[3]))
    return msg


def core_to_tf_message(transforms: Sequence[StampedTransform]) -> Any:
    """An rclpy ``tf2_msgs/msg/TFMessage`` holding the given transforms."""
    from tf2_msgs.msg import TFMessage

    return TFMessage(transforms=[core_to_transform(tf) for tf in transforms])


def pose_to_matrix(pose: Any) -> np.ndarray:
    """(4, 4) float64 matrix of a ``geometry_msgs/Pose`` (rclpy or rosbags); the quaternion is
    normalised.

    Raises:
        InputError: non-finite values or a zero quaternion.
    """
    p, o = pose.position, pose.orientation
    t = np.array([p.x, p.y, p.z], dtype=np.float64)
    q = np.array([o.x, o.y, o.z, o.w], dtype=np.float64)
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise InputError(f'pose: expected finite values, got position {t.tolist()} '
                         f'orientation (x y z w) {q.tolist()}')
    norm = float(np.linalg.norm(q))
    if norm < 1e-9:
        raise InputError(f'pose: expected a non-zero orientation quaternion, got {q.tolist()}')
    return StampedTransform('pose', 'child', 0, t, q / norm).matrix()


def matrix_to_pose(T: np.ndarray) -> Any:
    """An rclpy ``geometry_msgs/msg/Pose`` of a (4, 4) rigid transform.

    Raises:
        InputError: not a finite (4, 4) matrix.
    """
    from geometry_msgs.msg import Pose

    tf = StampedTransform.from_matrix('pose', 'child', 0, T)
    msg = Pose()
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in tf.translation)
    (msg.orientation.x, msg.orientation.y, msg.orientation.z,
     msg.orientation.w) = (float(v) for v in tf.rotation_xyzw)
    return msg


def pose_stamped_to_matrix(msg: Any) -> tuple[int, str, np.ndarray]:
    """``(stamp_ns, frame_id, T_frame_obj)`` of a ``geometry_msgs/PoseStamped`` (rclpy or
    rosbags).

    Raises:
        InputError: as :func:`pose_to_matrix`.
    """
    return stamp_to_ns(msg.header.stamp), str(msg.header.frame_id), pose_to_matrix(msg.pose)


def covariance_to_numpy(covariance: Any) -> np.ndarray:
    """(6, 6) float64 of a row-major 36-element covariance (x y z rx ry rz).

    Raises:
        InputError: not 36 values.
    """
    C = np.asarray(covariance, dtype=np.float64).reshape(-1)
    if C.shape != (36,):
        raise InputError(f'covariance: expected 36 values (6x6 row-major), got {C.shape[0]}')
    return C.reshape(6, 6)


def numpy_to_covariance(P: np.ndarray) -> np.ndarray:
    """The row-major (36,) float64 of a (6, 6) covariance, for PoseWithCovariance.covariance.

    Raises:
        InputError: not a finite (6, 6) array.
    """
    P = np.asarray(P, dtype=np.float64)
    if P.shape != (6, 6) or not np.all(np.isfinite(P)):
        raise InputError(f'P: expected a finite (6, 6) covariance, got shape {P.shape}')
    return np.ascontiguousarray(P).reshape(36)


# --------------------------------------------------------------------------------------------
# Tracker results
# --------------------------------------------------------------------------------------------
def track_result_to_pose(result: TrackResult, frame_id: str) -> Any:
    """An rclpy ``geometry_msgs/msg/PoseWithCovarianceStamped``: T_cam_obj and its (6, 6)
    covariance, stamped with the image stamp, in the camera frame ``frame_id``."""
    from geometry_msgs.msg import PoseWithCovarianceStamped

    msg = PoseWithCovarianceStamped()
    msg.header.stamp = ns_to_stamp(result.stamp_ns)
    msg.header.frame_id = frame_id
    msg.pose.pose = matrix_to_pose(result.T_cam_obj)
    msg.pose.covariance = numpy_to_covariance(result.covariance)
    return msg


def track_result_to_tf(result: TrackResult, frame_id: str, child_frame_id: str) -> Any:
    """An rclpy ``tf2_msgs/msg/TFMessage`` with the one transform ``frame_id`` (camera) ->
    ``child_frame_id`` (object) at the image stamp."""
    return core_to_tf_message([StampedTransform.from_matrix(
        frame_id, child_frame_id, result.stamp_ns, result.T_cam_obj)])


def _point(msg_type: Any, xyz: Sequence[float]) -> Any:
    return msg_type(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def track_result_to_tracked_object(result: TrackResult, frame_id: str, object_id: str, *,
                                   latency_s: Mapping[str, float] | None = None) -> Any:
    """An rclpy ``handypriors_ros/msg/TrackedObject`` of a tracker result.

    Args:
        result: the tracker's output for one image.
        frame_id: the camera optical frame (header); object_id: the object frame's name.
        latency_s: stage -> seconds; replaces ``result.latency_s`` when given (the node adds
            its own stages: input, publish, and "total" from image arrival to publication).
    Returns:
        The message: pose + covariance, status and reason, NIS of the accepted updates (NaN
        when none was accepted), contacts, one residual per update, per-stage latency.
    """
    from geometry_msgs.msg import Point, Vector3

    from handypriors_ros.msg import (ContactPoint, MeasurementResidual, StageLatency,
                                     TrackedObject)

    msg = TrackedObject()
    msg.header.stamp = ns_to_stamp(result.stamp_ns)
    msg.header.frame_id = frame_id
    msg.object_id = object_id
    msg.pose.pose = matrix_to_pose(result.T_cam_obj)
    msg.pose.covariance = numpy_to_covariance(result.covariance)
    msg.status = int(result.status)
    msg.status_reason = result.status_reason
    accepted = [u.nis for u in result.updates if u.accepted]
    msg.nis = float(sum(accepted)) if accepted else float('nan')
    c = result.contacts
    msg.contacts = [
        ContactPoint(hand_link=str(c.link_names[i]), point_on_hand=_point(Point, c.points_hand[i]),
                     point_on_object=_point(Point, c.points_object[i]),
                     normal=_point(Vector3, c.normals[i]),
                     signed_distance=float(c.signed_distance[i]))
        for i in range(c.count)]
    msg.residuals = [MeasurementResidual(name=u.name, dimension=int(u.dimension),
                                         rms=float(u.rms), mahalanobis_sq=float(u.nis),
                                         accepted=bool(u.accepted))
                     for u in result.updates]
    stages = result.latency_s if latency_s is None else latency_s
    msg.latency = [StageLatency(stage=str(k), seconds=float(v)) for k, v in stages.items()]
    return msg


# --------------------------------------------------------------------------------------------
# The frame pipeline's message ends
# --------------------------------------------------------------------------------------------
class FrameInputs:
    """Input messages (rclpy or rosbags) into a frame assembler, its joint-state buffer and its
    transform buffer; a message that cannot be used is reported and dropped, never raised.

    Problem kinds: ``time_backwards`` and ``bad_image`` (images), ``nan_joints``,
    ``time_backwards`` and ``bad_joint_state`` (joint states), ``bad_tf`` (each transform of a
    TFMessage on its own), ``bad_initial_pose``.

    Args:
        assembler: the assembler (its ``joints`` and ``tf`` buffers are filled too).
        problems: where problems are counted.
        ignore_child_frames: transforms to these child frames are not inputs (the tracker's
            own output, ``handypriors_object``, recorded or looped back on /tf).
    """

    def __init__(self, assembler: FrameAssembler, problems: ProblemCounter, *,
                 ignore_child_frames: Iterable[str] = ()) -> None:
        self.assembler = assembler
        self.problems = problems
        self.ignore_child_frames = frozenset(f.lstrip('/') for f in ignore_child_frames)
        self.static_transforms: dict[str, StampedTransform] = {}  # child -> latest static

    def image(self, msg: Any, arrival_ns: int) -> None:
        """A colour image: held by the assembler until its inputs are there."""
        try:
            self.assembler.add_image(stamp_to_ns(msg.header.stamp), msg.header.frame_id, msg,
                                     arrival_ns)
        except TimeWentBackwardsError as exc:
            self.problems.report('time_backwards', f'image rejected: {exc}')
        except InputError as exc:
            self.problems.report('bad_image', f'image rejected: {exc}')

    def camera_info(self, msg: Any) -> None:
        """A camera_info, matched with the image of the same stamp (decoded with the frame)."""
        self.assembler.add_camera_info(stamp_to_ns(msg.header.stamp), msg)

    def mask(self, msg: Any, arrival_ns: int | None = None) -> None:
        """An object mask, matched with the image of the same stamp (decoded with the frame);
        ``arrival_ns`` (monotonic, live) times it for the learned mask wait."""
        self.assembler.add_mask(stamp_to_ns(msg.header.stamp), msg, arrival_ns)

    def joint_state(self, msg: Any) -> bool:
        """A joint state of the hand. Returns whether it was stored."""
        try:
            stamp, names, positions = joint_state_to_arrays(msg)
            self.assembler.joints.add(stamp, names, positions)
        except NonFiniteJointsError as exc:
            self.problems.report('nan_joints', str(exc))
            return False
        except TimeWentBackwardsError as exc:
            self.problems.report('time_backwards', str(exc))
            return False
        except InputError as exc:
            self.problems.report('bad_joint_state', f'joint state rejected: {exc}')
            return False
        self.assembler.advance_data_time(stamp)
        return True

    def tf(self, msg: Any, *, is_static: bool) -> None:
        """A TFMessage of /tf or (``is_static``) /tf_static; data time advances to the newest
        dynamic transform."""
        newest = None
        buffer = self.assembler.tf
        for ros_tf in msg.transforms:
            try:
                tf = transform_to_core(ros_tf)
                if tf.child_frame in self.ignore_child_frames:
                    continue
                buffer.set_transform(tf, is_static=is_static,
                                     authority='tf_static' if is_static else 'tf')
            except (InputError, TransformError) as exc:
                self.problems.report('bad_tf', f'transform {ros_tf.header.frame_id!r} -> '
                                               f'{ros_tf.child_frame_id!r} rejected: {exc}')
                continue
            if is_static:
                self.static_transforms[tf.child_frame] = tf
            else:
                newest = tf.stamp_ns if newest is None else max(newest, tf.stamp_ns)
        if newest is not None:
            self.assembler.advance_data_time(newest)

    def initial_pose(self, msg: Any) -> InitialPose | None:
        """A ``geometry_msgs/PoseStamped`` initial pose, or None (reported) when unusable."""
        try:
            stamp, frame_id, T = pose_stamped_to_matrix(msg)
            return InitialPose(stamp, frame_id, T)
        except InputError as exc:
            self.problems.report('bad_initial_pose', f'initial pose rejected: {exc}')
            return None

    def restore_static(self) -> None:
        """Put the static transforms received so far back into the (cleared) transform buffer."""
        for tf in self.static_transforms.values():
            self.assembler.tf.set_transform(tf, is_static=True, authority='tf_static')


class FrameDecoder:
    """An assembled frame's messages as a :class:`~handypriors_ros.core.frames.Frame`: the image
    (RGB) and its mask undistorted with the camera_info's distortion, the camera of the
    undistorted image (cached while the camera_info stays the same), the joints and hand root
    pose found by the assembler.

    A frame whose image or camera_info cannot be read is reported (``bad_image``,
    ``bad_camera_info``) and skipped; a bad mask only loses the mask (``bad_mask``).

    Args:
        problems: where problems are counted.
    """

    def __init__(self, problems: ProblemCounter) -> None:
        self.problems = problems
        self._camera_key: tuple | None = None
        self._camera: tuple[PinholeCamera, Undistorter] | None = None

    def decode(self, frame: AssembledFrame) -> Frame | None:
        """The frame, or None when it was skipped (reported).

        Args:
            frame: a usable assembled frame (joints and ``T_cam_base`` present).
        """
        t = frame.stamp_ns
        if not frame.usable:
            raise InputError(f'frame: expected a usable assembled frame, got one with problems '
                             f'{[p.kind for p in frame.problems if p.fatal]} at {t} ns')
        try:
            rgb = image_to_numpy(frame.image)
        except InputError as exc:
            self.problems.report('bad_image', f'frame {t} ns skipped: {exc}')
            return None
        h, w = rgb.shape[:2]
        try:
            camera, undistorter = self.camera_for(frame.camera_info)
            camera.check_image_size(w, h, 'image')
        except InputError as exc:
            self.problems.report('bad_camera_info', f'frame {t} ns skipped: camera_info: {exc}')
            return None
        mask = None if frame.mask is None else self.decode_mask(frame.mask, t, (h, w),
                                                                undistorter)
        if not undistorter.is_identity:
            rgb = undistorter.undistort_image(rgb)
        return Frame(stamp_ns=t, rgb=np.ascontiguousarray(rgb), camera=camera,
                     q=np.asarray(frame.joints.q, dtype=np.float64),
                     T_cam_base=np.asarray(frame.T_cam_base, dtype=np.float64), mask=mask)

    def decode_mask(self, msg: Any, stamp_ns: int, size_hw: tuple[int, int],
                    undistorter: Undistorter) -> np.ndarray | None:
        """(H, W) bool: a mask message of the image of ``stamp_ns`` (``size_hw`` its size),
        undistorted like it; None, reported (``bad_mask``), when it cannot be used."""
        h, w = size_hw
        try:
            mask = mask_to_numpy(msg)
            if mask.shape != (h, w):
                raise InputError(f'mask size: expected {w}x{h} like the image, got '
                                 f'{mask.shape[1]}x{mask.shape[0]}')
        except InputError as exc:
            self.problems.report('bad_mask', f'frame {stamp_ns} ns: mask ignored: {exc}')
            return None
        if not undistorter.is_identity:
            mask = undistorter.undistort_mask(mask.astype(np.uint8)) > 0
        return mask

    def camera_for(self, info: Any) -> tuple[PinholeCamera, Undistorter]:
        """The camera and undistorter of a camera_info, cached while it stays the same.

        Raises:
            InputError: see :func:`camera_info_to_camera`.
        """
        key = (int(info.width), int(info.height), str(info.distortion_model),
               tuple(np.asarray(info.k).tolist()), tuple(np.asarray(info.p).tolist()),
               tuple(np.asarray(info.d).tolist()), tuple(np.asarray(info.r).tolist()),
               int(info.binning_x), int(info.binning_y), int(info.roi.x_offset),
               int(info.roi.y_offset), int(info.roi.width), int(info.roi.height))
        if key != self._camera_key:
            self._camera = camera_info_to_camera(info)
            self._camera_key = key
        return self._camera
