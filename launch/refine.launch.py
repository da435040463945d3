"""Refine a recorded session offline with refiner_node (the node of ``handypriors refine``).

Starts ``refiner_node`` with ``params_file`` (config/refine.yaml: loss weights, Adam settings,
ROI size) and the launch arguments below on top. The node refines every image of ``bag``,
writes ``out_bag`` (and a report folder when ``report_dir`` is given), publishes its progress
on /diagnostics and, when done, the refined estimates on /handypriors/object_pose,
/handypriors/track and /tf; then it exits (0 on success).

Examples::

    ros2 launch handypriors_ros refine.launch.py bag:=/data/session \\
        object_mesh:=/data/mug.ply out_bag:=/data/session_refined report_dir:=/data/report
    ros2 launch handypriors_ros refine.launch.py bag:=/data/session object_mesh:=/data/mug.ply \\
        out_bag:=/data/refined init_bag:=/data/tracked resume:=true
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'handypriors_ros'

#: Launch arguments passed to the node as parameters of the same name: (name, type).
PARAMETERS = (('bag', str), ('object_mesh', str), ('out_bag', str), ('object_scale', float),
              ('init_bag', str), ('report_dir', str), ('checkpoint_dir', str), ('resume', bool),
              ('overwrite', bool), ('publish_results', bool))


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    arguments = [
        DeclareLaunchArgument('bag', description='input rosbag2 folder (MCAP or sqlite3)'),
        DeclareLaunchArgument(
            'object_mesh', description='mesh file of the object (metres after object_scale)'),
        DeclareLaunchArgument(
            'out_bag', description='output bag (MCAP): object_pose, track and /tf per image'),
        DeclareLaunchArgument(
            'object_scale', default_value='1.0',
            description="factor from the mesh file's units to metres (0.001 for millimetres)"),
        DeclareLaunchArgument(
            'init_bag', default_value='',
            description="'handypriors track' output with initial poses; empty = the bag's "
                        'initial pose carried by the quasistatic dynamics'),
        DeclareLaunchArgument(
            'report_dir', default_value='', description='report folder; empty = no report'),
        DeclareLaunchArgument(
            'checkpoint_dir', default_value='',
            description='checkpoint folder; empty = <out_bag>.checkpoint'),
        DeclareLaunchArgument(
            'resume', default_value='false', choices=['true', 'false'],
            description='continue from the checkpoint of an interrupted run'),
        DeclareLaunchArgument(
            'overwrite', default_value='false', choices=['true', 'false'],
            description='replace an existing out_bag'),
        DeclareLaunchArgument(
            'publish_results', default_value='true', choices=['true', 'false'],
            description='publish the refined estimates when done'),
        DeclareLaunchArgument(
            'params_file', default_value=PathJoinSubstitution([share, 'config', 'refine.yaml']),
            description='refiner_node parameters (the arguments here override them)'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            choices=['debug', 'info', 'warn', 'error', 'fatal'],
            description='log level of the node'),
    ]
    config = LaunchConfiguration
    overrides = {name: ParameterValue(config(name), value_type=kind)
                 for name, kind in PARAMETERS}
    refiner = Node(package=PACKAGE, executable='refiner_node', name='refiner_node',
                   output='screen', parameters=[config('params_file'), overrides],
                   arguments=['--ros-args', '--log-level', config('log_level')])
    return LaunchDescription(arguments + [refiner])
