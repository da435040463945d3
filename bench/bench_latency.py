"""Latency of the tracker node over DDS: image published -> object TF received.

Three processes on one machine, in a ROS domain nobody else uses:
- ``tracker_node`` (live mode unless ``--mode replay``; default QoS: reliable images);
- ``test/ros_helpers/bag_publisher.py`` playing a synthetic bag (default: the tracker
  benchmark's mustard bottle, 640x480, 90 frames, generated once into the cache of
  bench/tracker_eval.py) at ``--rate`` Hz, writing each image's publication time;
- this script, subscribed to /tf and /handypriors/track, taking each object transform's
  arrival time.
Publication and arrival times are CLOCK_MONOTONIC, which is system-wide on Linux, so the
difference is the end-to-end latency of each tracked image: transport to the node, waiting in
the node, tracking, publication, transport back.

Prints: frames published / tracked (live mode drops what it cannot keep up with), latency p50 /
p90 / p99 / max, the node's own per-stage medians (from TrackedObject.latency), and the load
average (other work on the machine inflates every figure).

Usage: python bench/bench_latency.py [--rate 30] [--frames 90] [--width 640 --height 480]
                                     [--mode live|replay] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'test'))  # ros_helpers: the bag publisher, free domain probe
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tracker_eval: the sequence cache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rate', type=float, default=30.0, help='image rate [Hz]')
    parser.add_argument('--frames', type=int, default=90)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--mode', choices=('live', 'replay'), default='live')
    parser.add_argument('--json', default=None, help='also write the figures here')
    parser.add_argument('--verbose', action='store_true', help='print the tracker\'s log')
    args = parser.parse_args(argv)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from ros_helpers.domains import free_domain_id
    from tf2_msgs.msg import TFMessage
    from tracker_eval import SequenceSpec, SyntheticSuite

    from handypriors_ros import interfaces
    from handypriors_ros.msg import TrackedObject
    from handypriors_ros.ros.conversions import stamp_to_ns
    from handypriors_ros.ros.qos import OUTPUT_QOS, TF_QOS

    spec = SequenceSpec('mustard_bottle', 'medium', n_frames=args.frames, seed=1,
                        width=args.width, height=args.height)
    suite = SyntheticSuite([spec])
    folder = suite.ensure(spec, log=print)
    domain = free_domain_id()
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    load_before = os.getloadavg()

    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node('latency_bench', context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    arrivals: dict[int, int] = {}
    stages: dict[str, list[float]] = {}
    diagnostics: list = []

    def on_tf(msg: TFMessage) -> None:
        now = time.monotonic_ns()
        for t in msg.transforms:
            if t.child_frame_id == interfaces.OBJECT_FRAME:
                arrivals.setdefault(stamp_to_ns(t.header.stamp), now)

    def on_track(msg: TrackedObject) -> None:
        for s in msg.latency:
            stages.setdefault(s.stage, []).append(s.seconds * 1000.0)

    node.create_subscription(TFMessage, interfaces.TF_TOPIC, on_tf, TF_QOS)
    node.create_subscription(TrackedObject, interfaces.TRACK_TOPIC, on_track, OUTPUT_QOS)
    node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, OUTPUT_QOS)
    with tempfile.TemporaryDirectory() as tmp:
        times_file = Path(tmp) / 'publish_times.txt'
        tracker = subprocess.Popen(
            [sys.executable, '-m', 'handypriors_ros.ros.tracker_node', '--ros-args',
             '-p', f'object_mesh:={folder / "object.ply"}', '-p', f'mode:={args.mode}',
             '-p', 'publish_markers:=false'],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        publisher = subprocess.Popen(
            [sys.executable, str(REPO / 'test' / 'ros_helpers' / 'bag_publisher.py'),
             str(folder / 'bag'), str(args.rate), '--wait-for', 'all', '--settle', '2',
             '--times', str(times_file), '--linger', '2'],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 600.0
            while publisher.poll() is None and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.01)
            end = time.monotonic() + 3.0  # the last frames on their way
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.01)
        finally:
            tracker.terminate()
            tracker_out, _ = tracker.communicate(timeout=30)
            if publisher.poll() is None:
                publisher.kill()
            publisher_out, _ = publisher.communicate(timeout=30)
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown(context=context)
        published = {}
        if times_file.is_file():
            for line in times_file.read_text().split('\n'):
                if line.strip():
                    stamp, t = map(int, line.split())
                    published[stamp] = t
    load_after = os.getloadavg()
    if args.verbose:
        print(tracker_out)
        print(publisher_out)
    latency_ms = np.array([(arrivals[s] - published[s]) / 1e6 for s in published
                           if s in arrivals])
    if len(latency_ms) == 0:
        print('no frame was tracked; tracker output:\n' + tracker_out)
        return 1
    counts = {}
    if diagnostics:
        counts = {kv.key[len('count_'):]: int(kv.value) for kv in diagnostics[-1].status[0].values
                  if kv.key.startswith('count_')}
    pct = {f'p{q}': round(float(np.percentile(latency_ms, q)), 1) for q in (50, 90, 99)}
    result = {
        'mode': args.mode, 'rate_hz': args.rate,
        'image': f'{args.width}x{args.height}', 'frames_published': len(published),
        'frames_tracked': len(latency_ms),
        'latency_ms': {**pct, 'max': round(float(latency_ms.max()), 1),
                       'mean': round(float(latency_ms.mean()), 1)},
        'node_stage_median_ms': {k: round(float(np.median(v)), 1) for k, v in stages.items()},
        'node_counts': counts,
        'load_average_1min': [round(load_before[0], 2), round(load_after[0], 2)],
        'cpu_cores': os.cpu_count(),
    }
    print(f'tracker_node {args.mode} mode, {args.width}x{args.height} images at {args.rate:g} Hz '
          f'over DDS (3 processes, {os.cpu_count()} cores, load average '
          f'{load_before[0]:.1f} -> {load_after[0]:.1f})')
    print(f'  frames: {len(published)} published, {len(latency_ms)} tracked; node counts: '
          + (', '.join(f'{k} {n}' for k, n in sorted(counts.items())) or 'none'))
    print(f'  image published -> TF received [ms]: p50 {pct["p50"]}, p90 {pct["p90"]}, '
          f'p99 {pct["p99"]}, max {result["latency_ms"]["max"]}')
    print('  node stages, median [ms]: ' + ', '.join(
        f'{k} {v}' for k, v in result['node_stage_median_ms'].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
