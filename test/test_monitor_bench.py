"""`rt-safe-rl bench monitor` runs end to end and reports what it promises (no timing asserts)."""

from __future__ import annotations

import pytest
from _helpers import stdout_json

pytest.importorskip('rclpy', reason='rclpy not installed (ROS 2 wheels or a sourced ROS 2 needed)')

from rt_safe_rl.cli import main as cli_main


def test_bench_monitor_smoke_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    report = stdout_json(
        cli_main,
        [
            'bench',
            'monitor',
            '--executor',
            'thread',
            '--pairs',
            '1',
            '--duration-s',
            '0.4',
            '--warmup-s',
            '0.2',
            '--rate-hz',
            '500',
        ],
        capsys,
    )
    assert [s['mode'] for s in report['segments']] == ['off', 'on']
    assert report['off']['n'] > 0 and report['on']['n'] > 0  # the loop ran in both modes (how often: load)
    assert report['monitor_cpu_percent_of_core']['callbacks'] >= 0.0
    assert set(report['meets_targets']) == {'e2e_p50', 'monitor_cpu'}
    assert report['stages']['e2e']['p50_us'] == report['off']['p50_us']  # usable as a regression baseline


def test_bench_monitor_bad_args_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(['bench', 'monitor', '--pairs', '0']) == 2
    assert 'error' in capsys.readouterr().err
