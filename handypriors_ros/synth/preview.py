"""A PNG contact sheet of a synthetic sequence: the true object outline (green) and the hand's
projected skeleton (fingers coloured, joints as dots) drawn on the camera images."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from handypriors_ros.core.models.kinematics import HandKinematics
from handypriors_ros.core.render.overlay import draw_outline
from handypriors_ros.core.render.renderer import Renderer

# BGR-free: images here are RGB.
_FINGER_COLOURS = {'0': (255, 60, 60), '1': (60, 120, 255), '2': (255, 200, 40),
                   '3': (200, 60, 255)}


def skeleton_lines(kin: HandKinematics, q: np.ndarray, T_cam_base: np.ndarray
                   ) -> list[tuple[str, np.ndarray]]:
    """Per finger ('0' thumb .. '3' ring), the (K, 3) chain base -> palm -> link_X0..X4 in the
    camera frame."""
    T = torch.as_tensor(T_cam_base[None], dtype=kin.dtype) @ kin.link_transforms(
        torch.as_tensor(q[None], dtype=kin.dtype))
    origins = T[0, :, :3, 3].numpy()
    names = kin.link_names
    palm = origins[names.index('ah_palm_link')] if 'ah_palm_link' in names else origins[0]
    chains = []
    for finger in '0123':
        idx = [i for i, n in enumerate(names) if n.startswith(f'ah_link_{finger}')]
        idx.sort(key=lambda i: names[i])
        chains.append((finger, np.vstack([palm[None], origins[idx]])))
    return chains


def draw_skeleton(img: np.ndarray, chains, K: np.ndarray) -> np.ndarray:
    """Draw skeleton chains (camera frame) on ``img`` in place and return it."""
    for finger, pts in chains:
        uv = (pts[:, :2] / pts[:, 2:3]) * np.diag(K)[:2] + K[:2, 2]
        uv = np.round(uv).astype(int)
        colour = _FINGER_COLOURS[finger]
        for a, b in zip(uv[:-1], uv[1:]):
            cv2.line(img, tuple(a), tuple(b), colour, 2, cv2.LINE_AA)
        for p in uv:
            cv2.circle(img, tuple(p), 3, (255, 255, 255), -1, cv2.LINE_AA)
    return img


def write_contact_sheet(path: Path, frames: dict, traj, kin: HandKinematics, cfg,
                        renderer: Renderer, columns: int = 4) -> None:
    """Write ``frames`` ({index: rgb}) as a grid with the object's whole outline at its true
    pose (drawn by ``renderer``, :func:`~handypriors_ros.core.render.overlay.draw_outline`)
    and the hand's skeleton."""
    K = np.array([[cfg.fx, 0, cfg.cx], [0, cfg.fy, cfg.cy], [0, 0, 1.0]])
    T_cam_world = np.linalg.inv(traj.T_world_cam)
    tiles = []
    for i in sorted(frames):
        tile = np.ascontiguousarray(frames[i].copy())
        draw_outline(tile, renderer, cfg.camera, traj.T_cam_obj[i], (40, 255, 40), 2)
        draw_skeleton(tile, skeleton_lines(kin, traj.q[i], T_cam_world @ traj.T_world_base[i]),
                      K)
        cv2.putText(tile, f'frame {i}', (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                    (255, 255, 255), 2, cv2.LINE_AA)
        tiles.append(cv2.resize(tile, (cfg.width // 2, cfg.height // 2),
                                interpolation=cv2.INTER_AREA))
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[r:r + columns]) for r in range(0, len(tiles), columns)]
    sheet = np.vstack(rows)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
