"""Per-stage tracker step times recorded in ``handypriors track`` output bags.

    python bench/track_latency.py OUT_BAG_OR_FOLDER... [--stage track]

Every TrackedObject on ``/handypriors/track`` carries the per-stage latency of its frame
(``predict``, ``render``, ``update``, ``track`` = the whole ``ObjectTracker.step``, ...). This
reads them from output bags (a bag folder, or a folder searched recursively for bags: e.g. the
tracker outputs of the devbench evaluation) and prints p50 / p90 / p99 / mean per stage over
the tracked frames, per bag and over all. Predict-only answers (no image) are left out. The
figures are wall-clock times of the run that wrote the bags, so they are only as quiet as that
machine was.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from handypriors_ros import interfaces
from handypriors_ros.bag.io import BagReader


def find_bags(paths: list[str]) -> list[Path]:
    """Bag folders (holding metadata.yaml) among ``paths``, searched recursively."""
    bags: list[Path] = []
    for p in map(Path, paths):
        if (p / 'metadata.yaml').is_file():
            bags.append(p)
        elif p.is_dir():
            bags += sorted(m.parent for m in p.rglob('metadata.yaml'))
        else:
            raise SystemExit(f'{p}: not a bag folder or a folder of bags')
    return bags


def stage_times(bag: Path) -> dict[str, list[float]]:
    """``{stage: [seconds per tracked frame]}`` of one output bag."""
    times: dict[str, list[float]] = defaultdict(list)
    with BagReader(bag) as reader:
        for m in reader.messages([interfaces.TRACK_TOPIC]):
            msg = m.deserialize()
            if msg.status_reason.startswith('predict only'):
                continue
            for s in msg.latency:
                times[s.stage].append(float(s.seconds))
    return times


def _row(name: str, x: list[float]) -> str:
    a = np.asarray(x) * 1e3
    return (f'{name:<28} n={len(a):5d}  p50 {np.percentile(a, 50):6.1f}  p90 '
            f'{np.percentile(a, 90):6.1f}  p99 {np.percentile(a, 99):6.1f}  mean '
            f'{a.mean():6.1f} ms')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('paths', nargs='+')
    parser.add_argument('--stage', default=None,
                        help='only this stage (default: all, the whole step first)')
    args = parser.parse_args(argv)
    bags = find_bags(args.paths)
    if not bags:
        print('no output bags found', file=sys.stderr)
        return 1
    total: dict[str, list[float]] = defaultdict(list)
    for bag in bags:
        times = stage_times(bag)
        if 'track' in times and args.stage in (None, 'track'):
            print(_row(bag.parent.name + '/' + bag.name, times['track']))
        for k, v in times.items():
            total[k] += v
    if not total:
        print('no tracked frames with latency in these bags', file=sys.stderr)
        return 1
    print(f'-- all {len(bags)} bags, per stage --')
    order = ['track'] + sorted(k for k in total if k != 'track')
    for k in order:
        if k in total and args.stage in (None, k):
            print(_row(k, total[k]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
