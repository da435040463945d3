"""Offline refinement core (core.refine): settings, the problem's losses and gradients, the Adam
loop (ADD-S reduction, checkpoint + resume), the quasistatic initialisation, the bag reader's
errors, and contact refinement (paper IV-D)."""
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ros_helpers.synthetic import tiny_sequence

from handypriors_ros.bag import BagError, BagReader, BagWriter
from handypriors_ros.bag.sequence import read_sequence
from handypriors_ros.core import metrics
from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry.se3 import make_transform
from handypriors_ros.core.geometry.rotations import axis_angle_to_matrix
from handypriors_ros.core.models.kinematics import HandKinematics
from handypriors_ros.core.models.object_model import ObjectModel
from handypriors_ros.core.physics.sdf import WarpMeshSDF
from handypriors_ros.core.refine import (
    CHECKPOINT_NAME,
    CheckpointError,
    LossWeights,
    RefineConfig,
    RefineProblem,
    Refiner,
    quasistatic_poses,
    remove_checkpoint,
)
from handypriors_ros.core.frames import HandNaming
from handypriors_ros.jobs.refine import REFINE_SCHEMA, load_refine_config, refine_yaml
from handypriors_ros.resources import default_hand_urdf
from handypriors_ros.synth.generate import perturb_pose

REPO = Path(__file__).resolve().parents[1]
#: Small settings: few hand samples and iterations keep each run around a second.
FAST = dict(hand_points=300, object_points=100, iterations=12, checkpoint_every=4)


@pytest.fixture(scope='module')
def hand():
    return HandKinematics.from_urdf(default_hand_urdf(), surface_points=600)


@pytest.fixture(scope='module')
def naming(hand):
    return HandNaming.resolve(hand.joint_names, hand.root_link)


@pytest.fixture(scope='module')
def data(tmp_path_factory, naming):
    folder = tiny_sequence(tmp_path_factory)
    seq = read_sequence(folder / 'bag', naming)
    model = ObjectModel.from_file(folder / 'object.ply', n_sample_points=300)
    gt = np.load(folder / 'ground_truth.npz')
    return dict(folder=folder, seq=seq, model=model, T_gt=gt['T_cam_obj'])


def _perturbed(T_gt, offset_m=0.006, offset_deg=4.0, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([perturb_pose(T, offset_m, offset_deg, rng) for T in T_gt])


def _problem(data, hand, T_init=None, **settings):
    cfg = RefineConfig(**{**FAST, **settings})
    T_init = data['T_gt'] if T_init is None else T_init
    return RefineProblem.build(data['seq'].frames, data['model'], hand, cfg,
                               T_cam_obj_init=T_init)


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------
def test_config_yaml_is_generated_from_the_defaults():
    path = REPO / 'config' / 'refine.yaml'
    assert path.read_text() == refine_yaml(), \
        'config/refine.yaml is stale: regenerate it (command in its header)'
    assert load_refine_config(path) == RefineConfig()
    params = yaml.safe_load(path.read_text())['/**']['ros__parameters']
    assert params['weights.mask'] == RefineConfig().weights.mask
    assert list(params) == [o.name for o in REFINE_SCHEMA.node_options]
    # Every setting is an option of the job, with its description.
    docs = RefineConfig.describe()
    for name in RefineConfig().to_flat_dict():
        assert REFINE_SCHEMA[name].description == docs[name]


def test_config_from_nested_dotted_and_ros_mappings():
    nested = RefineConfig.from_mapping({'weights': {'penetration': 0.5}, 'iterations': 7})
    dotted = RefineConfig.from_mapping({'weights.penetration': 0.5, 'iterations': 7})
    ros = RefineConfig.from_mapping({'refiner_node': {'ros__parameters': {
        'weights.penetration': 0.5, 'iterations': 7, 'use_sim_time': True}}})
    assert nested == dotted == ros
    assert nested.weights.penetration == 0.5 and nested.iterations == 7
    assert nested.weights.mask == LossWeights().mask


@pytest.mark.parametrize('values, match', [
    ({'weights': {'masks': 1.0}}, r"unknown refinement settings \['weights.masks'\]"),
    ({'iterations': 0}, r'iterations: expected an integer >= 1, got 0'),
    ({'iterations': 2.5}, r'iterations: expected an integer, got 2.5'),
    ({'weights.penetration': -1.0}, r'weights.penetration: expected a finite number >= 0'),
    ({'light_dir_cam': [0, 0]}, r'light_dir_cam: expected a list of 3 numbers'),
    ({'optimise_hand_root': 'yes'}, r'optimise_hand_root: expected true or false'),
])
def test_bad_settings_are_named(values, match):
    with pytest.raises(InputError, match=match):
        RefineConfig.from_mapping(values)


def test_bad_yaml_file(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('iterations: [1, 2\n')
    with pytest.raises(InputError, match='not valid YAML'):
        RefineConfig.from_yaml(bad)
    with pytest.raises(InputError, match='cannot read'):
        RefineConfig.from_yaml(tmp_path / 'missing.yaml')


def test_core_refine_does_not_import_rclpy():
    code = ('import sys, handypriors_ros.core.refine, handypriors_ros.core.refine.report, '
            'handypriors_ros.core.refine.contact_refinement; '
            "assert 'rclpy' not in sys.modules, 'rclpy imported'")
    subprocess.run([sys.executable, '-c', code], check=True, timeout=120)


# --------------------------------------------------------------------------------------------
# the problem and the optimiser
# --------------------------------------------------------------------------------------------
def test_problem_shapes_and_losses_at_the_truth(data, hand):
    p = _problem(data, hand)
    N = len(data['seq'])
    assert p.num_frames == N and p.hand_points_base.shape == (N, 300, 3)
    assert p.has_mask.sum() == N - data['seq'].masks_missing
    T = torch.as_tensor(data['T_gt'], dtype=torch.float32)
    phys = p.physics_losses(T)
    assert phys.penetration.shape == (N,) and phys.sliding.shape == (N - 1,)
    assert phys.acceleration.shape == (N - 2,)
    # the generator closes the fingers 0.5 mm off the surface: no penetration at the truth
    assert float(phys.penetration.max()) < 0.5  # mm^2
    i = int(np.flatnonzero(p.has_mask)[0])
    at_truth = float(p.image_losses([i], T[i:i + 1]).mask[0])
    shifted = T[i:i + 1].clone()
    shifted[0, 0, 3] += 0.01
    assert float(p.image_losses([i], shifted).mask[0]) > 1.3 * at_truth
    # one batched call gives each frame's loss as a call of its own
    rows = [int(k) for k in np.flatnonzero(p.has_mask)[:4]]
    batched = p.image_losses(rows, T[rows])
    for k, j in enumerate(rows):
        alone = p.image_losses([j], T[j:j + 1])
        assert float(batched.mask[k]) == pytest.approx(float(alone.mask[0]), rel=1e-5, abs=1e-9)
        assert float(batched.rgb[k]) == pytest.approx(float(alone.rgb[0]), rel=1e-5, abs=1e-9)


def test_gradients_flow_to_every_pose(data, hand):
    refiner = Refiner(_problem(data, hand, _perturbed(data['T_gt'])))
    refiner.iteration = refiner.config.iterations  # physics weights fully ramped up
    refiner.evaluate(backward=True)
    N = refiner.problem.num_frames
    for name, grad in (('rot6d', refiner.rot6d.grad), ('trans', refiner.trans.grad)):
        assert grad is not None and torch.isfinite(grad).all()
        norms = grad.reshape(N, -1).norm(dim=1)
        assert (norms > 0).all(), f'{name}: no gradient for frames {torch.nonzero(norms == 0)}'


def test_hand_root_correction_gets_a_gradient(data, hand):
    refiner = Refiner(_problem(data, hand, _perturbed(data['T_gt']), optimise_hand_root=True))
    refiner.iteration = refiner.config.iterations
    refiner.evaluate(backward=True)
    assert refiner.xi.grad is not None and float(refiner.xi.grad.norm()) > 0


def test_refinement_reduces_add_s_from_a_perturbed_initialisation(data, hand):
    T_init = _perturbed(data['T_gt'], offset_m=0.008, offset_deg=4.0)
    p = _problem(data, hand, T_init, iterations=30)
    result = Refiner(p).run()
    points = data['model'].sample_points.numpy()
    before = metrics.add_s(T_init, data['T_gt'], points).mean()
    after = metrics.add_s(result.T_cam_obj, data['T_gt'], points).mean()
    assert after < 0.7 * before, (before, after)
    assert result.history['total'][-1] < result.history['total'][0]
    assert result.frame_penetration_m.mean() < 0.001
    R = result.T_cam_obj[:, :3, :3]
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape),
                               atol=1e-9)


def test_non_finite_gradients_never_reach_adam(data, hand):
    class Poisoned(Refiner):
        def evaluate(self, *, backward):
            terms = super().evaluate(backward=backward)
            self.trans.grad[1, 2] = float('nan')
            return terms

    refiner = Poisoned(_problem(data, hand, _perturbed(data['T_gt']), iterations=2))
    result = refiner.run()
    assert result.nonfinite_gradients == 2
    assert np.all(np.isfinite(result.T_cam_obj))
    assert result.T_cam_obj[1, 2, 3] == pytest.approx(refiner.problem.T_cam_obj_init[1, 2, 3],
                                                      abs=1e-6)  # that entry never moved


class _Killed(Exception):
    pass


def test_checkpoint_resume_gives_the_uninterrupted_result(data, hand, tmp_path):
    T_init = _perturbed(data['T_gt'])
    whole = Refiner(_problem(data, hand, T_init)).run()

    def kill_at(iteration):
        def progress(done, total):
            if done == iteration:
                raise _Killed
        return progress

    ckpt = tmp_path / 'ckpt'
    with pytest.raises(_Killed):  # killed between checkpoints (they are at 4 and 8)
        Refiner(_problem(data, hand, T_init)).run(checkpoint_dir=ckpt, progress=kill_at(6))
    resumed = Refiner(_problem(data, hand, T_init)).run(checkpoint_dir=ckpt, resume=True)
    assert resumed.resumed_from == 4 and resumed.iterations == whole.iterations
    np.testing.assert_array_equal(resumed.T_cam_obj, whole.T_cam_obj)
    for k, v in whole.history.items():
        np.testing.assert_array_equal(resumed.history[k], v, err_msg=k)


def test_an_interrupted_checkpoint_write_leaves_the_previous_one_and_no_temporary(
        data, hand, tmp_path, monkeypatch):
    refiner = Refiner(_problem(data, hand, _perturbed(data['T_gt']), iterations=2))
    path = tmp_path / CHECKPOINT_NAME
    refiner.save_checkpoint(path)
    before = path.read_bytes()
    refiner.step()

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, 'save', ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        refiner.save_checkpoint(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]
    assert path.read_bytes() == before


def test_remove_checkpoint_clears_our_files_and_keeps_the_folder_with_anything_else(tmp_path):
    folder = tmp_path / 'ckpt'
    folder.mkdir()
    ours = (CHECKPOINT_NAME, f'.{CHECKPOINT_NAME}.123.tmp', f'.{CHECKPOINT_NAME}.9.tmp')
    theirs = (f'.{CHECKPOINT_NAME}.mine.tmp', 'notes.txt')
    for name in ours + theirs:
        (folder / name).write_bytes(b'x')
    remove_checkpoint(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(theirs)
    for name in theirs:
        (folder / name).unlink()
    (folder / f'.{CHECKPOINT_NAME}.77.tmp').write_bytes(b'x')
    remove_checkpoint(folder)
    assert not folder.exists()
    remove_checkpoint(folder)  # nothing there: nothing to do


def test_checkpoint_of_other_settings_is_refused(data, hand, tmp_path):
    T_init = _perturbed(data['T_gt'])
    Refiner(_problem(data, hand, T_init, iterations=2)).run(checkpoint_dir=tmp_path)
    other = Refiner(_problem(data, hand, T_init, iterations=2,
                             weights=LossWeights(penetration=1.0)))
    with pytest.raises(CheckpointError, match='other inputs or settings'):
        other.run(checkpoint_dir=tmp_path, resume=True)
    (tmp_path / 'refine_checkpoint.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='cannot be read'):
        other.run(checkpoint_dir=tmp_path, resume=True)


def test_problem_rejects_bad_initial_poses(data, hand):
    N = len(data['seq'])
    with pytest.raises(InputError, match=r'T_cam_obj_init: expected shape \(6, 4, 4\)'):
        _problem(data, hand, np.tile(np.eye(4), (N - 1, 1, 1)))
    bad = data['T_gt'].copy()
    bad[2, 0, 0] = np.nan
    with pytest.raises(InputError, match='T_cam_obj_init: expected finite'):
        _problem(data, hand, bad)
    with pytest.raises(InputError, match='exactly one'):
        RefineProblem.build(data['seq'].frames, data['model'], hand, RefineConfig(**FAST))


# --------------------------------------------------------------------------------------------
# quasistatic initialisation (eq. 9)
# --------------------------------------------------------------------------------------------
def test_quasistatic_poses_follow_the_contacts_rigid_motion():
    import trimesh
    box = trimesh.creation.box(extents=(0.06, 0.04, 0.1))
    sdf = WarpMeshSDF(box.vertices, box.faces)
    g = torch.Generator().manual_seed(0)
    # hand points on the box's surface (contacts) and far away (not contacts), object frame
    surface = torch.as_tensor(box.sample(40, seed=0), dtype=torch.float64)
    far = torch.randn(20, 3, generator=g, dtype=torch.float64) * 0.01 + 0.3
    pts_obj = torch.cat([surface, far])
    N = 5
    T_true = [make_transform(torch.eye(3, dtype=torch.float64),
                             torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64))]
    for _ in range(N - 1):
        dR = axis_angle_to_matrix(torch.randn(3, generator=g, dtype=torch.float64) * 0.05)
        dT = make_transform(dR, torch.randn(3, generator=g, dtype=torch.float64) * 0.005)
        T_true.append(dT @ T_true[-1])
    T_true = torch.stack(T_true)
    hand_cam = pts_obj @ T_true[:, :3, :3].transpose(1, 2) + T_true[:, None, :3, 3]
    hand_cam[:, 40:] = far + torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)  # still
    T_base = torch.eye(4, dtype=torch.float64).expand(N, 4, 4)
    poses, modes = quasistatic_poses(hand_cam.float(), T_base, T_true[0], sdf,
                                     contact_threshold_m=0.002, near_hand_m=0.03)
    assert modes == ['first'] + ['contact'] * (N - 1)
    torch.testing.assert_close(poses, T_true, atol=2e-5, rtol=0)


def test_quasistatic_initialisation_of_the_sequence_stays_near_the_truth(data, hand):
    cfg = RefineConfig(**FAST)
    p = RefineProblem.build(data['seq'].frames, data['model'], hand, cfg,
                            T_cam_obj_first=data['T_gt'][0])
    err = metrics.add_s(p.T_cam_obj_init, data['T_gt'], data['model'].sample_points.numpy())
    assert p.init_modes[0] == 'first' and err[0] < 1e-6
    assert err.max() < 0.01, err


# --------------------------------------------------------------------------------------------
# bags: clear errors
# --------------------------------------------------------------------------------------------
def _copy_bag(src: Path, dst: Path, keep=lambda m: True) -> Path:
    with BagReader(src) as reader, BagWriter(dst) as writer:
        for m in reader.messages():
            if keep(m):
                writer.write_raw(m.topic, m.msgtype, m.log_time_ns, m.rawdata)
    return dst


def test_truncated_bag_is_read_up_to_the_damage(data, naming, tmp_path):
    bag = tmp_path / 'bag'
    shutil.copytree(data['folder'] / 'bag', bag)
    mcap = next(bag.glob('*.mcap'))
    raw = mcap.read_bytes()
    mcap.write_bytes(raw[:len(raw) * 2 // 3])
    seq = read_sequence(bag, naming)
    assert 0 < len(seq) < len(data['seq']) and seq.problems['truncated_bag'] == 1
    np.testing.assert_array_equal(seq.stamps_ns, data['seq'].stamps_ns[:len(seq)])
    for a, b in zip(seq.frames, data['seq'].frames):  # what was read is the same data
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.q, b.q)


def test_inconsistent_bags_are_clear_errors(data, naming, tmp_path):
    from handypriors_ros import interfaces
    src = data['folder'] / 'bag'
    stamps = data['seq'].stamps_ns
    # One lost camera_info: the previous one stands in (the intrinsics do not change; the
    # frame assembler reports it as reused_camera_info), nothing is lost.
    one_lost = _copy_bag(src, tmp_path / 'one_info_lost', lambda m: not (
        m.topic == interfaces.CAMERA_INFO_TOPIC and m.deserialize().header.stamp.nanosec
        == stamps[2] % 1_000_000_000))
    seq = read_sequence(one_lost, naming)
    assert len(seq) == len(stamps) and seq.problems['reused_camera_info'] == 1
    assert '1 reused_camera_info' in seq.notes
    # No camera_info at all: a clear error naming the topic.
    no_info = _copy_bag(src, tmp_path / 'no_info',
                        lambda m: m.topic != interfaces.CAMERA_INFO_TOPIC)
    with pytest.raises(BagError, match=f'expected messages on {interfaces.CAMERA_INFO_TOPIC}'):
        read_sequence(no_info, naming)
    no_joints = _copy_bag(src, tmp_path / 'no_joints',
                          lambda m: m.topic != interfaces.JOINT_STATES_TOPIC)
    with pytest.raises(BagError, match=f'expected messages on {interfaces.JOINT_STATES_TOPIC}'):
        read_sequence(no_joints, naming)
    no_tf = _copy_bag(src, tmp_path / 'no_tf', lambda m: m.topic != interfaces.TF_TOPIC)
    # No TF at all: no image can be used; the error counts why.
    with pytest.raises(BagError, match=f'none of its {len(stamps)} images could be used '
                                       rf'\(.*{len(stamps)} missing_tf'):
        read_sequence(no_tf, naming)
    with pytest.raises(BagError, match='bag not found'):
        read_sequence(tmp_path / 'nothing', naming)


def test_sequence_reader_matches_the_ground_truth_layout(data):
    seq = data['seq']
    gt = np.load(data['folder'] / 'ground_truth.npz')
    np.testing.assert_array_equal(seq.stamps_ns, gt['stamps_ns'])
    assert seq.camera_frame == 'camera_color_optical_frame'
    np.testing.assert_allclose(seq.T_cam_obj_initial, gt['T_cam_obj_initial'], atol=1e-9)
    f = seq.frames[0]
    assert f.rgb.shape == (120, 160, 3) and f.q.shape == (16,)
    # the arm's TF comes at 100 Hz and is interpolated linearly to the image stamp
    T_cam_base = np.linalg.inv(gt['T_world_cam']) @ gt['T_world_base'][0]
    np.testing.assert_allclose(f.T_cam_base, T_cam_base, atol=2e-4)


# --------------------------------------------------------------------------------------------
# contact refinement (IV-D)
# --------------------------------------------------------------------------------------------
def test_contact_refinement_recovers_a_perturbed_hand_configuration():
    from handypriors_ros.core.models.builtin_objects import make_builtin
    from handypriors_ros.core.refine.contact_refinement import (ContactRefineConfig,
                                                                refine_contacts)
    from handypriors_ros.synth.scene import GraspSolver, initial_object_pose
    kin = HandKinematics.from_urdf(default_hand_urdf(), surface_points=1000)
    mesh = make_builtin('mustard_bottle')
    sdf = WarpMeshSDF(mesh.vertices, mesh.faces)
    solver = GraspSolver(kin, sdf)
    T_base_obj = initial_object_pose(solver, np.asarray(mesh.extents), 0.002)
    _, q_true = solver.close(T_base_obj)
    T_obj_base = torch.as_tensor(np.linalg.inv(T_base_obj), dtype=torch.float32)
    q_true_t = torch.as_tensor(q_true, dtype=torch.float32)[None]
    p = kin.forward(q_true_t).surface_points
    d_true = sdf.signed_distance(p @ T_obj_base[:3, :3].T + T_obj_base[:3, 3]).distance
    labels = d_true < 0.001  # the target: the samples the true grasp touches with
    assert int(labels.sum()) >= 5
    q_perturbed = q_true_t + torch.as_tensor(
        np.random.default_rng(0).normal(0, 0.08, size=q_true.shape), dtype=torch.float32)
    result = refine_contacts(kin, sdf, q_perturbed, T_obj_base, labels,
                             ContactRefineConfig(iterations=100))
    err_before = float((q_perturbed - q_true_t).abs().mean())
    err_after = float((result.q - q_true_t).abs().mean())
    assert err_after < 0.6 * err_before, (err_before, err_after)
    assert float(result.recall[0]) >= 0.8 and float(result.precision[0]) >= 0.6
    assert float(result.distance.min()) > -0.0005  # no penetration left
    lo, hi = kin.joint_limits.T
    assert bool(((result.q >= lo - 1e-6) & (result.q <= hi + 1e-6)).all())
    with pytest.raises(InputError, match='labels: expected a bool tensor'):
        refine_contacts(kin, sdf, q_perturbed, T_obj_base, labels.float())


def test_settings_dataclass_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RefineConfig().iterations = 3
