"""The replay core of ``rt-safe-rl bench replay`` and ``rt-safe-rl fleet replay``: decoded bag
inputs, the :class:`ReplayPipeline` protocol, :class:`ReplayEngine` (one pass over the states),
and the analysis of its records (stages, determinism, fidelity).

Measurement (per state message, see :class:`ReplayEngine`): the replay loop releases message
``i`` (at its recorded time, a fixed rate, or at once for ``max``), calls the pipeline's policy
step and safety step directly in one thread, and stamps ``CLOCK_MONOTONIC`` before and after
each. Stages: ``replay_to_input`` (release -> policy input), ``inference`` (policy step incl.
the node's hand-off), ``safety`` (safety step incl. the command write), ``e2e`` (release -> safe
command out). Samples go through an :class:`~rt_safe_rl.rt.ring.SpscRing` into preallocated
arrays, so the measured loop allocates no arrays. Commands are copied into a preallocated matrix
and hashed after the run (determinism).

The replay is open loop over the recorded states: each command is computed from the recorded
state (the filter's own state, e.g. its previous command for the rate limits, carries on).
Not RT code itself, but the measured loop adds no allocation to the nodes' RT path.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from rt_safe_rl.bench import bag as bagmod
from rt_safe_rl.bench.config import BenchmarkConfig
from rt_safe_rl.core import stats
from rt_safe_rl.core.errors import BagError
from rt_safe_rl.rt.ring import SpscRing

FloatArray = npt.NDArray[np.float64]
# columns of one measurement record (ns relative to the run start, as float64: exact below 2**53)
COL_SEQ, COL_RELEASE, COL_IN, COL_POLICY, COL_OUT, COL_INTERVENED = range(6)
RECORD_WIDTH = 6
DRAIN_EVERY = 1024
# A SCHED_FIFO thread that is busy > 95 % of a second is throttled by the kernel for the rest of
# it (50 ms stalls, sched_rt_runtime_us). At max rate under FIFO the loop therefore sleeps
# FIFO_PAUSE_NS every FIFO_PAUSE_PERIOD_NS, between messages (outside every timed section; the
# pauses count in the throughput's wall time).
FIFO_PAUSE_PERIOD_NS = 100_000_000
FIFO_PAUSE_NS = 15_000_000
_LAST_FIFO_PAUSE_NS = [0]  # across passes: repeats run back to back on the same CPU


class ReplayPipeline(Protocol):
    """What the replay engine drives. Implementations: :mod:`rt_safe_rl.bench.pipeline`.

    ``policy_step``/``safety_step``/``read_command`` are the RT path (no allocation expected).
    """

    description: str
    joint_names: list[str]
    n_command: int
    model_path: str

    def reset(self) -> None:
        """Reset recurrent policy state and safety latches (determinism between repeats)."""

    def set_human(self, stamp_ns: int, xyz: FloatArray) -> None:
        """Latest human position (m)."""

    def set_operator(self, stamp_ns: int, values: FloatArray) -> None:
        """Latest operator position targets (rad)."""

    def set_policy_command(self, stamp_ns: int, values: FloatArray) -> None:
        """Latest task command for the policy."""

    def policy_step(self, stamp_ns: int, seq: int, q: FloatArray, dq: FloatArray) -> None:
        """Run the policy's control step for one state; ``stamp_ns`` is the recorded time."""

    def safety_step(self, seq: int) -> bool:
        """Run the safety filter on the latest action; True when it intervened."""

    def read_command(self, out: FloatArray) -> int:
        """Copy the latest safe command into ``out``; return its state seq (-1 = none)."""

    def close(self) -> None:
        """Release everything (nodes, contexts)."""


@dataclass
class RunResult:
    """Raw results of one repeat: records (n, RECORD_WIDTH), commands (n, n_command), wall time."""

    records: FloatArray
    commands: FloatArray
    count: int
    wall_ns: int
    complete: bool

    def command_sha256(self) -> str:
        """SHA-256 of the float64 command stream (bit-exact)."""
        return hashlib.sha256(np.ascontiguousarray(self.commands[: self.count]).tobytes()).hexdigest()


@dataclass
class Inputs:
    """Everything replayed: the state stream and the optional side streams."""

    states: bagmod.StateStream
    human: bagmod.SideStream = field(default_factory=bagmod.SideStream)
    operator: bagmod.SideStream = field(default_factory=bagmod.SideStream)
    policy_command: bagmod.SideStream = field(default_factory=bagmod.SideStream)
    recorded_commands: bagmod.SideStream = field(default_factory=bagmod.SideStream)


class ReplayInterruptedError(Exception):
    """Raised inside the replay loop by SIGTERM (SIGINT raises KeyboardInterrupt)."""


class ReplayEngine:
    """Replays :class:`Inputs` through a :class:`ReplayPipeline` and records timings.

    Args:
        pipeline: the system under test.
        inputs: decoded bag streams.
        rate_mode / rate_hz: ``max``, ``recorded`` or ``fixed`` at ``rate_hz``.
        on_progress: called every DRAIN_EVERY messages with (done, total) (not in the timed part).
        stop_event: set from another thread (e.g. a lifecycle deactivate) to stop the pass.
    """

    def __init__(
        self,
        pipeline: ReplayPipeline,
        inputs: Inputs,
        rate_mode: str = 'max',
        rate_hz: float = 0.0,
        on_progress: Callable[[int, int], None] | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.fifo_pause_ns = 0  # set by the caller when a max-rate pass runs under SCHED_FIFO
        self.inputs = inputs
        self.rate_mode = rate_mode
        self.rate_hz = rate_hz
        self.on_progress = on_progress
        n = inputs.states.n
        self._ring = SpscRing(DRAIN_EVERY * 4, RECORD_WIDTH)
        self._row = np.zeros(RECORD_WIDTH, dtype=np.float64)
        self._cmd = np.zeros(pipeline.n_command, dtype=np.float64)
        self._n = n
        # release offsets (ns from the run start) for paced modes
        if rate_mode == 'recorded':
            recv = inputs.states.recv_ns
            self._offsets = (recv - recv[0]).astype(np.int64)
        elif rate_mode == 'fixed':
            self._offsets = np.arange(n, dtype=np.int64) * round(1e9 / rate_hz)
        else:
            self._offsets = np.zeros(0, dtype=np.int64)

    def _side_feeders(self) -> list[tuple[bagmod.SideStream, Callable[[int, FloatArray], None]]]:
        p = self.pipeline
        out: list[tuple[bagmod.SideStream, Callable[[int, FloatArray], None]]] = []
        for stream, fn in (
            (self.inputs.human, p.set_human),
            (self.inputs.operator, p.set_operator),
            (self.inputs.policy_command, p.set_policy_command),
        ):
            if stream.n:
                out.append((stream, fn))
        return out

    def run(self) -> RunResult:
        """One pass over the bag (call ``pipeline.reset()`` first for determinism).

        KeyboardInterrupt / :class:`ReplayInterruptedError` stop the pass; the result then has
        ``complete=False`` and the messages done so far.
        """
        n = self._n
        states = self.inputs.states
        # the policy sees the recorded timeline (bag receive times): its decimation and
        # observation phase follow the recording, not the replay speed -> deterministic
        q, dq, stamps = states.q, states.dq, states.recv_ns
        records = np.zeros((n, RECORD_WIDTH), dtype=np.float64)
        commands = np.zeros((n, self.pipeline.n_command), dtype=np.float64)
        feeders, side_pos = self._primed_side_feeders(int(states.recv_ns[0]))
        recv = states.recv_ns
        ring, row, cmd = self._ring, self._row, self._cmd
        policy_step, safety_step = self.pipeline.policy_step, self.pipeline.safety_step
        read_command = self.pipeline.read_command
        paced = self.rate_mode in ('recorded', 'fixed')
        offsets = self._offsets
        mono = time.monotonic_ns
        sleep = time.sleep
        stopping = self.stop_event.is_set
        drained = 0
        pause_ns = self.fifo_pause_ns if not paced else 0
        last_pause = _LAST_FIFO_PAUSE_NS[0] or mono()
        complete = True
        i = 0
        t0 = mono()
        try:
            for i in range(n):
                if stopping():
                    raise ReplayInterruptedError('stop requested')
                # side inputs up to this state's receive time (not timed: they arrive asynchronously)
                for k, (stream, fn) in enumerate(feeders):
                    j = side_pos[k]
                    while j < stream.n and stream.recv_ns[j] <= recv[i]:
                        fn(int(stream.recv_ns[j]), stream.values[j])
                        j += 1
                    side_pos[k] = j
                if paced:
                    release = t0 + int(offsets[i])
                    wait = release - mono()
                    if wait > 200_000:
                        sleep((wait - 150_000) * 1e-9)
                    while mono() < release:
                        pass
                else:
                    release = mono()
                t_in = mono()
                policy_step(int(stamps[i]), i, q[i], dq[i])
                t_pol = mono()
                intervened = safety_step(i)
                t_out = mono()
                seq = read_command(cmd)
                commands[i] = cmd if seq == i else np.nan
                row[COL_SEQ] = i
                row[COL_RELEASE] = release - t0
                row[COL_IN] = t_in - t0
                row[COL_POLICY] = t_pol - t0
                row[COL_OUT] = t_out - t0
                row[COL_INTERVENED] = 1.0 if intervened else 0.0
                ring.try_push(row)
                if pause_ns and (i & 63) == 63:
                    now = mono()
                    if now - last_pause >= FIFO_PAUSE_PERIOD_NS:
                        sleep(pause_ns * 1e-9)
                        last_pause = mono()
                        _LAST_FIFO_PAUSE_NS[0] = last_pause
                if (i + 1) % DRAIN_EVERY == 0:
                    drained += ring.drain(records[drained:])
                    if self.on_progress is not None:
                        self.on_progress(i + 1, n)
            i = n
        except (KeyboardInterrupt, ReplayInterruptedError):
            complete = False
        wall = mono() - t0
        return self._finish(records, commands, drained, wall, complete)

    def _primed_side_feeders(
        self, first_state_ns: int
    ) -> tuple[list[tuple[bagmod.SideStream, Callable[[int, FloatArray], None]]], list[int]]:
        """The side feeders, each primed with its first message, so each repeat starts from the
        same inputs whatever the previous pass left in the nodes (human, operator, task command);
        with each one's next message index (1 if that first message is not after the first state's
        receive time ``first_state_ns`` [ns], else 0)."""
        feeders = self._side_feeders()
        for stream, fn in feeders:
            fn(int(stream.recv_ns[0]), stream.values[0])
        side_pos = [1 if stream.recv_ns[0] <= first_state_ns else 0 for stream, _ in feeders]
        return feeders, side_pos

    def _finish(
        self, records: FloatArray, commands: FloatArray, drained: int, wall_ns: int, complete: bool
    ) -> RunResult:
        """Drain the rest of the record ring after the pass (``drained`` rows so far), report the
        progress, and wrap the pass (``wall_ns``: its wall time, ns) as a :class:`RunResult`."""
        drained += self._ring.drain(records[drained:])
        if self.on_progress is not None:
            self.on_progress(drained, self._n)
        return RunResult(records, commands, drained, wall_ns, complete)


# ---------------------------------------------------------------------------------------------
# analysis


def analyse(
    runs: Sequence[RunResult],
    warmup: int,
    deadline_ns: int,
    rate_mode: str,
    bins: int,
    stage_names: tuple[str, str] = ('inference_us', 'safety_us'),
) -> tuple[dict[str, Any], dict[str, FloatArray], FloatArray]:
    """Statistics over all repeats (the first ``warmup`` records of the first run excluded).

    Returns (report fields, samples in us per stage, replay time in s of the e2e samples).
    """
    parts = []
    times = []
    offset_s = 0.0
    for k, r in enumerate(runs):
        rec = r.records[: r.count]
        rec = rec[warmup:] if k == 0 else rec
        parts.append(rec)
        times.append(offset_s + rec[:, COL_RELEASE] / 1e9)  # repeats one after the other
        offset_s += r.wall_ns / 1e9
    rec = np.vstack(parts) if parts else np.zeros((0, RECORD_WIDTH))
    e2e = (rec[:, COL_OUT] - rec[:, COL_RELEASE]) / 1e3
    samples = {
        'e2e_us': e2e,
        stage_names[0]: (rec[:, COL_POLICY] - rec[:, COL_IN]) / 1e3,
        stage_names[1]: (rec[:, COL_OUT] - rec[:, COL_POLICY]) / 1e3,
        'replay_to_input_us': (rec[:, COL_IN] - rec[:, COL_RELEASE]) / 1e3,
    }
    stages = {k: stats.summarize(v) for k, v in samples.items()}
    # output period jitter: |output interval - scheduled release interval| (the schedule is the
    # fixed period, or the recording's own, possibly irregular, intervals); none at max rate
    jitter_parts = []
    if rate_mode != 'max':
        for k, r in enumerate(runs):
            rr = r.records[: r.count]
            if k == 0:
                rr = rr[warmup:]
            if rr.shape[0] >= 2:
                jitter_parts.append(np.abs(np.diff(rr[:, COL_OUT]) - np.diff(rr[:, COL_RELEASE])))
    jit = np.concatenate(jitter_parts) if jitter_parts else np.zeros(0)
    stages['period_jitter_us'] = stats.summarize(jit / 1e3)
    misses = stats.deadline_misses(e2e * 1e3, deadline_ns)
    wall_s = sum(r.wall_ns for r in runs) / 1e9
    total = sum(r.count for r in runs)
    counts, edges = stats.histogram(e2e, bins=bins, log=True)
    t_s = np.concatenate(times) if times else np.zeros(0)
    fields = {
        'messages': int(rec.shape[0]),
        'messages_replayed': int(total),
        'throughput_msgs_per_s': (total / wall_s) if wall_s > 0 else math.nan,
        'stages': stages,
        'misses': int(misses),
        'miss_rate': (misses / rec.shape[0]) if rec.shape[0] else math.nan,
        'interventions': int(rec[:, COL_INTERVENED].sum()),
        'histogram': {'e2e_us': {'edges': edges.tolist(), 'counts': counts.tolist()}},
    }
    return fields, samples, t_s


def fidelity(run: RunResult, inputs: Inputs) -> dict[str, Any]:
    """How close the replayed safe commands are to the recorded ones (matched to their states).

    The recorded loop ran with live timing (skipped cycles, operator and human updates landing
    between states), so small differences are expected; a large one means the replay does not
    reproduce what ran. Empty dict when the bag has no recorded commands or nothing to match.
    """
    rec = inputs.recorded_commands
    seqs = inputs.states.header_ns if rec.keys_are_stamps else inputs.states.frame_seq
    if rec.n == 0 or seqs.size == 0 or rec.values.shape[1] != run.commands.shape[1]:
        return {}
    row_of = {int(s): i for i, s in enumerate(rec.offsets)}
    diffs = []
    for i in range(min(run.count, seqs.size)):
        j = row_of.get(int(seqs[i]), -1)
        if j >= 0:
            diffs.append(float(np.max(np.abs(run.commands[i] - rec.values[j]))))
    if not diffs:
        return {}
    return {
        'topic': rec.topic,
        'compared': len(diffs),
        'max_abs_diff_rad': {k: v for k, v in stats.summarize(diffs).items() if k != 'count'},
        'method': 'per state: max over joints of |replayed - recorded| safe command (rad), '
        + (
            'matched by the header stamp of the state each command answers'
            if rec.keys_are_stamps
            else 'matched by seq (frame_id / layout.data_offset: an older recording)'
        ),
    }


def determinism(runs: Sequence[RunResult]) -> dict[str, Any]:
    """Command-stream hashes of the complete runs and whether they are all identical."""
    hashes = [r.command_sha256() for r in runs if r.complete]
    identical = len(hashes) >= 2 and len(set(hashes)) == 1
    return {
        'identical': identical,
        'command_sha256': hashes[0] if hashes else '',
        'runs': hashes,
        'checked': len(hashes) >= 2,
        'method': 'float64 safe-command stream of each full replay, pipeline reset before each',
    }


def load_inputs(
    info: bagmod.BagInfo, cfg: BenchmarkConfig, joint_names: Sequence[str], topics: Any | None = None
) -> Inputs:
    """Select and decode the state and side topics of the bag (raises BagError with a listing)."""
    js_name = getattr(topics, 'joint_states', 'joint_states')
    st = bagmod.select_state_topic(info, cfg.state_topic, js_name)
    states = bagmod.load_joint_states(
        info, st.name, joint_names, cfg.joint_map, cfg.fill_q_rad, cfg.max_messages
    )
    if states.n < 2:
        raise BagError(f'{info.path}: {st.name} has only {states.n} message(s); need at least 2')
    human = bagmod.auto_side_topic(
        info, cfg.human_topic, getattr(topics, 'human_position', 'human/position'), bagmod.POINT_STAMPED
    )
    f64 = bagmod.FLOAT64_ARRAY
    oper = bagmod.auto_side_topic(
        info, cfg.operator_topic, getattr(topics, 'operator_command', 'operator/command'), f64
    )
    pcmd = bagmod.auto_side_topic(
        info, cfg.policy_command_topic, getattr(topics, 'policy_command', 'policy/command'), f64
    )
    return Inputs(
        states,
        bagmod.load_side_stream(info, human),
        bagmod.load_side_stream(info, oper),
        bagmod.load_side_stream(info, pcmd),
        _recorded_commands(info, cfg, joint_names, topics),
    )


def _recorded_commands(
    info: bagmod.BagInfo, cfg: BenchmarkConfig, joint_names: Sequence[str], topics: Any
) -> bagmod.SideStream:
    """The recorded safe commands: ``safety/joint_command`` (JointState, keyed by the stamp of the
    state each answers), else a Float64MultiArray command topic (older recordings: keyed by
    ``layout.data_offset``)."""
    if not cfg.command_topic:
        jc_name = getattr(topics, 'joint_command', 'safety/joint_command')
        jc = bagmod.auto_side_topic(info, '', jc_name, bagmod.JOINT_STATE)
        if jc:
            st = bagmod.load_joint_states(info, jc, joint_names, cfg.joint_map, cfg.fill_q_rad, 0)
            return bagmod.SideStream(jc, st.recv_ns, st.q, st.header_ns, keys_are_stamps=True)
    cmd_name = getattr(topics, 'robot_command', 'forward_position_controller/commands')
    cmd = bagmod.auto_side_topic(info, cfg.command_topic, cmd_name, bagmod.FLOAT64_ARRAY)
    return bagmod.load_side_stream(info, cmd)


def robot_joint_names(app: Any) -> list[str]:
    """Joint names of the configured robot model (URDF + robot section)."""
    from rt_safe_rl.core.robot_model import RobotModel

    return list(RobotModel.from_config(app.robot, app.base_dir).joint_names)
