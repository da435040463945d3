"""Latency and accuracy of the tracker node live over DDS, against ``handypriors track`` offline.

Three processes on one machine, in a ROS domain nobody else uses:
- ``tracker_node`` (live mode unless ``--mode replay``; its default QoS: image reliability
  ``auto``, i.e. matching the player's reliable publishers);
- ``test/ros_helpers/bag_publisher.py``, an independent player of a synthetic bag (the tracker
  benchmark's mustard bottle, 640x480 rgb8 images at ``--rate`` Hz with camera_info, object
  masks, ~100 Hz joint states and TF, generated once into the cache of bench/tracker_eval.py),
  writing each image's publication time;
- this script, the listener: /tf (object transforms) and ``track`` (TrackedObject, one per
  answered image, with the node's per-stage latency).
Publication and arrival times are CLOCK_MONOTONIC, system-wide on Linux, so their difference is
the end-to-end latency of each image: transport to the node, waiting, tracking, publication,
transport back.

Then ``handypriors track`` runs the same bag offline (every frame, deterministic) and both are
scored against the sequence's ground truth: ADD-S per image, the live run holding its last
published pose for an image it did not answer (what a consumer of the live output has).

Prints and (``--json``) writes: images published / answered (a TrackedObject received) / with
a TF, image -> TF latency p50 / p90 / p99 / max, the node's per-stage medians and p99s (from
TrackedObject.latency), node counters (frames dropped, ...), online vs offline mean ADD-S, and
the machine's load: load average before / after, the CPU time of the tracker over the
playback (from its first answer), and the whole machine's busy and steal fractions over it
(other work on the machine, or on the VM's host, inflates every figure: read them together).
Run it at the priority the tracker would have (not under ``nice``, which every child
inherits); the offline run is niced.

``--transport``: Fast DDS transports of all three processes:
- ``profile`` (the default): the package's ``config/fastdds_large_images.xml`` (an 8 MiB
  shared-memory segment), what ``tracker.launch.py`` gives the processes it starts;
- ``default``: Fast DDS as rmw_fastrtps sets it up, without a profile file (a 512 KB
  shared-memory segment: a 640x480 rgb8 image arrives 12-13 ms late);
- ``shm`` (shared memory only, ``FASTDDS_BUILTIN_TRANSPORTS='SHM?max_msg_size=2MB&
  sockets_size=16MB'``) and ``udp`` (UDPv4 only), both with ``ROS_AUTOMATIC_DISCOVERY_RANGE=
  SUBNET`` on the bench's own domain: with ``LOCALHOST`` rmw_fastrtps ignores the variable.
The output names what was in effect (``dds_transports``).

``--one-process``: the camera's images and camera_info reach the tracker in its own process
(``bench/one_process_player.py``, the equivalent of ``tracker_with_camera``); the external player
publishes the other topics over DDS on the same clock.

Usage: python bench/bench_latency.py [--rate 30] [--frames 270] [--width 640 --height 480]
          [--mode live|replay] [--transport profile|default|shm|udp] [--one-process]
          [--param NAME:=VALUE ...]
          [--no-offline] [--json out.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'test'))  # ros_helpers: the bag publisher, free domain probe
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tracker_eval: the sequence cache

#: --transport -> FASTDDS_BUILTIN_TRANSPORTS (None: a profile file or rmw_fastrtps's own).
TRANSPORTS = {
    'profile': None,
    'default': None,
    'shm': 'SHM?max_msg_size=2MB&sockets_size=16MB',
    'udp': 'UDPv4',
}


def transport_environment(choice: str, environ: dict[str, str]) -> dict[str, str]:
    """The environment of the bench's processes for ``--transport choice`` (module docstring)."""
    from handypriors_ros.resources import package_file
    from handypriors_ros.ros import dds

    env = {k: v for k, v in environ.items()
           if k not in dds.PROFILE_VARIABLES and k != 'FASTDDS_BUILTIN_TRANSPORTS'}
    if choice == 'profile':
        env.update(dds.profile_environment(
            'auto', env, lambda: package_file(dds.LARGE_IMAGES_PROFILE)))
    elif TRANSPORTS[choice]:
        env.update(FASTDDS_BUILTIN_TRANSPORTS=TRANSPORTS[choice],
                   ROS_AUTOMATIC_DISCOVERY_RANGE='SUBNET')
    return env


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process [s] (0 when it is gone)."""
    try:
        fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def machine_busy() -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of the whole machine (/proc/stat; steal: time the
    hypervisor gave this VM's CPUs to others, counted in busy)."""
    values = [int(v) for v in Path('/proc/stat').read_text().split('\n')[0].split()[1:]]
    idle = values[3] + values[4]
    steal = values[7] if len(values) > 7 else 0
    return sum(values) - idle, sum(values), steal


def percentiles(values_ms, qs=(50, 90, 99)) -> dict[str, float]:
    a = np.asarray(values_ms, dtype=float)
    if not len(a):
        return {}
    out = {f'p{q}': round(float(np.percentile(a, q)), 1) for q in qs}
    out['max'] = round(float(a.max()), 1)
    return out


def _lost_episodes(reasons: list[tuple[int, str, str]]) -> list[list[str]]:
    """For each switch to LOST (in stamp order): the status reasons of the three answers
    before it and of the first LOST one (why the track was given up)."""
    ordered = sorted(reasons)
    episodes = []
    for i, (_, status, _) in enumerate(ordered):
        if status == 'lost' and (i == 0 or ordered[i - 1][1] != 'lost'):
            episodes.append([f'{name}: {reason}'
                             for _, name, reason in ordered[max(0, i - 3):i + 1]])
    return episodes


def add_s_held(stamps: np.ndarray, poses: dict[int, np.ndarray], T_gt: np.ndarray,
               points: np.ndarray, T_init: np.ndarray) -> np.ndarray:
    """ADD-S [m] per image, holding the last pose received (the initial pose before any)."""
    from handypriors_ros.core import metrics

    held, est = T_init, []
    for s in stamps:
        held = poses.get(int(s), held)
        est.append(held)
    return metrics.add_s(np.asarray(est), T_gt, points)


def offline_poses(bag: Path, mesh: Path, out: Path, params: list[str]) -> tuple[dict, float]:
    """``handypriors track`` on the bag (niced: its speed is not measured): ({stamp:
    T_cam_obj}, wall seconds)."""
    from rclpy.serialization import deserialize_message

    from handypriors_ros import interfaces
    from handypriors_ros.bag import BagReader
    from handypriors_ros.msg import TrackedObject
    from handypriors_ros.ros.conversions import pose_to_matrix, stamp_to_ns

    cmd = ['nice', '-n', '10', sys.executable, str(REPO / 'scripts' / 'handypriors'), 'track',
           str(bag),
           '--object', str(mesh), '--out', str(out), *params]
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    if done.returncode != 0:
        raise RuntimeError(f'handypriors track failed ({done.returncode}): '
                           f'{done.stderr.strip()[-2000:]}')
    poses = {}
    with BagReader(out) as reader:
        for m in reader.messages([interfaces.TRACK_TOPIC]):
            msg = deserialize_message(m.rawdata, TrackedObject)
            if msg.status != TrackedObject.STATUS_LOST:
                poses[stamp_to_ns(msg.header.stamp)] = pose_to_matrix(msg.pose.pose)
    return poses, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rate', type=float, default=30.0, help='image rate [Hz]')
    parser.add_argument('--frames', type=int, default=270)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--mode', choices=('live', 'replay'), default='live')
    parser.add_argument('--transport', choices=sorted(TRANSPORTS), default='profile',
                        help='Fast DDS transports of the three processes (module docstring)')
    parser.add_argument('--one-process', action='store_true',
                        help='the images and camera_info go from a player thread in the '
                             "tracker's process straight to its callbacks, as with "
                             'tracker_with_camera (one_process:=true); the other topics still '
                             'come over DDS from the player process')
    parser.add_argument('--param', action='append', default=[],
                        help='extra tracker_node parameter NAME:=VALUE (repeatable)')
    parser.add_argument('--no-offline', action='store_true',
                        help='skip the offline run (no ADD-S comparison)')
    parser.add_argument('--json', default=None, help='also write the figures here')
    parser.add_argument('--per-image', action='store_true',
                        help='with --json: also each image\'s publication time, latency, '
                             'node stages (where a slow answer lost its time) and ADD-S online '
                             'and offline (where the two tracks part)')
    parser.add_argument('--verbose', action='store_true', help="print the tracker's log")
    args = parser.parse_args(argv)
    # SIGTERM (a timeout, a job runner) ends like Ctrl-C, through the finally below that stops
    # the tracker and the player: killed without it, they kept running (and spinning a core).
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from ros_helpers.domains import free_domain_id
    from tf2_msgs.msg import TFMessage
    from tracker_eval import SequenceSpec, SyntheticSuite

    from handypriors_ros import interfaces
    from handypriors_ros.bag import BagReader
    from handypriors_ros.core.models.object_model import ObjectModel
    from handypriors_ros.msg import TrackedObject
    from handypriors_ros.ros import dds
    from handypriors_ros.ros.conversions import pose_to_matrix, stamp_to_ns
    from handypriors_ros.ros.qos import OUTPUT_QOS, TF_QOS

    spec = SequenceSpec('mustard_bottle', 'medium', n_frames=args.frames, seed=1,
                        width=args.width, height=args.height)
    suite = SyntheticSuite([spec])
    folder = suite.ensure(spec, log=print)
    with BagReader(folder / 'bag') as reader:
        bag_topics = {t: n for t, (_, n) in reader.topics.items()}
    domain = free_domain_id()
    env = transport_environment(args.transport, dict(os.environ, ROS_DOMAIN_ID=str(domain)))
    os.environ.clear()
    os.environ.update(env)  # the listener (this process) too, before rclpy.init
    transports = dds.describe_transports(env)

    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node('latency_bench', context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    tf_arrivals: dict[int, int] = {}
    track_arrivals: dict[int, int] = {}
    online: dict[int, np.ndarray] = {}
    statuses: dict[str, int] = {}
    reasons: list[tuple[int, str, str]] = []  # (stamp, status, status_reason) per answer
    stages: dict[str, list[float]] = {}
    stages_of: dict[int, dict[str, float]] = {}  # stamp -> the node's stages [ms] of that answer
    diagnostics: list = []

    def on_tf(msg: TFMessage) -> None:
        now = time.monotonic_ns()
        for t in msg.transforms:
            if t.child_frame_id == interfaces.OBJECT_FRAME:
                tf_arrivals.setdefault(stamp_to_ns(t.header.stamp), now)

    def on_track(msg: TrackedObject) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        track_arrivals.setdefault(stamp, time.monotonic_ns())
        name = {0: 'initialising', 1: 'tracking', 2: 'lost'}.get(msg.status, str(msg.status))
        statuses[name] = statuses.get(name, 0) + 1
        reasons.append((stamp, name, msg.status_reason))
        if msg.status != TrackedObject.STATUS_LOST:
            online[stamp] = pose_to_matrix(msg.pose.pose)
        for s in msg.latency:
            stages.setdefault(s.stage, []).append(s.seconds * 1000.0)
            stages_of.setdefault(stamp, {})[s.stage] = round(s.seconds * 1000.0, 2)

    node.create_subscription(TFMessage, interfaces.TF_TOPIC, on_tf, TF_QOS)
    node.create_subscription(TrackedObject, interfaces.TRACK_TOPIC, on_track, OUTPUT_QOS)
    node.create_subscription(DiagnosticArray, interfaces.DIAGNOSTICS_TOPIC, diagnostics.append,
                             OUTPUT_QOS)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        times_file = Path(tmp) / 'publish_times.txt'
        start_file = Path(tmp) / 'start.txt'
        if args.one_process:  # images and camera_info handed over in the tracker's process
            tracker_cmd = [sys.executable, str(REPO / 'bench' / 'one_process_player.py'),
                           str(folder / 'bag'), str(start_file), str(times_file)]
            player_args = ['--skip', interfaces.IMAGE_TOPIC, '--skip',
                           interfaces.CAMERA_INFO_TOPIC, '--start-file', str(start_file)]
        else:
            tracker_cmd = [sys.executable, '-m', 'handypriors_ros.ros.tracker_node']
            player_args = ['--times', str(times_file)]
        tracker_cmd += ['--ros-args', '-p', f'object_mesh:={folder / "object.ply"}',
                        '-p', f'mode:={args.mode}', '-p', 'publish_markers:=false']
        for p in args.param:
            tracker_cmd += ['-p', p]
        tracker = subprocess.Popen(tracker_cmd, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        publisher = subprocess.Popen(
            [sys.executable, str(REPO / 'test' / 'ros_helpers' / 'bag_publisher.py'),
             str(folder / 'bag'), str(args.rate), '--wait-for', 'all', '--settle', '2',
             '--linger', '2', *player_args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        cpu0 = None
        try:
            deadline = time.monotonic() + 900.0
            while publisher.poll() is None and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.01)
                if cpu0 is None and (track_arrivals or tf_arrivals):
                    # playback started (the first answer): CPU counters from here
                    cpu0 = (time.monotonic(), cpu_seconds(tracker.pid),
                            cpu_seconds(publisher.pid), machine_busy())
            cpu1 = (time.monotonic(), cpu_seconds(tracker.pid), 0.0, machine_busy())
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
        offline, offline_s = None, None
        if not args.no_offline:
            offline, offline_s = offline_poses(folder / 'bag', folder / 'object.ply',
                                               Path(tmp) / 'offline', [])
    if args.verbose:
        print(tracker_out)
        print(publisher_out)
    if not published:
        print('the player published nothing; its output:\n' + publisher_out)
        return 1
    latency_ms = [(tf_arrivals[s] - published[s]) / 1e6 for s in published if s in tf_arrivals]
    answered_ms = [(track_arrivals[s] - published[s]) / 1e6 for s in published
                   if s in track_arrivals]
    n_pub = len(published)
    counts = {}
    if diagnostics:
        counts = {kv.key[len('count_'):]: int(kv.value) for kv in diagnostics[-1].status[0].values
                  if kv.key.startswith('count_')}
    load = {'load_average_1min_before_after': [round(load_before[0], 2),
                                               round(load_after[0], 2)],
            'cpu_cores': os.cpu_count()}
    if cpu0 is not None:
        wall = cpu1[0] - cpu0[0]
        total = max(cpu1[3][1] - cpu0[3][1], 1)
        load.update({'playback_s': round(wall, 2),
                     'tracker_cpu_cores': round((cpu1[1] - cpu0[1]) / wall, 2),
                     'machine_busy_fraction': round((cpu1[3][0] - cpu0[3][0]) / total, 3),
                     'machine_steal_fraction': round((cpu1[3][2] - cpu0[3][2]) / total, 3)})
    result = {
        'date_utc': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M'),
        'machine': f'{platform.node()} {platform.system()} {platform.release()}, '
                   f'{os.cpu_count()} cores',
        'mode': args.mode, 'transport': args.transport, 'dds_transports': transports,
        'rate_hz': args.rate,
        'one_process': args.one_process,
        'params': args.param, 'image': f'{args.width}x{args.height}',
        'bag_messages': bag_topics,
        'images_published': n_pub, 'answered': len(answered_ms),
        'answered_pct': round(100.0 * len(answered_ms) / n_pub, 1),
        'with_tf': len(latency_ms), 'statuses': statuses,
        'lost_episodes': _lost_episodes(reasons),
        'image_to_tf_ms': percentiles(latency_ms),
        'image_to_track_ms': percentiles(answered_ms),
        'node_stage_ms': {k: {'p50': round(float(np.median(v)), 2),
                              'p99': round(float(np.percentile(v, 99)), 2)}
                          for k, v in stages.items()},
        'node_counts': counts, 'load': load,
    }
    gt = np.load(folder / 'ground_truth.npz')
    stamps = np.asarray(gt['stamps_ns'], dtype=np.int64)
    points = ObjectModel.from_file(folder / 'object.ply', n_sample_points=1000).sample_points
    points = np.asarray(points.detach().cpu().numpy() if hasattr(points, 'detach') else points,
                        dtype=np.float64)
    with BagReader(folder / 'bag') as reader:
        from rclpy.serialization import deserialize_message
        from geometry_msgs.msg import PoseStamped

        (init_msg,) = [deserialize_message(m.rawdata, PoseStamped)
                       for m in reader.messages([interfaces.INITIAL_POSE_TOPIC])][:1]
        T_init = pose_to_matrix(init_msg.pose)
    T_gt = np.asarray(gt['T_cam_obj'], dtype=np.float64)
    online_add_s = add_s_held(stamps, online, T_gt, points, T_init)
    result['online_add_s_mm'] = round(float(online_add_s.mean()) * 1e3, 2)
    if offline is not None:
        offline_add_s = add_s_held(stamps, offline, T_gt, points, T_init)
        result['offline_add_s_mm'] = round(float(offline_add_s.mean()) * 1e3, 2)
        result['offline_wall_s'] = round(offline_s, 1)
        result['online_vs_offline_pct'] = round(
            100.0 * (online_add_s.mean() / offline_add_s.mean() - 1.0), 1)

    where = ('images handed over in the tracker\'s process, the rest over DDS' if args.one_process
             else 'over DDS')
    print(f'tracker_node {args.mode} mode, {args.width}x{args.height} images at {args.rate:g} Hz '
          f'{where} ({args.transport} transport: {transports}; 3 processes, '
          f'{os.cpu_count()} cores)')
    print(f'  load: {load}')
    print(f'  images: {n_pub} published, {len(answered_ms)} answered '
          f'({result["answered_pct"]} %), {len(latency_ms)} with a TF; statuses {statuses}; '
          'node counts: ' + (', '.join(f'{k} {n}' for k, n in sorted(counts.items())) or 'none'))
    for episode in result['lost_episodes']:
        print('  became LOST: ' + ' | '.join(episode))
    print(f'  image published -> TF received [ms]: {result["image_to_tf_ms"]}')
    print('  node stages [ms] p50/p99: ' + ', '.join(
        f'{k} {v["p50"]}/{v["p99"]}' for k, v in result['node_stage_ms'].items()))
    print(f'  ADD-S mean [mm]: online {result["online_add_s_mm"]}'
          + (f', offline {result["offline_add_s_mm"]} ({result["online_vs_offline_pct"]:+} %)'
             if offline is not None else ''))
    if args.json:
        if args.per_image:
            add_s_of = {int(s): {'online_add_s_mm': round(float(online_add_s[i]) * 1e3, 3)}
                        for i, s in enumerate(stamps)}
            if offline is not None:
                for i, s in enumerate(stamps):
                    add_s_of[int(s)]['offline_add_s_mm'] = round(
                        float(offline_add_s[i]) * 1e3, 3)
            result['per_image'] = [
                {'stamp_ns': s, 'published_ns': t,
                 'tf_ms': round((tf_arrivals[s] - t) / 1e6, 2) if s in tf_arrivals else None,
                 'stages_ms': stages_of.get(s, {}), **add_s_of.get(s, {})}
                for s, t in sorted(published.items())]
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
