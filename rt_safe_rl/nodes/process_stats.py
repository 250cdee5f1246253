"""Per-process statistics publisher: every RT process publishes its own metrics registry (stage
percentiles, rates, counters, gauges) on ``monitor.stats.topic`` (``rt_stats``, relative: the
namespace applies) as a ``diagnostic_msgs/DiagnosticArray`` in the layout documented in
:mod:`rt_safe_rl.core.monitoring.process_stats`, so a :class:`~rt_safe_rl.nodes.monitor_node.MonitorNode`
in another process reports the same components with the same numbers as in-process.

It runs as a :class:`~rt_safe_rl.rt.executor.PeriodicTask` (``monitor.stats.period_s``) in the
low-priority ``observers`` group, like :class:`~rt_safe_rl.rt.observer.ChannelMirror`: never on the
RT path; the RT threads only push into their preallocated rings. It drains the rings through the
process's one :func:`~rt_safe_rl.core.monitoring.reader_for` reader, which an in-process monitor
shares (one reader per ring).

Attach once per process: :func:`attach_process_stats` (called by ``nodes._sim_base.run_node`` and
``bringup.compose``). Not RT-safe itself (message building allocates); never blocks an RT thread.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.monitoring import ProcessStats, encode_process_stats, reader_for
from rt_safe_rl.core.monitoring.process_stats import process_source_id
from rt_safe_rl.rt.executor import OFF_CYCLE_SLOTS, PeriodicTask, off_cycle_phase_ns
from rt_safe_rl.rt.metrics import MetricsRegistry, registry

GROUP = 'observers'
GIL_YIELD_S = 20e-6

_ATTACHED: weakref.WeakKeyDictionary[Any, ProcessStatsPublisher] = weakref.WeakKeyDictionary()


def to_message(ps: ProcessStats, msg: Any = None) -> Any:
    """``diagnostic_msgs/DiagnosticArray`` of `ps` (statuses as :func:`encode_process_stats`)."""
    msg = DiagnosticArray() if msg is None else msg
    msg.status = [
        DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name=name,
            message=text,
            hardware_id=hw,
            values=[KeyValue(key=k, value=v) for k, v in values],
        )
        for name, hw, text, values in encode_process_stats(ps)
    ]
    return msg


def from_message(msg: Any) -> list[tuple[str, str, str, list[tuple[str, str]]]]:
    """The records of a received ``rt_stats`` message (input of ``decode_process_stats``)."""
    return [(s.name, s.hardware_id, s.message, [(kv.key, kv.value) for kv in s.values]) for s in msg.status]


class ProcessStatsPublisher:
    """Publishes this process's statistics every ``monitor.stats.period_s`` from rt group `group`.

    Args:
        node: hosts the publisher (any node of the process; its namespace applies to the topic).
        executor: the process's RtExecutor (the task is added to it; node names come from it).
        app: the app config (``monitor.stats``, ``monitor.window_s``, ``monitor.window_capacity``).
        metrics: registry to publish (default: the process-wide one).

    Attributes:
        task: the PeriodicTask (enabled at once); ``published``: messages sent so far.
    """

    def __init__(
        self,
        node: Any,
        executor: Any,
        app: Any,
        *,
        metrics: MetricsRegistry | None = None,
        group: str = GROUP,
    ) -> None:
        mon = app.monitor
        self.window_s = float(mon.window_s)
        self.source = process_source_id()
        self.reader = reader_for(metrics if metrics is not None else registry(), mon.window_capacity)
        self._executor = executor
        self._node = node
        self.publisher = node.create_publisher(DiagnosticArray, mon.stats.topic, 10)
        self.topic = self.publisher.topic_name
        self.published = 0
        self._msg = DiagnosticArray()
        self.task = PeriodicTask(
            'process_stats',
            group,
            round(mon.stats.period_s * 1e9),
            self._tick,
            phase_ns=off_cycle_phase_ns(app.control.period_ns, OFF_CYCLE_SLOTS['process_stats']),
        )
        executor.add_task(self.task)
        self.task.enabled = True

    def _node_names(self) -> list[str]:
        try:
            return [n.get_name() for n in self._executor.get_nodes()]
        except Exception:
            return []

    def snapshot(self) -> ProcessStats:
        """Drain the rings and take the snapshot the next message carries (non-RT)."""
        self.reader.drain(lambda: time.sleep(GIL_YIELD_S))
        return ProcessStats.from_reader(
            self.reader, time.monotonic_ns(), self.window_s, source=self.source, nodes=self._node_names()
        )

    def _tick(self, deadline_ns: int) -> None:
        ps = self.snapshot()
        msg = to_message(ps, self._msg)
        msg.header.stamp = self._node.get_clock().now().to_msg()
        self.publisher.publish(msg)
        self.published += 1


def attach_process_stats(executor: Any, nodes: Sequence[Any], app: Any) -> ProcessStatsPublisher | None:
    """Attach the process's statistics publisher to `executor` (once per executor; later calls
    return the first). None when ``monitor.stats.enabled`` is false, there is no node, or the
    config has no ``observers`` rt group (logged on the first node)."""
    if executor in _ATTACHED:
        return _ATTACHED[executor]
    if not nodes or not app.monitor.stats.enabled:
        return None
    try:
        pub = ProcessStatsPublisher(nodes[0], executor, app)
    except ConfigError as err:
        nodes[0].get_logger().warning(f'process statistics ({app.monitor.stats.topic}) not published: {err}')
        return None
    _ATTACHED[executor] = pub
    return pub
