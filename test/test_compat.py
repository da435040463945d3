"""handypriors_ros.ros.compat: the shims for Humble, Jazzy and Kilted.

Humble has no wheels, so its side of each difference is pinned by API presence: the shim must
take the fallback when the API is missing (as in Humble; the facts are in compat's docstring),
and the fallback must behave as the API it replaces, checked against the real API of the
distribution these tests run on (Kilted in .venv, Jazzy in .venv-jazzy).
"""
import importlib
from pathlib import Path

import pytest

from handypriors_ros.ros import compat


# --------------------------------------------------------------------------------------------
# Discovery variables
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('distro', ['humble', 'Humble', 'iron'])
def test_discovery_on_humble_is_localhost_only(distro):
    # Humble's rmw reads ROS_LOCALHOST_ONLY; it ignores ROS_AUTOMATIC_DISCOVERY_RANGE.
    assert compat.isolated_discovery_env(distro) == {'ROS_LOCALHOST_ONLY': '1'}


@pytest.mark.parametrize('distro', ['jazzy', 'kilted', 'rolling', ''])
def test_discovery_from_jazzy_on_is_the_range(distro):
    assert compat.isolated_discovery_env(distro) == {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}


def test_discovery_follows_ros_distro(monkeypatch):
    monkeypatch.setenv('ROS_DISTRO', 'humble')
    assert compat.isolated_discovery_env() == {'ROS_LOCALHOST_ONLY': '1'}
    monkeypatch.delenv('ROS_DISTRO')
    assert compat.ros_distro() == ''
    assert 'ROS_AUTOMATIC_DISCOVERY_RANGE' in compat.isolated_discovery_env()


def test_test_runs_are_isolated_with_the_right_variable():
    # conftest.py sets what this distribution reads (these venvs: Kilted / Jazzy).
    import os
    for name, value in compat.isolated_discovery_env().items():
        assert os.environ.get(name) == value, name


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------
@pytest.fixture
def rclpy_context():
    rclpy = pytest.importorskip('rclpy', reason='rclpy is not importable here')
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


def _node(context, name, cls=None):
    from rclpy.node import Node
    return (cls or Node)(name, context=context)


def _spin(context, node, times=5):
    from rclpy.executors import SingleThreadedExecutor
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    for _ in range(times):
        executor.spin_once(timeout_sec=0.05)
    executor.remove_node(node)


def test_parameter_type_ids_match_rcl_interfaces():
    pytest.importorskip('rclpy', reason='rclpy is not importable here')
    from rcl_interfaces.msg import ParameterType
    from rclpy.parameter import Parameter
    assert compat.parameter_type_id(Parameter.Type.DOUBLE_ARRAY) == \
        ParameterType.PARAMETER_DOUBLE_ARRAY
    assert compat.parameter_type_id(Parameter.Type.STRING) == ParameterType.PARAMETER_STRING
    assert compat.parameter_type_id(ParameterType.PARAMETER_BOOL) == ParameterType.PARAMETER_BOOL
    assert compat.same_parameter_type(ParameterType.PARAMETER_INTEGER, Parameter.Type.INTEGER)
    assert not compat.same_parameter_type(ParameterType.PARAMETER_INTEGER, Parameter.Type.DOUBLE)


def test_descriptor_type_compares_on_every_distribution(rclpy_context):
    """Jazzy's (and Humble's) Parameter.Type is a plain Enum: ``int == member`` is False there;
    Kilted's is an IntEnum. same_parameter_type holds on both."""
    from rclpy.parameter import Parameter
    node = _node(rclpy_context, 'compat_types')
    try:
        node.declare_parameter('values', Parameter.Type.DOUBLE_ARRAY)
        kind = node.describe_parameter('values').type
        assert compat.same_parameter_type(kind, Parameter.Type.DOUBLE_ARRAY)
        plain_enum = not issubclass(Parameter.Type, int)
        assert (kind == Parameter.Type.DOUBLE_ARRAY) is (not plain_enum)
    finally:
        node.destroy_node()


class _HumbleLikeNode:
    """Mixin hiding add_post_set_parameters_callback, as Humble's rclpy lacks it."""
    add_post_set_parameters_callback = None


def _humble_like_node(context, name):
    from rclpy.node import Node
    cls = type('HumbleLikeNode', (_HumbleLikeNode, Node), {})
    return _node(context, name, cls)


def test_post_set_callback_uses_the_api_where_it_exists(rclpy_context):
    node = _node(rclpy_context, 'compat_native')
    try:
        assert compat.has_post_set_parameters_callback(node)  # Jazzy and Kilted
        seen = []
        node.declare_parameter('gain', 1.0)
        compat.add_post_set_parameters_callback(
            node, lambda params: seen.append((params[0].name, node.get_parameter('gain').value)))
        from rclpy.parameter import Parameter
        node.set_parameters([Parameter('gain', value=2.5)])
        assert seen == [('gain', 2.5)]
    finally:
        node.destroy_node()


def test_post_set_fallback_on_humble_runs_after_the_values_are_set(rclpy_context):
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.parameter import Parameter
    node = _humble_like_node(rclpy_context, 'compat_fallback')
    try:
        assert not compat.has_post_set_parameters_callback(node)
        node.declare_parameter('gain', 1.0)
        node.declare_parameter('name', 'a')
        seen = []
        compat.add_post_set_parameters_callback(
            node, lambda params: seen.append(
                sorted((p.name, node.get_parameter(p.name).value) for p in params)))
        # A validator that rejects negative gains (registered after: Humble calls it first).
        node.add_on_set_parameters_callback(lambda params: SetParametersResult(
            successful=all(p.name != 'gain' or p.value >= 0 for p in params),
            reason='gain must be >= 0'))
        results = node.set_parameters([Parameter('gain', value=2.5)])
        assert results[0].successful
        assert seen == []  # not yet: after the values are set, when the executor runs
        _spin(rclpy_context, node)
        assert seen == [[('gain', 2.5)]]
        # Rejected: no call, the value unchanged.
        assert not node.set_parameters([Parameter('gain', value=-1.0)])[0].successful
        _spin(rclpy_context, node)
        assert seen == [[('gain', 2.5)]] and node.get_parameter('gain').value == 2.5
        # Atomically set together: one call with both.
        node.set_parameters_atomically([Parameter('gain', value=3.0),
                                        Parameter('name', value='b')])
        _spin(rclpy_context, node)
        assert seen[-1] == [('gain', 3.0), ('name', 'b')]
        assert len(seen) == 2
    finally:
        node.destroy_node()


# --------------------------------------------------------------------------------------------
# launch's FileContent
# --------------------------------------------------------------------------------------------
def _launch_missing():
    try:
        importlib.import_module('launch.substitutions')
        importlib.import_module('launch.launch_context')
    except ImportError as exc:
        return f'launch is not importable here ({exc}): ../shared/wheels/ros2-launch is absent'
    return None


needs_launch = pytest.mark.skipif(_launch_missing() is not None, reason=str(_launch_missing()))


@needs_launch
def test_file_content_uses_launch_where_it_has_it(tmp_path):
    import launch.substitutions
    from launch import LaunchContext
    assert hasattr(launch.substitutions, 'FileContent')  # launch 3.x (Jazzy, Kilted)
    path = tmp_path / 'hand.urdf'
    path.write_text('<robot name="r"/>\n')
    substitution = compat.file_content(str(path))
    assert isinstance(substitution, launch.substitutions.FileContent)
    assert substitution.perform(LaunchContext()) == path.read_text()


@needs_launch
def test_file_content_fallback_on_humble_reads_the_same(tmp_path, monkeypatch):
    import launch.substitutions
    from launch import LaunchContext
    from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
    native = launch.substitutions.FileContent
    path = tmp_path / 'hand.urdf'
    path.write_text('<robot name="r">\n  <link name="a"/>\n</robot>\n')
    context = LaunchContext()
    context.launch_configurations['folder'] = str(tmp_path)
    where = PathJoinSubstitution([LaunchConfiguration('folder'), 'hand.urdf'])
    expected = native(where).perform(context)
    monkeypatch.delattr(launch.substitutions, 'FileContent')  # Humble's launch 1.0 has none
    fallback = compat.file_content(where)
    assert not isinstance(fallback, native)
    assert fallback.perform(context) == expected == path.read_text()
    assert 'hand.urdf' in fallback.describe()
    missing = compat.file_content(str(tmp_path / 'missing.urdf'))
    with pytest.raises(RuntimeError, match=r'cannot read .*missing\.urdf'):
        missing.perform(context)


def test_launch_files_use_the_shim_not_file_content():
    root = Path(__file__).resolve().parents[1]
    for path in (root / 'launch').glob('*.launch.py'):
        text = path.read_text()
        assert 'import FileContent' not in text and 'FileContent(' not in text, path.name


def test_no_node_calls_the_post_set_callback_api_directly():
    """Humble's rclpy has no ``Node.add_post_set_parameters_callback``: every node goes through
    :func:`compat.add_post_set_parameters_callback` (a direct call crashes at start-up there)."""
    import re
    from pathlib import Path

    import handypriors_ros

    root = Path(handypriors_ros.__file__).parent
    direct = re.compile(r'(?<!compat)\.add_post_set_parameters_callback\(')
    offenders = [f'{p.relative_to(root)}:{i}' for p in root.rglob('*.py') if p.name != 'compat.py'
                 for i, line in enumerate(p.read_text().splitlines(), 1) if direct.search(line)]
    assert not offenders, offenders
