"""Analytic antialiasing of a hard silhouette: area coverage along its edges, differentiable.

The soft backend's silhouette. It starts from the hard z-buffer mask (a pixel is in when its
centre is) and corrects the pixels next to the silhouette by where the mesh's silhouette edges
cross the segments between neighbouring pixel centres (the idea of nvdiffrast's
``antialias``, written here from its description):

- a silhouette edge that is mostly vertical (``|dv| >= |du|`` in pixels) crosses each image
  row ``v = j`` it spans once, at ``u = c``; with ``i = floor(c)`` and
  ``s = c - i``, it separates the horizontal pixel pair ``(i, j) | (i + 1, j)``;
- when exactly one pixel of that pair is in the hard mask and the other is not covered by the
  object at all (not merely hidden by an occluder, whose edge is not the object's), both
  pixels get the area on the object's side of the edge's line across the pixel row (it moves
  by at most one pixel over the row, so only these two pixels are cut); with the edge
  perpendicular to the pair this is nvdiffrast's rule: the outside pixel gains
  ``max(0, d - 0.5)`` and the inside pixel loses ``max(0, 0.5 - d)``, ``d`` being the distance
  from the inside pixel's centre to ``c``;
- mostly horizontal edges do the same on vertical pairs (columns ``u = i``).

For a straight silhouette this is the exact area coverage of every pixel; a curved one is
exact up to its curvature inside one pixel row. It is continuous in the vertex positions (when an
edge passes a pixel centre, the hard mask's jump is met by the correction's), and its gradient
w.r.t. the projected vertices flows through ``c``. Corners where two silhouette edges meet
inside one pixel are approximated; silhouettes hidden by an occluder get no gradient there.

Cost: one entry per (silhouette edge, row or column it spans), about the silhouette's length
in pixels.
"""

from __future__ import annotations

import torch


def _crossings(pa: torch.Tensor, pb: torch.Tensor, batch: torch.Tensor, axis: int,
               limit: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where edges cross the integer lines ``p[axis] = k`` (0 <= k < limit).

    Args:
        pa, pb: (M, 2) edge end points [px] (differentiable); batch: (M,) their frame.
        axis: 1: rows (crossings along u), 0: columns (crossings along v).
        limit: number of lines (image height for rows, width for columns).
    Returns:
        batch (N,), line k (N,) int64, crossing coordinate c (N,) along the other axis and
        the edge's slope dc/dk (N,) (both differentiable). Lines are taken half-open
        ``min <= k < max`` so that two edges
        sharing an end point on a line count it once.
    """
    other = 1 - axis
    a_k, b_k = pa[:, axis].detach(), pb[:, axis].detach()
    lo = torch.ceil(torch.minimum(a_k, b_k)).clamp(min=0)
    hi = torch.ceil(torch.maximum(a_k, b_k)).clamp(max=limit)  # exclusive
    count = (hi - lo).clamp(min=0).to(torch.int64)
    total = int(count.sum())
    device = pa.device
    if total == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty, pa.new_zeros(0), pa.new_zeros(0)
    edge = torch.repeat_interleave(torch.arange(len(count), device=device), count)
    start = torch.cumsum(count, 0) - count
    k = lo.to(torch.int64)[edge] + (torch.arange(total, device=device) - start[edge])
    a, b = pa[edge], pb[edge]
    slope = (b[:, other] - a[:, other]) / (b[:, axis] - a[:, axis])
    c = a[:, other] + (k.to(pa.dtype) - a[:, axis]) * slope
    return batch[edge], k, c, slope


def _ramp_integral(x: torch.Tensor) -> torch.Tensor:
    """Antiderivative of ``clamp(x, 0, 1)``."""
    return torch.where(x <= 0, torch.zeros_like(x),
                       torch.where(x >= 1, x - 0.5, 0.5 * x * x))


def _band_coverage(a: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """``int_{-1/2}^{1/2} clamp(a + slope t, 0, 1) dt``: the area of a unit pixel on the
    object's side of a straight edge that is ``a`` from the pixel's far side at the pixel's
    centre line and moves by ``slope`` per pixel along it."""
    m = slope.abs()
    steep = m > 1e-3
    m_safe = torch.where(steep, m, torch.ones_like(m))
    exact = (_ramp_integral(a + 0.5 * m_safe) - _ramp_integral(a - 0.5 * m_safe)) / m_safe
    return torch.where(steep, exact, a.clamp(0.0, 1.0))


def antialias_silhouette(inside: torch.Tensor, covered: torch.Tensor, verts_px: torch.Tensor,
                         edges: torch.Tensor, silhouette: torch.Tensor) -> torch.Tensor:
    """Area-coverage silhouette from a hard one and the mesh's silhouette edges.

    Args:
        inside: (B, H, W) bool hard visible silhouette (pixel centres on the object and not
            hidden).
        covered: (B, H, W) bool pixels whose centre the object covers, hidden or not (a pair
            whose outside pixel is covered is an occlusion boundary: not corrected).
        verts_px: (B, V, 2) projected vertices [px], differentiable.
        edges: (E, 2) int64 mesh edges.
        silhouette: (B, E) bool the silhouette edges (e.g. ``contour.silhouette_edges`` of the
            front-facing faces) to use.
    Returns:
        (B, H, W) coverage in [0, 1], in the dtype of ``verts_px``, differentiable w.r.t.
        ``verts_px`` along the silhouette.
    """
    B, H, W = inside.shape
    dtype = verts_px.dtype
    out = inside.to(dtype).reshape(-1)
    b_idx, e_idx = torch.nonzero(silhouette, as_tuple=True)
    if b_idx.numel() == 0:
        return out.reshape(B, H, W)
    pa = verts_px[b_idx, edges[e_idx, 0]]
    pb = verts_px[b_idx, edges[e_idx, 1]]
    finite = torch.isfinite(pa.detach()).all(-1) & torch.isfinite(pb.detach()).all(-1)
    d = (pb - pa).detach().abs()
    inside_f = inside.reshape(-1)
    covered_f = covered.reshape(-1)
    updates_idx = []
    updates_val = []
    for axis, limit, size in ((1, H, W), (0, W, H)):
        # axis 1: mostly vertical edges, crossing rows, correcting horizontal pairs
        keep = finite & ((d[:, 1] >= d[:, 0]) if axis == 1 else (d[:, 0] > d[:, 1]))
        batch, k, c, slope = _crossings(pa[keep], pb[keep], b_idx[keep], axis, limit)
        first = torch.floor(c.detach())
        ok = (first >= 0) & (first <= size - 2)
        batch, k, c, slope = batch[ok], k[ok], c[ok], slope[ok]
        first = first[ok].to(torch.int64)
        s = c - first  # in [0, 1): crossing from the first pixel's centre
        if axis == 1:
            p0 = (batch * H + k) * W + first
            p1 = p0 + 1
        else:
            p0 = (batch * H + first) * W + k
            p1 = p0 + W
        in0, in1 = inside_f[p0], inside_f[p1]
        first_inside = in0 & ~in1 & ~covered_f[p1]
        second_inside = in1 & ~in0 & ~covered_f[p0]
        # the inside pixel's distance to the crossing, along the pair
        dist = torch.where(first_inside, s, 1.0 - s)
        inside_area = _band_coverage(dist + 0.5, slope)   # of the inside pixel (hard: 1)
        outside_area = _band_coverage(dist - 0.5, slope)  # of the outside pixel (hard: 0)
        for mask, p_in, p_out in ((first_inside, p0, p1), (second_inside, p1, p0)):
            sel = torch.nonzero(mask).squeeze(-1)
            if sel.numel() == 0:
                continue
            updates_idx += [p_out[sel], p_in[sel]]
            updates_val += [outside_area[sel], inside_area[sel] - 1.0]
    if updates_idx:
        out = out.index_put((torch.cat(updates_idx),), torch.cat(updates_val), accumulate=True)
    return out.clamp(0.0, 1.0).reshape(B, H, W)
