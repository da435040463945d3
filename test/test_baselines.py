"""Baseline trackers: hold-initial, hand-rigid and the cv2.rapid wrappers (pose convention,
failure handling, a short generated sequence). Accuracy on the benchmark is reported by
bench/bench_tracker.py, not asserted here."""
import numpy as np
import pytest
import trimesh
import cv2
from scipy.spatial.transform import Rotation

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.render.camera import PinholeCamera
from handypriors_ros.core.tracking.baselines import (PLACEHOLDER_COVARIANCE, RAPID_VARIANTS,
                                                     HandRigidBaseline, HoldInitialBaseline,
                                                     RapidBaseline)
from handypriors_ros.core.frames import Frame
from handypriors_ros.core.tracking.types import TrackStatus

# cv2.rapid comes with opencv-contrib, optional on a ROS workstation whose OpenCV is the
# distribution's (requirements-workstation.txt); the venvs of ./run.sh have it.
needs_rapid = pytest.mark.skipif(not hasattr(cv2, 'rapid'),
                                 reason='cv2.rapid is absent: opencv-contrib is not installed '
                                        '(optional on a workstation, README)')

CAMERA = PinholeCamera(fx=400.0, fy=400.0, cx=159.5, cy=119.5, width=320, height=240)


def _pose(rotvec, t):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


def _frame(stamp=0, rgb=None, T_cam_base=None):
    return Frame(stamp_ns=stamp,
                      rgb=np.zeros((240, 320, 3), np.uint8) if rgb is None else rgb,
                      camera=CAMERA, q=np.zeros(16),
                      T_cam_base=np.eye(4) if T_cam_base is None else T_cam_base)


BOX = trimesh.creation.box(extents=(0.06, 0.09, 0.04))
T_TRUE = _pose([0.5, -0.4, 0.3], [0.0, 0.0, 0.45])


def _render_box(T_cam_obj):
    """A clean image of the box: flat-coloured visible faces on a striped blue background
    (OLS/GOS need some saturation on both sides of the silhouette for their histograms)."""
    img = np.zeros((240, 320, 3), np.uint8)
    img[:] = (40, 110, 160)
    img[::8] = (60, 130, 170)
    v = BOX.vertices @ T_cam_obj[:3, :3].T + T_cam_obj[:3, 3]
    px = (v[:, :2] / v[:, 2:3]) * [CAMERA.fx, CAMERA.fy] + [CAMERA.cx, CAMERA.cy]
    normals = BOX.face_normals @ T_cam_obj[:3, :3].T
    colours = [(230, 60, 40), (200, 200, 60), (230, 120, 40)]
    for f, face in enumerate(BOX.faces):
        if normals[f] @ v[face].mean(0) < 0:  # faces the camera
            cv2.fillConvexPoly(img, np.round(px[face] * 16).astype(np.int32),
                               colours[(f // 4) % 3], lineType=cv2.LINE_AA, shift=4)
    return img


def _centre_px(T_cam_obj):
    """Image position of the object's origin."""
    return T_cam_obj[:2, 3] / T_cam_obj[2, 3] * CAMERA.fx


def test_hold_initial_returns_the_initial_pose_and_a_placeholder_covariance():
    b = HoldInitialBaseline()
    with pytest.raises(InputError, match='initialise'):
        b.step(_frame())
    b.initialise(T_TRUE)
    r = b.step(_frame(stamp=42))
    assert r.stamp_ns == 42 and r.status == TrackStatus.TRACKING
    np.testing.assert_array_equal(r.T_cam_obj, T_TRUE)
    np.testing.assert_array_equal(r.covariance, PLACEHOLDER_COVARIANCE)
    assert r.covariance.shape == (6, 6) and np.isfinite(r.covariance).all()


def test_hand_rigid_moves_the_object_with_the_hand_root():
    b = HandRigidBaseline()
    T_cam_base0 = _pose([0.1, 0.2, -0.1], [0.05, -0.02, 0.5])
    T_cam_base1 = _pose([0.3, 0.0, 0.2], [0.02, 0.01, 0.45])
    b.initialise(T_TRUE)
    r0 = b.step(_frame(0, T_cam_base=T_cam_base0))
    r1 = b.step(_frame(1, T_cam_base=T_cam_base1))
    np.testing.assert_allclose(r0.T_cam_obj, T_TRUE, atol=1e-12)
    expected = T_cam_base1 @ np.linalg.inv(T_cam_base0) @ T_TRUE
    np.testing.assert_allclose(r1.T_cam_obj, expected, atol=1e-12)
    # re-initialising makes the next frame frame 0 again
    b.initialise(T_TRUE)
    np.testing.assert_allclose(b.step(_frame(2, T_cam_base=T_cam_base1)).T_cam_obj, T_TRUE,
                               atol=1e-12)


def test_baselines_reject_a_bad_initial_pose():
    with pytest.raises(InputError, match=r'T_cam_obj: expected shape \(4, 4\)'):
        HoldInitialBaseline().initialise(np.eye(3))
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(InputError, match='rotation'):
        HandRigidBaseline().initialise(bad)


@needs_rapid
def test_rapid_rejects_bad_arguments():
    with pytest.raises(InputError, match='variant'):
        RapidBaseline(BOX.vertices, BOX.faces, variant='kalman')
    with pytest.raises(InputError, match='mesh_vertices'):
        RapidBaseline(BOX.vertices[:, :2], BOX.faces)
    with pytest.raises(InputError, match='faces'):
        RapidBaseline(BOX.vertices, BOX.faces + 100)
    with pytest.raises(InputError, match='num_lines'):
        RapidBaseline(BOX.vertices, BOX.faces, num_lines=2)
    b = RapidBaseline(BOX.vertices, BOX.faces)
    b.initialise(T_TRUE)
    with pytest.raises(InputError, match='frame.rgb'):
        b.step(_frame(rgb=np.zeros((240, 320), np.uint8)))


@needs_rapid
@pytest.mark.parametrize('variant', RAPID_VARIANTS)
def test_rapid_uses_T_cam_obj_as_rvec_tvec(variant):
    # Started at the truth on a clean image, the pose stays near it in the image. (In depth
    # and rotation it drifts by centimetres and tens of degrees on this small box: OpenCV's
    # edge search picks pixels about one pixel outside the silhouette. A wrong convention,
    # e.g. T_obj_cam, would put the silhouette off the object or out of the image.)
    image = _render_box(T_TRUE)
    b = RapidBaseline(BOX.vertices, BOX.faces, variant=variant, num_lines=48,
                      search_radius_px=16)
    b.initialise(T_TRUE)
    for i in range(4):
        r = b.step(_frame(i, rgb=image))
        assert r.status == TrackStatus.TRACKING, r.status_reason
        assert np.isfinite(r.T_cam_obj).all()
        np.testing.assert_array_equal(r.covariance, PLACEHOLDER_COVARIANCE)
    assert np.linalg.norm(_centre_px(r.T_cam_obj) - _centre_px(T_TRUE)) < 6.0


@needs_rapid
@pytest.mark.parametrize('variant', ['rapid', 'gos'])
def test_rapid_pulls_a_shifted_silhouette_onto_the_object(variant):
    # OLS is left out: it learns its colour histograms at the first pose, here 10 px off.
    image = _render_box(T_TRUE)
    T_start = T_TRUE.copy()
    T_start[:3, 3] += [0.01, -0.006, 0.0]
    b = RapidBaseline(BOX.vertices, BOX.faces, variant=variant, num_lines=48,
                      search_radius_px=16)
    b.initialise(T_start)
    for i in range(4):
        r = b.step(_frame(i, rgb=image))
    start_px = np.linalg.norm(_centre_px(T_start) - _centre_px(T_TRUE))
    end_px = np.linalg.norm(_centre_px(r.T_cam_obj) - _centre_px(T_TRUE))
    assert end_px < 0.6 * start_px, (start_px, end_px)


@needs_rapid
def test_rapid_reports_lost_and_holds_the_pose_when_the_object_leaves_the_image():
    b = RapidBaseline(BOX.vertices, BOX.faces, variant='ols')
    T_out = _pose([0.0, 0.0, 0.0], [2.0, 0.0, 0.45])  # far to the right of the image
    b.initialise(T_out)
    r = b.step(_frame(rgb=_render_box(T_TRUE)))
    assert r.status == TrackStatus.LOST and 'pose held' in r.status_reason
    np.testing.assert_array_equal(r.T_cam_obj, T_out)


@pytest.fixture(scope='module')
def short_sequence(tmp_path_factory):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'bench'))
    from tracker_eval import load_sequence

    from handypriors_ros.synth.generate import GenerateConfig, generate
    from handypriors_ros.synth.scene import SceneConfig
    out = tmp_path_factory.mktemp('rapid_seq')
    generate(GenerateConfig(object_name='cracker_box', seed=7, width=160, height=120,
                            fx=153.75, fy=153.75, cx=79.5, cy=59.5,
                            scene=SceneConfig(n_frames=6, occlusion='low')), out,
             overwrite=True)
    return load_sequence(out, n_sample_points=200)


@needs_rapid
@pytest.mark.parametrize('variant', RAPID_VARIANTS)
def test_rapid_runs_on_a_short_generated_sequence(short_sequence, variant):
    b = RapidBaseline.from_object_model(short_sequence.object_model, variant=variant,
                                        search_radius_px=8)
    b.initialise(short_sequence.T_cam_obj_init)
    for frame in short_sequence.frames:
        r = b.step(frame)
        assert r.stamp_ns == frame.stamp_ns
        assert r.T_cam_obj.shape == (4, 4) and np.isfinite(r.T_cam_obj).all()
        R = r.T_cam_obj[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)
        assert r.status in (TrackStatus.TRACKING, TrackStatus.LOST)
        assert np.isfinite(r.covariance).all()


def test_baselines_module_stays_out_of_ros():
    import subprocess
    import sys
    code = ('import sys, handypriors_ros.core.tracking.baselines; '
            'print(sorted(m for m in sys.modules if m == "rclpy" or m.endswith("_msgs")))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert out == '[]'
