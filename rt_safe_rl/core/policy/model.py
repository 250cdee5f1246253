"""Load a policy, build its backends, check them against the reference and choose one.

:func:`load_policy_model` is the configure-time entry: it inspects the file (hash, sizes,
recurrence), builds the configured backend (or every available one for ``auto``), measures error
vs the reference and latency (:func:`~rt_safe_rl.core.policy.backends.evaluate_backends`), picks
one, refuses a policy that writes to stdout or returns non-finite values, and warms it up.

Fast start: when the numba backend is the one to run (``backend: numba``, or ``auto`` whose cached
choice is numba) and :mod:`~rt_safe_rl.core.policy.progcache` holds the compiled program for this
model file, the program is loaded from disk and re-checked against the stored reference outputs:
no trace, no torch import. Otherwise the full path runs (trace, check vs the reference) and a
program that passed the check is written to the cache.

Not RT-safe (configure time). :meth:`PolicyModel.forward` is the RT path of the chosen backend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rt_safe_rl.core.errors import PolicyLoadError
from rt_safe_rl.core.policy import progcache
from rt_safe_rl.core.policy.autocache import cache_dir, cache_key, load_choice, store_choice
from rt_safe_rl.core.policy.backends import (
    F32,
    Backend,
    BackendResult,
    NumbaBackend,
    build_backend,
    evaluate_backends,
    format_table,
    reference_name,
    registered_backends,
    rollout,
    sample_observations,
    select_backend,
    tolerance_for,
)
from rt_safe_rl.core.policy.config import BACKENDS, ModelConfig, PolicyNodeConfig
from rt_safe_rl.core.policy.loading import PolicyInfo, detect_format, sha256_file
from rt_safe_rl.core.policy.probe import inspect_policy
from rt_safe_rl.core.policy.stdio import capture_stdout_fd, drop_stdout

_LOG = logging.getLogger('rt_safe_rl.policy')


@dataclass
class PolicyModel:
    """The chosen backend plus what was measured to choose it."""

    info: PolicyInfo
    backend: Backend
    selected: str
    reference: str
    table: list[BackendResult] = field(default_factory=list)
    backends: dict[str, Backend] = field(default_factory=dict)
    from_cache: bool = False

    def forward(self, obs: F32, out: F32) -> None:
        """One policy step on the chosen backend (RT path)."""
        self.backend.forward(obs, out)

    def reset(self) -> None:
        """Reset recurrent state of the chosen backend."""
        self.backend.reset()

    def report(self) -> dict[str, Any]:
        """JSON-ready description: file info, selected backend, table."""
        return {
            'policy': self.info.as_dict(),
            'selected': self.selected,
            'reference': self.reference,
            'backends': [r.as_dict() for r in self.table],
            'from_cache': self.from_cache,
        }


def _default_backends() -> list[str]:
    return list(BACKENDS) + registered_backends()


@dataclass(frozen=True)
class _Check:
    """What one policy's backends are built from and checked against (configure time): the file,
    its probed info, the model and node configs, the reference backend, the check observations
    (float32 [N, obs_dim]) and the logger."""

    p: Path
    info: PolicyInfo
    model_cfg: ModelConfig
    cfg: PolicyNodeConfig
    ref: str
    obs: F32
    log: Any


def _measure(
    c: _Check, names: list[str], timing_iters: int | None
) -> tuple[dict[str, Backend], list[BackendResult]]:
    """Build `names` (the reference first), check them against it and time them; stdout per policy.stdout."""
    p, info, model_cfg, cfg, ref, obs, log = c.p, c.info, c.model_cfg, c.cfg, c.ref, c.obs, c.log
    built: dict[str, Backend] = {}
    unavailable: dict[str, str] = {}
    for i, name in enumerate(names):
        if len(names) > 2:
            log.info(f'policy {p.name}: building backend {name} ({i + 1}/{len(names)})')
        try:
            with drop_stdout():
                built[name] = build_backend(name, p, info, model_cfg, cfg.num_threads)
        except PolicyLoadError as err:
            if name == ref:
                raise
            unavailable[name] = str(err)
    if cfg.stdout == 'drop':
        with drop_stdout():
            rows = evaluate_backends(built, ref, obs, cfg, unavailable, timing_iters)
        _mark_printing(rows, built, obs)
    else:
        with capture_stdout_fd() as printed:
            rows = evaluate_backends(built, ref, obs, cfg, unavailable, timing_iters)
        n_bytes = len(printed())
        if n_bytes:
            raise PolicyLoadError(
                f'{p}: the policy writes to stdout when called ({n_bytes} bytes over '
                f'{len(obs)} calls per backend): refused in a real-time loop (policy.stdout: drop runs it '
                'with its output discarded)'
            )
    ref_row = next(r for r in rows if r.name == ref)
    if not np.isfinite(ref_row.max_abs_err):
        raise PolicyLoadError(f'{p}: the policy returns non-finite values (NaN/Inf) on test observations')
    return built, rows


def _mark_printing(rows: list[BackendResult], built: dict[str, Backend], obs: F32, calls: int = 3) -> None:
    """policy.stdout drop: a backend that prints is kept only when no exact one is silent."""
    silent_ok = False
    loud: list[BackendResult] = []
    for r in rows:
        if not (r.available and r.ok) or r.name not in built:
            continue
        out = np.zeros(built[r.name].act_dim, np.float32)
        with capture_stdout_fd() as printed:
            for i in range(calls):
                built[r.name].forward(obs[i % len(obs)], out)
        built[r.name].reset()
        if printed():
            loud.append(r)
        else:
            silent_ok = True
    for r in loud:
        r.reason = (r.reason + '; ' if r.reason else '') + 'prints to stdout'
        if silent_ok:
            r.ok = False


def load_policy_model(
    path: str | Path,
    cfg: PolicyNodeConfig,
    model_cfg: ModelConfig | None = None,
    obs_dim: int | None = None,
    backends: list[str] | None = None,
    n_check: int | None = None,
    timing_iters: int | None = None,
    keep_all: bool = False,
    obs_scale: float = 1.0,
    logger: Any = None,
    check_obs: F32 | None = None,
    size_note: str = '',
    pipeline_key: str = '',
) -> PolicyModel:
    """Load and check a policy; choose its backend.

    Args:
        path: policy file.
        cfg: node config (backend, tolerances, threads, sha256, sample counts).
        model_cfg: format/architecture/ONNX names from the pipeline config.
        obs_dim: observation size the pipeline builds (the model must accept it).
        backends: candidates to measure (default: ``[cfg.backend]`` or all for ``auto``).
        n_check: observations / rollout steps for the error check (default cfg.auto_samples).
        timing_iters: timed calls per backend (default cfg.auto_timing_iters).
        keep_all: keep every built backend in ``.backends`` (the benchmark).
        obs_scale: standard deviation of the check observations (when `check_obs` is None).
        check_obs: float32 [N, obs_dim] observations for the error check and timing (e.g. from
            :func:`~rt_safe_rl.core.policy.pipeline.plausible_observations`); default N(0, obs_scale).
        logger: object with ``.info(str)`` (rclpy logger or logging.Logger).
        size_note: which terms build `obs_dim`, e.g. ' (base_ang_vel 3 + ... = 47)', for size errors.
        pipeline_key: the pipeline config (JSON) for the auto-choice cache key.

    Raises:
        PolicyLoadError: bad file/hash/size, configured backend unavailable or not exact, a policy that
            prints on every call or returns non-finite values.
    """
    log = logger or _LOG
    p = Path(path)
    model_cfg = model_cfg or ModelConfig()
    explicit = backends is not None
    if not explicit and not keep_all and obs_dim is not None and cfg.auto_cache:
        cached = _from_program_cache(p, cfg, model_cfg, obs_dim, pipeline_key, log)
        if cached is not None:
            return cached
    info = _inspect(p, cfg, model_cfg, obs_dim, size_note)
    ref = reference_name(info)
    if backends is None:
        backends = _default_backends() if cfg.backend == 'auto' else [cfg.backend]
    names = [ref] + [b for b in backends if b != ref]
    obs = _check_observations(info.obs_dim, check_obs, n_check or cfg.auto_samples, obs_scale)
    use_cache = cfg.backend == 'auto' and cfg.auto_cache and not explicit
    key = cache_key(info.sha256, pipeline_key + f'|obs_dim={info.obs_dim}', cfg, names) if use_cache else ''
    entry = load_choice(cfg, key) if use_cache else None
    check = _Check(p, info, model_cfg, cfg, ref, obs, log)
    selected, from_cache = '', False
    if entry is not None and entry['selected'] in names:
        built, rows, selected = _recheck_cached_choice(check, entry['selected'])
        from_cache = bool(selected)
    if not selected:
        pick_best = cfg.backend == 'auto' or backends != [cfg.backend]
        built, rows, selected = _measure_and_select(check, names, timing_iters, pick_best, use_cache)
        if use_cache:
            why = store_choice(cfg, key, {'selected': selected, 'table': [r.as_dict() for r in rows]})
            if why:
                log.info(f'policy {p.name}: auto choice not cached: {why}')
    if cfg.auto_cache and not keep_all:
        _store_program(p, cfg, model_cfg, info, built, rows, ref, obs, log)
    log.info(
        f'policy {p.name}: sha256 {info.sha256[:12]}, {info.obs_dim} -> {info.act_dim}, '
        f'recurrent={info.recurrent}; backend {selected!r}\n{format_table(rows, selected)}'
    )
    return _finish(p, cfg, info, built, selected, ref, rows, obs, keep_all, from_cache, log)


def _inspect(
    p: Path, cfg: PolicyNodeConfig, model_cfg: ModelConfig, obs_dim: int | None, size_note: str
) -> PolicyInfo:
    """Probe the policy file (torch on ``cfg.num_threads`` threads, its prints dropped) and check it
    takes `obs_dim` inputs (when given). Not RT-safe.

    Raises:
        PolicyLoadError: bad file or hash, or the model's input size is not `obs_dim`.
    """
    import torch

    torch.set_num_threads(cfg.num_threads)
    with drop_stdout():  # probing runs the model: what it prints is not a policy step's output
        info = inspect_policy(
            p,
            model_cfg,
            obs_dim if cfg.input_sizes_strict else None,
            cfg.sha256,
            size_note,
            input_usage_needed=False,
        )
    if obs_dim is not None and info.obs_dim != obs_dim:
        raise PolicyLoadError(
            f'{p}: the model expects {info.obs_dim} inputs, the policy config builds {obs_dim}{size_note}'
        )
    return info


def _measure_and_select(
    c: _Check, names: list[str], timing_iters: int | None, pick_best: bool, use_cache: bool
) -> tuple[dict[str, Backend], list[BackendResult], str]:
    """Measure the backends `names` against `c.ref`; the built backends, the rows and the choice: the
    best (`pick_best`, :func:`select_backend`) or the configured backend, which must pass. Not RT-safe.

    Raises:
        PolicyLoadError: the configured backend is unavailable or rejected.
    """
    cfg, ref = c.cfg, c.ref
    if cfg.backend == 'auto' and len(names) > 1:
        c.log.info(
            f'policy {c.p.name}: auto: measuring {len(names)} backends (error vs {ref}, latency)'
            + (f'; the choice is cached in {cache_dir(cfg)}' if use_cache else '')
        )
    built, rows = _measure(c, names, timing_iters)
    selected = select_backend(rows, cfg, ref) if pick_best else _require_configured(rows, cfg.backend, ref)
    return built, rows, selected


def _check_observations(obs_dim: int, check_obs: F32 | None, n: int, obs_scale: float) -> F32:
    """The error-check observations: `check_obs` checked against the model's `obs_dim`, or `n`
    samples of N(0, `obs_scale`). Not RT-safe.

    Raises:
        PolicyLoadError: `check_obs` is not [N, obs_dim].
    """
    if check_obs is None:
        return sample_observations(obs_dim, n, scale=obs_scale)
    if check_obs.ndim != 2 or check_obs.shape[1] != obs_dim:
        raise PolicyLoadError(f'check observations of shape {check_obs.shape}, model takes {obs_dim}')
    return np.ascontiguousarray(check_obs, dtype=np.float32)


def _recheck_cached_choice(c: _Check, sel: str) -> tuple[dict[str, Backend], list[BackendResult], str]:
    """Re-measure the cached auto choice `sel` against `c.ref` (50 timed calls): the built backends,
    the rows and `sel`, or '' when it fails the tolerance check now. Not RT-safe."""
    p, log = c.p, c.log
    log.info(f'policy {p.name}: auto: re-checking the cached choice {sel!r} ({cache_dir(c.cfg)})')
    built, rows = _measure(c, list(dict.fromkeys([c.ref, sel])), 50)
    row = next((r for r in rows if r.name == sel), None)
    if row is not None and row.ok:
        return built, rows, sel
    log.info(f'policy {p.name}: the cached choice {sel!r} fails the tolerance check now: measuring all')
    return built, rows, ''


def _require_configured(rows: list[BackendResult], selected: str, ref: str) -> str:
    """`selected` (the configured backend) when its row is available and within tolerance of `ref`.

    Raises:
        PolicyLoadError: the backend is unavailable, or rejected (says why, with its error).
    """
    row = next((r for r in rows if r.name == selected), None)
    if row is not None and not row.available:
        raise PolicyLoadError(f'backend {selected!r} is not available: {row.reason}')
    if row is None or not row.ok:
        why = row.reason if row is not None else 'not evaluated'
        err_s = f'{row.max_abs_err:.3g}' if row is not None else '?'
        raise PolicyLoadError(
            f'backend {selected!r} rejected: {why} (max abs error {err_s} vs {ref}, '
            f'tolerance {row.tolerance if row else "?"})'
        )
    return selected


def _finish(
    p: Path,
    cfg: PolicyNodeConfig,
    info: PolicyInfo,
    built: dict[str, Backend],
    selected: str,
    ref: str,
    rows: list[BackendResult],
    obs: F32,
    keep_all: bool,
    from_cache: bool,
    log: Any,
) -> PolicyModel:
    """Warm the chosen backend up (refusing one that prints, per ``policy.stdout``) and wrap it."""
    chosen = built[selected]
    out = np.zeros(info.act_dim, np.float32)
    with capture_stdout_fd() as printed:
        for i in range(cfg.warmup_iters):
            chosen.forward(obs[i % len(obs)], out)
    chosen.reset()
    if printed() and cfg.stdout != 'drop':
        raise PolicyLoadError(f'{p}: the policy writes to stdout when called: refused in a real-time loop')
    if printed():
        log.info(
            f'policy {p.name}: backend {selected!r} prints on every call and no backend that does not '
            'print is within tolerance: its output reaches stdout on the RT path'
        )
    kept = built if keep_all else {selected: chosen}
    return PolicyModel(
        info=info,
        backend=chosen,
        selected=selected,
        reference=ref,
        table=rows,
        backends=kept,
        from_cache=from_cache,
    )


def _warn(log: Any) -> Any:
    return getattr(log, 'warning', None) or log.info


def _from_program_cache(
    p: Path, cfg: PolicyNodeConfig, model_cfg: ModelConfig, obs_dim: int, pipeline_key: str, log: Any
) -> PolicyModel | None:
    """The policy from the program cache (no trace, no torch), or None: run the full path.

    Used when numba is the backend to run: ``backend: numba``, or ``auto`` with a cached choice of
    numba for this model, pipeline and settings. The cached program is re-checked against the
    stored reference outputs with the numba tolerance; anything unusable is None (the full path
    then reports errors such as a missing file or a wrong SHA-256 itself).
    """
    if cfg.backend not in ('auto', 'numba') or not p.is_file():
        return None
    try:
        digest = sha256_file(p)
        fmt = detect_format(p, model_cfg.format)
    except (OSError, PolicyLoadError):
        return None
    if cfg.sha256 and digest.lower() != cfg.sha256.lower():
        return None
    cached_rows: list[dict[str, Any]] | None = None
    if cfg.backend == 'auto':
        ref = 'onnxruntime' if fmt == 'onnx' else 'eager'
        names = [ref] + [b for b in _default_backends() if b != ref]
        choice = load_choice(cfg, cache_key(digest, pipeline_key + f'|obs_dim={obs_dim}', cfg, names))
        if choice is None or choice['selected'] != 'numba':
            return None
        cached_rows = choice.get('table') if isinstance(choice.get('table'), list) else None
    key = progcache.program_key(digest, obs_dim, model_cfg, cfg.input_sizes_strict)
    entry = progcache.load(cfg, key, _warn(log))
    if entry is None:
        return None
    info = entry.info
    if info.sha256 != digest or info.obs_dim != obs_dim or info.format != fmt:
        _warn(log)(
            f'policy program cache: ignoring {entry.path}: it describes another model; compiling again'
        )
        return None
    info.path = str(p)
    backend = NumbaBackend(entry.program)
    tol = tolerance_for('numba', cfg)
    ok, err = progcache.verify(entry, backend, tol)
    if not ok:
        _warn(log)(
            f'policy program cache: ignoring {entry.path}: the cached program differs from the stored '
            f'{entry.reference} outputs by {err:.3g} > tolerance {tol:g}; compiling again'
        )
        return None
    rows = _rows_from_cache(cached_rows, err, tol, entry.reference)
    log.info(
        f'policy {p.name}: sha256 {digest[:12]}, {info.obs_dim} -> {info.act_dim}, '
        f'recurrent={info.recurrent}; '
        f"backend 'numba' from the program cache ({entry.path.parent}): max abs error {err:.3g} vs the "
        f'stored {entry.reference} outputs over {len(entry.check_obs)} steps (tolerance {tol:g}); no trace, '
        f'no torch\n{format_table(rows, "numba")}'
    )
    return _finish(
        p, cfg, info, {'numba': backend}, 'numba', entry.reference, rows, entry.check_obs, False, True, log
    )


def _rows_from_cache(
    rows: list[dict[str, Any]] | None, err: float, tol: float, ref: str
) -> list[BackendResult]:
    """The backend table measured when the choice was made, with the numba row's error as re-checked now."""
    fields = set(BackendResult.__dataclass_fields__)
    out: list[BackendResult] = []
    for r in rows or []:
        if isinstance(r, dict) and isinstance(r.get('name'), str):
            out.append(BackendResult(**{k: v for k, v in r.items() if k in fields}))
    numba = next((r for r in out if r.name == 'numba'), None)
    if numba is None:
        numba = BackendResult('numba', True)
        out.append(numba)
    numba.available, numba.ok, numba.max_abs_err, numba.tolerance = True, True, err, tol
    numba.reason = f'program cache, checked vs stored {ref} outputs'
    return out


def _store_program(
    p: Path,
    cfg: PolicyNodeConfig,
    model_cfg: ModelConfig,
    info: PolicyInfo,
    built: dict[str, Backend],
    rows: list[BackendResult],
    ref: str,
    obs: F32,
    log: Any,
) -> None:
    """Write the numba program to the program cache when it passed the check vs the reference."""
    be = built.get('numba')
    row = next((r for r in rows if r.name == 'numba'), None)
    if not isinstance(be, NumbaBackend) or row is None or not (row.available and row.ok) or ref not in built:
        return
    with drop_stdout():
        ref_out = rollout(built[ref], obs)
    key = progcache.program_key(info.sha256, info.obs_dim, model_cfg, cfg.input_sizes_strict)
    why = progcache.store(cfg, key, be.program, info, obs, ref_out, ref)
    if why:
        log.info(f'policy {p.name}: compiled program not cached: {why}')
