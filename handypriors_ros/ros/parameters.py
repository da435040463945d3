"""The tracker node's parameters: declared once with type, default, range and a description with
units, read into a frozen :class:`TrackerNodeConfig`.

Two groups:
- the node's own parameters (:data:`NODE_PARAMETERS`): model files, frames, topics, QoS, how
  inputs are matched and waited for; the stable names of INTERFACES.md among them;
- every field of :class:`~handypriors_ros.core.tracking.config.TrackerConfig` under its own name
  (:func:`tracker_parameter_specs`; a field added to the core appears here by itself).

Read-only parameters (model and device choices, topics, QoS) are set at start-up; the others may
be changed at run time: :func:`updated_config` validates a change exactly as start-up does, so
an invalid value is rejected with the same message and the old value kept.

Array parameters without a default (``initial_pose``, ``joint_name_map``) are declared by type
only: rclpy cannot type an empty list, and an unset array parameter reads as empty.
"""
from __future__ import annotations

import dataclasses
import math
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)

from handypriors_ros import interfaces
from handypriors_ros.core.errors import InputError
from handypriors_ros.core.tracking.config import DYNAMICS, MEASUREMENTS, TrackerConfig
from handypriors_ros.core.frames import MODES
from handypriors_ros.ros.qos import RELIABILITY_CHOICES

DEVICES = ('auto', 'cpu', 'cuda')
RENDERERS = ('auto', 'nvdiffrast', 'soft')
MARKER_MESHES = ('triangle_list', 'mesh_resource')
#: joint_name_map entry that adds the ROS 1 allegro_hand_ros names (joint_0.0 .. joint_15.0).
ROS1_NAMES = 'allegro_ros1'
#: measurements value that means "no measurement" (an empty string array cannot be set).
NO_MEASUREMENT = 'none'

_S, _D, _I, _B = (ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_DOUBLE,
                  ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_BOOL)
_SA, _DA = ParameterType.PARAMETER_STRING_ARRAY, ParameterType.PARAMETER_DOUBLE_ARRAY


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter's declaration.

    Attributes:
        name: parameter name.
        default: default value; None for an array parameter declared by type only (empty).
        type: ``rcl_interfaces/ParameterType`` constant.
        description: what it does, with units.
        read_only: set at start-up only.
        choices: allowed values of a string parameter (checked when read).
        range: inclusive ``(low, high)`` of a number (checked by rclpy).
    """
    name: str
    default: Any
    type: int
    description: str
    read_only: bool = True
    choices: tuple[str, ...] | None = None
    range: tuple[float, float] | None = None

    def descriptor(self) -> ParameterDescriptor:
        """The rclpy descriptor: type, description (choices appended), read-only, range."""
        text = self.description
        if self.choices:
            text += f' (one of: {", ".join(self.choices)})'
        d = ParameterDescriptor(name=self.name, type=self.type, description=text,
                                read_only=self.read_only)
        if self.range is not None and self.type == _D:
            d.floating_point_range = [FloatingPointRange(
                from_value=float(self.range[0]), to_value=float(self.range[1]), step=0.0)]
        elif self.range is not None and self.type == _I:
            d.integer_range = [IntegerRange(from_value=int(self.range[0]),
                                            to_value=int(self.range[1]), step=1)]
        return d


def _spec(name, default, kind, description, *, rw=False, choices=None, range=None):
    return ParameterSpec(name, default, kind, description, read_only=not rw,
                         choices=None if choices is None else tuple(choices), range=range)


#: The node's own parameters (see the module docstring); defaults as config/tracker.yaml.
NODE_PARAMETERS: tuple[ParameterSpec, ...] = (
    # model and device (read-only)
    _spec('object_mesh', '', _S, 'mesh file of the tracked object (OBJ, PLY, STL, OFF, GLB, '
          'glTF; metres after object_scale); required'),
    _spec('object_scale', 1.0, _D, 'factor from the mesh file\'s units to metres (0.001 for '
          'millimetres)', range=(1e-6, 1e3)),
    _spec('hand_urdf', '', _S, "URDF of the hand; '' = the package's right Allegro hand"),
    _spec('joint_prefix', interfaces.JOINT_PREFIX, _S, 'prefix of the hand\'s joint and link '
          'names on the robot: joint states <prefix>jointFK, TF <prefix>base_link'),
    _spec('hand_root_frame', '', _S, "TF frame of the hand's root link; '' = "
          '<joint_prefix>base_link (a non-Allegro URDF: its root link)'),
    _spec('joint_name_map', None, _SA, "extra joint-state names, each 'incoming:urdf_joint', "
          f"or '{ROS1_NAMES}' for the ROS 1 driver's joint_0.0 .. joint_15.0"),
    _spec('object_frame', interfaces.OBJECT_FRAME, _S, 'child frame of the published object '
          'pose; its parent is the image\'s frame (the camera optical frame)'),
    _spec('device', 'auto', _S, 'where the tracker computes; this version\'s EKF runs on the '
          'CPU (cuda is validated and reported)', choices=DEVICES),
    _spec('renderer', 'auto', _S, 'rasterizer of the tracker; this version renders with the '
          'pure-torch hard rasterizer on the CPU (the choice is validated and reported)',
          choices=RENDERERS),
    _spec('mode', 'live', _S, 'live: newest frame only, dropped frames counted; replay: every '
          'frame in stamp order', choices=MODES),
    _spec('initial_pose', None, _DA, 'initial object pose [x, y, z, qx, qy, qz, qw] in the '
          'camera optical frame [m]; empty = wait for the initial pose topic; setting it at run '
          'time re-initialises the tracker', rw=True),
    # topics (read-only; remapping works too)
    _spec('image_topic', interfaces.IMAGE_TOPIC, _S, 'colour image (rgb8 or bgr8)'),
    _spec('camera_info_topic', interfaces.CAMERA_INFO_TOPIC, _S, 'camera_info of the images'),
    _spec('mask_topic', interfaces.MASK_TOPIC, _S, "object mask (mono8, 255 = object) from an "
          "external segmenter; '' = none"),
    _spec('joint_states_topic', interfaces.JOINT_STATES_TOPIC, _S, 'hand joint states'),
    _spec('initial_pose_topic', interfaces.INITIAL_POSE_TOPIC, _S,
          'initial / re-initialisation pose (geometry_msgs/PoseStamped)'),
    _spec('object_pose_topic', interfaces.OBJECT_POSE_TOPIC, _S,
          'output: pose with covariance (geometry_msgs/PoseWithCovarianceStamped)'),
    _spec('track_topic', interfaces.TRACK_TOPIC, _S, 'output: handypriors_ros/TrackedObject'),
    _spec('markers_topic', interfaces.MARKERS_TOPIC, _S, 'output: RViz MarkerArray'),
    _spec('image_qos_reliability', 'reliable', _S, 'reliability of the image, camera_info and '
          'mask subscriptions (reliable: every frame arrives; a best-effort camera needs '
          'best_effort)', choices=RELIABILITY_CHOICES),
    _spec('image_qos_depth', 0, _I, 'keep-last depth of the image, camera_info and mask '
          'subscriptions [messages]; 0 = auto: 1 in live mode (the newest frame, never a stale '
          'one queued while the previous was tracked), 10 in replay', range=(0, 100)),
    # input matching (run-time settable where safe)
    _spec('stamp_tolerance_s', 0.001, _D, 'camera_info and masks match an image whose stamp '
          'differs by at most this [s]', rw=True, range=(0.0, 0.1)),
    _spec('replay_wait_s', 0.1, _D, 'replay: a frame waits for its mask, joint states, TF and '
          'initial pose until the inputs\' stamps reach its stamp plus this [s]', rw=True,
          range=(0.0, 10.0)),
    _spec('replay_idle_s', 0.5, _D, 'replay: a frame whose inputs never come leaves this long '
          'after it arrived (end of a stream) [s]', rw=True, range=(0.0, 60.0)),
    _spec('live_wait_s', 0.05, _D, 'live: a frame waits at most this after its arrival for a '
          'joint state after its stamp and for its TF (also while the node drains the messages '
          'that queued up during the previous frame) [s]', rw=True, range=(0.0, 1.0)),
    _spec('live_mask_wait_s', 0.0, _D, 'live: a frame waits at most this after its arrival '
          'for its mask; 0 = a mask is used only if already there (a segmenter\'s mask comes '
          'after its image: set its latency to use its masks live) [s]', rw=True,
          range=(0.0, 1.0)),
    _spec('max_joint_age_s', 0.1, _D, 'the newest joint state may be this much older than an '
          'image; older: the stream stopped, the hand is held at its last pose and a warning '
          'reported [s]', rw=True, range=(0.0, 10.0)),
    _spec('tf_tolerance_s', 0.05, _D, 'an image stamp up to this after the newest hand-root TF '
          'uses that TF (TF lags the camera); later: the frame is skipped [s]', rw=True,
          range=(0.0, 1.0)),
    _spec('tf_cache_s', 10.0, _D, 'how long TF history is kept [s]', range=(0.1, 600.0)),
    _spec('max_pending_frames', 30, _I, 'most images held waiting for their inputs; older ones '
          'are dropped and counted', range=(1, 1000)),
    _spec('torch_threads', 1, _I, 'torch intra-op threads; 0 = torch\'s default (on 2 cores '
          'torch\'s 2 threads stall under load: measured, PLATFORM.md)', range=(0, 256)),
    _spec('publish_markers', True, _B, 'publish RViz markers (object mesh, contacts, '
          'fingertips)', rw=True),
    _spec('marker_mesh', 'triangle_list', _S, 'object mesh marker: triangle_list (the render '
          'proxy, works everywhere) or mesh_resource (file:// URI of object_mesh)',
          choices=MARKER_MESHES),
    _spec('diagnostics_period_s', 1.0, _D, 'period of /diagnostics [s]', range=(0.05, 60.0)),
)

# TrackerConfig fields: description with units, range, read-only.
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
    'measurements': (f'measurement types used, any of {", ".join(MEASUREMENTS)}; '
                     f'[{NO_MEASUREMENT}] = none (predict only)', None),
    'contour_points': ('most silhouette points of the contour measurement per frame',
                       (8, 100000)),
    'contour_sigma_px': ('independent noise std of a contour point [px]', (1e-3, 1e3)),
    'contour_common_px': ('noise std common to the whole contour [px]', (0.0, 1e3)),
    'contour_outlier_px': ('contour points with a larger residual at the prior are dropped '
                           '(segmenter errors) [px]', (1e-3, 1e4)),
    'center_sigma_px': ('noise std of the object-centre measurement [px]', (1e-3, 1e3)),
    'fingertip_sigma_m': ('noise std of the fingertip contact distance [m]', (1e-6, 1.0)),
    'iterations': ('Gauss-Newton iterations of the contour update per frame while tracking '
                   '(each re-renders the object)', (1, 100)),
    'init_iterations': ('Gauss-Newton iterations of the contour update per frame while '
                        'initialising or lost', (1, 100)),
    'roi_size_px': ('the region of interest around the object is rendered at most this size '
                    '[px]', (32, 4096)),
    'gate_probability': ('Mahalanobis gate: chi-square probability of accepting a consistent '
                         'measurement (read at start-up)', (0.5, 1.0)),
    'initial_std': ('std of the initial pose: x y z [m], rx ry rz [rad]', None),
    'lost_after_frames': ('consecutive frames without an accepted image measurement (or with '
                          'silhouettes that disagree) before the status is LOST [frames]',
                          (1, 100000)),
    'min_iou': ('the predicted silhouette must overlap the observed mask at least this much '
                '(intersection over union)', (0.0, 1.0)),
    'max_position_std_m': ('position std beyond which the track is LOST [m]', (1e-6, 100.0)),
    'reinit_min_iou': ('a re-initialisation hypothesis must overlap the mask at least this much '
                       '(intersection over union)', (0.0, 1.0)),
    'segmenter': ('object mask source: auto (the mask topic when a mask comes, else the built-in '
                  'colour segmenter), topic (never the built-in one) or builtin', None),
}
_TRACKER_READ_ONLY = ('gate_probability',)  # read when the filter is created
_TRACKER_CHOICES = {'dynamics': DYNAMICS, 'segmenter': ('auto', 'topic', 'builtin')}


def tracker_parameter_specs() -> tuple[ParameterSpec, ...]:
    """One parameter per :class:`TrackerConfig` field, named after it, defaults from it."""
    specs = []
    defaults = TrackerConfig()
    for f in dataclasses.fields(TrackerConfig):
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            kind = _B
        elif isinstance(value, int):
            kind = _I
        elif isinstance(value, float):
            kind = _D
        elif isinstance(value, str):
            kind = _S
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            kind, value = _SA, list(value) or [NO_MEASUREMENT]
        elif isinstance(value, tuple):
            kind, value = _DA, [float(v) for v in value]
        else:
            raise TypeError(f'TrackerConfig.{f.name}: no parameter type for {type(value)}')
        description, rng = _TRACKER_DOCS.get(
            f.name, (f'TrackerConfig.{f.name} (handypriors_ros/core/tracking/config.py)', None))
        specs.append(ParameterSpec(f.name, value, kind, description,
                                   read_only=f.name in _TRACKER_READ_ONLY,
                                   choices=_TRACKER_CHOICES.get(f.name), range=rng))
    return tuple(specs)


def all_parameter_specs() -> tuple[ParameterSpec, ...]:
    """The node's parameters followed by the tracker's."""
    return NODE_PARAMETERS + tracker_parameter_specs()


@dataclass(frozen=True)
class TrackerNodeConfig:
    """What the tracker node reads from its parameters (descriptions: :data:`NODE_PARAMETERS`).

    Durations are seconds; ``initial_pose`` is () or 7 values; ``tracker`` holds the
    TrackerConfig fields.
    """
    object_mesh: str
    object_scale: float
    hand_urdf: str
    joint_prefix: str
    hand_root_frame: str
    joint_name_map: tuple[str, ...]
    object_frame: str
    device: str
    renderer: str
    mode: str
    initial_pose: tuple[float, ...]
    image_topic: str
    camera_info_topic: str
    mask_topic: str
    joint_states_topic: str
    initial_pose_topic: str
    object_pose_topic: str
    track_topic: str
    markers_topic: str
    image_qos_reliability: str
    image_qos_depth: int
    stamp_tolerance_s: float
    replay_wait_s: float
    replay_idle_s: float
    live_wait_s: float
    live_mask_wait_s: float
    max_joint_age_s: float
    tf_tolerance_s: float
    tf_cache_s: float
    max_pending_frames: int
    torch_threads: int
    publish_markers: bool
    marker_mesh: str
    diagnostics_period_s: float
    tracker: TrackerConfig

    def parse_joint_name_map(self) -> tuple[dict[str, str], bool]:
        """``(incoming -> URDF joint name, with_ros1_names)`` from ``joint_name_map``."""
        mapping, ros1 = {}, False
        for entry in self.joint_name_map:
            if entry == ROS1_NAMES:
                ros1 = True
                continue
            incoming, _, model = entry.partition(':')
            mapping[incoming.strip()] = model.strip()
        return mapping, ros1


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f'{name}: expected one of {list(choices)}, got {value!r}')


def config_from_values(values: Mapping[str, Any]) -> TrackerNodeConfig:
    """Validate parameter values (name -> value, every parameter present; None for an unset
    array) into a config.

    Raises:
        InputError: naming the parameter, what was expected and what came.
    """
    v = dict(values)
    for spec in all_parameter_specs():
        if spec.name not in v:
            raise InputError(f'{spec.name}: missing (every parameter must be given)')
        if spec.choices is not None:
            _check_choice(spec.name, v[spec.name], spec.choices)
    if not v['object_mesh']:
        raise InputError('object_mesh: expected the path of the object\'s mesh file, got an '
                         'empty string (set it with -p object_mesh:=/path/to/mesh.ply)')
    for name in ('object_frame', 'joint_prefix', 'image_topic', 'camera_info_topic',
                 'joint_states_topic', 'initial_pose_topic', 'object_pose_topic', 'track_topic',
                 'markers_topic'):
        if not isinstance(v[name], str) or not v[name]:
            raise InputError(f'{name}: expected a non-empty string, got {v[name]!r}')
    pose = tuple(float(x) for x in (v['initial_pose'] or ()))
    check_initial_pose(pose)
    name_map = tuple(v['joint_name_map'] or ())
    for entry in name_map:
        incoming, sep, model = entry.partition(':')
        if entry != ROS1_NAMES and not (sep and incoming.strip() and model.strip()):
            raise InputError(f"joint_name_map: expected entries 'incoming:urdf_joint' or "
                             f"'{ROS1_NAMES}', got {entry!r}")
    tracker_values = {}
    for f in dataclasses.fields(TrackerConfig):
        value = v[f.name]
        if isinstance(value, (list, tuple)):
            value = tuple(value)
            if value == (NO_MEASUREMENT,) and f.name == 'measurements':
                value = ()
        tracker_values[f.name] = value
    tracker = TrackerConfig(**tracker_values)  # InputError names the field = the parameter
    node_fields = {f.name for f in dataclasses.fields(TrackerNodeConfig)} - {'tracker'}
    kwargs = {name: v[name] for name in node_fields}
    kwargs.update(initial_pose=pose, joint_name_map=name_map)
    return TrackerNodeConfig(tracker=tracker, **kwargs)


def check_initial_pose(pose: tuple[float, ...]) -> None:
    """An initial pose is () or 7 finite values with a non-zero quaternion.

    Raises:
        InputError: naming ``initial_pose``.
    """
    if len(pose) == 0:
        return
    if len(pose) != 7 or not all(math.isfinite(x) for x in pose):
        raise InputError(f'initial_pose: expected [] or 7 finite values [x, y, z, qx, qy, qz, '
                         f'qw] (m, camera optical frame), got {list(pose)}')
    if math.sqrt(sum(x * x for x in pose[3:])) < 1e-6:
        raise InputError(f'initial_pose: expected a non-zero quaternion (qx qy qz qw), got '
                         f'{list(pose[3:])}')


def config_to_values(config: TrackerNodeConfig) -> dict[str, Any]:
    """The parameter values of a config (inverse of :func:`config_from_values`)."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrackerNodeConfig)
              if f.name != 'tracker'}
    for f in dataclasses.fields(TrackerConfig):
        value = getattr(config.tracker, f.name)
        if f.name == 'measurements' and not value:
            value = (NO_MEASUREMENT,)
        values[f.name] = list(value) if isinstance(value, tuple) else value
    values['initial_pose'] = list(config.initial_pose)
    values['joint_name_map'] = list(config.joint_name_map)
    return values


def updated_config(config: TrackerNodeConfig, changes: Mapping[str, Any]) -> TrackerNodeConfig:
    """``config`` with run-time parameter changes, validated as at start-up.

    Raises:
        InputError: an unknown or read-only parameter, or an invalid value (named).
    """
    specs = {s.name: s for s in all_parameter_specs()}
    for name in changes:
        if name not in specs:
            raise InputError(f'{name}: not a parameter of the tracker node')
        if specs[name].read_only:
            raise InputError(f'{name}: read-only (set it at start-up)')
    return config_from_values({**config_to_values(config), **changes})


def declare_and_read(node: Any) -> TrackerNodeConfig:
    """Declare every parameter on ``node`` (an rclpy Node) and read them into a config.

    Raises:
        InputError: an invalid value (named).
        rclpy.exceptions.ParameterException: a value out of its range or of the wrong type
            (rclpy's message names the parameter).
    """
    from rclpy.parameter import Parameter

    values = {}
    for spec in all_parameter_specs():
        default = spec.default
        if default is None:
            default = Parameter.Type.STRING_ARRAY if spec.type == _SA else \
                Parameter.Type.DOUBLE_ARRAY
        values[spec.name] = node.declare_parameter(spec.name, default, spec.descriptor()).value
    return config_from_values(values)


# --------------------------------------------------------------------------------------------
# config/tracker.yaml
# --------------------------------------------------------------------------------------------
def _yaml_value(value: Any) -> str:
    if value is None:
        return '[]'
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        if value == '':
            return "''"
        plain = not any(c in value for c in ':#[]{},\'"') and value not in ('true', 'false')
        return value if plain else repr(value)
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_yaml_value(v) for v in value) + ']'
    return repr(value)


def defaults_yaml() -> str:
    """config/tracker.yaml: every parameter with its default and description (regenerate with
    ``python -m handypriors_ros.ros.parameters > config/tracker.yaml``)."""
    lines = [
        '# Defaults of every tracker_node parameter (declared with type, range and description',
        '# in handypriors_ros/ros/parameters.py; `ros2 param describe /tracker_node <name>`).',
        '# Generated: python -m handypriors_ros.ros.parameters > config/tracker.yaml',
        '# Use: tracker_node --ros-args --params-file config/tracker.yaml '
        '-p object_mesh:=/path/mesh.ply',
        '#      handypriors track BAG --object MESH --out OUT --params config/tracker.yaml',
        '# [start-up]: read once at start-up (read-only); the others may be set at run time.',
        '/**:',
        '  ros__parameters:',
    ]
    for title, specs in (('node: model, frames, topics, inputs', NODE_PARAMETERS),
                         ('tracker (TrackerConfig, handypriors_ros/core/tracking/config.py)',
                          tracker_parameter_specs())):
        lines.append(f'    # --- {title} ---')
        for spec in specs:
            text = spec.description + (f' (one of: {", ".join(spec.choices)})'
                                       if spec.choices else '')
            text += ' [start-up]' if spec.read_only else ''
            lines += ['    # ' + line for line in textwrap.wrap(text, 92)]
            lines.append(f'    {spec.name}: {_yaml_value(spec.default)}')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    print(defaults_yaml(), end='')
