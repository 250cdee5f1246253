"""CPU placement of a deployment's processes: per-process overrides of the rt groups' CPU sets and
priorities (ROS parameters, set by the launch files), the shipped placement for this machine, and
a start-up check for real-time threads of OTHER processes that can delay ours.

* :func:`placement_from_parameters` (called by ``run_node``): declares the read-only parameters
  ``rt.<thread>.cpus`` (``'1'``, ``'0,2-3'``, ``'-1'`` = last CPU, ``''`` = not pinned; an int or
  an int list also works) and ``rt.<thread>.priority`` for every rt thread of the config (a group
  sharing a thread follows its owner), plus ``rt.expected_peers`` (process names whose threads
  are placed above ours on purpose), and returns the config with them applied (validated).
* :func:`default_placement` -- the shipped launch files' plan for the machine's CPUs: the control
  chain (policy + safety) on the last CPU, safety above the policy and its monitor above both;
  simulators, observers and the monitor on the other CPUs, the simulated robot above the other
  simulators; nothing but the chain above FIFO 80.
* :func:`fifo_threads_on` -- FIFO/RR threads of other processes on given CPUs at >= a priority
  (``/proc/*/task/*/stat`` + ``sched_getaffinity``); :func:`warn_competitors` is what the executor
  calls at start-up (threads at or below ``rt.helper_threads.priority`` are not checked: every
  process's DDS helper threads run above them by design).

Not RT code (start-up only). No rclpy import at module level (only :func:`placement_from_parameters`
uses a node's public parameter API).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.rt.config import NON_RT, RtConfig, online_cpus

_POLICY_NAMES = {1: 'FIFO', 2: 'RR'}
_EXPECTED: set[str] = set()
MAX_LISTED = 6  # competitors named per warning line


def parse_cpus(value: Any, where: str = 'cpus') -> list[int]:
    """CPU list from a parameter value: '' / [] = not pinned, '1', '0,2-3', '-1', 3, [0, 1].

    Raises:
        ConfigError: not a CPU list (one line naming `where`).
    """
    if isinstance(value, bool):
        raise ConfigError(f'{where}: expected a CPU list such as "1" or "0,2-3", got {value!r}')
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [int(v) for v in value]
        raise ConfigError(f'{where}: expected a list of CPU ids, got {value!r}')
    text = str(value).strip().strip('[]')
    out: list[int] = []
    try:
        for part in (p.strip() for p in text.split(',')):
            if not part:
                continue
            lo, sep, hi = part.partition('-') if not part.startswith('-') else (part, '', '')
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise ConfigError(f'{where}: expected a CPU list such as "1" or "0,2-3", got {value!r}') from None
    return out


def format_cpus(cpus: Iterable[int]) -> str:
    """Inverse of :func:`parse_cpus` for a plain list ('' = not pinned)."""
    return ','.join(str(c) for c in cpus)


def thread_owners(cfg: RtConfig) -> list[str]:
    """rt threads that can be placed (owning groups, non_rt excluded)."""
    return [t for t in cfg.threads() if t != NON_RT]


def apply_placement(cfg: RtConfig, placement: dict[str, dict[str, Any]]) -> RtConfig:
    """`cfg` with ``{thread: {'cpus': [...], 'priority': p}}`` applied to each thread and the groups
    sharing it (validated as a whole by RtConfig).

    Raises:
        ConfigError: unknown thread, or the result is not a valid rt config (the reason).
    """
    groups = dict(cfg.groups)
    for thread, change in placement.items():
        if thread not in groups or groups[thread].thread:
            raise ConfigError(f'rt placement: {thread!r} is not an rt thread; threads: {thread_owners(cfg)}')
        for name, g in cfg.groups.items():
            if name == thread or g.thread == thread:
                try:
                    groups[name] = dataclasses.replace(g, **change)
                except ConfigError as err:
                    raise ConfigError(f'rt placement: rt.{thread}: {err}') from None
    try:
        return dataclasses.replace(cfg, groups=groups)
    except ConfigError as err:
        raise ConfigError(f'rt placement: {err}') from None


def set_expected_peers(names: Iterable[str]) -> None:
    """Process names (``/proc/<pid>/comm``) whose threads may share our CPUs at >= our priority."""
    _EXPECTED.clear()
    _EXPECTED.update(n.strip()[:15] for n in names if n.strip())


def expected_peers() -> set[str]:
    """The names set by :func:`set_expected_peers` (``rt.expected_peers``)."""
    return set(_EXPECTED)


def placement_from_parameters(node: Any, cfg: RtConfig) -> RtConfig:
    """Declare ``rt.<thread>.cpus`` / ``rt.<thread>.priority`` / ``rt.expected_peers`` (read-only)
    on `node`, initialised from `cfg`, and return `cfg` with their values (launch overrides) applied.

    Raises:
        ConfigError: a value that is not a CPU list / priority, or an invalid resulting config.
    """
    from rcl_interfaces.msg import ParameterDescriptor

    placement: dict[str, dict[str, Any]] = {}
    for thread in thread_owners(cfg):
        g = cfg.groups[thread]
        cpus_name, prio_name = f'rt.{thread}.cpus', f'rt.{thread}.priority'
        node.declare_parameter(
            cpus_name,
            format_cpus(g.cpus),
            ParameterDescriptor(
                description=f"CPUs of rt thread {thread!r}: '1', '0,2-3', '-1' = last, '' = not pinned",
                read_only=True,
                dynamic_typing=True,
            ),
        )
        node.declare_parameter(
            prio_name,
            g.priority,
            ParameterDescriptor(
                description=f'priority of rt thread {thread!r} (1..98 fifo/rr, 0 other)', read_only=True
            ),
        )
        cpus = parse_cpus(node.get_parameter(cpus_name).value, cpus_name)
        prio = node.get_parameter(prio_name).value
        if cpus != list(g.cpus) or prio != g.priority:
            placement[thread] = {'cpus': cpus, 'priority': int(prio)}
    node.declare_parameter(
        'rt.expected_peers',
        '',
        ParameterDescriptor(
            description='comma-separated process names placed above this one on purpose '
            '(no start-up warning)',
            read_only=True,
        ),
    )
    set_expected_peers(str(node.get_parameter('rt.expected_peers').value).split(','))
    return apply_placement(cfg, placement) if placement else cfg


def default_placement(
    cpus: Sequence[int] | None = None,
    *,
    control_cpus: Sequence[int] | None = None,
    sim_cpus: Sequence[int] | None = None,
    observer_cpus: Sequence[int] | None = None,
    policy_priority: int = 80,
    safety_priority: int = 81,
) -> dict[str, dict[str, Any]]:
    """ROS parameters per executable for this machine (what the shipped launch files pass).

    `cpus` defaults to this process's allowed CPUs. The chain (policy's ``control`` thread, the
    safety node's ``control`` thread and its ``safety_monitor``) goes on the last CPU; simulators,
    observers and the monitor on the others (all on one CPU when there is only one). Priorities:
    safety_monitor > safety > policy > sim_robot (70) > sim_human (31) > sim_operator (30) >
    observers (10).

    Raises:
        ConfigError: priorities out of order or out of range.
    """
    allowed = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    chain = list(control_cpus) if control_cpus else allowed[-1:]
    rest = [c for c in allowed if c not in chain] or chain
    sims = list(sim_cpus) if sim_cpus else rest
    obs = list(observer_cpus) if observer_cpus else rest
    monitor_priority = min(98, max(85, safety_priority + 4))
    if not 70 < policy_priority < safety_priority < monitor_priority <= 98:
        raise ConfigError(
            f'placement: need 70 < policy_priority ({policy_priority}) < safety_priority '
            f'({safety_priority}) < 98 (the simulated robot runs at 70, the safety monitor above safety)'
        )
    o = {'rt.observers.cpus': format_cpus(obs)}
    return {
        'policy_node': {
            'rt.control.cpus': format_cpus(chain),
            'rt.control.priority': policy_priority,
            'rt.expected_peers': 'safety_node',  # safety preempts the policy on purpose
            **o,
        },
        'safety_node': {
            'rt.control.cpus': format_cpus(chain),
            'rt.control.priority': safety_priority,
            'rt.safety_monitor.cpus': format_cpus(chain),
            'rt.safety_monitor.priority': monitor_priority,
            **o,
        },
        'sim_robot': {'rt.sim.cpus': format_cpus(sims), 'rt.sim.priority': 70, **o},
        'sim_human': {'rt.sim.cpus': format_cpus(sims), 'rt.sim.priority': 31, **o},
        'sim_operator': {'rt.sim.cpus': format_cpus(sims), 'rt.sim.priority': 30, **o},
        'monitor_node': {**o},
    }


class ForeignThread(NamedTuple):
    """A real-time thread of another process."""

    pid: int
    tid: int
    process: str  # /proc/<pid>/comm
    thread: str  # /proc/<pid>/task/<tid>/comm
    policy: str  # 'FIFO' | 'RR'
    priority: int
    cpus: tuple[int, ...]

    def describe(self) -> str:
        """``process[pid]/thread FIFO p CPUs [..]``."""
        return (
            f'{self.process}[{self.pid}]/{self.thread} {self.policy} {self.priority} CPUs {list(self.cpus)}'
        )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ''


def fifo_threads_on(
    cpus: Iterable[int], min_priority: int, *, exclude_pids: Iterable[int] | None = None, proc: str = '/proc'
) -> list[ForeignThread]:
    """FIFO/RR threads of other processes allowed on any of `cpus` with priority >= `min_priority`.

    Reads ``/proc/<pid>/task/<tid>/stat`` (fields rt_priority, policy) and the thread's affinity
    (``os.sched_getaffinity``). Threads that vanish while scanning are skipped. Not RT-safe.
    """
    want = set(cpus)
    skip = {os.getpid()} if exclude_pids is None else set(exclude_pids)
    out: list[ForeignThread] = []
    root = Path(proc)
    try:
        pids = [int(p) for p in os.listdir(root) if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        if pid in skip:
            continue
        try:
            tids = [int(t) for t in os.listdir(root / str(pid) / 'task')]
        except (OSError, ValueError):
            continue
        pname = ''
        for tid in tids:
            stat = _read(root / str(pid) / 'task' / str(tid) / 'stat')
            rparen = stat.rfind(')')
            if rparen < 0:
                continue
            fields = stat[rparen + 2 :].split()
            try:
                ppid, prio, policy = int(fields[1]), int(fields[37]), int(fields[38])  # stat fields 4, 40, 41
            except (IndexError, ValueError):
                continue
            if pid == 2 or ppid == 2:  # kernel threads (kthreadd's children: migration/N, irq/..)
                break
            if policy not in _POLICY_NAMES or prio < min_priority:
                continue
            try:
                aff = tuple(sorted(os.sched_getaffinity(tid)))
            except OSError:
                continue
            if not want & set(aff):
                continue
            if not pname:
                pname = _read(root / str(pid) / 'comm').strip() or '?'
            tname = stat[stat.find('(') + 1 : rparen]
            out.append(ForeignThread(pid, tid, pname, tname, _POLICY_NAMES[policy], prio, aff))
    return out


def warn_competitors(cfg: RtConfig, threads: Iterable[Any], warn: Callable[[str, str], None]) -> list[str]:
    """Warn (one line per rt thread of ours) about FIFO/RR threads of other processes on its CPUs at
    >= its priority, except processes named in ``rt.expected_peers``.

    `threads`: the executor's group threads (``.name``, ``.cfg`` a GroupConfig, ``.started``; those
    not started are skipped) or ``(name, GroupConfig)`` pairs; ``warn(key, message)``. Threads at or
    below ``rt.helper_threads.priority`` are not checked. Returns the warnings. Never raises.
    """
    lines: list[str] = []
    floor = cfg.helper_threads.priority if cfg.helper_threads.is_rt else 0
    expected = expected_peers()
    try:
        for th in threads:
            name, g = th if isinstance(th, tuple) else (th.name, th.cfg)
            if not isinstance(th, tuple) and not th.started:
                continue
            if not g.is_rt or g.priority <= floor:
                continue
            cpus = g.real_cpus or online_cpus()
            found = [t for t in fifo_threads_on(cpus, g.priority) if t.process not in expected]
            if not found:
                continue
            found.sort(key=lambda t: -t.priority)
            listed = '; '.join(t.describe() for t in found[:MAX_LISTED])
            more = f' (+{len(found) - MAX_LISTED} more)' if len(found) > MAX_LISTED else ''
            line = (
                f'rt thread {name} (SCHED_{g.policy.upper()} {g.priority}, CPUs {list(cpus)}) shares '
                f'its CPUs with real-time threads of other processes at >= its priority, which can delay it: '
                f'{listed}{more}. Place the processes apart (parameters rt.<thread>.cpus / '
                f'rt.<thread>.priority, launch arguments control_cpus / sim_cpus) or name intended '
                f'peers in rt.expected_peers'
            )
            lines.append(line)
            warn(f'placement:{name}', line)
    except Exception as err:  # a diagnostic must never stop the executor
        lines.append(f'placement check failed: {err!r}')
    return lines
