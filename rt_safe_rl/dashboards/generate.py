"""Generate the Grafana dashboards shipped in this folder (``python -m rt_safe_rl.dashboards.generate``).

Four dashboards built on the metrics of :mod:`rt_safe_rl.nodes.prometheus_exporter`:
``rt_safe_rl_overview.json`` (system overview), ``rt_safe_rl_latency.json`` (component-level
latency), ``rt_safe_rl_safety.json`` (safety) and ``rt_safe_rl_resources.json`` (resources).
Each has a ``datasource`` variable (any Prometheus data source) and a ``job`` filter, so they import
as they are (Grafana >= 9: Dashboards -> Import -> upload JSON). The JSON files are committed;
``test/test_monitor_dashboards.py`` checks they match this generator and that every query names an
exported metric. Not used at runtime.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DS = {'type': 'prometheus', 'uid': '${datasource}'}
SEL = 'job=~"$job"'
STAGES = ('e2e', 'period', 'inference', 'safety')


def _hq(q: float, stage: str) -> str:
    """histogram_quantile over 1 min of ``rt_execution_time_seconds`` for one stage."""
    bucket = f'rt_execution_time_seconds_bucket{{{SEL},stage="{stage}"}}'
    return f'histogram_quantile({q}, sum by (le) (rate({bucket}[1m])))'


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {'datasource': DS, 'expr': expr, 'legendFormat': legend, 'refId': ref}


class _Layout:
    """Places panels left to right on a 24-column grid."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1
        self.panels: list[dict[str, Any]] = []

    def add(
        self,
        kind: str,
        title: str,
        targets: list[tuple[str, str]],
        *,
        w: int = 12,
        h: int = 8,
        unit: str = 'short',
        description: str = '',
        extra: dict[str, Any] | None = None,
    ) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel: dict[str, Any] = {
            'id': self.next_id,
            'type': kind,
            'title': title,
            'description': description,
            'datasource': DS,
            'gridPos': {'h': h, 'w': w, 'x': self.x, 'y': self.y},
            'targets': [_target(e, lg, chr(ord('A') + i)) for i, (e, lg) in enumerate(targets)],
            'fieldConfig': {'defaults': {'unit': unit}, 'overrides': []},
            'options': {},
        }
        if extra:
            panel.update(extra)
        self.panels.append(panel)
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)


def _thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {'mode': 'absolute', 'steps': [{'color': c, 'value': v} for c, v in steps]}


def _status_mappings() -> list[dict[str, Any]]:
    return [
        {
            'type': 'value',
            'options': {
                '0': {'text': 'OK', 'color': 'green'},
                '1': {'text': 'WARN', 'color': 'yellow'},
                '2': {'text': 'ERROR', 'color': 'red'},
                '3': {'text': 'STALE', 'color': 'purple'},
            },
        }
    ]


def _dashboard(uid: str, title: str, layout: _Layout, description: str) -> dict[str, Any]:
    return {
        'uid': uid,
        'title': title,
        'description': description,
        'tags': ['rt_safe_rl', 'ros2', 'real-time'],
        'editable': True,
        'schemaVersion': 39,
        'version': 1,
        'refresh': '5s',
        'timezone': 'browser',
        'time': {'from': 'now-15m', 'to': 'now'},
        'graphTooltip': 1,
        'templating': {
            'list': [
                {
                    'name': 'datasource',
                    'label': 'Prometheus',
                    'type': 'datasource',
                    'query': 'prometheus',
                    'current': {},
                    'hide': 0,
                },
                {
                    'name': 'job',
                    'label': 'job',
                    'type': 'query',
                    'datasource': DS,
                    'query': {'query': 'label_values(rt_loop_rate_hz, job)', 'refId': 'job'},
                    'definition': 'label_values(rt_loop_rate_hz, job)',
                    'includeAll': True,
                    'multi': True,
                    'allValue': '.*',
                    'current': {},
                    'refresh': 2,
                    'hide': 0,
                },
            ]
        },
        'annotations': {'list': []},
        'links': [
            {
                'title': 'rt_safe_rl dashboards',
                'type': 'dashboards',
                'tags': ['rt_safe_rl'],
                'asDropdown': True,
            }
        ],
        'panels': layout.panels,
    }


def overview() -> dict[str, Any]:
    """System overview: rate, e2e latency, misses, interventions, alerts, component states."""
    lo = _Layout()
    _overview_stats(lo)
    _overview_trends(lo)
    return _dashboard(
        'rt-safe-rl-overview',
        'rt_safe_rl / Overview',
        lo,
        'Control loop at a glance: rate, e2e latency vs its budget, misses, safety, alerts.',
    )


def _overview_stats(lo: _Layout) -> None:
    """The overview's top row of stat panels: loop rate, e2e p99, misses, interventions,
    violations, active alerts."""
    stat = {'options': {'reduceOptions': {'calcs': ['lastNotNull']}, 'colorMode': 'background'}}
    lo.add(
        'stat',
        'Loop rate',
        [(f'rt_loop_rate_hz{{{SEL}}}', '{{instance}}')],
        w=4,
        h=4,
        unit='hertz',
        extra=stat,
    )
    lo.add(
        'stat',
        'e2e p99 (window)',
        [(f'rt_latency_seconds{{{SEL},stage="e2e",quantile="0.99"}}', '{{instance}}')],
        w=4,
        h=4,
        unit='s',
        extra={
            **stat,
            'fieldConfig': {
                'defaults': {
                    'unit': 's',
                    'thresholds': _thresholds(('green', None), ('yellow', 0.0008), ('red', 0.001)),
                },
                'overrides': [],
            },
        },
    )
    lo.add(
        'stat',
        'Deadline misses (5 min)',
        [(f'increase(rt_deadline_misses_total{{{SEL}}}[5m])', '{{instance}}')],
        w=4,
        h=4,
        extra=stat,
    )
    lo.add(
        'stat',
        'Safety interventions (/s)',
        [(f'rate(rt_safety_interventions_total{{{SEL}}}[1m])', '{{instance}}')],
        w=4,
        h=4,
        unit='ops',
        extra=stat,
    )
    lo.add(
        'stat',
        'Safety violations (5 min)',
        [(f'increase(rt_safety_violations_total{{{SEL}}}[5m])', '{{instance}}')],
        w=4,
        h=4,
        extra=stat,
    )
    lo.add('stat', 'Active alerts', [(f'sum(rt_alert_active{{{SEL}}})', 'alerts')], w=4, h=4, extra=stat)


def _overview_trends(lo: _Layout) -> None:
    """The overview's component-status timeline and its time series: e2e latency vs budget, loop
    rate, operations by stage, errors and misses."""
    lo.add(
        'state-timeline',
        'Component status (0 OK, 1 WARN, 2 ERROR, 3 STALE)',
        [(f'max by (component) (rt_component_status{{{SEL}}})', '{{component}}')],
        w=24,
        h=6,
        extra={
            'fieldConfig': {'defaults': {'mappings': _status_mappings(), 'unit': 'short'}, 'overrides': []}
        },
    )
    lo.add(
        'timeseries',
        'End-to-end latency (histogram quantiles, 1 min)',
        [
            (_hq(0.5, 'e2e'), 'p50'),
            (_hq(0.99, 'e2e'), 'p99'),
            (f'max(rt_latency_seconds{{{SEL},stage="e2e",quantile="1"}})', 'max (window)'),
            (f'max(rt_latency_budget_seconds{{{SEL},stage="e2e"}})', 'budget'),
        ],
        unit='s',
    )
    lo.add(
        'timeseries',
        'Loop rate',
        [
            (f'rt_loop_rate_hz{{{SEL}}}', 'measured {{instance}}'),
            (f'rt_expected_loop_rate_hz{{{SEL}}}', 'expected'),
        ],
        unit='hertz',
    )
    lo.add(
        'timeseries',
        'Operations per second by stage',
        [(f'sum by (stage) (rate(rt_operations_total{{{SEL}}}[1m]))', '{{stage}}')],
        unit='ops',
    )
    lo.add(
        'timeseries',
        'Errors and misses per second',
        [
            (f'sum by (kind) (rate(rt_errors_total{{{SEL}}}[1m]))', 'errors {{kind}}'),
            (f'rate(rt_deadline_misses_total{{{SEL}}}[1m])', 'deadline misses'),
        ],
        unit='ops',
    )


def latency() -> dict[str, Any]:
    """Component-level latency: per-stage quantiles, jitter, heatmap, budgets, regression ratio."""
    lo = _Layout()
    for stage in STAGES:
        lo.add(
            'timeseries',
            f'{stage}: p50 / p99 / max',
            [
                (_hq(0.5, stage), 'p50 (histogram)'),
                (_hq(0.99, stage), 'p99 (histogram)'),
                (f'max by (quantile) (rt_latency_seconds{{{SEL},stage="{stage}"}})', 'window q={{quantile}}'),
                (f'max(rt_latency_budget_seconds{{{SEL},stage="{stage}"}})', 'budget'),
            ],
            unit='s',
            description=f'Stage "{stage}" duration; window quantiles are exact over the window.',
        )
    heat = f'sum by (le) (increase(rt_execution_time_seconds_bucket{{{SEL},stage="e2e"}}[$__rate_interval]))'
    lo.add(
        'heatmap',
        'e2e latency distribution',
        [(heat, '{{le}}')],
        unit='s',
        extra={
            'options': {'calculate': False, 'yAxis': {'unit': 's'}},
            'targets': [{**_target(heat, '{{le}}', 'A'), 'format': 'heatmap'}],
        },
    )
    lo.add(
        'timeseries',
        'Jitter p99 by stage',
        [(f'max by (stage) (rt_jitter_seconds{{{SEL}}})', '{{stage}}')],
        unit='s',
        description='p99 of |interval between samples - median interval| over the window.',
    )
    lo.add(
        'timeseries',
        'Mean duration by stage (1 min)',
        [
            (
                f'sum by (stage) (rate(rt_execution_time_seconds_sum{{{SEL}}}[1m])) / '
                f'sum by (stage) (rate(rt_execution_time_seconds_count{{{SEL}}}[1m]))',
                '{{stage}}',
            )
        ],
        unit='s',
    )
    lo.add(
        'timeseries',
        'Live / benchmark baseline',
        [(f'rt_regression_ratio{{{SEL}}}', '{{stage}} {{quantile}}')],
        unit='percentunit',
        description='> 1 + monitor.regression.tolerance_fraction raises a regression alert.',
    )
    lo.add('timeseries', 'Stage sample rate', [(f'rt_stage_rate_hz{{{SEL}}}', '{{stage}}')], unit='hertz')
    return _dashboard(
        'rt-safe-rl-latency',
        'rt_safe_rl / Component latency',
        lo,
        'Per-stage latency (inference, safety, e2e, period), jitter, regression vs baseline.',
    )


def safety() -> dict[str, Any]:
    """Safety: interventions, violations, human distance, alerts."""
    lo = _Layout()
    lo.add(
        'timeseries',
        'Safety interventions per second',
        [(f'rate(rt_safety_interventions_total{{{SEL}}}[1m])', '{{instance}}')],
        unit='ops',
    )
    lo.add(
        'timeseries',
        'Safety violations (faults) per minute',
        [(f'increase(rt_safety_violations_total{{{SEL}}}[1m])', '{{instance}}')],
    )
    lo.add(
        'timeseries',
        'Human distance',
        [(f'rt_human_distance_meters{{{SEL}}}', '{{instance}}')],
        unit='m',
        extra={
            'fieldConfig': {
                'defaults': {
                    'unit': 'm',
                    'thresholds': _thresholds(('red', None), ('yellow', 0.5), ('green', 1.0)),
                },
                'overrides': [],
            }
        },
    )
    lo.add(
        'timeseries',
        'Safety filter duration',
        [
            (f'max by (quantile) (rt_latency_seconds{{{SEL},stage="safety"}})', 'q={{quantile}}'),
            (f'max(rt_latency_budget_seconds{{{SEL},stage="safety"}})', 'budget'),
        ],
        unit='s',
    )
    lo.add(
        'timeseries',
        'Errors by kind (per minute)',
        [(f'sum by (kind) (increase(rt_errors_total{{{SEL}}}[1m]))', '{{kind}}')],
    )
    lo.add(
        'timeseries',
        'Deadline misses per minute',
        [(f'increase(rt_deadline_misses_total{{{SEL}}}[1m])', '{{instance}}')],
    )
    lo.add(
        'table',
        'Active alerts',
        [(f'rt_alert_active{{{SEL}}} == 1', '{{alert}}')],
        w=12,
        h=8,
        extra={
            'targets': [
                {
                    **_target(f'rt_alert_active{{{SEL}}} == 1', '{{alert}}', 'A'),
                    'format': 'table',
                    'instant': True,
                }
            ]
        },
    )
    lo.add(
        'timeseries',
        'Alerts raised (per 10 min)',
        [(f'sum by (alert) (increase(rt_alerts_raised_total{{{SEL}}}[10m])) > 0', '{{alert}}')],
    )
    return _dashboard(
        'rt-safe-rl-safety',
        'rt_safe_rl / Safety',
        lo,
        'How often the safety filter intervenes or stops, the human distance, alerts.',
    )


def resources() -> dict[str, Any]:
    """Resources: system/process CPU and memory, threads, context switches, monitor overhead."""
    lo = _Layout()
    lo.add(
        'timeseries',
        'System CPU and memory',
        [(f'rt_system_cpu_percent{{{SEL}}}', 'cpu'), (f'rt_system_memory_percent{{{SEL}}}', 'memory')],
        unit='percent',
    )
    lo.add(
        'timeseries',
        'Process CPU (% of one core)',
        [(f'rt_process_cpu_percent{{{SEL}}}', '{{instance}}')],
        unit='percent',
    )
    lo.add(
        'timeseries',
        'CPU per thread (% of one core)',
        [(f'topk(10, rt_thread_cpu_percent{{{SEL}}})', '{{thread}}')],
        unit='percent',
    )
    lo.add(
        'timeseries',
        'Resident memory',
        [(f'rt_process_resident_memory_bytes{{{SEL}}}', '{{instance}}')],
        unit='bytes',
    )
    lo.add(
        'timeseries',
        'Context switches per second',
        [(f'rate(rt_process_context_switches_total{{{SEL}}}[1m])', '{{kind}}')],
        unit='ops',
    )
    lo.add(
        'timeseries',
        'Monitor overhead (% of one core)',
        [(f'100 * rate(rt_monitor_cpu_seconds_total{{{SEL}}}[1m])', 'monitor callbacks')],
        unit='percent',
        description='CPU time of the monitor node callbacks; target <= 2 % at 1 kHz.',
    )
    lo.add(
        'timeseries',
        'Metrics samples dropped (ring overflow)',
        [(f'increase(rt_metrics_dropped_total{{{SEL}}}[5m])', '{{stage}}')],
    )
    return _dashboard(
        'rt-safe-rl-resources',
        'rt_safe_rl / Resources',
        lo,
        'CPU, memory, threads and context switches of the RT process and the machine.',
    )


DASHBOARDS = {
    'rt_safe_rl_overview.json': overview,
    'rt_safe_rl_latency.json': latency,
    'rt_safe_rl_safety.json': safety,
    'rt_safe_rl_resources.json': resources,
}


def render(name: str) -> str:
    """The JSON text of dashboard file `name` (stable formatting, trailing newline)."""
    return json.dumps(DASHBOARDS[name](), indent=2, sort_keys=False) + '\n'


def main(argv: list[str] | None = None) -> int:
    """Write the dashboards into ``argv[0]`` (default: this folder)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        (out / name).write_text(render(name))
        print(out / name)
    return 0


if __name__ == '__main__':
    sys.exit(main())
