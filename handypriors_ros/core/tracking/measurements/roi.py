"""The region of interest (ROI) the image measurements work in, and its hard render.

Everything image-side happens in a ROI around the object's predicted projection, rendered at
most ``roi_size`` pixels wide with the hard rasterizer (the hand as a known occluder: it is
rasterised together with the object, so object pixels behind the hand are not object pixels).
The render runs on the device of the vertex tensors; its images come back as numpy arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from handypriors_ros.core.render.camera import PinholeCamera
from handypriors_ros.core.render.hard_rasterizer import rasterize_hard


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
    """Hard-render the object (and the hand, when given) into the ROI.

    Runs on ``obj_vertices``' device (the hand's tensors must be there too).

    Args:
        roi: the ROI; T_cam_obj: (4, 4) object pose.
        obj_vertices: (V, 3) object-frame vertices; obj_faces: (F, 3) int.
        hand_vertices_cam: (Vh, 3) posed hand vertices in the camera frame, or None;
        hand_faces: (Fh, 3) int, or None.
    """
    T = torch.as_tensor(T_cam_obj, dtype=obj_vertices.dtype, device=obj_vertices.device)
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
    fi = raster.face_index[0].cpu().numpy()
    return RoiRender(object_visible=fi >= n_hand, hand=(fi >= 0) & (fi < n_hand),
                     depth=raster.depth[0].detach().cpu().numpy())
