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


#: What generate writes into its folder (only these are replaced with --overwrite).
GENERATED_FILES = ('bag', 'object.ply', 'ground_truth.npz', 'sequence.json', 'preview.png')


def check_generate_args(args: argparse.Namespace) -> None:
    """Bad values, an output that cannot be written or would replace something else, and a
    mesh whose size says its units are wrong: refused before any work.

    Raises:
        InputError, ModelError: one line naming the problem and the fix.
    """
    from pathlib import Path

    from handypriors_ros.bag import check_output_bag, check_output_dir
    from handypriors_ros.core.errors import InputError
    from handypriors_ros.core.models.object_model import (check_object_size, load_object_mesh,
                                                          mesh_diameter)

    for flag, value, low in (('--frames', args.frames, 2), ('--fps', args.fps, 1e-3),
                             ('--camera-distance', args.camera_distance, 0.05),
                             ('--object-scale', args.object_scale, 1e-9)):
        if not value >= low or value != value or value == float('inf'):
            raise InputError(f'{flag}: expected a finite value >= {low:g}, got {value!r}')
    out = Path(args.out)
    check_output_dir(out, overwrite=args.overwrite, files=GENERATED_FILES, name='--out',
                     flag='--overwrite')
    check_output_bag(out / 'bag', overwrite=args.overwrite, name='--out', flag='--overwrite')
    if args.object not in BUILTIN_OBJECTS:
        if not Path(args.object).is_file():
            raise InputError(f'--object {args.object}: neither a built-in object '
                             f'({", ".join(BUILTIN_OBJECTS)}) nor a mesh file')
        mesh = load_object_mesh(args.object, scale=args.object_scale)
        check_object_size(mesh_diameter(mesh.vertices), where=args.object,
                          scale=args.object_scale, scale_flag='--object-scale')


def run(args: argparse.Namespace) -> int:
    from handypriors_ros.synth.generate import generate
    check_generate_args(args)
    summary = generate(config_from_args(args), args.out, preview=args.preview,
                       overwrite=args.overwrite, progress=ProgressBar('generate'))
    print(json.dumps(summary, indent=2))
    return 0
