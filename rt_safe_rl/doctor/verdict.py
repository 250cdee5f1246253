"""The doctor's verdict: one line that tells the machine's share of the jitter from ours.

``verdict_line()`` is what ``bench rt``, ``bench replay`` and the demo print beside their figures,
e.g. ``machine: VM, not PREEMPT_RT, CPU1 steal 11%, C floor loop missed 4.8% of 1 kHz periods``.
Not RT code (it reads /proc and /sys and, without a given floor, runs the C loop ~1 s).
"""

from __future__ import annotations

from typing import Any

from rt_safe_rl.config import load_config
from rt_safe_rl.doctor.checks import PASS, Check, make_context, measure_steal, run_checks
from rt_safe_rl.doctor.floor import c_floor
from rt_safe_rl.doctor.sysfs import SysRoot, cpu_times, steal_percent


def verdict(checks: list[Check], floor: dict[str, Any] | None, rt_cpus: set[int]) -> str:
    """The verdict string from check results and (optionally) a floor measurement."""
    by = {c.name: c for c in checks}
    parts: list[str] = []
    virt = by.get('virtualization')
    parts.append('VM' if virt is not None and virt.status != PASS else 'bare metal')
    rt = by.get('preempt_rt')
    parts.append('PREEMPT_RT' if rt is not None and rt.status == PASS else 'not PREEMPT_RT')
    iso = by.get('isolcpus')
    if iso is not None and iso.status != PASS:
        parts.append('RT CPU not isolated')
    steal = (floor or {}).get('steal_percent') or {}
    if steal:
        worst = max(rt_cpus, key=lambda c: steal.get(c, steal.get(str(c), 0.0)))
        v = steal.get(worst, steal.get(str(worst), 0.0))
        parts.append(f'CPU{worst} steal {v:.2g}%')
    c = (floor or {}).get('c') or {}
    if 'misses_per_1e4' in c:
        pct = c['misses_per_1e4'] / 100.0
        khz = c.get('rate_hz', 1000.0) / 1000.0
        parts.append(
            f'C floor loop missed {pct:.2g}% of {khz:g} kHz periods '
            f'({c.get("misses", 0)}/{c.get("cycles", 0)}, p99 late {c["lateness_us"]["p99"]:g} us)'
        )
    elif 'skipped' in c:
        parts.append(f'C floor loop not run ({c["skipped"]})')
    n_warn = sum(1 for x in checks if x.status == 'WARN')
    n_fail = sum(1 for x in checks if x.status == 'FAIL')
    return 'machine: ' + ', '.join(parts) + f' [doctor: {n_fail} FAIL, {n_warn} WARN]'


def verdict_line(
    floor: dict[str, Any] | None = None, measure_s: float = 1.0, config: Any = None, root: str = '/'
) -> str:
    """One line about this machine (see module docstring); never raises.

    Args:
        floor: a measurement to reuse: ``{'c': <bench rt loop stats>, 'steal_percent': {...}}``
            (``bench rt`` passes its ``floor_c`` phase); None = run the C loop for `measure_s`.
        measure_s: seconds of the C floor loop when `floor` is None (0 = checks only).
        config: AppConfig (RT CPUs, priority); None = the shipped default.
        root: system root (tests).
    """
    try:
        cfg = config if config is not None else load_config()
        ctx = make_context(cfg, root, steal={})
        checks = run_checks(ctx, skip=('cpu_steal', 'foreign_fifo_threads'))
        fl: dict[str, Any] = dict(floor or {})
        cpu = max(ctx.rt_cpus)
        if 'c' not in fl and measure_s > 0:
            before = cpu_times(SysRoot(root).read('/proc/stat'))
            fl['c'] = c_floor(measure_s, cpu, ctx.max_priority if ctx.max_priority > 0 else 80)
            fl['steal_percent'] = steal_percent(before, cpu_times(SysRoot(root).read('/proc/stat')))
        elif 'steal_percent' not in fl and root == '/':
            fl['steal_percent'] = measure_steal(SysRoot(root), 0.5)
        return verdict(checks, fl, ctx.rt_cpus)
    except Exception as err:  # the verdict must never break the benchmark that prints it
        return f'machine: verdict unavailable ({type(err).__name__}: {err})'
