"""nvdiffrast backend of :class:`~handypriors_ros.core.render.renderer.Renderer` (CUDA only).

Object and hand are rasterized together in one pass (``nvdiffrast.torch.rasterize`` with a
``RasterizeCudaContext``), so the hand hides the object by the hardware-style depth test.
Colours and camera depth are interpolated with ``interpolate``; the object and hand
indicator images go through ``antialias``, which blends pixels along silhouette edges by the
edges' exact positions and so gives the silhouettes gradients w.r.t. the vertex positions
(the soft backend's ``antialias`` module does the same in torch).

Vertices reach clip space only through :func:`~handypriors_ros.core.render.camera.optical_to_clip`,
whose NDC y grows with the image row: nvdiffrast writes raster row 0 at NDC y = -1, so its
images come out top row first, as OpenCV's, with no flip here.

nvdiffrast is imported when this backend is built, not when the package is imported; it
computes in float32 (float64 inputs are cast, and outputs cast back).
"""

from __future__ import annotations

import torch

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.render.camera import PinholeCamera, optical_to_clip


class NvdiffrastRasterizer:
    """Holds the CUDA rasterizer context and the antialiasing topology hashes.

    Args:
        device: a CUDA device.
    Raises:
        InputError: not a CUDA device, or nvdiffrast cannot be imported.
    """

    def __init__(self, device: torch.device | str) -> None:
        device = torch.device(device)
        if device.type != 'cuda':
            raise InputError(f'device: the nvdiffrast backend needs a CUDA device, got {device}')
        try:
            import nvdiffrast.torch as dr
        except ImportError as exc:
            raise InputError(f"backend: 'nvdiffrast' requested but nvdiffrast.torch does not "
                             f"import ({exc}); use backend='soft'") from exc
        self._dr = dr
        self._context = dr.RasterizeCudaContext(device=device)
        self._topology: tuple[torch.Tensor, object] | None = None

    def _topology_hash(self, tri: torch.Tensor) -> object:
        """The antialiasing topology hash of ``tri``, rebuilt only when the triangles change."""
        cached = self._topology
        if cached is None or cached[0].shape != tri.shape or not torch.equal(cached[0], tri):
            cached = (tri.clone(), self._dr.antialias_construct_topology_hash(tri))
            self._topology = cached
        return cached[1]

    def rasterize(self, camera, settings, verts_cam: torch.Tensor,
                  faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hard z-buffer of one mesh (object and hand concatenated), no gradients.

        Args:
            camera: a PinholeCamera or CameraBatch; settings: ``RenderSettings``.
            verts_cam: (B, V, 3) optical frame [m]; faces: (F, 3) int64.
        Returns:
            face_index (B, H, W) int64 (-1 where empty), depth (B, H, W) camera z (+inf where
            empty) and bary (B, H, W, 3) barycentrics of the face's three vertices, in the
            dtype of ``verts_cam``.
        """
        dr = self._dr
        out_dtype = verts_cam.dtype
        verts = verts_cam.detach().to(torch.float32)
        tri = faces.to(torch.int32).contiguous()
        pos = optical_to_clip(verts, camera, settings.near_m, settings.far_m).contiguous()
        rast, _ = dr.rasterize(self._context, pos, tri, resolution=(camera.height, camera.width),
                               grad_db=False)
        face_index = rast[..., 3].to(torch.int64) - 1
        z, _ = dr.interpolate(verts[..., 2:3].contiguous(), rast, tri)
        covered = face_index >= 0
        depth = torch.where(covered, z[..., 0], torch.full_like(z[..., 0], float('inf')))
        u, v = rast[..., 0], rast[..., 1]
        bary = torch.stack([u, v, 1.0 - u - v], dim=-1) * covered[..., None]
        return face_index, depth.to(out_dtype), bary.to(out_dtype)

    def render(self, camera: PinholeCamera, settings, verts_cam: torch.Tensor,
               faces: torch.Tensor, colors: torch.Tensor, hand_cam: torch.Tensor | None,
               hand_faces: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Render object (and hand) layers.

        Args:
            camera: the pinhole camera; settings: ``RenderSettings``.
            verts_cam: (B, V, 3) object vertices, optical frame [m].
            faces: (F, 3) int64 object triangles.
            colors: (B, V, 3) shaded object vertex colours.
            hand_cam: (B, Vh, 3) hand vertices or None; hand_faces: (Fh, 3) or None.
        Returns:
            object_mask (B, H, W), hand_mask (B, H, W), object_depth (B, H, W),
            object_rgb (B, H, W, 3), in the dtype of ``verts_cam``.
        """
        dr = self._dr
        out_dtype = verts_cam.dtype
        B, V, _ = verts_cam.shape
        F = faces.shape[0]
        verts = verts_cam.to(torch.float32)
        # Per-vertex attributes: RGB and camera z.
        attr = torch.cat([colors.to(torch.float32), verts[..., 2:3]], dim=-1)  # (B, V, 4)
        tri = faces
        if hand_cam is not None:
            hand = hand_cam.to(torch.float32)
            verts = torch.cat([verts, hand], dim=1)
            attr = torch.cat([attr, torch.zeros(B, hand.shape[1], 4, device=hand.device)], 1)
            tri = torch.cat([faces, hand_faces + V], dim=0)
        tri = tri.to(torch.int32).contiguous()
        pos = optical_to_clip(verts, camera, settings.near_m, settings.far_m).contiguous()
        rast, _ = dr.rasterize(self._context, pos, tri, resolution=(camera.height, camera.width),
                               grad_db=False)
        tri_id = rast[..., 3]  # triangle index + 1, 0 where empty
        is_object = (tri_id > 0) & (tri_id <= F)
        is_hand = tri_id > F
        interp, _ = dr.interpolate(attr.contiguous(), rast, tri)  # (B, H, W, 4)
        masks = torch.stack([is_object, is_hand], dim=-1).to(torch.float32)  # (B, H, W, 2)
        if settings.antialias:
            masks = dr.antialias(masks.contiguous(), rast, pos, tri,
                                 topology_hash=self._topology_hash(tri))
        bg = torch.tensor(settings.background_rgb, dtype=torch.float32, device=verts.device)
        object_rgb = torch.where(is_object[..., None], interp[..., :3], bg)
        object_depth = torch.where(is_object, interp[..., 3], torch.zeros_like(interp[..., 3]))
        return (masks[..., 0].to(out_dtype), masks[..., 1].to(out_dtype),
                object_depth.to(out_dtype), object_rgb.to(out_dtype))
