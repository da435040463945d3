"""CPU time per ``ObjectTracker.step`` on cached synthetic sequences: prints p50 / p99 / mean.

    python bench/time_tracker_step.py [--sequences NAME,...] [--repeats 3] [--threads 1]
                                      [--device cpu] [--poses OUT.npz]

Times are ``time.process_time`` per step (CPU time of this process, all its threads), so
other processes sharing the machine disturb them less than wall-clock times; with
``--device cuda`` wall-clock times (``time.perf_counter``) are printed as well, since GPU work
is not CPU time. Each repeat builds a fresh tracker and runs the whole sequence; the first
repeat is also timed (the tracker warms its kernels up in its constructor). Each repeat does the
same computation, so the per-frame minimum over the repeats (``min-of-repeats``) is the figure
least disturbed by other processes on a shared machine. ``--poses`` saves
the estimated poses of the first repeat per sequence (to compare two versions of the tracker
frame by frame). The sequences come from ``bench/tracker_eval.SyntheticSuite.full()``'s cache
(generated there when missing).
"""
from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tracker_eval import SyntheticSuite, load_sequence  # noqa: E402

from handypriors_ros.core.models.kinematics import HandKinematics  # noqa: E402
from handypriors_ros.core.tracking.tracker import ObjectTracker  # noqa: E402
from handypriors_ros.synth.generate import default_hand_urdf  # noqa: E402

DEFAULT_SEQUENCES = ('mustard_bottle-low-roll15-slip0-s10-n90',
                     'cracker_box-heavy-roll15-slip5-s15-n90')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sequences', default=','.join(DEFAULT_SEQUENCES))
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--device', default=None,
                        help="ObjectTracker's device (omitted: the constructor's default)")
    parser.add_argument('--poses', default=None, help='save the poses of the first repeat')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    suite = SyntheticSuite.full()
    specs = {s.name: s for s in suite.specs}
    kwargs = {}
    if args.device is not None:
        if 'device' not in inspect.signature(ObjectTracker).parameters:
            print('this ObjectTracker has no device argument', file=sys.stderr)
            return 2
        kwargs['device'] = args.device
    hand = HandKinematics.from_urdf(default_hand_urdf())
    saved = {}
    print(f'torch threads {torch.get_num_threads()}, repeats {args.repeats}, device '
          f'{args.device or "default"}')
    for name in args.sequences.split(','):
        seq = load_sequence(suite.ensure(specs[name]), name=name)
        cpu_ms, wall_ms = [], []
        per_repeat = []
        for r in range(args.repeats):
            tracker = ObjectTracker(seq.object_model, hand, **kwargs)
            tracker.initialise(seq.T_cam_obj_init.copy())
            poses = []
            for frame in seq.frames:
                c0, w0 = time.process_time(), time.perf_counter()
                res = tracker.step(frame)
                cpu_ms.append((time.process_time() - c0) * 1e3)
                wall_ms.append((time.perf_counter() - w0) * 1e3)
                poses.append(res.T_cam_obj)
            if r == 0:
                saved[name] = np.stack(poses)
            per_repeat.append(cpu_ms[-len(seq.frames):])
        c, w = np.asarray(cpu_ms), np.asarray(wall_ms)
        best = np.min(per_repeat, axis=0)  # (frames,) min over the repeats
        print(f'{name}: {len(c)} steps, CPU ms/frame p50 {np.percentile(c, 50):.1f} p99 '
              f'{np.percentile(c, 99):.1f} mean {c.mean():.1f}; min-of-repeats p50 '
              f'{np.percentile(best, 50):.1f} p99 {np.percentile(best, 99):.1f} mean '
              f'{best.mean():.1f}; wall ms/frame p50 {np.percentile(w, 50):.1f} p99 '
              f'{np.percentile(w, 99):.1f}')
    if args.poses:
        np.savez(args.poses, **saved)
        print(f'poses: {args.poses}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
