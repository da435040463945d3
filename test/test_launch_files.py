"""The launch files and the RViz configuration.

Two kinds of checks:
- without ``launch`` (always, CI included): the launch files are valid Python that only start
  executables this package installs, set only parameters the nodes declare, forward only
  arguments tracker.launch.py declares, offer the same choices as the parameters, and name
  files that exist; the RViz file is YAML that shows the topics and frames of INTERFACES.md.
  These read the files' syntax trees (``ast``), so they need neither launch nor a ROS install.
- with ``launch`` / ``launch_ros`` importable (a ROS 2 workstation, or the local set-up of
  PLATFORM.md): each file's ``generate_launch_description()`` runs and its arguments are as
  documented. Elsewhere these skip: launch is not installable from the package index here.
"""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
import yaml

from handypriors_ros import interfaces

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_DIR = ROOT / 'launch'
LAUNCH_FILES = sorted(LAUNCH_DIR.glob('*.launch.py'))
TRACKER_LAUNCH = LAUNCH_DIR / 'tracker.launch.py'
REPLAY_LAUNCH = LAUNCH_DIR / 'replay.launch.py'
RVIZ = ROOT / 'config' / 'handypriors.rviz'
PACKAGE = 'handypriors_ros'
#: Parameters every rclpy node has (not declared by the node's code).
BUILTIN_PARAMETERS = {'use_sim_time'}


def _launch_missing() -> str | None:
    """Why launch cannot be used here, or None when it can."""
    try:
        # 'launch.actions', not 'launch': the checkout's launch/ folder imports as a namespace
        # package when the real one is missing.
        importlib.import_module('launch.actions')
        importlib.import_module('launch_ros.actions')
    except ImportError as exc:
        return (f'launch is not installable from the package index here (PLATFORM.md): '
                f'launch / launch_ros are not importable ({exc})')
    return None


needs_launch = pytest.mark.skipif(_launch_missing() is not None,
                                  reason=str(_launch_missing()))


# --------------------------------------------------------------------------------------------
# Reading the launch files' syntax trees
# --------------------------------------------------------------------------------------------
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _const(node: ast.expr | None):
    return node.value if isinstance(node, ast.Constant) else None


def _nodes(path: Path) -> list[tuple[ast.Call, ast.AST]]:
    """``(Node(...) call, the innermost function (or the module) that holds it)``."""
    found = []

    def visit(node: ast.AST, scope: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Call) and _call_name(child) == 'Node':
                found.append((child, scope))
            visit(child, child if isinstance(child, ast.FunctionDef) else scope)

    tree = _tree(path)
    visit(tree, tree)
    return found


def _node_parameter_names(call: ast.Call, scope: ast.AST) -> set[str]:
    """Names set by a Node's ``parameters=[...]``: keys of dict literals in it, and of the
    dicts it names that its function builds (``d = {...}``; ``d['k'] = ...``)."""
    params = _keyword(call, 'parameters')
    assert params is not None, 'Node without parameters'
    names, variables = set(), set()
    for n in ast.walk(params):
        if isinstance(n, ast.Dict):
            names |= {_const(k) for k in n.keys if isinstance(_const(k), str)}
        elif isinstance(n, ast.Name):
            variables.add(n.id)
    for n in ast.walk(scope):
        if isinstance(n, ast.Assign):
            for target in n.targets:
                if isinstance(target, ast.Name) and target.id in variables and \
                        isinstance(n.value, ast.Dict):
                    names |= {_const(k) for k in n.value.keys if isinstance(_const(k), str)}
                if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) \
                        and target.value.id in variables and \
                        isinstance(_const(target.slice), str):
                    names.add(_const(target.slice))
    return names


def _declared_arguments(path: Path) -> dict[str, ast.Call]:
    """name -> DeclareLaunchArgument call."""
    return {_const(n.args[0]): n for n in ast.walk(_tree(path))
            if isinstance(n, ast.Call) and _call_name(n) == 'DeclareLaunchArgument'}


def _choices(call: ast.Call) -> tuple[str, ...] | None:
    node = _keyword(call, 'choices')
    return None if node is None else tuple(ast.literal_eval(node))


def _our_executables(path: Path) -> set[str]:
    return {_const(_keyword(c, 'executable')) for c, _ in _nodes(path)
            if _const(_keyword(c, 'package')) == PACKAGE or
            (isinstance(_keyword(c, 'package'), ast.Name) and _keyword(c, 'package').id ==
             'PACKAGE')}


def _node_by_executable(path: Path, executable: str) -> tuple[ast.Call, ast.AST]:
    matches = [(c, s) for c, s in _nodes(path) if _const(_keyword(c, 'executable')) == executable]
    assert len(matches) == 1, f'{path.name}: expected one {executable} node, found {len(matches)}'
    return matches[0]


# --------------------------------------------------------------------------------------------
# Checks without launch
# --------------------------------------------------------------------------------------------
def test_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} >= {'tracker.launch.py', 'replay.launch.py'}


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_is_python_with_generate_launch_description(path):
    tree = _tree(path)  # raises SyntaxError on invalid Python
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert 'generate_launch_description' in functions
    assert ast.get_docstring(tree), f'{path.name}: a module docstring says what it launches'


def _installed_executables() -> set[str]:
    """Console scripts of setup.py that CMakeLists.txt also installs (under lib/<package>)."""
    setup = _tree(ROOT / 'setup.py')
    scripts = set()
    for n in ast.walk(setup):
        if isinstance(n, ast.Dict):
            for key, value in zip(n.keys, n.values):
                if _const(key) == 'console_scripts':
                    scripts |= {s.split('=')[0].strip() for s in ast.literal_eval(value)}
    cmake = (ROOT / 'CMakeLists.txt').read_text()
    programs = set(re.findall(r'scripts/(\w+)', cmake))
    return {s for s in scripts & programs if (ROOT / 'scripts' / s).is_file()}


def test_launch_files_start_only_installed_executables():
    installed = _installed_executables()
    assert {'tracker_node', 'realsense_node'} <= installed
    for path in LAUNCH_FILES:
        used = _our_executables(path)
        assert used <= installed, f'{path.name} starts {used - installed}, not installed'
    assert _our_executables(TRACKER_LAUNCH) == {'tracker_node', 'realsense_node',
                                                'tracker_with_camera'}


def test_tracker_parameters_are_declared_by_tracker_node():
    try:
        from handypriors_ros.ros.parameters import all_parameter_specs
    except ImportError as exc:
        pytest.skip(f'handypriors_ros.ros.parameters does not import here ({exc}): the tracker '
                    f"node's parameter names cannot be listed")
    declared = {s.name for s in all_parameter_specs()} | BUILTIN_PARAMETERS
    used = _node_parameter_names(*_node_by_executable(TRACKER_LAUNCH, 'tracker_node'))
    # The stable names of INTERFACES.md that the launch file sets.
    assert {'object_mesh', 'object_scale', 'hand_urdf', 'joint_prefix', 'device', 'renderer',
            'mode', 'initial_pose'} <= used
    assert used <= declared, f'tracker.launch.py sets undeclared parameters {used - declared}'


def test_camera_parameters_are_declared_by_realsense_node():
    try:
        from handypriors_ros.ros.realsense_node import PARAMETERS
    except ImportError as exc:  # pyrealsense2 needs libusb (PLATFORM.md)
        pytest.skip(f'handypriors_ros.ros.realsense_node does not import here ({exc})')
    used = _node_parameter_names(*_node_by_executable(TRACKER_LAUNCH, 'realsense_node'))
    declared = set(PARAMETERS) | BUILTIN_PARAMETERS
    assert used <= declared, f'tracker.launch.py sets undeclared parameters {used - declared}'


def test_argument_choices_match_the_parameters():
    try:
        from handypriors_ros.ros.parameters import DEVICES, MODES, RENDERERS
        from handypriors_ros.ros.qos import RELIABILITY_CHOICES
    except ImportError as exc:
        pytest.skip(f'handypriors_ros.ros.parameters does not import here ({exc})')
    for path in LAUNCH_FILES:
        arguments = _declared_arguments(path)
        for name, choices in (('device', DEVICES), ('renderer', RENDERERS), ('mode', MODES),
                              ('image_qos_reliability', RELIABILITY_CHOICES)):
            # image_qos_reliability offers no choices: '' leaves the params_file's value and the
            # node checks the rest (its own choices, which may grow).
            if name in arguments and _choices(arguments[name]) is not None:
                assert set(_choices(arguments[name])) == set(choices), f'{path.name}: {name}'
    tracker = _declared_arguments(TRACKER_LAUNCH)
    hand_sides = _choices(tracker['hand_side'])
    for side in hand_sides:  # the hand_urdf default is urdf/allegro_hand_<side>.urdf
        assert (ROOT / 'urdf' / f'allegro_hand_{side}.urdf').is_file()


def test_required_arguments_have_no_default():
    for path, required in ((TRACKER_LAUNCH, {'object_mesh'}),
                           (REPLAY_LAUNCH, {'object_mesh', 'bag'})):
        arguments = _declared_arguments(path)
        without_default = {name for name, call in arguments.items()
                           if _keyword(call, 'default_value') is None}
        assert without_default == required, path.name
        for name, call in arguments.items():
            assert _const(_keyword(call, 'description')) or \
                isinstance(_keyword(call, 'description'), ast.JoinedStr), \
                f'{path.name}: argument {name} has no description'


def test_replay_forwards_only_arguments_tracker_declares():
    tree = _tree(REPLAY_LAUNCH)
    forwarded = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                     and any(getattr(t, 'id', '') == 'FORWARDED' for t in n.targets))
    replay_args = set(_declared_arguments(REPLAY_LAUNCH))
    tracker_args = set(_declared_arguments(TRACKER_LAUNCH))
    assert set(forwarded) <= replay_args
    assert set(forwarded) | {'mode', 'use_sim_time', 'use_camera'} <= tracker_args
    text = REPLAY_LAUNCH.read_text()
    assert "'bag', 'play'" in text and "'--clock'" in text


def _default(call: ast.Call):
    return _const(_keyword(call, 'default_value'))


def test_defaults_fit_beside_the_robots_drivers():
    for path in (TRACKER_LAUNCH, REPLAY_LAUNCH):
        arguments = _declared_arguments(path)
        # The Allegro bringup runs robot_state_publisher already.
        assert _default(arguments['use_robot_state_publisher']) == 'false', path.name
        assert _default(arguments['namespace']) == 'handypriors', path.name
    tracker = _declared_arguments(TRACKER_LAUNCH)
    # realsense2_camera gives camera_color_optical_frame its parent: calibrate its root.
    assert _default(tracker['calibration_frame']) == 'camera_link'
    assert _default(tracker['mask_topic']) is None  # interfaces.MASK_TOPIC (a Name)


def test_tracker_names_are_relative_and_remapped_by_arguments():
    tree = _tree(TRACKER_LAUNCH)
    remapped = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and any(getattr(t, 'id', '') == 'REMAPPED' for t in n.targets))
    arguments = _declared_arguments(TRACKER_LAUNCH)
    names = {name for name, _ in remapped}
    assert names == {'initial_pose', 'object_pose', 'track', 'markers', 'reset'}
    for name, argument in remapped:
        assert not name.startswith('/')
        # The default maps the name onto itself: relative, so it follows the namespace.
        assert _default(arguments[argument]) == name, argument
    call, _ = _node_by_executable(TRACKER_LAUNCH, 'tracker_node')
    assert _keyword(call, 'namespace') is not None and _keyword(call, 'remappings') is not None
    for path in LAUNCH_FILES:  # nothing spells the tracker's absolute names
        assert "'/handypriors" not in path.read_text(), path.name


def test_replay_shuts_down_when_playback_exits():
    text = REPLAY_LAUNCH.read_text()
    assert 'OnProcessExit(target_action=play' in text
    assert 'Shutdown(' in text and 'end_delay' in text


def test_package_installs_the_launch_and_config_files():
    cmake = (ROOT / 'CMakeLists.txt').read_text()
    assert re.search(r'foreach\(_dir [^)]*\blaunch\b[^)]*\bconfig\b', cmake)
    assert "'launch'" in (ROOT / 'setup.py').read_text()
    assert (ROOT / 'config' / 'tracker.yaml').is_file()
    assert RVIZ.is_file()


# --------------------------------------------------------------------------------------------
# The RViz configuration
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def rviz():
    return yaml.safe_load(RVIZ.read_text())


def _displays(rviz) -> dict[str, dict]:
    """class (without the plugin prefix) -> display (the first of its class)."""
    displays = {}
    for d in rviz['Visualization Manager']['Displays']:
        displays.setdefault(d['Class'].split('/')[-1], d)
    return displays


def test_rviz_fixed_frame_is_the_camera_optical_frame(rviz):
    assert rviz['Visualization Manager']['Global Options']['Fixed Frame'] == \
        interfaces.CAMERA_FRAME


def test_rviz_shows_the_interfaces_topics(rviz):
    displays = _displays(rviz)
    expected = {'Image': interfaces.IMAGE_TOPIC, 'MarkerArray': interfaces.MARKERS_TOPIC,
                'PoseWithCovariance': interfaces.OBJECT_POSE_TOPIC}
    for cls, topic in expected.items():
        assert displays[cls]['Topic']['Value'] == topic, cls
        assert displays[cls]['Enabled'] is True
    robot = displays['RobotModel']
    assert robot['Description Source'] == 'Topic'
    assert robot['Description Topic']['Value'] == '/robot_description'
    # robot_state_publisher latches the description: the display must ask for it.
    assert robot['Description Topic']['Durability Policy'] == 'Transient Local'
    # The tracker publishes reliable (qos.OUTPUT_QOS); RViz subscribes reliable too.
    for cls in ('MarkerArray', 'PoseWithCovariance'):
        assert displays[cls]['Topic']['Reliability Policy'] == 'Reliable', cls


def test_rviz_images_are_best_effort_and_show_the_tracking_overlay(rviz):
    """A best-effort subscription matches reliable and best-effort cameras alike (a reliable
    one gets nothing from a best-effort camera); the second image is the tracker's overlay."""
    images = [d for d in rviz['Visualization Manager']['Displays']
              if d['Class'].endswith('/Image')]
    assert [d['Topic']['Value'] for d in images] == \
        [interfaces.IMAGE_TOPIC, '/handypriors/debug_image']
    for display in images:
        assert display['Topic']['Reliability Policy'] == 'Best Effort'
        assert display['Enabled'] is True


def test_rviz_tf_display_shows_the_frames(rviz):
    frames = _displays(rviz)['TF']['Frames']
    for frame in (interfaces.WORLD_FRAME, interfaces.CAMERA_FRAME, interfaces.HAND_ROOT_FRAME,
                  interfaces.OBJECT_FRAME):
        assert frames[frame]['Value'] is True, frame


# --------------------------------------------------------------------------------------------
# With launch: generate the descriptions
# --------------------------------------------------------------------------------------------
def _load(path: Path):
    from launch.launch_description_sources import load_python_launch_file_as_module
    return load_python_launch_file_as_module(str(path))


@needs_launch
@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_generate_launch_description(path):
    from launch import LaunchDescription, LaunchIntrospector
    description = _load(path).generate_launch_description()
    assert isinstance(description, LaunchDescription)
    names = {a.name for a in description.get_launch_arguments()}
    assert names == set(_declared_arguments(path))
    assert 'object_mesh' in names
    LaunchIntrospector().format_launch_description(description)  # describable (--show-args)


@needs_launch
def test_tracker_launch_arguments_of_interfaces():
    description = _load(TRACKER_LAUNCH).generate_launch_description()
    arguments = {a.name: a for a in description.get_launch_arguments()}
    assert {'object_mesh', 'object_scale', 'hand_side', 'device', 'renderer', 'mode',
            'initial_pose', 'image_topic', 'use_camera', 'camera_xyz', 'camera_rpy', 'rviz',
            'use_sim_time'} <= set(arguments)
    assert arguments['hand_side'].choices == ['right', 'left']


@needs_launch
def test_tracker_launch_rejects_a_malformed_initial_pose():
    from launch import LaunchContext

    from handypriors_ros.core.errors import InputError
    module = _load(TRACKER_LAUNCH)
    assert module.parse_numbers('initial_pose', '[0, 0.1, 0.5, 0, 0, 0, 1]', 7) == \
        [0.0, 0.1, 0.5, 0.0, 0.0, 0.0, 1.0]
    assert module.parse_numbers('camera_xyz', '0.6 0 0.4', 3) == [0.6, 0.0, 0.4]
    with pytest.raises(InputError, match=r'initial_pose: expected 7 numbers.*got .1 2 3'):
        module.parse_numbers('initial_pose', '1 2 3', 7)
    with pytest.raises(InputError, match='camera_xyz'):
        module.parse_numbers('camera_xyz', 'x y z', 3)
    with pytest.raises(InputError, match='camera_rpy'):
        module.parse_numbers('camera_rpy', '0 0 nan', 3)
    context = LaunchContext()
    context.launch_configurations.update(
        {'initial_pose': '0 0 0.5', 'object_mesh': 'm.ply', 'log_level': 'info'})
    with pytest.raises(InputError, match='initial_pose'):
        module._tracker(context)


@needs_launch
def test_static_transforms_only_when_calibration_is_given():
    from launch import LaunchContext
    module = _load(TRACKER_LAUNCH)
    context = LaunchContext()
    context.launch_configurations.update(
        {'world_frame': 'world', 'camera_frame': interfaces.CAMERA_FRAME, 'joint_prefix': 'ah_',
         'camera_xyz': '', 'camera_rpy': '0 0 0', 'hand_xyz': '', 'hand_rpy': '0 0 0',
         'use_sim_time': 'false', 'calibration_frame': 'camera_link', 'use_camera': 'false'})
    assert module._static_transforms(context) == []

    context.launch_configurations.update({'camera_xyz': '0.6 0 0.4', 'camera_rpy': '-2 0 -1.5'})
    (node,) = module._static_transforms(context)
    assert node.node_executable == 'static_transform_publisher'
    # Beside realsense2_camera: the calibration goes to camera_link, not the optical frame.
    assert _static_frames(node) == ('world', 'camera_link')
    context.launch_configurations.update({'hand_xyz': '0 0 0.1'})
    assert [_static_frames(n) for n in module._static_transforms(context)] == \
        [('world', 'camera_link'), ('world', 'ah_base_link')]
    # With realsense_node (no TF of its own): camera_link -> optical frame is added.
    context.launch_configurations.update({'use_camera': 'true', 'hand_xyz': ''})
    assert [_static_frames(n) for n in module._static_transforms(context)] == \
        [('world', 'camera_link'), ('camera_link', interfaces.CAMERA_FRAME)]
    # The calibration named as the optical frame itself: one transform.
    context.launch_configurations.update({'calibration_frame': interfaces.CAMERA_FRAME})
    assert [_static_frames(n) for n in module._static_transforms(context)] == \
        [('world', interfaces.CAMERA_FRAME)]


def _static_frames(node) -> tuple[str, str]:
    """(parent, child) of a static_transform_publisher Node (its literal arguments)."""
    args = [a if isinstance(a, str) else ''.join(getattr(s, 'text', '?') for s in a)
            for a in node._Node__arguments]
    return args[args.index('--frame-id') + 1], args[args.index('--child-frame-id') + 1]


@needs_launch
def test_replay_playback_exit_ends_the_launch():
    from launch import LaunchContext
    from launch.actions import LogInfo, TimerAction
    from launch.events.process import ProcessExited
    module = _load(REPLAY_LAUNCH)
    context = LaunchContext()
    context.launch_configurations['end_delay'] = '2.5'

    def exited(code):
        return ProcessExited(returncode=code, action=None, name='bag_play-1',
                             cmd=['ros2', 'bag', 'play'], cwd=None, env=None, pid=1)

    log, timer = module.playback_ended(exited(0), context)
    assert isinstance(log, LogInfo) and isinstance(timer, TimerAction)
    assert float(timer.period[0].text if isinstance(timer.period, list) else timer.period) \
        == 2.5
    with pytest.raises(module.PlaybackFailed, match=r'bag_play-1.*exit status 3'):
        module.playback_ended(exited(3), context)


@needs_launch
def test_optical_rotation_is_rep103():
    """camera_link (x forward, y left, z up) -> optical frame (z forward, x right, y down), as
    static_transform_publisher composes roll, pitch, yaw (fixed axes x, y, z)."""
    from scipy.spatial.transform import Rotation
    R = Rotation.from_euler('xyz', _load(TRACKER_LAUNCH).OPTICAL_RPY).as_matrix()
    # Columns: the optical axes in camera_link.
    np_x, np_y, np_z = R[:, 0], R[:, 1], R[:, 2]
    assert np_z.round(12).tolist() == [1.0, 0.0, 0.0]  # forward
    assert np_x.round(12).tolist() == [0.0, -1.0, 0.0]  # right
    assert np_y.round(12).tolist() == [0.0, 0.0, -1.0]  # down
