"""Publish a bag's messages over DDS in log-time order, images at a given rate.

Usage: python bag_publisher.py BAG RATE_HZ [--wait-for TOPIC|all] [--settle S] [--times FILE]
                                          [--linger S]

- Every topic of BAG is published with its message type and the QoS this package uses for it
  (images / camera_info / masks: reliable depth 5; /tf, /tf_static, /joint_states: the tf2 /
  ros2_control profiles; others reliable depth 10), the raw CDR bytes as they are.
- Timing: log times are scaled so that consecutive images are 1 / RATE_HZ apart (the other
  messages keep their place between them); RATE_HZ 0 publishes as fast as possible.
- ``--wait-for TOPIC``: wait until TOPIC (``all``: every topic of the bag) has a subscriber,
  then ``--settle`` seconds (default 0.5) before publishing: a publisher sees a subscription
  before the subscriber has matched it, and what is sent in between is only repaired at Fast
  DDS's next heartbeat, up to 3 s later (see realsense_node.py).
- ``--times FILE``: write one line ``image_stamp_ns publish_monotonic_ns`` per image (the
  monotonic clock is system-wide on Linux: another process can compare with it).
- ``--linger S``: keep the node alive S seconds after the last message (reliable delivery).
- ``--skip TOPIC`` (repeatable): do not publish TOPIC (another player delivers it).
- ``--start-file FILE``: write ``start_monotonic_ns log0_ns scale`` there when playback starts
  (another player in another process can pace the skipped topics on the same clock).
Prints "ready" once the publishers exist, "done N" at the end.
"""
import argparse
import importlib
import os
import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from handypriors_ros import interfaces
from handypriors_ros.bag import BagReader
from handypriors_ros.ros.qos import (JOINT_STATES_QOS, TF_QOS, TF_STATIC_QOS, image_qos)


def ros_type(msgtype: str):
    """The rclpy class of ``pkg/msg/Name``."""
    pkg, _, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{pkg}.msg'), name)


def qos_for(topic: str, msgtype: str):
    if topic == interfaces.TF_STATIC_TOPIC:
        return TF_STATIC_QOS
    if topic == interfaces.TF_TOPIC:
        return TF_QOS
    if msgtype == 'sensor_msgs/msg/JointState':
        return JOINT_STATES_QOS
    if msgtype in ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CameraInfo'):
        return image_qos('reliable', 5)
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('bag')
    parser.add_argument('rate', type=float)
    parser.add_argument('--image-topic', default=interfaces.IMAGE_TOPIC)
    parser.add_argument('--wait-for', default=None)
    parser.add_argument('--settle', type=float, default=0.5)
    parser.add_argument('--times', default=None)
    parser.add_argument('--linger', type=float, default=1.0)
    parser.add_argument('--skip', action='append', default=[])
    parser.add_argument('--start-file', default=None)
    args = parser.parse_args(argv)
    with BagReader(args.bag) as reader:
        topics = reader.topics
        messages = [(m.log_time_ns, m.topic, m.rawdata) for m in reader.messages()]
    rclpy.init()
    node = rclpy.create_node('handypriors_test_bag_publisher')
    pubs = {t: node.create_publisher(ros_type(mt), t, qos_for(t, mt))
            for t, (mt, _) in topics.items() if t not in args.skip}
    print('ready', flush=True)
    times = []
    try:
        if args.wait_for:
            waited = list(pubs) if args.wait_for == 'all' else [args.wait_for]
            while any(pubs[t].get_subscription_count() < 1 for t in waited):
                rclpy.spin_once(node, timeout_sec=0.02)
            end = time.monotonic() + args.settle
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.02)
        image_type = ros_type(topics[args.image_topic][0]) if args.image_topic in topics else None
        stamps = []  # image stamps, read before the clock starts
        for _, topic, raw in messages:
            header = deserialize_message(raw, image_type).header \
                if topic == args.image_topic else None
            stamps.append(None if header is None
                          else header.stamp.sec * 1_000_000_000 + header.stamp.nanosec)
        image_logs = [t for t, topic, _ in messages if topic == args.image_topic]
        period = (image_logs[1] - image_logs[0]) if len(image_logs) > 1 else 1
        scale = 0.0 if args.rate <= 0 else (1e9 / args.rate) / period
        start, log0 = time.monotonic_ns(), messages[0][0]
        if args.start_file:
            with open(args.start_file + '.tmp', 'w') as f:
                f.write(f'{start} {log0} {scale!r}\n')
            os.replace(args.start_file + '.tmp', args.start_file)
        for (log_ns, topic, raw), stamp in zip(messages, stamps):
            if topic in args.skip:
                continue
            due = start + int((log_ns - log0) * scale)
            while (remaining := due - time.monotonic_ns()) > 0:
                time.sleep(min(0.002, remaining / 1e9))
            if stamp is not None:
                times.append((stamp, time.monotonic_ns()))  # just before publication
            pubs[topic].publish(raw)
        print(f'done {len(messages)}', flush=True)
        end = time.monotonic() + args.linger
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if args.times:
            with open(args.times, 'w') as f:
                f.writelines(f'{s} {t}\n' for s, t in times)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
