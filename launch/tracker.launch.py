"""Track the object held by the Allegro hand from a live camera.

Made to run beside the robot's own drivers (the Allegro bringup, realsense2_camera):

- ``tracker_node`` in namespace ``namespace`` (default ``handypriors``): its outputs and
  service are relative names (``object_pose``, ``track``, ``markers``, ``initial_pose``,
  ``reset``), so with the defaults they are ``/handypriors/object_pose`` etc., and a second
  tracker (another object, another hand) runs beside the first with ``namespace:=other``.
  ``*_topic`` arguments remap each of them (a relative name stays in the namespace, an
  absolute one does not); the inputs (image, camera_info, joint states, mask) are absolute
  driver names, set by their arguments. Parameters come from ``params_file``
  (config/tracker.yaml), the launch arguments on top.
- ``realsense_node`` (``use_camera:=true``, the default): the colour stream on
  ``/camera/camera/color/{image_raw,camera_info}`` (realsense2_camera 4.x names). Set
  ``use_camera:=false`` when realsense2_camera (or another driver) already runs: then point
  ``image_topic`` and ``camera_info_topic`` at its topics.
- ``robot_state_publisher`` only with ``use_robot_state_publisher:=true`` (default false: the
  Allegro bringup runs one already, and two would publish the same TF).
- static TFs from calibration, each only when its ``*_xyz`` argument is given:
  ``world_frame -> calibration_frame`` (``camera_xyz``, ``camera_rpy``; ``calibration_frame``
  defaults to ``camera_link``, the root of realsense2_camera's TF tree, whose
  ``camera_link -> camera_color_frame -> camera_color_optical_frame`` the driver publishes; a
  frame that already has a parent must not get a second one) and
  ``world_frame -> <joint_prefix>base_link`` (``hand_xyz``, ``hand_rpy``; for a hand that does
  not move; on an arm, the arm's TF gives it). realsense_node publishes no TF: with
  ``use_camera:=true`` and a calibration, ``calibration_frame -> camera_frame`` is published
  too, as the optical rotation (roll -pi/2, yaw -pi/2) without offset, i.e. the calibration is
  taken as the pose of the colour camera itself.
- RViz with config/handypriors.rviz (``rviz:=true``).
- Fast DDS: every process started here reads config/fastdds_large_images.xml
  (``dds_profile:=auto``, unless a profile file is set already): images over Fast DDS's
  default 512 KB shared-memory segment otherwise arrive 12-13 ms late. A camera driver started
  elsewhere needs the same (README, "DDS and large images").

Examples::

    ros2 launch handypriors_ros tracker.launch.py object_mesh:=/data/mug.ply \\
        initial_pose:="0.0 0.02 0.45 0 0 0 1" camera_xyz:="0.6 0 0.4" \\
        camera_rpy:="-2.36 0 -1.57" rviz:=true
    ros2 launch handypriors_ros tracker.launch.py --show-args
"""
import math

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from handypriors_ros import interfaces
from handypriors_ros.core.errors import InputError
from handypriors_ros.ros import dds
from handypriors_ros.ros.compat import file_content

PACKAGE = 'handypriors_ros'

#: The tracker's relative names (topics and the reset service) -> launch argument remapping each.
REMAPPED = (('initial_pose', 'initial_pose_topic'), ('object_pose', 'object_pose_topic'),
            ('track', 'track_topic'), ('markers', 'markers_topic'), ('reset', 'reset_service'))

#: Rotation (roll, pitch, yaw) [rad] of an optical frame (z forward, x right, y down) in its
#: camera's body frame (x forward, y left, z up): REP-103.
OPTICAL_RPY = (-math.pi / 2, 0.0, -math.pi / 2)


def _arguments() -> list[DeclareLaunchArgument]:
    share = FindPackageShare(PACKAGE)
    return [
        # the object and the hand
        DeclareLaunchArgument(
            'object_mesh', description='mesh file of the tracked object (required)'),
        DeclareLaunchArgument(
            'object_scale', default_value='1.0',
            description="factor from the mesh file's units to metres (0.001 for millimetres)"),
        DeclareLaunchArgument(
            'hand_side', default_value='right', choices=['right', 'left'],
            description='which Allegro hand: picks urdf/allegro_hand_<side>.urdf'),
        DeclareLaunchArgument(
            'hand_urdf',
            default_value=[PathJoinSubstitution([share, 'urdf', 'allegro_hand_']),
                           LaunchConfiguration('hand_side'), '.urdf'],
            description="the hand's URDF (default: the package's hand of hand_side)"),
        DeclareLaunchArgument(
            'joint_prefix', default_value=interfaces.JOINT_PREFIX,
            description="prefix of the hand's joint and link names (the URDF's)"),
        DeclareLaunchArgument(
            'initial_pose', default_value='',
            description="initial object pose 'x y z qx qy qz qw' in the camera optical frame "
                        f"[m]; empty = wait for {interfaces.INITIAL_POSE_TOPIC}"),
        # the tracker
        DeclareLaunchArgument(
            'namespace', default_value='handypriors',
            description="the tracker's namespace: its outputs and reset service are relative "
                        "names in it (two trackers need two namespaces)"),
        DeclareLaunchArgument(
            'initial_pose_topic', default_value='initial_pose',
            description='initial / re-initialisation pose input (relative: in the namespace)'),
        DeclareLaunchArgument(
            'object_pose_topic', default_value='object_pose',
            description='output: PoseWithCovarianceStamped (relative: in the namespace)'),
        DeclareLaunchArgument(
            'track_topic', default_value='track',
            description='output: handypriors_ros/TrackedObject (relative: in the namespace)'),
        DeclareLaunchArgument(
            'markers_topic', default_value='markers',
            description='output: RViz MarkerArray (relative: in the namespace)'),
        DeclareLaunchArgument(
            'reset_service', default_value='reset',
            description='std_srvs/Trigger re-initialisation service (relative: in the namespace)'),
        DeclareLaunchArgument(
            'params_file', default_value=PathJoinSubstitution([share, 'config', 'tracker.yaml']),
            description='tracker_node parameters (the arguments here override them)'),
        DeclareLaunchArgument(
            'device', default_value='auto', choices=['auto', 'cpu', 'cuda'],
            description='where the tracker computes'),
        DeclareLaunchArgument(
            'renderer', default_value='auto', choices=['auto', 'nvdiffrast', 'soft'],
            description="the tracker's rasterizer"),
        DeclareLaunchArgument(
            'mode', default_value='live', choices=['live', 'replay'],
            description='live: newest frame only (frames dropped and counted); replay: every '
                        'frame in stamp order'),
        DeclareLaunchArgument(
            'image_topic', default_value=interfaces.IMAGE_TOPIC,
            description='colour image topic (rgb8 or bgr8)'),
        DeclareLaunchArgument(
            'camera_info_topic', default_value=interfaces.CAMERA_INFO_TOPIC,
            description='camera_info of the images'),
        DeclareLaunchArgument(
            'joint_states_topic', default_value=interfaces.JOINT_STATES_TOPIC,
            description='hand joint states'),
        DeclareLaunchArgument(
            'mask_topic', default_value=interfaces.MASK_TOPIC,
            description="object mask (mono8, 255 = object) from an external segmenter; "
                        "'' = none"),
        DeclareLaunchArgument(
            'image_qos_reliability', default_value='',
            description="reliability of the tracker's image, camera_info and mask "
                        "subscriptions (the node's image_qos_reliability parameter); '' = the "
                        "params_file's value"),
        # the camera
        DeclareLaunchArgument(
            'use_camera', default_value='true', choices=['true', 'false'],
            description='start realsense_node'),
        DeclareLaunchArgument(
            'one_process', default_value='false', choices=['true', 'false'],
            description='with use_camera: run realsense_node and tracker_node in one process '
                        '(tracker_with_camera): images go to the tracker without DDS'),
        DeclareLaunchArgument(
            'serial_no', default_value='',
            description="RealSense serial number; '' = the first device found"),
        DeclareLaunchArgument(
            'camera_width', default_value='640', description='colour image width [px]'),
        DeclareLaunchArgument(
            'camera_height', default_value='480', description='colour image height [px]'),
        DeclareLaunchArgument(
            'camera_fps', default_value='30', description='colour frame rate [Hz]'),
        DeclareLaunchArgument(
            'playback_file', default_value='',
            description="RealSense recording (.db3 or .bag) to play instead of a device"),
        DeclareLaunchArgument(
            'playback_wait_for_subscribers', default_value='0',
            description='with playback_file: hold the playback until this many subscribers '
                        'listen to the image and camera_info (a short recording would end '
                        'before a viewer has connected)'),
        DeclareLaunchArgument(
            'camera_reliability', default_value='reliable', choices=['reliable', 'best_effort'],
            description="reliability of realsense_node's image and camera_info publishers"),
        # frames and calibration
        DeclareLaunchArgument(
            'world_frame', default_value=interfaces.WORLD_FRAME,
            description='parent frame of the calibration transforms'),
        DeclareLaunchArgument(
            'camera_frame', default_value=interfaces.CAMERA_FRAME,
            description="the camera's optical frame (the images' frame_id)"),
        DeclareLaunchArgument(
            'calibration_frame', default_value='camera_link',
            description='child frame of the camera calibration (camera_xyz): the root of the '
                        "camera driver's TF tree (realsense2_camera: camera_link); "
                        'camera_frame when no driver publishes camera TF'),
        DeclareLaunchArgument(
            'camera_xyz', default_value='',
            description="calibration: position 'x y z' [m] of calibration_frame in "
                        "world_frame; empty = no static transform (another node publishes it)"),
        DeclareLaunchArgument(
            'camera_rpy', default_value='0 0 0',
            description="calibration: orientation 'roll pitch yaw' [rad] (fixed axes x, y, "
                        "z) of calibration_frame in world_frame"),
        DeclareLaunchArgument(
            'hand_xyz', default_value='',
            description="position 'x y z' [m] of the hand root (<joint_prefix>base_link) in "
                        "world_frame for a hand that does not move; empty = from TF (the arm)"),
        DeclareLaunchArgument(
            'hand_rpy', default_value='0 0 0',
            description="orientation 'roll pitch yaw' [rad] of the hand root in world_frame"),
        # the rest
        DeclareLaunchArgument(
            'use_robot_state_publisher', default_value='false', choices=['true', 'false'],
            description="start robot_state_publisher (the hand's link TFs, /robot_description);"
                        ' false: the hand bringup runs one'),
        DeclareLaunchArgument(
            'rviz', default_value='false', choices=['true', 'false'], description='start RViz'),
        DeclareLaunchArgument(
            'rviz_config',
            default_value=PathJoinSubstitution([share, 'config', 'handypriors.rviz']),
            description='RViz configuration'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false', choices=['true', 'false'],
            description='every node on /clock (true when a bag is played with --clock)'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            choices=['debug', 'info', 'warn', 'error', 'fatal'],
            description='log level of the nodes'),
        DeclareLaunchArgument(
            'dds_profile', default_value='auto',
            description="Fast DDS XML profile of the launched processes (FASTDDS_ / "
                        "FASTRTPS_DEFAULT_PROFILES_FILE). auto: the package's "
                        'config/fastdds_large_images.xml (8 MiB shared-memory segment: a '
                        '640x480 rgb8 image arrives in ~3 ms instead of 12-13 ms) unless one is '
                        "set already or the rmw is not Fast DDS; 'none': leave the environment "
                        'as it is; or a file'),
    ]


def parse_numbers(name: str, text: str, count: int) -> list[float]:
    """``count`` finite numbers from ``text`` ('1 2 3', '1, 2, 3' or '[1, 2, 3]').

    Raises:
        InputError: naming the launch argument ``name``, what was expected and what came.
    """
    fields = text.replace('[', ' ').replace(']', ' ').replace(',', ' ').split()
    try:
        values = [float(f) for f in fields]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise InputError(f'launch argument {name}: expected {count} numbers separated by '
                         f'spaces, got {text!r}')
    return values


def _tracker(context, *_, **__) -> list[Node]:
    """tracker_node; an OpaqueFunction because ``initial_pose`` and ``image_qos_reliability``
    are set only when given (``initial_pose`` is a double array, and an empty string is not
    one; an empty reliability leaves the params_file's value)."""
    config = LaunchConfiguration
    overrides = {
        'object_mesh': ParameterValue(config('object_mesh'), value_type=str),
        'object_scale': ParameterValue(config('object_scale'), value_type=float),
        'hand_urdf': ParameterValue(config('hand_urdf'), value_type=str),
        'joint_prefix': ParameterValue(config('joint_prefix'), value_type=str),
        'device': ParameterValue(config('device'), value_type=str),
        'renderer': ParameterValue(config('renderer'), value_type=str),
        'mode': ParameterValue(config('mode'), value_type=str),
        'image_topic': ParameterValue(config('image_topic'), value_type=str),
        'camera_info_topic': ParameterValue(config('camera_info_topic'), value_type=str),
        'joint_states_topic': ParameterValue(config('joint_states_topic'), value_type=str),
        'mask_topic': ParameterValue(config('mask_topic'), value_type=str),
        'use_sim_time': ParameterValue(config('use_sim_time'), value_type=bool),
    }
    pose_text = config('initial_pose').perform(context).strip()
    if pose_text:
        overrides['initial_pose'] = parse_numbers('initial_pose', pose_text, 7)
    reliability = config('image_qos_reliability').perform(context).strip()
    if reliability:
        overrides['image_qos_reliability'] = reliability
    if (config('one_process').perform(context).strip().lower() == 'true'
            and config('use_camera').perform(context).strip().lower() == 'true'):
        return [_tracker_with_camera(context, overrides)]
    return [Node(
        package=PACKAGE, executable='tracker_node', name='tracker_node',
        namespace=config('namespace'), output='screen',
        parameters=[config('params_file'), overrides],
        remappings=[(name, config(argument)) for name, argument in REMAPPED],
        arguments=['--ros-args', '--log-level', config('log_level')])]


def _camera_parameters() -> dict:
    """realsense_node's parameters from the launch arguments."""
    config = LaunchConfiguration
    return {
        'serial_no': ParameterValue(config('serial_no'), value_type=str),
        'width': ParameterValue(config('camera_width'), value_type=int),
        'height': ParameterValue(config('camera_height'), value_type=int),
        'fps': ParameterValue(config('camera_fps'), value_type=int),
        'playback_file': ParameterValue(config('playback_file'), value_type=str),
        'playback_wait_for_subscribers': ParameterValue(config('playback_wait_for_subscribers'),
                                                        value_type=int),
        'frame_id': ParameterValue(config('camera_frame'), value_type=str),
        'image_qos_reliability': ParameterValue(config('camera_reliability'), value_type=str),
        'use_sim_time': ParameterValue(config('use_sim_time'), value_type=bool),
    }


def _performed(context, value):
    """A ParameterValue / substitution evaluated to a plain YAML value."""
    if isinstance(value, ParameterValue):
        text = ''.join(s.perform(context) for s in (
            value.value if isinstance(value.value, (list, tuple)) else [value.value]))
        kind = value.value_type
        if kind is bool:
            return text.strip().lower() == 'true'
        return kind(text) if kind in (int, float) else text
    return value


def _tracker_with_camera(context, tracker_overrides: dict) -> Node:
    """``one_process:=true``: the driver and the tracker in one process (``tracker_with_camera``,
    :mod:`handypriors_ros.ros.composed`). Each node gets its own parameters through a
    parameters file with a section per node (``/**/camera``, ``/**/tracker_node``: both
    declare ``image_qos_reliability``), and node-specific remaps put the tracker in
    ``namespace`` while the driver stays ``/camera/camera``."""
    import tempfile

    import yaml

    config = LaunchConfiguration
    sections = {
        '/**/tracker_node': {'ros__parameters': {
            k: _performed(context, v) for k, v in tracker_overrides.items()}},
        '/**/camera': {'ros__parameters': {
            k: _performed(context, v) for k, v in _camera_parameters().items()}},
    }
    with tempfile.NamedTemporaryFile('w', prefix='handypriors_one_process_', suffix='.yaml',
                                     delete=False) as f:
        yaml.safe_dump(sections, f)
    namespace = config('namespace').perform(context).strip().strip('/')
    remaps = [f'tracker_node:__ns:=/{namespace}'] if namespace else []
    remaps += [f'tracker_node:{name}:={config(argument).perform(context)}'
               for name, argument in REMAPPED]
    args = ['--ros-args']
    for remap in remaps:
        args += ['-r', remap]
    return Node(package=PACKAGE, executable='tracker_with_camera', output='screen',
                parameters=[config('params_file'), f.name],
                arguments=args + ['--log-level', config('log_level').perform(context)])


def _static_transform(name: str, parent: str, child: str, xyz, rpy) -> Node:
    arguments = []
    for flag, value in zip(('--x', '--y', '--z', '--roll', '--pitch', '--yaw'),
                           list(xyz) + list(rpy)):
        arguments += [flag, repr(float(value))]
    arguments += ['--frame-id', parent, '--child-frame-id', child]
    return Node(
        package='tf2_ros', executable='static_transform_publisher', name=name,
        output='log', arguments=arguments,
        parameters=[{'use_sim_time': ParameterValue(LaunchConfiguration('use_sim_time'),
                                                    value_type=bool)}])


def _static_transforms(context, *_, **__) -> list[Node]:
    """static_transform_publisher for each calibration given (``camera_xyz``, ``hand_xyz``); an
    OpaqueFunction because the 'x y z' / 'roll pitch yaw' strings are split into arguments.

    The camera calibration's child is ``calibration_frame``; when realsense_node runs (it
    publishes no TF) and that frame is not ``camera_frame``, ``calibration_frame ->
    camera_frame`` is added: the optical rotation, no offset (module docstring)."""
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    world = value('world_frame')
    hand_root = value('joint_prefix') + 'base_link'
    camera_frame = value('camera_frame')
    calibration_frame = value('calibration_frame').strip() or camera_frame
    nodes = []
    for prefix, child, name in (('camera', calibration_frame, 'camera_tf'),
                                ('hand', hand_root, 'hand_root_tf')):
        xyz_text = value(f'{prefix}_xyz').strip()
        if not xyz_text:
            continue
        xyz = parse_numbers(f'{prefix}_xyz', xyz_text, 3)
        rpy = parse_numbers(f'{prefix}_rpy', value(f'{prefix}_rpy'), 3)
        nodes.append(_static_transform(name, world, child, xyz, rpy))
        if prefix == 'camera' and calibration_frame != camera_frame and \
                value('use_camera').strip().lower() == 'true':
            nodes.append(_static_transform('camera_optical_tf', calibration_frame, camera_frame,
                                           (0.0, 0.0, 0.0), OPTICAL_RPY))
    return nodes


def generate_launch_description() -> LaunchDescription:
    config = LaunchConfiguration
    use_sim_time = ParameterValue(config('use_sim_time'), value_type=bool)
    log_level = ['--ros-args', '--log-level', config('log_level')]
    camera = Node(
        package=PACKAGE, executable='realsense_node', name='camera', namespace='camera',
        output='screen', condition=IfCondition(PythonExpression(
            ["'", config('use_camera'), "' == 'true' and '", config('one_process'),
             "' != 'true'"])),
        parameters=[_camera_parameters()],
        arguments=log_level)
    robot_state_publisher = Node(
        package='robot_state_publisher', executable='robot_state_publisher',
        name='robot_state_publisher', output='log',
        condition=IfCondition(config('use_robot_state_publisher')),
        parameters=[{
            'robot_description': ParameterValue(file_content(config('hand_urdf')),
                                                value_type=str),
            'use_sim_time': use_sim_time,
        }],
        arguments=log_level)
    rviz = Node(
        package='rviz2', executable='rviz2', name='rviz2', output='log',
        condition=IfCondition(config('rviz')),
        arguments=['-d', config('rviz_config')],
        parameters=[{'use_sim_time': use_sim_time}])
    return LaunchDescription(_arguments() + [
        OpaqueFunction(function=dds.launch_environment),  # before any process starts
        camera,
        OpaqueFunction(function=_tracker),
        robot_state_publisher,
        OpaqueFunction(function=_static_transforms),
        rviz,
    ])
