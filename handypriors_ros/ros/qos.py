"""QoS profiles of every topic this package publishes or subscribes to: the one place for them.

Choices, and why (PLATFORM.md, measured on the development machines):
- Images, camera_info and masks: reliability is a node parameter (``image_qos_reliability``);
  the tracker's default ``auto`` matches the publishers found with
  ``get_publishers_info_by_topic`` (:func:`matching_reliability`): reliable when every one is
  reliable, best-effort otherwise or when none is known yet (best-effort matches any publisher).
  Publishers' default: RELIABLE, keep-last 5. A 30 Hz stream of 640x480 rgb8 images from a
  reliable publisher into another process reached a best-effort subscriber 19 times out of 90
  (42 with shared memory only) and a reliable subscriber 90 times out of 90. realsense2_camera
  publishes RELIABLE; a reliable subscriber cannot match a best-effort publisher, so choose
  ``'best_effort'`` only to listen to a best-effort camera.
- Tracker outputs: RELIABLE keep-last 10 (:data:`OUTPUT_QOS`).
- Latched data (robot descriptions): TRANSIENT_LOCAL keep-last 1 (:data:`LATCHED_QOS`).
- /tf and /tf_static: the profiles tf2_ros uses, so our broadcasters and listeners match tf2_ros
  ones on a workstation (:data:`TF_QOS`, :data:`TF_STATIC_QOS`, :data:`TF_STATIC_LISTENER_QOS`).
- /joint_states: RELIABLE keep-last 50 (:data:`JOINT_STATES_QOS`): ros2_control's
  joint_state_broadcaster publishes reliable at ~100 Hz; 50 messages hold 0.5 s, so a tracker
  busy with one image loses none. The tracker's subscriptions of /joint_states and /tf take
  their reliability from parameters (:func:`joint_states_qos`), ``auto`` by default: best-effort
  in live mode, reliable in replay. Measured (bench_latency, 2-core machine at load ~22,
  2026-12-05): with reliable subscriptions the hand-root TF stalled for seconds (a sample lost
  over UDP holds every later one until Fast DDS repairs it, at its next heartbeat): 43-87 of 270
  frames skipped for missing TF and 8-24 with stale joint states; best-effort: none, and the
  live ADD-S went from 7.5-28 mm to 4.9 mm. A lost sample is interpolated over.
- Every subscription of the tracker (but /tf_static and initial_pose) honours the standard
  ``qos_overrides.<topic>.subscription.{reliability,history,depth}`` parameters (rclpy
  ``QoSOverridingOptions``, :func:`overridable`).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rclpy.qos import (QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile,
                       QoSReliabilityPolicy)
from rclpy.qos_overriding_options import QoSOverridingOptions

from handypriors_ros.core.errors import InputError

#: Accepted values of ``image_qos(reliability=...)`` and of the nodes' image QoS parameter.
RELIABILITY_CHOICES = ('reliable', 'best_effort')

_RELIABILITY = {
    'reliable': QoSReliabilityPolicy.RELIABLE,
    'best_effort': QoSReliabilityPolicy.BEST_EFFORT,
}


def image_qos(reliability: str = 'reliable', depth: int = 5) -> QoSProfile:
    """QoS of images, camera_info and masks (publishers and subscriptions).

    Args:
        reliability: ``'reliable'`` (default; see the module docstring) or ``'best_effort'``.
        depth: keep-last queue depth, >= 1.
    Returns:
        A volatile keep-last profile.
    Raises:
        InputError: an unknown reliability or a depth < 1.
    """
    if reliability not in _RELIABILITY:
        raise InputError(f'reliability: expected one of {list(RELIABILITY_CHOICES)}, '
                         f'got {reliability!r}')
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise InputError(f'depth: expected an integer >= 1, got {depth!r}')
    return QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=_RELIABILITY[reliability],
                      durability=QoSDurabilityPolicy.VOLATILE)


def matching_reliability(publishers: Iterable[Any]) -> str:
    """The reliability a subscription needs to receive from these publishers (rclpy
    ``TopicEndpointInfo`` s): ``'reliable'`` when there is at least one and every one is
    reliable, else ``'best_effort'`` (matches a publisher of either kind)."""
    kinds = [p.qos_profile.reliability for p in publishers]
    if kinds and all(k == QoSReliabilityPolicy.RELIABLE for k in kinds):
        return 'reliable'
    return 'best_effort'


def joint_states_qos(reliability: str = 'reliable', depth: int = 50) -> QoSProfile:
    """The joint states subscription: :data:`JOINT_STATES_QOS` with this reliability and depth.

    Raises:
        InputError: an unknown reliability or a depth < 1.
    """
    return image_qos(reliability, depth)


def overridable() -> QoSOverridingOptions:
    """``qos_overrides.<topic>.subscription.{history,depth,reliability}`` parameters."""
    return QoSOverridingOptions.with_default_policies()


#: Tracker outputs (object pose, track, markers, diagnostics): reliable, keep-last 10.
OUTPUT_QOS = QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=10,
                        reliability=QoSReliabilityPolicy.RELIABLE,
                        durability=QoSDurabilityPolicy.VOLATILE)

#: Latched data (robot description and the like): late joiners get the last message.
LATCHED_QOS = QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=1,
                         reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)

#: /joint_states publishers and subscriptions: reliable, keep-last 50 (0.5 s at 100 Hz).
JOINT_STATES_QOS = QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=50,
                              reliability=QoSReliabilityPolicy.RELIABLE,
                              durability=QoSDurabilityPolicy.VOLATILE)

#: /tf, as tf2_ros's TransformBroadcaster and TransformListener: reliable, keep-last 100.
TF_QOS = QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=100,
                    reliability=QoSReliabilityPolicy.RELIABLE,
                    durability=QoSDurabilityPolicy.VOLATILE)

#: /tf_static publisher, as tf2_ros's StaticTransformBroadcaster: transient local, keep-last 1
#: (each message carries every static transform of its broadcaster).
TF_STATIC_QOS = QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=1,
                           reliability=QoSReliabilityPolicy.RELIABLE,
                           durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)

#: /tf_static subscription, as tf2_ros's TransformListener: transient local, keep-last 100.
TF_STATIC_LISTENER_QOS = QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=100,
                                    reliability=QoSReliabilityPolicy.RELIABLE,
                                    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
