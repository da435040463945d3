"""``handypriors refine``: the output bag has track's topics and stamps, the report folder is
written, --init reads a track output, an interrupted job resumes to the same result, bad input
gives a one-line error and a non-zero exit status."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from ros_helpers.synthetic import ground_truth, tiny_sequence

pytest.importorskip('rclpy', reason='rclpy is not installed (./run.sh test)')

from handypriors_ros import interfaces  # noqa: E402
from handypriors_ros.bag import BagReader  # noqa: E402
from handypriors_ros.cli.main import main  # noqa: E402
from handypriors_ros.jobs.outputs import write_output_bag  # noqa: E402
from handypriors_ros.jobs.refine import (REFINE_SCHEMA, RefineJob, output_messages,  # noqa: E402
                                         run_refine)
from handypriors_ros.core.tracking.types import TrackResult, TrackStatus  # noqa: E402
from handypriors_ros.ros.conversions import pose_to_matrix, stamp_to_ns  # noqa: E402

SETTINGS = {'iterations': 4, 'hand_points': 300, 'object_points': 100, 'checkpoint_every': 2}


@pytest.fixture(scope='module')
def sequence(tmp_path_factory):
    return tiny_sequence(tmp_path_factory)


@pytest.fixture(scope='module')
def params(tmp_path_factory):
    path = tmp_path_factory.mktemp('params') / 'refine.yaml'
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': SETTINGS}}))
    return path


def _args(sequence, out, params, *extra):
    return ['refine', str(sequence / 'bag'), '--object', str(sequence / 'object.ply'),
            '--out', str(out), '--params', str(params), '--quiet', *extra]


def _read_outputs(bag):
    out = {}
    with BagReader(bag) as reader:
        topics = reader.topics
        for m in reader.messages():
            out.setdefault(m.topic, []).append((m.log_time_ns, m.deserialize()))
    return topics, out


def _poses(outputs):
    return np.stack([pose_to_matrix(msg.pose.pose)
                     for _, msg in outputs[interfaces.OBJECT_POSE_TOPIC]])


def test_refine_writes_the_track_topics_and_a_report(sequence, params, tmp_path, capsys):
    out, report = tmp_path / 'refined', tmp_path / 'report'
    assert main(_args(sequence, out, params, '--report', str(report))) == 0
    printed = capsys.readouterr().out
    assert 'handypriors refine: 6 images' in printed and 'ADD-S' in printed
    topics, outputs = _read_outputs(out)
    assert {t: v[0] for t, v in topics.items()} == {
        interfaces.OBJECT_POSE_TOPIC: 'geometry_msgs/msg/PoseWithCovarianceStamped',
        interfaces.TRACK_TOPIC: 'handypriors_ros/msg/TrackedObject',
        interfaces.TF_TOPIC: 'tf2_msgs/msg/TFMessage'}
    stamps = sorted(ground_truth(sequence))
    for topic in topics:
        assert len(outputs[topic]) == len(stamps)
    for (log_time, pose), (_, track), (_, tf) in zip(outputs[interfaces.OBJECT_POSE_TOPIC],
                                                     outputs[interfaces.TRACK_TOPIC],
                                                     outputs[interfaces.TF_TOPIC]):
        stamp = stamp_to_ns(pose.header.stamp)
        assert log_time == stamp and stamp_to_ns(track.header.stamp) == stamp
        assert pose.header.frame_id == interfaces.CAMERA_FRAME
        assert track.object_id == interfaces.OBJECT_FRAME
        assert track.status == int(TrackStatus.TRACKING)
        (t,) = tf.transforms
        assert (t.header.frame_id, t.child_frame_id) == (interfaces.CAMERA_FRAME,
                                                         interfaces.OBJECT_FRAME)
        assert np.all(np.diag(np.asarray(pose.pose.covariance).reshape(6, 6)) > 0)
    assert [stamp_to_ns(m.header.stamp) for _, m in outputs[interfaces.OBJECT_POSE_TOPIC]] \
        == stamps
    for name in ('losses.png', 'errors.png', 'overlay.gif', 'per_frame.csv', 'summary.md',
                 'summary.json'):
        assert (report / name).is_file(), name
    summary = json.loads((report / 'summary.json').read_text())
    assert summary['frames'] == 6 and summary['ground_truth'] is True
    assert summary['iterations'] == SETTINGS['iterations']
    assert summary['refined']['add_s_mm'] > 0
    assert len((report / 'per_frame.csv').read_text().splitlines()) == 7
    assert not out.with_name(out.name + '.checkpoint').exists()  # removed after success


def _track_bag(path: Path, poses: dict, frame=interfaces.CAMERA_FRAME):
    cov = np.eye(6) * 1e-4
    results = [TrackResult(stamp_ns=s, T_cam_obj=T, covariance=cov,
                           status=TrackStatus.TRACKING) for s, T in sorted(poses.items())]
    write_output_bag(path, output_messages(results, frame, interfaces.OBJECT_FRAME),
                     overwrite=False)
    return path


def test_refine_from_a_track_output(sequence, params, tmp_path, capsys):
    gt = ground_truth(sequence)
    init = _track_bag(tmp_path / 'tracked', gt)
    out = tmp_path / 'refined'
    assert main(_args(sequence, out, params, '--init', str(init))) == 0
    assert 'initialisation: track output' in capsys.readouterr().out
    _, outputs = _read_outputs(out)
    T = _poses(outputs)
    T_gt = np.stack([gt[s] for s in sorted(gt)])
    assert np.abs(T[:, :3, 3] - T_gt[:, :3, 3]).max() < 0.01  # started at the truth

    partial = dict(list(sorted(gt.items()))[1:])
    short = _track_bag(tmp_path / 'short', partial)
    assert main(_args(sequence, tmp_path / 'x', params, '--init', str(short))) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert 'no /handypriors/object_pose for 1 of 6 image stamps' in err


def test_interrupted_job_resumes_to_the_uninterrupted_result(sequence, params, tmp_path):
    import argparse
    whole = tmp_path / 'whole'
    assert main(_args(sequence, whole, params)) == 0

    class Killed(Exception):
        pass

    def killer(done, total):
        if done == 3:  # after the checkpoint of iteration 2
            raise Killed

    out, ckpt = tmp_path / 'resumed', tmp_path / 'ckpt'
    parser = argparse.ArgumentParser()
    from handypriors_ros.cli.refine import add_arguments
    add_arguments(parser)
    job = RefineJob.from_values(REFINE_SCHEMA.values_from_args(parser.parse_args(
        _args(sequence, out, params, '--checkpoint', str(ckpt))[1:])))
    with pytest.raises(Killed):
        run_refine(job, progress=killer)
    assert (ckpt / 'refine_checkpoint.pt').is_file() and not out.exists()
    assert main(_args(sequence, out, params, '--checkpoint', str(ckpt), '--resume')) == 0
    np.testing.assert_array_equal(_poses(_read_outputs(out)[1]),
                                  _poses(_read_outputs(whole)[1]))
    assert (ckpt / 'refine_checkpoint.pt').is_file()  # a folder the user named is kept


def test_bad_input_is_a_one_line_error(sequence, params, tmp_path, capsys):
    import shutil
    bag = tmp_path / 'bag'
    shutil.copytree(sequence / 'bag', bag)
    mcap = next(bag.glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[:mcap.stat().st_size // 8])  # before the first image
    args = _args(sequence, tmp_path / 'out', params)
    args[1] = str(bag)
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith('handypriors refine: error')]
    assert len(lines) == 1 and 'expected messages on /camera/camera/color/image_raw' in lines[0]
    assert '[truncated_bag]' in err  # read up to the damage, reported

    existing = tmp_path / 'exists'
    existing.mkdir()
    assert main(_args(sequence, existing, params)) == 1
    assert 'exists (use --overwrite' in capsys.readouterr().err

    bad = tmp_path / 'bad.yaml'
    bad.write_text('weights: {masks: 1.0}\n')
    assert main(_args(sequence, tmp_path / 'o2', bad)) == 1
    err = capsys.readouterr().err
    assert "unknown refine parameters ['weights.masks']; known: [" in err
    assert len(err.strip().splitlines()) == 1

    assert main(['refine', str(sequence / 'bag'), '--object', str(tmp_path / 'none.ply'),
                 '--out', str(tmp_path / 'o3')]) == 1
    assert 'mesh file not found' in capsys.readouterr().err
