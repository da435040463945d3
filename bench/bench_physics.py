"""Benchmark of the physics priors: Warp signed distance (+ backward), contacts, rigid fit.

Prints p50 / p99 milliseconds per call on CPU (and CUDA when torch sees one). Other processes
sharing the CPU make the figures noisy; compare runs on an idle machine.

    python bench/bench_physics.py [--repeats 200] [--points 1000] [--threads N]

Warp's CPU kernels run on one thread; torch ops use ``--threads``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import trimesh

from handypriors_ros.core.geometry.se3 import invert_transform, se3_exp, transform_points
from handypriors_ros.core.physics import (
    WarpMeshSDF,
    find_contacts,
    penetration_loss,
    weighted_rigid_fit,
)


def _timeit(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """p50 and p99 wall time of ``fn()`` in ms, after warm-up."""
    for _ in range(max(3, repeats // 10)):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def _hand_like_points(mesh: trimesh.Trimesh, count: int, seed: int) -> np.ndarray:
    """Points within +-1 cm of the surface, like hand surface points around a held object."""
    rng = np.random.default_rng(seed)
    surf, face = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return surf + mesh.face_normals[face] * rng.uniform(-0.01, 0.01, size=(count, 1))


def bench_device(device: torch.device, repeats: int, num_points: int) -> list[tuple]:
    rows = []
    for subdivisions in (3, 4):  # 1280 and 5120 faces
        mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.04)
        sdf = WarpMeshSDF.from_trimesh(mesh, device=device)
        label = f'{len(mesh.faces)} faces'
        pts = torch.tensor(_hand_like_points(mesh, num_points, 0), dtype=torch.float32,
                           device=device)[None]

        def forward():
            return sdf.signed_distance(pts)

        def forward_backward():
            x = pts.clone().requires_grad_(True)
            sdf.signed_distance(x).distance.sum().backward()

        xi = torch.zeros(6, device=device, requires_grad=True)
        T0 = se3_exp(torch.tensor([0.0, 0.0, 0.4, 0.1, 0.2, 0.3], device=device))
        hand_cam = transform_points(T0, pts)

        def pose_gradient():
            T_cam_obj = se3_exp(xi) @ T0
            hand_obj = transform_points(invert_transform(T_cam_obj), hand_cam)
            contacts = find_contacts(hand_obj, sdf)
            penetration_loss(contacts.distance).sum().backward()

        rows.append((device, f'sdf+closest+normal {num_points} pts, {label}',
                     *_timeit(forward, repeats, device)))
        rows.append((device, f'  + backward to points, {label}',
                     *_timeit(forward_backward, repeats, device)))
        rows.append((device, f'find_contacts {num_points} pts, {label}',
                     *_timeit(lambda: find_contacts(pts, sdf), repeats, device)))
        rows.append((device, f'pose -> contacts -> L_pen -> d/dpose, {label}',
                     *_timeit(pose_gradient, repeats, device)))
        if device.type == 'cpu' and subdivisions == 4:
            wsdf = WarpMeshSDF.from_trimesh(mesh, device=device, sign_method='winding')
            rows.append((device, f'sdf, winding-number sign, {label}',
                         *_timeit(lambda: wsdf.signed_distance(pts), repeats, device)))

    gen = torch.Generator(device='cpu').manual_seed(0)
    for batch, count in ((1, 200), (30, 200)):
        X_prev = (torch.randn(batch, count, 3, generator=gen) * 0.03).to(device)
        X_curr = X_prev + 0.001
        weights = torch.ones(batch, count, device=device)

        def fit_backward():
            a = X_prev.clone().requires_grad_(True)
            weighted_rigid_fit(a, X_curr, weights).T.sum().backward()

        rows.append((device, f'weighted_rigid_fit B={batch} N={count}',
                     *_timeit(lambda: weighted_rigid_fit(X_prev, X_curr, weights), repeats,
                              device)))
        rows.append((device, f'  + backward, B={batch} N={count}',
                     *_timeit(fit_backward, repeats, device)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=200)
    parser.add_argument('--points', type=int, default=1000)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch intra-op threads (default: torch\'s choice); 1 is steadier '
                             'on a CPU shared with other processes')
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = [torch.device('cpu')]
    if torch.cuda.is_available():
        devices.append(torch.device('cuda', torch.cuda.current_device()))
    print(f'torch {torch.__version__}, threads {torch.get_num_threads()}, '
          f'cpus {os.cpu_count()}, repeats {args.repeats}')
    print(f'{"device":8s} {"what":52s} {"p50 ms":>8s} {"p99 ms":>8s}')
    for device in devices:
        for dev, what, p50, p99 in bench_device(device, args.repeats, args.points):
            print(f'{str(dev):8s} {what:52s} {p50:8.3f} {p99:8.3f}', flush=True)


if __name__ == '__main__':
    main()
