"""Benchmark of the offline refinement, like the paper's Table I: prints the table.

    python bench/bench_refine.py [--full] [--frames N] [--iterations N] [--threads N]
                                 [--methods init,render,render_physics,ekf,ekf_refine]
                                 [--out DIR] [--cache DIR]

Rows per synthetic sequence (``tracker_eval.SyntheticSuite``: ``--quick``, the default, is 3
sequences of 30 frames at 640 x 480; ``--full`` 9 of 90):

- ``init``: the bag's initial pose (the truth offset by 1 cm and 5 degrees, as the generator
  writes it) carried through the sequence by the quasistatic dynamics (eq. 9);
- ``render``: ``init`` refined with the rendering priors only (mask loss; physics weights 0);
- ``render_physics``: ``init`` refined with rendering and physics priors (config/refine.yaml);
- ``ekf``: the real-time EKF tracker (``core.tracking``, preset ``full``), where it imports;
- ``ekf_refine``: the EKF's poses refined with rendering and physics priors.

Figures: ADD-S [mm] and 3D Chamfer [mm] of the model's surface samples, 2D Chamfer [px] of
their projections (paper Table III's definitions, ``core.metrics``), hand penetration [mm]
(deepest of the hand model's 2000 surface samples inside the object, mean over frames), and
seconds per frame: for the refinements the problem's preparation plus the Adam iterations, for
the EKF its ``step`` calls, for ``init`` the preparation (quasistatic propagation included).
Times are wall clock on this machine with ``--threads`` torch threads; other processes sharing
the CPU make them noisy (the table's header says how loaded the machine was).

Results: ``--out`` (default ``results/bench_refine[_full]``) gets ``report.md`` and
``summary.json``; written after each sequence, so an interrupted run keeps what it finished.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tracker_eval import Sequence, SyntheticSuite  # noqa: E402

from handypriors_ros.core.errors import HandyPriorsError  # noqa: E402
from handypriors_ros.core.geometry.se3 import invert_transform, transform_points  # noqa: E402
from handypriors_ros.core.models.kinematics import HandKinematics  # noqa: E402
from handypriors_ros.core.physics.sdf import WarpMeshSDF  # noqa: E402
from handypriors_ros.core.refine import (LossWeights, RefineConfig, RefineProblem,  # noqa: E402
                                         Refiner)
from handypriors_ros.core.refine.report import score_poses  # noqa: E402
from handypriors_ros.jobs.refine import load_refine_config  # noqa: E402
from handypriors_ros.resources import default_hand_urdf  # noqa: E402

METHODS = ('init', 'render', 'render_physics', 'ekf', 'ekf_refine')
COLUMNS = ('ADD-S mm', '3D Chamfer mm', '2D Chamfer px', 'penetration mm', 's/frame')


@dataclasses.dataclass(frozen=True)
class Row:
    method: str
    sequence: str
    frames: int
    add_s_mm: float
    chamfer_3d_mm: float
    chamfer_2d_px: float
    penetration_mm: float
    s_per_frame: float
    note: str = ''

    def cells(self) -> list[str]:
        return [f'{self.add_s_mm:.2f}', f'{self.chamfer_3d_mm:.2f}', f'{self.chamfer_2d_px:.2f}',
                f'{self.penetration_mm:.2f}', f'{self.s_per_frame:.3f}']


def hand_distances(hand: HandKinematics, sdf: WarpMeshSDF, seq: Sequence,
                   T_cam_obj: np.ndarray) -> np.ndarray:
    """(N, P) signed distance of the hand's surface samples to the object at each pose [m]."""
    with torch.no_grad():
        q = torch.as_tensor(np.stack([f.q for f in seq.frames]), dtype=torch.float32)
        T_base = torch.as_tensor(np.stack([f.T_cam_base for f in seq.frames]),
                                 dtype=torch.float32)
        pts_cam = hand.forward(q, T_base).surface_points
        T = torch.as_tensor(T_cam_obj, dtype=torch.float32)
        pts_obj = transform_points(invert_transform(T), pts_cam).contiguous()
        return sdf.signed_distance(pts_obj).distance.numpy().astype(np.float64)


def score(method: str, seq: Sequence, T: np.ndarray, seconds: float, hand: HandKinematics,
          sdf: WarpMeshSDF, note: str = '') -> Row:
    points = seq.object_model.sample_points.detach().cpu().numpy().astype(np.float64)
    K = seq.frames[0].camera.K
    s = score_poses(T, points, hand_distances(hand, sdf, seq, T), T_cam_obj_gt=seq.T_cam_obj_gt,
                    K=K).means()
    return Row(method, seq.name, len(seq), s['add_s_mm'], s['chamfer_3d_mm'],
               s['chamfer_2d_px'], s['penetration_mm'], seconds / len(seq), note)


def refine(seq: Sequence, hand: HandKinematics, sdf: WarpMeshSDF, config: RefineConfig, *,
           T_init: np.ndarray | None = None, optimise: bool = True
           ) -> tuple[np.ndarray, float, RefineProblem]:
    """Refined poses (the initial ones without ``optimise``), seconds (preparation +
    iterations) and the problem."""
    start = time.perf_counter()
    init = (dict(T_cam_obj_init=T_init) if T_init is not None
            else dict(T_cam_obj_first=seq.T_cam_obj_init))
    problem = RefineProblem.build(seq.frames, seq.object_model, hand, config, sdf=sdf, **init)
    if not optimise:
        return problem.T_cam_obj_init, time.perf_counter() - start, problem
    result = Refiner(problem).run()
    return result.T_cam_obj, time.perf_counter() - start, problem


def run_ekf(seq: Sequence, hand: HandKinematics) -> tuple[np.ndarray, float] | None:
    try:
        from tracker_eval import evaluate

        from handypriors_ros.core.tracking.config import TrackerConfig
        from handypriors_ros.core.tracking.tracker import ObjectTracker
    except ImportError as exc:
        print(f'  EKF tracker not available ({exc}): skipped')
        return None
    r = evaluate(lambda s: ObjectTracker(s.object_model, hand, TrackerConfig()), seq,
                 method='ekf')
    return r.T_cam_obj, float(r.step_ms.sum()) / 1e3


def format_table(rows: list[Row]) -> str:
    lines = ['| method | sequence | frames | ' + ' | '.join(COLUMNS) + ' |',
             '|---|---|---:|' + '---:|' * len(COLUMNS)]
    for r in rows:
        lines.append(f'| {r.method} | {r.sequence} | {r.frames} | ' + ' | '.join(r.cells())
                     + ' |')
    return '\n'.join(lines)


def overall(rows: list[Row]) -> list[Row]:
    """Per method, frame-weighted means over the sequences."""
    out = []
    for method in METHODS:
        rs = [r for r in rows if r.method == method]
        if not rs:
            continue
        w = np.array([r.frames for r in rs], dtype=float)

        def mean(field: str) -> float:
            return float(np.average([getattr(r, field) for r in rs], weights=w))

        out.append(Row(method, 'all', int(w.sum()), mean('add_s_mm'), mean('chamfer_3d_mm'),
                       mean('chamfer_2d_px'), mean('penetration_mm'), mean('s_per_frame')))
    return out


def write_report(rows: list[Row], out: Path, header: list[str]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    text = '\n'.join(['# Refinement benchmark (paper Table I)', '', *header, '',
                      '## All sequences', '', format_table(overall(rows)), '',
                      '## Per sequence', '', format_table(rows), ''])
    (out / 'report.md').write_text(text)
    (out / 'summary.json').write_text(json.dumps(
        {'header': header, 'overall': [dataclasses.asdict(r) for r in overall(rows)],
         'rows': [dataclasses.asdict(r) for r in rows]}, indent=2))
    return out / 'report.md'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--full', action='store_true', help='9 sequences of 90 frames')
    parser.add_argument('--frames', type=int, default=None, help='first N frames only')
    parser.add_argument('--iterations', type=int, default=None,
                        help='Adam iterations (default: config/refine.yaml)')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (default 2)')
    parser.add_argument('--methods', default=','.join(METHODS),
                        help=f'comma-separated subset of {",".join(METHODS)}')
    parser.add_argument('--params', default=None, help='refinement settings YAML')
    parser.add_argument('--out', default=None, help='report folder')
    parser.add_argument('--cache', default=None, help='sequence cache folder')
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        print(f'unknown methods {sorted(unknown)}; choose from {METHODS}', file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    config = load_refine_config(args.params or Path(__file__).resolve().parents[1] / 'config'
                                / 'refine.yaml')  # the job's file: its settings
    if args.iterations is not None:
        config = dataclasses.replace(config, iterations=args.iterations)
    no_physics = dataclasses.replace(config, weights=LossWeights(
        mask=config.weights.mask, rgb=config.weights.rgb, penetration=0.0, sliding=0.0,
        smoothness=0.0, acceleration=0.0))
    suite = SyntheticSuite.full(args.cache) if args.full else SyntheticSuite.quick(args.cache)
    out = Path(args.out) if args.out else Path('results') / (
        'bench_refine_full' if args.full else 'bench_refine')
    load = os.getloadavg()
    header = [f'- machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, '
              f'{torch.get_num_threads()} torch threads, no GPU used; load average at start '
              f'{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min): other processes '
              'share the cores, so the times are upper bounds',
              f'- refinement: {config.iterations} Adam iterations, ROI {config.roi_size_px} px, '
              f'{config.render_faces} rendered faces, weights {dataclasses.asdict(config.weights)}',
              '- init = initial pose (truth + 1 cm / 5 deg) carried by the quasistatic dynamics; '
              'render = + rendering priors; render_physics = + physics priors; ekf = real-time '
              'tracker; ekf_refine = the tracker refined',
              '- penetration = deepest hand surface sample inside the object per frame, mean '
              'over frames']
    print('\n'.join(header))
    hand = HandKinematics.from_urdf(default_hand_urdf())
    rows: list[Row] = []
    for seq in suite.sequences(log=print):
        if args.frames is not None and args.frames < len(seq):
            seq = dataclasses.replace(seq, frames=seq.frames[:args.frames],
                                      T_cam_obj_gt=seq.T_cam_obj_gt[:args.frames],
                                      visible_fraction=seq.visible_fraction[:args.frames])
        print(f'{seq.name}: {len(seq)} frames')
        sdf = WarpMeshSDF(np.asarray(seq.object_model.mesh.vertices),
                          np.asarray(seq.object_model.mesh.faces),
                          max_distance=config.sdf_max_distance_m)
        ekf = None
        for method in methods:
            try:
                if method == 'init':
                    T, s, _ = refine(seq, hand, sdf, config, optimise=False)
                elif method == 'render':
                    T, s, _ = refine(seq, hand, sdf, no_physics)
                elif method == 'render_physics':
                    T, s, _ = refine(seq, hand, sdf, config)
                else:
                    if ekf is None:
                        ekf = run_ekf(seq, hand)
                    if ekf is None:
                        continue
                    if method == 'ekf':
                        T, s = ekf
                    else:
                        T, s, _ = refine(seq, hand, sdf, config, T_init=ekf[0])
            except HandyPriorsError as exc:
                print(f'  {method} failed: {type(exc).__name__}: {exc}')
                continue
            row = score(method, seq, T, s, hand, sdf)
            rows.append(row)
            print(f'  {method:>15}: ADD-S {row.add_s_mm:6.2f} mm, 3D Chamfer '
                  f'{row.chamfer_3d_mm:6.2f} mm, 2D Chamfer {row.chamfer_2d_px:5.2f} px, '
                  f'penetration {row.penetration_mm:5.2f} mm, {row.s_per_frame:.3f} s/frame')
        if rows:
            write_report(rows, out, header)
    if not rows:
        print('no results', file=sys.stderr)
        return 1
    report = write_report(rows, out, header)
    print('\nAll sequences:')
    print(format_table(overall(rows)))
    print(f'\nreport: {report}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
