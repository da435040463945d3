"""The z-buffer's depth test as a Warp kernel: one thread per face sets the face up and loops
over the pixel centres of its bounding box.

The rule is :func:`~handypriors_ros.core.render.hard_rasterizer.rasterize_hard`'s: faces with
a vertex at ``z <= near``, a non-finite projection, zero area or outside ``face_mask`` are
dropped; a pixel centre is inside when its three screen barycentrics (the float32 plane rows
of ``hard_rasterizer.face_planes``, made in float64 and rounded) are >= 0; the smallest camera
z wins and a tie goes to the lower face index. On a GPU, two launches with 32-bit atomics (the
nearest depth, then the lowest face at that depth). On the CPU Warp runs a launch's threads
one after another (a serial loop in Warp's generated CPU code), so one launch with a plain
compare-and-store is exact and does half the work. Neither the per-face set-up over every face
nor a (face, pixel) pair list is made in torch, which is where the torch path spends its time.
"""

from __future__ import annotations

import torch
import warp as wp

from handypriors_ros.core.warp_runtime import warp_device

_NO_FACE = 2 ** 31 - 1
_CPU_FACES_PER_THREAD = 1024


@wp.func
def _depth_test_face(t: int, px: wp.array3d(dtype=wp.float64), z: wp.array2d(dtype=wp.float64),
                     faces: wp.array2d(dtype=wp.int32), face_mask: wp.array2d(dtype=wp.uint8),
                     use_mask: int, cullable: wp.array(dtype=wp.uint8), use_cull: int,
                     near: float, height: int, width: int, mode: int,
                     depth: wp.array(dtype=wp.float32), nearest: wp.array(dtype=wp.int32)):
    """The depth test of flat face ``t`` (batch ``t // F``) over its pixel box."""
    n_faces = faces.shape[0]
    b = t // n_faces
    f = t - b * n_faces
    if use_mask != 0:
        if face_mask[b, f] == wp.uint8(0):
            return
    i0 = faces[f, 0]
    i1 = faces[f, 1]
    i2 = faces[f, 2]
    z0 = z[b, i0]
    z1 = z[b, i1]
    z2 = z[b, i2]
    near64 = wp.float64(near)
    if z0 <= near64 or z1 <= near64 or z2 <= near64:
        return
    x0 = px[b, i0, 0]
    y0 = px[b, i0, 1]
    x1 = px[b, i1, 0]
    y1 = px[b, i1, 1]
    x2 = px[b, i2, 0]
    y2 = px[b, i2, 1]
    if not (wp.isfinite(x0) and wp.isfinite(y0) and wp.isfinite(x1) and wp.isfinite(y1)
            and wp.isfinite(x2) and wp.isfinite(y2)):
        return
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    if area == wp.float64(0.0):
        return
    if use_cull != 0:  # a back face: (p1 - p0) x (p2 - p0) > 0 on the image (mesh.front_facing)
        if cullable[f] != wp.uint8(0) and area > wp.float64(0.0):
            return
    # the inclusive box of pixel centres, clamped to the image
    u_lo = wp.max(int(wp.ceil(wp.min(wp.min(x0, x1), x2))), 0)
    u_hi = wp.min(int(wp.floor(wp.max(wp.max(x0, x1), x2))), width - 1)
    v_lo = wp.max(int(wp.ceil(wp.min(wp.min(y0, y1), y2))), 0)
    v_hi = wp.min(int(wp.floor(wp.max(wp.max(y0, y1), y2))), height - 1)
    if u_lo > u_hi or v_lo > v_hi:
        return
    # screen planes (hard_rasterizer.face_planes): the edge opposite vertex i over the area
    a0 = -(y2 - y1)
    a1 = -(y0 - y2)
    a2 = -(y1 - y0)
    b0 = x2 - x1
    b1 = x0 - x2
    b2 = x1 - x0
    c0 = (y2 - y1) * x1 - (x2 - x1) * y1
    c1 = (y0 - y2) * x2 - (x0 - x2) * y2
    c2 = (y1 - y0) * x0 - (x1 - x0) * y0
    s = wp.float64(1.0) / (c0 + a0 * x0 + b0 * y0)
    A0 = wp.float32(a0 * s)
    A1 = wp.float32(a1 * s)
    A2 = wp.float32(a2 * s)
    B0 = wp.float32(b0 * s)
    B1 = wp.float32(b1 * s)
    B2 = wp.float32(b2 * s)
    C0 = wp.float32(c0 * s)
    C1 = wp.float32(c1 * s)
    C2 = wp.float32(c2 * s)
    w0 = wp.float32(wp.float64(1.0) / z0)
    w1 = wp.float32(wp.float64(1.0) / z1)
    w2 = wp.float32(wp.float64(1.0) / z2)
    base = b * height * width
    for v in range(v_lo, v_hi + 1):
        vf = float(v)
        row = base + v * width
        for u in range(u_lo, u_hi + 1):
            uf = float(u)
            l0 = (C0 + A0 * uf) + B0 * vf
            l1 = (C1 + A1 * uf) + B1 * vf
            l2 = (C2 + A2 * uf) + B2 * vf
            if wp.min(wp.min(l0, l1), l2) >= 0.0:
                d = wp.max(1.0 / (l0 * w0 + l1 * w1 + l2 * w2), 0.0)
                if mode == 0:
                    wp.atomic_min(depth, row + u, d)
                elif mode == 1:
                    if d == depth[row + u]:
                        wp.atomic_min(nearest, row + u, f)
                elif d < depth[row + u] or (d == depth[row + u] and f < nearest[row + u]):
                    # one pass, threads one after another (the CPU): plain compare and store
                    depth[row + u] = d
                    nearest[row + u] = f


@wp.kernel
def _zbuffer_kernel(px: wp.array3d(dtype=wp.float64), z: wp.array2d(dtype=wp.float64),
                    faces: wp.array2d(dtype=wp.int32), face_mask: wp.array2d(dtype=wp.uint8),
                    use_mask: int, cullable: wp.array(dtype=wp.uint8), use_cull: int,
                    near: float, height: int, width: int, mode: int,
                    faces_per_thread: int, total: int, depth: wp.array(dtype=wp.float32),
                    nearest: wp.array(dtype=wp.int32)):
    first = wp.tid() * faces_per_thread
    for t in range(first, wp.min(first + faces_per_thread, total)):
        _depth_test_face(t, px, z, faces, face_mask, use_mask, cullable, use_cull, near, height,
                         width, mode, depth, nearest)


def nearest_faces(verts_px: torch.Tensor, verts_z: torch.Tensor, faces: torch.Tensor,
                  height: int, width: int, face_mask: torch.Tensor | None,
                  near: float, cullable: torch.Tensor | None = None,
                  atomic: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The depth test of a batch of meshes sharing one triangle list.

    Args:
        verts_px: (B, V, 2) pixel coordinates; verts_z: (B, V) camera z [m].
        faces: (F, 3) integer vertex indices; face_mask: (B, F) bool or None.
        cullable: (F,) bool, faces dropped when back-facing, or None.
        height, width: the image; near: faces with a vertex at z <= near are dropped [m].
        atomic: True: two launches with atomics (what a GPU needs); False: one serial launch
            (CPU only); None: by the device. Both give the same result (tested on the CPU).
    Returns:
        face (B * H * W,) int64 face index within its mesh, -1 where empty; depth
        (B * H * W,) float32 nearest camera z, +inf where empty.
    """
    device = verts_px.device
    atomic = device.type == 'cuda' if atomic is None else bool(atomic)
    if not atomic and device.type != 'cpu':
        raise ValueError(f'nearest_faces: the serial depth test runs on the CPU only, '
                         f'not {device}')
    B, F = verts_px.shape[0], faces.shape[0]
    n_pixels = B * height * width
    if max(n_pixels, B * F) >= 2 ** 31:
        raise ValueError(f'nearest_faces: {n_pixels} pixels or {B * F} faces exceed int32')
    depth = torch.full((n_pixels,), float('inf'), dtype=torch.float32, device=device)
    face = torch.full((n_pixels,), _NO_FACE, dtype=torch.int32, device=device)
    if B * F:
        wdev = warp_device(device)
        # on a GPU, in torch's stream (the buffers were filled there, the caller reads there)
        stream = wp.stream_from_torch(device) if device.type == 'cuda' else None
        mask = (face_mask.to(torch.uint8).contiguous() if face_mask is not None
                else torch.zeros((1, 1), dtype=torch.uint8, device=device))
        cull = (cullable.to(torch.uint8).contiguous() if cullable is not None
                else torch.zeros(1, dtype=torch.uint8, device=device))
        # array descriptors (return_ctype): no wp.array objects, less per-call overhead; the
        # tensors they alias are held by this frame until the launches return
        px64 = verts_px.detach().to(torch.float64).contiguous()
        z64 = verts_z.detach().to(torch.float64).contiguous()
        faces32 = faces.to(torch.int32).contiguous()
        inputs = [wp.from_torch(px64, dtype=wp.float64, return_ctype=True),
                  wp.from_torch(z64, dtype=wp.float64, return_ctype=True),
                  wp.from_torch(faces32, dtype=wp.int32, return_ctype=True),
                  wp.from_torch(mask, dtype=wp.uint8, return_ctype=True),
                  int(face_mask is not None),
                  wp.from_torch(cull, dtype=wp.uint8, return_ctype=True),
                  int(cullable is not None), float(near), int(height), int(width)]
        outputs = [wp.from_torch(depth, dtype=wp.float32, return_ctype=True),
                   wp.from_torch(face, dtype=wp.int32, return_ctype=True)]
        # on the CPU, one launch (serial threads, see the module docstring) looping over 1024
        # faces per Warp thread (measured: a 16k-face mesh's two launches 1.28 -> 1.07 ms);
        # on a GPU, a thread per face and two launches
        per_thread = 1 if device.type == 'cuda' else _CPU_FACES_PER_THREAD
        n_threads = -(-B * F // per_thread)
        # mode 0: the nearest depth (atomic); 1: the lowest face at that depth (atomic); 2: both
        # in one pass (serial threads only)
        for mode in ((0, 1) if atomic else (2,)):
            wp.launch(_zbuffer_kernel, dim=n_threads, device=wdev, stream=stream,
                      inputs=[*inputs, mode, per_thread, B * F, *outputs])
    face = face.to(torch.int64)
    return face.masked_fill_(face == _NO_FACE, -1), depth


__all__ = ['nearest_faces']
