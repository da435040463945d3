"""The appearance measurement: the object's texture rendered in the region of interest at the
predicted pose, compared with the image (what the silhouette cannot see: a can turning about its
axis, a box sliding along its long side).

The object's texture (UV-textured OBJ+MTL+PNG) or vertex colours (coloured PLY) are rendered
with the hand as occluder by the project's :class:`~handypriors_ros.core.render.renderer.
Renderer` (full-resolution mesh; shading off: the albedo), and compared with the image crop in
one of two ways (``TrackerConfig.appearance_method``), both insensitive to the scene's lighting
and the camera's exposure:

- ``'keypoints'``: ORB keypoints (binary intensity comparisons: invariant to any monotonic
  change of brightness) detected on the rendered and the observed crop, each after contrast
  normalisation inside the object's mask, matched by Hamming distance (mutual best, Lowe's
  ratio, a displacement bound and agreement with the matches' median displacement). A rendered
  keypoint is a 3D point of the object (the render's depth there); the residual is its observed
  position minus its projection, in full-resolution pixels, noise ``appearance_sigma_px``.
- ``'direct'``: normalised intensity alignment: at the rendered crop's strongest intensity
  gradients (inside the visible object), the observed crop's intensity, normalised to zero mean
  and unit deviation over the object's mask (gain and offset of lighting and exposure cancel),
  is compared with the rendered one at the reprojection of the same 3D point; the Jacobian is
  the observed image gradient. Residuals beyond 3 robust deviations are dropped.

The comparison is measured on the realistic development set (README, "Tracking accuracy").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch

from handypriors_ros.core.geometry.mesh_topology import is_closed_outward
from handypriors_ros.core.render.camera import PinholeCamera
from handypriors_ros.core.render.mesh import RenderMesh
from handypriors_ros.core.render.renderer import Renderer, RenderSettings
from handypriors_ros.core.render.roi import RoiView, make_roi
from handypriors_ros.core.tracking.ekf import LinearisedResidual, oplus_linear, point_jacobian
from handypriors_ros.core.tracking.measurements.base import (Linearisation, Linearise,
                                                             Measurement, StepContext,
                                                             TrackingScene)
from handypriors_ros.core.tracking.measurements.contour import SampledImage
from handypriors_ros.core.tracking.types import TrackStatus

METHODS = ('keypoints', 'direct')
#: Gaussian smoothing of both images of the direct method [ROI px].
_DIRECT_BLUR_PX = 2.5


def _normalised_gray(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(h, w) float32 gray, zero mean and unit deviation over ``mask`` (0 outside it)."""
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    vals = g[mask]
    if vals.size < 2:
        return np.zeros_like(g)
    return np.where(mask, (g - vals.mean()) / max(float(vals.std()), 1e-3), 0.0).astype(
        np.float32)


def _to_uint8(g: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Normalised gray -> uint8 for ORB (3 deviations span the range), 0 outside mask."""
    return np.where(mask, np.clip(128 + 40 * g, 0, 255), 0).astype(np.uint8)


def _orb(n_features: int) -> cv2.ORB:
    return cv2.ORB_create(nfeatures=n_features, scaleFactor=1.2, nlevels=4, edgeThreshold=9,
                          patchSize=15, fastThreshold=5)


def detect_keypoints(gray: np.ndarray, mask: np.ndarray, n_features: int = 300
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """ORB keypoints of a uint8 gray crop inside a bool mask: (N, 2) positions (u, v) and
    (N, 32) uint8 descriptors (None when there are none)."""
    kp, desc = _orb(n_features).detectAndCompute(gray, mask.astype(np.uint8))
    return np.array([k.pt for k in kp], dtype=np.float64).reshape(-1, 2), desc


def match_descriptors(p_r: np.ndarray, d_r: np.ndarray | None, p_o: np.ndarray,
                      d_o: np.ndarray | None, *, max_shift_px: float, ratio: float = 0.8
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Matches between keypoints expected at ``p_r`` (N, 2) and observed at ``p_o`` (M, 2):
    mutual best by Hamming distance, Lowe's ratio, within ``max_shift_px`` of the expected
    position and within a few pixels of the matches' median displacement.

    Returns:
        (K,) indices into ``p_r`` and (K,) into ``p_o``.
    """
    empty = np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    if d_r is None or d_o is None or len(p_r) < 2 or len(p_o) < 2:
        return empty
    bf = cv2.BFMatcher(cv2.NORM_HAMMING)
    knn = bf.knnMatch(d_r, d_o, k=2)
    back = {m[0].queryIdx: m[0].trainIdx for m in bf.knnMatch(d_o, d_r, k=1) if m}
    ir, io = [], []
    for pair in knn:
        if len(pair) < 2:
            continue
        m, n = pair
        if m.distance > ratio * n.distance or back.get(m.trainIdx) != m.queryIdx:
            continue
        if np.linalg.norm(p_o[m.trainIdx] - p_r[m.queryIdx]) <= max_shift_px:
            ir.append(m.queryIdx)
            io.append(m.trainIdx)
    if len(ir) < 3:
        return empty
    ir, io = np.array(ir), np.array(io)
    d = p_o[io] - p_r[ir]
    # the prior is close: the matches move together, within a few pixels of their median
    ok = np.linalg.norm(d - np.median(d, axis=0), axis=1) <= max(3.0, 0.25 * max_shift_px)
    return ir[ok], io[ok]


def match_keypoints(rendered: np.ndarray, observed: np.ndarray, rendered_mask: np.ndarray,
                    observed_mask: np.ndarray, *, max_shift_px: float, n_features: int = 300,
                    ratio: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """ORB matches between two uint8 gray crops of the same size.

    Returns:
        (M, 2) rendered and (M, 2) observed pixel positions (u, v) of the kept matches.
    """
    p_r, d_r = detect_keypoints(rendered, rendered_mask, n_features)
    p_o, d_o = detect_keypoints(observed, observed_mask, n_features)
    ir, io = match_descriptors(p_r, d_r, p_o, d_o, max_shift_px=max_shift_px, ratio=ratio)
    return p_r[ir], p_o[io]


class _Rendered(NamedTuple):
    """The appearance render of a ROI (h, w): depth [m] (0 off the object), the visible
    object, the same eroded by 2 px (its inside), and the flat-lit colour (uint8 RGB)."""
    depth: np.ndarray
    vis: np.ndarray
    vis_in: np.ndarray
    rgb: np.ndarray


@dataclass(frozen=True)
class _Keyframe:
    """The rendered keypoints of one appearance render: object-frame points (N, 3) and their
    ORB descriptors (N, 32), with the pose they were rendered at."""
    T_cam_obj: np.ndarray
    points_obj: np.ndarray
    descriptors: np.ndarray


def view_change_rad(T_a: np.ndarray, T_b: np.ndarray) -> float:
    """How far the view of an object turned between two poses (4, 4) [rad]: its rotation
    relative to the camera plus the turn of the viewing ray to its origin (an upper bound of
    the out-of-plane turn a keypoint's neighbourhood sees)."""
    R = T_a[:3, :3] @ T_b[:3, :3].T
    turn = float(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)))
    ta, tb = T_a[:3, 3], T_b[:3, 3]
    cos_ray = float(ta @ tb) / max(float(np.linalg.norm(ta) * np.linalg.norm(tb)), 1e-12)
    return turn + float(np.arccos(np.clip(cos_ray, -1.0, 1.0)))


class Appearance(Measurement):
    """``'appearance'``: the textured render vs the image (module docstring)."""
    name = 'appearance'
    confirms_track = False
    prior_only = True  # rendered at T_prior: overlaps the ROI render in the worker thread

    def __init__(self, config) -> None:
        super().__init__(config)
        self._renderer: Renderer | None = None
        self._renderer_of: int | None = None
        self._keyframe: _Keyframe | None = None
        # (the context, its ROI, its render) made by before_mask, for prepare
        self._early: tuple[StepContext, RoiView, _Rendered] | None = None

    def reset(self) -> None:
        self._keyframe = None
        self._early = None

    def _renderer_for(self, scene: TrackingScene) -> Renderer | None:
        model = scene.object_model
        if model is None:
            return None
        if self._renderer is None or self._renderer_of != id(model):
            mesh = RenderMesh.from_object_model(model, proxy=False,
                                                device=scene.renderer.device)
            # Back faces of a closed outward surface are never seen: culled, the z-buffer has
            # about half the faces to rasterize. An open or inconsistently wound scan keeps
            # them (its inside can show through a hole).
            closed = is_closed_outward(mesh.vertices.cpu().numpy(), mesh.faces.cpu().numpy())
            self._renderer = Renderer(
                mesh, hand_faces=scene.hand_faces, device=scene.renderer.device,
                settings=RenderSettings(cull_backfaces=closed, ambient=1.0, diffuse=0.0,
                                        antialias=False))
            self._renderer_of = id(model)
        return self._renderer

    def warm_up(self, scene: TrackingScene) -> None:
        """The textured renderer of the scene's object (its full-resolution mesh), and one
        small render with it (the first frame would otherwise pay ~10 ms more)."""
        renderer = self._renderer_for(scene)
        if renderer is None:
            return
        radius = float(np.linalg.norm(scene.proxy_vertices_np - scene.center.numpy(),
                                      axis=1).max())
        T = torch.eye(4, dtype=renderer.dtype, device=renderer.device)
        T[:3, 3] = torch.as_tensor([0.0, 0.0, 3.0 * radius + 0.1]) - scene.center.to(T.dtype)
        with torch.no_grad():
            renderer.render(PinholeCamera(fx=16.0, fy=16.0, cx=7.5, cy=7.5, width=16,
                                          height=16), T[None])

    def _keypoint_linearise(self, ctx: StepContext, X: torch.Tensor,
                            z_obs_full: np.ndarray) -> Linearise:
        """Matched object points (M, 3) observed at full-resolution pixels (M, 2): the
        reprojection residuals, linearised at any estimate."""
        z_obs = torch.as_tensor(z_obs_full, dtype=torch.float64)
        X = X.to(torch.float64)
        full = ctx.frame.camera
        n = len(X)
        R = torch.full((2 * n,), self.config.appearance_sigma_px ** 2, dtype=torch.float64)

        def make_residual(T_at: torch.Tensor) -> LinearisedResidual:
            def residual(delta: torch.Tensor) -> torch.Tensor:  # (M, 6) -> (M, 2)
                Td = oplus_linear(T_at, delta)
                q = (Td[:, :3, :3] @ X[:, :, None])[..., 0] + Td[:, :3, 3]
                return z_obs - full.project(q[None])[0]

            def value_and_jacobian() -> tuple[torch.Tensor, torch.Tensor]:
                q = X @ T_at[:3, :3].T + T_at[:3, 3]
                J = -(full.project_jacobian(q) @ point_jacobian(q, T_at[:3, 3]))
                return z_obs - full.project(q[None])[0], J

            return LinearisedResidual(residual, value_and_jacobian)

        def linearise(T_cam_obj: torch.Tensor, iteration: int) -> Linearisation | None:
            return Linearisation(make_residual(T_cam_obj.to(torch.float64)), n, R)

        return linearise

    def _reuse_keyframe(self, ctx: StepContext, roi) -> Linearise | None | bool:
        """The keypoints of the last render, while the view has turned less than
        ``appearance_rerender_deg`` since (and the track is not initialising): their object
        points are projected at the prediction, those that fall on the observed mask are
        matched with the image's keypoints, no render. False when a render is needed."""
        if not self._keyframe_usable(ctx):
            return False
        cfg = self.config
        key = self._keyframe
        if len(key.points_obj) < cfg.appearance_min_points:
            return None  # (its matches cannot reach appearance_min_points: nothing to detect)
        T0 = ctx.T_prior
        rc = roi.camera
        mask_o = roi.crop_mask(ctx.mask)
        if mask_o.sum() < 50:
            return None
        q = key.points_obj @ T0[:3, :3].T + T0[:3, 3]
        p_r = np.stack([rc.fx * q[:, 0] / q[:, 2] + rc.cx, rc.fy * q[:, 1] / q[:, 2] + rc.cy], 1)
        ui, vi = np.round(p_r[:, 0]).astype(int), np.round(p_r[:, 1]).astype(int)
        inside = (ui >= 0) & (ui < rc.width) & (vi >= 0) & (vi < rc.height)
        seen = np.flatnonzero(inside)
        seen = seen[mask_o[vi[seen], ui[seen]]]  # not hidden by a finger, on the object
        g_o = _normalised_gray(roi.crop(ctx.frame.rgb), mask_o)
        p_o, d_o = detect_keypoints(_to_uint8(g_o, mask_o), self._inside(mask_o, roi.scale))
        ir, io = match_descriptors(p_r[seen], key.descriptors[seen] if len(seen) else None,
                                   p_o, d_o, max_shift_px=cfg.appearance_max_shift_px * roi.scale)
        if len(ir) < cfg.appearance_min_points:
            return None
        return self._keypoint_linearise(ctx, torch.as_tensor(key.points_obj[seen[ir]]),
                                        roi.to_full(p_o[io]))

    def _keyframe_usable(self, ctx: StepContext) -> bool:
        """Whether the last render's keypoints stand for this frame (no render): the view
        has turned less than ``appearance_rerender_deg`` since, the track is not
        initialising, and all its points lie in front of the camera at the prediction."""
        cfg, key, T0 = self.config, self._keyframe, ctx.T_prior
        if key is None or cfg.appearance_method != 'keypoints' \
                or cfg.appearance_rerender_deg <= 0 or ctx.status != TrackStatus.TRACKING \
                or view_change_rad(T0, key.T_cam_obj) >= np.radians(cfg.appearance_rerender_deg):
            return False
        q = key.points_obj @ T0[:3, :3].T + T0[:3, 3]
        return not (q[:, 2] <= 1e-3).any()

    def _roi(self, ctx: StepContext) -> RoiView | None:
        return make_roi(ctx.frame.camera, ctx.T_prior, ctx.scene.proxy_vertices_np,
                        self.config.appearance_roi_px, margin=0.1)

    def _render(self, ctx: StepContext, roi: RoiView, renderer: Renderer) -> _Rendered:
        with torch.no_grad():
            out = renderer.render(roi.camera,
                                  torch.as_tensor(ctx.T_prior, dtype=renderer.dtype,
                                                  device=renderer.device)[None],
                                  ctx.hand_vertices().to(renderer.device,
                                                         renderer.dtype)[None])
        depth = out.object_depth[0].cpu().numpy().astype(np.float64)
        vis = (out.object_mask[0].cpu().numpy() > 0.5) & (depth > 0)
        rgb = (out.object_rgb[0].cpu().numpy() * 255).clip(0, 255).astype(np.uint8)
        vis_in = cv2.erode(vis.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2) > 0
        return _Rendered(depth, vis, vis_in, rgb)

    def _inside(self, mask: np.ndarray, scale: float) -> np.ndarray:
        """Where keypoints are detected: ``appearance_border_px`` (full-resolution px) inside a
        silhouette. A corner of the silhouette (or of a finger in front) looks the same in both
        images whatever the object's pose about a symmetry axis, and such matches would hold a
        turned can where it is."""
        border = int(round(self.config.appearance_border_px * scale))
        if border <= 0:
            return mask
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * border + 1,) * 2)
        return cv2.erode(mask.astype(np.uint8), disk) > 0

    def _render_keypoints(self, roi: RoiView, rendered: _Rendered, g_r: np.ndarray,
                          points_obj, T_cam_obj: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """ORB keypoints of a render at a pose (its normalised gray ``g_r``): positions (N, 2),
        descriptors (N, 32) or None, and which lie on the object (N,) bool. Those become the
        keyframe (``appearance_rerender_deg`` > 0), however few: a view of the texture that
        shows no keypoints is not rendered again at every frame near it."""
        depth, _, vis_in, _ = rendered
        rc = roi.camera
        p_r, d_r = detect_keypoints(_to_uint8(g_r, vis_in), self._inside(vis_in, roi.scale))
        ui = np.clip(np.round(p_r[:, 0]).astype(int), 0, rc.width - 1)
        vi = np.clip(np.round(p_r[:, 1]).astype(int), 0, rc.height - 1)
        on_object = depth[vi, ui] > 0  # a 3D point of the object
        if self.config.appearance_rerender_deg > 0:
            self._keyframe = _Keyframe(
                T_cam_obj.copy(), points_obj(p_r[on_object]).numpy(),
                d_r[on_object] if d_r is not None else np.zeros((0, 32), np.uint8))
        return p_r, d_r, on_object

    def before_mask(self, ctx: StepContext) -> None:
        """The render at the prediction, when this frame needs one (no usable keyframe): it
        reads no mask, so it runs while a live frame's mask is on its way."""
        self._early = None
        if ctx.roi is None or self._keyframe_usable(ctx):
            return
        renderer = self._renderer_for(ctx.scene)
        roi = self._roi(ctx) if renderer is not None else None
        if roi is not None:
            self._early = (ctx, roi, self._render(ctx, roi, renderer))

    def prepare(self, ctx: StepContext) -> Linearise | None:
        early, self._early = self._early, None
        # Without a mask this frame (dropped by the segmenter) the comparison is not made:
        # measured on the realistic development set, matching over the predicted region alone
        # admits more wrong matches than it adds right ones.
        if ctx.roi is None or ctx.mask is None:
            return None
        cfg = self.config
        renderer = self._renderer_for(ctx.scene)
        if renderer is None:
            return None
        T0 = ctx.T_prior
        roi = early[1] if early is not None and early[0] is ctx else self._roi(ctx)
        if roi is None:
            return None
        rc = roi.camera
        if cfg.appearance_method == 'keypoints':
            reused = self._reuse_keyframe(ctx, roi)
            if reused is not False:
                return reused
        rendered = (early[2] if early is not None and early[0] is ctx
                    else self._render(ctx, roi, renderer))
        depth, vis, vis_in, rgb_r = rendered
        if vis.sum() < 50:
            return None
        rgb_o = roi.crop(ctx.frame.rgb)
        mask_o = roi.crop_mask(ctx.mask)
        both = vis_in & mask_o
        if both.sum() < 50:
            return None
        g_r = _normalised_gray(rgb_r, both)
        g_o = _normalised_gray(rgb_o, both)
        T = torch.as_tensor(T0, dtype=torch.float64)
        full = ctx.frame.camera
        scale = roi.scale

        def points_obj(uv: np.ndarray) -> torch.Tensor:
            """(M, 2) ROI pixels on the render -> (M, 3) object-frame points."""
            ui = np.clip(np.round(uv[:, 0]).astype(int), 0, rc.width - 1)
            vi = np.clip(np.round(uv[:, 1]).astype(int), 0, rc.height - 1)
            z = depth[vi, ui]
            x = (uv[:, 0] - rc.cx) / rc.fx * z
            y = (uv[:, 1] - rc.cy) / rc.fy * z
            p_cam = np.stack([x, y, z], axis=1)
            return torch.as_tensor((p_cam - T0[:3, 3]) @ T0[:3, :3])

        max_shift = cfg.appearance_max_shift_px
        if cfg.appearance_method == 'keypoints':
            p_r, d_r, on_object = self._render_keypoints(roi, rendered, g_r, points_obj, T0)
            if on_object.sum() < cfg.appearance_min_points:
                return None  # (the matches are among these: too few to make the update)
            p_o, d_o = detect_keypoints(_to_uint8(g_o, mask_o),
                                        self._inside(mask_o, roi.scale))
            ir, io = match_descriptors(p_r, d_r, p_o, d_o, max_shift_px=max_shift * scale)
            ir, io = ir[on_object[ir]], io[on_object[ir]]
            if len(ir) < cfg.appearance_min_points:
                return None
            return self._keypoint_linearise(ctx, points_obj(p_r[ir]), roi.to_full(p_o[io]))
        else:  # direct
            # Smoothed (a few pixels of basin: the prior is a frame's motion away); the
            # observed image where the render has the object, so the background does not bleed.
            g_r = cv2.GaussianBlur(g_r, (0, 0), _DIRECT_BLUR_PX)
            g_o = cv2.GaussianBlur(np.where(vis | mask_o, g_o, 0.0).astype(np.float32), (0, 0),
                                   _DIRECT_BLUR_PX)
            gx = cv2.Sobel(g_r, cv2.CV_32F, 1, 0, ksize=3)
            gy = cv2.Sobel(g_r, cv2.CV_32F, 0, 1, ksize=3)
            mag = np.where(vis_in & both, np.hypot(gx, gy), 0.0)
            idx = np.flatnonzero(mag > 0)
            if idx.size < cfg.appearance_min_points:
                return None
            idx = idx[np.argsort(mag.ravel()[idx])[::-1][:cfg.appearance_points]]
            vv, uu = np.unravel_index(idx, mag.shape)
            uv_r = np.stack([uu, vv], axis=1).astype(np.float64)
            X = points_obj(uv_r)
            target = torch.as_tensor(g_r[vv, uu].astype(np.float64))
            sampled = SampledImage(g_o)
            roi_cam = PinholeCamera(fx=rc.fx, fy=rc.fy, cx=rc.cx, cy=rc.cy, width=rc.width,
                                    height=rc.height)

            def residual_all(delta: torch.Tensor, T_at: torch.Tensor = T) -> torch.Tensor:
                Td = oplus_linear(T_at, delta)
                q = (Td[:, :3, :3] @ X[:, :, None])[..., 0] + Td[:, :3, 3]
                return sampled(roi_cam.project(q[None])[0]) - target

            r0 = residual_all(torch.zeros(len(X), 6, dtype=torch.float64)).detach().numpy()
            mad = 1.4826 * np.median(np.abs(r0 - np.median(r0))) + 1e-6
            keep = torch.as_tensor(np.flatnonzero(np.abs(r0) <= 3 * mad))
            if keep.numel() < cfg.appearance_min_points:
                return None
            X, target = X[keep], target[keep]
            n = int(keep.numel())
            R = torch.full((n,), cfg.appearance_sigma_intensity ** 2, dtype=torch.float64)

            def make_residual(T_at: torch.Tensor):
                return lambda delta: residual_all(delta, T_at)

        def linearise(T_cam_obj: torch.Tensor, iteration: int) -> Linearisation | None:
            # the 3D points come from the prior's render; the residual is at the estimate
            return Linearisation(make_residual(T_cam_obj.to(torch.float64)), n, R)

        return linearise
