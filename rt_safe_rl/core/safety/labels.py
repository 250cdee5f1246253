"""State labels of the safety supervisor: which robot period each accepted joint state is, by its
header stamp (ROS 2 headers carry no sequence number), and the stamp each command is sent with.

:class:`StampLabels` remembers the last :data:`STAMP_RING` accepted states as (header stamp,
label, receipt time). An action names its state by the stamp (:meth:`StampLabels.label_for_stamp`);
a command is sent with the stamp of the state it answers (:meth:`StampLabels.stamp_for_label`);
:func:`next_label` numbers a state without a seq by the robot periods elapsed since the last one.
Also :func:`state_violation` (the measured-state check, numba) and its one-line explanation.

RT-safety: everything but :func:`state_violation_detail` is allocation-free.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

STAMP_RING = 32
"""Accepted states whose header stamp -> label the supervisor remembers (actions name states by stamp)."""


def next_label(last: int, stamp_ns: int, last_stamp_ns: int, period_ns: int) -> int:
    """Label of a state without a seq after the state labelled `last` (stamps [ns], 0 = unset): the
    robot periods elapsed between the stamps, at least one, so the period of a lost state is not
    given to the next one. RT-safe."""
    if stamp_ns and last_stamp_ns and last >= 0:
        return last + max(1, round((stamp_ns - last_stamp_ns) / period_ns))
    return last + 1


class StampLabels:
    """(header stamp, label, receipt time) of the last accepted states (see the module docstring).

    ``named_rx_ns``: receipt time [ns] of the state the last :meth:`label_for_stamp` found (0 none).
    """

    def __init__(self, period_ns: int) -> None:
        self.period_ns = int(period_ns)
        self._stamp = np.zeros(STAMP_RING, dtype=np.int64)
        self._label = np.zeros(STAMP_RING, dtype=np.int64)
        self._rx = np.zeros(STAMP_RING, dtype=np.int64)
        self.clear()

    def clear(self) -> None:
        """Forget every state (a fresh stream)."""
        self._head = 0
        self._stamp.fill(0)
        self._label.fill(-1)
        self.latest_label = -1
        self.latest_stamp_ns = 0
        self.named_rx_ns = 0
        self._ahead_label = -1
        self._ahead_stamp_ns = 0

    def record(self, label: int, stamp_ns: int, rx_ns: int) -> None:
        """State `label` with header stamp `stamp_ns` (0 = none) was accepted at `rx_ns`. RT-safe."""
        self.latest_label = label
        if stamp_ns:
            self.latest_stamp_ns = stamp_ns
            h = self._head
            self._stamp[h], self._label[h], self._rx[h] = stamp_ns, label, rx_ns
            self._head = (h + 1) % STAMP_RING

    def label_for_stamp(self, stamp_ns: int) -> int:
        """The label of the accepted state stamped `stamp_ns`: the latest's + 1 when it is newer
        than every accepted state (not here yet), -1 when older than the last :data:`STAMP_RING`
        ones; `stamp_ns` 0 (or unstamped states): the latest. RT-safe."""
        latest = self.latest_label
        if stamp_ns == 0 or self.latest_stamp_ns == 0:
            return latest
        if stamp_ns > self.latest_stamp_ns:
            self._ahead_label, self._ahead_stamp_ns = latest + 1, stamp_ns  # its exact stamp, for emit
            return latest + 1
        for k in range(STAMP_RING):
            i = (self._head - 1 - k) % STAMP_RING
            if self._stamp[i] == stamp_ns:
                self.named_rx_ns = int(self._rx[i])
                return int(self._label[i])
        return -1

    def stamp_for_label(self, label: int) -> int:
        """Header stamp [ns] of the accepted state labelled `label`; for a label ahead of the latest
        (the monitor braking while states have stopped) the latest's stamp + one period per label
        ahead (the exact stamp when an action named that state); 0 when the states carry no stamps
        or `label` is too old. RT-safe."""
        latest = self.latest_label
        if self.latest_stamp_ns == 0:
            return 0
        if label == self._ahead_label and label > latest:
            return self._ahead_stamp_ns
        if label >= latest:
            return self.latest_stamp_ns + (label - latest) * self.period_ns
        for k in range(STAMP_RING):
            i = (self._head - 1 - k) % STAMP_RING
            if self._label[i] == label:
                return int(self._stamp[i])
        return 0


MONITOR_IDLE_MAX_NS = 10_000_000
"""Longest sleep of the safety monitor while no timeout can expire [ns] (a timeout tightened by a
parameter change, or the first state, is seen within this)."""


def monitor_idle_ns(
    now_ns: int, state_rx_ns: int, state_timeout_ns: int, action_rx_ns: int, action_timeout_ns: int
) -> int:
    """How long [ns] from `now_ns` neither timeout can expire, given the last state's receipt and
    the last action (both recent enough that neither has yet): until the first of receipt +
    timeout, at most :data:`MONITOR_IDLE_MAX_NS`. A new state or action only moves those moments
    later, so a monitor tick that long after this one sees a timeout exactly when a tick every
    period would (within one period of its grid). RT-safe."""
    first = min(state_rx_ns + state_timeout_ns + 1, action_rx_ns + action_timeout_ns + 1)
    return min(first, now_ns + MONITOR_IDLE_MAX_NS) - now_ns


STATE_OK, STATE_NONFINITE, STATE_BEYOND_LIMITS = 0, 1, 2
"""Outcomes of :func:`state_check`."""


@nb.njit(cache=True, nogil=True)
def state_check(q: np.ndarray, dq: np.ndarray, lim: np.ndarray, ptol: float, vtol: float) -> int:
    """STATE_NONFINITE when a measured value is non-finite, STATE_BEYOND_LIMITS when a position or
    velocity is beyond the limits + tolerance, else STATE_OK (first joint first). RT-safe."""
    for j in range(q.shape[0]):
        if not (math.isfinite(q[j]) and math.isfinite(dq[j])):
            return STATE_NONFINITE
        if q[j] < lim[0, j] - ptol or q[j] > lim[1, j] + ptol or abs(dq[j]) > lim[2, j] + vtol:
            return STATE_BEYOND_LIMITS
    return STATE_OK


def state_violation(q: np.ndarray, dq: np.ndarray, lim: np.ndarray, ptol: float, vtol: float) -> bool:
    """True when the measured state is non-finite or beyond the limits + tolerance. RT-safe."""
    return bool(state_check(q, dq, lim, ptol, vtol) != STATE_OK)


def state_violation_detail(q: np.ndarray, dq: np.ndarray, lim: np.ndarray, ptol: float, vtol: float) -> str:
    """One line naming the first joint and value :func:`state_violation` objects to (allocates:
    the fault path only)."""
    for j in range(q.shape[0]):
        if not (math.isfinite(q[j]) and math.isfinite(dq[j])):
            return f'measured state of joint {j} is non-finite (q {q[j]:.6g}, dq {dq[j]:.6g})'
        if q[j] < lim[0, j] - ptol or q[j] > lim[1, j] + ptol:
            return (
                f'measured position of joint {j} {q[j]:.6g} rad beyond [{lim[0, j]:.6g}, {lim[1, j]:.6g}]'
                f' + tolerance {ptol:g}'
            )
        if abs(dq[j]) > lim[2, j] + vtol:
            return (
                f'measured velocity of joint {j} {dq[j]:.6g} rad/s beyond v_max {lim[2, j]:.6g}'
                f' + tolerance {vtol:g}'
            )
    return ''
