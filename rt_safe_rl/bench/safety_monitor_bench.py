"""``bench safety``'s ``monitor`` part: the real :class:`~rt_safe_rl.nodes.safety_node.SafetyFilterNode`
composed in-process on the :class:`~rt_safe_rl.rt.executor.RtExecutor`, its safety monitor task
beside a 1 kHz control task, with the C floor loop on the same CPU as a witness.

See :mod:`rt_safe_rl.bench.safety_bench` (item 5 of its docstring) for what is reported. The
measured tasks run in RT threads; the set-up and the summary are not RT-safe.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

import numpy as np

from rt_safe_rl.bench.rt_bench import CFloorLoop
from rt_safe_rl.config import load_config
from rt_safe_rl.core.errors import ConfigError, RtSafeRlError
from rt_safe_rl.nodes.msgs import ActionRecord
from rt_safe_rl.rt.channel import get_channel


def _control_task(node: Any, driver: Any, ch: Any, rate_hz: float) -> Any:
    """The 1 kHz control task in ``driver``'s group control: each cycle feeds ``node`` the robot's
    state (home, at rest) and writes a policy action (joint 0 swinging +-0.2 rad) to ``ch``."""
    from rt_safe_rl.rt.executor import PeriodicTask, named_group

    model = node.model
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

    return PeriodicTask('bench_control', named_group(driver, 'control'), round(1e9 / rate_hz), control)


def _start_witness(app: Any, seconds: float) -> tuple[Any, int, str]:
    """The witness: the monitor's 2 kHz sleep loop in C for ``seconds`` + 1 s, on the monitor's
    CPU, just above its priority (it preempts the monitor for ~2 us a period): stalls it sees too
    are the machine's. Returns (the loop or None, its priority, why there is none or '')."""
    mon_grp = app.rt.groups['safety_monitor']
    mon_period_ns = round(1e9 / app.safety.monitor_rate_hz)
    witness_prio = min(98, mon_grp.priority + 5) if mon_grp.is_rt else 1
    try:
        witness = CFloorLoop(
            mon_period_ns, seconds + 1.0, witness_prio, mon_grp.real_cpus[0] if mon_grp.real_cpus else -1
        )
    except RtSafeRlError as err:
        return None, witness_prio, str(err)
    return witness, witness_prio, ''


def _floor(witness: Any, witness_prio: int, witness_note: str, t0_ns: int, t1_ns: int) -> dict[str, Any]:
    """The report's ``floor_c_same_cpu``: what the witness saw between ``t0_ns`` and ``t1_ns``."""
    if witness is None:
        return {'skipped': witness_note}
    fs = witness.stats(t0_ns, t1_ns)
    f_slots = fs['cycles'] + fs['skipped_periods']
    return {
        'priority': witness_prio,
        'fifo': fs['fifo'],
        'missed_periods_per_1e4': 1e4 * fs['skipped_periods'] / max(1, f_slots),
        'late_starts': fs['misses'],
        'over_1ms_late': fs['over_1ms_late'],
        'lateness_us': fs['lateness_us'],
    }


def _engaged(node: Any, ctrl: Any, seconds: float) -> dict[str, Any]:
    """The chain goes silent (the control task stops: no state, no action): the time from the last
    state's receipt + ``state_timeout_s`` to the tick at which the monitor began to brake itself,
    then its runs and missed periods over `seconds` while it brakes and holds (every period)."""
    sup = node.supervisor
    mon = node._monitor_task
    ctrl.enabled = False
    time.sleep(0.002)  # a cycle in flight ends
    rx_ns = sup._state_rx_ns
    timeout_ns = int(sup.cfg.state_timeout_s * 1e9)
    t_end = time.monotonic() + sup.cfg.state_timeout_s + 1.0
    while sup.monitor_engaged_ns <= rx_ns and time.monotonic() < t_end:
        time.sleep(0.001)
    engaged_ns = sup.monitor_engaged_ns
    r0, s0 = mon.runs, mon.skipped
    t0 = time.monotonic()
    time.sleep(seconds)
    el = time.monotonic() - t0
    runs, skipped = mon.runs - r0, mon.skipped - s0
    return {
        'reaction_after_state_timeout_us': (
            round((engaged_ns - rx_ns - timeout_ns) / 1e3, 1) if engaged_ns > rx_ns else None
        ),
        'seconds': round(el, 2),
        'runs_per_s': runs / el,
        'missed_periods_per_1e4': 1e4 * skipped / max(1, runs + skipped),
        'fault': node.status().get('fault'),
    }


def _report(
    app: Any,
    node: Any,
    el: float,
    mon: tuple[int, int, int, int],
    ctrl: tuple[int, int, int],
    sched: dict[str, Any],
    floor: dict[str, Any],
    phases: tuple[Any, dict[str, Any]],
) -> dict[str, Any]:
    """The result: the monitor's and the control task's (runs, late starts, skipped periods) over
    the ``el`` s window, the executor's report ``sched``, the witness's ``floor`` and ``phases``:
    the filter's fault at the end of that window and the ``engaged`` phase (:func:`_engaged`)."""
    fault, engaged = phases
    runs, misses, skipped, deferred = mon
    c_runs, c_misses, c_skipped = ctrl
    rate = runs / el
    # a missed period is one in which the monitor should have run and did not: the task's own
    # count of periods skipped after a late start (exact; runs vs wall time would add +-1 run of
    # clock noise); periods it deferred itself (no timeout could expire) are not missed
    per_1e4 = 1e4 * skipped / max(1, runs + skipped)
    period_s = 1.0 / app.safety.monitor_rate_hz
    reaction = engaged.get('reaction_after_state_timeout_us')
    return {
        'seconds': round(el, 2),
        'monitor_rate_hz_configured': app.safety.monitor_rate_hz,
        'monitor_runs_per_s': rate,
        'monitor_deferred_periods_per_s': deferred / el,
        'monitor_late_starts': int(misses),
        'monitor_skipped_periods': int(skipped),
        'monitor_missed_periods_per_1e4': per_1e4,
        'control_runs_per_s': c_runs / el,
        'control_late_starts_per_1e4': 1e4 * c_misses / max(1, c_runs),
        'control_missed_periods_per_1e4': 1e4 * c_skipped / max(1, c_runs + c_skipped),
        'filter_cycles': node.cycles,
        'fault': fault,
        'engaged': engaged,
        'scheduling': {k: sched.get(k) for k in ('granted', 'threads') if k in sched},
        'floor_c_same_cpu': floor,
        # the machine was quiet in this window when the C loop missed nothing itself
        'machine_quiet': bool(floor.get('missed_periods_per_1e4') == 0.0),
        # healthy: no missed period; silent chain: every period at the monitor rate, the stop
        # begun within one monitor period (+ the machine's wake-up) of the state timeout
        'target_met': bool(
            per_1e4 <= 1.0
            and engaged['runs_per_s'] >= app.safety.monitor_rate_hz * 0.99
            and engaged['missed_periods_per_1e4'] <= 1.0
            and reaction is not None
            and reaction <= 2e6 * period_s
        ),
    }


def bench_monitor(seconds: float) -> dict[str, Any]:
    """The real SafetyFilterNode's monitor task (2 kHz grid) beside a 1 kHz control task
    (RtExecutor) for `seconds`, then with the chain silent (:func:`_engaged`)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.node import Node

    from rt_safe_rl.nodes.safety_node import SafetyFilterNode
    from rt_safe_rl.rt.executor import RtExecutor

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
        ctrl = _control_task(node, driver, ch, app.control.rate_hz)
        driver.rt_tasks = lambda: [ctrl]  # type: ignore[attr-defined]
        ex = RtExecutor(app.rt, context=ctx)
        ex.add_node(node)
        ex.add_node(driver)
        if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise ConfigError(f'safety node activate failed: {node.last_error}')
        ctrl.enabled = True
        th = threading.Thread(target=ex.spin, daemon=True)
        th.start()
        witness, witness_prio, witness_note = _start_witness(app, seconds)
        time.sleep(0.5)
        mon = node._monitor_task
        r0, m0, s0, d0 = mon.runs, mon.misses, mon.skipped, mon.deferred
        c0, cm0, cs0 = ctrl.runs, ctrl.misses, ctrl.skipped
        t0_ns = time.monotonic_ns()
        time.sleep(seconds)
        t1_ns = time.monotonic_ns()
        el = (t1_ns - t0_ns) / 1e9
        mon_d = (mon.runs - r0, mon.misses - m0, mon.skipped - s0, mon.deferred - d0)
        ctrl_d = (ctrl.runs - c0, ctrl.misses - cm0, ctrl.skipped - cs0)
        fault = node.status().get('fault')  # of the healthy window
        engaged = _engaged(node, ctrl, min(seconds, 2.0))
        report = ex.report()
        ex.shutdown()
        th.join(5.0)
        ex.destroy()
        floor = _floor(witness, witness_prio, witness_note, t0_ns, t1_ns)
        return _report(app, node, el, mon_d, ctrl_d, report, floor, (fault, engaged))
    finally:
        if witness is not None:
            witness.stop()
        node.destroy_node()
        driver.destroy_node()
        if ctx.ok():
            rclpy.shutdown(context=ctx)
