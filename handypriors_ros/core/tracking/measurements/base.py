"""The measurement protocol: what one observation type gives the EKF, and what it may look at.

The EKF (``core.tracking.ekf.PoseEKF``) does not know what a measurement is; as filterpy's
``update(z, HJacobian, Hx, R)`` it takes a residual, its Jacobian and a noise. A measurement
(:class:`Measurement`) is the small object that makes those from a frame: each tracker step it
is :meth:`~Measurement.prepare` d with the step's :class:`StepContext` and returns a
``linearise(T_cam_obj, iteration) -> Linearisation | None`` function; the tracker hands that
to the EKF, once (:meth:`PoseEKF.update`) or, for an ``iterated`` measurement, re-linearised
at each new estimate (:meth:`PoseEKF.update_iterated`). Residuals map per-row error-state
perturbations ``delta (rows, 6)`` to ``z - h(T (+) delta)`` and are differentiable, so the
Jacobian comes from reverse-mode autodiff (``ekf.separable_jacobian``).

A new observation type is a subclass in its own module plus one line in ``registry``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar, NamedTuple

import numpy as np
import torch

from handypriors_ros.core.frames import Frame
from handypriors_ros.core.models.hand import HandModel
from handypriors_ros.core.models.object_model import ObjectModel
from handypriors_ros.core.physics.sdf import WarpMeshSDF
from handypriors_ros.core.render.mesh import RenderMesh
from handypriors_ros.core.render.renderer import Renderer
from handypriors_ros.core.tracking.measurements.roi import RoiRender, RoiView, make_roi, render_roi
from handypriors_ros.core.tracking.types import TrackStatus

if TYPE_CHECKING:  # the tracker's modules import this package (no import cycle at run time)
    from handypriors_ros.core.tracking.config import TrackerConfig
    from handypriors_ros.core.tracking.dynamics import HandFrame

Residual = Callable[[torch.Tensor], torch.Tensor]


class Linearisation(NamedTuple):
    """A measurement linearised at one pose, in the EKF's terms (unpacks as the
    ``(residual, rows, R)`` that ``PoseEKF.update_iterated``'s ``build`` returns).

    Attributes:
        residual: ``delta (rows, 6) float64 -> (rows, d)`` residuals ``z - h(T (+) delta)``,
            row i depending only on ``delta[i]``; the measurement is the rows concatenated
            (m = rows * d values).
        rows: number of rows (1 for a measurement that is not row-separable).
        R: (m,) diagonal or (m, m) measurement noise (float64).
    """
    residual: Residual
    rows: int
    R: torch.Tensor


Linearise = Callable[[torch.Tensor, int], Linearisation | None]


@dataclass(frozen=True)
class TrackingScene:
    """What the tracker knows of the scene, built once: the object's geometry and SDF, and the
    ROI render of the object with the hand as a known occluder.

    Attributes:
        proxy_vertices: (V, 3) float32 render-proxy vertices, object frame, on the device.
        proxy_faces: (F, 3) int64 its triangles, on the device.
        proxy_vertices_np: (V, 3) float64 numpy copy (regions of interest).
        mesh: the proxy with vertices merged by position (colour seams split them), float64 on
            the CPU, so that its edges know both their faces: silhouette edges.
        center: (3,) float64 object centre, object frame (CPU).
        sdf: the object's signed distance field (on the device).
        hand_faces: (Fh, 3) the hand's triangles (``HandModel.mesh_faces``), on the device.
        renderer: the project's :class:`Renderer` of the proxy with the hand's faces, on the
            device: every ROI render goes through it.
        object_model: the object (its texture or colours: the appearance measurement), or
            None.
    """
    proxy_vertices: torch.Tensor
    proxy_faces: torch.Tensor
    proxy_vertices_np: np.ndarray
    mesh: RenderMesh
    center: torch.Tensor
    sdf: WarpMeshSDF
    hand_faces: torch.Tensor
    renderer: Renderer
    object_model: ObjectModel | None = None

    def render(self, roi: RoiView, T_cam_obj: np.ndarray,
               hand_vertices_cam: torch.Tensor | None = None) -> RoiRender:
        """Hard-render the object at a pose (and the posed hand (Vh, 3), camera frame, when
        given) into a ROI; every ROI render of the tracker goes through here."""
        return render_roi(self.renderer, roi, T_cam_obj, hand_vertices_cam)


@dataclass
class StepContext:
    """What one tracker step offers its measurements (built by the tracker per frame).

    Attributes:
        frame: the frame; hand: the hand posed at its stamp (``dynamics.HandFrame``).
        hand_model: the hand (its protocol: fingertip radius, posed mesh).
        scene: the object's geometry, SDF and ROI render.
        status: the track status before this step.
        T_prior: (4, 4) float64 the predicted pose (before any update).
        roi_size_px: the largest ROI side.
        roi: the ROI at ``T_prior`` (None when the object is out of view).
        mask: (H, W) bool observed object mask (None without one).
        mask_roi: (h, w) bool the mask in the ROI (None without ROI or mask).
        render: the ROI rendered at ``T_prior``, hand included (None without ROI or mask).
    """
    frame: Frame
    hand: HandFrame
    hand_model: HandModel
    scene: TrackingScene
    status: TrackStatus
    T_prior: np.ndarray
    roi_size_px: int
    roi: RoiView | None = None
    mask: np.ndarray | None = None
    mask_roi: np.ndarray | None = None
    render: RoiRender | None = None
    _hand_vertices: torch.Tensor | None = field(default=None, repr=False)

    def hand_vertices(self) -> torch.Tensor:
        """(Vh, 3) float32 the posed hand mesh's vertices, camera frame (posed once)."""
        if self._hand_vertices is None:
            h = self.hand_model
            v, _ = h.posed_mesh(
                torch.as_tensor(self.frame.q[None], dtype=h.dtype, device=h.device),
                torch.as_tensor(self.frame.T_cam_base[None], dtype=h.dtype, device=h.device))
            self._hand_vertices = v[0].detach().float()
        return self._hand_vertices

    def render_at(self, T_cam_obj: np.ndarray) -> tuple[RoiView, RoiRender] | None:
        """The ROI and its render (hand included) at a pose; None when out of view there."""
        roi = make_roi(self.frame.camera, T_cam_obj, self.scene.proxy_vertices_np,
                       self.roi_size_px)
        if roi is None:
            return None
        return roi, self.scene.render(roi, T_cam_obj, self.hand_vertices())


class Measurement(abc.ABC):
    """One observation type of the EKF (module docstring).

    Class attributes:
        name: the registry name (``TrackerConfig.measurements``), also the update's record name.
        from_image: an image measurement: not gated while the track is initialising (the
            initial pose is only as good as the user's guess until the image has been accepted
            once), and its acceptance is what keeps the track alive (status TRACKING).
        confirms_track: an accepted update of this type is evidence that the whole pose is
            right (the contour: the shape; not the object centre, which a wrong orientation
            satisfies as well); a track none of whose ``confirms_track`` measurements passes
            its gate for ``lost_after_frames`` frames is LOST. A tracker configured with none
            uses its ``from_image`` measurements instead.
        iterated: re-linearised at each new estimate (iterated EKF, :meth:`iterations` times);
            else one ordinary EKF update.
        prior_only: :meth:`prepare` reads only the frame, the mask, the posed hand, ``roi``
            and ``T_prior`` of the context (not ``render``, not the estimate of earlier
            updates), so the tracker may run it in its worker thread while it renders the ROI
            (``TrackerConfig.parallel_prepare``); its linearisation still runs in order.

    Args:
        config: the tracker's settings (measurements read their own noise and options there).
    """
    name: ClassVar[str]
    from_image: ClassVar[bool] = True
    confirms_track: ClassVar[bool] = False
    iterated: ClassVar[bool] = False
    prior_only: ClassVar[bool] = False

    def __init__(self, config: TrackerConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def prepare(self, ctx: StepContext) -> Linearise | None:
        """This frame's measurement: ``linearise(T_cam_obj (4, 4) float64, iteration) ->
        Linearisation | None`` (None: it cannot be made at that pose), or None when the frame
        has nothing for it (no update, no record). Iteration 0 is at the current estimate."""

    def warm_up(self, scene: TrackingScene) -> None:
        """Make, once, what the first frame would otherwise make (renderers, caches), so
        that it is not late; the tracker calls it when it is built. Nothing by default."""

    def before_mask(self, ctx: StepContext) -> None:
        """Work of the coming :meth:`prepare` that needs no mask (``ctx.mask`` is None here),
        which the tracker runs while a live frame's mask is still on its way
        (``Frame.late_mask``); :meth:`prepare` must give the same result whether or not this
        ran (it does that work itself otherwise). Nothing by default."""

    def iterations(self, ctx: StepContext) -> int:
        """Gauss-Newton iterations of an ``iterated`` measurement in this step."""
        return 1

    def reset(self) -> None:
        """Forget what earlier frames taught (a new track starts)."""

    def finish(self, ctx: StepContext, T_cam_obj: np.ndarray) -> None:
        """After the step, with the posterior pose (4, 4): remember what the next frame needs."""
