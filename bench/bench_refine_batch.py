"""Benchmark of ``handypriors refine-batch``: N small bags refined one after the other vs as Ray
tasks on this machine; prints bags per minute and checks that both give the same poses.

    python bench/bench_refine_batch.py [--bags 6] [--frames 30] [--iterations 20]
                                       [--size 160x120] [--workers 2] [--threads 1]
                                       [--device cpu] [--cache DIR] [--out DIR]

- ``sequential``: in one process, bag after bag, the function each Ray task runs
  (:func:`handypriors_ros.jobs.batch.refine_bag`: the ``handypriors refine`` job), with
  ``--threads`` torch threads (default 1, the Ray tasks' setting; ``--threads 0`` = torch's
  default, all cores), after one warm-up bag (imports, first-call set-up) not timed;
- ``ray``: :func:`handypriors_ros.jobs.batch.run_batch` on a local Ray with ``--workers``
  CPUs, one CPU per bag; the time includes starting and stopping Ray and the workers' imports
  (``ray (tasks)`` also shows it without them: from the first task's submission to the last
  result).

Bags: synthetic sequences (``handypriors generate``'s generator, mustard bottle, seeds 0..N-1)
cached in ``--cache``. Wall-clock figures on a shared machine are noisy: the header prints the
load average before the run.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def make_bags(cache: Path, n: int, frames: int, size: tuple[int, int]) -> list[Path]:
    from handypriors_ros.synth.generate import GenerateConfig, generate
    from handypriors_ros.synth.scene import SceneConfig

    w, h = size
    scale = w / 640.0
    folders = []
    for seed in range(n):
        folder = cache / f'seq{seed}_{frames}f_{w}x{h}'
        if not (folder / 'ground_truth.npz').is_file():
            cfg = GenerateConfig(seed=seed, width=w, height=h, fx=615.0 * scale, fy=615.0 * scale,
                                 cx=(w - 1) / 2, cy=(h - 1) / 2,
                                 scene=SceneConfig(n_frames=frames))
            generate(cfg, folder, overwrite=True)
        folders.append(folder)
    return folders


def poses(bag: Path) -> np.ndarray:
    from handypriors_ros import interfaces
    from handypriors_ros.bag import BagReader
    from handypriors_ros.ros.conversions import pose_to_matrix
    with BagReader(bag) as reader:
        return np.stack([pose_to_matrix(m.deserialize().pose.pose)
                         for m in reader.messages([interfaces.OBJECT_POSE_TOPIC])])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--bags', type=int, default=6)
    parser.add_argument('--frames', type=int, default=30)
    parser.add_argument('--iterations', type=int, default=20)
    parser.add_argument('--size', default='160x120', help='image size WxH (default 160x120)')
    parser.add_argument('--workers', type=int, default=2, help='CPUs of the local Ray')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads of the sequential run (0: torch default)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda', 'auto'))
    parser.add_argument('--cache', default='results/bench_refine_batch/bags')
    parser.add_argument('--out', default='results/bench_refine_batch/run')
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.lower().split('x'))

    import shutil

    import torch

    from handypriors_ros.jobs.batch import BatchJob, refine_bag, run_batch

    cache, out = Path(args.cache), Path(args.out)
    folders = make_bags(cache, args.bags, args.frames, (w, h))
    if out.exists():
        shutil.rmtree(out)  # the benchmark's own output folder
    settings = {'iterations': args.iterations, 'device': args.device}

    def batch(name: str, bags: list[Path]) -> BatchJob:
        return BatchJob.from_values({
            'bags': tuple(str(f / 'bag') for f in bags),
            'object_mesh': str(folders[0] / 'object.ply'), 'out_dir': str(out / name),
            'num_cpus': args.workers, **settings})

    load = os.getloadavg()
    print(f'# refine-batch benchmark: {args.bags} bags x {args.frames} frames ({w}x{h}), '
          f'{args.iterations} iterations, device {args.device}')
    print(f'# {platform.node()}: {os.cpu_count()} CPUs, {platform.processor() or "?"}, '
          f'python {platform.python_version()}, torch {torch.__version__}; load average '
          f'{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; '
          f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}')

    # sequential: the Ray task's function, in this process, bag after bag
    job = batch('sequential', folders)
    threads = args.threads or torch.get_num_threads()
    warm = batch('warmup', folders[:1])
    refine_bag(_with_threads(warm.task(warm.bags[0]), threads))
    start = time.perf_counter()
    for spec in job.bags:
        record = refine_bag(_with_threads(job.task(spec), threads))
        if record['status'] != 'ok':
            print(f'sequential: {spec.name} failed: {record["reason"]}', file=sys.stderr)
            return 1
    seq_s = time.perf_counter() - start

    job = batch('ray', folders)
    times: list[float] = []

    def progress(p):
        times.append(p.elapsed_s)

    start = time.perf_counter()
    outcome = run_batch(job, progress=progress)
    ray_s = time.perf_counter() - start
    bad = [r for r in outcome.records if r['status'] != 'ok']
    if bad:
        print(f'ray: {bad[0]["name"]} failed: {bad[0].get("reason")}', file=sys.stderr)
        return 1
    tasks_s = times[-1]
    same = all(np.array_equal(poses(out / 'sequential' / s.name), poses(out / 'ray' / s.name))
               for s in job.bags)
    n = args.bags
    rows = [('sequential', f'1 process, {threads} torch thread(s)', seq_s),
            ('ray', f'local Ray, {args.workers} CPUs, 1 CPU/bag (start-up included)', ray_s),
            ('ray (tasks)', 'first submission to last result', tasks_s)]
    print('| run | how | seconds | bags/min | speed-up |')
    print('| --- | --- | ---: | ---: | ---: |')
    for name, how, s in rows:
        print(f'| {name} | {how} | {s:.1f} | {60.0 * n / s:.2f} | {seq_s / s:.2f}x |')
    print(f'identical poses (sequential vs ray, every bag): {same}')
    return 0 if same else 1


def _with_threads(task, threads: int):
    import dataclasses
    return dataclasses.replace(task, torch_threads=threads)


if __name__ == '__main__':
    sys.exit(main())
