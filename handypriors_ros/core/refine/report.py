"""The refinement's report folder: loss curves, per-frame errors, an overlay GIF, a summary.

:func:`score_poses` gives the figures of the paper's Table I for a set of poses (ADD-S, 2D and
3D Chamfer against a ground truth when there is one, penetration depth of the hand always);
:func:`write_report` writes

- ``losses.png``: every loss term over the iterations (log scale);
- ``per_frame.csv`` and ``errors.png`` (with ground truth): ADD-S, Chamfer and penetration per
  frame, initial vs refined;
- ``overlay.gif``: each image with the refined object outline (green) and the initial one
  (red), at most ``gif_width`` pixels wide;
- ``summary.md`` and ``summary.json``: the job, the timing and the figures.

Writes go to temporary names renamed into place, so an interrupted report leaves no half file.
matplotlib (Agg) and imageio are imported when a report is written.
"""
from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from handypriors_ros.core import metrics
from handypriors_ros.core.render.mesh import RenderMesh
from handypriors_ros.core.render.overlay import draw_outline
from handypriors_ros.core.render.renderer import Renderer
from handypriors_ros.core.frames import Frame


@dataclass(frozen=True)
class PoseScores:
    """Per-frame figures of a set of poses (NaN where a ground truth is missing).

    Attributes:
        add_s_m: (N,) ADD-S [m].
        chamfer_3d_m: (N,) Chamfer distance of the posed model points [m].
        chamfer_2d_px: (N,) Chamfer distance of the projected model points [px].
        penetration_m: (N,) deepest hand sample inside the object [m] (0 when none).
    """

    add_s_m: np.ndarray
    chamfer_3d_m: np.ndarray
    chamfer_2d_px: np.ndarray
    penetration_m: np.ndarray

    def means(self) -> dict[str, float]:
        """Means over the frames, in mm / px (NaN-free entries only)."""
        def m(x: np.ndarray, scale: float) -> float:
            x = x[np.isfinite(x)]
            return float(x.mean() * scale) if x.size else float('nan')

        return {'add_s_mm': m(self.add_s_m, 1e3), 'chamfer_3d_mm': m(self.chamfer_3d_m, 1e3),
                'chamfer_2d_px': m(self.chamfer_2d_px, 1.0),
                'penetration_mm': m(self.penetration_m, 1e3),
                'penetration_max_mm': float(np.max(self.penetration_m, initial=0.0) * 1e3)}


def score_poses(T_cam_obj: np.ndarray, object_points: np.ndarray,
                hand_signed_distances: np.ndarray, *, T_cam_obj_gt: np.ndarray | None = None,
                K: np.ndarray | None = None) -> PoseScores:
    """Table I figures of N poses.

    Args:
        T_cam_obj: (N, 4, 4) estimated poses.
        object_points: (P, 3) model points (object frame).
        hand_signed_distances: (N, Q) signed distance of the hand samples to the object at the
            estimated poses [m].
        T_cam_obj_gt: (N, 4, 4) ground truth, or None.
        K: (3, 3) camera matrix for the 2D Chamfer (full-resolution image).
    """
    N = len(T_cam_obj)
    nan = np.full(N, np.nan)
    pen = np.asarray(metrics.penetration_depth(hand_signed_distances).max_depth, dtype=float)
    if T_cam_obj_gt is None:
        return PoseScores(nan, nan.copy(), nan.copy(), pen)
    c2 = (metrics.projected_chamfer_2d(T_cam_obj, T_cam_obj_gt, object_points, K)
          if K is not None else nan.copy())
    return PoseScores(metrics.add_s(T_cam_obj, T_cam_obj_gt, object_points),
                      metrics.posed_chamfer_3d(T_cam_obj, T_cam_obj_gt, object_points), c2, pen)


def _replace_atomically(path: Path, write) -> None:
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def overlay_frames(frames: Sequence[Frame], mesh: RenderMesh,
                   T_refined: np.ndarray, T_initial: np.ndarray | None = None, *,
                   width: int = 320) -> list[np.ndarray]:
    """(h, w, 3) uint8 images with the refined (green) and initial (red) object outlines."""
    images = []
    renderer = Renderer(mesh.to('cpu', torch.float32))
    for i, f in enumerate(frames):
        scale = min(1.0, width / f.camera.width)
        w = max(int(round(f.camera.width * scale)), 1)
        h = max(int(round(f.camera.height * scale)), 1)
        cam = f.camera.scaled(w, h)
        img = cv2.resize(f.rgb, (w, h), interpolation=cv2.INTER_AREA).copy()
        layers = [(T_refined[i], (0, 220, 0))]
        if T_initial is not None:
            layers.insert(0, (T_initial[i], (230, 40, 40)))
        for T, colour in layers:
            draw_outline(img, renderer, cam, T, colour, 1)
        images.append(img)
    return images


def write_report(folder: str | Path, *, history: Mapping[str, np.ndarray],
                 summary: Mapping[str, object], stamps_ns: np.ndarray,
                 initial: PoseScores, refined: PoseScores,
                 overlay: Sequence[np.ndarray] | None = None, gif_fps: float = 10.0) -> Path:
    """Write the report folder (module docstring). Returns the folder."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    # loss curves
    terms = [k for k, v in history.items() if len(v) and np.any(np.asarray(v) != 0)]
    cols = 3
    rows = max(1, math.ceil(len(terms) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), terms):
        v = np.asarray(history[name], dtype=float)
        ax.plot(np.arange(len(v)), v)
        if np.all(v > 0):
            ax.set_yscale('log')
        ax.set_title(name)
        ax.set_xlabel('iteration')
    for ax in axes.ravel()[len(terms):]:
        ax.axis('off')
    fig.tight_layout()
    _replace_atomically(folder / 'losses.png', lambda p: fig.savefig(p, format='png', dpi=90))
    plt.close(fig)

    # per-frame figures
    has_gt = bool(np.isfinite(refined.add_s_m).any())
    fields = ['frame', 'stamp_ns', 'penetration_init_mm', 'penetration_mm']
    if has_gt:
        fields += ['add_s_init_mm', 'add_s_mm', 'chamfer_3d_init_mm', 'chamfer_3d_mm',
                   'chamfer_2d_init_px', 'chamfer_2d_px']

    def write_csv(path: Path) -> None:
        with open(path, 'w', newline='') as fh:
            out = csv.writer(fh)
            out.writerow(fields)
            for i, stamp in enumerate(stamps_ns):
                row = [i, int(stamp), initial.penetration_m[i] * 1e3,
                       refined.penetration_m[i] * 1e3]
                if has_gt:
                    row += [initial.add_s_m[i] * 1e3, refined.add_s_m[i] * 1e3,
                            initial.chamfer_3d_m[i] * 1e3, refined.chamfer_3d_m[i] * 1e3,
                            initial.chamfer_2d_px[i], refined.chamfer_2d_px[i]]
                out.writerow([f'{x:.4f}' if isinstance(x, float) else x for x in row])

    _replace_atomically(folder / 'per_frame.csv', write_csv)
    panels = [('penetration [mm]', initial.penetration_m * 1e3, refined.penetration_m * 1e3)]
    if has_gt:
        panels.insert(0, ('ADD-S [mm]', initial.add_s_m * 1e3, refined.add_s_m * 1e3))
        panels.insert(1, ('2D Chamfer [px]', initial.chamfer_2d_px, refined.chamfer_2d_px))
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.4 * len(panels)), squeeze=False)
    for ax, (title, a, b) in zip(axes[:, 0], panels):
        ax.plot(a, label='initial', color='tab:red')
        ax.plot(b, label='refined', color='tab:green')
        ax.set_ylabel(title)
        ax.legend(loc='upper right')
    axes[-1, 0].set_xlabel('frame')
    fig.tight_layout()
    _replace_atomically(folder / 'errors.png', lambda p: fig.savefig(p, format='png', dpi=90))
    plt.close(fig)

    if overlay:
        import imageio.v2 as imageio
        _replace_atomically(folder / 'overlay.gif', lambda p: imageio.mimsave(
            p, list(overlay), format='GIF', duration=1.0 / gif_fps, loop=0))

    data = dict(summary)
    data['initial'] = initial.means()
    data['refined'] = refined.means()
    _replace_atomically(folder / 'summary.json', lambda p: p.write_text(
        json.dumps(data, indent=2, default=_json_default)))
    _replace_atomically(folder / 'summary.md', lambda p: p.write_text(
        _markdown(data, has_gt)))
    return folder


def _json_default(x: object) -> object:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def _markdown(data: Mapping[str, object], has_gt: bool) -> str:
    lines = ['# Refinement report', '']
    for key, value in data.items():
        if key in ('initial', 'refined', 'final_losses'):
            continue
        lines.append(f'- {key}: {value}')
    lines += ['', '| poses | ADD-S mm | 3D Chamfer mm | 2D Chamfer px | penetration mm (mean of '
              'per-frame max) | max penetration mm |', '|---|---:|---:|---:|---:|---:|']
    for name in ('initial', 'refined'):
        m = data[name]
        cells = [f'{m["add_s_mm"]:.2f}', f'{m["chamfer_3d_mm"]:.2f}',
                 f'{m["chamfer_2d_px"]:.2f}'] if has_gt else ['-', '-', '-']
        lines.append(f'| {name} | ' + ' | '.join(cells) + f' | {m["penetration_mm"]:.2f} | '
                     f'{m["penetration_max_mm"]:.2f} |')
    losses = data.get('final_losses')
    if isinstance(losses, Mapping):
        lines += ['', '| loss term | first iteration | last iteration |', '|---|---:|---:|']
        for k, (a, b) in losses.items():
            lines.append(f'| {k} | {a:.4g} | {b:.4g} |')
    lines += ['', '![losses](losses.png)', '', '![errors](errors.png)', '',
              '![overlay](overlay.gif)', '']
    return '\n'.join(lines)
