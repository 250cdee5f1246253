"""`rt-safe-rl bench faults`: a fault campaign against the real nodes over DDS.

    rt-safe-rl bench faults [--json FILE] [--stress N] [--window-s S] [--cases a,b,...] [--config C]

The system under test is ``bringup --no-monitor`` (policy + safety nodes, no simulator) in a child
process, running a small TorchScript policy written at run time (:func:`write_fault_policy`: a
proportional reach toward the task goal that returns NaN, becomes slow (3x ``safety.deadline_s``)
or raises when the goal's last joint is set to a magic offset, so the injector can make the policy fail
mid-run). The injector (:mod:`rt_safe_rl.bench.fault_injector`, in this process) is the robot
driver (joint_states at ~1 kHz, each state = the last command) and the person tracker, and
audits every command against the URDF limits relative to the previous one over the real
elapsed time.

Each case injects one fault for ``--window-s`` while the arm moves, then the campaign recovers
(normal inputs, ``~/reset`` once the arm is at rest) before the next case; violations during the
recoveries are reported as their own entry (``recovery``). JSON on stdout (and ``--json``)::

    {"cases": [{"name", "handled": bool, "violations": int, "fault": str, "detail": str}],
     "total_violations": int, "all_handled": bool, "machine": {...}, "window_s", "stress", ...}

``handled`` (defined per case in :data:`CASES`): the expected reaction happened -- a latched
stop (``stop``), a stop or a counted drop (``drop``: a status counter whose name says
drop/duplicate/out_of_order/... grew), a refusal (``refuse``), the robot brought to rest
(``rest``), or normal operation going on (``continue``). Exit code 0 when every case was handled
with no violation, 1 otherwise, 2 for a bad command line / a SUT that did not start, 128 + N
when stopped by signal N (partial report written, ``"complete": false``).
Not RT code.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rt_safe_rl import signals
from rt_safe_rl.bench.report import collect_metadata
from rt_safe_rl.bench.stress import StressWorkers
from rt_safe_rl.config import AppConfig, load_config
from rt_safe_rl.core.errors import RtSafeRlError

if TYPE_CHECKING:
    from rt_safe_rl.bench.fault_injector import FaultInjector
    from rt_safe_rl.bench.stress import StressWorkers

MAGIC_NAN_RAD, MAGIC_SLOW_RAD, MAGIC_RAISE_RAD = 100.0, 200.0, 300.0
DROP_KEYS = ('drop', 'duplicate', 'out_of_order', 'reorder', 'rejected', 'stale_state', 'ignored')
START_TIMEOUT_S = 240.0


class FaultBenchError(RtSafeRlError):
    """The system under test did not start or the campaign could not run."""


# ---------------------------------------------------------------------------------------------
# the fault policy


def write_fault_policy(path: Path, n_joints: int, slow_s: float = 0.02) -> Path:
    """Write the campaign's TorchScript policy to `path` (obs = [q - q0, 0.1 dq, goal - q], 3n).

    Normal: target offset ``(q - q0) + 0.5 (goal - q)``. When ``|goal - q|`` of the last joint is
    near MAGIC_NAN_RAD it returns NaN, near MAGIC_SLOW_RAD it holds after at least ~`slow_s` of
    matrix products (calibrated here on the fastest of 5 probes, so a busy moment during the
    calibration cannot make it fast enough to meet the deadline), near MAGIC_RAISE_RAD it raises.
    """
    import torch

    class FaultPolicy(torch.nn.Module):
        def __init__(self, n: int, iters: int) -> None:
            super().__init__()
            self.n = n
            self.iters = iters
            self.w = torch.nn.Parameter(torch.eye(64) * 0.5, requires_grad=False)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            n = self.n
            e = float(obs.reshape(-1)[3 * n - 1].abs())
            q_rel = obs[..., 0:n]
            if e > 250.0:
                raise RuntimeError('fault policy: raised on purpose')
            if e > 150.0:
                x = torch.ones(64, 64)
                for _ in range(self.iters):
                    x = torch.tanh(x @ self.w)
                return q_rel + 0.0 * x[0, 0]
            if e > 50.0:
                return q_rel * float('nan')
            return q_rel + 0.5 * obs[..., 2 * n : 3 * n]

    probe = torch.jit.script(FaultPolicy(n_joints, 200))
    x = torch.zeros(1, 3 * n_joints)
    x[0, -1] = MAGIC_SLOW_RAD
    probe(x)
    trials_s = []
    for _ in range(5):  # the fastest of 5: a busy moment here must not make the policy too fast
        t0 = time.perf_counter()
        probe(x)
        trials_s.append(time.perf_counter() - t0)
    per_iter = max(min(trials_s) / 200, 1e-7)
    mod = torch.jit.script(FaultPolicy(n_joints, max(1, int(slow_s / per_iter))))
    mod.save(str(path))
    return path


# ---------------------------------------------------------------------------------------------
# the system under test


class Sut:
    """``bringup --no-monitor`` with the fault policy, in a child process (stderr to a file)."""

    def __init__(self, cfg_path: str | None, policy: Path, log_path: Path, extra: list[str]) -> None:
        args = [sys.executable, '-m', 'rt_safe_rl.bringup', '--no-monitor']
        if cfg_path:
            args += ['--config', cfg_path]
        args += ['--set', f'policy.path={policy}', '--set', 'policy.backend=torchscript', *extra]
        env = dict(os.environ)
        env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
        self.log_path = log_path
        self._log = open(log_path, 'w')  # closed in stop()
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self._log, env=env)

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int | None:
        """Send `sig`, wait for the exit; kill after `timeout_s`. Returns the exit code (None: killed)."""
        rc: int | None = self.proc.poll()
        if rc is None:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10.0)
                rc = None
        self._log.close()
        return rc


# ---------------------------------------------------------------------------------------------
# campaign context and helpers


@dataclass
class Outcome:
    """What a case observed: handled (expected reaction), the fault named, a detail line."""

    handled: bool
    fault: str
    detail: str


class Ctx:
    """What a case can use: the injector, the SUT, the window length and status helpers."""

    def __init__(self, inj: Any, sut: Sut, window_s: float, cfg: AppConfig) -> None:
        self.inj, self.sut, self.window_s, self.cfg = inj, sut, window_s, cfg
        self.t0_ns = 0

    def mark(self) -> None:
        """The injection starts now (status entries after this count)."""
        self.t0_ns = time.monotonic_ns()

    def wait(self, s: float | None = None) -> None:
        time.sleep(self.window_s if s is None else s)

    def latched_fault(self) -> str:
        """The fault of the first latched status since :meth:`mark` ('' = none)."""
        for t, _, msg, values in list(self.inj.status_log):
            if t >= self.t0_ns and values.get('latched') == 'True':
                return values.get('fault', msg) or msg
        return ''

    def late_states(self) -> str:
        """The injector's own late state publishes since :meth:`mark` ('' = none): gaps of more than
        GAP_PERIODS periods, so a stale-state stop of this window can be told from the SUT's."""
        gaps = [g for t, g in list(self.inj.state_gaps) if t >= self.t0_ns]
        if not gaps:
            return ''
        return f'the injector published states late {len(gaps)}x (longest gap {max(gaps) / 1e6:.1f} ms)'

    def status_texts(self) -> str:
        return ' | '.join(sorted({m for t, _, m, _ in list(self.inj.status_log) if t >= self.t0_ns}))

    def counters(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, v in self.inj.status.items():
            try:
                out[k] = float(v)
            except ValueError:
                continue
        return out

    def grown(self, before: dict[str, float], keys: tuple[str, ...]) -> list[str]:
        """Status counters whose name contains one of `keys` and that grew since `before`."""
        now = self.counters()
        return [k for k, v in now.items() if any(s in k for s in keys) and v > before.get(k, 0.0)]

    def wait_rest(self, timeout_s: float = 3.0) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.inj.commands and self.inj.moving_ratio(0.1) < 1e-3:
                return True
            time.sleep(0.02)
        return False

    def wait_moving(self, timeout_s: float = 3.0) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.inj.moving_ratio(0.05) > 0.1 and not self.inj.latched:
                return True
            time.sleep(0.01)
        return False

    def stop_outcome(self, extra: str = '') -> Outcome:
        f = self.latched_fault()
        return Outcome(
            bool(f), f or 'none', f'latched {f}' if f else f'no stop; status: {self.status_texts()}{extra}'
        )

    def drop_outcome(self, before: dict[str, float], keys: tuple[str, ...] = DROP_KEYS) -> Outcome:
        f = self.latched_fault()
        grown = self.grown(before, keys)
        if f:
            return Outcome(True, f, f'latched {f}')
        if grown:
            return Outcome(True, 'dropped', f'counted in {grown}')
        return Outcome(False, 'none', f'no stop and no drop counter; status: {self.status_texts()}')


def _hook_window(ctx: Ctx, hook: Callable[[Any, int], list[Any]] | None) -> None:
    ctx.mark()
    ctx.inj.state_hook = hook
    ctx.wait()
    ctx.inj.state_hook = None


# ---------------------------------------------------------------------------------------------
# the campaign


def _wait_ready(inj: Any, sut: Sut, timeout_s: float = START_TIMEOUT_S) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if sut.proc.poll() is not None:
            tail = ' / '.join(sut.log_text().strip().splitlines()[-3:])
            raise FaultBenchError(f'the system under test exited ({sut.proc.returncode}): {tail}')
        if inj.commands > 10 and inj.status:
            return
        time.sleep(0.1)
    raise FaultBenchError(
        f'no command from the system under test within {timeout_s:.0f} s (log {sut.log_path})'
    )


def _recover(ctx: Ctx) -> str:
    """Normal inputs again; reset a latched stop once the arm is at rest. Returns what was done."""
    inj = ctx.inj
    inj.state_hook, inj.goal_override = None, None
    inj.human_xyz = np.array([2.5, 0.0, 0.6])
    time.sleep(0.3)
    done = []
    for _ in range(3):
        if not inj.latched:
            break
        ctx.wait_rest(3.0)
        ok, _ = inj.reset()
        done.append(f'reset -> {ok}')
        time.sleep(0.4)
    return ', '.join(done) or 'nothing to recover'


def _violation_text(inj: Any, since: int) -> str:
    entries = inj.audit.violation_log[since : since + 3]
    text = '; '.join(f'{k} seq {s} joint {j} x{r:.1f}' for k, s, _, j, r in entries)
    return text or 'non-finite or malformed commands'


def _check_fault(name: str, handled: bool, fault: str, detail: str, status: str = '') -> tuple[bool, str]:
    """A latched fault other than the ones the case expects is not the expected reaction."""
    from rt_safe_rl.bench.fault_cases import EXPECTED_FAULTS  # lazy: cycle: fault_cases imports faults
    from rt_safe_rl.core.safety import FaultCode

    expected = EXPECTED_FAULTS.get(name)
    if expected is None or fault not in FaultCode.__members__ or fault in expected:
        return handled, detail
    want = ' or '.join(expected) if expected else 'no stop'
    return False, f'{detail}; latched {fault}, expected {want}; status: {status[:300]}'


def run_case(ctx: Ctx, name: str, fault: str, expect: str, fn: Callable[[Ctx], Any]) -> dict[str, Any]:
    """Run one case (the arm moving first, when it can) and measure its window's violations."""
    inj = ctx.inj
    moving = ctx.wait_moving(3.0)
    v0, log0 = inj.violations(), len(inj.audit.violation_log)
    try:
        out = fn(ctx)
        handled, fault_named, detail = out.handled, out.fault, out.detail
    except Exception as err:  # broad on purpose: a broken case is reported, the campaign goes on
        handled, fault_named, detail = False, 'error', f'case failed: {type(err).__name__}: {err}'
    handled, detail = _check_fault(name, handled, fault_named, detail, ctx.status_texts())
    late = ctx.late_states()
    if late and not handled:
        detail += f'; {late}'
    v = inj.violations() - v0
    if v:
        detail += f'; violations: {_violation_text(inj, log0)}'
    if not moving:
        detail += ' (the arm was not moving when the fault started)'
    return {
        'name': name,
        'handled': bool(handled),
        'violations': int(v),
        'fault': str(fault_named),
        'detail': detail,
        'injected': fault,
        'expect': expect,
    }


def _recovery_result(violations: int, why: list[str]) -> dict[str, Any]:
    """The pseudo-case 'recovery': violations (count) seen during the resets between the cases."""
    return {
        'name': 'recovery',
        'handled': True,
        'violations': int(violations),
        'fault': 'none',
        'detail': 'normal inputs and ~/reset between the cases (violations of the resets themselves)'
        + (f'; violations: {" | ".join(why)}' if why else ''),
        'injected': 'none',
        'expect': 'continue',
    }


def _campaign_report(
    results: list[dict[str, Any]],
    complete: bool,
    interrupted: bool,
    window_s: float,
    workers: StressWorkers,
    inj: FaultInjector,
    cfg: AppConfig,
    argv: list[str] | None,
) -> dict[str, Any]:
    """The campaign's report (module docstring) from its case results and the injector's audit."""
    total = sum(r['violations'] for r in results)
    return {
        'cases': results,
        'total_violations': int(total),
        'all_handled': all(r['handled'] for r in results) and complete,
        'complete': complete,
        'interrupted': interrupted,
        'window_s': window_s,
        'stress': workers.summary(),
        'commands_audited': int(inj.commands),
        'audit': {
            **{k: int(getattr(inj.audit, k)) for k in ('seq_gaps', 'duplicates', 'nonfinite')},
            'label_clamps': int(inj.label_clamps),
        },
        'machine': collect_metadata(config={'source': str(cfg.source)}, argv=argv),
    }


def run_campaign(
    cfg: AppConfig,
    *,
    cfg_path: str | None = None,
    window_s: float = 1.5,
    names: list[str] | None = None,
    stress: int = 0,
    log: Callable[[str], Any] | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Start the SUT and the injector, run the cases `names` (default all, in campaign order),
    return the report (module docstring). KeyboardInterrupt (SIGINT/SIGTERM) ends it early with
    a partial report (``complete`` false)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    from rt_safe_rl.bench.fault_cases import CASE_NAMES, CASES  # lazy: cycle: fault_cases imports faults
    from rt_safe_rl.bench.fault_injector import FaultInjector
    from rt_safe_rl.core.robot_model import RobotModel

    unknown = sorted(set(names or []) - set(CASE_NAMES))
    if unknown:
        raise FaultBenchError(f'unknown case(s) {unknown}; known: {",".join(CASE_NAMES)}')
    selected = [c for c in CASES if names is None or c[0] in names]
    say = log or (lambda m: None)
    model = RobotModel.from_config(cfg.robot, cfg.base_dir)
    results: list[dict[str, Any]] = []
    recovery_v, complete, interrupted = 0, False, False
    recovery_why: list[str] = []
    with tempfile.TemporaryDirectory(prefix='rt_safe_rl_faults_') as tmp:
        # slow = 3x the configured deadline: a command that late is a fault by the config itself
        policy = write_fault_policy(
            Path(tmp) / 'fault_policy.pt', model.n_joints, 3.0 * cfg.safety.deadline_s
        )
        rctx = Context()
        rclpy.init(context=rctx, args=[], signal_handler_options=SignalHandlerOptions.NO)
        inj = FaultInjector(cfg, model, rctx)
        sut: Sut | None = None
        workers = StressWorkers(stress)
        try:
            workers.start()
            inj.start()
            sut = Sut(cfg_path, policy, Path(tmp) / 'sut.log', [])
            _wait_ready(inj, sut)
            ctx = Ctx(inj, sut, window_s, cfg)
            _recover(ctx)
            for name, fault, expect, fn in selected:
                if sut.proc.poll() is not None and name != 'sigterm':
                    results.append(_missed(name, fault, expect, f'SUT exited ({sut.proc.returncode})'))
                    continue
                res = run_case(ctx, name, fault, expect, fn)
                results.append(res)
                say(f'{name}: handled={res["handled"]} violations={res["violations"]} ({res["detail"]})')
                if name != 'sigterm':
                    r0, rl0 = inj.violations(), len(inj.audit.violation_log)
                    did = _recover(ctx)
                    if inj.violations() > r0:
                        recovery_v += inj.violations() - r0
                        recovery_why.append(f'after {name} ({did}): {_violation_text(inj, rl0)}')
            complete = True
        except KeyboardInterrupt:
            interrupted = True
        finally:
            workers.stop()
            if sut is not None:
                sut.stop()
            inj.close()
            rclpy.try_shutdown(context=rctx)
    results.append(_recovery_result(recovery_v, recovery_why))
    return _campaign_report(results, complete, interrupted, window_s, workers, inj, cfg, argv)


def _missed(name: str, fault: str, expect: str, why: str) -> dict[str, Any]:
    return {
        'name': name,
        'handled': False,
        'violations': 0,
        'fault': 'none',
        'detail': why,
        'injected': fault,
        'expect': expect,
    }


def main(argv: list[str] | None = None) -> int:
    """``rt-safe-rl bench faults`` entry point; returns the exit code (module docstring)."""
    from rt_safe_rl.bench.fault_cases import CASE_NAMES  # lazy: cycle: fault_cases imports faults

    ap = argparse.ArgumentParser(prog='rt-safe-rl bench faults', description=__doc__.split('\n\n')[0])
    ap.add_argument('--json', default='', help='also write the JSON report to this file')
    ap.add_argument('--stress', type=int, default=0, help='CPU-burning worker processes during the run')
    ap.add_argument('--window-s', type=float, default=1.5, help='seconds each fault is applied (default 1.5)')
    ap.add_argument('--cases', default='', help='comma list of cases (default all): ' + ','.join(CASE_NAMES))
    ap.add_argument('--config', default=None, help='config YAML (default: the shipped config/default.yaml)')
    args = ap.parse_args(argv)
    if not 0.1 <= args.window_s <= 30.0:
        raise FaultBenchError(f'--window-s must be in 0.1..30, got {args.window_s}')
    if not 0 <= args.stress <= 64:
        raise FaultBenchError(f'--stress must be in 0..64, got {args.stress}')
    signals.install()
    cfg = load_config(args.config)
    names = [c.strip() for c in args.cases.split(',') if c.strip()] or None
    report = run_campaign(
        cfg,
        cfg_path=args.config,
        window_s=args.window_s,
        names=names,
        stress=args.stress,
        log=lambda m: print(f'faults: {m}', file=sys.stderr, flush=True),
        argv=['rt-safe-rl', 'bench', 'faults', *(argv or [])],
    )
    text = json.dumps(report, indent=2, default=str)
    if args.json:
        Path(args.json).write_text(text + '\n')
    print(text)
    if report['interrupted']:
        return signals.exit_code(signals.received() or signal.SIGINT)
    return 0 if report['all_handled'] and report['total_violations'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
