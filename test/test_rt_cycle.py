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
    assert 'safety_node_action' not in rep['tasks'], list(rep['tasks'])
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


def _spin_listener(ctx: Any, topic: str) -> tuple[Any, Any, list[Any], threading.Thread]:
    """A separate node subscribed to `topic` (sensor_msgs/JointState), spun in its own thread."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import JointState

    node = Node('late_listener', context=ctx)
    got: list[Any] = []
    node.create_subscription(JointState, topic, got.append, 100)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    return node, ex, got, th


def test_commands_reach_robot_and_guard_with_no_listener_and_a_late_listener_gets_them(
    rclpy_context: Any,
) -> None:
    """Nobody subscribed to safety/joint_command: the DDS publish is skipped, yet every command
    is stepped, guarded and written to the in-process robot; a subscriber that joins later gets
    the commands once the listener count is refreshed (here: the refresh task's function)."""
    cfg, comp = _compose(rclpy_context, 'cyc3')
    listener = None
    try:
        cycle, robot, safety = comp.cycle, comp.nodes['sim_robot'], comp.nodes['safety']
        cycle.enabled = False  # driven by hand
        jc_pub = safety.command_out.jc_pub
        assert jc_pub.get_subscription_count() == 0
        safety._refresh_listeners()
        assert not safety.command_out.jc_heard and not safety.command_out.cmd_heard
        per = cfg.control.period_ns
        t = time.monotonic_ns() // per * per
        guard = safety.filter.guard
        n = 200
        for _ in range(n):
            t += per
            safety.set_human(time.monotonic_ns(), np.array([2.0, 0.0, 1.0]))
            cycle._cycle(t)
            # the command the robot got is the one the output guard checked and recorded last
            assert np.array_equal(cycle._cmd, guard.last_sent[0])
        assert cycle.commands_written == n and robot.commands_rx == n
        assert robot.audit.violations == 0, robot.audit.summary()
        assert safety.commands_unheard >= n  # none published (the monitor may add held repeats)
        # a subscriber joins: once DDS matched it and the count is refreshed, commands flow
        listener, ex, got, th = _spin_listener(rclpy_context, jc_pub.topic_name)
        end = time.monotonic() + 30.0
        while jc_pub.get_subscription_count() == 0 and time.monotonic() < end:
            time.sleep(0.01)
        assert jc_pub.get_subscription_count() > 0
        safety._refresh_listeners()
        assert safety.command_out.jc_heard
        unheard = safety.commands_unheard
        written = cycle.commands_written
        end = time.monotonic() + 30.0
        while not got and time.monotonic() < end:
            t += per
            safety.set_human(time.monotonic_ns(), np.array([2.0, 0.0, 1.0]))
            cycle._cycle(t)
            time.sleep(0.001)
        assert got, 'the late subscriber received no command'
        assert safety.commands_unheard == unheard  # published since the refresh
        assert robot.commands_rx == cycle.commands_written > written
        last = got[-1]
        assert len(last.position) == robot.interface.n_joints
    finally:
        if listener is not None:
            ex.shutdown()
            th.join(5.0)
            listener.destroy_node()
        comp.destroy()


def test_a_late_subscriber_gets_commands_from_the_running_executor(rclpy_context: Any) -> None:
    """With the executor running, nobody calls the refresh by hand: the low-priority listener task
    notices the late subscriber and the commands reach it; the robot got commands all along."""
    _cfg, comp = _compose(rclpy_context, 'cyc4')
    robot, safety = comp.nodes['sim_robot'], comp.nodes['safety']
    spin = threading.Thread(target=comp.executor.spin, daemon=True)
    spin.start()
    listener = None
    try:
        end = time.monotonic() + 60.0  # the executor's set-up (GC freeze, mlockall) comes first
        while time.monotonic() < end and robot.commands_rx < 100:
            time.sleep(0.02)
        assert robot.commands_rx >= 100 and safety.commands_unheard > 0  # nobody listened yet
        listener, ex, got, th = _spin_listener(rclpy_context, safety.command_out.jc_pub.topic_name)
        end = time.monotonic() + 30.0
        while not got and time.monotonic() < end:
            time.sleep(0.02)
        assert got, 'the late subscriber received no command'
    finally:
        comp.executor.shutdown()
        spin.join(10.0)
        if listener is not None:
            ex.shutdown()
            th.join(5.0)
            listener.destroy_node()
    rep = comp.executor.report()
    comp.destroy()
    assert rep['tasks']['safety_node_listeners']['runs'] > 0, list(rep['tasks'])
    assert rep['tasks']['safety_node_listeners']['errors'] == 0
    assert robot.audit.violations == 0, robot.audit.summary()


def test_no_python_task_of_another_thread_is_due_on_the_cycles_deadlines(rclpy_context: Any) -> None:
    """Every Python thread shares the GIL: a periodic task of another thread due on the control
    cycle's own deadlines (simulated sensors, status, observer mirrors) takes the GIL from the
    cycle mid-cycle. In the demo's composition each keeps a quarter period or more away from every
    control deadline, the ones of one thread in different control periods; and the policy action
    topic still reaches observers (from its mirror: each record once, in order)."""
    from rclpy.node import Node
    from sensor_msgs.msg import JointState

    from rt_safe_rl.bringup import compose, select_nodes
    from rt_safe_rl.config import load_config
    from rt_safe_rl.nodes.msgs import stamp_ns_of
    from rt_safe_rl.rt.executor import PeriodicTask

    cfg = load_config(None, FAST)
    comp = compose(cfg, select_nodes(with_sim=True), context=rclpy_context, namespace='cyc_phase')
    listener = Node('cyc_phase_listener', namespace='cyc_phase', context=rclpy_context)
    stamps: list[int] = []
    sizes: set[int] = set()

    def on_action(msg: Any) -> None:
        stamps.append(stamp_ns_of(msg))
        sizes.add(len(msg.position))

    listener.create_subscription(JointState, cfg.topics.policy_action, on_action, 50)
    comp.executor.add_node(listener)
    th = threading.Thread(target=comp.executor.spin, daemon=True)
    try:
        assert comp.start() == {}
        th.start()
        end = time.monotonic() + 60.0
        while time.monotonic() < end and len(stamps) < 20:
            time.sleep(0.05)
        tasks = comp.executor.tasks()
    finally:
        comp.executor.shutdown()
        th.join(10.0)
        comp.destroy()
        listener.destroy_node()
    assert len(stamps) >= 20 and stamps == sorted(set(stamps)), stamps[:30]
    assert sizes == {7}
    groups = cfg.rt.groups
    per = cfg.control.period_ns

    def thread_of(group: str) -> str:
        return groups[group].thread or group

    others = [t for t in tasks if isinstance(t, PeriodicTask) and thread_of(t.group) != thread_of('control')]
    names = {t.name for t in others}
    expected = {
        'sim_human_tick',
        'sim_operator_tick',
        'safety_node_status',
        'safety_node_listeners',
        'sim_robot_mirror_joint_states',
        'policy_node_mirror_policy_action',
    }
    assert expected <= names, names

    def distance_to_grid_ns(t: PeriodicTask) -> int:  # over the first 10,000 deadlines
        dl = t.phase_ns + t.period_ns * np.arange(10_000, dtype=np.int64)
        r = dl % per
        return int(np.minimum(r, per - r).min())

    near = {t.name: distance_to_grid_ns(t) for t in others if distance_to_grid_ns(t) < per // 4}
    assert near == {}, near
    for thread in {thread_of(t.group) for t in others}:
        mine = [t for t in others if thread_of(t.group) == thread and t.name in expected]
        slots = [(t.phase_ns // per) % 10 for t in mine]
        assert len(slots) == len(set(slots)), [(t.name, t.phase_ns) for t in mine]
