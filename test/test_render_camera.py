"""Camera model of the renderer: projection vs OpenCV, clip-space round trip, camera_info."""
import cv2
import numpy as np
import pytest
import torch

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.render import (
    PinholeCamera,
    Undistorter,
    clip_to_optical,
    ndc_to_pixels,
    optical_to_clip,
)

K = [615.0, 0.0, 322.5, 0.0, 612.0, 241.25, 0.0, 0.0, 1.0]
P = [610.0, 0.0, 320.0, 0.0, 0.0, 608.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def random_points(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = np.random.default_rng(seed)
    xyz = np.stack([g.uniform(-0.2, 0.2, n), g.uniform(-0.15, 0.15, n), g.uniform(0.2, 1.5, n)],
                   axis=1)
    return torch.as_tensor(xyz, dtype=dtype)[None]  # (1, N, 3)


def test_from_camera_info_uses_rectified_intrinsics():
    cam = PinholeCamera.from_camera_info(K, P, 640, 480, 'plumb_bob', [0.0] * 5)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (610.0, 608.0, 320.0, 240.0)
    assert (cam.width, cam.height) == (640, 480)


def test_from_camera_info_falls_back_to_k_when_p_is_zero():
    cam = PinholeCamera.from_camera_info(K, [0.0] * 12, 640, 480, '', [])
    assert (cam.fx, cam.cx) == (615.0, 322.5)


@pytest.mark.parametrize('kwargs, match', [
    (dict(K=K[:8]), r'^K: expected 9 values, got 8'),
    (dict(P=P + [0.0]), r'^P: expected 12 values, got 13'),
    (dict(P=[0.0] + P[1:]), r'P\[0\] \(fx\): expected a focal length > 0'),
    (dict(P=P[:5] + [0.0] + P[6:]), r'P\[5\] \(fy\)'),
    (dict(width=0), r'^width: expected a positive integer'),
    (dict(height=480.5), r'^height: expected a positive integer'),
    (dict(D=[0.1, 0.0, 0.0]), r"^D: expected .* coefficients for 'plumb_bob', got 3"),
    (dict(distortion_model='kannala', D=[0.1] * 4), r'^distortion_model: expected one of'),
    (dict(K=[float('nan')] + K[1:]), r'^K: expected finite values'),
])
def test_from_camera_info_errors_name_the_field(kwargs, match):
    args = dict(K=K, P=P, width=640, height=480, distortion_model='plumb_bob', D=[0.0] * 5)
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        PinholeCamera.from_camera_info(**args)


def test_zero_focal_length_and_size_mismatch():
    with pytest.raises(InputError, match='^fx: expected a focal length > 0'):
        PinholeCamera(0.0, 500.0, 320.0, 240.0, 640, 480)
    cam = PinholeCamera(500.0, 500.0, 320.0, 240.0, 640, 480)
    with pytest.raises(InputError,
                       match=r'^image: expected 640x480 px \(camera_info\), got 320x240'):
        cam.check_image_size(320, 240)
    cam.check_image_size(640, 480)


def test_project_matches_cv2_project_points():
    cam = PinholeCamera.from_camera_info(K, P, 640, 480)
    pts = random_points(50)
    uv = cam.project(pts)[0].numpy()
    ref, _ = cv2.projectPoints(pts[0].numpy(), np.zeros(3), np.zeros(3), cam.K, None)
    np.testing.assert_allclose(uv, ref[:, 0, :], atol=1e-9)


def test_project_float32_shape_and_errors():
    cam = PinholeCamera(500.0, 500.0, 320.0, 240.0, 640, 480)
    out = cam.project(random_points(7, dtype=torch.float32).expand(3, -1, -1))
    assert out.shape == (3, 7, 2) and out.dtype == torch.float32
    with pytest.raises(InputError, match=r'^points_cam: expected shape \(B, N, 3\), got \(7, 3\)'):
        cam.project(torch.zeros(7, 3))


def test_clip_round_trip_and_pixel_convention():
    cam = PinholeCamera(520.0, 515.0, 317.3, 243.9, 640, 480)
    near, far = 0.05, 5.0
    pts = random_points(100)
    clip = optical_to_clip(pts, cam, near, far)
    assert clip.shape == (1, 100, 4)
    torch.testing.assert_close(clip_to_optical(clip, cam, near, far), pts, rtol=0, atol=1e-12)
    # NDC maps to the same pixels as project(): one convention for every renderer.
    ndc = clip[..., :2] / clip[..., 3:]
    torch.testing.assert_close(ndc_to_pixels(ndc, cam), cam.project(pts), rtol=0, atol=1e-9)
    # Depth: z/w is -1 at near and +1 at far.
    on_axis = torch.tensor([[[0.0, 0.0, near], [0.0, 0.0, far]]], dtype=torch.float64)
    c = optical_to_clip(on_axis, cam, near, far)
    torch.testing.assert_close(c[..., 2] / c[..., 3], torch.tensor([[-1.0, 1.0]],
                                                                      dtype=torch.float64))


def test_clip_space_image_edges():
    """NDC -1/+1 are the outer edges of the first/last pixels; NDC y grows with the row."""
    cam = PinholeCamera(100.0, 100.0, 31.5, 23.5, 64, 48)
    z = 2.0
    # Optical points projecting to u = -0.5 (left edge) and v = -0.5 (top edge), then far corner.
    uv = torch.tensor([[-0.5, -0.5], [63.5, 47.5]], dtype=torch.float64)
    xyz = torch.stack([(uv[:, 0] - cam.cx) / cam.fx * z, (uv[:, 1] - cam.cy) / cam.fy * z,
                       torch.full((2,), z, dtype=torch.float64)], -1)[None]
    clip = optical_to_clip(xyz, cam, 0.1, 10.0)
    ndc = clip[..., :2] / clip[..., 3:]
    torch.testing.assert_close(ndc[0], torch.tensor([[-1.0, -1.0], [1.0, 1.0]],
                                                    dtype=torch.float64))


def test_near_far_validation():
    cam = PinholeCamera(100.0, 100.0, 31.5, 23.5, 64, 48)
    with pytest.raises(InputError, match='near, far'):
        optical_to_clip(random_points(3), cam, 1.0, 0.5)


def test_scaled_camera_matches_resize():
    cam = PinholeCamera(600.0, 590.0, 319.5, 239.5, 640, 480)
    small = cam.scaled(128, 96)
    pts = random_points(20)
    s = 128 / 640
    expected = (cam.project(pts) + 0.5) * s - 0.5
    torch.testing.assert_close(small.project(pts), expected, rtol=0, atol=1e-9)
    with pytest.raises(InputError, match='^width'):
        cam.scaled(0, 96)


def test_undistorter_identity_without_distortion():
    und = Undistorter.from_camera_info(K, [K[0], 0, K[2], 0, 0, K[4], K[5], 0, 0, 0, 1, 0],
                                       640, 480, 'plumb_bob', [0.0] * 5)
    assert und.is_identity
    img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    assert und.undistort_image(img) is img
    with pytest.raises(InputError, match=r'^image: expected 640x480'):
        und.undistort_image(img[:, :320])


def test_undistorter_maps_rectified_pixels_to_raw_pixels():
    D = [0.12, -0.25, 0.001, -0.002, 0.05]
    und = Undistorter.from_camera_info(K, P, 640, 480, 'plumb_bob', D)
    assert not und.is_identity
    cam = und.camera
    # An image whose value is its own raw column (row) coordinate: after undistortion each
    # pixel holds the raw coordinate it came from.
    raw_u = np.tile(np.arange(640, dtype=np.float32), (480, 1))
    raw_v = np.tile(np.arange(480, dtype=np.float32)[:, None], (1, 640))
    got_u = und.undistort_image(raw_u)
    got_v = und.undistort_image(raw_v)
    rect = np.array([[100, 80], [320, 240], [500, 400], [600, 50]])
    rays = np.stack([(rect[:, 0] - cam.cx) / cam.fx, (rect[:, 1] - cam.cy) / cam.fy,
                     np.ones(len(rect))], 1)
    ref, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), np.array(K).reshape(3, 3),
                               np.array(D))
    np.testing.assert_allclose(got_u[rect[:, 1], rect[:, 0]], ref[:, 0, 0], atol=0.05)
    np.testing.assert_allclose(got_v[rect[:, 1], rect[:, 0]], ref[:, 0, 1], atol=0.05)
    mask = np.zeros((480, 640), np.uint8)
    mask[200:280, 300:340] = 255
    out = und.undistort_mask(mask)
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 255}


def test_camera_batch_projects_each_frame_with_its_camera():
    from handypriors_ros.core.render.camera import CameraBatch, optical_to_clip
    a = PinholeCamera(100.0, 110.0, 31.5, 20.0, 64, 48)
    b = PinholeCamera(80.0, 80.0, 15.5, 15.5, 32, 32)
    batch = CameraBatch.of([a, b])
    assert (batch.width, batch.height) == (64, 48) and len(batch) == 2
    pts = torch.tensor([[[0.01, -0.02, 0.4], [0.0, 0.0, 0.3]],
                        [[0.02, 0.01, 0.5], [-0.01, 0.0, 0.35]]], dtype=torch.float64)
    uv = batch.project(pts)
    torch.testing.assert_close(uv[0:1], a.project(pts[0:1]))
    torch.testing.assert_close(uv[1:2], b.project(pts[1:2]))
    # clip space: each frame's camera, on the batch's canvas
    clip = optical_to_clip(pts, batch, 0.01, 10.0)
    canvas_b = PinholeCamera(b.fx, b.fy, b.cx, b.cy, batch.width, batch.height)
    torch.testing.assert_close(clip[1:2], optical_to_clip(pts[1:2], canvas_b, 0.01, 10.0))
    with pytest.raises(InputError, match='^points_cam: expected a batch of 2'):
        batch.project(pts[:1])
    with pytest.raises(InputError, match='^cameras: expected a non-empty sequence'):
        CameraBatch.of([])
