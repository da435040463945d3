"""Imperfections of real sensors and segmenters, applied to clean synthetic renders.

All functions take a ``numpy.random.Generator`` so sequences are deterministic for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class SensorNoise:
    """Colour camera noise.

    Attributes:
        read_sigma: std of additive Gaussian read noise (intensity units 0..255).
        shot_gain: Poisson-like shot noise std = sqrt(shot_gain * intensity).
        blur_sigma_px: optional Gaussian optical blur (px); 0 disables.
    """
    read_sigma: float = 2.0
    shot_gain: float = 0.25
    blur_sigma_px: float = 0.6


def add_sensor_noise(rgb: np.ndarray, noise: SensorNoise, rng: np.random.Generator) -> np.ndarray:
    """Noisy copy of an image.

    Args:
        rgb: (H, W, 3) uint8 clean render.
    Returns:
        (H, W, 3) uint8.
    """
    img = rgb.astype(np.float32)
    if noise.blur_sigma_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), noise.blur_sigma_px)
    sigma = np.sqrt(noise.read_sigma ** 2 + noise.shot_gain * np.maximum(img, 0.0))
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class SegmenterNoise:
    """How a realistic segmenter gets the object mask wrong.

    Attributes:
        edge_px: maximum erosion/dilation of the boundary per frame (px, random sign).
        blob_probability: chance per frame of a false-positive blob.
        blob_radius_px: (min, max) radius of false blobs.
        hole_probability: chance per frame of a missed region inside the object.
        drop_probability: chance per frame that the segmenter outputs nothing (no message).
    """
    edge_px: int = 2
    blob_probability: float = 0.15
    blob_radius_px: tuple[int, int] = (4, 14)
    hole_probability: float = 0.1
    drop_probability: float = 0.05


def corrupt_mask(mask: np.ndarray, noise: SegmenterNoise,
                 rng: np.random.Generator) -> np.ndarray | None:
    """A segmenter-like version of a true object mask.

    Args:
        mask: (H, W) bool true visible-object mask.
    Returns:
        (H, W) uint8 with 255 = object, or None for a dropped frame.
    """
    if rng.random() < noise.drop_probability:
        return None
    out = mask.astype(np.uint8) * 255
    if noise.edge_px > 0:
        k = int(rng.integers(0, noise.edge_px + 1))
        if k > 0:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
            out = cv2.dilate(out, kernel) if rng.random() < 0.5 else cv2.erode(out, kernel)
    h, w = mask.shape
    if rng.random() < noise.blob_probability:
        ys, xs = np.nonzero(mask)
        if len(xs):  # near the object, as segmenter false positives usually are
            cx = int(np.clip(rng.normal(xs.mean(), 2.0 * xs.std() + 10), 0, w - 1))
            cy = int(np.clip(rng.normal(ys.mean(), 2.0 * ys.std() + 10), 0, h - 1))
        else:
            cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(noise.blob_radius_px[0], noise.blob_radius_px[1] + 1))
        cv2.circle(out, (cx, cy), r, 255, -1)
    if rng.random() < noise.hole_probability:
        ys, xs = np.nonzero(out)
        if len(xs):
            i = int(rng.integers(0, len(xs)))
            r = int(rng.integers(noise.blob_radius_px[0], noise.blob_radius_px[1] + 1))
            cv2.circle(out, (int(xs[i]), int(ys[i])), r, 0, -1)
    return out
