"""`rt-safe-rl record` and the shipped recording test/data/sim_arm7_1khz (made by that tool)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from _helpers import cli_subprocess_json
from test_bench_bag import ARM

from rt_safe_rl.bench import bag

SHIPPED = Path(__file__).resolve().parent / 'data' / 'sim_arm7_1khz'


def test_record_with_sim(tmp_path: Path) -> None:
    """Recording the in-process simulator for 1 s gives a ~1 kHz JointState stream + human/operator."""
    out = tmp_path / 'rec'
    summary = cli_subprocess_json(
        ['record', '--with-sim', '--duration', '1.0', '--settle', '0.3', '--out', str(out)], 120.0
    )
    assert summary['bag'] == str(out) and not summary['interrupted']
    info = bag.inspect_bag(out)
    s = bag.load_joint_states(info, '/joint_states', ARM)
    assert s.n >= 2  # states were recorded (how many depends on the machine's load: not checked)
    # In order, no duplicates: the recorder keeps the publisher's order, and the sim's own stamps
    # advance with its ticks (behaviour; their rate is a timing, not checked here). No seq in frame_id.
    assert (np.diff(s.header_ns) > 0).all() and (s.frame_seq == -1).all()
    assert summary['topics']['/joint_states']['stamps_not_increasing'] == 0
    assert summary['messages']['/joint_states'] == s.n
    assert info.topic('/human/position') is not None and info.topic('/human/position').count > 0


def test_record_bad_input(tmp_path: Path) -> None:
    """Existing output and unknown topic keys: one line, exit 2."""
    (tmp_path / 'exists').mkdir()
    for args, msg in (
        (['--out', str(tmp_path / 'exists')], 'already exists'),
        (['--topics', 'nope', '--out', str(tmp_path / 'x')], "unknown ['nope']"),
    ):
        proc = subprocess.run(
            [sys.executable, '-m', 'rt_safe_rl.cli', 'record', '--duration', '0.1', *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2 and msg in proc.stderr and 'Traceback' not in proc.stderr


def test_shipped_recording_is_high_rate_arm_data() -> None:
    """The shipped bag (made by `rt-safe-rl record --with-sim`) is 1 kHz arm7 state with side topics."""
    assert SHIPPED.is_dir(), 'test/data/sim_arm7_1khz missing: run `rt-safe-rl record --with-sim`'
    info = bag.inspect_bag(SHIPPED)
    assert info.storage == 'mcap'
    s = bag.load_joint_states(info, bag.select_state_topic(info).name, ARM)
    assert s.n >= 1000 and 900.0 < s.rate_hz() < 1100.0
    assert np.isfinite(s.q).all() and np.ptp(s.q, axis=0).max() > 0.0  # the arm moves
    for t in ('/human/position', '/operator/command', '/policy/command'):
        assert info.topic(t) is not None and info.topic(t).count > 0, t
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) < 4 * 2**20
