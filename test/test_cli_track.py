"""``handypriors track``: one estimate per image of a small synthetic bag, stamps and frames as
INTERFACES.md, accuracy against the ground truth, determinism, and one-line errors on bad input."""
import re

import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy is not installed (./run.sh test)')
from ros_helpers.synthetic import ground_truth, tiny_sequence  # noqa: E402

from handypriors_ros import interfaces  # noqa: E402
from handypriors_ros.bag import BagReader, BagWriter  # noqa: E402
from handypriors_ros.cli.main import main  # noqa: E402
from handypriors_ros.core import metrics  # noqa: E402
from handypriors_ros.core.models.object_model import ObjectModel  # noqa: E402
from handypriors_ros.ros.conversions import pose_to_matrix, stamp_to_ns  # noqa: E402

OUTPUT_TOPICS = {
    interfaces.OBJECT_POSE_TOPIC: 'geometry_msgs/msg/PoseWithCovarianceStamped',
    interfaces.TRACK_TOPIC: 'handypriors_ros/msg/TrackedObject',
    interfaces.TF_TOPIC: 'tf2_msgs/msg/TFMessage',
}


@pytest.fixture(scope='module')
def sequence(tmp_path_factory):
    return tiny_sequence(tmp_path_factory)


@pytest.fixture(scope='module')
def tracked(sequence, tmp_path_factory):
    out = tmp_path_factory.mktemp('track') / 'estimates'
    code = main(['track', str(sequence / 'bag'), '--object', str(sequence / 'object.ply'),
                 '--out', str(out), '--quiet'])
    assert code == 0
    return out


def _read(bag):
    with BagReader(bag) as reader:
        topics = reader.topics
        msgs = {}
        for m in reader.messages():
            msgs.setdefault(m.topic, []).append((m.log_time_ns, m.rawdata, m.deserialize()))
    return topics, msgs


def _copy_bag(src, dst, *, drop=()):
    """A copy of a bag without the topics in ``drop``."""
    with BagReader(src) as reader, BagWriter(dst) as writer:
        for m in reader.messages():
            if m.topic not in drop:
                writer.write_raw(m.topic, m.msgtype, m.log_time_ns, m.rawdata)
    return dst


def test_one_estimate_per_image_with_image_stamps_and_frames(sequence, tracked):
    topics, msgs = _read(tracked)
    gt = ground_truth(sequence)
    stamps = sorted(gt)
    assert {t: v[0] for t, v in topics.items()} == OUTPUT_TOPICS
    assert all(v[1] == len(stamps) for v in topics.values())
    poses = [m for _, _, m in msgs[interfaces.OBJECT_POSE_TOPIC]]
    assert [stamp_to_ns(p.header.stamp) for p in poses] == stamps
    assert [t for t, _, _ in msgs[interfaces.OBJECT_POSE_TOPIC]] == stamps  # log time = stamp
    assert {p.header.frame_id for p in poses} == {interfaces.CAMERA_FRAME}
    for _, _, tf in msgs[interfaces.TF_TOPIC]:
        (t,) = tf.transforms
        assert (t.header.frame_id, t.child_frame_id) == (interfaces.CAMERA_FRAME,
                                                         interfaces.OBJECT_FRAME)
    assert [stamp_to_ns(tf.transforms[0].header.stamp)
            for _, _, tf in msgs[interfaces.TF_TOPIC]] == stamps
    tracks = [m for _, _, m in msgs[interfaces.TRACK_TOPIC]]
    assert [stamp_to_ns(m.header.stamp) for m in tracks] == stamps
    assert {m.object_id for m in tracks} == {interfaces.OBJECT_FRAME}
    stages = [s.stage for s in tracks[-1].latency]
    assert {'input', 'predict', 'render', 'update', 'track', 'publish', 'total'} <= set(stages)
    assert tracks[-1].status == tracks[-1].STATUS_TRACKING
    cov = np.asarray(poses[-1].pose.covariance).reshape(6, 6)
    np.testing.assert_allclose(cov, cov.T)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    # Accuracy on the tiny sequence (initial pose 1 cm and 5 degrees off).
    T = np.array([pose_to_matrix(p.pose.pose) for p in poses])
    points = ObjectModel.from_file(sequence / 'object.ply').sample_points.numpy()
    add_s = metrics.add_s(T, np.array([gt[s] for s in stamps]), points)
    assert add_s.mean() < 0.015, add_s


def test_summary_and_determinism(sequence, tracked, tmp_path, capsys):
    out = tmp_path / 'again'
    assert main(['track', str(sequence / 'bag'), '--object', str(sequence / 'object.ply'),
                 '--out', str(out), '--quiet']) == 0
    printed = capsys.readouterr().out
    assert '6 images -> 6 estimates' in printed
    assert 'ms/frame: p50' in printed and 'p99' in printed and 'lost 0 frames' in printed
    # The same estimates again. (Bit-identical between two fresh processes, measured; within
    # one process that ran other torch code first, e.g. the sequence generator, the first run
    # can differ in the 9th decimal: TorchScript's profiling executor changes its graph.)
    _, first = _read(tracked)
    _, second = _read(out)
    for topic in (interfaces.OBJECT_POSE_TOPIC, interfaces.TRACK_TOPIC):
        a = [(pose_to_matrix(m.pose.pose), np.asarray(m.pose.covariance))
             for _, _, m in first[topic]]
        b = [(pose_to_matrix(m.pose.pose), np.asarray(m.pose.covariance))
             for _, _, m in second[topic]]
        assert [stamp_to_ns(m.header.stamp) for _, _, m in first[topic]] == \
            [stamp_to_ns(m.header.stamp) for _, _, m in second[topic]]
        for (Ta, Pa), (Tb, Pb) in zip(a, b):
            np.testing.assert_allclose(Ta, Tb, atol=1e-7)
            np.testing.assert_allclose(Pa, Pb, rtol=1e-5, atol=1e-12)
    assert [m.status for _, _, m in first[interfaces.TRACK_TOPIC]] == \
        [m.status for _, _, m in second[interfaces.TRACK_TOPIC]]


def test_initial_pose_option_and_params_file(sequence, tmp_path, capsys):
    """A bag without /handypriors/initial_pose: an error without --initial-pose, tracked with
    it; --params is read (here: no mask topic, fewer contour points)."""
    bag = _copy_bag(sequence / 'bag', tmp_path / 'no_init', drop={interfaces.INITIAL_POSE_TOPIC})
    args = ['track', str(bag), '--object', str(sequence / 'object.ply'), '--quiet']
    assert main(args + ['--out', str(tmp_path / 'a')]) == 1
    err = capsys.readouterr().err
    assert f'no initial pose: {bag} has no {interfaces.INITIAL_POSE_TOPIC} message and ' \
           '--initial-pose was not given' in err
    assert len(err.strip().splitlines()) == 1
    with BagReader(sequence / 'bag') as reader:
        (m,) = list(reader.messages([interfaces.INITIAL_POSE_TOPIC]))
    p = m.deserialize().pose
    pose = (f'{p.position.x} {p.position.y} {p.position.z} {p.orientation.x} '
            f'{p.orientation.y} {p.orientation.z} {p.orientation.w}')
    params = tmp_path / 'params.yaml'
    params.write_text("/**:\n  ros__parameters:\n    mask_topic: ''\n"
                      '    contour_points: 100\n    mode: live\n')
    out = tmp_path / 'b'
    assert main(args + ['--out', str(out), '--initial-pose', pose, '--params', str(params)]) == 0
    topics, _ = _read(out)
    assert topics[interfaces.OBJECT_POSE_TOPIC][1] == 6


@pytest.mark.parametrize('case,match', [
    ('missing_bag', 'BAG: not found'),
    ('missing_mesh', '--object: mesh file not found'),
    ('unreadable_mesh', 'object_mesh: .*garbage.ply'),
    ('no_images', f'BAG: no images on {interfaces.IMAGE_TOPIC}'),
    ('bad_initial_pose', '--initial-pose: expected 7 finite numbers'),
    ('zero_quaternion', '--initial-pose: expected a non-zero quaternion'),
    ('bad_params', '--params .*: not valid YAML'),
    ('unknown_param', r"--params .*: unknown track parameters \['contour_point'\]; known: "
                      r"\[.*'contour_points'"),
    ('bad_scale', '--object-scale: expected a value in'),
    ('out_exists', r'exists \(use --overwrite to replace it\)'),
])
def test_bad_input_exits_nonzero_with_one_line(sequence, tmp_path, capsys, case, match):
    bag, mesh, out = sequence / 'bag', sequence / 'object.ply', tmp_path / 'out'
    extra = []
    if case == 'missing_bag':
        bag = tmp_path / 'nothing'
    elif case == 'missing_mesh':
        mesh = tmp_path / 'nothing.ply'
    elif case == 'unreadable_mesh':
        mesh = tmp_path / 'garbage.ply'
        mesh.write_bytes(b'not a mesh at all')
    elif case == 'no_images':
        bag = _copy_bag(bag, tmp_path / 'no_images', drop={interfaces.IMAGE_TOPIC})
    elif case == 'bad_initial_pose':
        extra = ['--initial-pose', '0 0 0.5 0 0 0']
    elif case == 'zero_quaternion':
        extra = ['--initial-pose', '0 0 0.5 0 0 0 0']
    elif case == 'bad_params':
        params = tmp_path / 'bad.yaml'
        params.write_text('garbage: [\n')
        extra = ['--params', str(params)]
    elif case == 'unknown_param':
        params = tmp_path / 'typo.yaml'
        params.write_text('/**:\n  ros__parameters:\n    contour_point: 100\n')
        extra = ['--params', str(params)]
    elif case == 'bad_scale':
        extra = ['--object-scale', '-1']
    elif case == 'out_exists':
        out.mkdir()
    code = main(['track', str(bag), '--object', str(mesh), '--out', str(out), '--quiet', *extra])
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith('handypriors track: error:')]
    assert len(lines) == 1, err
    assert re.search(match, lines[0]), lines[0]
    assert case == 'out_exists' or not out.exists()  # nothing half-written
