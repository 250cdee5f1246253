"""RT memory: preallocated array/object pools and the garbage-collector policy of the loop.

* :class:`ArrayPool` / :class:`ObjectPool`: everything an RT cycle needs is created at configure
  time; ``try_acquire``/``release`` never allocate (fixed free-list, no list resizing).
* :class:`GcPolicy`: ``gc.collect(); gc.freeze()`` after configure, automatic collection off while
  the RT threads run, young-generation collections done by the non-RT thread
  (:meth:`GcPolicy.maybe_collect`), and a ``gc.callbacks`` hook that *counts any collection that
  happens inside an RT thread* (the proof that none did).
* :func:`heap_blocks` / :func:`count_allocations`: the measurement used by the allocation-free test.

Everything here is pure Python (no rclpy).
"""

from __future__ import annotations

import gc
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar('T')


class ObjectPool(Generic[T]):
    """Fixed pool of `capacity` objects made by `factory` at construction (configure time).

    ``try_acquire()`` returns a free object or None (pool empty, counted in ``exhausted``);
    ``release(obj)`` returns it. Both are RT-safe (no allocation: the free list is a fixed-size
    list indexed by a counter). Use from one thread, or guard externally.
    """

    __slots__ = ('_free', '_top', 'capacity', 'exhausted', 'items')

    def __init__(self, factory: Callable[[], T], capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f'ObjectPool capacity must be >= 1, got {capacity}')
        self.capacity = capacity
        self.items: tuple[T, ...] = tuple(factory() for _ in range(capacity))
        self._free: list[T | None] = list(self.items)
        self._top = capacity  # number of free objects; free ones are _free[0:_top]
        self.exhausted = 0

    def try_acquire(self) -> T | None:
        """A free object, or None when all are in use (never blocks, never allocates)."""
        top = self._top
        if top == 0:
            self.exhausted += 1
            return None
        top -= 1
        obj = self._free[top]
        self._free[top] = None
        self._top = top
        return obj

    def release(self, obj: T) -> None:
        """Give `obj` back (must come from this pool; double release raises ValueError)."""
        top = self._top
        if top >= self.capacity:
            raise ValueError('ObjectPool.release: more releases than acquires')
        self._free[top] = obj
        self._top = top + 1

    @property
    def available(self) -> int:
        """Number of free objects."""
        return self._top


class ArrayPool(ObjectPool[npt.NDArray[Any]]):
    """Pool of `capacity` preallocated arrays of one shape/dtype (zero-filled)."""

    __slots__ = ('dtype', 'shape')

    def __init__(
        self, shape: tuple[int, ...] | int, capacity: int, dtype: npt.DTypeLike = np.float64
    ) -> None:
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.dtype = np.dtype(dtype)
        super().__init__(lambda: np.zeros(self.shape, dtype=self.dtype), capacity)


def heap_blocks() -> int:
    """Live pymalloc blocks of the interpreter (``sys.getallocatedblocks``)."""
    return sys.getallocatedblocks()


def _measure(fn: Callable[[], None], cycles: int) -> tuple[int, int, int]:
    b0 = sys.getallocatedblocks()
    g0 = gc.get_count()[0]
    for _ in range(cycles):
        fn()
    g1 = gc.get_count()[0]
    b1 = sys.getallocatedblocks()
    tracemalloc.start()
    try:
        t0, _ = tracemalloc.get_traced_memory()
        for _ in range(cycles):
            fn()
        t1, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return b1 - b0, g1 - g0, t1 - t0


def _noop() -> None:
    pass


def count_allocations(fn: Callable[[], None], cycles: int, warmup: int = 100) -> dict[str, float]:
    """Run `fn` `cycles` times and measure net heap growth per call (GC off while measuring).

    Returns ``blocks_per_cycle`` (net ``sys.getallocatedblocks`` growth / cycles),
    ``traced_bytes_per_cycle`` (net tracemalloc growth / cycles) and
    ``gc_tracked_allocs_per_cycle`` (net growth of the generation-0 counter: container objects
    kept alive). The harness's own constant overhead is measured with a no-op and subtracted, so
    an allocation-free `fn` gives exactly 0. Not RT-safe (a measurement helper).
    """
    for _ in range(warmup):
        fn()
        _noop()
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        base = _measure(_noop, cycles)
        got = _measure(fn, cycles)
    finally:
        if was_enabled:
            gc.enable()
    return {
        'cycles': cycles,
        'blocks_per_cycle': (got[0] - base[0]) / cycles,
        'traced_bytes_per_cycle': (got[2] - base[2]) / cycles,
        'gc_tracked_allocs_per_cycle': (got[1] - base[1]) / cycles,
    }


class GcPolicy:
    """Garbage-collector policy of the process while RT threads run.

    ``apply()`` (non-RT, after configure): full collection, ``gc.freeze()`` (everything alive now
    is never scanned again), automatic collection off. ``maybe_collect(now_ns)`` (called by the
    non-RT thread): a generation-0/1 collection every ``collect_period_s`` if anything is pending.
    ``restore()`` re-enables automatic collection and unfreezes (so the next ``apply()`` scans
    everything once more: ~50 ms per 200k objects, measured here). A ``gc.callbacks`` hook counts
    collections that start inside a registered RT thread (``rt_collections``: must stay 0).
    """

    def __init__(self, freeze: bool = True, collect_period_s: float = 1.0) -> None:
        self.freeze = freeze
        self.collect_period_ns = int(collect_period_s * 1e9)
        self.rt_thread_ids: set[int] = set()
        self.rt_collections = 0
        self.collections = 0
        self.max_collect_us = 0.0
        self.frozen_objects = 0
        self.applied = False
        self._was_enabled = gc.isenabled()
        self._next_ns = 0
        self._lock = threading.Lock()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == 'start' and threading.get_ident() in self.rt_thread_ids:
            self.rt_collections += 1

    def apply(self) -> None:
        """Collect, freeze, disable automatic collection (idempotent; non-RT)."""
        with self._lock:
            if self.applied:
                return
            self._was_enabled = gc.isenabled()
            if self.freeze:
                gc.collect()
                gc.freeze()
                self.frozen_objects = gc.get_freeze_count()
                gc.disable()
            if self._on_gc not in gc.callbacks:
                gc.callbacks.append(self._on_gc)
            self._next_ns = time.monotonic_ns() + self.collect_period_ns
            self.applied = True

    def register_rt_thread(self) -> None:
        """Mark the calling thread as RT (collections inside it are counted)."""
        self.rt_thread_ids.add(threading.get_ident())

    def maybe_collect(self, now_ns: int) -> bool:
        """Young-generation collection if the period elapsed and objects are pending (non-RT)."""
        if not self.applied or not self.freeze or self.collect_period_ns <= 0 or now_ns < self._next_ns:
            return False
        self._next_ns = now_ns + self.collect_period_ns
        if gc.get_count()[0] == 0:
            return False
        t0 = time.perf_counter_ns()
        gc.collect(1)
        dt_us = (time.perf_counter_ns() - t0) / 1e3
        self.collections += 1
        self.max_collect_us = max(self.max_collect_us, dt_us)
        return True

    def restore(self) -> None:
        """Undo :meth:`apply`: automatic GC back on, and the frozen objects collectable again
        (``gc.unfreeze()``): garbage in reference cycles that was frozen while spinning -- nodes,
        wait sets, whole rclpy contexts with their DDS participants and threads -- would otherwise
        stay alive for the rest of the process (a test run or a node restarted in-process)."""
        with self._lock:
            if not self.applied:
                return
            if self._on_gc in gc.callbacks:
                gc.callbacks.remove(self._on_gc)
            if self.freeze:
                gc.unfreeze()
            if self._was_enabled:
                gc.enable()
            self.applied = False

    def report(self) -> dict[str, Any]:
        """Plain dict for the executor report."""
        return {
            'freeze': self.freeze,
            'automatic_gc_while_running': not self.freeze,
            'frozen_objects': self.frozen_objects,
            'non_rt_collections': self.collections,
            'max_collect_us': round(self.max_collect_us, 1),
            'rt_collections': self.rt_collections,
        }
