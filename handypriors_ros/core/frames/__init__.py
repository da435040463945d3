"""The one frame pipeline: frame types, joint-state buffering, the assembler (live / replay) and
hand naming. ``track``, ``refine``, ``demo``, the nodes and the benchmarks all get their frames
through it (the offline reader, :mod:`handypriors_ros.bag.sequence`, runs the assembler in
replay mode over a bag)."""
from handypriors_ros.core.frames.assembler import MODES, AssemblyConfig, FrameAssembler
from handypriors_ros.core.frames.joints import (JointLookup, JointStateBuffer,
                                                NonFiniteJointsError, TimeWentBackwardsError)
from handypriors_ros.core.frames.types import AssembledFrame, Frame, FrameProblem

__all__ = ['MODES', 'AssembledFrame', 'AssemblyConfig', 'Frame', 'FrameAssembler',
           'FrameProblem', 'JointLookup', 'JointStateBuffer', 'NonFiniteJointsError',
           'TimeWentBackwardsError']
