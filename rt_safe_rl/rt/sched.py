"""OS-level real-time setup for the calling thread/process: scheduling, affinity, mlockall, clocks.

Every function *reports instead of raising* (like realtime_tools' helpers): it returns
``(ok, message)``, where the message names the missing capability or limit (CAP_SYS_NICE,
RLIMIT_RTPRIO, CAP_IPC_LOCK, RLIMIT_MEMLOCK) so callers can warn and keep running.
Linux only; on other systems the functions return ``(False, 'not supported ...')``.

RT-safety: the setup functions are configure-time (they allocate). :class:`AbsSleeper` and
:func:`monotonic_ns` are usable in RT threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import resource
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rt_safe_rl.core.errors import RtSafeRlError

SCHED_OTHER = getattr(os, 'SCHED_OTHER', 0)
SCHED_FIFO = getattr(os, 'SCHED_FIFO', 1)
SCHED_RR = getattr(os, 'SCHED_RR', 2)
POLICY_NAMES = {
    SCHED_OTHER: 'other',
    SCHED_FIFO: 'fifo',
    SCHED_RR: 'rr',
    getattr(os, 'SCHED_BATCH', 3): 'batch',
    getattr(os, 'SCHED_IDLE', 5): 'idle',
}
POLICY_IDS = {'other': SCHED_OTHER, 'fifo': SCHED_FIFO, 'rr': SCHED_RR}

_MCL_CURRENT = 1
_MCL_FUTURE = 2
_PR_SET_NAME = 15
_PR_SET_TIMERSLACK = 29
_PR_GET_TIMERSLACK = 30
_CLOCK_MONOTONIC = 1
_TIMER_ABSTIME = 1
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

monotonic_ns = time.monotonic_ns


class _Timespec(ctypes.Structure):
    _fields_ = [('tv_sec', ctypes.c_long), ('tv_nsec', ctypes.c_long)]


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


def gettid() -> int:
    """Kernel thread id of the calling thread."""
    return threading.get_native_id()


def _rtprio_limit() -> str:
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_RTPRIO)
        return f'RLIMIT_RTPRIO soft={soft} hard={hard}'
    except (AttributeError, OSError, ValueError):
        return 'RLIMIT_RTPRIO unknown'


def _memlock_limit() -> str:
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)

        def fmt(v: int) -> str:
            return 'unlimited' if v == resource.RLIM_INFINITY else f'{v // 1024} KiB'

        return f'RLIMIT_MEMLOCK soft={fmt(soft)} hard={fmt(hard)}'
    except (AttributeError, OSError, ValueError):
        return 'RLIMIT_MEMLOCK unknown'


def set_thread_scheduler(policy: str, priority: int) -> tuple[bool, str]:
    """Set the calling thread's scheduling policy ('fifo'|'rr'|'other') and priority.

    Returns ``(ok, message)``; on EPERM the message names CAP_SYS_NICE and RLIMIT_RTPRIO.
    """
    if not hasattr(os, 'sched_setscheduler'):
        return False, 'sched_setscheduler not supported on this OS'
    pol = POLICY_IDS[policy]
    prio = priority if policy != 'other' else 0
    try:
        os.sched_setscheduler(0, pol, os.sched_param(prio))
    except PermissionError:
        return False, (
            f'SCHED_{policy.upper()} priority {prio} refused (EPERM): needs CAP_SYS_NICE or '
            f'an rtprio limit >= {prio} ({_rtprio_limit()}); running at SCHED_OTHER'
        )
    except OSError as err:
        return False, f'SCHED_{policy.upper()} priority {prio} failed: {err}'
    return True, f'SCHED_{policy.upper()} priority {prio}'


def set_thread_affinity(cpus: tuple[int, ...] | list[int]) -> tuple[bool, str]:
    """Pin the calling thread to `cpus` (empty = leave as is)."""
    if not cpus:
        return True, 'not pinned'
    if not hasattr(os, 'sched_setaffinity'):
        return False, 'sched_setaffinity not supported on this OS'
    try:
        os.sched_setaffinity(0, set(cpus))
    except PermissionError:
        return False, f'CPU affinity {sorted(cpus)} refused (EPERM): needs CAP_SYS_NICE'
    except OSError as err:
        return False, f'CPU affinity {sorted(cpus)} failed: {err} (CPUs not in this cpuset/cgroup?)'
    return True, f'pinned to CPUs {sorted(cpus)}'


def set_thread_name(name: str) -> None:
    """Name the calling OS thread (visible in ``ps -L``, ``top -H``; truncated to 15 bytes)."""
    if _LIBC is None:
        return
    _LIBC.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def set_timer_slack_ns(slack_ns: int) -> tuple[bool, str]:
    """PR_SET_TIMERSLACK for the calling thread (affects SCHED_OTHER sleeps; default 50 us)."""
    if _LIBC is None:
        return False, 'libc not available'
    if slack_ns <= 0:
        return True, 'default timer slack'
    rc = _LIBC.prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(slack_ns), 0, 0, 0)
    if rc != 0:
        return False, f'PR_SET_TIMERSLACK failed: {os.strerror(ctypes.get_errno())}'
    return True, f'timer slack {slack_ns} ns'


def lock_memory() -> tuple[bool, str]:
    """``mlockall(MCL_CURRENT | MCL_FUTURE)``; the message names CAP_IPC_LOCK / RLIMIT_MEMLOCK."""
    if _LIBC is None:
        return False, 'libc not available: memory not locked'
    rc = _LIBC.mlockall(_MCL_CURRENT | _MCL_FUTURE)
    if rc == 0:
        return True, 'mlockall(MCL_CURRENT|MCL_FUTURE)'
    err = ctypes.get_errno()
    if err in (errno.EPERM, errno.ENOMEM):
        return False, (
            f'mlockall refused ({errno.errorcode.get(err, err)}): needs CAP_IPC_LOCK or a '
            f'large enough memlock limit ({_memlock_limit()}); memory not locked'
        )
    return False, f'mlockall failed: {os.strerror(err)}'


def unlock_memory() -> None:
    """``munlockall()`` (used by tests and at shutdown)."""
    if _LIBC is not None:
        _LIBC.munlockall()


def memory_locked() -> bool:
    """True when this process has locked memory (VmLck > 0 in /proc/self/status)."""
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('VmLck:'):
                return int(line.split()[1]) > 0
    except (OSError, ValueError, IndexError):
        pass
    return False


def configure_malloc_for_rt(prefault_heap_bytes: int) -> tuple[bool, str]:
    """Keep freed C-heap memory in the process and prefault `prefault_heap_bytes` of it.

    ``mallopt(M_TRIM_THRESHOLD, -1)`` (never give memory back), ``mallopt(M_MMAP_MAX, 0)`` (no
    per-allocation mmap), then malloc + touch + free a block so later mallocs reuse resident
    pages. glibc only; other libcs report False.
    """
    if _LIBC is None or not hasattr(_LIBC, 'mallopt'):
        return False, 'mallopt not available (not glibc): heap not prefaulted'
    if prefault_heap_bytes <= 0:
        return True, 'heap prefault disabled'
    ok1 = _LIBC.mallopt(_M_TRIM_THRESHOLD, -1)
    ok2 = _LIBC.mallopt(_M_MMAP_MAX, 0)
    malloc = _LIBC.malloc
    malloc.restype = ctypes.c_void_p
    malloc.argtypes = [ctypes.c_size_t]
    free = _LIBC.free
    free.argtypes = [ctypes.c_void_p]
    ptr = malloc(prefault_heap_bytes)
    if not ptr:
        return False, f'could not prefault {prefault_heap_bytes} bytes of heap (malloc failed)'
    page = os.sysconf('SC_PAGE_SIZE') if hasattr(os, 'sysconf') else 4096
    buf = (ctypes.c_char * prefault_heap_bytes).from_address(ptr)
    for off in range(0, prefault_heap_bytes, page):
        buf[off] = b'\0'
    free(ptr)
    if not (ok1 and ok2):
        return False, 'mallopt refused: heap prefaulted but may be trimmed'
    return True, f'heap: {prefault_heap_bytes >> 20} MiB prefaulted, trim/mmap off'


def has_realtime_kernel() -> bool:
    """True on a PREEMPT_RT kernel (``/sys/kernel/realtime`` or 'PREEMPT_RT' in uname)."""
    try:
        if Path('/sys/kernel/realtime').read_text().strip() == '1':
            return True
    except OSError:
        pass
    return 'PREEMPT_RT' in os.uname().version


def rt_throttling() -> str:
    """The kernel's RT throttling setting (sched_rt_runtime_us / period), for reports."""
    try:
        runtime = Path('/proc/sys/kernel/sched_rt_runtime_us').read_text().strip()
        period = Path('/proc/sys/kernel/sched_rt_period_us').read_text().strip()
        return f'{runtime}/{period} us'
    except OSError:
        return 'unknown'


def thread_state(tid: int = 0) -> dict[str, Any]:
    """What the OS actually granted to thread `tid` (0 = caller): policy, priority, affinity."""
    tid = tid or gettid()
    out: dict[str, Any] = {'tid': tid}
    try:
        out['policy'] = POLICY_NAMES.get(os.sched_getscheduler(tid), str(os.sched_getscheduler(tid)))
        out['priority'] = os.sched_getparam(tid).sched_priority
        out['cpus'] = sorted(os.sched_getaffinity(tid))
    except (OSError, AttributeError) as err:
        out['error'] = str(err)
    return out


def _setup_cns() -> Any:
    if _LIBC is None or not hasattr(_LIBC, 'clock_nanosleep'):
        return None
    fn = _LIBC.clock_nanosleep
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Timespec), ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_CNS = _setup_cns()


class AbsSleeper:
    """Per-thread absolute-deadline sleeper (own timespec, so threads never share scratch state).

    ``sleep_until(deadline_ns)`` = ``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)``; the GIL is
    released during the sleep. RT-safe (no net allocation).
    """

    __slots__ = ('_ref', '_ts')

    def __init__(self) -> None:
        self._ts = _Timespec()
        self._ref = ctypes.byref(self._ts)

    def sleep_until(self, deadline_ns: int) -> None:
        """Sleep until monotonic time `deadline_ns`."""
        if _CNS is None:
            rem = deadline_ns - time.monotonic_ns()
            if rem > 0:
                time.sleep(rem * 1e-9)
            return
        ts = self._ts
        ts.tv_sec = deadline_ns // 1_000_000_000
        ts.tv_nsec = deadline_ns % 1_000_000_000
        while _CNS(_CLOCK_MONOTONIC, _TIMER_ABSTIME, self._ref, None) == errno.EINTR:
            pass


@dataclass
class ThreadGrant:
    """What one thread asked for and what the OS granted."""

    name: str
    requested: dict[str, Any]
    granted: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for reports/JSON."""
        return asdict(self)


def apply_thread_settings(
    name: str,
    policy: str,
    priority: int,
    cpus: tuple[int, ...],
    timer_slack_ns: int = 1,
    require: bool = False,
) -> ThreadGrant:
    """Name, pin and schedule the calling thread; never raises for missing privileges.

    Order: name, affinity (before FIFO, so the thread never runs FIFO on a wrong CPU), timer
    slack, scheduler. Returns a :class:`ThreadGrant` with warnings naming what was refused.
    With ``require=True`` a refused step raises :class:`~rt_safe_rl.core.errors.RtSetupError`.
    """
    grant = ThreadGrant(name=name, requested={'policy': policy, 'priority': priority, 'cpus': list(cpus)})
    set_thread_name(name)
    ok, msg = set_thread_affinity(cpus)
    if not ok:
        grant.warnings.append(f'{name}: {msg}')
    if policy == 'other':
        ok2, msg2 = set_timer_slack_ns(timer_slack_ns)
        if not ok2:
            grant.warnings.append(f'{name}: {msg2}')
    ok3, msg3 = set_thread_scheduler(policy, priority)
    if not ok3:
        grant.warnings.append(f'{name}: {msg3}')
        set_timer_slack_ns(timer_slack_ns)
    grant.granted = thread_state()
    if require and grant.warnings:
        raise RtSafeRlError('rt.require_rt is set but: ' + '; '.join(grant.warnings))
    return grant


def process_threads() -> dict[int, str]:
    """Kernel thread id -> name (``comm``) of every thread of this process."""
    out: dict[int, str] = {}
    try:
        for tid in os.listdir('/proc/self/task'):
            try:
                out[int(tid)] = Path(f'/proc/self/task/{tid}/comm').read_text().strip()
            except (OSError, ValueError):
                continue
    except OSError:
        pass
    return out


def thread_name(tid: int) -> str:
    """Name (``comm``) of thread `tid` of this process; '' if it is gone."""
    try:
        return Path(f'/proc/self/task/{tid}/comm').read_text().strip()
    except OSError:
        return ''


def apply_to_thread(tid: int, policy: str, priority: int, cpus: tuple[int, ...]) -> tuple[bool, str]:
    """Set another thread's CPU set and scheduler (e.g. a Fast DDS receive thread); reports, never raises."""
    msgs = []
    ok = True
    if cpus:
        try:
            os.sched_setaffinity(tid, set(cpus))
        except OSError as err:
            ok = False
            msgs.append(f'affinity {sorted(cpus)} refused: {err.strerror} (needs CAP_SYS_NICE)')
    try:
        os.sched_setscheduler(tid, POLICY_IDS[policy], os.sched_param(priority if policy != 'other' else 0))
    except OSError as err:
        ok = False
        msgs.append(
            f'SCHED_{policy.upper()} {priority} refused: {err.strerror} '
            f'(needs CAP_SYS_NICE or {_rtprio_limit()})'
        )
    return ok, '; '.join(msgs) or f'SCHED_{policy.upper()} {priority}'
