"""What the tracker, the contact dynamics and the refinement need of a hand: one small protocol.

:class:`HandModel` is structural (``typing.Protocol``): any object with these members is a hand.
The URDF hand, :class:`~handypriors_ros.core.models.kinematics.HandKinematics`, implements it
today; a MANO hand (built from a user-supplied model file: its 16 joints' rotations as the joint
vector, its vertices as surface samples, skinning weights' argmax as the point's link, its tip
vertices as fingertips) can implement it without touching the tracker.

Frames: the hand's root link is *root* (``ah_base_link`` for the Allegro hand); ``T_world_base``
is the root's pose in a world frame (for the tracker: the camera optical frame); posed
quantities are in that frame when it is given, else in the root's.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@dataclass(frozen=True)
class HandState:
    """Posed hand for a batch of B configurations.

    Attributes:
        T_root_link: (B, L, 4, 4) link poses in the root frame (``link_names`` order).
        T_world_link: (B, L, 4, 4) link poses in the world frame, or None when no
            ``T_world_base`` was given.
        fingertips: (B, F, 3) fingertip centres (for the Allegro hand: the origins of the
            fingertip links thumb, index, middle, ring), in ``frame``.
        surface_points: (B, P, 3) surface samples of the whole hand, in ``frame``.
        surface_normals: (B, P, 3) unit outward normals at those samples, in ``frame``.
        point_link_ids: (P,) int64 index into ``link_names`` of each sample's link.
        frame: ``'world'`` when ``T_world_base`` was given, else the root link's name: the frame
            of ``fingertips``, ``surface_points`` and ``surface_normals``.
    """

    T_root_link: torch.Tensor
    T_world_link: torch.Tensor | None
    fingertips: torch.Tensor
    surface_points: torch.Tensor
    surface_normals: torch.Tensor
    point_link_ids: torch.Tensor
    frame: str


@runtime_checkable
class HandModel(Protocol):
    """A hand's kinematics and geometry, batched, on one device in one float dtype.

    Members (all the tracker, ``core.physics.quasistatic`` through the tracker's dynamics and
    the refinement use):

    - ``device``, ``dtype``: where and in which float type its tensors live; inputs must match.
    - ``joint_names``: (J,) the joint vector's order; ``num_joints`` = J.
    - ``root_link``: name of the root link (the frame ``T_world_base`` places).
    - ``link_names``: (L,) links (or MANO joints); ``point_link_ids`` (P,) int64 index into it
      of each surface sample.
    - ``fingertip_radius_m``: radius of the fingertips [m]: a fingertip centre closer than
      this plus the contact threshold to the object touches it.
    - ``to(device, dtype)``: a copy elsewhere (None keeps the current one).
    - ``forward(q (B, J), T_world_base (B, 4, 4) | None) -> HandState``.
    - ``posed_mesh(q (B, J), T_world_base (B, 4, 4) | None) -> (vertices (B, V, 3),
      faces (M, 3) int32)``: one triangle mesh of the posed hand (for rendering it as an
      occluder); ``mesh_faces``: those faces (M, 3), the same for every pose (a renderer is
      built with them once).
    - ``joint_vector(names, positions) -> (J,)``: a JointState-like input in model order.
    """

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def joint_names(self) -> tuple[str, ...]: ...

    @property
    def num_joints(self) -> int: ...

    @property
    def root_link(self) -> str: ...

    @property
    def link_names(self) -> tuple[str, ...]: ...

    @property
    def point_link_ids(self) -> torch.Tensor: ...

    @property
    def fingertip_radius_m(self) -> float: ...

    @property
    def mesh_faces(self) -> torch.Tensor: ...

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> HandModel: ...

    def forward(self, q: torch.Tensor, T_world_base: torch.Tensor | None = None
                ) -> HandState: ...

    def posed_mesh(self, q: torch.Tensor, T_world_base: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def joint_vector(self, names: Sequence[str],
                     positions: Sequence[float] | np.ndarray) -> torch.Tensor: ...
