"""Points on the rendered object contour, differentiable w.r.t. the pose, and distance fields.

The contour of the rendered silhouette is traced by the mesh's silhouette edges (edges
between a front- and a back-facing face, and open boundary edges). Points are placed along
their projections at fixed screen-space fractions, so a point is a fixed blend of two
projected vertices: a smooth function of the pose (``torch.func.jacfwd`` works through
:func:`contour_points`). Which edges and fractions are used is chosen once, without
gradients, by :func:`select_contour_samples`; only points on the outer contour of the
rendered mask and not hidden by the hand are kept.

Distance fields follow the pixel-centre convention of ``camera``: the boundary of a binary
mask lies half-way between an inside and an outside pixel centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry import transform_points
from handypriors_ros.core.render.mesh import front_facing


@dataclass(frozen=True)
class ContourSamples:
    """K contour points per frame, each a fixed blend of two mesh vertices' projections.

    Attributes:
        edge_vertices: (B, K, 2) int64 object-mesh vertex indices (a, b) of the silhouette
            edge each point lies on.
        t: (B, K) screen-space fraction from a to b (fixed).
        valid: (B, K) bool; invalid entries (fewer visible contour points than K) repeat the
            first sample and must be ignored.
    """

    edge_vertices: torch.Tensor
    t: torch.Tensor
    valid: torch.Tensor


def signed_distance_transform(mask: np.ndarray | torch.Tensor,
                              device: torch.device | str | None = None) -> torch.Tensor:
    """Signed Euclidean distance [px] of every pixel centre to a binary mask's boundary.

    Positive outside, negative inside, about +-0.5 at the pixels next to the boundary (which
    lies half-way between pixel centres); from ``cv2.distanceTransform`` (``DIST_L2``,
    precise mask) of the mask and of its complement. An empty mask gives ``H + W``
    everywhere, a full one ``-(H + W)``.

    Args:
        mask: (H, W) or (B, H, W), non-zero = inside (bool, uint8, float, numpy or torch).
        device: device of the result (default: the input's for a tensor, else CPU).
    Returns:
        float32 tensor of the input's shape.
    """
    if isinstance(mask, torch.Tensor):
        if device is None:
            device = mask.device
        arr = mask.detach().cpu().numpy()
    elif isinstance(mask, np.ndarray):
        arr = mask
    else:
        raise InputError(f'mask: expected a numpy array or tensor (H, W) or (B, H, W), got '
                         f'{type(mask).__name__}')
    if arr.ndim not in (2, 3):
        raise InputError(f'mask: expected shape (H, W) or (B, H, W), got {arr.shape}')
    batch = arr[None] if arr.ndim == 2 else arr
    out = np.empty(batch.shape, dtype=np.float32)
    big = float(batch.shape[1] + batch.shape[2])
    for i, m in enumerate(batch):
        inside = (m != 0).astype(np.uint8)
        if not inside.any():
            out[i] = big
        elif inside.all():
            out[i] = -big
        else:
            d_out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            d_in = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            out[i] = np.where(inside > 0, 0.5 - d_in, d_out - 0.5)
    result = torch.from_numpy(out if arr.ndim == 3 else out[0])
    return result.to(device) if device is not None else result


def bilinear_sample(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation of images at pixel coordinates, differentiable w.r.t. points.

    Written with ``gather`` (not ``grid_sample``) so that forward-mode AD (``jacfwd``) works.
    Points are clamped to the pixel-centre range ``[0, W - 1] x [0, H - 1]``.

    Args:
        image: (B, H, W), H and W >= 2.
        points: (B, K, 2) ``(u, v)`` pixel coordinates (module ``camera`` convention).
    Returns:
        (B, K).
    """
    if image.dim() != 3 or image.shape[1] < 2 or image.shape[2] < 2:
        raise InputError(f'image: expected shape (B, H >= 2, W >= 2), got {tuple(image.shape)}')
    if points.dim() != 3 or points.shape[0] != image.shape[0] or points.shape[2] != 2:
        raise InputError(f'points: expected shape ({image.shape[0]}, K, 2), got '
                         f'{tuple(points.shape)}')
    B, H, W = image.shape
    image = image.to(points.dtype)
    u = points[..., 0].clamp(0.0, W - 1.0)
    v = points[..., 1].clamp(0.0, H - 1.0)
    u0 = torch.floor(u).clamp(max=W - 2)
    v0 = torch.floor(v).clamp(max=H - 2)
    fu = u - u0
    fv = v - v0
    i0 = (v0.long() * W + u0.long())  # (B, K) flat index of the top-left neighbour
    flat = image.reshape(B, H * W)
    v00 = flat.gather(1, i0)
    v01 = flat.gather(1, i0 + 1)
    v10 = flat.gather(1, i0 + W)
    v11 = flat.gather(1, i0 + W + 1)
    top = v00 + fu * (v01 - v00)
    bottom = v10 + fu * (v11 - v10)
    return top + fv * (bottom - top)


def bilinear_gradient(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. the points of :func:`bilinear_sample` (0 along a clamped axis).

    Args:
        image: (B, H, W); points: (B, K, 2).
    Returns:
        (B, K, 2) ``(d/du, d/dv)`` of the interpolated value.
    """
    B, H, W = image.shape
    image = image.to(points.dtype)
    u_raw, v_raw = points[..., 0], points[..., 1]
    u = u_raw.clamp(0.0, W - 1.0)
    v = v_raw.clamp(0.0, H - 1.0)
    u0 = torch.floor(u).clamp(max=W - 2)
    v0 = torch.floor(v).clamp(max=H - 2)
    fu = u - u0
    fv = v - v0
    i0 = (v0.long() * W + u0.long())
    flat = image.reshape(B, H * W)
    v00 = flat.gather(1, i0)
    v01 = flat.gather(1, i0 + 1)
    v10 = flat.gather(1, i0 + W)
    v11 = flat.gather(1, i0 + W + 1)
    du = (v01 - v00) + fv * (v11 - v10 - v01 + v00)
    dv = (v10 - v00) + fu * (v11 - v10 - v01 + v00)
    # clamp() passes no gradient outside its range (as autograd of bilinear_sample).
    du = torch.where((u_raw >= 0) & (u_raw <= W - 1), du, torch.zeros_like(du))
    dv = torch.where((v_raw >= 0) & (v_raw <= H - 1), dv, torch.zeros_like(dv))
    return torch.stack([du, dv], dim=-1)


def silhouette_edges(edge_faces: torch.Tensor, front: torch.Tensor) -> torch.Tensor:
    """(B, E) bool: edges between a front- and a back-facing face, or open boundary edges
    of a front-facing face.

    Args:
        edge_faces: (E, 2) int64 faces of each edge (-1: none).
        front: (B, F) bool front-facing faces.
    """
    f0 = front[:, edge_faces[:, 0]]
    has_second = edge_faces[:, 1] >= 0
    f1 = front[:, edge_faces[:, 1].clamp(min=0)]
    return torch.where(has_second, f0 != f1, f0)


def select_contour_samples(renderer, camera, T_cam_obj: torch.Tensor,
                           hand_vertices_cam: torch.Tensor | None = None, *,
                           num_points: int = 200, oversample: int = 4,
                           contour_tolerance_px: float = 1.0) -> ContourSamples:
    """Choose K points on the visible outer contour of the rendered object (no gradients).

    ``oversample * K`` points are spread evenly by projected length over the silhouette
    edges; a point is kept when it lies in the image, within ``contour_tolerance_px`` of the
    boundary of the object's rendered hard mask (so silhouette edges inside the mask, hidden
    by the object itself, are dropped) and no hand surface in its 3x3 pixel neighbourhood is
    in front of it. K of the kept points, evenly spaced along the list, are returned.

    Args:
        renderer: a ``Renderer``; camera: the PinholeCamera (or CameraBatch) to render with.
        T_cam_obj: (B, 4, 4) object poses.
        hand_vertices_cam: (B, Vh, 3) posed hand, or None.
        num_points: K.
        oversample: candidates per returned point.
        contour_tolerance_px: distance to the rendered mask's boundary accepted [px].
    Returns:
        :class:`ContourSamples`.
    """
    if not isinstance(num_points, int) or num_points <= 0:
        raise InputError(f'num_points: expected a positive int, got {num_points!r}')
    if not isinstance(oversample, int) or oversample <= 0:
        raise InputError(f'oversample: expected a positive int, got {oversample!r}')
    mesh = renderer.object_mesh
    H, W = camera.height, camera.width
    obj_raster, hand_depth = renderer.depth_buffers(camera, T_cam_obj, hand_vertices_cam)
    B = T_cam_obj.shape[0]
    K = num_points
    device = renderer.device
    with torch.no_grad():
        verts_cam = transform_points(T_cam_obj.detach(), mesh.vertices)  # (B, V, 3)
        px = camera.project(verts_cam)
        z = verts_cam[..., 2]
        front = front_facing(verts_cam, mesh.faces)
        sil = silhouette_edges(mesh.edge_faces, front)  # (B, E)
        in_front = (z[:, mesh.edges[:, 0]] > renderer.settings.near_m) & \
            (z[:, mesh.edges[:, 1]] > renderer.settings.near_m)
        sil &= in_front
        rendered_sdt = signed_distance_transform(obj_raster.covered).to(device, px.dtype)
        # Nearest hand surface in each 3x3 neighbourhood (+inf where no hand).
        hand_near = -F.max_pool2d(-hand_depth[:, None], 3, stride=1, padding=1)[:, 0]
        edge_vertices = torch.zeros(B, K, 2, dtype=torch.int64, device=device)
        t_out = torch.zeros(B, K, dtype=px.dtype, device=device)
        valid = torch.zeros(B, K, dtype=torch.bool, device=device)
        m = oversample * K
        for b in range(B):
            idx = torch.nonzero(sil[b]).squeeze(-1)
            if idx.numel() == 0:
                continue
            ia, ib = mesh.edges[idx, 0], mesh.edges[idx, 1]
            pa, pb = px[b, ia], px[b, ib]
            length = torch.linalg.vector_norm(pb - pa, dim=-1)  # (Es,)
            cum = torch.cumsum(length, 0)
            total = cum[-1]
            if not bool(total > 0):
                continue
            s = (torch.arange(m, device=device, dtype=px.dtype) + 0.5) * (total / m)
            e = torch.searchsorted(cum, s, right=True).clamp(max=idx.numel() - 1)
            t = ((s - (cum[e] - length[e])) / length[e].clamp(min=1e-12)).clamp(0.0, 1.0)
            p = pa[e] + t[:, None] * (pb[e] - pa[e])  # (m, 2)
            zp = 1.0 / ((1.0 - t) / z[b, ia[e]] + t / z[b, ib[e]])
            inside = (p[:, 0] >= 0) & (p[:, 0] <= W - 1) & (p[:, 1] >= 0) & (p[:, 1] <= H - 1)
            on_contour = bilinear_sample(rendered_sdt[b:b + 1], p[None])[0].abs() <= \
                contour_tolerance_px
            pix = p.round().long()
            pix_u = pix[:, 0].clamp(0, W - 1)
            pix_v = pix[:, 1].clamp(0, H - 1)
            unhidden = hand_near[b, pix_v, pix_u] > zp
            keep = torch.nonzero(inside & on_contour & unhidden).squeeze(-1)
            n = keep.numel()
            if n == 0:
                continue
            if n >= K:
                pick = keep[torch.linspace(0, n - 1, K, device=device).round().long()]
                count = K
            else:
                pick = keep
                count = n
            edge_vertices[b, :count, 0] = ia[e[pick]]
            edge_vertices[b, :count, 1] = ib[e[pick]]
            t_out[b, :count] = t[pick]
            valid[b, :count] = True
            if count < K:
                edge_vertices[b, count:] = edge_vertices[b, 0]
                t_out[b, count:] = t_out[b, 0]
    return ContourSamples(edge_vertices=edge_vertices, t=t_out, valid=valid)


def contour_points(renderer, camera, T_cam_obj: torch.Tensor,
                   samples: ContourSamples) -> torch.Tensor:
    """Pixel positions of contour samples at poses ``T_cam_obj``, differentiable.

    Args:
        renderer, camera: the ``Renderer`` and camera the samples were selected with.
        T_cam_obj: (B, 4, 4).
        samples: from :func:`select_contour_samples`.
    Returns:
        (B, K, 2) ``(1 - t) * project(T v_a) + t * project(T v_b)``.
    """
    verts = renderer.object_mesh.vertices
    va = verts[samples.edge_vertices[..., 0]]  # (B, K, 3)
    vb = verts[samples.edge_vertices[..., 1]]
    pa = camera.project(transform_points(T_cam_obj, va))
    pb = camera.project(transform_points(T_cam_obj, vb))
    t = samples.t.to(pa.dtype)[..., None]
    return pa + t * (pb - pa)


def contour_points_jacobian(renderer, camera, T_cam_obj: torch.Tensor,
                            samples: ContourSamples) -> tuple[torch.Tensor, torch.Tensor]:
    """Contour points and their analytic Jacobian w.r.t. a left pose perturbation.

    The perturbation is a twist ``xi = (rho, phi)`` in the camera frame:
    ``T_cam_obj <- se3_exp(xi) @ T_cam_obj`` (``geometry.apply_left_perturbation``), so at
    ``xi = 0`` a point X moves by ``rho + phi x X``: ``dX/dxi = [I | -skew(X)]``.

    Args:
        renderer, camera, T_cam_obj, samples: as :func:`contour_points`.
    Returns:
        points (B, K, 2) and ``d points / d xi`` (B, K, 2, 6).
    """
    verts = renderer.object_mesh.vertices
    cam = camera
    t = samples.t.to(verts.dtype)[..., None, None]  # (B, K, 1, 1)
    points = None
    jac = None
    for end, weight in ((0, 1.0 - t), (1, t)):
        X = transform_points(T_cam_obj, verts[samples.edge_vertices[..., end]])  # (B, K, 3)
        x, y, z = X.unbind(-1)
        inv_z = 1.0 / z
        zero = torch.zeros_like(z)
        # d pixel / d X (B, K, 2, 3).
        d_proj = torch.stack([
            torch.stack([cam.fx * inv_z, zero, -cam.fx * x * inv_z ** 2], -1),
            torch.stack([zero, cam.fy * inv_z, -cam.fy * y * inv_z ** 2], -1)], dim=-2)
        # d X / d xi = [I | -skew(X)] (B, K, 3, 6).
        one = torch.ones_like(z)
        dX = torch.stack([
            torch.stack([one, zero, zero, zero, z, -y], -1),
            torch.stack([zero, one, zero, -z, zero, x], -1),
            torch.stack([zero, zero, one, y, -x, zero], -1)], dim=-2)
        p = torch.stack([cam.fx * x * inv_z + cam.cx, cam.fy * y * inv_z + cam.cy], -1)
        term_p = weight[..., 0] * p
        term_j = weight * (d_proj @ dX)
        points = term_p if points is None else points + term_p
        jac = term_j if jac is None else jac + term_j
    return points, jac
