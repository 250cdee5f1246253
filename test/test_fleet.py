"""Fleet replay without Ray: variants, one task in-process (the bench replay core on the recorded
bag), aggregation, the diff to the baseline, the report files, and the install hint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.fleet import report, results
from rt_safe_rl.fleet.task import close_cached, run_task
from rt_safe_rl.fleet.variants import PINNED_BACKEND, build_variants, parse_grid

REPO = Path(__file__).resolve().parents[1]
RECORDED = REPO / 'test' / 'data' / 'sim_arm7_1khz'


def test_variants_are_the_product_of_policies_and_grid(tmp_path: Path) -> None:
    pol = tmp_path / 'p.pt'
    pol.write_bytes(b'x')
    vs = build_variants([str(pol)], ['safety.ssm.reaction_time_s=0.1,0.3', 'policy.rate_hz=50,25'], ['a.b=1'])
    assert [v.index for v in vs] == [0, 1, 2, 3]
    assert vs[0].sets == (PINNED_BACKEND, 'a.b=1', 'safety.ssm.reaction_time_s=0.1', 'policy.rate_hz=50')
    assert vs[3].name == 'p,reaction_time_s=0.3,rate_hz=25'
    expect = ['--policy', str(pol.resolve()), '--set', PINNED_BACKEND, '--set', 'a.b=1']
    assert vs[1].bench_args()[:6] == expect
    # the user's backend wins over the pinned one
    assert build_variants([], [], ['policy.backend=numba'])[0].sets == ('policy.backend=numba',)
    assert build_variants([], ['policy.backend=eager,numba'])[1].sets == ('policy.backend=numba',)
    for bad in ('novalue', 'k=', '=1,2', 'k=1,1'):
        with pytest.raises(ConfigError, match='--grid'):
            parse_grid(bad)
    with pytest.raises(ConfigError, match='file not found'):
        build_variants([str(tmp_path / 'missing.pt')])
    with pytest.raises(ConfigError, match='two axes'):
        build_variants([], ['a=1,2', 'a=3,4'])
    with pytest.raises(ConfigError, match='--set'):
        build_variants([], [], ['nokey'])


def _row(bag: str, vi: int, interventions: int, stops: int, stopped_s: float, sep: float | None,
         below_s: float, v: float, a: float) -> dict:  # fmt: skip
    return {
        'bag': bag, 'variant': f'v{vi}', 'variant_index': vi, 'states': 10, 'duration_s': 30.0,
        'interventions': interventions, 'stops': stops, 'stopped_s': stopped_s, 'min_human_separation_m': sep,
        'below_protective_s': below_s, 'max_velocity_ratio': v, 'max_acceleration_ratio': a, 'violations': 0,
        'command_sha256': f'h{bag}{vi}',
    }  # fmt: skip


def _rows() -> tuple[list[dict], dict]:
    rows = [
        _row('a', 0, 5, 1, 0.5, 0.4, 0.1, 0.9, 0.8),
        _row('b', 0, 1, 2, 1.0, None, 0.0, 1.0, 0.5),
        _row('a', 1, 12, 0, 0.0, 0.6, 0.0, 0.7, 0.6),
        {'bag': 'bad', 'variant': 'v1', 'variant_index': 1, 'error': 'bag not found: bad'},
    ]
    samples = {
        (0, 'a'): {'policy_us': np.array([1.0, 2.0, 3.0]), 'safety_us': np.array([10.0])},
        (0, 'b'): {'policy_us': np.array([4.0]), 'safety_us': np.array([20.0])},
        (1, 'a'): {'policy_us': np.array([5.0]), 'safety_us': np.array([30.0])},
    }
    return rows, samples


def test_aggregate_and_diff_against_the_first_variant() -> None:
    rows, samples = _rows()
    variants = [{'index': 0, 'name': 'v0'}, {'index': 1, 'name': 'v1'}]
    aggs = results.aggregate(variants, rows, samples)
    v0, v1 = aggs
    assert (v0['bags'], v0['errors'], v1['bags'], v1['errors']) == (2, 0, 1, 1)
    assert v0['interventions_per_min'] == pytest.approx(6.0)  # 6 in one minute of bags
    assert v0['stops'] == 3 and v0['stopped_s'] == pytest.approx(1.5)
    assert v0['min_human_separation_m'] == pytest.approx(0.4)  # None (no human) ignored
    assert v0['max_velocity_ratio'] == 1.0 and v0['violations'] == 0
    assert v0['policy_us']['p50'] == 2.0 and v0['policy_us']['p99'] == 4.0  # nearest rank, pooled
    assert v1['interventions_per_min'] == pytest.approx(24.0)
    d = v1['diff_vs_baseline']
    assert d['interventions_per_min']['delta'] == pytest.approx(18.0)
    assert d['interventions_per_min']['ratio'] == pytest.approx(4.0)
    assert d['stops']['delta'] == -3.0 and d['stops']['ratio'] == 0.0
    assert v0['diff_vs_baseline']['stops']['delta'] == 0.0
    doc = results.document(rows, aggs, {}, True, {})
    assert doc['engine'] == 'ray' and doc['summary']['error_rows'] == 1 and doc['summary']['violations'] == 0


def test_report_files(tmp_path: Path) -> None:
    rows, samples = _rows()
    aggs = results.aggregate([{'index': 0, 'name': 'v0'}, {'index': 1, 'name': 'v1'}], rows, samples)
    doc = results.document(rows, aggs, {'speedup': 1.8}, True, {})
    paths = report.write_all(doc, tmp_path / 'out', tmp_path / 'copy.json')
    data = json.loads(paths['json'].read_text())
    assert set(data) >= {'engine', 'rows', 'variants', 'scaling'} and data['plots']
    assert json.loads((tmp_path / 'copy.json').read_text())['rows'] == data['rows']
    for key in results.METRICS:  # one figure per metric across the variants
        assert (tmp_path / 'out' / report.plot_name(key)).is_file(), key
    md = (tmp_path / 'out' / 'fleet.md').read_text()
    assert '**error**: bag not found: bad' in md and 'speedup: 1.8' in md
    assert 'data:image/png;base64,' in (tmp_path / 'out' / 'fleet.html').read_text()


def test_one_task_in_process_on_the_recorded_bag(tmp_path: Path) -> None:
    """The task replays the recorded run through the real nodes: states, metrics and a hash; a
    bad bag is a row with its error."""
    v = build_variants([], ['safety.ssm.reaction_time_s=0.1,0.3'])
    try:
        spec = {'bag': str(RECORDED), 'variant': v[0].to_dict(), 'config': None, 'max_messages': 600}
        row = run_task(spec)
        again = run_task(spec)
        bad = run_task({'bag': str(tmp_path / 'none'), 'variant': v[1].to_dict(), 'config': None})
    finally:
        close_cached()
    assert 'error' not in row, row.get('error')
    assert row['states'] == 600 and row['complete'] and row['backend'] == 'eager'
    assert row['violations'] == 0 and row['missing_commands'] == 0
    assert 0.0 <= row['max_velocity_ratio'] <= 1.0 + 1e-6
    assert row['stops'] >= 0 and row['stopped_s'] >= 0.0 and row['below_protective_s'] >= 0.0
    assert row['min_human_separation_m'] is not None  # the recording has the simulated person
    assert len(row['command_sha256']) == 64 and again['command_sha256'] == row['command_sha256']
    assert row['policy_us']['p50'] > 0 and row['safety_us']['p99'] >= row['safety_us']['p50']
    assert set(row['_samples']) == {'policy_us', 'safety_us'}
    assert 'bag not found' in bad['error'] and bad['variant_index'] == 1


def test_fleet_cli_bad_input_and_install_hint(tmp_path: Path) -> None:
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
        'from rt_safe_rl.cli import main\n'
        f"sys.exit(main(['fleet', 'replay', {str(RECORDED)!r}, '--out', {str(tmp_path)!r}]))\n"
    )
    p = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "pip install 'rt_safe_rl[fleet]'" in p.stderr
    from rt_safe_rl.cli import main

    assert main(['fleet', 'replay', str(RECORDED), '--grid', 'k=']) == 2
    assert main(['fleet', 'replay', str(RECORDED), '--workers', '0']) == 2
    assert main(['fleet', 'nope']) == 2
