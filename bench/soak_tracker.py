"""Soak test of the tracker node: memory over a long replay (prints figures, asserts nothing).

The tracker node runs in-process (own context, discovery off) and is fed a synthetic bag's
messages again and again, every pass's stamps shifted past the previous pass's, for
``--minutes`` of wall time: ``--mode replay`` (default, as ``handypriors track`` runs it: every
frame) or ``--mode live`` (the worker thread; images delivered at ``--rate`` Hz with a DDS-like
message info, so the drop and reception bookkeeping is soaked too). The process's
resident memory (VmRSS) is sampled every ``--every`` frames; the script prints it after the
first pass (warm), at the end, the maximum, and the least-squares growth per 1000 frames.

Usage: python bench/soak_tracker.py [--minutes 10] [--frames 90] [--every 100]
                                    [--mode replay|live] [--rate 30]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def shift(msg, offset_ns: int) -> None:
    def move(header) -> None:
        ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec + offset_ns
        header.stamp.sec, header.stamp.nanosec = divmod(ns, 1_000_000_000)
    if hasattr(msg, 'transforms'):
        for t in msg.transforms:
            move(t.header)
    elif hasattr(msg, 'header'):
        move(msg.header)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--minutes', type=float, default=10.0)
    parser.add_argument('--frames', type=int, default=90)
    parser.add_argument('--every', type=int, default=100)
    parser.add_argument('--mode', choices=('replay', 'live'), default='replay')
    parser.add_argument('--rate', type=float, default=30.0, help='live: images per second')
    args = parser.parse_args()

    import rclpy
    import torch
    from rclpy.parameter import Parameter
    from rclpy.serialization import deserialize_message

    from handypriors_ros import interfaces
    from handypriors_ros.bag import BagReader
    from handypriors_ros.ros.tracker_node import TrackerNode
    from handypriors_ros.synth.generate import GenerateConfig, generate
    from handypriors_ros.synth.scene import SceneConfig

    torch.set_num_threads(1)
    seq = Path(tempfile.mkdtemp(prefix='hp_soak_'))
    generate(GenerateConfig(scene=SceneConfig(n_frames=args.frames)), seq)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'OFF'
    context = rclpy.context.Context()
    rclpy.init(context=context, args=['soak'])
    node = TrackerNode(context=context, publish_hook=lambda topic, msg: None,
                       parameter_overrides=[Parameter('object_mesh', value=str(seq / 'object.ply')),
                                            Parameter('mode', value=args.mode),
                                            Parameter('publish_markers', value=True)])
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from tf2_msgs.msg import TFMessage
    cfg = node.config.input  # the input topics
    route = {cfg.image_topic: (Image, node.on_image),
             cfg.camera_info_topic: (CameraInfo, node.on_camera_info),
             cfg.mask_topic: (Image, node.on_mask),
             cfg.joint_states_topic: (JointState, node.on_joint_states),
             '/tf': (TFMessage, node.on_tf), '/tf_static': (TFMessage, node.on_tf_static),
             interfaces.resolve(cfg.initial_pose_topic): (PoseStamped, node.on_initial_pose)}
    with BagReader(seq / 'bag') as reader:
        messages = [(m.topic, m.rawdata) for m in reader.messages(route)]
    period_ns = int((args.frames / 30.0 + 1.0) * 1e9)
    samples: list[tuple[int, float]] = []
    start = time.monotonic()
    passes = 0
    warm_rss = None
    try:
        while time.monotonic() - start < args.minutes * 60:
            for topic, raw in messages:
                if topic == interfaces.resolve(cfg.initial_pose_topic) and passes:
                    continue
                msg_type, callback = route[topic]
                msg = deserialize_message(raw, msg_type)
                shift(msg, passes * period_ns)
                if topic == cfg.image_topic and args.mode == 'live':
                    time.sleep(1.0 / args.rate)
                    callback(msg, {'source_timestamp': time.time_ns()})
                else:
                    callback(msg)
                if topic == cfg.image_topic and node.frames_tracked % args.every == 0:
                    samples.append((node.frames_tracked, rss_mb()))
            if args.mode == 'replay':
                node.process_pending(flush=True)
            passes += 1
            if passes == 1:
                warm_rss = rss_mb()
            print(f'pass {passes}: {node.frames_tracked} frames tracked, RSS {rss_mb():.1f} MB, '
                  f'{time.monotonic() - start:.0f} s', flush=True)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    frames = np.array([s[0] for s in samples], dtype=float)
    rss = np.array([s[1] for s in samples])
    after_warm = frames >= args.frames
    slope = np.polyfit(frames[after_warm], rss[after_warm], 1)[0] * 1000 if after_warm.sum() > 2 \
        else float('nan')
    print(f'soak: {node.frames_tracked} frames in {passes} passes, '
          f'{(time.monotonic() - start) / 60:.1f} min; RSS after the first pass '
          f'{warm_rss:.1f} MB, at the end {rss_mb():.1f} MB, max {rss.max():.1f} MB; '
          f'growth {slope:+.2f} MB per 1000 frames; problems {dict(node.problem_counts)}')


if __name__ == '__main__':
    main()
