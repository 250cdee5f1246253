"""Replay engine and `rt-safe-rl bench replay` CLI, with a small numpy stand-in pipeline.

The stand-in is a test fixture (recurrent numpy policy + clamp) so that the measurement,
determinism, interruption, reporting and regression logic is tested independently of the real
nodes; test_bench_nodes.py drives the real PolicyInferenceNode + SafetyFilterNode.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_bench_bag import ARM, write_arm_bag  # test/ is on sys.path (pytest rootdir conftest)

from rt_safe_rl.bench import replay
from rt_safe_rl.bench.config import BenchmarkConfig
from rt_safe_rl.core.errors import ConfigError


class FakePipeline:
    """Recurrent numpy policy (decimated) + joint clamp: deterministic only if reset works."""

    description = 'fake numpy pipeline'
    model_path = ''

    def __init__(self, app: Any = None, interrupt_at: int = -1, nondeterministic: bool = False) -> None:
        self.joint_names = list(ARM)
        self.n_command = 7
        self._w = np.random.default_rng(0).normal(size=(7, 14)) * 0.3
        self._h = np.zeros(7)
        self._target = np.zeros(7)
        self._cmd = np.zeros(7)
        self._seq = -1
        self._count = 0
        self.human = 0
        self.interrupt_at = interrupt_at
        self.nondeterministic = nondeterministic
        self.resets = 0

    def reset(self) -> None:
        self._h[:] = 0.0
        self._count = 0
        self.resets += 1

    def set_human(self, stamp_ns: int, xyz: np.ndarray) -> None:
        self.human += 1

    def set_operator(self, stamp_ns: int, values: np.ndarray) -> None:
        pass

    def set_policy_command(self, stamp_ns: int, values: np.ndarray) -> None:
        pass

    def policy_step(self, stamp_ns: int, seq: int, q: np.ndarray, dq: np.ndarray) -> None:
        if seq == self.interrupt_at:
            raise KeyboardInterrupt
        if self._count % 5 == 0:
            x = np.concatenate([q, dq])
            self._h = 0.9 * self._h + np.tanh(self._w @ x)
            if self.nondeterministic:
                self._h += np.random.default_rng().normal(size=7) * 1e-9
            self._target = q + 0.1 * self._h
        self._count += 1
        self._seq = seq

    def safety_step(self, seq: int) -> bool:
        np.clip(self._target, -0.5, 0.5, out=self._cmd)
        return bool(np.any(self._cmd != self._target))

    def read_command(self, out: np.ndarray) -> int:
        out[:] = self._cmd
        return self._seq

    def close(self) -> None:
        pass


@pytest.fixture(scope='module')
def arm_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_arm_bag(tmp_path_factory.mktemp('bags') / 'arm', n=3000)


def _inputs(arm_bag: Path, n: int = 0) -> replay.Inputs:
    from rt_safe_rl.bench import bag

    info = bag.inspect_bag(arm_bag)
    return replay.load_inputs(info, BenchmarkConfig(max_messages=n), ARM)


def test_engine_max_rate_records_every_message(arm_bag: Path) -> None:
    """Every state is measured, stages are ordered in time, commands copied, side stream fed."""
    inputs = _inputs(arm_bag)
    assert inputs.human.n == 300 and inputs.operator.n == 0
    pipe = FakePipeline()
    r = replay.ReplayEngine(pipe, inputs, 'max').run()
    assert r.complete and r.count == 3000 and pipe.human == 300
    rec = r.records
    assert np.all(np.diff(rec[:, replay.COL_SEQ]) == 1)
    assert np.all(rec[:, replay.COL_IN] >= rec[:, replay.COL_RELEASE])
    assert np.all(rec[:, replay.COL_OUT] >= rec[:, replay.COL_POLICY])
    assert np.all(np.abs(r.commands) <= 0.5) and np.isfinite(r.commands).all()
    assert rec[:, replay.COL_INTERVENED].sum() > 0


def test_engine_fixed_rate_paces(arm_bag: Path) -> None:
    """At a fixed 2 kHz 1000 messages take at least 0.5 s and releases follow the schedule."""
    inputs = _inputs(arm_bag, 1000)
    r = replay.ReplayEngine(FakePipeline(), inputs, 'fixed', 2000.0).run()
    assert r.count == 1000
    assert r.wall_ns / 1e9 >= 0.4995  # never faster than the schedule (no upper bound: shared CPU)
    release = r.records[:, replay.COL_RELEASE]
    np.testing.assert_allclose(release, np.arange(1000) * 500_000.0)


def test_determinism_detects_reset_and_noise(arm_bag: Path) -> None:
    """Two resets passes hash equal; a pipeline with noise is reported not identical."""
    inputs = _inputs(arm_bag)
    cfg = BenchmarkConfig(repeat=2, progress=False, warmup_messages=10)
    fields, samples, _ = replay.run_benchmark(FakePipeline(), inputs, cfg, deadline_ns=1_000_000)
    det = fields['determinism']
    assert det['identical'] is True and len(det['runs']) == 2 and len(det['command_sha256']) == 64
    assert fields['messages'] == 2 * 3000 - 10 and fields['complete']
    assert fields['stages']['e2e_us']['count'] == 5990 and samples['e2e_us'].size == 5990
    fields2, _, _ = replay.run_benchmark(
        FakePipeline(nondeterministic=True), inputs, cfg, deadline_ns=1_000_000
    )
    assert fields2['determinism']['identical'] is False


def test_single_repeat_adds_a_determinism_pass(arm_bag: Path) -> None:
    """--repeat 1 still checks determinism with one extra (unmeasured) max-rate pass."""
    pipe = FakePipeline()
    fields, _, _ = replay.run_benchmark(
        pipe, _inputs(arm_bag), BenchmarkConfig(repeat=1, progress=False), deadline_ns=1_000_000
    )
    assert pipe.resets == 2 and fields['determinism']['checked'] and fields['repeats'] == 1


def test_interrupted_run_keeps_partial_results(arm_bag: Path) -> None:
    """Ctrl-C mid-replay: the messages done so far are analysed and marked incomplete."""
    pipe = FakePipeline(interrupt_at=1500)
    fields, _, _ = replay.run_benchmark(
        pipe,
        _inputs(arm_bag),
        BenchmarkConfig(repeat=2, progress=False, warmup_messages=0),
        deadline_ns=1_000_000,
    )
    assert fields['complete'] is False and fields['messages'] == 1500 and fields['repeats'] == 1
    assert fields['determinism']['identical'] is False


def test_naive_ratio(arm_bag: Path) -> None:
    """With a naive runner the report carries its stages and the p99 ratio."""

    def naive(inputs: replay.Inputs, cfg: BenchmarkConfig) -> dict[str, Any]:
        return {
            'stages': {'e2e_us': {'p50': 500.0, 'p99': 1000.0, 'p999': 2000.0, 'max': 3000.0}},
            'complete': True,
        }

    fields, _, _ = replay.run_benchmark(
        FakePipeline(),
        _inputs(arm_bag),
        BenchmarkConfig(repeat=1, naive=True, progress=False),
        deadline_ns=1_000_000,
        naive_runner=naive,
    )
    ratio = fields['ratios']['e2e_p99_naive_over_ours']
    assert ratio == pytest.approx(1000.0 / fields['stages']['e2e_us']['p99'])


def test_stress_workers_run_and_stop(arm_bag: Path) -> None:
    """--stress starts bounded workers and records them; none is left running."""
    from rt_safe_rl.bench.stress import StressWorkers

    fields, _, _ = replay.run_benchmark(
        FakePipeline(),
        _inputs(arm_bag),
        BenchmarkConfig(repeat=1, stress_workers=1, stress_duty=0.5, progress=False),
        deadline_ns=1_000_000,
    )
    assert fields['stress']['workers'] == 1 and fields['stress']['wall_s'] > 0
    w = StressWorkers(1, max_s=0.3)
    w.start()
    import time

    end = time.monotonic() + 30.0
    while w.alive() and time.monotonic() < end:
        time.sleep(0.1)
    assert w.alive() == 0  # stopped by itself after max_s
    w.stop()
    with pytest.raises(ValueError):
        StressWorkers(1, duty=0.0)


# --------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def fake_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    import rt_safe_rl.bench.pipeline as pl

    monkeypatch.setattr(pl, 'NodePipeline', FakePipeline)


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = replay.main([*args, '--no-progress', '--max-messages', '1000'])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_writes_reports(
    arm_bag: Path, tmp_path: Path, fake_nodes: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0, JSON summary on stdout, report files on disk with the contract keys."""
    rc, out, _ = _cli([str(arm_bag), '--out', str(tmp_path / 'r'), '--repeat', '2'], capsys)
    assert rc == 0
    summary = json.loads(out)
    assert summary['complete'] and summary['determinism']['identical']
    rep = json.loads((tmp_path / 'r' / 'report.json').read_text())
    for key in (
        'metadata',
        'messages',
        'throughput_msgs_per_s',
        'stages',
        'misses',
        'determinism',
        'complete',
    ):
        assert key in rep
    for stage in ('e2e_us', 'inference_us', 'safety_us'):
        assert set(rep['stages'][stage]) >= {'p50', 'p90', 'p99', 'p999', 'max'}
    assert rep['metadata']['bag']['sha256'] and rep['state_topic'] == '/joint_states'
    assert (tmp_path / 'r' / 'report.html').is_file() and (tmp_path / 'r' / 'report.md').is_file()
    assert (tmp_path / 'r' / 'latency_histogram.png').is_file()

    # regression check: passes against itself with a huge tolerance and deadline (no timing luck) ...
    rc, _, _ = _cli(
        [
            str(arm_bag),
            '--out',
            str(tmp_path / 'r2'),
            '--baseline',
            str(tmp_path / 'r'),
            '--tolerance',
            '10',
            '--deadline-us',
            '1e7',
        ],
        capsys,
    )
    assert rc == 0
    # ... and fails (exit 1, table on stderr) against a baseline that was 100x faster
    rep['stages']['e2e_us']['p99'] /= 100.0
    (tmp_path / 'fast.json').write_text(json.dumps(rep))
    rc, _, err = _cli(
        [str(arm_bag), '--out', str(tmp_path / 'r3'), '--baseline', str(tmp_path / 'fast.json')], capsys
    )
    assert rc == 1 and 'REGRESSION' in err and 'stages.e2e_us.p99' in err
    assert json.loads((tmp_path / 'r3' / 'report.json').read_text())['comparison']['passed'] is False


@pytest.mark.parametrize(
    ('args', 'message'),
    [
        (['{missing}'], 'bag not found'),
        (['{bag}', '--rate', 'fast'], "rate must be 'recorded', 'max' or a number"),
        (['{bag}', '--state-topic', '/human/position'], 'expected sensor_msgs/msg/JointState'),
        (['{bag}', '--joint-map', 'nonsense'], 'expected BAG_JOINT=ROBOT_JOINT'),
        (['{bag}', '--baseline', '{missing}'], 'baseline report not found'),
        (['{bag}', '--policy', '{missing}'], '--policy: file not found'),
    ],
)
def test_cli_bad_input_exits_2(
    arm_bag: Path,
    tmp_path: Path,
    fake_nodes: None,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    """Bad input: one line on stderr, exit code 2, no traceback."""
    argv = [a.format(bag=arm_bag, missing=tmp_path / 'missing') for a in args]
    rc, _, err = _cli([*argv, '--out', str(tmp_path / 'o')], capsys)
    assert rc == 2
    assert message in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1


def test_cli_list_and_interrupt(
    arm_bag: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--list prints the topics; an interrupted run exits 130 with a partial, marked report."""
    import rt_safe_rl.bench.pipeline as pl

    rc, out, _ = _cli([str(arm_bag), '--list'], capsys)
    assert rc == 0 and '/joint_states (sensor_msgs/msg/JointState, 3000 msgs)' in out  # --list: whole bag
    monkeypatch.setattr(pl, 'NodePipeline', lambda app: FakePipeline(interrupt_at=700))
    rc, _, err = _cli([str(arm_bag), '--out', str(tmp_path / 'i')], capsys)
    assert rc == 130 and 'interrupted' in err
    rep = json.loads((tmp_path / 'i' / 'report.json').read_text())
    assert rep['complete'] is False and rep['messages'] > 0


def test_joint_map_parsing() -> None:
    """BAG=ROBOT pairs, comma separated; malformed items are ConfigErrors."""
    assert replay.parse_joint_map('a=joint1, b = joint2') == {'a': 'joint1', 'b': 'joint2'}
    with pytest.raises(ConfigError):
        replay.parse_joint_map('a=')


class NullPipeline(FakePipeline):
    """Does nothing per message: what remains is the measurement loop itself."""

    def policy_step(self, stamp_ns: int, seq: int, q: np.ndarray, dq: np.ndarray) -> None:
        self._seq = seq

    def safety_step(self, seq: int) -> bool:
        return False


def test_measurement_loop_keeps_no_per_message_memory(arm_bag: Path) -> None:
    """Peak traced memory grows only by the preallocated result arrays (records + commands)."""
    import tracemalloc

    def peak(n: int) -> int:
        engine = replay.ReplayEngine(NullPipeline(), _inputs(arm_bag, n), 'max')
        tracemalloc.start()
        try:
            r = engine.run()
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert r.count == n
        return top

    prealloc_per_msg = 8 * (replay.RECORD_WIDTH + 7)  # float64 record row + float64 command row
    growth = peak(3000) - peak(1000) - 2000 * prealloc_per_msg
    assert growth < 16_384, growth  # nothing kept per message beyond the preallocated arrays
