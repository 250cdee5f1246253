"""The replay bench on the real pipeline: PolicyInferenceNode + SafetyFilterNode composed in-process
(NodePipeline), the shipped 1 kHz recording, the shared walker bag, and the naive pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _helpers import stdout_json
from test_bench_record import SHIPPED

pytest.importorskip('rclpy', reason='rclpy not installed (ROS 2 wheels or a sourced ROS 2 needed)')

WALKER = 'bags/syzygy21__walker_data_2024_11_23_15_54_49'


@pytest.fixture(scope='module')
def pipeline():  # type: ignore[no-untyped-def]
    from rt_safe_rl.bench.pipeline import NodePipeline
    from rt_safe_rl.config import load_config

    p = NodePipeline(load_config(None))
    yield p
    p.close()


def _inputs(pipeline, n: int = 1500):  # type: ignore[no-untyped-def]
    from rt_safe_rl.bench import bag
    from rt_safe_rl.bench.config import BenchmarkConfig
    from rt_safe_rl.bench.replay import load_inputs

    return load_inputs(bag.inspect_bag(SHIPPED), BenchmarkConfig(max_messages=n), pipeline.joint_names)


def test_real_pipeline_deterministic(pipeline) -> None:  # type: ignore[no-untyped-def]
    """Two max-rate replays of the shipped bag give bit-identical, finite, in-limit commands."""
    from rt_safe_rl.bench.config import BenchmarkConfig
    from rt_safe_rl.bench.replay import ReplayEngine, run_benchmark
    from rt_safe_rl.config import load_config
    from rt_safe_rl.core.robot_model import RobotModel

    inputs = _inputs(pipeline)
    assert inputs.human.n > 0 and inputs.policy_command.n > 0
    cfg = BenchmarkConfig(repeat=2, progress=False, warmup_messages=50)
    fields, _, _ = run_benchmark(pipeline, inputs, cfg, deadline_ns=1_000_000)
    assert fields['complete'] and fields['determinism']['identical'], fields['determinism']
    assert fields['messages'] == 2 * inputs.states.n - 50
    for stage in ('e2e_us', 'inference_us', 'safety_us', 'node_policy_step_us', 'node_safety_step_us'):
        assert fields['stages'][stage]['p50'] > 0
    # the policy runs at 50 Hz of recorded time: about one policy step per 20 states
    steps = fields['stages']['node_policy_step_us']['count']
    assert 0.03 * fields['messages'] < steps < 0.08 * fields['messages']
    assert fields['stages']['node_safety_step_us']['count'] == fields['messages'] + 50  # + warm-up
    pipeline.reset()
    r = ReplayEngine(pipeline, inputs, 'max').run()
    assert r.complete and np.isfinite(r.commands).all()
    app = load_config(None)
    model = RobotModel.from_config(app.robot, app.base_dir)
    assert np.all(r.commands >= model.q_min - 1e-9) and np.all(r.commands <= model.q_max + 1e-9)
    assert r.command_sha256() == fields['determinism']['command_sha256']
    # the replay reproduces the recorded closed loop closely (same policy, filter and inputs;
    # the live run had real timing, so not bit-exactly)
    fid = fields['fidelity']
    assert fid['compared'] > 0.9 * inputs.states.n
    assert fid['max_abs_diff_rad']['p50'] < 0.05


def test_cli_walker_bag(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The 2-joint, ~29 Hz walker bag: clear exit 2 without a joint map; replays with one."""
    from rt_safe_rl.bench import replay

    walker = str(shared_data / WALKER)
    rc = replay.main([walker, '--out', str(tmp_path / 'w0'), '--no-progress'])
    err = capsys.readouterr().err
    assert rc == 2 and "['wheel_left_joint', 'wheel_right_joint']" in err and 'Traceback' not in err
    summary = stdout_json(
        replay.main,
        [
            walker,
            '--out',
            str(tmp_path / 'w'),
            '--no-progress',
            '--repeat',
            '2',
            '--joint-map',
            'wheel_left_joint=joint1,wheel_right_joint=joint2',
        ],
        capsys,
    )
    assert summary['messages'] > 600 and summary['determinism']['identical']
    rep = json.loads((tmp_path / 'w' / 'report.json').read_text())
    assert 25 < rep['rate']['hz'] < 35 and rep['joint_map'] == {
        'wheel_left_joint': 'joint1',
        'wheel_right_joint': 'joint2',
    }
    # wheel angles (up to ~199 rad) are far outside joint1's limits: the filter fails closed
    assert rep['safety_faults'] >= 1 and rep['safety_status_at_end']['latched'] is True


def test_naive_pipeline_runs(pipeline) -> None:  # type: ignore[no-untyped-def]
    """The naive plain-rclpy pipeline answers every state of a short replay (lockstep, over DDS)."""
    from rt_safe_rl.bench.config import BenchmarkConfig
    from rt_safe_rl.bench.pipeline import naive_runner_for
    from rt_safe_rl.config import load_config

    inputs = _inputs(pipeline, n=150)
    fields = naive_runner_for(load_config(None), pipeline)(
        inputs, BenchmarkConfig(naive_max_messages=150, naive_timeout_s=2.0)
    )
    assert fields['complete'] and fields['messages'] + fields['lost'] == 150
    assert fields['messages'] > 0  # answered states; a lost one (2 s timeout on a loaded machine) is counted
    assert set(fields['stages']) == {'e2e_us'} and fields['stages']['e2e_us']['p50'] > 0
    assert 'SingleThreadedExecutor' in fields['description']
