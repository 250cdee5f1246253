"""Input integrity of the safety supervisor: which joint states are dropped, and when too many
dropped states fail closed.

:func:`order_drop` judges one state against the last accepted one by its robot sequence number
and its header stamp (out of order or a duplicate: dropped; far below: a restart of the robot's
numbering, accepted). :class:`DropBudget` counts the dropped states in a leaky bucket of
``inputs.max_dropped_states`` per ``inputs.drop_window_s``; above it the supervisor fails closed
with ``INPUT_ORDER``.

RT-safety: everything but :meth:`DropBudget.detail` is allocation-free.
"""

from __future__ import annotations

from rt_safe_rl.core.safety.config import InputConfig

SEQ_RESTART_GAP = 1000
"""A state seq this far below the last one is a restart of the robot's numbering (accepted);
closer below (or equal) it is out of order / a duplicate (dropped)."""
STAMP_RESTART_GAP_NS = 1_000_000_000
"""Same for header stamps [ns]."""

KEEP, OUT_OF_ORDER, DUPLICATE = 0, 1, 2


def order_drop(seq: int, last_seq: int, stamp_ns: int, last_stamp_ns: int) -> int:
    """:data:`KEEP`, :data:`OUT_OF_ORDER` or :data:`DUPLICATE` for a state labelled `seq` with
    header stamp `stamp_ns` [ns] (0 = unset) after the last accepted state (`last_seq`, < 0 none;
    `last_stamp_ns` of the last accepted state that had one, 0 none). RT-safe."""
    if last_seq >= 0 and seq <= last_seq and last_seq - seq < SEQ_RESTART_GAP:
        return OUT_OF_ORDER if seq < last_seq else DUPLICATE
    hs = last_stamp_ns
    if stamp_ns and hs and stamp_ns <= hs and hs - stamp_ns < STAMP_RESTART_GAP_NS:
        return OUT_OF_ORDER if stamp_ns < hs else DUPLICATE
    return KEEP


class DropBudget:
    """Dropped joint states: counters and a leaky bucket (see the module docstring). The limits
    come with each call (``safety.inputs`` may be updated live).

    Counters (since :meth:`clear`): ``dropped`` (all), ``duplicates`` (of those, repeats).
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget the counts and empty the bucket (a fresh stream)."""
        self.dropped = 0
        self.duplicates = 0
        self._bucket = 0.0
        self._t_ns = 0

    def count(self, now_ns: int, duplicate: bool, inp: InputConfig) -> bool:
        """Count one dropped state at `now_ns` [ns]; True when the bucket is over the budget of
        `inp` (the caller fails closed). RT-safe."""
        self.dropped += 1
        self.duplicates += int(duplicate)
        leak_per_ns = inp.max_dropped_states / (inp.drop_window_s * 1e9)
        if self._t_ns:
            self._bucket = max(0.0, self._bucket - (now_ns - self._t_ns) * leak_per_ns)
        self._t_ns = now_ns
        self._bucket += 1.0
        return self._bucket > inp.max_dropped_states

    def detail(self, inp: InputConfig) -> str:
        """One line for the INPUT_ORDER stop (allocates: the fault path only)."""
        return (
            f'more than {inp.max_dropped_states} joint states out of order or duplicated within '
            f'{inp.drop_window_s:g} s ({self.dropped} dropped, {self.duplicates} duplicates)'
        )
