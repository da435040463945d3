"""The launch files run as ``ros2 launch`` runs them, in a process of their own.

Each test starts ``ros2launch.api.launch_a_launch_file`` (the function behind ``ros2 launch``)
in a subprocess, with an ament prefix whose handypriors_ros is this checkout
(ros_helpers/launch_overlay.py), and listens over DDS from this process:

- tracker.launch.py in another namespace (``namespace:=hp_run``, as a second tracker would
  run), its pose output remapped to a relative name and its initial pose input to an absolute
  one by their launch arguments: a bag publisher in a third process feeds the tiny synthetic
  sequence (initial pose on /handypriors/initial_pose); one pose per image arrives on
  ``/hp_run/tracked_pose``, nothing on the default names, the reset service is
  ``/hp_run/reset``; SIGINT (Ctrl-C) then ends the launch with status 0.
- replay.launch.py ends by itself when the playback ends: status 0 after a playback that
  succeeded (the pose of the bag's last image arrived first), non-zero after one that failed,
  the log naming the playback's exit status. ``ros2 bag play`` (rosbag2) has no wheel here: a stand-in ``ros2``
  first on PATH plays the bag with test/ros_helpers/bag_publisher.py, or exits with the status
  the test asks for (HP_FAKE_PLAY_STATUS).

Skips where launch / launch_ros / ros2launch are not importable (they have no wheels on the
package index; tools/setup_env.sh installs them from ../shared/wheels/ros2-launch when present).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

try:
    import launch.actions  # noqa: F401  (not 'launch': the checkout's launch/ folder shadows it)
    import launch_ros.actions  # noqa: F401
    import ros2launch.api  # noqa: F401
except ImportError as exc:
    pytest.skip(f'launch / launch_ros / ros2launch are not importable ({exc}): they have no '
                f'wheels on the package index (tools/setup_env.sh installs them from '
                f'../shared/wheels/ros2-launch when that folder exists)', allow_module_level=True)

import rclpy  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from handypriors_ros import interfaces  # noqa: E402
from handypriors_ros.ros.qos import OUTPUT_QOS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BAG_PUBLISHER = ROOT / 'test' / 'ros_helpers' / 'bag_publisher.py'
START_TIMEOUT_S = 120.0  # tracker_node start-up on 2 busy cores
POSE_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 60.0
IMAGE_RATE_HZ = 10.0

RUNNER = textwrap.dedent('''\
    import sys
    from ros2launch.api import launch_a_launch_file
    sys.exit(launch_a_launch_file(launch_file_path=sys.argv[1],
                                  launch_file_arguments=sys.argv[2:], noninteractive=True))
    ''')

FAKE_ROS2 = textwrap.dedent('''\
    #!{python}
    """Stand-in for `ros2 bag play BAG --clock --rate R` (test_launch_run.py)."""
    import os, subprocess, sys
    args = sys.argv[1:]
    assert args[:2] == ['bag', 'play'], args
    print('fake playback Fast DDS profile:', os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE')
          or os.environ.get('FASTRTPS_DEFAULT_PROFILES_FILE'), flush=True)
    status = int(os.environ.get('HP_FAKE_PLAY_STATUS', '0'))
    if status:
        print(f'fake playback failing with {{status}}', flush=True)
        sys.exit(status)
    # --settle 2: the test's listener matches the tracker's (volatile) pose publisher in
    # ~0.3-0.9 s (measured); a shorter wait lost every pose of the 0.6 s playback in 1 of 5
    # runs once images came ~10 ms sooner with the Fast DDS profile.
    sys.exit(subprocess.call([sys.executable, {publisher!r}, args[2], {rate!r},
                              '--wait-for', {image!r}, '--settle', '2', '--linger', '1']))
    ''')


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """(folder, the synthetic sequence, the environment of the launch processes)."""
    from ros_helpers.launch_overlay import overlay_prefix
    from ros_helpers.synthetic import tiny_config

    from handypriors_ros.synth.generate import generate

    folder = tmp_path_factory.mktemp('launch_run')
    generate(tiny_config(), folder / 'sequence')
    prefix = overlay_prefix(folder)
    bin_dir = folder / 'bin'
    bin_dir.mkdir()
    ros2 = bin_dir / 'ros2'
    ros2.write_text(FAKE_ROS2.format(python=sys.executable, publisher=str(BAG_PUBLISHER),
                                     rate=str(IMAGE_RATE_HZ), image=interfaces.IMAGE_TOPIC))
    ros2.chmod(0o755)
    (folder / 'runner.py').write_text(RUNNER)
    env = dict(os.environ)
    env['AMENT_PREFIX_PATH'] = os.pathsep.join(
        [str(prefix)] + [p for p in env.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p])
    env['PATH'] = os.pathsep.join([str(bin_dir), env.get('PATH', '')])
    env['PYTHONPATH'] = os.pathsep.join(
        [str(ROOT), str(ROOT / 'test')] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                                           if p])
    env['PYTHONUNBUFFERED'] = '1'
    return folder, folder / 'sequence', env


def _launch(workspace, launch_file: str, arguments: dict, extra_env: dict | None = None):
    folder, _, env = workspace
    env = dict(env, **(extra_env or {}))
    log = open(folder / f'{launch_file}.{time.monotonic_ns()}.log', 'w+')
    proc = subprocess.Popen(
        [sys.executable, str(folder / 'runner.py'), str(ROOT / 'launch' / launch_file)]
        + [f'{k}:={v}' for k, v in arguments.items()],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc, log


def _output(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()


def _stop(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class Listener:
    """Pose subscriptions over DDS in this process."""

    def __init__(self, topics: list[str]):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('handypriors_launch_run_listener', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.poses = {topic: {} for topic in topics}
        for topic in topics:
            self.node.create_subscription(PoseWithCovarianceStamped, topic,
                                          lambda msg, t=topic: self._on_pose(t, msg), OUTPUT_QOS)

    def _on_pose(self, topic, msg) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.poses[topic][stamp] = msg

    def spin_until(self, done, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while not done() and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)
        return done()

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _stamps(sequence: Path) -> list[int]:
    return sorted(np.load(sequence / 'ground_truth.npz')['stamps_ns'].tolist())


def test_tracker_launch_in_a_namespace_with_remaps(workspace):
    _, sequence, env = workspace
    remapped = '/hp_run/tracked_pose'  # object_pose_topic:=tracked_pose, in the namespace
    default = '/handypriors/object_pose'
    listener = Listener([remapped, default])
    proc, log = _launch(workspace, 'tracker.launch.py', {
        'object_mesh': sequence / 'object.ply', 'mode': 'replay', 'use_camera': 'false',
        'namespace': 'hp_run', 'object_pose_topic': 'tracked_pose',
        'initial_pose_topic': interfaces.INITIAL_POSE_TOPIC})
    publisher = None
    try:
        started = listener.spin_until(
            lambda: listener.node.count_publishers(remapped) > 0 or proc.poll() is not None,
            START_TIMEOUT_S)
        assert started and proc.poll() is None, f'the launch did not start:\n{_output(log)}'
        assert listener.node.count_publishers(default) == 0
        # Services follow the namespace too.
        def services():
            return dict(listener.node.get_service_names_and_types())

        listener.spin_until(lambda: '/hp_run/reset' in services(), 30.0)
        assert services().get('/hp_run/reset') == ['std_srvs/srv/Trigger'], services()
        assert '/handypriors/reset' not in services()
        assert listener.node.count_publishers('/hp_run/object_pose') == 0
        publisher = subprocess.run(
            [sys.executable, str(BAG_PUBLISHER), str(sequence / 'bag'), str(IMAGE_RATE_HZ),
             '--wait-for', interfaces.IMAGE_TOPIC, '--linger', '1'],
            capture_output=True, text=True, env=env, timeout=POSE_TIMEOUT_S)
        assert publisher.returncode == 0, publisher.stdout + publisher.stderr
        stamps = _stamps(sequence)
        listener.spin_until(lambda: len(listener.poses[remapped]) >= len(stamps), POSE_TIMEOUT_S)
        assert sorted(listener.poses[remapped]) == stamps, _output(log)[-3000:]
        assert listener.poses[default] == {}
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=EXIT_TIMEOUT_S) == 0, _output(log)[-3000:]
        # Ctrl-C ends the tracker cleanly (it aborted with SIGABRT before spin.InterruptGuard)
        assert 'process has died' not in _output(log), _output(log)[-3000:]
        # dds_profile:=auto: the tracker ran with the package's Fast DDS profile.
        assert f'DDS transports profile {_profile(workspace)}' in _output(log), \
            _output(log)[-3000:]
    finally:
        _stop(proc)
        listener.close()


def _profile(workspace) -> Path:
    """The package's Fast DDS profile, found as the launch processes find it (the same
    PYTHONPATH: the checkout's file)."""
    from handypriors_ros.resources import package_file
    from handypriors_ros.ros.dds import LARGE_IMAGES_PROFILE
    return package_file(LARGE_IMAGES_PROFILE)


def test_replay_ends_when_playback_succeeds(workspace):
    _, sequence, _ = workspace
    topic = '/handypriors/object_pose'
    listener = Listener([topic])
    proc, log = _launch(workspace, 'replay.launch.py', {
        'bag': sequence / 'bag', 'object_mesh': sequence / 'object.ply', 'start_delay': '0.0',
        'end_delay': '3.0'})
    try:
        # The launch ends by itself: playback exit 0, end_delay, shutdown.
        listener.spin_until(lambda: proc.poll() is not None, START_TIMEOUT_S + POSE_TIMEOUT_S)
        output = _output(log)
        assert proc.poll() == 0, output[-3000:]
        assert 'bag playback ended (exit status 0)' in output
        # dds_profile:=auto reaches the playback (the images' publisher) and the tracker.
        assert f'fake playback Fast DDS profile: {_profile(workspace)}' in output, output[-3000:]
        assert f'DDS transports profile {_profile(workspace)}' in output, output[-3000:]
        # The tracker finished the bag's last frame before the shutdown (end_delay). The first
        # poses may be missed: the playback starts as soon as the tracker subscribes, maybe
        # before this listener has discovered the tracker's (volatile) publisher.
        received, stamps = sorted(listener.poses[topic]), _stamps(sequence)
        assert received and set(received) <= set(stamps), output[-3000:]
        assert received[-1] == stamps[-1], output[-3000:]
    finally:
        _stop(proc)
        listener.close()


def test_replay_ends_with_an_error_when_playback_fails(workspace):
    _, sequence, _ = workspace
    proc, log = _launch(workspace, 'replay.launch.py', {
        'bag': sequence / 'bag', 'object_mesh': sequence / 'object.ply', 'start_delay': '0.0'},
        extra_env={'HP_FAKE_PLAY_STATUS': '3'})
    try:
        code = proc.wait(timeout=START_TIMEOUT_S)
        output = _output(log)
        assert code != 0, output[-3000:]
        assert 'failed with exit status 3' in output, output[-3000:]
    finally:
        _stop(proc)


def test_tracker_launch_one_process_runs_driver_and_tracker_together(workspace, tmp_path):
    """``one_process:=true``: tracker_with_camera runs realsense_node (here playing a RealSense
    recording) and tracker_node in one process; the driver keeps its /camera/camera names, the
    tracker moves into the namespace, and each node gets its own image_qos_reliability (the
    driver rejects the tracker's 'auto': a shared value would stop the process at start)."""
    rs = pytest.importorskip('pyrealsense2', reason='pyrealsense2 is not installed')
    del rs
    from test_realsense_node import H, W, _record

    _, sequence, env = workspace
    recording = tmp_path / 'rec.db3'
    rng = np.random.default_rng(3)
    _record(str(recording), [rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
                             for _ in range(300)])
    listener = Listener([])
    # The recording plays in about a second and the process then ends: the playback waits for
    # the tracker and this listener (discovery done) before it starts.
    for kind, topic in ((Image, '/camera/camera/color/image_raw'),
                        (CameraInfo, '/camera/camera/color/camera_info')):
        listener.node.create_subscription(kind, topic, lambda msg: None, 10)
    proc, log = _launch(workspace, 'tracker.launch.py', {
        'object_mesh': sequence / 'object.ply', 'use_camera': 'true', 'one_process': 'true',
        'playback_file': recording, 'namespace': 'hp_one', 'camera_reliability': 'reliable',
        'playback_wait_for_subscribers': 2})
    try:
        def nodes():
            return set(listener.node.get_node_names_and_namespaces())

        listener.spin_until(lambda: {('camera', '/camera'), ('tracker_node', '/hp_one')}
                            <= nodes() or proc.poll() is not None, START_TIMEOUT_S)
        assert {('camera', '/camera'), ('tracker_node', '/hp_one')} <= nodes(), (
            nodes(), _output(log)[-3000:])
        listener.spin_until(lambda: '/hp_one/reset' in dict(
            listener.node.get_service_names_and_types()), 30.0)
        assert '/hp_one/reset' in dict(listener.node.get_service_names_and_types())
        assert proc.poll() in (None, 0), _output(log)[-3000:]  # running, or the recording ended
    finally:
        _stop(proc)
        listener.close()
