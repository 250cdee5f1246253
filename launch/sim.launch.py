"""The simulated arm, human and operator, one process each (the stand-in for a robot and its
surroundings), reading the same config file as the robot launch file.

    ros2 launch rt_safe_rl sim.launch.py [namespace:=demo] [sim_cpus:=0]

Arguments: config_file, namespace, robot_command_topic, joint_states_topic, human_topic (the same
remaps as rt_safe_rl.launch.py), sim_cpus ('auto' = every CPU but the control chain's), control_cpus
(the chain's CPUs to stay off; 'auto' = the last CPU), observer_cpus. The simulated robot runs at
SCHED_FIFO 70, the human 31, the operator 30: below the control chain, never beside it.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from launch.actions import DeclareLaunchArgument, OpaqueFunction

from launch import LaunchDescription


def _robot_launch() -> Any:
    """rt_safe_rl.launch.py (the shared arguments and helpers), loaded from beside this file."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'rt_safe_rl.launch.py')
    spec = importlib.util.spec_from_file_location('rt_safe_rl_robot_launch', path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ROBOT = _robot_launch()
SIM_ARGS = ['config_file', 'namespace', 'profile', 'robot_command_topic', 'joint_states_topic', 'human_topic']
SIM_ARGS += ['control_cpus', 'observer_cpus']
SIM_CPUS = DeclareLaunchArgument(
    'sim_cpus',
    default_value='auto',
    description="CPUs of the simulators' RT threads ('auto' = not the chain's)",
)


def _sim_nodes(context: Any) -> list[Any]:
    plan = ROBOT.placement(context)
    return [ROBOT.node(context, exe, exe, plan[exe]) for exe in ('sim_robot', 'sim_human', 'sim_operator')]


def generate_launch_description() -> LaunchDescription:
    """The three simulator processes."""
    return LaunchDescription([*ROBOT.declare(SIM_ARGS), SIM_CPUS, OpaqueFunction(function=_sim_nodes)])
