"""rosbag2 input/output (MCAP for writing; MCAP and sqlite3 for reading) through ``rosbags``.

Pure Python: no rclpy. Messages are (de)serialised with the ``rosbags`` typestore of ROS 2
Kilted, extended with this package's own message definitions from ``msg/``. Truncated bags are
read up to the damage (:class:`TruncationReport`); output paths are checked before a job starts
and only bags this package wrote are ever replaced (:func:`check_output_bag`).
"""
from handypriors_ros.bag.io import (METADATA_VERSION, METADATA_VERSIONS, BagError, BagMessage,
                                    BagReader, BagTruncatedWarning, BagWriter, TruncationReport)
from handypriors_ros.bag.output import MARKER_NAME, check_output_bag, check_output_dir
from handypriors_ros.bag.typestore import make_typestore

__all__ = ['BagError', 'BagMessage', 'BagReader', 'BagTruncatedWarning', 'BagWriter',
           'MARKER_NAME', 'METADATA_VERSION', 'METADATA_VERSIONS', 'TruncationReport',
           'check_output_bag', 'check_output_dir', 'make_typestore']
