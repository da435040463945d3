"""Procedural stand-ins for a few YCB objects, made here from trimesh primitives and numpy.

No mesh is downloaded: each object is built by this module's own code with the published YCB
dimensions (Calli et al., "Benchmarking in Manipulation Research: The YCB Object and Model Set",
IEEE RAM 2015, object table; millimetres):

=====================  ==========================  ==============================================
object                 published size (mm)         axes used here (object frame, metres)
=====================  ==========================  ==============================================
003 cracker box        60 x 158 x 210              x 0.158 (width), y 0.060 (depth), z 0.210
004 sugar box          38 x 89 x 175               x 0.089 (width), y 0.038 (depth), z 0.175
005 tomato soup can    66 x 101 (diameter x h)     axis z, radius 0.033, height 0.101
006 mustard bottle     50 x 85 x 175               x 0.085 (width), y 0.050 (depth), z 0.175
=====================  ==========================  ==============================================

The published numbers are caliper sizes of the products; YCB's own scans run a few millimetres
larger (a real cardboard box bulges, e.g. the cracker-box scan is about 72 x 164 x 213 mm), so a
tracker evaluated against the real scans should load those instead.

Conventions shared by every object:
- the object frame has its origin at the bounding-box centre; +z is the object's "up" (the can's
  axis, the boxes' and the bottle's height); +y is the normal of the front (printed) face;
- units are metres; every mesh is closed (watertight) with outward normals;
- the printing is procedural vertex colour (RGBA uint8 on the trimesh) — coloured bands and
  letter-like blocks that differ between front, back and sides, so that a rotation of the object
  changes its image. The can's label has an off-centre medallion, so rotation about its axis is
  partly observable; its geometry is still continuously symmetric;
- resolution is modest: every object has at most 1,500 faces, so the default render proxy of
  :class:`~handypriors_ros.core.models.object_model.ObjectModel` is the mesh itself.

``export_builtin(name, path)`` writes PLY (vertex colours kept) or OBJ (vertex colours written as
``v x y z r g b``), both of which ``ObjectModel.from_file`` reads back.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import trimesh

from handypriors_ros.core.errors import InputError

# Colours (RGB in [0, 1]) of the procedural printing.
_RED = (0.80, 0.08, 0.06)
_ORANGE = (0.95, 0.45, 0.05)
_YELLOW = (0.98, 0.80, 0.08)
_WHITE = (0.95, 0.95, 0.92)
_DARK = (0.12, 0.10, 0.10)
_BLUE = (0.10, 0.25, 0.65)
_SILVER = (0.70, 0.70, 0.72)
_GOLD = (0.85, 0.65, 0.20)


# --------------------------------------------------------------------------------------------
# geometry builders
# --------------------------------------------------------------------------------------------


def _grid_box(extents: tuple[float, float, float], cell: float) -> trimesh.Trimesh:
    """A closed box centred at the origin whose faces are regular grids of about ``cell`` metres.

    Each face is a grid of quads split in two triangles; the grid counts along each axis are
    shared by the faces meeting there, so vertices on the edges coincide and are merged, which
    makes the mesh watertight.
    """
    half = np.asarray(extents, dtype=np.float64) / 2.0
    counts = [max(1, int(np.ceil(e / cell))) for e in extents]
    vertices, faces = [], []
    offset = 0
    for axis in range(3):
        u_axis, v_axis = (axis + 1) % 3, (axis + 2) % 3   # right-handed (u, v, normal)
        nu, nv = counts[u_axis], counts[v_axis]
        us = np.linspace(-half[u_axis], half[u_axis], nu + 1)
        vs = np.linspace(-half[v_axis], half[v_axis], nv + 1)
        uu, vv = np.meshgrid(us, vs, indexing='ij')                      # (nu+1, nv+1)
        for sign in (1.0, -1.0):
            grid = np.zeros((nu + 1, nv + 1, 3))
            grid[..., axis] = sign * half[axis]
            grid[..., u_axis] = uu
            grid[..., v_axis] = vv
            vertices.append(grid.reshape(-1, 3))
            idx = offset + np.arange((nu + 1) * (nv + 1)).reshape(nu + 1, nv + 1)
            a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
            c, d = idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
            quad_faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
            if sign < 0:   # u x v = +normal, so the -normal face needs the opposite winding
                quad_faces = quad_faces[:, ::-1]
            faces.append(quad_faces)
            offset += (nu + 1) * (nv + 1)
    mesh = trimesh.Trimesh(np.concatenate(vertices), np.concatenate(faces), process=False)
    mesh.merge_vertices()
    return mesh


def _loft(rings: list[np.ndarray]) -> trimesh.Trimesh:
    """A closed surface through horizontal rings, closed by a fan at each end.

    Args:
        rings: R arrays of shape (M, 3), bottom to top, each planar at constant z and ordered
            counter-clockwise seen from +z; consecutive rings are joined by quads.
    """
    n_rings, m = len(rings), rings[0].shape[0]
    ring_vertices = np.concatenate(rings)                                 # (R*M, 3)
    bottom_centre = rings[0].mean(axis=0, keepdims=True)
    top_centre = rings[-1].mean(axis=0, keepdims=True)
    vertices = np.concatenate([ring_vertices, bottom_centre, top_centre])
    j = np.arange(m)
    faces = []
    for r in range(n_rings - 1):
        a, b = r * m + j, r * m + (j + 1) % m
        c, d = (r + 1) * m + (j + 1) % m, (r + 1) * m + j
        faces += [np.stack([a, b, c], 1), np.stack([a, c, d], 1)]
    i_bottom, i_top = n_rings * m, n_rings * m + 1
    faces.append(np.stack([np.full(m, i_bottom), (j + 1) % m, j], 1))
    top = (n_rings - 1) * m
    faces.append(np.stack([np.full(m, i_top), top + j, top + (j + 1) % m], 1))
    return trimesh.Trimesh(vertices, np.concatenate(faces), process=False)


def _superellipse(a: float, b: float, exponent: float, m: int) -> np.ndarray:
    """(M, 2) points of ``|x/a|^e + |y/b|^e = 1`` (a rounded rectangle), counter-clockwise."""
    t = np.linspace(0.0, 2.0 * np.pi, m, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = a * np.sign(c) * np.abs(c) ** (2.0 / exponent)
    y = b * np.sign(s) * np.abs(s) ** (2.0 / exponent)
    return np.stack([x, y], axis=1)


def _ring(xy: np.ndarray, z: float, centre_x: float = 0.0) -> np.ndarray:
    """Lift (M, 2) planar points to (M, 3) at height ``z``, shifted by ``centre_x`` along x."""
    return np.column_stack([xy[:, 0] + centre_x, xy[:, 1], np.full(len(xy), z)])


def _paint(mesh: trimesh.Trimesh, rgb: np.ndarray) -> trimesh.Trimesh:
    """Attach (V, 3) colours in [0, 1] as RGBA uint8 vertex colours."""
    rgba = np.concatenate([np.clip(rgb, 0.0, 1.0) * 255.0, np.full((len(rgb), 1), 255.0)], 1)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.round(rgba).astype(np.uint8))
    return mesh


def _in_rect(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float,
             v1: float) -> np.ndarray:
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _letters(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float,
             n: int) -> np.ndarray:
    """A row of ``n`` letter-like blocks with gaps inside the rectangle [u0, u1] x [v0, v1]."""
    inside = _in_rect(u, v, u0, u1, v0, v1)
    phase = (u - u0) / max(u1 - u0, 1e-9) * n
    return inside & ((phase % 1.0) < 0.7)


def _box_printing(vertices: np.ndarray, half: np.ndarray, front: Callable, back: Callable,
                  side: tuple, top: tuple) -> np.ndarray:
    """Colour each vertex of an axis-aligned box by the face it lies on.

    ``front``/``back`` get face coordinates (u, v) in [0, 1]^2 (u along +x seen from outside,
    v up along z) and return (V, 3) colours; sides (+-x) and top/bottom (+-z) get flat colours.
    Edge vertices take the colour of the first face in the order front, back, sides, top/bottom.
    """
    rgb = np.zeros_like(vertices)
    eps = 1e-9
    on_front = vertices[:, 1] >= half[1] - eps
    on_back = (vertices[:, 1] <= -half[1] + eps) & ~on_front
    rest = ~(on_front | on_back)
    on_side = rest & (np.abs(vertices[:, 0]) >= half[0] - eps)
    on_cap = rest & ~on_side
    v = (vertices[:, 2] + half[2]) / (2 * half[2])
    u_front = (-vertices[:, 0] + half[0]) / (2 * half[0])   # seen from +y, +x points left
    u_back = (vertices[:, 0] + half[0]) / (2 * half[0])
    rgb[on_front] = front(u_front[on_front], v[on_front])
    rgb[on_back] = back(u_back[on_back], v[on_back])
    # sides: a band whose height differs between +x and -x, so the two are told apart
    side_band = np.where(vertices[:, 0] > 0, v > 0.55, v < 0.30)
    rgb[on_side] = np.where(side_band[on_side, None], np.asarray(side[1]), np.asarray(side[0]))
    rgb[on_cap] = np.asarray(top)
    return rgb


def _compose(u: np.ndarray, base: tuple, layers: list[tuple[np.ndarray, tuple]]) -> np.ndarray:
    """Start from ``base`` and paint each (mask, colour) layer on top, in order."""
    rgb = np.tile(np.asarray(base, dtype=np.float64), (len(u), 1))
    for mask, colour in layers:
        rgb[mask] = colour
    return rgb


# --------------------------------------------------------------------------------------------
# the objects
# --------------------------------------------------------------------------------------------


def cracker_box() -> trimesh.Trimesh:
    """YCB 003 cracker box: 0.158 (x) x 0.060 (y) x 0.210 (z) m, red with a yellow logo panel.

    Front (+y): red, a yellow logo block with dark letter blocks, an orange band at the bottom.
    Back (-y): a white panel with rows of dark text blocks. Sides: red with a yellow band at
    different heights on +x and -x. Top and bottom: orange.
    """
    extents = (0.158, 0.060, 0.210)
    mesh = _grid_box(extents, cell=0.014)

    def front(u, v):
        return _compose(u, _RED, [
            (_in_rect(u, v, 0.08, 0.92, 0.55, 0.88), _YELLOW),
            (_letters(u, v, 0.15, 0.85, 0.64, 0.80, 5), _DARK),
            (v < 0.18, _ORANGE),
            (_in_rect(u, v, 0.55, 0.90, 0.22, 0.45), _WHITE),
        ])

    def back(u, v):
        return _compose(u, _RED, [
            (_in_rect(u, v, 0.10, 0.90, 0.10, 0.90), _WHITE),
            (_letters(u, v, 0.15, 0.85, 0.70, 0.80, 6), _DARK),
            (_letters(u, v, 0.15, 0.60, 0.45, 0.55, 3), _DARK),
            (_in_rect(u, v, 0.60, 0.85, 0.15, 0.35), _BLUE),
        ])

    rgb = _box_printing(mesh.vertices, np.asarray(extents) / 2, front, back,
                        side=(_RED, _YELLOW), top=_ORANGE)
    return _paint(mesh, rgb)


def sugar_box() -> trimesh.Trimesh:
    """YCB 004 sugar box: 0.089 (x) x 0.038 (y) x 0.175 (z) m, white and yellow with blue print.

    Front (+y): white, a yellow upper panel with blue letter blocks, a blue band low down.
    Back (-y): yellow with white text rows. Sides: white with a blue band at different heights
    on +x and -x. Top and bottom: yellow.
    """
    extents = (0.089, 0.038, 0.175)
    mesh = _grid_box(extents, cell=0.010)

    def front(u, v):
        return _compose(u, _WHITE, [
            (_in_rect(u, v, 0.0, 1.0, 0.55, 0.95), _YELLOW),
            (_letters(u, v, 0.12, 0.88, 0.68, 0.82, 4), _BLUE),
            (_in_rect(u, v, 0.0, 1.0, 0.12, 0.22), _BLUE),
        ])

    def back(u, v):
        return _compose(u, _YELLOW, [
            (_letters(u, v, 0.10, 0.90, 0.60, 0.70, 5), _WHITE),
            (_letters(u, v, 0.10, 0.60, 0.35, 0.45, 3), _WHITE),
            (_in_rect(u, v, 0.65, 0.90, 0.10, 0.25), _RED),
        ])

    rgb = _box_printing(mesh.vertices, np.asarray(extents) / 2, front, back,
                        side=(_WHITE, _BLUE), top=_YELLOW)
    return _paint(mesh, rgb)


def soup_can() -> trimesh.Trimesh:
    """YCB 005 tomato soup can: a cylinder of radius 0.033 m and height 0.101 m about z.

    Red upper half, white lower half with a gold medallion centred on +y (azimuth 90 degrees),
    silver rims and lids. Rings are placed in pairs 2 mm apart at colour boundaries, so the
    transitions stay sharp while the surface stays one closed mesh (48 segments, 1,440 faces).
    """
    radius, height, segments = 0.033, 0.101, 48
    h = height / 2
    z_rings = [-h, -h + 0.005, -h + 0.007, -0.036, -0.030, -0.024, -0.018, -0.012, -0.002,
               0.002, 0.016, 0.030, h - 0.007, h - 0.005, h]
    t = np.linspace(0.0, 2.0 * np.pi, segments, endpoint=False)
    circle = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    mesh = _loft([_ring(circle, z) for z in z_rings])

    p = mesh.vertices
    r_xy = np.hypot(p[:, 0], p[:, 1])
    on_lid = r_xy < radius - 1e-6
    on_rim = np.abs(p[:, 2]) > h - 0.006
    azimuth = np.arctan2(p[:, 1], p[:, 0])
    # medallion: a disc on the label, 12 mm in radius, centred at azimuth 90 deg, z = -0.024
    arc = radius * np.angle(np.exp(1j * (azimuth - np.pi / 2)))
    medallion = np.hypot(arc, p[:, 2] + 0.024) < 0.012
    rgb = np.where((p[:, 2] > 0.0)[:, None], np.asarray(_RED), np.asarray(_WHITE))
    rgb[medallion & ~on_lid] = _GOLD
    rgb[on_rim | on_lid] = _SILVER
    return _paint(mesh, rgb)


def mustard_bottle() -> trimesh.Trimesh:
    """YCB 006 mustard bottle: 0.085 (x) x 0.050 (y) x 0.175 (z) m, yellow, red cap off-centre.

    A rounded-rectangle body (superellipse section, 0.085 x 0.050 m) up to z = +0.040, a
    shoulder that narrows towards a neck shifted +0.015 m along x (as on the real bottle, whose
    nozzle sits off-centre), then a red cap and nozzle; overall height 0.175 m, centred at the
    bounding-box centre. Front (+y): a white label oval with a red banner and dark letter
    blocks. The off-centre nozzle leaves the shape without rotational symmetry.
    """
    m = 36
    h = 0.175 / 2
    body = _superellipse(0.0425, 0.025, 2.6, m)
    neck_x = 0.015
    rings = []
    for z in np.linspace(-h, 0.040, 12):
        rings.append(_ring(body, z))
    # shoulder: blend the body section into a circle of radius 0.013 around the neck axis
    circle = _superellipse(0.013, 0.013, 2.0, m)
    for s, z in zip((0.35, 0.7, 1.0), (0.050, 0.058, 0.063)):
        rings.append(_ring((1 - s) * body + s * circle, z, centre_x=s * neck_x))
    cap = _superellipse(0.012, 0.012, 2.0, m)
    nozzle = _superellipse(0.005, 0.005, 2.0, m)
    rings.append(_ring(cap, 0.066, neck_x))
    rings.append(_ring(cap, 0.076, neck_x))
    rings.append(_ring(nozzle, 0.078, neck_x))
    rings.append(_ring(nozzle, h, neck_x))
    mesh = _loft(rings)

    p = mesh.vertices
    rgb = np.tile(np.asarray(_YELLOW), (len(p), 1))
    front = p[:, 1] > 0.012
    label = front & (((p[:, 0] / 0.032) ** 2 + ((p[:, 2] + 0.015) / 0.045) ** 2) < 1.0)
    rgb[label] = _WHITE
    rgb[label & (np.abs(p[:, 2] + 0.010) < 0.012)] = _RED
    rgb[label & (np.abs(p[:, 2] + 0.040) < 0.006) & ((p[:, 0] * 120) % 1.0 < 0.6)] = _DARK
    back = p[:, 1] < -0.012
    rgb[back & (np.abs(p[:, 2] - 0.005) < 0.020) & (np.abs(p[:, 0]) < 0.028)] = _WHITE
    rgb[p[:, 2] > 0.0645] = _RED
    return _paint(mesh, rgb)


#: Name -> builder of every built-in object. Each builder takes no argument and returns a new
#: closed, vertex-coloured :class:`trimesh.Trimesh` in metres, centred at its bounding-box centre.
BUILTIN_OBJECTS: dict[str, Callable[[], trimesh.Trimesh]] = {
    'cracker_box': cracker_box,
    'sugar_box': sugar_box,
    'soup_can': soup_can,
    'mustard_bottle': mustard_bottle,
}


def make_builtin(name: str) -> trimesh.Trimesh:
    """A new mesh of the built-in object ``name`` (a key of :data:`BUILTIN_OBJECTS`).

    The mesh is recentred so its bounding-box centre is the origin of its frame (exactly).

    Raises:
        InputError: ``name`` is not a built-in object.
    """
    if name not in BUILTIN_OBJECTS:
        raise InputError(f'name: expected one of {sorted(BUILTIN_OBJECTS)}, got {name!r}')
    mesh = BUILTIN_OBJECTS[name]()
    mesh.apply_translation(-mesh.bounds.mean(axis=0))
    mesh.metadata['name'] = name
    return mesh


def export_builtin(name: str, path: str | os.PathLike) -> str:
    """Write the built-in object ``name`` to ``path`` (``.ply`` or ``.obj``) with its colours.

    Returns:
        The path written, as a string.

    Raises:
        InputError: unknown ``name`` or a suffix other than ``.ply``/``.obj``.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in ('.ply', '.obj'):
        raise InputError(f'path: expected a .ply or .obj file name, got {path!r}')
    mesh = make_builtin(name)
    if suffix == '.obj':
        mesh.export(path, include_color=True, include_normals=False, include_texture=False)
    else:
        mesh.export(path)
    return path
