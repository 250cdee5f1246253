"""The external (DDS) pipeline mode of the replay bench, driven against the naive child process
(a real separate-process plain-rclpy pipeline), with a tiny TorchScript MLP as the policy."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_bench_bag import ARM, write_arm_bag

pytest.importorskip('rclpy', reason='rclpy not installed (ROS 2 wheels or a sourced ROS 2 needed)')
torch = pytest.importorskip('torch', reason='torch not installed (requirements.txt installs it)')


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(21, 32), torch.nn.ELU(), torch.nn.Linear(32, 7))
    path = tmp_path_factory.mktemp('model') / 'tiny.pt'
    torch.jit.script(m).save(str(path))
    return path


@pytest.fixture
def naive_child(tiny_model: Path) -> Any:
    """The naive policy+safety nodes in their own process (limits +-0.5 rad: interventions happen)."""
    from rt_safe_rl.bench.naive import NAMESPACE  # noqa: F401 - documents the namespace used below

    cmd = [
        sys.executable,
        '-m',
        'rt_safe_rl.bench.naive',
        '--model',
        str(tiny_model),
        '--decimation',
        '1',
        '--q-min',
        '[-0.5,-0.5,-0.5,-0.5,-0.5,-0.5,-0.5]',
        '--q-max',
        '[0.5,0.5,0.5,0.5,0.5,0.5,0.5]',
        '--default-q',
        '[0,0,0,0,0,0,0]',
        '--threads',
        '1',
    ]
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    yield proc
    proc.terminate()
    proc.wait(timeout=10)


def test_external_pipeline_lockstep(naive_child: Any, tmp_path: Path) -> None:
    """Every state gets its command back over DDS; stages are publish/response; commands in limits."""
    from rt_safe_rl.bench import bag
    from rt_safe_rl.bench.config import BenchmarkConfig
    from rt_safe_rl.bench.naive import NAMESPACE
    from rt_safe_rl.bench.pipeline import ExternalPipeline
    from rt_safe_rl.bench.replay import load_inputs, run_benchmark
    from rt_safe_rl.config import load_config

    app = load_config(None)
    app = app.replace(topics=dataclasses.replace(app.topics, joint_command='command'))
    ext = ExternalPipeline(app, timeout_s=2.0, namespace=NAMESPACE)
    try:
        ext.wait_for_pipeline(30.0)
        inputs = load_inputs(
            bag.inspect_bag(write_arm_bag(tmp_path / 'arm', n=400)), BenchmarkConfig(human_topic='-'), ARM
        )
        cfg = BenchmarkConfig(repeat=2, progress=False, warmup_messages=100, pipeline='external')
        fields, samples, _ = run_benchmark(ext, inputs, cfg, deadline_ns=1_000_000)
    finally:
        ext.close()
    assert set(fields['stages']) >= {'e2e_us', 'publish_us', 'response_us'}
    assert 'inference_us' not in fields['stages']
    assert fields['lost'] == 0 and fields['complete']
    assert fields['stages']['response_us']['p50'] > 0
    assert np.asarray(samples['e2e_us']).size == 700 and fields['pipeline']['kind'] == 'external'
    assert fields['interventions'] == 0  # not visible from outside


def test_external_without_pipeline_is_a_clear_error() -> None:
    """Nobody subscribed: PipelineError naming the topic."""
    from rt_safe_rl.bench.pipeline import ExternalPipeline, PipelineError
    from rt_safe_rl.config import load_config

    ext = ExternalPipeline(load_config(None), namespace='nobody_here')
    try:
        with pytest.raises(PipelineError, match='no subscriber on /nobody_here/joint_states'):
            ext.wait_for_pipeline(0.3)
    finally:
        ext.close()
