"""RealSense driver: a recording made with a librealsense software device is played back
by RealSenseSource (pixels, intrinsics) and by the real node in another process (over DDS).
"""
import re
import subprocess
import sys
import time

import numpy as np
import pytest

# rclpy before pyrealsense2: see the import note in handypriors_ros/ros/realsense_node.py.
rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (./run.sh test)')
rs = pytest.importorskip('pyrealsense2', reason='pyrealsense2 is not installed')
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from handypriors_ros.core.errors import InputError  # noqa: E402
from handypriors_ros.ros.conversions import image_to_numpy, stamp_to_ns  # noqa: E402
from handypriors_ros.ros.qos import image_qos  # noqa: E402
from handypriors_ros.ros.realsense_node import (  # noqa: E402
    NO_DEVICE_MESSAGE, ColorIntrinsics, DeviceNotFoundError, EndOfPlayback, FrameStamper,
    RealSenseError, RealSenseNode, RealSenseSource, SourceConfig, camera_info_fields,
    exposure_option_value, main)

W, H, N = 128, 96, 6
FX, FY, PPX, PPY = 101.5, 102.25, 63.25, 47.75
COEFFS = [0.11, -0.23, 0.0012, -0.0021, 0.045]
T0_MS, PERIOD_MS = 1000.0, 33.3


def _has_device() -> bool:
    return len(rs.context().query_devices()) > 0


def _record(path: str, frames: list) -> None:
    """Record RGB frames (H, W, 3) with known intrinsics through a software device."""
    device = rs.software_device()
    sensor = device.add_sensor('Color')
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = W, H, FX, FY, PPX, PPY
    intr.model = rs.distortion.brown_conrady
    intr.coeffs = COEFFS
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
    stream.width, stream.height, stream.fps, stream.bpp = W, H, 30, 3
    stream.fmt, stream.intrinsics = rs.format.rgb8, intr
    profile = sensor.add_video_stream(stream).as_video_stream_profile()
    recorder = rs.recorder(path, device)
    syncer = rs.syncer()
    sensor.open(profile)
    sensor.start(syncer)
    for i, rgb in enumerate(frames):
        frame = rs.software_video_frame()
        frame.pixels, frame.bpp, frame.stride = rgb.tobytes(), 3, W * 3
        frame.timestamp = T0_MS + i * PERIOD_MS
        frame.domain = rs.timestamp_domain.hardware_clock
        frame.frame_number = i
        frame.profile = profile
        sensor.on_video_frame(frame)
        syncer.wait_for_frames(2000)
    sensor.stop()
    sensor.close()
    del recorder  # closes the file


@pytest.fixture(scope='module')
def recording(tmp_path_factory):
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8) for _ in range(N)]
    path = str(tmp_path_factory.mktemp('realsense') / 'synthetic.db3')  # recorder wants .db3
    _record(path, frames)
    return path, frames


@pytest.fixture
def ros_context():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


# ---------------------------------------------------------------------------------------------
# RealSenseSource (no ROS)
# ---------------------------------------------------------------------------------------------
def test_source_plays_back_pixels_and_intrinsics(recording):
    path, frames = recording
    with RealSenseSource(SourceConfig(playback_file=path, playback_realtime=False)) as source:
        intr = source.intrinsics
        assert (intr.width, intr.height, intr.fps, intr.format) == (W, H, 30, 'rgb8')
        np.testing.assert_allclose([intr.fx, intr.fy, intr.ppx, intr.ppy], [FX, FY, PPX, PPY])
        assert intr.model == 'brown_conrady'
        np.testing.assert_allclose(intr.coeffs, np.float32(COEFFS))  # stored as float32
        source.start()
        got = []
        with pytest.raises(EndOfPlayback):
            for _ in range(100):
                frame = source.read(timeout_s=0.2)
                if frame is not None:
                    got.append(frame)
    assert len(got) == N
    for i, (frame, rgb) in enumerate(zip(got, frames)):
        np.testing.assert_array_equal(frame.rgb, rgb)  # bit-exact
        assert frame.rgb.flags.writeable and frame.rgb.shape == (H, W, 3)
        assert frame.timestamp_ms == pytest.approx(T0_MS + i * PERIOD_MS)
        assert frame.frame_number == i
        assert not frame.host_synced  # hardware clock


def test_source_read_before_start(recording):
    source = RealSenseSource(SourceConfig(playback_file=recording[0]))
    with pytest.raises(RealSenseError, match='not started'):
        source.read()


def test_source_missing_playback_file(tmp_path):
    with pytest.raises(RealSenseError, match='playback_file: no such file'):
        RealSenseSource(SourceConfig(playback_file=str(tmp_path / 'nothing.db3')))


def test_source_unreadable_playback_file(tmp_path):
    bad = tmp_path / 'bad.db3'
    bad.write_bytes(b'not a recording')
    with pytest.raises(RealSenseError, match='playback_file: cannot play'):
        RealSenseSource(SourceConfig(playback_file=str(bad)))


@pytest.mark.skipif(_has_device(), reason='a RealSense device is attached')
def test_source_without_device():
    with pytest.raises(DeviceNotFoundError, match=re.escape(NO_DEVICE_MESSAGE)):
        RealSenseSource(SourceConfig())


def test_exposure_rejected_for_a_recording(recording):
    source = RealSenseSource(SourceConfig(playback_file=recording[0]))
    source.set_exposure(-1)  # auto: nothing to do
    with pytest.raises(InputError, match='exposure_us: a recording has no exposure control'):
        source.set_exposure(5000)
    with pytest.raises(InputError, match='exposure_us: expected -1'):
        source.set_exposure(0)


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------
def _intrinsics(model: str, coeffs=COEFFS) -> ColorIntrinsics:
    return ColorIntrinsics(width=W, height=H, fx=FX, fy=FY, ppx=PPX, ppy=PPY, model=model,
                           coeffs=tuple(coeffs), fps=30, format='rgb8')


@pytest.mark.parametrize('model,expected_model,expected_D,noted', [
    ('brown_conrady', 'plumb_bob', COEFFS, False),
    ('modified_brown_conrady', 'plumb_bob', COEFFS, True),
    ('inverse_brown_conrady', 'plumb_bob', COEFFS, True),
    ('kannala_brandt4', 'equidistant', COEFFS[:4], False),
    ('none', 'plumb_bob', [0.0] * 5, False),
])
def test_camera_info_fields(model, expected_model, expected_D, noted):
    camera, distortion_model, D, note = camera_info_fields(_intrinsics(model))
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (FX, FY, PPX, PPY)
    assert (camera.width, camera.height) == (W, H)
    assert distortion_model == expected_model
    np.testing.assert_allclose(D, expected_D)
    assert (note is not None) == noted
    if noted:
        assert model in note and 'plumb_bob' in note


def test_camera_info_fields_zero_coefficients_need_no_note():
    _, model, D, note = camera_info_fields(_intrinsics('inverse_brown_conrady', [0.0] * 5))
    assert (model, note) == ('plumb_bob', None) and not np.any(D)


def test_camera_info_fields_ftheta_rejected():
    with pytest.raises(RealSenseError, match="'ftheta'"):
        camera_info_fields(_intrinsics('ftheta'))


def test_stamper_anchors_hardware_clock_and_keeps_spacing():
    stamper = FrameStamper()
    arrival = 1_700_000_000_000_000_000
    stamps = [stamper.stamp(5000.0 + 33.3 * i, False, arrival + 7_000_000 * i) for i in range(4)]
    assert stamps[0] == arrival
    assert np.diff(stamps).tolist() == [33_300_000] * 3  # device spacing, not arrival spacing


def test_stamper_uses_host_synced_time_directly_when_close():
    stamper = FrameStamper()
    now = 1_700_000_000_000_000_000
    assert stamper.stamp(now / 1e6 - 20.0, True, now) == now - 20_000_000
    far = FrameStamper()  # recorded global time, long ago: anchored instead
    assert far.stamp(1_000_000.0, True, now) == now


def test_stamper_is_strictly_increasing():
    stamper = FrameStamper()
    a = stamper.stamp(100.0, False, 10**12)
    b = stamper.stamp(100.0, False, 10**12 + 5)  # same device time
    c = stamper.stamp(50.0, False, 10**12 + 10)  # device clock went back: re-anchor
    d = stamper.stamp(83.3, False, 10**12 + 20)
    assert a < b < c < d
    assert b == a + 1
    assert d - c == 33_300_000


def test_exposure_units():
    assert exposure_option_value(10_000, 'RGB Camera', 1, 10_000) == 100  # 100 µs units
    assert exposure_option_value(8_500, 'Stereo Module', 1, 165_000) == 8_500  # µs
    with pytest.raises(InputError, match=r'exposure_us: expected 100 to 1e\+06 µs'):
        exposure_option_value(50, 'RGB Camera', 1, 10_000)


# ---------------------------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------------------------
def test_node_parameters_in_process(recording, ros_context):
    node = RealSenseNode(context=ros_context, parameter_overrides=[
        Parameter('playback_file', value=recording[0]),
        Parameter('playback_wait_for_subscribers', value=1)])  # holds the playback
    try:
        assert node.get_fully_qualified_name() == '/camera/camera'
        assert '[px]' in node.describe_parameter('width').description
        assert node.describe_parameter('width').read_only
        assert not node.describe_parameter('exposure_us').read_only
        width = node.set_parameters([Parameter('width', value=320)])[0]
        assert not width.successful
        exposure = node.set_parameters([Parameter('exposure_us', value=5000)])[0]
        assert not exposure.successful and 'recording' in exposure.reason
        assert node.get_parameter('exposure_us').value == -1  # old value kept
        topics = dict(node.get_publisher_names_and_types_by_node('camera', '/camera'))
        assert topics['/camera/camera/color/image_raw'] == ['sensor_msgs/msg/Image']
        assert topics['/camera/camera/color/camera_info'] == ['sensor_msgs/msg/CameraInfo']
    finally:
        node.destroy_node()
    assert node.done.result() == 0


def test_node_honours_qos_overrides(recording, ros_context):
    from rclpy.qos import ReliabilityPolicy
    topic = '/camera/camera/color/image_raw'
    node = RealSenseNode(context=ros_context, parameter_overrides=[
        Parameter('playback_file', value=recording[0]),
        Parameter('playback_wait_for_subscribers', value=1),  # holds the playback
        Parameter(f'qos_overrides.{topic}.publisher.reliability', value='best_effort')])
    try:
        (image,) = node.get_publishers_info_by_topic(topic)
        assert image.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        (info,) = node.get_publishers_info_by_topic('/camera/camera/color/camera_info')
        assert info.qos_profile.reliability == ReliabilityPolicy.RELIABLE  # the parameter's
        assert node.describe_parameter(
            f'qos_overrides.{topic}.publisher.reliability').read_only
    finally:
        node.destroy_node()


def test_node_rejects_bad_qos_parameter(recording, ros_context):
    with pytest.raises(InputError, match="image_qos_reliability: expected one of "
                                         r"\['reliable', 'best_effort'\], got 'fast'"):
        RealSenseNode(context=ros_context, parameter_overrides=[
            Parameter('playback_file', value=recording[0]),
            Parameter('image_qos_reliability', value='fast')])


def _node_command(*params: str) -> list:
    args = [sys.executable, '-m', 'handypriors_ros.ros.realsense_node', '--ros-args']
    for p in params:
        args += ['-p', p]
    return args


def test_node_process_publishes_recording(recording, ros_context):
    """The node in another process plays every frame to this process, then exits 0."""
    path, frames = recording
    node = rclpy.create_node('realsense_test_listener', context=ros_context)
    executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    images, infos = [], []
    qos = image_qos('reliable', depth=50)
    node.create_subscription(CameraInfo, '/camera/camera/color/camera_info', infos.append, qos)
    node.create_subscription(Image, '/camera/camera/color/image_raw', images.append, qos)
    process = subprocess.Popen(
        _node_command(f'playback_file:={path}', 'playback_realtime:=false',
                      'playback_wait_for_subscribers:=1', 'frame_id:=test_optical_frame'),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 40.0
        while (len(images) < N or len(infos) < N) and time.monotonic() < deadline:
            if process.poll() is not None:  # exited: take what is still on the way
                deadline = min(deadline, time.monotonic() + 1.0)
            executor.spin_once(timeout_sec=0.05)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        executor.shutdown()
        node.destroy_node()
    assert process.returncode == 0, output
    assert 'end of playback: published 6 frames' in output
    assert (len(images), len(infos)) == (N, N), output
    for image, rgb in zip(images, frames):
        assert (image.encoding, image.width, image.height, image.step) == ('rgb8', W, H, W * 3)
        assert image.header.frame_id == 'test_optical_frame'
        np.testing.assert_array_equal(image_to_numpy(image), rgb)
    for info in infos:
        assert info.header.frame_id == 'test_optical_frame'
        assert (info.width, info.height, info.distortion_model) == (W, H, 'plumb_bob')
        np.testing.assert_allclose(info.k, [FX, 0, PPX, 0, FY, PPY, 0, 0, 1])
        np.testing.assert_allclose(np.asarray(info.p).reshape(3, 4)[:, :3],
                                   np.asarray(info.k).reshape(3, 3))
        np.testing.assert_allclose(info.d, np.float32(COEFFS))
    stamps = [stamp_to_ns(m.header.stamp) for m in images]
    assert stamps == [stamp_to_ns(m.header.stamp) for m in infos]
    assert np.all(np.diff(stamps) > 0)
    # Recorded hardware-clock spacing is kept (anchored to the node clock at the first frame).
    np.testing.assert_allclose(np.diff(stamps), PERIOD_MS * 1e6, atol=2)


@pytest.mark.skipif(_has_device(), reason='a RealSense device is attached')
def test_main_without_device_exits_nonzero(capfd):
    """The console script's main(): no device and no playback file -> 1 and the reason."""
    assert main(['realsense_node']) == 1
    assert NO_DEVICE_MESSAGE in capfd.readouterr().err


@pytest.mark.parametrize('param,match', [
    ('playback_file:=/nonexistent/recording.db3', 'playback_file: no such file'),
    ('image_qos_reliability:=fast', 'image_qos_reliability: expected one of'),
    ('width:=0', 'width out of range'),
])
def test_main_with_bad_parameters_exits_nonzero(param, match, capfd):
    assert main(['realsense_node', '--ros-args', '-p', param]) == 1
    assert re.search(match, capfd.readouterr().err)
