"""Node executables: --help prints the usage and exits 0 without starting the node; non-ROS
arguments (e.g. --config) are a one-line error with exit 2 instead of being silently ignored."""

from __future__ import annotations

from collections.abc import Callable

import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (ROS 2 wheels or a sourced ROS 2 needed)')

from rt_safe_rl.nodes import benchmark_node, monitor_node, policy_node
from rt_safe_rl.nodes._args import check_node_args

# monitor_node.main takes argv with the program name (as rclpy.init), the others without it
MAINS: dict[str, Callable[[list[str]], int]] = {
    'policy_node': policy_node.main,
    'benchmark_node': benchmark_node.main,
    'monitor_node': lambda args: monitor_node.main(['monitor_node', *args]),
}


@pytest.mark.parametrize('prog', sorted(MAINS))
def test_help_prints_usage_and_does_not_start(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert MAINS[prog](['--help']) == 0
    out = capsys.readouterr().out
    assert out.startswith(f'usage: {prog} [--ros-args') and 'config_file:=' in out


@pytest.mark.parametrize('prog', sorted(MAINS))
def test_non_ros_arguments_are_a_one_line_error(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert MAINS[prog](['--config', '/some/file.yaml']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith(f'{prog}: error: unrecognized arguments')
    assert "'--config'" in err and 'config_file:=' in err


def test_ros_arguments_pass() -> None:
    assert check_node_args('x', ['--ros-args', '-p', 'config_file:=a.yaml', '-r', '__ns:=/n'], 's') is None
    assert check_node_args('x', [], 's') is None
    assert check_node_args('x', ['--ros-args', '-p', 'a:=1', '--', '--help'], 's') == 0  # after `--`: ours
