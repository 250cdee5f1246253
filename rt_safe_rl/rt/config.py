"""Configuration of the real-time execution layer (the ``rt:`` section of ``config/default.yaml``).

:class:`RtConfig` maps named callback groups (``rt.groups.<name>``) to OS threads: each group runs in
its own thread with its own scheduling policy, priority and CPU set, except groups that name another
group's ``thread`` (they then share that thread, and must agree on every thread-level setting).
The group ``non_rt`` is mandatory and always SCHED_OTHER: it runs parameters, services, lifecycle
transitions and diagnostics in the thread that calls :meth:`RtExecutor.spin`.

Validation happens in ``__post_init__`` (so :func:`rt_safe_rl.config.load_config` fails at load
time): priorities 1..98 for fifo/rr, 0 for other; CPU ids must exist on this machine (negative ids
count from the last online CPU, ``-1`` = last); groups sharing a thread must not conflict; two RT
threads on overlapping CPUs must not share a priority (their order would be undefined).
Not RT-safe (configure time only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from rt_safe_rl.core.errors import ConfigError

NON_RT = 'non_rt'
"""Name of the mandatory non-real-time group (parameters, services, lifecycle, diagnostics)."""

PRIORITY_MIN = 1
PRIORITY_MAX = 98  # 99 is reserved for kernel watchdogs / migration threads


@lru_cache(maxsize=1)
def online_cpus() -> tuple[int, ...]:
    """CPU ids the kernel reports online (``/sys/devices/system/cpu/online``), sorted."""
    try:
        text = Path('/sys/devices/system/cpu/online').read_text().strip()
        cpus: list[int] = []
        for part in text.split(','):
            if '-' in part:
                lo, hi = part.split('-')
                cpus.extend(range(int(lo), int(hi) + 1))
            elif part:
                cpus.append(int(part))
        if cpus:
            return tuple(sorted(cpus))
    except (OSError, ValueError):
        pass
    return tuple(range(os.cpu_count() or 1))


def resolve_cpus(cpus: list[int] | tuple[int, ...], where: str = 'cpus') -> tuple[int, ...]:
    """Map config CPU ids (negative = from the last online CPU) to real ids.

    Raises:
        ConfigError: an id that is not online on this machine, or a duplicate.
    """
    online = online_cpus()
    out: list[int] = []
    for c in cpus:
        real = online[c] if -len(online) <= c < 0 else c
        if real not in online:
            raise ConfigError(f'{where}: unknown CPU id {c}; this machine has CPUs {list(online)}')
        if real in out:
            raise ConfigError(f'{where}: CPU id {c} listed twice')
        out.append(real)
    return tuple(sorted(out))


@dataclass(frozen=True)
class GroupConfig:
    """One named callback group -> thread mapping.

    Attributes:
        policy: 'fifo' (SCHED_FIFO), 'rr' (SCHED_RR) or 'other' (SCHED_OTHER, priority 0).
        priority: 1..98 for fifo/rr, 0 for other. 99 is refused (kernel watchdogs).
        cpus: CPU ids the thread is pinned to; [] = not pinned. Negative ids count from the last
            online CPU (-1 = last), so the shipped config works on any machine.
        thread: '' = own thread named after the group; else the name of another group whose
            thread this group shares (e.g. 'safety' runs in 'control''s thread so the
            policy -> safety hand-off is a same-thread call). Settings must then be identical.
        spin_us: wake this many microseconds before a periodic deadline and busy-wait the rest
            (0 = pure sleep). Tightens wake-up jitter at the cost of CPU; measure with
            ``rt-safe-rl bench rt``.
        miss_policy: what a periodic task does after missing a period: 'skip' realigns to the
            next future deadline on the grid (missed periods counted), 'catch_up' runs once per
            missed period back to back (at most ``max_catch_up`` times, then skips).
        max_catch_up: bound on back-to-back catch-up runs.
        timer_slack_ns: PR_SET_TIMERSLACK for this thread (SCHED_OTHER threads only; RT threads
            have no slack). 0 = leave the kernel default (50 us).
    """

    policy: Literal['fifo', 'rr', 'other'] = 'fifo'
    priority: int = 80
    cpus: list[int] = field(default_factory=list)
    thread: str = ''
    spin_us: int = 0
    miss_policy: Literal['skip', 'catch_up'] = 'skip'
    max_catch_up: int = 3
    timer_slack_ns: int = 1

    def __post_init__(self) -> None:
        if self.policy == 'other':
            if self.priority != 0:
                raise ConfigError(f"priority must be 0 with policy 'other', got {self.priority}")
        elif not PRIORITY_MIN <= self.priority <= PRIORITY_MAX:
            raise ConfigError(
                f'priority must be in {PRIORITY_MIN}..{PRIORITY_MAX} for policy {self.policy!r}, '
                f'got {self.priority}'
            )
        resolve_cpus(self.cpus)
        if not 0 <= self.spin_us <= 500:
            raise ConfigError(f'spin_us must be in 0..500, got {self.spin_us}')
        if not 0 <= self.max_catch_up <= 1000:
            raise ConfigError(f'max_catch_up must be in 0..1000, got {self.max_catch_up}')
        if self.timer_slack_ns < 0:
            raise ConfigError(f'timer_slack_ns must be >= 0, got {self.timer_slack_ns}')

    @property
    def is_rt(self) -> bool:
        """True for SCHED_FIFO / SCHED_RR."""
        return self.policy != 'other'

    @property
    def real_cpus(self) -> tuple[int, ...]:
        """Resolved CPU ids (negative ids mapped to real ones)."""
        return resolve_cpus(self.cpus)

    def thread_settings(self) -> tuple[object, ...]:
        """Thread-level settings that groups sharing a thread must agree on."""
        return (
            self.policy,
            self.priority,
            self.real_cpus,
            self.spin_us,
            self.miss_policy,
            self.max_catch_up,
            self.timer_slack_ns,
        )


def _default_groups() -> dict[str, GroupConfig]:
    return {
        NON_RT: GroupConfig(policy='other', priority=0, cpus=[]),
        'control': GroupConfig(policy='fifo', priority=80, cpus=[-1]),
        'safety': GroupConfig(policy='fifo', priority=80, cpus=[-1], thread='control'),
        'safety_monitor': GroupConfig(policy='fifo', priority=85, cpus=[-1]),
        'sim': GroupConfig(policy='fifo', priority=70, cpus=[-1]),
        'observers': GroupConfig(policy='fifo', priority=10, cpus=[0]),
    }


@dataclass(frozen=True)
class RtConfig:
    """The ``rt:`` section.

    Attributes:
        groups: group name -> :class:`GroupConfig`. Must contain ``non_rt`` (policy 'other').
        mlock: ``mlockall(MCL_CURRENT | MCL_FUTURE)`` when the executor starts (after configure).
        prefault_heap_bytes: grow and touch the C heap by this much, with malloc trimming and
            mmap allocation disabled, so later mallocs do not page-fault (0 = skip).
        gc_freeze: ``gc.collect(); gc.freeze()`` when the executor starts, then automatic
            collection off (no collection can run inside an RT thread).
        gc_collect_period_s: the non-RT thread runs a young-generation collection this often
            while automatic GC is off (0 = never; garbage then accumulates).
        gil_switch_interval_s: ``sys.setswitchinterval`` while spinning (how long an RT thread
            waits for the GIL at most when a non-RT thread runs Python code); 0 = leave default
            (5 ms).
        require_rt: refuse to start (error) instead of warning when SCHED_FIFO/RR, affinity or
            mlockall cannot be granted.
        thread_stack_bytes: stack size of the group threads (0 = platform default); with
            mlockall(MCL_FUTURE) the whole stack is locked and prefaulted at thread creation.
        stats_capacity: per-task ring of timing samples (deadline, start, end) kept for readers.
        housekeeping_priority: SCHED_FIFO priority of the executor's non-RT housekeeping thread
            (task refresh, GC, stall checks; ~10 short wake-ups per second), 0 = SCHED_OTHER. It
            holds the GIL briefly; at SCHED_OTHER a CPU hog can preempt it *while* it holds the
            GIL and stall every RT thread for a scheduler time slice (GIL priority inversion), so
            the default is the lowest RT priority, below every RT group.
        housekeeping_cpus: CPUs of the housekeeping thread ([] = not pinned; negative = from last).
        helper_threads: scheduling of the process's non-Python helper threads whose name starts
            with one of ``helper_thread_prefixes`` (Fast DDS: ``dds.*`` receive/event threads).
            At SCHED_OTHER they are preempted by CPU hogs and delay DDS delivery to the RT
            threads (priority inversion); a FIFO priority below the RT groups avoids that. Their
            ``thread``/``spin_us``/``miss_policy`` fields are ignored. Applied at spin start and
            to new matching threads every second. ``policy: other`` + ``priority: 0`` + ``cpus:
            []`` leaves them alone.
        helper_thread_prefixes: thread-name prefixes that select helper threads.
    """

    groups: dict[str, GroupConfig] = field(default_factory=_default_groups)
    mlock: bool = True
    prefault_heap_bytes: int = 32 << 20
    gc_freeze: bool = True
    gc_collect_period_s: float = 1.0
    gil_switch_interval_s: float = 0.00005
    require_rt: bool = False
    thread_stack_bytes: int = 0
    stats_capacity: int = 1 << 15
    housekeeping_priority: int = 1
    housekeeping_cpus: list[int] = field(default_factory=list)
    helper_threads: GroupConfig = field(
        default_factory=lambda: GroupConfig(policy='fifo', priority=60, cpus=[])
    )
    helper_thread_prefixes: list[str] = field(default_factory=lambda: ['dds.'])

    def __post_init__(self) -> None:
        if NON_RT not in self.groups:
            raise ConfigError(f'groups: the {NON_RT!r} group is required (parameters, services, lifecycle)')
        if self.groups[NON_RT].is_rt:
            raise ConfigError(f'groups.{NON_RT}: must use policy other (it runs parameters/services)')
        if self.groups[NON_RT].thread:
            raise ConfigError(f'groups.{NON_RT}: cannot share another thread')
        for name, g in self.groups.items():
            if not name or not name.replace('_', '').isalnum():
                raise ConfigError(f'groups: invalid group name {name!r} (letters, digits, _)')
            if g.thread:
                if g.thread == name:
                    continue
                if g.thread not in self.groups:
                    raise ConfigError(f'groups.{name}.thread: unknown group {g.thread!r}')
                owner = self.groups[g.thread]
                if owner.thread and owner.thread != g.thread:
                    raise ConfigError(
                        f'groups.{name}.thread: {g.thread!r} itself shares {owner.thread!r}; '
                        'name the owning group directly'
                    )
                if g.thread == NON_RT:
                    raise ConfigError(f'groups.{name}.thread: cannot share the {NON_RT} thread')
                if g.thread_settings() != owner.thread_settings():
                    raise ConfigError(
                        f'groups.{name}: conflicts with groups.{g.thread} whose thread it shares '
                        f'(policy/priority/cpus/spin_us/miss_policy must be identical)'
                    )
        threads = self.threads()
        rt_threads = [(t, self.groups[t]) for t in threads if self.groups[t].is_rt]
        for i, (ta, ga) in enumerate(rt_threads):
            for tb, gb in rt_threads[i + 1 :]:
                cpus_a = set(ga.real_cpus) or set(online_cpus())
                cpus_b = set(gb.real_cpus) or set(online_cpus())
                if ga.priority == gb.priority and cpus_a & cpus_b:
                    raise ConfigError(
                        f'groups.{ta} and groups.{tb}: same priority {ga.priority} on overlapping CPUs '
                        f'{sorted(cpus_a & cpus_b)}; give them distinct priorities or share one thread'
                    )
        if self.prefault_heap_bytes < 0 or self.prefault_heap_bytes > (1 << 32):
            raise ConfigError(f'prefault_heap_bytes must be in 0..4 GiB, got {self.prefault_heap_bytes}')
        if self.gc_collect_period_s < 0:
            raise ConfigError(f'gc_collect_period_s must be >= 0, got {self.gc_collect_period_s}')
        if not (self.gil_switch_interval_s == 0 or 1e-6 <= self.gil_switch_interval_s <= 0.1):
            raise ConfigError(
                f'gil_switch_interval_s must be 0 or in [1e-6, 0.1], got {self.gil_switch_interval_s}'
            )
        if self.thread_stack_bytes != 0 and self.thread_stack_bytes < 32768:
            raise ConfigError(f'thread_stack_bytes must be 0 or >= 32768, got {self.thread_stack_bytes}')
        if not 0 <= self.housekeeping_priority <= PRIORITY_MAX:
            raise ConfigError(
                f'housekeeping_priority must be in 0..{PRIORITY_MAX}, got {self.housekeeping_priority}'
            )
        resolve_cpus(self.housekeeping_cpus, 'housekeeping_cpus')
        rt_prios = [g.priority for g in self.groups.values() if g.is_rt]
        if self.housekeeping_priority and rt_prios and self.housekeeping_priority >= min(rt_prios):
            raise ConfigError(
                f'housekeeping_priority {self.housekeeping_priority} must be below every RT group '
                f'(lowest is {min(rt_prios)})'
            )
        if self.stats_capacity < 16:
            raise ConfigError(f'stats_capacity must be >= 16, got {self.stats_capacity}')

    def thread_of(self, group: str) -> str:
        """Name of the thread that runs `group` (the group itself or the one it shares).

        Raises:
            ConfigError: `group` is not configured.
        """
        g = self.groups.get(group)
        if g is None:
            raise ConfigError(f'unknown rt group {group!r}; configured groups: {sorted(self.groups)}')
        return g.thread or group

    def threads(self) -> list[str]:
        """Names of the threads (owning groups), non_rt first."""
        names = [NON_RT]
        for name in self.groups:
            t = self.thread_of(name)
            if t not in names:
                names.append(t)
        return names
