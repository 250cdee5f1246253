"""``rt-safe-rl fleet replay``: re-validate policies / safety settings against every logged run.

    rt-safe-rl fleet replay BAG... [--policy P]... [--grid KEY=V1,V2,...]... [--set KEY=VALUE]...
        [--config C] [--workers N] [--address ray://HOST:PORT] [--out DIR] [--json FILE]
        [--max-messages N] [--scaling] [--no-progress]

One Ray task per (bag, variant) (:mod:`rt_safe_rl.fleet.engine`), each the same deterministic
offline replay as ``rt-safe-rl bench replay BAG`` + the variant's ``--policy`` / ``--set``
(:mod:`rt_safe_rl.fleet.task`): same command SHA-256. Rows, per-variant aggregates and the diff
to the first variant go to ``DIR/fleet.json`` (also ``--json FILE``), ``fleet.md``,
``fleet.html`` and one plot per metric. ``fleet.json`` is rewritten after every finished task,
so Ctrl-C / SIGTERM leaves the partial results (``"complete": false``, exit 130).

``--scaling``: after warming ``N`` workers, the same workload runs with 1 and with ``N``
tasks in flight (ratio of the wall times), and per-worker states/s are compared with a
single-process replay (the bench replay engine at max rate, in this process).

Exit codes: 0 done (error rows included), 1 a limit violation in some row, 2 bad input or Ray
missing (one line), 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from rt_safe_rl.bench.report import cpu_model, plain, write_json
from rt_safe_rl.core.errors import ConfigError, RtSafeRlError
from rt_safe_rl.core.stats import percentile
from rt_safe_rl.fleet import engine, report, results
from rt_safe_rl.fleet.task import run_task
from rt_safe_rl.fleet.variants import Variant, build_variants

TARGET_SPEEDUP = 1.7
TARGET_WORKER_FRACTION = 0.5


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(prog='rt-safe-rl fleet replay', description=__doc__.split('\n\n')[0])
    p.add_argument(
        'bags', nargs='+', metavar='BAG', help='rosbag2 directories or .mcap/.db3 files (paths/URIs)'
    )
    p.add_argument('--policy', action='append', default=[], help='policy file (repeatable: one axis)')
    p.add_argument(
        '--grid', action='append', default=[], metavar='KEY=V1,V2', help='a grid axis (repeatable)'
    )
    p.add_argument(
        '--set', dest='sets', action='append', default=[], metavar='KEY=VALUE', help='for all variants'
    )
    p.add_argument('--config', help='config YAML (default: the shipped config/default.yaml)')
    p.add_argument('--workers', type=int, default=2, help='local Ray CPUs / tasks in flight (default 2)')
    p.add_argument('--address', default='', help='attach to a Ray cluster (ray://HOST:10001 or HOST:6379)')
    p.add_argument('--out', default='fleet_replay', help='output directory (default fleet_replay)')
    p.add_argument('--json', help='also write the JSON document here')
    p.add_argument('--max-messages', type=int, default=0, help='replay at most N states per bag (0 = all)')
    p.add_argument('--scaling', action='store_true', help='measure 1 vs N workers on the same workload')
    p.add_argument('--no-progress', action='store_true', help='no progress bar / lines on stderr')
    return p


def _metadata(argv: list[str], args: argparse.Namespace, variants: list[Variant]) -> dict[str, Any]:
    return {
        'command_line': ['rt-safe-rl', 'fleet', 'replay', *argv],
        'started_utc': _dt.datetime.now(_dt.UTC).isoformat(timespec='seconds'),
        'host': socket.gethostname(),
        'cpu': cpu_model(),
        'cpu_count': os.cpu_count(),
        'workers': args.workers,
        'address': args.address or 'local (started in this process)',
        'config': args.config or 'shipped config/default.yaml',
        'bags': list(args.bags),
        'reproduce': {v.name: ['rt-safe-rl', 'bench', 'replay', 'BAG', *v.bench_args()] for v in variants},
        'replay': 'open loop over the recorded states through the policy + safety nodes (bench replay '
        'engine, max rate, pipeline reset per task); see rt_safe_rl/fleet/task.py',
    }


def _specs(args: argparse.Namespace, variants: list[Variant]) -> list[dict[str, Any]]:
    return [
        {'bag': str(bag), 'variant': v.to_dict(), 'config': args.config, 'max_messages': args.max_messages}
        for v in variants
        for bag in args.bags
    ]


class _Writer:
    """Keeps fleet.json current after every row (partial results survive an interruption)."""

    def __init__(self, args: argparse.Namespace, variants: list[Variant], meta: dict[str, Any]) -> None:
        self.args, self.variants, self.meta = args, variants, meta
        self.rows: list[dict[str, Any]] = []
        self.samples: dict[tuple[int, str], dict[str, Any]] = {}
        self.scaling: dict[str, Any] = {}

    def add(self, row: dict[str, Any]) -> None:
        self.samples.update(results.split_samples([row]))
        self.rows.append(row)
        self.write(False, final=False)

    def doc(self, complete: bool) -> dict[str, Any]:
        rows = results.sort_rows(self.rows, [str(b) for b in self.args.bags])
        aggs = results.aggregate([v.to_dict() for v in self.variants], rows, self.samples)
        return results.document(rows, aggs, self.scaling, complete, self.meta)

    def write(self, complete: bool, final: bool = True) -> dict[str, Any]:
        doc = self.doc(complete)
        if final:
            report.write_all(doc, self.args.out, self.args.json)
        else:
            write_json(doc, Path(self.args.out) / 'fleet.json')
        return doc


def _scaling(ray: Any, engine: Any, specs: list[dict[str, Any]], n: int, progress: bool) -> dict[str, Any]:
    """Warm N workers, then the workload with 1 and with N in flight; single-process baseline."""
    variants_first = list({s['variant']['index']: s for s in specs}.values())
    warm_s = engine.warm_workers(ray, variants_first, n)
    walls: dict[int, float] = {}
    rows_by: dict[int, list[dict[str, Any]]] = {}
    for k in (1, n):
        with engine.Progress(len(specs), f'scaling: {k} worker(s)', progress) as bar:
            t0 = time.monotonic()
            rows, complete = engine.run_tasks(ray, specs, k, bar.update)
            walls[k] = time.monotonic() - t0
        if not complete:
            raise KeyboardInterrupt
        rows_by[k] = rows
    ok = [r for r in rows_by[n] if 'error' not in r]
    states = sum(int(r['states']) for r in ok)
    first_ok = next((s for s in specs if any(r['bag'] == s['bag'] and 'error' not in r for r in ok)), None)
    single = run_task(first_ok) if first_ok else {}
    single_rate = float(single.get('states_per_s') or 0.0)
    per_worker = states / walls[n] / n if walls[n] > 0 else 0.0
    replay_rates = [float(r['states_per_s']) for r in ok]
    hashes = {k: {(r['bag'], r['variant']): r.get('command_sha256') for r in v} for k, v in rows_by.items()}
    load = os.getloadavg()
    return {
        'workers': n,
        'tasks': len(specs),
        'states': states,
        'warmup_s': warm_s,
        'wall_1_worker_s': walls[1],
        f'wall_{n}_workers_s': walls[n],
        'speedup': walls[1] / walls[n] if walls[n] > 0 else None,
        'target_speedup': TARGET_SPEEDUP if n == 2 else None,
        'states_per_s_per_worker': per_worker,
        'replay_states_per_s_per_worker': percentile(replay_rates, 50) if replay_rates else None,
        'single_process_states_per_s': single_rate,
        'per_worker_fraction_of_single': per_worker / single_rate if single_rate > 0 else None,
        'replay_fraction_of_single': (percentile(replay_rates, 50) / single_rate)
        if replay_rates and single_rate > 0
        else None,
        'target_fraction': TARGET_WORKER_FRACTION,
        'hashes_equal_1_vs_n': hashes[1] == hashes[n],
        'cpu_count': os.cpu_count(),
        'load_average_1m': load[0],
        'method': 'same tasks, workers warmed first (imports, numba, one pipeline per variant); wall '
        'time of all tasks with 1 vs N in flight; states/s per worker = states / wall / N (end to end: '
        'bag decoding, Ray, replay) vs the bench replay engine at max rate in this process '
        '(replay only); replay_states_per_s_per_worker = the median task replay rate. On a shared '
        'machine the figures move with the other load (load_average_1m).',
        '_rows': rows_by[n],
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rt-safe-rl fleet ...``."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or args_in[0] in ('-h', '--help'):
        print(__doc__.split('\n\n')[1] if args_in else __doc__, file=sys.stdout if args_in else sys.stderr)
        return 0 if args_in else 2
    if args_in[0] != 'replay':
        print(f'rt-safe-rl fleet: unknown subcommand {args_in[0]!r} (expected: replay)', file=sys.stderr)
        return 2
    args = build_parser().parse_args(args_in[1:])
    try:
        return _main(args, args_in[1:])
    except RtSafeRlError as err:
        print(f'rt-safe-rl fleet replay: error: {err}', file=sys.stderr)
        return 2


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    if args.workers < 1:
        raise ConfigError(f'--workers must be >= 1, got {args.workers}')
    if args.max_messages < 0:
        raise ConfigError(f'--max-messages must be >= 0, got {args.max_messages}')
    if args.config and not Path(args.config).is_file():
        raise ConfigError(f'--config: file not found: {args.config}')
    variants = build_variants(args.policy, args.grid, args.sets)
    engine.import_ray()  # says how to install it, before anything starts
    specs = _specs(args, variants)
    writer = _Writer(args, variants, _metadata(argv, args, variants))
    complete = True
    progress = not args.no_progress
    with engine.ray_session(args.workers, args.address) as ray:
        try:
            if args.scaling and len(specs) >= 1:
                sc = _scaling(ray, engine, specs, args.workers, progress)
                for row in sc.pop('_rows'):
                    writer.add(row)
                writer.scaling = sc
            else:
                with engine.Progress(len(specs), 'fleet replay', progress) as bar:

                    def on_row(row: dict[str, Any], done: int, total: int) -> None:
                        writer.add(row)
                        bar.update(row, done, total)

                    _rows, complete = engine.run_tasks(ray, specs, args.workers, on_row)
        except (KeyboardInterrupt, engine.FleetInterruptedError):
            complete = False
    doc = writer.write(complete)
    summary = {**doc['summary'], 'complete': complete, 'out_dir': str(args.out)}
    summary['variants'] = {
        v['name']: {k: v.get(k) for k in ('bags', 'errors', 'interventions_per_min', 'violations')}
        for v in doc['variants']
    }
    if writer.scaling:
        summary['scaling'] = {
            k: writer.scaling.get(k)
            for k in ('speedup', 'states_per_s_per_worker', 'single_process_states_per_s', 'load_average_1m')
        }
    print(json.dumps(plain(summary), indent=1))
    if not complete:
        print(
            f'rt-safe-rl fleet replay: interrupted; partial results in {args.out}/fleet.json', file=sys.stderr
        )
        return 130
    return 1 if doc['summary']['violations'] else 0
