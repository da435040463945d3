"""Baseline trackers the EKF tracker is measured against, with the same per-frame interface.

Every baseline has ``initialise(T_cam_obj)`` and ``step(frame: Frame) -> TrackResult``,
like :class:`~handypriors_ros.core.tracking.tracker.ObjectTracker`:

- :class:`HoldInitialBaseline`: always the initial pose (a tracker that does nothing; the
  error it scores is the initial offset plus all the motion of the sequence).
- :class:`HandRigidBaseline`: the object rigidly attached to the hand root, the pose composed
  from TF alone: ``T_cam_obj(t) = T_cam_base(t) T_cam_base(0)^-1 T_init``. It follows the
  wrist exactly and ignores in-hand rolling and slip; no image is looked at.
- :class:`RapidBaseline`: OpenCV contrib's silhouette-edge model trackers (``cv2.rapid``):
  ``'rapid'`` (RAPID, Harris 1990, with Drummond & Cipolla's dynamic control points: the
  strongest intensity edge along search lines normal to the projected silhouette), ``'ols'``
  (optimal local searching, Seo et al. 2014: edge candidates scored by foreground/background
  colour histograms) and ``'gos'`` (its global variant). Each step runs the tracker's
  ``compute`` from the previous pose on the image (BGR, as OpenCV expects); ``compute``
  refines the pose with ``cv2.solvePnPRefineLM`` on the matched edge points.

Seen on clean synthetic images: started at the true pose, the ``cv2.rapid`` trackers do not
stay there; their edge search settles about one pixel outside the silhouette, which on an
object 100 px across is a depth error of a centimetre and, on a box, tens of degrees of
rotation. This is the library's behaviour, kept as is: it is the baseline.

None of them estimates an uncertainty: their :class:`TrackResult` covariance is the fixed,
large diagonal :data:`PLACEHOLDER_COVARIANCE` (finite, so it can be published, but not an
estimate; nothing should fuse it).
"""
from __future__ import annotations

import time

import cv2
import numpy as np

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.models.object_model import ObjectModel
from handypriors_ros.core.frames import Frame
from handypriors_ros.core.tracking.types import TrackResult, TrackStatus

#: (6, 6) covariance over (x y z rx ry rz) that the baselines report: 1 m^2 and 1 rad^2 per
#: axis. It is a placeholder meaning "no uncertainty estimate", not a measured figure.
PLACEHOLDER_COVARIANCE = np.diag([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])

RAPID_VARIANTS = ('rapid', 'ols', 'gos')


def _pose_matrix(name: str, T: object) -> np.ndarray:
    """A finite (4, 4) float64 homogeneous rigid transform, or an InputError naming ``name``."""
    try:
        M = np.array(T, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f'{name}: expected a (4, 4) matrix, got {type(T).__name__}') from exc
    if M.shape != (4, 4):
        raise InputError(f'{name}: expected shape (4, 4), got {M.shape}')
    if not np.isfinite(M).all():
        raise InputError(f'{name}: expected finite values, got NaN/Inf')
    if np.abs(M[3] - [0.0, 0.0, 0.0, 1.0]).max() > 1e-6:
        raise InputError(f'{name}: expected bottom row [0, 0, 0, 1], got {M[3].tolist()}')
    R = M[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-4 or np.linalg.det(R) <= 0:
        raise InputError(f'{name}: expected a rotation block (R^T R = I, det R = +1)')
    return M


def _check_frame(frame: object) -> Frame:
    if not isinstance(frame, Frame):
        raise InputError(f'frame: expected a Frame, got {type(frame).__name__}')
    return frame


class _NotInitialised:
    """Shared guard: a step before ``initialise`` is an error naming the baseline."""

    _T_init: np.ndarray | None = None

    def _require_initialised(self) -> np.ndarray:
        if self._T_init is None:
            raise InputError(f'{type(self).__name__}.step: call initialise(T_cam_obj) first')
        return self._T_init


class HoldInitialBaseline(_NotInitialised):
    """Returns the initial pose for every frame (module docstring)."""

    def initialise(self, T_cam_obj: np.ndarray) -> None:
        """Start from ``T_cam_obj`` ((4, 4) object pose in the camera optical frame)."""
        self._T_init = _pose_matrix('T_cam_obj', T_cam_obj)

    def step(self, frame: Frame) -> TrackResult:
        """The initial pose, stamped with the frame's stamp; status TRACKING."""
        frame = _check_frame(frame)
        T = self._require_initialised()
        return TrackResult(stamp_ns=frame.stamp_ns, T_cam_obj=T.copy(),
                           covariance=PLACEHOLDER_COVARIANCE.copy(), status=TrackStatus.TRACKING,
                           status_reason='hold initial pose', latency_s={'total': 0.0})


class HandRigidBaseline(_NotInitialised):
    """The object moves rigidly with the hand root (module docstring).

    The object's pose in the hand root frame, ``T_base_obj = T_cam_base(0)^-1 T_init``, is
    fixed at the first step after :meth:`initialise` (frame 0 is that step's frame).
    """

    def __init__(self) -> None:
        self._T_base_obj: np.ndarray | None = None

    def initialise(self, T_cam_obj: np.ndarray) -> None:
        """Start from ``T_cam_obj`` ((4, 4)); the next step's frame is frame 0."""
        self._T_init = _pose_matrix('T_cam_obj', T_cam_obj)
        self._T_base_obj = None

    def step(self, frame: Frame) -> TrackResult:
        """``T_cam_base(t) T_base_obj``; status TRACKING."""
        frame = _check_frame(frame)
        T_init = self._require_initialised()
        start = time.perf_counter()
        T_cam_base = _pose_matrix('frame.T_cam_base', frame.T_cam_base)
        if self._T_base_obj is None:
            self._T_base_obj = np.linalg.inv(T_cam_base) @ T_init
        T_cam_obj = T_cam_base @ self._T_base_obj
        return TrackResult(stamp_ns=frame.stamp_ns, T_cam_obj=T_cam_obj,
                           covariance=PLACEHOLDER_COVARIANCE.copy(), status=TrackStatus.TRACKING,
                           status_reason='rigid with the hand root',
                           latency_s={'total': time.perf_counter() - start})


class RapidBaseline(_NotInitialised):
    """An OpenCV contrib ``cv2.rapid`` tracker behind the tracker interface (module docstring).

    Args:
        mesh_vertices: (V, 3) object mesh vertices in the object frame, metres. A few hundred
            to a few thousand faces is plenty (the trackers only use the projected silhouette);
            :meth:`from_object_model` takes the model's decimated render proxy.
        faces: (F, 3) triangle vertex indices.
        variant: ``'ols'``, ``'gos'`` or ``'rapid'``.
        num_lines: search lines (control points) sampled along the silhouette per iteration.
        search_radius_px: half length of a search line, pixels.
        iterations: at most this many refinements per frame.
        min_step_m, min_step_deg: stop refining a frame earlier when one refinement moves
            the pose by less than both.
        hist_bins, sobel_threshold: histogram bins and edge threshold of OLS/GOS.
        min_match_ratio: a frame whose fraction of matched search lines is below this keeps
            the previous pose and reports LOST.

    A frame where OpenCV cannot track (the silhouette leaves the image, fewer than three
    matches, or the refined pose puts the object behind the camera or moves it by more than
    ``max_jump_m`` in one frame) keeps the previous pose and reports
    :attr:`TrackStatus.LOST` with the reason; the next frame starts again from that pose.
    The covariance is :data:`PLACEHOLDER_COVARIANCE` (no estimate).

    Each refinement is one ``compute`` call with a one-iteration ``TermCriteria``, the loop
    and its stopping rule being here: with more than one iteration per call, GOS in OpenCV
    5.0 fails an assertion (``cols.rows == pts3d.rows`` in ``convertCorrespondencies``) from
    its second iteration on; all variants are iterated the same way so they compare fairly.
    """

    def __init__(self, mesh_vertices: np.ndarray, faces: np.ndarray, *, variant: str = 'ols',
                 num_lines: int = 64, search_radius_px: int = 20, iterations: int = 5,
                 min_step_m: float = 1e-4, min_step_deg: float = 0.05, hist_bins: int = 8,
                 sobel_threshold: int = 10, min_match_ratio: float = 0.1,
                 max_jump_m: float = 0.1) -> None:
        if variant not in RAPID_VARIANTS:
            raise InputError(f'variant: expected one of {RAPID_VARIANTS}, got {variant!r}')
        vertices = np.asarray(mesh_vertices, dtype=np.float64)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) < 3:
            raise InputError(f'mesh_vertices: expected shape (V, 3) with V >= 3, got '
                             f'{vertices.shape}')
        if not np.isfinite(vertices).all():
            raise InputError('mesh_vertices: expected finite values, got NaN/Inf')
        tris = np.asarray(faces)
        if tris.ndim != 2 or tris.shape[1] != 3 or len(tris) == 0:
            raise InputError(f'faces: expected shape (F, 3) with F >= 1, got {tris.shape}')
        if not np.issubdtype(tris.dtype, np.integer):
            raise InputError(f'faces: expected integer indices, got dtype {tris.dtype}')
        if tris.min() < 0 or tris.max() >= len(vertices):
            raise InputError(f'faces: expected indices in [0, {len(vertices) - 1}], got '
                             f'[{tris.min()}, {tris.max()}]')
        for name, value, low in (('num_lines', num_lines, 3), ('search_radius_px',
                                 search_radius_px, 1), ('iterations', iterations, 1),
                                 ('hist_bins', hist_bins, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise InputError(f'{name}: expected an integer >= {low}, got {value!r}')
        if not 0 <= sobel_threshold <= 255:
            raise InputError(f'sobel_threshold: expected 0..255, got {sobel_threshold!r}')
        if not 0.0 <= min_match_ratio <= 1.0:
            raise InputError(f'min_match_ratio: expected 0..1, got {min_match_ratio!r}')
        if not (min_step_m >= 0 and min_step_deg >= 0 and max_jump_m > 0):
            raise InputError(f'min_step_m, min_step_deg, max_jump_m: expected >= 0, >= 0 and '
                             f'> 0, got {min_step_m!r}, {min_step_deg!r}, {max_jump_m!r}')
        self.variant = variant
        self.num_lines = int(num_lines)
        self.search_radius_px = int(search_radius_px)
        self.min_match_ratio = float(min_match_ratio)
        self.max_jump_m = float(max_jump_m)
        # OpenCV wants float32 points and contiguous int32 triangles.
        self._pts3d = np.ascontiguousarray(vertices, dtype=np.float32)
        self._tris = np.ascontiguousarray(tris, dtype=np.int32)
        self.iterations = int(iterations)
        self.min_step_m = float(min_step_m)
        self.min_step_rad = float(np.deg2rad(min_step_deg))
        self._termcrit = (cv2.TERM_CRITERIA_COUNT, 1, 0.0)
        if variant == 'rapid':
            self._tracker = cv2.rapid.Rapid_create(self._pts3d, self._tris)
        elif variant == 'ols':
            self._tracker = cv2.rapid.OLSTracker_create(self._pts3d, self._tris, int(hist_bins),
                                                        int(sobel_threshold))
        else:
            self._tracker = cv2.rapid.GOSTracker_create(self._pts3d, self._tris, int(hist_bins),
                                                        int(sobel_threshold))
        self._T_cam_obj: np.ndarray | None = None
        self.last_match_ratio = 0.0

    @classmethod
    def from_object_model(cls, model: ObjectModel, **kwargs) -> RapidBaseline:
        """A baseline on the model's render proxy (keyword arguments as the constructor)."""
        return cls(model.proxy.vertices.detach().cpu().numpy(),
                   model.proxy.faces.detach().cpu().numpy(), **kwargs)

    def initialise(self, T_cam_obj: np.ndarray) -> None:
        """Start from ``T_cam_obj`` ((4, 4)); clears OLS/GOS's colour histograms (they are
        learnt again on the next frame, around the silhouette at this pose)."""
        self._T_init = _pose_matrix('T_cam_obj', T_cam_obj)
        self._T_cam_obj = self._T_init.copy()
        self._tracker.clearState()

    def _result(self, frame: Frame, status: TrackStatus, reason: str,
                start: float) -> TrackResult:
        return TrackResult(stamp_ns=frame.stamp_ns, T_cam_obj=self._T_cam_obj.copy(),
                           covariance=PLACEHOLDER_COVARIANCE.copy(), status=status,
                           status_reason=reason, latency_s={'total': time.perf_counter() - start})

    def step(self, frame: Frame) -> TrackResult:
        """Refine the previous pose on ``frame.rgb`` (see the class docstring for LOST)."""
        frame = _check_frame(frame)
        self._require_initialised()
        start = time.perf_counter()
        rgb = frame.rgb
        if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3
                and rgb.shape[2] == 3):
            raise InputError(f'frame.rgb: expected an (H, W, 3) uint8 array, got '
                             f'{getattr(rgb, "shape", type(rgb).__name__)} '
                             f'{getattr(rgb, "dtype", "")}')
        frame.camera.check_image_size(rgb.shape[1], rgb.shape[0], 'frame.rgb')
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        T_prev = self._T_cam_obj
        rvec = cv2.Rodrigues(T_prev[:3, :3])[0].reshape(3, 1)
        tvec = T_prev[:3, 3].reshape(3, 1).copy()
        K = frame.camera.K
        try:
            for _ in range(self.iterations):
                ratio, rvec_new, tvec_new = self._tracker.compute(
                    bgr, self.num_lines, self.search_radius_px, K, rvec.copy(), tvec.copy(),
                    self._termcrit)
                moved_m = float(np.linalg.norm(tvec_new - tvec))
                # rotation-vector difference: the rotation's angle to first order (enough
                # for a stopping rule on small steps)
                moved_rad = float(np.linalg.norm(rvec_new - rvec))
                rvec, tvec = rvec_new, tvec_new
                if ratio < self.min_match_ratio or not np.isfinite(tvec).all() or (
                        moved_m < self.min_step_m and moved_rad < self.min_step_rad):
                    break
        except cv2.error as exc:
            # OpenCV asserts when the silhouette has no contour in the image.
            first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else 'cv2.error'
            self.last_match_ratio = 0.0
            return self._result(frame, TrackStatus.LOST,
                                f'cv2.rapid failed ({first_line}); pose held', start)
        self.last_match_ratio = float(ratio)
        rvec = np.asarray(rvec, dtype=np.float64).reshape(3)
        tvec = np.asarray(tvec, dtype=np.float64).reshape(3)
        if ratio < self.min_match_ratio:
            return self._result(frame, TrackStatus.LOST,
                                f'{ratio:.0%} of the search lines matched (< '
                                f'{self.min_match_ratio:.0%}); pose held', start)
        if not (np.isfinite(rvec).all() and np.isfinite(tvec).all()) or tvec[2] <= 0:
            return self._result(frame, TrackStatus.LOST,
                                'refined pose is non-finite or behind the camera; pose held',
                                start)
        if np.linalg.norm(tvec - T_prev[:3, 3]) > self.max_jump_m:
            return self._result(frame, TrackStatus.LOST,
                                f'refined pose jumped more than {self.max_jump_m} m; pose held',
                                start)
        T = np.eye(4)
        T[:3, :3] = cv2.Rodrigues(rvec)[0]
        T[:3, 3] = tvec
        self._T_cam_obj = T
        return self._result(frame, TrackStatus.TRACKING,
                            f'{self.variant}: {ratio:.0%} of the search lines matched', start)
