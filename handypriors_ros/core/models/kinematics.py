"""Batched, differentiable forward kinematics and posed geometry of a hand given by a URDF.

``HandKinematics.from_urdf`` parses any URDF with yourdfpy, loads each link's geometry (meshes
through trimesh, primitives as trimesh primitives), samples a surface point set of the whole hand
and keeps everything as tensors on one device, in one dtype. ``forward`` then maps a batch of
joint vectors (and optionally the root's pose in a world frame) to link poses, fingertip
positions and posed surface points, differentiably with respect to both.

``HandKinematics`` implements the hand protocol of ``core.models.hand`` (:class:`HandModel`,
with :class:`HandState` as the posed hand), which is all the tracker and the refinement use.

Frames: the URDF root link is called *root* (``ah_base_link`` for the Allegro hand).
``T_root_link[b, l]`` maps points of link ``l``'s frame into the root frame; given
``T_world_base`` (the root's pose in a world frame), ``T_world_link = T_world_base @ T_root_link``.

How the chain is computed: links are grouped by depth in the tree. Each link's transform
relative to its parent is ``O @ M(q)``, with ``O`` the joint origin and ``M`` the joint motion.
For a revolute joint with unit axis ``a`` (``K = skew(a)``), Rodrigues' formula
``M = I + sin(q) K + (1 - cos(q)) K^2`` makes ``O @ M = O + sin(q) (O K) + (1 - cos q)(O K^2)``,
so with ``O K`` and ``O K^2`` precomputed every local transform of the batch is a few
element-wise operations; a prismatic joint adds ``d (O A)`` (``A`` holds the axis as a
translation). Depth levels are then composed with one batched matmul each.
"""

from __future__ import annotations

import io
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh
import yourdfpy

from handypriors_ros.core.errors import InputError, ModelError
from handypriors_ros.core.geometry.rotations import skew
from handypriors_ros.core.models.hand import HandState
from handypriors_ros.core.models.joint_names import joint_vector_from_state

__all__ = ['HandKinematics', 'HandState', 'resolve_mesh_path']

_FIXED, _REVOLUTE, _PRISMATIC = 0, 1, 2
_SPHERE_SUBDIVISIONS = 2  # icosphere of a URDF sphere: 320 faces
_CYLINDER_SECTIONS = 24


@dataclass(frozen=True)
class _HandModel:
    """Everything parsed from a URDF, as float64/int numpy arrays (device independent).

    Link arrays are in ``link_names`` order (depth-first from the root, children in the order
    their joints appear in the file).
    """

    link_names: tuple[str, ...]
    parent_index: np.ndarray  # (L,) int, -1 for the root
    T_parent_origin: np.ndarray  # (L, 4, 4) origin of each link's parent joint; root: identity
    joint_kind: np.ndarray  # (L,) int: _FIXED / _REVOLUTE / _PRISMATIC
    joint_axis: np.ndarray  # (L, 3) unit axis in the joint frame; zero for fixed joints
    q_source: np.ndarray  # (L,) int index into the joint vector driving the link's joint
    q_multiplier: np.ndarray  # (L,) joint value = q[q_source] * multiplier + offset
    q_offset: np.ndarray  # (L,)
    joint_names: tuple[str, ...]  # (J,) actuated joints, file order
    joint_limits: np.ndarray  # (J, 2) lower, upper; +-inf where unlimited
    fingertip_index: np.ndarray  # (F,) int
    mesh_vertices: np.ndarray  # (V, 3) every link's mesh, in its link frame
    mesh_faces: np.ndarray  # (M, 3) int32, into mesh_vertices
    vertex_link_ids: np.ndarray  # (V,) int
    face_link_ids: np.ndarray  # (M,) int
    surface_points: np.ndarray  # (P, 3) in link frames
    surface_normals: np.ndarray  # (P, 3) in link frames
    point_link_ids: np.ndarray  # (P,) int


def resolve_mesh_path(uri: str, *, package_paths: Mapping[str, str | os.PathLike] | None = None,
                      base_dir: str | os.PathLike | None = None) -> Path:
    """File path of a URDF mesh ``filename``.

    - ``package://pkg/rel``: ``package_paths[pkg] / rel``; else, if ``ament_index_python`` is
      importable and knows ``pkg``, its share directory ``/ rel``.
    - ``file:///abs`` and absolute paths: as they are.
    - relative paths: against ``base_dir`` (the URDF's directory), else the working directory.

    The file's existence is not checked here.

    Raises:
        ModelError: a package that neither ``package_paths`` nor the ament index knows.
    """
    if uri.startswith('package://'):
        package, _, rel = uri[len('package://'):].partition('/')
        if package_paths and package in package_paths:
            return Path(package_paths[package]) / rel
        try:
            from ament_index_python.packages import get_package_share_directory
            return Path(get_package_share_directory(package)) / rel
        except ImportError:
            reason = 'ament_index_python is not importable'
        except (LookupError, OSError, ValueError) as exc:  # PackageNotFoundError is a KeyError
            reason = f'the ament index does not know it ({exc!r})'
        known = sorted(package_paths) if package_paths else []
        raise ModelError(f'mesh {uri!r}: package {package!r} is not in package_paths '
                         f'(known: {known}) and {reason}')
    if uri.startswith('file://'):
        return Path(uri[len('file://'):])
    path = Path(uri)
    if path.is_absolute():
        return path
    return (Path(base_dir) if base_dir is not None else Path.cwd()) / path


def _load_mesh_file(link: str, uri: str, path: Path, scale: object) -> trimesh.Trimesh:
    """A mesh file as one Trimesh (scenes are flattened), scaled; ModelError naming the path."""
    if not path.is_file():
        raise ModelError(f'link {link!r}: mesh file {str(path)!r} (from {uri!r}) does not exist')
    try:
        mesh = trimesh.load(str(path), force='mesh')
    except Exception as exc:  # trimesh raises many types for a bad file; report them all
        raise ModelError(f'link {link!r}: cannot load mesh file {str(path)!r}: {exc}') from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ModelError(f'link {link!r}: mesh file {str(path)!r} holds no triangles')
    if scale is not None:
        factors = np.broadcast_to(np.asarray(scale, dtype=np.float64), (3,))
        mesh.apply_transform(np.diag([*factors, 1.0]))
    return mesh


def _geometry_mesh(link: str, geometry: yourdfpy.Geometry,
                   package_paths: Mapping[str, str | os.PathLike] | None,
                   base_dir: Path | None) -> trimesh.Trimesh:
    """One URDF geometry element as a Trimesh in its own (origin) frame."""
    if geometry.box is not None:
        return trimesh.creation.box(extents=np.asarray(geometry.box.size, dtype=np.float64))
    if geometry.sphere is not None:
        return trimesh.creation.icosphere(subdivisions=_SPHERE_SUBDIVISIONS,
                                          radius=float(geometry.sphere.radius))
    if geometry.cylinder is not None:
        return trimesh.creation.cylinder(radius=float(geometry.cylinder.radius),
                                         height=float(geometry.cylinder.length),
                                         sections=_CYLINDER_SECTIONS)
    if geometry.mesh is not None:
        uri = geometry.mesh.filename
        path = resolve_mesh_path(uri, package_paths=package_paths, base_dir=base_dir)
        return _load_mesh_file(link, uri, path, geometry.mesh.scale)
    raise ModelError(f'link {link!r}: a geometry element has no box, sphere, cylinder or mesh')


def _link_mesh(link: yourdfpy.Link, source: str,
               package_paths: Mapping[str, str | os.PathLike] | None,
               base_dir: Path | None) -> trimesh.Trimesh | None:
    """All geometry of a link, merged, in the link frame (None if it has none)."""
    elements = link.visuals if source == 'visual' else link.collisions
    if not elements:  # fall back to the other kind, e.g. a link with collision geometry only
        elements = link.collisions if source == 'visual' else link.visuals
    parts = []
    for element in elements:
        mesh = _geometry_mesh(link.name, element.geometry, package_paths, base_dir)
        if element.origin is not None:
            mesh.apply_transform(np.asarray(element.origin, dtype=np.float64))
        parts.append(mesh)
    if not parts:
        return None
    vertices, faces, offset = [], [], 0
    for mesh in parts:
        vertices.append(np.asarray(mesh.vertices, dtype=np.float64))
        faces.append(np.asarray(mesh.faces, dtype=np.int64) + offset)
        offset += len(mesh.vertices)
    return trimesh.Trimesh(np.concatenate(vertices), np.concatenate(faces), process=False)


def _parse_urdf(urdf: str | os.PathLike) -> tuple[yourdfpy.URDF, Path | None]:
    """Parse a URDF file path or XML text; returns the model and the file's directory."""
    kwargs = dict(build_scene_graph=False, load_meshes=False,
                  build_collision_scene_graph=False, load_collision_meshes=False)
    if isinstance(urdf, str) and urdf.lstrip().startswith('<'):
        source, base_dir, what = io.BytesIO(urdf.encode('utf-8')), None, 'URDF text'
    elif isinstance(urdf, (str, os.PathLike)):
        path = Path(urdf)
        if not path.is_file():
            raise ModelError(f'urdf: file {str(path)!r} does not exist')
        source, base_dir, what = str(path), path.resolve().parent, f'URDF file {str(path)!r}'
    else:
        raise InputError(f'urdf: expected a file path or URDF XML text, got {type(urdf).__name__}')
    try:
        # yourdfpy falls back to a recovering parser on malformed XML; be strict, as ROS is.
        if isinstance(source, str):
            ET.parse(source)
        else:
            ET.fromstring(source.getvalue())
        robot = yourdfpy.URDF.load(source, **kwargs)
    except Exception as exc:  # lxml / yourdfpy raise many types on a malformed document
        raise ModelError(f'{what}: cannot parse: {exc}') from exc
    if not robot.validate():
        raise ModelError(f'{what}: invalid URDF: {"; ".join(map(str, robot.errors))}')
    return robot, base_dir


def _build_model(robot: yourdfpy.URDF, base_dir: Path | None, *, source: str,
                 package_paths: Mapping[str, str | os.PathLike] | None,
                 fingertip_links: Sequence[str] | None, surface_points: int,
                 seed: int) -> _HandModel:
    """The kinematic tree, joint parameters and geometry of a parsed URDF."""
    links = {link.name: link for link in robot.robot.links}
    joints = list(robot.robot.joints)
    parent_joint: dict[str, yourdfpy.Joint] = {}
    children: dict[str, list[str]] = {name: [] for name in links}
    for joint in joints:
        for end in (joint.parent, joint.child):
            if end not in links:
                raise ModelError(f'joint {joint.name!r}: link {end!r} is not defined')
        if joint.child in parent_joint:
            raise ModelError(f'link {joint.child!r} is the child of two joints '
                             f'({parent_joint[joint.child].name!r}, {joint.name!r})')
        parent_joint[joint.child] = joint
        children[joint.parent].append(joint.child)
    roots = [name for name in links if name not in parent_joint]
    if len(roots) != 1:
        raise ModelError(f'expected one root link (a link that is no joint\'s child), got {roots}')

    order: list[str] = []
    stack = [roots[0]]
    while stack:  # depth-first, children in file order
        name = stack.pop()
        order.append(name)
        stack.extend(reversed(children[name]))
    if len(order) != len(links):
        unreachable = sorted(set(links) - set(order))
        raise ModelError(f'links not connected to the root {roots[0]!r}: {unreachable}')
    index = {name: i for i, name in enumerate(order)}

    actuated = [j for j in joints if j.type != 'fixed' and j.mimic is None]
    joint_names = tuple(j.name for j in actuated)
    joint_index = {name: i for i, name in enumerate(joint_names)}
    by_name = {j.name: j for j in joints}
    limits = np.empty((len(actuated), 2))
    for i, joint in enumerate(actuated):
        if joint.type == 'continuous' or joint.limit is None:
            limits[i] = (-math.inf, math.inf)
        else:
            limits[i] = (joint.limit.lower, joint.limit.upper)

    L = len(order)
    parent_index = np.full(L, -1, dtype=np.int64)
    T_parent_origin = np.tile(np.eye(4), (L, 1, 1))
    joint_kind = np.zeros(L, dtype=np.int64)
    joint_axis = np.zeros((L, 3))
    q_source = np.zeros(L, dtype=np.int64)
    q_multiplier = np.zeros(L)
    q_offset = np.zeros(L)
    for i, name in enumerate(order):
        joint = parent_joint.get(name)
        if joint is None:
            continue
        parent_index[i] = index[joint.parent]
        if joint.origin is not None:
            T_parent_origin[i] = np.asarray(joint.origin, dtype=np.float64)
        if joint.type == 'fixed':
            continue
        if joint.type not in ('revolute', 'continuous', 'prismatic'):
            raise ModelError(f'joint {joint.name!r}: type {joint.type!r} is not supported '
                             f'(expected revolute, continuous, prismatic or fixed)')
        joint_kind[i] = _PRISMATIC if joint.type == 'prismatic' else _REVOLUTE
        axis = np.asarray(joint.axis if joint.axis is not None else (1.0, 0.0, 0.0), float)
        norm = float(np.linalg.norm(axis))
        if not norm > 1e-9:
            raise ModelError(f'joint {joint.name!r}: axis {axis.tolist()} has zero length')
        joint_axis[i] = axis / norm
        # Follow mimic links down to the actuated joint: value = m * q + o, composed.
        multiplier, offset, driver, seen = 1.0, 0.0, joint, {joint.name}
        while driver.mimic is not None:
            mimic = driver.mimic
            if mimic.joint not in by_name or mimic.joint in seen:
                raise ModelError(f'joint {driver.name!r}: mimics {mimic.joint!r}, which is '
                                 f'unknown or part of a mimic cycle')
            m = 1.0 if mimic.multiplier is None else float(mimic.multiplier)
            o = 0.0 if mimic.offset is None else float(mimic.offset)
            multiplier, offset = multiplier * m, multiplier * o + offset
            driver = by_name[mimic.joint]
            seen.add(driver.name)
        if driver.name not in joint_index:
            raise ModelError(f'joint {joint.name!r}: mimics {driver.name!r}, which is not an '
                             f'actuated joint')
        q_source[i] = joint_index[driver.name]
        q_multiplier[i], q_offset[i] = multiplier, offset

    if fingertip_links is None:
        fingertip_index = np.array([i for i, name in enumerate(order) if not children[name]],
                                   dtype=np.int64)
    else:
        unknown = [name for name in fingertip_links if name not in index]
        if unknown:
            raise InputError(f'fingertip_links: links {unknown} are not in the URDF '
                             f'(links: {list(order)})')
        fingertip_index = np.array([index[name] for name in fingertip_links], dtype=np.int64)

    vertices, faces, vertex_ids, face_ids, offset = [], [], [], [], 0
    for i, name in enumerate(order):
        mesh = _link_mesh(links[name], source, package_paths, base_dir)
        if mesh is None:
            continue
        vertices.append(np.asarray(mesh.vertices, dtype=np.float64))
        faces.append(np.asarray(mesh.faces, dtype=np.int64) + offset)
        vertex_ids.append(np.full(len(mesh.vertices), i, dtype=np.int64))
        face_ids.append(np.full(len(mesh.faces), i, dtype=np.int64))
        offset += len(mesh.vertices)
    if vertices:
        mesh_vertices = np.concatenate(vertices)
        mesh_faces = np.concatenate(faces)
        vertex_link_ids, face_link_ids = np.concatenate(vertex_ids), np.concatenate(face_ids)
    else:
        mesh_vertices, mesh_faces = np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
        vertex_link_ids = face_link_ids = np.zeros(0, dtype=np.int64)

    if surface_points > 0:
        if len(mesh_faces) == 0:
            raise ModelError(f'surface_points: {surface_points} requested, but the URDF has no '
                             f'visual or collision geometry')
        # Link meshes stay in their own frames: areas, hence the sampling density, are the same.
        merged = trimesh.Trimesh(mesh_vertices, mesh_faces, process=False)
        points, face_index = trimesh.sample.sample_surface(merged, surface_points, seed=seed)
        point_link_ids = face_link_ids[face_index]
        by_link = np.argsort(point_link_ids, kind='stable')  # contiguous per link
        points, face_index = points[by_link], face_index[by_link]
        point_link_ids = point_link_ids[by_link]
        normals = np.asarray(merged.face_normals, dtype=np.float64)[face_index]
    else:
        points, normals = np.zeros((0, 3)), np.zeros((0, 3))
        point_link_ids = np.zeros(0, dtype=np.int64)

    return _HandModel(
        link_names=tuple(order), parent_index=parent_index, T_parent_origin=T_parent_origin,
        joint_kind=joint_kind, joint_axis=joint_axis, q_source=q_source,
        q_multiplier=q_multiplier, q_offset=q_offset, joint_names=joint_names,
        joint_limits=limits, fingertip_index=fingertip_index, mesh_vertices=mesh_vertices,
        mesh_faces=mesh_faces.astype(np.int32), vertex_link_ids=vertex_link_ids,
        face_link_ids=face_link_ids, surface_points=np.asarray(points, dtype=np.float64),
        surface_normals=normals, point_link_ids=point_link_ids)


_CHUNK = 64  # rows per chunk of posed points: bounds the zero padding to < 64 per link


def _pack_by_link(link_ids: np.ndarray, points_h: np.ndarray,
                  chunk: int = _CHUNK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lay out homogeneous link-frame points in per-link chunks, so that one batched matmul
    poses them all.

    Args:
        link_ids: (K,) link index of each point.
        points_h: (K, 4) homogeneous coordinates (w = 1 for points, 0 for directions).
        chunk: N, rows per chunk.
    Returns:
        X_chunk: (C, N, 4) the points, each chunk holding points of one link, zero-padded;
        chunk_link: (C,) the link of each chunk;
        rows: (K,) row of point k in ``X_chunk.reshape(C * N, 4)``.
    """
    X, chunk_link = [], []
    rows = np.empty(len(link_ids), dtype=np.int64)
    for link in np.unique(link_ids):
        members = np.flatnonzero(link_ids == link)
        for first in range(0, len(members), chunk):
            part = members[first:first + chunk]
            rows[part] = len(chunk_link) * chunk + np.arange(len(part))
            block = np.zeros((chunk, 4))
            block[:len(part)] = points_h[part]
            X.append(block)
            chunk_link.append(link)
    if not X:
        return np.zeros((0, chunk, 4)), np.zeros(0, dtype=np.int64), rows
    return np.stack(X), np.asarray(chunk_link, dtype=np.int64), rows


def _pose_packed(T_frame_link: torch.Tensor, X_chunk: torch.Tensor, chunk_link: torch.Tensor,
                 rows: torch.Tensor) -> torch.Tensor:
    """Homogeneous link-frame points (packed by :func:`_pack_by_link`) in the frame of T.

    Args:
        T_frame_link: (B, L, 4, 4).
        X_chunk: (C, N, 4).
        chunk_link: (C,).
        rows: (K,).
    Returns:
        (B, K, 3): ``R p + w t`` of each point.
    """
    B = T_frame_link.shape[0]
    C, N, _ = X_chunk.shape
    # index_select: several times faster than advanced indexing on CPU.
    T_frame_chunk = T_frame_link.index_select(1, chunk_link)  # (B, C, 4, 4)
    # One matmul per chunk for the whole batch, (N, 4) @ (4, 4B), instead of B * C tiny ones:
    # X_frame[c, n, 4b + i] = sum_j X_chunk[c, n, j] T_frame_chunk[b, c, i, j] (p_frame = T p).
    T_cols = T_frame_chunk.permute(1, 3, 0, 2).reshape(C, 4, 4 * B)  # (C, 4, 4B)
    X_frame = X_chunk @ T_cols  # (C, N, 4B)
    posed = X_frame.reshape(C * N, B, 4).index_select(0, rows)  # (K, B, 4)
    return posed.transpose(0, 1)[..., :3].contiguous()  # (B, K, 3)


def _fingertip_radius(m: _HandModel) -> float:
    """Mean distance of the fingertip links' mesh vertices from their link origins [m]."""
    tips = np.isin(m.vertex_link_ids, m.fingertip_index)
    if not tips.any():
        return 0.0
    return float(np.linalg.norm(m.mesh_vertices[tips], axis=1).mean())


class HandKinematics:
    """Forward kinematics, fingertips, surface points and posed mesh of a URDF hand (a
    :class:`~handypriors_ros.core.models.hand.HandModel`).

    Build with :meth:`from_urdf`. Tensors live on ``device`` in ``dtype`` (float32 or float64);
    :meth:`to` returns a copy elsewhere. Inputs must already be on that device, in that dtype.

    Example::

        hand = HandKinematics.from_urdf('urdf/allegro_hand_right.urdf')
        state = hand.forward(torch.zeros(1, hand.num_joints))
        state.fingertips  # (1, 4, 3), thumb/index/middle/ring tips in ah_base_link
    """

    def __init__(self, model: _HandModel, *, device: torch.device | str = 'cpu',
                 dtype: torch.dtype = torch.float32,
                 joint_name_map: Mapping[str, str] | None = None,
                 fingertip_radius_m: float | None = None) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise InputError(f'dtype: expected torch.float32 or torch.float64, got {dtype}')
        if fingertip_radius_m is None:
            fingertip_radius_m = _fingertip_radius(model)
        elif not (isinstance(fingertip_radius_m, (int, float))
                  and 0 <= fingertip_radius_m < math.inf):
            raise InputError(f'fingertip_radius_m: expected a finite float >= 0 [m], got '
                             f'{fingertip_radius_m!r}')
        self._fingertip_radius_m = float(fingertip_radius_m)
        self._model = model
        self._device = torch.device(device)
        self._dtype = dtype
        self._joint_name_map = dict(joint_name_map) if joint_name_map else {}

        def tensor(a: np.ndarray, dt: torch.dtype = dtype) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=self._device)

        m = model
        # Depth levels: links of one depth are composed together; level order is depth-major.
        depth = np.zeros(len(m.link_names), dtype=np.int64)
        for i, parent in enumerate(m.parent_index):  # parents precede children (DFS order)
            if parent >= 0:
                depth[i] = depth[parent] + 1
        level_order = np.argsort(depth, kind='stable')
        position = np.empty_like(level_order)
        position[level_order] = np.arange(len(level_order))
        # Per depth d >= 1: (start, end) rows of the level and how to take each row's parent
        # from the previous level: None when they are that level in order, a one-row slice
        # when all share one parent (it broadcasts), else an index tensor.
        self._levels: list[tuple[int, int, torch.Tensor | slice | None]] = []
        for d in range(1, int(depth.max(initial=0)) + 1):
            members = np.flatnonzero(depth[level_order] == d)
            start, end = int(members[0]), int(members[-1]) + 1
            prev = np.flatnonzero(depth[level_order] == d - 1)
            parents = position[m.parent_index[level_order[start:end]]] - int(prev[0])
            if len(parents) == len(prev) and np.array_equal(parents, np.arange(len(prev))):
                take: torch.Tensor | slice | None = None
            elif np.all(parents == parents[0]):
                take = slice(int(parents[0]), int(parents[0]) + 1)
            else:
                take = tensor(parents, torch.long)
            self._levels.append((start, end, take))
        self._link_from_level = tensor(position, torch.long)  # (L,) level row of each link

        # Per link, in level order: origin O, O K, O K^2 (revolute) and O A (prismatic).
        O = torch.as_tensor(m.T_parent_origin[level_order], dtype=torch.float64)  # (L, 4, 4)
        axis = torch.as_tensor(m.joint_axis[level_order], dtype=torch.float64)  # (L, 3)
        kind = m.joint_kind[level_order]
        K4 = torch.zeros(len(kind), 4, 4, dtype=torch.float64)
        K4[:, :3, :3] = skew(axis)
        A4 = torch.zeros(len(kind), 4, 4, dtype=torch.float64)
        A4[:, :3, 3] = axis
        revolute = torch.as_tensor(kind == _REVOLUTE)[:, None, None]
        prismatic = torch.as_tensor(kind == _PRISMATIC)[:, None, None]
        self._O = tensor(O)
        self._OK = tensor(torch.where(revolute, O @ K4, 0.0))
        self._OKK = tensor(torch.where(revolute, O @ K4 @ K4, 0.0))
        self._OA = tensor(torch.where(prismatic, O @ A4, 0.0))
        self._q_source = tensor(m.q_source[level_order], torch.long)
        self._q_multiplier = tensor(m.q_multiplier[level_order])
        self._q_offset = tensor(m.q_offset[level_order])

        self._fingertip_index = tensor(m.fingertip_index, torch.long)
        self._joint_limits = tensor(m.joint_limits)
        self._mesh_vertices = tensor(m.mesh_vertices)
        self._mesh_faces = tensor(m.mesh_faces, torch.int32)
        self._vertex_link_ids = tensor(m.vertex_link_ids, torch.long)
        self._surface_points = tensor(m.surface_points)
        self._surface_normals = tensor(m.surface_normals)
        self._point_link_ids = tensor(m.point_link_ids, torch.long)
        # Posing layouts: surface points (w = 1) then normals (w = 0); mesh vertices (w = 1).
        P = len(m.point_link_ids)
        X, links, rows = _pack_by_link(
            np.concatenate([m.point_link_ids, m.point_link_ids]),
            np.concatenate([np.c_[m.surface_points, np.ones(P)],
                            np.c_[m.surface_normals, np.zeros(P)]]))
        self._surface_packing = (tensor(X), tensor(links, torch.long), tensor(rows, torch.long))
        X, links, rows = _pack_by_link(m.vertex_link_ids,
                                       np.c_[m.mesh_vertices, np.ones(len(m.mesh_vertices))])
        self._mesh_packing = (tensor(X), tensor(links, torch.long), tensor(rows, torch.long))

    @classmethod
    def from_urdf(cls, urdf: str | os.PathLike, *, device: torch.device | str = 'cpu',
                  dtype: torch.dtype = torch.float32,
                  joint_name_map: Mapping[str, str] | None = None, surface_points: int = 2000,
                  seed: int = 0, package_paths: Mapping[str, str | os.PathLike] | None = None,
                  geometry: str = 'visual',
                  fingertip_links: Sequence[str] | None = None,
                  fingertip_radius_m: float | None = None) -> HandKinematics:
        """Load a hand from a URDF file or URDF XML text.

        Supported joints: revolute, continuous, prismatic, fixed, and mimic joints of those (not
        part of the joint vector). Joint axes are normalised, as KDL (robot_state_publisher) does.

        Args:
            urdf: path of a ``.urdf`` file, or the XML text itself (relative mesh paths then
                resolve against the working directory).
            device, dtype: where and in which float type (float32/float64) tensors live.
            joint_name_map: incoming joint name -> URDF joint name, used by
                :meth:`joint_vector` (e.g. ``ros1_to_ros2_name_map()``).
            surface_points: number P of area-weighted surface samples of the whole hand.
            seed: seed of that sampling (the samples are deterministic given it).
            package_paths: package name -> directory, for ``package://`` mesh URIs; packages not
                listed are looked up in the ament index where ``ament_index_python`` imports.
            geometry: ``'visual'`` or ``'collision'``: which geometry makes the meshes and the
                surface samples (a link without it falls back to the other kind).
            fingertip_links: names of the fingertip links, in the order of
                ``HandState.fingertips``; default: the leaf links in ``link_names`` order (for the
                Allegro URDF: ``ah_link_04, 14, 24, 34`` = thumb, index, middle, ring).
            fingertip_radius_m: radius of the fingertips [m]; default: the mean distance of the
                fingertip links' mesh vertices from their link origins (exact for spherical
                tips centred on the link origin, as the Allegro hand's 12 mm spheres; 0 when
                the fingertip links have no geometry).
        Raises:
            ModelError: the URDF cannot be read or is invalid; a mesh is missing or unreadable
                (the message names its path); a joint type is unsupported.
            InputError: an argument has a wrong type or value.
        """
        if geometry not in ('visual', 'collision'):
            raise InputError(f"geometry: expected 'visual' or 'collision', got {geometry!r}")
        if isinstance(surface_points, bool) or not isinstance(surface_points, int) \
                or surface_points < 0:
            raise InputError(f'surface_points: expected an int >= 0, got {surface_points!r}')
        robot, base_dir = _parse_urdf(urdf)
        model = _build_model(robot, base_dir, source=geometry, package_paths=package_paths,
                             fingertip_links=fingertip_links, surface_points=surface_points,
                             seed=seed)
        return cls(model, device=device, dtype=dtype, joint_name_map=joint_name_map,
                   fingertip_radius_m=fingertip_radius_m)

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> HandKinematics:
        """A copy with every tensor on ``device`` in ``dtype`` (None keeps the current one)."""
        return HandKinematics(self._model, device=self._device if device is None else device,
                              dtype=self._dtype if dtype is None else dtype,
                              joint_name_map=self._joint_name_map,
                              fingertip_radius_m=self._fingertip_radius_m)

    # -- description -------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def joint_names(self) -> tuple[str, ...]:
        """(J,) actuated joints (not fixed, not mimic), in URDF order: the joint vector's order."""
        return self._model.joint_names

    @property
    def num_joints(self) -> int:
        return len(self._model.joint_names)

    @property
    def joint_limits(self) -> torch.Tensor:
        """(J, 2) lower and upper limits [rad or m]; +-inf for continuous joints."""
        return self._joint_limits

    @property
    def link_names(self) -> tuple[str, ...]:
        """(L,) links, depth-first from the root (children in the order of their joints)."""
        return self._model.link_names

    @property
    def root_link(self) -> str:
        return self._model.link_names[0]

    @property
    def fingertip_links(self) -> tuple[str, ...]:
        """(F,) links whose origins are ``HandState.fingertips``."""
        return tuple(self._model.link_names[i] for i in self._model.fingertip_index)

    @property
    def fingertip_radius_m(self) -> float:
        """Radius of the fingertips [m] (see :meth:`from_urdf`)."""
        return self._fingertip_radius_m

    @property
    def joint_name_map(self) -> dict[str, str]:
        return dict(self._joint_name_map)

    @property
    def mesh_vertices_link(self) -> torch.Tensor:
        """(V, 3) vertices of every link's mesh, each in its own link frame."""
        return self._mesh_vertices

    @property
    def mesh_faces(self) -> torch.Tensor:
        """(M, 3) int32 triangles into ``mesh_vertices_link`` (and ``posed_mesh``'s vertices)."""
        return self._mesh_faces

    @property
    def vertex_link_ids(self) -> torch.Tensor:
        """(V,) int64 link index of each mesh vertex."""
        return self._vertex_link_ids

    @property
    def surface_points_link(self) -> torch.Tensor:
        """(P, 3) surface samples in their link frames (grouped by link)."""
        return self._surface_points

    @property
    def surface_normals_link(self) -> torch.Tensor:
        """(P, 3) unit normals of the samples in their link frames."""
        return self._surface_normals

    @property
    def point_link_ids(self) -> torch.Tensor:
        """(P,) int64 link index of each surface sample."""
        return self._point_link_ids

    def link_index(self, name: str) -> int:
        """Index of a link in ``link_names``; InputError if unknown."""
        try:
            return self._model.link_names.index(name)
        except ValueError:
            raise InputError(f'name: link {name!r} is not in the model '
                             f'(links: {list(self._model.link_names)})') from None

    def link_mesh(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One link's mesh in its link frame.

        Returns:
            vertices (V_l, 3) in ``dtype``; faces (M_l, 3) int32 into those vertices
            (both empty for a link without geometry).
        """
        i = self.link_index(name)
        mask = self._vertex_link_ids == i
        first = int(torch.nonzero(mask)[0, 0]) if bool(mask.any()) else 0
        faces = self._mesh_faces[self._vertex_link_ids[self._mesh_faces[:, 0].long()] == i]
        return self._mesh_vertices[mask], (faces - first).to(torch.int32)

    def joint_vector(self, names: Sequence[str],
                     positions: Sequence[float] | np.ndarray) -> torch.Tensor:
        """A JointState-like input (names, positions) as a joint vector in model order.

        Names pass through ``joint_name_map`` first; joints the model lacks are ignored.

        Returns:
            q: (J,) in ``dtype`` on ``device``.
        Raises:
            InputError: missing joints or non-finite positions (named), mismatched lengths.
        """
        q = joint_vector_from_state(names, positions, self._model.joint_names,
                                    name_map=self._joint_name_map)
        return torch.as_tensor(q, dtype=self._dtype, device=self._device)

    # -- kinematics --------------------------------------------------------------------------

    def _check(self, name: str, x: object, shape: tuple[int | None, ...]) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise InputError(f'{name}: expected a torch.Tensor, got {type(x).__name__}')
        if x.dim() != len(shape) or any(s is not None and s != n for s, n in zip(shape, x.shape)):
            wanted = ', '.join('B' if s is None else str(s) for s in shape)
            raise InputError(f'{name}: expected shape ({wanted}), got {tuple(x.shape)}')
        if x.dtype != self._dtype or x.device != self._device:
            raise InputError(f'{name}: expected {self._dtype} on {self._device}, '
                             f'got {x.dtype} on {x.device}')
        return x

    def link_transforms(self, q: torch.Tensor) -> torch.Tensor:
        """Link poses in the root frame.

        Args:
            q: (B, J) joint positions in ``joint_names`` order [rad or m].
        Returns:
            T_root_link: (B, L, 4, 4), ``link_names`` order.
        """
        self._check('q', q, (None, self.num_joints))
        B = q.shape[0]
        if self.num_joints:
            q_link = q.index_select(1, self._q_source) * self._q_multiplier \
                + self._q_offset  # (B, L)
        else:  # only fixed joints
            q_link = self._q_offset.expand(B, -1)
        s = torch.sin(q_link)[..., None, None]  # (B, L, 1, 1)
        c1 = (1.0 - torch.cos(q_link))[..., None, None]
        # T_parent_link = O (I + s K + (1 - c) K^2 + d A), rows in level order.
        T_local = self._O + s * self._OK + c1 * self._OKK + q_link[..., None, None] * self._OA
        T_level = T_local[:, :1]  # the root: O = identity, (B, 1, 4, 4)
        done = [T_level]
        for start, end, take in self._levels:
            if take is None:
                T_parent = T_level
            elif isinstance(take, slice):
                T_parent = T_level[:, take]  # (B, 1, 4, 4), broadcasts
            else:
                T_parent = T_level.index_select(1, take)  # (B, n_d, 4, 4)
            T_level = T_parent @ T_local[:, start:end]  # (B, n_d, 4, 4)
            done.append(T_level)
        T_root_level = torch.cat(done, dim=1)  # (B, L, 4, 4), level order
        return T_root_level.index_select(1, self._link_from_level)  # (B, L, 4, 4), link order

    def forward(self, q: torch.Tensor, T_world_base: torch.Tensor | None = None) -> HandState:
        """Pose the hand.

        Args:
            q: (B, J) joint positions in ``joint_names`` order [rad or m].
            T_world_base: optional (B, 4, 4) pose of the URDF root link (``ah_base_link``) in a
                world frame; when given, fingertips and surface samples are in that frame.
        Returns:
            :class:`HandState`.
        """
        T_root_link = self.link_transforms(q)
        if T_world_base is not None:
            self._check('T_world_base', T_world_base, (q.shape[0], 4, 4))
            T_world_link = T_world_base[:, None] @ T_root_link  # (B, L, 4, 4)
            T_frame_link, frame = T_world_link, 'world'
        else:
            T_world_link, T_frame_link, frame = None, T_root_link, self.root_link
        posed = _pose_packed(T_frame_link, *self._surface_packing)  # (B, 2P, 3)
        P = self._surface_points.shape[0]
        points, normals = posed[:, :P], posed[:, P:]  # (B, P, 3) each
        return HandState(
            T_root_link=T_root_link,
            T_world_link=T_world_link,
            fingertips=T_frame_link.index_select(1, self._fingertip_index)[..., :3, 3],
            surface_points=points,
            surface_normals=normals,
            point_link_ids=self._point_link_ids,
            frame=frame,
        )

    def posed_mesh(self, q: torch.Tensor, T_world_base: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """One merged triangle mesh of the posed hand (for rendering).

        Args:
            q: (B, J) joint positions.
            T_world_base: optional (B, 4, 4) root pose in a world frame.
        Returns:
            vertices: (B, V, 3) in the world frame if ``T_world_base`` is given, else the root's;
            faces: (M, 3) int32, shared by the batch.
        """
        T_frame_link = self.link_transforms(q)
        if T_world_base is not None:
            self._check('T_world_base', T_world_base, (q.shape[0], 4, 4))
            T_frame_link = T_world_base[:, None] @ T_frame_link
        vertices = _pose_packed(T_frame_link, *self._mesh_packing)  # (B, V, 3)
        return vertices, self._mesh_faces
