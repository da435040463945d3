"""The pure core of handypriors_ros: geometry, models, priors, filter, refinement.

Nothing under this package imports rclpy or ROS message packages (a test asserts it), so every
piece is usable and testable without a ROS installation.
"""
