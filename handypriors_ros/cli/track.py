"""``handypriors track BAG --object MESH --out OUT_BAG``: the real-time tracker over every image
of a bag (offline, deterministic). A thin front over :mod:`handypriors_ros.jobs.track`: the
flags and ``--params`` come from the tracker's one schema (the tracker node's parameters plus
the job's BAG, ``--out`` and ``--overwrite``), the job reads the bag through the one offline
reader and tracks every frame with the tracker node's session.
"""
from __future__ import annotations

import argparse
import sys

from handypriors_ros.cli.progress import ProgressBar
from handypriors_ros.jobs.stop import StopRequest, stop_on_signals
from handypriors_ros.jobs.track import TRACK_SCHEMA, TrackJob, run_track, summary_lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    TRACK_SCHEMA.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    job = TrackJob.from_values(TRACK_SCHEMA.values_from_args(args))
    if job.live_only:
        _note(f'no effect offline (track replays every frame, writes no markers): '
              f'{", ".join(job.live_only)}')
    progress = None if args.quiet else ProgressBar('track')
    with stop_on_signals(StopRequest()) as stop:  # SIGINT 130, SIGTERM 143
        outcome = run_track(job, progress=progress, warn=_note, stop=stop)
    print('\n'.join(summary_lines(outcome)), file=sys.stdout, flush=True)
    return 0


def _note(message: str) -> None:
    print(f'handypriors track: {message}', file=sys.stderr, flush=True)
