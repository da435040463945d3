"""Hard (z-buffer) triangle rasterizer in pure torch, vectorised over (face, pixel) pairs.

A pixel is covered by a triangle when its centre (module ``camera``: pixel (i, j) at
``(u, v) = (i, j)``) lies inside the projected triangle (edges included). Of the covering
triangles the nearest (smallest camera z, perspective-correct) wins. The depth test is a single
``scatter_reduce('amin')`` over an int64 key ``(float32 depth bits << 32) | face index``:
positive float32 values order like their bit patterns, so the minimum key is the nearest face.

The selection is discrete; after it the barycentrics and the depth of the winning face are
recomputed from the vertex tensors, so they carry gradients to the vertices (interpolated
attributes such as colour then have a gradient; visibility changes have none).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.render.binning import (
    enumerate_pixel_pairs,
    face_bounding_boxes,
    pair_counts,
)

_EMPTY_KEY = torch.iinfo(torch.int64).max


@dataclass(frozen=True)
class HardRaster:
    """Z-buffer of one mesh (or of a scene concatenated into one mesh).

    Attributes:
        face_index: (B, H, W) int64 index of the nearest face, -1 where no face covers.
        depth: (B, H, W) camera z [m] of the nearest surface, +inf where empty.
        bary: (B, H, W, 3) perspective-correct barycentrics of the nearest face's three
            vertices (weights of ``faces[face_index]``), 0 where empty.
    """

    face_index: torch.Tensor
    depth: torch.Tensor
    bary: torch.Tensor

    @property
    def covered(self) -> torch.Tensor:
        """(B, H, W) bool, True where a face covers the pixel."""
        return self.face_index >= 0


def check_mesh_inputs(verts_px: torch.Tensor, verts_z: torch.Tensor,
                      faces: torch.Tensor) -> None:
    """Validate (B, V, 2) pixel coordinates, (B, V) depths and (F, 3) integer faces."""
    if not isinstance(verts_px, torch.Tensor) or verts_px.dim() != 3 or verts_px.shape[-1] != 2:
        raise InputError(f'verts_px: expected a tensor (B, V, 2), got '
                         f'{tuple(getattr(verts_px, "shape", ()))}')
    if not isinstance(verts_z, torch.Tensor) or tuple(verts_z.shape) != tuple(verts_px.shape[:2]):
        raise InputError(f'verts_z: expected shape {tuple(verts_px.shape[:2])}, got '
                         f'{tuple(getattr(verts_z, "shape", ()))}')
    if not isinstance(faces, torch.Tensor) or faces.dim() != 2 or faces.shape[-1] != 3:
        raise InputError(f'faces: expected a tensor (F, 3), got '
                         f'{tuple(getattr(faces, "shape", ()))}')
    if faces.is_floating_point() or faces.dtype == torch.bool:
        raise InputError(f'faces: expected an integer dtype, got {faces.dtype}')
    if faces.device != verts_px.device or verts_z.device != verts_px.device:
        raise InputError(f'faces, verts_z: expected device {verts_px.device}, got '
                         f'{faces.device}, {verts_z.device}')


def face_validity(face_z: torch.Tensor, face_px: torch.Tensor, near: float,
                  face_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, F) bool: faces entirely beyond ``near`` with finite projections (and in the mask).

    Args:
        face_z: (B, F, 3) vertex depths.
        face_px: (B, F, 3, 2) vertex pixel coordinates.
        near: near clip distance [m]; faces crossing it are dropped (not clipped).
        face_mask: (B, F) bool or None.
    """
    valid = (face_z > near).all(-1) & torch.isfinite(face_px).all(-1).all(-1)
    if face_mask is not None:
        valid = valid & face_mask
    return valid


def rasterize_hard(verts_px: torch.Tensor, verts_z: torch.Tensor, faces: torch.Tensor,
                   height: int, width: int, *, face_mask: torch.Tensor | None = None,
                   near: float = 1e-3, max_pairs: int = 1 << 22) -> HardRaster:
    """Z-buffer rasterization of a batch of meshes sharing one triangle list.

    Args:
        verts_px: (B, V, 2) vertex pixel coordinates (``PinholeCamera.project``).
        verts_z: (B, V) vertex camera z [m] (> 0 in front of the camera).
        faces: (F, 3) integer vertex indices.
        height, width: image size [px].
        face_mask: (B, F) bool, faces to rasterize (e.g. front-facing); None: all.
        near: faces with a vertex at z <= near are dropped [m].
        max_pairs: the (face, pixel) pairs are processed in chunks of about this many, which
            bounds the memory for large triangles.
    Returns:
        :class:`HardRaster`; ``bary`` and ``depth`` are differentiable w.r.t. the vertices.
    """
    check_mesh_inputs(verts_px, verts_z, faces)
    faces = faces.long()
    B, _, _ = verts_px.shape
    F = faces.shape[0]
    device = verts_px.device
    with torch.no_grad():
        face_px = verts_px.detach()[:, faces]  # (B, F, 3, 2)
        face_z = verts_z.detach()[:, faces]  # (B, F, 3)
        valid = face_validity(face_z, face_px, near, face_mask)
        flat_px = face_px.reshape(B * F, 3, 2)
        x0, x1, y0, y1 = face_bounding_boxes(flat_px, 0.0, height, width, valid.reshape(-1))
        counts = pair_counts(x0, x1, y0, y1)
        keys = torch.full((B * height * width,), _EMPTY_KEY, dtype=torch.int64, device=device)
        # Chunk over faces so that each chunk holds about max_pairs pairs.
        bounds = _chunk_bounds(counts, max_pairs)
        inv_z = 1.0 / face_z.reshape(B * F, 3).to(torch.float32)
        flat_px32 = flat_px.to(torch.float32)
        for start, stop in bounds:
            sl = slice(start, stop)
            pairs = enumerate_pixel_pairs(x0[sl], x1[sl], y0[sl], y1[sl], F, height, width)
            face = pairs.face + start
            # enumerate_pixel_pairs numbered faces from `start`; recompute the batch index.
            batch = torch.div(face, F, rounding_mode='floor')
            pixel = (batch * height + pairs.y) * width + pairs.x
            tri = flat_px32[face]  # (M, 3, 2)
            px = torch.stack([pairs.x, pairs.y], -1).to(torch.float32)  # (M, 2)
            w = _edge_functions(tri, px)  # (M, 3)
            area = w.sum(-1)
            inside = ((w >= 0).all(-1) | (w <= 0).all(-1)) & (area != 0)
            if not bool(inside.any()):
                continue
            w, area, face, pixel = w[inside], area[inside], face[inside], pixel[inside]
            lam = w / area[:, None]  # screen-space barycentrics
            z = 1.0 / (lam * inv_z[face]).sum(-1)  # perspective-correct depth
            z_bits = z.clamp(min=0).view(torch.int32).to(torch.int64)
            key = (z_bits << 32) | (face % F)
            keys.scatter_reduce_(0, pixel, key, reduce='amin', include_self=True)
        covered = keys != _EMPTY_KEY
        face_index = torch.where(covered, keys & 0xFFFFFFFF, torch.full_like(keys, -1))
    face_index = face_index.reshape(B, height, width)
    bary, depth = _barycentrics_of(verts_px, verts_z, faces, face_index)
    return HardRaster(face_index=face_index, depth=depth, bary=bary)


def _chunk_bounds(counts: torch.Tensor, max_pairs: int) -> list[tuple[int, int]]:
    """Consecutive face ranges with about ``max_pairs`` pairs each (at least one face)."""
    n = counts.numel()
    if n == 0:
        return []
    total = int(counts.sum())
    if total <= max_pairs:
        return [(0, n)]
    cum = torch.cumsum(counts, 0)
    bounds = []
    start = 0
    while start < n:
        base = int(cum[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(cum, torch.tensor(base + max_pairs, device=cum.device),
                                      right=True))
        stop = max(stop, start + 1)
        bounds.append((start, min(stop, n)))
        start = stop
    return bounds


def _edge_functions(tri: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Twice the signed areas opposite each vertex: screen barycentrics times twice the area.

    Args:
        tri: (M, 3, 2) triangle vertices a, b, c.
        p: (M, 2) points.
    Returns:
        (M, 3): ``(E(b, c, p), E(c, a, p), E(a, b, p))`` with
        ``E(s, t, p) = (t - s) x (p - s)``; they sum to ``E(a, b, c)``.
    """
    start = tri
    end = tri.roll(-1, dims=1)  # b, c, a
    e = end - start  # edges a->b, b->c, c->a
    d = p[:, None, :] - start
    cross = e[..., 0] * d[..., 1] - e[..., 1] * d[..., 0]  # (M, 3): E(a,b,p), E(b,c,p), E(c,a,p)
    return cross.roll(-1, dims=1)  # E(b,c,p), E(c,a,p), E(a,b,p)


def _barycentrics_of(verts_px: torch.Tensor, verts_z: torch.Tensor, faces: torch.Tensor,
                     face_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Perspective-correct barycentrics and depth of the given faces at the pixel centres.

    Args:
        verts_px: (B, V, 2); verts_z: (B, V); faces: (F, 3) int64.
        face_index: (B, H, W) int64, -1 where empty.
    Returns:
        bary (B, H, W, 3) (0 where empty), depth (B, H, W) (+inf where empty).
    """
    B, H, W = face_index.shape
    dtype = verts_px.dtype
    covered = (face_index >= 0).reshape(-1)
    bary = torch.zeros(B * H * W, 3, dtype=dtype, device=verts_px.device)
    depth = torch.full((B * H * W,), float('inf'), dtype=dtype, device=verts_px.device)
    idx = torch.nonzero(covered).squeeze(-1)
    if idx.numel() > 0:
        f = face_index.reshape(-1)[idx]
        b = torch.div(idx, H * W, rounding_mode='floor')
        rem = idx - b * H * W
        y = torch.div(rem, W, rounding_mode='floor')
        x = rem - y * W
        vi = faces[f]  # (N, 3)
        tri = verts_px[b[:, None], vi]  # (N, 3, 2)
        tz = verts_z[b[:, None], vi]  # (N, 3)
        p = torch.stack([x, y], -1).to(dtype)
        w = _edge_functions(tri, p)
        lam = w / w.sum(-1, keepdim=True)
        lam_over_z = lam / tz
        inv_depth = lam_over_z.sum(-1, keepdim=True)
        bary = bary.index_put((idx,), lam_over_z / inv_depth)
        depth = depth.index_put((idx,), 1.0 / inv_depth.squeeze(-1))
    return bary.reshape(B, H, W, 3), depth.reshape(B, H, W)


def interpolate(attributes: torch.Tensor, faces: torch.Tensor, raster: HardRaster,
                background: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Per-pixel attributes interpolated with the raster's barycentrics.

    Args:
        attributes: (B, V, C) per-vertex attributes (e.g. shaded RGB).
        faces: (F, 3) integer faces of the rasterized mesh.
        raster: its :class:`HardRaster`.
        background: value where no face covers, float or (C,).
    Returns:
        (B, H, W, C), differentiable w.r.t. ``attributes`` and the barycentrics.
    """
    B, H, W = raster.face_index.shape
    C = attributes.shape[-1]
    f = raster.face_index.clamp(min=0).reshape(B, H * W)
    vi = faces.long()[f]  # (B, H*W, 3)
    b = torch.arange(B, device=f.device)[:, None, None]
    vals = attributes[b, vi]  # (B, H*W, 3, C)
    out = (vals * raster.bary.reshape(B, H * W, 3, 1)).sum(-2).reshape(B, H, W, C)
    bg = torch.as_tensor(background, dtype=out.dtype, device=out.device).expand(C)
    return torch.where(raster.covered[..., None], out, bg)
