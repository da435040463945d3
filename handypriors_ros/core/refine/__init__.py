"""Offline optimisation-based refinement of a recorded sequence (paper III-D, IV-D).

- :mod:`config`: :class:`RefineConfig` (loss weights, Adam settings, ROI size), from YAML.
- :mod:`problem`: :class:`RefineProblem`, the per-frame data and the rendering and physics
  priors of a set of poses; :func:`quasistatic_poses`, the initialisation without a tracker.
- :mod:`optimizer`: :class:`Refiner`, the Adam loop with atomic checkpoints and exact resume.
- :mod:`contact_refinement`: the hand configuration that matches target contact labels.

Pure core: torch, numpy, Warp; no ROS.
"""
from handypriors_ros.core.refine.config import LossWeights, RefineConfig
from handypriors_ros.core.refine.optimizer import (
    CHECKPOINT_NAME,
    LOSS_TERMS,
    CheckpointError,
    RefineResult,
    Refiner,
    remove_checkpoint,
)
from handypriors_ros.core.refine.problem import (
    ImageLosses,
    PhysicsLosses,
    RefineProblem,
    quasistatic_poses,
)

__all__ = [
    'CHECKPOINT_NAME',
    'LOSS_TERMS',
    'CheckpointError',
    'ImageLosses',
    'LossWeights',
    'PhysicsLosses',
    'RefineConfig',
    'RefineProblem',
    'RefineResult',
    'Refiner',
    'quasistatic_poses',
    'remove_checkpoint',
]
