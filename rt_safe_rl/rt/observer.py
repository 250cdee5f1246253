"""Mirror an in-process channel to a ROS topic for observers, decimated and off the RT path.

When nodes hand data over through a :class:`~rt_safe_rl.rt.channel.Channel`, tools outside the
process (``ros2 topic echo``, rosbag2, a monitor in another process) still expect the ROS topic.
:class:`ChannelMirror` publishes the channel's latest record about every ``decimation`` writes from
a task in a low-priority group (``observers`` by default); the message is built and published in
the observer thread -- for a producer on the control grid half a period after its deadlines (off
its cycle: the producer pays only its write, no GIL hand-off inside it), else woken by every
``decimation``-th write.

Why a low-priority RT thread rather than the non_rt executor: every rclpy
SingleThreadedExecutor dispatch holds the GIL for a few hundred microseconds, which the RT threads
feel as lateness; a TriggeredTask wake-up plus ``publish`` holds it for a few microseconds.
Not RT-safe itself (message conversion allocates); never blocks the producer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from rclpy.node import Node

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.rt.channel import Channel
from rt_safe_rl.rt.tasks import PeriodicTask, TriggeredTask, named_group, off_cycle_phase_ns

Fill = Callable[[Any, npt.NDArray[Any], int, int], None]


def fill_float64_multiarray(msg: Any, values: npt.NDArray[Any], seq: int, stamp_ns: int) -> None:
    """Default filler for ``std_msgs/Float64MultiArray``: data = values (no field carries `seq`)."""
    msg.data = values.tolist()


class _MirrorTask(PeriodicTask):
    """The periodic mirror's task: (re)enabling it forgets the records written before, so a
    re-activated node never publishes a record of before its deactivation."""

    def __init__(self, mirror: ChannelMirror, *args: Any, **kwargs: Any) -> None:
        self._mirror = mirror
        super().__init__(*args, **kwargs)

    def _on_enable(self, value: bool) -> None:
        super()._on_enable(value)
        if value and not self._enabled:
            self._mirror._last_seq = self._mirror.channel.seq


class ChannelMirror:
    """Publish `channel` on `topic` about every `decimation` records, from rt group `group`.

    Usage (at configure)::

        self._mirror = ChannelMirror(self, ch, Float64MultiArray, 'my_values', decimation=10,
                                     producer_period_ns=app.control.period_ns)
        ... rt_tasks() returns [..., self._mirror.task]; enable it at activate like other tasks.

    Two ways to run, both in the observer thread:

    * ``producer_period_ns > 0`` and ``decimation > 1`` (a producer on the control grid, e.g. the
      control cycle; pass the control period): a :class:`PeriodicTask` every ``decimation *
      producer_period_ns`` at ``off_cycle_phase_ns(producer_period_ns, slot)`` (half a period after
      the producer's deadlines) publishes the latest record if one was written since the last
      publish (or since the task was enabled); the records in between are not published
      (``coalesced``). The observer thread then runs while the producer sleeps instead of being
      woken by its write and taking the GIL from it mid-cycle. Its misses stay out of the
      registry's control ``deadline_misses``.
    * otherwise: a :class:`TriggeredTask` woken by every `decimation`-th write (the producer's
      write wakes the observer thread); ``decimation=1``: every record, e.g. for a full-rate bag.

    Attributes:
        task: the task to expose in ``rt_tasks()``.
        published: messages published so far; ``skipped``: runs that published nothing (the record
            was being overwritten, or no new record since the last publish); ``coalesced``:
            records written between two publishes of the periodic mirror and not published.
    """

    def __init__(
        self,
        node: Node,
        channel: Channel,
        msg_type: Any,
        topic: str,
        *,
        decimation: int = 10,
        group: str = 'observers',
        qos_depth: int = 10,
        fill: Fill | None = None,
        publisher: Any = None,
        producer_period_ns: int = 0,
        slot: int = 0,
    ) -> None:
        if decimation < 1:
            raise ConfigError(f'ChannelMirror {topic!r}: decimation must be >= 1, got {decimation}')
        if producer_period_ns < 0:
            raise ConfigError(
                f'ChannelMirror {topic!r}: producer_period_ns must be >= 0, got {producer_period_ns}'
            )
        self.channel = channel
        self.msg = msg_type()
        self.fill: Fill = fill if fill is not None else fill_float64_multiarray
        if publisher is None:
            publisher = node.create_publisher(msg_type, topic, qos_depth)
        self.publisher = publisher
        self._buf = np.zeros(channel.n, dtype=channel.dtype)
        self._last_seq = channel.seq
        self.published = 0
        self.skipped = 0
        self.coalesced = 0
        name = f'{node.get_name()}_mirror_{topic.strip("/").replace("/", "_")}'
        self.task: PeriodicTask | TriggeredTask
        if producer_period_ns > 0 and decimation > 1:
            self.task = _MirrorTask(
                self,
                name,
                named_group(node, group),
                decimation * int(producer_period_ns),
                self._publish,
                phase_ns=off_cycle_phase_ns(producer_period_ns, slot),
                count_misses=False,
            )
        else:
            self.task = TriggeredTask(
                name, named_group(node, group), channel, self._publish, decimation=decimation
            )

    def _publish(self, _tick: int) -> None:
        """One mirror run (observer thread): the latest record, unless it was published already."""
        got, stamp = self.channel.try_read(self._buf)
        if got <= 0 or got <= self._last_seq:
            self.skipped += 1
            return
        if self._last_seq and got > self._last_seq + 1:
            self.coalesced += got - self._last_seq - 1
        self._last_seq = got
        self.fill(self.msg, self._buf, got, stamp)
        self.publisher.publish(self.msg)
        self.published += 1
