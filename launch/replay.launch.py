"""Play a bag into the tracker: ``ros2 bag play BAG --clock`` and tracker.launch.py in replay mode
on simulated time (no camera).

The tracker processes every frame in stamp order (``mode:=replay``); every node runs on the
bag's /clock (``use_sim_time``). The bag starts ``start_delay`` seconds after launch so that
the tracker's subscriptions exist before its first message: the tracker loads its models first
(3-8 s on 2 CPU cores, measured), and messages published before it subscribes are lost, the
initial pose (at the first image stamp) among them. Raise ``start_delay`` on a slow machine,
or give ``initial_pose``.
The bag must hold the tracker's inputs (INTERFACES.md: images, camera_info, /joint_states,
/tf, /tf_static and, unless ``initial_pose`` is given, /handypriors/initial_pose).

For offline, deterministic processing into an output bag without DDS, use
``handypriors track BAG --object MESH --out OUT_BAG``: the same tracker code.

Example::

    ros2 launch handypriors_ros replay.launch.py bag:=demo/bag object_mesh:=demo/object.ply \\
        rate:=0.5 rviz:=true
"""
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription,
                            TimerAction)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, ThisLaunchFileDir

#: tracker.launch.py arguments passed through unchanged.
FORWARDED = ('object_mesh', 'object_scale', 'hand_side', 'initial_pose', 'device', 'renderer',
             'rviz', 'use_robot_state_publisher', 'log_level')


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
        DeclareLaunchArgument('use_robot_state_publisher', default_value='true',
                              choices=['true', 'false'],
                              description='start robot_state_publisher'),
        DeclareLaunchArgument('log_level', default_value='info',
                              choices=['debug', 'info', 'warn', 'error', 'fatal'],
                              description='log level of the nodes'),
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
        tracker,
        TimerAction(period=config('start_delay'), actions=[play]),
    ])
