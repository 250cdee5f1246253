"""``rt-safe-rl doctor``: system checks, a measured floor, a verdict; optionally apply/restore.

    rt-safe-rl doctor [--json FILE] [--apply] [--restore FILE] [--restore-file OUT]
                      [--floor-s S] [--config C] [--profile P]

Prints a table on stderr and JSON on stdout: ``{"checks": [{"name", "status", "value", "fix"}],
"floor": {...}, "verdict": str, ...}``. Nothing changes without ``--apply`` (root only): then the
reversible settings are applied (:mod:`rt_safe_rl.doctor.apply`), a restore file is written, and
the floor is measured again in the same run (``floor.after``, ``floor.ratio_after_over_before``).
``--restore FILE`` undoes an apply. Exit 0; 2 for bad arguments or a refused --apply.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rt_safe_rl.bench.child import emit_json, run_as_script
from rt_safe_rl.config import load_config
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.doctor.apply import apply, restore
from rt_safe_rl.doctor.checks import make_context, run_checks
from rt_safe_rl.doctor.floor import measure_floor
from rt_safe_rl.doctor.verdict import verdict


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='rt-safe-rl doctor', description=(__doc__ or '').split('\n\n')[0])
    p.add_argument('--json', default='', help='also write the JSON report to this file')
    p.add_argument(
        '--apply', action='store_true', help='apply the reversible fixes (root; writes a restore file)'
    )
    p.add_argument('--restore', default='', metavar='FILE', help='undo an --apply from its restore file')
    p.add_argument(
        '--restore-file',
        default='rt_safe_rl_doctor_restore.json',
        help='where --apply writes the restore file (default ./rt_safe_rl_doctor_restore.json)',
    )
    p.add_argument('--floor-s', type=float, default=2.0, help='seconds per floor loop (C, Python); 0 = skip')
    p.add_argument('--config', default=None, help='config file (default: the shipped default.yaml)')
    p.add_argument('--profile', default=None, help='deployment profile (RT CPUs, governor, hugepages)')
    p.add_argument('--root', default='/', help=argparse.SUPPRESS)  # tests: a copy of /proc and /sys
    return p


def _ratio(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for loop in ('c', 'python'):
        a, b = after.get(loop) or {}, before.get(loop) or {}
        if 'lateness_us' not in a or 'lateness_us' not in b:
            continue
        la, lb = a['lateness_us']['p99'], b['lateness_us']['p99']
        ma, mb = a['misses_per_1e4'], b['misses_per_1e4']
        out[loop] = {
            'lateness_p99': round(la / lb, 3) if lb > 0 else None,
            'misses_per_1e4': round(ma / mb, 3) if mb > 0 else None,
        }
    return out


def _table(checks: list[Any], verdict: str) -> str:
    lines = [
        f'{c.status:4} {c.name:22} {c.value}' + (f'\n     fix: {c.fix}' if c.fix else '') for c in checks
    ]
    return '\n'.join([*lines, verdict])


def _floor(a: argparse.Namespace, ctx: Any) -> dict[str, Any]:
    if a.floor_s <= 0 or a.root != '/':
        return {'skipped': 'floor not measured (--floor-s 0)' if a.floor_s <= 0 else 'not the live system'}
    prio = ctx.max_priority if ctx.max_priority > 0 else 80
    print(f'[doctor] floor: C then Python SCHED_FIFO loops, {a.floor_s:g} s each...', file=sys.stderr)
    return measure_floor(a.floor_s, max(ctx.rt_cpus), min(prio, 80), config=a.config or '')


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rt-safe-rl doctor``; returns the exit code."""
    a = _parser().parse_args(argv)
    if a.restore:
        res = restore(a.restore, None if a.root == '/' else a.root)
        print(json.dumps(res, indent=2))
        return 0 if not res['failed'] else 1
    if not 0.0 <= a.floor_s <= 60.0:
        raise RtSafeRlError(f'--floor-s must be in [0, 60], got {a.floor_s}')
    if a.apply and a.root == '/' and os.geteuid() != 0:
        raise RtSafeRlError('--apply changes kernel settings: run it as root (sudo), or drop --apply')
    cfg = load_config(a.config, profile=a.profile)
    ctx = make_context(cfg, a.root)
    floor = _floor(a, ctx)
    if 'steal_percent' in floor:
        ctx.steal = floor['steal_percent']
    checks = run_checks(ctx)
    report: dict[str, Any] = {'rt_cpus': sorted(ctx.rt_cpus), 'profile': cfg.deployment.profile}
    if a.apply:
        report['apply'] = apply(ctx, Path(a.restore_file))
        print(
            f'[doctor] applied {len(report["apply"]["applied"])} setting(s); undo: '
            f'rt-safe-rl doctor --restore {a.restore_file}',
            file=sys.stderr,
        )
        after = _floor(a, ctx)
        if 'c' in after:
            floor['after'] = after
            floor['ratio_after_over_before'] = _ratio(after, floor)
        ctx.steal = after.get('steal_percent', ctx.steal)
        report['checks_before'] = [c.as_dict() for c in checks]
        checks = run_checks(ctx)
    text = verdict(checks, floor, ctx.rt_cpus)
    out = {'checks': [c.as_dict() for c in checks], 'floor': floor, 'verdict': text, **report}
    print(_table(checks, text), file=sys.stderr)
    emit_json(out, a.json)
    return 0


if __name__ == '__main__':
    run_as_script(main, 'rt-safe-rl doctor')
