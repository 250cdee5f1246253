"""Intra-process zero-copy latest-value channels (policy -> safety -> command hand-off).

rclpy has no intra-process transport and no loaned messages, so nodes composed in one process
hand data over through a :class:`Channel`: a ring of ``slots`` preallocated rows of ``n`` values.
The producer writes a row (``try_write`` copies its ``n`` values, or ``loan`` + ``commit`` lets it
compute straight into the channel's memory), stamps it with a sequence number and a
``CLOCK_MONOTONIC`` time, and wakes every registered consumer (the callback-group threads of
:class:`~rt_safe_rl.rt.executor.TriggeredTask` s). Consumers either copy the latest row
(``try_read(out)``, seqlock-checked) or read it in place through a read-only ``view()``: no
serialization, no allocation.

Concurrency: exactly one producer thread per channel; any number of consumer threads. Under the
GIL each attribute store is atomic; the writer marks a slot invalid before overwriting it and
publishes ``seq`` last, so a reader that sees ``slot_seq(seq) == seq`` after reading has
consistent data. A view of sequence ``s`` stays valid until the producer has written ``slots - 1``
newer rows; check with :meth:`Channel.view_valid`.

Names: :func:`get_channel` keys a process-wide registry by the *resolved* topic name
(``node.resolve_topic_name('policy/action')``), so composed nodes find each other by the same name
they would use for the DDS topic. Pure Python + numpy (no rclpy).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.errors import ConfigError

Waker = Callable[[], None]
_mono = time.monotonic_ns


class Channel:
    """Single-producer, multi-consumer latest-value channel of `n` values of `dtype`.

    Attributes:
        name: registry key (resolved topic name).
        n: values per record.
        seq: sequence number of the latest record (0 = nothing written yet); strictly increasing.
        stamp_ns: ``CLOCK_MONOTONIC`` stamp of the latest record (given by the producer).
        writes: number of records written.
    """

    def __init__(self, name: str, n: int, dtype: npt.DTypeLike = np.float64, slots: int = 4) -> None:
        if n < 1:
            raise ConfigError(f'channel {name!r}: n must be >= 1, got {n}')
        if slots < 2 or slots & (slots - 1):
            raise ConfigError(f'channel {name!r}: slots must be a power of two >= 2, got {slots}')
        self.name = name
        self.n = int(n)
        self.dtype = np.dtype(dtype)
        self.slots = slots
        self._mask = slots - 1
        self._buf = np.zeros((slots, self.n), dtype=self.dtype)
        views = []
        loans = []
        for i in range(slots):
            v = self._buf[i].view()
            v.flags.writeable = False
            views.append(v)
            loans.append(self._buf[i])
        self._views: tuple[npt.NDArray[Any], ...] = tuple(views)
        self._loans: tuple[npt.NDArray[Any], ...] = tuple(loans)
        self._slot_seq: list[int] = [0] * slots
        self._slot_stamp: list[int] = [0] * slots
        self.seq = 0
        self.stamp_ns = 0
        self.write_ns = 0  # monotonic time of the latest write (hand-off latency reference)
        self.writes = 0
        self._wakers: tuple[Waker, ...] = ()
        self._wlock = threading.Lock()  # guards waker registration only (never on the data path)

    # ---- producer side (one thread) -------------------------------------------------------
    def try_write(self, values: npt.ArrayLike, stamp_ns: int) -> int:
        """Copy `values` (``n`` of them) into the next slot, publish it and wake consumers.

        Returns the new sequence number. RT-safe: no allocation for an ndarray of ``n`` values;
        never blocks (waking a consumer is a non-blocking signal).
        """
        seq = self.seq + 1
        slot = seq & self._mask
        self._slot_seq[slot] = -1  # mark in progress (seqlock)
        self._loans[slot][:] = values
        return self._publish(slot, seq, stamp_ns)

    def loan(self) -> npt.NDArray[Any]:
        """Writable row that the next :meth:`commit` publishes (producer computes in place).

        The row may hold stale data; overwrite all ``n`` values. RT-safe (no allocation).
        """
        seq = self.seq + 1
        slot = seq & self._mask
        self._slot_seq[slot] = -1
        return self._loans[slot]

    def commit(self, stamp_ns: int) -> int:
        """Publish the row returned by the last :meth:`loan`; returns the sequence number (RT-safe)."""
        seq = self.seq + 1
        return self._publish(seq & self._mask, seq, stamp_ns)

    def _publish(self, slot: int, seq: int, stamp_ns: int) -> int:
        self._slot_stamp[slot] = stamp_ns
        self._slot_seq[slot] = seq
        self.stamp_ns = stamp_ns
        self.write_ns = _mono()
        self.seq = seq  # publish last
        self.writes += 1
        for wake in self._wakers:
            wake()
        return seq

    # ---- consumer side (any thread) -------------------------------------------------------
    def try_read(self, out: npt.NDArray[Any]) -> tuple[int, int]:
        """Copy the latest record into `out`; return ``(seq, stamp_ns)``.

        ``(0, 0)`` when nothing was written yet; ``(-1, 0)`` if the producer overwrote the slot
        during three consecutive attempts (cannot happen unless the reader is stalled for
        ``slots - 1`` producer periods). RT-safe, never blocks.
        """
        for _ in range(3):
            seq = self.seq
            if seq == 0:
                return 0, 0
            slot = seq & self._mask
            stamp = self._slot_stamp[slot]
            out[:] = self._views[slot]
            if self._slot_seq[slot] == seq:
                return seq, stamp
        return -1, 0

    def view(self) -> npt.NDArray[Any]:
        """Read-only view of the latest record (the producer's memory, no copy; RT-safe).

        Pair with :attr:`seq` read *before* the call and :meth:`view_valid` after use when the
        producer runs in another thread.
        """
        return self._views[self.seq & self._mask]

    def view_of(self, seq: int) -> npt.NDArray[Any]:
        """Read-only view of the slot that holds (or held) record `seq` (RT-safe)."""
        return self._views[seq & self._mask]

    def stamp_of(self, seq: int) -> int:
        """Stamp of record `seq` if its slot still holds it, else -1 (RT-safe)."""
        slot = seq & self._mask
        stamp = self._slot_stamp[slot]
        return stamp if self._slot_seq[slot] == seq else -1

    def view_valid(self, seq: int) -> bool:
        """True while record `seq` has not been overwritten (seqlock check after a view read)."""
        return self._slot_seq[seq & self._mask] == seq

    # ---- wake-up registration (configure time) ---------------------------------------------
    def add_waker(self, wake: Waker) -> None:
        """Call `wake()` after every write (from the producer's thread). Not RT-safe."""
        with self._wlock:
            if wake not in self._wakers:
                self._wakers = (*self._wakers, wake)

    def remove_waker(self, wake: Waker) -> None:
        """Stop calling `wake` (not RT-safe)."""
        with self._wlock:
            self._wakers = tuple(w for w in self._wakers if w != wake)

    @property
    def consumer_count(self) -> int:
        """Number of registered wakers (in-process consumers). 0 = nobody in this process listens."""
        return len(self._wakers)

    def age_ns(self, now_ns: int | None = None) -> int:
        """Time since the latest record's stamp (ns); -1 when nothing was written."""
        if self.seq == 0:
            return -1
        return (time.monotonic_ns() if now_ns is None else now_ns) - self.stamp_ns


_REGISTRY: dict[str, Channel] = {}
_REGISTRY_LOCK = threading.Lock()


def get_channel(name: str, n: int, dtype: npt.DTypeLike = np.float64, slots: int = 4) -> Channel:
    """The process-wide channel `name` (created on first call; configure time, not RT-safe).

    Raises:
        ConfigError: the channel exists with another size or dtype (two nodes disagree).
    """
    if not name:
        raise ConfigError('channel name must not be empty')
    with _REGISTRY_LOCK:
        ch = _REGISTRY.get(name)
        if ch is None:
            ch = Channel(name, n, dtype, slots)
            _REGISTRY[name] = ch
        elif ch.n != n or ch.dtype != np.dtype(dtype):
            raise ConfigError(
                f'channel {name!r} exists with n={ch.n} dtype={ch.dtype}, '
                f'requested n={n} dtype={np.dtype(dtype)}'
            )
        return ch


def drop_channel(name: str) -> None:
    """Remove `name` from the registry (tests, node cleanup). Existing references stay usable."""
    with _REGISTRY_LOCK:
        _REGISTRY.pop(name, None)
