"""Object outlines drawn on camera images (demo GIFs, synthetic previews, refinement reports).

:func:`outline_mask` renders the object's visible silhouette at a pose with the project's
:class:`~handypriors_ros.core.render.renderer.Renderer` (:meth:`Renderer.rasterize`, only in
the region of interest around the object, pasted into a full-size mask);
:func:`draw_outline` draws its outer contour on an image.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from handypriors_ros.core.render.camera import PinholeCamera
from handypriors_ros.core.render.renderer import Renderer
from handypriors_ros.core.render.roi import make_roi


def outline_mask(renderer: Renderer, camera: PinholeCamera, T_cam_obj: np.ndarray | torch.Tensor,
                 hand_vertices_cam: torch.Tensor | None = None) -> np.ndarray:
    """(H, W) bool: where the object is the nearest surface at a pose (hidden by the hand when
    its (Vh, 3) vertices are given); all False when the object is not in view."""
    T = np.asarray(torch.as_tensor(T_cam_obj).detach().cpu(), dtype=np.float64)
    full = np.zeros((camera.height, camera.width), bool)
    verts = renderer.object_mesh.vertices.detach().cpu().numpy().astype(np.float64)
    roi = make_roi(camera, T, verts, max(camera.width, camera.height), margin=0.05)
    if roi is None:
        return full
    hand = None
    if hand_vertices_cam is not None:
        hand = hand_vertices_cam.to(renderer.device, renderer.dtype)[None]
    Tt = torch.as_tensor(T, dtype=renderer.dtype, device=renderer.device)[None]
    visible = renderer.rasterize(roi.camera, Tt, hand,
                                 barycentrics=False).object_visible[0].cpu().numpy()
    full[roi.y0:roi.y1, roi.x0:roi.x1] = visible
    return full


def draw_outline(image: np.ndarray, renderer: Renderer, camera: PinholeCamera,
                 T_cam_obj: np.ndarray | torch.Tensor, colour: tuple[int, int, int],
                 thickness: int = 2, hand_vertices_cam: torch.Tensor | None = None
                 ) -> np.ndarray:
    """Draw the object's outer outline at a pose on ``image`` (in place) and return it.

    Args:
        image: (H, W, 3) uint8, the camera's size.
        renderer: the object's renderer; camera: the image's (undistorted) camera.
        T_cam_obj: (4, 4) object pose; colour: in the image's channel order.
        thickness: line width [px].
        hand_vertices_cam: (Vh, 3) posed hand vertices to hide the object behind, or None.
    """
    mask = outline_mask(renderer, camera, T_cam_obj, hand_vertices_cam)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(image, contours, -1, tuple(int(c) for c in colour), thickness)
    return image
