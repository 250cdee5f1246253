"""The two message layouts shared by the nodes, the channels and the benches (one place each).

- :class:`ActionRecord`: the policy -> safety action, as a channel row (float64,
  ``[state_seq, valid, q_target_0..n-1]``; ``state_seq`` -1 when the state had none, channel
  stamp = the state's header stamp) and as a topic (``sensor_msgs/JointState``: ``header.stamp`` =
  the stamp of the joint state the action was computed from, ``name`` = the robot's joints,
  ``position`` = the targets [rad]; an invalid action is all-NaN, so it fails closed with any
  reader). No field is repurposed: the state is named by its own stamp. Named offsets instead of a
  magic ``ACTION_HEADER = 2``.
- :func:`status_message`: the safety status dict -> ``diagnostic_msgs/DiagnosticStatus``;
  :func:`publisher_conflict`: the one-publisher rule on an input topic.
- :class:`JointStateReader`: ``sensor_msgs/JointState`` -> robot-ordered ``q`` [rad], ``dq``
  [rad/s], ``seq``, ``stamp_ns``, with ONE fail-closed rule: a message that does not give every
  robot joint a position (names missing, position too short, no names and the wrong length)
  yields an all-NaN ``q``, which every consumer treats as a non-finite state (stop). A missing or
  wrong-length velocity is estimated by finite differences of positions over their header stamps
  (receipt times when unstamped), across at least ``baseline_ns`` (a few robot periods, so
  publishing jitter does not multiply the estimate) -- never silently zero -- and flagged
  (:attr:`JointStateReader.velocity_estimated`) so the caller can warn or fail closed.

RT-safety: :meth:`ActionRecord.from_msg`, :meth:`JointStateReader.read` and ``accept`` do not
allocate in the steady state (a new joint-name layout allocates once).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SEQ_NONE = -1
"""Sequence number of a state without one (the consumer counts states)."""
STAMP_SEARCH_PERIODS = 16
"""How far (robot periods) :meth:`StateStamps.seq_of` looks around a stamp's place in time."""
VELOCITY_RING = 16
"""Accepted samples a :class:`JointStateReader` keeps for its velocity estimate."""


class ActionRecord:
    """Layout of the policy -> safety action record (see the module docstring)."""

    SEQ = 0
    """Offset of the state seq the action was computed from."""
    VALID = 1
    """Offset of the validity flag (1.0 valid, 0.0 invalid)."""
    HEADER = 2
    """Offset of the first target value (= number of header slots)."""

    @classmethod
    def size(cls, n_joints: int) -> int:
        """Row length for `n_joints` targets."""
        return n_joints + cls.HEADER

    @classmethod
    def write(cls, row: np.ndarray, seq: int, valid: bool, target: np.ndarray) -> None:
        """Fill `row` in place. RT-safe."""
        row[cls.SEQ] = float(seq)
        row[cls.VALID] = 1.0 if valid else 0.0
        row[cls.HEADER :] = target

    @classmethod
    def seq(cls, row: np.ndarray) -> int:
        """State seq of the record."""
        return int(row[cls.SEQ])

    @classmethod
    def valid(cls, row: np.ndarray) -> bool:
        """The policy's validity flag."""
        return bool(row[cls.VALID] == 1.0)

    @classmethod
    def target(cls, row: np.ndarray) -> np.ndarray:
        """View of the target values [rad]."""
        return row[cls.HEADER :]

    @classmethod
    def from_msg(cls, msg: Any, row: np.ndarray) -> int:
        """Topic message (``sensor_msgs/JointState``) -> `row` (seq -1: the state is named by its
        stamp); returns the header stamp [ns] (0 unset). A wrong length or a non-finite target is
        invalid (the policy publishes an invalid action as all-NaN). RT-safe."""
        n = row.shape[0] - cls.HEADER
        row[cls.SEQ] = float(SEQ_NONE)
        pos = msg.position
        if len(pos) == n:
            tgt = row[cls.HEADER :]
            tgt[:] = np.frombuffer(pos, dtype=np.float64)
            row[cls.VALID] = 1.0 if math.isfinite(float(tgt.sum())) else 0.0  # NaN / Inf propagate
        else:
            row[cls.VALID] = 0.0
        st = msg.header.stamp
        return int(st.sec) * 1_000_000_000 + int(st.nanosec)

    @classmethod
    def to_msg(cls, msg: Any, view: np.ndarray, stamp_ns: int, valid: bool, target: np.ndarray) -> None:
        """Fill a preallocated ``JointState`` action (``name`` set once by the caller; `view` =
        ``np.frombuffer(msg.position)``, made once): stamp of the state it answers, the targets,
        all-NaN when invalid. RT-safe (no allocation)."""
        set_stamp(msg, stamp_ns)
        if valid:
            view[:] = target
        else:
            view.fill(np.nan)


class JointStateReader:
    """Preallocated ``JointState`` -> robot-order arrays (see the module docstring).

    Args:
        joint_names: the robot's joint order.
        baseline_ns: shortest span of a velocity estimate [ns] (default 4 ms = 4 periods at 1 kHz):
            the difference is taken to the newest accepted sample at least this old (the oldest
            kept one, of :data:`VELOCITY_RING`, when none is).
        match_names: False: ignore ``name`` (the robot's names are unknown; messages are taken in
            order and must have exactly one position per joint).

    After :meth:`read`: ``q`` (n,) [rad], ``dq`` (n,) [rad/s], ``seq`` (always :data:`SEQ_NONE`:
    ROS 2 headers carry no seq; consumers count states), ``stamp_ns`` (header stamp, 0 when
    unset), ``velocity_estimated`` (this message had no usable velocity), ``complete`` (every
    joint had a position), ``last_error``.
    Counters: ``estimated`` (messages whose velocity was estimated).
    """

    def __init__(
        self, joint_names: list[str], baseline_ns: int = 4_000_000, *, match_names: bool = True
    ) -> None:
        self.joint_names = list(joint_names)
        self.match_names = bool(match_names)
        n = len(self.joint_names)
        self.baseline_ns = int(baseline_ns)
        self._ring_q = np.zeros((VELOCITY_RING, n))
        self._ring_t = np.zeros(VELOCITY_RING, dtype=np.int64)
        self._ring_head = 0
        self._ring_count = 0
        self.q = np.zeros(n)
        self.dq = np.zeros(n)
        self.seq = SEQ_NONE
        self.stamp_ns = 0
        self.velocity_estimated = False
        self.complete = False
        self.estimated = 0
        self.last_error = ''
        self._index: np.ndarray | None = None
        self._names_seen: list[str] = []
        self._t_ns = 0

    def _map_names(self, names: list[str]) -> None:
        """Index of each robot joint in the message (first message / changed layout; allocates)."""
        self._names_seen = names
        if names == self.joint_names:
            self._index = None
            return
        try:
            self._index = np.array([names.index(j) for j in self.joint_names], dtype=np.int64)
        except ValueError:
            self._index = np.zeros(0, dtype=np.int64)
            self.last_error = f'joint_states names {names} do not contain the robot joints {self.joint_names}'

    def read(self, msg: Any, rx_ns: int) -> None:
        """Decode `msg` received at `rx_ns` [ns, monotonic] into ``q``, ``dq``, ``seq``, ``stamp_ns``."""
        self.stamp_ns = stamp_ns_of(msg)
        self._t_ns = self.stamp_ns if self.stamp_ns else rx_ns
        n = self.q.shape[0]
        names = msg.name if self.match_names else None
        if names and names != self._names_seen:
            self._map_names(list(names))
        idx = self._index if names else None
        pos, vel = msg.position, msg.velocity
        self.velocity_estimated = False
        if idx is not None:
            ok = idx.shape[0] == n and len(pos) >= int(idx.max()) + 1
            if ok:
                self.q[:] = np.frombuffer(pos, dtype=np.float64)[idx]
                if len(vel) == len(pos):
                    self.dq[:] = np.frombuffer(vel, dtype=np.float64)[idx]
                else:
                    self.velocity_estimated = True
        else:
            ok = len(pos) == n
            if ok:
                self.q[:] = np.frombuffer(pos, dtype=np.float64)
                if len(vel) == n:
                    self.dq[:] = np.frombuffer(vel, dtype=np.float64)
                else:
                    self.velocity_estimated = True
        self.complete = ok
        if not ok:
            self.q.fill(np.nan)  # the one fail-closed rule: a joint without a position -> non-finite
            self.dq.fill(np.nan)
            return
        if self.velocity_estimated:
            self.estimated += 1
            self._estimate_velocity()

    def _estimate_velocity(self) -> None:
        """``dq`` from ``q`` and the newest accepted sample at least ``baseline_ns`` older (else the
        oldest older one; none: 0, the first sample, the caller has warned). RT-safe."""
        t = self._t_ns
        best = -1
        for k in range(self._ring_count):
            i = (self._ring_head - 1 - k) % VELOCITY_RING
            age = t - int(self._ring_t[i])
            if age <= 0:
                continue
            best = i
            if age >= self.baseline_ns:
                break
        if best < 0:
            self.dq.fill(0.0)
            return
        np.subtract(self.q, self._ring_q[best], out=self.dq)
        self.dq *= 1e9 / (t - int(self._ring_t[best]))

    def accept(self) -> None:
        """The consumer used the last state: it is a base of the next velocity estimates."""
        if self.complete:
            h = self._ring_head
            np.copyto(self._ring_q[h], self.q)
            self._ring_t[h] = self._t_ns
            self._ring_head = (h + 1) % VELOCITY_RING
            self._ring_count = min(self._ring_count + 1, VELOCITY_RING)

    def reset(self) -> None:
        """Forget the previous samples (replay from scratch)."""
        self._ring_count = 0


def status_message(name: str, d: dict[str, Any]) -> Any:
    """``safety/status``: level ERROR (latched) / WARN (stopping, holding or limiting) / OK, message
    = fault [: detail] [active constraints], values = every entry of the status dict but
    ``monitor``. Allocates (observers thread)."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    msg = DiagnosticStatus()
    msg.name = name
    if d.get('latched'):
        msg.level = DiagnosticStatus.ERROR
    elif d.get('stopping') or d.get('active'):
        msg.level = DiagnosticStatus.WARN
    else:
        msg.level = DiagnosticStatus.OK
    active = ','.join(d.get('active', []))
    detail = d.get('fault_detail', '')
    msg.message = (
        f'{d.get("fault", "")}' + (f': {detail}' if detail else '') + (f' [{active}]' if active else '')
    )
    msg.values = [KeyValue(key=k, value=str(v)) for k, v in d.items() if k != 'monitor']
    return msg


def publisher_conflict(topic: str, infos: list[Any], allowed: list[str]) -> str:
    """'' when the publishers `infos` (rclpy ``TopicEndpointInfo``) of `topic` are fine: at most one
    when `allowed` is empty, else each one's fully qualified node name in `allowed`; otherwise a
    one-line detail naming them (node names, entity ids of the GIDs). Non-RT."""
    pubs = [f'{i.node_namespace.rstrip("/")}/{i.node_name}' for i in infos]
    bad = [p for p in pubs if p not in allowed] if allowed else (pubs if len(pubs) > 1 else [])
    if not bad:
        return ''
    gids = ', '.join(bytes(i.endpoint_gid[:16]).hex()[-8:] for i in infos)
    why = f'not in safety.inputs.allowed_publishers {allowed}' if allowed else 'expected one'
    return f'{topic}: {len(pubs)} publisher(s) {sorted(pubs)} (gids {gids}); {why}'


def stamp_ns_of(msg: Any) -> int:
    """``header.stamp`` of `msg` in ns (0 = unset). RT-safe."""
    st = msg.header.stamp
    return int(st.sec) * 1_000_000_000 + int(st.nanosec)


def set_stamp(msg: Any, stamp_ns: int) -> None:
    """Set ``header.stamp`` of `msg` from ns. RT-safe."""
    st = msg.header.stamp
    st.sec, st.nanosec = divmod(int(stamp_ns), 1_000_000_000)


class StateStamps:
    """The joint states a robot (the simulator, the fault injector, a latency probe) published, as
    seq <-> header stamp, so that the commands on ``safety/joint_command`` -- which name the state
    they answer by its stamp -- are matched to the robot period they are for.

    Args:
        period_ns: the robot period [ns]. ring: states kept (a power of two).

    :meth:`seq_of` gives the seq of a recorded stamp (searched within :data:`STAMP_SEARCH_PERIODS`
    of where the stamp's time puts it, so stamps off the period grid -- jitter, a faulty driver's
    clock -- are still found), else of the recorded stamp nearest to it within half a period (the
    safety monitor's commands for periods whose state it had not received: last stamp + k
    periods), else the period its time puts it at between recorded states (a period whose state
    was never published: a robot that was late integrated it without publishing), or for a stamp
    newer than every recorded one the period it is for; -1 otherwise (older than the ring).
    RT-safe.
    """

    def __init__(self, period_ns: int, ring: int = 4096) -> None:
        if ring & (ring - 1):
            raise ValueError(f'ring must be a power of two, got {ring}')
        self.period_ns = int(period_ns)
        self._stamps = np.zeros(ring, dtype=np.int64)
        self._mask = ring - 1
        self._last_seq = -1
        self._max_seq = -1
        self._max_stamp_ns = 0

    def record(self, seq: int, stamp_ns: int) -> None:
        """State `seq` was published with header stamp `stamp_ns` (seqs never decrease). RT-safe."""
        self._stamps[seq & self._mask] = stamp_ns
        self._last_seq = seq
        if stamp_ns > self._max_stamp_ns:
            self._max_stamp_ns, self._max_seq = stamp_ns, seq

    def seq_of(self, stamp_ns: int) -> int:
        """The seq of the state stamped `stamp_ns` (see the class docstring). RT-safe."""
        last = self._last_seq
        if last < 0 or stamp_ns <= 0:
            return -1
        ahead = round((stamp_ns - self._max_stamp_ns) / self.period_ns)
        if stamp_ns > self._max_stamp_ns:
            return max(self._max_seq + max(ahead, 1), last + 1)
        guess = self._max_seq + ahead
        lo = max(0, last - self._mask, guess - STAMP_SEARCH_PERIODS)
        best, best_err = -1, self.period_ns // 2
        for s in range(lo, min(last, guess + STAMP_SEARCH_PERIODS) + 1):
            err = abs(int(self._stamps[s & self._mask]) - stamp_ns)
            if err == 0:
                return s  # the first state with it: a later one re-using a stamp is never accepted
            if err < best_err:
                best, best_err = s, err
        if best < 0 and lo <= guess <= last:
            return guess  # on the grid between recorded states: a period the robot published no state for
        return best  # nearest within half a period: a period the safety monitor extrapolated
