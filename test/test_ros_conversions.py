"""Image / camera_info / time conversions, with rclpy messages and rosbags message dataclasses."""
import numpy as np
import pytest

pytest.importorskip('sensor_msgs.msg', reason='ROS 2 messages are not installed (./run.sh test)')
from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from handypriors_ros.bag import make_typestore  # noqa: E402
from handypriors_ros.core.errors import InputError  # noqa: E402
from handypriors_ros.core.render.camera import PinholeCamera, Undistorter  # noqa: E402
from handypriors_ros.ros.conversions import (  # noqa: E402
    camera_info_to_camera, camera_to_camera_info, image_to_numpy, mask_to_numpy, ns_to_stamp,
    numpy_to_image, stamp_to_ns)

T = make_typestore().types
RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)  # (H, W, 3)
CAMERA = PinholeCamera(fx=500.0, fy=505.0, cx=319.5, cy=241.25, width=640, height=480)
D5 = [0.1, -0.05, 0.001, -0.002, 0.01]


def _bag_image(pixels: np.ndarray, encoding: str, *, step=None, data=None, stamp_ns=5):
    """A rosbags sensor_msgs/msg/Image (data: a numpy uint8 array, as rosbags reads it)."""
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    step = w * channels if step is None else step
    if data is None:
        rows = np.zeros((h, step), np.uint8)
        rows[:, :w * channels] = pixels.reshape(h, -1)
        data = rows.reshape(-1)
    sec, nsec = divmod(stamp_ns, 10**9)
    return T['sensor_msgs/msg/Image'](
        header=T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=sec,
                                                                               nanosec=nsec),
                                        frame_id='cam'),
        height=h, width=w, encoding=encoding, is_bigendian=0, step=step, data=data)


def _bag_camera_info(K, P, D, width=640, height=480, model='plumb_bob', R=None, binning=0,
                     roi=(0, 0, 0, 0)):
    return T['sensor_msgs/msg/CameraInfo'](
        header=T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=1,
                                                                               nanosec=2),
                                        frame_id='cam'),
        height=height, width=width, distortion_model=model, d=np.asarray(D, np.float64),
        k=np.asarray(K, np.float64),
        r=np.eye(3).reshape(-1) if R is None else np.asarray(R, np.float64),
        p=np.asarray(P, np.float64), binning_x=binning, binning_y=binning,
        roi=T['sensor_msgs/msg/RegionOfInterest'](x_offset=roi[0], y_offset=roi[1],
                                                  width=roi[2], height=roi[3],
                                                  do_rectify=False))


def _K_P(cam=CAMERA):
    K = cam.K.reshape(-1)
    P = np.hstack([cam.K, np.zeros((3, 1))]).reshape(-1)
    return K, P


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------
def test_rgb8_round_trip_rclpy_is_zero_copy():
    msg = numpy_to_image(RGB, 'rgb8', 1_500_000_000, 'camera_color_optical_frame')
    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (6, 8, 24, 'rgb8')
    assert msg.header.frame_id == 'camera_color_optical_frame'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1, 500_000_000)
    out = image_to_numpy(msg)
    np.testing.assert_array_equal(out, RGB)
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))  # a view, no copy


def test_bgr8_round_trip_rclpy():
    msg = numpy_to_image(np.ascontiguousarray(RGB[:, :, ::-1]), 'bgr8', Time(sec=3), 'cam')
    assert msg.header.stamp.sec == 3
    out = image_to_numpy(msg)
    np.testing.assert_array_equal(out, RGB)
    assert out.flags.c_contiguous


@pytest.mark.parametrize('encoding', ['rgba8', 'bgra8'])
def test_alpha_dropped(encoding):
    alpha = RNG.integers(0, 256, size=(6, 8, 1), dtype=np.uint8)
    colour = RGB if encoding == 'rgba8' else RGB[:, :, ::-1]
    msg = numpy_to_image(np.ascontiguousarray(np.concatenate([colour, alpha], -1)), encoding,
                         0, 'cam')
    np.testing.assert_array_equal(image_to_numpy(msg, expected=(encoding,)), RGB)
    with pytest.raises(InputError, match=f"got '{encoding}'"):
        image_to_numpy(msg)  # default: rgb8 / bgr8 only


@pytest.mark.parametrize('encoding,pixels', [('rgb8', RGB),
                                             ('bgr8', np.ascontiguousarray(RGB[:, :, ::-1]))])
def test_rosbags_image_with_padded_rows(encoding, pixels):
    msg = _bag_image(pixels, encoding, step=8 * 3 + 5)
    np.testing.assert_array_equal(image_to_numpy(msg), RGB)
    np.testing.assert_array_equal(image_to_numpy(_bag_image(pixels, encoding)), RGB)


@pytest.mark.parametrize('encoding', ['16UC1', 'yuv422', 'mono8', '32FC1'])
@pytest.mark.parametrize('source', ['rclpy', 'rosbags'])
def test_wrong_encoding_names_it_and_the_accepted_ones(encoding, source):
    if source == 'rclpy':
        msg = numpy_to_image(RGB, 'rgb8', 0, 'cam')
        msg.encoding = encoding
    else:
        msg = _bag_image(RGB, encoding)
    with pytest.raises(InputError, match=rf"expected one of \['rgb8', 'bgr8'\], got '{encoding}'"):
        image_to_numpy(msg)


def test_unknown_expected_encoding_rejected():
    with pytest.raises(InputError, match='yuv422'):
        image_to_numpy(numpy_to_image(RGB, 'rgb8', 0, 'cam'), expected=('rgb8', 'yuv422'))


def test_data_too_short_rclpy():
    msg = numpy_to_image(RGB, 'rgb8', 0, 'cam')
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(InputError, match=r'image data: expected step \* height = 24 \* 6 = 144 '
                                         r'bytes .* got 143'):
        image_to_numpy(msg)


def test_data_too_short_rosbags():
    msg = _bag_image(RGB, 'rgb8', data=RGB.reshape(-1)[:100].copy())
    with pytest.raises(InputError, match='got 100'):
        image_to_numpy(msg)


def test_step_too_small():
    msg = numpy_to_image(RGB, 'bgr8', 0, 'cam')
    msg.step = 20
    with pytest.raises(InputError, match=r'image step: expected >= width \* channels = 24'):
        image_to_numpy(msg)


def test_empty_image_rejected():
    msg = Image(encoding='rgb8')
    with pytest.raises(InputError, match='image size'):
        image_to_numpy(msg)


@pytest.mark.parametrize('source', ['rclpy', 'rosbags'])
def test_mask(source):
    values = RNG.integers(0, 256, size=(5, 7), dtype=np.uint8)
    if source == 'rclpy':
        msg = numpy_to_image(values, 'mono8', 0, 'cam')
    else:
        msg = _bag_image(values, 'mono8', step=9)
    mask = mask_to_numpy(msg)
    assert mask.dtype == np.bool_ and mask.shape == (5, 7)
    np.testing.assert_array_equal(mask, values > 127)


def test_mask_from_bool_and_wrong_encoding():
    mask = RNG.random((5, 7)) > 0.5
    msg = numpy_to_image(mask, 'mono8', 0, 'cam')
    assert set(np.frombuffer(msg.data, np.uint8)) <= {0, 255}
    np.testing.assert_array_equal(mask_to_numpy(msg), mask)
    with pytest.raises(InputError, match=r"mask encoding: expected one of \['mono8', '8UC1'\], "
                                         r"got 'rgb8'"):
        mask_to_numpy(numpy_to_image(RGB, 'rgb8', 0, 'cam'))


@pytest.mark.parametrize('arr,encoding,match', [
    (RGB, 'yuv422', 'encoding: expected one of'),
    (RGB[:, :, :2], 'rgb8', r'expected shape \(H, W, 3\)'),
    (RGB, 'mono8', r'expected shape \(H, W\)'),
    (RGB.astype(np.float32), 'rgb8', 'expected dtype uint8'),
    (RGB.tolist(), 'rgb8', 'expected a numpy array'),
])
def test_numpy_to_image_rejects(arr, encoding, match):
    with pytest.raises(InputError, match=match):
        numpy_to_image(arr, encoding, 0, 'cam')


# ---------------------------------------------------------------------------------------------
# Camera info
# ---------------------------------------------------------------------------------------------
def test_camera_info_round_trip_rclpy():
    msg = camera_to_camera_info(CAMERA, 7_000_000_123, 'cam', 'plumb_bob', D5)
    assert isinstance(msg, CameraInfo)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (7, 123, 'cam')
    assert (msg.width, msg.height, msg.distortion_model) == (640, 480, 'plumb_bob')
    np.testing.assert_allclose(msg.k, CAMERA.K.reshape(-1))
    np.testing.assert_allclose(np.asarray(msg.p).reshape(3, 4)[:, :3], CAMERA.K)
    np.testing.assert_allclose(msg.d, D5)
    np.testing.assert_allclose(msg.r, np.eye(3).reshape(-1))
    camera, undistorter = camera_info_to_camera(msg, image_size=(640, 480))
    assert camera == CAMERA
    assert not undistorter.is_identity


def test_camera_info_default_distortion_is_zero():
    msg = camera_to_camera_info(CAMERA, Time(sec=1), 'cam')
    assert list(msg.d) == [0.0] * 5
    camera, undistorter = camera_info_to_camera(msg)
    assert camera == CAMERA and undistorter.is_identity
    assert len(camera_to_camera_info(CAMERA, 0, 'cam', 'equidistant').d) == 4


def test_camera_info_rosbags_matches_core():
    K, P = _K_P()
    msg = _bag_camera_info(K, P, D5)
    camera, undistorter = camera_info_to_camera(msg)
    reference = Undistorter.from_camera_info(K, P, 640, 480, 'plumb_bob', D5)
    assert camera == reference.camera == CAMERA
    raw = RNG.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    np.testing.assert_array_equal(undistorter.undistort_image(raw),
                                  reference.undistort_image(raw))


def test_all_zero_R_means_identity():
    msg = CameraInfo(width=640, height=480, distortion_model='plumb_bob')
    K, P = _K_P()
    msg.k, msg.p = K, P  # R left as the default zeros
    camera, undistorter = camera_info_to_camera(msg)
    assert camera == CAMERA and undistorter.is_identity


@pytest.mark.parametrize('source', ['rclpy', 'rosbags'])
def test_camera_info_zero_fx(source):
    K, _ = _K_P()
    K[0] = 0.0
    P = np.zeros(12)  # uncalibrated: P falls back to K
    if source == 'rosbags':
        msg = _bag_camera_info(K, P, np.zeros(5))
    else:
        msg = CameraInfo(width=640, height=480, distortion_model='plumb_bob', k=K, p=P)
    with pytest.raises(InputError, match=r'K\[0\] \(fx\): expected a focal length > 0'):
        camera_info_to_camera(msg)


def test_camera_info_size_mismatch_with_image():
    msg = camera_to_camera_info(CAMERA, 0, 'cam')
    with pytest.raises(InputError, match='image: expected 640x480 px .* got 320x240'):
        camera_info_to_camera(msg, image_size=(320, 240))


@pytest.mark.parametrize('kwargs,match', [
    (dict(width=0), 'width: expected a positive integer'),
    (dict(binning=2), 'binning_x: expected 0 or 1'),
    (dict(roi=(10, 0, 320, 240)), 'camera_info roi: expected the full image'),
])
def test_camera_info_rejects(kwargs, match):
    K, P = _K_P()
    with pytest.raises(InputError, match=match):
        camera_info_to_camera(_bag_camera_info(K, P, np.zeros(5), **kwargs))


def test_camera_info_wrong_K_size_rosbags():
    K, P = _K_P()
    with pytest.raises(InputError, match='K: expected 9 values, got 8'):
        camera_info_to_camera(_bag_camera_info(K[:8], P, np.zeros(5)))


def test_camera_to_camera_info_rejects_bad_distortion():
    with pytest.raises(InputError, match='D: expected 4 coefficients'):
        camera_to_camera_info(CAMERA, 0, 'cam', 'equidistant', D5)
    with pytest.raises(InputError, match='distortion_model'):
        camera_to_camera_info(CAMERA, 0, 'cam', 'fisheye624')


# ---------------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('ns', [0, 1, 999_999_999, 1_700_000_000_123_456_789, -1, -1_500_000_000])
def test_stamp_round_trip(ns):
    stamp = ns_to_stamp(ns)
    assert isinstance(stamp, Time)
    assert 0 <= stamp.nanosec < 10**9
    assert stamp_to_ns(stamp) == ns


def test_stamp_to_ns_rosbags():
    assert stamp_to_ns(T['builtin_interfaces/msg/Time'](sec=12, nanosec=34)) == 12_000_000_034


def test_stamp_errors():
    with pytest.raises(InputError, match='int32 seconds'):
        ns_to_stamp(2**31 * 10**9)
    with pytest.raises(InputError, match='expected integer nanoseconds, got float'):
        ns_to_stamp(1.5)
    with pytest.raises(InputError, match='builtin_interfaces/Time'):
        stamp_to_ns(1.5)
