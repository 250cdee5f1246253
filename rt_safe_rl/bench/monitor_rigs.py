"""The three loop layouts of ``rt-safe-rl bench monitor`` (see :mod:`rt_safe_rl.bench.monitor_bench`):
building each one's nodes, executor and spinning thread, and tearing them down. Not RT-safe (a tool).
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rt_safe_rl.bringup import compose, select_nodes
from rt_safe_rl.config import deep_merge, load_config
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.rt.metrics import registry as _process_registry


@dataclass
class Rig:
    """One loop layout, built and not yet spinning.

    Attributes:
        node: the MonitorNode under test (configured by the caller unless ``comp`` is set).
        loop: what measures e2e (``mark``/``between``): the synthetic loop or the sim robot's.
        ex: the executor that spins ``node`` (and the loop, in 'rt' and 'pipeline').
        spinner: the (unstarted) thread that spins ``ex``.
        misses: deadline misses of the loop so far (count).
        comp: the bringup composition ('pipeline' only).
        rate_hz: the loop's rate (Hz) when the rig sets it (``control.rate_hz`` in 'pipeline');
            None: the requested one.
        extra_nodes: further nodes to destroy at the end.
    """

    node: Any
    loop: Any
    ex: Any
    spinner: threading.Thread
    misses: Callable[[], int]
    comp: Any = None
    rate_hz: float | None = None
    extra_nodes: list[Any] = field(default_factory=list)


def _nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """Dotted monitor overrides ('a.b' -> v) as a nested mapping ({'a': {'b': v}})."""
    nested: dict[str, Any] = {}
    for k, v in overrides.items():
        cur = nested
        *head, last = k.split('.')
        for h in head:
            cur = cur.setdefault(h, {})
        cur[last] = v
    return nested


def pipeline_rig(ctx: Any, port: int, monitor_overrides: dict[str, Any], cap: int) -> Rig:
    """The real closed loop composed by bringup (sim robot, human, operator, safety, policy,
    monitor) on the RtExecutor; e2e from the robot's own seq-matched measurement (``cap`` samples).
    The monitor's metrics serve on ``port``; the monitor is left inactive."""
    import rclpy

    from rt_safe_rl.bench.monitor_bench import RobotE2E  # lazy: cycle: monitor_bench imports monitor_rigs

    nested = _nested(monitor_overrides)
    app = load_config(None, {'monitor': deep_merge(nested, {'metrics': {'port': port}})})
    comp = compose(app, select_nodes(with_sim=True, with_monitor=True), context=ctx)
    errors = comp.start()
    if errors:
        comp.destroy()
        rclpy.shutdown(context=ctx)
        raise RtSafeRlError(f'monitor bench: pipeline nodes not active: {errors}')
    node = comp.nodes['monitor']
    node.trigger_deactivate()  # segments switch it on and off
    loop = RobotE2E(comp.nodes['sim_robot'], cap, _process_registry())
    ex: Any = comp.executor
    spinner = threading.Thread(target=ex.spin, name='rt_spin', daemon=True)
    miss_counter = _process_registry().counter('deadline_misses')

    def misses() -> int:
        return int(miss_counter.value)

    return Rig(node, loop, ex, spinner, misses, comp=comp, rate_hz=app.control.rate_hz)


def _rt_overrides(spin_us: int) -> dict[str, Any]:
    """Config overrides giving the 'control' group (and the groups sharing its thread) ``spin_us``
    (us); none when ``spin_us`` < 0 (keep the shipped value)."""
    if spin_us < 0:
        return {}
    shipped = load_config(None).rt.groups  # the control group and the groups sharing its thread must agree
    return {
        'rt': {
            'groups': {
                n: {'spin_us': spin_us} for n, g in shipped.items() if n == 'control' or g.thread == 'control'
            }
        }
    }


def rt_rig(ctx: Any, node: Any, loop: Any, spin_us: int) -> Rig:
    """Production layout: ``loop`` is a PeriodicTask in the 'control' RT group of the RtExecutor
    (rt section of the shipped config), the monitor ``node`` runs in its non-RT group."""
    import rclpy

    from rt_safe_rl.rt.executor import PeriodicTask, RtExecutor

    rt_cfg = load_config(None, _rt_overrides(spin_us)).rt

    def cycle(deadline_ns: int) -> None:
        loop.step(deadline_ns)

    task = PeriodicTask('bench_loop', 'control', loop.period_ns, cycle, enabled=True)
    loop_node = rclpy.create_node('monitor_bench_loop', context=ctx)
    loop_node.rt_tasks = lambda: [task]  # type: ignore[attr-defined]
    ex = RtExecutor(rt_cfg, context=ctx)
    ex.add_node(loop_node)
    ex.add_node(node)
    spinner = threading.Thread(target=ex.spin, name='rt_spin', daemon=True)

    def misses() -> int:
        return int(task.misses)

    return Rig(node, loop, ex, spinner, misses, extra_nodes=[loop_node])


def thread_rig(ctx: Any, node: Any, loop: Any, stop: threading.Event) -> Rig:
    """``loop`` in a plain thread (started by the caller), the monitor ``node`` on a
    SingleThreadedExecutor spun until ``stop`` is set."""
    from rclpy.executors import SingleThreadedExecutor

    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)

    def spin() -> None:
        while not stop.is_set():
            ex.spin_once(timeout_sec=0.1)

    spinner = threading.Thread(target=spin, name='monitor_exec', daemon=True)

    def misses() -> int:
        return int(loop.misses)

    return Rig(node, loop, ex, spinner, misses)


def build_rig(
    executor: str,
    ctx: Any,
    port: int,
    monitor_overrides: dict[str, Any],
    reg: Any,
    loop: Any,
    stop: threading.Event,
    cap: int,
    spin_us: int,
) -> Rig:
    """The rig of ``executor`` ('pipeline', 'rt' or 'thread'); for 'rt' and 'thread' a MonitorNode
    with ``monitor_overrides`` serving metrics on ``port`` and recording into ``reg`` around the
    synthetic ``loop`` (``cap``: e2e samples the pipeline's robot loop keeps)."""
    import rclpy
    from rclpy.parameter import Parameter

    from rt_safe_rl.nodes.monitor_node import MonitorNode

    if executor == 'pipeline':
        return pipeline_rig(ctx, port, monitor_overrides, cap)
    if executor not in ('rt', 'thread'):
        rclpy.shutdown(context=ctx)
        raise RtSafeRlError(f"monitor bench: executor must be 'pipeline', 'rt' or 'thread', got {executor!r}")
    params = [Parameter('monitor.metrics.port', value=port)]
    params += [Parameter(f'monitor.{k}', value=v) for k, v in monitor_overrides.items()]
    node = MonitorNode(context=ctx, parameter_overrides=params, node_name='monitor_bench', registry=reg)
    if executor == 'rt':
        return rt_rig(ctx, node, loop, spin_us)
    return thread_rig(ctx, node, loop, stop)


def shut_down(
    rig: Rig, executor: str, stop: threading.Event, ctx: Any, scraper: subprocess.Popen[bytes]
) -> None:
    """Stop the metrics ``scraper`` process, the loop and the executor, destroy the nodes, shut the
    context down; in 'rt' and 'pipeline' the RtExecutor's RT grants go to ``rig.loop.rt_granted``."""
    import rclpy

    scraper.terminate()
    scraper.wait(timeout=5)
    rt_report: dict[str, Any] = {}
    if executor == 'thread':
        rig.loop.stop()
    stop.set()
    rig.ex.shutdown()
    rig.spinner.join(timeout=5)
    if executor in ('rt', 'pipeline'):
        rt_report = rig.ex.report()
    if rig.comp is not None:
        rig.comp.destroy()
    else:
        if executor == 'rt':
            rig.ex.destroy()
        rig.node.destroy_node()
    for n in rig.extra_nodes:
        n.destroy_node()
    rclpy.shutdown(context=ctx)
    if executor in ('rt', 'pipeline'):
        th = rt_report.get('threads', {})
        granted = {n: th[n].get('granted') for n in ('control', 'sim') if n in th}
        rig.loop.rt_granted = f'RtExecutor: {granted}'
