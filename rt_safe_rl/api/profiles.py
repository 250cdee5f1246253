"""Deployment profiles (``config/profiles/*.yaml``), the ``deployment:`` config section and the
``RT_*`` environment variables, all mapped onto THE config (no second configuration system).

Layering done by :func:`rt_safe_rl.config.load_config` through :func:`layer_profile_and_env`:
``config/default.yaml`` (or ``--config``) < profile overlay (``--profile`` / ``profile:=`` /
``RT_PROFILE``) < ``RT_*`` variables < explicit overrides (``--set``). Each ``RT_*`` variable maps
to exactly one key (:data:`ENV_KEYS`); a malformed or invalid value is a one-line
:class:`~rt_safe_rl.core.errors.ConfigError` naming the variable.

Pure Python, no ROS. Not RT code (configure time).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rt_safe_rl.config import deep_merge
from rt_safe_rl.core.configutil import load_yaml
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.paths import config_path
from rt_safe_rl.rt.config import RtConfig

PROFILES: tuple[str, ...] = ('development', 'production', 'edge', 'cloud')
"""Shipped profiles (``config/profiles/<name>.yaml``)."""

GOVERNORS = ('performance', 'powersave', 'schedutil', 'ondemand', 'conservative', 'userspace')


@dataclass(frozen=True)
class DeploymentConfig:
    """The ``deployment:`` section: what a profile means beyond the other sections' keys.

    Attributes:
        profile: name of the applied profile ('' = none; set by the overlay).
        system_optimization: request the ``rt.*`` scheduling (SCHED_FIFO, pinning), mlockall, heap
            prefault and GC freeze; false rewrites every rt group to SCHED_OTHER unpinned, no mlock,
            no prefault, no GC freeze, so nothing needs privileges (``RT_ENABLE_SYSTEM_OPT``).
        system_checks: at start (API, ``bringup``, ``demo``) run the doctor's static checks:
            'off', 'warn' (print every WARN/FAIL with its fix, loudly), 'require' (refuse to start
            on a FAIL or on a refused RT privilege).
        governor: CPU frequency governor the doctor expects and ``doctor --apply`` sets (``RT_GOVERNOR``).
        gpu: let the API's ``auto`` backend choice include the ``cuda`` backend.
        gpu_device: CUDA device index used by the API's ``cuda`` backend (``RT_GPU_DEVICE``).
        gpu_memory_pool_mb: MiB the API reserves in torch's CUDA caching allocator before capture
            (``RT_GPU_MEMORY_POOL_MB``; 0 = none).
        tensorrt: request a TensorRT backend (``RT_ENABLE_TENSORRT``); there is none in this
            package, so true is refused with the alternatives.
        hugepages: the doctor requires reserved hugepages (FAIL without) instead of reporting
            them (``RT_ENABLE_HUGEPAGES``).
        report_memory: the API reports its resident memory (RSS, VmHWM) in ``system.info()``.
    """

    profile: str = ''
    system_optimization: bool = True
    system_checks: Literal['off', 'warn', 'require'] = 'off'
    governor: str = 'performance'
    gpu: bool = True
    gpu_device: int = 0
    gpu_memory_pool_mb: int = 0
    tensorrt: bool = False
    hugepages: bool = False
    report_memory: bool = False

    def __post_init__(self) -> None:
        if self.governor not in GOVERNORS:
            raise ConfigError(f'governor: expected one of {list(GOVERNORS)}, got {self.governor!r}')
        if self.gpu_device < 0:
            raise ConfigError(f'gpu_device must be >= 0, got {self.gpu_device}')
        if not 0 <= self.gpu_memory_pool_mb <= 1 << 20:
            raise ConfigError(f'gpu_memory_pool_mb must be in 0..{1 << 20}, got {self.gpu_memory_pool_mb}')
        if self.tensorrt:
            raise ConfigError(
                'tensorrt: rt_safe_rl has no TensorRT backend; the GPU backend is policy.backend: cuda '
                '(CUDA graphs), or use onnxruntime'
            )


# ------------------------------------------------------------------------------------------------
# RT_* environment variables
# ------------------------------------------------------------------------------------------------
_TRUE = {'1', 'true', 'yes', 'on'}
_FALSE = {'0', 'false', 'no', 'off'}


def _bool(raw: str) -> bool:
    v = raw.strip().lower()
    if v not in _TRUE | _FALSE:
        raise ValueError('expected 1/0/true/false/yes/no/on/off')
    return v in _TRUE


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            v = int(raw.strip())
        except ValueError:
            raise ValueError('expected an integer') from None
        if not lo <= v <= hi:
            raise ValueError(f'must be in {lo}..{hi}')
        return v

    return parse


def _cpus(raw: str) -> list[int]:
    out: list[int] = []
    for part in raw.replace(' ', '').split(','):
        if not part:
            continue
        try:
            if '-' in part:
                lo, hi = (int(x) for x in part.split('-'))
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError("expected CPU ids like '2,3' or '2-5'") from None
    if not out:
        raise ValueError('no CPU id given')
    return out


def _governor(raw: str) -> str:
    v = raw.strip()
    if v not in GOVERNORS:
        raise ValueError(f'expected one of {", ".join(GOVERNORS)}')
    return v


def _mib_to_bytes(raw: str) -> int:
    return _int(0, 4096)(raw) << 20


#: variable -> (config key path, parser of the raw string to the key's value), documented in README
ENV_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    'RT_ENABLE_SYSTEM_OPT': ('deployment.system_optimization', _bool),
    'RT_CPU_ISOLATION': ('rt.groups.control.cpus', _cpus),
    'RT_GOVERNOR': ('deployment.governor', _governor),
    'RT_GPU_DEVICE': ('deployment.gpu_device', _int(0, 1023)),
    'RT_ENABLE_TENSORRT': ('deployment.tensorrt', _bool),
    'RT_GPU_MEMORY_POOL_MB': ('deployment.gpu_memory_pool_mb', _int(0, 1 << 20)),
    'RT_MEMORY_POOL_MB': ('rt.prefault_heap_bytes', _mib_to_bytes),
    'RT_ENABLE_HUGEPAGES': ('deployment.hugepages', _bool),
    'RT_ENABLE_PROMETHEUS': ('monitor.metrics.enabled', _bool),
    'RT_METRICS_PORT': ('monitor.metrics.port', _int(0, 65535)),
}
PROFILE_ENV = 'RT_PROFILE'
"""Profile used by :func:`rt_safe_rl.config.load_config` when none is passed (node executables)."""


def _nested(key: str, value: Any) -> dict[str, Any]:
    node: dict[str, Any] = {}
    cur = node
    parts = key.split('.')
    for p in parts[:-1]:
        cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value
    return node


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Parse the set ``RT_*`` variables: {variable: nested override mapping}.

    Raises:
        ConfigError: a malformed value; the one-line message names the variable.
    """
    env = os.environ if environ is None else environ
    out: dict[str, dict[str, Any]] = {}
    for var, (key, parse) in ENV_KEYS.items():
        raw = env.get(var)
        if raw is None or raw.strip() == '':
            continue
        try:
            value = parse(raw)
        except ValueError as err:
            raise ConfigError(f'{var}={raw!r}: {err} (sets {key})') from None
        out[var] = _nested(key, value)
    return out


# ------------------------------------------------------------------------------------------------
# profiles
# ------------------------------------------------------------------------------------------------
def profile_path(profile: str) -> Path:
    """The overlay file of `profile`: a shipped name (:data:`PROFILES`) or a path to a YAML.

    Raises:
        ConfigError: neither a shipped profile nor an existing file.
    """
    if profile in PROFILES:
        return config_path(f'profiles/{profile}.yaml')
    p = Path(profile).expanduser()
    if p.suffix in ('.yaml', '.yml') and p.is_file():
        return p
    raise ConfigError(f'unknown profile {profile!r}: expected one of {list(PROFILES)} or a YAML overlay file')


def _apply_shared_threads(data: dict[str, Any], owner: str) -> None:
    """Groups that share `owner`'s thread follow its cpus (the rt config requires identical ones)."""
    groups = data.get('rt', {}).get('groups', {})
    cpus = groups.get(owner, {}).get('cpus')
    for g in groups.values():
        if isinstance(g, dict) and g.get('thread') == owner and cpus is not None:
            g['cpus'] = list(cpus)


def _without_system_optimization(data: dict[str, Any]) -> None:
    """Rewrite the rt section so that nothing needs privileges (deployment.system_optimization false)."""
    rt = data.setdefault('rt', {})
    if not rt.get('groups'):
        rt['groups'] = {k: dataclasses.asdict(g) for k, g in RtConfig().groups.items()}
    for g in rt['groups'].values():
        if isinstance(g, dict):
            g.update({'policy': 'other', 'priority': 0, 'cpus': []})
    rt['helper_threads'] = {'policy': 'other', 'priority': 0, 'cpus': []}
    rt.update({'mlock': False, 'prefault_heap_bytes': 0, 'gc_freeze': False, 'housekeeping_priority': 0})
    rt['require_rt'] = False
    metrics = data.setdefault('monitor', {}).setdefault('metrics', {})
    metrics['thread_priority'] = 0


def layer_profile_and_env(
    data: dict[str, Any],
    source: Path,
    profile: str | None,
    validate: Callable[[dict[str, Any], Path], Any],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Merge the profile overlay and the ``RT_*`` variables over the file's mapping `data`.

    Args:
        data: the config file's mapping (already read).
        source: the config file (for messages).
        profile: profile name or overlay path; None = ``RT_PROFILE`` ('' or unset = no profile).
        validate: ``build_config`` (raises ConfigError), used to name the culprit layer.
        environ: environment (default ``os.environ``).

    Returns:
        the merged mapping (then validated by the caller).

    Raises:
        ConfigError: unknown profile, an invalid overlay (names the overlay file), an invalid
            ``RT_*`` value (names the variable).
    """
    env = os.environ if environ is None else environ
    name = env.get(PROFILE_ENV, '') if profile is None else profile
    per_var = env_overrides(env)
    if not name and not per_var:
        return data
    validate(data, source)  # the file alone first, so that its own errors name the file
    below = copy.deepcopy(data)
    if name:
        path = profile_path(name)
        below = _layered(below, load_yaml(path), source, validate, f'profile {path}')
    merged = below
    for ov in per_var.values():
        merged = deep_merge(merged, ov)
    _finish(merged)
    try:
        validate(merged, source)
    except ConfigError:
        for var, ov in per_var.items():  # name the culprit: each variable alone over the layers below
            _layered(below, ov, source, validate, f'{var}={env.get(var)!r}')
        raise
    return merged


def _layered(
    below: dict[str, Any],
    layer: dict[str, Any],
    source: Path,
    validate: Callable[[dict[str, Any], Path], Any],
    culprit: str,
) -> dict[str, Any]:
    """``layer`` merged over ``below``, with the derived rewrites (:func:`_finish`), validated.

    Raises:
        ConfigError: the merged mapping is invalid; the message is ``validate``'s located at
            ``culprit`` (the layer, e.g. ``profile <file>`` or ``RT_X='v'``) instead of ``source``.
    """
    merged = deep_merge(below, layer)
    _finish(merged)
    try:
        validate(merged, source)
    except ConfigError as err:
        msg = str(err).removeprefix(f'{source}: ')
        raise ConfigError(f'{culprit}: {msg}') from None
    return merged


def _finish(merged: dict[str, Any]) -> None:
    """Derived rewrites: shared-thread cpus, system_optimization off (idempotent)."""
    _apply_shared_threads(merged, 'control')
    dep = merged.get('deployment') or {}
    if isinstance(dep, dict) and dep.get('system_optimization') is False:
        _without_system_optimization(merged)
