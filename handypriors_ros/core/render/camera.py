"""Pinhole camera model, undistortion to it, and the one optical-frame <-> clip-space conversion.

Conventions (used by every renderer in this package):
- Points are in the camera's OpenCV optical frame: x right, y down, z forward (metres).
- Pixel coordinates ``(u, v)``: u along image columns (right), v along rows (down). The centre
  of pixel (column i, row j) is at ``(u, v) = (i, j)`` exactly, as in OpenCV; pixel (i, j)
  covers ``[i - 0.5, i + 0.5] x [j - 0.5, j + 0.5]``. ``project`` gives
  ``u = fx x / z + cx``, ``v = fy y / z + cy``.
- Renderers always see an undistorted pinhole image: camera_info's distortion is removed from
  the observed images once, by :class:`Undistorter`, with maps built once by OpenCV.
- :func:`optical_to_clip` is the only place that maps the optical frame into a rasterizer's
  homogeneous clip space (used by the nvdiffrast backend); :func:`clip_to_optical` is its
  inverse. The pure-torch rasterizers work directly in pixel coordinates from
  :meth:`PinholeCamera.project`. There are no other axis flips anywhere in the renderers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from handypriors_ros.core.errors import InputError

# Distortion models of sensor_msgs/CameraInfo (camera_calibration_parsers names) and the
# numbers of coefficients OpenCV accepts for each.
_PLUMB_BOB_SIZES = (4, 5, 8, 12, 14)
_MODEL_COEFFS = {
    'plumb_bob': _PLUMB_BOB_SIZES,
    'rational_polynomial': _PLUMB_BOB_SIZES,
    'equidistant': (4,),
}


def _as_float_vector(name: str, value: object, size: int | None) -> np.ndarray:
    """A finite float64 vector (of ``size`` entries when given), or an InputError naming it."""
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InputError(f'{name}: expected a sequence of numbers, got {type(value).__name__}'
                         ) from exc
    if size is not None and arr.size != size:
        raise InputError(f'{name}: expected {size} values, got {arr.size}')
    if not np.all(np.isfinite(arr)):
        raise InputError(f'{name}: expected finite values, got {arr.tolist()}')
    return arr


@dataclass(frozen=True)
class PinholeCamera:
    """An undistorted pinhole camera: intrinsics in pixels and the image size.

    Attributes:
        fx, fy: focal lengths [px], > 0.
        cx, cy: principal point [px], OpenCV pixel-centre convention (module docstring).
        width, height: image size [px], > 0.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ('fx', 'fy', 'cx', 'cy'):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f'{name}: expected a finite number, got {value!r}')
        for name in ('fx', 'fy'):
            if getattr(self, name) <= 0:
                raise InputError(f'{name}: expected a focal length > 0 px, '
                                 f'got {getattr(self, name)!r}')
        for name in ('width', 'height'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise InputError(f'{name}: expected a positive integer, got {value!r}')
        object.__setattr__(self, 'fx', float(self.fx))
        object.__setattr__(self, 'fy', float(self.fy))
        object.__setattr__(self, 'cx', float(self.cx))
        object.__setattr__(self, 'cy', float(self.cy))
        object.__setattr__(self, 'width', int(self.width))
        object.__setattr__(self, 'height', int(self.height))

    @classmethod
    def from_camera_info(cls, K: Sequence[float], P: Sequence[float], width: int, height: int,
                         distortion_model: str = 'plumb_bob',
                         D: Sequence[float] = ()) -> PinholeCamera:
        """The pinhole camera of the rectified image described by a sensor_msgs/CameraInfo.

        Its intrinsics are P's (``P[0], P[5], P[2], P[6]``): the camera of the image after
        :class:`Undistorter` has removed the distortion. A P that is all zeros (an
        uncalibrated driver) falls back to K, and is allowed only with zero distortion.

        Args:
            K: (9,) row-major 3x3 intrinsic matrix of the raw image.
            P: (12,) row-major 3x4 projection matrix of the rectified image.
            width, height: image size [px] (CameraInfo.width / .height).
            distortion_model: CameraInfo.distortion_model; checked with ``D``.
            D: distortion coefficients.
        Raises:
            InputError: naming the field: wrong sizes, non-finite values, a zero focal length,
                a non-positive size, an unknown distortion model with non-zero D.
        """
        K_arr, P_arr, D_arr = _check_camera_info(K, P, width, height, distortion_model, D)
        if np.all(P_arr == 0):
            fx, fy, cx, cy = K_arr[0], K_arr[4], K_arr[2], K_arr[5]
            source = 'K'
            names = ('K[0] (fx)', 'K[4] (fy)')
        else:
            fx, fy, cx, cy = P_arr[0], P_arr[5], P_arr[2], P_arr[6]
            source = 'P'
            names = ('P[0] (fx)', 'P[5] (fy)')
        for name, value in zip(names, (fx, fy)):
            if value <= 0:
                raise InputError(f'{name}: expected a focal length > 0 px in {source}, '
                                 f'got {value}')
        return cls(fx=float(fx), fy=float(fy), cx=float(cx), cy=float(cy),
                   width=int(width), height=int(height))

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int) -> PinholeCamera:
        """The same camera rendering an image resized to ``width`` x ``height``.

        Pixel edges scale, so with ``s = width / self.width``: ``fx' = s fx`` and
        ``cx' = s (cx + 0.5) - 0.5`` (pixel centres at integers), likewise for y. This is the
        camera of ``cv2.resize(image, (width, height))``.
        """
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width <= 0:
            raise InputError(f'width: expected a positive integer, got {width!r}')
        if isinstance(height, bool) or not isinstance(height, (int, np.integer)) or height <= 0:
            raise InputError(f'height: expected a positive integer, got {height!r}')
        sx = width / self.width
        sy = height / self.height
        return PinholeCamera(fx=self.fx * sx, fy=self.fy * sy,
                             cx=sx * (self.cx + 0.5) - 0.5, cy=sy * (self.cy + 0.5) - 0.5,
                             width=int(width), height=int(height))

    def check_image_size(self, width: int, height: int, name: str = 'image') -> None:
        """Raise InputError naming ``name`` unless an image is ``width`` x ``height`` px."""
        if (int(width), int(height)) != (self.width, self.height):
            raise InputError(f'{name}: expected {self.width}x{self.height} px (camera_info), '
                             f'got {int(width)}x{int(height)}')

    def project(self, points_cam: torch.Tensor) -> torch.Tensor:
        """Pixel coordinates of points in the optical frame (differentiable).

        Points at or behind the image plane (z <= 0) give meaningless (or infinite) values;
        callers cull them.

        Args:
            points_cam: (B, N, 3) in the camera optical frame [m].
        Returns:
            (B, N, 2) pixel coordinates ``(u, v)``.
        """
        _check_points('points_cam', points_cam, 3)
        x, y, z = points_cam.unbind(-1)
        u = self.fx * x / z + self.cx
        v = self.fy * y / z + self.cy
        return torch.stack([u, v], dim=-1)

    def project_jacobian(self, points_cam: torch.Tensor) -> torch.Tensor:
        """(..., 2, 3) Jacobian of :meth:`project` at optical-frame points (..., 3):
        ``[[fx / z, 0, -fx x / z^2], [0, fy / z, -fy y / z^2]]``."""
        x, y, z = points_cam.unbind(-1)
        inv_z = 1.0 / z
        zero = torch.zeros_like(z)
        return torch.stack([torch.stack([self.fx * inv_z, zero, -self.fx * x * inv_z ** 2], -1),
                            torch.stack([zero, self.fy * inv_z, -self.fy * y * inv_z ** 2], -1)],
                           -2)


@dataclass(frozen=True)
class CameraBatch:
    """B pinhole cameras rendering B frames onto one canvas of ``width`` x ``height`` px, so
    that one renderer call covers frames with different intrinsics or regions of interest.

    Each camera keeps its own intrinsics (pixel ``(u, v)`` of frame b: ``cameras[b]``'s
    projection); its image occupies the canvas' top-left ``cameras[b].width`` x
    ``cameras[b].height`` pixels, the rest of the canvas being more of the same image plane
    (callers weight it out). Build with :meth:`of`.

    Attributes:
        cameras: (B,) the cameras.
        width, height: the canvas size [px], at least every camera's size.
    """

    cameras: tuple[PinholeCamera, ...]
    width: int
    height: int

    @classmethod
    def of(cls, cameras: Sequence[PinholeCamera]) -> CameraBatch:
        """The batch of ``cameras`` on a canvas as large as the largest of them."""
        cameras = tuple(cameras)
        if not cameras or not all(isinstance(c, PinholeCamera) for c in cameras):
            raise InputError(f'cameras: expected a non-empty sequence of PinholeCamera, got '
                             f'{[type(c).__name__ for c in cameras]}')
        return cls(cameras, max(c.width for c in cameras), max(c.height for c in cameras))

    def __len__(self) -> int:
        return len(self.cameras)

    def intrinsics(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """fx, fy, cx, cy as (B, 1) tensors in ``like``'s dtype and device."""
        k = torch.tensor([[c.fx, c.fy, c.cx, c.cy] for c in self.cameras], dtype=like.dtype,
                         device=like.device)
        return tuple(k[:, i:i + 1] for i in range(4))

    def project(self, points_cam: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) pixel coordinates of (B, N, 3) optical-frame points, frame b with
        camera b (differentiable)."""
        _check_points('points_cam', points_cam, 3)
        if points_cam.shape[0] != len(self.cameras):
            raise InputError(f'points_cam: expected a batch of {len(self.cameras)} (one per '
                             f'camera), got {points_cam.shape[0]}')
        fx, fy, cx, cy = self.intrinsics(points_cam)
        x, y, z = points_cam.unbind(-1)
        return torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)


def camera_intrinsics(camera: PinholeCamera | CameraBatch, like: torch.Tensor) -> tuple:
    """fx, fy, cx, cy of a camera (floats) or of a batch ((B, 1) tensors)."""
    if isinstance(camera, CameraBatch):
        return camera.intrinsics(like)
    return camera.fx, camera.fy, camera.cx, camera.cy


def _check_camera_info(K: Sequence[float], P: Sequence[float], width: int, height: int,
                       distortion_model: str, D: Sequence[float]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate camera_info fields; return K (9,), P (12,), D as float64 arrays."""
    K_arr = _as_float_vector('K', K, 9)
    P_arr = _as_float_vector('P', P, 12)
    D_arr = _as_float_vector('D', D, None)
    for name, value in (('width', width), ('height', height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise InputError(f'{name}: expected a positive integer image size, got {value!r}')
    if not isinstance(distortion_model, str):
        raise InputError(f'distortion_model: expected a string, got '
                         f'{type(distortion_model).__name__}')
    if np.any(D_arr != 0):
        sizes = _MODEL_COEFFS.get(distortion_model)
        if sizes is None:
            raise InputError(f'distortion_model: expected one of {sorted(_MODEL_COEFFS)} for a '
                             f'non-zero D, got {distortion_model!r}')
        if D_arr.size not in sizes:
            raise InputError(f'D: expected {" or ".join(map(str, sizes))} coefficients for '
                             f'{distortion_model!r}, got {D_arr.size}')
        if np.all(P_arr == 0):
            raise InputError('P: expected the rectified projection matrix for a distorted '
                             'camera, got all zeros')
    if K_arr[0] <= 0 and np.any(D_arr != 0):
        raise InputError(f'K[0] (fx): expected a focal length > 0 px, got {K_arr[0]}')
    if K_arr[4] <= 0 and np.any(D_arr != 0):
        raise InputError(f'K[4] (fy): expected a focal length > 0 px, got {K_arr[4]}')
    return K_arr, P_arr, D_arr


class Undistorter:
    """Removes camera_info's distortion from raw images so renderers see a pinhole image.

    The remap tables are built once (``cv2.initUndistortRectifyMap``, or its fisheye version
    for ``equidistant``) from K, D, R (identity unless given) to P's intrinsics; the result is
    the image of :attr:`camera`. With zero distortion and ``K == P[:3, :3]`` no remap is needed
    and images pass through unchanged (:attr:`is_identity`).
    """

    def __init__(self, camera: PinholeCamera, map_x: np.ndarray | None,
                 map_y: np.ndarray | None) -> None:
        self.camera = camera
        self._map_x = map_x
        self._map_y = map_y

    @classmethod
    def from_camera_info(cls, K: Sequence[float], P: Sequence[float], width: int, height: int,
                         distortion_model: str = 'plumb_bob', D: Sequence[float] = (),
                         R: Sequence[float] | None = None) -> Undistorter:
        """Build the maps for a sensor_msgs/CameraInfo (arguments as its fields).

        Raises:
            InputError: as :meth:`PinholeCamera.from_camera_info`, or a bad ``R``.
        """
        camera = PinholeCamera.from_camera_info(K, P, width, height, distortion_model, D)
        K_arr, P_arr, D_arr = _check_camera_info(K, P, width, height, distortion_model, D)
        R_arr = np.eye(3) if R is None else _as_float_vector('R', R, 9).reshape(3, 3)
        K_mat = K_arr.reshape(3, 3)
        has_distortion = bool(np.any(D_arr != 0))
        same_intrinsics = np.allclose(K_mat, camera.K, rtol=0.0, atol=1e-9)
        if not has_distortion and same_intrinsics and np.allclose(R_arr, np.eye(3), atol=1e-12):
            return cls(camera, None, None)
        size = (camera.width, camera.height)
        if distortion_model == 'equidistant' and has_distortion:
            map_x, map_y = cv2.fisheye.initUndistortRectifyMap(
                K_mat, D_arr, R_arr, camera.K, size, cv2.CV_32FC1)
        else:
            map_x, map_y = cv2.initUndistortRectifyMap(
                K_mat, D_arr if has_distortion else None, R_arr, camera.K, size, cv2.CV_32FC1)
        return cls(camera, map_x, map_y)

    @property
    def is_identity(self) -> bool:
        """True when images pass through unchanged (no distortion, same intrinsics)."""
        return self._map_x is None

    def _check(self, name: str, image: np.ndarray) -> None:
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
            raise InputError(f'{name}: expected a numpy array (H, W) or (H, W, C), got '
                             f'{getattr(image, "shape", type(image).__name__)}')
        self.camera.check_image_size(image.shape[1], image.shape[0], name)

    def undistort_image(self, image: np.ndarray) -> np.ndarray:
        """Undistorted colour (or grey) image, bilinear; black where nothing maps.

        Args:
            image: (H, W) or (H, W, C) raw image of the camera_info's size.
        Returns:
            Same shape and dtype, the image of :attr:`camera`.
        """
        self._check('image', image)
        if self.is_identity:
            return image
        return cv2.remap(image, self._map_x, self._map_y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def undistort_mask(self, mask: np.ndarray) -> np.ndarray:
        """Undistorted label mask (nearest neighbour, so labels stay labels).

        Args:
            mask: (H, W) raw mask of the camera_info's size.
        Returns:
            (H, W), same dtype.
        """
        self._check('mask', mask)
        if self.is_identity:
            return mask
        return cv2.remap(mask, self._map_x, self._map_y, cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _check_points(name: str, points: torch.Tensor, last: int) -> None:
    if not isinstance(points, torch.Tensor):
        raise InputError(f'{name}: expected a torch.Tensor (B, N, {last}), got '
                         f'{type(points).__name__}')
    if points.dim() != 3 or points.shape[-1] != last:
        raise InputError(f'{name}: expected shape (B, N, {last}), got {tuple(points.shape)}')
    if not points.is_floating_point():
        raise InputError(f'{name}: expected a floating dtype, got {points.dtype}')


def _check_near_far(near: float, far: float) -> None:
    if not (0 < near < far) or not math.isfinite(far):
        raise InputError(f'near, far: expected 0 < near < far < inf [m], got {near}, {far}')


def optical_to_clip(points_cam: torch.Tensor, camera: PinholeCamera | CameraBatch, near: float,
                    far: float) -> torch.Tensor:
    """Homogeneous clip-space coordinates of optical-frame points: THE conversion.

    OpenGL-style clip space with ``w = z`` (depth along the optical axis), x/w, y/w, z/w in
    [-1, 1] inside the frustum, z/w growing away from the camera (-1 at ``near``, +1 at
    ``far``). NDC x = -1 / +1 are the left / right image edges (``u = -0.5`` / ``W - 0.5``) and
    NDC y = -1 / +1 the TOP / bottom image edges (``v = -0.5`` / ``H - 0.5``): NDC y grows with
    the image row. nvdiffrast writes raster row 0 at NDC y = -1, so its output comes out in
    the usual top-down row order with no flip. Pixel (i, j)'s centre is at NDC
    ``((2 i + 1) / W - 1, (2 j + 1) / H - 1)``, where OpenGL samples it.

    Args:
        points_cam: (B, N, 3) in the optical frame [m].
        camera: the pinhole camera, or a :class:`CameraBatch` of B (its canvas size).
        near, far: clip distances along z [m], 0 < near < far.
    Returns:
        (B, N, 4) clip coordinates ``(x, y, z, w)``.
    """
    _check_points('points_cam', points_cam, 3)
    _check_near_far(near, far)
    x, y, z = points_cam.unbind(-1)
    W, H = camera.width, camera.height
    fx, fy, cx, cy = camera_intrinsics(camera, points_cam)
    x_clip = (2.0 * fx / W) * x + ((2.0 * cx + 1.0) / W - 1.0) * z
    y_clip = (2.0 * fy / H) * y + ((2.0 * cy + 1.0) / H - 1.0) * z
    z_clip = (far + near) / (far - near) * z - 2.0 * far * near / (far - near)
    return torch.stack([x_clip, y_clip, z_clip, z], dim=-1)


def clip_to_optical(points_clip: torch.Tensor, camera: PinholeCamera, near: float,
                    far: float) -> torch.Tensor:
    """Inverse of :func:`optical_to_clip` (uses x, y, w; z is implied by w).

    Args:
        points_clip: (B, N, 4) clip coordinates ``(x, y, z, w)``.
        camera, near, far: as given to :func:`optical_to_clip`.
    Returns:
        (B, N, 3) points in the optical frame [m].
    """
    _check_points('points_clip', points_clip, 4)
    _check_near_far(near, far)
    x_clip, y_clip, _, w = points_clip.unbind(-1)
    W, H = camera.width, camera.height
    x = (x_clip - ((2.0 * camera.cx + 1.0) / W - 1.0) * w) / (2.0 * camera.fx / W)
    y = (y_clip - ((2.0 * camera.cy + 1.0) / H - 1.0) * w) / (2.0 * camera.fy / H)
    return torch.stack([x, y, w], dim=-1)


def ndc_to_pixels(ndc_xy: torch.Tensor, camera: PinholeCamera) -> torch.Tensor:
    """Pixel coordinates ``(u, v)`` of NDC ``(x/w, y/w)`` under :func:`optical_to_clip`.

    Args:
        ndc_xy: (B, N, 2).
    Returns:
        (B, N, 2).
    """
    _check_points('ndc_xy', ndc_xy, 2)
    u = ((ndc_xy[..., 0] + 1.0) * camera.width - 1.0) * 0.5
    v = ((ndc_xy[..., 1] + 1.0) * camera.height - 1.0) * 0.5
    return torch.stack([u, v], dim=-1)
