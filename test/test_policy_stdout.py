"""Policies that print inside ``forward``: ``policy.stdout: refuse | drop`` and clean CLI stdout.

refuse (the default) fails configure with one clear line; drop runs the policy with its output
discarded off the RT path and puts a backend that does not print (the compiled one) on the RT
path; ``rt-safe-rl bench policy`` and ``rt-safe-rl policy inspect``, run as real subprocesses, write
JSON on stdout that parses and holds none of the policy's prints; ``policy inspect`` says that the
model prints.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from rt_safe_rl.core.errors import PolicyLoadError
from rt_safe_rl.core.policy.config import PolicyNodeConfig
from rt_safe_rl.core.policy.model import load_policy_model
from rt_safe_rl.core.policy.runtime import PolicyRuntime

REPO = Path(__file__).resolve().parent.parent
MARK = 'POLICY-SAYS-HELLO'
N = 3
OBS = 2 * N + 2  # joint_pos_rel, joint_vel, command


class _Printer(nn.Module):
    """An MLP that prints a marker on every call (TorchScript ``print``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.mlp = nn.Sequential(nn.Linear(OBS, 16), nn.ELU(), nn.Linear(16, N))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print('POLICY-SAYS-HELLO', x.shape)  # = MARK (TorchScript needs the literal)
        return self.mlp(x)


@functools.cache
def _scripted() -> Any:
    """One TorchScript compilation per process (torch refuses to compile a class twice)."""
    return torch.jit.script(_Printer().eval())


def _files(tmp: Path) -> tuple[Path, Path]:
    pol = tmp / 'printer.pt'
    _scripted().save(str(pol))
    pipe = tmp / 'printer.yaml'
    pipe.write_text(
        yaml.safe_dump(
            {
                'default_q': [0.1, -0.2, 0.3],
                'inputs': {'command': {'size': 2, 'default': [0.5, 0.0]}},
                'observation': {
                    'terms': [
                        {'term': 'joint_pos_rel'},
                        {'term': 'joint_vel', 'scale': 0.1},
                        {'term': 'command'},
                    ]
                },
                'action': {'scale': 0.5},
            }
        )
    )
    return pol, pipe


def _node_cfg(pol: Path, pipe: Path, **kw: Any) -> PolicyNodeConfig:
    base: dict[str, Any] = {
        'path': str(pol),
        'config': str(pipe),
        'auto_samples': 50,
        'auto_timing_iters': 20,
        'warmup_iters': 2,
        'auto_cache': False,
    }
    base.update(kw)
    return PolicyNodeConfig(**base)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    return subprocess.run(
        [sys.executable, '-m', 'rt_safe_rl.cli', *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def test_refuse_is_the_default_and_says_why_in_one_line(tmp_path: Path) -> None:
    pol, pipe = _files(tmp_path)
    assert PolicyNodeConfig().stdout == 'refuse'
    with pytest.raises(PolicyLoadError) as exc:
        PolicyRuntime.from_config(_node_cfg(pol, pipe))
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1, msg
    assert str(pol) in msg and 'writes to stdout' in msg and 'policy.stdout: drop' in msg, msg
    assert MARK not in msg


def test_drop_runs_a_silent_backend_on_the_rt_path(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pol, pipe = _files(tmp_path)
    rt = PolicyRuntime.from_config(_node_cfg(pol, pipe, stdout='drop'))
    rows = {r['name']: r for r in rt.info['backends']}
    assert rt.model.selected == 'numba', rows  # the compiled backend, exact and silent
    for name in ('eager', 'torchscript'):  # exact but printing: kept out of the RT path
        assert not rows[name]['ok'] and 'prints to stdout' in rows[name]['reason'], rows[name]
    capfd.readouterr()  # configure's own log lines are not the question here
    target = np.zeros(N)
    q, dq = np.array([0.2, -0.1, 0.25]), np.array([0.5, -0.5, 1.0])
    for k in range(5):
        assert rt.control_step(k * 20_000_000, q, dq, None, target), rt.last_error
    out = capfd.readouterr().out
    assert MARK not in out, out
    # and the silent backend computes what the printing module computes
    ref = _Printer().eval()
    obs = np.concatenate([q - [0.1, -0.2, 0.3], dq * 0.1, [0.5, 0.0]]).astype(np.float32)
    with torch.no_grad():
        a = ref.mlp(torch.tensor(obs)[None])[0].numpy()
    np.testing.assert_allclose((target - [0.1, -0.2, 0.3]) / 0.5, a, rtol=0, atol=1e-5)


def test_drop_discards_output_off_the_rt_path(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """With only printing backends to choose from, configure's calls print nothing either."""
    pol, pipe = _files(tmp_path)
    capfd.readouterr()
    m = load_policy_model(pol, _node_cfg(pol, pipe, stdout='drop'), obs_dim=OBS, backends=['eager'])
    assert m.selected == 'eager'
    assert MARK not in capfd.readouterr().out


@pytest.mark.parametrize('backends', ['all', 'eager'])
def test_bench_policy_stdout_is_json_without_policy_prints(tmp_path: Path, backends: str) -> None:
    """Also when the only backend measured prints (eager: its heap check calls it 200 times)."""
    pol, pipe = _files(tmp_path)
    r = _cli(
        'bench', 'policy', str(pol), '--config', str(pipe), '--iters', '50', '--heap-calls', '200',
        '--backends', backends,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert MARK not in r.stdout
    report = json.loads(r.stdout)
    rows = {b['name']: b for b in report['backends']}
    assert 'prints to stdout' in rows['eager']['reason']
    if backends == 'all':
        assert report['selected'] == 'numba' and report['compiled']['ok']
    else:
        assert report['selected'] == 'eager' and report['heap']['calls'] == 200


def test_bench_policy_stdout_refuse_exits_2_with_one_line(tmp_path: Path) -> None:
    pol, pipe = _files(tmp_path)
    r = _cli(
        'bench', 'policy', str(pol), '--config', str(pipe), '--iters', '50', '--heap-calls', '200',
        '--stdout', 'refuse',
    )  # fmt: skip
    assert r.returncode == 2, (r.stdout[-500:], r.stderr[-2000:])
    assert r.stdout == '' and MARK not in r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and 'writes to stdout' in err, err


def test_policy_inspect_reports_that_the_model_prints(tmp_path: Path) -> None:
    pol, _pipe = _files(tmp_path)
    skel = tmp_path / 'skeleton.yaml'
    r = _cli('policy', 'inspect', str(pol), '--json', '--write-config', str(skel))
    assert r.returncode == 0, r.stderr[-2000:]
    assert MARK not in r.stdout
    report = json.loads(r.stdout)
    assert report['stdout']['prints'] is True and report['stdout']['bytes_per_call'] > len(MARK)
    assert 'prints to stdout' in skel.read_text() and MARK not in skel.read_text()
    human = _cli('policy', 'inspect', str(pol))
    assert human.returncode == 0 and MARK not in human.stdout
    line = next(s for s in human.stdout.splitlines() if s.strip().startswith('stdout'))
    assert 'prints on every call' in line and 'policy.stdout: drop' in line, line


def test_policy_inspect_says_silent_for_a_model_that_does_not_print(tmp_path: Path) -> None:
    p = tmp_path / 'quiet.pt'
    torch.jit.script(nn.Sequential(nn.Linear(OBS, N))).save(str(p))
    r = _cli('policy', 'inspect', str(p), '--json')
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)['stdout'] == {'prints': False, 'bytes_per_call': 0.0, 'reason': ''}


def test_drop_works_at_the_file_descriptor_level() -> None:
    """C-level writes (``write(1, ...)``, libc ``printf``) inside drop_stdout never reach stdout, and
    capture_stdout_fd sees them; run in a subprocess so that fd 1 is a real pipe."""
    code = (
        'import ctypes, json, os\n'
        'from rt_safe_rl.core.policy.stdio import capture_stdout_fd, drop_stdout\n'
        'libc = ctypes.CDLL(None)\n'
        'with drop_stdout():\n'
        "    os.write(1, b'FD-WRITE\\n'); libc.printf(b'C-PRINTF\\n'); print('PY-PRINT')\n"
        'with capture_stdout_fd() as got:\n'
        "    os.write(1, b'FD-WRITE\\n'); libc.printf(b'C-PRINTF\\n'); print('PY-PRINT')\n"
        "print(json.dumps({'captured': got().decode()}))\n"
    )
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    captured = json.loads(r.stdout)['captured']  # stdout is that one JSON line, nothing else
    for s in ('FD-WRITE', 'C-PRINTF', 'PY-PRINT'):
        assert s in captured
