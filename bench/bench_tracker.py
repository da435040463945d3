"""Benchmark of the object trackers on synthetic sequences with ground truth: prints the table.

    python bench/bench_tracker.py [--quick] [--methods full,obs_only,...,rapid_ols,rapid_gos]
                                  [--out DIR] [--cache DIR] [--frames N] [--threads N]

Methods:
- the EKF tracker (``handypriors_ros.core.tracking.tracker.ObjectTracker``) with each preset of
  ``handypriors_ros.core.tracking.config.ablation_configs()``: ``full``, ``obs_only``,
  ``dyn_only``, ... (skipped, with a line saying so, where the EKF is not available);
- ``hold_initial``: always the initial pose; ``hand_rigid``: the object rigidly attached to
  the hand root (TF only). These two bracket performance: any tracker should beat the first,
  and a useful one should beat the second, which already follows the wrist exactly;
- ``rapid``, ``rapid_ols``, ``rapid_gos``: OpenCV contrib's ``cv2.rapid`` edge trackers.

Sequences (``--quick``: 3 x 30 frames; default: 9 x 90 frames) are generated once into
``${HANDYPRIORS_BENCH_CACHE:-/tmp/handypriors_bench}`` (``--cache``); the first run of a suite
spends most of its time rendering them. Results: ``--out`` (default
``results/bench_tracker[_quick]``) gets ``report.md``, ``summary.json``, ``frames.npz`` and one
PNG per sequence. Times are wall-clock per ``step`` call on this machine; other processes
sharing the CPU make them noisy.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tracker_eval import (Sequence, SyntheticSuite, evaluate, format_table,  # noqa: E402
                          overall_summaries, summarise, write_report)

from handypriors_ros.core.errors import HandyPriorsError  # noqa: E402
from handypriors_ros.core.tracking.baselines import (HandRigidBaseline,  # noqa: E402
                                                     HoldInitialBaseline, RapidBaseline)

# Search lines and search radius [px] of each cv2.rapid variant: the best ADD-S mean of a
# sweep over num_lines {32, 64, 128} x search_radius_px {10, 20, 30} on the --quick suite
# (640 x 480). The trackers are sensitive to both (ADD-S means from 8 to 180 mm).
RAPID_SETTINGS = {
    'rapid': dict(variant='rapid', num_lines=64, search_radius_px=10),
    'rapid_ols': dict(variant='ols', num_lines=64, search_radius_px=20),
    'rapid_gos': dict(variant='gos', num_lines=128, search_radius_px=10),
}


def _rapid(settings: dict) -> Callable[[Sequence], object]:
    return lambda seq: RapidBaseline.from_object_model(seq.object_model, **settings)


BASELINES: dict[str, Callable[[Sequence], object]] = {
    'hold_initial': lambda seq: HoldInitialBaseline(),
    'hand_rigid': lambda seq: HandRigidBaseline(),
    **{name: _rapid(settings) for name, settings in RAPID_SETTINGS.items()},
}


def ekf_factories() -> tuple[dict[str, Callable[[Sequence], object]], str | None]:
    """The EKF tracker's presets as factories, or ({}, why) when it cannot be imported."""
    try:
        from handypriors_ros.core.models.kinematics import HandKinematics
        from handypriors_ros.core.tracking.config import ablation_configs
        from handypriors_ros.core.tracking.tracker import ObjectTracker
        from handypriors_ros.synth.generate import default_hand_urdf
    except ImportError as exc:
        return {}, f'{type(exc).__name__}: {exc}'
    hand: list = []  # built once, on first use

    def factory(config):
        def build(seq: Sequence):
            if not hand:
                hand.append(HandKinematics.from_urdf(default_hand_urdf()))
            return ObjectTracker(seq.object_model, hand[0], config)
        return build

    return {name: factory(cfg) for name, cfg in ablation_configs().items()}, None


def _truncated(seq: Sequence, n: int | None) -> Sequence:
    if n is None or n >= len(seq):
        return seq
    import dataclasses
    return dataclasses.replace(seq, frames=seq.frames[:n], T_cam_obj_gt=seq.T_cam_obj_gt[:n],
                               visible_fraction=seq.visible_fraction[:n])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='3 sequences of 30 frames')
    parser.add_argument('--methods', default=None,
                        help='comma-separated methods (default: every EKF preset and every '
                             'baseline)')
    parser.add_argument('--out', default=None, help='report folder')
    parser.add_argument('--cache', default=None, help='sequence cache folder')
    parser.add_argument('--frames', type=int, default=None,
                        help='use only the first N frames of each sequence')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    ekf, ekf_missing = ekf_factories()
    available = {**ekf, **BASELINES}
    if args.methods:
        methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    else:
        methods = list(available)
    unknown = [m for m in methods if m not in available]
    if ekf_missing is not None:
        print(f'EKF tracker not available yet ({ekf_missing}): running the baselines only')
        methods = [m for m in methods if m in available]
        if unknown:
            print(f'  skipped: {", ".join(unknown)}')
    elif unknown:
        print(f'unknown methods: {", ".join(unknown)}; choose from {", ".join(available)}',
              file=sys.stderr)
        return 2
    if not methods:
        print('no method to run', file=sys.stderr)
        return 2

    suite = SyntheticSuite.quick(args.cache) if args.quick else SyntheticSuite.full(args.cache)
    out = Path(args.out) if args.out else Path('results') / (
        'bench_tracker_quick' if args.quick else 'bench_tracker')
    print(f'suite: {len(suite.specs)} sequences, cache {suite.cache_dir}; methods: '
          f'{", ".join(methods)}; torch threads {torch.get_num_threads()}')

    results: list = []
    notes = [] if ekf_missing is None else [
        f'EKF tracker not available ({ekf_missing}); baselines only']
    notes.append('rot deg / trans mm are not symmetry-aware: for the symmetric objects '
                 '(soup_can: continuous, cracker_box: discrete) read ADD-S')
    notes.append('cv2.rapid settings: ' + '; '.join(
        f'{name} {s["num_lines"]} lines, radius {s["search_radius_px"]} px'
        for name, s in RAPID_SETTINGS.items()))
    for seq in suite.sequences(log=print):
        seq = _truncated(seq, args.frames)
        print(f'{seq.name}: {len(seq)} frames, object {seq.object_model.symmetry.kind} '
              f'symmetry, visible fraction mean {seq.visible_fraction.mean():.2f}')
        for method in methods:
            start = time.perf_counter()
            try:
                r = evaluate(available[method], seq, method=method)
            except HandyPriorsError as exc:
                line = f'{method} failed on {seq.name}: {type(exc).__name__}: {exc}'
                print(f'  {line}')
                notes.append(line)
                continue
            results.append(r)
            s = summarise(r)
            print(f'  {method:>16}: ADD-S {s.add_s_mean_mm:7.1f} mm, '
                  f'<10mm {s.add_s_below_10mm_pct:3.0f}%, rot {s.rotation_mean_deg:5.1f} deg, '
                  f'{s.ms_p50:7.1f} ms/frame p50, '
                  f'lost {s.lost_frames} ({time.perf_counter() - start:.0f} s)')
        # write after every sequence: an interrupted run keeps what it finished
        if results:
            write_report(results, out, notes=notes)
    if not results:
        print('no results', file=sys.stderr)
        return 1
    report = write_report(results, out, notes=notes)
    print()
    print('All sequences:')
    print(format_table(overall_summaries(results)))
    print()
    print('Per sequence:')
    print(format_table(summarise(r) for r in results))
    print(f'\nreport: {report}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
