"""The ``benchmark_node`` executable's own contract, as :func:`~rt_safe_rl.nodes._sim_base.run_node`
hooks (moved unchanged out of :mod:`.benchmark_node`'s ``main``): activation from inside the spinning
executor, exit when the report is done, exit codes 0 / 1 (baseline comparison failed) / 2 (error) /
130 (interrupted or incomplete). Not RT code.
"""

from __future__ import annotations

import sys
from typing import Any

from rclpy.lifecycle import TransitionCallbackReturn


def _start(prog: str, node: Any, executor: Any) -> int | None:
    """``run_node`` start hook: exit when done (``exit_when_done``); configure now, activate from
    inside the spinning executor after its one-time RT setup (mlockall, heap prefault, GC freeze),
    so that setup never overlaps the measured replay."""
    if bool(node.get_parameter('exit_when_done').value):
        node.on_done = executor.shutdown
    if node.get_parameter('autostart').value:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            print(f'{prog}: error: {node.last_error}', file=sys.stderr)
            return 2
        timer: Any = None

        def start() -> None:
            timer.cancel()
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                executor.shutdown()

        timer = node.create_timer(0.3, start)
    return None


def _finish(node: Any, sig: int | None) -> int:
    """``run_node`` finish hook: 130 when interrupted (the replay is stopped, partial results
    written) or incomplete, 2 on an error (one line), 1 when the baseline comparison failed."""
    if sig is not None:
        node._stop.set()
        node.done.wait(timeout=30.0)
        return 130
    if node.last_error:
        print(f'benchmark_node: error: {node.last_error}', file=sys.stderr)
        return 2
    rep = node.last_report
    if rep is not None and not rep.get('complete', False):
        return 130
    return 1 if rep is not None and not rep.get('comparison', {}).get('passed', True) else 0
