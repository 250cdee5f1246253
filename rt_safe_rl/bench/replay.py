"""``rt-safe-rl bench replay BAG``: replay a rosbag2 recording through the policy + safety pipeline
and report latency percentiles, deadline misses, determinism and (``--naive``) the ratio to a
plain-rclpy pipeline, with a ``--baseline`` regression check.

    rt-safe-rl bench replay BAG [--policy P] [--config C] [--rate recorded|max|HZ] [--repeat N]
        [--stress N] [--naive] [--baseline REPORT.json] [--out DIR] [--state-topic T]
        [--joint-map BAG=ROBOT,...] [--max-messages N] [--set KEY=VALUE]... [--list]

The replay core (:class:`ReplayEngine`, analysis) is :mod:`rt_safe_rl.bench.replay_engine`;
running the passes as in production (:func:`run_benchmark`) is :mod:`rt_safe_rl.bench.replay_run`;
this module is the CLI and the public replay API used by ``benchmark_node`` and ``fleet``:
:func:`parse_joint_map`, :func:`parse_sets`, :func:`load_app`, :func:`make_pipeline`,
:func:`finalize_report`, :func:`summary_for_stdout`, and from the two modules above
:func:`run_benchmark`, :func:`load_inputs`, :class:`ReplayEngine`, :class:`Inputs` and the record
columns (``COL_*``, ``RECORD_WIDTH``); the rest of the engine is imported from its own module.
``--set KEY=VALUE`` overrides any config value (``rt_safe_rl.config.parse_override``), like
``rt-safe-rl fleet replay --set``: the same bag, policy and overrides give the same command stream.

Exit codes: 0 ok; 1 the ``--baseline`` regression check failed; 2 bad input (one line on
stderr); 130 interrupted (partial report written, ``"complete": false``).
Prints the report JSON summary (stages, throughput, misses, ratios) on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rt_safe_rl.bench import bag as bagmod
from rt_safe_rl.bench import pipeline as pipelines
from rt_safe_rl.bench import report as reportmod
from rt_safe_rl.bench.config import BenchmarkConfig
from rt_safe_rl.bench.replay_engine import (  # noqa: F401  (re-exported: what the replay's users take from here)
    COL_IN,
    COL_INTERVENED,
    COL_OUT,
    COL_POLICY,
    COL_RELEASE,
    COL_SEQ,
    RECORD_WIDTH,
    FloatArray,
    Inputs,
    ReplayEngine,
    load_inputs,
    robot_joint_names,
)
from rt_safe_rl.bench.replay_run import run_benchmark
from rt_safe_rl.bringup import add_set_option
from rt_safe_rl.config import deep_merge, load_config, parse_override
from rt_safe_rl.core.errors import ConfigError, RtSafeRlError
from rt_safe_rl.doctor import verdict_line

# ---------------------------------------------------------------------------------------------
# CLI


def parse_joint_map(text: str) -> dict[str, str]:
    """``BAG_JOINT=ROBOT_JOINT,...`` -> mapping (raises ConfigError with the bad item)."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(','))):
        if '=' not in item:
            raise ConfigError(f'--joint-map: expected BAG_JOINT=ROBOT_JOINT, got {item!r}')
        src, dst = (s.strip() for s in item.split('=', 1))
        if not src or not dst:
            raise ConfigError(f'--joint-map: empty name in {item!r}')
        out[src] = dst
    return out


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(prog='rt-safe-rl bench replay', description=__doc__.split('\n\n')[0])
    p.add_argument('bag', help='rosbag2 directory (metadata.yaml) or a single .mcap/.db3 file')
    p.add_argument('--policy', help='policy file (overrides policy.path of the config)')
    p.add_argument('--config', help='config YAML (default: the shipped config/default.yaml)')
    p.add_argument('--rate', help="'recorded', 'max' or a rate in Hz (default: benchmark.rate)")
    p.add_argument('--repeat', type=int, help='replays of the bag (>= 2 checks determinism)')
    p.add_argument('--stress', type=int, metavar='N', help='CPU-burning stress workers during the replay')
    p.add_argument('--naive', action='store_true', help='also measure the naive plain-rclpy pipeline')
    p.add_argument(
        '--external',
        action='store_true',
        help='drive a pipeline running elsewhere over DDS topics instead of composing one here',
    )
    p.add_argument('--baseline', help='earlier report.json (or its directory) to compare with')
    p.add_argument('--tolerance', type=float, help='regression tolerance (default 0.10 = 10 %%)')
    p.add_argument('--out', help='output directory (default: benchmark.out_dir)')
    p.add_argument('--state-topic', help='JointState topic (default: auto)')
    p.add_argument('--joint-map', default='', help='BAG_JOINT=ROBOT_JOINT,... for bags of another robot')
    p.add_argument('--max-messages', type=int, help='replay at most N state messages')
    p.add_argument('--warmup', type=int, help='messages discarded at the start (default: config)')
    p.add_argument('--deadline-us', type=float, help='e2e deadline for misses (default: the control period)')
    add_set_option(p, 'sets')
    p.add_argument('--list', action='store_true', help='list the bag topics and exit')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p


# (option dest, BenchmarkConfig field) of the options that replace the config's value when given
_OPTION_FIELDS = (
    ('rate', 'rate'),
    ('repeat', 'repeat'),
    ('stress', 'stress_workers'),
    ('tolerance', 'regression_tolerance'),
    ('max_messages', 'max_messages'),
    ('warmup', 'warmup_messages'),
    ('deadline_us', 'deadline_us'),
)


def _bench_config(args: argparse.Namespace, base: BenchmarkConfig) -> BenchmarkConfig:
    """``base`` (the config's ``benchmark`` section) with the CLI options given in ``args``."""
    changes: dict[str, Any] = {
        key: getattr(args, dest) for dest, key in _OPTION_FIELDS if getattr(args, dest) is not None
    }
    if args.naive:
        changes['naive'] = True
    if args.external:
        changes['pipeline'] = 'external'
    if args.out:
        changes['out_dir'] = args.out
    if args.state_topic:
        changes['state_topic'] = args.state_topic
    if args.joint_map:
        changes['joint_map'] = parse_joint_map(args.joint_map)
    if args.no_progress:
        changes['progress'] = False
    try:
        return replace(base, **changes)
    except ValueError as err:
        raise ConfigError(f'bench replay: {err}') from None


def summary_for_stdout(rep: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers printed as JSON on stdout."""
    keys = ('complete', 'messages', 'throughput_msgs_per_s', 'misses', 'miss_rate', 'interventions', 'ratios')
    out = {k: rep.get(k) for k in keys if k in rep}
    out['stages'] = {
        k: {p: v.get(p) for p in ('p50', 'p90', 'p99', 'p999', 'max')}
        for k, v in rep.get('stages', {}).items()
    }
    out['determinism'] = {k: rep.get('determinism', {}).get(k) for k in ('identical', 'command_sha256')}
    if 'naive' in rep:
        out['naive'] = {
            'stages': {'e2e_us': rep['naive'].get('stages', {}).get('e2e_us')},
            'messages': rep['naive'].get('messages'),
            'lost': rep['naive'].get('lost'),
        }
    if 'comparison' in rep:
        out['comparison_passed'] = rep['comparison'].get('passed')
    out['out_dir'] = rep.get('out_dir')
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rt-safe-rl bench replay`` (see module docstring for exit codes)."""
    args = build_parser().parse_args(argv)
    try:
        return _main(args, list(sys.argv[1:] if argv is None else argv))
    except RtSafeRlError as err:
        print(f'rt-safe-rl bench replay: error: {err}', file=sys.stderr)
        return 2


def finalize_report(
    app: Any,
    info: bagmod.BagInfo,
    cfg: BenchmarkConfig,
    inputs: Inputs,
    model_path: str,
    fields: dict[str, Any],
    samples: dict[str, FloatArray],
    t_s: FloatArray,
    argv: Sequence[str],
    baseline: dict[str, Any] | None = None,
    baseline_path: str = '',
) -> dict[str, Any]:
    """Assemble the report (metadata + fields + baseline comparison) and write every file into
    ``cfg.out_dir``. Returns the report dict. Not RT-safe.
    """
    out_dir = Path(cfg.out_dir)
    rep: dict[str, Any] = {
        'schema': reportmod.REPORT_SCHEMA,
        'metadata': reportmod.collect_metadata(app.to_dict(), info.to_dict(), model_path, list(argv)),
        **fields,
        'state_topic': inputs.states.topic,
        'joint_map': dict(cfg.joint_map),
        'out_dir': str(out_dir),
    }
    if baseline is not None:
        rep['comparison'] = reportmod.compare(rep, baseline, cfg.regression_tolerance, baseline_path)
    if naive := rep.get('naive'):
        naive_samples = naive.pop('_samples', None)
        if naive_samples is not None:
            samples = {**samples, 'naive_e2e_us': naive_samples}
    reportmod.write_all(rep, out_dir, samples, t_s, cfg.histogram_bins)
    return rep


def make_pipeline(app: Any, cfg: BenchmarkConfig) -> Any:
    """The pipeline under test: composed in-process (default) or external over DDS."""
    if cfg.pipeline == 'external':
        ext = pipelines.ExternalPipeline(app, cfg.naive_timeout_s)
        try:
            ext.wait_for_pipeline(10.0)
        except BaseException:
            ext.close()
            raise
        return ext
    return pipelines.NodePipeline(app)


def load_app(config: str | None, policy: str | None = None, sets: Sequence[str] = ()) -> Any:
    """The AppConfig of a replay: ``config`` (None = shipped) with the ``--set KEY=VALUE``
    overrides merged in order, then ``policy`` (a file) as ``policy.path``.

    Raises:
        ConfigError: a missing file, a malformed override, an invalid config value.
    """
    overrides: dict[str, Any] = {}
    for text in sets:
        overrides = deep_merge(overrides, parse_override(text))
    if policy:
        if not Path(policy).expanduser().is_file():
            raise ConfigError(f'--policy: file not found: {policy}')
        overrides = deep_merge(overrides, {'policy': {'path': str(Path(policy).expanduser().resolve())}})
    if config and not Path(config).is_file():
        raise ConfigError(f'--config: file not found: {config}')
    return load_config(config, overrides or None)


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    app = load_app(args.config, args.policy, args.sets)
    cfg = _bench_config(args, app.benchmark)
    info = bagmod.inspect_bag(args.bag)
    if args.list:
        print(info.listing())
        return 0
    baseline = reportmod.load_report(args.baseline) if args.baseline else None

    def log(message: str) -> None:
        print(f'[bench replay] {message}', file=sys.stderr)

    # decode the bag first (bad input fails fast, before the policy is loaded and warmed up)
    inputs = load_inputs(info, cfg, robot_joint_names(app), app.topics)
    pipeline = make_pipeline(app, cfg)
    out_dir = Path(cfg.out_dir)
    try:
        if list(pipeline.joint_names) != list(inputs.states.joint_names):
            raise ConfigError(
                f'the pipeline joints {pipeline.joint_names} differ from the robot model '
                f'joints {inputs.states.joint_names}'
            )
        log(
            f'{inputs.states.n} states on {inputs.states.topic} ({inputs.states.rate_hz():.1f} Hz)'
            + (f', human {inputs.human.topic}' if inputs.human.n else '')
            + (f', operator {inputs.operator.topic}' if inputs.operator.n else '')
            + (f', policy command {inputs.policy_command.topic}' if inputs.policy_command.n else '')
        )
        deadline_ns = int(cfg.deadline_us * 1e3) if cfg.deadline_us > 0 else app.control.period_ns
        fields, samples, t_s = run_benchmark(
            pipeline,
            inputs,
            cfg,
            deadline_ns=deadline_ns,
            naive_runner=pipelines.naive_runner_for(app, pipeline),
            on_event=log,
            rt_group=app.rt.groups.get('control'),
        )
    finally:
        pipeline.close()
    rep = finalize_report(
        app,
        info,
        cfg,
        inputs,
        pipeline.model_path,
        fields,
        samples,
        t_s,
        ['bench', 'replay', *argv],
        baseline,
        str(args.baseline or ''),
    )
    rc = 0 if rep['complete'] else 130
    comp = rep.get('comparison')
    if comp is not None and not comp['passed']:
        print(reportmod.comparison_table(comp), file=sys.stderr)
        print(
            f'rt-safe-rl bench replay: REGRESSION against {args.baseline} '
            f'(tolerance {100 * cfg.regression_tolerance:.0f} %)',
            file=sys.stderr,
        )
        rc = 1 if rc == 0 else rc
    verdict = verdict_line(config=app)
    print(f'[bench replay] {verdict}', file=sys.stderr)
    print(json.dumps(reportmod.plain({**summary_for_stdout(rep), 'machine_verdict': verdict}), indent=1))
    if not rep['complete']:
        print(
            f'rt-safe-rl bench replay: interrupted; partial results in {out_dir}/report.json '
            f'("complete": false)',
            file=sys.stderr,
        )
    return rc


_parse_joint_map = parse_joint_map  # the old private name (kept for callers not yet moved)
