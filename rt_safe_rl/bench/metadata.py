"""Benchmark metadata: code version, machine, RT capabilities, library versions, input hashes.

:func:`collect_metadata` is the ``metadata`` entry of every replay report (see
:mod:`rt_safe_rl.bench.report` for the schema); :func:`cpu_model` and :func:`rt_capabilities` are
used by the other benches too. Not RT-safe (runs git, reads /proc and /sys): called before a run.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import resource
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rt_safe_rl.rt import sched


def sha256_file(path: str | Path) -> str:
    """SHA-256 (hex) of a file; '' when it does not exist."""
    p = Path(path)
    if not p.is_file():
        return ''
    h = hashlib.sha256()
    with open(p, 'rb') as fh:
        for block in iter(lambda: fh.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def _git(args: list[str]) -> str:
    try:
        out = subprocess.run(
            ['git', *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() if out.returncode == 0 else ''
    except (OSError, subprocess.SubprocessError):
        return ''


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what `platform` knows); for report metadata."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rt_capabilities() -> dict[str, Any]:
    """What the OS offers for real-time work: RT kernel, privileges, limits, throttling."""
    out: dict[str, Any] = {}
    try:
        out['realtime_kernel'] = bool(sched.has_realtime_kernel())
        out['rt_throttling'] = str(sched.rt_throttling())
    except Exception:  # broad on purpose: a failed probe: fall back to /sys
        out['realtime_kernel'] = Path('/sys/kernel/realtime').exists() or 'PREEMPT_RT' in platform.version()
    kver = platform.version()
    out['preempt'] = next((w for w in ('PREEMPT_RT', 'PREEMPT_DYNAMIC', 'PREEMPT') if w in kver), 'none')
    out['euid_root'] = hasattr(os, 'geteuid') and os.geteuid() == 0
    try:
        out['rlimit_rtprio'] = list(resource.getrlimit(resource.RLIMIT_RTPRIO))
        out['rlimit_memlock'] = [
            (-1 if v == resource.RLIM_INFINITY else v) for v in resource.getrlimit(resource.RLIMIT_MEMLOCK)
        ]
    except (AttributeError, OSError, ValueError):
        pass
    try:
        out['sched_fifo_max_priority'] = os.sched_get_priority_max(os.SCHED_FIFO)
    except (AttributeError, OSError):
        pass
    return out


def _version(module: str) -> str:
    try:
        from importlib import metadata  # lazy: ~17 ms (email.*); keeps the subcommands' --help fast

        return metadata.version(module)
    except Exception:  # broad on purpose: absent distribution
        return ''


def collect_metadata(
    config: Mapping[str, Any] | None = None,
    bag: Mapping[str, Any] | None = None,
    model_path: str | Path | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metadata for a report: code version, machine, RT capabilities, versions, config, inputs."""
    versions = {'python': platform.python_version(), 'numpy': np.__version__}
    for mod, dist in (
        ('torch', 'torch'),
        ('rclpy', 'ros-rclpy'),
        ('rosbags', 'rosbags'),
        ('numba', 'numba'),
        ('onnxruntime', 'onnxruntime'),
    ):
        versions[mod] = _version(dist) or (
            sys.modules[mod].__dict__.get('__version__', '') if mod in sys.modules else ''
        )
    return {
        'git_sha': _git(['rev-parse', 'HEAD']),
        'git_dirty': bool(_git(['status', '--porcelain', '--untracked-files=no'])),
        'host': socket.gethostname(),
        'cpu': cpu_model(),
        'cpu_count': os.cpu_count(),
        'kernel': platform.release(),
        'kernel_version': platform.version(),
        'rt': rt_capabilities(),
        'versions': versions,
        'config': dict(config or {}),
        'bag': dict(bag or {}),
        'model': {'path': str(model_path or ''), 'sha256': sha256_file(model_path) if model_path else ''},
        'command_line': list(argv or []),
        'started_utc': _dt.datetime.now(_dt.UTC).isoformat(timespec='seconds'),
    }
