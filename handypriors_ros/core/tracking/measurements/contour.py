"""The contour measurement: the observed mask's signed distance at the rendered object's
occluding contour (paper III-E, observation h).

Points on the silhouette edges of the object's mesh at the predicted pose, kept where the
rendered visible silhouette (hand as occluder) has its boundary, are projected and looked up in
the observed mask's signed distance transform: zero when the rendered and observed boundaries
agree. Residuals are in pixels of the full-resolution image; the update is iterated
(re-rendered at each new estimate) while initialising.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from handypriors_ros.core.render.camera import PinholeCamera
from handypriors_ros.core.render.contour import signed_distance_transform as _sdt
from handypriors_ros.core.render.contour import silhouette_edges
from handypriors_ros.core.render.mesh import RenderMesh, front_facing
from handypriors_ros.core.tracking.ekf import (LinearisedResidual, axis_twist, oplus_linear,
                                               point_jacobian, without_direction)
from handypriors_ros.core.tracking.measurements.base import (Linearisation, Linearise,
                                                             Measurement, Residual,
                                                             StepContext)
from handypriors_ros.core.tracking.measurements.roi import RoiRender, RoiView
from handypriors_ros.core.tracking.types import TrackStatus


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
    """(h, w) image -> (...) values; (h, w, C) -> (..., C) (each channel as alone)."""
    h, w = image.shape[:2]
    u = uv[..., 0].clamp(0, w - 1.0001)
    v = uv[..., 1].clamp(0, h - 1.0001)
    u0 = u.floor().long()
    v0 = v.floor().long()
    a = u - u0.to(u.dtype)
    b = v - v0.to(v.dtype)
    if image.dim() == 3:
        a, b = a[..., None], b[..., None]
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
        # (h, w, 3) float64: value, d/du, d/dv per pixel, for one bilinear gather of all three
        # (interleaved by OpenCV, converted once; the three images are views of it)
        self._stacked = torch.from_numpy(cv2.merge([img, gu, gv]).astype(np.float64))
        self.image, self.grad_u, self.grad_v = self._stacked.unbind(-1)

    def __call__(self, uv: torch.Tensor) -> torch.Tensor:
        """(..., 2) pixel positions (u, v) -> (...) values, clamped to the image."""
        return _ImageSample.apply(self.image, self.grad_u, self.grad_v, uv)

    def value_and_gradient(self, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., 2) positions -> the values (...) and the derivative autodiff of
        :meth:`__call__` gives, (..., 2) (d/du, d/dv), without a graph."""
        out = _bilinear(self._stacked, uv.detach())  # (..., 3), per channel as _bilinear
        return out[..., 0], out[..., 1:]


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
        pa, pb = rc.project(v_cam[ea][None])[0], rc.project(v_cam[eb][None])[0]
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
        u = (1 - tk) * crop_cam.project(qa[None])[0] + tk * crop_cam.project(qb[None])[0]
        return -sdt(u)

    with torch.no_grad():  # the residual and its Jacobian at delta = 0 in closed form
        R0, t0 = T[:3, :3], T[:3, 3]
        qa, qb = va @ R0.T + t0, vb @ R0.T + t0
        tk = t[:, None, None]
        du = ((1 - tk) * (crop_cam.project_jacobian(qa) @ point_jacobian(qa, t0))
              + tk * (crop_cam.project_jacobian(qb) @ point_jacobian(qb, t0)))  # (K, 2, 6)
        u0 = (1 - t[:, None]) * crop_cam.project(qa[None])[0] \
            + t[:, None] * crop_cam.project(qb[None])[0]
        value, grad = sdt.value_and_gradient(u0)
        r0, J0 = -value, -(grad[:, :, None] * du).sum(dim=1)  # (K,), (K, 6)
    inlier = torch.nonzero(r0.abs() < outlier_px)[:, 0]
    if inlier.numel() < 8:
        return None
    K = inlier.numel()
    R = (sigma_px ** 2) * torch.eye(K, dtype=torch.float64) \
        + (common_px ** 2) * torch.ones(K, K, dtype=torch.float64)
    residual = LinearisedResidual(lambda d: residual_all(d, inlier),
                                  lambda: (r0[inlier], J0[inlier]))
    return ContourMeasurement(edge_vertices[inlier], t[inlier], residual, R,
                              r0[inlier].numpy())


class Contour(Measurement):
    """``'contour'``: :func:`contour_measurement` on the frame's mask, an iterated update
    (``init_iterations`` while initialising or lost, ``iterations`` while tracking; each
    iteration after the first re-renders the ROI at the new estimate). For a surface of
    revolution (``ObjectModel.symmetry`` continuous) and ``contour_ignores_symmetry_axis``,
    the update cannot turn the object about its axis (:func:`~..ekf.without_direction`)."""
    name = 'contour'
    iterated = True
    confirms_track = True

    def iterations(self, ctx: StepContext) -> int:
        cfg = self.config
        return cfg.iterations if ctx.status == TrackStatus.TRACKING else cfg.init_iterations

    def prepare(self, ctx: StepContext) -> Linearise | None:
        if ctx.roi is None or ctx.mask is None or ctx.render is None:
            return None
        cfg = self.config
        observed = ObservedField.from_mask(ctx.mask, ctx.roi)
        symmetry = (ctx.scene.object_model.symmetry if ctx.scene.object_model is not None
                    else None)
        symmetry_axis = None
        if cfg.contour_ignores_symmetry_axis and symmetry is not None \
                and symmetry.axis is not None:
            symmetry_axis = (torch.as_tensor(symmetry.origin), torch.as_tensor(symmetry.axis))

        def linearise(T_cam_obj: torch.Tensor, iteration: int) -> Linearisation | None:
            if iteration == 0:
                # The first linearisation uses the prior's render (an update before it moves
                # the pose only slightly; the silhouette edges are chosen from the current
                # pose, the render only confirms them).
                roi, render = ctx.roi, ctx.render
            else:  # re-linearise: render at the new estimate
                at = ctx.render_at(T_cam_obj.numpy())
                if at is None:
                    return None
                roi, render = at
            cm = contour_measurement(ctx.frame.camera, roi, render, ctx.scene.mesh, T_cam_obj,
                                     observed, max_points=cfg.contour_points,
                                     sigma_px=cfg.contour_sigma_px,
                                     common_px=cfg.contour_common_px,
                                     outlier_px=cfg.contour_outlier_px)
            if cm is None:
                return None
            residual = cm.residual
            if symmetry_axis is not None:  # a surface of revolution: blind to its own turn
                residual = without_direction(residual, axis_twist(T_cam_obj, *symmetry_axis))
            return Linearisation(residual, cm.rows, cm.R)

        return linearise
