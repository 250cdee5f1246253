"""The direct control cycle (rt/cycle.py): one read -> policy -> safety -> write per period on the
real composed nodes; the executor leaves the inline-consumed action channel to the cycle; the
simulated arm behind it runs in wall-clock time; the per-stage CPU budget reaches the registry.
Behaviour only: no rate, latency or run-count thresholds."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.ros]

FAST = {'policy': {'backend': 'torchscript', 'auto_samples': 20, 'warmup_iters': 5}}


def _compose(rclpy_context: Any, namespace: str) -> Any:
    from rt_safe_rl.bringup import compose
    from rt_safe_rl.config import load_config

    cfg = load_config(None, FAST)
    comp = compose(cfg, ['sim_robot', 'safety', 'policy'], context=rclpy_context, namespace=namespace)
    assert comp.start() == {}
    assert comp.direct and comp.cycle is not None
    return cfg, comp


def test_cycle_reads_steps_policy_and_safety_and_writes_each_period(rclpy_context: Any) -> None:
    from rt_safe_rl.rt.cycle import GAUGES, STAGES
    from rt_safe_rl.rt.metrics import registry

    cfg, comp = _compose(rclpy_context, 'cyc1')
    try:
        cycle, robot, safety = comp.cycle, comp.nodes['sim_robot'], comp.nodes['safety']
        cycle.enabled = False  # driven by hand: deterministic, no executor
        safety.set_human(time.monotonic_ns(), np.array([2.0, 0.0, 1.0]))
        per = cfg.control.period_ns
        t = time.monotonic_ns() // per * per
        n = 1100  # > one budget window (1000 cycles)
        for _ in range(n):
            t += per
            safety.set_human(time.monotonic_ns(), np.array([2.0, 0.0, 1.0]))
            cycle._cycle(t)
        # one command per cycle, each computed from the state read in that cycle
        assert cycle.commands_written == n
        assert cycle.last_written_seq == robot.interface.seq
        assert robot.commands_rx == n and robot.commands_unmatched == 0
        assert robot.audit.violations == 0, robot.audit.summary()
        assert comp.nodes['policy'].cycles == n
        st = safety.status()
        assert st['skipped_actions'] == 0 and st['last_command_seq'] == robot.interface.seq
        # the budget: every stage measured, total = sum of the stages; gauges in the registry
        b = cycle.budget.summary()
        assert b['cycles'] == n and set(STAGES) <= set(b)
        parts = sum(b[s]['mean_us'] for s in STAGES if s != 'total')
        assert math.isclose(parts, b['total']['mean_us'], rel_tol=0.05, abs_tol=0.5)
        gauges = registry().gauges
        assert all(g in gauges and math.isfinite(gauges[g].value) for g in GAUGES)
    finally:
        comp.destroy()


def test_executor_leaves_the_action_channel_to_the_cycle(rclpy_context: Any) -> None:
    _cfg, comp = _compose(rclpy_context, 'cyc2')
    robot, safety = comp.nodes['sim_robot'], comp.nodes['safety']
    th = threading.Thread(target=comp.executor.spin, daemon=True)
    th.start()
    try:
        end = time.monotonic() + 60.0  # the executor's set-up (GC freeze, mlockall) comes first
        while time.monotonic() < end and robot.commands_rx < 200:
            time.sleep(0.02)
    finally:
        comp.executor.shutdown()
        th.join(10.0)
    rep = comp.executor.report()
    st = safety.status()
    comp.destroy()
    assert robot.commands_rx > 0, rep['tasks']
    # the safety node's TriggeredTask on policy/action is not scheduled: process_action runs once
    # per cycle (skipped_actions counts only periods the monitor commanded first, e.g. at start)
    assert not any(name.endswith('_action') for name in rep['tasks']), list(rep['tasks'])
    assert st['skipped_actions'] <= rep['tasks']['control_cycle']['runs'], st  # a skip is a covered run
    assert robot.audit.violations == 0 and robot.audit.duplicates == 0, robot.audit.summary()
    # the control thread runs the cycle; the safety monitor lives on another thread
    assert 'control_cycle' in rep['tasks'] and rep['tasks']['control_cycle']['errors'] == 0


def test_sim_arm_integrates_every_elapsed_period() -> None:
    from rt_safe_rl.config import load_config
    from rt_safe_rl.core.robot_model import RobotModel
    from rt_safe_rl.rt.cycle import RobotState
    from rt_safe_rl.sim.arm import ArmLimits
    from rt_safe_rl.sim.interface import SimArmInterface

    app_cfg = load_config()
    model = RobotModel.from_config(app_cfg.robot, app_cfg.base_dir)
    lim = ArmLimits.from_model(model, app_cfg.sim.robot)
    q0 = lim.initial_q(app_cfg.sim.robot)
    per = 1_000_000
    arm = SimArmInterface(lim, q0, per, 0.05, 1e-6)
    st = RobotState(lim.n_joints)
    t0 = 10 * per
    assert arm.read(t0, st) and st.seq == 1
    goal = q0 + 0.01
    arm.write(st.seq, q0 + 0.0005)
    assert arm.read(t0 + 5 * per, st)  # 4 periods not read: still simulated (wall-clock physics)
    assert arm.ticks == 6 and st.seq == 6 and arm.reads == 2
    rows = np.zeros((16, arm.trace.width))
    k = arm.trace.drain(rows)
    assert k == 6 and np.all(np.diff(rows[:k, 0]) == per) and np.all(np.diff(rows[:k, 1]) == 1)
    # the command audit sees the gap as elapsed time: a step over 5 periods is judged over 5 ms
    arm.write(st.seq, goal)
    assert arm.audit.seq_gaps == 1
    # no command for command_timeout_s: the arm holds (latches its position)
    assert arm.read(t0 + 200 * per, st)
    assert arm.holds == 1
