"""Conversions the tracker node adds: joint states, TF, poses and covariances, tracker results;
round trips through rclpy messages and rosbags dataclasses (what bags hold)."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (./run.sh test)')
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

from handypriors_ros.bag.typestore import make_typestore  # noqa: E402
from handypriors_ros.core.errors import InputError  # noqa: E402
from handypriors_ros.core.geometry.transform_buffer import StampedTransform  # noqa: E402
from handypriors_ros.core.tracking.ekf import UpdateRecord  # noqa: E402
from handypriors_ros.core.tracking.types import (ContactReport, TrackResult,  # noqa: E402
                                                 TrackStatus)
from handypriors_ros.ros import conversions as conv  # noqa: E402

STAMP = 1_700_000_000_123_456_789
STORE = make_typestore()
Ty = STORE.types


def _T(seed=0):
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    T[:3, 3] = rng.normal(size=3)
    return T


def _rosbags(msg, msgtype):
    """An rclpy message as the rosbags dataclass a bag would give back."""
    return STORE.deserialize_cdr(serialize_message(msg), msgtype)


# ---------------------------------------------------------------------------------------------
# Joint states
# ---------------------------------------------------------------------------------------------
def test_joint_state_round_trip_rclpy_and_rosbags():
    names = [f'ah_joint{f}{k}' for f in range(4) for k in range(4)]
    q = np.linspace(-0.3, 1.2, 16)
    msg = conv.arrays_to_joint_state(STAMP, names, q)
    # Built directly: rosbags 0.11 rejects rclpy's CDR of a JointState whose trailing float64
    # arrays are empty ("size mismatch": it does not expect their alignment padding).
    bag_msg = Ty['sensor_msgs/msg/JointState'](
        header=Ty['std_msgs/msg/Header'](stamp=Ty['builtin_interfaces/msg/Time'](
            sec=STAMP // 10**9, nanosec=STAMP % 10**9), frame_id=''),
        name=names, position=q, velocity=np.zeros(0), effort=np.zeros(0))
    for m in (msg, bag_msg):
        stamp, got_names, got_q = conv.joint_state_to_arrays(m)
        assert stamp == STAMP and got_names == tuple(names)
        np.testing.assert_array_equal(got_q, q)
        assert got_q.dtype == np.float64


def test_joint_state_nan_passes_through_and_lengths_checked():
    msg = conv.arrays_to_joint_state(STAMP, ['a', 'b'], [0.0, float('nan')])
    assert np.isnan(conv.joint_state_to_arrays(msg)[2][1])
    msg.position = [0.0]
    with pytest.raises(InputError, match=r'one position per name \(2\), got 1'):
        conv.joint_state_to_arrays(msg)
    with pytest.raises(InputError, match='positions: expected 2 values'):
        conv.arrays_to_joint_state(0, ['a', 'b'], [1.0])


# ---------------------------------------------------------------------------------------------
# TF
# ---------------------------------------------------------------------------------------------
def test_transform_round_trip_rclpy_and_rosbags():
    tf = StampedTransform.from_matrix('world', 'ah_base_link', STAMP, _T(1))
    msg = conv.core_to_tf_message([tf])
    assert msg.transforms[0].header.frame_id == 'world'
    assert msg.transforms[0].child_frame_id == 'ah_base_link'
    for m in (msg, _rosbags(msg, 'tf2_msgs/msg/TFMessage')):
        (back,) = conv.tf_message_to_core(m)
        assert (back.parent_frame, back.child_frame, back.stamp_ns) == (
            'world', 'ah_base_link', STAMP)
        np.testing.assert_allclose(back.matrix(), _T(1), atol=1e-12)


def test_bad_transform_named_by_index():
    msg = conv.core_to_tf_message([StampedTransform.from_matrix('a', 'b', 0, np.eye(4)),
                                   StampedTransform.from_matrix('a', 'c', 0, np.eye(4))])
    msg.transforms[1].transform.rotation.w = 0.0
    with pytest.raises(InputError, match=r"transforms\[1\] \('a' -> 'c'\).*non-zero"):
        conv.tf_message_to_core(msg)


# ---------------------------------------------------------------------------------------------
# Poses and covariances
# ---------------------------------------------------------------------------------------------
def test_pose_round_trip_and_normalisation():
    pose = conv.matrix_to_pose(_T(2))
    np.testing.assert_allclose(conv.pose_to_matrix(pose), _T(2), atol=1e-12)
    np.testing.assert_allclose(conv.pose_to_matrix(_rosbags(pose, 'geometry_msgs/msg/Pose')),
                               _T(2), atol=1e-12)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (
        0.0, 0.0, 0.0, 2.0)  # not unit: normalised
    np.testing.assert_allclose(conv.pose_to_matrix(pose)[:3, :3], np.eye(3))


@pytest.mark.parametrize('field,value,match', [
    ('w', 0.0, 'non-zero orientation'), ('x', float('nan'), 'finite'),
])
def test_bad_pose_rejected(field, value, match):
    pose = conv.matrix_to_pose(np.eye(4))
    if field == 'w':
        pose.orientation.w = value
    else:
        pose.position.x = value
    with pytest.raises(InputError, match=match):
        conv.pose_to_matrix(pose)


def test_pose_stamped():
    from geometry_msgs.msg import PoseStamped
    msg = PoseStamped()
    msg.header.stamp = conv.ns_to_stamp(STAMP)
    msg.header.frame_id = 'camera_color_optical_frame'
    msg.pose = conv.matrix_to_pose(_T(3))
    for m in (msg, _rosbags(msg, 'geometry_msgs/msg/PoseStamped')):
        stamp, frame, T = conv.pose_stamped_to_matrix(m)
        assert (stamp, frame) == (STAMP, 'camera_color_optical_frame')
        np.testing.assert_allclose(T, _T(3), atol=1e-12)


def test_covariance_round_trip_row_major():
    P = np.arange(36.0).reshape(6, 6)
    flat = conv.numpy_to_covariance(P)
    assert flat[1] == 1.0 and flat[6] == 6.0  # row-major
    np.testing.assert_array_equal(conv.covariance_to_numpy(flat), P)
    with pytest.raises(InputError, match='36 values'):
        conv.covariance_to_numpy(np.zeros(35))
    with pytest.raises(InputError, match=r'finite \(6, 6\)'):
        conv.numpy_to_covariance(np.full((6, 6), np.nan))


# ---------------------------------------------------------------------------------------------
# Tracker results
# ---------------------------------------------------------------------------------------------
def _result():
    contacts = ContactReport(
        link_names=('ah_link_14', 'ah_link_04'),
        points_hand=np.array([[0.01, 0.02, 0.5], [0.03, 0.0, 0.52]]),
        points_object=np.array([[0.011, 0.02, 0.5], [0.03, 0.001, 0.52]]),
        normals=np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]),
        signed_distance=np.array([0.001, -0.0005]))
    updates = (
        UpdateRecord('contour', 3, np.array([1.0, -2.0, 2.0]), np.eye(3), 9.0, 16.0, True),
        UpdateRecord('object_center', 2, np.array([3.0, 4.0]), np.eye(2), 25.0, 13.8, False,
                     'gated'),
        UpdateRecord('fingertip_contact', 1, np.array([0.001]), np.eye(1), 0.5, 10.0, True))
    P = np.diag([1e-6, 2e-6, 3e-6, 1e-3, 2e-3, 3e-3])
    P[0, 3] = P[3, 0] = 1e-5
    return TrackResult(stamp_ns=STAMP, T_cam_obj=_T(4), covariance=P,
                       status=TrackStatus.TRACKING, status_reason='image measurements accepted',
                       contacts=contacts, updates=updates, mask_source='topic',
                       latency_s={'predict': 0.01, 'total': 0.03})


def test_track_result_to_pose_with_covariance():
    result = _result()
    msg = conv.track_result_to_pose(result, 'camera_color_optical_frame')
    assert conv.stamp_to_ns(msg.header.stamp) == STAMP
    assert msg.header.frame_id == 'camera_color_optical_frame'
    back = _rosbags(msg, 'geometry_msgs/msg/PoseWithCovarianceStamped')
    np.testing.assert_allclose(conv.pose_to_matrix(back.pose.pose), result.T_cam_obj,
                               atol=1e-12)
    np.testing.assert_array_equal(conv.covariance_to_numpy(back.pose.covariance),
                                  result.covariance)


def test_track_result_to_tf():
    result = _result()
    msg = conv.track_result_to_tf(result, 'cam', 'handypriors_object')
    (tf,) = conv.tf_message_to_core(msg)
    assert (tf.parent_frame, tf.child_frame, tf.stamp_ns) == ('cam', 'handypriors_object', STAMP)
    np.testing.assert_allclose(tf.matrix(), result.T_cam_obj, atol=1e-12)


def test_track_result_to_tracked_object():
    from handypriors_ros.msg import TrackedObject
    result = _result()
    msg = conv.track_result_to_tracked_object(result, 'cam', 'handypriors_object',
                                              latency_s={'input': 0.001, 'total': 0.04})
    msg = deserialize_message(serialize_message(msg), TrackedObject)  # wire round trip
    assert (msg.header.frame_id, msg.object_id) == ('cam', 'handypriors_object')
    assert msg.status == TrackedObject.STATUS_TRACKING
    assert msg.status_reason == 'image measurements accepted'
    assert msg.nis == pytest.approx(9.5)  # accepted updates only
    np.testing.assert_allclose(conv.pose_to_matrix(msg.pose.pose), result.T_cam_obj,
                               atol=1e-12)
    np.testing.assert_array_equal(conv.covariance_to_numpy(msg.pose.covariance),
                                  result.covariance)
    assert [(r.name, r.dimension, r.accepted) for r in msg.residuals] == [
        ('contour', 3, True), ('object_center', 2, False), ('fingertip_contact', 1, True)]
    assert msg.residuals[0].rms == pytest.approx(np.sqrt(3.0))
    assert msg.residuals[1].mahalanobis_sq == 25.0
    assert [c.hand_link for c in msg.contacts] == ['ah_link_14', 'ah_link_04']
    c = msg.contacts[1]
    assert (c.point_on_object.x, c.point_on_object.y, c.normal.x) == (0.03, 0.001, 1.0)
    assert c.signed_distance == -0.0005
    assert [(s.stage, s.seconds) for s in msg.latency] == [('input', 0.001), ('total', 0.04)]
    # The bag typestore reads what rclpy wrote.
    back = _rosbags(msg, 'handypriors_ros/msg/TrackedObject')
    assert back.status == 1 and len(back.contacts) == 2


def test_tracked_object_without_accepted_update_has_nan_nis():
    from dataclasses import replace
    result = replace(_result(), updates=(), contacts=ContactReport(), latency_s={})
    msg = conv.track_result_to_tracked_object(result, 'cam', 'obj')
    assert np.isnan(msg.nis) and msg.contacts == [] and msg.latency == []
