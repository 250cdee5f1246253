"""MonitorCore: windows, counters, alerts and the evaluation of each diagnostics component (control
loop, policy, safety filter, system). Pure Python + numpy; non-RT (one thread)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.monitoring.alerts import AlertManager
from rt_safe_rl.core.monitoring.config import NS_PER_S, STAGES, Level, MonitorConfig
from rt_safe_rl.core.monitoring.process_stats import ProcessStats, RemoteStage
from rt_safe_rl.core.monitoring.system import SystemSample
from rt_safe_rl.core.monitoring.trend import MetricHistory
from rt_safe_rl.core.monitoring.windows import _EMPTY_SUMMARY, StageSummary, StageWindow

StageSource = StageWindow | RemoteStage
MAX_REMOTE_SOURCES = 64  # other processes' rt_stats kept (restarts bring new sources)


def _newest(src: StageSource) -> float:
    t = src.last_t_ns
    return -math.inf if src.total == 0 or math.isnan(t) else t


#: Counters of commands that violated limits (the sim robot's audit) -> rt_safety_violations_total.
VIOLATION_COUNTERS: tuple[str, ...] = ('command_limit_violations', 'safety_violations')


@dataclass(frozen=True)
class ComponentSpec:
    """Which stages and counters make up one diagnostics component."""

    name: str
    title: str
    stages: tuple[str, ...]
    rate_stage: str = ''  # stage whose sample rate is the loop rate ('' = none; falls back to e2e)
    miss_counters: tuple[str, ...] = ()
    error_counters: tuple[str, ...] = ()
    info_counters: tuple[str, ...] = ()
    gauges: tuple[str, ...] = ()


COMPONENTS: tuple[ComponentSpec, ...] = (
    ComponentSpec(
        'control_loop',
        'control loop',
        ('e2e', 'period'),
        rate_stage='period',
        miss_counters=('deadline_misses',),
    ),
    ComponentSpec('policy', 'policy', ('inference',), info_counters=('policy_steps',)),
    ComponentSpec(
        'safety_filter',
        'safety filter',
        ('safety',),
        error_counters=('faults', 'output_guard_errors', *VIOLATION_COUNTERS),
        info_counters=('safety_interventions',),
        gauges=('human_distance_m',),
    ),
)


@dataclass
class ComponentStatus:
    """One diagnostics status: level, one-line message and key/value pairs (strings)."""

    name: str
    title: str
    level: Level
    message: str
    values: list[tuple[str, str]]


def _fmt_us(x: float) -> str:
    return 'nan' if math.isnan(x) else f'{x * 1e6:.1f}'


class MonitorCore:
    """Windows, counters, alerts and component evaluation (non-RT; one thread).

    Usage per drain: :meth:`ingest_stage` for each stage's drained samples; per evaluation:
    :meth:`ingest_counters`, optionally :meth:`ingest_system`, then :meth:`evaluate`.
    """

    def __init__(
        self,
        cfg: MonitorConfig,
        *,
        expected_rate_hz: float = 1000.0,
        baseline: dict[str, dict[str, float]] | None = None,
        windows: dict[str, StageWindow] | None = None,
        own_source: str = '',
    ) -> None:
        self.cfg = cfg
        self.default_rate_hz = expected_rate_hz
        self.baseline = baseline or {}
        # Local stage windows: own ones, or the process's RegistryReader windows (shared with the
        # process statistics publisher, so both report the same numbers).
        self.windows: dict[str, StageWindow] = windows if windows is not None else {}
        for st in STAGES:
            self.windows.setdefault(st, StageWindow(st, cfg.window_capacity))
        # Effective stage sources (local window or the freshest remote report), set by evaluate().
        self.stages: dict[str, StageSource] = dict(self.windows)
        self.summaries: dict[str, StageSummary] = dict.fromkeys(STAGES, _EMPTY_SUMMARY)
        self.history = {s: self._new_history() for s in STAGES}
        self.alerts = AlertManager(cfg.alerts)
        self.counters: dict[str, int] = {}  # local + every remote process's totals
        self.gauges: dict[str, float] = {}
        self._local_counters: dict[str, int] = {}
        self._local_gauges: dict[str, float] = {}
        # source -> (stats, received_ns, stages) of other processes (rt_stats); own_source skipped
        self.remote: dict[str, tuple[ProcessStats, int, dict[str, RemoteStage]]] = {}
        self.own_source = own_source
        self.system: SystemSample | None = None
        # (t_ns, counters, stage totals) per evaluation, for per-cycle rates over the window
        self._count_hist: deque[tuple[int, dict[str, int], dict[str, int]]] = deque()
        self.last_statuses: list[ComponentStatus] = []
        self.extra_status: list[ComponentStatus] = []  # e.g. the node's own 'monitor' status
        # Called between the pieces of an evaluation (each ~0.1-0.3 ms of numpy/Python holding the
        # GIL); the node sets it to a tiny sleep so an RT thread waiting for the GIL gets it
        # within one piece rather than after the whole evaluation.
        self.yield_gil: Callable[[], None] | None = None

    def _new_history(self) -> MetricHistory:
        return MetricHistory(self.cfg.trend.baseline_window_s, self.cfg.diagnostics_period_s)

    @property
    def expected_rate_hz(self) -> float:
        """Expected loop rate (Hz): the threshold if set, else the app's control rate."""
        return self.cfg.thresholds.expected_rate_hz or self.default_rate_hz

    def loop_rate_stage(self) -> str:
        """Stage whose sample rate is the loop rate: 'period' (one per tick) if seen, else 'e2e'."""
        period = self.stages.get('period')
        return 'period' if period is not None and period.total > 0 else 'e2e'

    def update_config(self, cfg: MonitorConfig) -> None:
        """Swap in a validated config (thresholds, alerts, windows; capacities stay)."""
        self.cfg = cfg
        self.alerts.cfg = cfg.alerts

    def ingest_stage(self, stage: str, samples: npt.NDArray[np.float64]) -> None:
        """Add drained samples (n, 2) of `stage` (unknown stage names get a window too)."""
        w = self.windows.get(stage)
        if w is None:
            w = self.windows[stage] = StageWindow(stage, self.cfg.window_capacity)
            self.summaries[stage] = _EMPTY_SUMMARY
            self.history[stage] = self._new_history()
        w.extend(samples)

    def ingest_counters(self, counters: Mapping[str, int], gauges: Mapping[str, float] | None = None) -> None:
        """Latest counter totals and gauge values of this process."""
        self._local_counters = dict(counters)
        if gauges is not None:
            self._local_gauges = dict(gauges)
        self._combine()

    def ingest_remote(self, stats: ProcessStats, received_ns: int) -> bool:
        """Latest statistics of another process (decoded ``rt_stats``), received at monotonic
        `received_ns`. Ignored (False) for this process's own source. At most
        :data:`MAX_REMOTE_SOURCES` sources are kept (the longest silent one is forgotten)."""
        if not stats.source or stats.source == self.own_source:
            return False
        stages = {
            n: RemoteStage(n, st, received_ns, stats.source, stats.nodes) for n, st in stats.stages.items()
        }
        self.remote[stats.source] = (stats, received_ns, stages)
        if len(self.remote) > MAX_REMOTE_SOURCES:
            oldest = min(self.remote, key=lambda k: self.remote[k][1])
            del self.remote[oldest]
        self._combine()
        return True

    def _combine(self) -> None:
        """Counters = local + sum over remote sources; gauges: local, else the newest remote."""
        counters = dict(self._local_counters)
        gauges: dict[str, float] = {}
        for stats, _, _ in sorted(self.remote.values(), key=lambda r: r[1]):
            for k, v in stats.counters.items():
                counters[k] = counters.get(k, 0) + v
            gauges.update(stats.gauges)
        for k, gv in self._local_gauges.items():
            if not math.isnan(gv) or k not in gauges:
                gauges[k] = gv
        self.counters, self.gauges = counters, gauges

    def _select_stages(self) -> None:
        """Per stage, the source with the newest sample: the local window or a remote report."""
        best: dict[str, StageSource] = dict(self.windows)
        for _, _, stages in self.remote.values():
            for n, rs in stages.items():
                cur = best.get(n)
                if cur is None or cur.total == 0 or _newest(rs) > _newest(cur):
                    best[n] = rs
        for n in best:
            if n not in self.history:
                self.summaries[n] = _EMPTY_SUMMARY
                self.history[n] = self._new_history()
        self.stages = best

    def source_label(self, stage: str) -> str:
        """Who supplied `stage`'s numbers: 'this process' or '<nodes> (<host>:<pid>)'."""
        src = self.stages.get(stage)
        return src.label if isinstance(src, RemoteStage) else 'this process'

    def ingest_system(self, sample: SystemSample) -> None:
        """Latest system reading."""
        self.system = sample

    def _window_delta(self, now_ns: int) -> tuple[dict[str, int], dict[str, int]]:
        """Counter and stage-total increments over (about) the last window."""
        totals = {s: w.total for s, w in self.stages.items()}
        self._count_hist.append((now_ns, dict(self.counters), totals))
        t0 = now_ns - self.cfg.window_s * NS_PER_S
        while len(self._count_hist) > 1 and self._count_hist[1][0] <= t0:
            self._count_hist.popleft()
        _, c0, s0 = self._count_hist[0]
        dc = {k: v - c0.get(k, 0) for k, v in self.counters.items()}
        ds = {k: v - s0.get(k, 0) for k, v in totals.items()}
        return dc, ds

    def evaluate(self, now_ns: int) -> list[ComponentStatus]:
        """Evaluate every component at `now_ns`; updates alerts and returns the statuses."""
        cfg = self.cfg
        yield_gil = self.yield_gil
        self._select_stages()
        for s, w in self.stages.items():
            self.summaries[s] = w.summary(now_ns, cfg.window_s)
            if yield_gil is not None:
                yield_gil()
        dc, ds = self._window_delta(now_ns)
        statuses = []
        for spec in COMPONENTS:
            statuses.append(self._evaluate_component(spec, now_ns, dc, ds))
            if yield_gil is not None:
                yield_gil()
        statuses.append(self._evaluate_system(now_ns))
        # Rolling baselines are fed after the checks so a value is compared against its past only.
        for s, summ in self.summaries.items():
            if summ.n_samples > 0:
                self.history[s].add(now_ns, summ.p99_s)
        self.last_statuses = statuses + list(self.extra_status)
        return self.last_statuses

    def _evaluate_component(
        self, spec: ComponentSpec, now_ns: int, dc: dict[str, int], ds: dict[str, int]
    ) -> ComponentStatus:
        """One component's status at `now_ns` from its stages' window summaries and the counter
        (`dc`) and stage-total (`ds`) increments over the window; updates its alerts."""
        cfg = self.cfg
        vals: list[tuple[str, str]] = []
        seen = [s for s in spec.stages if self.stages[s].total > 0]
        newest = max((self.stages[s].last_t_ns for s in seen), default=math.nan)
        age_s = (now_ns - newest) / NS_PER_S if seen else math.inf
        stale = age_s > cfg.stale_timeout_s
        stale_msg = f'no samples for {age_s:.1f} s' if seen else 'no data'
        stale_msg += f' (stages {", ".join(spec.stages)})'
        self.alerts.update(
            f'{spec.name}.stale', spec.name, Level.STALE if stale and seen else Level.OK, stale_msg, now_ns
        )
        for s in spec.stages:
            if self.stages[s].total > 0:
                self._check_stage(spec, s, now_ns, stale, vals)
        self._check_rate(spec, now_ns, stale, vals)
        self._check_counters(spec, now_ns, dc, ds, vals)
        if stale:  # STALE is a fact, reported at once; only its log line goes through hysteresis
            return ComponentStatus(spec.name, spec.title, Level.STALE, stale_msg, vals)
        return self._status(spec.name, spec.title, vals, 'running')

    def _check_stage(
        self, spec: ComponentSpec, s: str, now_ns: int, stale: bool, vals: list[tuple[str, str]]
    ) -> None:
        """Stage `s`'s figures into `vals`; its p99 budget, anomaly, drift and regression alerts."""
        cfg, th, al = self.cfg, self.cfg.thresholds, self.alerts
        summ = self.summaries[s]
        if isinstance(self.stages[s], RemoteStage):
            vals.append((f'{s} source', self.source_label(s)))
        vals += [
            (f'{s} samples in window', str(summ.n_samples)),
            (f'{s} p50 (us)', _fmt_us(summ.p50_s)),
            (f'{s} p99 (us)', _fmt_us(summ.p99_s)),
            (f'{s} max (us)', _fmt_us(summ.max_s)),
            (f'{s} jitter p99 (us)', _fmt_us(summ.jitter_p99_s)),
        ]
        budget = th.budget_s(s)
        lvl = Level.OK
        if budget > 0 and summ.n_samples > 0 and not stale:
            if summ.p99_s > budget * th.p99_error_factor:
                lvl = Level.ERROR
            elif summ.p99_s > budget:
                lvl = Level.WARN
        al.update(
            f'{s}.p99_budget',
            spec.name,
            lvl,
            f'{s} p99 {_fmt_us(summ.p99_s)} us > budget {_fmt_us(budget)} us',
            now_ns,
        )
        hist = self.history[s]
        anom, thr = hist.anomaly(now_ns, summ.p99_s, th.anomaly_mad_k, th.drift_min_s, cfg.trend)
        al.update(
            f'{s}.p99_anomaly',
            spec.name,
            Level.WARN if anom and not stale else Level.OK,
            f'{s} p99 {_fmt_us(summ.p99_s)} us above its rolling baseline ({_fmt_us(thr)} us)',
            now_ns,
        )
        drift, recent, base = hist.drift(now_ns, th.drift_fraction, th.drift_min_s, cfg.trend)
        al.update(
            f'{s}.p99_drift',
            spec.name,
            Level.WARN if drift and not stale else Level.OK,
            f'{s} p99 drifting up: {_fmt_us(recent)} us over the last '
            f'{cfg.trend.recent_window_s:g} s vs {_fmt_us(base)} us before',
            now_ns,
        )
        self._check_regression(spec, s, now_ns, stale, vals)

    def _check_regression(
        self, spec: ComponentSpec, s: str, now_ns: int, stale: bool, vals: list[tuple[str, str]]
    ) -> None:
        """Stage `s`'s p50/p99 against the benchmark baseline (when one is loaded for it)."""
        cfg, summ = self.cfg, self.summaries[s]
        base_q = self.baseline.get(s)
        if not base_q:
            return
        reg = []
        if summ.n_samples >= cfg.regression.min_samples and not stale:
            tol = 1.0 + cfg.regression.tolerance_fraction
            live = {'p50': summ.p50_s, 'p99': summ.p99_s}
            reg = [
                f'{q} {_fmt_us(live[q])} us vs {_fmt_us(b)} us'
                for q, b in base_q.items()
                if live[q] > b * tol
            ]
            vals += [(f'{s} {q} / baseline', f'{live[q] / b:.2f}') for q, b in base_q.items() if b > 0]
        self.alerts.update(
            f'{s}.regression',
            spec.name,
            Level.WARN if reg else Level.OK,
            f'{s} regressed against the benchmark baseline: {"; ".join(reg)}',
            now_ns,
        )

    def _check_rate(self, spec: ComponentSpec, now_ns: int, stale: bool, vals: list[tuple[str, str]]) -> None:
        """The loop rate [Hz] against the expected rate (components with a ``rate_stage``)."""
        th = self.cfg.thresholds
        rate_stage = self.loop_rate_stage() if spec.rate_stage else ''
        if not (rate_stage and self.stages[rate_stage].total > 0):
            return
        summ = self.summaries[rate_stage]
        exp = self.expected_rate_hz
        vals += [('rate (Hz)', f'{summ.rate_hz:.1f}'), ('expected rate (Hz)', f'{exp:.1f}')]
        lvl = Level.OK
        if not stale and exp > 0:
            if summ.rate_hz < exp * th.rate_error_fraction:
                lvl = Level.ERROR
            elif summ.rate_hz < exp * th.rate_warn_fraction:
                lvl = Level.WARN
        self.alerts.update(
            f'{spec.name}.rate',
            spec.name,
            lvl,
            f'rate {summ.rate_hz:.1f} Hz < {th.rate_warn_fraction:g} x {exp:g} Hz',
            now_ns,
        )

    def _check_counters(
        self,
        spec: ComponentSpec,
        now_ns: int,
        dc: dict[str, int],
        ds: dict[str, int],
        vals: list[tuple[str, str]],
    ) -> None:
        """Miss / error rates per control cycle over the window (alerts), info counters and gauges."""
        th = self.cfg.thresholds
        # Rates are per control cycle (loop ticks in the window), whatever the component's own stage rate.
        cycles = ds.get(self.loop_rate_stage(), 0) or max((ds.get(s, 0) for s in spec.stages), default=0)
        checks = (
            ('miss', spec.miss_counters, th.miss_rate_warn, th.miss_rate_error),
            ('error', spec.error_counters, th.error_rate_warn, th.error_rate_error),
        )
        for kind, names, warn, err in checks:
            if not names:
                continue
            delta = sum(dc.get(n, 0) for n in names)
            rate = delta / cycles if cycles > 0 else 0.0
            vals += [(f'{n} (total)', str(self.counters.get(n, 0))) for n in names]
            vals.append((f'{kind} rate (per cycle, window)', f'{rate:.2e}'))
            lvl = Level.OK
            if delta > 0 and rate > err:
                lvl = Level.ERROR
            elif delta > 0 and rate > warn:
                lvl = Level.WARN
            self.alerts.update(
                f'{spec.name}.{kind}_rate',
                spec.name,
                lvl,
                f'{kind} rate {rate:.2e}/cycle ({delta} in the window)',
                now_ns,
            )
        for n in spec.info_counters:
            vals.append((f'{n} (total)', str(self.counters.get(n, 0))))
            if cycles > 0:
                vals.append((f'{n} per cycle (window)', f'{dc.get(n, 0) / cycles:.3f}'))
        for g in spec.gauges:
            if g in self.gauges:
                vals.append((g, f'{self.gauges[g]:.3f}'))

    def _status(self, name: str, title: str, vals: list[tuple[str, str]], ok_msg: str) -> ComponentStatus:
        active = sorted(self.alerts.active(name), key=lambda a: -a.level)
        if not active:
            return ComponentStatus(name, title, Level.OK, ok_msg, vals)
        vals.append(('active alerts', ', '.join(a.name for a in active)))
        return ComponentStatus(name, title, active[0].level, '; '.join(a.message for a in active), vals)

    def _evaluate_system(self, now_ns: int) -> ComponentStatus:
        th, al = self.cfg.thresholds, self.alerts
        s = self.system
        if s is None:
            return ComponentStatus('system', 'system', Level.STALE, 'no system metrics (disabled)', [])
        vals = [
            ('system cpu (%)', f'{s.system_cpu_percent:.1f}'),
            ('system memory (%)', f'{s.system_memory_percent:.1f}'),
            ('process cpu (% of one core)', f'{s.process_cpu_percent:.1f}'),
            ('process rss (MiB)', f'{s.process_rss_bytes / 2**20:.1f}'),
            ('context switches voluntary', str(s.ctx_switches_voluntary)),
            ('context switches involuntary', str(s.ctx_switches_involuntary)),
        ]
        top = sorted(s.threads_cpu_percent.items(), key=lambda kv: -kv[1])[:5]
        vals += [(f'thread {k} cpu (%)', f'{v:.1f}') for k, v in top]
        cpu = s.system_cpu_percent
        al.update(
            'system.cpu',
            'system',
            Level.WARN if cpu > th.cpu_warn_percent else Level.OK,
            f'system cpu {cpu:.0f}% > {th.cpu_warn_percent:g}%',
            now_ns,
        )
        mem = s.system_memory_percent
        lvl = Level.OK
        if mem > th.memory_error_percent:
            lvl = Level.ERROR
        elif mem > th.memory_warn_percent:
            lvl = Level.WARN
        al.update(
            'system.memory', 'system', lvl, f'system memory {mem:.0f}% > {th.memory_warn_percent:g}%', now_ns
        )
        return self._status('system', 'system', vals, 'ok')
