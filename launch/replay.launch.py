"""Play a bag into the tracker: ``ros2 bag play BAG --clock`` and tracker.launch.py in replay mode
on simulated time (no camera).

The tracker processes every frame in stamp order (``mode:=replay``); every node runs on the
bag's /clock (``use_sim_time``). When the playback ends, the launch ends: ``end_delay`` seconds
later when it succeeded (the tracker finishes the frames it holds), at once when it failed, and
``ros2 launch`` then exits non-zero, the log naming the playback's exit status. The bag starts ``start_delay`` seconds after launch so that
the tracker's subscriptions exist before its first message: the tracker loads its models first
(3-8 s on 2 CPU cores, measured), and messages published before it subscribes are lost, the
initial pose (at the first image stamp) among them. Raise ``start_delay`` on a slow machine,
or give ``initial_pose``.
The bag must hold the tracker's inputs (INTERFACES.md: images, camera_info, /joint_states,
/tf, /tf_static and, unless ``initial_pose`` is given, ``<namespace>/initial_pose``, i.e.
/handypriors/initial_pose by default).

For offline, deterministic processing into an output bag without DDS, use
``handypriors track BAG --object MESH --out OUT_BAG``: the same tracker code.

Example::

    ros2 launch handypriors_ros replay.launch.py bag:=demo/bag object_mesh:=demo/object.ply \\
        rate:=0.5 rviz:=true
"""
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription,
                            LogInfo, OpaqueFunction, RegisterEventHandler, Shutdown,
                            TimerAction)
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, ThisLaunchFileDir

from handypriors_ros import interfaces
from handypriors_ros.ros import dds

#: tracker.launch.py arguments passed through unchanged.
FORWARDED = ('object_mesh', 'object_scale', 'hand_side', 'initial_pose', 'device', 'renderer',
             'rviz', 'use_robot_state_publisher', 'log_level', 'namespace', 'object_pose_topic',
             'track_topic', 'markers_topic', 'initial_pose_topic', 'reset_service',
             'mask_topic', 'image_qos_reliability', 'dds_profile')


class PlaybackFailed(RuntimeError):
    """The bag playback exited non-zero (launch logs it and exits non-zero)."""


def playback_ended(event, context) -> list:
    """What follows the playback's exit: a delayed shutdown after success; after a failure, an
    error naming the exit status (launch shuts everything down and exits with status 1: its
    exit status cannot carry the playback's own)."""
    code = event.returncode
    if code != 0:
        raise PlaybackFailed(f'bag playback ({event.process_name}) failed with exit status '
                             f'{code}: shutting down')
    delay = LaunchConfiguration('end_delay').perform(context)
    return [
        LogInfo(msg=f'bag playback ended (exit status 0): shutting down in {delay} s'),
        TimerAction(period=float(delay),
                    actions=[Shutdown(reason='bag playback ended (exit status 0)')]),
    ]


def generate_launch_description() -> LaunchDescription:
    config = LaunchConfiguration
    arguments = [
        DeclareLaunchArgument('bag', description='rosbag2 folder (MCAP or sqlite3) to play'),
        DeclareLaunchArgument(
            'object_mesh', description='mesh file of the tracked object (required)'),
        DeclareLaunchArgument(
            'rate', default_value='1.0',
            description='playback speed factor (lower it when the tracker cannot keep up: '
                        'frames that arrive faster than it tracks wait in its queues)'),
        DeclareLaunchArgument(
            'start_delay', default_value='10.0',
            description='seconds between launch and the start of the playback [s]'),
        DeclareLaunchArgument('object_scale', default_value='1.0',
                              description="factor from the mesh file's units to metres"),
        DeclareLaunchArgument('hand_side', default_value='right', choices=['right', 'left'],
                              description='which Allegro hand'),
        DeclareLaunchArgument('initial_pose', default_value='',
                              description="'x y z qx qy qz qw' in the camera optical frame "
                                          "[m]; empty = the bag's initial pose topic"),
        DeclareLaunchArgument('device', default_value='auto', choices=['auto', 'cpu', 'cuda'],
                              description='where the tracker computes'),
        DeclareLaunchArgument('renderer', default_value='auto',
                              choices=['auto', 'nvdiffrast', 'soft'],
                              description="the tracker's rasterizer"),
        DeclareLaunchArgument('rviz', default_value='false', choices=['true', 'false'],
                              description='start RViz'),
        DeclareLaunchArgument(
            'end_delay', default_value='5.0',
            description='seconds between a successful end of the playback and the shutdown, '
                        'for the tracker to finish the frames it holds [s]'),
        DeclareLaunchArgument('use_robot_state_publisher', default_value='false',
                              choices=['true', 'false'],
                              description='start robot_state_publisher (false: the bag holds '
                                          "the hand's link TFs, or another node publishes "
                                          'them)'),
        DeclareLaunchArgument('namespace', default_value='handypriors',
                              description="the tracker's namespace (tracker.launch.py)"),
        DeclareLaunchArgument('initial_pose_topic', default_value='initial_pose',
                              description='initial pose input (relative: in the namespace)'),
        DeclareLaunchArgument('object_pose_topic', default_value='object_pose',
                              description='pose output (relative: in the namespace)'),
        DeclareLaunchArgument('track_topic', default_value='track',
                              description='TrackedObject output (relative: in the namespace)'),
        DeclareLaunchArgument('markers_topic', default_value='markers',
                              description='MarkerArray output (relative: in the namespace)'),
        DeclareLaunchArgument('reset_service', default_value='reset',
                              description='reset service (relative: in the namespace)'),
        DeclareLaunchArgument('mask_topic', default_value=interfaces.MASK_TOPIC,
                              description="the bag's object mask topic; '' = none"),
        DeclareLaunchArgument('image_qos_reliability', default_value='reliable',
                              description="the tracker's image subscriptions' reliability: "
                                          'reliable, as ros2 bag play publishes, so that the '
                                          'tracker subscribes at once (auto waits for a '
                                          "publisher, on the bag's clock); '' = the "
                                          "params_file's value"),
        DeclareLaunchArgument('log_level', default_value='info',
                              choices=['debug', 'info', 'warn', 'error', 'fatal'],
                              description='log level of the nodes'),
        DeclareLaunchArgument('dds_profile', default_value='auto',
                              description='Fast DDS XML profile of the playback and the nodes '
                                          "(tracker.launch.py): auto, 'none' or a file"),
    ]
    tracker = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([ThisLaunchFileDir(), 'tracker.launch.py'])),
        launch_arguments=[(name, config(name)) for name in FORWARDED] + [
            ('mode', 'replay'), ('use_sim_time', 'true'), ('use_camera', 'false')])
    # BAG first: --clock takes an optional frequency and would take a path after it.
    play = ExecuteProcess(
        cmd=['ros2', 'bag', 'play', config('bag'), '--clock', '--rate', config('rate')],
        name='bag_play', output='screen')
    return LaunchDescription(arguments + [
        OpaqueFunction(function=dds.launch_environment),  # the playback publishes the images
        tracker,
        TimerAction(period=config('start_delay'), actions=[play]),
        RegisterEventHandler(OnProcessExit(target_action=play, on_exit=playback_ended)),
    ])
