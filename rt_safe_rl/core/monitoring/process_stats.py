"""One process's statistics: the single reader of its metrics rings, the snapshot it publishes, and
the documented ``rt_stats`` message layout a monitor in another process decodes.

Pure Python + numpy (no rclpy: the node side is :mod:`rt_safe_rl.nodes.process_stats`). Non-RT:
runs in the low-priority ``observers`` thread of each process.

* :class:`RegistryReader` -- THE reader of a :class:`~rt_safe_rl.rt.metrics.MetricsRegistry`'s stage
  rings (each ring has exactly one reader). :func:`reader_for` hands the same reader to every user in
  a process (the in-process monitor and the statistics publisher), so both see the same windows and
  compute the same numbers.
* :class:`ProcessStats` -- one snapshot: per stage the window summary (:class:`StageStats`), plus
  counter totals and gauge values, tagged with the source process.
* :func:`encode_process_stats` / :func:`decode_process_stats` -- the message layout (below), as
  plain ``(name, hardware_id, message, [(key, value), ...])`` records the node turns into
  ``diagnostic_msgs/DiagnosticStatus``.
* :class:`RemoteStage` -- a stage as another process reported it, with the interface of a
  :class:`~rt_safe_rl.core.monitoring.windows.StageWindow` that :class:`MonitorCore` reads.

Layout of ``rt_stats`` (``diagnostic_msgs/DiagnosticArray``, one message per process per
``monitor.stats.period_s``; ``layout`` 1). Every status has ``level`` OK and ``hardware_id`` = the
source process ``<hostname>:<pid>``. Floats are Python ``repr`` (exact round trip; ``nan``):

==========================  ==============================================================
status ``name``             ``values`` (key: meaning)
==========================  ==============================================================
``rt_stats: process``       ``layout`` (1), ``pid``, ``window_s`` (span of the summaries),
                            ``nodes`` (node names in the process, comma-separated)
``rt_stats: stage <name>``  ``samples`` (in the window), ``total`` (ever), ``rate_hz``,
                            ``p50_s``, ``p99_s``, ``max_s``, ``mean_s``, ``jitter_p99_s``,
                            ``sum_s`` (all durations ever), ``age_s`` (newest sample's age at
                            publish), ``dropped`` (ring overflows), ``buckets`` (cumulative
                            counts per ``HISTOGRAM_BUCKETS_S`` bound and +Inf, comma-separated)
``rt_stats: counters``      one key per registry counter: its total (int)
``rt_stats: gauges``        one key per registry gauge: its latest value
==========================  ==============================================================
"""

from __future__ import annotations

import math
import os
import socket
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from rt_safe_rl.core.monitoring.config import HISTOGRAM_BUCKETS_S, NS_PER_S, STAGES
from rt_safe_rl.core.monitoring.windows import StageSummary, StageWindow

LAYOUT_VERSION = 1
PREFIX = 'rt_stats: '
DRAIN_CHUNK = 4096  # rows moved per ring drain call (a preallocated buffer)

Record = tuple[str, str, str, list[tuple[str, str]]]  # name, hardware_id, message, values


def process_source_id() -> str:
    """``<hostname>:<pid>`` of this process (the ``hardware_id`` of its ``rt_stats`` statuses)."""
    return f'{socket.gethostname()}:{os.getpid()}'


class RegistryReader:
    """The one reader of a metrics registry's stage rings, shared within a process (non-RT).

    ``registry`` is duck-typed (:class:`rt_safe_rl.rt.metrics.MetricsRegistry`: ``stages`` of
    recorders with ``ring.drain(buf)`` / ``ring.dropped``, ``snapshot_counters()``, ``gauges``).
    Samples recorded before the reader existed still count; ring drops before it are not reported.
    """

    def __init__(self, registry: Any, capacity: int = 16384) -> None:
        self.registry = registry
        self.capacity = int(capacity)
        self.windows: dict[str, StageWindow] = {s: StageWindow(s, self.capacity) for s in STAGES}
        self.dropped: dict[str, int] = {}
        self._dropped_at_start = {n: r.ring.dropped for n, r in list(registry.stages.items())}
        self._buf = np.empty((DRAIN_CHUNK, 2), dtype=np.float64)
        self._lock = threading.Lock()

    def drain(self, yield_gil: Callable[[], None] | None = None) -> int:
        """Move pending samples of every stage into its window; returns how many (non-RT).

        ``yield_gil`` is called between full chunks (the monitor passes a tiny sleep).
        """
        total = 0
        with self._lock:
            buf = self._buf
            for name, rec in list(self.registry.stages.items()):
                w = self.windows.get(name)
                if w is None:
                    w = self.windows[name] = StageWindow(name, self.capacity)
                while True:
                    n = rec.ring.drain(buf)
                    if n:
                        w.extend(buf[:n])
                        total += n
                    if n < buf.shape[0]:
                        break
                    if yield_gil is not None:
                        yield_gil()
                self.dropped[name] = rec.ring.dropped - self._dropped_at_start.get(name, 0)
        return total


_READERS: weakref.WeakKeyDictionary[Any, RegistryReader] = weakref.WeakKeyDictionary()
_READERS_LOCK = threading.Lock()


def reader_for(registry: Any, capacity: int = 16384) -> RegistryReader:
    """The process's one :class:`RegistryReader` of `registry` (created on first use; non-RT)."""
    with _READERS_LOCK:
        r = _READERS.get(registry)
        if r is None:
            r = _READERS[registry] = RegistryReader(registry, capacity)
        return r


class StageStats(NamedTuple):
    """Window summary and totals of one stage as a process publishes it (seconds)."""

    summary: StageSummary
    total: int
    sum_s: float
    age_s: float  # age of the newest sample when the snapshot was taken
    dropped: int
    buckets: tuple[int, ...]  # cumulative counts per HISTOGRAM_BUCKETS_S bound, then +Inf


@dataclass(frozen=True)
class ProcessStats:
    """One process's statistics at one instant (what ``rt_stats`` carries)."""

    source: str
    nodes: tuple[str, ...]
    window_s: float
    stages: dict[str, StageStats] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def from_reader(
        reader: RegistryReader, now_ns: int, window_s: float, *, source: str, nodes: Sequence[str] = ()
    ) -> ProcessStats:
        """Snapshot `reader`'s windows (call :meth:`RegistryReader.drain` first) and registry totals."""
        stages: dict[str, StageStats] = {}
        for name, w in list(reader.windows.items()):
            if w.total == 0:
                continue
            buckets = tuple(c for _, c in w.cumulative_buckets())
            stages[name] = StageStats(
                w.summary(now_ns, window_s),
                int(w.total),
                float(w.sum_s),
                max(0.0, (now_ns - w.last_t_ns) / NS_PER_S),
                int(reader.dropped.get(name, 0)),
                buckets,
            )
        reg = reader.registry
        gauges = {k: float(g.value) for k, g in list(reg.gauges.items())}
        return ProcessStats(source, tuple(nodes), float(window_s), stages, reg.snapshot_counters(), gauges)


def _f(x: float) -> str:
    return repr(float(x))


def encode_process_stats(ps: ProcessStats) -> list[Record]:
    """The ``rt_stats`` statuses of `ps` (layout in the module docstring). Non-RT."""
    hw = ps.source
    pid = hw.rsplit(':', 1)[-1]
    out: list[Record] = [
        (
            PREFIX + 'process',
            hw,
            ', '.join(ps.nodes),
            [
                ('layout', str(LAYOUT_VERSION)),
                ('pid', pid),
                ('window_s', _f(ps.window_s)),
                ('nodes', ','.join(ps.nodes)),
            ],
        )
    ]
    for name, st in ps.stages.items():
        s = st.summary
        vals = [
            ('samples', str(s.n_samples)),
            ('total', str(st.total)),
            ('rate_hz', _f(s.rate_hz)),
            ('p50_s', _f(s.p50_s)),
            ('p99_s', _f(s.p99_s)),
            ('max_s', _f(s.max_s)),
            ('mean_s', _f(s.mean_s)),
            ('jitter_p99_s', _f(s.jitter_p99_s)),
            ('sum_s', _f(st.sum_s)),
            ('age_s', _f(st.age_s)),
            ('dropped', str(st.dropped)),
            ('buckets', ','.join(str(c) for c in st.buckets)),
        ]
        out.append((f'{PREFIX}stage {name}', hw, f'{s.n_samples} samples in {ps.window_s:g} s', vals))
    out.append((PREFIX + 'counters', hw, '', [(k, str(int(v))) for k, v in ps.counters.items()]))
    out.append((PREFIX + 'gauges', hw, '', [(k, _f(v)) for k, v in ps.gauges.items()]))
    return out


class LayoutError(ValueError):
    """An ``rt_stats`` message that does not follow the documented layout."""


def _stage_from(values: Mapping[str, str], where: str) -> StageStats:
    try:
        summary = StageSummary(
            int(values['samples']),
            float(values['rate_hz']),
            float(values['p50_s']),
            float(values['p99_s']),
            float(values['max_s']),
            float(values['mean_s']),
            float(values['jitter_p99_s']),
        )
        buckets = tuple(int(c) for c in values['buckets'].split(','))
        if len(buckets) != len(HISTOGRAM_BUCKETS_S) + 1:
            raise LayoutError(f'{where}: {len(buckets)} buckets, expected {len(HISTOGRAM_BUCKETS_S) + 1}')
        return StageStats(
            summary,
            int(values['total']),
            float(values['sum_s']),
            float(values['age_s']),
            int(values['dropped']),
            buckets,
        )
    except KeyError as err:
        raise LayoutError(f'{where}: missing key {err.args[0]!r}') from None
    except ValueError as err:
        if isinstance(err, LayoutError):
            raise
        raise LayoutError(f'{where}: {err}') from None


def decode_process_stats(records: Iterable[Record]) -> ProcessStats:
    """Inverse of :func:`encode_process_stats`. Statuses of other names are ignored.

    Raises:
        LayoutError: no ``rt_stats: process`` status, another layout version, or a malformed value.
    """
    source, window_s = '', math.nan
    nodes: tuple[str, ...] = ()
    stages: dict[str, StageStats] = {}
    counters: dict[str, int] = {}
    gauges: dict[str, float] = {}
    seen_process = False
    for name, hw, _msg, values in records:
        if not name.startswith(PREFIX):
            continue
        kind = name[len(PREFIX) :]
        vals = dict(values)
        try:
            if kind == 'process':
                if vals.get('layout') != str(LAYOUT_VERSION):
                    raise LayoutError(f'rt_stats layout {vals.get("layout")!r}, expected {LAYOUT_VERSION}')
                source, window_s, seen_process = hw, float(vals['window_s']), True
                nodes = tuple(n for n in vals.get('nodes', '').split(',') if n)
            elif kind.startswith('stage '):
                stages[kind[len('stage ') :]] = _stage_from(vals, name)
            elif kind == 'counters':
                counters = {k: int(v) for k, v in vals.items()}
            elif kind == 'gauges':
                gauges = {k: float(v) for k, v in vals.items()}
        except (KeyError, ValueError) as err:
            if isinstance(err, LayoutError):
                raise
            raise LayoutError(f'{name}: {err}') from None
    if not seen_process:
        raise LayoutError("no 'rt_stats: process' status")
    return ProcessStats(source, nodes, window_s, stages, counters, gauges)


class RemoteStage:
    """A stage as another process reported it: the :class:`StageWindow` interface MonitorCore reads
    (``total``, ``sum_s``, ``last_t_ns``, ``summary()``, ``cumulative_buckets()``), on this
    process's monotonic clock (``last_t_ns`` = receipt time - reported age)."""

    def __init__(
        self, name: str, st: StageStats, received_ns: int, source: str, nodes: Sequence[str]
    ) -> None:
        self.name = name
        self.stats = st
        self.total = st.total
        self.sum_s = st.sum_s
        self.last_t_ns = float(received_ns) - st.age_s * NS_PER_S
        self.source = source
        self.nodes = tuple(nodes)

    def summary(self, now_ns: int, window_s: float) -> StageSummary:
        """The summary the source computed over its own ``window_s`` (arguments unused)."""
        return self.stats.summary

    def cumulative_buckets(self) -> list[tuple[str, int]]:
        """Prometheus ``le`` buckets as :meth:`StageWindow.cumulative_buckets`."""
        bounds = [repr(float(b)) for b in HISTOGRAM_BUCKETS_S] + ['+Inf']
        return list(zip(bounds, self.stats.buckets, strict=True))

    @property
    def label(self) -> str:
        """Who reported it: node names and source process."""
        return f'{",".join(self.nodes) or "?"} ({self.source})'
