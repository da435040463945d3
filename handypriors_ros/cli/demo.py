"""``handypriors demo``: the main job on the embedded default sequence.

1. generates the default synthetic sequence (deterministic: the same bag every run);
2. checks the bag against the INTERFACES.md layout;
3. runs the ``handypriors track`` job over it (the tracker node's pipeline: the one offline
   reader, the tracking session);
4. scores the estimates against the ground truth and writes a results folder:
   ``estimates/`` (the output bag), ``metrics.md`` / ``results.json`` (ADD-S, AUC, rotation and
   translation errors, ms/frame), ``errors.png`` (error over time) and ``overlay.gif`` (the
   tracked outline, green, and the true one, white, on the camera images).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from handypriors_ros import interfaces
from handypriors_ros.bag import BagReader
from handypriors_ros.cli.progress import ProgressBar

DEFAULT_OUT = 'handypriors_demo'

# The embedded default: the mustard bottle rolled in the hand, side view, seed 0.
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
    parser.add_argument('--frames', type=int, default=DEFAULT_SEQUENCE['frames'],
                        help='frames of the default sequence (default %(default)s)')


def check_bag_layout(bag_dir: Path) -> dict:
    """Topic -> {type, messages}; raises if a contract topic is missing or mistyped."""
    with BagReader(bag_dir) as reader:
        topics = reader.topics
    for topic, msgtype in EXPECTED_TOPICS.items():
        if topic not in topics:
            raise RuntimeError(f'generated bag lacks {topic}')
        if topics[topic][0] != msgtype:
            raise RuntimeError(f'{topic} carries {topics[topic][0]}, expected {msgtype}')
    return {t: {'type': v[0], 'messages': v[1]} for t, v in topics.items()}


def read_estimates(bag_dir: Path) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(stamps_ns (N,), T_cam_obj (N, 4, 4), per-frame total latency [s]) from a track bag."""
    stamps, poses, latency = [], [], []
    with BagReader(bag_dir) as reader:
        for m in reader.messages([interfaces.OBJECT_POSE_TOPIC, interfaces.TRACK_TOPIC]):
            msg = m.deserialize()
            if m.topic == interfaces.TRACK_TOPIC:
                total = [s.seconds for s in msg.latency if s.stage == 'total']
                latency.append(total[0] if total else float('nan'))
                continue
            p = msg.pose.pose
            T = np.eye(4)
            T[:3, :3] = Rotation.from_quat([p.orientation.x, p.orientation.y, p.orientation.z,
                                            p.orientation.w]).as_matrix()
            T[:3, 3] = [p.position.x, p.position.y, p.position.z]
            stamps.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
            poses.append(T)
    return np.array(stamps, dtype=np.int64), np.array(poses), latency


def score(T_est: np.ndarray, T_gt: np.ndarray, points: np.ndarray) -> dict:
    """Per-frame and summary errors (ADD-S, ADD, rotation, translation)."""
    from handypriors_ros.core import metrics
    add_s = metrics.add_s(T_est, T_gt, points)
    add = metrics.add(T_est, T_gt, points)
    rot = metrics.rotation_error_deg(T_est, T_gt)
    trans = metrics.translation_error(T_est, T_gt)
    return {
        'per_frame': {'add_s_mm': (add_s * 1000).tolist(), 'rotation_deg': rot.tolist(),
                      'translation_mm': (trans * 1000).tolist()},
        'add_s_mean_mm': float(add_s.mean() * 1000),
        'add_s_auc_10cm': float(metrics.auc_add(add_s, max_threshold=0.10)),
        'add_s_below_10mm_pct': float((add_s < 0.01).mean() * 100),
        'add_mean_mm': float(add.mean() * 1000),
        'rotation_mean_deg': float(rot.mean()),
        'translation_mean_mm': float(trans.mean() * 1000),
    }


def write_plot(path: Path, scores: dict, initial: dict) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    for s, label in ((scores, 'EKF tracker'), (initial, 'initial pose held')):
        ax[0].plot(s['per_frame']['add_s_mm'], label=label)
        ax[1].plot(s['per_frame']['rotation_deg'], label=label)
    ax[0].set(xlabel='frame', ylabel='ADD-S [mm]', title='ADD-S')
    ax[1].set(xlabel='frame', ylabel='[deg]', title='rotation error')
    for a in ax:
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_overlay(path: Path, seq_dir: Path, stamps: np.ndarray, T_est: np.ndarray,
                  T_gt: np.ndarray, every: int = 2) -> None:
    """GIF of the camera images (read by the one offline reader: undistorted, with their
    camera) with the tracked (green) and true (white) outlines."""
    import cv2
    import imageio.v2 as imageio
    import torch

    from handypriors_ros.bag.sequence import read_sequence
    from handypriors_ros.core.frames import HandNaming
    from handypriors_ros.core.models.kinematics import HandKinematics
    from handypriors_ros.core.models.object_model import ObjectModel
    from handypriors_ros.core.render.mesh import RenderMesh
    from handypriors_ros.core.render.overlay import draw_outline
    from handypriors_ros.core.render.renderer import Renderer, RenderSettings
    from handypriors_ros.resources import default_hand_urdf

    model = ObjectModel.from_file(seq_dir / 'object.ply')
    renderer = Renderer(RenderMesh.from_object_model(model),
                        settings=RenderSettings(cull_backfaces=False))
    hand = HandKinematics.from_urdf(default_hand_urdf())
    seq = read_sequence(seq_dir / 'bag', HandNaming.resolve(hand.joint_names, hand.root_link))
    frames_by_stamp = {f.stamp_ns: f for f in seq.frames}

    frames = []
    with torch.no_grad():
        for i in range(0, len(stamps), every):
            frame = frames_by_stamp[int(stamps[i])]
            img, cam = frame.rgb.copy(), frame.camera
            h, w = img.shape[:2]
            draw_outline(img, renderer, cam, T_gt[i], (255, 255, 255), 2)
            draw_outline(img, renderer, cam, T_est[i], (40, 255, 40), 2)
            cv2.putText(img, f'frame {i}', (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                        (255, 255, 255), 2, cv2.LINE_AA)
            frames.append(cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA))
    imageio.mimsave(path, frames, duration=0.1, loop=0)


def run(args: argparse.Namespace) -> int:
    import shutil

    from handypriors_ros.cli.generate import config_from_args
    from handypriors_ros.core.errors import HandyPriorsError
    from handypriors_ros.core.models.object_model import ObjectModel
    from handypriors_ros.jobs.track import TRACK_SCHEMA, TrackJob, run_track, summary_lines
    from handypriors_ros.synth.generate import generate

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    seq_dir = out / 'sequence'
    t0 = time.perf_counter()
    print(f'handypriors demo: 1/3 generating the default sequence into {seq_dir}')
    params = dict(DEFAULT_SEQUENCE, frames=args.frames)
    summary = generate(config_from_args(argparse.Namespace(**params)), seq_dir, preview=True,
                       overwrite=True, progress=ProgressBar('  render'))
    layout = check_bag_layout(seq_dir / 'bag')
    print(f'  bag: {sum(v["messages"] for v in layout.values())} messages on {len(layout)} '
          'topics, layout as INTERFACES.md')

    print('handypriors demo: 2/3 tracking (handypriors track)')
    est_bag = out / 'estimates'
    t1 = time.perf_counter()
    job = TrackJob.from_values(TRACK_SCHEMA.validate({
        'bag': str(seq_dir / 'bag'), 'object_mesh': str(seq_dir / 'object.ply'),
        'out_bag': str(est_bag)}))
    try:
        outcome = run_track(job, progress=ProgressBar('  track'),
                            warn=lambda m: print(f'  {m}'))
    except HandyPriorsError as exc:
        print(f'handypriors demo: tracking failed: {exc}')
        return 1
    track_seconds = time.perf_counter() - t1
    print('\n'.join('  ' + line for line in summary_lines(outcome)))

    print('handypriors demo: 3/3 scoring against the ground truth')
    gt = np.load(seq_dir / 'ground_truth.npz')
    stamps, T_est, latency = read_estimates(est_bag)
    if len(stamps) != len(gt['stamps_ns']) or not np.array_equal(stamps, gt['stamps_ns']):
        raise RuntimeError(f'the tracker returned {len(stamps)} estimates for '
                           f'{len(gt["stamps_ns"])} images')
    points = ObjectModel.from_file(seq_dir / 'object.ply').sample_points.numpy()
    scores = score(T_est, gt['T_cam_obj'], points)
    held = score(np.repeat(gt['T_cam_obj_initial'][None], len(stamps), 0), gt['T_cam_obj'],
                 points)
    lat_ms = np.array(latency) * 1000
    timing = {'ms_per_frame_p50': float(np.nanpercentile(lat_ms, 50)),
              'ms_per_frame_p99': float(np.nanpercentile(lat_ms, 99)),
              'track_wall_seconds': round(track_seconds, 2)}
    write_plot(out / 'errors.png', scores, held)
    write_overlay(out / 'overlay.gif', seq_dir, stamps, T_est, gt['T_cam_obj'])
    results = {'sequence': summary, 'bag_topics': layout,
               'tracker': {k: v for k, v in scores.items() if k != 'per_frame'} | timing,
               'initial_pose_held': {k: v for k, v in held.items() if k != 'per_frame'},
               'per_frame': scores['per_frame'],
               'seconds': round(time.perf_counter() - t0, 2)}
    (out / 'results.json').write_text(json.dumps(results, indent=2))
    rows = [('EKF tracker', scores), ('initial pose held', held)]
    table = ['| method | ADD-S mean [mm] | ADD-S AUC 10 cm | < 10 mm [%] | rotation [deg] | '
             'translation [mm] |', '|---|---:|---:|---:|---:|---:|']
    for name, s in rows:
        table.append(f'| {name} | {s["add_s_mean_mm"]:.2f} | {s["add_s_auc_10cm"]:.3f} | '
                     f'{s["add_s_below_10mm_pct"]:.0f} | {s["rotation_mean_deg"]:.2f} | '
                     f'{s["translation_mean_mm"]:.2f} |')
    table.append('')
    table.append(f'Tracker latency per frame: p50 {timing["ms_per_frame_p50"]:.1f} ms, '
                 f'p99 {timing["ms_per_frame_p99"]:.1f} ms ({len(stamps)} frames).')
    (out / 'metrics.md').write_text('\n'.join(table) + '\n')
    print('\n'.join('  ' + line for line in table))
    print(f'handypriors demo: results in {out}/ (metrics.md, results.json, errors.png, '
          f'overlay.gif, estimates/, sequence/preview.png) in {results["seconds"]} s')
    return 0
