"""RealSense colour camera driver: rgb8 images and camera_info, live or from a recording.

Two parts:
- :class:`RealSenseSource` (pure Python, pyrealsense2, no rclpy): opens a live device or plays
  back a RealSense recording (``.db3`` rosbag2 or ``.bag``) through ``rs.pipeline``, and hands
  out :class:`ColorFrame` s (RGB copies, device timestamps).
- :class:`RealSenseNode` (thin): parameters -> :class:`RealSenseNodeConfig`, a source, two
  publishers and a reader thread that stamps, converts and publishes each frame.

Topics (like realsense2_camera 4.x, whose launch files run node ``camera`` in namespace
``camera``): ``<namespace>/<camera_name>/color/image_raw`` and ``.../color/camera_info``,
i.e. ``/camera/camera/color/...`` by default. Change the namespace with ``-r __ns:=/name``.

Stamps: each frame's device timestamp (ms) is mapped to ROS time (:class:`FrameStamper`):
- the device time as it is, when its domain is the host clock (``global_time`` /
  ``system_time``, live D400 default) and it lies within 1 s of the node clock at arrival
  (realsense2_camera does the same);
- otherwise (``hardware_clock``, recordings, a node on simulated time): the node clock at the
  first frame's arrival plus the device time elapsed since that frame, so the recorded or
  hardware spacing of frames is kept; re-anchored if the device time goes backwards.
Stamps are strictly increasing: a stamp not after the previous one becomes previous + 1 ns.

Distortion (:func:`camera_info_fields`): brown_conrady -> plumb_bob (same 5 coefficients,
k1 k2 p1 p2 k3); modified_brown_conrady and inverse_brown_conrady -> plumb_bob with a logged
note (an approximation when the coefficients are not zero, as in realsense2_camera);
kannala_brandt4 -> equidistant (4 coefficients); none -> plumb_bob with zeros. K and P take
fx, fy, ppx, ppy as they are (librealsense and OpenCV both put pixel centres at integers).

Playback: ``playback_realtime`` true paces frames as recorded (a slow reader misses some, like
a camera); false reads and publishes every frame as fast as librealsense plays it (tests, quick
looks; a subscriber slower than that misses frames from its keep-last queue: offline
processing of every frame is ``handypriors track BAG``'s job). ``playback_wait_for_subscribers``
holds the playback until that many subscribers listen to both topics, then 0.5 s more: the
publisher sees a subscription before the subscriber has matched the publisher, and samples
sent in between are dropped by the subscriber and only repaired at Fast DDS's next heartbeat
(up to 3 s later; measured here). At the end of the recording the node logs and exits 0.
"""
from __future__ import annotations

import os
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Optional

# Import order matters. pyrealsense2 2.59 carries its own Fast DDS, whose singletons are
# STB_GNU_UNIQUE symbols: whichever library loads first defines them for the whole process.
# Importing rclpy first loads ROS 2's libfastdds first; the other order made every process
# that created a node crash at exit (double free in exit handlers), measured here.
if 'pyrealsense2' in sys.modules and 'rclpy' not in sys.modules:
    warnings.warn('pyrealsense2 was imported before rclpy: ROS 2 nodes in this process may '
                  'crash at exit; import rclpy first', RuntimeWarning, stacklevel=2)
import rclpy  # noqa: I001  (before pyrealsense2, see above)
import cv2
import numpy as np
import pyrealsense2 as rs
from rcl_interfaces.msg import (IntegerRange, ParameterDescriptor, ParameterType,
                                SetParametersResult)
from rclpy.node import Node
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, Image

from handypriors_ros.ros.spin import run_node
from handypriors_ros.core.errors import HandyPriorsError, InputError
from handypriors_ros.core.render.camera import PinholeCamera
from handypriors_ros.ros import dds
from handypriors_ros.ros.conversions import camera_to_camera_info, numpy_to_image
from handypriors_ros.ros.qos import image_qos

NO_DEVICE_MESSAGE = ('no RealSense device found (rs.context().query_devices() is empty); '
                     'connect one or set playback_file')
_NS_PER_MS = 1_000_000
_DISCOVERY_SETTLE_S = 0.5  # after the subscriber count is reached (module docstring)
_HOST_DOMAINS = (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time)


class RealSenseError(HandyPriorsError):
    """The device or recording cannot be opened or read; the message says which and why."""


class DeviceNotFoundError(RealSenseError):
    """No RealSense device (or none with the requested serial number) is attached."""


class EndOfPlayback(Exception):
    """The recording has been played to its end (not an error)."""


# --------------------------------------------------------------------------------------------
# Pure parts: configuration, intrinsics -> camera_info fields, stamps, exposure units
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceConfig:
    """What :class:`RealSenseSource` opens.

    Attributes:
        serial_no: device serial number; '' = the first device found.
        width, height: colour stream size [px] (live only; a recording has its own).
        fps: colour frame rate [Hz] (live only).
        exposure_us: colour exposure time [µs]; -1 = auto exposure (live only).
        playback_file: a RealSense recording to play instead of a device; '' = live.
        playback_realtime: play at the recorded pace (True) or as fast as frames are read.
    """

    serial_no: str = ''
    width: int = 640
    height: int = 480
    fps: int = 30
    exposure_us: int = -1
    playback_file: str = ''
    playback_realtime: bool = True


@dataclass(frozen=True)
class ColorIntrinsics:
    """The colour stream as librealsense describes it.

    Attributes:
        width, height: [px].
        fx, fy, ppx, ppy: focal lengths and principal point [px].
        model: ``rs.distortion`` member name, e.g. ``'brown_conrady'``.
        coeffs: (5,) distortion coefficients in librealsense's order.
        fps: frame rate [Hz].
        format: ``rs.format`` member name of the stream, e.g. ``'rgb8'``.
    """

    width: int
    height: int
    fx: float
    fy: float
    ppx: float
    ppy: float
    model: str
    coeffs: tuple[float, ...]
    fps: int
    format: str


@dataclass(frozen=True)
class ColorFrame:
    """One colour frame, copied out of librealsense.

    Attributes:
        rgb: (H, W, 3) uint8 RGB.
        timestamp_ms: device timestamp [ms] in its domain.
        host_synced: the timestamp domain is the host clock (global or system time).
        frame_number: the device's frame counter.
    """

    rgb: np.ndarray
    timestamp_ms: float
    host_synced: bool
    frame_number: int


def camera_info_fields(intrinsics: ColorIntrinsics
                       ) -> tuple[PinholeCamera, str, np.ndarray, Optional[str]]:
    """CameraInfo content for a colour stream (mapping in the module docstring).

    Returns:
        ``(camera, distortion_model, D, note)``: the raw image's pinhole intrinsics, the
        CameraInfo distortion model, its coefficients (float64) and a note to log when the
        mapping is approximate (else None).
    Raises:
        RealSenseError: a distortion model CameraInfo cannot express (ftheta).
    """
    camera = PinholeCamera(fx=intrinsics.fx, fy=intrinsics.fy, cx=intrinsics.ppx,
                           cy=intrinsics.ppy, width=intrinsics.width, height=intrinsics.height)
    coeffs = np.asarray(intrinsics.coeffs, dtype=np.float64)
    model = intrinsics.model
    if model == 'kannala_brandt4':
        return camera, 'equidistant', coeffs[:4].copy(), None
    if model == 'none' or not np.any(coeffs[:5]):
        return camera, 'plumb_bob', np.zeros(5), None
    if model == 'brown_conrady':
        return camera, 'plumb_bob', coeffs[:5].copy(), None
    if model in ('modified_brown_conrady', 'inverse_brown_conrady'):
        note = (f'the colour stream uses librealsense\'s {model} distortion; published as '
                f'plumb_bob with the same coefficients {coeffs[:5].tolist()}, an approximation '
                f'(as realsense2_camera does)')
        return camera, 'plumb_bob', coeffs[:5].copy(), note
    raise RealSenseError(f'distortion model {model!r} of the colour stream has no '
                         f'sensor_msgs/CameraInfo equivalent')


class FrameStamper:
    """Maps device timestamps to strictly increasing ROS stamps (policy: module docstring).

    Pure: the caller passes the node clock's time at the frame's arrival.
    """

    #: Largest distance [ns] between a host-synced device time and the node clock for the
    #: device time to be used as it is.
    HOST_SYNC_TOLERANCE_NS = 1_000_000_000

    def __init__(self) -> None:
        self._offset_ns: Optional[int] = None  # ROS time - device time, anchored mode
        self._last_device_ns: Optional[int] = None
        self._last_stamp_ns: Optional[int] = None

    def stamp(self, timestamp_ms: float, host_synced: bool, arrival_ns: int) -> int:
        """ROS time [ns] of a frame.

        Args:
            timestamp_ms: device timestamp [ms].
            host_synced: its domain is the host clock.
            arrival_ns: the node clock when the frame was read [ns].
        """
        device_ns = int(round(timestamp_ms * _NS_PER_MS))
        if host_synced and abs(device_ns - arrival_ns) <= self.HOST_SYNC_TOLERANCE_NS:
            stamp = device_ns
        else:
            if self._offset_ns is None or (self._last_device_ns is not None
                                           and device_ns < self._last_device_ns):
                self._offset_ns = arrival_ns - device_ns
            stamp = device_ns + self._offset_ns
        self._last_device_ns = device_ns
        if self._last_stamp_ns is not None and stamp <= self._last_stamp_ns:
            stamp = self._last_stamp_ns + 1
        self._last_stamp_ns = stamp
        return stamp


def exposure_option_value(exposure_us: int, sensor_name: str, option_min: float,
                          option_max: float) -> float:
    """librealsense ``rs.option.exposure`` value for an exposure time.

    D400 RGB modules ("RGB Camera") count exposure in units of 100 µs; sensors that give
    colour from the stereo module (D405) count in µs.

    Raises:
        InputError: naming ``exposure_us`` when the time is outside the sensor's range.
    """
    unit_us = 100.0 if sensor_name == 'RGB Camera' else 1.0
    value = exposure_us / unit_us
    if not option_min <= value <= option_max:
        raise InputError(f'exposure_us: expected {option_min * unit_us:g} to '
                         f'{option_max * unit_us:g} µs (or -1 = auto) for the {sensor_name!r} '
                         f'sensor, got {exposure_us}')
    return value


# --------------------------------------------------------------------------------------------
# The device / recording
# --------------------------------------------------------------------------------------------
_TO_RGB = {
    'rgb8': None,
    'bgr8': cv2.COLOR_BGR2RGB,
    'rgba8': cv2.COLOR_RGBA2RGB,
    'bgra8': cv2.COLOR_BGRA2RGB,
    'yuyv': cv2.COLOR_YUV2RGB_YUYV,
}
_BYTES_PER_PIXEL = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'yuyv': 2}


class RealSenseSource:
    """The colour stream of a RealSense device or recording, without ROS.

    Construction resolves the configuration (device present, stream available, file
    readable) without streaming, so errors come early; :meth:`start` starts streaming;
    :meth:`read` returns frames; :meth:`stop` ends. Usable as a context manager.

    Raises (constructor):
        DeviceNotFoundError: no device attached (and no playback file), or none with the
            serial number.
        RealSenseError: the recording is missing or unreadable, or the device has no colour
            stream of the requested size and rate.
    """

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self._pipeline = rs.pipeline()
        self._rs_config = rs.config()
        self._playback: Optional[rs.playback] = None
        self._sensor: Optional[rs.sensor] = None
        self._started = False
        if config.playback_file:
            profile = self._resolve_playback(config.playback_file)
            self.description = f'recording {config.playback_file}'
        else:
            profile = self._resolve_live(config)
        stream = profile.get_stream(rs.stream.color).as_video_stream_profile()
        intr = stream.get_intrinsics()
        fmt = stream.format().name
        if fmt not in _TO_RGB:
            raise RealSenseError(f'colour stream format {fmt!r} is not supported; expected one '
                                 f'of {list(_TO_RGB)}')
        self.intrinsics = ColorIntrinsics(
            width=int(intr.width), height=int(intr.height), fx=float(intr.fx),
            fy=float(intr.fy), ppx=float(intr.ppx), ppy=float(intr.ppy), model=intr.model.name,
            coeffs=tuple(float(c) for c in intr.coeffs), fps=int(stream.fps()), format=fmt)

    @property
    def is_playback(self) -> bool:
        """True when frames come from a recording."""
        return bool(self.config.playback_file)

    def _resolve_playback(self, path: str) -> rs.pipeline_profile:
        if not os.path.isfile(path):
            raise RealSenseError(f'playback_file: no such file {path!r}')
        self._rs_config.enable_device_from_file(path, repeat_playback=False)
        self._rs_config.enable_stream(rs.stream.color)
        try:
            profile = self._rs_config.resolve(rs.pipeline_wrapper(self._pipeline))
            # Set the pace before streaming starts (start() reuses this device): set after
            # start(), the first frames of a recording go out at the recorded pace and a
            # reader that is not yet waiting loses them.
            profile.get_device().as_playback().set_real_time(self.config.playback_realtime)
            return profile
        except RuntimeError as exc:
            raise RealSenseError(f'playback_file: cannot play {path!r} (a RealSense recording '
                                 f'with a colour stream is expected): {exc}') from exc

    def _resolve_live(self, config: SourceConfig) -> rs.pipeline_profile:
        devices = list(rs.context().query_devices())
        if not devices:
            raise DeviceNotFoundError(NO_DEVICE_MESSAGE)
        serials = [d.get_info(rs.camera_info.serial_number) for d in devices]
        if config.serial_no and config.serial_no not in serials:
            raise DeviceNotFoundError(f'serial_no: no RealSense device with serial number '
                                      f'{config.serial_no!r}; attached: {serials}')
        serial = config.serial_no or serials[0]
        device = devices[serials.index(serial)]
        self.description = f'{device.get_info(rs.camera_info.name)} (serial {serial})'
        self._rs_config.enable_device(serial)
        self._rs_config.enable_stream(rs.stream.color, config.width, config.height,
                                      rs.format.rgb8, config.fps)
        try:
            profile = self._rs_config.resolve(rs.pipeline_wrapper(self._pipeline))
        except RuntimeError as exc:
            raise RealSenseError(
                f'width, height, fps: {self.description} has no rgb8 colour stream '
                f'{config.width}x{config.height} at {config.fps} Hz; it offers '
                f'{_color_modes(device)} ({exc})') from exc
        self._sensor = _color_sensor(profile.get_device())
        self.set_exposure(config.exposure_us)
        return profile

    def set_exposure(self, exposure_us: int) -> None:
        """Set the colour exposure time [µs] (-1 = auto) on the live device.

        Raises:
            InputError: for a recording, a value other than -1 or >= 1, or out of the
                sensor's range (naming ``exposure_us``).
            RealSenseError: the device rejected it.
        """
        if exposure_us != -1 and exposure_us < 1:
            raise InputError(f'exposure_us: expected -1 (auto) or a time >= 1 µs, got '
                             f'{exposure_us}')
        if self._sensor is None:
            if exposure_us == -1:
                return
            raise InputError('exposure_us: a recording has no exposure control; expected -1, '
                             f'got {exposure_us}')
        try:
            if exposure_us == -1:
                if self._sensor.supports(rs.option.enable_auto_exposure):
                    self._sensor.set_option(rs.option.enable_auto_exposure, 1)
                return
            name = self._sensor.get_info(rs.camera_info.name)
            rng = self._sensor.get_option_range(rs.option.exposure)
            value = exposure_option_value(exposure_us, name, rng.min, rng.max)
            self._sensor.set_option(rs.option.enable_auto_exposure, 0)
            self._sensor.set_option(rs.option.exposure, value)
        except RuntimeError as exc:
            raise RealSenseError(f'exposure_us: the device rejected {exposure_us} µs: {exc}'
                                 ) from exc

    def start(self) -> None:
        """Start streaming (playback starts from the beginning of the recording)."""
        try:
            profile = self._pipeline.start(self._rs_config)
            if self.is_playback:
                self._playback = profile.get_device().as_playback()
                self._playback.set_real_time(self.config.playback_realtime)
        except RuntimeError as exc:
            raise RealSenseError(f'cannot start {self.description}: {exc}') from exc
        self._started = True

    def read(self, timeout_s: float = 1.0) -> Optional[ColorFrame]:
        """The next colour frame, or None when none came within ``timeout_s``.

        Raises:
            EndOfPlayback: the recording has been played to its end.
            RealSenseError: the device failed (e.g. was disconnected).
        """
        if not self._started:
            raise RealSenseError('read: the source is not started; call start() first')
        try:
            ok, frames = self._pipeline.try_wait_for_frames(max(1, int(timeout_s * 1000)))
            if not ok:
                if (self._playback is not None
                        and self._playback.current_status() == rs.playback_status.stopped):
                    raise EndOfPlayback()
                return None
            color = frames.get_color_frame()
            if not color:
                return None
            rgb = self._to_rgb(color)
            return ColorFrame(rgb=rgb, timestamp_ms=float(color.get_timestamp()),
                              host_synced=color.get_frame_timestamp_domain() in _HOST_DOMAINS,
                              frame_number=int(color.get_frame_number()))
        except RuntimeError as exc:
            raise RealSenseError(f'reading {self.description} failed: {exc}') from exc

    def _to_rgb(self, color: rs.video_frame) -> np.ndarray:
        fmt = self.intrinsics.format
        width, height = color.get_width(), color.get_height()
        row_bytes = width * _BYTES_PER_PIXEL[fmt]
        stride = color.get_stride_in_bytes()
        data = np.frombuffer(color.get_data(), dtype=np.uint8)
        rows = data[:stride * height].reshape(height, stride)[:, :row_bytes]
        if fmt == 'yuyv':
            return cv2.cvtColor(rows.reshape(height, width, 2), _TO_RGB[fmt])
        pixels = rows.reshape(height, width, _BYTES_PER_PIXEL[fmt])
        if _TO_RGB[fmt] is None:
            return pixels.copy()  # the frame's memory goes back to librealsense
        return cv2.cvtColor(pixels, _TO_RGB[fmt])

    def stop(self) -> None:
        """Stop streaming (idempotent)."""
        if self._started:
            self._started = False
            try:
                self._pipeline.stop()
            except RuntimeError:
                pass  # already stopped by librealsense (end of playback, disconnection)

    def __enter__(self) -> RealSenseSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _color_sensor(device: rs.device) -> Optional[rs.sensor]:
    """The sensor that streams colour (the RGB module, or the stereo module on a D405)."""
    for sensor in device.query_sensors():
        if any(p.stream_type() == rs.stream.color for p in sensor.get_stream_profiles()):
            return sensor
    return None


def _color_modes(device: rs.device) -> list[str]:
    """'WxH@fps' of every rgb8 colour profile of a device, for error messages."""
    modes = set()
    for sensor in device.query_sensors():
        for p in sensor.get_stream_profiles():
            if p.stream_type() == rs.stream.color and p.format() == rs.format.rgb8:
                v = p.as_video_stream_profile()
                modes.add((v.width(), v.height(), v.fps()))
    return [f'{w}x{h}@{f}' for w, h, f in sorted(modes)]


# --------------------------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RealSenseNodeConfig:
    """The node's parameters (:data:`PARAMETERS` describes each)."""

    source: SourceConfig
    camera_name: str
    frame_id: str
    image_qos_reliability: str
    playback_wait_for_subscribers: int


def _descriptor(kind: int, description: str, *, read_only: bool = True,
                int_range: Optional[tuple[int, int]] = None) -> ParameterDescriptor:
    d = ParameterDescriptor(type=kind, description=description, read_only=read_only)
    if int_range is not None:
        d.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    return d


#: Reliabilities of the publishers (a publisher offers one: the subscriber side has 'auto').
PUBLISHER_RELIABILITIES = ('reliable', 'best_effort')

_S, _I, _B = (ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_INTEGER,
              ParameterType.PARAMETER_BOOL)

#: name -> (default, descriptor). Device choices are read-only (set them at start-up).
PARAMETERS = {
    'serial_no': ('', _descriptor(_S, "device serial number; '' = the first device found")),
    'width': (640, _descriptor(_I, 'colour image width [px] (live only)',
                               int_range=(1, 4096))),
    'height': (480, _descriptor(_I, 'colour image height [px] (live only)',
                                int_range=(1, 4096))),
    'fps': (30, _descriptor(_I, 'colour frame rate [Hz] (live only)', int_range=(1, 300))),
    'exposure_us': (-1, _descriptor(_I, 'colour exposure time [µs]; -1 = auto exposure '
                                        '(live only; may be changed at run time)',
                                    read_only=False, int_range=(-1, 1_000_000))),
    'playback_file': ('', _descriptor(_S, "RealSense recording (.db3 or .bag) to play instead "
                                          "of a device; '' = live")),
    'playback_realtime': (True, _descriptor(_B, 'playback at the recorded pace (true) or '
                                                'every frame as fast as it is read')),
    'playback_wait_for_subscribers': (0, _descriptor(
        _I, 'playback only: wait until this many subscribers listen to both topics',
        int_range=(0, 100))),
    'camera_name': ('camera', _descriptor(_S, 'topic prefix: <namespace>/<camera_name>/color/'
                                              '{image_raw,camera_info}')),
    'frame_id': ('camera_color_optical_frame', _descriptor(
        _S, 'header frame id of images and camera_info (the optical frame)')),
    'image_qos_reliability': ('reliable', _descriptor(
        _S, f'reliability of the image and camera_info publishers: {PUBLISHER_RELIABILITIES} '
            '(qos_overrides./<topic>.publisher.reliability, when given, wins)')),
}


class RealSenseNode(Node):
    """Publishes a RealSense colour stream as rgb8 images and camera_info.

    ``done`` completes with the exit code when the stream ends (end of playback: 0; device
    failure: 1); ``main`` spins until then.

    Raises (constructor):
        RealSenseError, DeviceNotFoundError: see :class:`RealSenseSource`.
        InputError: a parameter value outside its choices (the message names it).
    """

    def __init__(self, node_name: str = 'camera', *, namespace: str = 'camera',
                 **node_kwargs) -> None:
        super().__init__(node_name, namespace=namespace, **node_kwargs)
        self.done = Future()
        self.frames_published = 0
        self._stop = threading.Event()
        self._stamper = FrameStamper()
        self._thread: Optional[threading.Thread] = None
        self._source: Optional[RealSenseSource] = None
        try:
            self.config = self._read_parameters()
            self._source = RealSenseSource(self.config.source)
            camera, model, D, note = camera_info_fields(self._source.intrinsics)
            self._camera_info = camera_to_camera_info(camera, 0, self.config.frame_id, model, D)
        except (HandyPriorsError, rclpy.exceptions.ParameterException):
            if self._source is not None:
                self._source.stop()
            super().destroy_node()
            raise
        if note:
            self.get_logger().warning(note)
        prefix = self.config.camera_name
        # The standard qos_overrides.<topic>.publisher.* parameters (e.g. in a params file)
        # override the profile, as for any ROS 2 publisher that opts in. rclpy applies them to
        # the profile object in place: one profile per publisher.
        overrides = QoSOverridingOptions.with_default_policies()
        reliability = self.config.image_qos_reliability
        self._image_pub = self.create_publisher(Image, f'{prefix}/color/image_raw',
                                                image_qos(reliability),
                                                qos_overriding_options=overrides)
        self._info_pub = self.create_publisher(CameraInfo, f'{prefix}/color/camera_info',
                                               image_qos(reliability),
                                               qos_overriding_options=overrides)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        intr = self._source.intrinsics
        self.get_logger().info(
            f'{self._source.description}: colour {intr.width}x{intr.height} {intr.format} at '
            f'{intr.fps} Hz, distortion {intr.model} -> {model}; publishing '
            f'{self._image_pub.topic_name} and {self._info_pub.topic_name} '
            f'({self.config.image_qos_reliability}), frame {self.config.frame_id!r}; DDS '
            f'transports {dds.describe_transports(os.environ)}')
        hint = dds.profile_hint(os.environ)  # images are published rgb8: 3 bytes a pixel
        if hint is not None and 3 * intr.width * intr.height > dds.DEFAULT_SEGMENT_BYTES:
            self.get_logger().info(hint)
        self._thread = threading.Thread(target=self._run, name='realsense_reader', daemon=True)
        self._thread.start()

    def _read_parameters(self) -> RealSenseNodeConfig:
        """Declare every parameter (:data:`PARAMETERS`) and read them into a config.

        Raises:
            InputError: ``image_qos_reliability`` not in its choices, ``exposure_us`` = 0,
                or ``camera_name`` / ``frame_id`` empty.
        """
        values = {name: self.declare_parameter(name, default, descriptor).value
                  for name, (default, descriptor) in PARAMETERS.items()}
        if values['image_qos_reliability'] not in PUBLISHER_RELIABILITIES:
            raise InputError(f'image_qos_reliability: expected one of '
                             f'{list(PUBLISHER_RELIABILITIES)}, got '
                             f'{values["image_qos_reliability"]!r}')
        if values['exposure_us'] == 0:
            raise InputError('exposure_us: expected -1 (auto) or a time >= 1 µs, got 0')
        for name in ('camera_name', 'frame_id'):
            if not values[name]:
                raise InputError(f'{name}: expected a non-empty string, got {values[name]!r}')
        source = SourceConfig(
            serial_no=values['serial_no'], width=values['width'], height=values['height'],
            fps=values['fps'], exposure_us=values['exposure_us'],
            playback_file=values['playback_file'],
            playback_realtime=values['playback_realtime'])
        return RealSenseNodeConfig(
            source=source, camera_name=values['camera_name'], frame_id=values['frame_id'],
            image_qos_reliability=values['image_qos_reliability'],
            playback_wait_for_subscribers=values['playback_wait_for_subscribers'])

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        for param in params:
            if param.name == 'exposure_us':
                try:
                    self._source.set_exposure(int(param.value))
                except HandyPriorsError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    # -- reader thread ------------------------------------------------------------------------
    def _run(self) -> None:
        code = 0
        try:
            if self._source.is_playback:
                self._wait_for_subscribers(self.config.playback_wait_for_subscribers)
            if self._stop.is_set():
                return
            self._source.start()
            seconds_without_frames = 0.0
            while not self._stop.is_set():
                frame = self._source.read(timeout_s=0.5)
                if frame is None:
                    seconds_without_frames += 0.5
                    if seconds_without_frames >= 2.0:
                        self.get_logger().warning(
                            f'no colour frame from {self._source.description} for '
                            f'{seconds_without_frames:.0f} s', throttle_duration_sec=5.0)
                    continue
                seconds_without_frames = 0.0
                self._publish(frame)
        except EndOfPlayback:
            self.get_logger().info(f'end of playback: published {self.frames_published} '
                                   f'frames from {self.config.source.playback_file}')
        except HandyPriorsError as exc:
            self.get_logger().error(str(exc))
            code = 1
        finally:
            self._source.stop()
            if not self.done.done():
                self.done.set_result(code)

    def _wait_for_subscribers(self, count: int) -> None:
        if count <= 0:
            return
        self.get_logger().info(f'waiting for {count} subscriber(s) of '
                               f'{self._image_pub.topic_name} and {self._info_pub.topic_name}')
        while not self._stop.is_set() and (self._image_pub.get_subscription_count() < count
                                           or self._info_pub.get_subscription_count() < count):
            self._stop.wait(0.02)
        self._stop.wait(_DISCOVERY_SETTLE_S)

    def _publish(self, frame: ColorFrame) -> None:
        arrival_ns = self.get_clock().now().nanoseconds
        stamp_ns = self._stamper.stamp(frame.timestamp_ms, frame.host_synced, arrival_ns)
        image = numpy_to_image(frame.rgb, 'rgb8', stamp_ns, self.config.frame_id)
        self._camera_info.header.stamp = image.header.stamp
        self._info_pub.publish(self._camera_info)
        self._image_pub.publish(image)
        self.frames_published += 1

    def destroy_node(self) -> None:
        """Stop the reader thread and the stream, then destroy the node."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._source.stop()
        super().destroy_node()


def main(args: Optional[list[str]] = None) -> int:
    """``realsense_node`` console script: returns the exit status (0 ok, 1 error)."""
    return run_node('realsense_node', RealSenseNode, args=args, until_done=True)


if __name__ == '__main__':
    sys.exit(main())
