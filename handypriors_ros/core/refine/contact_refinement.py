"""Contact refinement (paper IV-D): the hand configuration that makes given contacts.

Given, for each hand surface sample, a target label "in contact with the object" (e.g. from a
tactile sensor or a contact predictor), find joint angles close to the measured ones whose
posed hand touches the object exactly at the labelled samples:

- attraction: labelled samples into the contact band, ``sum_{i in L} max(0, phi_i -
  threshold / 2)^2`` (penetration keeps them out of the object);
- repulsion: unlabelled samples out of the contact band, ``sum_{i not in L}
  max(0, threshold - phi_i)^2``;
- penetration: ``sum_i max(0, -phi_i)^2`` (eq. 3b);
- prior: ``|q - q_measured|^2`` (rad^2), so joints the labels do not constrain stay.

Distances in mm (so the terms are in mm^2); ``phi`` is the object's signed distance (Warp,
negative inside). Adam on the joint angles, projected onto the joint limits after each step.
The object pose and the hand root are fixed (``T_obj_base``: the hand root in the object
frame).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry.se3 import transform_points
from handypriors_ros.core.models.kinematics import HandKinematics
from handypriors_ros.core.physics.sdf import WarpMeshSDF

_M_TO_MM = 1e3


@dataclass(frozen=True)
class ContactRefineConfig:
    """Settings of :func:`refine_contacts`.

    Attributes:
        threshold_m: a sample is in contact when ``phi < threshold_m`` (paper: 1 mm).
        iterations: Adam iterations.
        lr_rad: Adam step size of the joint angles [rad].
        lr_final_fraction: the step size decays exponentially to this fraction.
        w_attraction, w_repulsion, w_penetration: weights of the terms [per mm^2].
        w_prior: weight of ``|q - q_measured|^2`` [per rad^2].
    """

    threshold_m: float = 0.001
    iterations: int = 150
    lr_rad: float = 0.01
    lr_final_fraction: float = 0.1
    w_attraction: float = 1.0
    w_repulsion: float = 1.0
    w_penetration: float = 10.0
    w_prior: float = 1.0

    def __post_init__(self) -> None:
        for name in ('threshold_m', 'lr_rad', 'lr_final_fraction'):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InputError(f'{name}: expected a finite number > 0, got {value!r}')
        for name in ('w_attraction', 'w_repulsion', 'w_penetration', 'w_prior'):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f'{name}: expected a finite number >= 0, got {value!r}')
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or \
                self.iterations < 1:
            raise InputError(f'iterations: expected an integer >= 1, got {self.iterations!r}')


@dataclass(frozen=True)
class ContactRefineResult:
    """Result of :func:`refine_contacts` for B hands.

    Attributes:
        q: (B, J) refined joint angles [rad].
        q_initial: (B, J) the measured ones.
        contact: (B, P) bool samples in contact at ``q`` (``phi < threshold``).
        distance: (B, P) signed distance of each sample at ``q`` [m].
        precision, recall: (B,) of ``contact`` against the target labels.
        history: (I,) total loss per iteration.
    """

    q: torch.Tensor
    q_initial: torch.Tensor
    contact: torch.Tensor
    distance: torch.Tensor
    precision: torch.Tensor
    recall: torch.Tensor
    history: np.ndarray = field(repr=False)


def contact_terms(distance_m: torch.Tensor, labels: torch.Tensor,
                  threshold_m: float) -> dict[str, torch.Tensor]:
    """The contact terms per hand (module docstring), in mm^2.

    Args:
        distance_m: (B, P) signed distances of the samples [m].
        labels: (B, P) bool target contact labels.
        threshold_m: contact threshold [m].
    Returns:
        ``{'attraction', 'repulsion', 'penetration'}`` -> (B,).
    """
    d = distance_m * _M_TO_MM
    lab = labels.to(d.dtype)
    return {
        'attraction': (lab * (d - 0.5 * threshold_m * _M_TO_MM).clamp(min=0).square()).sum(-1),
        'repulsion': ((1.0 - lab) * (threshold_m * _M_TO_MM - d).clamp(min=0).square()).sum(-1),
        'penetration': (-d).clamp(min=0).square().sum(-1),
    }


def refine_contacts(hand: HandKinematics, sdf: WarpMeshSDF, q_measured: torch.Tensor,
                    T_obj_base: torch.Tensor, labels: torch.Tensor,
                    config: ContactRefineConfig | None = None) -> ContactRefineResult:
    """Joint angles whose posed hand makes the labelled contacts (module docstring).

    Args:
        hand: kinematics; its ``surface_points_link`` are the labelled samples.
        sdf: the object's signed distance field (object frame).
        q_measured: (B, J) or (J,) measured joint angles (``hand.joint_names`` order) [rad].
        T_obj_base: (B, 4, 4) or (4, 4) hand root pose in the object frame.
        labels: (B, P) or (P,) bool target contact labels of the hand samples.
        config: settings.
    Returns:
        :class:`ContactRefineResult`.
    Raises:
        InputError: shapes that do not fit the hand model.
    """
    cfg = config or ContactRefineConfig()
    dev, dt = hand.device, hand.dtype
    q0 = torch.as_tensor(q_measured, dtype=dt, device=dev)
    T = torch.as_tensor(T_obj_base, dtype=dt, device=dev)
    lab = torch.as_tensor(labels, device=dev)
    q0 = q0[None] if q0.dim() == 1 else q0
    T = T[None] if T.dim() == 2 else T
    lab = lab[None] if lab.dim() == 1 else lab
    B, J = q0.shape[0], hand.num_joints
    P = hand.surface_points_link.shape[0]
    if tuple(q0.shape) != (B, J):
        raise InputError(f'q_measured: expected shape ({B}, {J}), got {tuple(q0.shape)}')
    if tuple(T.shape) != (B, 4, 4):
        raise InputError(f'T_obj_base: expected shape ({B}, 4, 4), got {tuple(T.shape)}')
    if tuple(lab.shape) != (B, P) or lab.dtype != torch.bool:
        raise InputError(f'labels: expected a bool tensor ({B}, {P}) (one per hand surface '
                         f'sample), got {lab.dtype} {tuple(lab.shape)}')
    lo, hi = hand.joint_limits[:, 0], hand.joint_limits[:, 1]
    q = torch.nn.Parameter(q0.clone())
    opt = torch.optim.Adam([q], lr=cfg.lr_rad)
    history = []

    def distances(qv: torch.Tensor) -> torch.Tensor:
        points_base = hand.forward(qv).surface_points  # (B, P, 3)
        return sdf.signed_distance(transform_points(T, points_base).to(sdf.device)).distance

    for it in range(cfg.iterations):
        for group in opt.param_groups:
            group['lr'] = cfg.lr_rad * cfg.lr_final_fraction ** (it / max(cfg.iterations - 1, 1))
        opt.zero_grad()
        terms = contact_terms(distances(q), lab, cfg.threshold_m)
        loss = (cfg.w_attraction * terms['attraction'] + cfg.w_repulsion * terms['repulsion']
                + cfg.w_penetration * terms['penetration']
                + cfg.w_prior * (q - q0).square().sum(-1)).sum()
        loss.backward()
        opt.step()
        with torch.no_grad():
            q.copy_(torch.maximum(torch.minimum(q, hi), lo))
        history.append(float(loss.detach()))
    with torch.no_grad():
        d = distances(q).detach()
        contact = d < cfg.threshold_m
        tp = (contact & lab).sum(-1).to(dt)
        precision = tp / contact.sum(-1).clamp(min=1).to(dt)
        recall = tp / lab.sum(-1).clamp(min=1).to(dt)
    return ContactRefineResult(q=q.detach().clone(), q_initial=q0, contact=contact, distance=d,
                               precision=precision, recall=recall,
                               history=np.asarray(history, dtype=np.float64))
