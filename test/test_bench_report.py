"""Replay reports: files written, self-contained HTML, standard JSON, baseline regression check."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rt_safe_rl.bench import report
from rt_safe_rl.core import stats


def _report(e2e_p99: float = 100.0, miss_rate: float = 0.0) -> dict[str, Any]:
    return {
        'metadata': report.collect_metadata({'benchmark': {'rate': 'max'}}, {'path': 'x', 'sha256': 'ab'}),
        'complete': True,
        'messages': 1000,
        'throughput_msgs_per_s': 12345.0,
        'stages': {
            'e2e_us': {
                'count': 1000,
                'p50': 50.0,
                'p90': 70.0,
                'p99': e2e_p99,
                'p999': 150.0,
                'max': 300.0,
                'mean': 55.0,
            },
            'inference_us': {'count': 1000, 'p50': 10.0, 'p99': math.nan},
        },
        'misses': int(miss_rate * 1000),
        'miss_rate': miss_rate,
        'deadline_us': 1000.0,
        'determinism': {'identical': True, 'command_sha256': 'f' * 64, 'runs': ['f' * 64] * 2},
    }


def test_metadata_has_machine_and_versions() -> None:
    """Metadata names the code, machine, RT capabilities and library versions."""
    md = report.collect_metadata(argv=['bench', 'replay'])
    for key in (
        'git_sha',
        'host',
        'cpu',
        'kernel',
        'rt',
        'versions',
        'config',
        'bag',
        'model',
        'started_utc',
    ):
        assert key in md
    assert md['versions']['python'] and md['versions']['numpy']
    assert 'realtime_kernel' in md['rt'] and 'euid_root' in md['rt']


def test_write_all(tmp_path: Path) -> None:
    """json/md/html/png all written; JSON is standard (NaN -> null); HTML embeds its plots."""
    rep = _report()
    rng = np.random.default_rng(0)
    samples = {'e2e_us': rng.lognormal(4, 0.5, 2000), 'inference_us': rng.lognormal(3, 0.5, 2000)}
    paths = report.write_all(rep, tmp_path / 'out', samples, t_s=np.arange(2000) / 1000.0, bins=30)
    data = json.loads((tmp_path / 'out' / 'report.json').read_text())
    assert data['stages']['inference_us']['p99'] is None
    assert set(data['plots']) == {'latency_histogram.png', 'latency_cdf.png', 'latency_over_time.png'}
    for name in data['plots']:
        assert (tmp_path / 'out' / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    page = paths['html'].read_text()
    assert page.count('data:image/png;base64,') == 3
    assert 'src="http' not in page and '<link' not in page  # self-contained
    md = paths['md'].read_text()
    assert '| e2e_us | 1000 | 50.0 | 70.0 | 100.0 | 150.0 | 300.0 | 55.0 |' in md


def test_incomplete_is_marked(tmp_path: Path) -> None:
    """An interrupted run says so in every format."""
    rep = _report()
    rep['complete'] = False
    paths = report.write_all(rep, tmp_path, {})
    assert json.loads(paths['json'].read_text())['complete'] is False
    assert 'INCOMPLETE' in paths['md'].read_text() and 'INCOMPLETE' in paths['html'].read_text()


@pytest.mark.parametrize(
    ('p99', 'miss_rate', 'passed'),
    [
        (105.0, 0.0, True),  # +5 % within 10 %
        (111.0, 0.0, False),  # +11 % e2e p99
        (90.0, 0.0001, True),  # one miss in 10k allowed over a zero baseline
        (90.0, 0.002, False),  # miss rate up
    ],
)
def test_compare(p99: float, miss_rate: float, passed: bool) -> None:
    """e2e p99 and miss rate gate at the tolerance; other rows are informative."""
    comp = report.compare(_report(p99, miss_rate), _report(), tolerance=0.10, baseline_path='b.json')
    assert comp['passed'] is passed
    gated = {r['metric']: r['ok'] for r in comp['rows'] if r['gate']}
    assert set(gated) == {'stages.e2e_us.p99', 'miss_rate'}
    table = report.comparison_table(comp)
    assert 'stages.e2e_us.p99' in table and ('WORSE' in table) is (not passed)


def test_load_report_errors(tmp_path: Path) -> None:
    """Missing, non-JSON and non-report baselines are clear ReportErrors."""
    with pytest.raises(report.ReportError, match='not found'):
        report.load_report(tmp_path / 'nope.json')
    (tmp_path / 'bad.json').write_text('{')
    with pytest.raises(report.ReportError, match='not valid JSON'):
        report.load_report(tmp_path / 'bad.json')
    (tmp_path / 'other.json').write_text('{"a": 1}')
    with pytest.raises(report.ReportError, match='not a replay report'):
        report.load_report(tmp_path / 'other.json')
    report.write_json(_report(), tmp_path / 'd' / 'report.json')
    assert report.load_report(tmp_path / 'd')['messages'] == 1000


def test_summary_feeds_report_tables() -> None:
    """stats.summarize_ns output renders as a stage row."""
    s = stats.summarize_ns(np.array([1000, 2000, 3000]))
    rows = report.stage_rows({'e2e_us': s})
    assert rows[0][:3] == ['e2e_us', '3', '2.0']
