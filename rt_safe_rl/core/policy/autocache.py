"""Cache of the ``backend: auto`` choice, so a second start does not measure every backend again.

Key: SHA-256 over the model file's SHA-256, the pipeline config (as JSON), the node settings that
change the choice (tolerances, reduced precision, threads, stdout mode), the versions of torch /
numba / onnxruntime / numpy / rt_safe_rl and the CPU model. Value: the selected backend and the
table measured when it was chosen. On load the cached backend is rebuilt and re-validated by the same
tolerance check against the reference (a rollout for recurrent models); if that fails, or the file is
missing or unreadable, ``auto`` measures everything as on a first start and rewrites the entry.

Directory: ``policy.cache_dir``, else ``$RT_SAFE_RL_CACHE_DIR``, else ``$XDG_CACHE_HOME/rt_safe_rl``,
else ``~/.cache/rt_safe_rl``; entries live in ``auto/<key>.json``. Write errors are logged, never fatal.
Not RT code (configure time).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

from rt_safe_rl.core.policy.config import PolicyNodeConfig
from rt_safe_rl.core.policy.progcache import dist_version


def cache_dir(cfg: PolicyNodeConfig) -> Path:
    """Directory of the cache (see the module docstring for the order)."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    env = os.environ.get('RT_SAFE_RL_CACHE_DIR')
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get('XDG_CACHE_HOME')
    return (Path(xdg) if xdg else Path.home() / '.cache') / 'rt_safe_rl'


def _versions() -> dict[str, str]:
    """Versions from package metadata: never imports torch / onnxruntime (that is most of a start)."""
    out = {mod: dist_version(mod) for mod in ('torch', 'numba', 'onnxruntime', 'numpy')}
    out['rt_safe_rl'] = str(getattr(__import__('rt_safe_rl'), '__version__', '?'))
    return out


def _cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.lower().startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_key(sha256: str, pipeline_key: str, cfg: PolicyNodeConfig, backends: list[str]) -> str:
    """Hex key of one auto choice."""
    blob = {
        'model': sha256,
        'pipeline': pipeline_key,
        'backends': sorted(backends),
        'settings': {
            k: getattr(cfg, k)
            for k in (
                'tolerance',
                'tolerance_fp16',
                'tolerance_int8',
                'allow_reduced_precision',
                'num_threads',
                'stdout',
            )
        },
        'versions': _versions(),
        'cpu': _cpu_model(),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def load_choice(cfg: PolicyNodeConfig, key: str) -> dict[str, Any] | None:
    """The cached entry ({'selected', 'table', ...}) or None."""
    p = cache_dir(cfg) / 'auto' / f'{key}.json'
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get('selected'), str) else None


def store_choice(cfg: PolicyNodeConfig, key: str, entry: dict[str, Any]) -> str:
    """Write an entry; returns '' or why it could not be written."""
    d = cache_dir(cfg) / 'auto'
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f'.{key}.tmp'
        tmp.write_text(json.dumps(entry, default=str))
        tmp.replace(d / f'{key}.json')
    except OSError as err:
        return f'{d}: {err}'
    return ''
