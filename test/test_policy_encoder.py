"""Two-model pipelines (an encoder / estimator whose outputs enter the policy observation).

Small encoder + policy models are written into tmp dirs (TorchScript, and ONNX through torch's
exporter); the runtime's actions are compared with a by-hand eager torch computation on every FP32
backend the runtime offers, both models' backend tables are checked for the compiled path, and a
mis-sized encoder must fail with one line naming the file and both sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from rt_safe_rl.core.errors import PolicyLoadError
from rt_safe_rl.core.policy.backends import REDUCED_PRECISION
from rt_safe_rl.core.policy.config import PolicyNodeConfig
from rt_safe_rl.core.policy.runtime import PolicyRuntime

N = 3  # joints
DEFAULT_Q = [0.1, -0.2, 0.3]
COMMAND = [1.0, -1.0]
ENC_HIST = 3  # encoder input: joint_vel * 0.5, 3 frames, newest first
ENC_IN = N * ENC_HIST
ENC_OUT = 4
POL_IN = N + ENC_OUT + N + 2  # joint_pos_rel, encoder (in the middle), last_action, command
ACTION_SCALE = 0.5
PERIOD_NS = 20_000_000  # 50 Hz: one policy step per control_step call below
STEPS = 12


def _encoder(n_in: int = ENC_IN, n_out: int = ENC_OUT) -> nn.Module:
    torch.manual_seed(10)
    return nn.Sequential(nn.Linear(n_in, 16), nn.Tanh(), nn.Linear(16, n_out)).eval()


def _policy() -> nn.Module:
    torch.manual_seed(11)
    layers = [nn.Linear(POL_IN, 24), nn.ELU(), nn.Linear(24, 16), nn.ELU(), nn.Linear(16, N)]
    return nn.Sequential(*layers).eval()


def _save(mod: nn.Module, path: Path) -> Path:
    """TorchScript (``.pt``) or ONNX (``.onnx``, input [1, n]) export of `mod`."""
    if path.suffix == '.onnx':
        pytest.importorskip('onnxruntime', reason='onnxruntime not installed (requirements.txt installs it)')
        n_in = next(p for p in mod.parameters()).shape[1]
        torch.onnx.export(
            mod, (torch.zeros(1, n_in),), str(path), input_names=['obs'], output_names=['out'], dynamo=False
        )
    else:
        torch.jit.script(mod).save(str(path))
    return path


def _pipeline(encoder_file: str) -> dict[str, Any]:
    return {
        'default_q': DEFAULT_Q,
        'inputs': {'command': {'size': 2, 'default': COMMAND}},
        'observation': {
            'terms': [
                {'term': 'joint_pos_rel'},
                {'term': 'encoder'},
                {'term': 'last_action'},
                {'term': 'command'},
            ]
        },
        'encoder': {
            'path': encoder_file,
            'output_size': ENC_OUT,
            'observation': {'terms': [{'term': 'joint_vel', 'scale': 0.5}], 'history_length': ENC_HIST},
        },
        'action': {'scale': ACTION_SCALE},
    }


def _write(tmp: Path, enc_name: str, pol_name: str, enc: nn.Module | None = None) -> tuple[Path, Path]:
    """Encoder + policy files and the pipeline YAML declaring them; returns (policy, yaml)."""
    _save(enc if enc is not None else _encoder(), tmp / enc_name)
    pol = _save(_policy(), tmp / pol_name)
    y = tmp / 'pipeline.yaml'
    y.write_text(yaml.safe_dump(_pipeline(enc_name)))
    return pol, y


def _runtime(pol: Path, pipe: Path, backend: str = 'auto', cache_dir: Path | None = None) -> PolicyRuntime:
    cfg = PolicyNodeConfig(
        path=str(pol),
        config=str(pipe),
        backend=backend,  # type: ignore[arg-type]
        auto_samples=50,
        auto_timing_iters=20,
        warmup_iters=2,
        auto_cache=cache_dir is not None,
        cache_dir=str(cache_dir or ''),
    )
    return PolicyRuntime.from_config(cfg)


def _states() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(5)
    q0 = np.asarray(DEFAULT_Q)
    return [(q0 + rng.uniform(-0.3, 0.3, N), rng.normal(0.0, 1.0, N)) for _ in range(STEPS)]


def _by_hand(states: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Eager torch: encoder(stacked joint_vel history) placed after joint_pos_rel -> policy."""
    enc, pol = _encoder(), _policy()
    hist: list[np.ndarray] = []
    last = np.zeros(N)
    out = []
    with torch.no_grad():
        for q, dq in states:
            frame = dq * 0.5
            hist = [frame] * ENC_HIST if not hist else [frame, *hist[:-1]]  # newest first
            z = enc(torch.tensor(np.concatenate(hist), dtype=torch.float32)[None])[0].numpy()
            obs = np.concatenate([q - np.asarray(DEFAULT_Q), z, last, COMMAND]).astype(np.float32)
            a = pol(torch.tensor(obs)[None])[0].numpy().astype(np.float64)
            out.append(a)
            last = a
    return np.asarray(out)


def _run_actions(rt: PolicyRuntime, states: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Raw actions the runtime computed, recovered from its targets (default_q + scale * action)."""
    target = np.zeros(N)
    acts = []
    for k, (q, dq) in enumerate(states):
        assert rt.control_step(k * PERIOD_NS, q, dq, None, target), rt.last_error
        assert rt.ran_policy
        acts.append((target - np.asarray(DEFAULT_Q)) / ACTION_SCALE)
    return np.asarray(acts)


def _exact_backends(report: dict[str, Any]) -> list[str]:
    """FP32 backends of a backend table that are available and within tolerance."""
    return [
        r['name']
        for r in report['backends']
        if r['available'] and r['ok'] and r['name'] not in REDUCED_PRECISION
    ]


@pytest.mark.parametrize(
    ('enc_name', 'pol_name'),
    [('enc.pt', 'pol.pt'), ('enc.onnx', 'pol.onnx'), ('enc.onnx', 'pol.pt')],
    ids=['torchscript', 'onnx', 'onnx-encoder+torchscript-policy'],
)
def test_encoder_outputs_enter_the_observation_where_declared(
    tmp_path: Path, enc_name: str, pol_name: str
) -> None:
    pol, pipe = _write(tmp_path, enc_name, pol_name)
    states = _states()
    expected = _by_hand(states)
    rt = _runtime(pol, pipe)
    info = rt.info
    assert 'encoder' in info, 'the runtime report has no encoder section'
    # both models on the compiled path where possible: the numba rows of both tables are exact
    for name, rep in (('policy', info), ('encoder', info['encoder'])):
        rows = {r['name']: r for r in rep['backends']}
        assert rows['numba']['available'] and rows['numba']['ok'], (name, rows['numba'])
    np.testing.assert_allclose(_run_actions(rt, states), expected, rtol=0, atol=1e-5)
    # every FP32 backend the runtime offers for both models, each run on its own
    offered = sorted(set(_exact_backends(info)) & set(_exact_backends(info['encoder'])))
    assert 'numba' in offered, offered
    for backend in offered:
        rt_b = _runtime(pol, pipe, backend)
        assert rt_b.info['selected'] == backend and rt_b.info['encoder']['selected'] == backend
        np.testing.assert_allclose(_run_actions(rt_b, states), expected, rtol=0, atol=1e-5, err_msg=backend)


def test_encoder_on_numba_is_the_compiled_program(tmp_path: Path) -> None:
    """backend: numba puts both models on the compiled kernels (the runtime report says so)."""
    pol, pipe = _write(tmp_path, 'enc.pt', 'pol.pt')
    info = _runtime(pol, pipe, 'numba').info
    assert info['selected'] == 'numba' and info['encoder']['selected'] == 'numba'
    assert info['encoder']['policy']['obs_dim'] == ENC_IN and info['encoder']['policy']['act_dim'] == ENC_OUT
    assert info['obs_dim'] == POL_IN


def test_reset_restarts_the_encoder_history(tmp_path: Path) -> None:
    """After reset() the encoder's history fills from the next frame again, as on the first step."""
    pol, pipe = _write(tmp_path, 'enc.pt', 'pol.pt')
    states = _states()
    rt = _runtime(pol, pipe, 'numba')
    first = _run_actions(rt, states)
    rt.reset()
    np.testing.assert_allclose(_run_actions(rt, states), first, rtol=0, atol=1e-6)


def test_second_start_from_the_caches_computes_the_same(tmp_path: Path) -> None:
    """With the auto-choice and program caches on (the node default), the next start of the same
    two-model pipeline gives the by-hand actions too."""
    pol, pipe = _write(tmp_path, 'enc.onnx', 'pol.pt')
    states = _states()
    expected = _by_hand(states)
    cache = tmp_path / 'cache'
    for _start in range(2):
        rt = _runtime(pol, pipe, cache_dir=cache)
        np.testing.assert_allclose(_run_actions(rt, states), expected, rtol=0, atol=1e-5)
    assert any(cache.rglob('*.npz')), 'no compiled program was cached'


class _RaisingEncoder(nn.Module):
    """The encoder above, raising when its newest joint_vel value is below -100 (scaled)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _encoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x[0, 0] < -100.0):
            raise RuntimeError('encoder boom')
        return self.net(x)


def test_an_encoder_that_raises_is_an_invalid_step_not_a_crash(tmp_path: Path) -> None:
    """The exception gives False (the safety filter stops); good frames bring valid steps back."""
    pol, pipe = _write(tmp_path, 'raising.pt', 'pol.pt', enc=_RaisingEncoder().eval())
    rt = _runtime(pol, pipe, 'eager')
    states = _states()
    target = np.zeros(N)
    q, dq = states[0]
    assert rt.control_step(0, q, dq, None, target)
    held = target.copy()
    assert not rt.control_step(PERIOD_NS, q, np.array([-1000.0, 0.0, 0.0]), None, target)
    assert rt.last_error.startswith('encoder raised') and 'encoder boom' in rt.last_error, rt.last_error
    np.testing.assert_array_equal(target, held)  # the last valid target is held
    rt.reset()
    np.testing.assert_allclose(
        _run_actions(rt, states), _by_hand(states), rtol=0, atol=1e-5
    )  # the same model computes as before once its inputs are good again


@pytest.mark.parametrize('suffix', ['.pt', '.onnx'])
def test_mis_sized_encoder_input_is_one_line_naming_file_and_sizes(tmp_path: Path, suffix: str) -> None:
    name = 'enc_wide' + suffix
    pol, pipe = _write(tmp_path, name, 'pol.pt', enc=_encoder(n_in=ENC_IN + 1))
    with pytest.raises(PolicyLoadError) as exc:
        _runtime(pol, pipe)
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1, msg
    assert str(tmp_path / name) in msg, msg
    assert f'expects {ENC_IN + 1}' in msg and f'builds {ENC_IN}' in msg, msg
    assert 'encoder.observation' in msg and 'joint_vel' in msg, msg  # which section and terms built it


@pytest.mark.parametrize('suffix', ['.pt', '.onnx'])
def test_mis_sized_encoder_output_is_one_line_naming_file_and_sizes(tmp_path: Path, suffix: str) -> None:
    name = 'enc_out5' + suffix
    pol, pipe = _write(tmp_path, name, 'pol.pt', enc=_encoder(n_out=ENC_OUT + 1))
    with pytest.raises(PolicyLoadError) as exc:
        _runtime(pol, pipe)
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1, msg
    assert str(tmp_path / name) in msg, msg
    assert f'gives {ENC_OUT + 1}' in msg and f'output_size is {ENC_OUT}' in msg, msg


def test_bench_policy_measures_the_encoder_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bench policy --config` with an encoder section reports the encoder's own backend table."""
    import json

    from rt_safe_rl.cli import main as cli

    pol, pipe = _write(tmp_path, 'enc.onnx', 'pol.pt')
    args = ['bench', 'policy', str(pol), '--config', str(pipe), '--iters', '50', '--heap-calls', '300']
    assert cli([*args, '--backends', 'eager,numba,onnxruntime']) == 0
    report = json.loads(capsys.readouterr().out)
    enc = report['encoder']
    assert enc['path'] == str(tmp_path / 'enc.onnx')
    assert (enc['obs_dim'], enc['act_dim']) == (ENC_IN, ENC_OUT)
    assert enc['reference'] == 'onnxruntime' and enc['compiled']['ok'], enc['compiled']
    assert report['compiled']['ok'] and report['obs_dim'] == POL_IN
    assert enc['heap']['calls'] == 300
