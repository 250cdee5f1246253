"""Demo: the simulated arm, human and operator (sim.launch.py) plus policy + safety (+ monitor)
(rt_safe_rl.launch.py), one process per node, reading the same config file as `rt-safe-rl demo` /
`bringup --sim`, placed on the machine's CPUs (control chain on the last CPU, simulators and
observers on the others; arguments: those of rt_safe_rl.launch.py plus sim_cpus).

    ros2 launch rt_safe_rl demo.launch.py [namespace:=demo] [config_file:=my.yaml]

For the lowest latency (in-process zero-copy policy -> safety hand-off) use
``ros2 run rt_safe_rl bringup --sim`` instead: it composes the same nodes in one process.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

HERE = os.path.dirname(os.path.abspath(__file__))


def _sim_launch() -> Any:
    """sim.launch.py (it carries the robot launch file's arguments and helpers as ``ROBOT``)."""
    spec = importlib.util.spec_from_file_location(
        'rt_safe_rl_sim_launch', os.path.join(HERE, 'sim.launch.py')
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SIM = _sim_launch()


def _include(name: str, args: list[str]) -> IncludeLaunchDescription:
    return IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(HERE, name)),
        launch_arguments={a: LaunchConfiguration(a) for a in args}.items(),
    )


def generate_launch_description() -> LaunchDescription:
    """Simulators + the robot launch file with the same arguments."""
    return LaunchDescription(
        [
            *SIM.ROBOT.declare(),
            SIM.SIM_CPUS,
            _include('sim.launch.py', [*SIM.SIM_ARGS, 'sim_cpus']),
            _include('rt_safe_rl.launch.py', list(SIM.ROBOT.ARGS)),
        ]
    )
