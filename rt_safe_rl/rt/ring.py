"""Lock-free single-producer/single-consumer ring of fixed-width float64 records.

The RT thread calls :meth:`SpscRing.try_push` (never blocks, never allocates; returns False and
counts a drop when full). A non-RT reader calls :meth:`SpscRing.drain` into its own preallocated
buffer. Correct for exactly one producer thread and one consumer thread: the producer only writes
``_head`` and the consumer only writes ``_tail``; under CPython's GIL each index store is atomic
and the record is written before the head is published.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class SpscRing:
    """Bounded ring of ``capacity`` records of ``width`` float64 values each."""

    def __init__(self, capacity: int, width: int) -> None:
        if capacity < 2 or width < 1:
            raise ValueError(f'SpscRing needs capacity >= 2 and width >= 1, got {capacity}, {width}')
        self.capacity = int(capacity)
        self.width = int(width)
        self._buf = np.zeros((self.capacity, self.width), dtype=np.float64)
        self._wide = self.width > 2  # try_push_values writes a third value
        self._head = 0  # next slot to write; written by the producer only
        self._tail = 0  # next slot to read; written by the consumer only
        self.dropped = 0  # producer-side count of records lost because the ring was full

    def _next_head(self) -> int:
        """The head index after one more record, or -1 when the ring is full (then counts a drop).

        Producer side only; RT-safe (no allocation). The caller writes the record at ``_head`` and
        then publishes the returned index to ``_head``.
        """
        nxt = self._head + 1
        if nxt == self.capacity:
            nxt = 0
        if nxt == self._tail:
            self.dropped += 1
            return -1
        return nxt

    def try_push(self, record: npt.ArrayLike) -> bool:
        """Append one record (RT-safe: no allocation for a float64 ndarray or scalar input).

        Returns False (and increments ``dropped``) when the ring is full.
        """
        nxt = self._next_head()
        if nxt < 0:
            return False
        self._buf[self._head] = record
        self._head = nxt
        return True

    def try_push_values(self, a: float, b: float, c: float = 0.0) -> bool:
        """Append a record of two or three values without building an array (RT-safe): ``a, b``
        into a width-2 ring, ``a, b, c`` into a wider one (further columns keep what the slot held).

        Returns False (and increments ``dropped``) when the ring is full.
        """
        nxt = self._next_head()
        if nxt < 0:
            return False
        row = self._buf[self._head]
        row[0] = a
        row[1] = b
        if self._wide:
            row[2] = c
        self._head = nxt
        return True

    def __len__(self) -> int:
        return (self._head - self._tail) % self.capacity

    def drain(self, out: npt.NDArray[np.float64]) -> int:
        """Copy up to ``len(out)`` oldest records into ``out`` (shape (n, width)); return count."""
        tail = self._tail
        head = self._head
        avail = (head - tail) % self.capacity
        n: int = min(avail, out.shape[0])
        first = min(n, self.capacity - tail)
        out[:first] = self._buf[tail : tail + first]
        if n > first:
            out[first:n] = self._buf[: n - first]
        self._tail = (tail + n) % self.capacity
        return n
