"""The refinement problem: per-frame data prepared once, and the losses of a set of poses.

:class:`RefineProblem` holds, for N frames of a recorded sequence:

- image side, per frame: a region of interest (ROI) around the object's projection at its
  initial pose (``core.tracking.measurements.make_roi``: a crop rescaled so its longest side is
  at most ``roi_size_px``) and its pinhole camera; the observed mask and image resized into it
  (area interpolation, so mask edges keep fractional coverage); the hand's depth in it (the
  hand occludes the object; the hand is known, so its depth is rasterised once, or at every
  evaluation when the hand root is being corrected);
- physics side: the hand surface samples of every frame in the hand root frame (the joints are
  measured, so forward kinematics runs once), ``T_cam_base``, the object's signed distance
  field (Warp) and object surface samples for the temporal priors.

:meth:`RefineProblem.image_losses` renders a set of frames at their poses in one call of the
project's :class:`~handypriors_ros.core.render.renderer.Renderer` (the frames' ROI cameras as a
:class:`~handypriors_ros.core.render.camera.CameraBatch` on one canvas; on CUDA one nvdiffrast
call) and returns their rendering priors (eqs. 1-2, ``core.render.losses``);
:meth:`RefineProblem.physics_losses` returns the physics priors (eqs. 3-5) of the whole
sequence. Both are differentiable w.r.t. the object poses and the hand-root correction.
Units and normalisation: ``config`` module.

:func:`quasistatic_poses` is the initialisation without a tracker: the first pose carried
through the sequence by the rigid motion of the hand's contact points (eq. 9).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry.se3 import (
    invert_transform,
    transform_points,
)
from handypriors_ros.core.models.kinematics import HandKinematics
from handypriors_ros.core.models.object_model import ObjectModel, decimate_vertex_clustering
from handypriors_ros.core.physics.contacts import find_contacts
from handypriors_ros.core.physics.losses import (
    acceleration_loss,
    penetration_loss,
    sliding_loss,
    smoothness_loss,
)
from handypriors_ros.core.physics.quasistatic import quasistatic_step
from handypriors_ros.core.physics.sdf import WarpMeshSDF
from handypriors_ros.core.refine.config import RefineConfig
from handypriors_ros.core.render.camera import CameraBatch
from handypriors_ros.core.render.losses import mask_loss, rgb_loss
from handypriors_ros.core.render.mesh import RenderMesh
from handypriors_ros.core.render.renderer import Renderer, RenderSettings
from handypriors_ros.core.tracking.measurements import RoiView, make_roi
from handypriors_ros.core.frames import Frame
from handypriors_ros.core.tracking.types import ContactReport

_M2_TO_MM2 = 1e6
_RAD2_TO_DEG2 = (180.0 / np.pi) ** 2
_NEAR_M = 0.01


@dataclass(frozen=True)
class ImageLosses:
    """Rendering priors of B frames ((B,) tensors; zero for a frame without a mask).

    Attributes:
        mask: eq. 2, mean over each ROI's pixels.
        rgb: eq. 1, mean over the observed mask's pixels (0 when not computed).
        silhouette: (B, Hc, Wc) the rendered silhouettes on the common canvas (each ROI at
            its top left; detached), for reports.
    """

    mask: torch.Tensor
    rgb: torch.Tensor
    silhouette: torch.Tensor | None


@dataclass(frozen=True)
class PhysicsLosses:
    """Physics priors of a sequence of N frames (units: ``config`` module).

    Attributes:
        penetration: (N,) per frame [mm^2].
        sliding: (N-1,) per consecutive pair, sum over the contacts of frame t-1 [mm^2].
        contact_count: (N,) contacts per frame (detached).
        smoothness: (N-1,) per pair, mean over the object points [mm^2].
        acceleration: (N-2,) per triple, mean over the object points [mm^2].
        distance: (N, P) signed distance of every hand sample [m] (detached).
    """

    penetration: torch.Tensor
    sliding: torch.Tensor
    contact_count: torch.Tensor
    smoothness: torch.Tensor
    acceleration: torch.Tensor
    distance: torch.Tensor

    def terms(self) -> dict[str, torch.Tensor]:
        """The loss terms as the optimiser sums them (0-dim tensors, means over frames)."""
        contacts = self.contact_count[:-1].sum().clamp(min=1).to(self.sliding.dtype)

        def mean(x: torch.Tensor) -> torch.Tensor:
            return x.mean() if x.numel() else x.new_zeros(())

        return {'penetration': mean(self.penetration),
                'sliding': self.sliding.sum() / contacts,
                'smoothness': mean(self.smoothness),
                'acceleration': mean(self.acceleration)}


def quasistatic_poses(hand_points_cam: torch.Tensor, T_cam_base: torch.Tensor,
                      T_cam_obj_first: torch.Tensor, sdf: WarpMeshSDF, *,
                      contact_threshold_m: float, near_hand_m: float
                      ) -> tuple[torch.Tensor, list[str]]:
    """Carry the first pose through a sequence with the quasistatic dynamics (eq. 9).

    For t = 1..N-1, one :func:`~handypriors_ros.core.physics.quasistatic.quasistatic_step`:
    hand points closer than ``contact_threshold_m`` to the object at the pose of t-1 are
    contacts; the weighted rigid fit of their motion from t-1 to t moves the object. Without a
    full fit (fewer than three contacts, collinear ones), an object within ``near_hand_m`` of
    the hand moves with the hand root, else it keeps its pose.

    Args:
        hand_points_cam: (N, P, 3) hand surface samples in the camera frame [m].
        T_cam_base: (N, 4, 4) hand root poses.
        T_cam_obj_first: (4, 4) object pose at frame 0.
        sdf: the object's signed distance field (on the points' device).
    Returns:
        T_cam_obj: (N, 4, 4) float64 poses; the mode used per frame (``'first'``, then
        ``core.physics.quasistatic.MODES``: ``'contact'``, ``'hand_root'``, ``'constant'``).
    """
    with torch.no_grad():
        N = hand_points_cam.shape[0]
        pts = hand_points_cam.to(torch.float64)
        T_base = T_cam_base.to(torch.float64)
        poses = [T_cam_obj_first.to(pts.device, torch.float64)]
        modes = ['first']
        for t in range(1, N):
            step = quasistatic_step(pts[t - 1], pts[t], poses[-1], sdf,
                                    contact_threshold_m=contact_threshold_m,
                                    near_hand_m=near_hand_m, T_cam_base_prev=T_base[t - 1],
                                    T_cam_base_curr=T_base[t])
            poses.append(step.dT @ poses[-1])
            modes.append(step.mode)
        return torch.stack(poses), modes


def _subsample(count: int, wanted: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``wanted`` of ``count`` items (all when wanted is 0 or >= count)."""
    if wanted <= 0 or wanted >= count:
        return torch.arange(count)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=g)[:wanted].sort().values


class RefineProblem:
    """Per-frame data of a refinement and its losses (module docstring).

    Build with :meth:`build`.

    Attributes:
        config: the settings.
        num_frames: N.
        stamps_ns: (N,) int64 image stamps.
        T_cam_obj_init: (N, 4, 4) float64 initial poses.
        init_modes: how each initial pose was obtained (``'given'`` or the modes of
            :func:`quasistatic_poses`).
        rois: (N,) the frames' :class:`RoiView` (None where the object is out of view).
        has_mask: (N,) bool frames with an observed mask (and a ROI).
        T_cam_base: (N, 4, 4) hand root poses (float32, on ``device``).
        hand_points_base: (N, P, 3) hand surface samples in the hand root frame.
        hand_point_links: (P,) link index of each sample (``hand.link_names``).
        object_points: (M, 3) object surface samples (temporal priors).
        sdf: the object's :class:`WarpMeshSDF`.
        mesh: the :class:`RenderMesh` rendered (the object model's proxy reduced to
            ``config.render_faces`` faces).
        renderer: the :class:`Renderer` of ``mesh`` with the hand as occluder (backend
            ``'auto'``: nvdiffrast on a CUDA device where it imports).
        canvas: (Wc, Hc) the common image size the frames' ROIs are rendered on.
    """

    def __init__(self) -> None:  # use build()
        self.config: RefineConfig
        self.device: torch.device
        self.num_frames: int

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def build(cls, frames: Sequence[Frame], object_model: ObjectModel,
              hand: HandKinematics, config: RefineConfig | None = None, *,
              T_cam_obj_init: np.ndarray | None = None,
              T_cam_obj_first: np.ndarray | None = None,
              sdf: WarpMeshSDF | None = None,
              device: torch.device | str = 'cpu') -> RefineProblem:
        """Prepare the data of N frames.

        Args:
            frames: (N,) frames in stamp order; ``q`` in ``hand.joint_names`` order.
            object_model: the object (its mesh frame is the object frame).
            hand: the hand's kinematics (moved to ``device``, float32).
            config: settings (defaults when None).
            T_cam_obj_init: (N, 4, 4) initial poses (e.g. the tracker's), or
            T_cam_obj_first: (4, 4) the first frame's pose, carried through the sequence by
                :func:`quasistatic_poses`. Exactly one of the two.
            sdf: the object's SDF (built from ``object_model.mesh`` when None).
            device: where tensors live and losses are computed.
        Raises:
            InputError: no frames, wrong shapes, non-finite poses, both or neither initial
                pose given.
        """
        self = cls()
        config = config or RefineConfig()
        if not isinstance(config, RefineConfig):
            raise InputError(f'config: expected RefineConfig, got {type(config).__name__}')
        frames = tuple(frames)
        N = len(frames)
        if N == 0:
            raise InputError('frames: expected at least one frame, got none')
        if (T_cam_obj_init is None) == (T_cam_obj_first is None):
            raise InputError('T_cam_obj_init, T_cam_obj_first: expected exactly one of them')
        self.config = config
        self.device = torch.device(device)
        self.num_frames = N
        self.stamps_ns = np.array([f.stamp_ns for f in frames], dtype=np.int64)
        if np.any(np.diff(self.stamps_ns) <= 0):
            raise InputError('frames: expected strictly increasing stamps')
        dev, f32 = self.device, torch.float32
        kin = hand.to(dev, f32)
        self.hand = kin

        # hand: forward kinematics once (joints are measured)
        q = torch.as_tensor(np.stack([np.asarray(f.q, dtype=np.float64) for f in frames]),
                            dtype=f32, device=dev)
        if q.shape[1] != kin.num_joints:
            raise InputError(f'frames: expected q of {kin.num_joints} joints '
                             f'({", ".join(kin.joint_names)}), got {q.shape[1]}')
        T_cam_base = np.stack([np.asarray(f.T_cam_base, dtype=np.float64) for f in frames])
        _check_poses('frames[].T_cam_base', T_cam_base, N)
        self.T_cam_base = torch.as_tensor(T_cam_base, dtype=f32, device=dev)
        state = kin.forward(q)
        idx = _subsample(state.surface_points.shape[1], config.hand_points, seed=0).to(dev)
        self.hand_points_base = state.surface_points[:, idx].contiguous()  # (N, P, 3)
        self.hand_point_links = kin.point_link_ids[idx]
        self.hand_vertices_base, faces = kin.posed_mesh(q)  # (N, Vh, 3)
        self.hand_faces = faces.long()

        # object
        obj = object_model.to(dev, f32)
        self.object_model = obj
        self.sdf = (sdf or WarpMeshSDF(np.asarray(object_model.mesh.vertices),
                                       np.asarray(object_model.mesh.faces), device=dev,
                                       max_distance=config.sdf_max_distance_m)).to(dev)
        v, f, c = decimate_vertex_clustering(
            obj.proxy.vertices.detach().cpu().numpy(), obj.proxy.faces.cpu().numpy(),
            obj.proxy.vertex_colors.detach().cpu().numpy(), config.render_faces)
        self.mesh = RenderMesh.from_arrays(v, f, c, dtype=f32, device=dev)
        self.renderer = Renderer(
            self.mesh, hand_faces=self.hand_faces, device=dev, dtype=f32,
            settings=RenderSettings(near_m=_NEAR_M, light_dir_cam=tuple(config.light_dir_cam),
                                    ambient=config.ambient, diffuse=config.diffuse))
        n_obj = obj.sample_points.shape[0]
        self.object_points = obj.sample_points[_subsample(n_obj, config.object_points, 1)
                                               .to(dev)].contiguous()

        # initial poses
        if T_cam_obj_init is not None:
            T_init = np.asarray(T_cam_obj_init, dtype=np.float64)
            _check_poses('T_cam_obj_init', T_init, N)
            self.init_modes = ['given'] * N
        else:
            T_first = np.asarray(T_cam_obj_first, dtype=np.float64)
            _check_poses('T_cam_obj_first', T_first[None], 1)
            T_init_t, self.init_modes = quasistatic_poses(
                self.hand_points_cam(), self.T_cam_base,
                torch.as_tensor(T_first, device=dev), self.sdf,
                contact_threshold_m=config.init_contact_threshold_m,
                near_hand_m=config.near_hand_m)
            T_init = T_init_t.cpu().numpy()
        self.T_cam_obj_init = T_init

        # image side: ROI, observations and hand depth per frame
        proxy_np = obj.proxy.vertices.detach().cpu().numpy().astype(np.float64)
        self.rois: list[RoiView | None] = []
        self._masks: list[torch.Tensor | None] = []
        self._rgbs: list[torch.Tensor | None] = []
        for f, T in zip(frames, T_init):
            roi = make_roi(f.camera, T, proxy_np, config.roi_size_px,
                           margin=config.roi_margin)
            self.rois.append(roi)
            if roi is None or f.mask is None:
                self._masks.append(None)
                self._rgbs.append(None)
                continue
            if f.mask.shape != f.rgb.shape[:2]:
                raise InputError(f'frames: mask {f.mask.shape} and image {f.rgb.shape[:2]} '
                                 f'sizes differ at stamp {f.stamp_ns}')
            m = roi.crop(f.mask.astype(np.float32))
            self._masks.append(torch.as_tensor(np.clip(m, 0, 1), dtype=f32, device=dev))
            rgb = roi.crop(f.rgb.astype(np.float32) / 255.0)
            self._rgbs.append(torch.as_tensor(np.clip(rgb, 0, 1), dtype=f32, device=dev))
        self.has_mask = np.array([m is not None for m in self._masks])
        # the observations on one canvas (each ROI at its top left), weights 1 inside the ROI
        sizes = [m.shape for m in self._masks if m is not None] or [(1, 1)]
        Hc, Wc = max(h for h, _ in sizes), max(w for _, w in sizes)
        self.canvas = (Wc, Hc)
        self._obs_mask = torch.zeros(N, Hc, Wc, dtype=f32, device=dev)
        self._obs_rgb = torch.zeros(N, Hc, Wc, 3, dtype=f32, device=dev)
        self._roi_weight = torch.zeros(N, Hc, Wc, dtype=f32, device=dev)
        for i, (m, rgb) in enumerate(zip(self._masks, self._rgbs)):
            if m is not None:
                h, w = m.shape
                self._obs_mask[i, :h, :w] = m
                self._obs_rgb[i, :h, :w] = rgb
                self._roi_weight[i, :h, :w] = 1.0
        self._hand_depth = self.hand_depths(self.T_cam_base)
        return self

    def cameras(self, frames: Sequence[int]) -> CameraBatch:
        """The ROI cameras of frames with a mask, on the common canvas."""
        cams = []
        for i in frames:
            if not self.has_mask[i]:
                raise InputError(f'frames: frame {i} has no observed mask (or is out of view)')
            cams.append(self.rois[i].camera)
        Wc, Hc = self.canvas
        return CameraBatch(tuple(cams), Wc, Hc)

    # -- hand --------------------------------------------------------------------------------

    def corrected_base(self, T_corr: torch.Tensor | None) -> torch.Tensor:
        """(N, 4, 4) ``T_corr @ T_cam_base`` (the correction is in the camera frame)."""
        return self.T_cam_base if T_corr is None else T_corr @ self.T_cam_base

    def hand_points_cam(self, T_cam_base: torch.Tensor | None = None) -> torch.Tensor:
        """(N, P, 3) hand surface samples in the camera frame."""
        T = self.T_cam_base if T_cam_base is None else T_cam_base
        return transform_points(T, self.hand_points_base)

    def hand_vertices_cam(self, T_cam_base: torch.Tensor | None = None) -> torch.Tensor:
        """(N, Vh, 3) posed hand mesh vertices in the camera frame."""
        T = self.T_cam_base if T_cam_base is None else T_cam_base
        return transform_points(T.detach(), self.hand_vertices_base)

    @torch.no_grad()
    def hand_depths(self, T_cam_base: torch.Tensor) -> torch.Tensor:
        """(N, Hc, Wc) camera z of the hand in each frame's ROI on the canvas (+inf where none;
        frames without a mask: +inf), rendered by :meth:`Renderer.hand_depth`."""
        Wc, Hc = self.canvas
        out = torch.full((self.num_frames, Hc, Wc), float('inf'), device=self.device)
        idx = [int(i) for i in np.flatnonzero(self.has_mask)]
        verts = self.hand_vertices_cam(T_cam_base)
        for start in range(0, len(idx), 64):  # bounded memory
            chunk = idx[start:start + 64]
            out[chunk] = self.renderer.hand_depth(self.cameras(chunk), verts[chunk])
        return out

    # -- losses ------------------------------------------------------------------------------

    def image_losses(self, frames: Sequence[int], T_cam_obj: torch.Tensor, *,
                     hand_depth: torch.Tensor | None = None,
                     with_rgb: bool | None = None) -> ImageLosses:
        """Rendering priors (eqs. 1-2) of B frames at their poses, in one renderer call.

        Args:
            frames: (B,) frame indices.
            T_cam_obj: (B, 4, 4) object poses (differentiable).
            hand_depth: (N, Hc, Wc) the hands' depths (:meth:`hand_depths`, e.g. at a
                corrected hand root); None: the ones prepared at the measured hand root.
            with_rgb: compute the colour loss; None: when its weight is > 0.
        Returns:
            :class:`ImageLosses`; zero losses (and an empty silhouette) for frames without a
            mask.
        """
        frames = [int(i) for i in frames]
        T = T_cam_obj.reshape(-1, 4, 4)
        if T.shape[0] != len(frames):
            raise InputError(f'T_cam_obj: expected {len(frames)} poses (one per frame), got '
                             f'{T.shape[0]}')
        Wc, Hc = self.canvas
        mask_l = T.new_zeros(len(frames))
        rgb_l = T.new_zeros(len(frames))
        silhouette = T.new_zeros(len(frames), Hc, Wc)
        rows = [k for k, i in enumerate(frames) if self.has_mask[i]]
        if not rows:
            return ImageLosses(mask=mask_l, rgb=rgb_l, silhouette=silhouette)
        sel = [frames[k] for k in rows]
        depth = (self._hand_depth if hand_depth is None else hand_depth)[sel]
        out = self.renderer.render(self.cameras(sel), T[rows], hand_depth=depth)
        weight = self._roi_weight[sel]
        observed = self._obs_mask[sel]
        l_mask = mask_loss(out.object_mask, observed, weight)
        mask_l = mask_l.index_put((torch.tensor(rows, device=T.device),), l_mask)
        if with_rgb if with_rgb is not None else self.config.weights.rgb > 0:
            # Compare only where the object is both seen and rendered: elsewhere the rendered
            # background colour says nothing about the object.
            both = observed * (out.object_depth > 0).to(T.dtype) * weight
            l_rgb = rgb_loss(out.object_rgb, self._obs_rgb[sel], both)
            rgb_l = rgb_l.index_put((torch.tensor(rows, device=T.device),), l_rgb)
        silhouette[rows] = out.object_mask.detach()
        return ImageLosses(mask=mask_l, rgb=rgb_l, silhouette=silhouette)

    def physics_losses(self, T_cam_obj: torch.Tensor,
                       T_cam_base: torch.Tensor | None = None) -> PhysicsLosses:
        """Physics priors of the whole sequence.

        Args:
            T_cam_obj: (N, 4, 4) object poses (differentiable).
            T_cam_base: (N, 4, 4) hand root poses (differentiable); None: the measured ones.
        Returns:
            :class:`PhysicsLosses`.
        """
        N = self.num_frames
        if tuple(T_cam_obj.shape) != (N, 4, 4):
            raise InputError(f'T_cam_obj: expected shape ({N}, 4, 4), got '
                             f'{tuple(T_cam_obj.shape)}')
        hand_cam = self.hand_points_cam(T_cam_base)  # (N, P, 3)
        hand_obj = transform_points(invert_transform(T_cam_obj), hand_cam)
        result = self.sdf.signed_distance(hand_obj.contiguous())
        distance = result.distance  # (N, P), differentiable
        contact = (distance.detach() < self.config.contact_threshold_m) & result.valid
        penetration = penetration_loss(distance) * _M2_TO_MM2
        if N >= 2:
            sliding = sliding_loss(hand_cam[:-1], hand_cam[1:], T_cam_obj[:-1], T_cam_obj[1:],
                                   contact[:-1]) * _M2_TO_MM2
        else:
            sliding = T_cam_obj.new_zeros(0)
        M = self.object_points.shape[0]
        smooth = smoothness_loss(T_cam_obj, self.object_points) * (_M2_TO_MM2 / M)
        acc = acceleration_loss(T_cam_obj, self.object_points) * (_M2_TO_MM2 / M)
        return PhysicsLosses(penetration=penetration, sliding=sliding,
                             contact_count=contact.sum(-1), smoothness=smooth,
                             acceleration=acc, distance=distance.detach())

    @staticmethod
    def hand_root_regulariser(xi: torch.Tensor) -> torch.Tensor:
        """``|rho|^2 [mm^2] + |phi|^2 [deg^2]`` of a (6,) correction twist."""
        return xi[:3].square().sum() * _M2_TO_MM2 + xi[3:].square().sum() * _RAD2_TO_DEG2

    # -- reports -------------------------------------------------------------------------------

    @torch.no_grad()
    def contact_reports(self, T_cam_obj: torch.Tensor, T_cam_base: torch.Tensor | None = None,
                        threshold: float | None = None) -> list[ContactReport]:
        """Per frame, the hand-object contacts at the given poses (camera frame)."""
        threshold = self.config.contact_threshold_m if threshold is None else threshold
        hand_cam = self.hand_points_cam(T_cam_base)
        T = T_cam_obj.to(hand_cam.dtype)
        cs = find_contacts(transform_points(invert_transform(T), hand_cam).contiguous(),
                           self.sdf, threshold=threshold)
        names = self.hand.link_names
        links = self.hand_point_links.cpu().numpy()
        reports = []
        for i in range(self.num_frames):
            sel = torch.nonzero(cs.mask[i]).squeeze(-1)
            R = T[i, :3, :3]
            t = T[i, :3, 3]
            reports.append(ContactReport(
                link_names=tuple(names[int(j)] for j in links[sel.cpu().numpy()]),
                points_hand=hand_cam[i, sel].double().cpu().numpy(),
                points_object=(cs.closest_point_obj[i, sel] @ R.T + t).double().cpu().numpy(),
                normals=(cs.normal_obj[i, sel] @ R.T).double().cpu().numpy(),
                signed_distance=cs.distance[i, sel].double().cpu().numpy()))
        return reports


def _check_poses(name: str, T: np.ndarray, count: int) -> None:
    if T.shape != (count, 4, 4):
        raise InputError(f'{name}: expected shape ({count}, 4, 4), got {T.shape}')
    if not np.all(np.isfinite(T)):
        raise InputError(f'{name}: expected finite transforms, got NaN or Inf')
    R = T[:, :3, :3]
    err = np.abs(R @ np.swapaxes(R, 1, 2) - np.eye(3)).max(initial=0.0)
    if err > 1e-4 or np.abs(T[:, 3] - [0, 0, 0, 1]).max(initial=0.0) > 1e-9:
        raise InputError(f'{name}: expected rigid transforms (orthonormal rotation, last row '
                         f'0 0 0 1), got a rotation off by {err:.2g}')
