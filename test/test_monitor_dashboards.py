"""Grafana dashboards: valid, in sync with their generator, and every query names an exported metric."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rt_safe_rl.core.monitoring import STAGES, MonitorConfig, MonitorCore, SystemSampler
from rt_safe_rl.dashboards import generate
from rt_safe_rl.nodes.prometheus_exporter import MetricsSnapshot, PrometheusExporter, exposed_names

DASH_DIR = Path(generate.__file__).resolve().parent
FILES = sorted(DASH_DIR.glob('*.json'))
METRIC_RE = re.compile(r'\b(rt_[a-zA-Z0-9_]+)')
STAGE_RE = re.compile(r'stage="([^"]+)"')


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    return list(dash['panels'])


def _exprs(dash: dict[str, Any]) -> list[str]:
    return [t['expr'] for p in _panels(dash) for t in p['targets']]


@pytest.fixture(scope='module')
def scraped_names() -> set[str]:
    """Sample names that a fully populated exporter really renders (not just what it declares)."""
    core = MonitorCore(MonitorConfig(), baseline={s: {'p50': 1e-4, 'p99': 2e-4} for s in STAGES})
    t0 = 10**12
    for s in STAGES:
        t = t0 + np.arange(1, 101, dtype=np.float64) * 1e6
        core.ingest_stage(s, np.stack([t, np.full(100, 5e4)], axis=1))
    core.ingest_counters(
        {'faults': 1, 'safety_interventions': 2, 'deadline_misses': 3, 'policy_steps': 4},
        {'human_distance_m': 1.0},
    )
    sampler = SystemSampler()
    sampler.sample(1.0)
    end = time.thread_time() + 0.05  # busy enough for a per-thread CPU reading (10 ms ticks)
    while time.thread_time() < end:
        pass
    core.ingest_system(sampler.sample(2.0))
    core.evaluate(t0 + 101_000_000)
    ex = PrometheusExporter()
    ex.publish(MetricsSnapshot.from_core(core, dropped={'e2e': 0}, monitor_cpu_s=0.1))
    return {s.name for fam in text_string_to_metric_families(ex.render().decode()) for s in fam.samples}


def test_four_dashboards_shipped_and_in_sync_with_generator() -> None:
    assert {f.name for f in FILES} == set(generate.DASHBOARDS)
    for f in FILES:
        assert f.read_text() == generate.render(f.name), (
            f'{f.name} is stale: run python -m rt_safe_rl.dashboards.generate'
        )


@pytest.mark.parametrize('path', FILES, ids=[f.name for f in FILES])
def test_dashboard_structure(path: Path) -> None:
    dash = json.loads(path.read_text())
    assert dash['uid'] and dash['title'] and dash['panels']
    ids = [p['id'] for p in _panels(dash)]
    assert len(ids) == len(set(ids))
    variables = {v['name'] for v in dash['templating']['list']}
    assert {'datasource', 'job'} <= variables
    for p in _panels(dash):
        g = p['gridPos']
        assert 0 <= g['x'] and g['x'] + g['w'] <= 24 and g['h'] > 0, p['title']
        assert p['datasource']['uid'] == '${datasource}'
        assert p['targets'], f'panel {p["title"]!r} has no query'
        refs = [t['refId'] for t in p['targets']]
        assert len(refs) == len(set(refs))


@pytest.mark.parametrize('path', FILES, ids=[f.name for f in FILES])
def test_every_panel_query_names_an_exported_metric(path: Path, scraped_names: set[str]) -> None:
    dash = json.loads(path.read_text())
    declared = exposed_names()
    for p in _panels(dash):
        for t in p['targets']:
            names = METRIC_RE.findall(t['expr'])
            assert names, f'{path.name}: panel {p["title"]!r} query names no rt_ metric: {t["expr"]}'
            for n in names:
                assert n in declared, f'{path.name}: {p["title"]!r} uses {n}, not exported'
                assert n in scraped_names, f'{path.name}: {p["title"]!r} uses {n}, never rendered on /metrics'
            for stage in STAGE_RE.findall(t['expr']):
                assert stage in STAGES, f'{path.name}: unknown stage {stage!r}'


def test_issue_metrics_are_on_the_dashboards() -> None:
    used = {n for f in FILES for e in _exprs(json.loads(f.read_text())) for n in METRIC_RE.findall(e)}
    for required in (
        'rt_execution_time_seconds_bucket',
        'rt_operations_total',
        'rt_errors_total',
        'rt_safety_violations_total',
        'rt_system_cpu_percent',
        'rt_system_memory_percent',
        'rt_deadline_misses_total',
        'rt_jitter_seconds',
        'rt_safety_interventions_total',
    ):
        assert required in used, required
