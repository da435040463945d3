"""Benchmark of the rendering priors on this machine (prints figures; asserts nothing).

Measures, for an icosphere object of ~1.3k and ~5k faces filling ~45 % of the image width:
- the soft backend's silhouette (hard z-buffer + analytic antialiasing) forward + backward
  w.r.t. a 6-DoF pose at 64, 128 and 256 px (p50 / p99 over --runs runs);
- the whole soft renderer (silhouette with a hand occluder, depth, RGB) forward + backward;
- one contour-residual Gauss-Newton step (selection + jacfwd Jacobian, K = 200);
- the hard rasterizer: a shaded 640x480 scene of a ~5k-face object and a hand bar.

Usage: python bench/bench_render.py [--runs 30] [--threads N]
Timings on shared machines are noisy (other processes compete for the cores); p99 shows it.
With more torch threads than free cores, torch's thread pool waits on descheduled threads and
wall times grow several-fold (measured up to 30x on 2 busy cores): use --threads 1 there.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import trimesh

from handypriors_ros.core.geometry import make_transform, se3_exp
from handypriors_ros.core.render import (
    PinholeCamera,
    Renderer,
    RenderMesh,
    contour_residual,
    signed_distance_transform,
)


def timed(fn, runs: int, warmup: int = 3) -> tuple[float, float, float]:
    """p50 and p99 wall time and p50 process CPU time [ms] of ``fn()``.

    CPU time counts the work of all threads but not the waits for a core, so on a shared
    machine it is the steadier figure (with one thread it is the single-core cost).
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return (float(np.percentile(wall, 50)), float(np.percentile(wall, 99)),
            float(np.percentile(cpu, 50)))


def camera(size: int) -> PinholeCamera:
    return PinholeCamera(1.2 * size, 1.2 * size, (size - 1) / 2, (size - 1) / 2, size, size)


def object_pose() -> torch.Tensor:
    R = se3_exp(torch.tensor([0.0, 0.0, 0.0, 0.3, -0.2, 0.1]))[:3, :3]
    return make_transform(R, torch.tensor([0.004, -0.003, 0.267]))[None]


def bench_soft_silhouette(runs: int) -> None:
    print('soft silhouette (hard z-buffer + analytic antialiasing), forward + backward w.r.t. a '
          '6-DoF pose')
    print(f'{"faces":>6} {"px":>5} {"p50 ms":>8} {"p99 ms":>8} {"cpu ms":>8}')
    T0 = object_pose()
    for subdiv in (3, 4):
        mesh = trimesh.creation.icosphere(subdivisions=subdiv, radius=0.05)
        r = Renderer(RenderMesh.from_trimesh(mesh), backend='soft')
        for size in (64, 128, 256):
            cam = camera(size)
            xi = torch.zeros(1, 6, requires_grad=True)

            def step(cam=cam, xi=xi, r=r):
                r.render(cam, se3_exp(xi) @ T0).object_mask.sum().backward()

            p50, p99, cpu = timed(step, runs)
            print(f'{len(mesh.faces):>6} {size:>5} {p50:>8.1f} {p99:>8.1f} {cpu:>8.1f}')


def bench_renderer(runs: int) -> None:
    print('\nRenderer.render (soft backend, default settings), forward + backward of mask + rgb '
          'losses, hand bar occluding')
    bar = trimesh.creation.box((0.015, 0.3, 0.015))
    hand = torch.tensor(bar.vertices, dtype=torch.float32)[None] + \
        torch.tensor([0.0, 0.0, 0.2])
    for subdiv, size in ((3, 128), (4, 128)):
        m = trimesh.creation.icosphere(subdivisions=subdiv, radius=0.05)
        m.visual.vertex_colors = (np.abs(m.vertices) / 0.05 * 255).astype(np.uint8)
        cam = camera(size)
        r = Renderer(RenderMesh.from_trimesh(m), hand_faces=torch.tensor(bar.faces),
                     backend='soft')
        T0 = object_pose()
        target = r.render(cam, T0, hand)
        xi = torch.zeros(1, 6, requires_grad=True)

        def step(r=r, xi=xi, T0=T0, target=target, cam=cam):
            out = r.render(cam, se3_exp(xi) @ T0, hand)
            loss = ((out.object_mask - target.object_mask) ** 2).sum() + \
                ((out.object_rgb - target.object_rgb) ** 2).sum()
            loss.backward()

        p50, p99, cpu = timed(step, runs)
        print(f'{len(m.faces):>6} faces {size:>4} px: p50 {p50:.1f} ms, p99 {p99:.1f} ms, '
              f'cpu {cpu:.1f} ms')


def bench_contour(runs: int) -> None:
    print('\ncontour residual (K = 200), one Gauss-Newton step: sample selection + residual + '
          '200x6 Jacobian')
    box = trimesh.creation.box((0.08, 0.05, 0.04))
    m = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    for name, mesh in (('box', box), ('icosphere 1280', m)):
        r = Renderer(RenderMesh.from_trimesh(mesh), backend='soft')
        cam = camera(128)
        T0 = object_pose()
        sdt = signed_distance_transform(r.render_scene(cam, T0).object_mask)
        T_est = se3_exp(torch.tensor([[0.003, 0.0, 0.0, 0.0, 0.02, 0.0]])) @ T0

        def analytic(r=r, sdt=sdt, T_est=T_est, cam=cam):
            res = contour_residual(r, cam, T_est, sdt, with_jacobian=True)
            J, rv = res.jacobian[0], res.residual[0]
            torch.linalg.solve(J.T @ J + 1e-6 * torch.eye(6), J.T @ rv)

        def autodiff(r=r, sdt=sdt, T_est=T_est, cam=cam):
            samples = contour_residual(r, cam, T_est, sdt).samples

            def res(xi):
                return contour_residual(r, cam, se3_exp(xi) @ T_est, sdt,
                                        samples=samples).residual[0]

            xi0 = torch.zeros(1, 6)
            J = torch.func.jacfwd(res)(xi0)[:, 0]
            torch.linalg.solve(J.T @ J + 1e-6 * torch.eye(6), J.T @ res(xi0))

        for how, fn in (('analytic J', analytic), ('jacfwd J', autodiff)):
            p50, p99, cpu = timed(fn, runs)
            print(f'{name:>15}, {how:>10}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, cpu {cpu:.1f} ms')


def bench_hard(runs: int) -> None:
    print('\nhard rasterizer: shaded 640x480 scene (object ~5k faces + hand bar), no gradients')
    m = trimesh.creation.icosphere(subdivisions=4, radius=0.05)
    m.visual.vertex_colors = (np.abs(m.vertices) / 0.05 * 255).astype(np.uint8)
    bar = trimesh.creation.box((0.015, 0.3, 0.015))
    cam = PinholeCamera(615.0, 615.0, 319.5, 239.5, 640, 480)
    r = Renderer(RenderMesh.from_trimesh(m), hand_faces=torch.tensor(bar.faces),
                 backend='soft')
    hand = torch.tensor(bar.vertices, dtype=torch.float32)[None] + torch.tensor([0.0, 0.0, 0.3])
    T0 = make_transform(torch.eye(3), torch.tensor([0.0, 0.0, 0.35]))[None]
    p50, p99, cpu = timed(lambda: r.render_scene(cam, T0, hand), runs)
    covered = int(r.render_scene(cam, T0, hand).object_mask.sum())
    print(f'{len(m.faces) + len(bar.faces):>6} faces, {covered} object px: '
          f'p50 {p50:.1f} ms, p99 {p99:.1f} ms, cpu {cpu:.1f} ms')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=30)
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {args.runs} runs\n')
    bench_soft_silhouette(args.runs)
    bench_renderer(args.runs)
    bench_contour(args.runs)
    bench_hard(args.runs)


if __name__ == '__main__':
    main()
