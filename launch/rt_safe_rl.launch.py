"""Robot bringup: the policy node and the safety filter node (+ optionally the monitor), each its own
process, reading THE config file (the same one `bringup` reads), placed on the machine's CPUs.

    ros2 launch rt_safe_rl rt_safe_rl.launch.py \
        namespace:=arm robot_command_topic:=/fr3/forward_position_controller/commands \
        joint_states_topic:=/fr3/joint_states policy_path:=/path/to/policy.pt

Arguments (``ros2 launch rt_safe_rl rt_safe_rl.launch.py --show-args``): config_file, policy_path
('' = the one in config_file), namespace, robot_command_topic, joint_states_topic, human_topic,
use_monitor, output_mode / output_topic (ros2_control output: position | trajectory | velocity),
and the placement: control_cpus (policy + safety; 'auto' = the last CPU), observer_cpus (the
low-priority observer threads and the monitor; 'auto' = the other CPUs), policy_priority (80),
safety_priority (81; its monitor runs 4 above, at least 85). Placement is passed to each process
as its ``rt.<thread>.cpus`` / ``rt.<thread>.priority`` parameters
(:func:`rt_safe_rl.rt.placement.default_placement`). The nodes configure and activate
themselves (``control.autostart`` in the config).
"""

from __future__ import annotations

import os
from typing import Any

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from rt_safe_rl.rt.placement import default_placement, parse_cpus

PACKAGE = 'rt_safe_rl'

#: name -> (default, description); demo.launch.py and sim.launch.py share most of them.
ARGS: dict[str, tuple[str, str]] = {
    'config_file': ('', "YAML config ('' = the shipped default.yaml), read by every node"),
    'policy_path': ('', "policy file overriding policy.path ('' = keep the config's)"),
    'namespace': ('', 'namespace of all nodes'),
    'robot_command_topic': ('forward_position_controller/commands', "the robot's position command topic"),
    'joint_states_topic': ('joint_states', "the robot's JointState topic"),
    'human_topic': ('human/position', 'tracked human position (PointStamped)'),
    'use_monitor': ('true', 'also start the monitor node (/diagnostics, Prometheus)'),
    'profile': ('', "deployment profile (development|production|edge|cloud; '' = none)"),
    'output_mode': ('', "ros2_control output: position | trajectory | velocity ('' = safety.output_mode)"),
    'output_topic': ('', "output topic ('' = safety.output_topic, else the mode's default)"),
    'control_cpus': (
        'auto',
        "CPUs of the policy + safety RT threads, e.g. '1' or '2-3' ('auto' = the last CPU)",
    ),
    'observer_cpus': ('auto', "CPUs of the observer threads and the monitor ('auto' = the other CPUs)"),
    'policy_priority': ('80', "SCHED_FIFO priority of the policy's control thread"),
    'safety_priority': ('81', 'SCHED_FIFO priority of the safety thread (its monitor: +4, at least 85)'),
}


def declare(names: list[str] | None = None) -> list[DeclareLaunchArgument]:
    """DeclareLaunchArgument for `names` (default: all of :data:`ARGS`)."""
    return [DeclareLaunchArgument(n, default_value=ARGS[n][0], description=ARGS[n][1]) for n in names or ARGS]


def arg(context: Any, name: str) -> str:
    """The value of launch argument `name`."""
    return str(LaunchConfiguration(name).perform(context))


def config_file(context: Any) -> str:
    """The config file every node reads."""
    return arg(context, 'config_file') or os.path.join(
        get_package_share_directory(PACKAGE), 'config', 'default.yaml'
    )


def remaps() -> list[tuple[str, Any]]:
    """The robot-side topic remaps every node gets."""
    return [
        ('forward_position_controller/commands', LaunchConfiguration('robot_command_topic')),
        ('joint_states', LaunchConfiguration('joint_states_topic')),
        ('human/position', LaunchConfiguration('human_topic')),
    ]


def _cpus(context: Any, name: str) -> list[int] | None:
    text = arg(context, name).strip()
    return None if text in ('', 'auto') else parse_cpus(text, name)


def placement(context: Any, sim_cpus: str = 'sim_cpus') -> dict[str, dict[str, Any]]:
    """Per-executable placement parameters from the launch arguments (declared ones only)."""
    declared = context.launch_configurations
    return default_placement(
        control_cpus=_cpus(context, 'control_cpus') if 'control_cpus' in declared else None,
        sim_cpus=_cpus(context, sim_cpus) if sim_cpus in declared else None,
        observer_cpus=_cpus(context, 'observer_cpus') if 'observer_cpus' in declared else None,
        policy_priority=int(arg(context, 'policy_priority')) if 'policy_priority' in declared else 80,
        safety_priority=int(arg(context, 'safety_priority')) if 'safety_priority' in declared else 81,
    )


def node(context: Any, exe: str, name: str, params: dict[str, Any], **kwargs: Any) -> Node:
    """A package executable with the config file, the placement parameters and the remaps."""
    return Node(
        package=PACKAGE,
        executable=exe,
        name=name,
        namespace=arg(context, 'namespace'),
        parameters=[{'config_file': config_file(context), **params}],
        remappings=remaps(),
        arguments=['--profile', profile] if (profile := arg(context, 'profile')) else [],
        output='screen',
        **kwargs,
    )


def _robot_nodes(context: Any) -> list[Node]:
    plan = placement(context)
    policy_params: dict[str, Any] = dict(plan['policy_node'])
    if arg(context, 'policy_path'):
        policy_params['policy.path'] = arg(context, 'policy_path')
    safety_params: dict[str, Any] = dict(plan['safety_node'])
    for key in ('output_mode', 'output_topic'):
        if arg(context, key):
            safety_params[f'safety.{key}'] = arg(context, key)
    return [
        node(context, 'safety_node', 'safety_node', safety_params),
        node(context, 'policy_node', 'policy_node', policy_params),
        node(
            context,
            'monitor_node',
            'monitor',
            plan['monitor_node'],
            condition=IfCondition(LaunchConfiguration('use_monitor')),
        ),
    ]


def generate_launch_description() -> LaunchDescription:
    """Policy + safety (+ monitor) for a real robot."""
    return LaunchDescription([*declare(), OpaqueFunction(function=_robot_nodes)])
