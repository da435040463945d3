"""A tiny synthetic sequence (160x120, 6 frames) shared by the tracker node and CLI tests.

Generated once per pytest session into the session's base temporary folder (under a partial
name, renamed when complete), so several test files reuse it.
"""
import shutil
from pathlib import Path

import numpy as np

N_FRAMES = 6


def tiny_config(seed: int = 3, n_frames: int = N_FRAMES):
    """The test_synth.py configuration: quarter resolution, intrinsics scaled with it."""
    from handypriors_ros.synth.generate import GenerateConfig
    from handypriors_ros.synth.scene import SceneConfig
    return GenerateConfig(object_name='mustard_bottle', seed=seed, width=160, height=120,
                          fx=153.75, fy=153.75, cx=79.5, cy=59.5,
                          scene=SceneConfig(n_frames=n_frames))


def tiny_sequence(tmp_path_factory) -> Path:
    """Folder with bag/, object.ply and ground_truth.npz (generated on first use)."""
    from handypriors_ros.synth.generate import generate
    folder = tmp_path_factory.getbasetemp() / 'tiny_sequence'
    if (folder / 'ground_truth.npz').is_file():
        return folder
    partial = folder.with_name('tiny_sequence.partial')
    if partial.exists():
        shutil.rmtree(partial)
    generate(tiny_config(), partial, overwrite=True)
    partial.rename(folder)
    return folder


def ground_truth(folder: Path) -> dict:
    """``{image stamp ns: T_cam_obj (4, 4)}``."""
    gt = np.load(folder / 'ground_truth.npz')
    return dict(zip(gt['stamps_ns'].tolist(), gt['T_cam_obj']))
