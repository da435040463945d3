"""The one frame pipeline: frame types, joint-state buffering, the assembler (live / replay), hand
naming and problem counting. ``track``, ``refine``, ``demo``, the nodes and the benchmarks all get
their frames through it (the offline reader, :mod:`handypriors_ros.bag.sequence`, runs the
assembler in replay mode over a bag; the tracker node runs it live or in replay)."""
from handypriors_ros.core.frames.assembler import MODES, AssemblyConfig, FrameAssembler
from handypriors_ros.core.frames.hand_naming import ROS1_NAMES, HandNaming, parse_joint_name_map
from handypriors_ros.core.frames.joints import (JointLookup, JointStateBuffer,
                                                NonFiniteJointsError, TimeWentBackwardsError)
from handypriors_ros.core.frames.problems import QUIET_KINDS, LastProblem, ProblemCounter
from handypriors_ros.core.frames.types import (AssembledFrame, Frame, FrameProblem,
                                               InitialPose)

__all__ = ['MODES', 'QUIET_KINDS', 'ROS1_NAMES', 'AssembledFrame', 'AssemblyConfig', 'Frame',
           'FrameAssembler', 'FrameProblem', 'HandNaming', 'InitialPose', 'JointLookup',
           'JointStateBuffer', 'LastProblem', 'NonFiniteJointsError', 'ProblemCounter', 'TimeWentBackwardsError',
           'parse_joint_name_map']
