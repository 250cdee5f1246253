"""psutil sampling of the machine, this process and its threads (non-RT, ~0.1-1 ms per call)."""

from __future__ import annotations

from typing import NamedTuple


class SystemSample(NamedTuple):
    """One psutil reading (percentages of one core for process/threads; of the machine for system)."""

    system_cpu_percent: float
    system_memory_percent: float
    process_cpu_percent: float
    process_rss_bytes: int
    ctx_switches_voluntary: int
    ctx_switches_involuntary: int
    threads_cpu_percent: dict[str, float]  # 'name:tid' -> % of one core since the previous sample (busy ones)


class SystemSampler:
    """psutil readings of the machine, this process and its threads (non-RT, ~0.1-1 ms per call)."""

    def __init__(self, per_thread: bool = True) -> None:
        import psutil  # local import: only the monitor needs it

        self._psutil = psutil
        self._proc = psutil.Process()
        self._per_thread = per_thread
        self._prev_threads: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._prev_t = 0.0
        psutil.cpu_percent(interval=None)  # prime the system counters
        self._proc.cpu_percent(interval=None)

    def _thread_name(self, tid: int) -> str:
        name = self._names.get(tid)
        if name is None:  # read once per thread id (threads rarely rename themselves after start)
            try:
                with open(f'/proc/self/task/{tid}/comm') as f:
                    name = f.read().strip()
            except OSError:
                name = 'thread'
            self._names[tid] = name
        return name

    def sample(self, now_s: float) -> SystemSample:
        """Read all metrics; per-thread CPU is the delta since the previous call."""
        ps = self._psutil
        with self._proc.oneshot():
            pcpu = self._proc.cpu_percent(interval=None)
            rss = int(self._proc.memory_info().rss)
            ctx = self._proc.num_ctx_switches()
            threads: dict[str, float] = {}
            if self._per_thread:
                dt = now_s - self._prev_t if self._prev_t > 0 else 0.0
                cur: dict[int, float] = {}
                for th in self._proc.threads():
                    used = th.user_time + th.system_time
                    cur[th.id] = used
                    prev = self._prev_threads.get(th.id)
                    if dt > 0 and prev is not None and used > prev:  # idle threads are left out
                        threads[f'{self._thread_name(th.id)}:{th.id}'] = 100.0 * (used - prev) / dt
                self._prev_threads = cur
                self._prev_t = now_s
                if len(self._names) > 2 * len(cur) + 16:  # forget threads that are gone
                    self._names = {t: n for t, n in self._names.items() if t in cur}
        return SystemSample(
            float(ps.cpu_percent(interval=None)),
            float(ps.virtual_memory().percent),
            float(pcpu),
            rss,
            int(ctx.voluntary),
            int(ctx.involuntary),
            threads,
        )
