"""The benchmark harness (bench/tracker_eval.py): a generated sequence loads into frames that
agree with the ground truth; the scoring gives zero error to an oracle and the initial offset
to a tracker that holds the initial pose; the report is written."""
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'bench'))

import tracker_eval  # noqa: E402
from tracker_eval import (SequenceSpec, SyntheticSuite, evaluate, frame_errors,  # noqa: E402
                          load_sequence, summarise, write_report)

from handypriors_ros.core.errors import InputError  # noqa: E402
from handypriors_ros.core.tracking.baselines import HoldInitialBaseline  # noqa: E402
from handypriors_ros.core.frames import Frame  # noqa: E402
from handypriors_ros.core.tracking.types import TrackResult, TrackStatus  # noqa: E402
from handypriors_ros.synth.generate import GenerateConfig, generate  # noqa: E402
from handypriors_ros.synth.scene import SceneConfig  # noqa: E402

N = 6


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp('seq')
    cfg = GenerateConfig(object_name='mustard_bottle', seed=5, width=160, height=120,
                         fx=153.75, fy=153.75, cx=79.5, cy=59.5, scene=SceneConfig(n_frames=N))
    generate(cfg, out, overwrite=True)
    return out


@pytest.fixture(scope='module')
def sequence(folder):
    return load_sequence(folder, n_sample_points=300)


def test_load_sequence_gives_one_frame_per_image_in_stamp_order(sequence, folder):
    gt = np.load(folder / 'ground_truth.npz')
    assert len(sequence) == N == len(sequence.T_cam_obj_gt)
    np.testing.assert_array_equal(sequence.stamps_ns, gt['stamps_ns'])
    assert np.all(np.diff(sequence.stamps_ns) > 0)
    for frame in sequence.frames:
        assert isinstance(frame, Frame)
        assert frame.rgb.shape == (120, 160, 3) and frame.rgb.dtype == np.uint8
        assert (frame.camera.width, frame.camera.height) == (160, 120)
        assert frame.camera.fx == pytest.approx(153.75)
        assert frame.mask is None or (frame.mask.shape == (120, 160)
                                      and frame.mask.dtype == np.bool_ and frame.mask.any())
    assert sum(f.mask is not None for f in sequence.frames) >= N - 2


def test_joints_are_interpolated_to_the_image_stamp_in_model_order(sequence, folder):
    gt = np.load(folder / 'ground_truth.npz')
    assert sequence.joint_names == tuple(gt['joint_names'])
    for i, frame in enumerate(sequence.frames):
        assert frame.q.shape == (16,) and frame.q.dtype == np.float64
        # encoder noise is 2 mrad std; linear interpolation of a smooth motion at 100 Hz
        np.testing.assert_allclose(frame.q, gt['q'][i], atol=0.012)


def test_hand_root_pose_agrees_with_the_ground_truth(sequence, folder):
    gt = np.load(folder / 'ground_truth.npz')
    T_cam_base = np.linalg.inv(gt['T_world_cam']) @ gt['T_world_base']      # (N, 4, 4)
    for i, frame in enumerate(sequence.frames):
        assert np.abs(frame.T_cam_base[:3, 3] - T_cam_base[i, :3, 3]).max() < 1e-3
        np.testing.assert_allclose(frame.T_cam_base[:3, :3], T_cam_base[i, :3, :3], atol=1e-3)


def test_initial_pose_and_ground_truth(sequence, folder):
    gt = np.load(folder / 'ground_truth.npz')
    np.testing.assert_allclose(sequence.T_cam_obj_init, gt['T_cam_obj_initial'], atol=1e-9)
    np.testing.assert_allclose(sequence.T_cam_obj_gt, gt['T_cam_obj'])
    assert sequence.object_model.sample_points.shape == (300, 3)


class _Oracle:
    """Returns the ground truth: a perfect tracker."""

    def __init__(self, seq):
        self.truth = dict(zip(seq.stamps_ns.tolist(), seq.T_cam_obj_gt))

    def initialise(self, T_cam_obj):
        pass

    def step(self, frame):
        return TrackResult(frame.stamp_ns, self.truth[frame.stamp_ns].copy(), np.eye(6),
                           TrackStatus.TRACKING)


def test_evaluate_gives_zero_error_to_an_oracle(sequence):
    r = evaluate(_Oracle, sequence, method='oracle')
    for key in ('add_s_m', 'add_m', 'translation_m', 'rotation_deg'):
        assert getattr(r, key).shape == (N,)
        np.testing.assert_allclose(getattr(r, key), 0.0, atol=1e-6)
    assert r.step_ms.shape == (N,) and np.all(r.step_ms >= 0)
    s = summarise(r)
    assert s.frames == N and s.add_s_below_10mm_pct == 100.0 and s.lost_frames == 0
    assert s.add_s_auc == pytest.approx(100.0)


def test_evaluate_hold_initial_scores_the_initial_offset_at_frame_zero(sequence):
    r = evaluate(lambda seq: HoldInitialBaseline(), sequence, method='hold_initial')
    # the generator moves the initial pose by exactly 1 cm and 5 degrees about the origin
    assert r.translation_m[0] == pytest.approx(0.01, abs=1e-6)
    assert r.rotation_deg[0] == pytest.approx(5.0, abs=1e-4)
    np.testing.assert_allclose(r.T_cam_obj, np.broadcast_to(sequence.T_cam_obj_init, (N, 4, 4)))
    assert 0 < r.add_s_m[0] <= r.add_m[0]


def test_a_non_rigid_pose_scores_inf():
    T = np.tile(np.eye(4), (2, 1, 1))
    bad = T.copy()
    bad[1, 0, 3] = np.nan
    e = frame_errors(bad, T, np.random.default_rng(0).normal(size=(50, 3)))
    assert e['add_s_m'][0] == 0.0 and np.isinf(e['add_s_m'][1]) and np.isinf(e['rotation_deg'][1])


def test_evaluate_rejects_a_result_with_the_wrong_stamp(sequence):
    class Wrong(_Oracle):
        def step(self, frame):
            return replace(super().step(frame), stamp_ns=frame.stamp_ns + 1)

    with pytest.raises(InputError, match='result stamp'):
        evaluate(Wrong, sequence)


def test_write_report_writes_tables_plots_and_arrays(sequence, tmp_path):
    results = [evaluate(_Oracle, sequence, method='oracle'),
               evaluate(lambda s: HoldInitialBaseline(), sequence, method='hold_initial')]
    report = write_report(results, tmp_path, notes=['a note'])
    text = report.read_text()
    assert '| oracle | all |' in text and '| hold_initial |' in text and 'a note' in text
    assert (tmp_path / f'{sequence.name}.png').stat().st_size > 1000
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert [s['method'] for s in summary['overall']] == ['oracle', 'hold_initial']
    frames = np.load(tmp_path / 'frames.npz')
    assert frames[f'oracle/{sequence.name}/add_s_m'].shape == (N,)
    assert not list(tmp_path.glob('.*'))  # no temporary file left


def test_suite_specs_cache_folder_and_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv(tracker_eval.CACHE_ENV, str(tmp_path))
    quick, full = SyntheticSuite.quick(), SyntheticSuite.full()
    assert quick.cache_dir == tmp_path
    assert len(quick.specs) == 3 and all(s.n_frames == 30 for s in quick.specs)
    assert len(full.specs) == 9 and all(s.n_frames == 90 for s in full.specs)
    assert {s.object_name for s in full.specs} == {'mustard_bottle', 'cracker_box', 'soup_can'}
    assert {s.occlusion for s in full.specs} == {'low', 'medium', 'heavy'}
    assert any(s.slip_mm > 0 for s in quick.specs)
    spec = SequenceSpec('soup_can', 'low', n_frames=30, width=320, height=240)
    cfg = spec.generate_config()
    assert (cfg.fx, cfg.cx, cfg.cy) == (307.5, 159.5, 119.5)
    assert quick.folder(spec).parent == tmp_path
    assert spec.cache_key() != replace(spec, seed=1).cache_key()
    with pytest.raises(InputError, match='unique'):
        SyntheticSuite([spec, spec])


def test_suite_generates_once_and_reuses_the_cache(tmp_path, folder, monkeypatch):
    import shutil

    import handypriors_ros.synth.generate as generate_module
    calls = []

    def fake_generate(cfg, out_dir, overwrite=False, **kwargs):
        # stands in for the renderer: the module's sequence, copied
        calls.append((cfg, Path(out_dir)))
        shutil.copytree(folder, out_dir, dirs_exist_ok=True)

    monkeypatch.setattr(generate_module, 'generate', fake_generate)
    spec = SequenceSpec('soup_can', 'low', n_frames=N, width=160, height=120)
    suite = SyntheticSuite([spec], tmp_path)
    out = suite.ensure(spec)
    assert out == suite.folder(spec) and (out / 'ground_truth.npz').is_file()
    assert len(calls) == 1 and calls[0][0] == spec.generate_config()
    assert calls[0][1].name.endswith('.partial')  # written aside, then renamed
    assert suite.ensure(spec) == out and len(calls) == 1
    assert not list(tmp_path.glob('.*partial'))
    (seq,) = list(suite.sequences())
    assert len(seq) == N and seq.name == spec.name and len(calls) == 1


def test_load_sequence_names_a_missing_file(tmp_path):
    with pytest.raises(InputError, match='ground_truth.npz'):
        (tmp_path / 'bag').mkdir()
        load_sequence(tmp_path)


def test_nees_of_errors_drawn_from_the_covariance_is_chi_square_6():
    """Errors drawn from N(0, P) (applied as the EKF's error coordinates) give NEES with the
    chi-square(6) mean 6 and 99.7 % of frames inside its 99.7 % quantile (scipy's); a 10x too
    confident covariance gives ~60 (the figure the accuracy issue measured)."""
    from scipy.spatial.transform import Rotation
    from scipy.stats import chi2
    rng = np.random.default_rng(3)
    n = 4000
    A = rng.normal(size=(6, 6))
    P = A @ A.T * 1e-5 + np.diag([1e-6] * 3 + [1e-4] * 3)
    e = rng.multivariate_normal(np.zeros(6), P, size=n)
    T_est = np.tile(np.eye(4), (n, 1, 1))
    T_est[:, :3, 3] = [0.1, 0.0, 0.5]
    T_gt = T_est.copy()
    T_gt[:, :3, 3] += e[:, :3]
    T_gt[:, :3, :3] = Rotation.from_rotvec(e[:, 3:]).as_matrix() @ T_est[:, :3, :3]
    ne = tracker_eval.nees(T_est, T_gt, np.broadcast_to(P, (n, 6, 6)))
    assert ne.mean() == pytest.approx(6.0, rel=0.05)
    assert (ne <= chi2.ppf(0.997, 6)).mean() == pytest.approx(0.997, abs=0.003)
    assert tracker_eval.nees(T_est, T_gt, np.broadcast_to(P / 10, (n, 6, 6))).mean() \
        == pytest.approx(60.0, rel=0.05)
    assert np.isnan(tracker_eval.nees(T_est[:1], T_gt[:1], np.full((1, 6, 6), np.nan))[0])
