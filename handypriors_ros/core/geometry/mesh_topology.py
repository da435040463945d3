"""Triangle-mesh topology checks (numpy): closed, consistently oriented, outward.

A textured mesh repeats a vertex at every UV seam; :func:`merged_by_position` joins such copies
so that topology is judged on the surface, not on its parameterisation.
"""
from __future__ import annotations

import numpy as np


def is_closed_and_oriented(faces: np.ndarray, num_vertices: int) -> bool:
    """True when every directed edge appears exactly once and its reverse exists.

    That is a watertight (closed, manifold along edges), consistently oriented surface.

    Args:
        faces: (F, 3) integer vertex indices; num_vertices: V.
    """
    faces = np.asarray(faces)
    a = faces.reshape(-1).astype(np.int64)
    b = faces[:, [1, 2, 0]].reshape(-1).astype(np.int64)
    codes = np.sort(a * num_vertices + b)
    if codes.size and np.any(codes[1:] == codes[:-1]):
        return False
    return np.array_equal(codes, np.sort(b * num_vertices + a))


def merged_by_position(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices, faces)`` with vertices at the same position joined (exactly equal
    coordinates, as a UV seam repeats them); faces re-indexed, their order kept."""
    vertices = np.asarray(vertices, dtype=np.float64)
    unique, inverse = np.unique(vertices, axis=0, return_inverse=True)
    return unique, inverse.reshape(-1)[np.asarray(faces, dtype=np.int64)]


def is_closed_outward(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """True for a closed, consistently oriented surface (after joining seam copies) whose faces
    wind counter-clockwise seen from outside (positive enclosed volume): a surface whose back
    faces are never visible, so a renderer may cull them.

    Args:
        vertices: (V, 3); faces: (F, 3) integer indices.
    """
    v, f = merged_by_position(vertices, faces)
    if f.size == 0 or not is_closed_and_oriented(f, len(v)):
        return False
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return float(np.einsum('ij,ij->i', a, np.cross(b, c)).sum()) > 0.0  # 6 x volume
