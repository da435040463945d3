"""Soft (SoftRas-style) silhouette rasterizer in pure torch, with a depth-tested occluder.

For a pixel centre p and a face f with signed 2D distance ``d(p, f)`` to the projected triangle
(pixels; negative inside), the face covers p with probability ``s_f = sigmoid(-d / sigma)``.
An occluder (the posed hand) with hard depth ``z_occ(p)`` (nearest surface, from a z-buffer)
hides the face where it is in front: ``o_f = sigmoid((z_occ(p) - z_f(p)) / tau)``, ``z_f(p)``
being the face's depth at p (perspective-correct, barycentrics clamped to the triangle). The
silhouette is

    S(p) = 1 - prod_f (1 - s_f o_f),

aggregated in log space, ``log(1 - s o) = logaddexp(logsig(d/sigma),
logsig(-d/sigma) + logsig((z_f - z_occ)/tau))``, which stays finite when ``s`` saturates.

Culling (all continuous up to ``cull_eps``): faces with a vertex behind ``near`` or outside the
``face_mask`` (the caller passes front-facing faces for closed meshes: their union is the
silhouette) are skipped, and a face is evaluated only at pixels inside its bounding box grown
by the distance where ``s_f`` falls to ``cull_eps``: ``sigma * log(1 / cull_eps - 1)``. The
(face, pixel) pairs are a flat list (module ``binning``), gathered and scattered in one
vectorised pass; the per-pixel sums of logs use ``index_add``.

A property of the SoftRas aggregate (kept as specified): inside the silhouette, pixels near an
edge shared by two small faces get ``S < 1`` (each face alone gives ~0.5 there). The dip
vanishes as ``sigma`` shrinks relative to the faces' size in pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.render.binning import enumerate_pixel_pairs, face_bounding_boxes
from handypriors_ros.core.render.hard_rasterizer import (
    check_mesh_inputs,
    face_validity,
    screen_planes,
)

# Occluder depths at or beyond this [m] mean "no occluder here".
_FAR = 1e6


def cull_distance(sigma: float, cull_eps: float) -> float:
    """Distance outside a face [px] beyond which its coverage is below ``cull_eps``."""
    return sigma * math.log(1.0 / cull_eps - 1.0)


def soft_silhouette(verts_px: torch.Tensor, verts_z: torch.Tensor, faces: torch.Tensor,
                    height: int, width: int, *, sigma: float, cull_eps: float = 1e-4,
                    face_mask: torch.Tensor | None = None,
                    occluder_depth: torch.Tensor | None = None,
                    depth_softness: float = 0.003, near: float = 1e-3,
                    tile: int = 1) -> torch.Tensor:
    """Soft silhouette of a batch of meshes, optionally hidden by an occluder's depth.

    Args:
        verts_px: (B, V, 2) vertex pixel coordinates (``PinholeCamera.project``).
        verts_z: (B, V) vertex camera z [m].
        faces: (F, 3) integer vertex indices.
        height, width: image size [px].
        sigma: edge softness [px], > 0.
        cull_eps: coverage below which a (face, pixel) pair is skipped, in (0, 0.5).
        face_mask: (B, F) bool, faces to use (e.g. front-facing); None: all.
        occluder_depth: (B, H, W) camera z [m] of the nearest occluder surface, +inf (or any
            value beyond the scene) where there is none; None: no occluder.
        depth_softness: ``tau`` of the soft depth test [m], > 0.
        near: faces with a vertex at z <= near are dropped [m].
        tile: binning granularity [px] (1: per-pixel bounding boxes; see ``binning``).
    Returns:
        (B, H, W) silhouette in [0, 1], differentiable w.r.t. ``verts_px`` and ``verts_z``.
    """
    check_mesh_inputs(verts_px, verts_z, faces)
    if not sigma > 0:
        raise InputError(f'sigma: expected > 0 px, got {sigma}')
    if not 0 < cull_eps < 0.5:
        raise InputError(f'cull_eps: expected a probability in (0, 0.5), got {cull_eps}')
    if not depth_softness > 0:
        raise InputError(f'depth_softness: expected > 0 m, got {depth_softness}')
    B, _, _ = verts_px.shape
    if occluder_depth is not None and tuple(occluder_depth.shape) != (B, height, width):
        raise InputError(f'occluder_depth: expected shape {(B, height, width)}, got '
                         f'{tuple(occluder_depth.shape)}')
    faces = faces.long()
    F_ = faces.shape[0]
    dtype = verts_px.dtype
    device = verts_px.device

    face_px = verts_px[:, faces]  # (B, F, 3, 2), differentiable
    with torch.no_grad():
        valid = face_validity(verts_z.detach()[:, faces], face_px.detach(), near, face_mask)
        x0, x1, y0, y1 = face_bounding_boxes(face_px.detach().reshape(B * F_, 3, 2),
                                             cull_distance(sigma, cull_eps), height, width,
                                             valid.reshape(-1), tile)
        pairs = enumerate_pixel_pairs(x0, x1, y0, y1, F_, height, width)
    log_empty = torch.zeros(B * height * width, dtype=dtype, device=device)
    if pairs.face.numel() == 0:
        return log_empty.reshape(B, height, width)
    px = pairs.x.to(dtype)  # (M,) pixel centres
    py = pairs.y.to(dtype)
    d = _SignedDistance.apply(face_px.reshape(B * F_, 3, 2), pairs.face, px, py)  # (M,) [px]
    log_not_covered = F.logsigmoid(d / sigma)

    if occluder_depth is not None:
        z_occ_all = occluder_depth.reshape(-1)[pairs.pixel]
        # Only pairs at pixels the occluder covers change; +inf (or beyond the scene) = none.
        sel = torch.nonzero(torch.isfinite(z_occ_all) & (z_occ_all < _FAR)).squeeze(-1)
        if sel.numel() > 0:
            z_face = _face_depth_at(verts_px, verts_z, faces, pairs.face[sel], px[sel], py[sel])
            log_hidden = F.logsigmoid((z_face - z_occ_all[sel].to(dtype)) / depth_softness)
            # log(1 - s o) = log((1 - s) + s (1 - o)).
            mixed = torch.logaddexp(log_not_covered[sel],
                                    F.logsigmoid(-d[sel] / sigma) + log_hidden)
            log_not_covered = log_not_covered.index_put((sel,), mixed)

    log_empty = log_empty.index_add(0, pairs.pixel, log_not_covered)
    return (-torch.expm1(log_empty.clamp(max=0.0))).reshape(B, height, width)


def _counter_clockwise(face_px: torch.Tensor) -> torch.Tensor:
    """(N, 3) vertex order making each face's edge functions >= 0 inside.

    Faces with ``E(a_0, a_1, a_2) < 0`` get vertices 1 and 2 swapped; the swap is its own
    inverse, so the same order maps gradients back.
    """
    e1 = face_px[:, 1] - face_px[:, 0]
    e2 = face_px[:, 2] - face_px[:, 0]
    flip = (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) < 0  # (N,)
    order = torch.tensor([[0, 1, 2], [0, 2, 1]], device=face_px.device)
    return order[flip.long()]


def _face_planes(face_px: torch.Tensor) -> torch.Tensor:
    """Per-face constants of the distance computation, one row (plane) per quantity.

    Args:
        face_px: (N, 3, 2) vertices a_0, a_1, a_2 [px], counter-clockwise in the sense that
            edge functions are >= 0 inside (:func:`_counter_clockwise`).
    Returns:
        (9, N): rows 0-2 vertex x, rows 3-5 vertex y, rows 6-8 ``1 / |a_k+1 - a_k|^2``
        (1 for a zero edge).
    """
    v = face_px.permute(2, 1, 0)  # (2, 3, N)
    e = v.roll(-1, dims=1) - v  # (2, 3, N) edges a_k -> a_k+1
    len_sq = e[0] * e[0] + e[1] * e[1]  # (3, N)
    inv_len_sq = 1.0 / torch.where(len_sq > 0, len_sq, torch.ones_like(len_sq))
    return torch.cat([v.reshape(6, -1), inv_len_sq], dim=0)


class _SignedDistance(torch.autograd.Function):
    """Signed distance [px] from points to triangles (negative inside), hand-written backward.

    The distance is the one to the closest point ``q = a_k + t (a_{k+1} - a_k)`` on the nearest
    edge k. With ``r = p - q``, ``n = r / |r|`` and ``s`` the sign, the envelope theorem (t is
    optimal, or clamped and then constant) gives ``dd/da_k = -s (1 - t) n`` and
    ``dd/da_{k+1} = -s t n``; the points p carry no gradient.

    CPU speed notes (measured, torch 2.13): the arithmetic runs on contiguous per-quantity rows
    (structure of arrays) gathered with 1-D ``index_select``, and the nearest edge is chosen
    with ``minimum`` and ``sign``-made float masks: interleaved (..., 2) tensors, 2-D gathers,
    ``torch.where``, bool-to-float casts and small-dim reductions (``min(0)``, ``all(0)``) are
    each 5-50x slower than an elementwise multiply of the same length.
    """

    @staticmethod
    def forward(ctx, face_px: torch.Tensor, pair_face: torch.Tensor, px: torch.Tensor,
                py: torch.Tensor) -> torch.Tensor:
        order = _counter_clockwise(face_px)  # (N, 3)
        ccw = face_px.gather(1, order[..., None].expand(-1, -1, 2))
        g = [row.index_select(0, pair_face) for row in _face_planes(ccw)]  # 9 x (M,)
        sq, rx, ry, t = [], [], [], []
        min_cross = None
        for k in range(3):
            k1 = (k + 1) % 3
            ex = g[k1] - g[k]
            ey = g[3 + k1] - g[3 + k]
            apx = px - g[k]
            apy = py - g[3 + k]
            tk = torch.addcmul(apx * ex, apy, ey).mul_(g[6 + k]).clamp_(0.0, 1.0)
            rxk = torch.addcmul(apx, tk, ex, value=-1.0)
            ryk = torch.addcmul(apy, tk, ey, value=-1.0)
            sq.append(torch.addcmul(rxk * rxk, ryk, ryk))
            rx.append(rxk)
            ry.append(ryk)
            t.append(tk)
            cross = torch.addcmul(ex * apy, ey, apx, value=-1.0)  # E(a_k, a_k+1, p)
            min_cross = cross if min_cross is None else torch.minimum(min_cross, cross)
        best_sq = torch.minimum(torch.minimum(sq[0], sq[1]), sq[2])
        # One-hot choice of the nearest edge as floats (1 - sign(sq - min) is 1 at the
        # minimum); ties (a vertex is the closest point of two edges) go to the lower index
        # so each pair is counted once.
        m0 = 1.0 - torch.sign(sq[0] - best_sq)
        m1 = (1.0 - m0) * (1.0 - torch.sign(sq[1] - best_sq))
        m2 = 1.0 - m0 - m1
        # -1 strictly inside, +1 outside; 0 on an edge, where the distance is 0 anyway.
        sign = torch.sign(-min_cross)
        dist = torch.sqrt(best_sq)
        # -s n at the nearest edge point, zero where the point is on the edge (a sub-gradient).
        scale = -sign / dist.clamp(min=torch.finfo(dist.dtype).tiny)
        nx = (m0 * rx[0]).addcmul_(m1, rx[1]).addcmul_(m2, rx[2]).mul_(scale)
        ny = (m0 * ry[0]).addcmul_(m1, ry[1]).addcmul_(m2, ry[2]).mul_(scale)
        # Weight of vertex j: (1 - t_j) from edge j, t_{j-1} from edge j - 1.
        w = torch.stack([(m0 - m0 * t[0]).addcmul_(m2, t[2]),
                         (m1 - m1 * t[1]).addcmul_(m0, t[0]),
                         (m2 - m2 * t[2]).addcmul_(m1, t[1])])  # (3, M)
        ctx.save_for_backward(pair_face, nx, ny, w, order)
        ctx.num_faces = face_px.shape[0]
        return sign * dist

    @staticmethod
    def backward(ctx, grad_d: torch.Tensor):
        pair_face, nx, ny, w, order = ctx.saved_tensors
        gx = grad_d * nx
        gy = grad_d * ny
        n = ctx.num_faces
        # Per-face sums of the six (vertex, coordinate) gradients of the reordered vertices:
        # one row-wise index_add of a (M, 6) view (measured 2x faster than a flat one).
        values = torch.stack([w[0] * gx, w[0] * gy, w[1] * gx, w[1] * gy, w[2] * gx, w[2] * gy])
        grad_ccw = torch.zeros(n, 6, dtype=gx.dtype, device=gx.device)
        grad_ccw.index_add_(0, pair_face, values.T)
        grad = torch.empty(n, 3, 2, dtype=gx.dtype, device=gx.device)
        grad.scatter_(1, order[..., None].expand(-1, -1, 2), grad_ccw.reshape(n, 3, 2))
        return grad, None, None, None


def _face_depth_at(verts_px: torch.Tensor, verts_z: torch.Tensor, faces: torch.Tensor,
                   pair_face: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Perspective-correct depth of faces at points, barycentrics clamped to the triangle.

    Args:
        verts_px: (B, V, 2); verts_z: (B, V) [m]; faces: (F, 3) int64.
        pair_face: (M,) int64 into the flattened (B * F) faces; px, py: (M,) points [px].
    Returns:
        (M,) depth [m], differentiable w.r.t. ``verts_px`` and ``verts_z``.
    """
    rows = screen_planes(verts_px, verts_z, faces).T  # (12, B * F)
    g = [rows[k].index_select(0, pair_face) for k in range(12)]
    lam = [(g[6 + i] + g[i] * px + g[3 + i] * py).clamp(min=0.0) for i in range(3)]
    total = lam[0] + lam[1] + lam[2]  # > 0 for a non-degenerate face (the l_i sum to 1)
    inv_z = (lam[0] * g[9] + lam[1] * g[10] + lam[2] * g[11]) / total.clamp(min=1e-12)
    return 1.0 / inv_z
