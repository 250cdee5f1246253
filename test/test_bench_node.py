"""BenchmarkNode lifecycle: configure opens the bag (FAILURE on bad input), activate replays and
publishes the summary, deactivate stops early with a partial report. The pipeline is the numpy
stand-in of test_bench_replay (the real nodes are exercised in test_bench_nodes.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (ROS 2 wheels or a sourced ROS 2 needed)')

from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from test_bench_bag import write_arm_bag
from test_bench_replay import FakePipeline

from rt_safe_rl.config import load_config


@pytest.fixture
def fake_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    import rt_safe_rl.bench.pipeline as pl

    monkeypatch.setattr(pl, 'NodePipeline', FakePipeline)


def _node(ctx: Any, bag: str, out: Path, **params: Any) -> Any:
    from rt_safe_rl.nodes.benchmark_node import BenchmarkNode

    overrides = [Parameter('bag', value=bag), Parameter('out_dir', value=str(out))]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return BenchmarkNode(config=load_config(None), context=ctx, parameter_overrides=overrides)


def test_node_replays_and_publishes(tmp_path: Path, rclpy_context: Any, fake_nodes: None) -> None:
    """configure + activate -> report files and the summary on benchmark/results."""
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    bag = write_arm_bag(tmp_path / 'arm', n=2000)
    node = _node(rclpy_context, str(bag), tmp_path / 'out', repeat=2)
    got: list[str] = []
    node.create_subscription(String, 'benchmark/results', lambda m: got.append(m.data), 10)
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.done.wait(30.0)
        end = time.monotonic() + 5.0
        while not got and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.1)
        assert node.last_error == ''
        summary = json.loads(got[0])
        assert summary['complete'] and summary['messages'] > 0 and summary['determinism']['identical']
        assert (tmp_path / 'out' / 'report.json').is_file()
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    finally:
        ex.shutdown()
        node.destroy_node()


def test_node_deactivate_stops_with_partial_report(
    tmp_path: Path, rclpy_context: Any, fake_nodes: None
) -> None:
    """A paced replay stopped by deactivate leaves a report marked incomplete."""
    bag = write_arm_bag(tmp_path / 'arm', n=3000)
    node = _node(rclpy_context, str(bag), tmp_path / 'out', rate='300', repeat=1)  # 10 s at 300 Hz
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        pipe = node._pipeline  # the FakePipeline: counts the messages of the current pass
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        end = time.monotonic() + 30.0  # the replay has started (not a fixed sleep: loaded CI)
        while pipe._count < 10 and not node.done.is_set() and time.monotonic() < end:
            time.sleep(0.01)
        assert pipe._count >= 10 and not node.done.is_set(), 'the replay did not start within 30 s'
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.done.is_set()
        rep = json.loads((tmp_path / 'out' / 'report.json').read_text())
        assert rep['complete'] is False and 0 < rep['messages'] < 3000
    finally:
        node.destroy_node()


@pytest.mark.parametrize(
    ('bag', 'message'),
    [
        ('', "parameter 'bag' is empty"),
        ('{tmp}/missing', 'bag not found'),
    ],
)
def test_node_configure_fails_clearly(
    tmp_path: Path, rclpy_context: Any, fake_nodes: None, bag: str, message: str
) -> None:
    """Bad bag -> configure FAILURE with the reason in last_error."""
    node = _node(rclpy_context, bag.format(tmp=tmp_path), tmp_path / 'out')
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert message in node.last_error
    finally:
        node.destroy_node()
