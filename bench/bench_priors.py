"""All priors of one frame, forward + backward w.r.t. the object's 6-DoF pose (prints figures).

One frame of the synthetic default scene (the mustard bottle held by the Allegro hand, 0.5 m
from the camera): the soft renderer with the hand as occluder -> mask loss (eq. 2) and RGB loss
(eq. 1) against an observed frame, plus the physics priors on the hand's 2000 surface samples ->
penetration (eq. 3b), contact sliding w.r.t. the previous frame (eq. 3a), smoothness (eq. 4)
and acceleration (eq. 5); the gradient w.r.t. a 6-DoF pose perturbation of the current frame.
Reported at 64, 128 and 256 px (the camera scaled so the object fills the same share of the
image), p50 / p99 over --runs runs; the issue's goal: within 15 ms on 2 CPU cores at 128 px.

Usage: python bench/bench_priors.py [--runs 30] [--threads 1]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from handypriors_ros.core.geometry import se3_exp
from handypriors_ros.core.models.kinematics import HandKinematics
from handypriors_ros.core.models.object_model import ObjectModel
from handypriors_ros.core.physics import (WarpMeshSDF, acceleration_loss, find_contacts,
                                          penetration_loss, sliding_loss, smoothness_loss)
from handypriors_ros.core.render import PinholeCamera, Renderer, RenderMesh, mask_loss, rgb_loss
from handypriors_ros.resources import default_hand_urdf
from handypriors_ros.synth.generate import GenerateConfig, generate
from handypriors_ros.synth.scene import SceneConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=30)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix='hp_priors_'))
    cfg = GenerateConfig(scene=SceneConfig(n_frames=3))
    generate(cfg, out)
    gt = np.load(out / 'ground_truth.npz')
    obj = ObjectModel.from_file(out / 'object.ply')
    kin = HandKinematics.from_urdf(default_hand_urdf())
    mesh = RenderMesh.from_object_model(obj)
    sdf = WarpMeshSDF(np.asarray(obj.mesh.vertices), np.asarray(obj.mesh.faces))
    T_cam_world = np.linalg.inv(gt['T_world_cam'])
    T_cam_base = torch.as_tensor(T_cam_world @ gt['T_world_base'], dtype=torch.float32)
    q = torch.as_tensor(gt['q'], dtype=torch.float32)
    T_gt = torch.as_tensor(gt['T_cam_obj'], dtype=torch.float32)  # (3, 4, 4)
    hand_v, hand_f = kin.posed_mesh(q[2:], T_cam_base[2:])
    pts = kin.forward(q, T_cam_base).surface_points  # (3, P, 3)
    obj_pts = obj.sample_points[:500]
    print(f'object proxy {mesh.num_faces} faces, hand {hand_f.shape[0]} faces, '
          f'{pts.shape[1]} hand samples; torch threads {args.threads}')
    for size in (64, 128, 256):
        cam = cfg.camera
        # crop the image around the object and scale it to `size` px wide
        u = (T_gt[2, :3, 3] / T_gt[2, 2, 3]).double().numpy()
        cx0, cy0 = float(cam.fx * u[0] + cam.cx), float(cam.fy * u[1] + cam.cy)
        half = 160.0
        s = size / (2 * half)
        crop = PinholeCamera(fx=cam.fx * s, fy=cam.fy * s, cx=(cam.cx - cx0 + half) * s,
                             cy=(cam.cy - cy0 + half) * s, width=size, height=size)
        renderer = Renderer(mesh, hand_faces=hand_f, backend='soft')
        with torch.no_grad():
            observed = renderer.render(crop, T_gt[2:], hand_v)
        obs_mask = (observed.object_mask > 0.5).float()
        obs_rgb = observed.object_rgb

        def step() -> None:
            delta = torch.zeros(1, 6, requires_grad=True)
            T = se3_exp(delta) @ T_gt[2:]
            out = renderer.render(crop, T, hand_v)
            loss = mask_loss(out.object_mask, obs_mask).sum() \
                + rgb_loss(out.object_rgb, obs_rgb, obs_mask).sum()
            T_all = torch.cat([T_gt[:2], T])
            T_obj_cam = torch.linalg.inv(T)
            p_obj = pts[2:] @ T_obj_cam[:, :3, :3].transpose(-1, -2) + T_obj_cam[:, None, :3, 3]
            contacts = find_contacts(p_obj, sdf)
            loss = loss + penetration_loss(contacts.distance).sum() \
                + sliding_loss(pts[1:2], pts[2:], T_gt[1:2], T, contacts.mask).sum() \
                + smoothness_loss(T_all, obj_pts).sum() + acceleration_loss(T_all, obj_pts).sum()
            loss.backward()

        for _ in range(3):
            step()
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            step()
            times.append((time.perf_counter() - t) * 1000)
        print(f'{size:4d} px: all priors fwd+bwd p50 {np.percentile(times, 50):6.1f} ms, '
              f'p99 {np.percentile(times, 99):6.1f} ms')


if __name__ == '__main__':
    main()
