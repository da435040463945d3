"""The tracker node: camera images + hand joint states + TF in, the object's pose out.

Thin, as STYLE.md asks: the constructor reads the parameters (:mod:`.parameters`) into a frozen
config, builds the core objects (object model, hand kinematics, :class:`ObjectTracker`, a
:class:`TransformBuffer`, a :class:`JointStateBuffer` and a :class:`FrameAssembler`), then the
publishers, subscriptions, the reset service and timers. Callbacks convert messages
(:mod:`.conversions`), hand them to the assembler, and each frame it releases is converted,
tracked and published.

Inputs (INTERFACES.md): image, camera_info, mask (optional), joint_states, /tf, /tf_static,
initial pose. Outputs: /tf (camera optical frame -> ``object_frame`` at the image stamp), the
pose with covariance, TrackedObject (status, contacts, residuals, per-stage latency including
the node's own stages), RViz markers, /diagnostics. Service ``/handypriors/reset``.

Modes (parameter ``mode``):
- ``live``: callbacks only store messages and trigger a guard condition, whose callback runs
  after the subscriptions served in the same executor round (rclpy serves guard conditions after
  subscriptions, one message per subscription and round) and tracks the newest frame; older ones
  are dropped and counted. A frame whose joint state or TF after its stamp has not come yet
  waits up to ``live_wait_s`` (the messages queued while the previous frame was tracked come in
  over the next rounds). The image subscriptions keep only the newest message by default
  (``image_qos_depth`` 0 = 1 in live mode), so the node never tracks a frame that waited in a
  DDS queue.
- ``replay``: every frame is tracked, in stamp order, inside the callback that completes it
  (deterministic: what a frame waits for depends on the data only; see :mod:`handypriors_ros.core.frames.assembler`).
  ``handypriors track`` drives this same node over a bag by calling the callbacks directly.

A bad message (wrong encoding, size mismatch with camera_info, NaN joints, time going
backwards, missing TF, ...) gives a throttled warning, a count on /diagnostics, and the node
keeps running; a frame that cannot be tracked is skipped. Start-up problems (an unreadable mesh,
an invalid parameter) raise; ``main`` logs them and exits 1.

Executor: single-threaded (PLATFORM.md: a multi-threaded executor misbehaves on 2 cores), and
``torch.set_num_threads(torch_threads)`` (default 1: measured, torch's 2 intra-op threads stall
under load on 2 cores).
"""
from __future__ import annotations

import collections
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from handypriors_ros.ros.spin import run_node
from handypriors_ros.core.errors import HandyPriorsError, InputError, ModelError
from handypriors_ros.core.geometry.transform_buffer import (StampedTransform, TransformBuffer,
                                                            TransformError)
from handypriors_ros.core.models.joint_names import ros1_to_ros2_name_map
from handypriors_ros.core.models.kinematics import HandKinematics
from handypriors_ros.core.models.object_model import ObjectModel
from handypriors_ros.core.render.camera import PinholeCamera, Undistorter
from handypriors_ros.core.tracking.tracker import NotInitialisedError, ObjectTracker
from handypriors_ros.core.frames import Frame
from handypriors_ros.core.tracking.types import TrackResult, TrackStatus
from handypriors_ros.msg import TrackedObject
from handypriors_ros.resources import default_hand_urdf
from handypriors_ros.ros import markers as marker_msgs
from handypriors_ros.ros.conversions import (camera_info_to_camera, image_to_numpy,
                                             joint_state_to_arrays, mask_to_numpy,
                                             pose_stamped_to_matrix, stamp_to_ns,
                                             track_result_to_pose, track_result_to_tf,
                                             track_result_to_tracked_object, transform_to_core)
from handypriors_ros.core.frames import (AssembledFrame, AssemblyConfig, FrameAssembler,
                                                JointStateBuffer, NonFiniteJointsError,
                                                TimeWentBackwardsError)
from handypriors_ros.ros.parameters import (TrackerNodeConfig, check_initial_pose,
                                            declare_and_read, updated_config)
from handypriors_ros.ros.qos import (JOINT_STATES_QOS, OUTPUT_QOS, TF_QOS,
                                     TF_STATIC_LISTENER_QOS, image_qos)

_NS_PER_S = 1_000_000_000
WARN_PERIOD_S = 2.0  # per kind of problem
MESH_MARKER_PERIOD_S = 2.0  # the object mesh marker is re-sent this often
_HOUSEKEEPING_PERIOD_S = {'live': 0.02, 'replay': 0.1}
_LATENCY_WINDOW = 300  # frames kept for the latency figures on /diagnostics
_INPUTS = ('image', 'camera_info', 'mask', 'joint_states', 'tf', 'initial_pose')

#: Problems that are counted but not warned about (normal in their mode).
_QUIET = ('missing_mask', 'dropped', 'reused_camera_info')
#: image_qos_depth 0: keep-last depth per mode. Live: 1, so that DDS hands over the newest
#: frame (measured: with depth 5 a node busy for 60 ms per frame at 30 Hz got frames up to 5
#: old, and lost images and camera_infos independently).
IMAGE_QOS_AUTO_DEPTH = {'live': 1, 'replay': 10}

PublishHook = Callable[[str, Any], None]


class _PendingPose:
    """An initial pose waiting for the first frame at or after its stamp."""

    __slots__ = ('stamp_ns', 'frame_id', 'T')

    def __init__(self, stamp_ns: int, frame_id: str, T: np.ndarray) -> None:
        self.stamp_ns, self.frame_id, self.T = stamp_ns, frame_id, T


def pose_vector_to_matrix(pose: tuple[float, ...]) -> np.ndarray:
    """(4, 4) of ``[x, y, z, qx, qy, qz, qw]`` (the ``initial_pose`` parameter's layout)."""
    check_initial_pose(tuple(pose))
    return StampedTransform('camera', 'object', 0, pose[:3], pose[3:]).matrix()


class TrackerNode(Node):
    """Tracks the object held by the hand (module docstring).

    Args:
        node_name: the node's name (``tracker_node``).
        publish_hook: when given, every output message goes to ``publish_hook(topic, msg)``
            instead of its publisher (``handypriors track`` records them into a bag).
        **node_kwargs: passed to ``rclpy.node.Node`` (context, parameter_overrides, ...).
    Raises (constructor):
        InputError: an invalid parameter value (named).
        ModelError: the mesh or URDF cannot be read (the message names the parameter and path).
        rclpy.exceptions.ParameterException: a value of the wrong type or out of range.
    """

    def __init__(self, node_name: str = 'tracker_node', *,
                 publish_hook: PublishHook | None = None, **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self._publish_hook = publish_hook
        try:
            self.config = declare_and_read(self)
            self._build_core(self.config)
        except (HandyPriorsError, ParameterException):
            super().destroy_node()
            raise
        cfg = self.config
        log = self.get_logger()

        # Counters and figures (diagnostics; the command-line summary reads them).
        self.problem_counts: collections.Counter[str] = collections.Counter()
        self.status_counts: collections.Counter[str] = collections.Counter()
        self.frames_tracked = 0
        self.processing_s: list[float] = []  # per tracked frame: input + track + publish
        self._latency_total_s: collections.deque[float] = collections.deque(maxlen=_LATENCY_WINDOW)
        self._input_counts: collections.Counter[str] = collections.Counter()
        self._period_problems: collections.Counter[str] = collections.Counter()
        self._last_warn: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()
        self._last_result: TrackResult | None = None
        self._last_diag_time = time.monotonic()
        self._mesh_marker = None
        self._mesh_marker_sent = -float('inf')
        self._camera_key: tuple | None = None
        self._camera: tuple[PinholeCamera, Undistorter] | None = None
        self._static_tfs: dict[str, StampedTransform] = {}
        self._pending_poses: list[_PendingPose] = []
        if cfg.initial_pose:
            self._pending_poses.append(_PendingPose(0, '', pose_vector_to_matrix(cfg.initial_pose)))

        # Publishers, subscriptions, service, timers.
        self._tf_pub = self.create_publisher(TFMessage, '/tf', TF_QOS)
        self._pose_pub = self.create_publisher(PoseWithCovarianceStamped, cfg.object_pose_topic,
                                               OUTPUT_QOS)
        self._track_pub = self.create_publisher(TrackedObject, cfg.track_topic, OUTPUT_QOS)
        self._markers_pub = self.create_publisher(MarkerArray, cfg.markers_topic, OUTPUT_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', OUTPUT_QOS)
        self.image_qos_depth = cfg.image_qos_depth or IMAGE_QOS_AUTO_DEPTH[cfg.mode]
        qos = image_qos(cfg.image_qos_reliability, self.image_qos_depth)
        # Creation order = service order within an executor round: state before images.
        self.create_subscription(TFMessage, '/tf_static', self.on_tf_static,
                                 TF_STATIC_LISTENER_QOS)
        self.create_subscription(TFMessage, '/tf', self.on_tf, TF_QOS)
        self.create_subscription(JointState, cfg.joint_states_topic, self.on_joint_states,
                                 JOINT_STATES_QOS)
        self.create_subscription(PoseStamped, cfg.initial_pose_topic, self.on_initial_pose,
                                 OUTPUT_QOS)
        self.create_subscription(CameraInfo, cfg.camera_info_topic, self.on_camera_info, qos)
        if cfg.mask_topic:
            self.create_subscription(Image, cfg.mask_topic, self.on_mask, qos)
        self.create_subscription(Image, cfg.image_topic, self.on_image, qos)
        self.create_service(Trigger, '/handypriors/reset', self._on_reset)
        self._guard = self.create_guard_condition(self._on_guard)
        self.create_timer(_HOUSEKEEPING_PERIOD_S[cfg.mode], self._on_housekeeping)
        self.create_timer(cfg.diagnostics_period_s, self.publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self._new_config: TrackerNodeConfig | None = None
        log.info(
            f'{cfg.mode} mode; object {cfg.object_mesh} (scale {cfg.object_scale:g}, '
            f'{self._object.proxy.faces.shape[0]} proxy faces); hand {self._urdf_path} '
            f'(root {self._hand_root}); images {cfg.image_topic} '
            f'({cfg.image_qos_reliability}, depth {self.image_qos_depth}); publishing /tf '
            f'<image frame> -> {cfg.object_frame}; '
            + ('initial pose from the parameter' if cfg.initial_pose
               else f'waiting for an initial pose on {cfg.initial_pose_topic}'))

    # -- construction --------------------------------------------------------------------------
    def _build_core(self, cfg: TrackerNodeConfig) -> None:
        log = self.get_logger()
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        if cfg.device == 'cuda' and not torch.cuda.is_available():
            raise InputError("device: 'cuda' requested but torch.cuda.is_available() is False "
                             "(use 'auto' or 'cpu')")
        if cfg.device == 'cuda':
            log.warning("device 'cuda': this version's EKF tracker runs on the CPU; the GPU is "
                        'not used')
        if cfg.renderer == 'nvdiffrast' and not torch.cuda.is_available():
            raise InputError("renderer: 'nvdiffrast' needs a CUDA device, and "
                             'torch.cuda.is_available() is False (use auto or soft)')
        log.info(f'device cpu (requested {cfg.device}); renderer: pure-torch hard rasterizer '
                 f'on the CPU (requested {cfg.renderer}'
                 + ('; the tracker does not use nvdiffrast in this version)'
                    if cfg.renderer == 'nvdiffrast' else ')')
                 + f'; torch threads {torch.get_num_threads()}')
        try:
            self._object = ObjectModel.from_file(cfg.object_mesh, scale=cfg.object_scale)
        except (ModelError, InputError) as exc:
            raise ModelError(f'object_mesh: {exc}') from exc
        self._urdf_path = cfg.hand_urdf or str(default_hand_urdf())
        try:
            kin = HandKinematics.from_urdf(self._urdf_path)
        except (ModelError, InputError) as exc:
            raise ModelError(f'hand_urdf: {exc}') from exc
        self._kin = kin
        # The URDF's own prefix (ah_base_link -> 'ah_'); joint_prefix renames to the robot's.
        suffix = 'base_link'
        urdf_prefix = kin.root_link[:-len(suffix)] if kin.root_link.endswith(suffix) else None
        name_map: dict[str, str] = {}
        if urdf_prefix is not None and cfg.joint_prefix != urdf_prefix:
            name_map.update({cfg.joint_prefix + n[len(urdf_prefix):]: n
                             for n in kin.joint_names if n.startswith(urdf_prefix)})
        extra, ros1 = cfg.parse_joint_name_map()
        if ros1:
            name_map.update(ros1_to_ros2_name_map(urdf_prefix or ''))
        unknown = sorted(set(extra.values()) - set(kin.joint_names))
        if unknown:
            raise InputError(f'joint_name_map: {unknown} are not joints of {self._urdf_path} '
                             f'(its joints: {", ".join(kin.joint_names)})')
        name_map.update(extra)
        if cfg.hand_root_frame:
            self._hand_root = cfg.hand_root_frame
        elif urdf_prefix is not None:
            self._hand_root = cfg.joint_prefix + suffix
        else:
            self._hand_root = kin.root_link
        self._tracker = ObjectTracker(self._object, kin, cfg.tracker)
        self._tf = TransformBuffer(cache_time_s=cfg.tf_cache_s)
        self._joints = JointStateBuffer(kin.joint_names, name_map=name_map,
                                        cache_time_s=max(2.0, 2 * cfg.max_joint_age_s))
        self._assembler = FrameAssembler(self._assembly_config(cfg), self._joints, self._tf)

    def _assembly_config(self, cfg: TrackerNodeConfig) -> AssemblyConfig:
        wall = cfg.live_wait_s if cfg.mode == 'live' else cfg.replay_idle_s
        return AssemblyConfig(
            mode=cfg.mode, hand_root_frame=self._hand_root, use_mask=bool(cfg.mask_topic),
            stamp_tolerance_ns=_ns(cfg.stamp_tolerance_s), data_wait_ns=_ns(cfg.replay_wait_s),
            wall_wait_ns=_ns(wall), max_joint_age_ns=_ns(cfg.max_joint_age_s),
            tf_tolerance_ns=_ns(cfg.tf_tolerance_s), max_pending=cfg.max_pending_frames,
            live_mask_wait_ns=_ns(cfg.live_mask_wait_s))

    @property
    def tracker(self) -> ObjectTracker:
        return self._tracker

    @property
    def hand_root_frame(self) -> str:
        return self._hand_root

    # -- input callbacks -----------------------------------------------------------------------
    def on_image(self, msg: Image) -> None:
        """Colour image: held until its inputs are there (the assembler)."""
        arrival = time.monotonic_ns()
        self._input_counts['image'] += 1
        try:
            self._assembler.add_image(stamp_to_ns(msg.header.stamp), msg.header.frame_id, msg,
                                      arrival)
        except TimeWentBackwardsError as exc:
            self._problem('time_backwards', f'image rejected: {exc}')
        except InputError as exc:
            self._problem('bad_image', f'image rejected: {exc}')
        self._after_input()

    def on_camera_info(self, msg: CameraInfo) -> None:
        self._input_counts['camera_info'] += 1
        self._assembler.add_camera_info(stamp_to_ns(msg.header.stamp), msg)
        self._after_input()

    def on_mask(self, msg: Image) -> None:
        self._input_counts['mask'] += 1
        self._assembler.add_mask(stamp_to_ns(msg.header.stamp), msg)
        self._after_input()

    def on_joint_states(self, msg: JointState) -> None:
        self._input_counts['joint_states'] += 1
        try:
            stamp, names, positions = joint_state_to_arrays(msg)
            self._joints.add(stamp, names, positions)
        except NonFiniteJointsError as exc:
            self._problem('nan_joints', str(exc))
            return
        except TimeWentBackwardsError as exc:
            self._problem('time_backwards', str(exc))
            return
        except InputError as exc:
            self._problem('bad_joint_state', f'joint state rejected: {exc}')
            return
        self._assembler.advance_data_time(stamp)
        self._after_input()

    def on_tf(self, msg: TFMessage) -> None:
        self._input_counts['tf'] += 1
        self._store_tf(msg, is_static=False)

    def on_tf_static(self, msg: TFMessage) -> None:
        self._store_tf(msg, is_static=True)

    def _store_tf(self, msg: TFMessage, *, is_static: bool) -> None:
        newest = None
        for ros_tf in msg.transforms:
            try:
                tf = transform_to_core(ros_tf)
                if tf.child_frame == self.config.object_frame.lstrip('/'):
                    continue  # our own output (or another tracker's): not an input
                self._tf.set_transform(tf, is_static=is_static, authority='tf')
            except (InputError, TransformError) as exc:
                self._problem('bad_tf', f'transform {ros_tf.header.frame_id!r} -> '
                                        f'{ros_tf.child_frame_id!r} rejected: {exc}')
                continue
            if is_static:
                self._static_tfs[tf.child_frame] = tf
            else:
                newest = tf.stamp_ns if newest is None else max(newest, tf.stamp_ns)
        if newest is not None:
            self._assembler.advance_data_time(newest)
        self._after_input()

    def on_initial_pose(self, msg: PoseStamped) -> None:
        """An initial (or re-initialisation) pose: applied to the first frame at or after its
        stamp (a zero stamp: the next frame), in the camera frame or resolved through TF."""
        self._input_counts['initial_pose'] += 1
        try:
            stamp, frame_id, T = pose_stamped_to_matrix(msg)
        except InputError as exc:
            self._problem('bad_initial_pose', f'initial pose rejected: {exc}')
            return
        self._pending_poses.append(_PendingPose(stamp, frame_id.lstrip('/'), T))
        self.get_logger().info(f'initial pose received (stamp {stamp} ns, frame '
                               f'{frame_id or "<camera>"!r})')
        self._after_input()

    def _after_input(self) -> None:
        if self.config.mode == 'replay':
            self.process_pending()
        else:
            self._guard.trigger()  # served after the waiting messages (module docstring)

    def _on_guard(self) -> None:
        self.process_pending(now_ns=time.monotonic_ns())

    def _on_housekeeping(self) -> None:
        self.process_pending(now_ns=time.monotonic_ns())

    # -- frames --------------------------------------------------------------------------------
    def process_pending(self, now_ns: int | None = None, *, flush: bool = False) -> int:
        """Track every frame the assembler releases (see :mod:`handypriors_ros.core.frames.assembler`).

        Args:
            now_ns: monotonic clock [ns] for the wall-clock waits (None: data-driven only).
            flush: release every pending frame (end of a bag).
        Returns:
            The number of frames tracked.
        """
        tracked = 0
        for frame in self._assembler.pop_ready(now_ns, flush=flush,
                                               initialised=self._initialised_for):
            tracked += self._handle(frame)
        if tracked:
            self._assembler.note_idle(time.monotonic_ns())
        return tracked

    def _initialised_for(self, stamp_ns: int) -> bool:
        tol = self._assembler.config.stamp_tolerance_ns
        return self._tracker.ekf is not None or any(p.stamp_ns <= stamp_ns + tol
                                                    for p in self._pending_poses)

    def _handle(self, frame: AssembledFrame) -> int:
        t = frame.stamp_ns
        for p in frame.problems:
            if p.kind in _QUIET:
                self.problem_counts[p.kind] += 1
                self._period_problems[p.kind] += 1
            else:
                self._problem(p.kind, f'frame {t} ns: {p.message}')
        if not frame.usable:
            return 0
        t_start = time.monotonic_ns()
        fi = self._frame_input(frame)
        if fi is None:
            return 0
        self._apply_initial_pose(t, frame.frame_id)
        t_input = time.monotonic_ns()
        try:
            result = self._tracker.step(fi)
        except NotInitialisedError as exc:
            self._problem('no_initial_pose', f'frame {t} ns skipped: {exc}')
            return 0
        except InputError as exc:
            self._problem('bad_frame', f'frame {t} ns skipped: {exc}')
            return 0
        t_track = time.monotonic_ns()
        latency = {'wait': (t_start - frame.arrival_ns) / 1e9, 'input': (t_input - t_start) / 1e9}
        latency.update({('track' if k == 'total' else k): v for k, v in result.latency_s.items()})
        self._publish(self._tf_pub, track_result_to_tf(result, frame.frame_id,
                                                       self.config.object_frame))
        self._publish(self._pose_pub, track_result_to_pose(result, frame.frame_id))
        t_publish = time.monotonic_ns()
        latency['publish'] = (t_publish - t_track) / 1e9
        latency['total'] = (t_publish - frame.arrival_ns) / 1e9
        self._publish(self._track_pub, track_result_to_tracked_object(
            result, frame.frame_id, self.config.object_frame, latency_s=latency))
        if self.config.publish_markers:
            self._publish_markers(result, frame, fi)
        self.frames_tracked += 1
        self.status_counts[result.status.name.lower()] += 1
        self.processing_s.append((time.monotonic_ns() - t_start) / 1e9)
        self._latency_total_s.append(latency['total'])
        self._last_result = result
        return 1

    def _frame_input(self, frame: AssembledFrame) -> Frame | None:
        """Convert the frame's messages; a bad one is counted and the frame skipped (a bad mask
        only loses the mask)."""
        t = frame.stamp_ns
        try:
            rgb = image_to_numpy(frame.image)
        except InputError as exc:
            self._problem('bad_image', f'frame {t} ns skipped: {exc}')
            return None
        h, w = rgb.shape[:2]
        try:
            camera, undistorter = self._camera_for(frame.camera_info, (w, h))
        except InputError as exc:
            self._problem('bad_camera_info', f'frame {t} ns skipped: camera_info: {exc}')
            return None
        mask = None
        if frame.mask is not None:
            try:
                mask = mask_to_numpy(frame.mask)
                if mask.shape != (h, w):
                    raise InputError(f'mask size: expected {w}x{h} like the image, got '
                                     f'{mask.shape[1]}x{mask.shape[0]}')
            except InputError as exc:
                self._problem('bad_mask', f'frame {t} ns: mask ignored: {exc}')
                mask = None
        if not undistorter.is_identity:
            rgb = undistorter.undistort_image(rgb)
            if mask is not None:
                mask = undistorter.undistort_mask(mask.astype(np.uint8)) > 0
        return Frame(stamp_ns=t, rgb=np.ascontiguousarray(rgb), camera=camera,
                          q=frame.joints.q, T_cam_base=frame.T_cam_base, mask=mask)

    def _camera_for(self, info: CameraInfo, size: tuple[int, int]
                    ) -> tuple[PinholeCamera, Undistorter]:
        """The camera of a camera_info, cached while the camera_info stays the same."""
        key = (int(info.width), int(info.height), str(info.distortion_model),
               tuple(info.k), tuple(info.p), tuple(info.d), tuple(info.r),
               int(info.binning_x), int(info.binning_y), int(info.roi.x_offset),
               int(info.roi.y_offset), int(info.roi.width), int(info.roi.height))
        if key != self._camera_key:
            self._camera = camera_info_to_camera(info)
            self._camera_key = key
        camera, undistorter = self._camera
        camera.check_image_size(size[0], size[1], 'image')
        return camera, undistorter

    def _apply_initial_pose(self, stamp_ns: int, camera_frame: str) -> None:
        tol = self._assembler.config.stamp_tolerance_ns
        due = [p for p in self._pending_poses if p.stamp_ns <= stamp_ns + tol]
        if not due:
            return
        self._pending_poses = [p for p in self._pending_poses if p.stamp_ns > stamp_ns + tol]
        pose = max(due, key=lambda p: p.stamp_ns)
        T = pose.T
        if pose.frame_id and pose.frame_id != camera_frame:
            try:
                T_cam_frame = self._tf.lookup_transform(camera_frame, pose.frame_id,
                                                        pose.stamp_ns or None)
            except TransformError as exc:
                self._problem('bad_initial_pose', f'initial pose in {pose.frame_id!r} ignored: '
                                                  f'no transform to {camera_frame!r}: {exc}')
                return
            T = T_cam_frame @ T
        self._tracker.initialise(T)
        self.get_logger().info(f'tracker initialised at frame {stamp_ns} ns from the initial '
                               f'pose at {pose.stamp_ns} ns')

    # -- outputs -------------------------------------------------------------------------------
    def _publish(self, publisher: Any, msg: Any) -> None:
        if self._publish_hook is not None:
            self._publish_hook(publisher.topic_name, msg)
        else:
            publisher.publish(msg)

    def _publish_markers(self, result: TrackResult, frame: AssembledFrame,
                         fi: Frame) -> None:
        now = time.monotonic()
        markers = []
        if now - self._mesh_marker_sent >= MESH_MARKER_PERIOD_S:
            if self._mesh_marker is None:
                if self.config.marker_mesh == 'mesh_resource':
                    self._mesh_marker = marker_msgs.object_mesh_marker(
                        self.config.object_frame, mesh_path=self.config.object_mesh,
                        scale=self.config.object_scale)
                else:
                    proxy = self._object.proxy
                    self._mesh_marker = marker_msgs.object_mesh_marker(
                        self.config.object_frame, vertices=proxy.vertices.detach().numpy(),
                        faces=proxy.faces.numpy(),
                        vertex_colors=proxy.vertex_colors.detach().numpy())
            markers.append(self._mesh_marker)
            self._mesh_marker_sent = now
        q = torch.as_tensor(fi.q[None], dtype=self._kin.dtype)
        T = torch.as_tensor(fi.T_cam_base[None], dtype=self._kin.dtype)
        with torch.no_grad():
            tips = self._kin.forward(q, T).fingertips[0].double().numpy()
        markers += marker_msgs.frame_markers(frame.frame_id, result.stamp_ns,
                                             result.contacts.points_object, tips)
        self._publish(self._markers_pub, MarkerArray(markers=markers))

    def publish_diagnostics(self) -> None:
        """/diagnostics: input rates, latency, status, frame and problem counts."""
        now = time.monotonic()
        period = max(now - self._last_diag_time, 1e-9)
        self._last_diag_time = now
        rates = {k: self._input_counts[k] / period for k in _INPUTS}
        self._input_counts.clear()
        new_problems = dict(self._period_problems)
        self._period_problems.clear()
        result = self._last_result
        if self._tracker.ekf is None:
            state, reason = 'waiting for an initial pose', ''
        elif result is None:
            state, reason = 'initialised, no frame tracked yet', ''
        else:
            state, reason = result.status.name.lower(), result.status_reason
        level = DiagnosticStatus.OK
        warn_kinds = {k: n for k, n in new_problems.items() if k not in _QUIET}
        if warn_kinds or self._tracker.ekf is None or (
                result is not None and result.status == TrackStatus.LOST):
            level = DiagnosticStatus.WARN
        message = state + (f' ({reason})' if reason else '')
        if warn_kinds:
            message += '; problems in the last period: ' + ', '.join(
                f'{n} {k}' for k, n in sorted(warn_kinds.items()))
        lat = np.asarray(self._latency_total_s) * 1000.0
        proc = np.asarray(self.processing_s[-_LATENCY_WINDOW:]) * 1000.0
        values = {
            'mode': self.config.mode,
            'status': state,
            'status_reason': reason,
            'frames_tracked': self.frames_tracked,
            'frames_dropped': self.problem_counts['dropped'],
            'frames_pending': self._assembler.pending_count,
            'latency_total_p50_ms': _percentile(lat, 50),
            'latency_total_p99_ms': _percentile(lat, 99),
            'processing_p50_ms': _percentile(proc, 50),
            'processing_p99_ms': _percentile(proc, 99),
        }
        values.update({f'rate_{k}_hz': round(v, 2) for k, v in rates.items()})
        newest_joint = self._joints.newest_stamp_ns
        if newest_joint is not None and result is not None:
            values['joint_states_age_at_last_frame_s'] = round(
                (result.stamp_ns - newest_joint) / 1e9, 4)
        values.update({f'count_{k}': n for k, n in sorted(self.problem_counts.items())})
        status = DiagnosticStatus(
            level=level, name=f'{self.get_name()}: object tracking', message=message,
            hardware_id='handypriors',
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._publish(self._diag_pub, msg)

    # -- problems ------------------------------------------------------------------------------
    def _problem(self, kind: str, message: str) -> None:
        """Count a problem; warn about its kind at most every WARN_PERIOD_S."""
        self.problem_counts[kind] += 1
        self._period_problems[kind] += 1
        now = time.monotonic()
        if now - self._last_warn.get(kind, -float('inf')) < WARN_PERIOD_S:
            self._suppressed[kind] += 1
            return
        self._last_warn[kind] = now
        more = self._suppressed.pop(kind, 0)
        self.get_logger().warning(f'[{kind}] {message}'
                                  + (f' ({more} more since the last warning)' if more else ''))

    # -- service and parameters ---------------------------------------------------------------
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response
                  ) -> Trigger.Response:
        """Re-initialise from the last initial pose; input buffers start afresh (time may have
        jumped back, e.g. a bag played again)."""
        try:
            self._tracker.reset()
        except NotInitialisedError as exc:
            response.success, response.message = False, str(exc)
            return response
        self._assembler.clear()
        self._joints.clear()
        self._tf.clear()
        for tf in self._static_tfs.values():
            self._tf.set_transform(tf, is_static=True, authority='tf_static')
        response.success = True
        response.message = 're-initialised from the last initial pose; input buffers cleared'
        self.get_logger().info(response.message)
        return response

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        changes = {p.name: _plain(p.value) for p in params}
        try:
            self._new_config = updated_config(self.config, changes)
        except InputError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: list) -> None:
        new, self._new_config = self._new_config, None
        if new is None:
            return
        old, self.config = self.config, new
        self._tracker.config = new.tracker
        self._assembler.config = self._assembly_config(new)
        if new.initial_pose and new.initial_pose != old.initial_pose:
            self._pending_poses.append(_PendingPose(0, '', pose_vector_to_matrix(new.initial_pose)))
        self.get_logger().info('parameters changed: ' + ', '.join(
            f'{p.name}={_plain(p.value)}' for p in params))


def _ns(seconds: float) -> int:
    return int(round(seconds * _NS_PER_S))


def _plain(value: Any) -> Any:
    """rclpy array values (array.array) as lists."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == 'array':
        return list(value)
    return value


def _percentile(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if len(values) else float('nan')


def main(args: list[str] | None = None) -> int:
    """``tracker_node`` console script: returns the exit status (0 ok, 1 start-up error)."""
    return run_node('tracker_node', TrackerNode, args=args)


if __name__ == '__main__':
    sys.exit(main())
