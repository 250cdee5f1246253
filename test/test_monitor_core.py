"""Monitoring core (no ROS): config validation, windows, hysteresis, anomaly/drift/regression, exporter."""

from __future__ import annotations

import json
import math
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rt_safe_rl.core.configutil import from_mapping
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.monitoring import (
    HISTOGRAM_BUCKETS_S,
    NS_PER_S,
    AlertConfig,
    AlertManager,
    Level,
    MonitorConfig,
    MonitorCore,
    StageWindow,
    SystemSampler,
    TrendConfig,
    apply_env_overrides,
    load_benchmark_baseline,
)
from rt_safe_rl.nodes.prometheus_exporter import MetricsEndpointError, MetricsSnapshot, PrometheusExporter

T0 = 1_000 * NS_PER_S  # an arbitrary monotonic origin


def _samples(t_start_ns: int, n: int, period_ns: int, dur_ns: float | np.ndarray) -> np.ndarray:
    t = t_start_ns + np.arange(1, n + 1, dtype=np.float64) * period_ns
    d = np.broadcast_to(np.asarray(dur_ns, dtype=np.float64), (n,))
    return np.stack([t, d], axis=1)


def _burn_cpu(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _status(statuses: list, name: str):  # type: ignore[no-untyped-def]
    return next(s for s in statuses if s.name == name)


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ('section', 'reason'),
    [
        ({'thresholds': {'miss_rate_warn': 0.5, 'miss_rate_error': 0.01}}, 'miss_rate_warn'),
        ({'thresholds': {'e2e_budget_s': -1.0}}, 'e2e_budget_s'),
        ({'thresholds': {'rate_warn_fraction': 0.5, 'rate_error_fraction': 0.9}}, 'rate_error_fraction'),
        ({'thresholds': {'p99_error_factor': 0.5}}, 'p99_error_factor'),
        ({'thresholds': {'cpu_warn_percent': 150.0}}, 'cpu_warn_percent'),
        ({'alerts': {'raise_after': 0}}, 'raise_after'),
        ({'drain_period_s': 2.0, 'diagnostics_period_s': 1.0}, 'drain_period_s'),
        ({'metrics': {'port': 70000}}, 'metrics.port'),
        ({'trend': {'recent_window_s': 900.0}}, 'recent_window_s'),
        ({'thresholds': {'no_such_key': 1}}, 'no_such_key'),
    ],
)
def test_invalid_config_rejected_with_reason(section: dict, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        from_mapping(MonitorConfig, section, 'test: monitor')


def test_default_config_valid_and_env_overrides() -> None:
    cfg = from_mapping(MonitorConfig, {}, 'x')
    assert cfg.metrics.port == 9090 and cfg.metrics.address == '127.0.0.1' and cfg.metrics.enabled
    assert apply_env_overrides(cfg, {}) is cfg
    c2 = apply_env_overrides(cfg, {'RT_ENABLE_PROMETHEUS': 'off', 'RT_METRICS_PORT': '9191'})
    assert not c2.metrics.enabled and c2.metrics.port == 9191 and cfg.metrics.port == 9090
    assert apply_env_overrides(cfg, {'RT_ENABLE_PROMETHEUS': 'TRUE'}).metrics.enabled
    with pytest.raises(ConfigError, match='RT_ENABLE_PROMETHEUS'):
        apply_env_overrides(cfg, {'RT_ENABLE_PROMETHEUS': 'maybe'})
    with pytest.raises(ConfigError, match='RT_METRICS_PORT'):
        apply_env_overrides(cfg, {'RT_METRICS_PORT': 'http'})
    with pytest.raises(ConfigError, match=r'0\.\.65535'):
        apply_env_overrides(cfg, {'RT_METRICS_PORT': '99999'})


# ------------------------------------------------------------------------------------------ windows


def test_stage_window_percentiles_histogram_and_ring() -> None:
    rng = np.random.default_rng(1)
    w = StageWindow('e2e', capacity=1000)
    dur = rng.uniform(20e3, 2e6, size=2500)  # 20 us .. 2 ms
    s = _samples(T0, 2500, 1_000_000, dur)
    for chunk in np.array_split(s, 7):
        w.extend(chunk)
    assert w.total == 2500
    assert np.array_equal(w.samples(), s[-1000:])  # ring keeps the newest, in order
    now = int(s[-1, 0])
    summ = w.summary(now, window_s=0.5)  # last 500 samples (t_end >= now - 0.5 s)
    last = dur[-501:] / 1e9
    assert summ.n_samples == 501
    srt = np.sort(last)
    assert summ.p50_s == srt[math.ceil(0.5 * 501) - 1]  # nearest rank, as core/stats
    assert summ.p99_s == srt[math.ceil(0.99 * 501) - 1]
    assert summ.max_s == srt[-1]
    assert summ.rate_hz == pytest.approx(1002.0, rel=0.01)
    assert summ.jitter_p99_s == pytest.approx(0.0, abs=1e-9)  # perfectly periodic
    # Irregular intervals: jitter = nearest-rank p99 of |dt - median dt|.
    w2 = StageWindow('period', capacity=1000)
    t = T0 + np.cumsum(rng.integers(800_000, 1_300_000, size=400)).astype(np.float64)
    w2.extend(np.stack([t, np.full(400, 1e6)], axis=1))
    dt = np.diff(t)
    med = np.sort(dt)[math.ceil(0.5 * dt.size) - 1]
    dev = np.sort(np.abs(dt - med))
    expected = dev[math.ceil(0.99 * dev.size) - 1] / 1e9
    assert w2.summary(int(t[-1]), 10.0).jitter_p99_s == pytest.approx(expected)
    # Histogram covers every sample ever seen, cumulative, +Inf = total.
    buckets = w.cumulative_buckets()
    assert buckets[-1] == ('+Inf', 2500)
    for (le, cum), bound in zip(buckets[:-1], HISTOGRAM_BUCKETS_S, strict=True):
        assert float(le) == bound
        assert cum == int(np.sum(dur <= bound * 1e9))
    assert w.sum_s == pytest.approx(dur.sum() / 1e9)


# ------------------------------------------------------------------------------------------ alerts


def test_alert_hysteresis_prevents_flapping_and_clears() -> None:
    am = AlertManager(AlertConfig(raise_after=2, clear_after=3, min_log_interval_s=0.0))
    t = T0
    for i in range(20):  # alternating condition: never two in a row -> never raised
        a = am.update('x', 'c', Level.WARN if i % 2 else Level.OK, 'm', t + i)
    assert not a.active and a.raised_total == 0 and am.drain_events() == []
    am.update('x', 'c', Level.OK, '', t)
    am.update('x', 'c', Level.WARN, 'slow', t)
    a = am.update('x', 'c', Level.ERROR, 'slower', t + 1)
    assert a.active and a.level == Level.ERROR and a.raised_total == 1
    ev = am.drain_events()
    assert [(e.kind, e.level) for e in ev] == [('raised', Level.ERROR)]
    am.update('x', 'c', Level.OK, '', t + 2)
    am.update('x', 'c', Level.OK, '', t + 3)
    assert am.update('x', 'c', Level.WARN, 'again', t + 4).active  # 2 OKs < clear_after: still active
    for k in range(3):
        a = am.update('x', 'c', Level.OK, '', t + 5 + k)
    assert not a.active and [e.kind for e in am.drain_events()] == ['cleared']


def test_alert_logging_is_rate_limited() -> None:
    am = AlertManager(AlertConfig(raise_after=1, clear_after=1, min_log_interval_s=10.0))
    t = T0
    am.update('x', 'c', Level.WARN, 'a', t)
    am.update('x', 'c', Level.OK, '', t + NS_PER_S)
    am.update('x', 'c', Level.WARN, 'b', t + 2 * NS_PER_S)  # within 10 s: not logged
    am.update('x', 'c', Level.OK, '', t + 3 * NS_PER_S)  # its clear is not logged either
    ev = am.drain_events()
    assert [e.kind for e in ev] == ['raised', 'cleared']
    a = am.update('x', 'c', Level.WARN, 'c', t + 12 * NS_PER_S)
    ev = am.drain_events()
    assert a.raised_total == 3
    assert [(e.kind, e.suppressed) for e in ev] == [('raised', 1)]


# ------------------------------------------------------------------------------------------ core


def _core(**overrides: object) -> MonitorCore:
    data: dict = {
        'window_s': 1.0,
        'diagnostics_period_s': 0.1,
        'drain_period_s': 0.1,
        'stale_timeout_s': 0.5,
        'alerts': {'raise_after': 2, 'clear_after': 2, 'min_log_interval_s': 0.0},
        'thresholds': {'expected_rate_hz': 1000.0},
    }
    for k, v in overrides.items():
        if isinstance(v, dict):
            data.setdefault(k, {}).update(v)
        else:
            data[k] = v
    return MonitorCore(from_mapping(MonitorConfig, data, 'test'))


def _run(
    core: MonitorCore,
    t_ns: int,
    seconds: float,
    dur_ns: float,
    period_ns: int = 1_000_000,
    counters: dict | None = None,
) -> tuple[int, list]:
    """Feed `seconds` of 'e2e' samples in 0.1 s steps, evaluating after each; returns (t, statuses)."""
    statuses: list = []
    steps = round(seconds / 0.1)
    for _ in range(steps):
        n = 100_000_000 // period_ns
        core.ingest_stage('e2e', _samples(t_ns, n, period_ns, dur_ns))
        t_ns += 100_000_000
        core.ingest_counters(counters or {})
        statuses = core.evaluate(t_ns)
    return t_ns, statuses


def test_budget_alert_raises_and_clears_with_hysteresis() -> None:
    core = _core()
    t, st = _run(core, T0, 1.0, 100e3)
    assert _status(st, 'control_loop').level == Level.OK
    t, st = _run(core, t, 0.1, 1.5e6)  # one slow step: p99 over budget, but not yet raised
    assert _status(st, 'control_loop').level == Level.OK
    t, st = _run(core, t, 0.1, 1.5e6)
    cl = _status(st, 'control_loop')
    assert cl.level == Level.WARN and 'e2e p99' in cl.message
    t, st = _run(core, t, 0.3, 2.5e6)  # > p99_error_factor x budget
    assert _status(st, 'control_loop').level == Level.ERROR
    t, st = _run(core, t, 3.0, 100e3)  # recovered: the 1 s window empties of slow samples, then clears
    assert _status(st, 'control_loop').level == Level.OK
    assert core.alerts.alerts['e2e.p99_budget'].raised_total == 1


def test_stale_component_and_no_data() -> None:
    core = _core()
    t, st = _run(core, T0, 0.5, 100e3)
    assert _status(st, 'control_loop').level == Level.OK
    assert _status(st, 'policy').level == Level.STALE and 'no data' in _status(st, 'policy').message
    t += int(0.6 * NS_PER_S)  # loop stops publishing: STALE at once after the timeout, not silence
    st = core.evaluate(t)
    cl = _status(st, 'control_loop')
    assert cl.level == Level.STALE and 'no samples for' in cl.message


def test_rate_drop_and_miss_rate_and_error_rate() -> None:
    core = _core()
    t, st = _run(core, T0, 1.5, 100e3, period_ns=1_500_000)  # 667 Hz < 0.8 x 1000
    cl = _status(st, 'control_loop')
    assert cl.level == Level.ERROR and 'rate' in cl.message
    core = _core()
    t, st = _run(core, T0, 1.0, 100e3, counters={'deadline_misses': 0, 'faults': 0})
    assert _status(st, 'control_loop').level == Level.OK
    t, st = _run(core, t, 0.3, 100e3, counters={'deadline_misses': 50, 'faults': 0})  # 50 / ~1000 cycles
    cl = _status(st, 'control_loop')
    assert cl.level == Level.ERROR and 'miss rate' in cl.message
    core.ingest_stage('safety', _samples(t - 100_000_000, 100, 1_000_000, 20e3))
    t, st = _run(core, t, 0.2, 100e3, counters={'deadline_misses': 50, 'faults': 1})
    sf = _status(st, 'safety_filter')
    assert sf.level >= Level.WARN and 'error rate' in sf.message


def test_drift_and_anomaly_against_rolling_baseline() -> None:
    cfg = from_mapping(
        MonitorConfig,
        {
            'diagnostics_period_s': 1.0,
            'drain_period_s': 1.0,
            'window_s': 1.0,
            'alerts': {'raise_after': 2, 'clear_after': 2, 'min_log_interval_s': 0.0},
            'trend': {'baseline_window_s': 300.0, 'recent_window_s': 60.0, 'min_history_s': 120.0},
            'thresholds': {'e2e_budget_s': 0.0, 'expected_rate_hz': 1000.0},
        },
        'test',
    )
    rng = np.random.default_rng(3)
    core = MonitorCore(cfg)
    t = T0
    drift_seen_at = None
    for sec in range(300):
        base_us = 100.0 if sec < 200 else 100.0 + (sec - 200) * 1.0  # slow upward creep after 200 s
        d = rng.normal(base_us, 2.0, size=1000) * 1e3
        core.ingest_stage('e2e', _samples(t, 1000, 1_000_000, d))
        t += NS_PER_S
        core.evaluate(t)
        if drift_seen_at is None and core.alerts.alerts['e2e.p99_drift'].active:
            drift_seen_at = sec
        if sec < 200:
            assert not core.alerts.alerts['e2e.p99_drift'].active, sec
    assert drift_seen_at is not None and drift_seen_at > 200
    # A sudden spike on a steady baseline is an anomaly (and not yet a drift).
    core = MonitorCore(cfg)
    t = T0
    for _sec in range(150):
        core.ingest_stage('e2e', _samples(t, 1000, 1_000_000, rng.normal(100.0, 2.0, size=1000) * 1e3))
        t += NS_PER_S
        core.evaluate(t)
    assert not core.alerts.alerts['e2e.p99_anomaly'].active
    for _sec in range(2):
        core.ingest_stage('e2e', _samples(t, 1000, 1_000_000, rng.normal(400.0, 2.0, size=1000) * 1e3))
        t += NS_PER_S
        st = core.evaluate(t)
    assert core.alerts.alerts['e2e.p99_anomaly'].active
    assert _status(st, 'control_loop').level == Level.WARN


def test_trend_config_defaults_are_minutes() -> None:
    tc = TrendConfig()
    assert tc.recent_window_s >= 60 and tc.baseline_window_s > tc.recent_window_s


def test_regression_baseline_formats_and_detection(tmp_path: Path) -> None:
    replay = tmp_path / 'report.json'  # `rt-safe-rl bench replay` layout: stage_<unit>: {p50, p99}
    stages = {'e2e_us': {'count': 5, 'p50': 100.0, 'p99': 200.0}, 'inference_us': {'p50': 10.0, 'p99': 20.0}}
    replay.write_text(json.dumps({'metadata': {}, 'stages': stages}))
    base = load_benchmark_baseline(replay)
    assert base['e2e'] == pytest.approx({'p50': 100e-6, 'p99': 200e-6})
    assert base['inference']['p99'] == pytest.approx(20e-6)
    suffixed = tmp_path / 'mon.json'
    suffixed.write_text(json.dumps({'on': {'stages': {'e2e': {'p50_ms': 0.1, 'p99_ns': 200000}}}}))
    assert load_benchmark_baseline(suffixed)['e2e'] == pytest.approx({'p50': 100e-6, 'p99': 200e-6})
    for bad, msg in (('{"x": 1}', 'no stage percentiles'), ('not json', 'not valid JSON')):
        p = tmp_path / 'bad.json'
        p.write_text(bad)
        with pytest.raises(ConfigError, match=msg):
            load_benchmark_baseline(p)
    with pytest.raises(ConfigError, match='not found'):
        load_benchmark_baseline(tmp_path / 'missing.json')

    cfg = from_mapping(
        MonitorConfig,
        {
            'window_s': 1.0,
            'diagnostics_period_s': 0.1,
            'drain_period_s': 0.1,
            'alerts': {'raise_after': 2, 'min_log_interval_s': 0.0},
            'regression': {'min_samples': 50, 'tolerance_fraction': 0.25},
        },
        't',
    )
    core = MonitorCore(cfg, baseline=base)
    t, st = _run(core, T0, 0.5, 110e3)  # within tolerance
    assert not core.alerts.alerts['e2e.regression'].active
    t, st = _run(core, t, 1.5, 190e3)  # p50 190 us > 1.25 x 100 us
    assert core.alerts.alerts['e2e.regression'].active
    assert 'regressed' in _status(st, 'control_loop').message
    assert ('e2e p50 / baseline', '1.90') in _status(st, 'control_loop').values


def test_system_sampler_reads_process_and_threads() -> None:
    s = SystemSampler(per_thread=True)
    first = s.sample(1.0)
    _burn_cpu(0.05)  # thread CPU times tick at 10 ms: make this thread visibly busy
    assert first.process_rss_bytes > 10 * 2**20 and 0.0 <= first.system_memory_percent <= 100.0
    second = s.sample(2.0)
    assert second.threads_cpu_percent  # per-thread deltas appear from the second sample on
    assert all(':' in k and v >= 0.0 for k, v in second.threads_cpu_percent.items())
    assert second.ctx_switches_voluntary >= first.ctx_switches_voluntary


# ------------------------------------------------------------------------------------------ exporter


def test_exporter_serves_snapshot_over_http_and_reports_port_in_use() -> None:
    core = _core()
    core.ingest_counters(
        {
            'faults': 2,
            'safety_interventions': 7,
            'deadline_misses': 1,
            'policy_steps': 3,
            'policy_errors': 4,
            'command_limit_violations': 5,
        },
        {'human_distance_m': 0.75},
    )
    dur = np.array([50e3, 150e3, 150e3, 2e6])
    core.ingest_stage('e2e', _samples(T0, 4, 1_000_000, dur))
    core.evaluate(T0 + 5_000_000)
    ex = PrometheusExporter('127.0.0.1', 0)
    port = ex.start()
    try:
        ex.publish(MetricsSnapshot.from_core(core, dropped={'e2e': 0}, monitor_cpu_s=0.5))
        body = urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5).read().decode()
        fams = {f.name: f for f in text_string_to_metric_families(body)}
        hist = {
            (s.name, s.labels.get('le')): s.value
            for s in fams['rt_execution_time_seconds'].samples
            if s.labels.get('stage') == 'e2e'
        }
        assert hist[('rt_execution_time_seconds_count', None)] == 4
        assert hist[('rt_execution_time_seconds_bucket', '0.0001')] == 1
        assert hist[('rt_execution_time_seconds_bucket', '0.00015')] == 3
        assert hist[('rt_execution_time_seconds_bucket', '+Inf')] == 4
        assert hist[('rt_execution_time_seconds_sum', None)] == pytest.approx(2.35e-3)

        def value(fam: str, **labels: str) -> float:
            return next(
                s.value
                for s in fams[fam].samples
                if s.name.endswith(('_total', fam)) and all(s.labels.get(k) == v for k, v in labels.items())
            )

        assert value('rt_operations', stage='e2e') == 4
        assert value('rt_safety_violations') == 5 and value('rt_safety_interventions') == 7
        assert value('rt_errors', kind='faults') == 2 and value('rt_errors', kind='policy_errors') == 4
        assert value('rt_deadline_misses') == 1
        assert value('rt_human_distance_meters') == 0.75
        assert value('rt_latency_seconds', stage='e2e', quantile='1') == pytest.approx(2e-3)
        assert value('rt_monitor_cpu_seconds') == 0.5
        assert value('rt_loop_rate_hz') == pytest.approx(1000.0)  # e2e (no period stage): 4 in 4 ms
        assert value('rt_component_status', component='policy') == Level.STALE
        # A second endpoint on the same port: clear error, no traceback-worthy OSError.
        with pytest.raises(MetricsEndpointError, match='port already in use'):
            PrometheusExporter('127.0.0.1', port).start()
    finally:
        ex.stop()
    with socket.socket() as sock:  # stop() released the port (no listener left; TIME_WAIT is fine)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(('127.0.0.1', port))
        sock.listen()


def test_loop_rate_from_period_stage_and_violations_count_as_errors() -> None:
    core = _core()
    t = T0
    for _ in range(10):  # robot ticks at 1 kHz ('period'), commands matched at only 500 Hz ('e2e')
        core.ingest_stage('period', _samples(t, 100, 1_000_000, 1e6))
        core.ingest_stage('e2e', _samples(t, 50, 2_000_000, 100e3))
        core.ingest_stage('safety', _samples(t, 100, 1_000_000, 20e3))
        t += 100_000_000
        core.ingest_counters({'command_limit_violations': 0})
        st = core.evaluate(t)
    assert core.loop_rate_stage() == 'period'
    assert _status(st, 'control_loop').level == Level.OK
    assert dict(_status(st, 'control_loop').values)['rate (Hz)'].startswith('100')
    for _ in range(2):
        core.ingest_stage('period', _samples(t, 100, 1_000_000, 1e6))
        core.ingest_stage('safety', _samples(t, 100, 1_000_000, 20e3))
        t += 100_000_000
        core.ingest_counters({'command_limit_violations': 3})
        st = core.evaluate(t)
    sf = _status(st, 'safety_filter')
    assert sf.level == Level.ERROR and 'error rate' in sf.message  # 3 per ~1000 cycles > 1e-3
