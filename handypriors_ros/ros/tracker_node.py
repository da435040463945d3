"""The tracker node: camera images + hand joint states + TF in, the object's pose out.

Thin, as STYLE.md asks, over the pieces ``handypriors track`` uses too: the constructor reads
the parameters (declared from :data:`~handypriors_ros.jobs.track.TRACKER_NODE_SCHEMA`) into
frozen :class:`~handypriors_ros.jobs.track.TrackerOptions`, builds the tracker
(:func:`~handypriors_ros.jobs.track.load_tracker`: object model, hand, hand naming), the frame
pipeline (:class:`FrameAssembler` live or replay over a :class:`JointStateBuffer` and a
:class:`TransformBuffer`; :class:`~handypriors_ros.ros.conversions.FrameInputs` feeds it,
:class:`~handypriors_ros.ros.conversions.FrameDecoder` decodes what it releases) and a
:class:`~handypriors_ros.core.tracking.session.TrackingSession` (initial poses, tracking,
counters), then the publishers, subscriptions, the reset service and timers.

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
  (deterministic: what a frame waits for depends on the data only; see
  :mod:`handypriors_ros.core.frames.assembler`). ``handypriors track`` runs the same pipeline
  over a bag without a node (:mod:`handypriors_ros.jobs.track`).

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

from handypriors_ros.core.errors import HandyPriorsError, InputError
from handypriors_ros.core.frames import (AssembledFrame, Frame, FrameAssembler, InitialPose,
                                         ProblemCounter)
from handypriors_ros.core.geometry.transform_buffer import TransformBuffer
from handypriors_ros.core.tracking.session import TrackingSession
from handypriors_ros.core.tracking.tracker import NotInitialisedError, ObjectTracker
from handypriors_ros.core.tracking.types import TrackResult, TrackStatus
from handypriors_ros.jobs.options import pose_vector_to_matrix
from handypriors_ros.jobs.track import TRACKER_NODE_SCHEMA, TrackerOptions, load_tracker
from handypriors_ros.msg import TrackedObject
from handypriors_ros.ros import markers as marker_msgs
from handypriors_ros.ros.conversions import (FrameDecoder, FrameInputs, track_result_to_pose,
                                             track_result_to_tf,
                                             track_result_to_tracked_object)
from handypriors_ros.ros.parameters import changed_values, declare
from handypriors_ros.ros.qos import (JOINT_STATES_QOS, OUTPUT_QOS, TF_QOS,
                                     TF_STATIC_LISTENER_QOS, image_qos)
from handypriors_ros.ros.spin import run_node

WARN_PERIOD_S = 2.0  # per kind of problem
MESH_MARKER_PERIOD_S = 2.0  # the object mesh marker is re-sent this often
_HOUSEKEEPING_PERIOD_S = {'live': 0.02, 'replay': 0.1}
_LATENCY_WINDOW = 300  # frames kept for the latency figures on /diagnostics
_INPUTS = ('image', 'camera_info', 'mask', 'joint_states', 'tf', 'initial_pose')
#: image_qos_depth 0: keep-last depth per mode. Live: 1, so that DDS hands over the newest
#: frame (measured: with depth 5 a node busy for 60 ms per frame at 30 Hz got frames up to 5
#: old, and lost images and camera_infos independently).
IMAGE_QOS_AUTO_DEPTH = {'live': 1, 'replay': 10}

PublishHook = Callable[[str, Any], None]


class TrackerNode(Node):
    """Tracks the object held by the hand (module docstring).

    Args:
        node_name: the node's name (``tracker_node``).
        publish_hook: when given, every output message goes to ``publish_hook(topic, msg)``
            instead of its publisher (tests and benchmarks capture them).
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
        log = self.get_logger()
        try:
            self.config = TrackerOptions.from_values(declare(self, TRACKER_NODE_SCHEMA))
            loaded = load_tracker(self.config, info=log.info, warn=log.warning)
        except (HandyPriorsError, ParameterException):
            super().destroy_node()
            raise
        cfg = self.config
        self._loaded = loaded
        self._hand_root = loaded.naming.hand_root_frame
        self._tf = TransformBuffer(cache_time_s=cfg.tf_cache_s)
        self._joints = loaded.naming.joint_buffer(
            cache_time_s=max(2.0, 2 * cfg.input.max_joint_age_s))
        self._assembler = FrameAssembler(cfg.assembly(self._hand_root), self._joints, self._tf)
        self.problems = ProblemCounter(log.warning, period_s=WARN_PERIOD_S)
        self._inputs = FrameInputs(self._assembler, self.problems,
                                   ignore_child_frames=(cfg.object_frame,))
        self._decoder = FrameDecoder(self.problems)
        self.session = TrackingSession(loaded.tracker, self._tf, self.problems,
                                       stamp_tolerance_ns=self._assembler.config
                                       .stamp_tolerance_ns, log=log.info)
        if cfg.initial_pose:
            self.session.add_initial_pose(
                InitialPose(0, '', pose_vector_to_matrix(cfg.initial_pose)))

        # Figures (diagnostics; benchmarks read them).
        self.processing_s: list[float] = []  # per tracked frame: input + track + publish
        self._latency_total_s: collections.deque[float] = collections.deque(maxlen=_LATENCY_WINDOW)
        self._input_counts: collections.Counter[str] = collections.Counter()
        self._last_diag_time = time.monotonic()
        self._mesh_marker = None
        self._mesh_marker_sent = -float('inf')

        # Publishers, subscriptions, service, timers.
        self._tf_pub = self.create_publisher(TFMessage, '/tf', TF_QOS)
        self._pose_pub = self.create_publisher(PoseWithCovarianceStamped, cfg.object_pose_topic,
                                               OUTPUT_QOS)
        self._track_pub = self.create_publisher(TrackedObject, cfg.track_topic, OUTPUT_QOS)
        self._markers_pub = self.create_publisher(MarkerArray, cfg.markers_topic, OUTPUT_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', OUTPUT_QOS)
        self.image_qos_depth = cfg.image_qos_depth or IMAGE_QOS_AUTO_DEPTH[cfg.mode]
        qos = image_qos(cfg.image_qos_reliability, self.image_qos_depth)
        inputs = cfg.input
        # Creation order = service order within an executor round: state before images.
        self.create_subscription(TFMessage, '/tf_static', self.on_tf_static,
                                 TF_STATIC_LISTENER_QOS)
        self.create_subscription(TFMessage, '/tf', self.on_tf, TF_QOS)
        self.create_subscription(JointState, inputs.joint_states_topic, self.on_joint_states,
                                 JOINT_STATES_QOS)
        self.create_subscription(PoseStamped, inputs.initial_pose_topic, self.on_initial_pose,
                                 OUTPUT_QOS)
        self.create_subscription(CameraInfo, inputs.camera_info_topic, self.on_camera_info, qos)
        if inputs.mask_topic:
            self.create_subscription(Image, inputs.mask_topic, self.on_mask, qos)
        self.create_subscription(Image, inputs.image_topic, self.on_image, qos)
        self.create_service(Trigger, '/handypriors/reset', self._on_reset)
        self._guard = self.create_guard_condition(self._on_guard)
        self.create_timer(_HOUSEKEEPING_PERIOD_S[cfg.mode], self._on_housekeeping)
        self.create_timer(cfg.diagnostics_period_s, self.publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self._new_config: TrackerOptions | None = None
        log.info(
            f'{cfg.mode} mode; object {cfg.object_mesh} (scale {cfg.object_scale:g}, '
            f'{loaded.object_model.proxy.faces.shape[0]} proxy faces); hand '
            f'{loaded.urdf_path} (root {self._hand_root}); images {inputs.image_topic} '
            f'({cfg.image_qos_reliability}, depth {self.image_qos_depth}); publishing /tf '
            f'<image frame> -> {cfg.object_frame}; '
            + ('initial pose from the parameter' if cfg.initial_pose
               else f'waiting for an initial pose on {inputs.initial_pose_topic}'))

    @property
    def tracker(self) -> ObjectTracker:
        return self.session.tracker

    @property
    def hand_root_frame(self) -> str:
        return self._hand_root

    @property
    def problem_counts(self) -> collections.Counter[str]:
        """Problems by kind since start-up."""
        return self.problems.counts

    @property
    def frames_tracked(self) -> int:
        return self.session.frames_tracked

    @property
    def status_counts(self) -> collections.Counter[str]:
        return self.session.status_counts

    # -- input callbacks -----------------------------------------------------------------------
    def on_image(self, msg: Image) -> None:
        """Colour image: held until its inputs are there (the assembler)."""
        self._input_counts['image'] += 1
        self._inputs.image(msg, time.monotonic_ns())
        self._after_input()

    def on_camera_info(self, msg: CameraInfo) -> None:
        self._input_counts['camera_info'] += 1
        self._inputs.camera_info(msg)
        self._after_input()

    def on_mask(self, msg: Image) -> None:
        self._input_counts['mask'] += 1
        self._inputs.mask(msg)
        self._after_input()

    def on_joint_states(self, msg: JointState) -> None:
        self._input_counts['joint_states'] += 1
        if self._inputs.joint_state(msg):
            self._after_input()

    def on_tf(self, msg: TFMessage) -> None:
        self._input_counts['tf'] += 1
        self._inputs.tf(msg, is_static=False)
        self._after_input()

    def on_tf_static(self, msg: TFMessage) -> None:
        self._inputs.tf(msg, is_static=True)
        self._after_input()

    def on_initial_pose(self, msg: PoseStamped) -> None:
        """An initial (or re-initialisation) pose: applied to the first frame at or after its
        stamp (a zero stamp: the next frame), in the camera frame or resolved through TF."""
        self._input_counts['initial_pose'] += 1
        pose = self._inputs.initial_pose(msg)
        if pose is None:
            return
        self.session.add_initial_pose(pose)
        self.get_logger().info(f'initial pose received (stamp {pose.stamp_ns} ns, frame '
                               f'{pose.frame_id or "<camera>"!r})')
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
        """Track every frame the assembler releases (see
        :mod:`handypriors_ros.core.frames.assembler`).

        Args:
            now_ns: monotonic clock [ns] for the wall-clock waits (None: data-driven only).
            flush: release every pending frame (end of a bag).
        Returns:
            The number of frames tracked.
        """
        tracked = 0
        for frame in self._assembler.pop_ready(now_ns, flush=flush,
                                               initialised=self.session.initialised_for):
            tracked += self._handle(frame)
        if tracked:
            self._assembler.note_idle(time.monotonic_ns())
        return tracked

    def _handle(self, frame: AssembledFrame) -> int:
        self.problems.report_frame(frame)
        if not frame.usable:
            return 0
        t_start = time.monotonic_ns()
        fi = self._decoder.decode(frame)
        if fi is None:
            return 0
        t_input = time.monotonic_ns()
        result = self.session.step(fi, frame.frame_id)
        if result is None:
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
        self.processing_s.append((time.monotonic_ns() - t_start) / 1e9)
        self._latency_total_s.append(latency['total'])
        return 1

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
                    proxy = self._loaded.object_model.proxy
                    self._mesh_marker = marker_msgs.object_mesh_marker(
                        self.config.object_frame, vertices=proxy.vertices.detach().numpy(),
                        faces=proxy.faces.numpy(),
                        vertex_colors=proxy.vertex_colors.detach().numpy())
            markers.append(self._mesh_marker)
            self._mesh_marker_sent = now
        hand = self._loaded.hand
        q = torch.as_tensor(fi.q[None], dtype=hand.dtype)
        T = torch.as_tensor(fi.T_cam_base[None], dtype=hand.dtype)
        with torch.no_grad():
            tips = hand.forward(q, T).fingertips[0].double().numpy()
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
        new_problems = self.problems.take_period()
        result = self.session.last_result
        if self.tracker.ekf is None:
            state, reason = 'waiting for an initial pose', ''
        elif result is None:
            state, reason = 'initialised, no frame tracked yet', ''
        else:
            state, reason = result.status.name.lower(), result.status_reason
        level = DiagnosticStatus.OK
        warn_kinds = {k: n for k, n in new_problems.items() if k not in self.problems.quiet}
        if warn_kinds or self.tracker.ekf is None or (
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

    # -- service and parameters ---------------------------------------------------------------
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response
                  ) -> Trigger.Response:
        """Re-initialise from the last initial pose; input buffers start afresh (time may have
        jumped back, e.g. a bag played again)."""
        try:
            self.session.reset()
        except NotInitialisedError as exc:
            response.success, response.message = False, str(exc)
            return response
        self._assembler.clear()
        self._joints.clear()
        self._tf.clear()
        self._inputs.restore_static()
        response.success = True
        response.message = 're-initialised from the last initial pose; input buffers cleared'
        self.get_logger().info(response.message)
        return response

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        try:
            self._new_config = self.config.updated(changed_values(params))
        except InputError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: list) -> None:
        new, self._new_config = self._new_config, None
        if new is None:
            return
        old, self.config = self.config, new
        self.tracker.config = new.tracker
        self._assembler.config = new.assembly(self._hand_root)
        self.session.stamp_tolerance_ns = self._assembler.config.stamp_tolerance_ns
        if new.initial_pose and new.initial_pose != old.initial_pose:
            self.session.add_initial_pose(
                InitialPose(0, '', pose_vector_to_matrix(new.initial_pose)))
        self.get_logger().info('parameters changed: ' + ', '.join(
            f'{name}={value}' for name, value in changed_values(params).items()))


def _percentile(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if len(values) else float('nan')


def main(args: list[str] | None = None) -> int:
    """``tracker_node`` console script: returns the exit status (0 ok, 1 start-up error)."""
    return run_node('tracker_node', TrackerNode, args=args)


if __name__ == '__main__':
    sys.exit(main())
