"""Signed distance from query points to an object's triangle mesh, with NVIDIA Warp.

The paper's contact module: a BVH over the object mesh (``wp.Mesh``, built once per object) is
queried by a Warp kernel for the closest surface point of each hand point; the sign comes from
the angle-weighted pseudo normal (fast, for watertight meshes) or from the generalised winding
number (robust for meshes with holes).

Convention: the distance is NEGATIVE INSIDE the object (the opposite of
``trimesh.proximity.signed_distance``, which is positive inside).

Differentiability: :meth:`WarpMeshSDF.signed_distance` goes through a ``torch.autograd.Function``
whose backward is analytic: d phi / d p is the unit vector from the closest point to the query
point, sign-corrected so it points out of the object (the SDF's gradient, equal to the returned
``normal``). The caller transforms hand points into the object frame with torch ops, so
gradients reach the object pose and the hand joints through the caller's graph. Closest points,
normals and face indices are returned detached (they are piecewise constant or only needed as
data).

Warp is initialised lazily, once, on the first :class:`WarpMeshSDF`. Kernels are compiled on
their first launch (~4 s on CPU) and cached in Warp's kernel cache, which honours the
``WARP_CACHE_PATH`` environment variable (default ``~/.cache/warp``).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import torch
import warp as wp

from handypriors_ros.core.devices import resolve_device
from handypriors_ros.core.errors import InputError, ModelError
from handypriors_ros.core.geometry.mesh_topology import is_closed_and_oriented
from handypriors_ros.core.physics._validation import check_float_tensor
from handypriors_ros.core.warp_runtime import ensure_warp

SignMethod = Literal['auto', 'normal', 'winding']

# Normals: where the closest point lies inside a face (all barycentric coordinates above
# _FACE_INTERIOR_BARY) the SDF gradient is exactly that face's outward normal, inside or outside,
# so it is used as is. On an edge or a vertex the gradient is the sign-corrected direction from
# the closest point to the query point, unless the point is within _ON_SURFACE_M of the surface,
# where float32 rounding of the closest point (~4e-9 m at 4 cm) would dominate that direction:
# there the face normal is used.
_FACE_INTERIOR_BARY = wp.constant(1.0e-6)
_ON_SURFACE_M = wp.constant(1.0e-7)


@wp.func
def _store_query(mesh: wp.uint64, p: wp.vec3, q: wp.MeshQueryPoint, max_dist: float, tid: int,
                 distance: wp.array(dtype=float), closest: wp.array(dtype=wp.vec3),
                 normal: wp.array(dtype=wp.vec3), face: wp.array(dtype=wp.int32)):
    if q.result:
        c = wp.mesh_eval_position(mesh, q.face, q.u, q.v)
        s = wp.where(q.sign < 0.0, -1.0, 1.0)
        delta = p - c
        length = wp.length(delta)
        n = wp.mesh_eval_face_normal(mesh, q.face)
        on_edge = wp.min(wp.min(q.u, q.v), 1.0 - q.u - q.v) <= _FACE_INTERIOR_BARY
        if on_edge and length > _ON_SURFACE_M:
            n = delta * (s / length)
        distance[tid] = s * length
        closest[tid] = c
        normal[tid] = n
        face[tid] = q.face
    else:
        distance[tid] = max_dist
        closest[tid] = p
        normal[tid] = wp.vec3(0.0, 0.0, 0.0)
        face[tid] = -1


@wp.func
def _near_or_boxed(p: wp.vec3, near: float, max_dist: float, lo: wp.vec3, hi: wp.vec3) -> float:
    """The second query's range: ``max_dist`` for a point inside the mesh's bounding box
    (it may be deep inside the object), else 0 (none)."""
    if near < max_dist and p[0] >= lo[0] and p[1] >= lo[1] and p[2] >= lo[2] \
            and p[0] <= hi[0] and p[1] <= hi[1] and p[2] <= hi[2]:
        return max_dist
    return 0.0


@wp.kernel
def _sdf_normal_sign_kernel(mesh: wp.uint64, points: wp.array(dtype=wp.vec3), near: float,
                            lo: wp.vec3, hi: wp.vec3, max_dist: float,
                            distance: wp.array(dtype=float), closest: wp.array(dtype=wp.vec3),
                            normal: wp.array(dtype=wp.vec3), face: wp.array(dtype=wp.int32)):
    tid = wp.tid()
    p = points[tid]
    q = wp.mesh_query_point_sign_normal(mesh, p, near)
    if not q.result:
        again = _near_or_boxed(p, near, max_dist, lo, hi)
        if again > 0.0:
            q = wp.mesh_query_point_sign_normal(mesh, p, again)
    _store_query(mesh, p, q, max_dist, tid, distance, closest, normal, face)


@wp.kernel
def _sdf_winding_sign_kernel(mesh: wp.uint64, points: wp.array(dtype=wp.vec3), near: float,
                             lo: wp.vec3, hi: wp.vec3, max_dist: float,
                             distance: wp.array(dtype=float), closest: wp.array(dtype=wp.vec3),
                             normal: wp.array(dtype=wp.vec3), face: wp.array(dtype=wp.int32)):
    tid = wp.tid()
    p = points[tid]
    q = wp.mesh_query_point_sign_winding_number(mesh, p, near)
    if not q.result:
        again = _near_or_boxed(p, near, max_dist, lo, hi)
        if again > 0.0:
            q = wp.mesh_query_point_sign_winding_number(mesh, p, again)
    _store_query(mesh, p, q, max_dist, tid, distance, closest, normal, face)


@dataclasses.dataclass(frozen=True)
class SDFResult:
    """Signed distance query result, in the object (mesh) frame.

    Attributes:
        distance: (B, N) signed distance in metres, NEGATIVE INSIDE; differentiable w.r.t. the
            query points. ``max_distance`` where ``valid`` is false.
        closest_point: (B, N, 3) closest surface point (detached); the query point itself where
            ``valid`` is false.
        normal: (B, N, 3) outward unit normal (detached), the SDF gradient: the face normal
            where the closest point is inside a face, else (edges, vertices) the sign-corrected
            direction closest point -> query point; zero where ``valid`` is false.
        face_index: (B, N) int64 index of the closest face; -1 where ``valid`` is false.
        valid: (B, N) bool, false where no surface point lies within ``max_distance`` (those
            points are reported as outside at ``max_distance`` with zero gradient).
    """

    distance: torch.Tensor
    closest_point: torch.Tensor
    normal: torch.Tensor
    face_index: torch.Tensor
    valid: torch.Tensor


def _torch_device(device: str | torch.device) -> torch.device:
    return resolve_device(device, allow_auto=False)


class _SignedDistanceFunction(torch.autograd.Function):
    """Bridge torch -> Warp kernel; backward: d distance / d p = normal (analytic)."""

    @staticmethod
    def forward(ctx, points_obj: torch.Tensor, sdf: WarpMeshSDF,
                near_m: float | None):  # noqa: D102
        distance, closest, normal, face = sdf._query(points_obj, near_m)
        ctx.save_for_backward(normal)
        ctx.mark_non_differentiable(closest, normal, face)
        return distance, closest, normal, face

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_distance, grad_closest, grad_normal, grad_face):  # noqa: D102
        (normal,) = ctx.saved_tensors
        return grad_distance[..., None] * normal, None, None


class WarpMeshSDF:
    """Signed distance field of a triangle mesh (object frame, metres), queried with Warp.

    Build once per object; query every frame. Device is chosen here; :meth:`to` returns a copy
    on another device. Query points must live on this device.

    Args:
        vertices: (V, 3) vertex positions in the object frame, metres (numpy or torch).
        faces: (F, 3) int triangle indices, counter-clockwise seen from outside (outward
            normals, as trimesh).
        device: ``'cpu'``, ``'cuda'`` or ``'cuda:N'`` (or a torch.device).
        sign_method: ``'normal'`` (angle-weighted pseudo normal: fast, needs a watertight,
            consistently oriented mesh), ``'winding'`` (generalised winding number: robust to
            holes, slower) or ``'auto'`` (``'normal'`` when the mesh is closed and oriented,
            else ``'winding'``).
        max_distance: metres; points farther than this from the surface are not resolved
            (``valid`` false, reported at ``+max_distance`` with zero gradient). Hand points are
            never that far from a held object; the bound keeps BVH queries short.

    Attributes:
        is_watertight: the mesh is closed and consistently oriented (every directed edge once,
            its reverse present).
        sign_method: the sign method in use, ``'normal'`` or ``'winding'``.
        max_distance: as given (m).

    Raises:
        ModelError: empty mesh, face indices out of range, non-finite vertices.
        InputError: bad argument types, shapes or device.
    """

    def __init__(self, vertices: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor, *,
                 device: str | torch.device = 'cpu', sign_method: SignMethod = 'auto',
                 max_distance: float = 1.0) -> None:
        vertices_np = self._as_numpy('vertices', vertices, np.float64)
        faces_np = self._as_numpy('faces', faces, None)
        if vertices_np.ndim != 2 or vertices_np.shape[1] != 3 or vertices_np.shape[0] < 3:
            raise ModelError(f'vertices: expected shape (V>=3, 3), got {vertices_np.shape}')
        if not np.all(np.isfinite(vertices_np)):
            raise ModelError('vertices: expected finite values, got NaN or Inf')
        if faces_np.ndim != 2 or faces_np.shape[1] != 3 or faces_np.shape[0] < 1:
            raise ModelError(f'faces: expected shape (F>=1, 3), got {faces_np.shape}')
        if not np.issubdtype(faces_np.dtype, np.integer):
            raise ModelError(f'faces: expected an integer dtype, got {faces_np.dtype}')
        if faces_np.min() < 0 or faces_np.max() >= vertices_np.shape[0]:
            raise ModelError(f'faces: indices must lie in [0, {vertices_np.shape[0]}), got '
                             f'[{faces_np.min()}, {faces_np.max()}]')
        if sign_method not in ('auto', 'normal', 'winding'):
            raise InputError(f"sign_method: expected 'auto', 'normal' or 'winding', "
                             f'got {sign_method!r}')
        if not (isinstance(max_distance, (int, float)) and np.isfinite(max_distance)
                and max_distance > 0):
            raise InputError(f'max_distance: expected a positive finite float (m), '
                             f'got {max_distance!r}')

        self._vertices_np = vertices_np.astype(np.float32)
        # the bounding box, widened by a float32 ulp-scale margin: every point inside the
        # mesh is inside it
        pad = 1e-6 * (1.0 + float(np.abs(self._vertices_np).max()))
        self._box = (wp.vec3(*(self._vertices_np.min(axis=0) - pad).tolist()),
                     wp.vec3(*(self._vertices_np.max(axis=0) + pad).tolist()))
        self._faces_np = np.ascontiguousarray(faces_np, dtype=np.int32)
        self.is_watertight = is_closed_and_oriented(self._faces_np, vertices_np.shape[0])
        if sign_method == 'auto':
            sign_method = 'normal' if self.is_watertight else 'winding'
        self.sign_method: str = sign_method
        self.max_distance = float(max_distance)
        self._device = _torch_device(device)

        ensure_warp()
        self._wp_device = wp.device_from_torch(self._device)
        # The wp.Mesh keeps raw pointers to these arrays: hold references for its lifetime.
        self._wp_points = wp.array(self._vertices_np, dtype=wp.vec3, device=self._wp_device)
        self._wp_indices = wp.array(self._faces_np.reshape(-1), dtype=wp.int32,
                                    device=self._wp_device)
        self._mesh = wp.Mesh(points=self._wp_points, indices=self._wp_indices,
                             support_winding_number=(sign_method == 'winding'))
        self._kernel = (_sdf_winding_sign_kernel if sign_method == 'winding'
                        else _sdf_normal_sign_kernel)

    @classmethod
    def from_trimesh(cls, mesh, **kwargs) -> WarpMeshSDF:
        """Build from a ``trimesh.Trimesh`` (its vertices in metres); kwargs as the constructor."""
        return cls(np.asarray(mesh.vertices), np.asarray(mesh.faces), **kwargs)

    @staticmethod
    def _as_numpy(name: str, x: object, dtype) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        if not isinstance(x, np.ndarray):
            raise InputError(f'{name}: expected a numpy array or torch.Tensor, '
                             f'got {type(x).__name__}')
        return x.astype(dtype) if dtype is not None else x

    @property
    def device(self) -> torch.device:
        """The torch device query points must live on."""
        return self._device

    @property
    def num_vertices(self) -> int:
        return int(self._vertices_np.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self._faces_np.shape[0])

    @property
    def vertices(self) -> torch.Tensor:
        """(V, 3) float32 vertex positions on this device (a copy)."""
        return torch.from_numpy(self._vertices_np.copy()).to(self._device)

    @property
    def faces(self) -> torch.Tensor:
        """(F, 3) int32 triangle indices on this device (a copy)."""
        return torch.from_numpy(self._faces_np.copy()).to(self._device)

    def to(self, device: str | torch.device) -> WarpMeshSDF:
        """The same SDF on another device (self when already there)."""
        if _torch_device(device) == self._device:
            return self
        return WarpMeshSDF(self._vertices_np, self._faces_np, device=device,
                           sign_method=self.sign_method, max_distance=self.max_distance)

    def signed_distance(self, points_obj: torch.Tensor, *,
                        near_m: float | None = None) -> SDFResult:
        """Signed distance, closest point, outward normal and face of each point.

        Args:
            points_obj: (B, N, 3) float32 or float64 query points in the object frame (metres),
                on :attr:`device`. Warp computes in float32; outputs come back in the input
                dtype.
            near_m: None: every point within :attr:`max_distance` is resolved. A distance
                [m]: only points within ``near_m`` of the surface or inside the mesh's
                bounding box (so every point inside the object) are; the others read as out
                of range (``valid`` false) even if within ``max_distance``. Resolved points
                get the same result as without it. What a contact query needs (contacts and
                penetrations) at a fraction of the cost: most hand points of a held object
                lie a few centimetres away, and each costs a full BVH descent.
        Returns:
            :class:`SDFResult` with (B, N) / (B, N, 3) fields; ``distance`` is differentiable
            w.r.t. ``points_obj``.
        """
        check_float_tensor('points_obj', points_obj, ('B', 'N', 3))
        if points_obj.device != self._device:
            raise InputError(f'points_obj: expected device {self._device} (the SDF\'s; use '
                             f'WarpMeshSDF.to), got {points_obj.device}')
        if near_m is not None and not (isinstance(near_m, (int, float)) and near_m > 0):
            raise InputError(f'near_m: expected None or a positive float (m), got {near_m!r}')
        distance, closest, normal, face = _SignedDistanceFunction.apply(points_obj, self,
                                                                         near_m)
        return SDFResult(distance=distance, closest_point=closest, normal=normal,
                         face_index=face, valid=face >= 0)

    def _query(self, points_obj: torch.Tensor,
               near_m: float | None = None) -> tuple[torch.Tensor, ...]:
        """Run the kernel; (B, N) distance, (B, N, 3) closest, (B, N, 3) normal, (B, N) face."""
        batch, count = points_obj.shape[:2]
        total = batch * count
        dtype = points_obj.dtype
        p32 = points_obj.detach().reshape(total, 3).to(torch.float32).contiguous()
        distance = torch.empty(total, dtype=torch.float32, device=self._device)
        closest = torch.empty(total, 3, dtype=torch.float32, device=self._device)
        normal = torch.empty(total, 3, dtype=torch.float32, device=self._device)
        face = torch.empty(total, dtype=torch.int32, device=self._device)
        if total > 0:
            args = dict(
                kernel=self._kernel, dim=total,
                inputs=[self._mesh.id, wp.from_torch(p32, dtype=wp.vec3, return_ctype=True),
                        min(float(near_m), self.max_distance) if near_m is not None
                        else self.max_distance, *self._box, self.max_distance],
                outputs=[wp.from_torch(distance, return_ctype=True),
                         wp.from_torch(closest, dtype=wp.vec3, return_ctype=True),
                         wp.from_torch(normal, dtype=wp.vec3, return_ctype=True),
                         wp.from_torch(face, return_ctype=True)],
                device=self._wp_device)
            if self._device.type == 'cuda':
                # Launch on torch's current stream so ordering with torch ops is kept.
                with wp.ScopedStream(wp.stream_from_torch(self._device)):
                    wp.launch(**args)
            else:
                wp.launch(**args)
        return (distance.reshape(batch, count).to(dtype),
                closest.reshape(batch, count, 3).to(dtype),
                normal.reshape(batch, count, 3).to(dtype),
                face.reshape(batch, count).to(torch.int64))

    def __repr__(self) -> str:
        return (f'WarpMeshSDF(vertices={self.num_vertices}, faces={self.num_faces}, '
                f'device={self._device}, sign_method={self.sign_method!r}, '
                f'max_distance={self.max_distance})')
