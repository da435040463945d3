"""rosbag2 input/output (MCAP for writing; MCAP and sqlite3 for reading) through ``rosbags``.

Pure Python: no rclpy. Messages are (de)serialised with the ``rosbags`` typestore of ROS 2
Kilted, extended with this package's own message definitions from ``msg/``.
"""
from handypriors_ros.bag.io import BagError, BagMessage, BagReader, BagWriter
from handypriors_ros.bag.typestore import make_typestore

__all__ = ['BagError', 'BagMessage', 'BagReader', 'BagWriter', 'make_typestore']
