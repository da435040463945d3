"""The one offline reader (bag.sequence) and the jobs on it: a frame that cannot be assembled or
decoded is skipped and counted the same way as the tracker node counts it, never a whole-bag
failure; ``handypriors track`` gives the node's estimates; a realistic recording whose first
image comes a few milliseconds before the first joint state and TF is tracked and refined
through every image."""
import dataclasses

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (./run.sh test)')
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from ros_helpers.bad_inputs import bad_messages, predicted_images  # noqa: E402
from ros_helpers.bag_publisher import ros_type  # noqa: E402
from ros_helpers.synthetic import tiny_sequence  # noqa: E402

from handypriors_ros import interfaces  # noqa: E402
from handypriors_ros.bag import BagReader, BagWriter  # noqa: E402
from handypriors_ros.bag.sequence import read_sequence  # noqa: E402
from handypriors_ros.bag.typestore import make_typestore  # noqa: E402
from handypriors_ros.cli.main import main  # noqa: E402
from handypriors_ros.core.frames import HandNaming  # noqa: E402
from handypriors_ros.core.models.joint_names import allegro_joint_names  # noqa: E402
from handypriors_ros.jobs.outputs import msgtype  # noqa: E402
from handypriors_ros.ros.conversions import pose_to_matrix, stamp_to_ns  # noqa: E402
from handypriors_ros.ros.tracker_node import TrackerNode  # noqa: E402

NAMING = HandNaming.resolve(allegro_joint_names(), 'ah_base_link')
MS = 1_000_000
#: Problems the bad messages cause (ros_helpers/bad_inputs.py).
BAD_KINDS = ('bad_image', 'bad_camera_info', 'nan_joints', 'time_backwards', 'missing_tf')


@pytest.fixture(scope='module')
def sequence(tmp_path_factory):
    return tiny_sequence(tmp_path_factory)


@pytest.fixture(scope='module')
def logged(sequence):
    """[(log_time_ns, topic, rclpy msg)] of the tiny sequence, in log order."""
    from rclpy.serialization import deserialize_message
    with BagReader(sequence / 'bag') as reader:
        types = {t: ros_type(mt) for t, (mt, _) in reader.topics.items()}
        return [(m.log_time_ns, m.topic, deserialize_message(m.rawdata, types[m.topic]))
                for m in reader.messages()]


def _outputs(bag):
    """{stamp: T_cam_obj} of a track output bag."""
    with BagReader(bag) as reader:
        return {stamp_to_ns(msg.header.stamp): pose_to_matrix(msg.pose.pose)
                for msg in (m.deserialize() for m in
                            reader.messages([interfaces.OBJECT_POSE_TOPIC]))}


def test_bad_messages_are_skipped_and_counted_as_the_node_counts_them(sequence, logged,
                                                                       tmp_path):
    bad, good = bad_messages(logged)
    bag = tmp_path / 'bad'
    with BagWriter(bag) as writer:
        for log, topic, msg in bad:
            if topic == interfaces.JOINT_STATES_TOPIC and not len(msg.velocity):
                # rosbags cannot read back rclpy's CDR of empty trailing arrays
                msg.velocity = msg.effort = [0.0] * len(msg.name)
            writer.write_raw(topic, msgtype(msg), log, serialize_message(msg))

    # The tracker node, fed the same messages in replay mode.
    context = rclpy.context.Context()
    rclpy.init(context=context)
    poses = {}

    def hook(topic, msg):
        if topic == interfaces.OBJECT_POSE_TOPIC:
            poses[stamp_to_ns(msg.header.stamp)] = pose_to_matrix(msg.pose.pose)
    try:
        node = TrackerNode(context=context, publish_hook=hook, parameter_overrides=[
            Parameter('object_mesh', value=str(sequence / 'object.ply')),
            Parameter('mode', value='replay'), Parameter('publish_markers', value=False)])
        callbacks = {interfaces.IMAGE_TOPIC: node.on_image,
                     interfaces.CAMERA_INFO_TOPIC: node.on_camera_info,
                     interfaces.MASK_TOPIC: node.on_mask,
                     interfaces.JOINT_STATES_TOPIC: node.on_joint_states,
                     interfaces.TF_TOPIC: node.on_tf, interfaces.TF_STATIC_TOPIC: node.on_tf_static,
                     interfaces.INITIAL_POSE_TOPIC: node.on_initial_pose}
        for _, topic, msg in bad:
            callbacks[topic](msg)
        node.process_pending(flush=True)
        node_counts = {k: node.problem_counts[k] for k in BAD_KINDS}
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    # the good frames tracked; after initialisation the bad images answered predict-only
    assert sorted(poses) == sorted([*good, *predicted_images(good)]), sorted(poses)
    assert all(node_counts.values()), node_counts

    # The reader: the good frames, the same problems.
    seq = read_sequence(bag, NAMING)
    assert list(seq.stamps_ns) == good
    assert {k: seq.problems.get(k, 0) for k in BAD_KINDS} == node_counts
    assert seq.images == len(good) + 4 and seq.skipped == 4

    # handypriors track: the node's estimates, exactly (one code path).
    out = tmp_path / 'tracked'
    assert main(['track', str(bag), '--object', str(sequence / 'object.ply'), '--out',
                 str(out), '--quiet']) == 0
    tracked = _outputs(out)
    assert sorted(tracked) == sorted(poses)  # the same images answered, predicted ones too
    for stamp in poses:
        # (bit-identical between fresh processes; within one process that ran the node first,
        # TorchScript's profiling executor may change the 9th decimal: test_cli_track.py)
        np.testing.assert_allclose(tracked[stamp], poses[stamp], atol=1e-7)


def _realistic_bag(src, dst, *, joints_after_ns=5 * MS, tf_after_ns=int(1.7 * MS)):
    """A copy of a generated bag as a real recording starts: the first joint state comes
    ``joints_after_ns`` after the first image, the first hand-root TF ``tf_after_ns`` after it
    (the earlier ones are dropped, the first kept one is re-stamped)."""
    store = make_typestore()
    Time = store.types['builtin_interfaces/msg/Time']

    def restamp(header, ns):
        return dataclasses.replace(header, stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9))

    with BagReader(src) as reader:
        messages = [(m.log_time_ns, m.topic, m.msgtype, m.rawdata, m.deserialize())
                    for m in reader.messages()]
    t0 = min(stamp_to_ns(msg.header.stamp) for _, topic, _, _, msg in messages
             if topic == interfaces.IMAGE_TOPIC)
    first = {interfaces.JOINT_STATES_TOPIC: True, interfaces.TF_TOPIC: True}
    with BagWriter(dst) as writer:
        for log, topic, kind, raw, msg in messages:
            if topic == interfaces.JOINT_STATES_TOPIC:
                stamp = stamp_to_ns(msg.header.stamp)
                if stamp < t0:
                    continue
                if first[topic]:
                    first[topic] = False
                    new = t0 + joints_after_ns
                    writer.write(topic, new + MS, dataclasses.replace(
                        msg, header=restamp(msg.header, new)))
                    continue
            elif topic == interfaces.TF_TOPIC:
                (tf,) = msg.transforms
                stamp = stamp_to_ns(tf.header.stamp)
                if stamp < t0:
                    continue
                if first[topic]:
                    first[topic] = False
                    new = t0 + tf_after_ns
                    writer.write(topic, new + MS, dataclasses.replace(msg, transforms=[
                        dataclasses.replace(tf, header=restamp(tf.header, new))]))
                    continue
            writer.write_raw(topic, kind, log, raw)
    return dst, t0


def test_a_recording_that_starts_with_an_image_is_tracked_and_refined_through(
        sequence, tmp_path, capsys):
    bag, t0 = _realistic_bag(sequence / 'bag', tmp_path / 'realistic')
    with BagReader(bag) as reader:
        firsts = {}
        for m in reader.messages([interfaces.JOINT_STATES_TOPIC, interfaces.TF_TOPIC]):
            msg = m.deserialize()
            header = msg.transforms[0].header if m.topic == interfaces.TF_TOPIC else msg.header
            firsts.setdefault(m.topic, stamp_to_ns(header.stamp))
    assert firsts == {interfaces.JOINT_STATES_TOPIC: t0 + 5 * MS,
                      interfaces.TF_TOPIC: t0 + 1_700_000}
    stamps = list(read_sequence(sequence / 'bag', NAMING).stamps_ns)
    mesh = str(sequence / 'object.ply')
    refine_params = tmp_path / 'refine.yaml'
    refine_params.write_text('iterations: 2\nhand_points: 300\nobject_points: 100\n')

    # The reader, track and refine: every image, the early ones reported (not fatal).
    seq = read_sequence(bag, NAMING)
    assert list(seq.stamps_ns) == stamps
    assert seq.problems['early_joint_states'] == 1 and seq.problems['early_tf'] == 1
    assert main(['track', str(bag), '--object', mesh, '--out', str(tmp_path / 't'),
                 '--quiet']) == 0
    out, err = capsys.readouterr()
    assert sorted(_outputs(tmp_path / 't')) == stamps
    assert f'{len(stamps)} images -> {len(stamps)} estimates' in out
    assert '1 early_joint_states, 1 early_tf' in out
    assert '[early_joint_states]' in err and '5.0 ms before the first joint state' in err
    assert main(['refine', str(bag), '--object', mesh, '--out', str(tmp_path / 'r'),
                 '--params', str(refine_params), '--quiet']) == 0
    assert sorted(_outputs(tmp_path / 'r')) == stamps
    assert '1 early_joint_states, 1 early_tf' in capsys.readouterr().out

    # Without the tolerance the first image is skipped and counted; the rest goes on.
    strict = tmp_path / 'strict.yaml'
    strict.write_text('past_tolerance_s: 0.0\n')
    assert main(['track', str(bag), '--object', mesh, '--out', str(tmp_path / 't0'),
                 '--params', str(strict), '--quiet']) == 0
    out = capsys.readouterr().out
    assert sorted(_outputs(tmp_path / 't0')) == stamps[1:]
    assert 'skipped: 1 images' in out and '1 no_joint_states' in out
    refine_params.write_text(refine_params.read_text() + 'past_tolerance_s: 0.0\n')
    assert main(['refine', str(bag), '--object', mesh, '--out', str(tmp_path / 'r0'),
                 '--params', str(refine_params), '--quiet']) == 0
    assert sorted(_outputs(tmp_path / 'r0')) == stamps[1:]
    assert f'skipped: 1 of {len(stamps)} images' in capsys.readouterr().out
