"""Command-line check shared by the node executables (``policy_node``, ``monitor_node``, ...).

A node executable takes ROS arguments only (``--ros-args -p config_file:=my.yaml -p key:=value``).
Without this check ``policy_node --help`` would start the node and ``policy_node --config x.yaml``
would silently run on the shipped default. Not RT code: runs once, before ``rclpy.init``.
"""

from __future__ import annotations

import os
import sys

from rclpy.utilities import remove_ros_args


def node_usage(prog: str, summary: str) -> str:
    """Usage text of a node executable ``prog`` (``summary``: one line on what it does)."""
    return (
        f'usage: {prog} [--ros-args -p config_file:=FILE -p KEY:=VALUE -r FROM:=TO ...]\n'
        f'{summary}\n'
        '--profile NAME (before --ros-args): deployment profile, development|production|edge|cloud\n'
        'ROS arguments only: config_file is a YAML in the layout of config/default.yaml (empty = the\n'
        'shipped default); any parameter of the node can be set with -p. `rt-safe-rl demo` and\n'
        '`bringup` compose all the nodes in one process.'
    )


def _take_profile(extra: list[str]) -> list[str]:
    """Consume ``--profile NAME`` / ``--profile=NAME``: sets ``RT_PROFILE`` for the node's config load."""
    out: list[str] = []
    it = iter(extra)
    for a in it:
        if a == '--profile':
            os.environ['RT_PROFILE'] = next(it, '')
        elif a.startswith('--profile='):
            os.environ['RT_PROFILE'] = a.split('=', 1)[1]
        else:
            out.append(a)
    return out


def check_node_args(prog: str, argv: list[str] | None, summary: str) -> int | None:
    """Handle ``-h/--help`` and reject non-ROS arguments of a node executable.

    Args:
        prog: executable name (for messages).
        argv: arguments without the program name (None = ``sys.argv[1:]``).
        summary: one line describing the executable (printed with --help).

    Returns:
        None when the arguments are fine (start the node); otherwise the exit code: 0 after
        printing the usage for --help, 2 after a one-line error for unknown arguments.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    extra = _take_profile(remove_ros_args([prog, *args])[1:])
    if any(a in ('-h', '--help') for a in extra):
        print(node_usage(prog, summary))
        return 0
    if extra:
        print(
            f'{prog}: error: unrecognized arguments {extra}; a node takes ROS arguments, e.g. '
            f'{prog} --ros-args -p config_file:=my.yaml',
            file=sys.stderr,
        )
        return 2
    return None
