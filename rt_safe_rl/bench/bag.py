"""rosbag2 reading (mcap and sqlite3, via ``rosbags``) for the replay benchmark, with clear errors.

:func:`inspect_bag` lists what a bag holds (topics, types, counts, whether each type can be
decoded); :func:`load_joint_states` and :func:`load_side_stream` decode the chosen topics into
preallocated numpy arrays *before* any timing starts, so the replay loop itself never touches the
bag. :func:`write_bag` writes an mcap bag (used by ``rt-safe-rl record`` and the tests).

Every expected failure raises :class:`~rt_safe_rl.core.errors.BagError` with what was found and
what was expected: missing path, a split bag without ``metadata.yaml``, a corrupt or truncated
file, service-event or unknown-type topics, no matching topic, JointState names that do not match
the robot's joints. Not RT-safe (file I/O, allocation): configure time only. No rclpy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.errors import BagError

JOINT_STATE = 'sensor_msgs/msg/JointState'
FLOAT64_ARRAY = 'std_msgs/msg/Float64MultiArray'
POINT_STAMPED = 'geometry_msgs/msg/PointStamped'
STORAGE_SUFFIXES = {'.mcap': 'mcap', '.db3': 'sqlite3'}

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    store = Stores.ROS2_KILTED if hasattr(Stores, 'ROS2_KILTED') else Stores.LATEST
    return get_typestore(store)


_TYPESTORE: Any = None


def typestore() -> Any:
    """The process-wide rosbags typestore (ROS 2 Kilted message definitions)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        _TYPESTORE = _typestore()
    return _TYPESTORE


def _normalize_type(msgtype: str) -> str:
    """'pkg/Type' (old style) -> 'pkg/msg/Type'."""
    parts = msgtype.split('/')
    if len(parts) == 2:
        return f'{parts[0]}/msg/{parts[1]}'
    return msgtype


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag.

    Attributes:
        name: topic name as recorded.
        msgtype: message type as recorded (``pkg/msg/Type``).
        count: number of messages.
        decodable: the type is in the ROS 2 typestore or defined in the bag.
        service_event: a service-event channel (``.../_service_event``, ``*/srv/*_Event``).
    """

    name: str
    msgtype: str
    count: int
    decodable: bool
    service_event: bool

    def describe(self) -> str:
        """One line for listings: name, type, count and what is wrong with it, if anything."""
        note = ''
        if self.service_event:
            note = '  [service events: not replayable]'
        elif not self.decodable:
            note = '  [unknown type: not in the ROS 2 typestore and not defined in the bag]'
        return f'{self.name} ({self.msgtype}, {self.count} msgs){note}'


@dataclass(frozen=True)
class BagInfo:
    """What :func:`inspect_bag` found.

    Attributes:
        path: the bag (directory or single storage file).
        storage: ``mcap`` or ``sqlite3``.
        files: the storage files, in order.
        start_ns / end_ns: first / last receive time (ns since the epoch, bag clock).
        message_count: all messages of all topics.
        topics: per-topic information.
        sha256: SHA-256 over the storage files (and metadata.yaml), in order.
        read_files_directly: the directory reader cannot match the bag's connections (QoS
            metadata differs from the storage, seen in old rosbag2 bags), so storage files are
            read one by one.
    """

    path: Path
    storage: str
    files: tuple[Path, ...]
    start_ns: int
    end_ns: int
    message_count: int
    topics: tuple[TopicInfo, ...]
    sha256: str
    read_files_directly: bool = False

    @property
    def duration_s(self) -> float:
        """Recorded duration in seconds."""
        return max(0, self.end_ns - self.start_ns) / 1e9

    def topic(self, name: str) -> TopicInfo | None:
        """The topic called ``name`` (leading '/' optional), or None."""
        for t in self.topics:
            if t.name == name or t.name.lstrip('/') == name.lstrip('/'):
                return t
        return None

    def of_type(self, msgtype: str) -> list[TopicInfo]:
        """Topics carrying ``msgtype``."""
        return [t for t in self.topics if _normalize_type(t.msgtype) == msgtype]

    def listing(self) -> str:
        """Multi-line human-readable listing of the topics."""
        lines = [f'{self.path} ({self.storage}, {self.message_count} msgs, {self.duration_s:.3f} s):']
        lines += [f'  {t.describe()}' for t in self.topics] or ['  (no topics)']
        return '\n'.join(lines)

    def short_listing(self) -> str:
        """The topics in one line, for error messages."""
        return '; '.join(t.describe() for t in self.topics) or 'no topics'

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (for report metadata)."""
        return {
            'path': str(self.path),
            'storage': self.storage,
            'files': [p.name for p in self.files],
            'duration_s': self.duration_s,
            'message_count': self.message_count,
            'sha256': self.sha256,
            'topics': [{'name': t.name, 'type': t.msgtype, 'count': t.count} for t in self.topics],
        }


def sha256_files(files: Sequence[Path]) -> str:
    """SHA-256 over the concatenated contents of ``files`` (hex)."""
    h = hashlib.sha256()
    for f in files:
        with open(f, 'rb') as fh:
            for block in iter(lambda: fh.read(1 << 20), b''):
                h.update(block)
    return h.hexdigest()


def _storage_files(p: Path) -> list[Path]:
    return sorted(x for x in p.iterdir() if x.suffix in STORAGE_SUFFIXES and x.is_file())


def _resolve_path(path: str | Path) -> tuple[Path, list[Path]]:
    """Validate the bag path; return (path to open, storage files) or raise BagError."""
    p = Path(path).expanduser()
    if not p.exists():
        raise BagError(
            f'bag not found: {p} (expected a rosbag2 directory with metadata.yaml, '
            f'or a single .mcap/.db3 file)'
        )
    if p.is_file():
        if p.suffix not in STORAGE_SUFFIXES:
            raise BagError(f'{p}: not a rosbag2 storage file (expected .mcap or .db3, got {p.suffix!r})')
        return p, [p]
    files = _storage_files(p)
    if not (p / 'metadata.yaml').is_file():
        if len(files) > 1:
            names = ', '.join(f.name for f in files)
            raise BagError(
                f'{p}: split bag without metadata.yaml: found {len(files)} storage files ({names}); '
                f'their order and topics are unknown. Recreate the metadata (`ros2 bag reindex {p}`) '
                f'or pass one file, e.g. {files[0]}'
            )
        if len(files) == 1:
            return files[0], files
        raise BagError(f'{p}: not a rosbag2 bag: no metadata.yaml and no .mcap/.db3 file inside')
    return p, files


def _is_service_event(name: str, msgtype: str) -> bool:
    return name.endswith('/_service_event') or ('/srv/' in msgtype and msgtype.endswith('_Event'))


def _decodable(conn: Any, store: Any) -> bool:
    msgtype = _normalize_type(conn.msgtype)
    if msgtype in store.fielddefs:
        return True
    msgdef = getattr(conn, 'msgdef', None)
    return bool(msgdef is not None and getattr(msgdef, 'data', ''))


def _open_reader(path: Path) -> Any:
    from rosbags.rosbag2 import Reader

    try:
        reader = Reader(path)
        reader.open()
    except BagError:
        raise
    except Exception as err:
        raise BagError(
            f'{path}: cannot open bag: {type(err).__name__}: {err} (corrupt, truncated or not a rosbag2 bag?)'
        ) from None
    return reader


def inspect_bag(path: str | Path) -> BagInfo:
    """Open a bag and list its topics (no message is decoded).

    Raises:
        BagError: missing path, split bag without metadata, unreadable/corrupt storage.
    """
    open_path, files = _resolve_path(path)
    reader = _open_reader(open_path)
    store = typestore()
    try:
        topics = tuple(
            TopicInfo(
                c.topic,
                _normalize_type(c.msgtype),
                int(c.msgcount),
                _decodable(c, store),
                _is_service_event(c.topic, c.msgtype),
            )
            for c in reader.connections
        )
        storage = STORAGE_SUFFIXES.get(files[0].suffix, 'unknown') if files else 'unknown'
        meta_files = [open_path / 'metadata.yaml'] if open_path.is_dir() else []
        direct = False
        if open_path.is_dir() and reader.message_count > 0:
            # rosbags matches connections on QoS too; old bags whose metadata.yaml QoS differs
            # from the storage's yield nothing. Detect that once, cheaply.
            direct = next(iter(_safe_iter(reader.messages(), open_path)), None) is None
        info = BagInfo(
            path=open_path,
            storage=storage,
            files=tuple(files),
            start_ns=int(reader.start_time) if reader.message_count else 0,
            end_ns=int(reader.end_time) if reader.message_count else 0,
            message_count=int(reader.message_count),
            topics=topics,
            sha256=sha256_files(meta_files + list(files)),
            read_files_directly=direct,
        )
    finally:
        reader.close()
    return info


def _safe_iter(it: Iterator[Any], path: Path) -> Iterator[Any]:
    try:
        yield from it
    except BagError:
        raise
    except Exception as err:
        raise BagError(
            f'{path}: cannot read messages: {type(err).__name__}: {err} (corrupt or truncated bag?)'
        ) from None


def iter_raw(info: BagInfo, topics: Sequence[str]) -> Iterator[tuple[str, int, bytes]]:
    """Yield ``(topic, receive_time_ns, raw_cdr)`` of the given topics, in time order."""
    wanted = {t.lstrip('/') for t in topics}
    sources: list[Path] = list(info.files) if info.read_files_directly else [info.path]
    for src in sources:
        reader = _open_reader(src)
        try:
            conns = [c for c in reader.connections if c.topic.lstrip('/') in wanted]
            if not conns:
                continue
            for conn, t_ns, raw in _safe_iter(reader.messages(connections=conns), src):
                yield conn.topic, int(t_ns), raw
        finally:
            reader.close()


def _require_topic(info: BagInfo, name: str, expected_type: str, role: str) -> TopicInfo:
    t = info.topic(name)
    if t is None:
        raise BagError(f'{info.path}: no topic {name!r} for the {role}; the bag has: {info.short_listing()}')
    if t.service_event:
        raise BagError(
            f'{info.path}: topic {t.name!r} is a service-event channel ({t.msgtype}), '
            f'not a {expected_type} stream'
        )
    if _normalize_type(t.msgtype) != expected_type:
        raise BagError(
            f'{info.path}: topic {t.name!r} for the {role} has type {t.msgtype}; expected {expected_type}'
        )
    if t.count == 0:
        raise BagError(f'{info.path}: topic {t.name!r} for the {role} has no messages')
    return t


def select_state_topic(info: BagInfo, requested: str = '', preferred: str = 'joint_states') -> TopicInfo:
    """Pick the JointState topic: ``requested`` if given, else the only one / the ``preferred`` one.

    Raises:
        BagError: the requested topic is absent or of another type, or there is no JointState
            topic, or several and none is named like ``preferred`` (the message lists them).
    """
    if requested:
        return _require_topic(info, requested, JOINT_STATE, 'robot state')
    candidates = [t for t in info.of_type(JOINT_STATE) if t.count > 0]
    if not candidates:
        raise BagError(
            f'{info.path}: no {JOINT_STATE} topic with messages; the bag has: {info.short_listing()}'
        )
    if len(candidates) == 1:
        return candidates[0]
    named = [t for t in candidates if t.name.lstrip('/').endswith(preferred.lstrip('/'))]
    if len(named) == 1:
        return named[0]
    raise BagError(
        f'{info.path}: several JointState topics ({", ".join(t.name for t in candidates)}); '
        f'choose one with --state-topic'
    )


def auto_side_topic(info: BagInfo, requested: str, suffix: str, msgtype: str) -> str:
    """Topic for an optional input: ``requested`` ('-' = none), else one ending in ``suffix``."""
    if requested == '-':
        return ''
    if requested:
        return _require_topic(info, requested, msgtype, f'{msgtype} input').name
    for t in info.of_type(msgtype):
        if t.count > 0 and t.name.lstrip('/').endswith(suffix.lstrip('/')):
            return t.name
    return ''


@dataclass
class StateStream:
    """Decoded JointState messages, in the robot's joint order.

    Attributes:
        topic: source topic.
        joint_names: robot joint order of the columns.
        bag_joint_names: the names as found in the bag (first message).
        recv_ns: bag receive time of each message (ns, bag clock; used for recorded timing).
        header_ns: header stamp of each message (ns; may be simulation time).
        q, dq: positions (rad) and velocities (rad/s), shape (n, n_joints).
        mapped: a joint map was applied.
        frame_seq: ``header.frame_id`` as an integer (the state seq of older recordings,
            which carried it there), -1 if not one.
    """

    topic: str
    joint_names: list[str]
    bag_joint_names: list[str]
    recv_ns: IntArray
    header_ns: IntArray
    q: FloatArray
    dq: FloatArray
    mapped: bool = False
    frame_seq: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n(self) -> int:
        """Number of messages."""
        return int(self.recv_ns.size)

    def rate_hz(self) -> float:
        """Median message rate (Hz) from receive times; 0 for fewer than 2 messages."""
        if self.n < 2:
            return 0.0
        dt = np.diff(self.recv_ns)
        med = float(np.median(dt))
        return 1e9 / med if med > 0 else 0.0


@dataclass
class SideStream:
    """An auxiliary input stream (human position, operator command, policy command).

    Attributes:
        topic: source topic ('' = none; then ``n == 0``).
        recv_ns: receive times (ns, bag clock).
        values: shape (n, k): xyz (m) for points, data for Float64MultiArray.
        offsets: the key that matches a recorded command to its state: the header stamp [ns] of
            the state it answers when ``keys_are_stamps`` (``safety/joint_command``, JointState),
            else ``layout.data_offset`` (the state seq of older recordings), -1 for points.
        keys_are_stamps: see ``offsets``.
    """

    topic: str = ''
    recv_ns: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    values: FloatArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float64))
    offsets: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    keys_are_stamps: bool = False

    @property
    def n(self) -> int:
        """Number of messages."""
        return int(self.recv_ns.size)


def _joint_index(
    bag_names: Sequence[str],
    robot_names: Sequence[str],
    joint_map: Mapping[str, str],
    info: BagInfo,
    topic: str,
) -> list[int]:
    """For each robot joint, its column in the bag message (-1 = not present, filled)."""
    if joint_map:
        unknown_targets = sorted(set(joint_map.values()) - set(robot_names))
        if unknown_targets:
            raise BagError(
                f'joint map targets {unknown_targets} are not robot joints; robot joints: {list(robot_names)}'
            )
        reverse = {dst: src for src, dst in joint_map.items()}
        missing_src = sorted(src for src in joint_map if src not in bag_names)
        if missing_src:
            raise BagError(
                f'{info.path}: joint map sources {missing_src} are not in {topic}; '
                f'the bag has joints {list(bag_names)}'
            )
        pos = {n: i for i, n in enumerate(bag_names)}
        return [pos[reverse[r]] if r in reverse else -1 for r in robot_names]
    pos = {n: i for i, n in enumerate(bag_names)}
    missing = [r for r in robot_names if r not in pos]
    if missing:
        raise BagError(
            f'{info.path}: JointState on {topic} has joints {list(bag_names)}; the policy expects '
            f'{list(robot_names)} (missing {missing}). Record the right robot, or map joints '
            f'explicitly with --joint-map BAG_JOINT=ROBOT_JOINT[,...]'
        )
    return [pos[r] for r in robot_names]


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _deserialize(store: Any, raw: bytes, msgtype: str, info: BagInfo, topic: str, i: int) -> Any:
    """Message ``i`` of ``topic`` decoded from its CDR bytes; a corrupt payload -> :class:`BagError`."""
    try:
        return store.deserialize_cdr(raw, msgtype)
    except Exception as err:  # broad on purpose: corrupt payload -> one clear line
        raise BagError(
            f'{info.path}: message {i} on {topic} does not decode as {msgtype}: {type(err).__name__}: {err}'
        ) from None


def _check_all_read(info: BagInfo, topic: str, n_read: int, n_expected: int) -> None:
    """Raise :class:`BagError` when fewer than ``n_expected`` messages of ``topic`` could be read."""
    if n_read < n_expected:
        raise BagError(
            f'{info.path}: only {n_read} of the {n_expected} messages of {topic} listed in the bag could '
            f'be read (corrupt or truncated storage?)'
        )


def load_joint_states(
    info: BagInfo,
    topic: str,
    robot_joint_names: Sequence[str],
    joint_map: Mapping[str, str] | None = None,
    fill_q_rad: Mapping[str, float] | None = None,
    max_messages: int = 0,
) -> StateStream:
    """Decode the JointState topic into a :class:`StateStream` in the robot's joint order.

    Args:
        info: from :func:`inspect_bag`.
        topic: a JointState topic of the bag.
        robot_joint_names: the policy/robot joint order.
        joint_map: bag joint -> robot joint; robot joints left unmapped get ``fill_q_rad`` (or 0)
            and zero velocity.
        fill_q_rad: positions for unmapped robot joints.
        max_messages: stop after this many (0 = all).

    Raises:
        BagError: wrong topic/type, names not matching the robot without a map, a message with
            fewer positions than names, or a decode failure.
    """
    t = _require_topic(info, topic, JOINT_STATE, 'robot state')
    store = typestore()
    cap = t.count if max_messages <= 0 else min(t.count, max_messages)
    nj = len(robot_joint_names)
    q = np.zeros((cap, nj), dtype=np.float64)
    dq = np.zeros((cap, nj), dtype=np.float64)
    recv = np.zeros(cap, dtype=np.int64)
    hdr = np.zeros(cap, dtype=np.int64)
    fseq = np.full(cap, -1, dtype=np.int64)
    fill = np.array([float((fill_q_rad or {}).get(r, 0.0)) for r in robot_joint_names])
    jmap = dict(joint_map or {})
    cache: dict[tuple[str, ...], tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]] = {}
    first_names: list[str] = []
    i = 0
    for _topic, t_ns, raw in iter_raw(info, [t.name]):
        if i >= cap:
            break
        msg = _deserialize(store, raw, JOINT_STATE, info, t.name, i)
        names = tuple(msg.name)
        if not first_names:
            first_names = list(names)
        if names not in cache:
            idx = np.array(_joint_index(names, robot_joint_names, jmap, info, t.name), dtype=np.intp)
            cache[names] = (idx, idx >= 0)
        idx, present = cache[names]
        pos = np.asarray(msg.position, dtype=np.float64)
        vel = np.asarray(msg.velocity, dtype=np.float64)
        if pos.size != len(names):
            raise BagError(
                f'{info.path}: message {i} on {t.name} has {len(names)} names but {pos.size} positions'
            )
        q[i] = fill
        q[i, present] = pos[idx[present]]
        if vel.size == len(names):
            dq[i, present] = vel[idx[present]]
        recv[i] = t_ns
        hdr[i] = _stamp_ns(msg.header)
        fid = msg.header.frame_id
        fseq[i] = int(fid) if fid.isdigit() else -1
        i += 1
    if i == 0:
        raise BagError(f'{info.path}: no message could be read from {t.name}')
    _check_all_read(info, t.name, i, cap)
    return StateStream(
        t.name,
        list(robot_joint_names),
        first_names,
        recv[:i],
        hdr[:i],
        q[:i],
        dq[:i],
        mapped=bool(jmap),
        frame_seq=fseq[:i],
    )


def load_side_stream(info: BagInfo, topic: str) -> SideStream:
    """Decode a PointStamped (xyz, m) or Float64MultiArray (data) topic; '' gives an empty stream.

    Raises:
        BagError: the topic is missing, of another type, or rows of a Float64MultiArray topic
            change length.
    """
    if not topic:
        return SideStream()
    t = info.topic(topic)
    if t is None:
        raise BagError(f'{info.path}: no topic {topic!r}; the bag has: {info.short_listing()}')
    msgtype = _normalize_type(t.msgtype)
    if msgtype not in (POINT_STAMPED, FLOAT64_ARRAY):
        raise BagError(
            f'{info.path}: topic {t.name!r} has type {t.msgtype}; expected {POINT_STAMPED} or {FLOAT64_ARRAY}'
        )
    msg_is_array = msgtype == FLOAT64_ARRAY
    store = typestore()
    recv: list[int] = []
    rows: list[FloatArray] = []
    offs: list[int] = []
    for _topic, t_ns, raw in iter_raw(info, [t.name]):
        msg = _deserialize(store, raw, msgtype, info, t.name, len(rows))
        if msgtype == POINT_STAMPED:
            row = np.array([msg.point.x, msg.point.y, msg.point.z], dtype=np.float64)
        else:
            row = np.asarray(msg.data, dtype=np.float64).copy()
        if rows and row.size != rows[0].size:
            raise BagError(
                f'{info.path}: {t.name} message {len(rows)} has {row.size} values, '
                f'earlier ones {rows[0].size}'
            )
        recv.append(t_ns)
        rows.append(row)
        offs.append(int(msg.layout.data_offset) if msg_is_array else -1)
    _check_all_read(info, t.name, len(rows), t.count)
    if not rows:
        return SideStream(t.name)
    return SideStream(t.name, np.array(recv, dtype=np.int64), np.vstack(rows), np.array(offs, dtype=np.int64))


from rt_safe_rl.bench.bag_writer import BagWriter as BagWriter  # noqa: E402  (re-export; it imports this module)
