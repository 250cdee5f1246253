"""Running the replay passes of ``rt-safe-rl bench replay`` as in production: repeats, GC quiet,
the control group's scheduling, stress workers, the nodes' own stage timings, a progress bar,
SIGTERM as an interruption; :func:`run_benchmark` assembles the report fields.

Not RT-safe itself (set-up, analysis); the passes run :class:`~rt_safe_rl.bench.replay_engine.ReplayEngine`.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from rt_safe_rl.bench.config import BenchmarkConfig, parse_rate
from rt_safe_rl.bench.replay_engine import (
    FIFO_PAUSE_NS,
    FIFO_PAUSE_PERIOD_NS,
    FloatArray,
    Inputs,
    ReplayEngine,
    ReplayInterruptedError,
    ReplayPipeline,
    RunResult,
    analyse,
    determinism,
    fidelity,
)
from rt_safe_rl.bench.stress import StressWorkers
from rt_safe_rl.core import stats
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.rt.metrics import registry
from rt_safe_rl.rt.sched import apply_thread_settings


class ProcessMeter:
    """CPU% (of one core) and RSS of this process between :meth:`start` and :meth:`stop` (psutil)."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self._cpu0 = 0.0
        self.result: dict[str, float] = {}

    def _cpu(self) -> float:
        t = os.times()
        return t.user + t.system

    def start(self) -> None:
        """Begin a measurement window."""
        self._t0 = time.monotonic()
        self._cpu0 = self._cpu()

    def stop(self) -> dict[str, float]:
        """End the window; returns cpu_percent, rss_mb, rss_peak_mb."""
        wall = max(1e-9, time.monotonic() - self._t0)
        cpu = self._cpu() - self._cpu0
        rss = math.nan
        try:
            import psutil

            rss = psutil.Process().memory_info().rss / 2**20
        except Exception:  # broad on purpose: psutil optional
            pass
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        self.result = {'cpu_percent': 100.0 * cpu / wall, 'rss_mb': rss, 'rss_peak_mb': peak}
        return self.result


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into :class:`ReplayInterruptedError` inside the block (main thread only)."""

    def handler(signum: int, frame: Any) -> None:
        raise ReplayInterruptedError(f'signal {signum}')

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[Callable[[int, int], None] | None]:
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # no auto-refresh thread (it would take the GIL 10x/s during the measurement): the bar is
    # redrawn by the replay loop itself every DRAIN_EVERY messages, outside the timed section
    with Progress(
        TextColumn('{task.description}'),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
        auto_refresh=False,
    ) as prog:
        task = prog.add_task(label, total=total)

        def update(done: int, _total: int) -> None:
            prog.update(task, completed=done, refresh=True)

        yield update


class NodeStages:
    """The nodes' own stage timings from the metrics registry (the benchmark is the rings' one
    reader when no monitor is composed): 'inference' (model time of each policy step, i.e. at the
    policy rate) and 'safety' (process_action). Drained every DRAIN_EVERY messages, outside the
    timed section. Empty for pipelines that do not record into this process's registry.
    """

    NAMES: ClassVar[dict[str, str]] = {'inference': 'node_policy_step_us', 'safety': 'node_safety_step_us'}

    def __init__(self) -> None:
        self._buf = np.zeros((4096, 2), dtype=np.float64)
        self._parts: dict[str, list[FloatArray]] = {k: [] for k in self.NAMES}

    def drain(self) -> None:
        """Move pending samples out of the registry rings."""
        reg = registry()
        for name in self.NAMES:
            while True:
                n = reg.drain_stage(name, self._buf)
                if n:
                    self._parts[name].append(self._buf[:n, 1].copy())
                if n < self._buf.shape[0]:
                    break

    def samples_ns(self, name: str) -> FloatArray:
        """All drained samples (ns) of stage ``name`` ('inference' or 'safety'); empty if none."""
        parts = self._parts.get(name) or []
        return np.concatenate(parts) if parts else np.zeros(0)

    def clear(self) -> None:
        """Forget what was drained so far."""
        for v in self._parts.values():
            v.clear()

    def chain(self, prog: Callable[[int, int], None] | None) -> Callable[[int, int], None]:
        """A progress callback that drains first, then calls ``prog``."""

        def cb(done: int, total: int) -> None:
            self.drain()
            if prog is not None:
                prog(done, total)

        return cb

    def summaries(self) -> dict[str, dict[str, float]]:
        """Stage summaries (us) of the non-empty stages."""
        out = {}
        for name, key in self.NAMES.items():
            if self._parts[name]:
                out[key] = stats.summarize(np.concatenate(self._parts[name]) / 1e3)
        return out


@contextmanager
def gc_quiet(enabled: bool) -> Iterator[None]:
    """Collect, freeze and disable the GC inside the block (as the RtExecutor does)."""
    if not enabled:
        yield
        return
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def _run_rt_thread(engine: ReplayEngine, group: Any, grants: list[dict[str, Any]]) -> RunResult:
    """Run one pass in a new thread with the control group's scheduling (what the OS grants).

    Ctrl-C in the calling thread stops the pass (partial result). The grant is appended to ``grants``.
    """
    out: dict[str, Any] = {}
    done = threading.Event()

    def body() -> None:
        try:
            _rt_body()
        finally:
            done.set()

    def _rt_body() -> None:
        try:
            cpus = tuple(getattr(group, 'real_cpus', None) or group.cpus)
            g = apply_thread_settings('bench_replay', group.policy, group.priority, cpus)
            out['grant'] = {'requested': g.requested, 'granted': g.granted, 'warnings': list(g.warnings)}
            if engine.rate_mode == 'max' and str(g.granted.get('policy')) in ('fifo', 'rr'):
                engine.fifo_pause_ns = FIFO_PAUSE_NS
                out['grant']['max_rate_pause'] = (
                    f'{FIFO_PAUSE_NS / 1e6:g} ms every {FIFO_PAUSE_PERIOD_NS / 1e6:g} ms (RT throttling)'
                )
        except Exception as err:  # broad on purpose: RT setup is best effort, say why
            out['grant'] = {'error': f'{type(err).__name__}: {err}'}
        try:
            out['run'] = engine.run()
        except Exception as err:  # broad on purpose: re-raised in the caller's thread
            out['error'] = f'{type(err).__name__}: {err}'

    th = threading.Thread(target=body, name='bench_replay', daemon=True)
    th.start()
    try:
        # an untimed wait: the caller must not wake up (and take the GIL) during the pass;
        # the wait is still interrupted by Ctrl-C. (Not Thread.join: on CPython 3.11 a join
        # interrupted by a signal can return early the next time.)
        done.wait()
    except (KeyboardInterrupt, ReplayInterruptedError):
        engine.stop_event.set()
        done.wait()
    th.join(timeout=5.0)
    if 'run' not in out:
        raise RtSafeRlError(f'the replay thread failed: {out.get("error", "unknown error")}')
    if not grants and 'grant' in out:
        grants.append(out['grant'])
    result: RunResult = out['run']
    return result


def run_benchmark(
    pipeline: ReplayPipeline,
    inputs: Inputs,
    cfg: BenchmarkConfig,
    *,
    deadline_ns: int,
    naive_runner: Callable[[Inputs, BenchmarkConfig], dict[str, Any]] | None = None,
    on_event: Callable[[str], None] | None = None,
    stop_event: threading.Event | None = None,
    rt_group: Any | None = None,
) -> tuple[dict[str, Any], dict[str, FloatArray], FloatArray]:
    """Replay ``cfg.repeat`` times (pipeline reset before each), optionally under stress, then
    the naive pipeline; return (report fields, samples, times). Never raises on interruption:
    the fields then carry ``complete: False``. ``rt_group``: the ``rt.groups.control``
    GroupConfig used for paced replays when ``cfg.rt_settings`` (see BenchmarkConfig).
    """
    stop_event = stop_event if stop_event is not None else threading.Event()
    use_rt_thread = cfg.rt_settings and rt_group is not None
    grants: list[dict[str, Any]] = []
    node_stages = NodeStages()
    node_stages.drain()  # discard samples from before the measurement (warm-up, earlier runs)
    node_stages.clear()
    faults = registry().counter('faults')
    faults0 = faults.value
    mode, hz = parse_rate(cfg.rate)
    runs: list[RunResult] = []
    complete = True
    stress = StressWorkers(cfg.stress_workers, cfg.stress_duty)
    meter = ProcessMeter()
    extra_det: list[RunResult] = []
    with _sigterm_interrupts(), gc_quiet(cfg.rt_settings):
        try:
            stress.start()
            meter.start()
            for k in range(cfg.repeat):
                with _progress(cfg.progress, inputs.states.n, f'replay {k + 1}/{cfg.repeat}') as prog:
                    engine = ReplayEngine(pipeline, inputs, mode, hz, node_stages.chain(prog), stop_event)
                    pipeline.reset()
                    r = _run_rt_thread(engine, rt_group, grants) if use_rt_thread else engine.run()
                runs.append(r)
                if on_event is not None:
                    on_event(f'repeat {k + 1}/{cfg.repeat}: {r.count} msgs in {r.wall_ns / 1e9:.3f} s')
                if not r.complete:
                    complete = False
                    break
            meter.stop()
        finally:
            stress.stop()
        if complete and cfg.repeat == 1:
            # determinism needs two complete passes: one extra unmeasured max-rate pass
            extra_det.append(_unmeasured_pass(pipeline, inputs, stop_event))
            complete = extra_det[0].complete
    fields, samples, t_s = analyse(
        runs,
        min(cfg.warmup_messages, max(0, (runs[0].count if runs else 0) - 1)),
        deadline_ns,
        mode,
        cfg.histogram_bins,
        getattr(pipeline, 'stage_names', ('inference_us', 'safety_us')),
    )
    fields['complete'] = complete
    fields['repeats'] = len(runs)
    fields['rate'] = _rate_fields(mode, hz, inputs)
    fields['deadline_us'] = deadline_ns / 1e3
    fields['process'] = meter.result
    fields['stages'].update(node_stages.summaries())
    # latched safety stops (fail-closed faults) during the measured replays, from the registry
    fields['safety_faults'] = int(faults.value - faults0)
    status = getattr(pipeline, 'safety_status', None)
    if callable(status):
        fields['safety_status_at_end'] = status()
    _add_run_fields(fields, pipeline, cfg, grants, stress, runs, extra_det, inputs)
    stopped = stop_event is not None and stop_event.is_set()
    if cfg.naive and complete and not stopped and naive_runner is not None:
        _add_naive(fields, naive_runner(inputs, cfg))
    return fields, samples, t_s


def _unmeasured_pass(pipeline: ReplayPipeline, inputs: Inputs, stop_event: threading.Event) -> RunResult:
    """One extra replay at the maximal rate, not measured (for the determinism check)."""
    engine = ReplayEngine(pipeline, inputs, 'max', 0.0, None, stop_event)
    pipeline.reset()
    return engine.run()


def _rate_fields(mode: str, hz: float, inputs: Inputs) -> dict[str, Any]:
    """The report's ``rate``: the replay's rate mode and rate (Hz), and the recording's rate (Hz)."""
    return {
        'mode': mode,
        'hz': hz if mode == 'fixed' else inputs.states.rate_hz(),
        'recorded_hz': inputs.states.rate_hz(),
    }


def _add_run_fields(
    fields: dict[str, Any],
    pipeline: ReplayPipeline,
    cfg: BenchmarkConfig,
    grants: list[dict[str, Any]],
    stress: StressWorkers,
    runs: list[RunResult],
    extra_det: list[RunResult],
    inputs: Inputs,
) -> None:
    """Add the report's ``rt``, ``stress``, ``determinism``, ``fidelity``, ``pipeline`` and ``lost``
    fields: the RT settings (``grants``: the replay thread's), the stress workers, the measured
    ``runs`` (plus the unmeasured ``extra_det``) compared pass to pass and with the recording."""
    fields['rt'] = {
        'gc_disabled': cfg.rt_settings,
        'replay_thread': grants[0] if grants else 'caller thread (rt_settings off / no rt group)',
    }
    fields['stress'] = stress.summary()
    fields['determinism'] = determinism(runs + extra_det)
    fid = fidelity((runs + extra_det)[0], inputs) if runs else {}
    if fid:
        fields['fidelity'] = fid
    fields['pipeline'] = {
        'description': pipeline.description,
        'joint_names': list(pipeline.joint_names),
        'kind': cfg.pipeline,
    }
    if hasattr(pipeline, 'lost'):
        fields['lost'] = int(pipeline.lost)


def _add_naive(fields: dict[str, Any], naive: dict[str, Any]) -> None:
    """Add the naive pipeline's report fields and its e2e percentiles over ours (ratios)."""
    fields['naive'] = naive
    ours, theirs = fields['stages']['e2e_us'], naive.get('stages', {}).get('e2e_us', {})
    fields['ratios'] = {
        f'e2e_{p}_naive_over_ours': stats.ratio(
            float(theirs.get(p) or math.nan), float(ours.get(p) or math.nan)
        )
        for p in ('p50', 'p99', 'p999', 'max')
    }
    if not naive.get('complete', True):
        fields['complete'] = False
