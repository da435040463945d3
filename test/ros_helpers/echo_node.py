"""Echo every message received on one topic to another, in a separate process.

Usage: python echo_node.py PKG/msg/Type IN_TOPIC OUT_TOPIC SECONDS
Exits after SECONDS (or on SIGTERM). Used by the DDS round-trip tests.
"""
import importlib
import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy


def main() -> int:
    type_name, in_topic, out_topic, seconds = sys.argv[1:5]
    pkg, _, cls = type_name.split('/')
    msg_type = getattr(importlib.import_module(f'{pkg}.msg'), cls)
    rclpy.init()
    node = rclpy.create_node('handypriors_test_echo')
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(msg_type, out_topic, qos)
    node.create_subscription(msg_type, in_topic, pub.publish, qos)
    print('ready', flush=True)
    end = time.monotonic() + float(seconds)
    try:
        while time.monotonic() < end and rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
