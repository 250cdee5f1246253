"""Readers of /proc and /sys files under a root folder (``/`` live, a fixture copy in tests).

Every reader returns None (or an empty value) when the file is absent or unreadable: a missing
interface is information (e.g. no cpufreq inside a VM), never an exception. Not RT code.
"""

from __future__ import annotations

from pathlib import Path


class SysRoot:
    """Read files of the live system or of a copy rooted at `root` (``/proc/...`` -> ``root/proc/...``)."""

    def __init__(self, root: str | Path = '/') -> None:
        self.root = Path(root)

    def path(self, abs_path: str) -> Path:
        """Where `abs_path` (e.g. ``/proc/cmdline``) lives under the root."""
        return self.root / abs_path.lstrip('/')

    def read(self, abs_path: str) -> str | None:
        """Stripped text of a file, None when absent/unreadable."""
        try:
            return self.path(abs_path).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None

    def exists(self, abs_path: str) -> bool:
        """Whether the file or folder exists under the root."""
        return self.path(abs_path).exists()

    def glob(self, pattern: str) -> list[str]:
        """Absolute paths (as on the live system) matching `pattern` under the root, sorted."""
        base = self.root
        return sorted('/' + str(p.relative_to(base)) for p in base.glob(pattern.lstrip('/')))

    def write(self, abs_path: str, text: str) -> None:
        """Write `text` to a file under the root (raises OSError; used by --apply/--restore only)."""
        self.path(abs_path).write_text(text + '\n' if not text.endswith('\n') else text)


def parse_cpulist(text: str | None) -> set[int]:
    """'0-3,8,10-11' -> {0,1,2,3,8,10,11}; '' / None -> empty set. Ignores flags like 'domain,'."""
    out: set[int] = set()
    if not text:
        return out
    for part in text.strip().split(','):
        part = part.strip()
        if not part or not part[0].isdigit():
            continue
        try:
            if '-' in part:
                lo, hi = part.split('-', 1)
                out.update(range(int(lo), int(hi.split(':')[0]) + 1))
            else:
                out.add(int(part))
        except ValueError:
            continue
    return out


def format_cpulist(cpus: set[int] | list[int]) -> str:
    """{0,1,2,5} -> '0-2,5'."""
    xs = sorted(set(cpus))
    out: list[str] = []
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f'{xs[i]}-{xs[j]}')
        i = j + 1
    return ','.join(out)


def cmdline_param(cmdline: str | None, key: str) -> str | None:
    """Value of ``key=`` on the kernel command line (None when absent; '' for a bare flag)."""
    if not cmdline:
        return None
    for tok in cmdline.split():
        if tok == '--':
            break
        if tok == key:
            return ''
        if tok.startswith(key + '='):
            return tok[len(key) + 1 :]
    return None


def cpu_times(stat_text: str | None) -> dict[int, list[int]]:
    """/proc/stat per-CPU jiffies: {cpu: [user, nice, system, idle, iowait, irq, softirq, steal, ...]}."""
    out: dict[int, list[int]] = {}
    for line in (stat_text or '').splitlines():
        if line.startswith('cpu') and line[3:4].isdigit():
            name, *vals = line.split()
            try:
                out[int(name[3:])] = [int(v) for v in vals]
            except ValueError:
                continue
    return out


def steal_percent(before: dict[int, list[int]], after: dict[int, list[int]]) -> dict[int, float]:
    """Steal time (% of elapsed jiffies) per CPU between two :func:`cpu_times` samples."""
    out: dict[int, float] = {}
    for cpu, a in after.items():
        b = before.get(cpu)
        if b is None or len(a) < 8 or len(b) < 8:
            continue
        total = sum(a[:8]) - sum(b[:8])
        out[cpu] = round(100.0 * (a[7] - b[7]) / total, 2) if total > 0 else 0.0
    return out


def limits(text: str | None) -> dict[str, tuple[str, str]]:
    """/proc/<pid>/limits: {'Max realtime priority': (soft, hard), ...}."""
    out: dict[str, tuple[str, str]] = {}
    for line in (text or '').splitlines()[1:]:
        parts = line.split()
        for i in range(len(parts) - 1, 0, -1):  # name words, then soft, hard, [units]
            if parts[i] in ('bytes', 'us', 'seconds', 'processes', 'files', 'signals'):
                parts = parts[:i]
                break
        if len(parts) >= 3:
            out[' '.join(parts[:-2])] = (parts[-2], parts[-1])
    return out


def status_caps(status_text: str | None, field: str = 'CapEff') -> int:
    """Capability mask (int) of a /proc/<pid>/status field; 0 when absent."""
    for line in (status_text or '').splitlines():
        if line.startswith(field + ':'):
            try:
                return int(line.split()[1], 16)
            except (IndexError, ValueError):
                return 0
    return 0


def meminfo(text: str | None) -> dict[str, int]:
    """/proc/meminfo: {'HugePages_Total': 0, 'MemTotal': kB, ...}."""
    out: dict[str, int] = {}
    for line in (text or '').splitlines():
        key, _, rest = line.partition(':')
        try:
            out[key.strip()] = int(rest.split()[0])
        except (IndexError, ValueError):
            continue
    return out
