"""Pose-accuracy metrics: ADD, ADD-S and their AUC, pose errors, Chamfer distances, penetration.

Every function takes numpy arrays or torch tensors (any device; they are copied to CPU float64)
and returns numpy float64 values. Poses are batches of rigid transforms ``T_cam_obj`` of shape
(N, 4, 4) mapping object-frame points into the camera (or any common) frame; ``points`` are the
object's model points in its own frame, (P, 3), metres.

Definitions (the references they follow):

- ADD (Hinterstoisser et al. 2012; PoseCNN, Xiang et al. 2018): mean over model points of
  ``||T_est p - T_gt p||``.
- ADD-S (PoseCNN): for symmetric objects, mean over model points of the distance from
  ``T_est p`` to the *nearest* point of ``{T_gt q}``. Computed with one k-d tree (scipy) of the
  model points, querying ``T_gt^-1 T_est p`` (the same distance, because ``T_gt`` is rigid).
- AUC of ADD/ADD-S (the YCB-Video evaluation of PoseCNN): the accuracy-threshold curve from
  0 to ``max_threshold`` (10 cm) is integrated and normalised to [0, 1], the way the YCB-Video
  toolbox does it (see :func:`auc_add`).
- Chamfer distances as used for Table III of HandyPriors (Zhang et al., ICRA 2024): "the 2D
  error [projects] the object vertices onto the image plane and [computes] the Chamfer distance
  between the ground truth vertices and predicted vertices. The 3D error is the Chamfer
  distance in the original 3D space." The paper does not write the formula; here the Chamfer
  distance between sets A and B is the *unsquared, symmetric average*
  ``0.5 * (mean_a min_b ||a - b|| + mean_b min_a ||a - b||)``, in metres (3D) or pixels (2D),
  so a set against a copy shifted by d (small against its point spacing) scores exactly d.
  :func:`posed_chamfer_3d` and :func:`projected_chamfer_2d` are the paper's two errors for a
  batch of poses; :func:`chamfer_2d_masks` applies the same distance to silhouettes (pixel
  sets, or their contours), for when only masks are at hand.
- Penetration: signed distances follow the physics module's convention, negative inside the
  object; depth of a point = ``max(-sd, 0)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from handypriors_ros.core.errors import InputError

# Tolerance on R^T R = I and on the bottom row [0, 0, 0, 1] when checking rigid transforms.
_RIGID_TOLERANCE = 1e-4


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _array(name: str, x: object) -> np.ndarray:
    """``x`` (numpy, torch or a sequence) as a float64 numpy array; finite values required."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to('cpu', torch.float64).numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f'{name}: expected a numeric array, got {type(x).__name__}') from error
    return a


def _finite(name: str, a: np.ndarray) -> np.ndarray:
    if not np.isfinite(a).all():
        raise InputError(f'{name}: expected finite values, got {int((~np.isfinite(a)).sum())} '
                         f'NaN/Inf entries')
    return a


def _points(name: str, x: object, dim: int = 3) -> np.ndarray:
    a = _finite(name, _array(name, x))
    if a.ndim != 2 or a.shape[1] != dim or a.shape[0] == 0:
        raise InputError(f'{name}: expected shape (P, {dim}) with P >= 1, got {a.shape}')
    return a


def _poses(name: str, x: object) -> np.ndarray:
    """(N, 4, 4) rigid transforms; a single (4, 4) becomes N = 1."""
    a = _finite(name, _array(name, x))
    if a.shape == (4, 4):
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (4, 4):
        raise InputError(f'{name}: expected shape (N, 4, 4) or (4, 4), got {a.shape}')
    bottom_error = np.abs(a[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1)
    if (bottom_error > _RIGID_TOLERANCE).any():
        i = int(np.argmax(bottom_error))
        raise InputError(f'{name}: expected homogeneous transforms with bottom row [0, 0, 0, 1]; '
                         f'pose {i} has {a[i, 3].tolist()} (transposed?)')
    R = a[:, :3, :3]
    ortho_error = np.abs(np.swapaxes(R, 1, 2) @ R - np.eye(3)).max(axis=(1, 2))
    if (ortho_error > _RIGID_TOLERANCE).any() or (np.linalg.det(R) <= 0).any():
        i = int(np.argmax(ortho_error))
        raise InputError(f'{name}: expected rotation blocks (R^T R = I, det R = +1); pose {i} '
                         f'deviates by {ortho_error[i]:.3g}')
    return a


def _rotations(name: str, x: object) -> np.ndarray:
    """(N, 3, 3) rotation blocks of (N, 4, 4) poses or of (N, 3, 3) rotations."""
    a = _array(name, x)
    if a.shape[-2:] == (3, 3) and a.ndim in (2, 3):
        a = _finite(name, a.reshape(-1, 3, 3))
        ortho_error = np.abs(np.swapaxes(a, 1, 2) @ a - np.eye(3)).max(axis=(1, 2))
        if (ortho_error > _RIGID_TOLERANCE).any() or (np.linalg.det(a) <= 0).any():
            raise InputError(f'{name}: expected rotation matrices (R^T R = I, det R = +1)')
        return a
    return _poses(name, a)[:, :3, :3]


def _pair(T_est: object, T_gt: object) -> tuple[np.ndarray, np.ndarray]:
    est, gt = _poses('T_est', T_est), _poses('T_gt', T_gt)
    if len(est) != len(gt):
        raise InputError(f'T_est, T_gt: expected the same number of poses, got {len(est)} and '
                         f'{len(gt)}')
    return est, gt


def _transform(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 4, 4) x (P, 3) -> (N, P, 3): ``p_a = R p_b + t`` for every pose."""
    return points @ np.swapaxes(T[:, :3, :3], 1, 2) + T[:, None, :3, 3]


# --------------------------------------------------------------------------------------------
# pose errors
# --------------------------------------------------------------------------------------------


def add(T_est: object, T_gt: object, points: object) -> np.ndarray:
    """ADD: mean distance between model points posed by the estimate and by the truth.

    Args:
        T_est, T_gt: (N, 4, 4) (or (4, 4)) rigid transforms object -> camera.
        points: (P, 3) model points in the object frame, metres.

    Returns:
        (N,) float64, metres.
    """
    est, gt = _pair(T_est, T_gt)
    p = _points('points', points)
    return np.linalg.norm(_transform(est, p) - _transform(gt, p), axis=-1).mean(axis=1)


def add_s(T_est: object, T_gt: object, points: object) -> np.ndarray:
    """ADD-S: mean distance from each estimated-posed point to the nearest true-posed point.

    Args:
        T_est, T_gt: (N, 4, 4) (or (4, 4)) rigid transforms object -> camera.
        points: (P, 3) model points in the object frame, metres.

    Returns:
        (N,) float64, metres; <= :func:`add` for the same inputs.
    """
    est, gt = _pair(T_est, T_gt)
    p = _points('points', points)
    tree = cKDTree(p)
    T_rel = np.linalg.inv(gt) @ est                      # (N, 4, 4): est object frame -> gt's
    q = _transform(T_rel, p)                                              # (N, P, 3)
    distances, _ = tree.query(q.reshape(-1, 3))
    return distances.reshape(len(est), len(p)).mean(axis=1)


def translation_error(T_est: object, T_gt: object) -> np.ndarray:
    """(N,) float64 distance between the translations, metres."""
    est, gt = _pair(T_est, T_gt)
    return np.linalg.norm(est[:, :3, 3] - gt[:, :3, 3], axis=1)


def rotation_error_deg(R_est: object, R_gt: object) -> np.ndarray:
    """(N,) float64 geodesic angle between rotations, degrees, in [0, 180].

    Accepts (N, 4, 4) poses or (N, 3, 3) rotations (one of either also works). The angle of
    ``R_rel = R_est^T R_gt`` is ``atan2(||vee(R_rel - R_rel^T)|| / 2, (trace R_rel - 1) / 2)``,
    accurate near 0 and near 180 degrees (unlike ``arccos`` of the trace alone).
    """
    est, gt = _rotations('R_est', R_est), _rotations('R_gt', R_gt)
    if len(est) != len(gt):
        raise InputError(f'R_est, R_gt: expected the same number of rotations, got {len(est)} '
                         f'and {len(gt)}')
    rel = np.swapaxes(est, 1, 2) @ gt                                     # (N, 3, 3)
    skew = rel - np.swapaxes(rel, 1, 2)
    sin = 0.5 * np.linalg.norm(np.stack([skew[:, 2, 1], skew[:, 0, 2], skew[:, 1, 0]], 1), axis=1)
    cos = 0.5 * (np.trace(rel, axis1=1, axis2=2) - 1.0)
    return np.degrees(np.arctan2(sin, cos))


# --------------------------------------------------------------------------------------------
# accuracy curves
# --------------------------------------------------------------------------------------------


def _errors(errors: object) -> np.ndarray:
    e = _array('errors', errors)
    if e.ndim != 1 or e.size == 0:
        raise InputError(f'errors: expected shape (N,) with N >= 1, got {e.shape}')
    if np.isnan(e).any():
        raise InputError('errors: expected no NaN (use inf for a failed frame)')
    if (e < 0).any():
        raise InputError('errors: expected non-negative errors')
    return e


def auc_add(errors: object, max_threshold: float = 0.10) -> float:
    """Area under the accuracy-threshold curve of ADD or ADD-S errors, as in YCB-Video.

    The YCB-Video toolbox (PoseCNN) evaluates it as follows, and so does this function:
    errors at or above ``max_threshold`` count as failures (``inf`` marks a lost frame; the
    toolbox drops only errors *above* it, which lets a lone error of exactly 10 cm score a full
    interval — a measure-zero case treated here as the failure it is); the kept errors
    are sorted, ``e_1 <= ... <= e_k``, and the accuracy after the j-th is ``j / n`` (n = all
    frames). The curve is integrated as a step function whose value on ``(e_{j-1}, e_j]`` is
    the accuracy at its right end, ``j / n`` (with ``e_0 = 0``), and on ``(e_k, max]`` is
    ``k / n`` — the toolbox's VOC-style sum ``sum((mrec[i] - mrec[i-1]) * mpre[i])`` over the
    points where the sorted errors change — then divided by ``max_threshold``.

    This right-end rule scores ``e_k / (n * max_threshold)`` higher than the exact integral of
    ``accuracy(t) = #{e < t} / n`` (so at most 1/n higher; a single frame with any error under
    the threshold scores 1). It is kept so that figures compare with published YCB-Video AUCs.

    Args:
        errors: (N,) ADD or ADD-S errors, metres (inf allowed).
        max_threshold: upper end of the threshold range, metres (10 cm in YCB-Video).

    Returns:
        The AUC in [0, 1] (published tables print 100 x this).
    """
    e = _errors(errors)
    if not (np.isfinite(max_threshold) and max_threshold > 0):
        raise InputError(f'max_threshold: expected a positive number of metres, '
                         f'got {max_threshold}')
    n = len(e)
    kept = np.sort(e[e < max_threshold])
    if len(kept) == 0:
        return 0.0
    steps = np.diff(np.concatenate([[0.0], kept, [max_threshold]]))        # (k + 1,)
    accuracy = np.concatenate([np.arange(1, len(kept) + 1), [len(kept)]]) / n
    return float((steps * accuracy).sum() / max_threshold)


def fraction_within(errors: object, threshold: float) -> float:
    """Fraction of errors strictly below ``threshold`` (e.g. "ADD < 2 cm"); inf never counts."""
    e = _errors(errors)
    if not np.isfinite(threshold):
        raise InputError(f'threshold: expected a finite number, got {threshold}')
    return float((e < threshold).mean())


# --------------------------------------------------------------------------------------------
# Chamfer distances
# --------------------------------------------------------------------------------------------


def _chamfer(a: np.ndarray, b: np.ndarray) -> float:
    d_ab, _ = cKDTree(b).query(a)
    d_ba, _ = cKDTree(a).query(b)
    return float(0.5 * (d_ab.mean() + d_ba.mean()))


def chamfer_3d(points_a: object, points_b: object) -> float:
    """Symmetric Chamfer distance between two 3D point sets, metres.

    ``0.5 * (mean_a min_b ||a - b|| + mean_b min_a ||a - b||)``, unsquared.

    Args:
        points_a: (P, 3). points_b: (Q, 3).
    """
    return _chamfer(_points('points_a', points_a), _points('points_b', points_b))


def chamfer_2d(pixels_a: object, pixels_b: object) -> float:
    """Symmetric Chamfer distance between two 2D point sets (e.g. projected vertices), pixels.

    Args:
        pixels_a: (P, 2). pixels_b: (Q, 2).
    """
    return _chamfer(_points('pixels_a', pixels_a, 2), _points('pixels_b', pixels_b, 2))


def posed_chamfer_3d(T_est: object, T_gt: object, points: object) -> np.ndarray:
    """HandyPriors Table III 3D error: Chamfer distance between estimated- and true-posed points.

    Args:
        T_est, T_gt: (N, 4, 4) rigid transforms object -> camera.
        points: (P, 3) model points (the paper uses the mesh vertices).

    Returns:
        (N,) float64, metres.
    """
    est, gt = _pair(T_est, T_gt)
    p = _points('points', points)
    a, b = _transform(est, p), _transform(gt, p)
    return np.array([_chamfer(a[i], b[i]) for i in range(len(est))])


def _project(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(P, 3) camera-frame points -> (P, 2) pixels (OpenCV optical frame, no distortion)."""
    uvw = points_cam @ K.T
    return uvw[:, :2] / uvw[:, 2:3]


def projected_chamfer_2d(T_est: object, T_gt: object, points: object, K: object) -> np.ndarray:
    """HandyPriors Table III 2D error: Chamfer distance between projected vertex sets, pixels.

    Both posed point sets are projected with the pinhole matrix ``K`` (camera optical frame:
    z forward, x right, y down; no distortion). A frame where any point lies at or behind the
    camera plane (z <= 0) scores inf.

    Args:
        T_est, T_gt: (N, 4, 4) rigid transforms object -> camera optical frame.
        points: (P, 3) model points.
        K: (3, 3) intrinsic matrix.

    Returns:
        (N,) float64, pixels.
    """
    est, gt = _pair(T_est, T_gt)
    p = _points('points', points)
    K = _finite('K', _array('K', K))
    if K.shape != (3, 3):
        raise InputError(f'K: expected shape (3, 3), got {K.shape}')
    a, b = _transform(est, p), _transform(gt, p)
    out = np.empty(len(est))
    for i in range(len(est)):
        if (a[i, :, 2] <= 0).any() or (b[i, :, 2] <= 0).any():
            out[i] = np.inf
        else:
            out[i] = _chamfer(_project(a[i], K), _project(b[i], K))
    return out


def _mask(name: str, x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    m = np.asarray(x)
    if m.ndim != 2:
        raise InputError(f'{name}: expected a (H, W) mask, got shape {m.shape}')
    if m.dtype != np.bool_:
        raise InputError(f'{name}: expected dtype bool, got {m.dtype} (threshold it first)')
    return m


def chamfer_2d_masks(mask_a: object, mask_b: object, *, contour: bool = False) -> float:
    """Symmetric Chamfer distance between the pixel sets of two silhouettes, pixels.

    Args:
        mask_a, mask_b: (H, W) bool masks of the same size.
        contour: compare only the boundary pixels (mask minus its 4-connected erosion)
            instead of every pixel of the silhouettes.

    Returns:
        The distance; 0.0 when both masks are empty, inf when exactly one is.
    """
    a, b = _mask('mask_a', mask_a), _mask('mask_b', mask_b)
    if a.shape != b.shape:
        raise InputError(f'mask_a, mask_b: expected the same size, got {a.shape} and {b.shape}')
    if contour:
        a = a & ~ndimage.binary_erosion(a)
        b = b & ~ndimage.binary_erosion(b)
    pa = np.argwhere(a)[:, ::-1].astype(np.float64)                       # (P, 2) as (x, y)
    pb = np.argwhere(b)[:, ::-1].astype(np.float64)
    if len(pa) == 0 and len(pb) == 0:
        return 0.0
    if len(pa) == 0 or len(pb) == 0:
        return float('inf')
    return _chamfer(pa, pb)


# --------------------------------------------------------------------------------------------
# penetration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PenetrationStats:
    """How deep points sit inside an object (signed distance < 0).

    Each field is a python float for a (P,) input, or an (N,) float64 array for (N, P).

    Attributes:
        mean_depth: mean of ``-sd`` over the points inside, metres (0 when none is inside).
        max_depth: largest ``-sd``, metres (0 when none is inside).
        fraction_inside: fraction of the points with ``sd < 0``.
    """

    mean_depth: float | np.ndarray
    max_depth: float | np.ndarray
    fraction_inside: float | np.ndarray


def penetration_depth(signed_distances: object) -> PenetrationStats:
    """Penetration statistics of points given their signed distances (negative inside).

    Args:
        signed_distances: (P,) or (N, P) signed distances in metres.
    """
    sd = _finite('signed_distances', _array('signed_distances', signed_distances))
    if sd.ndim not in (1, 2) or sd.shape[-1] == 0:
        raise InputError(f'signed_distances: expected shape (P,) or (N, P) with P >= 1, '
                         f'got {sd.shape}')
    single = sd.ndim == 1
    sd = sd.reshape(-1, sd.shape[-1])                                     # (N, P)
    depth = np.maximum(-sd, 0.0)
    inside = sd < 0
    count = inside.sum(axis=1)
    mean_depth = np.where(count > 0, depth.sum(axis=1) / np.maximum(count, 1), 0.0)
    max_depth = depth.max(axis=1)
    fraction = count / sd.shape[1]
    if single:
        return PenetrationStats(float(mean_depth[0]), float(max_depth[0]), float(fraction[0]))
    return PenetrationStats(mean_depth, max_depth, fraction)
