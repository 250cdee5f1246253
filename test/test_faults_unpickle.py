"""No unpickling anywhere: a malicious checkpoint (a pickle whose ``__reduce__`` writes a marker
file when it is loaded) goes through every command-line path that accepts a policy file; each
refuses it with a one-line error and the marker is never written."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip('torch', reason='torch not installed (requirements.txt installs it)')

REPO = Path(__file__).resolve().parents[1]
BAG = REPO / 'test' / 'data' / 'sim_arm7_1khz'


class _Evil:
    """Unpickling this calls ``open(marker, 'w')``: the marker file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, 'w'))


def _make(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    marker = tmp_path / 'PWNED'
    path = tmp_path / 'evil.pt'
    payload = {'model_state_dict': {'w': torch.zeros(2, 2)}, 'obj': _Evil(marker)}
    if kind == 'torch_save':
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    assert not marker.exists()
    return path, marker


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """(malicious policy file, marker path): a torch.save zip (the process-level paths)."""
    return _make(tmp_path, 'torch_save')


@pytest.fixture(params=['torch_save', 'raw_pickle'])
def evil_any(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    """Both malicious formats: a torch.save zip and a plain (legacy) pickle stream."""
    return _make(tmp_path, request.param)


def _run(args: list[str], tmp_path: Path, timeout_s: float = 240.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    return subprocess.run(
        [sys.executable, '-m', *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=timeout_s,
    )


def _refused(res: subprocess.CompletedProcess[str], marker: Path, needle: str = 'evil.pt') -> None:
    assert not marker.exists(), 'the checkpoint was unpickled'
    assert res.returncode != 0, res.stderr[-2000:]
    assert 'Traceback' not in res.stderr, res.stderr[-3000:]
    last = [ln for ln in res.stderr.splitlines() if 'error' in ln.lower()]
    assert last, res.stderr[-2000:]
    assert any(needle in ln for ln in last), last


def test_bench_policy_refuses(evil_any: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = evil_any
    _refused(_run(['rt_safe_rl.cli', 'bench', 'policy', str(path)], tmp_path), marker)


def test_demo_refuses(evil: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = evil
    res = _run(
        ['rt_safe_rl.cli', 'demo', '--duration', '1', '--no-live', '--set', f'policy.path={path}'], tmp_path
    )
    _refused(res, marker)


def test_bringup_refuses(evil: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = evil
    res = _run(
        ['rt_safe_rl.bringup', '--no-monitor', '--duration', '1', '--set', f'policy.path={path}'], tmp_path
    )
    _refused(res, marker)


def test_policy_node_refuses(evil: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = evil
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text(f'policy:\n  path: {path}\n')
    res = _run(['rt_safe_rl.nodes.policy_node', '--ros-args', '-p', f'config_file:={cfg}'], tmp_path)
    _refused(res, marker, needle='configure failed')


@pytest.mark.skipif(not BAG.is_dir(), reason='test bag test/data/sim_arm7_1khz missing')
@pytest.mark.parametrize('naive', [False, True], ids=['ours', 'naive'])
def test_bench_replay_refuses(evil: tuple[Path, Path], tmp_path: Path, naive: bool) -> None:
    path, marker = evil
    args = ['rt_safe_rl.cli', 'bench', 'replay', str(BAG), '--policy', str(path), '--max-messages', '50']
    res = _run([*args, '--naive'] if naive else args, tmp_path)
    _refused(res, marker)


def test_naive_loader_refuses(evil_any: tuple[Path, Path]) -> None:
    from rt_safe_rl.bench.naive import NaiveError, _load_model

    path, marker = evil_any
    with pytest.raises(NaiveError, match=r'evil\.pt is not a TorchScript file'):
        _load_model(str(path))
    assert not marker.exists()
