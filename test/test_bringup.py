"""bringup: one process, one YAML, every node composed with a namespace and remapped topics (the
robot's command topic), fail-closed start when a node cannot configure; the `bringup` executable."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FAST = {'policy': {'backend': 'torchscript', 'auto_samples': 20, 'warmup_iters': 5}}


@pytest.mark.parametrize('direct', [True, False], ids=['direct_cycle', 'dds_robot'])
def test_compose_with_namespace_and_remapped_robot_topic(rclpy_context: Any, direct: bool) -> None:
    """direct: the ControlCycle drives the in-process robot (the remapped command topic is the
    safety node's observer output); dds_robot: safety -> robot over the remapped DDS topic."""
    from rt_safe_rl.bringup import compose, select_nodes
    from rt_safe_rl.config import load_config

    cfg = load_config(None, FAST)
    keys = select_nodes(with_sim=True, with_monitor=False)
    assert keys == ['sim_robot', 'sim_human', 'sim_operator', 'safety', 'policy']
    comp = compose(
        cfg,
        keys,
        context=rclpy_context,
        namespace='arm',
        cli_args=['--ros-args', '-r', 'forward_position_controller/commands:=/robot_x/cmd'],
        direct=direct,
    )
    try:
        assert comp.start() == {}
        assert comp.active == keys
        robot, safety = comp.nodes['sim_robot'], comp.nodes['safety']
        assert robot.get_namespace() == '/arm' and safety.get_namespace() == '/arm'
        if direct:
            assert comp.cycle is not None and robot._sub is None
        else:
            assert comp.cycle is None
            # the robot takes the package's stamped command stream; the remapped controller
            # topic is published by the safety node (checked below)
            assert robot._sub.topic_name == '/arm/safety/joint_command'

        def pubs() -> set[str]:
            return {
                name
                for name, _ in safety.get_publisher_names_and_types_by_node(
                    safety.get_name(), safety.get_namespace()
                )
            }

        end = time.monotonic() + 10.0  # the graph cache may still show the previous test's node
        while time.monotonic() < end and '/robot_x/cmd' not in pubs():
            time.sleep(0.05)
        assert '/robot_x/cmd' in pubs(), pubs()
        assert any(
            t == '/arm/joint_states'
            for t, _ in robot.get_publisher_names_and_types_by_node(robot.get_name(), robot.get_namespace())
        )
        th = threading.Thread(target=comp.executor.spin, daemon=True)
        th.start()
        end = time.monotonic() + 15.0
        while time.monotonic() < end and robot.commands_rx < 300:
            time.sleep(0.05)
        comp.executor.shutdown()
        th.join(10.0)
        assert robot.commands_rx > 0, robot.stats()  # safety -> robot (cycle or remapped topic)
        assert robot.audit.violations == 0
        # every command names the robot period it is for by its stamp: a state read, or (states late
        # on a loaded machine) a period the safety monitor extrapolated -- never more of those than
        # the monitor sent
        assert robot.commands_unmatched == 0, robot.stats()
        assert robot.commands_extrapolated <= safety.monitor_publishes, robot.stats()
        assert robot.e2e_hist.count > 0, robot.stats()
    finally:
        comp.destroy()


def _bringup(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, '-m', 'rt_safe_rl.bringup', *args], capture_output=True, text=True, timeout=timeout_s
    )


def test_bringup_executable_runs_and_exits_cleanly() -> None:
    res = _bringup(
        '--sim',
        '--no-monitor',
        '--duration',
        '1.5',
        '--set',
        'policy.backend=torchscript',
        '--ros-args',
        '-r',
        '__ns:=/bringup_test',
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'running sim_robot, sim_human, sim_operator, safety, policy' in res.stderr
    assert 'Traceback' not in res.stderr


def test_bringup_executable_bad_input() -> None:
    res = _bringup('--set', 'control.rate_hz=fast')
    assert res.returncode == 2 and 'Traceback' not in res.stderr
    assert 'control.rate_hz' in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = _bringup('--sim', '--no-monitor', '--duration', '0.5', '--set', 'policy.path=/nonexistent/p.pt')
    assert res.returncode == 1, res.stderr[-2000:]
    assert 'policy: not active' in res.stderr and '/nonexistent/p.pt' in res.stderr
    assert 'Traceback' not in res.stderr
