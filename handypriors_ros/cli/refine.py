"""``handypriors refine BAG --object MESH --out OUT_BAG``: offline optimisation refinement.

    handypriors refine BAG --object MESH --out OUT_BAG [--init TRACK_BAG] [--params YAML]
                       [--report DIR] [--checkpoint DIR] [--resume] [--ground-truth NPZ]
                       [--device auto|cpu|cuda] [--object-scale S] [--iterations N] ...

A thin front over :mod:`handypriors_ros.jobs.refine` (the refiner node's job): the flags and
``--params`` come from its one schema; without ``--params`` the settings are the defaults
(config/refine.yaml holds them).
"""
from __future__ import annotations

import argparse
import sys

from handypriors_ros.cli.progress import ProgressBar
from handypriors_ros.jobs.stop import StopRequest, stop_on_signals
from handypriors_ros.jobs.refine import REFINE_SCHEMA, RefineJob, run_refine, summary_lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    REFINE_SCHEMA.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    job = RefineJob.from_values(REFINE_SCHEMA.values_from_args(args))
    if job.live_only:
        _note(f'no effect offline: {", ".join(job.live_only)}')
    progress = None if args.quiet else ProgressBar('refine')
    with stop_on_signals(StopRequest()) as stop:  # checkpoint, then 130 / 143
        outcome = run_refine(job, progress=progress, warn=_note, stop=stop)
    print('\n'.join(summary_lines(outcome, job)), file=sys.stdout, flush=True)
    return 0


def _note(message: str) -> None:
    print(f'handypriors refine: {message}', file=sys.stderr, flush=True)
