"""Tracking: the tracker's options (one schema for the tracker node and ``handypriors track``),
the tracker built from them (:func:`load_tracker`, the node's and the job's), and the offline job.

``handypriors track BAG --object MESH --out OUT_BAG`` (:func:`run_track`): the bag is read by
the one offline reader (:class:`~handypriors_ros.bag.sequence.FrameReader`: the frame
assembler in replay mode, every image in stamp order, deterministic), each frame is tracked by
a :class:`~handypriors_ros.core.tracking.session.TrackingSession` (the tracker node's too: the
same initial-pose handling, the same problem counting), and the estimates are written to
OUT_BAG (MCAP, atomically): ``/tf``, the pose (``object_pose_topic``) and the TrackedObject
(``track_topic``) per tracked image, logged at the image stamp, as the node publishes them.
Without ``initial_pose`` the bag's ``/handypriors/initial_pose`` messages initialise the
tracker at the first frame at or after their stamp.

Options that only mean something live (``mode``, QoS, live waits, markers, ...) are accepted in
a parameters file, so that the node's config/tracker.yaml works here too; set to another value
than the default they are reported as having no effect (:attr:`TrackJob.live_only`).
"""
from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from handypriors_ros import interfaces
from handypriors_ros.core.errors import InputError
from handypriors_ros.core.frames import MODES, AssemblyConfig, HandNaming
from handypriors_ros.core.tracking.config import (APPEARANCE_METHODS, DYNAMICS, MEASUREMENTS,
                                                  TrackerConfig)
from handypriors_ros.core.tracking.measurements import measurement_names
from handypriors_ros.jobs.options import (DEVICE, OBJECT_FRAME, OBJECT_MESH, OBJECT_SCALE,
                                          InputOptions, check_initial_pose, initial_pose_option,
                                          input_options, load_object, open_input_bag,
                                          pose_vector_to_matrix, resolve_device)
from handypriors_ros.jobs.schema import Option, Schema
from handypriors_ros.jobs.stop import StopRequest

if TYPE_CHECKING:
    from handypriors_ros.core.models.kinematics import HandKinematics
    from handypriors_ros.core.models.object_model import ObjectModel
    from handypriors_ros.core.tracking.tracker import ObjectTracker

Log = Callable[[str], None]
RENDERERS = ('auto', 'nvdiffrast', 'soft')
MARKER_MESHES = ('triangle_list', 'mesh_resource')
#: Accepted image QoS reliabilities (handypriors_ros.ros.qos.RELIABILITY_CHOICES + 'auto').
RELIABILITIES = ('auto', 'reliable', 'best_effort')
#: The node's executor (handypriors_ros.ros.spin.make_executor).
EXECUTORS = ('auto', 'events', 'single_threaded')
#: measurements value that means "no measurement" (an empty string array cannot be set).
NO_MEASUREMENT = 'none'
NODE = 'the node: mode, renderer, outputs, live inputs, threads'
TRACKER = 'tracker (TrackerConfig, handypriors_ros/core/tracking/config.py)'
JOB = 'the track job'

# --------------------------------------------------------------------------------------------
# declarations
# --------------------------------------------------------------------------------------------
_RENDERER = Option(
    'renderer', 'str', 'auto', 'backend of the tracker\'s renderer: auto (nvdiffrast when the '
    'device is CUDA and nvdiffrast imports, else the soft z-buffer), soft (the soft z-buffer '
    'on the device) or nvdiffrast (CUDA only)',
    choices=RENDERERS, group=NODE)
_MODE = Option(
    'mode', 'str', 'live', 'live: newest frame only, dropped frames counted; replay: every frame '
    'in stamp order (handypriors track always replays)', choices=MODES, offline=False,
    group=NODE)
_NODE_OPTIONS = (
    Option('object_pose_topic', 'str', interfaces.relative(interfaces.OBJECT_POSE_TOPIC),
           'output: pose with covariance (geometry_msgs/PoseWithCovarianceStamped); relative '
           f'names are in the node\'s namespace ({interfaces.NAMESPACE} by default; bags: there)',
           group=NODE),
    Option('track_topic', 'str', interfaces.relative(interfaces.TRACK_TOPIC),
           'output: handypriors_ros/TrackedObject', group=NODE),
    Option('markers_topic', 'str', interfaces.relative(interfaces.MARKERS_TOPIC),
           'output: RViz MarkerArray', offline=False, group=NODE),
    Option('image_qos_reliability', 'str', 'auto', 'reliability of the image, camera_info '
           "and mask subscriptions: auto = the publishers' (queried when the subscription is "
           'made; none yet: best_effort, which matches any publisher, made reliable once only '
           'reliable publishers are seen); qos_overrides.<topic>.subscription.reliability wins',
           choices=RELIABILITIES, offline=False, group=NODE),
    Option('image_qos_depth', 'int', 0, 'keep-last depth of the image, camera_info and mask '
           'subscriptions [messages]; 0 = auto: 2 in live mode (an image that comes before the '
           'one ahead of it was taken is kept: answered, or dropped and counted, never lost '
           'unseen), 10 in replay', range=(0, 100),
           offline=False, group=NODE),
    Option('joint_states_qos_reliability', 'str', 'auto', 'reliability of the joint states '
           'subscription: auto = best_effort in live mode (a lost sample is interpolated over; a '
           'reliable stream waits for a lost sample to be repaired, up to seconds on a loaded '
           'machine: measured), reliable in replay (every sample)', choices=RELIABILITIES,
           offline=False, group=NODE),
    Option('tf_qos_reliability', 'str', 'auto', 'reliability of the /tf subscription (/tf_static '
           'stays reliable, transient local): auto = best_effort in live mode, reliable in replay '
           '(as joint_states_qos_reliability); qos_overrides./tf.subscription.reliability wins',
           choices=RELIABILITIES, offline=False, group=NODE),
    Option('joint_states_qos_depth', 'int', 50, 'keep-last depth of the joint states '
           'subscription [messages] (50 = 0.5 s at 100 Hz)', range=(1, 1000), offline=False,
           group=NODE),
    Option('publish_lost', 'bool', False, 'also publish /tf and the pose for frames whose '
           'status is LOST (the TrackedObject is always published)', read_only=False,
           offline=False, group=NODE),
    Option('debug_image', 'bool', False, 'publish debug_image_topic: the tracked outline and '
           'the contacts drawn over the camera image (throttled)', read_only=False,
           offline=False, group=NODE),
    Option('debug_image_topic', 'str', 'debug_image', 'output: debug image (rgb8)',
           offline=False, group=NODE),
    Option('debug_image_period_s', 'float', 0.5, 'at most one debug image per this period '
           '[s]', read_only=False, range=(0.0, 60.0), offline=False, group=NODE),
    Option('input_stall_s', 'float', 1.0, 'diagnostics WARN when an input (image, camera_info, '
           'joint_states, tf; mask once seen) has been silent this long [s]', read_only=False,
           range=(0.01, 600.0), offline=False, group=NODE),
    Option('input_gone_s', 'float', 5.0, 'diagnostics ERROR when an input has been silent this '
           'long (or never came this long after start) [s]', read_only=False,
           range=(0.01, 3600.0), offline=False, group=NODE),
    Option('replay_idle_s', 'float', 0.5, 'replay: a frame whose inputs never come leaves this '
           'long after it arrived (end of a stream) [s]', read_only=False, range=(0.0, 60.0),
           offline=False, group=NODE),
    Option('live_wait_s', 'float', 0.05, 'live: a frame waits at most this after its arrival '
           'for a joint state after its stamp and for its TF (also while the node drains the '
           'messages that queued up during the previous frame) [s]', read_only=False,
           range=(0.0, 1.0), offline=False, group=NODE),
    Option('live_hold_s', 'float', 0.02, 'live: a frame whose stamp is at most this after the '
           'newest joint state (and the newest TF of the hand root) uses them at once instead of '
           'waiting for ones at or after its stamp; 0 = always wait (interpolation only, up to '
           'live_wait_s) [s]', read_only=False, range=(0.0, 0.1), offline=False, group=NODE),
    Option('live_mask_wait_s', 'float', -1.0, 'live: a frame waits at most this after its '
           "arrival for its mask (a segmenter's mask comes after its image); < 0 = auto: as "
           "long as the recent masks took after their images (90th percentile + 5 ms, at most "
           '50 ms; no wait before the first mask or while masks stop coming); 0 = a mask is '
           'used only if already there [s]', read_only=False, range=(-1.0, 1.0), offline=False,
           group=NODE),
    Option('live_behind_s', 'float', 0.008, 'live: a frame whose step starts more than this '
           'after its arrival (the tracker is behind: a slow step, a loaded machine) skips the '
           'measurements in live_behind_skip, so that the next frames catch up; 0 = never '
           '(measured on 2 cores while slow: p99 image -> TF 44-58 ms against 62-74) [s]',
           read_only=False, range=(0.0, 1.0), offline=False, group=NODE),
    Option('live_drop_s', 'float', 0.025, 'live: a frame whose step would start more than '
           'this after its arrival is answered at once with the hand-driven prediction (counted '
           'as dropped; never two frames in a row), so that the next frame is tracked on time; '
           '0 = never [s]', read_only=False, range=(0.0, 1.0), offline=False, group=NODE),
    Option('live_budget_s', 'float', 0.04, 'live: the time from an image\'s arrival to its '
           'answer that a step should fit in: a frame whose step, at the p75 of the last '
           '30 steps of its kind, would end later skips live_behind_skip, and one that '
           'would end later even so is answered with the prediction like live_drop_s (never '
           'two in a row); 0 = off (only live_behind_s and live_drop_s). Measured on 2 cores '
           'with a 1-core load beside: p99 image -> TF 43-60 ms against 52-81 [s]',
           read_only=False, range=(0.0, 1.0), offline=False, group=NODE),
    Option('live_behind_skip', 'str_list', ('appearance',), 'live: the measurements a frame '
           'behind (live_behind_s) does not make; the appearance is the costliest (a textured '
           f'render, keypoint detection and matching); [{NO_MEASUREMENT}] = none',
           read_only=False, offline=False, group=NODE),
    Option('tf_cache_s', 'float', 10.0, 'how long TF history is kept [s] (offline: all of it)',
           range=(0.1, 600.0), offline=False, group=NODE),
    Option('max_pending_frames', 'int', 30, 'most images held waiting for their inputs; older '
           'ones are dropped and counted (offline: no limit)', range=(1, 1000), offline=False,
           group=NODE),
    Option('executor', 'str', 'auto', 'the rclpy executor the node spins on: auto = events '
           "where rclpy has one (rclpy.experimental.EventsExecutor, Kilted on: its callbacks run "
           'from C++, measured 2026-12-06 on 2 cores: the node step 40 -> 23 ms wall, image -> '
           'TF p50 61 -> 42 ms), else single_threaded; the events executor passes no message '
           "info, so the 'reception' and 'end_to_end' latency stages are absent with it",
           choices=EXECUTORS, offline=False, group=NODE),
    Option('torch_threads', 'int', 1, "torch intra-op threads; 0 = torch's default (on 2 cores "
           "torch's 2 threads stall under load: measured, PLATFORM.md)", range=(0, 256),
           group=NODE),
    Option('publish_markers', 'bool', True, 'publish RViz markers (object mesh, contacts, '
           'fingertips)', read_only=False, offline=False, group=NODE),
    Option('marker_mesh', 'str', 'triangle_list', 'object mesh marker: triangle_list (the render '
           'proxy, works everywhere) or mesh_resource (file:// URI of object_mesh)',
           choices=MARKER_MESHES, offline=False, group=NODE),
    Option('diagnostics_period_s', 'float', 1.0, 'period of /diagnostics [s]', range=(0.05, 60.0),
           offline=False, group=NODE),
)

# TrackerConfig fields: description with units, range.
_TRACKER_DOCS: dict[str, tuple[str, tuple[float, float] | None]] = {
    'dynamics': ("motion model of the predict step: contact (quasistatic fit of the contact "
                 "points' motion, paper eq. 9, with fallbacks), hand_rigid (moves with the hand "
                 "root) or constant (observation only)", None),
    'contact_threshold_m': ('hand points closer than this to the object are contacts [m]',
                            (0.0, 0.1)),
    'near_hand_m': ('without a full contact fit, an object closer than this to the hand moves '
                    'with the hand root [m]', (0.0, 1.0)),
    'q_contact': ('process noise std per frame with a full contact fit: x y z [m], rx ry rz '
                  '[rad]', None),
    'q_hand_rigid': ('process noise std per frame when the object moves with the hand root: '
                     'x y z [m], rx ry rz [rad]', None),
    'q_constant': ('process noise std per frame of the constant-pose model: x y z [m], '
                   'rx ry rz [rad]', None),
    'measurements': (f'measurement types used, applied in this order, any of '
                     f'{", ".join(MEASUREMENTS)}; '
                     f'[{NO_MEASUREMENT}] = none (predict only)', None),
    'contour_points': ('most silhouette points of the contour measurement per frame',
                       (8, 100000)),
    'contour_sigma_px': ('independent noise std of a contour point [px]', (1e-3, 1e3)),
    'contour_common_px': ('noise std common to the whole contour [px]: a segmenter\'s '
                          'boundary offset (erosion or dilation)', (0.0, 1e3)),
    'contour_outlier_px': ('contour points with a larger residual at the prior are dropped '
                           '(segmenter errors) [px]', (1e-3, 1e4)),
    'contour_ignores_symmetry_axis': ('for a surface of revolution (a can), the contour update '
                                      'does not turn the object about its axis (the silhouette '
                                      'cannot see that turn)', None),
    'center_sigma_px': ('noise std of the object-centre measurement [px]', (1e-3, 1e3)),
    'fingertip_sigma_m': ('noise std of the fingertip contact distance [m]', (1e-6, 1.0)),
    'penetration_sigma_m': ('noise std of the non-penetration measurement: the deepest sample '
                            'of each hand link inside the object [m]', (1e-6, 1.0)),
    'penetration_tolerance_m': ('the non-penetration measurement pushes a hand sample out of '
                                'the object when it is deeper than this [m]', (0.0, 0.1)),
    'iterations': ('Gauss-Newton iterations of the contour update per frame while tracking '
                   '(each re-renders the object)', (1, 100)),
    'init_iterations': ('Gauss-Newton iterations of the contour update per frame while '
                        'initialising or lost', (1, 100)),
    'roi_size_px': ('the region of interest around the object is rendered at most this size '
                    '[px]', (32, 4096)),
    'parallel_prepare': ('prepare measurements in a worker thread while this one works (the '
                         'appearance render and matching, the contour\'s distance transform, '
                         'the next contact query; same results; False: all in one thread)',
                         None),
    'gate_probability': ('Mahalanobis gate: chi-square probability of accepting a consistent '
                         'measurement (read at start-up)', (0.5, 1.0)),
    'initial_std': ('std of the initial pose: x y z [m], rx ry rz [rad]', None),
    'lost_after_frames': ('consecutive frames without an accepted image measurement (or with '
                          'silhouettes that disagree) before the status is LOST [frames]',
                          (1, 100000)),
    'min_iou': ('the predicted silhouette must overlap the observed mask at least this much '
                '(intersection over union)', (0.0, 1.0)),
    'max_position_std_m': ('position std beyond which the track is LOST [m]', (1e-6, 100.0)),
    'max_penetration_m': ('the hand may be at most this deep inside the object at an estimate '
                          '[m]; deeper is evidence of divergence', (1e-6, 1.0)),
    'max_hand_gap_m': ('a held object farther than this from every hand point is evidence of '
                       'divergence [m]', (1e-6, 10.0)),
    'divergence_nis_probability': ('the contour NIS above this chi-square quantile is '
                                   'evidence of divergence', (1e-6, 0.999999999)),
    'model_std': ('model-mismatch std as a pose error, x y z [m], rx ry rz [rad]: added to '
                  'the published covariance (and to the noise of model_noise_measurements, '
                  'H M H^T)', None),
    'model_noise_measurements': ('image measurements whose noise gains the model-mismatch '
                                 'term H M H^T in the filter; '
                                 f'[{NO_MEASUREMENT}] = none (model_std in the published '
                                 'covariance only)', None),
    'appearance_method': ('appearance measurement: keypoints (ORB matches between the '
                          'rendered texture and the image) or direct (normalised intensity '
                          'alignment)', None),
    'sdf_range_m': ("the object's signed distance is resolved this far from its surface "
                    "[m] (at least half the object's smallest side and 5 mm beyond "
                    'contact_threshold_m, near_hand_m and max_hand_gap_m)', (1e-3, 10.0)),
    'appearance_roi_px': ('largest side of the appearance render [px]', (32, 4096)),
    'appearance_sigma_px': ('noise std of an appearance keypoint [px]', (1e-3, 1e3)),
    'appearance_sigma_intensity': ('noise std of a normalised intensity (direct appearance)',
                                   (1e-3, 1e3)),
    'appearance_points': ('most pixels of the direct appearance method', (3, 100000)),
    'appearance_min_points': ('fewer appearance matches or pixels: no appearance update',
                              (3, 100000)),
    'appearance_max_shift_px': ('an appearance match moves at most this far from the '
                                'prediction [px]', (1e-3, 1e4)),
    'appearance_border_px': ('appearance keypoints are detected only this far inside the '
                             'rendered and the observed silhouette [px]', (0.0, 1000.0)),
    'appearance_rerender_deg': ('the appearance render and its keypoints are reused while the '
                                'view has turned less than this since [deg]; 0 = render every '
                                'frame', (0.0, 180.0)),
    'reinit_min_iou': ('a re-initialisation hypothesis must overlap the mask at least this much '
                       '(intersection over union)', (0.0, 1.0)),
    'segmenter': ('object mask source: auto (the mask topic when a mask comes, else the built-in '
                  'colour segmenter), topic (never the built-in one) or builtin', None),
}
_TRACKER_READ_ONLY = ('gate_probability', 'sdf_range_m')  # read at construction
_TRACKER_CHOICES = {'dynamics': DYNAMICS, 'segmenter': ('auto', 'topic', 'builtin'),
                    'appearance_method': APPEARANCE_METHODS}


def tracker_config_options() -> tuple[Option, ...]:
    """One option per :class:`TrackerConfig` field, named after it, defaults from it (a field
    added to the core appears here by itself)."""
    options = []
    defaults = TrackerConfig()
    for f in dataclasses.fields(TrackerConfig):
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            kind = 'bool'
        elif isinstance(value, int):
            kind = 'int'
        elif isinstance(value, float):
            kind = 'float'
        elif isinstance(value, str):
            kind = 'str'
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            kind, value = 'str_list', tuple(value) or (NO_MEASUREMENT,)
        elif isinstance(value, tuple):
            kind, value = 'float_list', tuple(float(v) for v in value)
        else:
            raise TypeError(f'TrackerConfig.{f.name}: no option type for {type(value)}')
        description, rng = _TRACKER_DOCS.get(
            f.name, (f'TrackerConfig.{f.name} (handypriors_ros/core/tracking/config.py)', None))
        options.append(Option(f.name, kind, value, description,
                              read_only=f.name in _TRACKER_READ_ONLY,
                              choices=_TRACKER_CHOICES.get(f.name), range=rng, group=TRACKER))
    return tuple(options)


#: The tracker node's parameters (config/tracker.yaml); the stable names of INTERFACES.md first.
_INPUTS = input_options(run_time=True)  # hand_urdf, the naming, the topics, the matching
TRACKER_NODE_SCHEMA = Schema('tracker_node', (
    OBJECT_MESH, OBJECT_SCALE, _INPUTS[0], OBJECT_FRAME, DEVICE,
    initial_pose_option(run_time=True), *_INPUTS[1:], _MODE, _RENDERER, *_NODE_OPTIONS,
    *tracker_config_options()))

#: ``handypriors track``: the tracker node's options and the job's own.
TRACK_SCHEMA = Schema('track', (
    Option('bag', 'str', '', 'input rosbag2 (MCAP or sqlite3) with the INTERFACES.md topics',
           cli='BAG', required=True, node=False, group=JOB),
    Option('out_bag', 'str', '', 'output bag (MCAP): /tf, object_pose and track per image',
           cli='--out', metavar='OUT_BAG', required=True, node=False, group=JOB),
    Option('overwrite', 'bool', False, 'replace OUT_BAG if it exists and is a bag written by '
           'handypriors_ros (never anything else, never an input)', cli='--overwrite',
           node=False, group=JOB),
    Option('strict', 'bool', False, 'a truncated bag or an image that cannot be tracked is an '
           'error (default: read up to the damage; such an image is answered LOST with its '
           'reason; both reported)', cli='--strict', node=False, group=JOB),
    *TRACKER_NODE_SCHEMA.options))


def tracker_yaml() -> str:
    """config/tracker.yaml (``python -m handypriors_ros.jobs tracker > config/tracker.yaml``)."""
    return TRACKER_NODE_SCHEMA.defaults_yaml([
        'Defaults of every tracker_node parameter (declared with type, range and description',
        'in handypriors_ros/jobs/track.py; `ros2 param describe /tracker_node <name>`).',
        'Generated: python -m handypriors_ros.jobs tracker > config/tracker.yaml',
        'Use: tracker_node --ros-args --params-file config/tracker.yaml '
        '-p object_mesh:=/path/mesh.ply',
        '     handypriors track BAG --object MESH --out OUT --params config/tracker.yaml',
        '[start-up]: read once at start-up (read-only); the others may be set at run time.'])


# --------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrackerOptions:
    """What the tracker node and ``track`` read from their options (descriptions:
    :data:`TRACKER_NODE_SCHEMA`). Durations in seconds; ``initial_pose`` is () or 7 values;
    ``input`` holds the hand and input options, ``tracker`` the TrackerConfig fields."""
    object_mesh: str
    object_scale: float
    object_frame: str
    device: str
    renderer: str
    mode: str
    initial_pose: tuple[float, ...]
    input: InputOptions
    object_pose_topic: str
    track_topic: str
    markers_topic: str
    image_qos_reliability: str
    image_qos_depth: int
    joint_states_qos_reliability: str
    tf_qos_reliability: str
    joint_states_qos_depth: int
    publish_lost: bool
    debug_image: bool
    debug_image_topic: str
    debug_image_period_s: float
    input_stall_s: float
    input_gone_s: float
    replay_idle_s: float
    live_wait_s: float
    live_mask_wait_s: float
    live_hold_s: float
    live_behind_s: float
    live_drop_s: float
    live_budget_s: float
    live_behind_skip: tuple[str, ...]
    tf_cache_s: float
    max_pending_frames: int
    executor: str
    torch_threads: int
    publish_markers: bool
    marker_mesh: str
    diagnostics_period_s: float
    tracker: TrackerConfig
    values: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> TrackerOptions:
        """Validate option values (name -> value; missing ones take their defaults).

        Raises:
            InputError: naming the option, what was expected and what came.
        """
        v = TRACKER_NODE_SCHEMA.validate({k: values[k] for k in values
                                          if k in TRACKER_NODE_SCHEMA})
        check_initial_pose(v['initial_pose'])
        for name in ('object_frame', 'object_pose_topic', 'track_topic', 'markers_topic',
                     'debug_image_topic'):
            if not v[name]:
                raise InputError(f'{name}: expected a non-empty string, got {v[name]!r}')
        tracker_values = {}
        for f in dataclasses.fields(TrackerConfig):
            value = v[f.name]
            if (f.name in ('measurements', 'model_noise_measurements')
                    and value == (NO_MEASUREMENT,)):
                value = ()
            tracker_values[f.name] = value
        tracker = TrackerConfig(**tracker_values)  # InputError names the field = the option
        skip = () if tuple(v['live_behind_skip']) == (NO_MEASUREMENT,) else tuple(
            v['live_behind_skip'])
        unknown = sorted(set(skip) - set(measurement_names()))
        if unknown:
            raise InputError(f'live_behind_skip: unknown measurement(s) {", ".join(unknown)}; '
                             f'expected any of {", ".join(measurement_names())} or '
                             f'[{NO_MEASUREMENT}]')
        v = {**v, 'live_behind_skip': skip}
        own = {f.name for f in dataclasses.fields(cls)} - {'input', 'tracker', 'values'}
        return cls(input=InputOptions.from_values(v), tracker=tracker, values=v,
                   **{name: v[name] for name in own})

    def updated(self, changes: Mapping[str, Any]) -> TrackerOptions:
        """These options with run-time changes, validated as at start-up.

        Raises:
            InputError: an unknown or read-only option, or an invalid value (named).
        """
        for name in changes:
            TRACKER_NODE_SCHEMA.check_change(name)
        return TrackerOptions.from_values({**self.values, **changes})

    def assembly(self, hand_root_frame: str) -> AssemblyConfig:
        """The frame assembler's settings in this mode."""
        live = self.mode == 'live'
        return self.input.assembly(
            hand_root_frame, mode=self.mode,
            wall_wait_s=self.live_wait_s if live else self.replay_idle_s,
            max_pending=self.max_pending_frames, live_mask_wait_s=self.live_mask_wait_s,
            live_hold_s=self.live_hold_s)


@dataclass(frozen=True, eq=False)
class LoadedTracker:
    """A tracker built from :class:`TrackerOptions` (:func:`load_tracker`).

    Attributes:
        object_model, hand: the models; urdf_path: the hand's URDF.
        naming: the hand's names on the robot.
        tracker: the tracker. device: where it was asked to compute (``cpu``/``cuda``).
    """
    object_model: ObjectModel
    hand: HandKinematics
    urdf_path: str
    naming: HandNaming
    tracker: ObjectTracker
    device: str


def load_tracker(options: TrackerOptions, *, info: Log | None = None,
                 warn: Log | None = None) -> LoadedTracker:
    """Build the tracker of the options: torch threads, device, object model, hand, naming.

    Raises:
        InputError: cuda or nvdiffrast requested without a GPU, a bad joint_name_map.
        ModelError: the mesh or URDF cannot be read (naming the option and path).
    """
    import torch

    from handypriors_ros.core.tracking.tracker import ObjectTracker

    if options.torch_threads > 0:
        # (OpenCV keeps its own thread count: with 1 thread, OpenCV 5.0's precise
        # distanceTransform differs by ~4e-6 px from run to run, and a replay would no longer
        # be deterministic; measured 2026-12-06)
        torch.set_num_threads(options.torch_threads)
    device = resolve_device(options.device)
    if options.renderer == 'nvdiffrast' and not torch.cuda.is_available():
        raise InputError("renderer: 'nvdiffrast' needs a CUDA device, and "
                         'torch.cuda.is_available() is False (use auto or soft)')
    model = load_object(options.object_mesh, options.object_scale)
    hand = options.input.load_hand()
    naming = options.input.naming(hand.joint_names, hand.root_link)
    tracker = ObjectTracker(model, hand, options.tracker, device=device,
                            renderer=options.renderer)
    if info is not None:
        info(f'device {tracker.device} (requested {options.device}); renderer '
             f'{tracker.scene.renderer.backend} (requested {options.renderer}); torch threads '
             f'{torch.get_num_threads()}')
    # Everything built so far (torch, the ROS wheels, the models: ~370k objects) lives as long
    # as the process: out of the cyclic collector's sight, a full (generation 2) collection no
    # longer pauses some tracker step for ~140-165 ms (measured on the 2-core VM, 2026-12-06:
    # mean step 19.3 -> 16.4 ms over 120 frames of the bench_latency bag).
    gc.collect()
    gc.freeze()
    return LoadedTracker(model, hand, options.input.urdf_path, naming, tracker, device)


# --------------------------------------------------------------------------------------------
# the offline job
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrackJob:
    """One ``handypriors track`` run.

    Attributes:
        bag: input bag. out_bag: output bag. overwrite: replace an existing output bag.
        strict: a truncated bag or an image that cannot be tracked is an error.
        options: the tracker's options (``mode`` is replay whatever they say).
        live_only: ``'name=value'`` of live-only options set to a non-default value (no effect
            offline; reported).
    """
    bag: Path
    out_bag: Path
    options: TrackerOptions
    overwrite: bool = False
    live_only: tuple[str, ...] = ()
    strict: bool = False

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> TrackJob:
        """From :data:`TRACK_SCHEMA` values (e.g. :meth:`Schema.values_from_args`).

        Raises:
            InputError: a bad value (named).
        """
        v = TRACK_SCHEMA.validate(values)
        options = TrackerOptions.from_values(
            {**{k: v[k] for k in v if k in TRACKER_NODE_SCHEMA}, 'mode': 'replay',
             'publish_markers': False})
        return cls(bag=Path(v['bag']), out_bag=Path(v['out_bag']), options=options,
                   overwrite=v['overwrite'], live_only=tuple(TRACK_SCHEMA.live_only_set(v)),
                   strict=v['strict'])


@dataclass(frozen=True, eq=False)
class TrackOutcome:
    """What :func:`run_track` did.

    Attributes:
        out_bag: the output bag. images: images in the bag. frames_tracked: estimates written.
        skipped: images that could not be assembled into a frame or tracked; each is
            answered: after initialisation by the tracker's predict-only estimate (pose, /tf and
            the track topic; status kept, reason ``'predict only: [kind] ...'``, a grown
            covariance), before it on the track topic only, status LOST, reason
            ``'skipped: [kind] ...'``, covariance[0] = -1 (no estimate).
            skipped_kinds: their problem kind -> count. predicted: how many of them got the
            predict-only estimate.
        processing_s: per tracked frame: decoding + tracking + writing [s].
        status_counts: results by status (``tracking``, ``initialising``, ``lost``).
        problems: problem kind -> count. seconds: the whole loop [s].
    """
    out_bag: Path
    images: int
    frames_tracked: int
    processing_s: tuple[float, ...]
    status_counts: dict[str, int]
    problems: dict[str, int]
    seconds: float
    skipped: int = 0
    skipped_kinds: dict[str, int] = field(default_factory=dict)
    predicted: int = 0


def run_track(job: TrackJob, *, progress: Callable[[int, int], None] | None = None,
              info: Log | None = None, warn: Log | None = None,
              stop: StopRequest | None = None) -> TrackOutcome:
    """Track every image of a bag into an output bag (module docstring).

    Args:
        job: what to do.
        progress: called with (images read, images in the bag).
        info, warn: one-line messages (initialisation; problems, throttled per kind).
        stop: polled per image; once requested :class:`~handypriors_ros.jobs.stop.JobStopped`
            is raised and no output is written (the bag is written only when complete).
    Raises:
        InputError, BagError, ModelError: bad input, with a one-line message; nothing is left
            under the output name.
        JobStopped: ``stop`` was requested.

    Every image gets one answer on the track topic: an estimate, or for an image that cannot
    be tracked (no joint states or TF at its stamp, a wrong encoding, time going backwards,
    no initial pose yet, ...) a TrackedObject with status LOST and the reason
    (:func:`~handypriors_ros.jobs.outputs.skipped_result`; no pose or /tf for it).
    """
    from handypriors_ros.bag import BagWriter, check_output_bag
    from handypriors_ros.bag.sequence import FrameReader, SkippedImage
    from handypriors_ros.core.frames import LastProblem
    from handypriors_ros.core.frames import InitialPose, ProblemCounter
    from handypriors_ros.core.tracking.session import TrackingSession
    from handypriors_ros.jobs.outputs import skipped_result, write_messages
    from handypriors_ros.ros.conversions import (track_result_to_pose, track_result_to_tf,
                                                 track_result_to_tracked_object)

    opts = job.options
    bag, out, mesh = job.bag, job.out_bag, Path(opts.object_mesh)
    # Cheap checks first: a wrong path should not wait for the tracker to be built.
    if not bag.exists():
        raise InputError(f'BAG: not found: {bag} (give a rosbag2 folder or .mcap/.db3 file)')
    if not mesh.is_file():
        raise InputError(f'--object: mesh file not found: {mesh}')
    check_output_bag(out, overwrite=job.overwrite, inputs=(bag, mesh), name='--out',
                     flag='--overwrite')
    topics = opts.input.topics()
    counts = open_input_bag(bag)
    n_images = counts.get(topics.image, 0)
    if n_images == 0:
        raise InputError(f'BAG: no images on {topics.image} in {bag} (its topics: '
                         f'{", ".join(sorted(counts)) or "none"}); set image_topic in --params '
                         'if they are recorded under another name')
    from_bag = not opts.initial_pose
    if from_bag and counts.get(topics.initial_pose, 0) == 0:
        raise InputError(f'no initial pose: {bag} has no {topics.initial_pose} message and '
                         '--initial-pose was not given')
    loaded = load_tracker(opts, info=info, warn=warn)
    problems = ProblemCounter(warn)
    last = LastProblem(problems)
    processing: list[float] = []
    skipped_kinds: dict[str, int] = {}
    predicted_count = [0]  # of the skipped images: answered by a predict-only estimate
    camera_frame = ''
    start = time.perf_counter()
    with FrameReader(bag, loaded.naming, topics=topics,
                     assembly=opts.assembly(loaded.naming.hand_root_frame), problems=problems,
                     ignore_child_frames=(opts.object_frame,), strict=job.strict) as reader, \
            BagWriter(out, overwrite=job.overwrite, inputs=(bag, mesh)) as writer:
        session = TrackingSession(loaded.tracker, reader.tf, last,
                                  stamp_tolerance_ns=reader.assembly.stamp_tolerance_ns,
                                  log=info)

        def answer_skipped(stamp_ns: int, frame_id: str, kind: str, reason: str) -> None:
            if job.strict:
                raise InputError(f'--strict: the image at {stamp_ns} ns cannot be tracked: '
                                 f'[{kind}] {reason}; leave out --strict to answer it LOST '
                                 'and go on')
            skipped_kinds[kind] = skipped_kinds.get(kind, 0) + 1
            frame = frame_id or camera_frame
            # After initialisation: the tracker's predict-only estimate (a grown covariance,
            # reason 'predict only: [kind] ...'), written like a tracked one (pose, /tf). Not
            # for an image out of time order (a duplicate or a step back: the reader reports it
            # while the image it repeats may still wait for its joint states, and a predict at
            # its stamp would make the tracker refuse that one).
            predicted = (None if kind == 'time_backwards' else
                         session.predict_only(stamp_ns, ' '.join(f'[{kind}] {reason}'.split())))
            if predicted is not None and frame:
                predicted_count[0] += 1
                t = int(stamp_ns)
                write_messages(writer, [
                    (interfaces.TF_TOPIC, track_result_to_tf(predicted, frame,
                                                             opts.object_frame), t),
                    (interfaces.resolve(opts.object_pose_topic),
                     track_result_to_pose(predicted, frame), t),
                    (interfaces.resolve(opts.track_topic),
                     track_result_to_tracked_object(predicted, frame, opts.object_frame), t)])
                return
            previous = session.last_result
            answer = skipped_result(stamp_ns, kind, reason,
                                    None if previous is None else previous.T_cam_obj)
            write_messages(writer, [(interfaces.resolve(opts.track_topic),
                                     track_result_to_tracked_object(
                                         answer, frame, opts.object_frame),
                                     int(stamp_ns))])

        if opts.initial_pose:
            session.add_initial_pose(InitialPose(0, '', pose_vector_to_matrix(opts.initial_pose)))
        for event in reader.events(session.initialised_for, initial_poses=from_bag,
                                   skipped=True):
            if stop is not None and stop.requested:
                raise stop.stopped(f'{reader.images_read} of {n_images} images read; no output '
                                   f'written ({out} is written only when complete): run the '
                                   'command again')
            if isinstance(event, InitialPose):
                session.add_initial_pose(event)
                continue
            if isinstance(event, SkippedImage):
                answer_skipped(event.stamp_ns, event.frame_id, event.kind, event.reason)
                continue
            camera_frame = camera_frame or event.frame_id
            before = last.reports
            result = session.step(event.frame, event.frame_id)
            if progress is not None:
                progress(reader.images_read, n_images)
            if result is None:
                kind, reason = last.last if last.reports != before else (
                    'bad_frame', 'the tracker gave no estimate')
                answer_skipped(event.frame.stamp_ns, event.frame_id, kind, reason)
                continue
            t_track = time.monotonic_ns()
            latency = {'wait': (event.release_ns - event.arrival_ns) / 1e9,
                       'input': event.decode_s}
            latency.update({('track' if k == 'total' else k): v
                            for k, v in result.latency_s.items()})
            t = result.stamp_ns
            write_messages(writer, [
                (interfaces.TF_TOPIC, track_result_to_tf(result, event.frame_id,
                                                         opts.object_frame), t),
                (interfaces.resolve(opts.object_pose_topic),
                 track_result_to_pose(result, event.frame_id), t)])
            t_written = time.monotonic_ns()
            latency['publish'] = (t_written - t_track) / 1e9
            latency['total'] = (t_written - event.arrival_ns) / 1e9
            write_messages(writer, [(interfaces.resolve(opts.track_topic),
                                     track_result_to_tracked_object(
                                         result, event.frame_id, opts.object_frame,
                                         latency_s=latency), t)])
            processing.append((time.monotonic_ns() - event.release_ns) / 1e9)
        if progress is not None:
            progress(reader.images_read, n_images)
        if session.frames_tracked == 0:
            raise InputError(f'no image of {bag} could be tracked ({problems.summary()}); '
                             'the warnings above say why (e.g. the --*-topic / joint_prefix '
                             'parameters, the initial pose)')
        images = reader.images_read
    return TrackOutcome(out_bag=out, images=images, frames_tracked=session.frames_tracked,
                        processing_s=tuple(processing), status_counts=dict(session.status_counts),
                        problems=dict(problems.counts), seconds=time.perf_counter() - start,
                        skipped=sum(skipped_kinds.values()), skipped_kinds=skipped_kinds,
                        predicted=predicted_count[0])


def summary_lines(outcome: TrackOutcome) -> list[str]:
    """The command line's summary: frames, ms/frame p50/p99, status, problems."""
    ms = np.asarray(outcome.processing_s) * 1000.0
    status = outcome.status_counts
    predicted = outcome.predicted
    skipped = outcome.skipped - predicted  # answered LOST without an estimate
    shown = ', '.join(f'{n} {k}' for k, n in sorted(outcome.problems.items()) if n)
    lines = [
        f'handypriors track: {outcome.images} images -> {outcome.frames_tracked} estimates'
        + (f' and {skipped} LOST answers (images that could not be tracked)' if skipped else '')
        + f' in {outcome.out_bag} ({outcome.seconds:.1f} s)',
        f'  ms/frame: p50 {np.percentile(ms, 50):.1f}, p99 {np.percentile(ms, 99):.1f} '
        f'(input conversion + tracker + output)',
        f'  status (the tracker\'s, per image): tracking {status.get("tracking", 0)}, '
        f'initialising {status.get("initialising", 0)}, lost '
        f'{status.get("lost", 0) + skipped} frames'
        + (f' ({skipped} of them not tracked)' if skipped else ''),
    ]
    unanswered = outcome.images - outcome.frames_tracked - outcome.skipped
    if outcome.skipped:
        kinds = ', '.join(f'{n} {k}' for k, n in sorted(outcome.skipped_kinds.items()))
        lines.append(f'  skipped: {outcome.skipped} images ({kinds}): {predicted} answered by '
                     f'a predict-only estimate (reason "predict only: [kind] ..."), {skipped} '
                     'LOST without an estimate (before initialisation)')
    if unanswered > 0:
        lines.append(f'  without an answer: {unanswered} images (undecodable messages)')
    if shown:
        lines.append(f'  problems: {shown}')
    return lines
