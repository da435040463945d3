"""Synthetic sequences: the bag matches INTERFACES.md topic by topic, the ground truth is
consistent with what the bag says, and a seed reproduces a sequence exactly."""
import json
from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from handypriors_ros import interfaces
from handypriors_ros.bag import BagReader
from handypriors_ros.synth.generate import GenerateConfig, generate
from handypriors_ros.synth.scene import SceneConfig

N = 6


def _config(seed=3, **scene):
    # Quarter resolution keeps the test fast; intrinsics scaled with it.
    return GenerateConfig(object_name='mustard_bottle', seed=seed, width=160, height=120,
                          fx=153.75, fy=153.75, cx=79.5, cy=59.5,
                          scene=SceneConfig(n_frames=N, **scene))


@pytest.fixture(scope='module')
def sequence(tmp_path_factory):
    out = tmp_path_factory.mktemp('seq')
    summary = generate(_config(), out, preview=True, overwrite=True)
    return out, summary


def _read(bag_dir):
    with BagReader(bag_dir) as reader:
        topics = reader.topics
        msgs = {}
        for m in reader.messages():
            msgs.setdefault(m.topic, []).append((m.log_time_ns, m.deserialize()))
    return topics, msgs


def _stamp(msg):
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _matrix(t, q):
    M = np.eye(4)
    M[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    M[:3, 3] = [t.x, t.y, t.z]
    return M


def test_bag_layout_matches_interfaces(sequence):
    out, summary = sequence
    topics, msgs = _read(out / 'bag')
    gt = np.load(out / 'ground_truth.npz')
    expected = {
        interfaces.IMAGE_TOPIC: 'sensor_msgs/msg/Image',
        interfaces.CAMERA_INFO_TOPIC: 'sensor_msgs/msg/CameraInfo',
        interfaces.JOINT_STATES_TOPIC: 'sensor_msgs/msg/JointState',
        interfaces.TF_TOPIC: 'tf2_msgs/msg/TFMessage',
        interfaces.TF_STATIC_TOPIC: 'tf2_msgs/msg/TFMessage',
        interfaces.MASK_TOPIC: 'sensor_msgs/msg/Image',
        interfaces.INITIAL_POSE_TOPIC: 'geometry_msgs/msg/PoseStamped',
    }
    assert {t: v[0] for t, v in topics.items()} == expected
    images = msgs[interfaces.IMAGE_TOPIC]
    assert len(images) == N
    assert [_stamp(m) for _, m in images] == list(gt['stamps_ns'])
    for _, img in images:
        assert img.encoding == 'rgb8' and (img.width, img.height) == (160, 120)
        assert img.header.frame_id == interfaces.CAMERA_FRAME
        assert img.step == 3 * 160 and len(img.data) == 3 * 160 * 120
    infos = msgs[interfaces.CAMERA_INFO_TOPIC]
    assert [_stamp(m) for _, m in infos] == list(gt['stamps_ns'])
    np.testing.assert_allclose(infos[0][1].k.reshape(3, 3), gt['K'])
    assert (infos[0][1].width, infos[0][1].height) == (160, 120)
    masks = msgs.get(interfaces.MASK_TOPIC, [])
    assert len(masks) == N - summary['masks_dropped']
    assert all(m.encoding == 'mono8' and set(np.unique(m.data)) <= {0, 255} for _, m in masks)
    # Joint states: ~100 Hz, Allegro ROS 2 names, not on the image stamps.
    js = msgs[interfaces.JOINT_STATES_TOPIC]
    js_stamps = np.array([_stamp(m) for _, m in js])
    assert list(js[0][1].name) == [f'ah_joint{f}{j}' for f in range(4) for j in range(4)]
    rate = (len(js) - 1) / ((js_stamps[-1] - js_stamps[0]) / 1e9)
    assert 90 < rate < 110
    assert js_stamps[0] < gt['stamps_ns'][0] and js_stamps[-1] > gt['stamps_ns'][-1]
    assert not set(js_stamps) & set(gt['stamps_ns'].tolist())
    # TF: static camera, moving hand root.
    (_, static), = msgs[interfaces.TF_STATIC_TOPIC]
    (cam_tf,) = static.transforms
    assert (cam_tf.header.frame_id, cam_tf.child_frame_id) == (interfaces.WORLD_FRAME,
                                                               interfaces.CAMERA_FRAME)
    np.testing.assert_allclose(_matrix(cam_tf.transform.translation, cam_tf.transform.rotation),
                               gt['T_world_cam'], atol=1e-9)
    frames = {(t.header.frame_id, t.child_frame_id) for _, m in msgs[interfaces.TF_TOPIC]
              for t in m.transforms}
    assert frames == {(interfaces.WORLD_FRAME, interfaces.HAND_ROOT_FRAME)}
    # Initial pose at the first image stamp, in the camera frame.
    (_, init), = msgs[interfaces.INITIAL_POSE_TOPIC]
    assert _stamp(init) == gt['stamps_ns'][0] and init.header.frame_id == interfaces.CAMERA_FRAME


def test_initial_pose_is_the_truth_moved_by_the_stated_offset(sequence):
    out, _ = sequence
    _, msgs = _read(out / 'bag')
    gt = np.load(out / 'ground_truth.npz')
    (_, init), = msgs[interfaces.INITIAL_POSE_TOPIC]
    T_init = _matrix(init.pose.position, init.pose.orientation)
    T_true = gt['T_cam_obj'][0]
    cfg = _config()
    assert np.linalg.norm(T_init[:3, 3] - T_true[:3, 3]) == pytest.approx(cfg.init_offset_m,
                                                                           abs=1e-9)
    angle = np.rad2deg(Rotation.from_matrix(T_true[:3, :3].T @ T_init[:3, :3]).magnitude())
    assert angle == pytest.approx(cfg.init_offset_deg, abs=1e-6)


def test_ground_truth_agrees_with_the_bag_tf_and_joint_states(sequence):
    out, _ = sequence
    _, msgs = _read(out / 'bag')
    gt = np.load(out / 'ground_truth.npz')
    # T_cam_obj = T_cam_world T_world_base T_base_obj
    T_cam_obj = np.linalg.inv(gt['T_world_cam']) @ gt['T_world_base'] @ gt['T_base_obj']
    np.testing.assert_allclose(T_cam_obj, gt['T_cam_obj'], atol=1e-9)
    # The hand root's TF samples, interpolated linearly to the image stamps, match the truth
    # to within the interpolation error of a 100 Hz stream (< 1 mm).
    tf = [(_stamp(t), _matrix(t.transform.translation, t.transform.rotation))
          for _, m in msgs[interfaces.TF_TOPIC] for t in m.transforms]
    stamps = np.array([s for s, _ in tf])
    pos = np.array([M[:3, 3] for _, M in tf])
    for i, ns in enumerate(gt['stamps_ns']):
        p = [np.interp(ns, stamps, pos[:, k]) for k in range(3)]
        assert np.linalg.norm(p - gt['T_world_base'][i, :3, 3]) < 1e-3
    # Joint states interpolated to image stamps match the truth within the encoder noise.
    js = msgs[interfaces.JOINT_STATES_TOPIC]
    js_stamps = np.array([_stamp(m) for _, m in js])
    q = np.array([m.position for _, m in js])
    for i, ns in enumerate(gt['stamps_ns']):
        qi = np.array([np.interp(ns, js_stamps, q[:, j]) for j in range(q.shape[1])])
        assert np.abs(qi - gt['q'][i]).max() < 0.02


def test_scene_has_contacts_without_penetration_and_the_object_is_in_view(sequence):
    out, summary = sequence
    gt = np.load(out / 'ground_truth.npz')
    d = gt['finger_min_distance']  # (N, F) m
    assert d.min() > -1e-4, 'a finger penetrates the object'
    assert ((d < 0.005).sum(axis=1) >= 2).all(), 'fewer than two fingers touch the object'
    K = gt['K']
    centre = gt['T_cam_obj'][:, :3, 3]
    uv = centre[:, :2] / centre[:, 2:] * np.diag(K)[:2] + K[:2, 2]
    assert ((uv > 0) & (uv < [160, 120])).all()
    assert 0.05 < summary['visible_fraction_mean'] <= 1.0
    assert (out / 'preview.png').stat().st_size > 1000
    meta = json.loads((out / 'sequence.json').read_text())
    assert meta['summary']['frames'] == N


def test_same_seed_same_sequence_other_seed_differs(sequence, tmp_path):
    out, _ = sequence
    again = tmp_path / 'again'
    generate(_config(), again)
    a, b = np.load(out / 'ground_truth.npz'), np.load(again / 'ground_truth.npz')
    for key in ('T_cam_obj', 'q', 'T_world_base', 'T_cam_obj_initial'):
        np.testing.assert_array_equal(a[key], b[key])
    _, ma = _read(out / 'bag')
    _, mb = _read(again / 'bag')
    np.testing.assert_array_equal(ma[interfaces.IMAGE_TOPIC][-1][1].data,
                                  mb[interfaces.IMAGE_TOPIC][-1][1].data)
    other = tmp_path / 'other'
    generate(_config(seed=4), other)
    assert not np.allclose(np.load(other / 'ground_truth.npz')['T_cam_obj'], a['T_cam_obj'])
