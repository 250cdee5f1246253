"""``deployment.system_checks`` at start (API, ``bringup``, ``demo``): the doctor's static checks.

'warn' prints every WARN/FAIL loudly with its fix; 'require' raises on a FAIL (and on missing
RT privileges); 'off' does nothing. No floor measurement (that is ``rt-safe-rl doctor``).
Not RT code (start-up only, ~10 ms of /proc and /sys reads).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.doctor.checks import make_context, run_checks

BANNER = '!' * 78


def startup_checks(cfg: Any, log: Callable[[str], None] = print) -> list[Any]:
    """Run the static checks selected by ``cfg.deployment.system_checks``; returns them.

    Raises:
        RtSafeRlError: 'require' and a check FAILed (one line naming the checks).
    """
    mode = getattr(getattr(cfg, 'deployment', None), 'system_checks', 'off')
    if mode == 'off':
        return []
    ctx = make_context(cfg, '/', steal={})
    checks = run_checks(ctx, skip=('cpu_steal',))
    bad = [c for c in checks if c.status != 'PASS']
    fails = [c for c in bad if c.status == 'FAIL']
    profile = cfg.deployment.profile or 'this'
    if bad:
        log(BANNER)
        log(f'{profile} profile: {len(fails)} FAIL, {len(bad) - len(fails)} WARN in the system checks')
        for c in bad:
            log(f'  {c.status} {c.name}: {c.value}')
            if c.fix:
                log(f'       fix: {c.fix}')
        log('  full report with a measured floor: rt-safe-rl doctor')
        log(BANNER)
    if mode == 'require' and fails:
        raise RtSafeRlError(
            'deployment.system_checks=require: ' + ', '.join(f'{c.name} ({c.value})' for c in fails)
        )
    return checks
