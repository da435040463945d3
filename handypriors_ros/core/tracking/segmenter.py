"""Built-in object segmenter for frames without an external mask.

Colour-histogram back-projection: hue-saturation histograms of the object (the rendered
visible silhouette at the last well-tracked pose, eroded) and of its surroundings (the rest of
the region of interest, hand pixels included) give a per-pixel likelihood ratio; pixels where
the object is more likely than the background, cleaned by a morphological opening and kept
near the predicted silhouette, form the mask. It is re-learned on every well-tracked frame.
"""
from __future__ import annotations

import cv2
import numpy as np

_BINS = (30, 32)
_RANGES = [0, 180, 0, 256]


class ColorHistogramSegmenter:
    """Learns from (image, object mask) pairs; segments new images in a region.

    Args:
        min_pixels: fewest object pixels to learn from.
        smoothing: exponential forgetting of the histograms per learned frame (0..1).
    """

    def __init__(self, *, min_pixels: int = 50, smoothing: float = 0.3) -> None:
        self.min_pixels = min_pixels
        self.smoothing = smoothing
        self._obj: np.ndarray | None = None
        self._bg: np.ndarray | None = None

    @property
    def ready(self) -> bool:
        return self._obj is not None

    @staticmethod
    def _hist(hsv: np.ndarray, mask: np.ndarray) -> np.ndarray:
        h = cv2.calcHist([hsv], [0, 1], mask.astype(np.uint8), list(_BINS), _RANGES)
        return h / max(float(h.sum()), 1.0)

    def learn(self, rgb: np.ndarray, object_mask: np.ndarray) -> bool:
        """Update the histograms from an image and its object mask (same size). Returns
        whether there were enough pixels to learn from."""
        obj = cv2.erode(object_mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        if obj.sum() < self.min_pixels:
            return False
        bg = ~cv2.dilate(object_mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        h_obj, h_bg = self._hist(hsv, obj), self._hist(hsv, bg)
        if self._obj is None:
            self._obj, self._bg = h_obj, h_bg
        else:
            a = self.smoothing
            self._obj = (1 - a) * self._obj + a * h_obj
            self._bg = (1 - a) * self._bg + a * h_bg
        return True

    def segment(self, rgb: np.ndarray, prior_mask: np.ndarray | None = None,
                prior_margin_px: int = 8) -> np.ndarray | None:
        """(H, W) bool object mask of ``rgb``, or None before anything was learned.

        Args:
            prior_mask: the predicted silhouette; the result is limited to its neighbourhood
                of ``prior_margin_px`` (the object cannot be far from where it is predicted).
        """
        if self._obj is None:
            return None
        ratio = (self._obj + 1e-6) / (self._obj + self._bg + 2e-6)
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        h_idx = np.minimum(hsv[..., 0].astype(int) * _BINS[0] // 180, _BINS[0] - 1)
        s_idx = np.minimum(hsv[..., 1].astype(int) * _BINS[1] // 256, _BINS[1] - 1)
        prob = ratio[h_idx, s_idx]
        mask = (prob > 0.5).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        if prior_mask is not None:
            k = 2 * prior_margin_px + 1
            near = cv2.dilate(prior_mask.astype(np.uint8), np.ones((k, k), np.uint8))
            mask &= near
        return mask.astype(bool)
