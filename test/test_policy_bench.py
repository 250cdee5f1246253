"""`rt-safe-rl bench policy`: JSON keys, strict JSON, clear one-line errors (tiny synthetic model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _helpers import stdout_json
from torch import nn

from rt_safe_rl.cli import main as cli


def _model(tmp: Path) -> Path:
    torch.manual_seed(0)
    p = tmp / 'tiny.pt'
    torch.jit.script(nn.Sequential(nn.Linear(6, 16), nn.ELU(), nn.Linear(16, 2))).save(str(p))
    return p


def test_bench_policy_writes_the_documented_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'r.json'
    printed = stdout_json(
        cli,
        [
            'bench',
            'policy',
            str(_model(tmp_path)),
            '--backends',
            'eager,numba,torchscript,cuda',
            '--iters',
            '50',
            '--heap-calls',
            '500',
            '--json',
            str(out),
        ],
        capsys,
    )
    report = json.loads(out.read_text())
    assert printed == report
    rows = {r['name']: r for r in report['backends']}
    assert set(rows) == {'eager', 'numba', 'torchscript', 'cuda'}
    for name in ('eager', 'numba', 'torchscript'):
        for key in ('median_us', 'p99_us', 'max_us', 'max_abs_err', 'ok'):
            assert key in rows[name]
        assert rows[name]['ok'] and rows[name]['max_abs_err'] <= 1e-4
    if not torch.cuda.is_available():
        assert rows['cuda']['available'] is False and rows['cuda']['median_us'] is None  # null, not NaN
    assert report['selected'] in rows and report['reference'] == 'eager'
    assert report['samples'] >= 1000 and report['heap']['calls'] == 500
    assert report['observations'] == 'skeleton'  # no --config: the inspect skeleton's pipeline
    meta = report['metadata']
    assert len(meta['sha256']) == 64 and meta['torch'] == torch.__version__ and meta['numba'] and meta['cpu']


@pytest.mark.parametrize(
    'args, fragment',
    [
        (['--backends', 'tpu'], 'unknown backend'),
        (['--samples', '10'], '--samples'),
    ],
)
def test_bench_policy_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    assert cli(['bench', 'policy', str(_model(tmp_path)), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1


def test_bench_policy_missing_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(['bench', 'policy', str(tmp_path / 'missing.pt')]) == 2
    err = capsys.readouterr().err.strip()
    assert 'missing.pt' in err and len(err.splitlines()) == 1


def test_summary_says_met_or_not_met_for_each_issue_target() -> None:
    """summary() turns the per-policy figures into a 'met' / 'not met' line per target."""
    from rt_safe_rl.bench.policy_bench import summary

    def rep(name: str, ok: bool, rec: bool, sp: float, heap: int) -> dict:
        heap_d = {'growth_bytes': heap, 'calls': 10}
        return {
            'policy': name,
            'recurrent': rec,
            'compiled': {
                'ok': ok,
                'reason': '' if ok else 'numba: why',
                'speedup_vs_eager': sp,
                'heap': heap_d,
            },
        }

    s = summary(
        [rep('a.pt', True, False, 3.0, 0), rep('b.pt', True, True, 2.0, 0), rep('c.pt', False, False, 0, 0)]
    )
    t = s['targets']
    assert t['compiled_fraction >= 0.9'] == 'not met'
    assert t['median_speedup_vs_eager_mlp >= 2'] == 'met'
    assert t['median_speedup_vs_eager_recurrent >= 4'] == 'not met'
    assert t['heap_growth_bytes == 0 (every compiled backend)'] == 'met'
    assert s['not_compiled'] == {'c.pt': 'numba: why'}
