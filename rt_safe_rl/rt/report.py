"""The RT executor's report: what the OS granted and the per-thread/per-task counters.

:func:`threads_report` / :func:`kernel_report` build the parts of
:meth:`~rt_safe_rl.rt.executor.RtExecutor.report` (a plain, JSON-able dict); :func:`format_report`
turns that dict into the human-readable lines that ``spin`` logs at start-up. Not RT-safe (reads
``/proc``/``/sys``, allocates).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rt_safe_rl.rt import sched
from rt_safe_rl.rt.config import RtConfig

if TYPE_CHECKING:
    from rt_safe_rl.rt.group_thread import _GroupThread


def kernel_report() -> dict[str, Any]:
    """Kernel release, PREEMPT_RT, RT throttling (the ``kernel`` entry of the report)."""
    return {
        'release': os.uname().release,
        'preempt_rt': sched.has_realtime_kernel(),
        'rt_throttling': sched.rt_throttling(),
    }


def threads_report(config: RtConfig, threads: Iterable[_GroupThread]) -> dict[str, Any]:
    """Per RT thread: its groups, what was requested and granted, dispatch counters.

    `threads` in order retired-then-current: a fresh, never started thread does not hide the one
    that ran under the same name.
    """
    out: dict[str, Any] = {}
    for th in threads:
        if not th.started and th.name in out:
            continue  # a fresh, never started thread does not hide the one that ran
        g = th.grant
        out[th.name] = {
            'groups': sorted(n for n in config.groups if config.thread_of(n) == th.name),
            'requested': {
                'policy': th.cfg.policy,
                'priority': th.cfg.priority,
                'cpus': list(th.cfg.real_cpus),
                'spin_us': th.cfg.spin_us,
                'miss_policy': th.cfg.miss_policy,
            },
            'granted': g.granted if g else None,
            'warnings': g.warnings if g else [],
            'ros_dispatches': th.ros_dispatches,
            'polled_dispatches': th.polled_dispatches,
            'ros_errors': th.ros_errors,
            'wakeups': th.wakeups,
        }
    return out


def format_report(rep: dict[str, Any]) -> str:
    """Human-readable summary of :meth:`RtExecutor.report` (what the OS granted; counters)."""
    k = rep.get('kernel', {})
    proc = rep.get('process', {})
    gcr = rep.get('gc', {})
    ml = proc.get('mlock') or {}
    sw = proc.get('gil_switch_interval_s')
    mlock = 'granted' if ml.get('granted') else 'NOT granted'
    auto = 'on' if gcr.get('automatic_gc_while_running') else 'off'
    lines = [
        f'kernel {k.get("release")} ({"PREEMPT_RT" if k.get("preempt_rt") else "not PREEMPT_RT"}), '
        f'RT throttling {k.get("rt_throttling")}',
        f'mlockall: {mlock}; {proc.get("heap", "heap not prefaulted")}; GC: {gcr.get("frozen_objects", 0)} '
        f'objects frozen, automatic {auto}, {gcr.get("rt_collections", 0)} collections in RT threads; '
        + (f'GIL switch interval {sw * 1e6:.0f} us' if sw else 'GIL switch interval unchanged'),
    ]
    for name, th in rep.get('threads', {}).items():
        g = th.get('granted') or {}
        r = th.get('requested', {})
        got = (
            f'SCHED_{str(g.get("policy", "?")).upper()} {g.get("priority", "?")} on CPUs {g.get("cpus", "?")}'
        )
        ok = g.get('policy') == r.get('policy') and (not r.get('cpus') or g.get('cpus') == r.get('cpus'))
        lines.append(
            f'thread {name} {th.get("groups")}: {got}'
            + ('' if ok else f' (requested {r.get("policy")} {r.get("priority")} on {r.get("cpus")})')
        )
    for tname, t in rep.get('tasks', {}).items():
        if 'period_us' in t:
            lines.append(
                f'task {tname}: {t["runs"]} runs, {t["misses"]} misses, {t["overruns"]} overruns, '
                f'{t["skipped"]} skipped, max lateness {t["max_lateness_us"]} us, errors {t["errors"]}'
            )
        else:
            lines.append(f'task {tname}: {t["runs"]} runs, {t["coalesced"]} coalesced, errors {t["errors"]}')
    if rep.get('stalls') or rep.get('privilege_losses'):
        lines.append(f'stalls {rep.get("stalls")}, privilege losses {rep.get("privilege_losses")}')
    lines.extend(f'WARNING {w}' for w in rep.get('warnings', []))
    return '\n'.join(lines)
