"""Mirror an in-process channel to a ROS topic for observers, decimated and off the RT path.

When nodes hand data over through a :class:`~rt_safe_rl.rt.channel.Channel`, tools outside the
process (``ros2 topic echo``, rosbag2, a monitor in another process) still expect the ROS topic.
:class:`ChannelMirror` publishes the channel's latest record every ``decimation`` writes from a
:class:`~rt_safe_rl.rt.executor.TriggeredTask` in a low-priority group (``observers`` by
default), so the producer's RT thread only pays a counter increment per write; the message is
built and published in the observer thread.

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
from rt_safe_rl.rt.executor import TriggeredTask, named_group

Fill = Callable[[Any, npt.NDArray[Any], int, int], None]


def fill_float64_multiarray(msg: Any, values: npt.NDArray[Any], seq: int, stamp_ns: int) -> None:
    """Default filler for ``std_msgs/Float64MultiArray``: data = values (no field carries `seq`)."""
    msg.data = values.tolist()


class ChannelMirror:
    """Publish `channel` on `topic` every `decimation` records, from rt group `group`.

    Usage (at configure)::

        self._mirror = ChannelMirror(self, ch, Float64MultiArray, 'my_values', decimation=10)
        ... rt_tasks() returns [..., self._mirror.task]; enable it at activate like other tasks.

    Attributes:
        task: the :class:`TriggeredTask` to expose in ``rt_tasks()``.
        published: messages published so far; ``skipped``: runs where the record had already
            been overwritten (the observer thread was too slow; nothing published for it).
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
    ) -> None:
        if decimation < 1:
            raise ConfigError(f'ChannelMirror {topic!r}: decimation must be >= 1, got {decimation}')
        self.channel = channel
        self.msg = msg_type()
        self.fill: Fill = fill if fill is not None else fill_float64_multiarray
        if publisher is None:
            publisher = node.create_publisher(msg_type, topic, qos_depth)
        self.publisher = publisher
        self._buf = np.zeros(channel.n, dtype=channel.dtype)
        self.published = 0
        self.skipped = 0
        self.task = TriggeredTask(
            f'{node.get_name()}_mirror_{topic.strip("/").replace("/", "_")}',
            named_group(node, group),
            channel,
            self._publish,
            decimation=decimation,
        )

    def _publish(self, seq: int) -> None:
        got, stamp = self.channel.try_read(self._buf)
        if got <= 0:
            self.skipped += 1
            return
        self.fill(self.msg, self._buf, got, stamp)
        self.publisher.publish(self.msg)
        self.published += 1
