"""Demo: the simulated arm, human and operator plus policy + safety (+ monitor), one process per
node, reading the same config file as `rt-safe-rl demo` / `bringup --sim`.

    ros2 launch rt_safe_rl demo.launch.py [namespace:=demo] [config_file:=my.yaml]

For the lowest latency (in-process zero-copy policy -> safety hand-off) use
``ros2 run rt_safe_rl bringup --sim`` instead: it composes the same nodes in one process.
Only public launch / launch_ros API is used.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = 'rt_safe_rl'
ARGS = {
    'config_file': ('', "YAML config ('' = the shipped config/default.yaml), read by every node"),
    'policy_path': ('', "policy file overriding policy.path ('' = keep the config's)"),
    'namespace': ('', 'namespace of all nodes'),
    'robot_command_topic': ('forward_position_controller/commands', 'robot position command topic'),
    'joint_states_topic': ('joint_states', 'robot JointState topic'),
    'human_topic': ('human/position', 'tracked human position (PointStamped)'),
    'use_monitor': ('true', 'also start the monitor node'),
    'profile': ('', "deployment profile (development|production|edge|cloud; '' = none)"),
}


def _config_file(context: object) -> str:
    cfg = LaunchConfiguration('config_file').perform(context)  # type: ignore[arg-type]
    return cfg or os.path.join(get_package_share_directory(PACKAGE), 'config', 'default.yaml')


def _sim_nodes(context: object) -> list[Node]:
    cfg = _config_file(context)
    namespace = LaunchConfiguration('namespace').perform(context)  # type: ignore[arg-type]
    profile = LaunchConfiguration('profile').perform(context)  # type: ignore[arg-type]
    remaps = [
        ('forward_position_controller/commands', LaunchConfiguration('robot_command_topic')),
        ('joint_states', LaunchConfiguration('joint_states_topic')),
        ('human/position', LaunchConfiguration('human_topic')),
    ]
    return [
        Node(
            package=PACKAGE,
            executable=exe,
            name=exe,
            namespace=namespace,
            parameters=[{'config_file': cfg}],
            remappings=remaps,
            arguments=['--profile', profile] if profile else [],
            output='screen',
        )
        for exe in ('sim_robot', 'sim_human', 'sim_operator')
    ]


def generate_launch_description() -> LaunchDescription:
    """Simulators + the robot launch file (policy, safety, monitor) with the same arguments."""
    here = os.path.dirname(os.path.abspath(__file__))
    robot = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(here, 'rt_safe_rl.launch.py')),
        launch_arguments={name: LaunchConfiguration(name) for name in ARGS}.items(),
    )
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(name, default_value=d, description=text)
                for name, (d, text) in ARGS.items()
            ),
            OpaqueFunction(function=_sim_nodes),
            robot,
        ]
    )
