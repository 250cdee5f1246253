"""The two message layouts shared by the nodes, the channels and the benches (one place each).

- :class:`ActionRecord`: the policy -> safety action, as a channel row (float64,
  ``[state_seq, valid, q_target_0..n-1]``, channel stamp = the state's stamp) and as a topic
  (``std_msgs/Float64MultiArray``: ``layout.data_offset`` = state seq, ``layout.dim[0].label``
  ``'valid'`` / ``'invalid'``; an invalid action is all-NaN on the topic, so it fails closed
  with any reader). Named offsets instead of a magic ``ACTION_HEADER = 2``.
- :func:`status_message`: the safety status dict -> ``diagnostic_msgs/DiagnosticStatus``;
  :func:`publisher_conflict`: the one-publisher rule on an input topic.
- :class:`JointStateReader`: ``sensor_msgs/JointState`` -> robot-ordered ``q`` [rad], ``dq``
  [rad/s], ``seq``, ``stamp_ns``, with ONE fail-closed rule: a message that does not give every
  robot joint a position (names missing, position too short, no names and the wrong length)
  yields an all-NaN ``q``, which every consumer treats as a non-finite state (stop). A missing or
  wrong-length velocity is estimated by finite differences of consecutive positions over their
  header stamps (receipt times when unstamped) -- never silently zero -- and flagged
  (:attr:`JointStateReader.velocity_estimated`) so the caller can warn or fail closed.

RT-safety: :meth:`ActionRecord.from_msg`, :meth:`JointStateReader.read` and ``accept`` do not
allocate in the steady state (a new joint-name layout allocates once).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SEQ_NONE = -1
"""Sequence number of a state without one (the consumer counts states)."""


class ActionRecord:
    """Layout of the policy -> safety action record (see the module docstring)."""

    SEQ = 0
    """Offset of the state seq the action was computed from."""
    VALID = 1
    """Offset of the validity flag (1.0 valid, 0.0 invalid)."""
    HEADER = 2
    """Offset of the first target value (= number of header slots)."""
    LABEL_VALID = 'valid'
    LABEL_INVALID = 'invalid'

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
    def from_msg(cls, msg: Any, row: np.ndarray) -> None:
        """Topic message (``Float64MultiArray``) -> `row`; a wrong length is invalid. RT-safe."""
        n = row.shape[0] - cls.HEADER
        row[cls.SEQ] = float(msg.layout.data_offset)
        if len(msg.data) == n:
            row[cls.HEADER :] = np.frombuffer(msg.data, dtype=np.float64)
            label = msg.layout.dim[0].label if msg.layout.dim else cls.LABEL_VALID
            row[cls.VALID] = 1.0 if label != cls.LABEL_INVALID else 0.0
        else:
            row[cls.VALID] = 0.0


def parse_seq(frame_id: str) -> int:
    """The robot's state seq from ``header.frame_id`` (decimal), :data:`SEQ_NONE` when absent."""
    if not frame_id:
        return SEQ_NONE
    try:
        v = int(frame_id)
    except ValueError:
        return SEQ_NONE
    return v if v >= 0 else SEQ_NONE


class JointStateReader:
    """Preallocated ``JointState`` -> robot-order arrays (see the module docstring).

    Args:
        joint_names: the robot's joint order.

    After :meth:`read`: ``q`` (n,) [rad], ``dq`` (n,) [rad/s], ``seq`` (:data:`SEQ_NONE` when the
    message has none), ``stamp_ns`` (header stamp, 0 when unset), ``velocity_estimated`` (this
    message had no usable velocity), ``complete`` (every joint had a position), ``last_error``.
    Counters: ``estimated`` (messages whose velocity was estimated).
    """

    def __init__(self, joint_names: list[str]) -> None:
        self.joint_names = list(joint_names)
        n = len(self.joint_names)
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
        self._prev_q = np.zeros(n)
        self._prev_t_ns = -1
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
        h = msg.header
        self.seq = parse_seq(h.frame_id)
        self.stamp_ns = int(h.stamp.sec) * 1_000_000_000 + int(h.stamp.nanosec)
        self._t_ns = self.stamp_ns if self.stamp_ns else rx_ns
        n = self.q.shape[0]
        names = msg.name
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
            dt_ns = self._t_ns - self._prev_t_ns
            if self._prev_t_ns >= 0 and dt_ns > 0:
                np.subtract(self.q, self._prev_q, out=self.dq)
                self.dq *= 1e9 / dt_ns
            else:
                self.dq.fill(0.0)  # first sample: no difference yet (the caller has warned)

    def accept(self) -> None:
        """The consumer used the last state: it is the base of the next velocity estimate."""
        if self.complete:
            np.copyto(self._prev_q, self.q)
            self._prev_t_ns = self._t_ns

    def reset(self) -> None:
        """Forget the previous sample (replay from scratch)."""
        self._prev_t_ns = -1


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
