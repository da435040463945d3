"""The EKF's measurements, rendered around the predicted pose (paper III-E, observation h).

Everything image-side happens in a region of interest (ROI) around the object's predicted
projection, rendered at most ``roi_size`` pixels wide with the hard rasterizer (the hand as a
known occluder: it is rasterised together with the object, so object pixels behind the hand are
not object pixels). Residual functions map per-row error-state perturbations ``delta`` (rows, 6)
to ``z - h(T (+) delta)`` (one row per silhouette point, fingertip, ...) and are differentiable,
so the EKF's Jacobians come from reverse-mode autodiff (``ekf.separable_jacobian``).
Residuals are in pixels of the full-resolution image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch

from handypriors_ros.core.render.camera import PinholeCamera
from handypriors_ros.core.render.contour import signed_distance_transform as _sdt
from handypriors_ros.core.render.contour import silhouette_edges
from handypriors_ros.core.render.hard_rasterizer import rasterize_hard
from handypriors_ros.core.render.mesh import RenderMesh, front_facing
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
    """(h, w) float32 signed distance to a bool mask's boundary [px]: positive outside,
    negative inside, +-0.5 at the pixels next to the boundary (render.contour's convention)."""
    return _sdt(mask).numpy()


class _ImageSample(torch.autograd.Function):
    """Bilinear lookup of an image whose derivative is the bilinearly interpolated central-
    difference image gradient.

    Plain bilinear interpolation has a slope discontinuity at every pixel centre (where the
    contour points sit, since they come from rendered pixel centres): its derivative there is a
    one-sided difference. The central-difference gradient is the symmetric, smooth choice.
    """

    @staticmethod
    def forward(ctx, image, grad_u, grad_v, uv):  # noqa: D102
        ctx.save_for_backward(grad_u, grad_v, uv)
        return _bilinear(image, uv)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        grad_u, grad_v, uv = ctx.saved_tensors
        g = torch.stack([_bilinear(grad_u, uv), _bilinear(grad_v, uv)], dim=-1)
        return None, None, None, grad_out[..., None] * g


def _bilinear(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    h, w = image.shape
    u = uv[..., 0].clamp(0, w - 1.0001)
    v = uv[..., 1].clamp(0, h - 1.0001)
    u0 = u.floor().long()
    v0 = v.floor().long()
    a = u - u0.to(u.dtype)
    b = v - v0.to(v.dtype)
    return ((1 - a) * (1 - b) * image[v0, u0] + a * (1 - b) * image[v0, u0 + 1]
            + (1 - a) * b * image[v0 + 1, u0] + a * b * image[v0 + 1, u0 + 1])


class SampledImage:
    """An image for differentiable lookups at sub-pixel positions (reverse-mode autodiff).

    Args:
        image: (h, w) float array (e.g. a signed distance transform), pixel centres at integer
            coordinates.
    """

    def __init__(self, image: np.ndarray) -> None:
        img = np.ascontiguousarray(image, dtype=np.float32)
        # central differences (I[x+1] - I[x-1]) / 2; the border replicates
        gu = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=1, scale=0.5, borderType=cv2.BORDER_REPLICATE)
        gv = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=1, scale=0.5, borderType=cv2.BORDER_REPLICATE)
        self.image = torch.as_tensor(img, dtype=torch.float64)
        self.grad_u = torch.as_tensor(gu, dtype=torch.float64)
        self.grad_v = torch.as_tensor(gv, dtype=torch.float64)

    def __call__(self, uv: torch.Tensor) -> torch.Tensor:
        """(..., 2) pixel positions (u, v) -> (...) values, clamped to the image."""
        return _ImageSample.apply(self.image, self.grad_u, self.grad_v, uv)


def _project(camera: PinholeCamera, p: torch.Tensor) -> torch.Tensor:
    return torch.stack([camera.fx * p[:, 0] / p[:, 2] + camera.cx,
                        camera.fy * p[:, 1] / p[:, 2] + camera.cy], dim=-1)


@dataclass(frozen=True)
class ContourMeasurement:
    """Points on the rendered object's occluding contour vs the observed mask.

    Each point lies on a silhouette edge of the render mesh (an edge between a front- and a
    back-facing face), at a fixed screen-space fraction ``t`` between the projections of the
    edge's two vertices, so its image position is a smooth function of the pose and exactly on
    the boundary of the rendered silhouette (no pixel quantisation). The residual is minus the
    observed mask's signed distance transform there: zero when the rendered and observed
    boundaries agree.

    Attributes:
        edge_vertices: (K, 2) int64 render-mesh vertex indices of each point's edge.
        t: (K,) float64 fraction from the first vertex to the second.
        residual: ``delta (K, 6) -> (K,)`` [full-resolution px], one row per point.
        R: (K, K) measurement covariance.
        prior_residual: (K,) the residual at delta = 0.
    """
    edge_vertices: torch.Tensor
    t: torch.Tensor
    residual: Residual
    R: torch.Tensor
    prior_residual: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.t.shape[0])


@dataclass(frozen=True)
class ObservedField:
    """The observed mask's signed distance transform over a full-resolution crop, computed
    once per frame and shared by the iterations of the contour update.

    Attributes:
        sdt: the field (crop pixel coordinates); x0, y0: the crop's top-left pixel.
    """
    sdt: SampledImage
    x0: int
    y0: int

    @classmethod
    def from_mask(cls, mask: np.ndarray, roi: RoiView, pad_px: int = 16) -> ObservedField:
        """Over the ROI's crop grown by ``pad_px`` (clamped to the image)."""
        h, w = mask.shape
        x0, y0 = max(roi.x0 - pad_px, 0), max(roi.y0 - pad_px, 0)
        x1, y1 = min(roi.x1 + pad_px, w), min(roi.y1 + pad_px, h)
        return cls(SampledImage(signed_distance_transform(mask[y0:y1, x0:x1])), x0, y0)


def contour_measurement(camera: PinholeCamera, roi: RoiView, render: RoiRender,
                        mesh: RenderMesh, T_cam_obj: torch.Tensor, observed: ObservedField,
                        *, max_points: int, sigma_px: float, common_px: float,
                        outlier_px: float, oversample: int = 3) -> ContourMeasurement | None:
    """Build the contour measurement (see :class:`ContourMeasurement`).

    Candidates are spread evenly by projected length over the silhouette edges; a candidate is
    kept where it lies on the boundary of the rendered visible object (within a ROI pixel), no
    hand surface in front of it within a ROI pixel (an occlusion edge is not an object edge),
    and where the observed mask does not disagree by more than ``outlier_px`` (segmenter
    errors, false blobs). None when fewer than 8 points remain.

    Args:
        camera: the full-resolution camera; roi, render: the ROI and its render at the prior.
        mesh: the object's render mesh (with edge adjacency).
        T_cam_obj: (4, 4) prior pose.
        observed: the observed mask's signed distance field.
    """
    T = T_cam_obj.to(torch.float64)
    V = mesh.vertices.to(torch.float64)
    with torch.no_grad():
        v_cam = V @ T[:3, :3].T + T[:3, 3]
        front = front_facing(v_cam[None], mesh.faces)
        sil = silhouette_edges(mesh.edge_faces, front)[0]
        ea, eb = mesh.edges[sil, 0], mesh.edges[sil, 1]
        ok = (v_cam[ea, 2] > 0.05) & (v_cam[eb, 2] > 0.05)
        ea, eb = ea[ok], eb[ok]
        if ea.numel() == 0:
            return None
        rc = roi.camera
        pa, pb = _project(rc, v_cam[ea]), _project(rc, v_cam[eb])
        length = (pb - pa).norm(dim=-1)
        cum = torch.cumsum(length, 0)
        m = oversample * max_points
        if not float(cum[-1]) > 0:
            return None
        s_ = (torch.arange(m, dtype=torch.float64) + 0.5) * (cum[-1] / m)
        e = torch.searchsorted(cum, s_, right=True).clamp(max=len(cum) - 1)
        t = ((s_ - (cum[e] - length[e])) / length[e].clamp(min=1e-12)).clamp(0, 1)
        p = pa[e] + t[:, None] * (pb[e] - pa[e])  # (m, 2) ROI px
        za, zb = v_cam[ea[e], 2], v_cam[eb[e], 2]
        zp = 1.0 / ((1 - t) / za + t / zb)
        h, w = render.object_visible.shape
        inside = (p[:, 0] >= 0) & (p[:, 0] <= w - 1) & (p[:, 1] >= 0) & (p[:, 1] <= h - 1)
        # On the rendered visible silhouette's boundary: the nearest pixel lies in the 1-pixel
        # band where the dilated and the eroded silhouettes differ.
        vis = render.object_visible.astype(np.uint8)
        kernel = np.ones((3, 3), np.uint8)
        band = cv2.dilate(vis, kernel) != cv2.erode(vis, kernel)
        hand_depth = np.where(render.hand, render.depth, np.inf).astype(np.float32)
        hand_near = cv2.erode(hand_depth, np.ones((3, 3), np.uint8))  # min over 3x3
        pu = p[:, 0].round().long().clamp(0, w - 1).numpy()
        pv = p[:, 1].round().long().clamp(0, h - 1).numpy()
        unhidden = torch.as_tensor(hand_near[pv, pu]) > zp
        on_boundary = torch.as_tensor(band[pv, pu])
        keep = torch.nonzero(inside & on_boundary & unhidden)[:, 0]
        if keep.numel() < 8:
            return None
        if keep.numel() > max_points:
            keep = keep[torch.linspace(0, keep.numel() - 1, max_points).round().long()]
        edge_vertices = torch.stack([ea[e[keep]], eb[e[keep]]], dim=1)
        t = t[keep]
    # The observed mask's signed distance in a full-resolution crop (no resampling).
    x0, y0 = observed.x0, observed.y0
    crop_cam = PinholeCamera(fx=camera.fx, fy=camera.fy, cx=camera.cx - x0, cy=camera.cy - y0,
                             width=observed.sdt.image.shape[1],
                             height=observed.sdt.image.shape[0])
    sdt = observed.sdt
    va, vb = V[edge_vertices[:, 0]], V[edge_vertices[:, 1]]

    def residual_all(delta: torch.Tensor, keep_rows: torch.Tensor) -> torch.Tensor:
        Td = oplus_linear(T, delta)  # (K, 4, 4): one perturbation per point
        Rd, td = Td[:, :3, :3], Td[:, :3, 3]
        qa = (Rd @ va[keep_rows, :, None])[..., 0] + td
        qb = (Rd @ vb[keep_rows, :, None])[..., 0] + td
        tk = t[keep_rows, None]
        u = (1 - tk) * _project(crop_cam, qa) + tk * _project(crop_cam, qb)
        return -sdt(u)

    all_rows = torch.arange(t.shape[0])
    r0 = residual_all(torch.zeros(t.shape[0], 6, dtype=torch.float64), all_rows).detach()
    inlier = torch.nonzero(r0.abs() < outlier_px)[:, 0]
    if inlier.numel() < 8:
        return None
    K = inlier.numel()
    R = (sigma_px ** 2) * torch.eye(K, dtype=torch.float64) \
        + (common_px ** 2) * torch.ones(K, K, dtype=torch.float64)
    return ContourMeasurement(edge_vertices[inlier], t[inlier],
                              lambda d: residual_all(d, inlier), R, r0[inlier].numpy())


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
