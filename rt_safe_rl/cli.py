"""`rt-safe-rl`: one command-line entry point for the package's tools.

    rt-safe-rl demo [--duration S] [--config C]       closed loop on the embedded default
    rt-safe-rl train [--out PATH]                       train the shipped default policy
    rt-safe-rl record [...]                             record the simulator to an mcap bag
    rt-safe-rl doctor [--json F] [--apply] [--restore F]  system checks, floor, verdict (JSON)
    rt-safe-rl bench policy|safety|rt|replay|monitor|loop|faults|api|gpu [...]   benchmarks (print JSON)
    rt-safe-rl policy inspect FILE [--write-config Y]   what a policy file takes; a pipeline skeleton
    rt-safe-rl fleet replay BAG... [...]                what-if replay of many bags x variants on Ray

Each subcommand lives in its own module with ``main(argv: list[str] | None) -> int``; this file
only dispatches. Expected errors (:class:`RtSafeRlError`) print one line and exit 2. SIGTERM is
handled like Ctrl-C in every subcommand (:mod:`rt_safe_rl.signals`); a signal that reaches this
level (nothing was left to stop or write) exits 128 + its number (130 SIGINT, 143 SIGTERM).
"""

from __future__ import annotations

import importlib
import signal
import sys

from rt_safe_rl import signals
from rt_safe_rl.core.errors import RtSafeRlError

COMMANDS: dict[str, str] = {
    'demo': 'rt_safe_rl.demo',
    'train': 'rt_safe_rl.tools.train_default_policy',
    'record': 'rt_safe_rl.tools.record',
    'doctor': 'rt_safe_rl.doctor.cli',
    'policy': 'rt_safe_rl.tools.policy_inspect',
    'fleet': 'rt_safe_rl.fleet.cli',
}
BENCHES: dict[str, str] = {
    'policy': 'rt_safe_rl.bench.policy_bench',
    'safety': 'rt_safe_rl.bench.safety_bench',
    'rt': 'rt_safe_rl.bench.rt_bench',
    'replay': 'rt_safe_rl.bench.replay',
    'monitor': 'rt_safe_rl.bench.monitor_bench',
    'loop': 'rt_safe_rl.bench.loop_bench',
    'faults': 'rt_safe_rl.bench.faults',
    'api': 'rt_safe_rl.bench.api_bench',
    'gpu': 'rt_safe_rl.bench.gpu_bench',
}


def _usage() -> str:
    return (
        'usage: rt-safe-rl {' + ','.join(COMMANDS) + '} [args]\n'
        '       rt-safe-rl bench {' + ','.join(BENCHES) + '} [args]\n'
        'Run a subcommand with --help for its options.'
    )


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand module's ``main``; return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ('-h', '--help'):
        print(_usage())
        return 0 if args else 2
    if args[0] == 'bench':
        if len(args) >= 2 and args[1] in ('-h', '--help'):
            print(_usage())
            return 0
        if len(args) < 2:
            print(_usage(), file=sys.stderr)
            return 2
        if args[1] not in BENCHES:
            print(f'rt-safe-rl: unknown benchmark {args[1]!r}\n{_usage()}', file=sys.stderr)
            return 2
        module_name, rest = BENCHES[args[1]], args[2:]
    elif args[0] in COMMANDS:
        module_name, rest = COMMANDS[args[0]], args[1:]
    else:
        print(f'rt-safe-rl: unknown command {args[0]!r}\n{_usage()}', file=sys.stderr)
        return 2
    signals.install()
    try:
        module = importlib.import_module(module_name)
        return int(module.main(rest) or 0)
    except RtSafeRlError as err:
        print(f'rt-safe-rl: error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return signals.exit_code(signals.received() or signal.SIGINT)


if __name__ == '__main__':
    sys.exit(main())
