"""The EKF's measurements, rendered around the predicted pose (paper III-E, observation h).

Everything image-side happens in a region of interest (ROI) around the object's predicted
projection, rendered at most ``roi_size`` pixels wide with the hard rasterizer (the hand as a
known occluder: it is rasterised together with the object, so object pixels behind the hand are
not object pixels). Residual functions map an error-state perturbation ``delta`` (6,) to
``z - h(T (+) delta)`` and are differentiable in forward mode, so the EKF's Jacobians come from
``torch.func.jacfwd``. Residuals are in pixels of the full-resolution image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch

from handypriors_ros.core.render.camera import PinholeCamera
from handypriors_ros.core.render.hard_rasterizer import rasterize_hard
from handypriors_ros.core.tracking.ekf import oplus_linear

Residual = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RoiView:
    """A crop of the full image, rescaled.

    Attributes:
        x0, y0, x1, y1: the crop in full-resolution pixels (x1, y1 exclusive).
        scale: ROI pixels per full-resolution pixel.
        camera: the pinhole camera of the ROI image (principal point shifted and scaled so that
            a full-resolution pixel centre u maps to ``(u - x0 + 0.5) * scale - 0.5``, as
            cv2.resize maps pixel centres).
    """
    x0: int
    y0: int
    x1: int
    y1: int
    scale: float
    camera: PinholeCamera

    def crop(self, image: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """The ROI of a full-resolution image, resized to the ROI camera's size."""
        crop = image[self.y0:self.y1, self.x0:self.x1]
        size = (self.camera.width, self.camera.height)
        if crop.shape[1] == size[0] and crop.shape[0] == size[1]:
            return crop
        return cv2.resize(crop, size, interpolation=interpolation)

    def to_full(self, uv_roi: np.ndarray) -> np.ndarray:
        """(N, 2) ROI pixel coordinates -> full-resolution pixel coordinates."""
        return (uv_roi + 0.5) / self.scale - 0.5 + np.array([self.x0, self.y0])


def make_roi(camera: PinholeCamera, T_cam_obj: np.ndarray, vertices_obj: np.ndarray,
             roi_size: int, margin: float = 0.3) -> RoiView | None:
    """The ROI around the object's projection at a pose, or None when it is not in view."""
    p = vertices_obj @ T_cam_obj[:3, :3].T + T_cam_obj[:3, 3]
    if (p[:, 2] <= 0.05).any():
        return None
    u = camera.fx * p[:, 0] / p[:, 2] + camera.cx
    v = camera.fy * p[:, 1] / p[:, 2] + camera.cy
    w, h = u.max() - u.min(), v.max() - v.min()
    pad = margin * max(w, h) + 8.0
    x0 = int(np.floor(max(u.min() - pad, 0)))
    y0 = int(np.floor(max(v.min() - pad, 0)))
    x1 = int(np.ceil(min(u.max() + pad, camera.width)))
    y1 = int(np.ceil(min(v.max() + pad, camera.height)))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    scale = min(1.0, roi_size / max(x1 - x0, y1 - y0))
    width = max(int(round((x1 - x0) * scale)), 1)
    height = max(int(round((y1 - y0) * scale)), 1)
    sx, sy = width / (x1 - x0), height / (y1 - y0)  # exact after rounding
    roi_cam = PinholeCamera(fx=camera.fx * sx, fy=camera.fy * sy,
                            cx=(camera.cx - x0 + 0.5) * sx - 0.5,
                            cy=(camera.cy - y0 + 0.5) * sy - 0.5, width=width, height=height)
    return RoiView(x0, y0, x1, y1, float(np.sqrt(sx * sy)), roi_cam)


@dataclass(frozen=True)
class RoiRender:
    """The hand and the object rendered into a ROI at one pose.

    Attributes:
        object_visible: (h, w) bool object pixels not hidden by the hand.
        hand: (h, w) bool hand pixels (in front of whatever is behind).
        depth: (h, w) float32 camera z of the nearest surface (inf where empty).
    """
    object_visible: np.ndarray
    hand: np.ndarray
    depth: np.ndarray


def render_roi(roi: RoiView, T_cam_obj: np.ndarray, obj_vertices: torch.Tensor,
               obj_faces: torch.Tensor, hand_vertices_cam: torch.Tensor | None,
               hand_faces: torch.Tensor | None) -> RoiRender:
    """Hard-render the object (and the hand, when given) into the ROI."""
    T = torch.as_tensor(T_cam_obj, dtype=obj_vertices.dtype)
    obj_cam = obj_vertices @ T[:3, :3].T + T[:3, 3]
    if hand_vertices_cam is not None:
        verts = torch.cat([hand_vertices_cam.to(obj_cam.dtype), obj_cam])
        faces = torch.cat([hand_faces.long(), obj_faces.long() + hand_vertices_cam.shape[0]])
        n_hand = hand_faces.shape[0]
    else:
        verts, faces, n_hand = obj_cam, obj_faces.long(), 0
    with torch.no_grad():
        px = roi.camera.project(verts[None])
        raster = rasterize_hard(px, verts[None, :, 2], faces, roi.camera.height,
                                roi.camera.width)
    fi = raster.face_index[0].numpy()
    return RoiRender(object_visible=fi >= n_hand, hand=(fi >= 0) & (fi < n_hand),
                     depth=raster.depth[0].detach().numpy())


def signed_distance_transform(mask: np.ndarray) -> np.ndarray:
    """(h, w) float32: distance to the mask for outside pixels, minus the distance to the
    outside for inside pixels (an inside pixel next to the boundary reads -1, outside +1)."""
    m = mask.astype(np.uint8)
    dt_out = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5)
    dt_in = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    return dt_out - dt_in


def sample_bilinear(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of a (h, w) image at (N, 2) pixel coordinates, clamped to the image.

    Written with explicit weights (no F.grid_sample) so that forward-mode autodiff works.
    """
    h, w = image.shape
    u = uv[:, 0].clamp(0, w - 1.0001)
    v = uv[:, 1].clamp(0, h - 1.0001)
    u0 = u.detach().floor().long()
    v0 = v.detach().floor().long()
    a = u - u0.to(u.dtype)
    b = v - v0.to(v.dtype)
    i00 = image[v0, u0]
    i01 = image[v0, u0 + 1]
    i10 = image[v0 + 1, u0]
    i11 = image[v0 + 1, u0 + 1]
    return (1 - a) * (1 - b) * i00 + a * (1 - b) * i01 + (1 - a) * b * i10 + a * b * i11


def _project(camera: PinholeCamera, p: torch.Tensor) -> torch.Tensor:
    return torch.stack([camera.fx * p[:, 0] / p[:, 2] + camera.cx,
                        camera.fy * p[:, 1] / p[:, 2] + camera.cy], dim=-1)


@dataclass(frozen=True)
class ContourMeasurement:
    """Silhouette points of the rendered object vs the observed mask's distance transform.

    Attributes:
        points_obj: (K, 3) float64 object-frame points on the rendered occluding contour.
        residual: ``delta (K, 6) -> -(sdt(u(delta)) + 1) / scale`` (K,) [full-resolution px],
            one row per point (EKF.update with ``rows=K``).
        R: (K, K) measurement covariance.
        prior_residual: (K,) the residual at delta = 0.
    """
    points_obj: torch.Tensor
    residual: Residual
    R: torch.Tensor
    prior_residual: np.ndarray


def contour_measurement(roi: RoiView, render: RoiRender, T_cam_obj: torch.Tensor,
                        observed_mask_roi: np.ndarray, *, max_points: int, sigma_px: float,
                        common_px: float, outlier_px: float) -> ContourMeasurement | None:
    """Build the contour measurement (module docstring); None when too few points remain."""
    obj = render.object_visible.astype(np.uint8)
    if obj.sum() < 12:
        return None
    kernel = np.ones((3, 3), np.uint8)
    boundary = obj.astype(bool) & ~cv2.erode(obj, kernel, borderValue=0).astype(bool)
    # Not an object edge where the hand is the neighbour (occlusion edge) or at the ROI border.
    near_hand = cv2.dilate(render.hand.astype(np.uint8), kernel).astype(bool)
    boundary &= ~near_hand
    boundary[0, :] = boundary[-1, :] = boundary[:, 0] = boundary[:, -1] = False
    vs, us = np.nonzero(boundary)
    if len(us) < 8:
        return None
    if len(us) > max_points:
        keep = np.linspace(0, len(us) - 1, max_points).round().astype(int)
        us, vs = us[keep], vs[keep]
    cam = roi.camera
    z = render.depth[vs, us].astype(np.float64)
    finite = np.isfinite(z) & (z > 0)  # a degenerate (zero-area) face gives no depth
    us, vs, z = us[finite], vs[finite], z[finite]
    if len(us) < 8:
        return None
    p_cam = np.stack([(us - cam.cx) / cam.fx * z, (vs - cam.cy) / cam.fy * z, z], axis=1)
    T = T_cam_obj.to(torch.float64)
    T_np = T.numpy()
    p_obj = (p_cam - T_np[:3, 3]) @ T_np[:3, :3]  # R^T (p - t)
    sdt = torch.as_tensor(signed_distance_transform(observed_mask_roi), dtype=torch.float64)
    points = torch.as_tensor(p_obj)
    scale = roi.scale

    def residual_all(delta: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        Td = oplus_linear(T, delta)  # (K, 4, 4): one perturbation per point
        p = (Td[:, :3, :3] @ pts[:, :, None])[..., 0] + Td[:, :3, 3]
        return -(sample_bilinear(sdt, _project(cam, p)) + 1.0) / scale

    r0 = residual_all(torch.zeros(len(points), 6, dtype=torch.float64), points).numpy()
    inlier = np.abs(r0) < outlier_px
    if inlier.sum() < 8:
        return None
    points = points[torch.as_tensor(inlier)]
    K = points.shape[0]
    R = (sigma_px ** 2) * torch.eye(K, dtype=torch.float64) \
        + (common_px ** 2) * torch.ones(K, K, dtype=torch.float64)
    return ContourMeasurement(points, lambda d: residual_all(d, points), R, r0[inlier])


def mask_centroid(mask: np.ndarray) -> np.ndarray | None:
    """(2,) (u, v) centroid of a bool mask, None when empty."""
    vs, us = np.nonzero(mask)
    if len(us) == 0:
        return None
    return np.array([us.mean(), vs.mean()])


def center_measurement(camera: PinholeCamera, roi: RoiView, render: RoiRender,
                       T_cam_obj: torch.Tensor, center_obj: torch.Tensor,
                       observed_mask_roi: np.ndarray) -> Residual | None:
    """The object centre keypoint: the observed mask's centroid corrected by the offset between
    the rendered visible silhouette's centroid and the projected centre (so the hand's occlusion
    does not bias it). None when the masks disagree too much in area to be comparable."""
    a_vis = render.object_visible.sum()
    a_obs = observed_mask_roi.sum()
    if a_vis < 20 or not 0.5 < a_obs / a_vis < 2.0:
        return None
    c_obs = roi.to_full(mask_centroid(observed_mask_roi)[None])[0]
    c_vis = roi.to_full(mask_centroid(render.object_visible)[None])[0]
    T = T_cam_obj.to(torch.float64)
    c = center_obj.to(torch.float64)[None]
    proj_c = _project(camera, c @ T[:3, :3].T + T[:3, 3])[0].detach().numpy()
    z = torch.as_tensor(c_obs - (c_vis - proj_c))

    def residual(delta: torch.Tensor) -> torch.Tensor:  # (1, 6) -> (1, 2)
        Td = oplus_linear(T, delta)[0]
        return (z - _project(camera, c @ Td[:3, :3].T + Td[:3, 3])[0])[None]

    return residual


def fingertip_contact_measurement(T_cam_obj: torch.Tensor, tips_cam: torch.Tensor,
                                  normal_obj: torch.Tensor, closest_obj: torch.Tensor,
                                  target: torch.Tensor) -> Residual:
    """Fingertips that touched the object keep touching it: residual = target distance -
    distance of the tip centre to the surface, linearised at the prior (the Warp query gives
    the distance and the normal; the plane through the closest point carries the pose's
    effect, so the Jacobian is autodiff of the tip's object-frame position)."""
    T = T_cam_obj.to(torch.float64)
    tips = tips_cam.to(torch.float64)
    n = normal_obj.to(torch.float64)
    c = closest_obj.to(torch.float64)
    tgt = target.to(torch.float64)

    def residual(delta: torch.Tensor) -> torch.Tensor:  # (n, 6) -> (n,)
        Td = oplus_linear(T, delta)
        p_obj = ((tips - Td[:, :3, 3])[:, None, :] @ Td[:, :3, :3])[:, 0]  # R^T (p - t)
        d = ((p_obj - c) * n).sum(-1)  # signed distance to the tangent plane
        return tgt - d

    return residual
