"""``bench safety``'s ``monitor`` part: the real :class:`~rt_safe_rl.nodes.safety_node.SafetyFilterNode`
composed in-process on the :class:`~rt_safe_rl.rt.executor.RtExecutor`, its safety monitor task
beside a 1 kHz control task, with the C floor loop on the same CPU as a witness.

See :mod:`rt_safe_rl.bench.safety_bench` (item 5 of its docstring) for what is reported. The
measured tasks run in RT threads; the set-up and the summary are not RT-safe.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np

from rt_safe_rl.core.errors import ConfigError, RtSafeRlError


def bench_monitor(seconds: float) -> dict[str, Any]:
    """The real SafetyFilterNode's monitor task at 2 kHz beside a 1 kHz control task (RtExecutor)."""
    import threading

    import rclpy
    from rclpy.context import Context
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.node import Node

    from rt_safe_rl.bench.rt_bench import CFloorLoop
    from rt_safe_rl.config import load_config
    from rt_safe_rl.nodes.msgs import ActionRecord
    from rt_safe_rl.nodes.safety_node import SafetyFilterNode
    from rt_safe_rl.rt.channel import get_channel
    from rt_safe_rl.rt.executor import PeriodicTask, RtExecutor, named_group

    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    app = load_config(None, {'safety': {'ssm': {'require_human': False}}})
    ctx = Context()
    rclpy.init(context=ctx, args=[])
    ns = f'safety_bench_{os.getpid()}'
    node = SafetyFilterNode(config=app, namespace=ns, intra_process=True, context=ctx)
    driver = Node('safety_bench_driver', namespace=ns, context=ctx)
    witness: CFloorLoop | None = None
    try:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise ConfigError(f'safety node configure failed: {node.last_error}')
        model = node.model
        assert model is not None
        ch = get_channel(node.resolve_topic_name(app.topics.policy_action), ActionRecord.size(model.n_joints))
        q = model.home()
        row = np.zeros(ActionRecord.size(model.n_joints))
        target = q.copy()
        state = {'seq': 0}

        def control(deadline_ns: int) -> None:  # robot state + policy action, 1 kHz
            state['seq'] += 1
            seq = state['seq']
            now = time.monotonic_ns()
            node.process_state(now, seq, q, np.zeros(model.n_joints))
            target[0] = q[0] + 0.2 * math.sin(seq * 1e-3)
            ActionRecord.write(row, seq, True, target)
            ch.try_write(row, now)

        ctrl = PeriodicTask(
            'bench_control', named_group(driver, 'control'), round(1e9 / app.control.rate_hz), control
        )
        driver.rt_tasks = lambda: [ctrl]  # type: ignore[attr-defined]
        ex = RtExecutor(app.rt, context=ctx)
        ex.add_node(node)
        ex.add_node(driver)
        if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise ConfigError(f'safety node activate failed: {node.last_error}')
        ctrl.enabled = True
        th = threading.Thread(target=ex.spin, daemon=True)
        th.start()
        # witness: the same 2 kHz sleep loop in C, same CPU, just above the monitor's priority
        # (it preempts the monitor for ~2 us a period): stalls it sees too are the machine's
        mon_grp = app.rt.groups['safety_monitor']
        mon_period_ns = round(1e9 / app.safety.monitor_rate_hz)
        witness_prio = min(98, mon_grp.priority + 5) if mon_grp.is_rt else 1
        try:
            witness = CFloorLoop(
                mon_period_ns, seconds + 1.0, witness_prio, mon_grp.real_cpus[0] if mon_grp.real_cpus else -1
            )
            witness_note = ''
        except RtSafeRlError as err:
            witness, witness_note = None, str(err)
        time.sleep(0.5)
        mon = node._monitor_task
        r0, m0, s0 = mon.runs, mon.misses, mon.skipped
        c0, cm0, cs0 = ctrl.runs, ctrl.misses, ctrl.skipped
        t0_ns = time.monotonic_ns()
        time.sleep(seconds)
        t1_ns = time.monotonic_ns()
        el = (t1_ns - t0_ns) / 1e9
        runs, misses, skipped = mon.runs - r0, mon.misses - m0, mon.skipped - s0
        c_runs, c_misses, c_skipped = ctrl.runs - c0, ctrl.misses - cm0, ctrl.skipped - cs0
        report = ex.report()
        ex.shutdown()
        th.join(5.0)
        ex.destroy()
        floor: dict[str, Any] = {'skipped': witness_note}
        if witness is not None:
            fs = witness.stats(t0_ns, t1_ns)
            f_slots = fs['cycles'] + fs['skipped_periods']
            floor = {
                'priority': witness_prio,
                'fifo': fs['fifo'],
                'missed_periods_per_1e4': 1e4 * fs['skipped_periods'] / max(1, f_slots),
                'late_starts': fs['misses'],
                'over_1ms_late': fs['over_1ms_late'],
                'lateness_us': fs['lateness_us'],
            }
        rate = runs / el
        # a missed period is one in which the monitor did not run: the task's own count of periods
        # skipped after a late start (exact; runs vs wall time would add +-1 run of clock noise)
        per_1e4 = 1e4 * skipped / max(1, runs + skipped)
        return {
            'seconds': round(el, 2),
            'monitor_rate_hz_configured': app.safety.monitor_rate_hz,
            'monitor_runs_per_s': rate,
            'monitor_late_starts': int(misses),
            'monitor_skipped_periods': int(skipped),
            'monitor_missed_periods_per_1e4': per_1e4,
            'control_runs_per_s': c_runs / el,
            'control_late_starts_per_1e4': 1e4 * c_misses / max(1, c_runs),
            'control_missed_periods_per_1e4': 1e4 * c_skipped / max(1, c_runs + c_skipped),
            'filter_cycles': node.cycles,
            'fault': node.status().get('fault'),
            'scheduling': {k: report.get(k) for k in ('granted', 'threads') if k in report},
            'floor_c_same_cpu': floor,
            # the machine was quiet in this window when the C loop missed nothing itself
            'machine_quiet': bool(floor.get('missed_periods_per_1e4') == 0.0),
            'target_met': bool(rate >= 2000 * 0.99 and per_1e4 <= 1.0),
        }
    finally:
        if witness is not None:
            witness.stop()
        node.destroy_node()
        driver.destroy_node()
        if ctx.ok():
            rclpy.shutdown(context=ctx)
