"""Robot bringup: the policy node and the safety filter node (+ optionally the monitor), each its own
process, reading THE config file (the same one `bringup` reads).

    ros2 launch rt_safe_rl rt_safe_rl.launch.py \
        namespace:=arm robot_command_topic:=/fr3/forward_position_controller/commands \
        joint_states_topic:=/fr3/joint_states policy_path:=/path/to/policy.pt

Arguments: config_file, policy_path ('' = the one in config_file), namespace, robot_command_topic,
joint_states_topic, human_topic, profile, use_monitor. Only public launch / launch_ros API is used.
The nodes configure and activate themselves (``control.autostart`` in the config).
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = 'rt_safe_rl'


def _default_config() -> str:
    return os.path.join(get_package_share_directory(PACKAGE), 'config', 'default.yaml')


def declare_common_arguments() -> list[DeclareLaunchArgument]:
    """Launch arguments shared with demo.launch.py."""
    return [
        DeclareLaunchArgument(
            'config_file',
            default_value='',
            description="YAML config ('' = the shipped default.yaml), read by every node",
        ),
        DeclareLaunchArgument(
            'policy_path',
            default_value='',
            description="policy file overriding policy.path ('' = keep the config's)",
        ),
        DeclareLaunchArgument('namespace', default_value='', description='namespace of all nodes'),
        DeclareLaunchArgument(
            'robot_command_topic',
            default_value='forward_position_controller/commands',
            description="the robot's position command topic (Float64MultiArray)",
        ),
        DeclareLaunchArgument(
            'joint_states_topic', default_value='joint_states', description="the robot's JointState topic"
        ),
        DeclareLaunchArgument(
            'human_topic', default_value='human/position', description='tracked human position (PointStamped)'
        ),
        DeclareLaunchArgument(
            'profile',
            default_value='',
            description="deployment profile (development|production|edge|cloud; '' = none), every node",
        ),
        DeclareLaunchArgument(
            'use_monitor',
            default_value='true',
            description='also start the monitor node (/diagnostics, Prometheus)',
        ),
    ]


def _robot_nodes(context: object) -> list[Node]:
    cfg = LaunchConfiguration('config_file').perform(context) or _default_config()  # type: ignore[arg-type]
    policy_path = LaunchConfiguration('policy_path').perform(context)  # type: ignore[arg-type]
    namespace = LaunchConfiguration('namespace').perform(context)  # type: ignore[arg-type]
    remaps = [
        ('forward_position_controller/commands', LaunchConfiguration('robot_command_topic')),
        ('joint_states', LaunchConfiguration('joint_states_topic')),
        ('human/position', LaunchConfiguration('human_topic')),
    ]
    profile = LaunchConfiguration('profile').perform(context)  # type: ignore[arg-type]
    prof = ['--profile', profile] if profile else []
    policy_params: dict[str, str] = {'config_file': cfg}
    if policy_path:
        policy_params['policy.path'] = policy_path
    return [
        Node(
            package=PACKAGE,
            executable='safety_node',
            name='safety_node',
            namespace=namespace,
            parameters=[{'config_file': cfg}],
            remappings=remaps,
            arguments=prof,
            output='screen',
        ),
        Node(
            package=PACKAGE,
            executable='policy_node',
            name='policy_node',
            namespace=namespace,
            parameters=[policy_params],
            remappings=remaps,
            arguments=prof,
            output='screen',
        ),
        Node(
            package=PACKAGE,
            executable='monitor_node',
            name='monitor',
            namespace=namespace,
            parameters=[{'config_file': cfg}],
            remappings=remaps,
            arguments=prof,
            output='screen',
            condition=IfCondition(LaunchConfiguration('use_monitor')),
        ),
    ]


def generate_launch_description() -> LaunchDescription:
    """Policy + safety (+ monitor) for a real robot."""
    return LaunchDescription([*declare_common_arguments(), OpaqueFunction(function=_robot_nodes)])
