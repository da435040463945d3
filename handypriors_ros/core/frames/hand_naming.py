"""How the robot names the hand: joint-state names -> the hand model's joints, and the TF frame of
the hand's root link. Resolved once here for every front (tracker node, ``track``, ``refine``,
``demo``, the benchmarks). Pure Python; no ROS.

The hand model (a URDF) names its joints and links with its own prefix (the package's Allegro
URDFs: ``ah_joint00`` .. ``ah_joint33``, root link ``ah_base_link``). On the robot:

- ``joint_prefix`` renames them: a robot publishing ``lh_joint00`` and TF ``lh_base_link`` is
  read with ``joint_prefix='lh_'`` (only when the URDF's root link is ``<prefix>base_link``, so
  that its prefix is known; another URDF's names are used as they are);
- ``joint_name_map`` adds names: entries ``'incoming:urdf_joint'``, and :data:`ROS1_NAMES`
  (``allegro_ros1``) for the ROS 1 ``allegro_hand_ros`` driver's ``joint_0.0`` .. ``joint_15.0``;
- ``hand_root_frame`` names the root link's TF frame; ``''`` means ``<joint_prefix>base_link``
  for a prefixed URDF, else the URDF's root link.

Names not in the map pass unchanged, so the model's own names are always accepted.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.frames.joints import JointStateBuffer
from handypriors_ros.core.models.joint_names import ros1_to_ros2_name_map

#: joint_name_map entry that adds the ROS 1 allegro_hand_ros names (joint_0.0 .. joint_15.0).
ROS1_NAMES = 'allegro_ros1'
_ROOT_SUFFIX = 'base_link'


def parse_joint_name_map(entries: Sequence[str]) -> tuple[dict[str, str], bool]:
    """``(incoming -> model joint name, with_ros1_names)`` of ``joint_name_map`` entries.

    Raises:
        InputError: an entry that is neither ``'incoming:urdf_joint'`` nor :data:`ROS1_NAMES`.
    """
    if isinstance(entries, str):
        raise InputError(f'joint_name_map: expected a list of entries, got the string '
                         f'{entries!r}')
    mapping: dict[str, str] = {}
    ros1 = False
    for entry in entries:
        if entry == ROS1_NAMES:
            ros1 = True
            continue
        incoming, sep, model = str(entry).partition(':')
        if not (sep and incoming.strip() and model.strip()):
            raise InputError(f"joint_name_map: expected entries 'incoming:urdf_joint' or "
                             f"'{ROS1_NAMES}', got {entry!r}")
        mapping[incoming.strip()] = model.strip()
    return mapping, ros1


@dataclass(frozen=True)
class HandNaming:
    """The robot's names for the hand model (module docstring).

    Attributes:
        joint_names: (J,) the model's joint names, in model order (``Frame.q`` follows them).
        name_map: incoming joint-state name -> model joint name.
        hand_root_frame: TF frame of the hand's root link on the robot (``ah_base_link``).
    """
    joint_names: tuple[str, ...]
    name_map: Mapping[str, str] = field(default_factory=dict)
    hand_root_frame: str = 'ah_base_link'

    def __post_init__(self) -> None:
        object.__setattr__(self, 'joint_names', tuple(self.joint_names))
        object.__setattr__(self, 'name_map', dict(self.name_map))
        if not self.joint_names:
            raise InputError('joint_names: expected the hand model\'s joint names, got none')
        if not self.hand_root_frame:
            raise InputError('hand_root_frame: expected a frame id, got an empty string')

    @classmethod
    def resolve(cls, hand_joint_names: Sequence[str], hand_root_link: str, *,
                joint_prefix: str = 'ah_', joint_name_map: Sequence[str] = (),
                hand_root_frame: str = '') -> HandNaming:
        """The naming of a hand model on a robot (module docstring).

        Args:
            hand_joint_names: (J,) the model's joint names (``HandKinematics.joint_names``).
            hand_root_link: the model's root link (``HandKinematics.root_link``).
            joint_prefix: prefix of the hand's joint and link names on the robot.
            joint_name_map: extra entries, ``'incoming:urdf_joint'`` or :data:`ROS1_NAMES`.
            hand_root_frame: TF frame of the root link; ``''``: derived (module docstring).
        Raises:
            InputError: a malformed entry, or one naming a joint the model does not have.
        """
        if not isinstance(joint_prefix, str):
            raise InputError(f'joint_prefix: expected a string, got {joint_prefix!r}')
        joints = tuple(hand_joint_names)
        urdf_prefix = (hand_root_link[:-len(_ROOT_SUFFIX)]
                       if hand_root_link.endswith(_ROOT_SUFFIX) else None)
        name_map: dict[str, str] = {}
        if urdf_prefix is not None and joint_prefix != urdf_prefix:
            name_map.update({joint_prefix + n[len(urdf_prefix):]: n
                             for n in joints if n.startswith(urdf_prefix)})
        extra, ros1 = parse_joint_name_map(joint_name_map)
        if ros1:
            name_map.update(ros1_to_ros2_name_map(urdf_prefix or ''))
        unknown = sorted(set(extra.values()) - set(joints))
        if unknown:
            raise InputError(f'joint_name_map: {unknown} are not joints of the hand model '
                             f'(its joints: {", ".join(joints)})')
        name_map.update(extra)
        if hand_root_frame:
            root = hand_root_frame.lstrip('/')
        elif urdf_prefix is not None:
            root = joint_prefix + _ROOT_SUFFIX
        else:
            root = hand_root_link
        return cls(joints, name_map, root)

    def joint_buffer(self, *, cache_time_s: float = 2.0) -> JointStateBuffer:
        """A :class:`JointStateBuffer` that reads the robot's joint states in model order."""
        return JointStateBuffer(self.joint_names, name_map=self.name_map,
                                cache_time_s=cache_time_s)
