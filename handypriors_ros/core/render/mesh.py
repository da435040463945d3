"""The renderer's mesh: vertices, triangles, colours, normals and edge adjacency as tensors.

A small container the renderers consume (the project's object model builds one with
:meth:`RenderMesh.from_arrays` or :meth:`RenderMesh.from_trimesh`), and the per-pose face
orientation test every renderer shares.

Winding: triangles are counter-clockwise seen from outside (trimesh's convention), so the
normal ``(b - a) x (c - a)`` points out of the surface.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from handypriors_ros.core.errors import InputError, ModelError


@dataclass(frozen=True)
class RenderMesh:
    """A triangle mesh in its own frame, ready for rendering.

    Attributes:
        vertices: (V, 3) float [m].
        faces: (F, 3) int64 vertex indices, counter-clockwise seen from outside.
        vertex_colors: (V, 3) float RGB albedo in [0, 1].
        vertex_normals: (V, 3) float unit normals (area-weighted face normals).
        edges: (E, 2) int64 unique undirected edges (vertex indices, smaller first).
        edge_faces: (E, 2) int64 the two faces sharing each edge; -1 for a boundary edge's
            missing second face (edges of more than two faces keep the first two).
        uv: (V, 2) float texture coordinates, or None (module ``texture``: v = 1 is the
            image's top row).
        texture: (Ht, Wt, 3) float RGB texture in [0, 1], or None. When both are set the
            renderer's colour is the texture sampled at the interpolated UV (bilinear),
            shaded; otherwise the vertex colours.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    vertex_colors: torch.Tensor
    vertex_normals: torch.Tensor
    edges: torch.Tensor
    edge_faces: torch.Tensor
    uv: torch.Tensor | None = None
    texture: torch.Tensor | None = None

    @property
    def textured(self) -> bool:
        """True when the mesh has both UVs and a texture image."""
        return self.uv is not None and self.texture is not None

    @classmethod
    def from_arrays(cls, vertices: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor,
                    vertex_colors: np.ndarray | torch.Tensor | None = None, *,
                    uv: np.ndarray | torch.Tensor | None = None,
                    texture: np.ndarray | torch.Tensor | None = None,
                    dtype: torch.dtype = torch.float32,
                    device: torch.device | str = 'cpu') -> RenderMesh:
        """Build from arrays; colours in [0, 1] (floats) or 0-255 (integers); default grey.

        Args:
            vertices: (V, 3) [m].
            faces: (F, 3) integer indices into ``vertices``.
            vertex_colors: (V, 3) or (V, 4) (alpha dropped); None: 0.7 grey.
            uv: (V, 2) texture coordinates, given together with ``texture`` (or neither).
            texture: (Ht, Wt, 3) or (Ht, Wt, 4) image (alpha dropped), floats in [0, 1] or
                integers 0-255, row 0 the top (``v = 1``).
        Raises:
            ModelError: empty mesh, indices out of range, non-finite vertices.
            InputError: wrong shapes.
        """
        v = np.asarray(torch.as_tensor(vertices).detach().cpu(), dtype=np.float64)
        f = np.asarray(torch.as_tensor(faces).detach().cpu())
        if v.ndim != 2 or v.shape[1] != 3:
            raise InputError(f'vertices: expected shape (V, 3), got {v.shape}')
        if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
            raise InputError(f'faces: expected an integer array (F, 3), got {f.dtype} {f.shape}')
        if len(v) == 0 or len(f) == 0:
            raise ModelError(f'mesh: expected vertices and faces, got {len(v)} vertices and '
                             f'{len(f)} faces')
        if not np.all(np.isfinite(v)):
            raise ModelError('vertices: expected finite coordinates, got NaN or inf')
        if f.min() < 0 or f.max() >= len(v):
            raise ModelError(f'faces: expected indices in [0, {len(v) - 1}], got '
                             f'[{f.min()}, {f.max()}]')
        f = f.astype(np.int64)
        if vertex_colors is None:
            c = np.full((len(v), 3), 0.7)
        else:
            c_in = np.asarray(torch.as_tensor(vertex_colors).detach().cpu())
            if c_in.ndim != 2 or c_in.shape[0] != len(v) or c_in.shape[1] not in (3, 4):
                raise InputError(f'vertex_colors: expected shape ({len(v)}, 3 or 4), got '
                                 f'{c_in.shape}')
            c = c_in[:, :3].astype(np.float64)
            if np.issubdtype(c_in.dtype, np.integer):
                c = c / 255.0
            c = np.clip(c, 0.0, 1.0)
        uv_np, tex_np = _check_texture_arrays(uv, texture, len(v))
        normals = _vertex_normals_np(v, f)
        edges, edge_faces = _edge_adjacency(f)
        to = dict(dtype=dtype, device=device)
        return cls(vertices=torch.as_tensor(v, **to), faces=torch.as_tensor(f, device=device),
                   vertex_colors=torch.as_tensor(c, **to),
                   vertex_normals=torch.as_tensor(normals, **to),
                   edges=torch.as_tensor(edges, device=device),
                   edge_faces=torch.as_tensor(edge_faces, device=device),
                   uv=None if uv_np is None else torch.as_tensor(uv_np, **to),
                   texture=None if tex_np is None else torch.as_tensor(tex_np, **to))

    @classmethod
    def from_trimesh(cls, mesh, *, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = 'cpu') -> RenderMesh:
        """Build from a ``trimesh.Trimesh``, with its vertex colours when it has them, or its
        UVs and texture image when it is textured (the vertex colours then are the texture
        baked per vertex)."""
        colors = uv = texture = None
        visual = getattr(mesh, 'visual', None)
        kind = getattr(visual, 'kind', None)
        if kind in ('vertex', 'face'):
            colors = np.asarray(visual.vertex_colors)
        elif kind == 'texture':
            image = getattr(getattr(visual, 'material', None), 'image', None)
            if image is None:
                image = getattr(getattr(visual, 'material', None), 'baseColorTexture', None)
            vis_uv = getattr(visual, 'uv', None)
            if image is not None and vis_uv is not None and len(vis_uv) == len(mesh.vertices):
                uv = np.asarray(vis_uv, dtype=np.float64)
                texture = np.asarray(image.convert('RGB'))
                colors = np.asarray(visual.to_color().vertex_colors)
        return cls.from_arrays(np.asarray(mesh.vertices), np.asarray(mesh.faces), colors,
                               uv=uv, texture=texture, dtype=dtype, device=device)

    @classmethod
    def from_object_model(cls, model, *, proxy: bool = True, dtype: torch.dtype = torch.float32,
                          device: torch.device | str = 'cpu') -> RenderMesh:
        """The render mesh of an :class:`~handypriors_ros.core.models.object_model.ObjectModel`.

        Args:
            model: the object model.
            proxy: render its decimated proxy (vertex colours); a textured model is rendered
                at full resolution with its UVs and texture instead (decimation cannot keep
                UVs).
        """
        if model.uv is not None and model.texture is not None:
            return cls.from_arrays(model.vertices, model.faces.long(), model.vertex_colors,
                                   uv=model.uv, texture=model.texture, dtype=dtype,
                                   device=device)
        if proxy:
            return cls.from_arrays(model.proxy.vertices, model.proxy.faces.long(),
                                   model.proxy.vertex_colors, dtype=dtype, device=device)
        return cls.from_arrays(model.vertices, model.faces.long(), model.vertex_colors,
                               dtype=dtype, device=device)

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> RenderMesh:
        """A copy on ``device`` with float tensors in ``dtype`` (None: unchanged)."""
        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device=device, dtype=dtype if x.is_floating_point() else None)
        return replace(self, vertices=move(self.vertices), faces=move(self.faces),
                       vertex_colors=move(self.vertex_colors),
                       vertex_normals=move(self.vertex_normals), edges=move(self.edges),
                       edge_faces=move(self.edge_faces),
                       uv=None if self.uv is None else move(self.uv),
                       texture=None if self.texture is None else move(self.texture))


def _check_texture_arrays(uv, texture, n_vertices: int
                          ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validated (V, 2) UVs and (Ht, Wt, 3) float texture in [0, 1], or (None, None)."""
    if uv is None and texture is None:
        return None, None
    if uv is None or texture is None:
        raise InputError('uv, texture: expected both or neither, got only '
                         + ('uv' if texture is None else 'texture'))
    uv_np = np.asarray(torch.as_tensor(uv).detach().cpu(), dtype=np.float64)
    if uv_np.shape != (n_vertices, 2):
        raise InputError(f'uv: expected shape ({n_vertices}, 2), got {uv_np.shape}')
    if not np.all(np.isfinite(uv_np)):
        raise ModelError('uv: expected finite texture coordinates, got NaN or inf')
    tex_in = (texture.detach().cpu().numpy() if isinstance(texture, torch.Tensor)
              else np.asarray(texture))
    if tex_in.ndim != 3 or tex_in.shape[2] not in (3, 4) or tex_in.shape[0] < 1 or \
            tex_in.shape[1] < 1:
        raise InputError(f'texture: expected an image (H, W, 3 or 4), got {tex_in.shape}')
    tex = tex_in[..., :3].astype(np.float64)
    if np.issubdtype(tex_in.dtype, np.integer):
        tex = tex / 255.0
    return uv_np, np.clip(tex, 0.0, 1.0)


def _vertex_normals_np(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(V, 3) unit area-weighted vertex normals (zero for unreferenced vertices)."""
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # 2 * area * normal
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.where(length > 0, length, 1.0)


def _edge_adjacency(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique undirected edges (E, 2) and their first two faces (E, 2), -1 where missing."""
    directed = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    undirected = np.sort(directed, axis=1)
    edges, inverse = np.unique(undirected, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    face_of = np.repeat(np.arange(len(f)), 3)
    order = np.argsort(inverse, kind='stable')
    sorted_edge = inverse[order]
    starts = np.searchsorted(sorted_edge, np.arange(len(edges)))
    counts = np.bincount(inverse, minlength=len(edges))
    first = face_of[order[starts]]
    second = np.where(counts >= 2, face_of[order[np.minimum(starts + 1, len(order) - 1)]], -1)
    return edges.astype(np.int64), np.stack([first, second], axis=1).astype(np.int64)


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unnormalised face normals ``(b - a) x (c - a)`` (twice the area times the unit normal).

    Args:
        vertices: (B, V, 3); faces: (F, 3) int64.
    Returns:
        (B, F, 3).
    """
    a = vertices[:, faces[:, 0]]
    return torch.linalg.cross(vertices[:, faces[:, 1]] - a, vertices[:, faces[:, 2]] - a, dim=-1)


def front_facing(vertices_cam: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, F) bool: faces whose outward normal points at the camera (optical frame origin).

    A face is front-facing when ``n . (a - 0) < 0`` for its normal n and any of its points a.
    For a closed mesh the front-facing faces cover its whole silhouette.

    Args:
        vertices_cam: (B, V, 3) in the camera optical frame; faces: (F, 3) int64.
    """
    with torch.no_grad():
        n = face_normals(vertices_cam.detach(), faces)
        return (n * vertices_cam.detach()[:, faces[:, 0]]).sum(-1) < 0


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit area-weighted vertex normals of posed meshes (e.g. the hand), differentiable.

    Args:
        vertices: (B, V, 3); faces: (F, 3) int64.
    Returns:
        (B, V, 3); zero for vertices no face uses.
    """
    fn = face_normals(vertices, faces)  # (B, F, 3)
    n = torch.zeros_like(vertices)
    for k in range(3):
        n = n.index_add(1, faces[:, k], fn)
    return n / torch.linalg.vector_norm(n, dim=-1, keepdim=True).clamp_min(1e-20)
