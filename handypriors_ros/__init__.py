"""handypriors_ros: real-time tracking of an object held by a robot hand (HandyPriors, ICRA 2024).

Layout:
- ``handypriors_ros.core``: the pure core (torch / warp / numpy). Never imports rclpy or messages.
- ``handypriors_ros.ros``: the thin ROS 2 layer (nodes, conversions, QoS profiles).
- ``handypriors_ros.cli``: the ``handypriors`` command line.
- ``handypriors_ros.msg``: the generated message bindings (built from ``msg/`` by rosidl).
"""
# The generated message bindings (handypriors_ros.msg) may be installed in a different
# directory than this source package (the venv route installs them apart from an editable
# checkout); extend_path lets both portions form the one package.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = '0.1.0'
