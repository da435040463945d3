"""The project's one renderer: the object held by the hand, for every path that draws it.

:class:`Renderer` holds the object mesh (and the hand's triangles); the camera comes with each
call, a :class:`~handypriors_ros.core.render.camera.PinholeCamera` or a
:class:`~handypriors_ros.core.render.camera.CameraBatch` (B frames with different intrinsics
or regions of interest in one call). It gives:

- :meth:`Renderer.render`: what the rendering priors compare with the camera (paper eqs. 1-2):
  the object's antialiased silhouette hidden where the hand is in front (differentiable
  w.r.t. the pose), its depth, its shaded colour (vertex colours or a texture), the hand's
  silhouette and 2D keypoints (:class:`RenderOutput`);
- :meth:`Renderer.rasterize`: the hard z-buffer of object and hand together (face ids,
  barycentrics, depth; no gradients): the tracker's region-of-interest renders, outlines;
- :meth:`Renderer.render_scene`: a hard, shaded image of object and hand (synthetic data,
  overlays).

Backends of :meth:`Renderer.render`:

- ``'soft'``: torch (any device; its depth test a Warp kernel on CPU and CUDA): the hard
  z-buffer (``hard_rasterizer``) plus analytic antialiasing of the silhouette edges
  (``antialias``), which gives pixels their area coverage along the silhouette and the
  silhouette its gradients.
- ``'nvdiffrast'``: ``nvdiffrast.torch`` on CUDA (``nvdiffrast_backend``), the same idea in
  CUDA kernels.

``backend='auto'`` picks nvdiffrast when the renderer's device is CUDA and nvdiffrast imports,
else soft. :meth:`rasterize` runs on nvdiffrast too when that is the backend;
:meth:`render_scene` always uses the soft z-buffer (on the renderer's device).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import torch

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry import rotate_vectors, transform_points
from handypriors_ros.core.render.antialias import antialias_silhouette
from handypriors_ros.core.render.camera import CameraBatch, PinholeCamera
from handypriors_ros.core.render.contour import silhouette_edges
from handypriors_ros.core.render.hard_rasterizer import HardRaster, interpolate, rasterize_hard
from handypriors_ros.core.render.mesh import RenderMesh, front_facing, vertex_normals
from handypriors_ros.core.render.texture import sample_texture

BACKENDS = ('auto', 'soft', 'nvdiffrast')

Camera = PinholeCamera | CameraBatch


@dataclass(frozen=True)
class RenderSettings:
    """Renderer settings (units in the names).

    Attributes:
        near_m, far_m: clip distances along the optical axis [m]; faces crossing near_m are
            dropped.
        cull_backfaces: rasterize only object faces facing the camera; exact for closed
            meshes, set False for open ones (a bowl seen inside). The hand is never culled.
        light_dir_cam: direction the light travels, in the optical frame (default: from the
            camera into the scene); need not be unit.
        ambient, diffuse: Lambertian shading ``albedo * (ambient + diffuse * max(0, -n.l))``.
        background_rgb: colour where the object (or, in scenes, anything) is absent.
        antialias: antialias the silhouettes (area coverage along their edges; their only
            source of gradients w.r.t. the pose). False: hard 0/1 masks.
        flat_shading: :meth:`Renderer.render_scene` shades each face with its own normal,
            turned towards the camera (two-sided: meshes of unknown winding such as the hand),
            instead of interpolating vertex normals.
    """

    near_m: float = 0.01
    far_m: float = 10.0
    cull_backfaces: bool = True
    light_dir_cam: tuple[float, float, float] = (0.0, 0.0, 1.0)
    ambient: float = 0.4
    diffuse: float = 0.6
    background_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)
    antialias: bool = True
    flat_shading: bool = False

    def __post_init__(self) -> None:
        for name in ('near_m', 'far_m'):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InputError(f'{name}: expected a finite number > 0, got {value!r}')
        if self.far_m <= self.near_m:
            raise InputError(f'far_m: expected > near_m ({self.near_m}), got {self.far_m}')
        for name in ('ambient', 'diffuse'):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise InputError(f'{name}: expected a number in [0, 1], got {value!r}')
        for name in ('light_dir_cam', 'background_rgb'):
            value = getattr(self, name)
            if len(tuple(value)) != 3 or not all(math.isfinite(float(x)) for x in value):
                raise InputError(f'{name}: expected three finite numbers, got {value!r}')
        if math.fsum(float(x) ** 2 for x in self.light_dir_cam) == 0:
            raise InputError('light_dir_cam: expected a non-zero direction, got (0, 0, 0)')
        for name in ('cull_backfaces', 'antialias', 'flat_shading'):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f'{name}: expected a bool, got {getattr(self, name)!r}')


@dataclass(frozen=True)
class RenderOutput:
    """What the renderer predicts for a batch of B frames (H x W: the camera's size).

    Attributes:
        object_mask: (B, H, W) object silhouette in [0, 1] (area coverage along its edges when
            antialiased), hidden where the hand is in front; differentiable w.r.t. the pose.
        hand_mask: (B, H, W) visible hand silhouette in {0, 1} (all zeros without a hand).
        object_depth: (B, H, W) camera z [m] of the visible object surface, 0 elsewhere.
        object_rgb: (B, H, W, 3) shaded object colour in [0, 1] where the object is visible,
            ``background_rgb`` elsewhere; differentiable w.r.t. the pose (through the
            barycentrics and shading, not through visibility changes).
        keypoints_2d: (B, K, 2) pixel coordinates: the object keypoints (default: the object
            frame's origin, its centre) first, then the given hand keypoints (fingertips).
    """

    object_mask: torch.Tensor
    hand_mask: torch.Tensor
    object_depth: torch.Tensor
    object_rgb: torch.Tensor
    keypoints_2d: torch.Tensor


@dataclass(frozen=True)
class SceneRaster:
    """The hard z-buffer of object and hand together (no gradients).

    Attributes:
        raster: the z-buffer; face ids below ``num_object_faces`` are the object's, the others
            the hand's (``hand_faces`` offset by ``num_object_faces``).
        num_object_faces: F.
    """

    raster: HardRaster
    num_object_faces: int

    @property
    def object_visible(self) -> torch.Tensor:
        """(B, H, W) bool: the object is the nearest surface."""
        fi = self.raster.face_index
        return (fi >= 0) & (fi < self.num_object_faces)

    @property
    def hand_visible(self) -> torch.Tensor:
        """(B, H, W) bool: the hand is the nearest surface."""
        return self.raster.face_index >= self.num_object_faces

    @property
    def depth(self) -> torch.Tensor:
        """(B, H, W) camera z of the nearest surface [m], +inf where empty."""
        return self.raster.depth


@dataclass(frozen=True)
class SceneRender:
    """A hard render of object and hand together (no gradients), e.g. synthetic data.

    Attributes:
        rgb: (B, H, W, 3) shaded colour in [0, 1], ``background_rgb`` where empty.
        depth: (B, H, W) camera z [m] of the nearest surface, 0 where empty.
        object_mask: (B, H, W) bool, the object is the nearest surface.
        hand_mask: (B, H, W) bool, the hand is the nearest surface.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    object_mask: torch.Tensor
    hand_mask: torch.Tensor


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Same device type and index ('cuda' without an index matches any CUDA index)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def nvdiffrast_available() -> bool:
    """True when ``nvdiffrast.torch`` can be found and CUDA is available (nothing imported)."""
    return torch.cuda.is_available() and importlib.util.find_spec('nvdiffrast') is not None


class Renderer:
    """Renders an object mesh at batches of poses, with an optional hand mesh as occluder.

    Args:
        object_mesh: the object in its own frame.
        hand_faces: (Fh, 3) triangles of the posed hand mesh whose vertices come with each
            call (the hand links concatenated into one mesh); None: no hand.
        hand_vertex_colors: (Vh, 3) hand albedo for :meth:`render_scene`; None: light grey.
        object_keypoints: (Ko, 3) object-frame points whose projections start
            ``keypoints_2d``; None: the object frame's origin.
        settings: :class:`RenderSettings`.
        backend: ``'auto'``, ``'soft'`` or ``'nvdiffrast'`` (of :meth:`render`).
        device, dtype: where and in which float type everything is computed.
    Raises:
        InputError: bad arguments; ``backend='nvdiffrast'`` without nvdiffrast or CUDA.
    """

    def __init__(self, object_mesh: RenderMesh, *,
                 hand_faces: torch.Tensor | None = None,
                 hand_vertex_colors: torch.Tensor | None = None,
                 object_keypoints: torch.Tensor | None = None,
                 settings: RenderSettings | None = None, backend: str = 'auto',
                 device: torch.device | str = 'cpu', dtype: torch.dtype = torch.float32) -> None:
        if not isinstance(object_mesh, RenderMesh):
            raise InputError(f'object_mesh: expected a RenderMesh, got '
                             f'{type(object_mesh).__name__}')
        if backend not in BACKENDS:
            raise InputError(f'backend: expected one of {BACKENDS}, got {backend!r}')
        if dtype not in (torch.float32, torch.float64):
            raise InputError(f'dtype: expected torch.float32 or torch.float64, got {dtype}')
        self.settings = settings if settings is not None else RenderSettings()
        if not isinstance(self.settings, RenderSettings):
            raise InputError(f'settings: expected RenderSettings, got '
                             f'{type(self.settings).__name__}')
        self.device = torch.device(device)
        self.dtype = dtype
        self.object_mesh = object_mesh.to(self.device, dtype)
        self._cullable_cache: dict[int, torch.Tensor] = {}
        if hand_faces is not None:
            hand_faces = torch.as_tensor(hand_faces)
            if hand_faces.dim() != 2 or hand_faces.shape[1] != 3 or hand_faces.is_floating_point():
                raise InputError(f'hand_faces: expected an integer tensor (Fh, 3), got '
                                 f'{hand_faces.dtype} {tuple(hand_faces.shape)}')
            hand_faces = hand_faces.to(self.device, torch.int64)
        self.hand_faces = hand_faces
        if hand_vertex_colors is not None:
            hand_vertex_colors = torch.as_tensor(hand_vertex_colors)
            if hand_vertex_colors.dim() != 2 or hand_vertex_colors.shape[1] != 3:
                raise InputError(f'hand_vertex_colors: expected (Vh, 3), got '
                                 f'{tuple(hand_vertex_colors.shape)}')
            hand_vertex_colors = hand_vertex_colors.to(self.device, dtype)
        self.hand_vertex_colors = hand_vertex_colors
        if object_keypoints is None:
            object_keypoints = torch.zeros(1, 3)
        object_keypoints = torch.as_tensor(object_keypoints)
        if object_keypoints.dim() != 2 or object_keypoints.shape[1] != 3:
            raise InputError(f'object_keypoints: expected (Ko, 3), got '
                             f'{tuple(object_keypoints.shape)}')
        self.object_keypoints = object_keypoints.to(self.device, dtype)
        self._requested_backend = backend
        self.backend = self._resolve_backend(backend)
        self._nvdiffrast = None
        if self.backend == 'nvdiffrast':
            from handypriors_ros.core.render.nvdiffrast_backend import NvdiffrastRasterizer
            self._nvdiffrast = NvdiffrastRasterizer(self.device)

    def _resolve_backend(self, backend: str) -> str:
        if backend == 'soft':
            return 'soft'
        usable = self.device.type == 'cuda' and nvdiffrast_available()
        if backend == 'nvdiffrast' and not usable:
            why = ('the renderer device is ' + str(self.device)
                   if self.device.type != 'cuda' else
                   'nvdiffrast is not installed' if torch.cuda.is_available()
                   else 'CUDA is not available')
            raise InputError(f"backend: 'nvdiffrast' needs a CUDA device and the nvdiffrast "
                             f"package, but {why}; use backend='soft' or 'auto'")
        return 'nvdiffrast' if usable else 'soft'

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> Renderer:
        """A renderer on another device / dtype with the same meshes, settings and requested
        backend (``'auto'`` is resolved again for the new device)."""
        return Renderer(self.object_mesh,
                        hand_faces=self.hand_faces, hand_vertex_colors=self.hand_vertex_colors,
                        object_keypoints=self.object_keypoints, settings=self.settings,
                        backend=self._requested_backend,
                        device=device if device is not None else self.device,
                        dtype=dtype if dtype is not None else self.dtype)

    # -- inputs ------------------------------------------------------------------------------

    def _check_camera(self, camera: Camera, batch: int) -> None:
        if isinstance(camera, CameraBatch):
            if len(camera) != batch:
                raise InputError(f'camera: expected a CameraBatch of {batch} (one per pose), '
                                 f'got {len(camera)}')
        elif not isinstance(camera, PinholeCamera):
            raise InputError(f'camera: expected a PinholeCamera or CameraBatch, got '
                             f'{type(camera).__name__}')

    def _check_pose(self, T_cam_obj: torch.Tensor) -> torch.Tensor:
        if not isinstance(T_cam_obj, torch.Tensor) or T_cam_obj.dim() != 3 or \
                tuple(T_cam_obj.shape[1:]) != (4, 4):
            raise InputError(f'T_cam_obj: expected a tensor (B, 4, 4), got '
                             f'{tuple(getattr(T_cam_obj, "shape", ()))}')
        if T_cam_obj.dtype != self.dtype or not _same_device(T_cam_obj.device, self.device):
            raise InputError(f'T_cam_obj: expected {self.dtype} on {self.device}, got '
                             f'{T_cam_obj.dtype} on {T_cam_obj.device}')
        return T_cam_obj

    def _check_inputs(self, camera: Camera, T_cam_obj: torch.Tensor,
                      hand_vertices_cam: torch.Tensor | None) -> torch.Tensor | None:
        self._check_pose(T_cam_obj)
        self._check_camera(camera, T_cam_obj.shape[0])
        return self._check_hand(hand_vertices_cam, T_cam_obj.shape[0])

    def _check_hand(self, hand_vertices_cam: torch.Tensor | None,
                    batch: int) -> torch.Tensor | None:
        if hand_vertices_cam is None:
            return None
        if self.hand_faces is None:
            raise InputError('hand_vertices_cam: given, but the renderer was built without '
                             'hand_faces')
        if not isinstance(hand_vertices_cam, torch.Tensor) or hand_vertices_cam.dim() != 3 or \
                hand_vertices_cam.shape[0] != batch or hand_vertices_cam.shape[2] != 3:
            raise InputError(f'hand_vertices_cam: expected a tensor ({batch}, Vh, 3), got '
                             f'{tuple(getattr(hand_vertices_cam, "shape", ()))}')
        if hand_vertices_cam.dtype != self.dtype or \
                not _same_device(hand_vertices_cam.device, self.device):
            raise InputError(f'hand_vertices_cam: expected {self.dtype} on {self.device}, got '
                             f'{hand_vertices_cam.dtype} on {hand_vertices_cam.device}')
        if int(self.hand_faces.max()) >= hand_vertices_cam.shape[1]:
            raise InputError(f'hand_vertices_cam: hand_faces index vertex '
                             f'{int(self.hand_faces.max())}, got only '
                             f'{hand_vertices_cam.shape[1]} vertices')
        return hand_vertices_cam

    def object_vertices_cam(self, T_cam_obj: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) object vertices in the optical frame: ``T_cam_obj @ v_obj``."""
        self._check_pose(T_cam_obj)
        return transform_points(T_cam_obj, self.object_mesh.vertices)

    # -- shading -----------------------------------------------------------------------------

    def _shaded_colors(self, albedo: torch.Tensor, normals_cam: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) Lambertian vertex colours from (V or B, V, 3) albedo and camera normals."""
        s = self.settings
        light = torch.tensor(s.light_dir_cam, dtype=self.dtype, device=self.device)
        light = light / torch.linalg.vector_norm(light)
        lambert = (-(normals_cam * light).sum(-1, keepdim=True)).clamp(min=0.0)  # (B, V, 1)
        return albedo * (s.ambient + s.diffuse * lambert)

    def _object_color_attributes(self, T_cam_obj: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) per-vertex colour attributes of the object at the poses: shaded RGB, or
        for a textured mesh ``(u, v, shade)`` (see :meth:`_attributes_to_rgb`)."""
        mesh = self.object_mesh
        normals_cam = rotate_vectors(T_cam_obj, mesh.vertex_normals)
        if not mesh.textured:
            return self._shaded_colors(mesh.vertex_colors, normals_cam)
        shade = self._shaded_colors(torch.ones_like(mesh.vertex_colors[:, :1]), normals_cam)
        uv = mesh.uv.expand(T_cam_obj.shape[0], -1, -1)
        return torch.cat([uv, shade], dim=-1)

    def _attributes_to_rgb(self, attributes: torch.Tensor) -> torch.Tensor:
        """(..., 3) shaded RGB from interpolated colour attributes: the texture (bilinear) at
        the interpolated UV times the interpolated shading for a textured mesh, else as is."""
        if not self.object_mesh.textured:
            return attributes
        return sample_texture(self.object_mesh.texture, attributes[..., :2]) * attributes[..., 2:3]

    # -- z-buffers ---------------------------------------------------------------------------

    def _cullable(self, hand_faces: int = 0) -> torch.Tensor | None:
        """(F + hand_faces,) bool: the object's faces are culled when back-facing
        (``settings.cull_backfaces``), the hand's never (see :meth:`hand_depth`); None
        when nothing is culled. Made once per hand size."""
        if not self.settings.cull_backfaces:
            return None
        cached = self._cullable_cache.get(hand_faces)
        if cached is None:
            cached = torch.cat([torch.ones(self.object_mesh.faces.shape[0], dtype=torch.bool),
                                torch.zeros(hand_faces, dtype=torch.bool)]).to(self.device)
            self._cullable_cache[hand_faces] = cached
        return cached

    def _raster(self, camera: Camera, vertices_cam: torch.Tensor, faces: torch.Tensor,
                cullable: torch.Tensor | None, *, barycentrics: bool = True) -> HardRaster:
        return rasterize_hard(camera.project(vertices_cam), vertices_cam[..., 2], faces,
                              camera.height, camera.width, cullable=cullable,
                              near=self.settings.near_m, barycentrics=barycentrics)

    @torch.no_grad()
    def hand_depth(self, camera: Camera, hand_vertices_cam: torch.Tensor) -> torch.Tensor:
        """(B, H, W) camera z of the hand [m], +inf where there is none (no gradients).

        Not culled: hand meshes assembled from URDF links need not be consistently wound.
        Pass it to :meth:`render` to reuse it while only the object moves.
        """
        if not isinstance(hand_vertices_cam, torch.Tensor) or hand_vertices_cam.dim() != 3:
            raise InputError(f'hand_vertices_cam: expected a tensor (B, Vh, 3), got '
                             f'{tuple(getattr(hand_vertices_cam, "shape", ()))}')
        hand = self._check_hand(hand_vertices_cam, hand_vertices_cam.shape[0])
        self._check_camera(camera, hand.shape[0])
        return self._raster(camera, hand.detach(), self.hand_faces, None,
                            barycentrics=False).depth

    @torch.no_grad()
    def rasterize(self, camera: Camera, T_cam_obj: torch.Tensor,
                  hand_vertices_cam: torch.Tensor | None = None, *,
                  barycentrics: bool = True) -> SceneRaster:
        """Hard z-buffer of the object and the hand together (no gradients).

        Object faces are culled per ``settings.cull_backfaces`` (soft z-buffer; nvdiffrast
        does not cull, which for a closed mesh gives the same image); the hand is not. Runs
        on nvdiffrast when that is the backend, else the soft z-buffer.

        Args:
            camera: a PinholeCamera or a CameraBatch of B.
            T_cam_obj: (B, 4, 4); hand_vertices_cam: (B, Vh, 3) or None.
            barycentrics: False: face ids and depth only (the soft z-buffer then skips its
                barycentric pass; ``raster.bary`` is None), for visibility masks.
        Returns:
            :class:`SceneRaster`.
        """
        hand = self._check_inputs(camera, T_cam_obj, hand_vertices_cam)
        verts = transform_points(T_cam_obj.detach(), self.object_mesh.vertices)
        faces = self.object_mesh.faces
        F = faces.shape[0]
        cullable = self._cullable()
        if hand is not None:
            faces = torch.cat([faces, self.hand_faces + verts.shape[1]], dim=0)
            verts = torch.cat([verts, hand.detach()], dim=1)
            cullable = self._cullable(self.hand_faces.shape[0])
        if self.backend == 'nvdiffrast':  # no culling: exact for closed meshes
            face_index, depth, bary = self._nvdiffrast.rasterize(camera, self.settings, verts,
                                                                 faces)
            pixels = torch.nonzero(face_index.reshape(-1) >= 0).squeeze(-1)
            return SceneRaster(HardRaster(face_index=face_index, depth=depth,
                                          bary=bary if barycentrics else None,
                                          pixels=pixels), F)
        return SceneRaster(self._raster(camera, verts, faces, cullable,
                                        barycentrics=barycentrics), F)

    def depth_buffers(self, camera: Camera, T_cam_obj: torch.Tensor,
                      hand_vertices_cam: torch.Tensor | None = None
                      ) -> tuple[HardRaster, torch.Tensor]:
        """Hard z-buffers (no gradients): the object alone and the hand's depth.

        Args:
            camera: a PinholeCamera or a CameraBatch of B.
            T_cam_obj: (B, 4, 4); hand_vertices_cam: (B, Vh, 3) or None.
        Returns:
            The object's :class:`HardRaster` (not hidden by the hand) and the hand's depth
            (B, H, W) [m], +inf where there is no hand.
        """
        hand = self._check_inputs(camera, T_cam_obj, hand_vertices_cam)
        with torch.no_grad():
            verts_cam = transform_points(T_cam_obj.detach(), self.object_mesh.vertices)
            obj_raster = self._raster(camera, verts_cam, self.object_mesh.faces,
                                      self._cullable())
            if hand is None:
                hand_depth = torch.full_like(obj_raster.depth, float('inf'))
            else:
                hand_depth = self.hand_depth(camera, hand)
        return obj_raster, hand_depth

    # -- rendering ---------------------------------------------------------------------------

    def render(self, camera: Camera, T_cam_obj: torch.Tensor,
               hand_vertices_cam: torch.Tensor | None = None,
               hand_keypoints_cam: torch.Tensor | None = None, *,
               hand_depth: torch.Tensor | None = None) -> RenderOutput:
        """Render a batch of object poses with the hand as occluder.

        Args:
            camera: a PinholeCamera (every frame) or a CameraBatch of B (one per frame).
            T_cam_obj: (B, 4, 4) object poses in the camera optical frame.
            hand_vertices_cam: (B, Vh, 3) posed hand vertices in the optical frame, or None.
            hand_keypoints_cam: (B, Kh, 3) hand keypoints (fingertips) in the optical frame,
                or None.
            hand_depth: (B, H, W) the hand's depth from :meth:`hand_depth` for these cameras
                and hand vertices, reused by the soft backend instead of rasterizing the hand
                again (the nvdiffrast backend renders the hand with the object anyway). Without
                ``hand_vertices_cam`` it is the occluder and ``hand_mask`` comes from it.
        Returns:
            :class:`RenderOutput`.
        """
        hand = self._check_inputs(camera, T_cam_obj, hand_vertices_cam)
        B = T_cam_obj.shape[0]
        if hand_depth is not None and (not isinstance(hand_depth, torch.Tensor) or tuple(
                hand_depth.shape) != (B, camera.height, camera.width)):
            raise InputError(f'hand_depth: expected a tensor ({B}, {camera.height}, '
                             f'{camera.width}), got {tuple(getattr(hand_depth, "shape", ()))}')
        verts_cam = transform_points(T_cam_obj, self.object_mesh.vertices)  # (B, V, 3)
        colors = self._object_color_attributes(T_cam_obj)
        if self.backend == 'nvdiffrast' and (hand is not None or hand_depth is None):
            layers = self._nvdiffrast.render(camera, self.settings, verts_cam,
                                             self.object_mesh.faces, colors, hand,
                                             self.hand_faces)
            object_mask, hand_mask, object_depth, object_rgb = layers
        else:
            object_mask, hand_mask, object_depth, object_rgb = self._render_soft(
                camera, verts_cam, colors, hand, hand_depth)
        if self.object_mesh.textured:
            # the texture is looked up at the object's pixels only (the rest is background)
            bg = torch.tensor(self.settings.background_rgb, dtype=self.dtype, device=self.device)
            shape = object_rgb.shape
            flat = object_rgb.reshape(-1, shape[-1])
            pixels = torch.nonzero((object_depth > 0).reshape(-1)).squeeze(-1)
            object_rgb = bg.expand(flat.shape[0], 3).index_put(
                (pixels,), self._attributes_to_rgb(flat.index_select(0, pixels))
            ).reshape(*shape[:-1], 3)
        keypoints = [camera.project(transform_points(T_cam_obj, self.object_keypoints))]
        if hand_keypoints_cam is not None:
            if not isinstance(hand_keypoints_cam, torch.Tensor) or \
                    hand_keypoints_cam.dim() != 3 or hand_keypoints_cam.shape[0] != B or \
                    hand_keypoints_cam.shape[2] != 3:
                raise InputError(f'hand_keypoints_cam: expected a tensor ({B}, Kh, 3), got '
                                 f'{tuple(getattr(hand_keypoints_cam, "shape", ()))}')
            keypoints.append(camera.project(hand_keypoints_cam.to(self.dtype)))
        return RenderOutput(object_mask=object_mask, hand_mask=hand_mask,
                            object_depth=object_depth, object_rgb=object_rgb,
                            keypoints_2d=torch.cat(keypoints, dim=1))

    def _render_soft(self, camera: Camera, verts_cam: torch.Tensor, colors: torch.Tensor,
                     hand: torch.Tensor | None,
                     hand_depth: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        s = self.settings
        H, W = camera.height, camera.width
        mesh = self.object_mesh
        B = verts_cam.shape[0]
        if hand_depth is None:
            hand_depth = (self.hand_depth(camera, hand) if hand is not None else
                          torch.full((B, H, W), float('inf'), dtype=self.dtype,
                                     device=self.device))
        px = camera.project(verts_cam)
        z = verts_cam[..., 2]
        obj_raster = rasterize_hard(px, z, mesh.faces, H, W, cullable=self._cullable(),
                                    near=s.near_m)
        visible = obj_raster.covered & (obj_raster.depth < hand_depth)
        if s.antialias:
            with torch.no_grad():
                near = (z.detach() > s.near_m)
                front = front_facing(verts_cam, mesh.faces)
                sil = silhouette_edges(mesh.edge_faces, front) & \
                    near[:, mesh.edges[:, 0]] & near[:, mesh.edges[:, 1]]
            object_mask = antialias_silhouette(visible, obj_raster.covered, px, mesh.edges, sil)
        else:
            object_mask = visible.to(self.dtype)
        object_depth = torch.where(visible, obj_raster.depth, torch.zeros_like(obj_raster.depth))
        bg = torch.tensor(s.background_rgb, dtype=self.dtype, device=self.device)
        if mesh.textured:  # attributes, not colours: the background is set after the lookup
            bg = torch.zeros(colors.shape[-1], dtype=self.dtype, device=self.device)
        rgb = interpolate(colors, mesh.faces, obj_raster, bg)
        object_rgb = torch.where(visible[..., None], rgb, bg)
        hand_mask = (torch.isfinite(hand_depth) & (hand_depth < obj_raster.depth)).to(self.dtype)
        return object_mask, hand_mask, object_depth, object_rgb

    def _flat_shade(self, verts: torch.Tensor, faces: torch.Tensor,
                    raster: HardRaster) -> torch.Tensor:
        """(B, H, W, 1) two-sided Lambertian factor of each pixel's face (1 where empty)."""
        s = self.settings
        tri = verts[:, faces]  # (B, F, 3, 3)
        n = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
        n = n / torch.linalg.vector_norm(n, dim=-1, keepdim=True).clamp(min=1e-12)
        n = torch.where(((n * tri.mean(2)).sum(-1) > 0)[..., None], -n, n)  # towards the camera
        light = torch.tensor(s.light_dir_cam, dtype=self.dtype, device=self.device)
        light = light / torch.linalg.vector_norm(light)
        shade = s.ambient + s.diffuse * (-(n * light).sum(-1)).clamp(min=0.0)  # (B, F)
        fi = raster.face_index.clamp(min=0)
        per_pixel = torch.gather(shade, 1, fi.reshape(fi.shape[0], -1)).reshape(fi.shape)
        return torch.where(raster.covered, per_pixel, torch.ones_like(per_pixel))[..., None]

    @torch.no_grad()
    def render_scene(self, camera: Camera, T_cam_obj: torch.Tensor,
                     hand_vertices_cam: torch.Tensor | None = None) -> SceneRender:
        """Hard, shaded render of object and hand together (pure torch on any device).

        Args:
            camera: a PinholeCamera or a CameraBatch of B.
            T_cam_obj: (B, 4, 4); hand_vertices_cam: (B, Vh, 3) or None.
        Returns:
            :class:`SceneRender`.
        """
        hand = self._check_inputs(camera, T_cam_obj, hand_vertices_cam)
        B = T_cam_obj.shape[0]
        mesh = self.object_mesh
        flat = self.settings.flat_shading
        verts = transform_points(T_cam_obj, mesh.vertices)
        if flat:  # albedo (or uv + 1) now, shading per face after the raster
            colors = (mesh.vertex_colors.expand(B, -1, -1) if not mesh.textured else
                      torch.cat([mesh.uv, torch.ones_like(mesh.uv[:, :1])], -1)
                      .expand(B, -1, -1))
        else:
            colors = self._object_color_attributes(T_cam_obj)
        faces = mesh.faces
        F = faces.shape[0]
        cullable = self._cullable()
        if hand is not None:
            hand_albedo = self.hand_vertex_colors
            if hand_albedo is None or hand_albedo.shape[0] != hand.shape[1]:
                hand_albedo = torch.full((hand.shape[1], 3), 0.8, dtype=self.dtype,
                                         device=self.device)
            hand_colors = (hand_albedo.expand(B, -1, -1) if flat else self._shaded_colors(
                hand_albedo, vertex_normals(hand, self.hand_faces)))
            faces = torch.cat([faces, self.hand_faces + verts.shape[1]], dim=0)
            verts = torch.cat([verts, hand], dim=1)
            colors = torch.cat([colors, hand_colors], dim=1)
            cullable = self._cullable(self.hand_faces.shape[0])
        raster = self._raster(camera, verts, faces, cullable)
        bg = torch.tensor(self.settings.background_rgb, dtype=self.dtype, device=self.device)
        object_mask = raster.covered & (raster.face_index < F)
        rgb = interpolate(colors, faces, raster, bg)
        if mesh.textured:
            rgb = torch.where(object_mask[..., None], self._attributes_to_rgb(rgb), rgb)
        if flat:
            rgb = rgb * self._flat_shade(verts, faces, raster)
        rgb = rgb.clamp(0.0, 1.0)
        depth = torch.where(raster.covered, raster.depth, torch.zeros_like(raster.depth))
        hand_mask = raster.face_index >= F
        return SceneRender(rgb=rgb, depth=depth, object_mask=object_mask, hand_mask=hand_mask)
