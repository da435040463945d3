"""RViz markers of the tracker: the object's mesh, the contact points and the fingertips.

- The object mesh is published in the object frame (``frame_locked``, stamp 0): RViz places it
  with the tracker's TF, so the (large) mesh message is built once and re-sent rarely. Either a
  ``TRIANGLE_LIST`` of the render proxy with its vertex colours (needs nothing on the RViz
  machine) or a ``MESH_RESOURCE`` pointing at the mesh file (``file://``; RViz must see the file).
- Contacts (points on the object's surface) and fingertips are ``SPHERE_LIST`` s in the camera
  frame at the image stamp; an empty list becomes a ``DELETE`` of that marker.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker

from handypriors_ros.core.errors import InputError
from handypriors_ros.ros.conversions import ns_to_stamp

NAMESPACE = 'handypriors'
OBJECT_ID, CONTACTS_ID, FINGERTIPS_ID = 0, 1, 2
CONTACT_RGBA = (0.95, 0.15, 0.1, 1.0)
FINGERTIP_RGBA = (0.1, 0.45, 0.95, 1.0)
OBJECT_RGBA = (0.9, 0.75, 0.2, 0.6)


def _points(xyz: np.ndarray) -> list[Point]:
    return [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in np.asarray(xyz)]


def _rgba(rgba: tuple[float, float, float, float]) -> ColorRGBA:
    return ColorRGBA(r=float(rgba[0]), g=float(rgba[1]), b=float(rgba[2]), a=float(rgba[3]))


def object_mesh_marker(frame_id: str, *, vertices: np.ndarray | None = None,
                       faces: np.ndarray | None = None, vertex_colors: np.ndarray | None = None,
                       mesh_path: str | Path | None = None, scale: float = 1.0,
                       rgba: tuple[float, float, float, float] = OBJECT_RGBA) -> Marker:
    """The object's mesh in its own frame.

    Args:
        frame_id: the object frame (the tracker's TF child frame).
        vertices: (V, 3) metres and faces: (F, 3) int: a TRIANGLE_LIST (with ``vertex_colors``
            (V, 3) in [0, 1], else ``rgba``).
        mesh_path: instead, a MESH_RESOURCE of this file (made absolute, ``file://``), scaled by
            ``scale``.
        rgba: colour and opacity; with vertex colours only the opacity is used.
    Raises:
        InputError: neither or both of (vertices, faces) and mesh_path, or bad shapes.
    """
    m = Marker()
    m.header.frame_id = frame_id  # stamp 0: RViz uses the latest TF
    m.ns, m.id, m.action = NAMESPACE, OBJECT_ID, Marker.ADD
    m.frame_locked = True
    m.pose.orientation.w = 1.0
    m.color = _rgba(rgba)
    if (mesh_path is None) == (vertices is None or faces is None):
        raise InputError('object_mesh_marker: expected either vertices and faces or mesh_path')
    if mesh_path is not None:
        m.type = Marker.MESH_RESOURCE
        m.mesh_resource = Path(mesh_path).resolve().as_uri()
        m.mesh_use_embedded_materials = True
        m.scale.x = m.scale.y = m.scale.z = float(scale)
        return m
    V = np.asarray(vertices, dtype=np.float64)
    F = np.asarray(faces)
    if V.ndim != 2 or V.shape[1] != 3 or F.ndim != 2 or F.shape[1] != 3:
        raise InputError(f'vertices, faces: expected (V, 3) and (F, 3), got {V.shape} and '
                         f'{F.shape}')
    m.type = Marker.TRIANGLE_LIST
    m.scale.x = m.scale.y = m.scale.z = 1.0
    corners = F.reshape(-1)
    m.points = _points(V[corners])
    if vertex_colors is not None:
        C = np.asarray(vertex_colors, dtype=np.float64)
        if C.shape != V.shape:
            raise InputError(f'vertex_colors: expected {V.shape} like vertices, got {C.shape}')
        alpha = float(rgba[3])
        m.colors = [ColorRGBA(r=float(r), g=float(g), b=float(b), a=alpha)
                    for r, g, b in C[corners]]
    return m


def spheres_marker(marker_id: int, frame_id: str, stamp_ns: int, points: np.ndarray, *,
                   diameter_m: float, rgba: tuple[float, float, float, float],
                   lifetime_s: float = 1.0) -> Marker:
    """A SPHERE_LIST of (N, 3) points (metres, ``frame_id``); N = 0 gives a DELETE."""
    m = Marker()
    m.header.frame_id = frame_id
    m.header.stamp = ns_to_stamp(int(stamp_ns))
    m.ns, m.id = NAMESPACE, marker_id
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(P) == 0:
        m.action = Marker.DELETE
        return m
    m.type, m.action = Marker.SPHERE_LIST, Marker.ADD
    m.pose.orientation.w = 1.0
    m.scale.x = m.scale.y = m.scale.z = float(diameter_m)
    m.color = _rgba(rgba)
    m.points = _points(P)
    sec = int(lifetime_s)
    m.lifetime = Duration(sec=sec, nanosec=int(round((lifetime_s - sec) * 1e9)))
    return m


def frame_markers(frame_id: str, stamp_ns: int, contact_points: np.ndarray,
                  fingertips: np.ndarray | None) -> list[Marker]:
    """Per-frame markers: contact points on the object (red, 6 mm) and fingertips (blue,
    24 mm, the Allegro tip spheres), both (N, 3) in the camera frame."""
    markers = [spheres_marker(CONTACTS_ID, frame_id, stamp_ns, contact_points,
                              diameter_m=0.006, rgba=CONTACT_RGBA)]
    if fingertips is not None:
        markers.append(spheres_marker(FINGERTIPS_ID, frame_id, stamp_ns, fingertips,
                                      diameter_m=0.024, rgba=FINGERTIP_RGBA))
    return markers


def debug_overlay(rgb: np.ndarray, camera, T_cam_obj: np.ndarray, renderer,
                  contact_points: np.ndarray, *, tracking: bool = True) -> np.ndarray:
    """The tracker's debug image: the object's outline at ``T_cam_obj`` (drawn with
    :func:`~handypriors_ros.core.render.overlay.draw_outline` through the tracker's own
    :class:`~handypriors_ros.core.render.renderer.Renderer`; green while tracking, red
    otherwise) and the contact points (camera frame, metres; yellow dots) over a copy of the
    (undistorted) ``rgb`` image of ``camera``.

    Args:
        rgb: (H, W, 3) uint8 image; camera: its :class:`PinholeCamera`.
        renderer: the object's renderer (the tracker's ``scene.renderer``).
        contact_points: (N, 3) contact points in the camera frame [m].
    Returns:
        (H, W, 3) uint8, a new array (``rgb`` is not modified).
    """
    import cv2
    import torch

    from handypriors_ros.core.render.overlay import draw_outline

    img = np.array(rgb, dtype=np.uint8, copy=True)
    colour = (40, 230, 40) if tracking else (230, 40, 40)
    with torch.no_grad():
        draw_outline(img, renderer, camera, np.asarray(T_cam_obj, dtype=np.float64), colour, 2)
    P = np.asarray(contact_points, dtype=np.float64).reshape(-1, 3)
    for x, y, z in P[P[:, 2] > 1e-6]:
        u = int(round(camera.fx * x / z + camera.cx))
        v = int(round(camera.fy * y / z + camera.cy))
        cv2.circle(img, (u, v), 4, (255, 220, 0), -1, cv2.LINE_AA)
    return img
