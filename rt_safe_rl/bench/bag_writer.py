"""Minimal rosbag2 (mcap) writer for the package's streams, used by ``rt-safe-rl record`` and the
tests (split out of :mod:`rt_safe_rl.bench.bag`, which re-exports :class:`BagWriter`).

Not RT-safe (serialises and writes to disk). No rclpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.bench.bag import FLOAT64_ARRAY, JOINT_STATE, POINT_STAMPED, typestore
from rt_safe_rl.core.errors import BagError


@dataclass
class BagWriter:
    """Minimal mcap writer for JointState / Float64MultiArray / PointStamped streams.

    Not RT-safe (serialises and writes to disk); ``rt-safe-rl record`` feeds it from a queue.
    Use as a context manager; :meth:`close` finalises metadata.yaml.
    """

    path: Path
    _writer: Any = None
    _conns: dict[str, Any] = field(default_factory=dict)
    _types: dict[str, str] = field(default_factory=dict)
    count: int = 0

    def __post_init__(self) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(self.path)
        if self.path.exists():
            raise BagError(f'{self.path} already exists; refusing to overwrite a recording')
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._store = typestore()

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare a topic before writing to it."""
        self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self._store)
        self._types[topic] = msgtype

    def _header(self, stamp_ns: int, frame_id: str) -> Any:
        t = self._store.types
        stamp = t['builtin_interfaces/msg/Time'](
            sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)
        )
        return t['std_msgs/msg/Header'](stamp=stamp, frame_id=frame_id)

    def write_joint_state(
        self,
        topic: str,
        t_ns: int,
        stamp_ns: int,
        names: Sequence[str],
        q: npt.ArrayLike,
        dq: npt.ArrayLike,
        frame_id: str = '',
    ) -> None:
        """Write one JointState (positions rad, velocities rad/s) at receive time ``t_ns``."""
        t = self._store.types
        msg = t[JOINT_STATE](
            header=self._header(stamp_ns, frame_id),
            name=list(names),
            position=np.asarray(q, dtype=np.float64),
            velocity=np.asarray(dq, dtype=np.float64),
            effort=np.zeros(0, dtype=np.float64),
        )
        self._write(topic, t_ns, msg)

    def write_array(self, topic: str, t_ns: int, data: npt.ArrayLike, data_offset: int = 0) -> None:
        """Write one Float64MultiArray at receive time ``t_ns``."""
        t = self._store.types
        layout = t['std_msgs/msg/MultiArrayLayout'](dim=[], data_offset=int(data_offset))
        msg = t[FLOAT64_ARRAY](layout=layout, data=np.asarray(data, dtype=np.float64))
        self._write(topic, t_ns, msg)

    def write_point(
        self, topic: str, t_ns: int, stamp_ns: int, xyz: Sequence[float], frame_id: str = 'world'
    ) -> None:
        """Write one PointStamped (m) at receive time ``t_ns``."""
        t = self._store.types
        pt = t['geometry_msgs/msg/Point'](x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))
        msg = t[POINT_STAMPED](header=self._header(stamp_ns, frame_id), point=pt)
        self._write(topic, t_ns, msg)

    def _write(self, topic: str, t_ns: int, msg: Any) -> None:
        if topic not in self._conns:
            raise BagError(f'topic {topic!r} was not declared with add_topic')
        raw = self._store.serialize_cdr(msg, self._types[topic])
        self._writer.write(self._conns[topic], int(t_ns), raw)
        self.count += 1

    def close(self) -> None:
        """Finish the bag (writes metadata.yaml). Idempotent."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
