"""The tracker's region-of-interest render: object and hand rasterized together into a ROI.

Everything image-side happens in a ROI (``core.render.roi``) around the object's predicted
projection, at most ``roi_size`` pixels wide, rendered by the project's one
:class:`~handypriors_ros.core.render.renderer.Renderer` (:meth:`Renderer.rasterize`: the hand is
a known occluder rasterized with the object, so object pixels behind the hand are not object
pixels). The render runs on the renderer's device; its images come back as numpy arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from handypriors_ros.core.render.renderer import Renderer
from handypriors_ros.core.render.roi import RoiView, make_roi

__all__ = ['RoiRender', 'RoiView', 'make_roi', 'render_roi']


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


def render_roi(renderer: Renderer, roi: RoiView, T_cam_obj: np.ndarray,
               hand_vertices_cam: torch.Tensor | None = None) -> RoiRender:
    """Hard-render the object (and the hand, when given) into the ROI with ``renderer``.

    Args:
        renderer: the object's renderer (with the hand's faces when a hand is given).
        roi: the ROI; T_cam_obj: (4, 4) object pose.
        hand_vertices_cam: (Vh, 3) posed hand vertices in the camera frame, or None.
    """
    T = torch.as_tensor(np.asarray(T_cam_obj), dtype=renderer.dtype, device=renderer.device)
    hand = None
    if hand_vertices_cam is not None:
        hand = hand_vertices_cam.to(renderer.device, renderer.dtype)[None]
    scene = renderer.rasterize(roi.camera, T[None], hand, barycentrics=False)
    fi = scene.raster.face_index[0].cpu().numpy()
    F = scene.num_object_faces
    return RoiRender(object_visible=(fi >= 0) & (fi < F), hand=fi >= F,
                     depth=scene.raster.depth[0].cpu().numpy().astype(np.float32))
