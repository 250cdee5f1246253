"""``doctor --apply`` / ``--restore``: change only reversible settings, remember the old values.

Applied (root only, opt-in): the governor of the RT CPUs (when cpufreq exists), device IRQ
affinity (moved off the RT CPUs when another CPU exists), RT throttling (sched_rt_runtime_us=-1),
transparent hugepages ('always' -> 'madvise'). Timer slack is per thread and rt_safe_rl sets it on
its own threads (nothing machine-wide to apply). Every write is recorded in a restore file
(JSON ``{"root", "writes": [{"path", "old", "new"}]}``) *before* it is made; ``--restore FILE``
writes the old values back in reverse order. Boot parameters (isolcpus, nohz_full, ...) need a
reboot and are never applied. ``root`` is a parameter so tests apply and restore on a copy.
Not RT code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.doctor.checks import Context, _selected, irq_on_rt_cpus
from rt_safe_rl.doctor.sysfs import SysRoot, format_cpulist, parse_cpulist


def planned_writes(ctx: Context) -> list[dict[str, str]]:
    """The writes --apply would make: [{'path', 'old', 'new', 'why'}] (reads only)."""
    s = ctx.sys
    out: list[dict[str, str]] = []
    for cpu in sorted(ctx.rt_cpus):
        p = f'/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor'
        old = s.read(p)
        if old is not None and old != ctx.governor:
            out.append({'path': p, 'old': old, 'new': ctx.governor, 'why': 'cpu_governor'})
    others = parse_cpulist(s.read('/sys/devices/system/cpu/online')) - ctx.rt_cpus
    if others:
        for irq in sorted(irq_on_rt_cpus(ctx)):
            p = f'/proc/irq/{irq}/smp_affinity_list'
            old = s.read(p)
            new = format_cpulist(others)
            if old is not None and old != new:
                out.append({'path': p, 'old': old, 'new': new, 'why': 'irq_affinity'})
    p = '/proc/sys/kernel/sched_rt_runtime_us'
    old = s.read(p)
    if old is not None and old != '-1':
        out.append({'path': p, 'old': old, 'new': '-1', 'why': 'rt_throttling'})
    p = '/sys/kernel/mm/transparent_hugepage/enabled'
    raw = s.read(p)
    if raw is not None and _selected(raw) == 'always':
        out.append({'path': p, 'old': 'always', 'new': 'madvise', 'why': 'transparent_hugepages'})
    return out


def apply(ctx: Context, restore_file: str | Path) -> dict[str, Any]:
    """Make the planned writes; the restore file is written first and after each write.

    Returns ``{'restore_file', 'applied': [...], 'failed': [{'path', 'error'}]}``. A write the
    kernel refuses (e.g. a per-CPU IRQ) is reported and skipped, never fatal.

    Raises:
        RtSafeRlError: the restore file cannot be written (then nothing was changed).
    """
    rf = Path(restore_file)
    record: dict[str, Any] = {'root': str(ctx.sys.root), 'writes': []}
    _save(rf, record)
    applied, failed = [], []
    for w in planned_writes(ctx):
        try:
            ctx.sys.write(w['path'], w['new'])
        except OSError as err:
            failed.append({'path': w['path'], 'error': err.strerror or str(err)})
            continue
        record['writes'].append({'path': w['path'], 'old': w['old'], 'new': w['new']})
        applied.append(w)
        _save(rf, record)
    return {'restore_file': str(rf), 'applied': applied, 'failed': failed}


def _save(path: Path, record: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(record, indent=2) + '\n')
    except OSError as err:
        raise RtSafeRlError(f'cannot write the restore file {path}: {err.strerror or err}') from None


def restore(restore_file: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """Write back the old values of a restore file, last write first.

    Raises:
        RtSafeRlError: unreadable / malformed restore file (one line).
    """
    rf = Path(restore_file)
    try:
        record = json.loads(rf.read_text())
        writes = list(record['writes'])
        base = root if root is not None else record.get('root', '/')
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RtSafeRlError(f'--restore {rf}: not a doctor restore file ({err})') from None
    s = SysRoot(base)
    restored, failed = [], []
    for w in reversed(writes):
        try:
            s.write(str(w['path']), str(w['old']))
            restored.append(w)
        except (OSError, KeyError) as err:
            failed.append({'path': str(w.get('path')), 'error': str(err)})
    return {'restored': restored, 'failed': failed}
