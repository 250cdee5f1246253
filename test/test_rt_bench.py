"""`rt-safe-rl bench rt`: statistics on known input, bad input, and a short real run (JSON contract)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rt_safe_rl.bench.rt_bench import loop_stats


def test_loop_stats_known_answer() -> None:
    period = 1_000_000
    dl = np.arange(10) * period
    late = np.array([10, 20, 10, 1500, 10, 10, 10, 10, 10, 30]) * 1000.0  # ns; one miss (1.5 periods late)
    dl = np.delete(dl, [4, 5])  # the loop skipped two periods after the miss
    late = np.delete(late, [4, 5])
    st = dl + late * 1.0
    res = loop_stats(dl, st, period)
    assert res['cycles'] == 8
    assert res['misses'] == 1
    assert res['skipped_periods'] == 2
    assert res['lateness_us']['max'] == 1500.0
    assert res['lateness_us']['p50'] == 10.0
    # interval from the cycle before (2 ms + 10 us) to the late one (3 ms + 1.5 ms), minus the period
    assert res['period_dev_us']['max'] == pytest.approx(((3e6 + 1.5e6) - (2e6 + 10e3) - period) / 1e3)


def test_pooled_rounds_never_take_an_interval_across_rounds() -> None:
    from rt_safe_rl.bench.rt_bench import loop_stats_segments

    period = 1_000_000
    a = np.arange(5) * period * 1.0
    b = a + 10e9  # second round 10 s later: no 10 s "interval" may appear
    res = loop_stats_segments([(a, a + 5e3), (b, b + 5e3)], period)
    assert res['cycles'] == 10
    assert res['period_dev_us']['max'] == 0.0
    assert res['lateness_us']['p50'] == 5.0
    assert res['skipped_periods'] == 0


@pytest.mark.parametrize(
    'args, msg',
    [
        (['--rate-hz', '0'], '--rate-hz'),
        (['--duration', '-1'], '--duration'),
        (['--stress', '99'], '--stress'),
        (['--rounds', '0'], '--rounds'),
        (['--phases', 'floor,bogus'], 'bogus'),
        (['--config', '/nonexistent.yaml'], 'not found'),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], msg: str, capsys: pytest.CaptureFixture[str]) -> None:
    from rt_safe_rl.cli import main

    assert main(['bench', 'rt', *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0] and 'Traceback' not in err[0]


def test_short_run_json_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rt_safe_rl.bench.rt_bench import main

    out = tmp_path / 'rt.json'
    phases = 'executor,rclpy,handoff'
    args = ['--duration', '0.3', '--warmup', '0.1', '--rounds', '1', '--phases', phases]
    rc = main([*args, '--json', str(out)])
    res: dict[str, Any] = json.loads(out.read_text())
    assert rc == 0, {k: v.get('error') for k, v in res.items() if isinstance(v, dict) and 'error' in v}
    assert json.loads(capsys.readouterr().out) == res
    for key in ('executor', 'rclpy_timer'):
        part = res[key]
        assert set(part['period_dev_us']) == {'p50', 'p99', 'p999', 'max'}
        assert set(part['lateness_us']) == {'p50', 'p99', 'p999', 'max'}
        assert isinstance(part['misses'], int)
        assert 0 < part['cycles'] <= 320  # never more cycles than 0.3 s of 1 kHz periods (+ slack)
    for key in ('channel_us', 'dds_us'):
        assert {'p50', 'p99', 'max'} <= set(res['handoff'][key])
        assert res['handoff'][key]['count'] > 0
    assert res['stress'] == 0
    assert {'policy', 'priority', 'affinity', 'mlock'} <= set(res['rt'])
    assert res['rt']['policy'] in ('fifo', 'other')  # what the OS granted the control thread
