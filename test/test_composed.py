"""The driver and the tracker in one process (handypriors_ros/ros/composed.py): a RealSense
recording played by the real driver node reaches the tracker's callbacks directly, the very
message objects the driver made, and DDS only when someone else listens."""
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (./run.sh test)')
pytest.importorskip('pyrealsense2', reason='pyrealsense2 is not installed')
from rclpy.parameter import Parameter  # noqa: E402
from ros_helpers.synthetic import tiny_sequence  # noqa: E402
from test_realsense_node import H, W, _record  # noqa: E402  (the software-device recorder)

from handypriors_ros.ros.composed import DirectPublisher, connect  # noqa: E402
from handypriors_ros.ros.realsense_node import RealSenseNode  # noqa: E402
from handypriors_ros.ros.tracker_node import TrackerNode  # noqa: E402


class FakePublisher:
    topic_name = '/camera/camera/color/image_raw'

    def __init__(self, subscribers):
        self.subscribers = subscribers
        self.sent = []

    def get_subscription_count(self):
        return self.subscribers

    def publish(self, msg):
        self.sent.append(msg)


def test_direct_publisher_delivers_in_process_and_over_dds_only_when_listened_to():
    got = []
    alone = DirectPublisher(FakePublisher(0), got.append)
    msg = object()
    alone.publish(msg)
    assert got == [msg] and got[0] is msg  # the same object: no copy, no serialization
    assert alone._publisher.sent == []
    assert alone.get_subscription_count() == 1  # the tracker counts as a subscriber
    assert alone.topic_name == FakePublisher.topic_name
    shared = DirectPublisher(FakePublisher(2), got.append)
    shared.publish(msg)
    assert shared._publisher.sent == [msg] and len(got) == 2


def test_driver_and_tracker_in_one_executor(tmp_path_factory):
    sequence = tiny_sequence(tmp_path_factory)
    n = 5
    rng = np.random.default_rng(5)
    path = str(tmp_path_factory.mktemp('composed') / 'rec.db3')
    _record(path, [rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8) for _ in range(n)])
    context = rclpy.context.Context()
    rclpy.init(context=context)
    tracker = driver = None
    try:
        tracker = TrackerNode(context=context, subscribe_camera=False, parameter_overrides=[
            Parameter('object_mesh', value=str(sequence / 'object.ply'))])
        images = []
        on_image = tracker.on_image
        tracker.on_image = lambda msg: (images.append(msg), on_image(msg))
        driver = RealSenseNode(context=context, parameter_overrides=[
            Parameter('playback_file', value=path), Parameter('playback_realtime', value=False),
            Parameter('playback_wait_for_subscribers', value=1)])  # waits for the tracker
        connect(driver, tracker)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(tracker)
        executor.add_node(driver)
        executor.spin_until_future_complete(driver.done, timeout_sec=60.0)
        assert driver.done.done() and driver.done.result() == 0
        assert driver.frames_published == n
        assert tracker.received['image'] == n and tracker.received['camera_info'] == n
        assert len(images) == n and all(m.width == W and m.height == H for m in images)
        # no image subscription in the tracker; nothing went over DDS (nobody else listens)
        assert tracker.get_subscriptions_info_by_topic('/camera/camera/color/image_raw') == []
        assert driver._image_pub.delivered == n
        # the images wait in the assembler for joint states / TF that nobody publishes here;
        # the diagnostics say the hand's inputs are missing, not the camera
        time.sleep(0.05)
        silent, stalled, gone = tracker.input_silence(time.monotonic() + 10.0)
        assert 'joint_states' in gone and 'tf' in gone
    finally:
        for node in (driver, tracker):
            if node is not None:
                node.destroy_node()
        rclpy.try_shutdown(context=context)
