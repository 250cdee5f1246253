"""FilterRequests: what other threads ask of the safety filter between two cycles.

A monitor, a deadline checker, a signal handler or a service thread may ask for a stop, a reset, a
re-synchronisation or a new configuration at any time; the filter's step (the RT thread) takes
them at the start of its next cycle. Every request is written, and read-and-cleared, under one
lock held for a few bytecodes, so none is lost to a thread switch between a read and its clear.

Stop requests come in two kinds, each in its own slot:

* **events** (a controlled stop, a deadline miss, an input out of order, a competing publisher):
  the first one is kept until a step takes it (it is the cause; a later one never replaces it);
* **conditions** (:data:`REEVALUATED`: a stale state, a state out of limits, the policy's
  silence): flagged by a monitor while they hold; the latest one is kept. One flagged before an
  accepted reset applies is void then: the step and the monitor see it again if it still holds.

:attr:`FilterRequests.latch_gen` counts the latches and the events taken into a latch in force; a
reset is bound to the count its caller judged the latch at (:meth:`FilterRequests.try_request_reset`),
so a stop that came in between refuses it. The step thread is its only writer.
"""

from __future__ import annotations

import threading
from typing import Any

from rt_safe_rl.core.safety.report import FaultCode

REEVALUATED = frozenset(
    int(c) for c in (FaultCode.ACTION_TIMEOUT, FaultCode.STALE_STATE, FaultCode.STATE_OUT_OF_LIMITS)
)
"""Conditions a monitor flags while they hold (not events); re-evaluated when a reset applies."""


class FilterRequests:
    """The request slots of one :class:`~rt_safe_rl.core.safety.filter.SafetyFilter`.

    Writers (any thread): :meth:`trigger`, :meth:`request_config`, :meth:`request_resync`,
    :meth:`try_request_reset`. Reader (the step, RT thread): :meth:`any` (no lock) then
    :meth:`take`. Every method is RT-safe (no allocation; the lock is held for a few bytecodes).
    """

    __slots__ = ('_lock', 'cond', 'config', 'event', 'latch_gen', 'reset', 'resync')

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.event = 0  # FaultCode of the first pending stop event (0: none)
        self.cond = 0  # FaultCode of the latest pending condition (0: none)
        self.reset = False
        self.resync = False
        self.config: Any = None  # prepared (lim, sp, ws, SafetyConfig) of update_config, or None
        self.latch_gen = 0  # +1 at each latch and each event taken into a latch in force

    def trigger(self, code: int) -> None:
        """A stop request: a condition replaces the pending condition; an event is kept only when
        none is pending (the first one is the cause)."""
        with self._lock:
            if code in REEVALUATED:
                self.cond = code
            elif self.event == 0:
                self.event = code

    def request_config(self, prepared: Any) -> None:
        """A new configuration, already validated and prepared, for the next step."""
        with self._lock:
            self.config = prepared

    def request_resync(self) -> None:
        """A re-synchronisation at the next step."""
        with self._lock:
            self.resync = True

    def try_request_reset(self, latch_gen: int) -> bool:
        """Ask for the latch to be cleared at the next step; False (nothing asked) when a stop
        event is pending or a stop latched / was taken into the latch since the caller judged
        it at `latch_gen`."""
        with self._lock:
            if self.event or self.latch_gen != latch_gen:
                return False
            self.reset = True
            return True

    def any(self) -> bool:
        """Something was asked (read without the lock: a request set meanwhile waits one step)."""
        return bool(self.reset or self.resync or self.event or self.cond or self.config is not None)

    def take(self, latched: bool) -> tuple[Any, bool, bool, int, int]:
        """Read and clear every slot: (config or None, reset, resync, event, condition). An event
        taken while the filter is `latched` advances :attr:`latch_gen` in the same critical
        section, so a reset checked before it cannot slip in between. Step thread only."""
        with self._lock:
            taken = (self.config, self.reset, self.resync, self.event, self.cond)
            if self.event and latched:
                self.latch_gen += 1
            self.config = None
            self.reset = self.resync = False
            self.event = self.cond = 0
        return taken
