"""``handypriors demo``: the main job on the embedded default sequence.

Generates the default synthetic sequence (deterministic, a few seconds), checks the bag against
the INTERFACES.md layout, and writes a results folder. Stages that are not part of this
version yet are listed as such in the output and in ``results.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from handypriors_ros import interfaces
from handypriors_ros.bag import BagReader
from handypriors_ros.cli.progress import ProgressBar

DEFAULT_OUT = 'handypriors_demo'

# The embedded default: a short sequence of the mustard bottle, side view, seed 0.
DEFAULT_SEQUENCE = dict(object='mustard_bottle', frames=60, fps=30.0, occlusion='medium',
                        camera_distance=0.5, roll_deg=15.0, slip_mm=0.0, seed=0,
                        object_scale=1.0)

EXPECTED_TOPICS = {
    interfaces.IMAGE_TOPIC: 'sensor_msgs/msg/Image',
    interfaces.CAMERA_INFO_TOPIC: 'sensor_msgs/msg/CameraInfo',
    interfaces.JOINT_STATES_TOPIC: 'sensor_msgs/msg/JointState',
    interfaces.TF_TOPIC: 'tf2_msgs/msg/TFMessage',
    interfaces.TF_STATIC_TOPIC: 'tf2_msgs/msg/TFMessage',
    interfaces.MASK_TOPIC: 'sensor_msgs/msg/Image',
    interfaces.INITIAL_POSE_TOPIC: 'geometry_msgs/msg/PoseStamped',
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', default=DEFAULT_OUT,
                        help='results folder (default: %(default)s); replaced if it exists')


def check_bag_layout(bag_dir: Path) -> dict:
    """Topic -> (type, count) of the bag; raises if a contract topic is missing or mistyped."""
    with BagReader(bag_dir) as reader:
        topics = reader.topics
    for topic, msgtype in EXPECTED_TOPICS.items():
        if topic not in topics:
            raise RuntimeError(f'generated bag lacks {topic}')
        if topics[topic][0] != msgtype:
            raise RuntimeError(f'{topic} carries {topics[topic][0]}, expected {msgtype}')
    return {t: {'type': v[0], 'messages': v[1]} for t, v in topics.items()}


def run(args: argparse.Namespace) -> int:
    from handypriors_ros.cli.generate import config_from_args
    from handypriors_ros.synth.generate import generate
    out = Path(args.out)
    seq_dir = out / 'sequence'
    t0 = time.perf_counter()
    print(f'handypriors demo: generating the default sequence into {seq_dir}')
    cfg = config_from_args(argparse.Namespace(**DEFAULT_SEQUENCE))
    summary = generate(cfg, seq_dir, preview=True, overwrite=True,
                       progress=ProgressBar('  render'))
    layout = check_bag_layout(seq_dir / 'bag')
    gt = np.load(seq_dir / 'ground_truth.npz')
    results = {
        'sequence': summary,
        'bag_topics': layout,
        'stages': {
            'generate': 'done',
            'track (EKF)': 'not available in this version yet',
            'refine (optimisation)': 'not available in this version yet',
        },
        'seconds': round(time.perf_counter() - t0, 2),
    }
    (out / 'results.json').write_text(json.dumps(results, indent=2))
    print(f'  bag: {seq_dir / "bag"} ({sum(v["messages"] for v in layout.values())} messages, '
          f'{len(layout)} topics, layout as INTERFACES.md)')
    print(f'  ground truth: {len(gt["stamps_ns"])} frames; visible fraction of the object '
          f'{summary["visible_fraction_mean"]:.2f} mean, {summary["visible_fraction_min"]:.2f} min')
    print(f'  preview: {seq_dir / "preview.png"}')
    print('  not in this version yet: the EKF tracker (handypriors track) and the offline '
          'refinement (handypriors refine)')
    print(f'handypriors demo: results in {out} ({results["seconds"]} s)')
    return 0
