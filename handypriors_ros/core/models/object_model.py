"""The rigid object being tracked: its mesh, colours, render proxy, samples and symmetry.

``ObjectModel.from_file(path)`` reads an OBJ, PLY, STL, OFF, GLB or glTF file (a scene is merged
into one mesh with its node transforms applied), checks it, and derives everything the tracker
needs, once, as tensors on the chosen device:

- the full-resolution render mesh (``vertices``, ``faces``, ``vertex_colors`` and, for a
  single textured mesh, ``uv``/``texture``);
- a render proxy decimated to a face budget (vertex clustering,
  :func:`decimate_vertex_clustering`);
- area-weighted, seeded surface samples with normals;
- size figures (``diameter``, ``center``, ``extents``);
- the object's rotational symmetry (:class:`ObjectSymmetry`), used to choose ADD or ADD-S;
- ``mesh``: a geometry-only :class:`trimesh.Trimesh` at full resolution with vertices merged by
  position, for exact signed distances (the physics prior).

Units and frame: metres, in the mesh file's own frame (``T_cam_obj`` maps points of this frame
into the camera frame); nothing is recentred. ``scale`` converts files in other units
(``scale=0.001`` for millimetres); a bounding-box diagonal above 2 m after scaling triggers a
:class:`MeshWarning` that suggests it.

Problems with the file raise :class:`~handypriors_ros.core.errors.ModelError` naming the path and
the problem (unreadable, empty, NaN/Inf vertices); repairable ones warn (:class:`MeshWarning`)
and are repaired: degenerate faces are removed (the warning says how many), inconsistent or
inward-facing winding of a closed mesh is fixed, and an open mesh is reported as not watertight
(signed distance is still computed, but its inside/outside sign may be wrong).

Colours are RGB floats in [0, 1]. A texture is baked into per-vertex colours by sampling it at
the vertices' UVs (nearest texel, trimesh's ``uv_to_color``); face colours are kept exact by
splitting vertices where the colour changes; a mesh without colour is a uniform grey.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import trimesh
from scipy.spatial import ConvexHull, QhullError, cKDTree
from scipy.spatial.distance import cdist

from handypriors_ros.core.errors import InputError, ModelError

#: RGB in [0, 1] given to a mesh file without any colour.
DEFAULT_GREY = (0.6, 0.6, 0.6)

#: A bounding-box diagonal above this (metres, after ``scale``) suggests a millimetre file.
MILLIMETRE_DIAGONAL_M = 2.0

#: Object sizes (diameter, metres after ``scale``) a hand-held object can have; outside them
#: :func:`check_object_size` names the likely unit of the file.
SIZE_RANGE_M = (0.01, 1.0)

#: Units a mesh file is commonly written in: (name, factor to metres).
_UNITS = (('millimetres', 0.001), ('centimetres', 0.01), ('inches', 0.0254), ('metres', 1.0))

#: File suffixes ``load_object_mesh`` accepts (lower case).
SUPPORTED_SUFFIXES = ('.obj', '.ply', '.stl', '.off', '.glb', '.gltf')

# A face whose area is below this fraction of the squared bounding-box diagonal is degenerate.
_DEGENERATE_AREA_FRACTION = 1e-14
# Vertices closer than this (metres) are the same vertex when merging.
_MERGE_DIGITS = 9


class ObjectSizeError(ModelError):
    """The object's size after scaling is not that of a hand-held object (wrong units)."""


def check_object_size(diameter_m: float, *, where: str = 'object mesh', scale: float = 1.0,
                      scale_flag: str = 'scale') -> None:
    """Refuse an object whose diameter (metres, after ``scale``) is outside
    :data:`SIZE_RANGE_M`, naming the file's likely unit and the scale that fixes it.

    Args:
        diameter_m: the object's diameter after scaling [m].
        where: how the message names the mesh.
        scale: the scale that was applied (the file's size is ``diameter_m / scale``).
        scale_flag: how the message names the scale option (``--object-scale``).
    Raises:
        ObjectSizeError: e.g. ``m.ply: object diameter 187 m after scale 1 is outside 1 cm - 1
            m; the file looks like it is in millimetres: use --object-scale 0.001``.
    """
    low, high = SIZE_RANGE_M
    if not np.isfinite(diameter_m) or diameter_m <= 0:
        raise ObjectSizeError(f'{where}: object diameter is {diameter_m!r} m: the mesh has no '
                              'extent (all vertices at one point?)')
    if low <= diameter_m <= high:
        return
    raw = diameter_m / scale  # the size in the file's own units
    fits = [(name, factor) for name, factor in _UNITS if low <= raw * factor <= high]
    head = (f'{where}: object diameter {_length(diameter_m)} after {scale_flag} {scale:g} is '
            f'outside {_length(low)} - {_length(high)} (a hand-held object)')
    if fits:
        # the unit giving a size nearest 10 cm (log scale): the likeliest
        name, factor = min(fits, key=lambda f: abs(np.log(raw * f[1] / 0.1)))
        raise ObjectSizeError(f'{head}; the file looks like it is in {name}: use {scale_flag} '
                              f'{factor:g}')
    raise ObjectSizeError(f'{head}; give {scale_flag} with the factor from the file\'s units to '
                          f'metres (file size {raw:.4g} units)')


def mesh_diameter(vertices: np.ndarray) -> float:
    """Largest distance between two of the (V, 3) vertices [their units] (what
    :attr:`ObjectModel.diameter` holds, without building the model)."""
    return _max_pairwise_distance(np.unique(np.asarray(vertices, dtype=np.float64), axis=0))


def _length(m: float) -> str:
    if m >= 1.0:
        return f'{m:.3g} m'
    if m >= 0.01:
        return f'{m * 100:.3g} cm'
    return f'{m * 1000:.3g} mm'


class MeshWarning(UserWarning):
    """A mesh file had a repairable problem (degenerate faces, open surface, unit suspicion)."""


# --------------------------------------------------------------------------------------------
# symmetry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ObjectSymmetry:
    """Rotational symmetries of an object's surface, in its own frame.

    A symmetry is a rotation ``R`` about ``origin`` mapping the surface onto itself within
    ``tolerance``: ``p -> R @ (p - origin) + origin``.

    Attributes:
        kind: ``'continuous'`` (a surface of revolution about ``axis``, e.g. a can),
            ``'discrete'`` (finitely many symmetries, e.g. a box) or ``'none'``.
        rotations: (K, 3, 3) float64 discrete symmetry rotations, the identity first; for a
            continuous object, those not about ``axis`` (e.g. a can's end-over-end flips).
        origin: (3,) float64 point the rotations and the axis pass through (the area-weighted
            surface centroid, which every symmetry fixes).
        axis: (3,) float64 unit axis of continuous symmetry, or None.
        tolerance: metres; the allowed rise of the 95th-percentile point-to-surface distance.
    """

    kind: str
    rotations: np.ndarray
    origin: np.ndarray
    axis: np.ndarray | None
    tolerance: float

    @property
    def is_symmetric(self) -> bool:
        """True when ADD-S (not ADD) is the fair pose error for this object."""
        return self.kind != 'none'

    def transforms(self) -> np.ndarray:
        """(K, 4, 4) float64 homogeneous transforms of :attr:`rotations` about :attr:`origin`."""
        k = len(self.rotations)
        T = np.tile(np.eye(4), (k, 1, 1))                                   # (K, 4, 4)
        T[:, :3, :3] = self.rotations
        T[:, :3, 3] = self.origin - self.rotations @ self.origin
        return T


def _axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` (rad) about the unit ``axis`` (Rodrigues)."""
    K = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * K + (1.0 - np.cos(angle)) * (K @ K)


def detect_symmetry(mesh: trimesh.Trimesh, *, diameter: float | None = None,
                    tolerance_fraction: float = 0.01, n_points: int = 1000,
                    seed: int = 0) -> ObjectSymmetry:
    """Find the rotational symmetries of a surface by a Chamfer-style test on samples.

    Method: ``n_points`` query points and ``16 * n_points`` reference points are sampled on the
    surface (area-weighted, seeded). A candidate rotation ``R`` about the surface centroid is a
    symmetry when the 95th percentile of the distances from the rotated query points to their
    nearest reference point exceeds the same statistic for the identity (the sampling floor) by
    at most ``tolerance_fraction * diameter``. The 95th percentile ignores features under ~5% of
    the area (a can's seam) yet catches a displaced part (a bottle's off-centre nozzle).

    Candidate axes are the object frame's x, y, z and the principal axes of the surface. About
    each, three generic angles (35, 113, 210 degrees) test continuous symmetry; multiples of
    60 and 90 degrees test discrete symmetry, and the discrete set found is closed under
    composition (so a cube yields all 24 rotations).

    Args:
        mesh: the surface, in its own frame.
        diameter: object diameter in metres; the bounding-box diagonal when None.
        tolerance_fraction: tolerance as a fraction of the diameter.
        n_points: query sample size.
        seed: seed of the surface sampling.
    """
    if diameter is None:
        diameter = float(np.linalg.norm(mesh.extents))
    tolerance = float(tolerance_fraction * diameter)
    query, _ = trimesh.sample.sample_surface(mesh, n_points, seed=seed)
    reference, _ = trimesh.sample.sample_surface(mesh, 16 * n_points, seed=seed + 1)
    tree = cKDTree(reference)
    areas = mesh.area_faces
    origin = (mesh.triangles_center * areas[:, None]).sum(0) / areas.sum()

    def p95(R: np.ndarray) -> float:
        d, _ = tree.query((query - origin) @ R.T + origin)
        return float(np.quantile(d, 0.95))

    floor = p95(np.eye(3))

    def is_symmetry(R: np.ndarray) -> bool:
        return p95(R) <= floor + tolerance

    # candidate axes: frame axes and principal axes of the surface samples, without repeats
    centred = reference - origin
    _, eigenvectors = np.linalg.eigh(centred.T @ centred)
    axes: list[np.ndarray] = []
    for a in list(np.eye(3)) + list(eigenvectors.T):
        a = a / np.linalg.norm(a)
        if all(abs(a @ b) < 0.999 for b in axes):
            axes.append(a)

    continuous_axis, best = None, np.inf
    for a in axes:
        scores = [p95(_axis_angle_matrix(a, np.deg2rad(deg))) for deg in (35.0, 113.0, 210.0)]
        if max(scores) <= floor + tolerance and max(scores) < best:
            continuous_axis, best = a, max(scores)

    def known(R: np.ndarray, found: list[np.ndarray]) -> bool:
        return any(np.abs(R - S).max() < 1e-6 for S in found)

    found = [np.eye(3)]
    for a in axes:
        if continuous_axis is not None and abs(a @ continuous_axis) > 0.999:
            continue
        for deg in (60.0, 90.0, 120.0, 180.0, 240.0, 270.0, 300.0):
            R = _axis_angle_matrix(a, np.deg2rad(deg))
            if not known(R, found) and is_symmetry(R):
                found.append(R)
    if continuous_axis is None:
        # close the set under composition; a finite rotation group has at most 60 elements
        # here (the icosahedral group), so stop there
        grew = True
        while grew and len(found) < 60:
            grew = False
            for A in list(found):
                for B in list(found):
                    R = A @ B
                    if not known(R, found) and is_symmetry(R):
                        found.append(R)
                        grew = True
    if continuous_axis is not None:
        kind = 'continuous'
    elif len(found) > 1:
        kind = 'discrete'
    else:
        kind = 'none'
    return ObjectSymmetry(kind=kind, rotations=np.stack(found), origin=origin,
                          axis=continuous_axis, tolerance=tolerance)


# --------------------------------------------------------------------------------------------
# decimation
# --------------------------------------------------------------------------------------------


def decimate_vertex_clustering(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray,
                               face_budget: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reduce a coloured mesh to at most ``face_budget`` faces by vertex clustering.

    Vertices are grouped by the cell of a cubic grid they fall in; each group becomes one
    vertex at the area-weighted mean position and colour of its members; faces whose corners
    fall in fewer than three cells vanish, and repeated faces are dropped. The cell size is
    the smallest (found by bisection in log scale) that meets the budget.

    Why not quadric decimation: trimesh's ``simplify_quadric_decimation`` needs the optional
    ``fast_simplification`` package, and quadric error ignores vertex colour — it collapses a
    flat printed face into a few large triangles and loses the printing the photometric loss
    relies on. Clustering keeps a roughly uniform vertex density, so colour survives as an
    average over each cell.

    Args:
        vertices: (V, 3) float positions.
        faces: (F, 3) int triangle indices.
        colors: (V, C) float per-vertex attributes (averaged like positions).
        face_budget: the maximum number of faces, >= 4.

    Returns:
        ``(vertices (V', 3), faces (F', 3) int64, colors (V', C))`` with F' <= face_budget; the
        input itself (copied) when it already fits.

    Raises:
        InputError: ``face_budget`` < 4.
        ModelError: no cell size gives a non-empty mesh within the budget.
    """
    if int(face_budget) != face_budget or face_budget < 4:
        raise InputError(f'face_budget: expected an integer >= 4, got {face_budget!r}')
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    colors = np.asarray(colors, dtype=np.float64)
    if len(faces) <= face_budget:
        return vertices.copy(), faces.copy(), colors.copy()

    tri = vertices[faces]                                                     # (F, 3, 3)
    face_area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    weight = np.bincount(faces.ravel(), np.repeat(face_area / 3.0, 3), minlength=len(vertices))
    weight = weight + 1e-30                                                   # isolated vertices
    lower = vertices.min(axis=0)
    diagonal = float(np.linalg.norm(vertices.max(axis=0) - lower))

    def cluster(cell: float) -> tuple[np.ndarray, np.ndarray]:
        ijk = np.floor((vertices - lower) / cell).astype(np.int64)            # (V, 3)
        n = ijk.max(axis=0) + 1
        key = ijk[:, 0] + n[0] * (ijk[:, 1] + n[1] * ijk[:, 2])
        _, inverse = np.unique(key, return_inverse=True)
        f = inverse[faces]
        f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
        _, first = np.unique(np.sort(f, axis=1), axis=0, return_index=True)
        return inverse, f[np.sort(first)]

    # faces ~ 2 * area / cell^2 on a surface: start the bracket around that guess
    guess = np.sqrt(2.0 * face_area.sum() / face_budget)
    low, high = np.log(guess / 16.0), np.log(diagonal)
    for _ in range(24):
        middle = 0.5 * (low + high)
        n_faces = len(cluster(float(np.exp(middle)))[1])
        if n_faces <= face_budget:
            high = middle
            if n_faces >= 0.95 * face_budget:   # close enough to the budget
                break
        else:
            low = middle
    inverse, new_faces = cluster(float(np.exp(high)))
    if len(new_faces) == 0:
        raise ModelError(f'face_budget: {face_budget} faces are too few to keep any face of '
                         f'a {len(faces)}-face mesh by vertex clustering')
    n_clusters = inverse.max() + 1
    total = np.bincount(inverse, weight, minlength=n_clusters)
    new_vertices = np.stack([np.bincount(inverse, weight * vertices[:, k], minlength=n_clusters)
                             for k in range(3)], 1) / total[:, None]
    new_colors = np.stack([np.bincount(inverse, weight * colors[:, k], minlength=n_clusters)
                           for k in range(colors.shape[1])], 1) / total[:, None]
    used = np.unique(new_faces)
    remap = np.full(n_clusters, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return new_vertices[used], remap[new_faces], new_colors[used]


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _describe(source: str | None) -> str:
    return f'{source}' if source is not None else '<trimesh>'


def _texture_image(visual) -> np.ndarray | None:
    """(H, W, 3) float image in [0, 1] of a TextureVisuals' material, or None."""
    material = getattr(visual, 'material', None)
    image = getattr(material, 'image', None)
    if image is None:
        image = getattr(material, 'baseColorTexture', None)
    if image is None:
        return None
    return np.asarray(image.convert('RGB'), dtype=np.float64) / 255.0


def _vertex_colored(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """A copy whose visual is per-vertex colour (texture baked, face colours split, or grey)."""
    mesh = mesh.copy()
    kind = mesh.visual.kind
    if kind == 'texture':
        uv = getattr(mesh.visual, 'uv', None)
        if uv is not None and len(uv) == len(mesh.vertices):
            rgba = mesh.visual.to_color().vertex_colors
        else:
            main = np.asarray(mesh.visual.material.main_color, dtype=np.uint8)
            rgba = np.tile(main, (len(mesh.vertices), 1))
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=rgba)
    elif kind == 'face':
        face_colors = mesh.visual.face_colors.copy()
        mesh.unmerge_vertices()
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.repeat(face_colors, 3, 0))
    elif kind != 'vertex':
        grey = np.array([*(np.asarray(DEFAULT_GREY) * 255).round(), 255], dtype=np.uint8)
        mesh.visual = trimesh.visual.ColorVisuals(
            mesh, vertex_colors=np.tile(grey, (len(mesh.vertices), 1)))
    return mesh


def _check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)):
        raise InputError(f'scale: expected a positive finite number, got {type(scale).__name__}')
    if not np.isfinite(scale) or scale <= 0:
        raise InputError(f'scale: expected a positive finite number, got {scale}')
    return float(scale)


def load_object_mesh(path: str | os.PathLike, *, scale: float = 1.0) -> trimesh.Trimesh:
    """Read a mesh file into one :class:`trimesh.Trimesh`, scaled to metres.

    A scene (GLB/glTF, or an OBJ with several objects) is merged into one mesh with each node's
    transform applied; when it has several parts, each part's colour (texture, face or vertex
    colour, or grey) is first baked into vertex colours. A single mesh keeps its visual as read
    (texture with UVs, vertex or face colours). Nothing else is changed: vertices are not
    merged, so NaNs and degenerate faces stay visible to :meth:`ObjectModel.from_trimesh`.

    Args:
        path: an .obj, .ply, .stl, .off, .glb or .gltf file.
        scale: factor applied to the vertices (0.001 for a millimetre file).

    Raises:
        ModelError: the file is missing, of an unsupported type, unreadable, or has no faces.
        InputError: ``scale`` is not a positive finite number.
    """
    scale = _check_scale(scale)
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise ModelError(f'{source}: object mesh file not found')
    suffix = os.path.splitext(source)[1].lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ModelError(f'{source}: unsupported mesh file type {suffix!r}; expected one of '
                         f'{", ".join(SUPPORTED_SUFFIXES)}')
    try:
        loaded = trimesh.load(source, process=False)
    except Exception as error:   # trimesh's parsers raise many types; re-raise one typed error
        raise ModelError(f'{source}: cannot read the mesh file '
                         f'({type(error).__name__}: {error})') from error
    if isinstance(loaded, trimesh.Scene):
        parts = [g for g in loaded.dump(concatenate=False) if isinstance(g, trimesh.Trimesh)]
        parts = [g for g in parts if len(g.faces) > 0]
        if not parts:
            raise ModelError(f'{source}: the file holds no triangle mesh (empty or unreadable)')
        if len(parts) == 1:
            mesh = parts[0]
        else:
            mesh = trimesh.util.concatenate([_vertex_colored(g) for g in parts])
    elif isinstance(loaded, trimesh.Trimesh):
        mesh = loaded
    else:
        raise ModelError(f'{source}: expected a triangle mesh, got a {type(loaded).__name__}')
    if len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise ModelError(f'{source}: the mesh is empty ({len(mesh.vertices)} vertices, '
                         f'{len(mesh.faces)} faces)')
    if scale != 1.0:
        mesh.apply_scale(scale)
    return mesh


def _merge_by_attributes(vertices: np.ndarray, faces: np.ndarray, attributes: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge vertices equal in position and attributes (colour, UV); returns compacted arrays."""
    key = np.hstack([np.round(vertices, _MERGE_DIGITS), np.round(attributes, 6)])
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return vertices[first], inverse.reshape(-1)[faces], attributes[first]


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RenderProxy:
    """The decimated mesh the renderer draws.

    Attributes:
        vertices: (Vp, 3) float positions in the object frame, metres.
        faces: (Fp, 3) int32 contiguous triangle indices, counter-clockwise seen from outside.
        vertex_colors: (Vp, 3) float RGB in [0, 1].
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    vertex_colors: torch.Tensor


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f'device: expected a torch device such as "cpu" or "cuda", '
                         f'got {device!r}') from error
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise InputError(f'device: {device} requested but CUDA is not available here')
    return device


def _check_float_dtype(dtype: torch.dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InputError(f'dtype: expected a floating torch dtype, got {dtype!r}')
    return dtype


@dataclass(frozen=True, eq=False)
class ObjectModel:
    """A rigid object's mesh and derived data, as tensors on one device.

    Build with :meth:`from_file` or :meth:`from_trimesh`; move with :meth:`to`. All positions
    are in the object's own frame (the mesh file's), in metres.

    Attributes:
        name: a label (the file stem by default).
        source: the file it came from, or None.
        mesh: geometry-only full-resolution trimesh, vertices merged by position, for exact
            signed distance (float64, CPU).
        vertices: (V, 3) render-mesh positions (vertices are split where colour/UV changes).
        faces: (F, 3) int32 render-mesh triangles, counter-clockwise seen from outside.
        vertex_colors: (V, 3) RGB in [0, 1].
        uv: (V, 2) texture coordinates of a single textured mesh, else None.
        texture: (H, W, 3) RGB texture in [0, 1] (row 0 = top, v = 1), else None.
        proxy: the render proxy, at most ``face_budget`` faces.
        sample_points: (N, 3) area-weighted surface samples (seeded).
        sample_normals: (N, 3) outward unit normals at the samples.
        diameter: largest distance between two vertices, metres (python float).
        center: (3,) bounding-box centre.
        extents: (3,) bounding-box size.
        symmetry: rotational symmetry of the surface (numpy, float64).
        is_watertight: whether ``mesh`` is closed (signed distance sign reliable).
    """

    name: str
    source: str | None
    mesh: trimesh.Trimesh
    vertices: torch.Tensor
    faces: torch.Tensor
    vertex_colors: torch.Tensor
    uv: torch.Tensor | None
    texture: torch.Tensor | None
    proxy: RenderProxy
    sample_points: torch.Tensor
    sample_normals: torch.Tensor
    diameter: float
    center: torch.Tensor
    extents: torch.Tensor
    symmetry: ObjectSymmetry
    is_watertight: bool

    def __repr__(self) -> str:
        return (f'ObjectModel(name={self.name!r}, vertices={len(self.vertices)}, '
                f'faces={len(self.faces)}, proxy_faces={len(self.proxy.faces)}, '
                f'diameter={self.diameter:.4f} m, symmetry={self.symmetry.kind!r}, '
                f'device={self.device}, dtype={self.dtype})')

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vertices.dtype

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, scale: float = 1.0, face_budget: int = 1500,
                  n_sample_points: int = 1000, device: str | torch.device = 'cpu',
                  dtype: torch.dtype = torch.float32, name: str | None = None,
                  seed: int = 0, symmetry_tolerance: float = 0.01, check_size: bool = False,
                  scale_flag: str = 'scale') -> ObjectModel:
        """Load a mesh file (see :func:`load_object_mesh`) and build the model.

        Args:
            path: mesh file.
            scale: factor to metres (0.001 for millimetres).
            face_budget: maximum faces of the render proxy (>= 4).
            n_sample_points: number of surface samples (>= 1).
            device, dtype: where and in which float type the tensors live.
            name: label; the file stem when None.
            seed: seed of the surface sampling (samples and symmetry test).
            symmetry_tolerance: symmetry tolerance as a fraction of the diameter.
            check_size: refuse a diameter outside :data:`SIZE_RANGE_M` after scaling
                (:func:`check_object_size`, before the model is built; ``scale_flag`` names
                the scale option in its message).

        Raises:
            ModelError: unreadable, empty or NaN mesh (the message names the path).
            ObjectSizeError: ``check_size`` and a size that is not a hand-held object's.
            InputError: a bad argument.
        """
        source = os.fspath(path)
        mesh = load_object_mesh(source, scale=scale)
        if check_size:
            vertices = np.asarray(mesh.vertices, dtype=np.float64)
            if np.isfinite(vertices).all():  # NaN vertices: _build names them
                check_object_size(mesh_diameter(vertices), where=_describe(source),
                                  scale=float(scale), scale_flag=scale_flag)
        if name is None:
            name = os.path.splitext(os.path.basename(source))[0]
        return cls._build(mesh, source=source, face_budget=face_budget,
                          n_sample_points=n_sample_points, device=device, dtype=dtype,
                          name=name, seed=seed, symmetry_tolerance=symmetry_tolerance)

    @classmethod
    def from_trimesh(cls, mesh: trimesh.Trimesh, *, scale: float = 1.0, face_budget: int = 1500,
                     n_sample_points: int = 1000, device: str | torch.device = 'cpu',
                     dtype: torch.dtype = torch.float32, name: str | None = None,
                     seed: int = 0, symmetry_tolerance: float = 0.01) -> ObjectModel:
        """Build the model from an in-memory mesh (copied; the argument is not changed).

        Arguments as :meth:`from_file`; ``name`` defaults to ``mesh.metadata['name']`` or
        ``'object'``.
        """
        if not isinstance(mesh, trimesh.Trimesh):
            raise InputError(f'mesh: expected a trimesh.Trimesh, got {type(mesh).__name__}')
        scale = _check_scale(scale)
        if len(mesh.faces) == 0 or len(mesh.vertices) == 0:
            raise ModelError(f'<trimesh>: the mesh is empty ({len(mesh.vertices)} vertices, '
                             f'{len(mesh.faces)} faces)')
        mesh = mesh.copy()
        if scale != 1.0:
            mesh.apply_scale(scale)
        if name is None:
            name = str(mesh.metadata.get('name', 'object'))
        return cls._build(mesh, source=None, face_budget=face_budget,
                          n_sample_points=n_sample_points, device=device, dtype=dtype,
                          name=name, seed=seed, symmetry_tolerance=symmetry_tolerance)

    @classmethod
    def _build(cls, mesh: trimesh.Trimesh, *, source: str | None, face_budget: int,
               n_sample_points: int, device, dtype, name: str, seed: int,
               symmetry_tolerance: float) -> ObjectModel:
        where = _describe(source)
        device = _resolve_device(device)
        dtype = _check_float_dtype(dtype)
        if isinstance(face_budget, bool) or int(face_budget) != face_budget or face_budget < 4:
            raise InputError(f'face_budget: expected an integer >= 4, got {face_budget!r}')
        if (isinstance(n_sample_points, bool) or int(n_sample_points) != n_sample_points
                or n_sample_points < 1):
            raise InputError(f'n_sample_points: expected an integer >= 1, got {n_sample_points!r}')
        if not (np.isfinite(symmetry_tolerance) and symmetry_tolerance >= 0):
            raise InputError(f'symmetry_tolerance: expected a fraction >= 0, '
                             f'got {symmetry_tolerance!r}')

        vertices = np.asarray(mesh.vertices, dtype=np.float64)
        faces = np.asarray(mesh.faces, dtype=np.int64)
        bad = ~np.isfinite(vertices).all(axis=1)
        if bad.any():
            raise ModelError(f'{where}: {int(bad.sum())} of {len(vertices)} vertices are NaN '
                             f'or infinite (first at index {int(np.argmax(bad))})')
        if faces.min() < 0 or faces.max() >= len(vertices):
            raise ModelError(f'{where}: face indices out of range [0, {len(vertices)})')

        # colours (and UV) per render vertex
        uv = texture = None
        if (mesh.visual.kind == 'texture' and getattr(mesh.visual, 'uv', None) is not None
                and len(mesh.visual.uv) == len(vertices)):
            texture = _texture_image(mesh.visual)
            if texture is not None:
                uv = np.asarray(mesh.visual.uv, dtype=np.float64)
        colored = _vertex_colored(mesh)
        vertices = np.asarray(colored.vertices, dtype=np.float64)
        faces = np.asarray(colored.faces, dtype=np.int64)
        colors = np.asarray(colored.visual.vertex_colors[:, :3], dtype=np.float64) / 255.0
        attributes = colors if uv is None else np.hstack([colors, uv])
        vertices, faces, attributes = _merge_by_attributes(vertices, faces, attributes)

        # degenerate faces: repeated corners or (near-)zero area
        diagonal = float(np.linalg.norm(vertices.max(0) - vertices.min(0)))
        tri = vertices[faces]
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        degenerate = ((faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2])
                      | (faces[:, 0] == faces[:, 2])
                      | (area <= _DEGENERATE_AREA_FRACTION * diagonal ** 2))
        if degenerate.all():
            raise ModelError(f'{where}: all {len(faces)} faces are degenerate (zero area)')
        if degenerate.any():
            warnings.warn(f'{where}: removed {int(degenerate.sum())} degenerate (zero-area) faces '
                          f'of {len(faces)}', MeshWarning, stacklevel=3)
            faces = faces[~degenerate]
        used = np.unique(faces)
        remap = np.full(len(vertices), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        vertices, faces, attributes = vertices[used], remap[faces], attributes[used]
        colors = attributes[:, :3]
        uv = attributes[:, 3:5] if uv is not None else None

        if diagonal > MILLIMETRE_DIAGONAL_M:
            warnings.warn(f'{where}: bounding-box diagonal is {diagonal:.3g} m; the file looks '
                          f'like it is in millimetres: pass scale=0.001', MeshWarning,
                          stacklevel=3)

        # geometry-only mesh for signed distance: merge by position, fix orientation if closed
        geometry = trimesh.Trimesh(vertices, faces, process=False)
        geometry.merge_vertices(merge_tex=True, merge_norm=True, digits_vertex=_MERGE_DIGITS)
        watertight = bool(geometry.is_watertight)
        if watertight:
            tri_before = geometry.triangles.copy()                            # (F, 3, 3)
            trimesh.repair.fix_normals(geometry)
            if geometry.volume < 0:
                geometry.invert()
            normal_before = np.cross(tri_before[:, 1] - tri_before[:, 0],
                                     tri_before[:, 2] - tri_before[:, 0])
            flipped = (normal_before * geometry.face_normals).sum(1) < 0
            if len(tri_before) == len(geometry.faces) and flipped.any():
                warnings.warn(f'{where}: {int(flipped.sum())} faces were wound inwards or '
                              f'inconsistently and were flipped', MeshWarning, stacklevel=3)
                faces = np.where(flipped[:, None], faces[:, ::-1], faces)
        else:
            warnings.warn(f'{where}: the mesh is not watertight (open boundary or non-manifold '
                          f'edges); signed distance is still computed but its inside/outside '
                          f'sign may be unreliable', MeshWarning, stacklevel=3)

        points, face_index = trimesh.sample.sample_surface(geometry, int(n_sample_points),
                                                           seed=seed)
        normals = geometry.face_normals[face_index]

        try:
            hull_points = geometry.vertices[ConvexHull(geometry.vertices).vertices]
        except (QhullError, ValueError):   # flat or tiny meshes have no 3D hull
            hull_points = geometry.vertices
        diameter = _max_pairwise_distance(hull_points)

        symmetry = detect_symmetry(geometry, diameter=diameter,
                                   tolerance_fraction=symmetry_tolerance, seed=seed)
        proxy_v, proxy_f, proxy_c = decimate_vertex_clustering(vertices, faces, colors, face_budget)
        bounds = geometry.bounds

        def tensor(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)

        def index_tensor(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.int32, device=device)

        return cls(
            name=name, source=source, mesh=geometry,
            vertices=tensor(vertices), faces=index_tensor(faces), vertex_colors=tensor(colors),
            uv=None if uv is None else tensor(uv),
            texture=None if texture is None else tensor(texture),
            proxy=RenderProxy(tensor(proxy_v), index_tensor(proxy_f), tensor(proxy_c)),
            sample_points=tensor(points), sample_normals=tensor(normals),
            diameter=float(diameter), center=tensor(bounds.mean(0)),
            extents=tensor(bounds[1] - bounds[0]), symmetry=symmetry, is_watertight=watertight)

    # -- moving ------------------------------------------------------------------------------

    def to(self, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> ObjectModel:
        """A copy with every tensor on ``device`` and float tensors in ``dtype`` (None: keep).

        Triangle indices stay int32; ``mesh`` and ``symmetry`` stay numpy/CPU.
        """
        device = self.device if device is None else _resolve_device(device)
        dtype = self.dtype if dtype is None else _check_float_dtype(dtype)

        def move(x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None:
                return None
            if x.is_floating_point():
                return x.to(device=device, dtype=dtype)
            return x.to(device=device)

        proxy = RenderProxy(move(self.proxy.vertices), move(self.proxy.faces),
                            move(self.proxy.vertex_colors))
        return dataclasses.replace(
            self, vertices=move(self.vertices), faces=move(self.faces),
            vertex_colors=move(self.vertex_colors), uv=move(self.uv), texture=move(self.texture),
            proxy=proxy, sample_points=move(self.sample_points),
            sample_normals=move(self.sample_normals), center=move(self.center),
            extents=move(self.extents))


def _fibonacci_directions(n: int) -> np.ndarray:
    """(n, 3) unit vectors spread evenly over the sphere (Fibonacci lattice)."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = np.pi * (1.0 + 5.0 ** 0.5) * k
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _max_pairwise_distance(points: np.ndarray, exact_limit: int = 8192,
                           n_directions: int = 4096) -> float:
    """Largest distance between two of the (P, 3) points.

    Exact (all pairs, in row blocks) up to ``exact_limit`` points. Above, the two ends of a
    diameter are extreme points along its direction u; the points extreme along
    ``n_directions`` evenly spread directions are kept and compared exactly. Some kept
    direction is within angle a of u, and the pair found is at least ``D cos(a)`` long: with
    4096 directions a < 0.04 rad, so the result is within 0.08% below the exact diameter
    (only hulls with more than 8192 vertices, e.g. finely tessellated spheres, take this path).
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) < 2:
        return 0.0
    if len(points) > exact_limit:
        directions = _fibonacci_directions(n_directions)
        # float32 is plenty to pick extreme points (an error of ~1e-7 of the size)
        points_t = np.ascontiguousarray((points - points.mean(axis=0)).T, dtype=np.float32)
        directions = directions.astype(np.float32)
        extremes = [np.argmax(directions[i:i + 256] @ points_t, axis=1)       # (256,)
                    for i in range(0, n_directions, 256)]
        points = points[np.unique(np.concatenate(extremes))]
    best = 0.0
    for start in range(0, len(points), 1024):
        best = max(best, float(cdist(points[start:start + 1024], points).max()))
    return best
