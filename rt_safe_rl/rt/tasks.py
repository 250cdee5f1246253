"""RT tasks and callback groups: what runs in the RT group threads (see :mod:`rt_safe_rl.rt.executor`).

* :func:`named_group` tags an rclpy callback group with a group name from ``rt.groups``.
* :class:`PeriodicTask` runs ``fn(deadline_ns)`` at absolute deadlines ``t0 + k * period_ns``.
* :class:`TriggeredTask` runs ``fn(seq)`` when its :class:`~rt_safe_rl.rt.channel.Channel` is written.
* :func:`off_cycle_phase_ns`: the phase of periodic tasks that run Python in other threads than
  the control cycle's, so that they run while the cycle sleeps.

Tasks are plain objects: their counters are written by the owning RT thread only and read by
anyone (non-RT) through :meth:`stats`. Constructing a task is not RT-safe; reading its counters is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rclpy.callback_groups import CallbackGroup, MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.rt.channel import Channel
from rt_safe_rl.rt.metrics import registry
from rt_safe_rl.rt.ring import SpscRing


class RtCallbackGroup(MutuallyExclusiveCallbackGroup):
    """A MutuallyExclusiveCallbackGroup tagged with an ``rt.groups`` name (and `polled`: see
    :func:`named_group`)."""

    def __init__(self, rt_group: str, polled: bool = False) -> None:
        super().__init__()
        self.rt_group = rt_group
        self.polled = polled


def named_group(node: Node, name: str, *, polled: bool = False) -> RtCallbackGroup:
    """The node's callback group for rt group `name` (created once per node, name and `polled`).

    Use it as ``callback_group=`` for subscriptions/timers that must run in that group's thread,
    and as the `group` of :class:`PeriodicTask` / :class:`TriggeredTask`. If the node is already in
    an :class:`RtExecutor`, an unknown name raises :class:`ConfigError` here. Not RT-safe.

    ``polled=True`` (subscriptions): in a thread that runs periodic tasks, the subscription is not
    waited on; its messages are taken at the start of each loop of the thread, before the due
    tasks run (a sampled input: the control cycle reads the latest human data at its start, and a
    100 Hz topic costs no wake-up of its own). In a thread without periodic tasks it is waited on
    like any other.
    """
    groups: dict[str, RtCallbackGroup] = node.__dict__.setdefault('_rt_safe_rl_groups', {})
    key = f'{name}\0polled' if polled else name
    grp = groups.get(key)
    if grp is None:
        owner = getattr(node.executor, '_rt_owner', None)
        if owner is not None:
            owner.config.thread_of(name)  # raises ConfigError for an unknown group
        grp = RtCallbackGroup(name, polled)
        groups[key] = grp
    return grp


def off_cycle_phase_ns(control_period_ns: int, slot: int = 0) -> int:
    """Phase [ns] for a :class:`PeriodicTask` of another thread than the control cycle's that runs
    Python (simulated sensors, status reports, observer mirrors): half a control period after the
    cycle's deadlines, in control period `slot` of the task's own period (``slot * period +
    period / 2``; tasks of one thread get different slots so they do not run in one burst).

    Why: every Python thread of the process shares one GIL, and a task due on the cycle's own
    deadline wakes with the cycle and takes the GIL from it mid-cycle, each time for up to
    ``rt.gil_switch_interval_s``. Half a period later the cycle (tens of microseconds) sleeps.
    (``bench loop`` on the 2-vCPU VM: the cycles that met a 20 Hz status task or a 100 Hz simulated
    sensor on their deadline were 70-90 us longer, which set the e2e p99.)
    Preconditions: the task's period is a multiple of the control period (else its deadlines drift
    over the control grid; ``test_rt_cycle.py`` checks the shipped composition) and each run ends
    within half a period. The safety monitor (2 kHz) keeps its own quarter-period phase."""
    p = int(control_period_ns)
    return int(slot) * p + p // 2


#: slots (:func:`off_cycle_phase_ns`) of the shipped off-cycle tasks, distinct modulo 10 control
#: periods (the 100 Hz tasks' period): each runs in a control period of its own
OFF_CYCLE_SLOTS = {
    'sim_human': 0,
    'mirror_joint_states': 2,
    'safety_status': 3,
    'process_stats': 4,
    'sim_operator': 5,
    'mirror_policy_action': 7,
    'safety_listeners': 8,
}


def _group_name(group: CallbackGroup | str) -> str:
    if isinstance(group, str):
        return group
    if isinstance(group, RtCallbackGroup):
        return group.rt_group
    raise ConfigError(f'task group must be an rt group name or named_group(node, name), got {group!r}')


class _TaskBase:
    """Shared statistics of periodic and triggered tasks (written by the owning RT thread only)."""

    def __init__(self, name: str, group: CallbackGroup | str, stats_capacity: int) -> None:
        if not name:
            raise ConfigError('task name must not be empty')
        self.name = name
        self.group = _group_name(group)
        self._enabled = False
        self.runs = 0
        self.errors = 0
        self.last_error = ''
        self.max_duration_ns = 0
        # (reference_ns, start_ns, end_ns): deadline or channel write time, callback start, end
        self.samples = SpscRing(stats_capacity, 3)

    @property
    def enabled(self) -> bool:
        """Whether the task runs (toggled by the node at activate/deactivate)."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._on_enable(bool(value))
        self._enabled = bool(value)

    def _on_enable(self, value: bool) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        """Counters as a plain dict (non-RT)."""
        return {
            'group': self.group,
            'enabled': self._enabled,
            'runs': self.runs,
            'errors': self.errors,
            'last_error': self.last_error,
            'max_duration_us': round(self.max_duration_ns / 1e3, 1),
            'samples_dropped': self.samples.dropped,
        }


class PeriodicTask(_TaskBase):
    """``fn(deadline_ns)`` every `period_ns` at absolute ``CLOCK_MONOTONIC`` deadlines.

    Created disabled (``enabled=False``): nodes create tasks at configure and enable them at
    activate (a plain user sets ``task.enabled = True``). Deadlines are aligned to multiples of
    the period plus `phase_ns`. ``fn`` must not block; it runs in the group's RT thread.

    Counters: ``runs``, ``misses`` (started more than one period late; a catch-up run is not a
    new miss; also counted in the registry's ``deadline_misses`` unless ``count_misses=False``),
    ``overruns`` (ran longer than a period), ``skipped`` (periods dropped by the skip policy),
    ``caught_up`` (extra back-to-back runs by the catch-up policy), ``errors`` (exceptions raised
    by ``fn``), ``deferred`` (periods the task itself chose not to run, see below).

    Deferral: ``fn`` may set :attr:`run_after_ns` (``CLOCK_MONOTONIC`` ns) to the earliest time its
    next run can change anything (a watchdog whose timeouts cannot expire before then); the next
    run is then the first deadline of the grid at or after it, and the thread sleeps through the
    periods in between (no wake-up). Read and cleared once per run; 0 = the next period. RT-safe.
    """

    def __init__(
        self,
        name: str,
        group: CallbackGroup | str,
        period_ns: int,
        fn: Callable[[int], None],
        *,
        phase_ns: int = 0,
        enabled: bool = False,
        stats_capacity: int = 1 << 14,
        count_misses: bool = True,
    ) -> None:
        super().__init__(name, group, stats_capacity)
        if int(period_ns) < 10_000:
            raise ConfigError(f'task {name!r}: period_ns must be >= 10000 (100 kHz), got {period_ns}')
        self.period_ns = int(period_ns)
        self.phase_ns = int(phase_ns) % self.period_ns
        self.fn = fn
        self.next_deadline_ns = 0  # 0 = (re)start at the next grid point
        self.misses = 0
        self.overruns = 0
        self.skipped = 0
        self.caught_up = 0
        self.max_lateness_ns = 0
        self._catch_up_left = 0
        self._catching_up = False  # the next run is a catch-up run (not counted as a miss)
        self.run_after_ns = 0  # set by fn: no run before this time (0 = the next period)
        self.deferred = 0
        # the registry's deadline_misses (the control-miss rate of /diagnostics, Prometheus and the
        # alerts): observer tasks (mirrors) keep their own `misses` only
        self._miss_counter = registry().counter('deadline_misses' if count_misses else 'observer_task_misses')
        self.enabled = enabled

    def _on_enable(self, value: bool) -> None:
        if value and not self._enabled:
            self.next_deadline_ns = 0
            self.run_after_ns = 0

    def stats(self) -> dict[str, Any]:
        """Counters as a plain dict (non-RT)."""
        d = super().stats()
        d.update(
            period_us=self.period_ns / 1e3,
            misses=self.misses,
            overruns=self.overruns,
            skipped=self.skipped,
            caught_up=self.caught_up,
            deferred=self.deferred,
            max_lateness_us=round(self.max_lateness_ns / 1e3, 1),
        )
        return d


class TriggeredTask(_TaskBase):
    """``fn(seq)`` whenever `channel` gets a new record (latest-value: records written while the
    task was busy collapse into one run with the newest seq; counted in ``coalesced``).

    Created disabled like :class:`PeriodicTask`. The hand-off latency (channel write -> ``fn``
    start) is recorded per run in ``samples``. With ``decimation=N`` the task runs (and its thread
    is woken) once per N records, e.g. to mirror a 1 kHz channel to a ROS topic at 100 Hz.
    """

    def __init__(
        self,
        name: str,
        group: CallbackGroup | str,
        channel: Channel,
        fn: Callable[[int], None],
        *,
        enabled: bool = False,
        decimation: int = 1,
        stats_capacity: int = 1 << 14,
    ) -> None:
        super().__init__(name, group, stats_capacity)
        if not isinstance(channel, Channel):
            raise ConfigError(
                f'task {name!r}: channel must be an rt.channel.Channel, got {type(channel).__name__}'
            )
        if not 1 <= int(decimation) <= 1_000_000:
            raise ConfigError(f'task {name!r}: decimation must be >= 1, got {decimation}')
        self.channel = channel
        self.fn = fn
        self.decimation = int(decimation)
        self.last_seq = channel.seq
        self.coalesced = 0
        self._waker: Callable[[], None] | None = None
        self.enabled = enabled

    def _on_enable(self, value: bool) -> None:
        if value and not self._enabled:
            self.last_seq = self.channel.seq  # do not replay a record written while disabled

    def stats(self) -> dict[str, Any]:
        """Counters as a plain dict (non-RT)."""
        d = super().stats()
        d.update(channel=self.channel.name, coalesced=self.coalesced)
        return d


class _DecimatedWake:
    """Waker that passes on every Nth call (called in the producer's thread only; RT-safe)."""

    __slots__ = ('k', 'n', 'wake')

    def __init__(self, wake: Callable[[], None], n: int) -> None:
        self.wake = wake
        self.n = n
        self.k = 0

    def __call__(self) -> None:
        k = self.k + 1
        if k >= self.n:
            k = 0
            self.wake()
        self.k = k
