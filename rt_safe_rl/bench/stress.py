"""Bounded CPU-burning stress workers for ``--stress N``.

Each worker is a separate Python process (``subprocess``, not fork: the parent may hold DDS
threads) running a tight integer loop for ``duty`` of every 10 ms slice at normal priority
(SCHED_OTHER). Workers stop by themselves when their time limit passes or their parent dies, so
an interrupted benchmark never leaves a CPU hog behind. Not RT-safe (process management);
start/stop around the replay.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

_BURN = r"""
import os, sys, time
parent, duty, deadline = int(sys.argv[1]), float(sys.argv[2]), time.monotonic() + float(sys.argv[3])
slice_s, x, n = 0.01, 1, 0
while time.monotonic() < deadline:
    n += 1
    if n % 10 == 0 and os.getppid() != parent:
        break
    t_end = time.monotonic() + slice_s * duty
    while time.monotonic() < t_end:
        for _ in range(200):
            x = (x * 1103515245 + 12345) & 0xFFFFFFFF
    if duty < 1.0:
        time.sleep(slice_s * (1.0 - duty))
"""


class StressWorkers:
    """``n`` CPU burners, each busy ``duty`` of the time, for at most ``max_s`` seconds.

    Use as a context manager around the measured replay; :meth:`summary` reports what ran.
    """

    def __init__(self, n: int, duty: float = 1.0, max_s: float = 3600.0) -> None:
        if n < 0 or n > 64:
            raise ValueError(f'stress workers must be in [0, 64], got {n}')
        if not 0.0 < duty <= 1.0:
            raise ValueError(f'stress duty must be in (0, 1], got {duty}')
        if max_s <= 0:
            raise ValueError(f'stress max_s must be > 0, got {max_s}')
        self.n = int(n)
        self.duty = float(duty)
        self.max_s = float(max_s)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._cpu_s = 0.0
        self._t0 = 0.0
        self._wall_s = 0.0

    def start(self) -> None:
        """Spawn the workers (no-op for n == 0)."""
        self._t0 = time.monotonic()
        for _ in range(self.n):
            self._procs.append(
                subprocess.Popen(
                    [sys.executable, '-c', _BURN, str(os.getpid()), str(self.duty), str(self.max_s)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def alive(self) -> int:
        """Number of workers still running."""
        return sum(1 for p in self._procs if p.poll() is None)

    def stop(self) -> None:
        """Terminate the workers and record the CPU time they burned. Idempotent."""
        if not self._procs:
            return
        try:
            import psutil

            for p in self._procs:
                try:
                    t = psutil.Process(p.pid).cpu_times()
                    self._cpu_s += t.user + t.system
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        except ImportError:
            pass
        for p in self._procs:
            if p.poll() is None:
                p.terminate()
        for p in self._procs:
            try:
                p.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=2.0)
        self._wall_s = time.monotonic() - self._t0
        self._procs.clear()

    def summary(self) -> dict[str, Any]:
        """What ran: workers, duty, wall time (s) and CPU seconds the workers burned."""
        return {
            'workers': self.n,
            'duty': self.duty,
            'wall_s': round(self._wall_s, 3),
            'cpu_s': round(self._cpu_s, 3),
            'kind': 'python busy loop, SCHED_OTHER, 10 ms slices',
        }

    def __enter__(self) -> StressWorkers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
