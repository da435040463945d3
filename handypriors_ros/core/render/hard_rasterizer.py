"""Hard (z-buffer) triangle rasterizer, vectorised over faces and covered pixels.

A pixel is covered by a triangle when its centre (module ``camera``: pixel (i, j) at
``(u, v) = (i, j)``) lies inside the projected triangle (edges included). Of the covering
triangles the nearest (smallest camera z, perspective-correct) wins, a tie going to the lower
face index. The depth test runs as a Warp kernel on CPU and CUDA devices
(:mod:`.zbuffer_warp`: one thread per face over its pixel box) or, elsewhere and as the
tests' reference, in torch: a single ``scatter_reduce('amin')`` over an int64 key
``(float32 depth bits << 32) | face index`` per (face, pixel) pair (positive float32 values
order like their bit patterns, so the minimum key is the nearest face).

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
            vertices (weights of ``faces[face_index]``), 0 where empty; None for a depth-only
            raster (``rasterize_hard(..., barycentrics=False)``).
        pixels: (N,) int64 flat indices ``(b * H + v) * W + u`` of the covered pixels,
            ascending (saves a full-image search to consumers).
    """

    face_index: torch.Tensor
    depth: torch.Tensor
    bary: torch.Tensor | None
    pixels: torch.Tensor

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


def screen_planes(verts_px: torch.Tensor, verts_z: torch.Tensor,
                  faces: torch.Tensor) -> torch.Tensor:
    """Per-face screen-space planes: barycentrics and inverse depth as affine functions.

    For a face with vertices a_0, a_1, a_2 (pixels) the screen barycentric of vertex i at
    pixel p is ``l_i(p) = A_i u + B_i v + C_i`` (the edge function of the opposite edge over
    the signed area, so ``l_i >= 0`` inside whatever the winding), and the perspective-correct
    inverse depth is the plane ``1/z(p) = sum_i l_i(p) / z_i``.

    Args:
        verts_px: (B, V, 2); verts_z: (B, V); faces: (F, 3) int64.
    Returns:
        (B * F, 12): ``A_0..2, B_0..2, C_0..2, 1/z_0..2``; degenerate faces (zero area) get
        all-zero barycentric rows (never inside). Differentiable.
    """
    B = verts_px.shape[0]
    planes = face_planes(verts_px[:, faces], verts_z[:, faces])  # (B, F, 12)
    return planes.reshape(B * faces.shape[0], 12)


def face_planes(face_px: torch.Tensor, face_z: torch.Tensor) -> torch.Tensor:
    """:func:`screen_planes` of faces given by their corners: (..., 3, 2) pixel coordinates
    and (..., 3) depths -> (..., 12)."""
    x, y = face_px[..., 0], face_px[..., 1]  # (..., 3)
    # Edge opposite vertex i runs from vertex i+1 to vertex i+2.
    x1, y1 = x.roll(-1, dims=-1), y.roll(-1, dims=-1)
    x2, y2 = x.roll(-2, dims=-1), y.roll(-2, dims=-1)
    A = -(y2 - y1)
    Bc = x2 - x1
    C = (y2 - y1) * x1 - (x2 - x1) * y1
    area = (C[..., :1] + A[..., :1] * x[..., :1] + Bc[..., :1] * y[..., :1])  # E(a1, a2, a0)
    safe = torch.where(area != 0, area, torch.ones_like(area))
    scale = torch.where(area != 0, 1.0 / safe, torch.zeros_like(area))
    inv_z = 1.0 / face_z  # (..., 3)
    return torch.cat([A * scale, Bc * scale, C * scale, inv_z], dim=-1)  # (..., 12)


def rasterize_hard(verts_px: torch.Tensor, verts_z: torch.Tensor, faces: torch.Tensor,
                   height: int, width: int, *, face_mask: torch.Tensor | None = None,
                   near: float = 1e-3, max_pairs: int = 1 << 22,
                   barycentrics: bool = True, zbuffer: str = 'auto',
                   cullable: torch.Tensor | None = None) -> HardRaster:
    """Z-buffer rasterization of a batch of meshes sharing one triangle list.

    Args:
        verts_px: (B, V, 2) vertex pixel coordinates (``PinholeCamera.project``).
        verts_z: (B, V) vertex camera z [m] (> 0 in front of the camera).
        faces: (F, 3) integer vertex indices.
        height, width: image size [px].
        face_mask: (B, F) bool, faces to rasterize (e.g. front-facing); None: all.
        near: faces with a vertex at z <= near are dropped [m].
        max_pairs: the torch depth test processes its (face, pixel) pairs in chunks of about
            this many, which bounds the memory for large triangles.
        barycentrics: False: a depth-only raster (``bary`` None, ``depth`` float32 from the
            depth test itself, no gradients): what visibility masks and occluder depths need,
            without a second pass over the covered pixels.
        cullable: (F,) bool, faces dropped when they face away from the camera: the
            screen-space form of :func:`~handypriors_ros.core.render.mesh.front_facing` (for
            z > 0, ``(p1 - p0) x (p2 - p0) = fx fy (a . n) / (z0 z1 z2)`` with ``n`` the face
            normal and ``a`` a vertex, so a back face has a positive cross product); None:
            none.
        zbuffer: the depth test: ``'warp'`` (a Warp kernel, :mod:`.zbuffer_warp`: no pair
            list: 2-3x faster for the whole call on the CPU), ``'torch'`` (pairs and
            ``scatter_reduce``), or ``'auto'`` (Warp on a CPU or CUDA device, else torch).
            Both give the same faces and depths (tested; a pixel centre exactly on an edge
            shared by two faces may go to either).
    Returns:
        :class:`HardRaster`; with ``barycentrics``, ``bary`` and ``depth`` are differentiable
        w.r.t. the vertices.
    """
    check_mesh_inputs(verts_px, verts_z, faces)
    if zbuffer not in ('auto', 'warp', 'torch'):
        raise InputError(f"zbuffer: expected 'auto', 'warp' or 'torch', got {zbuffer!r}")
    if cullable is not None and (not isinstance(cullable, torch.Tensor)
                                 or tuple(cullable.shape) != (faces.shape[0],)
                                 or cullable.dtype != torch.bool):
        raise InputError(f'cullable: expected a bool tensor ({faces.shape[0]},), got '
                         f'{getattr(cullable, "dtype", type(cullable).__name__)} '
                         f'{tuple(getattr(cullable, "shape", ()))}')
    faces = faces.long()
    B = verts_px.shape[0]
    with torch.no_grad():
        if zbuffer == 'torch' or (zbuffer == 'auto' and verts_px.device.type not in ('cpu',
                                                                                     'cuda')):
            face_index, depth = _zbuffer_torch(verts_px.detach(), verts_z.detach(), faces,
                                               height, width, face_mask, near, max_pairs,
                                               cullable)
        else:
            from handypriors_ros.core.render.zbuffer_warp import nearest_faces
            face_index, depth = nearest_faces(verts_px, verts_z, faces, height, width,
                                              face_mask, near, cullable)
        hit = torch.nonzero(face_index >= 0).squeeze(-1)
        if not barycentrics:
            return HardRaster(face_index=face_index.reshape(B, height, width),
                              depth=depth.reshape(B, height, width), bary=None, pixels=hit)
    face_index = face_index.reshape(B, height, width)
    bary, depth = _barycentrics_of(verts_px, verts_z, faces, face_index, hit)
    return HardRaster(face_index=face_index, depth=depth, bary=bary, pixels=hit)


def _zbuffer_torch(verts_px: torch.Tensor, verts_z: torch.Tensor, faces: torch.Tensor,
                   height: int, width: int, face_mask: torch.Tensor | None, near: float,
                   max_pairs: int, cullable: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The depth test over (face, pixel) pairs: one ``scatter_reduce('amin')`` of int64 keys
    ``(float32 depth bits << 32) | face index`` (module docstring). Returns the flat face
    index (-1 where empty) and the float32 depth (+inf where empty), as
    :func:`.zbuffer_warp.nearest_faces`."""
    B, F = verts_px.shape[0], faces.shape[0]
    device = verts_px.device
    face_px = verts_px[:, faces]  # (B, F, 3, 2)
    face_z = verts_z[:, faces]  # (B, F, 3)
    valid = face_validity(face_z, face_px, near, face_mask)
    e1 = face_px[:, :, 1] - face_px[:, :, 0]
    e2 = face_px[:, :, 2] - face_px[:, :, 0]
    area = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    valid &= area != 0  # no zero-area faces
    if cullable is not None:  # a back face: (p1 - p0) x (p2 - p0) > 0 on the image
        valid &= ~(cullable & (area > 0))
    # Only the faces that can cover a pixel are set up (culled, clipped and off-image faces
    # cost nothing beyond this test): `live` maps their compact index to the flat (B * F) one.
    x0, x1, y0, y1 = face_bounding_boxes(face_px.reshape(B * F, 3, 2), 0.0, height, width,
                                         valid.reshape(-1))
    live = torch.nonzero(x1 >= x0).squeeze(-1)
    x0, x1, y0, y1 = (x.index_select(0, live) for x in (x0, x1, y0, y1))
    counts = pair_counts(x0, x1, y0, y1)
    # float32 rows (structure of arrays: 1-D gathers and elementwise ops are fast on CPU).
    rows = face_planes(face_px.reshape(B * F, 3, 2).index_select(0, live),
                       face_z.reshape(B * F, 3).index_select(0, live)).to(torch.float32).T
    keys = torch.full((B * height * width,), _EMPTY_KEY, dtype=torch.int64, device=device)
    for start, stop in _chunk_bounds(counts, max_pairs):
        sl = slice(start, stop)
        pairs = enumerate_pixel_pairs(x0[sl], x1[sl], y0[sl], y1[sl], F, height, width,
                                      face_ids=live[sl])
        face = pairs.face + start  # compact index
        u = pairs.x.to(torch.float32)
        v = pairs.y.to(torch.float32)
        lam = [torch.addcmul(rows[6 + i].index_select(0, face) +
                             rows[i].index_select(0, face) * u,
                             rows[3 + i].index_select(0, face), v) for i in range(3)]
        inside = torch.minimum(torch.minimum(lam[0], lam[1]), lam[2]) >= 0
        sel = torch.nonzero(inside).squeeze(-1)
        if sel.numel() == 0:
            continue
        face = face.index_select(0, sel)
        lam = [x.index_select(0, sel) for x in lam]
        inv_z = lam[0] * rows[9].index_select(0, face)
        inv_z = inv_z.addcmul_(lam[1], rows[10].index_select(0, face))
        inv_z = inv_z.addcmul_(lam[2], rows[11].index_select(0, face))
        z_bits = (1.0 / inv_z).clamp_(min=0.0).view(torch.int32).to(torch.int64)
        flat = live.index_select(0, face)
        pixel = pairs.pixel.index_select(0, sel)
        key = (z_bits << 32) | torch.remainder(flat, F)  # face id within its mesh
        keys.scatter_reduce_(0, pixel, key, reduce='amin', include_self=True)
    # Decode only the covered pixels (full-image temporaries are costly on CPU).
    hit = torch.nonzero(keys != _EMPTY_KEY).squeeze(-1)
    face_index = torch.full_like(keys, -1)
    face_index.index_put_((hit,), keys.index_select(0, hit) & 0xFFFFFFFF)
    depth = torch.full((B * height * width,), float('inf'), dtype=torch.float32, device=device)
    depth.index_put_((hit,), (keys.index_select(0, hit) >> 32).to(torch.int32)
                     .view(torch.float32))  # the winning depth is the key's high word
    return face_index, depth


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


def _barycentrics_of(verts_px: torch.Tensor, verts_z: torch.Tensor, faces: torch.Tensor,
                     face_index: torch.Tensor,
                     idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Perspective-correct barycentrics and depth of the given faces at the pixel centres.

    Args:
        verts_px: (B, V, 2); verts_z: (B, V); faces: (F, 3) int64.
        face_index: (B, H, W) int64, -1 where empty.
        idx: (N,) flat indices of the pixels where ``face_index >= 0``.
    Returns:
        bary (B, H, W, 3) (0 where empty), depth (B, H, W) (+inf where empty); both
        differentiable w.r.t. the vertices.
    """
    B, H, W = face_index.shape
    F = faces.shape[0]
    dtype = verts_px.dtype
    # Filled in place (autograd records index_put_ on these constant buffers).
    bary = torch.zeros(B * H * W, 3, dtype=dtype, device=verts_px.device)
    depth = torch.full((B * H * W,), float('inf'), dtype=dtype, device=verts_px.device)
    if idx.numel() > 0:
        b = torch.div(idx, H * W, rounding_mode='floor')
        rem = idx - b * (H * W)
        v = torch.div(rem, W, rounding_mode='floor')
        u = (rem - v * W).to(dtype)
        v = v.to(dtype)
        local_face = face_index.reshape(-1).index_select(0, idx)
        if idx.numel() < B * F:  # the planes of each covered pixel's face (differentiable)
            V = verts_z.shape[1]
            vid = (faces.index_select(0, local_face) + (b * V)[:, None]).reshape(-1)
            rows = face_planes(verts_px.reshape(B * V, 2).index_select(0, vid).reshape(-1, 3, 2),
                               verts_z.reshape(B * V).index_select(0, vid).reshape(-1, 3)).T
            g = list(rows)
        else:  # fewer faces than pixels: the planes of every face, gathered
            rows = screen_planes(verts_px, verts_z, faces)  # (B * F, 12)
            g = list(rows.index_select(0, local_face + b * F).T)  # one gather, 12 rows
        lam_over_z = [(g[6 + i] + g[i] * u + g[3 + i] * v) * g[9 + i] for i in range(3)]
        inv_depth = lam_over_z[0] + lam_over_z[1] + lam_over_z[2]
        bary.index_put_((idx,), torch.stack(lam_over_z, -1) / inv_depth[:, None])
        depth.index_put_((idx,), 1.0 / inv_depth)
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
    if raster.bary is None:
        raise InputError('interpolate: the raster is depth-only (barycentrics=False)')
    B, H, W = raster.face_index.shape
    V, C = attributes.shape[1], attributes.shape[2]
    bg = torch.as_tensor(background, dtype=attributes.dtype, device=attributes.device).expand(C)
    out = torch.empty(B * H * W, C, dtype=attributes.dtype, device=attributes.device)
    out.copy_(bg.expand(B * H * W, C))
    idx = raster.pixels
    if idx.numel() == 0:
        return out.reshape(B, H, W, C)
    b = torch.div(idx, H * W, rounding_mode='floor')
    f = raster.face_index.reshape(-1).index_select(0, idx)
    bary = raster.bary.reshape(-1, 3).index_select(0, idx)  # (N, 3)
    flat_attr = attributes.reshape(B * V, C)
    value = None
    for i in range(3):
        vid = faces[:, i].long().index_select(0, f) + b * V
        term = flat_attr.index_select(0, vid) * bary[:, i:i + 1]
        value = term if value is None else value + term
    out.index_put_((idx,), value)  # in place on a constant buffer: autograd records it
    return out.reshape(B, H, W, C)
