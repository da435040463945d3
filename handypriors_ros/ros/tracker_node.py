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
the node's own stages), RViz markers, a throttled debug image (``debug_image``), /diagnostics.
Service ``reset``. Names: the outputs, ``initial_pose`` and ``reset`` are relative names in the
node's namespace, ``/handypriors`` unless one is given (``-r __ns:=/name``, a launch file's
namespace), so two trackers can run side by side; the driver inputs are absolute (remap them).
A LOST frame gives its TrackedObject only (no /tf, no pose) unless ``publish_lost``.

Latency stages (TrackedObject.latency, seconds): ``reception`` (image published -> its
callback; from the DDS source timestamp, same host clock; absent where rclpy gives no message
info, e.g. Humble), ``wait`` (callback -> the frame leaves the assembler: waiting for joint
states / TF, or for the worker), ``input`` (conversion: the image as numpy without a copy,
undistortion, camera), the tracker's own stages and ``track`` (the whole step, wall clock),
``track_cpu`` (the CPU time of that step in its thread: what the step costs whatever else runs
on the machine; torch_threads 1 computes in the calling thread), ``publish``,
``total`` (callback -> published) and ``end_to_end`` (reception + total, when known).

Modes (parameter ``mode``):
- ``live``: callbacks only store messages (reference kept, nothing converted) and wake one
  worker thread, which takes the newest complete frame, tracks and publishes it; older frames
  are dropped and counted (``frames_dropped`` on /diagnostics), never queued. Messages keep
  arriving while a frame is tracked (torch and the DDS layer release the GIL), so the next
  frame's inputs are there when the step ends. A frame whose newest joint state and TF are at
  most ``live_hold_s`` before its stamp uses them at once; otherwise it waits up to
  ``live_wait_s`` for ones after its stamp. Once any camera_info has come, a frame uses the
  latest one at once (a reliable camera_info can come 13-150 ms late over DDS, README "Real
  time over DDS"). A frame that waits for its mask only is
  stepped at once: the tracker predicts and renders, then waits for the mask
  (``Frame.late_mask``, up to ``live_mask_wait_s``, stage ``mask_wait``), so that work overlaps
  the segmenter's latency. A frame whose step starts more than ``live_behind_s`` after its
  arrival (the tracker is behind) skips the costly measurements of ``live_behind_skip`` (the
  appearance), counted as ``behind`` (``frames_behind``), so that the next frames catch up;
  one whose step would start more than ``live_drop_s`` after its arrival is answered at once
  with the hand-driven prediction and counted as dropped (never two in a row). With
  ``live_budget_s``, a frame whose step would end after that budget (its lag plus the p75
  cost of the last steps of its kind) skips ``live_behind_skip``, or is answered with the
  prediction when even that would not fit, whatever its lag.
  The image subscriptions keep the two newest messages by default
  (``image_qos_depth`` 0 = 2 in live mode): the assembler keeps the newest frame, and an
  older one is dropped and answered, not lost unseen in DDS. (``threaded=False``: the
  executor thread does the work, in a guard condition; tests call
  :meth:`TrackerNode.process_pending` directly.)
- ``replay``: every frame is tracked, in stamp order, inside the callback that completes it
  (deterministic: what a frame waits for depends on the data only; see
  :mod:`handypriors_ros.core.frames.assembler`). ``handypriors track`` runs the same pipeline
  over a bag without a node (:mod:`handypriors_ros.jobs.track`).

A bad message (wrong encoding, size mismatch with camera_info, NaN joints, time going
backwards, missing TF, ...) gives a throttled warning, a count on /diagnostics, and the node
keeps running; a frame that cannot be tracked is not stepped: after initialisation, one that
cannot be assembled or decoded gets the tracker's predict-only estimate, reason
``'predict only: [kind] ...'``, published like a tracked one (a live frame dropped for a newer
one: the hand-driven predict from its joint states and TF, which are there); before it, only
the problem is counted. Start-up problems (an unreadable mesh, an invalid parameter) raise; ``main`` logs them
and exits 1.

Diagnostics: per input its rate, the time since its last message, and the level: WARN once an
input (image, camera_info, joint_states, tf; the mask once it has been seen) is silent for
``input_stall_s``, ERROR after ``input_gone_s`` (also one that never came that long after
start-up).

Executor (parameter ``executor``, :mod:`handypriors_ros.ros.spin`): rclpy's events executor
where rclpy has one (Kilted on: waiting and dispatch in C++, so the 100 Hz callbacks take little
GIL time from the worker; no message info with it, hence no ``reception`` stage), else the
single-threaded one (PLATFORM.md: a multi-threaded executor misbehaves on 2 cores); plus the
live worker thread, and ``torch.set_num_threads(torch_threads)`` (default 1: measured,
torch's 2 intra-op threads stall under load on 2 cores).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import os
import sys
import threading
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
from rclpy.qos import QoSReliabilityPolicy
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from handypriors_ros import interfaces
from handypriors_ros.core.errors import HandyPriorsError, InputError
from handypriors_ros.core.frames import (AssembledFrame, AssemblyConfig, Frame, FrameAssembler,
                                         InitialPose, LastProblem, ProblemCounter)
from handypriors_ros.core.geometry.transform_buffer import TransformBuffer, TransformError
from handypriors_ros.core.tracking.session import TrackingSession
from handypriors_ros.core.tracking.tracker import NotInitialisedError, ObjectTracker
from handypriors_ros.core.tracking.types import TrackResult, TrackStatus
from handypriors_ros.jobs.options import pose_vector_to_matrix
from handypriors_ros.jobs.track import TRACKER_NODE_SCHEMA, TrackerOptions, load_tracker
from handypriors_ros.msg import TrackedObject
from handypriors_ros.ros import compat, dds
from handypriors_ros.ros import markers as marker_msgs
from handypriors_ros.ros.conversions import (FrameDecoder, FrameInputs, numpy_to_image,
                                             track_result_to_pose, track_result_to_tf,
                                             track_result_to_tracked_object)
from handypriors_ros.ros.parameters import changed_values, declare
from handypriors_ros.ros.qos import (OUTPUT_QOS, TF_QOS, TF_STATIC_LISTENER_QOS, image_qos,
                                     joint_states_qos, matching_reliability, overridable)
from handypriors_ros.ros.spin import resolve_executor, run_node

WARN_PERIOD_S = 2.0  # per kind of problem
MESH_MARKER_PERIOD_S = 2.0  # the object mesh marker is re-sent this often
_HOUSEKEEPING_PERIOD_S = {'live': 0.02, 'replay': 0.1}
_LATENCY_WINDOW = 300  # frames kept for the latency figures on /diagnostics
_COST_WINDOW = 30  # live_budget_s: the last steps of each kind whose cost is kept
_COST_MIN_STEPS = 5  # ... and how many it needs to decide
_INPUTS = ('image', 'camera_info', 'mask', 'joint_states', 'tf', 'initial_pose')
#: Inputs whose silence is a WARN / ERROR on /diagnostics (the mask only once it was seen).
_WATCHED = ('image', 'camera_info', 'joint_states', 'tf', 'mask')
#: rclpy passes the DDS message info to two-argument callbacks (not in Humble's rclpy).
_MESSAGE_INFO = hasattr(Subscription, 'CallbackType')
#: image_qos_depth 0: keep-last depth per mode. Live: 2. With depth 1 an image that came
#: before the one ahead of it was taken replaced it in DDS, unseen and uncounted: image 2 of
#: 270 was never answered in 4 of 6 bench_latency runs (2026-12-07, its predecessor's first
#: step took ~60 ms), and in none of 3 with depth 2. The assembler keeps the newest frame and
#: answers the older one predict-only (counted as dropped). (With depth 5 and the old
#: single-threaded node busy 60 ms per frame, frames came up to 5 old.)
IMAGE_QOS_AUTO_DEPTH = {'live': 2, 'replay': 10}
#: image_qos_reliability auto: how long the image subscriptions wait for a publisher to match
#: before subscribing best-effort (no subscription swap when the camera is already there or
#: comes within this).
IMAGE_QOS_AUTO_WAIT_S = 3.0

PublishHook = Callable[[str, Any], None]


class TrackerNode(Node):
    """Tracks the object held by the hand (module docstring).

    Args:
        node_name: the node's name (``tracker_node``).
        publish_hook: when given, every output message goes to ``publish_hook(topic, msg)``
            instead of its publisher (tests and benchmarks capture them).
        threaded: live mode only: track in a worker thread (default) or, False, in the
            executor's thread (guard condition) / when :meth:`process_pending` is called.
        subscribe_camera: False: no image / camera_info subscriptions; the caller delivers
            them to :meth:`on_image` / :meth:`on_camera_info` (one process with the driver,
            :mod:`handypriors_ros.ros.composed`).
        **node_kwargs: passed to ``rclpy.node.Node`` (context, parameter_overrides, namespace
            (default ``/handypriors``), ...).
    Raises (constructor):
        InputError: an invalid parameter value (named).
        ModelError: the mesh or URDF cannot be read (the message names the parameter and path).
        rclpy.exceptions.ParameterException: a value of the wrong type or out of range.
    """

    def __init__(self, node_name: str = 'tracker_node', *,
                 publish_hook: PublishHook | None = None, threaded: bool = True,
                 subscribe_camera: bool = True, **node_kwargs: Any) -> None:
        node_kwargs.setdefault('namespace', interfaces.NAMESPACE)
        super().__init__(node_name, **node_kwargs)
        self._publish_hook = publish_hook
        log = self.get_logger()
        try:
            self.config = TrackerOptions.from_values(declare(self, TRACKER_NODE_SCHEMA))
            #: the executor run_node spins this node on ('events' or 'single_threaded')
            self.executor_kind = resolve_executor(self.config.executor)
            loaded = load_tracker(self.config, info=log.info, warn=log.warning)
        except (HandyPriorsError, ParameterException):
            super().destroy_node()
            raise
        cfg = self.config
        self._loaded = loaded
        if cfg.mode == 'live' and not threaded:
            self.executor_kind = 'single_threaded'  # its guard condition (below) needs it
        # The events executor passes no message info (no 'reception' latency stage with it).
        self._message_info = _MESSAGE_INFO and self.executor_kind != 'events'
        self._hand_root = loaded.naming.hand_root_frame
        self._tf = TransformBuffer(cache_time_s=cfg.tf_cache_s)
        self._joints = loaded.naming.joint_buffer(
            cache_time_s=max(2.0, 2 * cfg.input.max_joint_age_s))
        # Threaded live mode: a frame whose mask is on its way is tracked at once and its mask
        # taken when the tracker needs it (Frame.late_mask): predict and render overlap the
        # segmenter's latency; masks come in the executor's thread meanwhile.
        self._release_before_mask = threaded and cfg.mode == 'live'
        self._mask_arrived = threading.Event()
        self._assembler = FrameAssembler(self._assembly_config(cfg), self._joints, self._tf)
        self.problems = ProblemCounter(log.warning, period_s=WARN_PERIOD_S)
        self._inputs = FrameInputs(self._assembler, self.problems,
                                   ignore_child_frames=(cfg.object_frame,))
        self._last_problem = LastProblem(self.problems)  # a decode failure's reason
        self._decoder = FrameDecoder(self._last_problem)
        self.session = TrackingSession(loaded.tracker, self._tf, self.problems,
                                       stamp_tolerance_ns=self._assembler.config
                                       .stamp_tolerance_ns, log=log.info)
        if cfg.initial_pose:
            self.session.add_initial_pose(
                InitialPose(0, '', pose_vector_to_matrix(cfg.initial_pose)))
        # _lock: the input buffers (assembler, joints, TF, pending initial poses), held briefly
        # by callbacks; _step_lock: the tracker (a step, reset, parameter changes). Order:
        # _step_lock before _lock.
        self._lock = threading.RLock()
        self._step_lock = threading.RLock()

        # Figures (diagnostics; benchmarks read them).
        self.processing_s: list[float] = []  # per tracked frame: input + track + publish
        self._latency_total_s: collections.deque[float] = collections.deque(maxlen=_LATENCY_WINDOW)
        self._input_counts: collections.Counter[str] = collections.Counter()
        self.received: collections.Counter[str] = collections.Counter()  # since start-up
        self._last_seen: dict[str, float] = {}  # input -> monotonic time of its last message
        self._start_time = time.monotonic()
        self._last_diag_time = self._start_time
        self._mesh_marker = None
        self._mesh_marker_sent = -float('inf')
        self._debug_sent = -float('inf')
        self._reception_s: dict[int, float] = {}  # image stamp -> publish -> callback [s]

        # Publishers, subscriptions, service, timers. Relative names: in the node's namespace.
        self._tf_pub = self.create_publisher(TFMessage, interfaces.TF_TOPIC, TF_QOS)
        self._pose_pub = self.create_publisher(PoseWithCovarianceStamped, cfg.object_pose_topic,
                                               OUTPUT_QOS)
        self._track_pub = self.create_publisher(TrackedObject, cfg.track_topic, OUTPUT_QOS)
        self._markers_pub = self.create_publisher(MarkerArray, cfg.markers_topic, OUTPUT_QOS)
        self._debug_pub = self.create_publisher(Image, cfg.debug_image_topic, OUTPUT_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, interfaces.DIAGNOSTICS_TOPIC,
                                               OUTPUT_QOS)
        self.image_qos_depth = cfg.image_qos_depth or IMAGE_QOS_AUTO_DEPTH[cfg.mode]
        inputs = cfg.input
        # Creation order = service order within an executor round: state before images.
        self.create_subscription(TFMessage, interfaces.TF_STATIC_TOPIC, self.on_tf_static,
                                 TF_STATIC_LISTENER_QOS)
        self.create_subscription(
            TFMessage, interfaces.TF_TOPIC, self.on_tf,
            image_qos(self._state_reliability(cfg.tf_qos_reliability), TF_QOS.depth),
            qos_overriding_options=overridable())
        self.create_subscription(
            JointState, inputs.joint_states_topic, self.on_joint_states,
            joint_states_qos(self._state_reliability(cfg.joint_states_qos_reliability),
                             cfg.joint_states_qos_depth),
            qos_overriding_options=overridable())
        self.create_subscription(PoseStamped, inputs.initial_pose_topic, self.on_initial_pose,
                                 OUTPUT_QOS)
        # Image streams: (topic, type, callback, takes message info).
        self._camera_streams: list[tuple[str, Any, Callable, bool]] = []
        if subscribe_camera:
            self._camera_streams.append((inputs.camera_info_topic, CameraInfo,
                                         self.on_camera_info, False))
        if inputs.mask_topic:
            self._camera_streams.append((inputs.mask_topic, Image, self.on_mask, False))
        if subscribe_camera:
            self._camera_streams.append((inputs.image_topic, Image, self.on_image, True))
        self._image_subs: list[Any] = []
        self._initial_reliability: str | None = None  # of the first subscriptions
        self.image_reliability: str | None = None  # None: auto, no publisher seen yet
        self._auto_pending = cfg.image_qos_reliability == 'auto'
        self._auto_deadline = time.monotonic() + IMAGE_QOS_AUTO_WAIT_S
        if not self._auto_pending:
            self._subscribe_camera_streams(cfg.image_qos_reliability)
        else:
            self._check_image_publishers()
        self.create_service(Trigger, 'reset', self._on_reset)
        self._threaded = threaded and cfg.mode == 'live'
        # live mode without the worker thread: the executor tracks, woken by a guard condition
        # (the events executor has none; the worker thread needs none).
        self._guard = (self.create_guard_condition(self._on_guard)
                       if cfg.mode == 'live' and not self._threaded else None)
        self.create_timer(_HOUSEKEEPING_PERIOD_S[cfg.mode], self._on_housekeeping)
        self.create_timer(cfg.diagnostics_period_s, self.publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        compat.add_post_set_parameters_callback(self, self._after_set_parameters)
        self._new_config: TrackerOptions | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._dropped_last = False  # the last frame handled was dropped for live_drop_s
        # live_budget_s: the cost [s] of the last steps (arrival to answer less the waits),
        # those with all measurements (False) and those skipping live_behind_skip (True)
        self._step_cost_s = {False: collections.deque(maxlen=_COST_WINDOW),
                             True: collections.deque(maxlen=_COST_WINDOW)}
        if self._threaded:
            self._worker = threading.Thread(target=self._work, name='tracker_worker',
                                            daemon=True)
            self._worker.start()
        log.info(
            f'{cfg.mode} mode ({"worker thread" if self._threaded else "executor thread"}, '
            f'{self.executor_kind} executor); '
            f'object {cfg.object_mesh} (scale {cfg.object_scale:g}, '
            f'{loaded.object_model.proxy.faces.shape[0]} proxy faces); hand '
            f'{loaded.urdf_path} (root {self._hand_root}); images {inputs.image_topic} '
            f'({self.image_reliability or "auto: waiting for a publisher"}, depth '
            f'{self.image_qos_depth}); publishing /tf '
            f'<image frame> -> {cfg.object_frame}, {self._pose_pub.topic_name}; DDS transports '
            f'{dds.describe_transports(os.environ)}; '
            + ('initial pose from the parameter' if cfg.initial_pose
               else f'waiting for an initial pose on {inputs.initial_pose_topic}'))
        hint = dds.profile_hint(os.environ)
        if hint is not None:
            log.info(hint)

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

    def _assembly_config(self, cfg: TrackerOptions) -> AssemblyConfig:
        return dataclasses.replace(cfg.assembly(self._hand_root),
                                   release_before_mask=self._release_before_mask)

    def _state_reliability(self, value: str) -> str:
        """joint_states / tf reliability: auto = best_effort live, reliable in replay."""
        if value != 'auto':
            return value
        return 'best_effort' if self.config.mode == 'live' else 'reliable'

    # -- image QoS -----------------------------------------------------------------------------
    def _subscribe_camera_streams(self, reliability: str) -> None:
        """(Re)create the image / camera_info / mask subscriptions with this reliability; a
        ``qos_overrides`` parameter wins (declared the first time, read again afterwards)."""
        for sub in self._image_subs:
            self.destroy_subscription(sub)
        self._image_subs = []
        first = self._initial_reliability is None
        if first:
            self._initial_reliability = reliability
        for topic, msg_type, callback, with_info in self._camera_streams:
            cb = (lambda msg, info, _cb=callback: _cb(msg, info)) if (
                with_info and self._message_info) else callback
            qos = image_qos(reliability, self.image_qos_depth)
            if first:
                sub = self.create_subscription(msg_type, topic, cb, qos,
                                               qos_overriding_options=overridable())
            else:
                overridden = self._reliability_override(topic)
                if overridden is not None:
                    qos.reliability = overridden
                depth = self._override_value(topic, 'depth')
                if depth is not None:
                    qos.depth = int(depth)
                sub = self.create_subscription(msg_type, topic, cb, qos)
            self._image_subs.append(sub)
        self.image_reliability = reliability

    def _override_value(self, topic: str, policy: str) -> Any:
        name = f'qos_overrides.{self.resolve_topic_name(topic)}.subscription.{policy}'
        return self.get_parameter(name).value if self.has_parameter(name) else None

    def _reliability_override(self, topic: str) -> QoSReliabilityPolicy | None:
        """The user's ``qos_overrides.<topic>.subscription.reliability``, if they set one."""
        name = f'qos_overrides.{self.resolve_topic_name(topic)}.subscription.reliability'
        if not self.has_parameter(name):
            return None
        value = str(self.get_parameter(name).value)
        given = name in getattr(self, '_parameter_overrides', {})  # command line / launch
        if not given and value == self._initial_reliability:
            return None  # the default declared at start-up, not the user's
        return QoSReliabilityPolicy[value.upper()]

    def resolve_topic_name(self, topic: str) -> str:
        """A topic name as this node resolves it (namespace, remaps)."""
        from rclpy.expand_topic_name import expand_topic_name
        return expand_topic_name(topic, self.get_name(), self.get_namespace())

    def _check_image_publishers(self) -> None:
        """``image_qos_reliability`` auto (:mod:`handypriors_ros.ros.qos`): subscribe like the
        image publishers as soon as one is known; with none after IMAGE_QOS_AUTO_WAIT_S,
        best-effort (matches any publisher), made reliable once the publishers that appear are
        all reliable (keeps every frame over UDP, PLATFORM.md)."""
        if not self._auto_pending or not self._camera_streams:
            return
        publishers = self.get_publishers_info_by_topic(self.config.input.image_topic)
        if publishers:
            self._auto_pending = False
            wanted = matching_reliability(publishers)
            if wanted != self.image_reliability:
                if self.image_reliability is not None:
                    self.get_logger().info(f'image publishers found: subscribing {wanted} like '
                                           f'them (was {self.image_reliability})')
                self._subscribe_camera_streams(wanted)
        elif self.image_reliability is None and time.monotonic() >= self._auto_deadline:
            self._subscribe_camera_streams('best_effort')

    # -- input callbacks (store and wake only) -------------------------------------------------
    def _seen(self, name: str) -> None:
        self._input_counts[name] += 1
        self.received[name] += 1
        self._last_seen[name] = time.monotonic()

    def on_image(self, msg: Image, info: Any = None) -> None:
        """Colour image: held until its inputs are there (the assembler). ``info``: rclpy's
        message info (the DDS source timestamp gives the reception latency)."""
        arrival = time.monotonic_ns()
        self._seen('image')
        if info is not None:
            try:
                sent = int(info['source_timestamp'])
                if sent > 0:
                    self._reception_s[_stamp_ns(msg)] = max(0.0, (time.time_ns() - sent) / 1e9)
                    while len(self._reception_s) > 4 * _LATENCY_WINDOW:
                        self._reception_s.pop(next(iter(self._reception_s)))
            except (KeyError, TypeError, ValueError, AttributeError):
                pass
        with self._lock:
            self._inputs.image(msg, arrival)
        self._after_input()

    def on_camera_info(self, msg: CameraInfo) -> None:
        self._seen('camera_info')
        with self._lock:
            self._inputs.camera_info(msg)
        self._after_input()

    def on_mask(self, msg: Image) -> None:
        arrival = time.monotonic_ns()
        self._seen('mask')
        with self._lock:
            self._inputs.mask(msg, arrival)
        self._mask_arrived.set()  # a frame's late mask (_await_mask)
        self._after_input()

    def on_joint_states(self, msg: JointState) -> None:
        self._seen('joint_states')
        with self._lock:
            stored = self._inputs.joint_state(msg)
        if stored:
            self._after_input()

    def on_tf(self, msg: TFMessage) -> None:
        self._seen('tf')
        with self._lock:
            self._inputs.tf(msg, is_static=False)
        self._after_input()

    def on_tf_static(self, msg: TFMessage) -> None:
        with self._lock:
            self._inputs.tf(msg, is_static=True)
        self._after_input()

    def on_initial_pose(self, msg: PoseStamped) -> None:
        """An initial (or re-initialisation) pose: applied to the first frame at or after its
        stamp (a zero stamp: the next frame), in the camera frame or resolved through TF."""
        self._seen('initial_pose')
        pose = self._inputs.initial_pose(msg)
        if pose is None:
            return
        with self._lock:
            self.session.add_initial_pose(pose)
        self.get_logger().info(f'initial pose received (stamp {pose.stamp_ns} ns, frame '
                               f'{pose.frame_id or "<camera>"!r})')
        self._after_input()

    def _after_input(self) -> None:
        if self.config.mode == 'replay':
            self.process_pending()
        elif self._threaded:
            self._wake.set()
        else:
            self._guard.trigger()  # served after the waiting messages of this round

    def _on_guard(self) -> None:
        self.process_pending(now_ns=time.monotonic_ns())

    def _on_housekeeping(self) -> None:
        self._check_image_publishers()
        if self._threaded:
            self._wake.set()
        else:
            self.process_pending(now_ns=time.monotonic_ns())

    def _work(self) -> None:
        """The live worker: the newest complete frame, whenever woken (module docstring)."""
        period = _HOUSEKEEPING_PERIOD_S['live']
        while not self._stop.is_set():
            self._wake.wait(period)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.process_pending(now_ns=time.monotonic_ns())
            except Exception as exc:  # noqa: BLE001  the node never dies on one frame
                self.problems.report('internal_error', f'frame skipped: {type(exc).__name__}: '
                                                       f'{exc}')

    def destroy_node(self) -> None:
        """Stop the worker thread, then destroy the node."""
        self._stop.set()
        self._wake.set()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10.0)
        super().destroy_node()

    # -- frames --------------------------------------------------------------------------------
    def process_pending(self, now_ns: int | None = None, *, flush: bool = False) -> int:
        """Track every frame the assembler releases (see
        :mod:`handypriors_ros.core.frames.assembler`; in live mode: the newest).

        Args:
            now_ns: monotonic clock [ns] for the wall-clock waits (None: data-driven only).
            flush: release every pending frame (end of a bag).
        Returns:
            The number of frames tracked.
        """
        tracked = 0
        with self._step_lock:
            with self._lock:
                frames = self._assembler.pop_ready(now_ns, flush=flush,
                                                   initialised=self.session.initialised_for)
            for frame in frames:
                tracked += self._handle(frame)
            if tracked:
                with self._lock:
                    self._assembler.note_idle(time.monotonic_ns())
        return tracked

    def _handle(self, frame: AssembledFrame) -> int:
        with self._lock:
            self.problems.report_frame(frame)
        reception = self._reception_s.pop(frame.stamp_ns, None)
        if not frame.usable:
            self._predict_only(frame)
            return 0
        t_start = time.monotonic_ns()
        cfg = self.config
        behind_s = (t_start - frame.arrival_ns) / 1e9
        dropped_last, self._dropped_last = self._dropped_last, False
        live = cfg.mode == 'live'
        skip_over, drop_over = self._over_budget(behind_s) if live else (False, False)
        if (live and (0.0 < cfg.live_drop_s < behind_s or drop_over) and not dropped_last
                and self.session.tracker.ekf is not None
                and not self.session.pending_initial_poses):
            why = ('live_drop_s' if 0.0 < cfg.live_drop_s < behind_s else
                   f'live_budget_s: its step would end after {cfg.live_budget_s * 1e3:.0f} ms')
            message = (f'the tracker is {behind_s * 1e3:.1f} ms behind ({why}): answered '
                       'with the prediction')
            with self._lock:
                self.problems.report('dropped', f'frame {frame.stamp_ns} ns: {message}')
            self._dropped_last = True
            self._predict_only(frame, ('dropped', message))
            return 0
        before = self._last_problem.reports
        fi = self._decoder.decode(frame)
        if fi is None:  # unreadable image or camera_info: answered like an unassembled frame
            kind, reason = (self._last_problem.last if self._last_problem.reports != before
                            else ('bad_frame', 'the frame cannot be decoded'))
            self._predict_only(frame, (kind, reason))
            return 0
        if frame.mask_deadline_ns is not None and fi.mask is None:
            fi = dataclasses.replace(fi, late_mask=functools.partial(
                self._await_mask, frame, fi.rgb.shape[:2]))
        t_input = time.monotonic_ns()
        cpu_start = time.thread_time()
        if self.session.pending_initial_poses:
            # An initial pose in another frame is looked up in TF, under the input lock; not
            # the step, whose late mask needs that lock.
            with self._lock:
                self.session.apply_initial_poses(fi.stamp_ns, frame.frame_id)
        skip = ()
        if (live and (0.0 < cfg.live_behind_s < behind_s or skip_over)
                and cfg.live_behind_skip):
            skip = cfg.live_behind_skip
            why = ('' if 0.0 < cfg.live_behind_s < behind_s else
                   f' (live_budget_s: with them it would end after '
                   f'{cfg.live_budget_s * 1e3:.0f} ms)')
            with self._lock:
                self.problems.report('behind', f'frame {frame.stamp_ns} ns started '
                                     f'{behind_s * 1e3:.1f} ms after its arrival: without '
                                     f'{", ".join(skip)}{why}')
        # (an initialising step iterates more: not a cost of tracking, for live_budget_s)
        initialising = self.session.tracker.status == TrackStatus.INITIALISING
        result = self.session.step(fi, frame.frame_id, apply_initial_poses=False, skip=skip)
        if result is None:
            return 0
        t_track = time.monotonic_ns()
        track_cpu = time.thread_time() - cpu_start
        latency = {'wait': (t_start - frame.arrival_ns) / 1e9, 'input': (t_input - t_start) / 1e9}
        if reception is not None:
            latency = {'reception': reception, **latency}
        latency.update({('track' if k == 'total' else k): v for k, v in result.latency_s.items()})
        latency['track_cpu'] = track_cpu
        if result.status != TrackStatus.LOST or self.config.publish_lost:
            self._publish(self._tf_pub, track_result_to_tf(result, frame.frame_id,
                                                           self.config.object_frame))
            self._publish(self._pose_pub, track_result_to_pose(result, frame.frame_id))
        t_publish = time.monotonic_ns()
        latency['publish'] = (t_publish - t_track) / 1e9
        latency['total'] = (t_publish - frame.arrival_ns) / 1e9
        if reception is not None:
            latency['end_to_end'] = reception + latency['total']
        self._publish(self._track_pub, track_result_to_tracked_object(
            result, frame.frame_id, self.config.object_frame, latency_s=latency))
        if self.config.publish_markers:
            self._publish_markers(result, frame, fi)
        if self.config.debug_image:
            self._publish_debug_image(result, frame, fi)
        # what the step left for the next frame, now that this one is answered
        self.session.tracker.finish_pending()
        if not initialising:
            self._step_cost_s[bool(skip)].append(
                latency['total'] - latency['wait'] - latency.get('mask_wait', 0.0))
        self.processing_s.append((time.monotonic_ns() - t_start) / 1e9)
        del self.processing_s[:-10 * _LATENCY_WINDOW]
        self._latency_total_s.append(latency['total'])
        return 1

    def _over_budget(self, behind_s: float) -> tuple[bool, bool]:
        """live_budget_s, for a frame ``behind_s`` after its arrival: whether a step with all
        measurements, and whether one skipping ``live_behind_skip``, would end after the budget
        (each at the p75 of its last steps). A kind with fewer than 5 steps yet decides
        nothing: no skip before 5 full steps, no drop before 5 skipping ones (the skips come
        first), unless nothing is skipped (``live_behind_skip`` empty: a skipping step is a
        full one)."""
        budget = self.config.live_budget_s
        if budget <= 0.0:
            return False, False
        p75 = {k: float(np.percentile(v, 75)) if len(v) >= _COST_MIN_STEPS else None
               for k, v in self._step_cost_s.items()}
        full = p75[False]
        skipping = p75[True] if self.config.live_behind_skip else full
        return (full is not None and behind_s + full > budget,
                skipping is not None and behind_s + skipping > budget)

    def _await_mask(self, frame: AssembledFrame, size_hw: tuple[int, int]) -> np.ndarray | None:
        """The mask of a frame released before it (``Frame.late_mask``, called by the tracker in
        the worker thread): waits for it until ``frame.mask_deadline_ns``; None, counted as
        ``missing_mask``, when it has not come by then."""
        while True:
            self._mask_arrived.clear()
            with self._lock:
                msg = self._assembler.take_mask(frame.stamp_ns)
            if msg is not None:
                _, undistorter = self._decoder.camera_for(frame.camera_info)
                return self._decoder.decode_mask(msg, frame.stamp_ns, size_hw, undistorter)
            remaining_ns = frame.mask_deadline_ns - time.monotonic_ns()
            if remaining_ns <= 0 or self._stop.is_set():
                self.problems.report('missing_mask', f'frame {frame.stamp_ns} ns: no mask with '
                                                     'its stamp arrived in time')
                return None
            self._mask_arrived.wait(remaining_ns / 1e9)

    def _predict_only(self, frame: AssembledFrame,
                      problem: tuple[str, str] | None = None) -> None:
        """A frame that cannot be assembled or decoded (``problem``: (kind, message); default
        the frame's fatal problem), after initialisation: the tracker's predict-only estimate
        (status kept, reason ``'predict only: [kind] ...'``, a grown covariance; for a dropped
        frame the hand-driven predict at its stamp, when joint states and TF have it), published
        like a tracked one. Not for an image out of time order (a duplicate or a step back: the
        image it repeats is answered) nor before initialisation (no estimate: only the problem
        is reported)."""
        if problem is None:
            fatal = next((p for p in frame.problems if p.fatal), None)
            problem = None if fatal is None else (fatal.kind, fatal.message)
        if problem is None or problem[0] == 'time_backwards' or not frame.frame_id:
            return
        kind, message = problem
        q = T_cam_base = None
        if kind == 'dropped':  # its joint states and TF are here: the hand-driven predict
            with self._lock:
                try:
                    q = self._joints.lookup(frame.stamp_ns).q
                    T_cam_base = self._tf.lookup_transform(frame.frame_id, self._hand_root,
                                                           frame.stamp_ns)
                except (InputError, TransformError):
                    q = T_cam_base = None
        result = self.session.predict_only(frame.stamp_ns,
                                           ' '.join(f'[{kind}] {message}'.split()),
                                           q=q, T_cam_base=T_cam_base)
        if result is None:
            return
        if result.status != TrackStatus.LOST or self.config.publish_lost:
            self._publish(self._tf_pub, track_result_to_tf(result, frame.frame_id,
                                                           self.config.object_frame))
            self._publish(self._pose_pub, track_result_to_pose(result, frame.frame_id))
        self._publish(self._track_pub, track_result_to_tracked_object(
            result, frame.frame_id, self.config.object_frame))

    # -- outputs -------------------------------------------------------------------------------
    def _publish(self, publisher: Any, msg: Any) -> None:
        if self._publish_hook is not None:
            self._publish_hook(publisher.topic_name, msg)
        else:
            publisher.publish(msg)

    def _publish_debug_image(self, result: TrackResult, frame: AssembledFrame,
                             fi: Frame) -> None:
        """The outline and contacts over the image, at most once per debug_image_period_s and
        only while someone listens (or a publish hook captures)."""
        now = time.monotonic()
        if now - self._debug_sent < self.config.debug_image_period_s:
            return
        if self._publish_hook is None and self._debug_pub.get_subscription_count() == 0:
            return
        self._debug_sent = now
        img = marker_msgs.debug_overlay(fi.rgb, fi.camera, result.T_cam_obj,
                                        self.tracker.scene.renderer, result.contacts.points_hand,
                                        tracking=result.status == TrackStatus.TRACKING)
        self._publish(self._debug_pub, numpy_to_image(img, 'rgb8', result.stamp_ns,
                                                      frame.frame_id))

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
        silent, stalled, gone = self.input_silence(now)
        if stalled:
            level = max(level, DiagnosticStatus.WARN)
        if gone:
            level = DiagnosticStatus.ERROR
        message = state + (f' ({reason})' if reason else '')
        if gone:
            message += '; no ' + ', '.join(f'{k} for {silent[k]:.1f} s' for k in gone)
        if stalled:
            message += '; stalled: ' + ', '.join(f'{k} ({silent[k]:.1f} s)' for k in stalled)
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
            'frames_behind': self.problem_counts['behind'],
            'frames_pending': self._assembler.pending_count,
            'latency_total_p50_ms': _percentile(lat, 50),
            'latency_total_p99_ms': _percentile(lat, 99),
            'processing_p50_ms': _percentile(proc, 50),
            'processing_p99_ms': _percentile(proc, 99),
        }
        values.update({f'rate_{k}_hz': round(v, 2) for k, v in rates.items()})
        values.update({f'silent_{k}_s': round(v, 2) for k, v in silent.items()})
        values['image_qos_reliability'] = self.image_reliability
        values['dds_transports'] = dds.describe_transports(os.environ)
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

    def input_silence(self, now: float | None = None
                      ) -> tuple[dict[str, float], list[str], list[str]]:
        """Seconds since each watched input's last message (since start-up for one never
        seen; the mask only once seen), and the inputs silent for ``input_stall_s`` (stalled,
        WARN) and for ``input_gone_s`` (gone, ERROR)."""
        now = time.monotonic() if now is None else now
        silent = {}
        for name in _WATCHED:
            if name == 'mask' and (not self.config.input.mask_topic
                                   or name not in self._last_seen):
                continue
            if name in ('image', 'camera_info') and not self._camera_streams and \
                    name not in self._last_seen:
                continue
            silent[name] = now - self._last_seen.get(name, self._start_time)
        gone = [k for k, v in silent.items() if v >= self.config.input_gone_s]
        stalled = [k for k, v in silent.items()
                   if self.config.input_stall_s <= v < self.config.input_gone_s]
        return silent, stalled, gone

    # -- service and parameters ---------------------------------------------------------------
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response
                  ) -> Trigger.Response:
        """Re-initialise from the last initial pose; input buffers start afresh (time may have
        jumped back, e.g. a bag played again)."""
        with self._step_lock, self._lock:
            try:
                self.session.reset()
            except NotInitialisedError as exc:
                response.success, response.message = False, str(exc)
                return response
            self._assembler.clear()
            self._joints.clear()
            self._tf.clear()
            self._inputs.restore_static()
            self._reception_s.clear()
        response.success = True
        response.message = 're-initialised from the last initial pose; input buffers cleared'
        self.get_logger().info(response.message)
        return response

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        changes = {k: v for k, v in changed_values(params).items() if k in TRACKER_NODE_SCHEMA}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            self._new_config = self.config.updated(changes)
        except InputError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: list) -> None:
        new, self._new_config = self._new_config, None
        if new is None:
            return
        with self._step_lock, self._lock:
            old, self.config = self.config, new
            self.tracker.config = new.tracker
            self._assembler.config = self._assembly_config(new)
            self.session.stamp_tolerance_ns = self._assembler.config.stamp_tolerance_ns
            if new.initial_pose and new.initial_pose != old.initial_pose:
                self.session.add_initial_pose(
                    InitialPose(0, '', pose_vector_to_matrix(new.initial_pose)))
        self.get_logger().info('parameters changed: ' + ', '.join(
            f'{name}={value}' for name, value in changed_values(params).items()))


def _stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _percentile(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if len(values) else float('nan')


def main(args: list[str] | None = None) -> int:
    """``tracker_node`` console script: returns the exit status (0 ok, 1 start-up error)."""
    return run_node('tracker_node', TrackerNode, args=args)


if __name__ == '__main__':
    sys.exit(main())
