"""The doctor's static checks: each reads /proc and /sys (under a root) and returns a :class:`Check`
with PASS / WARN / FAIL, the value it saw and the exact command that fixes it.

Checks never change anything. ``root`` is a parameter so tests run them on copies of real files
(``test/data/doctor/``); the live process-only facts (capabilities of the python binary, FIFO
threads of other processes, steal time over a few seconds) are skipped for a non-``/`` root unless
given. Not RT code.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rt_safe_rl.doctor.sysfs import (
    SysRoot,
    cmdline_param,
    cpu_times,
    format_cpulist,
    limits,
    meminfo,
    parse_cpulist,
    status_caps,
    steal_percent,
)
from rt_safe_rl.rt.config import online_cpus

PASS, WARN, FAIL = 'PASS', 'WARN', 'FAIL'
CAP_IPC_LOCK = 14
CAP_SYS_NICE = 23
IDLE_LATENCY_MAX_US = 10
STEAL_WARN_PCT = 1.0
STEAL_FAIL_PCT = 10.0


@dataclass
class Check:
    """One check: ``name``, ``status`` (PASS/WARN/FAIL), ``value`` (what was seen), ``fix`` (command)."""

    name: str
    status: str
    value: str
    fix: str = ''

    def as_dict(self) -> dict[str, str]:
        """JSON record (the doctor's contract: name, status, value, fix)."""
        return asdict(self)


@dataclass
class Context:
    """What every check needs: the root, the RT CPUs, the expected governor, live-only inputs."""

    sys: SysRoot
    rt_cpus: set[int]
    governor: str = 'performance'
    max_priority: int = 85
    hugepages_required: bool = False
    live: bool = True
    steal_s: float = 2.0
    steal: dict[int, float] | None = None  # measured by the caller (e.g. during the floor loop)


def rt_cpus_of(cfg: Any) -> set[int]:
    """The RT CPUs of a config: the ``control`` group's CPUs (all online CPUs when unpinned)."""
    g = cfg.rt.groups.get('control')
    cpus = set(g.real_cpus) if g is not None else set()
    return cpus or set(online_cpus())


def _cpus(ctx: Context) -> str:
    return format_cpulist(ctx.rt_cpus)


def _grub(params: str) -> str:
    sed = f"sudo sed -i 's/^GRUB_CMDLINE_LINUX=\"/&{params} /' /etc/default/grub"
    return f'{sed} && sudo update-grub && sudo reboot'


# ------------------------------------------------------------------------------------------------
# kernel and boot parameters
# ------------------------------------------------------------------------------------------------
def check_preempt_rt(ctx: Context) -> Check:
    """PREEMPT_RT kernel (/sys/kernel/realtime or PREEMPT_RT in /proc/version)."""
    version = ctx.sys.read('/proc/version') or ''
    if ctx.sys.read('/sys/kernel/realtime') == '1' or 'PREEMPT_RT' in version:
        return Check('preempt_rt', PASS, 'PREEMPT_RT')
    model = next((w for w in ('PREEMPT_DYNAMIC', 'PREEMPT') if w in version.split()), 'no PREEMPT')
    fix = 'install a PREEMPT_RT kernel (Ubuntu: sudo pro enable realtime-kernel; else CONFIG_PREEMPT_RT=y)'
    if model == 'PREEMPT_DYNAMIC':
        return Check('preempt_rt', WARN, f'not PREEMPT_RT ({model}; preempt=full at boot at best)', fix)
    return Check('preempt_rt', WARN if model == 'PREEMPT' else FAIL, f'not PREEMPT_RT ({model})', fix)


def _boot_cpus(ctx: Context, name: str, sys_file: str | None) -> Check:
    cmd = ctx.sys.read('/proc/cmdline')
    raw = cmdline_param(cmd, name)
    have = parse_cpulist(ctx.sys.read(sys_file)) if sys_file else set()
    have |= parse_cpulist(raw)
    missing = ctx.rt_cpus - have
    value = f'{name}={format_cpulist(have) or "(none)"}; RT CPUs {_cpus(ctx)}'
    if not missing:
        return Check(name, PASS, value)
    return Check(name, WARN, value, _grub(f'{name}={_cpus(ctx)}'))


def check_isolcpus(ctx: Context) -> Check:
    """RT CPUs isolated from the scheduler (isolcpus= / /sys/devices/system/cpu/isolated)."""
    c = _boot_cpus(ctx, 'isolcpus', '/sys/devices/system/cpu/isolated')
    if c.fix:
        c.fix = _grub(f'isolcpus=domain,managed_irq,{_cpus(ctx)}')
    return c


def check_nohz_full(ctx: Context) -> Check:
    """RT CPUs without the periodic tick (nohz_full=)."""
    return _boot_cpus(ctx, 'nohz_full', '/sys/devices/system/cpu/nohz_full')


def check_rcu_nocbs(ctx: Context) -> Check:
    """RCU callbacks offloaded from the RT CPUs (rcu_nocbs=; boot parameter only)."""
    return _boot_cpus(ctx, 'rcu_nocbs', None)


def check_rt_throttling(ctx: Context) -> Check:
    """RT throttling (sched_rt_runtime_us): -1 = off; else FIFO threads pause each period."""
    rt = ctx.sys.read('/proc/sys/kernel/sched_rt_runtime_us')
    period = ctx.sys.read('/proc/sys/kernel/sched_rt_period_us')
    if rt is None:
        return Check('rt_throttling', WARN, 'unknown (no /proc/sys/kernel/sched_rt_runtime_us)')
    if rt.strip() == '-1':
        return Check('rt_throttling', PASS, 'off (sched_rt_runtime_us=-1)')
    return Check(
        'rt_throttling',
        WARN,
        f'{rt}/{period} us: RT threads are stopped for the rest of each period once they used it',
        'echo -1 | sudo tee /proc/sys/kernel/sched_rt_runtime_us   # or: rt-safe-rl doctor --apply',
    )


# ------------------------------------------------------------------------------------------------
# CPUs
# ------------------------------------------------------------------------------------------------
def check_cpu_governor(ctx: Context) -> Check:
    """CPU frequency governor (and current/max frequency) of the RT CPUs."""
    seen: list[str] = []
    bad: list[int] = []
    for cpu in sorted(ctx.rt_cpus):
        base = f'/sys/devices/system/cpu/cpu{cpu}/cpufreq'
        gov = ctx.sys.read(f'{base}/scaling_governor')
        if gov is None:
            continue
        cur, mx = ctx.sys.read(f'{base}/scaling_cur_freq'), ctx.sys.read(f'{base}/cpuinfo_max_freq')
        freq = (
            f' {int(cur) // 1000}/{int(mx) // 1000} MHz'
            if cur and mx and cur.isdigit() and mx.isdigit()
            else ''
        )
        seen.append(f'cpu{cpu} {gov}{freq}')
        if gov != ctx.governor:
            bad.append(cpu)
    if not seen:
        return Check(
            'cpu_governor',
            WARN,
            'no cpufreq interface (a VM or fixed frequency: the host decides the clock)',
            'none from inside a VM; on the host: cpupower frequency-set -g performance',
        )
    if not bad:
        return Check('cpu_governor', PASS, ', '.join(seen))
    cmds = ' && '.join(
        f'echo {ctx.governor} | sudo tee /sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor' for c in bad
    )
    return Check('cpu_governor', WARN, ', '.join(seen), cmds)


def check_smt_siblings(ctx: Context) -> Check:
    """SMT siblings of the RT CPUs (a busy sibling shares the core's pipeline)."""
    isolated = parse_cpulist(ctx.sys.read('/sys/devices/system/cpu/isolated'))
    shared: dict[int, set[int]] = {}
    for cpu in sorted(ctx.rt_cpus):
        sib = parse_cpulist(ctx.sys.read(f'/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list'))
        others = sib - {cpu} - ctx.rt_cpus - isolated
        if others:
            shared[cpu] = others
    if not shared:
        return Check('smt_siblings', PASS, f'no busy SMT sibling of CPUs {_cpus(ctx)}')
    value = '; '.join(f'cpu{c} shares its core with {format_cpulist(s)}' for c, s in shared.items())
    sibs = set().union(*shared.values())
    return Check(
        'smt_siblings',
        WARN,
        value,
        'echo off | sudo tee /sys/devices/system/cpu/smt/control'
        f'   # or isolate CPUs {format_cpulist(sibs)} too',
    )


def irq_on_rt_cpus(ctx: Context) -> dict[int, set[int]]:
    """IRQ number -> its CPUs, for device IRQs whose (effective) affinity includes an RT CPU."""
    out: dict[int, set[int]] = {}
    for p in ctx.sys.glob('/proc/irq/*/smp_affinity_list'):
        irq_dir = p.rsplit('/', 1)[0]
        try:
            irq = int(irq_dir.rsplit('/', 1)[1])
        except ValueError:
            continue
        smp = parse_cpulist(ctx.sys.read(p))
        eff = parse_cpulist(ctx.sys.read(f'{irq_dir}/effective_affinity_list'))
        cpus = (eff & smp) or smp  # the kernel delivers to effective, always within smp_affinity
        if cpus & ctx.rt_cpus:
            out[irq] = cpus
    return out


def check_irq_affinity(ctx: Context) -> Check:
    """Device IRQs delivered to the RT CPUs (/proc/irq/N/effective_affinity_list)."""
    online = parse_cpulist(ctx.sys.read('/sys/devices/system/cpu/online'))
    others = online - ctx.rt_cpus
    on_rt = irq_on_rt_cpus(ctx)
    if not on_rt:
        return Check('irq_affinity', PASS, f'no device IRQ on CPUs {_cpus(ctx)}')
    value = f'{len(on_rt)} IRQ(s) on RT CPUs {_cpus(ctx)}: ' + ','.join(str(i) for i in sorted(on_rt)[:12])
    if not others:
        return Check(
            'irq_affinity', WARN, value + ' (no non-RT CPU to move them to)', 'use a machine with more CPUs'
        )
    tgt = format_cpulist(others)
    irqs = ' '.join(str(i) for i in sorted(on_rt))
    fix = f'for i in {irqs}; do echo {tgt} | sudo tee /proc/irq/$i/smp_affinity_list; done   # or --apply'
    return Check('irq_affinity', WARN, value, fix)


def check_idle_states(ctx: Context) -> Check:
    """Deep idle states of the RT CPUs (exit latency > 10 us delays the wake-up)."""
    deep: list[str] = []
    for cpu in sorted(ctx.rt_cpus):
        for d in ctx.sys.glob(f'/sys/devices/system/cpu/cpu{cpu}/cpuidle/state*/latency'):
            base = d.rsplit('/', 1)[0]
            lat = ctx.sys.read(d) or '0'
            if ctx.sys.read(f'{base}/disable') == '1' or not lat.isdigit():
                continue
            if int(lat) > IDLE_LATENCY_MAX_US:
                deep.append(f'cpu{cpu}/{base.rsplit("/", 1)[1]} {ctx.sys.read(base + "/name")} {lat} us')
    if not deep:
        states = len(ctx.sys.glob('/sys/devices/system/cpu/cpu*/cpuidle/state*/latency'))
        return Check(
            'idle_states', PASS, f'no enabled idle state over {IDLE_LATENCY_MAX_US} us ({states} states)'
        )
    cmds = ' && '.join(
        f'echo 1 | sudo tee /sys/devices/system/cpu/{d.split()[0].replace("/", "/cpuidle/")}/disable'
        for d in deep
    )
    return Check('idle_states', WARN, '; '.join(deep), cmds)


# ------------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------------
def _selected(text: str | None) -> str:
    if not text:
        return 'unknown'
    for tok in text.split():
        if tok.startswith('['):
            return tok.strip('[]')
    return text


def check_transparent_hugepages(ctx: Context) -> Check:
    """Transparent hugepages: 'always' lets khugepaged compact memory under the loop."""
    mode = _selected(ctx.sys.read('/sys/kernel/mm/transparent_hugepage/enabled'))
    defrag = _selected(ctx.sys.read('/sys/kernel/mm/transparent_hugepage/defrag'))
    value = f'enabled={mode} defrag={defrag}'
    if mode == 'always':
        return Check(
            'transparent_hugepages',
            WARN,
            value,
            'echo madvise | sudo tee /sys/kernel/mm/transparent_hugepage/enabled   # or --apply',
        )
    return Check('transparent_hugepages', PASS, value)


def check_hugepages(ctx: Context) -> Check:
    """Reserved hugepages (HugePages_Total), required only with deployment.hugepages."""
    mi = meminfo(ctx.sys.read('/proc/meminfo'))
    total, size = mi.get('HugePages_Total', 0), mi.get('Hugepagesize', 0)
    value = f'{total} reserved x {size} kB'
    if total > 0:
        return Check('hugepages', PASS, value)
    fix = 'echo 64 | sudo tee /proc/sys/vm/nr_hugepages'
    if ctx.hugepages_required:
        return Check('hugepages', FAIL, value + ' (deployment.hugepages requires them)', fix)
    return Check('hugepages', PASS, value + ' (not required: deployment.hugepages false)')


def check_swap(ctx: Context) -> Check:
    """Swap devices (mlockall protects our pages; other processes' paging still costs I/O)."""
    lines = [ln for ln in (ctx.sys.read('/proc/swaps') or '').splitlines()[1:] if ln.strip()]
    if not lines:
        return Check('swap', PASS, 'no swap')
    return Check(
        'swap',
        WARN,
        f'{len(lines)} swap device(s): ' + ', '.join(ln.split()[0] for ln in lines),
        'sudo swapoff -a',
    )


# ------------------------------------------------------------------------------------------------
# privileges
# ------------------------------------------------------------------------------------------------
def _status(ctx: Context) -> str | None:
    return ctx.sys.read('/proc/self/status')


def _limits_fix() -> str:
    return (
        "printf '@realtime - rtprio 98\\n@realtime - memlock unlimited\\n' | sudo tee "
        '/etc/security/limits.d/99-realtime.conf && sudo groupadd -f realtime && '
        'sudo usermod -aG realtime $USER   # then log in again'
    )


def check_rtprio_limit(ctx: Context) -> Check:
    """RLIMIT_RTPRIO (or CAP_SYS_NICE) covers the configured FIFO priorities."""
    soft = limits(ctx.sys.read('/proc/self/limits')).get('Max realtime priority', ('0', '0'))[0]
    caps = status_caps(_status(ctx))
    has_cap = bool(caps >> CAP_SYS_NICE & 1)
    value = f'rtprio soft limit {soft}, CAP_SYS_NICE {"yes" if has_cap else "no"}'
    ok = has_cap or soft == 'unlimited' or (soft.isdigit() and int(soft) >= ctx.max_priority)
    return Check('rtprio_limit', PASS if ok else FAIL, value, '' if ok else _limits_fix())


def check_memlock_limit(ctx: Context) -> Check:
    """RLIMIT_MEMLOCK (or CAP_IPC_LOCK) lets mlockall lock the process."""
    soft = limits(ctx.sys.read('/proc/self/limits')).get('Max locked memory', ('0', '0'))[0]
    caps = status_caps(_status(ctx))
    has_cap = bool(caps >> CAP_IPC_LOCK & 1)
    shown = soft if not soft.isdigit() else f'{int(soft) >> 10} KiB'
    value = f'memlock soft limit {shown}, CAP_IPC_LOCK {"yes" if has_cap else "no"}'
    ok = has_cap or soft == 'unlimited'
    return Check('memlock_limit', PASS if ok else FAIL, value, '' if ok else _limits_fix())


def _file_caps(path: str) -> int | None:
    """Permitted capability bits of a file (security.capability xattr); None when unreadable."""
    try:
        raw = os.getxattr(path, 'security.capability')
    except OSError:
        return 0
    except AttributeError:
        return None
    if len(raw) < 12:
        return 0
    lo = int.from_bytes(raw[4:8], 'little')
    hi = int.from_bytes(raw[12:16], 'little') if len(raw) >= 16 else 0
    return lo | hi << 32


def check_capabilities(ctx: Context) -> Check:
    """CAP_SYS_NICE + CAP_IPC_LOCK: of the python binary (file caps) and of this process."""
    exe = os.path.realpath(sys.executable)
    eff = status_caps(_status(ctx))
    proc_ok = bool(eff >> CAP_SYS_NICE & 1) and bool(eff >> CAP_IPC_LOCK & 1)
    fcaps = _file_caps(exe) if ctx.live else None
    file_ok = fcaps is not None and bool(fcaps >> CAP_SYS_NICE & 1) and bool(fcaps >> CAP_IPC_LOCK & 1)
    file_s = 'unknown' if fcaps is None else ('cap_sys_nice,cap_ipc_lock' if file_ok else 'none')
    value = f'{exe}: {file_s}; this process: {"both" if proc_ok else "missing"}'
    fix = f'sudo setcap cap_sys_nice,cap_ipc_lock+ep {exe}'
    if file_ok or proc_ok:
        return Check('capabilities', PASS, value + (' (running as root)' if proc_ok and not file_ok else ''))
    return Check('capabilities', FAIL, value, fix)


# ------------------------------------------------------------------------------------------------
# clocks, topology, machine
# ------------------------------------------------------------------------------------------------
def check_clocksource(ctx: Context) -> Check:
    """Clocksource: tsc is cheap to read; hpet/acpi_pm cost microseconds per clock_gettime."""
    base = '/sys/devices/system/clocksource/clocksource0'
    cur = ctx.sys.read(f'{base}/current_clocksource') or 'unknown'
    avail = (ctx.sys.read(f'{base}/available_clocksource') or '').split()
    if cur == 'tsc':
        return Check('clocksource', PASS, f'tsc (available: {" ".join(avail)})')
    fix = (
        f'echo tsc | sudo tee {base}/current_clocksource'
        if 'tsc' in avail
        else 'no tsc: check the BIOS/hypervisor'
    )
    return Check('clocksource', WARN, f'{cur} (available: {" ".join(avail)})', fix)


def check_timer_slack(ctx: Context) -> Check:
    """Timer slack: rt_safe_rl sets it per thread (rt.groups.*.timer_slack_ns), shown for this process."""
    slack = ctx.sys.read('/proc/self/timerslack_ns') or 'unknown'
    return Check(
        'timer_slack',
        PASS,
        f'{slack} ns for this process; rt_safe_rl sets 1 ns on its SCHED_OTHER group threads '
        '(FIFO threads have none)',
    )


def check_numa(ctx: Context) -> Check:
    """NUMA topology: the RT CPUs should sit on one node."""
    nodes: dict[int, set[int]] = {}
    for p in ctx.sys.glob('/sys/devices/system/node/node*/cpulist'):
        try:
            nodes[int(p.split('/node/node')[1].split('/')[0])] = parse_cpulist(ctx.sys.read(p))
        except ValueError:
            continue
    if len(nodes) <= 1:
        return Check('numa', PASS, f'{len(nodes) or 1} node')
    used = [n for n, cpus in nodes.items() if cpus & ctx.rt_cpus]
    value = f'{len(nodes)} nodes; RT CPUs on node(s) {used}'
    if len(used) <= 1:
        return Check('numa', PASS, value)
    first = format_cpulist(nodes[used[0]] & ctx.rt_cpus)
    return Check('numa', WARN, value, f'RT_CPU_ISOLATION={first} (keep the RT threads on one node)')


def is_vm(ctx: Context) -> bool:
    """A hypervisor is present (the 'hypervisor' CPU flag)."""
    flags = ctx.sys.read('/proc/cpuinfo') or ''
    return ' hypervisor' in flags


def check_virtualization(ctx: Context) -> Check:
    """Virtual machine: vCPUs can be descheduled by the host (shows as steal time)."""
    if is_vm(ctx):
        return Check(
            'virtualization',
            WARN,
            'VM (hypervisor CPU flag): the host can pause a vCPU at any time',
            'run on bare metal, or pin + dedicate the vCPUs on the host (no overcommit)',
        )
    return Check('virtualization', PASS, 'bare metal')


def measure_steal(sysroot: SysRoot, seconds: float) -> dict[int, float]:
    """Steal % per CPU over `seconds` (reads /proc/stat twice)."""
    a = cpu_times(sysroot.read('/proc/stat'))
    time.sleep(max(seconds, 0.0))
    return steal_percent(a, cpu_times(sysroot.read('/proc/stat')))


def check_cpu_steal(ctx: Context) -> Check:
    """CPU steal time of the RT CPUs, measured over a few seconds (or given by the caller)."""
    steal = ctx.steal
    if steal is None:
        if not ctx.live:
            return Check('cpu_steal', PASS, 'not measured (not the live system)')
        steal = measure_steal(ctx.sys, ctx.steal_s)
    worst = max((steal.get(c, 0.0) for c in ctx.rt_cpus), default=0.0)
    value = ', '.join(f'CPU{c} {steal.get(c, 0.0):g}%' for c in sorted(ctx.rt_cpus))
    fix = (
        'the host runs other guests on these vCPUs: dedicate them (pinning, no overcommit) or use bare metal'
    )
    if worst >= STEAL_FAIL_PCT:
        return Check('cpu_steal', FAIL, value, fix)
    if worst >= STEAL_WARN_PCT:
        return Check('cpu_steal', WARN, value, fix)
    return Check('cpu_steal', PASS, value)


def foreign_fifo_threads(ctx: Context) -> list[str]:
    """FIFO/RR threads of other user processes allowed on the RT CPUs ('pid/tid name FIFO prio')."""
    out: list[str] = []
    me = os.getpid()
    for pid in os.listdir(ctx.sys.path('/proc')):
        if not pid.isdigit() or int(pid) == me or not ctx.sys.read(f'/proc/{pid}/cmdline'):
            continue
        try:
            tids = os.listdir(ctx.sys.path(f'/proc/{pid}/task'))
        except OSError:
            continue
        for tid in tids:
            stat = ctx.sys.read(f'/proc/{pid}/task/{tid}/stat') or ''
            try:
                name = stat[stat.index('(') + 1 : stat.rindex(')')]
                fields = stat[stat.rindex(')') + 2 :].split()
                rtprio, policy = int(fields[37]), int(fields[38])
            except (ValueError, IndexError):
                continue
            if policy not in (1, 2):
                continue
            st = ctx.sys.read(f'/proc/{pid}/task/{tid}/status') or ''
            allowed = next(
                (ln.split(':', 1)[1] for ln in st.splitlines() if ln.startswith('Cpus_allowed_list')), ''
            )
            if parse_cpulist(allowed) & ctx.rt_cpus:
                out.append(f'{pid}/{tid} {name} {"FIFO" if policy == 1 else "RR"} {rtprio}')
    return out


def check_foreign_fifo_threads(ctx: Context) -> Check:
    """FIFO threads of other processes that may run on the RT CPUs (they compete with ours)."""
    if not ctx.live:
        return Check('foreign_fifo_threads', PASS, 'not checked (not the live system)')
    found = foreign_fifo_threads(ctx)
    if not found:
        return Check('foreign_fifo_threads', PASS, f'none on CPUs {_cpus(ctx)}')
    pids = sorted({f.split('/')[0] for f in found})
    return Check(
        'foreign_fifo_threads',
        WARN,
        f'{len(found)}: ' + '; '.join(found[:6]),
        f'stop them or move them off the RT CPUs: for p in {" ".join(pids)}; '
        'do sudo taskset -a -p -c 0 $p; done',
    )


CHECKS: tuple[Callable[[Context], Check], ...] = (
    check_preempt_rt,
    check_isolcpus,
    check_nohz_full,
    check_rcu_nocbs,
    check_rt_throttling,
    check_cpu_governor,
    check_smt_siblings,
    check_irq_affinity,
    check_idle_states,
    check_transparent_hugepages,
    check_hugepages,
    check_swap,
    check_rtprio_limit,
    check_memlock_limit,
    check_capabilities,
    check_clocksource,
    check_timer_slack,
    check_numa,
    check_virtualization,
    check_cpu_steal,
    check_foreign_fifo_threads,
)


def make_context(cfg: Any, root: str | Path = '/', **kwargs: Any) -> Context:
    """A :class:`Context` from an AppConfig (RT CPUs, governor, priorities, hugepages)."""
    prios = [g.priority for g in cfg.rt.groups.values() if g.is_rt] or [0]
    dep = cfg.deployment
    kwargs.setdefault('live', str(root) == '/')
    return Context(
        sys=SysRoot(root),
        rt_cpus=rt_cpus_of(cfg),
        governor=dep.governor,
        max_priority=max(prios),
        hugepages_required=dep.hugepages,
        **kwargs,
    )


def run_checks(ctx: Context, skip: tuple[str, ...] = ()) -> list[Check]:
    """Run every check (read-only); a check that raises becomes a WARN naming the error."""
    out: list[Check] = []
    for fn in CHECKS:
        name = fn.__name__.removeprefix('check_')
        if name in skip:
            continue
        try:
            out.append(fn(ctx))
        except Exception as err:  # a check must never take the doctor down
            out.append(Check(name, WARN, f'check failed: {type(err).__name__}: {err}'))
    return out
