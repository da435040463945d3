"""A ROS domain no other process on this machine uses (tests over DDS between processes).

test/conftest.py gives each test run a domain from its pid (1..100); several test runs on one
machine (other sessions, launch tests) can still meet there and hear each other's topics. This
probes candidates in 101..232 (Fast DDS's port formula allows up to 232) for any participant
and returns the first silent one.
"""
import os
import random
import time

import rclpy


def free_domain_id(*, probe_s: float = 0.4, attempts: int = 8) -> int:
    """A domain id in which no node was discovered during ``probe_s`` seconds."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    candidates = rng.sample(range(101, 233), attempts)
    for domain in candidates:
        context = rclpy.context.Context()
        rclpy.init(context=context, domain_id=domain)
        try:
            node = rclpy.create_node('handypriors_domain_probe', context=context)
            time.sleep(probe_s)
            others = [n for n in node.get_node_names() if n != 'handypriors_domain_probe']
            node.destroy_node()
        finally:
            rclpy.try_shutdown(context=context)
        if not others:
            return domain
    return candidates[-1]
