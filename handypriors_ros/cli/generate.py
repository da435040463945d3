"""``handypriors generate``: write a synthetic sequence (input bag + ground truth)."""
from __future__ import annotations

import argparse
import json

from handypriors_ros.cli.progress import ProgressBar
from handypriors_ros.core.models.builtin_objects import BUILTIN_OBJECTS
from handypriors_ros.synth.scene import OCCLUSION_LEVELS, SceneConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', required=True, help='output folder (bag/, ground_truth.npz, ...)')
    parser.add_argument('--object', default='mustard_bottle',
                        help=f'built-in object ({", ".join(BUILTIN_OBJECTS)}) or a mesh file '
                             '(OBJ/PLY/STL/GLB, metres) (default: %(default)s)')
    parser.add_argument('--object-scale', type=float, default=1.0,
                        help='scale of a mesh file, e.g. 0.001 for millimetres')
    parser.add_argument('--frames', type=int, default=90, help='camera frames (default 90)')
    parser.add_argument('--fps', type=float, default=30.0, help='camera rate, Hz (default 30)')
    parser.add_argument('--occlusion', choices=OCCLUSION_LEVELS, default='medium',
                        help='how much the fingers hide the object (camera placement)')
    parser.add_argument('--camera-distance', type=float, default=0.5,
                        help='camera to object distance, m (default 0.5)')
    parser.add_argument('--roll-deg', type=float, default=15.0,
                        help='in-hand rotation amplitude, degrees (default 15)')
    parser.add_argument('--slip-mm', type=float, default=0.0,
                        help='slip of the object along the fingers over the sequence, mm')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    parser.add_argument('--preview', action='store_true',
                        help='also write preview.png: outline and hand skeleton on frames')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing folder')


def config_from_args(args: argparse.Namespace):
    from handypriors_ros.synth.generate import GenerateConfig
    scene = SceneConfig(n_frames=args.frames, fps=args.fps, occlusion=args.occlusion,
                        camera_distance_m=args.camera_distance, roll_deg=args.roll_deg,
                        slip_mm=args.slip_mm)
    return GenerateConfig(object_name=args.object, object_scale=args.object_scale, scene=scene,
                          seed=args.seed)


def run(args: argparse.Namespace) -> int:
    from handypriors_ros.synth.generate import generate
    summary = generate(config_from_args(args), args.out, preview=args.preview,
                       overwrite=args.overwrite, progress=ProgressBar('generate'))
    print(json.dumps(summary, indent=2))
    return 0
