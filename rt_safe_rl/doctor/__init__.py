"""``rt-safe-rl doctor``: what this machine gives a 1 kHz real-time loop, and how to fix it.

:func:`run_checks` (static checks of /proc and /sys under a configurable root, so tests run on
copies), :func:`measure_floor` (C and Python SCHED_FIFO sleep loops on the RT CPU),
:func:`verdict_line` (the one line printed beside benchmark figures), ``apply`` / ``restore`` of
the reversible settings (``doctor.apply``). No ROS. Not RT code.
"""

from rt_safe_rl.doctor.checks import Check, rt_cpus_of, run_checks
from rt_safe_rl.doctor.verdict import verdict, verdict_line

__all__ = ['Check', 'rt_cpus_of', 'run_checks', 'verdict', 'verdict_line']
