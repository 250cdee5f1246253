"""`rt-safe-rl bench api`: its JSON contract from a real short run (no speed is asserted), and the
floor's reference block."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from _helpers import cli_subprocess_json

from rt_safe_rl.bench.api_bench import _reference_block


def test_reference_block_does_its_work() -> None:
    a, b = np.zeros(3), np.arange(3.0)
    assert _reference_block(4, a, b) == 0 + 1 + 2 + 3 + 3
    assert np.array_equal(a, b)


def test_bench_api_prints_its_contract(tmp_path: Path) -> None:
    out = tmp_path / 'api.json'
    args = ['bench', 'api', '--iterations', '30', '--rounds', '1', '--profile', 'development']
    printed = cli_subprocess_json([*args, '--json', str(out)], 300.0)
    res = json.loads(out.read_text())
    assert printed == res
    for mode in ('sync', 'async', 'async_worker'):
        o = res['overhead_us'][mode]
        assert o['count'] == 30 and set(o) >= {'p50', 'p99', 'max'}, o
    assert res['direct_us']['count'] == 30 and res['sync_us']['count'] == 30
    fl = res['floor_us']
    assert fl['count'] == 30 and fl['reps'] >= 1 and fl['block_median_target_us'] > 0, fl
    for name in ('sync_overhead_p99_us', 'async_overhead_p99_us'):
        t = res['targets'][name]
        assert isinstance(t['pass'], bool) and t['machine_floor_p99_us'] == fl['p99'], t
    assert res['machine']['verdict']
