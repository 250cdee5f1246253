"""On-disk cache of compiled numba programs, so a second start needs neither the trace nor torch.

A :class:`~rt_safe_rl.core.policy.kernels.Program` is plain arrays, so it is stored as one ``.npz``
file (``np.savez``; read back with ``allow_pickle=False``: nothing is ever unpickled) together with:

- the :class:`~rt_safe_rl.core.policy.loading.PolicyInfo` of the model (sizes, shapes, recurrence),
  so a hit does not load the model into torch to probe it;
- the check observations and the *reference* backend's outputs on them (eager torch, or
  onnxruntime for ONNX files), recorded when the program passed the numerical equivalence check;
- a SHA-256 of every array, checked on load (a truncated or corrupt file is caught before the
  program runs: the kernels run without bounds checks).

Key: SHA-256 over the model file's SHA-256, the observation size the pipeline builds (which fixes
the input shape; the shape itself is stored and checked), ``input_sizes_strict``, the model config
(format, architecture, ONNX names), a hash of the compiler's own source files
(:data:`COMPILER_FILES`) and the torch / numba / numpy / onnx versions (read from package metadata,
without importing torch). Any change of those is another key: the entry is rebuilt.

On a hit :func:`verify` runs the cached program over the stored observations (a rollout from reset
for recurrent models) and compares against the stored reference outputs with the configured
tolerance: that is the equivalence re-check, without torch. A corrupt, mismatched or failing entry
is ignored with one warning line and rebuilt by the normal path (trace + full check vs the
reference), which then rewrites it.

Directory: :func:`~rt_safe_rl.core.policy.autocache.cache_dir` (``policy.cache_dir``, else
``$RT_SAFE_RL_CACHE_DIR``, else ``$XDG_CACHE_HOME/rt_safe_rl``, else ``~/.cache/rt_safe_rl``),
entries in ``programs/<key>.npz``. An unwritable directory only costs the speed-up (one log line).

Trust: whoever can write the cache directory can change what the policy computes, as with numba's
own on-disk cache of machine code; keep it private to the user that runs the robot.

Not RT code (configure time).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.policy.config import ModelConfig, PolicyNodeConfig
from rt_safe_rl.core.policy.loading import PolicyInfo

FORMAT_VERSION = 1
COMPILER_FILES = (
    'backends.py', 'extract.py', 'graph.py', 'graph_base.py', 'graph_ops.py', 'graph_trace.py', 'kernels.py',
    'loading.py', 'probe.py', 'progcache.py',
)  # fmt: skip
"""Sources whose content is part of the key: a change of the compiler invalidates every entry."""
_ARRAYS = ('ops', 'params', 'iparams', 'template', 'state', 'check_obs', 'check_out')
_INFO_FIELDS = {f.name for f in dataclasses.fields(PolicyInfo)}


@dataclass
class CachedProgram:
    """One loaded entry: the program, the model description and the stored reference check."""

    program: Any
    info: PolicyInfo
    check_obs: npt.NDArray[np.float32]
    check_out: npt.NDArray[np.float32]
    reference: str
    path: Path


@functools.lru_cache(maxsize=1)
def compiler_hash() -> str:
    """SHA-256 (hex) over the source files of the compiler (:data:`COMPILER_FILES`)."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in COMPILER_FILES:
        h.update(name.encode())
        h.update((here / name).read_bytes())
    return h.hexdigest()


@functools.cache
def dist_version(name: str) -> str:
    """Installed version of distribution `name` from its metadata ('absent' if not installed); never
    imports the package (importing torch costs ~1.5 s)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return 'absent'


def program_key(sha256: str, obs_dim: int, model_cfg: ModelConfig, input_sizes_strict: bool) -> str:
    """Hex key of one compiled program (see the module docstring)."""
    blob = {
        'format_version': FORMAT_VERSION,
        'model_sha256': sha256,
        'obs_dim': int(obs_dim),
        'input_sizes_strict': bool(input_sizes_strict),
        'model_cfg': dataclasses.asdict(model_cfg),
        'compiler': compiler_hash(),
        'versions': {d: dist_version(d) for d in ('torch', 'numba', 'numpy', 'onnx')},
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def entry_path(cfg: PolicyNodeConfig, key: str) -> Path:
    """File of the entry `key`."""
    from rt_safe_rl.core.policy.autocache import cache_dir  # lazy: cycle: autocache imports progcache

    return cache_dir(cfg) / 'programs' / f'{key}.npz'


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() + f':{a.dtype.str}:{a.shape}'


def store(
    cfg: PolicyNodeConfig,
    key: str,
    program: Any,
    info: PolicyInfo,
    check_obs: npt.NDArray[np.float32],
    check_out: npt.NDArray[np.float32],
    reference: str,
) -> str:
    """Write an entry (atomically: temp file + rename). Returns '' or why it could not be written."""
    arrays: dict[str, np.ndarray] = {
        'ops': np.ascontiguousarray(program.ops, dtype=np.int64),
        'params': np.ascontiguousarray(program.params, dtype=np.float32),
        'iparams': np.ascontiguousarray(
            program.iparams if program.iparams is not None else np.zeros(1, np.int64), dtype=np.int64
        ),
        'template': np.ascontiguousarray(
            program.template if program.template is not None else np.zeros(0, np.float32), dtype=np.float32
        ),
        'state': np.asarray(program.state, dtype=np.int64).reshape(-1, 2),
        'check_obs': np.ascontiguousarray(check_obs, dtype=np.float32),
        'check_out': np.ascontiguousarray(check_out, dtype=np.float32),
    }
    meta = {
        'format_version': FORMAT_VERSION,
        'key': key,
        'scratch_size': int(program.scratch_size),
        'ibuf_size': int(program.ibuf_size),
        'in_off': int(program.in_off),
        'in_dim': int(program.in_dim),
        'out_off': int(program.out_off),
        'out_dim': int(program.out_dim),
        'summary': str(program.summary),
        'source': str(program.source),
        'has_template': program.template is not None,
        'reference': reference,
        'info': info.as_dict(),
        'digests': {k: _digest(v) for k, v in arrays.items()},
    }
    arrays['meta'] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    p = entry_path(cfg, key)
    tmp = p.with_name(f'.{key}.{os.getpid()}.tmp')
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, 'wb') as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        tmp.replace(p)
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return f'{p.parent}: {err.strerror or err}'
    return ''


class _BadEntryError(Exception):
    """An entry that cannot be used (the message says why)."""


def load(cfg: PolicyNodeConfig, key: str, warn: Any = None) -> CachedProgram | None:
    """The entry `key`, or None when there is none or it is unusable (then `warn(line)` says why).

    Never unpickles (``allow_pickle=False``); checks every array's SHA-256 and the program's layout.
    """
    p = entry_path(cfg, key)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        _warn(warn, f'policy program cache: cannot read {p}: {err.strerror or err}; compiling instead')
        return None
    try:
        return _parse(raw, key, p)
    except _BadEntryError as err:
        _warn(warn, f'policy program cache: ignoring {p}: {err}; compiling again')
        return None


def _warn(warn: Any, line: str) -> None:
    if warn is not None:
        warn(line)


def _parse(raw: bytes, key: str, p: Path) -> CachedProgram:
    from rt_safe_rl.core.policy.kernels import ROW, Program

    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise _BadEntryError(f'unreadable ({type(err).__name__}: {str(err)[:80]})') from None
    missing = [k for k in (*_ARRAYS, 'meta') if k not in data]
    if missing:
        raise _BadEntryError(f'missing arrays {missing}')
    try:
        meta = json.loads(data['meta'].tobytes().decode())
    except (ValueError, UnicodeDecodeError):
        raise _BadEntryError('metadata is not JSON') from None
    if not isinstance(meta, dict) or meta.get('format_version') != FORMAT_VERSION:
        raise _BadEntryError('another format version')
    if meta.get('key') != key:
        raise _BadEntryError('written for another key')
    digests = meta.get('digests', {})
    for k in _ARRAYS:
        if digests.get(k) != _digest(data[k]):
            raise _BadEntryError(f'array {k!r} does not match its SHA-256 (corrupt)')
    try:
        info_d = {k: v for k, v in meta['info'].items() if k in _INFO_FIELDS}
        info = PolicyInfo(**info_d)
        prog = Program(
            ops=data['ops'],
            params=data['params'],
            scratch_size=int(meta['scratch_size']),
            ibuf_size=int(meta['ibuf_size']),
            in_off=int(meta['in_off']),
            in_dim=int(meta['in_dim']),
            out_off=int(meta['out_off']),
            out_dim=int(meta['out_dim']),
            state=[(int(a), int(b)) for a, b in data['state']],
            summary=str(meta['summary']),
            iparams=data['iparams'],
            template=data['template'] if meta['has_template'] else None,
            source=str(meta['source']),
        )
        reference = str(meta['reference'])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise _BadEntryError(f'metadata incomplete ({type(err).__name__}: {err})') from None
    _check_layout(prog, ROW)
    obs, out = data['check_obs'], data['check_out']
    if obs.ndim != 2 or obs.shape[1] != prog.in_dim or out.shape != (obs.shape[0], prog.out_dim):
        raise _BadEntryError(f'check arrays of shapes {obs.shape} / {out.shape} do not fit the program')
    if (info.obs_dim, info.act_dim) != (prog.in_dim, prog.out_dim):
        raise _BadEntryError(f'model sizes {info.obs_dim} -> {info.act_dim} differ from the program')
    return CachedProgram(prog, info, obs, out, reference, p)


def _check_layout(prog: Any, row: int) -> None:
    """Dtypes, shapes and the regions every program has lie inside the scratch."""
    s = prog.scratch_size
    if prog.ops.dtype != np.int64 or prog.ops.ndim != 2 or prog.ops.shape[1] != row:
        raise _BadEntryError(f'op table of {prog.ops.dtype} {prog.ops.shape}')
    if prog.params.dtype != np.float32 or prog.iparams is None or prog.iparams.dtype != np.int64:
        raise _BadEntryError('parameter arrays of the wrong dtype')
    if s < 1 or prog.ibuf_size < 1:
        raise _BadEntryError('empty scratch')
    regions = [(prog.in_off, prog.in_dim), (prog.out_off, prog.out_dim), *prog.state]
    if any(off < 0 or n < 0 or off + n > s for off, n in regions):
        raise _BadEntryError('input, output or state outside the scratch')
    if prog.template is not None and prog.template.shape != (s,):
        raise _BadEntryError('reset template does not match the scratch size')
    ip = prog.iparams
    if ip.size and (int(ip.min()) < 0 or int(ip.max()) >= s):
        raise _BadEntryError('index parameters outside the scratch')


def verify(entry: CachedProgram, backend: Any, tolerance: float) -> tuple[bool, float]:
    """Run `backend` (the cached program) over the stored observations from reset and compare with
    the stored reference outputs: (within `tolerance` and finite, max abs error). Resets after."""
    y = np.zeros_like(entry.check_out)
    backend.reset()
    try:
        for i in range(entry.check_obs.shape[0]):
            backend.forward(entry.check_obs[i], y[i])
    finally:
        backend.reset()
    if not np.all(np.isfinite(y)):
        return False, float('inf')
    err = float(np.max(np.abs(y.astype(np.float64) - entry.check_out))) if y.size else 0.0
    return err <= tolerance, err
