"""refiner_node in this process: parameters (declared, described, validated), one job run to
the end with progress on /diagnostics and the refined estimates published, start-up errors."""
import time

import pytest
import yaml
from ros_helpers.synthetic import tiny_sequence

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (./run.sh test)')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from handypriors_ros import interfaces  # noqa: E402
from handypriors_ros.core.errors import InputError  # noqa: E402
from handypriors_ros.jobs.refine import REFINE_SCHEMA  # noqa: E402
from handypriors_ros.ros.qos import OUTPUT_QOS  # noqa: E402
from handypriors_ros.ros.refiner_node import RefinerNode, main  # noqa: E402

SMALL = {'iterations': 3, 'hand_points': 300, 'object_points': 100}


@pytest.fixture(scope='module')
def sequence(tmp_path_factory):
    return tiny_sequence(tmp_path_factory)


@pytest.fixture
def ros_context():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


def _overrides(sequence, out, **extra):
    values = {'bag': str(sequence / 'bag'), 'object_mesh': str(sequence / 'object.ply'),
              'out_bag': str(out), **SMALL, **extra}
    return [Parameter(k, value=v) for k, v in values.items()]


def test_every_setting_is_a_described_read_only_parameter(ros_context, sequence, tmp_path):
    node = RefinerNode(context=ros_context, start=False,
                       parameter_overrides=_overrides(sequence, tmp_path / 'out'))
    try:
        names = [o.name for o in REFINE_SCHEMA.node_options]
        assert {'bag', 'out_bag', 'device', 'joint_prefix', 'weights.mask'} <= set(names)
        for name in names:
            (descriptor,) = node.describe_parameters([name])
            assert descriptor.description and descriptor.read_only, name
        assert node.job.config.iterations == SMALL['iterations']
        assert node.job.bag == sequence / 'bag'
    finally:
        node.destroy_node()


@pytest.mark.parametrize('extra, match', [
    ({'bag': ''}, r"bag: expected a path, got ''"),
    ({'weights.mask': -1.0}, r'weights.mask: expected a finite number >= 0'),
    ({'render_faces': 2}, r'render_faces: expected >= 4'),
])
def test_invalid_parameters_are_named_at_start(ros_context, sequence, tmp_path, extra, match):
    with pytest.raises(InputError, match=match):
        RefinerNode(context=ros_context, start=False,
                    parameter_overrides=_overrides(sequence, tmp_path / 'out', **extra))


def test_job_runs_publishes_progress_and_results(ros_context, sequence, tmp_path):
    out = tmp_path / 'refined'
    node = RefinerNode(context=ros_context, start=False,
                       parameter_overrides=_overrides(sequence, out))
    listener = rclpy.create_node('refine_listener', context=ros_context)
    poses, diagnostics = [], []
    listener.create_subscription(PoseWithCovarianceStamped, interfaces.OBJECT_POSE_TOPIC,
                                 poses.append, OUTPUT_QOS)
    listener.create_subscription(DiagnosticArray, interfaces.DIAGNOSTICS_TOPIC,
                                 diagnostics.append, OUTPUT_QOS)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 5.0
        while not (node.count_subscribers(interfaces.OBJECT_POSE_TOPIC)
                   and node.count_subscribers(interfaces.DIAGNOSTICS_TOPIC)) and \
                time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        node.start()
        executor.spin_until_future_complete(node.done, timeout_sec=120.0)
        assert node.done.done() and node.done.result() == 0
        deadline = time.monotonic() + 5.0
        while (len(poses) < 6 or not diagnostics or diagnostics[-1].status[0].message != 'done') \
                and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        listener.destroy_node()
        node.destroy_node()
    assert out.is_dir()
    assert len(poses) == 6
    assert all(p.header.frame_id == interfaces.CAMERA_FRAME for p in poses)
    messages = [s.message for d in diagnostics for s in d.status]
    assert messages and messages[-1] == 'done'
    assert any(m.startswith('iteration') for m in messages)


def test_main_without_paths_exits_nonzero(capfd):
    assert main(['refiner_node', '--ros-args', '-p', 'iterations:=2']) == 1
    assert "expected a path, got ''" in capfd.readouterr().err


def test_main_runs_a_job_from_a_parameters_file(sequence, tmp_path):
    params = tmp_path / 'refine.yaml'
    params.write_text(yaml.safe_dump({'/**': {'ros__parameters': {
        **SMALL, 'bag': str(sequence / 'bag'), 'object_mesh': str(sequence / 'object.ply'),
        'out_bag': str(tmp_path / 'out'), 'publish_results': False}}}))
    assert main(['refiner_node', '--ros-args', '--params-file', str(params)]) == 0
    assert (tmp_path / 'out').is_dir()
    # the output exists now: a second run refuses to replace it
    assert main(['refiner_node', '--ros-args', '--params-file', str(params)]) == 1


def test_launch_file_sets_only_declared_parameters():
    import ast
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / 'launch' / 'refine.launch.py'
    tree = ast.parse(path.read_text())
    (assign,) = [n for n in tree.body if isinstance(n, ast.Assign)
                 and any(getattr(t, 'id', '') == 'PARAMETERS' for t in n.targets)]
    names = {elt.elts[0].value for elt in assign.value.elts}
    declared = {o.name for o in REFINE_SCHEMA.node_options}
    assert names <= declared, names - declared
    assert {'bag', 'object_mesh', 'out_bag'} <= names
    assert "executable='refiner_node'" in path.read_text()
