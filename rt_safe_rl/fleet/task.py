"""One fleet task: replay one bag under one variant, exactly as ``rt-safe-rl bench replay`` does,
and turn the pass into one result row.

The replay is the bench's: :func:`rt_safe_rl.bench.replay.load_app` (config + ``--set`` +
``--policy``), :func:`~rt_safe_rl.bench.replay_engine.load_inputs`, the policy and safety
lifecycle nodes composed in-process (:class:`~rt_safe_rl.bench.pipeline.NodePipeline`, the nodes'
own RT-path methods), reset, then one :class:`~rt_safe_rl.bench.replay_engine.ReplayEngine` pass
at max rate with the GC quiet. It is open loop over the recorded states (each command computed
from the recorded state; the filter's own state, its previous commands and latches, carries on),
so the command stream's SHA-256 equals ``bench replay``'s ``determinism.command_sha256`` for the
same bag and variant. Every fail-closed rule of the nodes applies (a latched stop stays latched
for the rest of the bag, as on the robot).

After each state (outside the timed stages) :class:`ProbePipeline` copies the filter report's
stop / latch flags, human separation and SSM margin into preallocated arrays; the row's metrics
come from them, from the command stream (:class:`~rt_safe_rl.sim.arm.CommandAudit` against the
robot's limits at the control period) and from the stage samples (``core/stats`` only).

:func:`run_task` never raises for a bad bag or config: the row then has ``error``. It runs in a
Ray worker (or in-process for ``--scaling``'s single-process baseline); a worker keeps up to
:data:`CACHE_SIZE` composed pipelines (one per variant config), reset before each pass.
Not RT code.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.bench import bag as bagmod
from rt_safe_rl.bench.pipeline import NodePipeline
from rt_safe_rl.bench.replay import load_app
from rt_safe_rl.bench.replay_engine import (
    COL_IN,
    COL_INTERVENED,
    COL_OUT,
    COL_POLICY,
    ReplayEngine,
    load_inputs,
    robot_joint_names,
)
from rt_safe_rl.bench.replay_run import NodeStages, gc_quiet
from rt_safe_rl.core import stats
from rt_safe_rl.core.errors import RtSafeRlError

FloatArray = npt.NDArray[np.float64]
CACHE_SIZE = 4
_PIPELINES: OrderedDict[str, Any] = OrderedDict()


class ProbePipeline:
    """A :class:`~rt_safe_rl.bench.replay_engine.ReplayPipeline` that forwards to a NodePipeline
    and, in ``read_command`` (after the timed safety stage), records the safety filter's report
    of that state: stopping, latched, human distance (m) and SSM margin (m). Preallocated."""

    def __init__(self, inner: Any, n_states: int) -> None:
        self.inner = inner
        self.description = inner.description
        self.joint_names = inner.joint_names
        self.n_command = inner.n_command
        self.model_path = inner.model_path
        self.stopping = np.zeros(n_states, dtype=bool)
        self.latched = np.zeros(n_states, dtype=bool)
        self.human_m = np.full(n_states, np.inf)
        self.ssm_margin_m = np.full(n_states, np.inf)
        self._i = 0
        self.set_human = inner.set_human
        self.set_operator = inner.set_operator
        self.set_policy_command = inner.set_policy_command
        self.policy_step = inner.policy_step
        self.safety_step = inner.safety_step

    def reset(self) -> None:
        """Reset the nodes (recurrent state, latches) and the probe."""
        self.inner.reset()
        self._i = 0

    def read_command(self, out: FloatArray) -> int:
        """The inner command, then the report of this state."""
        seq = int(self.inner.read_command(out))
        i = self._i
        if i < self.stopping.size:
            f = self.inner.safety.filter
            rep = f.report if f is not None else None
            if rep is not None:
                self.stopping[i] = rep.stopping
                self.latched[i] = rep.latched
                self.human_m[i] = rep.human_distance_m
                self.ssm_margin_m[i] = rep.ssm_margin_m
            self._i = i + 1
        return seq

    def close(self) -> None:
        """Nothing: the inner pipeline is cached by the worker."""


def _cached_pipeline(app: Any) -> Any:
    """A composed NodePipeline for this config (cached per worker process, LRU of CACHE_SIZE)."""
    key = json.dumps(app.to_dict(), sort_keys=True, default=str)
    pipe = _PIPELINES.pop(key, None)
    if pipe is None:
        while len(_PIPELINES) >= CACHE_SIZE:
            _PIPELINES.popitem(last=False)[1].close()
        pipe = NodePipeline(app)
    _PIPELINES[key] = pipe
    return pipe


def close_cached() -> None:
    """Close every cached pipeline (end of a worker's use; tests)."""
    while _PIPELINES:
        _PIPELINES.popitem()[1].close()


def _edges(flags: npt.NDArray[np.bool_]) -> int:
    """Number of False -> True transitions (a run starting at index 0 counts)."""
    if flags.size == 0:
        return 0
    return int(flags[0]) + int(np.count_nonzero(flags[1:] & ~flags[:-1]))


def _pcts(samples_us: FloatArray) -> dict[str, float]:
    p = stats.percentiles(samples_us)
    return {'p50': p['p50'], 'p99': p['p99']}


def _audit(app: Any, model: Any, commands: FloatArray, n: int) -> dict[str, Any]:
    from rt_safe_rl.sim.arm import ArmLimits, CommandAudit

    audit = CommandAudit(
        ArmLimits.from_model(model, app.sim.robot),
        app.control.period_ns * 1e-9,
        app.sim.robot.limit_tolerance,
    )
    missing = 0
    for i in range(n):
        if np.all(np.isfinite(commands[i])):
            audit.check(i, commands[i])
        else:
            missing += 1  # no command for this state (before the first valid one): not sent
            audit.reset_stream()
    s = audit.summary()
    s['missing_commands'] = missing
    return s


def row_metrics(
    app: Any, probe: ProbePipeline, run: Any, inputs: Any, node_policy_us: FloatArray
) -> dict[str, Any]:
    """The metrics of one pass (see the module docstring). Not RT-safe."""
    n = run.count
    recv = inputs.states.recv_ns[:n]
    dt_s = np.diff(recv) / 1e9
    dt_s = np.append(dt_s, float(np.median(dt_s)) if dt_s.size else 0.0)
    duration_s = float((recv[-1] - recv[0]) / 1e9) if n >= 2 else 0.0
    rec = run.records[:n]
    interventions = int(rec[:, COL_INTERVENED].sum())
    stopping, latched = probe.stopping[:n], probe.latched[:n]
    human = probe.human_m[:n]
    below = probe.ssm_margin_m[:n] < 0.0
    policy_us = node_policy_us if node_policy_us.size else (rec[:, COL_POLICY] - rec[:, COL_IN]) / 1e3
    safety_us = (rec[:, COL_OUT] - rec[:, COL_POLICY]) / 1e3
    audit = _audit(app, probe.inner.safety.model, run.commands, n)
    finite_h = human[np.isfinite(human)]
    return {
        'states': n,
        'duration_s': duration_s,
        'interventions': interventions,
        'interventions_per_min': interventions / (duration_s / 60.0) if duration_s > 0 else math.nan,
        'stops': _edges(stopping),
        'stopped_s': float(dt_s[stopping].sum()),
        'latched_stops': _edges(latched),
        'min_human_separation_m': float(finite_h.min()) if finite_h.size else None,
        'below_protective_s': float(dt_s[below].sum()),
        'max_velocity_ratio': audit['max_velocity_ratio'],
        'max_acceleration_ratio': audit['max_acceleration_ratio'],
        'violations': int(
            audit['position_violations'] + audit['velocity_violations'] + audit['acceleration_violations']
        ),
        'missing_commands': audit['missing_commands'],
        'policy_us': _pcts(policy_us),
        'safety_us': _pcts(safety_us),
        'command_sha256': run.command_sha256(),
        'complete': bool(run.complete),
        'replay_s': run.wall_ns / 1e9,
        'states_per_s': n / (run.wall_ns / 1e9) if run.wall_ns > 0 else math.nan,
        '_samples': {'policy_us': policy_us, 'safety_us': safety_us},
    }


def _replay(spec: dict[str, Any], row: dict[str, Any]) -> None:
    variant = spec['variant']
    app = load_app(spec.get('config'), variant.get('policy') or None, variant.get('sets', ()))
    cfg = replace(app.benchmark, max_messages=int(spec.get('max_messages', 0)), progress=False)
    info = bagmod.inspect_bag(spec['bag'])
    inputs = load_inputs(info, cfg, robot_joint_names(app), app.topics)
    pipe = _cached_pipeline(app)
    row['backend'] = pipe.description.rsplit('policy backend ', 1)[-1]
    probe = ProbePipeline(pipe, inputs.states.n)
    node_stages = NodeStages()
    engine = ReplayEngine(probe, inputs, 'max', 0.0, node_stages.chain(None))
    node_stages.drain()
    node_stages.clear()
    probe.reset()
    with gc_quiet(True):
        run = engine.run()
    node_stages.drain()
    node_policy = node_stages.samples_ns('inference') / 1e3
    row.update(row_metrics(app, probe, run, inputs, node_policy))


def run_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Replay ``spec['bag']`` under ``spec['variant']`` (a :meth:`Variant.to_dict`); return the row.

    ``spec`` keys: bag, variant, config (None = shipped), max_messages (0 = all), and for fault
    tests pid_file (each attempt appends its worker's pid) and start_delay_s (the first attempt,
    i.e. pid_file still absent, sleeps that long before the replay: time to kill its worker).
    A bad bag / config gives a row with ``error`` (one line); nothing is raised for it.
    """
    t0 = time.monotonic()
    variant = spec['variant']
    row: dict[str, Any] = {
        'bag': str(spec['bag']),
        'variant': variant['name'],
        'variant_index': int(variant['index']),
        'host': socket.gethostname(),
        'pid': os.getpid(),
    }
    first_attempt = True
    if spec.get('pid_file'):
        pid_file = str(spec['pid_file'])
        first_attempt = not os.path.exists(pid_file)
        with open(pid_file, 'a') as f:
            f.write(f'{os.getpid()}\n')
    if spec.get('start_delay_s') and first_attempt:
        time.sleep(float(spec['start_delay_s']))
    try:
        _replay(spec, row)
    except RtSafeRlError as err:
        row['error'] = str(err).splitlines()[0] if str(err) else type(err).__name__
    except Exception as err:  # broad on purpose: one bad bag is one error row, the fleet goes on
        row['error'] = f'{type(err).__name__}: {err}'.splitlines()[0]
    row['task_s'] = time.monotonic() - t0
    return row
