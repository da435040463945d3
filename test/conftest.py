"""Test-wide settings: an isolated ROS domain per test run, localhost discovery."""
import os
import random

# Each test run gets its own DDS domain so parallel runs (or a robot on the network) never mix.
os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(1, 100)))
# Localhost-only discovery, with the variable this distribution reads (compat: Humble differs).
from handypriors_ros.ros.compat import isolated_discovery_env  # noqa: E402

for _name, _value in isolated_discovery_env().items():
    os.environ.setdefault(_name, _value)

# torch's two intra-op threads stall when other processes hold the two cores (measured: 10-30x
# slower gradient tests under load); the nodes run single-threaded too.
import torch  # noqa: E402

torch.set_num_threads(1)
