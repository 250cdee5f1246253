"""`rt-safe-rl bench policy PATH[=CONFIG]... [--config C] [--backends all|a,b] [--json FILE]`: backends.

For one policy file: builds every requested backend, checks each against the reference (eager FP32
torch; onnxruntime for ONNX files) over ``--samples`` observations (>= 1000; recurrent models as one
rollout from reset), times them interleaved, single-threaded (``torch.set_num_threads(1)``), picks
the backend ``auto`` would pick, and checks heap growth of the selected backend over ``--heap-calls``
calls (tracemalloc). Prints a table and JSON (``--json FILE`` also writes it):

    {"backends": [{"name", "median_us", "p99_us", "max_us", "max_abs_err", "ok", "available", ...}],
     "selected": ..., "reference": ..., "speedup_median": ..., "speedup_p99": ...,
     "heap": {"calls", "growth_bytes", "growth_bytes_per_call"},
     "compiled": {"ok", "summary", "reason", "max_abs_err", "speedup_vs_eager", "heap"},
     "metadata": {"sha256", "torch", "numba", "onnxruntime", "numpy", "cpu", "python", ...}}

Several files (``FILE=CONFIG.yaml`` pairs or bare files) give ``{"policies": [...], "summary":
{"compiled_fraction", "median_speedup_vs_eager_mlp", "median_speedup_vs_eager_recurrent",
"max_heap_growth_bytes_compiled", "not_compiled", ...}}``. Without a config the pipeline is the
skeleton of ``rt-safe-rl policy inspect`` (observations "skeleton"). The compiled backend's heap is
measured too when it is not the selected one. A two-model pipeline's encoder is measured the same
way (``"encoder": {"backends", "selected", "compiled", "heap", ...}``; null without one). What a
policy prints is dropped (``--stdout drop``, default), so stdout holds only the JSON.

Speedups are reference / selected, measured in the same run. Timings are noisy on a shared machine.
Exit 0 on success; expected errors exit 2 with one line (via ``rt-safe-rl``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from rt_safe_rl import paths
from rt_safe_rl.bench.report import cpu_model
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.policy.backends import BackendResult, format_table, sample_observations
from rt_safe_rl.core.policy.config import BACKENDS, PolicyNodeConfig, load_pipeline_config
from rt_safe_rl.core.policy.model import PolicyModel, load_policy_model
from rt_safe_rl.core.policy.pipeline import F32, plausible_observations
from rt_safe_rl.core.policy.stdio import drop_stdout
from rt_safe_rl.core.stats import percentile
from rt_safe_rl.tools.policy_inspect import describe, skeleton


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for mod in ('torch', 'numba', 'numpy', 'onnxruntime'):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = 'not installed'
    return out


def heap_growth(model: Any, obs: np.ndarray, calls: int) -> dict[str, Any]:
    """tracemalloc growth of `calls` forward passes of the selected backend after a warm-up."""
    out = np.zeros(model.info.act_dim, np.float32)
    n = obs.shape[0]
    for i in range(min(calls, 1000)):
        model.forward(obs[i % n], out)
    tracemalloc.start()
    try:
        for i in range(200):
            model.forward(obs[i % n], out)
        before = tracemalloc.take_snapshot()
        for i in range(calls):
            model.forward(obs[i % n], out)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # tracemalloc's own snapshot bookkeeping and this loop's counters are not the model's heap
    skip = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    after, before = after.filter_traces(skip), before.filter_traces(skip)
    growth = sum(s.size_diff for s in after.compare_to(before, 'filename'))
    model.reset()
    return {'calls': calls, 'growth_bytes': int(growth), 'growth_bytes_per_call': growth / calls}


def _skeleton_config(path: str, tmp: Path) -> str:
    """Pipeline skeleton from ``policy inspect`` (used when no --config is given)."""
    out = tmp / (Path(path).stem + '.skeleton.yaml')
    out.write_text(skeleton(describe(path)))
    return str(out)


def run(
    path: str,
    config: str | None,
    backends: list[str] | None,
    samples: int,
    iters: int,
    heap_calls: int,
    tolerance: float | None,
    obs_mode: str = 'auto',
    stdout: str = 'drop',
) -> dict[str, Any]:
    """Run the benchmark for one policy; returns the JSON-ready report.

    `obs_mode`: 'pipeline' (observations built by the pipeline from plausible robot states), 'normal'
    (N(0, 1) per value), 'auto' (pipeline). Without `config` the pipeline is the skeleton that
    ``rt-safe-rl policy inspect`` writes. Everything the policy prints is dropped (fd level).
    """
    with tempfile.TemporaryDirectory() as tmp, drop_stdout():
        cfg_path = config or _skeleton_config(path, Path(tmp))
        return _run(
            path, cfg_path, config is None, backends, samples, iters, heap_calls, tolerance, obs_mode, stdout
        )


def _run(
    path: str,
    config: str,
    skeleton: bool,
    backends: list[str] | None,
    samples: int,
    iters: int,
    heap_calls: int,
    tolerance: float | None,
    obs_mode: str,
    stdout: str,
) -> dict[str, Any]:
    pipe = load_pipeline_config(config)
    use_pipe = obs_mode in ('auto', 'pipeline')
    check_obs = plausible_observations(pipe, samples) if use_pipe else None
    cfg = _node_config(samples, iters, tolerance, stdout)
    t0 = time.perf_counter()
    model = _load_all_backends(path, cfg, pipe, backends, check_obs, pipe.size_note())
    load_s = time.perf_counter() - t0
    rows = model.table
    by = {r.name: r for r in rows}
    ref, sel = by[model.reference], by[model.selected]
    obs = check_obs if check_obs is not None else sample_observations(model.info.obs_dim, 1000, seed=1)
    heap = heap_growth(model, obs, heap_calls)
    heap_numba = None
    numba = model.backends.get('numba')
    if numba is not None and model.selected != 'numba' and by['numba'].available:
        heap_numba = heap_growth(_Single(model, numba), obs, heap_calls)
    report: dict[str, Any] = {
        'policy': model.info.path,
        'config': None if skeleton else config,
        'recurrent': model.info.recurrent,
        'obs_dim': model.info.obs_dim,
        'act_dim': model.info.act_dim,
        'in_shape': model.info.in_shape,
        'samples': samples,
        'observations': ('skeleton' if skeleton else 'pipeline') if use_pipe else 'normal',
        'timing_iters': iters,
        'backends': [r.as_dict() for r in rows],
        'selected': model.selected,
        'reference': model.reference,
        'speedup_median': ref.median_us / sel.median_us if sel.median_us > 0 else None,
        'speedup_p99': ref.p99_us / sel.p99_us if sel.p99_us > 0 else None,
        'compiled': _compiled(by, numba, heap if model.selected == 'numba' else heap_numba),
        'heap': heap,
        'encoder': _encoder_report(pipe, Path(config), cfg, backends, samples, heap_calls),
        'load_and_measure_s': load_s,
        'metadata': _metadata(model, cfg),
    }
    return report


def _node_config(samples: int, iters: int, tolerance: float | None, stdout: str) -> PolicyNodeConfig:
    """The policy node config of the measurement: backend 'auto' over ``samples`` check
    observations and ``iters`` timed calls, 50 warm-up calls, no selection cache."""
    kwargs: dict[str, Any] = {
        'backend': 'auto',
        'auto_samples': samples,
        'auto_timing_iters': iters,
        'warmup_iters': 50,
        'stdout': stdout,
        'auto_cache': False,
    }
    if tolerance is not None:
        kwargs['tolerance'] = tolerance
    return PolicyNodeConfig(**kwargs)


def _compiled(by: dict[str, Any], numba: Any, heap: Any) -> dict[str, Any]:
    """The report's ``compiled`` block: the numba backend's row (``by``: backend name -> table
    row) against eager (median speed-up), and ``heap``, its heap growth."""
    eager = by.get('eager')
    nb_row = by.get('numba')
    return {
        'ok': bool(nb_row is not None and nb_row.available and nb_row.ok),
        'summary': getattr(numba, 'summary', '') if numba is not None else '',
        'reason': nb_row.reason if nb_row is not None else 'not measured',
        'max_abs_err': nb_row.max_abs_err if nb_row is not None else None,
        'speedup_vs_eager': (eager.median_us / nb_row.median_us)
        if eager is not None and nb_row is not None and nb_row.ok and eager.available
        else None,
        'heap': heap,
    }


def _metadata(model: Any, cfg: PolicyNodeConfig) -> dict[str, Any]:
    """The report's ``metadata``: the policy file, library versions, machine, tolerances."""
    return {
        'sha256': model.info.sha256,
        'format': model.info.format,
        **_versions(),
        'cpu': cpu_model(),
        'python': platform.python_version(),
        'threads': cfg.num_threads,
        'tolerance': cfg.tolerance,
        'tolerance_fp16': cfg.tolerance_fp16,
        'tolerance_int8': cfg.tolerance_int8,
        'time_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
    }


def _load_all_backends(
    path: str | Path,
    cfg: PolicyNodeConfig,
    pipe: Any,
    backends: list[str] | None,
    check_obs: F32 | None,
    size_note: str,
) -> PolicyModel:
    """The model at ``path`` loaded as the policy node loads it (``cfg``; the ``model`` section and
    observation size of the pipeline ``pipe``; ``check_obs``, ``size_note``: see
    ``load_policy_model``), keeping every one of ``backends`` for measuring; its log dropped."""
    return load_policy_model(
        path,
        cfg,
        pipe.model,
        obs_dim=pipe.obs_dim,
        backends=backends,
        keep_all=True,
        logger=_Quiet(),
        check_obs=check_obs,
        size_note=size_note,
    )


def _encoder_report(
    pipe: Any,
    config: Path,
    cfg: PolicyNodeConfig,
    backends: list[str] | None,
    samples: int,
    heap_calls: int,
) -> dict[str, Any] | None:
    """The encoder of a two-model pipeline, measured like the policy (None without one).

    Its file is relative to the pipeline YAML; its observations are built by its own
    ``encoder.observation`` pipeline from plausible states.
    """
    if pipe.encoder is None:
        return None
    epipe = pipe.encoder_pipeline()
    path = paths.resolve(pipe.encoder.path, config.parent)
    if not path.is_file():
        raise ConfigError(f'{config}: encoder file not found: {path}')
    obs = plausible_observations(epipe, samples)
    model = _load_all_backends(path, cfg, epipe, backends, obs, epipe.size_note('encoder.observation'))
    if model.info.act_dim != pipe.encoder.output_size:
        raise ConfigError(
            f'{path}: the encoder gives {model.info.act_dim} values, '
            f'encoder.output_size is {pipe.encoder.output_size}'
        )
    by = {r.name: r for r in model.table}
    ref, sel, nb = by[model.reference], by[model.selected], by.get('numba')
    numba = model.backends.get('numba')
    return {
        'path': str(path),
        'obs_dim': model.info.obs_dim,
        'act_dim': model.info.act_dim,
        'backends': [r.as_dict() for r in model.table],
        'selected': model.selected,
        'reference': model.reference,
        'speedup_median': ref.median_us / sel.median_us if sel.median_us > 0 else None,
        'compiled': {
            'ok': bool(nb is not None and nb.available and nb.ok),
            'summary': getattr(numba, 'summary', '') if numba is not None else '',
            'reason': nb.reason if nb is not None else 'not measured',
            'max_abs_err': nb.max_abs_err if nb is not None else None,
        },
        'heap': heap_growth(model, obs, heap_calls),
    }


class _Single:
    """One backend of a model, with the PolicyModel interface heap_growth uses."""

    def __init__(self, model: Any, backend: Any) -> None:
        self.info = model.info
        self.forward = backend.forward
        self.reset = backend.reset


def summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Coverage and speed-ups over several policies (the issue-16 targets)."""
    n = len(reports)
    comp = [r for r in reports if r['compiled']['ok']]

    def med(vals: list[float]) -> float | None:
        return percentile(vals, 50) if vals else None  # the package's one percentile

    mlp = [
        r['compiled']['speedup_vs_eager']
        for r in comp
        if not r['recurrent'] and r['compiled']['speedup_vs_eager']
    ]
    rnn = [
        r['compiled']['speedup_vs_eager']
        for r in comp
        if r['recurrent'] and r['compiled']['speedup_vs_eager']
    ]
    heaps = [r['compiled']['heap']['growth_bytes'] for r in comp if r['compiled']['heap'] is not None]
    frac = len(comp) / n if n else 0.0
    mlp_med, rnn_med = med(mlp), med(rnn)
    targets = {  # the issue-16 targets: 'met' / 'not met' (speed-ups are same-run ratios)
        'compiled_fraction >= 0.9': _met(frac >= 0.9),
        'median_speedup_vs_eager_mlp >= 2': _met(mlp_med is not None and mlp_med >= 2.0),
        'median_speedup_vs_eager_recurrent >= 4': _met(rnn_med is not None and rnn_med >= 4.0),
        'heap_growth_bytes == 0 (every compiled backend)': _met(
            len(heaps) == len(comp) and all(h == 0 for h in heaps)
        ),
    }
    return {
        'policies': n,
        'compiled_within_tolerance': len(comp),
        'compiled_fraction': frac,
        'not_compiled': {
            Path(r['policy']).name: r['compiled']['reason'] for r in reports if not r['compiled']['ok']
        },
        'median_speedup_vs_eager_mlp': mlp_med,
        'median_speedup_vs_eager_recurrent': rnn_med,
        'max_heap_growth_bytes_compiled': max(heaps) if heaps else None,
        'targets': targets,
    }


def _met(ok: bool) -> str:
    return 'met' if ok else 'not met'


def _finite_or_none(obj: Any) -> Any:
    """Strict JSON: NaN/Inf (unmeasured or unavailable rows) become null."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    return obj


class _Quiet:
    def info(self, msg: str) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rt-safe-rl bench policy``."""
    ap = argparse.ArgumentParser(prog='rt-safe-rl bench policy', description=__doc__.split('\n\n')[0])
    ap.add_argument(
        'path',
        nargs='+',
        help='policy file(s) (.pt TorchScript / weights_only checkpoint, .onnx); FILE=CONFIG.yaml gives '
        "a file its pipeline; without one, the skeleton of 'rt-safe-rl policy inspect' is used",
    )
    ap.add_argument('--config', help='per-policy pipeline YAML (one policy file only)')
    ap.add_argument('--backends', default='all', help="'all' or a comma list of " + ','.join(BACKENDS))
    ap.add_argument(
        '--samples', type=int, default=1000, help='observations / rollout steps for the error check'
    )
    ap.add_argument('--iters', type=int, default=2000, help='timed calls per backend')
    ap.add_argument('--heap-calls', type=int, default=10000, help='calls for the heap-growth check')
    ap.add_argument('--tolerance', type=float, default=None, help='max abs error for FP32 backends (1e-4)')
    ap.add_argument(
        '--obs',
        choices=('auto', 'pipeline', 'normal'),
        default='auto',
        help='check observations: built by the pipeline from plausible states (auto) or N(0,1)',
    )
    ap.add_argument(
        '--stdout', choices=('refuse', 'drop'), default='drop', help='a policy that prints: refuse or drop it'
    )
    ap.add_argument('--json', help='also write the JSON report to this file')
    args = ap.parse_args(argv)
    if args.samples < 1000:
        raise ConfigError(f'--samples must be >= 1000, got {args.samples}')
    if args.iters < 1 or args.heap_calls < 1:
        raise ConfigError('--iters and --heap-calls must be >= 1')
    if args.config and len(args.path) > 1:
        raise ConfigError('--config is for one policy file; give several as FILE=CONFIG.yaml')
    names = None if args.backends == 'all' else [b.strip() for b in args.backends.split(',') if b.strip()]
    unknown = [b for b in names or [] if b not in BACKENDS]
    if unknown:
        raise ConfigError(f'unknown backend(s) {unknown}; known: {list(BACKENDS)}')
    reports: list[dict[str, Any]] = []
    for item in args.path:
        path, _, cfg = item.partition('=')
        cfg = cfg or args.config
        if len(args.path) > 1:
            print(f'[{len(reports) + 1}/{len(args.path)}] {Path(path).name}', file=sys.stderr)
        report = run(
            path, cfg, names, args.samples, args.iters, args.heap_calls, args.tolerance, args.obs, args.stdout
        )
        rows = [BackendResult(**r) for r in report['backends']]
        print(format_table(rows, report['selected']), file=sys.stderr)
        print(
            f'selected {report["selected"]}: {report["speedup_median"]:.2f}x median, '
            f'{report["speedup_p99"]:.2f}x p99 vs {report["reference"]}; heap growth '
            f'{report["heap"]["growth_bytes"]} B over {report["heap"]["calls"]} calls',
            file=sys.stderr,
        )
        enc = report['encoder']
        if enc is not None:
            erows = [BackendResult(**r) for r in enc['backends']]
            table = format_table(erows, enc['selected'])
            print(f'encoder {Path(enc["path"]).name}:\n{table}', file=sys.stderr)
        reports.append(report)
    result: dict[str, Any] = (
        reports[0] if len(reports) == 1 else {'policies': reports, 'summary': summary(reports)}
    )
    if len(reports) > 1:
        print(json.dumps(_finite_or_none(result['summary']), indent=2), file=sys.stderr)
        for target, verdict in result['summary']['targets'].items():
            print(f'target {target}: {verdict}', file=sys.stderr)
    text = json.dumps(_finite_or_none(result), indent=2, default=float, allow_nan=False)
    print(text)
    if args.json:
        Path(args.json).write_text(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
