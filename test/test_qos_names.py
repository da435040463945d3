"""QoS choices and topic-name resolution of the tracker (handypriors_ros/ros/qos.py,
handypriors_ros/interfaces.py)."""
from types import SimpleNamespace

import pytest

pytest.importorskip('rclpy', reason='rclpy is not installed (./run.sh test)')
from rclpy.qos import QoSReliabilityPolicy  # noqa: E402

from handypriors_ros import interfaces  # noqa: E402
from handypriors_ros.core.errors import InputError  # noqa: E402
from handypriors_ros.jobs.track import TRACKER_NODE_SCHEMA  # noqa: E402
from handypriors_ros.ros.qos import joint_states_qos, matching_reliability  # noqa: E402


def _pub(policy):
    return SimpleNamespace(qos_profile=SimpleNamespace(reliability=policy))


R, B = QoSReliabilityPolicy.RELIABLE, QoSReliabilityPolicy.BEST_EFFORT


@pytest.mark.parametrize('publishers, expected', [
    ([], 'best_effort'),                 # none known: matches whatever comes
    ([_pub(R)], 'reliable'),
    ([_pub(R), _pub(R)], 'reliable'),
    ([_pub(B)], 'best_effort'),
    ([_pub(R), _pub(B)], 'best_effort'),  # a reliable reader would miss the best-effort one
])
def test_matching_reliability(publishers, expected):
    assert matching_reliability(publishers) == expected


def test_joint_states_qos():
    qos = joint_states_qos('best_effort', 20)
    assert qos.reliability == B and qos.depth == 20
    with pytest.raises(InputError, match='reliability'):
        joint_states_qos('sometimes', 5)


def test_relative_defaults_resolve_to_the_interfaces_names():
    defaults = {o.name: o.default for o in TRACKER_NODE_SCHEMA.node_options}
    for option, absolute in (('object_pose_topic', interfaces.OBJECT_POSE_TOPIC),
                             ('track_topic', interfaces.TRACK_TOPIC),
                             ('markers_topic', interfaces.MARKERS_TOPIC),
                             ('initial_pose_topic', interfaces.INITIAL_POSE_TOPIC),
                             ('debug_image_topic', interfaces.DEBUG_IMAGE_TOPIC)):
        assert not defaults[option].startswith('/'), option
        assert interfaces.resolve(defaults[option]) == absolute
    assert interfaces.resolve('/joint_states') == '/joint_states'
    assert interfaces.resolve('track', '/left/') == '/left/track'
    assert interfaces.relative('/joint_states') == '/joint_states'
