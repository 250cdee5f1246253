"""Process-wide metrics written by RT threads and read by non-RT readers (monitor, demo, benchmark).

RT writers only touch preallocated state: :class:`StageRecorder.record_ns` pushes one
``(t_end_ns, duration_ns)`` record into an :class:`~rt_safe_rl.rt.ring.SpscRing` and
:class:`Counter.inc` adds to a Python int. Neither allocates or blocks in steady state (a small int
add may allocate for values above 2**30; counters are read as totals, never reset in place).

One reader per stage ring: the registry hands out a single consumer via
:meth:`MetricsRegistry.drain_stage`; readers that only need totals use :meth:`snapshot_counters`.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

from rt_safe_rl.rt.ring import SpscRing

DEFAULT_RING_CAPACITY = 1 << 14  # 16 s of samples at 1 kHz between drains


class Counter:
    """Monotonic event counter (RT-safe `inc`)."""

    __slots__ = ('name', 'value')

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0

    def inc(self, n: int = 1) -> None:
        """Add `n` (RT-safe)."""
        self.value += n


class StageRecorder:
    """Latency samples of one pipeline stage (e.g. 'inference', 'safety', 'e2e', 'period')."""

    __slots__ = ('count', 'name', 'ring')

    def __init__(self, name: str, capacity: int = DEFAULT_RING_CAPACITY) -> None:
        self.name = name
        self.ring = SpscRing(capacity, 2)
        self.count = 0

    def record_ns(self, t_end_ns: int, duration_ns: int) -> None:
        """Record one sample: the stage ended at monotonic `t_end_ns` and took `duration_ns` (RT-safe)."""
        self.ring.try_push_values(float(t_end_ns), float(duration_ns))
        self.count += 1


class Gauge:
    """Last value of a quantity (e.g. human distance in m); RT-safe `set`."""

    __slots__ = ('name', 'value')

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = float('nan')

    def set(self, value: float) -> None:
        """Store the latest value (RT-safe)."""
        self.value = value


class MetricsRegistry:
    """Named counters, gauges and stage recorders of one process. Create at configure time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards creation only, never taken on the RT path
        self.counters: dict[str, Counter] = {}
        self.gauges: dict[str, Gauge] = {}
        self.stages: dict[str, StageRecorder] = {}

    def counter(self, name: str) -> Counter:
        """Get or create a counter (not RT-safe on first call: call at configure)."""
        with self._lock:
            return self.counters.setdefault(name, Counter(name))

    def gauge(self, name: str) -> Gauge:
        """Get or create a gauge (call at configure)."""
        with self._lock:
            return self.gauges.setdefault(name, Gauge(name))

    def stage(self, name: str, capacity: int = DEFAULT_RING_CAPACITY) -> StageRecorder:
        """Get or create a stage recorder (call at configure)."""
        with self._lock:
            return self.stages.setdefault(name, StageRecorder(name, capacity))

    def drain_stage(self, name: str, out: npt.NDArray[np.float64]) -> int:
        """Move pending samples of stage `name` into `out` (n, 2): columns t_end_ns, duration_ns."""
        rec = self.stages.get(name)
        return 0 if rec is None else rec.ring.drain(out)

    def snapshot_counters(self) -> dict[str, int]:
        """Current totals of all counters (non-RT)."""
        return {k: c.value for k, c in list(self.counters.items())}


_REGISTRY = MetricsRegistry()


def registry() -> MetricsRegistry:
    """The process-wide registry shared by composed nodes."""
    return _REGISTRY
