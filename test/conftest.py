"""Test-wide settings: an isolated ROS domain per test run, localhost discovery."""
import os
import random

# Each test run gets its own DDS domain so parallel runs (or a robot on the network) never mix.
os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
