"""Region of interest (ROI): a crop of the full image, rescaled, and the pinhole camera of it.

Image-side work (the tracker's measurements, refinement's losses, outlines) renders only the
ROI around the object's projection: :func:`make_roi` builds it from a pose, and the ROI's
``camera`` goes to :class:`~handypriors_ros.core.render.renderer.Renderer` like any camera.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from handypriors_ros.core.render.camera import PinholeCamera


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
        return self.crop_area(image[self.y0:self.y1, self.x0:self.x1], interpolation)

    def crop_mask(self, mask: np.ndarray) -> np.ndarray:
        """(h, w) bool: a full-resolution bool mask in the ROI, as ``crop(mask.astype(
        np.float32)) > 0.5`` (the same pixels: INTER_AREA over the crop) without converting
        the whole image."""
        return self.crop_area(mask[self.y0:self.y1, self.x0:self.x1].astype(np.float32)) > 0.5

    def crop_area(self, crop: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """An image already cut to the ROI's full-resolution box, resized to the ROI camera's
        size (what :meth:`crop` does after cutting). ``interpolation``: a cv2 flag."""
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
