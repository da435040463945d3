"""Bag reading/writing: round trip, rclpy interop (an independent serializer), errors."""
from pathlib import Path

import numpy as np
import pytest

from handypriors_ros.bag import BagError, BagReader, BagWriter, make_typestore


def _image(T, i: int):
    header = T['std_msgs/msg/Header'](
        stamp=T['builtin_interfaces/msg/Time'](sec=100, nanosec=i), frame_id='cam')
    return T['sensor_msgs/msg/Image'](header=header, height=2, width=3, encoding='rgb8',
                                      is_bigendian=0, step=9,
                                      data=np.arange(18, dtype=np.uint8) + i)


def _write(path: Path, n: int = 5) -> None:
    T = make_typestore().types
    with BagWriter(path) as writer:
        for i in range(n):
            writer.write('/img', 1000 + i, _image(T, i))


def test_round_trip(tmp_path):
    _write(tmp_path / 'bag', 5)
    assert not list(tmp_path.glob('.*partial*'))
    with BagReader(tmp_path / 'bag') as reader:
        assert reader.topics == {'/img': ('sensor_msgs/msg/Image', 5)}
        msgs = list(reader.messages())
    assert [m.log_time_ns for m in msgs] == [1000, 1001, 1002, 1003, 1004]
    img = msgs[3].deserialize()
    assert img.header.stamp.nanosec == 3 and img.encoding == 'rgb8'
    np.testing.assert_array_equal(img.data, np.arange(18) + 3)


def test_own_messages_match_rclpy_serialisation(tmp_path):
    rclpy_serialization = pytest.importorskip('rclpy.serialization',
                                              reason='rclpy is not installed')
    from handypriors_ros.msg import TrackedObject
    T = make_typestore().types
    msg = T['handypriors_ros/msg/TrackedObject'](
        header=T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=5, nanosec=7),
                                        frame_id='camera_color_optical_frame'),
        object_id='obj',
        pose=T['geometry_msgs/msg/PoseWithCovariance'](
            pose=T['geometry_msgs/msg/Pose'](
                position=T['geometry_msgs/msg/Point'](x=0.1, y=0.2, z=0.3),
                orientation=T['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.arange(36, dtype=np.float64)),
        status=1, status_reason='ok', nis=2.0, contacts=[], residuals=[],
        latency=[T['handypriors_ros/msg/StageLatency'](stage='total', seconds=0.01)])
    with BagWriter(tmp_path / 'bag') as writer:
        writer.write('/handypriors/track', 1, msg)
    with BagReader(tmp_path / 'bag') as reader:
        raw = next(reader.messages()).rawdata
    back = rclpy_serialization.deserialize_message(raw, TrackedObject)
    assert back.header.frame_id == 'camera_color_optical_frame' and back.object_id == 'obj'
    assert back.pose.pose.position.z == pytest.approx(0.3)
    assert list(back.pose.covariance) == list(range(36))
    assert back.latency[0].stage == 'total'
    # and the other way: rclpy's bytes deserialise with the typestore
    again = make_typestore().deserialize_cdr(rclpy_serialization.serialize_message(back),
                                             'handypriors_ros/msg/TrackedObject')
    assert again.latency[0].seconds == pytest.approx(0.01)


def test_missing_bag_is_a_clear_error(tmp_path):
    with pytest.raises(BagError, match='bag not found'):
        BagReader(tmp_path / 'nope')


def test_truncated_bag_is_a_clear_error(tmp_path):
    _write(tmp_path / 'bag', 20)
    mcap = next((tmp_path / 'bag').glob('*.mcap'))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError, match='bag'):
        with BagReader(tmp_path / 'bag') as reader:
            list(reader.messages())


def test_existing_output_is_not_overwritten(tmp_path):
    _write(tmp_path / 'bag', 1)
    with pytest.raises(BagError, match='already exists'):
        BagWriter(tmp_path / 'bag')


def test_failed_write_leaves_no_bag(tmp_path):
    T = make_typestore().types
    with pytest.raises(RuntimeError):
        with BagWriter(tmp_path / 'bag') as writer:
            writer.write('/img', 1, _image(T, 0))
            raise RuntimeError('job crashed')
    assert not (tmp_path / 'bag').exists()
    assert not list(tmp_path.iterdir())


def test_tf_static_is_recorded_as_latched(tmp_path):
    """`ros2 bag play` republishes with the recorded QoS: /tf_static must be transient-local
    or tf2's static listener (transient-local) never gets the calibration."""
    T = make_typestore().types
    with BagWriter(tmp_path / 'bag') as writer:
        writer.write('/tf_static', 1, T['tf2_msgs/msg/TFMessage'](transforms=[]))
        writer.write('/img', 2, _image(T, 0))
    text = (tmp_path / 'bag' / 'metadata.yaml').read_text()
    with BagReader(tmp_path / 'bag') as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader._reader.connections}
    assert qos['/img'] == []
    (profile,) = qos['/tf_static']
    assert profile.durability.name == 'TRANSIENT_LOCAL' and profile.depth == 1
    assert 'offered_qos_profiles' in text
