"""``handypriors refine-batch``: refine many bags, one Ray task per bag.

    handypriors refine-batch BAG... | --manifest FILE  --object MESH | --objects-map YAML
                             --out DIR [--address auto|HOST:6379|ray://HOST:10001]
                             [--cpus-per-task N] [--gpus-per-task N] [--num-cpus N]
                             [--resume | --overwrite] [--reports] [refine's options ...]

A thin front over :mod:`handypriors_ros.jobs.batch`: each bag runs the job of
``handypriors refine`` with the options given here (``--params``, ``--iterations``,
``--device``...). Exit status: 0 when every bag is refined (or finished earlier), 1 when some
failed (their reasons in the summary), 130 on Ctrl-C (``--resume`` continues).
Ray is imported only when a batch runs.
"""
from __future__ import annotations

import argparse
import math
import sys

from handypriors_ros.jobs.batch import (BATCH_SCHEMA, BatchInterrupted, BatchJob, BatchProgress,
                                        read_batch_params, run_batch)

LABEL = 'handypriors refine-batch'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('bags', nargs='*', metavar='BAG',
                        help='input bags (rosbag2 folders or files); and/or --manifest')
    BATCH_SCHEMA.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    values = BATCH_SCHEMA.values_from_args(args, read_params=read_batch_params)
    if args.bags:
        values['bags'] = tuple(args.bags)
    job = BatchJob.from_values(values)
    show = None if args.quiet else _show_progress
    try:
        outcome = run_batch(job, progress=show, note=_note)
    except BatchInterrupted as exc:
        o = exc.outcome
        _note(f'interrupted: {o.count("ok") + o.count("skipped")} of {len(o.records)} bags '
              f'finished; the others continue with --resume ({o.summary_md})')
        raise KeyboardInterrupt from None
    failed = [r for r in outcome.records if r['status'] == 'failed']
    ok, skipped = outcome.count('ok'), outcome.count('skipped')
    print(f'{LABEL}: {len(outcome.records)} bags -> {job.out_dir}: {ok} refined, {skipped} '
          f'finished earlier, {len(failed)} failed ({outcome.seconds:.1f} s); summary: '
          f'{outcome.summary_md}', flush=True)
    for r in failed:
        print(f'  {r["name"]}: failed: {r["reason"]}', flush=True)
    return 1 if failed else 0


def _show_progress(p: BatchProgress) -> None:
    width = 20
    filled = int(width * p.done / max(p.total, 1))
    r = p.record
    what = (f'{r["frames"]} frames, {r["seconds"]:.1f} s' if r['status'] == 'ok'
            else f'failed: {r.get("reason", "")}')
    eta = 'done' if p.done >= p.total else (
        f'ETA {p.eta_s:.0f} s' if math.isfinite(p.eta_s) else 'ETA ?')
    print(f'{LABEL} [{"#" * filled}{"." * (width - filled)}] {p.done}/{p.total} bags'
          f'{f" ({p.failed} failed)" if p.failed else ""}, {p.bags_per_minute:.1f} bags/min, '
          f'{eta} | {r["name"]}: {what}', file=sys.stderr, flush=True)


def _note(message: str) -> None:
    print(f'{LABEL}: {message}', file=sys.stderr, flush=True)
