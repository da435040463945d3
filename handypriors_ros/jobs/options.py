"""Options that the tracker (node and ``track``) and the refinement (node and ``refine``) share,
declared once: the object model, the device, the hand and its names on the robot, the input
topics and how inputs are matched at an image stamp (:class:`InputOptions`), the initial pose.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from handypriors_ros import interfaces
from handypriors_ros.core.errors import InputError, ModelError
from handypriors_ros.core.frames import AssemblyConfig, HandNaming, parse_joint_name_map
from handypriors_ros.core.frames.assembler import MASK_WAIT_AUTO
from handypriors_ros.core.frames.hand_naming import ROS1_NAMES
from handypriors_ros.jobs.schema import Option

if TYPE_CHECKING:
    from handypriors_ros.bag.sequence import SequenceTopics
    from handypriors_ros.core.models.kinematics import HandKinematics

DEVICES = ('auto', 'cpu', 'cuda')
MODEL = 'object, hand, device and initial pose'
NAMING = "the hand's names on the robot"
INPUTS = 'input topics'
MATCHING = 'matching inputs at an image stamp'
_NS_PER_S = 1_000_000_000


def parse_initial_pose(text: str) -> tuple[float, ...]:
    """``"x y z qx qy qz qw"`` (spaces or commas) -> 7 floats (the ``--initial-pose`` flag).

    Raises:
        InputError: not 7 finite numbers with a non-zero quaternion (naming the flag).
    """
    try:
        values = [float(v) for v in text.replace(',', ' ').split()]
    except ValueError as exc:
        raise InputError(f'--initial-pose: expected 7 numbers "x y z qx qy qz qw", got '
                         f'{text!r}') from exc
    if len(values) != 7 or not all(math.isfinite(v) for v in values):
        raise InputError(f'--initial-pose: expected 7 finite numbers "x y z qx qy qz qw", got '
                         f'{text!r}')
    if math.sqrt(sum(v * v for v in values[3:])) < 1e-6:
        raise InputError(f'--initial-pose: expected a non-zero quaternion, got {values[3:]}')
    return tuple(values)


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


def pose_vector_to_matrix(pose: tuple[float, ...]):
    """(4, 4) float64 of ``[x, y, z, qx, qy, qz, qw]`` (the ``initial_pose`` layout)."""
    from handypriors_ros.core.geometry.transform_buffer import StampedTransform

    check_initial_pose(tuple(pose))
    return StampedTransform('camera', 'object', 0, pose[:3], pose[3:]).matrix()


def resolve_device(requested: str) -> str:
    """``'cpu'`` or ``'cuda[:N]'`` for a ``device`` option (``auto``: cuda when torch sees a GPU;
    :func:`handypriors_ros.core.devices.resolve_device` decides).

    Raises:
        InputError: an unknown value, or cuda requested without a GPU.
    """
    if requested not in DEVICES:
        raise InputError(f'device: expected one of {list(DEVICES)}, got {requested!r}')
    from handypriors_ros.core.devices import resolve_device as core_resolve
    try:
        return str(core_resolve(requested))
    except InputError as exc:
        raise InputError(f'{exc} (use --device cpu, or auto: a GPU when there is one)') from exc


# --------------------------------------------------------------------------------------------
# declarations
# --------------------------------------------------------------------------------------------
OBJECT_MESH = Option(
    'object_mesh', 'str', '', 'mesh file of the object (OBJ, PLY, STL, OFF, GLB, glTF; metres '
    'after object_scale); required', cli='--object', metavar='MESH', required=True,
    group=MODEL)
OBJECT_SCALE = Option(
    'object_scale', 'float', 1.0, "factor from the mesh file's units to metres (0.001 for "
    'millimetres)', range=(1e-6, 1e3), cli='--object-scale', metavar='SCALE', group=MODEL)
HAND_URDF = Option('hand_urdf', 'str', '', "URDF of the hand; '' = the package's right Allegro "
                   'hand', cli='--hand-urdf', metavar='URDF', group=MODEL)
DEVICE = Option('device', 'str', 'auto', 'where the computation runs: auto = cuda when torch '
                'sees a GPU, else cpu', choices=DEVICES, cli='--device', group=MODEL)
OBJECT_FRAME = Option('object_frame', 'str', interfaces.OBJECT_FRAME, 'child frame of the '
                      "object pose (/tf, TrackedObject.object_id); its parent is the images' "
                      'frame (the camera optical frame)', cli='--object-frame', group=MODEL)


def initial_pose_option(*, run_time: bool) -> Option:
    """``initial_pose`` (settable at run time on the tracker node: it re-initialises)."""
    return Option(
        'initial_pose', 'float_list', (), 'initial object pose [x, y, z, qx, qy, qz, qw] in the '
        'camera optical frame [m]; empty = the /handypriors/initial_pose of the input'
        + ('; setting it at run time re-initialises the tracker' if run_time else ''),
        read_only=not run_time, cli='--initial-pose', parse=parse_initial_pose,
        metavar='"x y z qx qy qz qw"', group=MODEL)


def input_options(*, run_time: bool) -> tuple[Option, ...]:
    """The hand, its naming, the input topics and the matching tolerances (
    :class:`InputOptions`); ``run_time``: the tolerances may change at run time (the tracker
    node)."""
    fixed = not run_time
    return (
        HAND_URDF,
        Option('joint_prefix', 'str', interfaces.JOINT_PREFIX, "prefix of the hand's joint and "
               'link names on the robot: joint states <prefix>jointFK, TF <prefix>base_link',
               group=NAMING),
        Option('hand_root_frame', 'str', '', "TF frame of the hand's root link; '' = "
               '<joint_prefix>base_link (a non-Allegro URDF: its root link)', group=NAMING),
        Option('joint_name_map', 'str_list', (), "extra joint-state names, each "
               f"'incoming:urdf_joint', or '{ROS1_NAMES}' for the ROS 1 driver's joint_0.0 .. "
               'joint_15.0', group=NAMING),
        Option('image_topic', 'str', interfaces.IMAGE_TOPIC, 'colour image (rgb8 or bgr8)',
               group=INPUTS),
        Option('camera_info_topic', 'str', interfaces.CAMERA_INFO_TOPIC,
               'camera_info of the images', group=INPUTS),
        Option('mask_topic', 'str', interfaces.MASK_TOPIC, 'object mask (mono8, 255 = object) '
               "from an external segmenter; '' = none", group=INPUTS),
        Option('joint_states_topic', 'str', interfaces.JOINT_STATES_TOPIC, 'hand joint states',
               group=INPUTS),
        Option('initial_pose_topic', 'str', interfaces.relative(interfaces.INITIAL_POSE_TOPIC),
               'initial / re-initialisation pose (geometry_msgs/PoseStamped); a relative name '
               f'is in the node\'s namespace ({interfaces.NAMESPACE} by default; bags: there)',
               group=INPUTS),
        Option('stamp_tolerance_s', 'float', 0.001, 'camera_info and masks match an image whose '
               'stamp differs by at most this [s]', read_only=fixed, range=(0.0, 0.1),
               group=MATCHING),
        Option('replay_wait_s', 'float', 0.1, "replay: a frame waits for its mask, joint "
               "states, TF and initial pose until the inputs' stamps reach its stamp plus this "
               '[s]', read_only=fixed, range=(0.0, 10.0), group=MATCHING),
        Option('max_joint_age_s', 'float', 0.1, 'the newest joint state may be this much older '
               'than an image; older: the stream stopped, the hand is held at its last pose and '
               'a warning reported [s]', read_only=fixed, range=(0.0, 10.0), group=MATCHING),
        Option('tf_tolerance_s', 'float', 0.05, 'an image stamp up to this after the newest '
               'hand-root TF uses that TF (TF lags the camera); later: the frame is skipped [s]',
               read_only=fixed, range=(0.0, 1.0), group=MATCHING),
        Option('past_tolerance_s', 'float', 0.02, 'an image stamp up to this before the first '
               'joint state or hand-root TF holds that first one (the start of a recording), '
               'reported as early_joint_states / early_tf; earlier: the frame is skipped [s]',
               read_only=fixed, range=(0.0, 1.0), group=MATCHING),
    )


# --------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputOptions:
    """The hand and how its inputs are read (descriptions: :func:`input_options`).

    Durations in seconds.
    """
    hand_urdf: str
    joint_prefix: str
    hand_root_frame: str
    joint_name_map: tuple[str, ...]
    image_topic: str
    camera_info_topic: str
    mask_topic: str
    joint_states_topic: str
    initial_pose_topic: str
    stamp_tolerance_s: float
    replay_wait_s: float
    max_joint_age_s: float
    tf_tolerance_s: float
    past_tolerance_s: float

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> InputOptions:
        """From validated option values (:meth:`Schema.validate`).

        Raises:
            InputError: an empty required topic or prefix, a malformed joint_name_map entry.
        """
        names = [f for f in cls.__dataclass_fields__]
        kwargs = {name: values[name] for name in names}
        for name in ('joint_prefix', 'image_topic', 'camera_info_topic', 'joint_states_topic',
                     'initial_pose_topic'):
            if not kwargs[name]:
                raise InputError(f'{name}: expected a non-empty string, got {kwargs[name]!r}')
        parse_joint_name_map(kwargs['joint_name_map'])
        kwargs['joint_name_map'] = tuple(kwargs['joint_name_map'])
        return cls(**kwargs)

    def topics(self) -> SequenceTopics:
        """The input bag's topic names."""
        from handypriors_ros.bag.sequence import SequenceTopics

        return SequenceTopics(image=self.image_topic, camera_info=self.camera_info_topic,
                              joint_states=self.joint_states_topic, mask=self.mask_topic,
                              initial_pose=interfaces.resolve(self.initial_pose_topic))

    def assembly(self, hand_root_frame: str, *, mode: str = 'replay',
                 wall_wait_s: float = 0.5, max_pending: int = 30,
                 live_mask_wait_s: float = 0.0, live_hold_s: float = 0.0) -> AssemblyConfig:
        """The frame assembler's settings (the live-only waits come from the tracker node;
        ``live_mask_wait_s`` < 0: learned, :data:`~handypriors_ros.core.frames.assembler.
        MASK_WAIT_AUTO`)."""
        return AssemblyConfig(
            mode=mode, hand_root_frame=hand_root_frame, use_mask=bool(self.mask_topic),
            stamp_tolerance_ns=_ns(self.stamp_tolerance_s), data_wait_ns=_ns(self.replay_wait_s),
            wall_wait_ns=_ns(wall_wait_s), max_joint_age_ns=_ns(self.max_joint_age_s),
            tf_tolerance_ns=_ns(self.tf_tolerance_s),
            past_tolerance_ns=_ns(self.past_tolerance_s), max_pending=max_pending,
            live_mask_wait_ns=MASK_WAIT_AUTO if live_mask_wait_s < 0 else _ns(live_mask_wait_s),
            live_hold_ns=_ns(live_hold_s))

    @property
    def urdf_path(self) -> str:
        """The hand URDF (the package's right Allegro hand when ``hand_urdf`` is empty)."""
        from handypriors_ros.resources import default_hand_urdf

        return self.hand_urdf or str(default_hand_urdf())

    def load_hand(self, **kwargs: Any) -> HandKinematics:
        """The hand's kinematics (``kwargs``: :meth:`HandKinematics.from_urdf`'s).

        Raises:
            ModelError: the URDF cannot be read (naming ``hand_urdf``).
        """
        from handypriors_ros.core.models.kinematics import HandKinematics

        try:
            return HandKinematics.from_urdf(self.urdf_path, **kwargs)
        except (ModelError, InputError) as exc:
            raise ModelError(f'hand_urdf: {exc}') from exc

    def naming(self, hand_joint_names, hand_root_link: str) -> HandNaming:
        """The hand's names on the robot (:meth:`HandNaming.resolve`)."""
        return HandNaming.resolve(hand_joint_names, hand_root_link,
                                  joint_prefix=self.joint_prefix,
                                  joint_name_map=self.joint_name_map,
                                  hand_root_frame=self.hand_root_frame)


def load_object(path: str, scale: float, *, scale_flag: str = '--object-scale', **kwargs: Any):
    """The object model of a mesh file, whose size must be a hand-held object's (1 cm - 1 m
    after ``scale``: :func:`~handypriors_ros.core.models.object_model.check_object_size`).

    Raises:
        ModelError: the mesh cannot be read (naming ``object_mesh``); ObjectSizeError (a
            ModelError): its size after scaling says the units are wrong (naming the likely
            unit and the ``scale_flag`` value that fixes it).
    """
    from handypriors_ros.core.models.object_model import ObjectModel, ObjectSizeError

    try:
        return ObjectModel.from_file(path, scale=scale, check_size=True, scale_flag=scale_flag,
                                     **kwargs)
    except (ModelError, InputError) as exc:
        if isinstance(exc, ObjectSizeError):
            raise ObjectSizeError(f'object_mesh: {exc}') from exc
        raise ModelError(f'object_mesh: {exc}; give a readable triangle mesh (OBJ, PLY, STL, '
                         'OFF, GLB or glTF)') from exc


def open_input_bag(path: str | Path, *, flag: str = 'BAG') -> dict[str, int]:
    """``{topic: messages}`` of an input bag, opened once to check that it can be read (a
    truncated one is read up to the damage; the frame reader reports it).

    Raises:
        BagError: it cannot be read, or it is damaged before its first complete message (an
            empty file, a recording killed at once): naming ``flag``, the reason and what to
            give instead.
    """
    from handypriors_ros.bag import BagError, BagReader

    def unreadable(reason: str) -> BagError:
        reason = reason.replace(f'{path}: ', '').replace(f'bag {path}', 'it')
        return BagError(f'{flag} {path}: cannot be read as a rosbag2 bag ({reason}); give a '
                        'bag folder (metadata.yaml with .mcap or .db3 files) or one .mcap / '
                        '.db3 file')

    try:
        with BagReader(path, on_truncated='recover') as reader:
            counts = {topic: n for topic, (_, n) in reader.topics.items()}
            damage = reader.truncation
    except BagError as exc:
        raise unreadable(str(exc)) from exc
    if damage is not None and not any(counts.values()):
        raise unreadable(damage.message)
    return counts


def _ns(seconds: float) -> int:
    return int(round(seconds * _NS_PER_S))
