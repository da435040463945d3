"""``handypriors track BAG --object MESH --out OUT_BAG``: the real-time tracker over a bag.

One code path with the live node: a :class:`~handypriors_ros.ros.tracker_node.TrackerNode` is
created in this process (its own rclpy context, discovery off: nothing reaches or leaves the
network) in ``replay`` mode. The bag is read in log-time order; each message is deserialised
to its rclpy type and handed to the node's subscription callback directly (no DDS), so every
image is tracked in stamp order and the result does not depend on the machine's speed. What the
node publishes on /handypriors/object_pose, /handypriors/track and /tf is captured (the node's
publish hook) and written to OUT_BAG (MCAP, atomically), log time = the image stamp.

Without ``--initial-pose`` the node takes ``/handypriors/initial_pose`` from the bag (as it
would from the topic). ``--params`` is a ROS 2 parameter file for the node (e.g.
config/tracker.yaml); ``mode`` is always replay, and markers are not published.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from handypriors_ros.bag import BagReader, BagWriter
from handypriors_ros.cli.progress import ProgressBar
from handypriors_ros.core.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('bag', metavar='BAG', help='input rosbag2 (MCAP or sqlite3) with the '
                        'INTERFACES.md topics')
    parser.add_argument('--object', required=True, metavar='MESH',
                        help='mesh file of the object (metres; scale with object_scale in '
                             '--params)')
    parser.add_argument('--out', required=True, metavar='OUT_BAG',
                        help='output bag (MCAP): object_pose, track and /tf per image')
    parser.add_argument('--params', metavar='YAML',
                        help='ROS 2 parameter file for the tracker node (e.g. config/tracker.yaml)')
    parser.add_argument('--initial-pose', metavar='"x y z qx qy qz qw"',
                        help='initial object pose in the camera optical frame (m); default: '
                             '/handypriors/initial_pose from BAG')
    parser.add_argument('--overwrite', action='store_true', help='replace OUT_BAG if it exists')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')


def parse_initial_pose(text: str) -> list[float]:
    """``"x y z qx qy qz qw"`` (spaces or commas) -> 7 floats.

    Raises:
        InputError: not 7 finite numbers with a non-zero quaternion.
    """
    try:
        values = [float(v) for v in text.replace(',', ' ').split()]
    except ValueError as exc:
        raise InputError(f'--initial-pose: expected 7 numbers "x y z qx qy qz qw", got '
                         f'{text!r}') from exc
    if len(values) != 7 or not all(math.isfinite(v) for v in values):
        raise InputError(f'--initial-pose: expected 7 finite numbers "x y z qx qy qz qw", got '
                         f'{text!r}')
    if math.sqrt(sum(v * v for v in values[3:])) < 1e-6:
        raise InputError(f'--initial-pose: expected a non-zero quaternion, got {values[3:]}')
    return values


@contextlib.contextmanager
def _discovery_off() -> Iterator[None]:
    """ROS_AUTOMATIC_DISCOVERY_RANGE=OFF while a context is created: it stays isolated."""
    key = 'ROS_AUTOMATIC_DISCOVERY_RANGE'
    old = os.environ.get(key)
    os.environ[key] = 'OFF'
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _msgtype(msg: Any) -> str:
    """``pkg/msg/Name`` of an rclpy message."""
    return f'{type(msg).__module__.split(".")[0]}/msg/{type(msg).__name__}'


def _log_time(msg: Any) -> int:
    from handypriors_ros.ros.conversions import stamp_to_ns
    header = msg.transforms[0].header if hasattr(msg, 'transforms') else msg.header
    return stamp_to_ns(header.stamp)


def run(args: argparse.Namespace) -> int:
    bag, out, mesh = Path(args.bag), Path(args.out), Path(args.object)
    # Cheap checks first: a wrong path should not wait for the tracker to be built.
    if not bag.exists():
        raise InputError(f'BAG: not found: {bag}')
    if not mesh.is_file():
        raise InputError(f'--object: mesh file not found: {mesh}')
    if args.params and not Path(args.params).is_file():
        raise InputError(f'--params: parameter file not found: {args.params}')
    if out.exists() and not args.overwrite:
        raise InputError(f'--out: {out} exists (use --overwrite to replace it)')
    initial = parse_initial_pose(args.initial_pose) if args.initial_pose else None

    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.parameter import Parameter
    from rclpy.serialization import deserialize_message, serialize_message

    from handypriors_ros.ros.tracker_node import TrackerNode

    context = rclpy.context.Context()
    ros_args = ['--ros-args', '--params-file', str(args.params)] if args.params else []
    with _discovery_off():
        try:
            rclpy.init(context=context, args=['handypriors', *ros_args])
        except RuntimeError as exc:  # rclpy's RCLError (a RuntimeError): unparsable file
            reason = str(exc).splitlines()[0]
            raise InputError(f'--params {args.params}: {reason}') from exc
    overrides = [Parameter('object_mesh', value=str(mesh)), Parameter('mode', value='replay'),
                 Parameter('publish_markers', value=False)]
    if initial is not None:
        overrides.append(Parameter('initial_pose', value=initial))
    captured: list[tuple[str, Any]] = []
    node = None
    try:
        with BagReader(bag) as reader:
            try:
                node = TrackerNode(context=context, parameter_overrides=overrides,
                                   publish_hook=lambda topic, msg: captured.append((topic, msg)))
            except ParameterException as exc:
                raise InputError(f'tracker parameters: {exc}') from exc
            cfg = node.config
            topics = reader.topics
            n_images = topics.get(cfg.image_topic, ('', 0))[1]
            if n_images == 0:
                raise InputError(f'BAG: no images on {cfg.image_topic} in {bag} (its topics: '
                                 f'{", ".join(sorted(topics)) or "none"})')
            from_bag = initial is None and not cfg.initial_pose
            if from_bag and topics.get(cfg.initial_pose_topic, ('', 0))[1] == 0:
                raise InputError(f'no initial pose: {bag} has no {cfg.initial_pose_topic} '
                                 'message and --initial-pose was not given')
            from geometry_msgs.msg import PoseStamped
            from sensor_msgs.msg import CameraInfo, Image, JointState
            from tf2_msgs.msg import TFMessage
            route = {cfg.image_topic: (Image, node.on_image),
                     cfg.camera_info_topic: (CameraInfo, node.on_camera_info),
                     cfg.joint_states_topic: (JointState, node.on_joint_states),
                     '/tf': (TFMessage, node.on_tf),
                     '/tf_static': (TFMessage, node.on_tf_static)}
            if cfg.mask_topic:
                route[cfg.mask_topic] = (Image, node.on_mask)
            if from_bag:
                route[cfg.initial_pose_topic] = (PoseStamped, node.on_initial_pose)
            recorded = {cfg.object_pose_topic, cfg.track_topic, '/tf'}
            progress = None if args.quiet else ProgressBar('track')
            start = time.perf_counter()
            images = 0
            with BagWriter(out, overwrite=args.overwrite) as writer:
                def drain() -> None:
                    for topic, msg in captured:
                        if topic in recorded:
                            writer.write_raw(topic, _msgtype(msg), _log_time(msg),
                                             serialize_message(msg))
                    captured.clear()

                for m in reader.messages(route):
                    msg_type, callback = route[m.topic]
                    callback(deserialize_message(m.rawdata, msg_type))
                    drain()
                    if m.topic == cfg.image_topic:
                        images += 1
                        if progress is not None:
                            progress(images, n_images)
                node.process_pending(flush=True)
                drain()
                if node.frames_tracked == 0:
                    raise InputError(f'no frame of {bag} could be tracked: '
                                     + _problems(node.problem_counts))
            seconds = time.perf_counter() - start
        _print_summary(node, images, out, seconds)
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
    return 0


def _problems(counts: Any) -> str:
    shown = {k: n for k, n in counts.items() if n}
    return ', '.join(f'{n} {k}' for k, n in sorted(shown.items())) or 'no problem reported'


def _print_summary(node: Any, images: int, out: Path, seconds: float) -> None:
    ms = np.asarray(node.processing_s) * 1000.0
    status = node.status_counts
    skipped = images - node.frames_tracked
    lines = [
        f'handypriors track: {images} images -> {node.frames_tracked} estimates in {out} '
        f'({seconds:.1f} s)',
        f'  ms/frame: p50 {np.percentile(ms, 50):.1f}, p99 {np.percentile(ms, 99):.1f} '
        f'(input conversion + tracker + publication)',
        f'  status: tracking {status["tracking"]}, initialising {status["initialising"]}, '
        f'lost {status["lost"]} frames',
    ]
    if skipped:
        lines.append(f'  skipped: {skipped} images (problems: {_problems(node.problem_counts)})')
    elif any(node.problem_counts.values()):
        lines.append(f'  problems: {_problems(node.problem_counts)}')
    print('\n'.join(lines), file=sys.stdout, flush=True)
