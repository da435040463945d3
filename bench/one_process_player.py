"""bench_latency ``--one-process``: the tracker node with the camera's images in its own process.

What ``tracker_with_camera`` (``one_process:=true``, :mod:`handypriors_ros.ros.composed`) does
with the RealSense driver, done with a bag: a player thread in this process hands each image and
camera_info of the bag straight to the tracker node's callbacks (as ``DirectPublisher`` does),
paced on the clock of the external player (``bag_publisher.py --skip ... --start-file``), which
publishes the other topics (joint states, TF, masks, initial pose) over DDS. Each image's
hand-over time goes to TIMES (``stamp_ns monotonic_ns`` lines, like the player's ``--times``).

Usage: python one_process_player.py BAG START_FILE TIMES --ros-args -p name:=value ...
(the tracker node's parameters). Runs until SIGTERM / SIGINT.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.serialization import deserialize_message

from handypriors_ros import interfaces
from handypriors_ros.bag import BagReader
from handypriors_ros.ros.spin import make_executor, spin_nodes
from handypriors_ros.ros.tracker_node import TrackerNode


def play(bag: Path, start_file: Path, times_file: Path, tracker: TrackerNode,
         stop: threading.Event) -> None:
    """Hand the bag's images and camera_infos to ``tracker`` at their (scaled) log times."""
    from sensor_msgs.msg import CameraInfo, Image

    kinds = {interfaces.IMAGE_TOPIC: Image, interfaces.CAMERA_INFO_TOPIC: CameraInfo}
    with BagReader(bag) as reader:
        messages = [(m.log_time_ns, m.topic, deserialize_message(m.rawdata, kinds[m.topic]))
                    for m in reader.messages(list(kinds))]
    while not start_file.is_file():  # the external player writes it when it starts
        if stop.wait(0.001):
            return
    start, log0, scale = start_file.read_text().split()
    start, log0, scale = int(start), int(log0), float(scale)
    times = []
    try:
        for log_ns, topic, msg in messages:
            due = start + int((log_ns - log0) * scale)
            while (remaining := due - time.monotonic_ns()) > 0:
                if stop.wait(min(0.002, remaining / 1e9)):
                    return
            if topic == interfaces.IMAGE_TOPIC:
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                times.append((stamp, time.monotonic_ns()))
                tracker.on_image(msg)
            else:
                tracker.on_camera_info(msg)
    finally:
        times_file.write_text(''.join(f'{s} {t}\n' for s, t in times))


def main(argv: list[str]) -> int:
    bag, start_file, times_file = Path(argv[1]), Path(argv[2]), Path(argv[3])
    rclpy.init(args=argv)
    tracker = TrackerNode(subscribe_camera=False)
    stop = threading.Event()
    player = threading.Thread(target=play, args=(bag, start_file, times_file, tracker, stop),
                              name='bag-camera', daemon=True)
    player.start()
    executor = make_executor(tracker.executor_kind)
    executor.add_node(tracker)
    try:
        spin_nodes(executor, rclpy.logging.get_logger('one_process_player'), None)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop.set()
        player.join(timeout=5.0)
        tracker.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
