"""The package's messages (and tf2_msgs/TFMessage) round-trip between two processes over DDS.

This process publishes each message on /handypriors_test/ping; a second process (echo_node.py)
receives it and publishes it back on /pong; this process checks every field came back equal.
"""
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (run ./run.sh test)')
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from geometry_msgs.msg import Point, TransformStamped, Vector3  # noqa: E402
from handypriors_ros.msg import (  # noqa: E402
    ContactPoint, MeasurementResidual, StageLatency, TrackedObject)
from tf2_msgs.msg import TFMessage  # noqa: E402

ECHO = Path(__file__).parent / 'ros_helpers' / 'echo_node.py'


def _contact(i: int) -> ContactPoint:
    return ContactPoint(hand_link=f'ah_link_{i}4',
                        point_on_hand=Point(x=0.01 * i, y=-0.02, z=0.4),
                        point_on_object=Point(x=0.01 * i, y=-0.021, z=0.401),
                        normal=Vector3(x=0.0, y=-1.0, z=0.0), signed_distance=-0.0005 * i)


def _tracked() -> TrackedObject:
    msg = TrackedObject()
    msg.header.frame_id = 'camera_color_optical_frame'
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000000, 123456789
    msg.object_id = 'handypriors_object'
    msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = 0.01, -0.02, 0.5
    msg.pose.pose.orientation.x, msg.pose.pose.orientation.w = math.sqrt(0.5), math.sqrt(0.5)
    msg.pose.covariance = [float(i) * 1e-4 for i in range(36)]
    msg.status = TrackedObject.STATUS_TRACKING
    msg.status_reason = 'ok'
    msg.nis = 3.25
    msg.contacts = [_contact(i) for i in range(3)]
    msg.residuals = [MeasurementResidual(name='contour', dimension=200, rms=1.5,
                                         mahalanobis_sq=190.0, accepted=True)]
    msg.latency = [StageLatency(stage='total', seconds=0.012)]
    return msg


def _tf() -> TFMessage:
    t = TransformStamped()
    t.header.frame_id = 'camera_color_optical_frame'
    t.child_frame_id = 'handypriors_object'
    t.transform.translation.z = 0.5
    t.transform.rotation.w = 1.0
    return TFMessage(transforms=[t, t])


CASES = [
    ('handypriors_ros/msg/TrackedObject', TrackedObject, _tracked),
    ('handypriors_ros/msg/ContactPoint', ContactPoint, lambda: _contact(2)),
    ('handypriors_ros/msg/MeasurementResidual', MeasurementResidual,
     lambda: MeasurementResidual(name='fingertips', dimension=8, rms=0.7, mahalanobis_sq=4.0,
                                 accepted=False)),
    ('handypriors_ros/msg/StageLatency', StageLatency,
     lambda: StageLatency(stage='render', seconds=0.004)),
    ('tf2_msgs/msg/TFMessage', TFMessage, _tf),
]


@pytest.fixture(scope='module')
def ros_context():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.mark.parametrize('type_name,msg_type,make', CASES, ids=[c[0] for c in CASES])
def test_round_trip_between_processes(ros_context, type_name, msg_type, make):
    tag = type_name.split('/')[-1].lower()
    ping, pong = f'/handypriors_test/{tag}/ping', f'/handypriors_test/{tag}/pong'
    echo = subprocess.Popen([sys.executable, str(ECHO), type_name, ping, pong, '30'],
                            stdout=subprocess.PIPE, text=True)
    node = rclpy.create_node(f'handypriors_test_{tag}', context=ros_context)
    executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        assert echo.stdout.readline().strip() == 'ready'
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        received = []
        node.create_subscription(msg_type, pong, received.append, qos)
        pub = node.create_publisher(msg_type, ping, qos)
        sent = make()
        deadline = time.monotonic() + 20.0
        next_send = 0.0
        while not received and time.monotonic() < deadline:
            if time.monotonic() >= next_send:  # until discovery completes, keep sending
                pub.publish(sent)
                next_send = time.monotonic() + 0.2
            executor.spin_once(timeout_sec=0.05)
        assert received, f'no {type_name} came back from the echo process within 20 s'
        assert received[0] == sent
        assert received[0] is not sent
    finally:
        echo.terminate()
        echo.wait(timeout=10)
        executor.shutdown()
        node.destroy_node()
