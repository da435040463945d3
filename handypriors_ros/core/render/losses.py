"""Rendering priors: the image losses of the paper (eqs. 1-2) and a contour residual for filters.

- :func:`rgb_loss` (eq. 1): squared colour difference inside the observed object mask (the
  hand's appearance varies, so only the object is compared).
- :func:`mask_loss` (eq. 2): squared difference between rendered and observed silhouettes
  (object and hand rendered together, so the hand hides the object).
- :func:`contour_residual`: a low-dimensional measurement for an EKF / Gauss-Newton: the
  observed mask's signed distance field read at K points of the rendered object contour.
  Zero when the contours agree; differentiable w.r.t. the pose, and jacfwd-friendly once the
  samples are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.render.contour import (
    ContourSamples,
    bilinear_gradient,
    bilinear_sample,
    contour_points,
    contour_points_jacobian,
    select_contour_samples,
    signed_distance_transform,
)

__all__ = ['ContourResidual', 'contour_residual', 'mask_loss', 'rgb_loss',
           'signed_distance_transform']

_REDUCTIONS = ('mean', 'sum')


def _check_same(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor,
                dims: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise InputError(f'{name}: expected a tensor, got {type(x).__name__}')
    if x.dim() != dims or tuple(x.shape) != tuple(ref.shape[:dims]):
        raise InputError(f'{name}: expected shape {tuple(ref.shape[:dims])} (as {ref_name}), '
                         f'got {tuple(x.shape)}')


def mask_loss(rendered: torch.Tensor, observed: torch.Tensor,
              weights: torch.Tensor | None = None, reduction: str = 'mean') -> torch.Tensor:
    """Silhouette loss (paper eq. 2): ``sum_p w_p (S_p - M_p)^2`` per frame.

    Args:
        rendered: (B, H, W) rendered silhouette in [0, 1] (e.g. ``RenderOutput.object_mask``).
        observed: (B, H, W) observed mask in [0, 1] (bool or float).
        weights: (B, H, W) per-pixel weights (e.g. 0 where the segmentation is unreliable);
            None: all 1.
        reduction: ``'mean'`` divides by the sum of the weights (per frame), ``'sum'`` not.
    Returns:
        (B,).
    """
    if not isinstance(rendered, torch.Tensor) or rendered.dim() != 3:
        raise InputError(f'rendered: expected a tensor (B, H, W), got '
                         f'{tuple(getattr(rendered, "shape", ()))}')
    _check_same('observed', observed, 'rendered', rendered, 3)
    if reduction not in _REDUCTIONS:
        raise InputError(f'reduction: expected one of {_REDUCTIONS}, got {reduction!r}')
    diff_sq = (rendered - observed.to(rendered.dtype)) ** 2
    if weights is None:
        total = diff_sq.sum((1, 2))
        norm = torch.full_like(total, float(rendered.shape[1] * rendered.shape[2]))
    else:
        _check_same('weights', weights, 'rendered', rendered, 3)
        w = weights.to(rendered.dtype)
        total = (w * diff_sq).sum((1, 2))
        norm = w.sum((1, 2)).clamp(min=torch.finfo(rendered.dtype).tiny)
    return total / norm if reduction == 'mean' else total


def rgb_loss(rendered_rgb: torch.Tensor, observed_rgb: torch.Tensor,
             observed_mask: torch.Tensor, reduction: str = 'mean') -> torch.Tensor:
    """Colour loss (paper eq. 1): ``sum_p M_p |I^_p - I_p|^2`` inside the observed object mask.

    Args:
        rendered_rgb: (B, H, W, 3) in [0, 1] (``RenderOutput.object_rgb``).
        observed_rgb: (B, H, W, 3) in [0, 1] (convert uint8 images with ``/ 255``).
        observed_mask: (B, H, W) observed object mask (bool or weights in [0, 1]).
        reduction: ``'mean'`` divides by ``3 * sum(mask)`` (per frame), ``'sum'`` not.
    Returns:
        (B,); 0 for a frame with an empty mask.
    """
    if not isinstance(rendered_rgb, torch.Tensor) or rendered_rgb.dim() != 4 or \
            rendered_rgb.shape[-1] != 3:
        raise InputError(f'rendered_rgb: expected a tensor (B, H, W, 3), got '
                         f'{tuple(getattr(rendered_rgb, "shape", ()))}')
    _check_same('observed_rgb', observed_rgb, 'rendered_rgb', rendered_rgb, 4)
    _check_same('observed_mask', observed_mask, 'rendered_rgb', rendered_rgb, 3)
    if observed_rgb.dtype == torch.uint8:
        raise InputError('observed_rgb: expected floats in [0, 1], got uint8 (divide by 255)')
    if reduction not in _REDUCTIONS:
        raise InputError(f'reduction: expected one of {_REDUCTIONS}, got {reduction!r}')
    m = observed_mask.to(rendered_rgb.dtype)
    diff_sq = ((rendered_rgb - observed_rgb.to(rendered_rgb.dtype)) ** 2).sum(-1)
    total = (m * diff_sq).sum((1, 2))
    if reduction == 'sum':
        return total
    return total / (3.0 * m.sum((1, 2))).clamp(min=torch.finfo(rendered_rgb.dtype).tiny)


@dataclass(frozen=True)
class ContourResidual:
    """Contour measurement of a batch of frames.

    Attributes:
        residual: (B, K) observed signed distance [px] at the rendered contour points
            (positive: the rendered contour lies outside the observed mask); 0 where invalid.
        valid: (B, K) bool, which entries are measurements.
        points_2d: (B, K, 2) the rendered contour points [px].
        samples: the :class:`ContourSamples` used (pass them back to keep the association
            fixed across Gauss-Newton iterations).
        jacobian: (B, K, 6) ``d residual / d xi`` for the left perturbation
            ``T_cam_obj <- se3_exp(xi) @ T_cam_obj`` (xi = (rho, phi), camera frame), zero rows
            where invalid; None unless requested.
    """

    residual: torch.Tensor
    valid: torch.Tensor
    points_2d: torch.Tensor
    samples: ContourSamples
    jacobian: torch.Tensor | None = None


def contour_residual(renderer, camera, T_cam_obj: torch.Tensor, observed_sdt: torch.Tensor, *,
                     hand_vertices_cam: torch.Tensor | None = None,
                     samples: ContourSamples | None = None,
                     num_points: int = 200, with_jacobian: bool = False) -> ContourResidual:
    """Observed mask's signed distance at K points of the rendered object contour.

    Args:
        renderer: a ``Renderer``; camera: its PinholeCamera (or CameraBatch), which fixes the
            image size.
        T_cam_obj: (B, 4, 4) object poses (the residual is differentiable w.r.t. them).
        observed_sdt: (B, H, W) :func:`signed_distance_transform` of the observed object
            masks, at the renderer's resolution.
        hand_vertices_cam: (B, Vh, 3) posed hand; contour points it hides are excluded.
        samples: reuse these contour samples (fixed association); None: select them at
            ``T_cam_obj`` (no gradient flows through the selection).
        num_points: K when selecting.
        with_jacobian: also return the analytic Jacobian w.r.t. a left pose perturbation
            (a few times cheaper than ``torch.func.jacfwd`` through this function, which
            also works).
    Returns:
        :class:`ContourResidual`.
    """
    cam = camera
    B = T_cam_obj.shape[0] if isinstance(T_cam_obj, torch.Tensor) and T_cam_obj.dim() == 3 \
        else None
    if not isinstance(observed_sdt, torch.Tensor) or \
            tuple(observed_sdt.shape) != (B, cam.height, cam.width):
        raise InputError(f'observed_sdt: expected shape ({B}, {cam.height}, {cam.width}), got '
                         f'{tuple(getattr(observed_sdt, "shape", ()))}')
    if samples is None:
        samples = select_contour_samples(renderer, camera, T_cam_obj, hand_vertices_cam,
                                         num_points=num_points)
    jacobian = None
    valid = samples.valid.to(T_cam_obj.dtype)
    if with_jacobian:
        points, d_points = contour_points_jacobian(renderer, camera, T_cam_obj, samples)
        grad = bilinear_gradient(observed_sdt, points)  # (B, K, 2)
        jacobian = (grad[..., None, :] @ d_points).squeeze(-2) * valid[..., None]  # (B, K, 6)
    else:
        points = contour_points(renderer, camera, T_cam_obj, samples)
    values = bilinear_sample(observed_sdt, points)
    residual = values * valid
    return ContourResidual(residual=residual, valid=samples.valid, points_2d=points,
                           samples=samples, jacobian=jacobian)
