"""The on-disk cache of compiled numba programs (rt_safe_rl.core.policy.progcache).

A second load of the same model file finds its program: no trace, no torch import, the same outputs;
the program is re-checked against the stored reference outputs. A corrupt, foreign, pickled or
numerically wrong entry is ignored with one warning line and rebuilt; an unwritable cache directory
only costs the speed-up. Real files, real subprocesses (a fresh interpreter shows what is imported).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_policy_core import _Lstm  # the legged_gym-style recurrent exporter
from torch import nn

from rt_safe_rl.core.policy import progcache
from rt_safe_rl.core.policy.config import ModelConfig, PolicyNodeConfig
from rt_safe_rl.core.policy.loading import sha256_file
from rt_safe_rl.core.policy.model import load_policy_model

OBS, ACT = 9, 3
REPO = Path(__file__).resolve().parent.parent


def _mlp_file(tmp: Path, name: str = 'p.pt', seed: int = 0) -> Path:
    torch.manual_seed(seed)
    mod = nn.Sequential(nn.Linear(OBS, 32), nn.ELU(), nn.Linear(32, ACT)).eval()
    p = tmp / name
    torch.jit.script(mod).save(str(p))
    return p


def _cfg(tmp: Path, **kw: Any) -> PolicyNodeConfig:
    base: dict[str, Any] = {'path': 'unused', 'cache_dir': str(tmp / 'cache'), 'auto_timing_iters': 50}
    return PolicyNodeConfig(**{**base, **kw})


def _load(p: Path, cfg: PolicyNodeConfig, logger: Any = None) -> Any:
    return load_policy_model(p, cfg, obs_dim=OBS, pipeline_key='test', logger=logger, n_check=40)


def _outputs(model: Any, n: int = 20) -> np.ndarray:
    obs = np.random.default_rng(5).standard_normal((n, OBS)).astype(np.float32)
    out = np.zeros((n, ACT), np.float32)
    model.reset()
    for i in range(n):
        model.forward(obs[i], out[i])
    model.reset()
    return out


def _entry(cfg: PolicyNodeConfig, p: Path) -> Path:
    key = progcache.program_key(sha256_file(p), OBS, ModelConfig(), cfg.input_sizes_strict)
    return progcache.entry_path(cfg, key)


_CHILD = """
import json, sys
import numpy as np
from rt_safe_rl.core.policy.config import PolicyNodeConfig
from rt_safe_rl.core.policy.model import load_policy_model
cfg = PolicyNodeConfig(**json.loads(sys.argv[2]))
m = load_policy_model(sys.argv[1], cfg, obs_dim=int(sys.argv[3]), pipeline_key='test', n_check=40)
obs = np.random.default_rng(5).standard_normal((20, m.info.obs_dim)).astype(np.float32)
out = np.zeros((20, m.info.act_dim), np.float32)
for i in range(20):
    m.forward(obs[i], out[i])
print(json.dumps({'selected': m.selected, 'from_cache': m.from_cache, 'torch': 'torch' in sys.modules,
                  'dynamo': 'torch._dynamo' in sys.modules, 'out': out.tolist()}))
"""


def _child(p: Path, cfg: PolicyNodeConfig, obs_dim: int = OBS) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, '-c', _CHILD, str(p), json.dumps(dataclasses.asdict(cfg)), str(obs_dim)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize('backend', ['auto', 'numba'])
def test_second_load_uses_the_cached_program_without_torch(tmp_path: Path, backend: str) -> None:
    p = _mlp_file(tmp_path)
    cfg = _cfg(tmp_path, backend=backend)
    first = _load(p, cfg)
    assert first.selected == 'numba' and _entry(cfg, p).is_file()
    again = _child(p, cfg)
    assert again['selected'] == 'numba' and again['from_cache'] is True
    assert again['torch'] is False and again['dynamo'] is False
    np.testing.assert_array_equal(np.asarray(again['out'], np.float32), _outputs(first))


def test_recurrent_program_round_trip_keeps_the_state_semantics(tmp_path: Path) -> None:
    p = tmp_path / 'lstm.pt'
    torch.jit.script(_Lstm(OBS, ACT).eval()).save(str(p))
    cfg = _cfg(tmp_path, backend='numba')
    first = _load(p, cfg)
    assert first.info.recurrent and not first.from_cache
    second = _load(p, cfg)
    assert second.from_cache and second.info.recurrent
    np.testing.assert_array_equal(_outputs(second), _outputs(first))  # a rollout: state carried


def test_cache_hit_reports_the_recheck(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = _mlp_file(tmp_path)
    cfg = _cfg(tmp_path, backend='auto')
    _load(p, cfg)
    with caplog.at_level(logging.INFO, logger='rt_safe_rl.policy'):
        m = _load(p, cfg)
    assert m.from_cache
    assert 'from the program cache' in caplog.text and 'vs the stored eager outputs' in caplog.text
    row = next(r for r in m.table if r.name == 'numba')
    assert row.ok and row.max_abs_err <= cfg.tolerance and 'program cache' in row.reason


def _rewrite(path: Path, mutate: Any, fix_digests: bool) -> None:
    """Load an entry, let `mutate(arrays, meta)` change it, write it back (digests recomputed or not)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop('meta').tobytes().decode())
    mutate(arrays, meta)
    if fix_digests:
        meta['digests'] = {k: progcache._digest(v) for k, v in arrays.items()}
    arrays['meta'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def _nudge_params(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    arrays['params'] = arrays['params'] + np.float32(0.05)


def _pickled_params(path: Path) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays['params'] = np.array([{'evil': 1}], dtype=object)
    buf = io.BytesIO()
    np.savez(buf, **arrays, allow_pickle=True)
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize(
    ('damage', 'why'),
    [
        (lambda f: f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2]), 'unreadable'),
        (lambda f: f.write_bytes(b'not a zip file at all'), 'unreadable'),
        (lambda f: _rewrite(f, _nudge_params, fix_digests=False), "'params' does not match its SHA-256"),
        (lambda f: _rewrite(f, lambda a, m: m.update(key='0' * 64), True), 'written for another key'),
        (lambda f: _rewrite(f, lambda a, m: m.update(out_off=10**9), True), 'outside the scratch'),
        (lambda f: _rewrite(f, _nudge_params, fix_digests=True), 'differs from the stored eager outputs'),
        (_pickled_params, 'unreadable'),
    ],
    ids=['truncated', 'garbage', 'corrupt_array', 'foreign_key', 'bad_layout', 'wrong_numbers', 'pickle'],
)
def test_bad_entry_is_ignored_with_one_warning_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any, why: str
) -> None:
    p = _mlp_file(tmp_path)
    cfg = _cfg(tmp_path, backend='numba')
    good = _outputs(_load(p, cfg))
    entry = _entry(cfg, p)
    damage(entry)
    with caplog.at_level(logging.INFO, logger='rt_safe_rl.policy'):
        m = _load(p, cfg)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and why in warnings[0].getMessage(), caplog.text
    assert '\n' not in warnings[0].getMessage() and str(entry) in warnings[0].getMessage()
    assert not m.from_cache  # compiled and checked against eager again ...
    np.testing.assert_array_equal(_outputs(m), good)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='rt_safe_rl.policy'):
        assert _load(p, cfg).from_cache  # ... and the entry was rewritten
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_unwritable_cache_dir_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / 'file'
    blocker.write_text('a file where the cache directory should be')
    p = _mlp_file(tmp_path)
    cfg = dataclasses.replace(_cfg(tmp_path, backend='numba'), cache_dir=str(blocker / 'cache'))
    with caplog.at_level(logging.INFO, logger='rt_safe_rl.policy'):
        m = _load(p, cfg)
        again = _load(p, cfg)
    assert m.selected == again.selected == 'numba' and not again.from_cache
    assert 'compiled program not cached' in caplog.text


def test_another_model_or_size_is_another_key(tmp_path: Path) -> None:
    a, b = _mlp_file(tmp_path, 'a.pt', seed=0), _mlp_file(tmp_path, 'b.pt', seed=1)
    ka = progcache.program_key(sha256_file(a), OBS, ModelConfig(), True)
    assert ka != progcache.program_key(sha256_file(b), OBS, ModelConfig(), True)
    assert ka != progcache.program_key(sha256_file(a), OBS + 1, ModelConfig(), True)
    assert ka != progcache.program_key(sha256_file(a), OBS, ModelConfig(format='torchscript'), True)
    assert ka != progcache.program_key(sha256_file(a), OBS, ModelConfig(), False)
    cfg = _cfg(tmp_path, backend='numba')
    _load(a, cfg)
    assert not _load(b, cfg).from_cache  # same size, other weights: compiled, not reused


def test_key_covers_the_compiler_sources() -> None:
    h = hashlib.sha256()
    here = REPO / 'rt_safe_rl' / 'core' / 'policy'
    for name in progcache.COMPILER_FILES:
        h.update(name.encode())
        h.update((here / name).read_bytes())
    assert progcache.compiler_hash() == h.hexdigest()


def test_entry_is_plain_arrays(tmp_path: Path) -> None:
    """No object arrays anywhere: the file loads with allow_pickle=False and holds only .npy members."""
    p = _mlp_file(tmp_path)
    cfg = _cfg(tmp_path, backend='numba')
    _load(p, cfg)
    entry = _entry(cfg, p)
    with zipfile.ZipFile(entry) as z:
        assert all(n.endswith('.npy') for n in z.namelist())
    with np.load(entry, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_shipped_policy_second_start_without_torch(tmp_path: Path) -> None:
    """The default demo policy through PolicyRuntime: the second start loads no torch."""
    code = (
        'import json, sys\n'
        'from rt_safe_rl.config import load_config\n'
        'from rt_safe_rl.core.policy.runtime import PolicyRuntime\n'
        'cfg = load_config(None, {"policy": {"cache_dir": sys.argv[1]}})\n'
        'rt = PolicyRuntime.from_config(cfg.policy, [f"joint{i}" for i in range(1, 8)])\n'
        'print(json.dumps({"selected": rt.model.selected, "from_cache": rt.model.from_cache,'
        ' "torch": "torch" in sys.modules}))\n'
    )
    runs = []
    for _ in range(2):
        r = subprocess.run(
            [sys.executable, '-c', code, str(tmp_path / 'cache')],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert runs[0]['torch'] is True and runs[0]['from_cache'] is False
    assert runs[1] == {'selected': 'numba', 'from_cache': True, 'torch': False}
