"""The RealSense driver and the tracker in one process (``tracker_with_camera``).

When the user starts both the camera driver and the tracker on one machine, running them in
one process saves the image's trip through DDS: the driver's image and camera_info publishers
are wrapped (:class:`DirectPublisher`) so that each message goes straight to the tracker's
callbacks in this process (no serialization, no copy: the tracker keeps a reference and
converts the image without copying, :mod:`handypriors_ros.ros.conversions`), and over DDS only
when another subscriber (RViz, a recorder) listens. rclpy has no intra-process transport of
its own; this is its equivalent for the two nodes of this package. Both nodes share one
executor, the tracker's (its ``executor`` parameter: events where rclpy has it, else
single-threaded; PLATFORM.md: the multi-threaded one misbehaves on 2 cores); the
driver reads frames in its reader thread and the tracker tracks in its worker thread (live
mode), so neither waits for the other.

Nodes and names: the driver is node ``camera`` in namespace ``camera`` (its topics
``/camera/camera/color/...`` as realsense2_camera's), the tracker ``tracker_node`` in
``/handypriors``. Parameters: ``--ros-args -p name:=value`` and a parameters file's ``/**``
section reach both nodes; a parameter both declare (``image_qos_reliability``) is set per node
with the node's name: ``-p camera:image_qos_reliability:=reliable`` or a file's
``camera:`` / ``tracker_node:`` sections. The tracker's image and camera_info topic
parameters are not used here (it receives the driver's messages directly); its other inputs
(joint states, TF, mask, initial pose) come over DDS as usual.

Exit status: the driver's (0 at the end of a recording, 1 on a device failure), 1 on a start-up
error of either node, 0 on Ctrl-C.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from handypriors_ros.ros.spin import run_nodes


class DirectPublisher:
    """A publisher stand-in: ``publish(msg)`` hands ``msg`` to ``deliver`` (the tracker's
    callback, in this process), then publishes it over DDS if another subscriber listens.

    ``get_subscription_count`` counts the in-process receiver too (the driver waits for its
    subscribers before playing a recording back). Everything else goes to the publisher.
    """

    def __init__(self, publisher: Any, deliver: Callable[[Any], None]) -> None:
        self._publisher = publisher
        self._deliver = deliver
        self.delivered = 0

    def publish(self, msg: Any) -> None:
        self._deliver(msg)
        self.delivered += 1
        if self._publisher.get_subscription_count() > 0:
            self._publisher.publish(msg)

    def get_subscription_count(self) -> int:
        return self._publisher.get_subscription_count() + 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._publisher, name)


def connect(driver: Any, tracker: Any) -> None:
    """Route the driver's image and camera_info publications straight to the tracker."""
    driver._info_pub = DirectPublisher(driver._info_pub, tracker.on_camera_info)
    driver._image_pub = DirectPublisher(driver._image_pub, tracker.on_image)


def main(args: list[str] | None = None) -> int:
    """``tracker_with_camera`` console script: returns the exit status (module docstring)."""
    from handypriors_ros.ros.realsense_node import RealSenseNode
    from handypriors_ros.ros.tracker_node import TrackerNode

    def build(nodes: list) -> tuple[str, Any]:
        # The tracker first: the driver starts reading (and publishing) in its constructor.
        tracker = TrackerNode(subscribe_camera=False)
        nodes.append(tracker)
        driver = RealSenseNode()
        nodes.append(driver)
        connect(driver, tracker)
        return tracker.executor_kind, driver.done  # the tracker's ``executor`` parameter

    return run_nodes('tracker_with_camera', build, args=args)

if __name__ == '__main__':
    sys.exit(main())
