"""Policy inference core: config schema, loading, backends, pipeline, runtime (synthetic models, no ROS)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from rt_safe_rl.core.configutil import from_mapping
from rt_safe_rl.core.errors import ConfigError, PolicyLoadError
from rt_safe_rl.core.policy.config import PolicyNodeConfig, PolicyPipelineConfig, load_pipeline_config
from rt_safe_rl.core.policy.loading import build_arch_module, inspect_policy, sha256_file
from rt_safe_rl.core.policy.model import load_policy_model
from rt_safe_rl.core.policy.pipeline import ObservationBuilder
from rt_safe_rl.core.policy.runtime import PolicyRuntime

REPO = Path(__file__).resolve().parent.parent
N = 3  # joints of the synthetic policies

PIPE: dict[str, Any] = {
    'default_q': [0.1, -0.2, 0.3],
    'inputs': {'command': {'size': 2, 'default': [1.0, -1.0]}},
    'observation': {
        'terms': [
            {'term': 'joint_pos_rel', 'scale': 2.0},
            {'term': 'joint_vel', 'scale': 0.5},
            {'term': 'command', 'scale': [1.0, 10.0]},
            {'term': 'last_action'},
        ]
    },
    'action': {'scale': 0.5, 'clip': 1.0},
}
OBS = 3 + 3 + 2 + 3


def _mlp(obs: int = OBS, act: int = N, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(obs, 32), nn.ELU(), nn.Linear(32, 16), nn.ELU(), nn.Linear(16, act)).eval()


class _Lstm(nn.Module):
    """legged_gym-style recurrent exporter without reset_memory (state in buffers)."""

    def __init__(self, obs: int = OBS, act: int = N) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.memory = nn.LSTM(obs, 16)
        self.actor = nn.Sequential(nn.Linear(16, 16), nn.ELU(), nn.Linear(16, act))
        self.register_buffer('hidden_state', torch.zeros(1, 1, 16))
        self.register_buffer('cell_state', torch.zeros(1, 1, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, (h, c) = self.memory(x.unsqueeze(0), (self.hidden_state, self.cell_state))
        self.hidden_state.copy_(h)
        self.cell_state.copy_(c)
        return self.actor(out.squeeze(0))


class _Residual(nn.Module):
    """Linear head plus an MLP (the shipped arm7_reach structure)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.linear = nn.Linear(OBS, N)
        self.mlp = nn.Sequential(nn.Linear(OBS, 16), nn.Tanh(), nn.Linear(16, N))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.linear(obs) + self.mlp(obs)


class _Diff(_Residual):
    """Same children as _Residual, different wiring: must not be compiled as a sum."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.linear(obs) - self.mlp(obs)


class _Bad(nn.Module):
    """Returns NaN when the first observation value is > 100, raises when it is < -100."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(OBS, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x[0, 0] < -100.0):
            raise RuntimeError('boom')
        y = self.lin(x)
        if bool(x[0, 0] > 100.0):
            y = y * float('nan')
        return y


class _Printer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(OBS, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print('step')
        return self.lin(x)


def _script(tmp: Path, mod: nn.Module, name: str = 'p.pt') -> Path:
    p = tmp / name
    torch.jit.script(mod).save(str(p))
    return p


def _pipe_file(tmp: Path, name: str = 'pipe.yaml', **over: Any) -> Path:
    import yaml

    data = {**PIPE, **over}
    p = tmp / name
    p.write_text(yaml.safe_dump(data))
    return p


def _cfg(tmp: Path, policy: Path, **kw: Any) -> PolicyNodeConfig:
    base = {
        'path': str(policy),
        'config': str(_pipe_file(tmp)),
        'auto_samples': 50,
        'auto_timing_iters': 20,
        'warmup_iters': 2,
    }
    base.update(kw)
    return PolicyNodeConfig(**base)


# ---------------------------------------------------------------- config


def test_pipeline_config_sizes_and_defaults() -> None:
    cfg = from_mapping(PolicyPipelineConfig, PIPE, 't')
    assert cfg.obs_dim == OBS and cfg.n_joints == N
    hist = from_mapping(
        PolicyPipelineConfig, {**PIPE, 'observation': {**PIPE['observation'], 'history_length': 4}}
    )
    assert hist.obs_dim == 4 * OBS


@pytest.mark.parametrize(
    'bad, fragment',
    [
        ({'observation': {'terms': [{'term': 'bogus'}]}}, 'term'),
        ({'observation': {'terms': [{'term': 'joint_vel', 'scale': [1.0, 2.0]}]}}, 'scale has 2 values'),
        ({'observation': {'terms': [{'term': 'command', 'input': 'nope'}]}}, 'not declared'),
        ({'action': {'scale': [1.0, 2.0]}}, 'action.scale'),
        ({'joints': {'names': ['a', 'b']}}, 'joints.names'),
        ({'unknown_key': 1}, 'unknown key'),
    ],
)
def test_pipeline_config_rejects_bad_input(bad: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        from_mapping(PolicyPipelineConfig, {**PIPE, **bad}, 'file.yaml')


def test_node_config_validation() -> None:
    with pytest.raises(ConfigError, match='sha256'):
        from_mapping(PolicyNodeConfig, {'sha256': 'abc'}, 'policy')
    with pytest.raises(ConfigError, match='backend'):
        from_mapping(PolicyNodeConfig, {'backend': 'tpu'}, 'policy')
    with pytest.raises(ConfigError, match='rate_hz'):
        from_mapping(PolicyNodeConfig, {'rate_hz': 0.0}, 'policy')


def test_shipped_pipeline_configs_parse() -> None:
    sizes = {
        'go2_unitree_rl_gym': 48,
        'g1_unitree_rl_gym': 47,
        'go2_rl_sar_robot_lab': 45,
        'go2_rl_sar_himloco': 270,
        'g1_rl_sar_robomimic_29dof': 96,
        'lite3_ppo': 45,
    }
    for name, obs_dim in sizes.items():
        assert load_pipeline_config(REPO / 'config' / 'policies' / f'{name}.yaml').obs_dim == obs_dim, name


# ---------------------------------------------------------------- observation pipeline


def test_observation_terms_history_and_order() -> None:
    pipe = from_mapping(
        PolicyPipelineConfig,
        {
            'default_q': [1.0, 2.0],
            'joints': {'names': ['b', 'a']},
            'observation': {
                'terms': [{'term': 'joint_pos_rel', 'scale': 10.0}, {'term': 'phase', 'period_s': 1.0}],
                'history_length': 3,
                'history_order': 'oldest_first',
            },
        },
    )
    ob = ObservationBuilder(pipe, ['a', 'b'])
    out = np.zeros(pipe.obs_dim, np.float32)
    la = np.zeros(2, np.float32)
    ob.build(0.25, np.array([5.0, 3.0]), np.zeros(2), la, out)  # policy order b, a -> q = [3, 5]
    first = np.array([20.0, 30.0, 1.0, 0.0], np.float32)  # ([3, 5] - [1, 2]) * 10, sin/cos(pi/2)
    np.testing.assert_allclose(out, np.tile(first, 3), atol=1e-6)  # history filled with the first frame
    ob.build(0.5, np.array([5.0, 4.0]), np.zeros(2), la, out)
    second = np.array([30.0, 30.0, 0.0, -1.0], np.float32)
    np.testing.assert_allclose(out, np.concatenate([first, first, second]), atol=1e-6)  # oldest first


def test_observation_term_layout_newest_first() -> None:
    pipe = from_mapping(
        PolicyPipelineConfig,
        {
            'default_q': [0.0],
            'observation': {
                'terms': [{'term': 'joint_pos'}, {'term': 'joint_vel'}],
                'history_length': 2,
                'history_layout': 'term',
            },
        },
    )
    ob = ObservationBuilder(pipe, None)
    out = np.zeros(4, np.float32)
    la = np.zeros(1, np.float32)
    ob.build(0.0, np.array([1.0]), np.array([10.0]), la, out)
    ob.build(0.0, np.array([2.0]), np.array([20.0]), la, out)
    np.testing.assert_array_equal(out, [2.0, 1.0, 20.0, 10.0])


# ---------------------------------------------------------------- loading


def test_inspect_reports_sizes_hash_and_refuses_other_hash(tmp_path: Path) -> None:
    p = _script(tmp_path, _mlp())
    info = inspect_policy(p)
    assert (info.obs_dim, info.act_dim, info.recurrent, info.format) == (OBS, N, False, 'torchscript')
    assert info.sha256 == sha256_file(p)
    with pytest.raises(PolicyLoadError, match='SHA-256'):
        inspect_policy(p, expected_sha256='0' * 64)
    with pytest.raises(PolicyLoadError, match='expects 11 inputs, the policy config builds 5'):
        inspect_policy(p, obs_dim=5)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match=r'not found.*nope\.pt'):
        inspect_policy(tmp_path / 'nope.pt')
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'PK\x03\x04garbage' * 10)
    with pytest.raises(PolicyLoadError, match=r'bad\.pt'):
        inspect_policy(bad)


def test_state_dict_needs_architecture_and_loads_weights_only(tmp_path: Path) -> None:
    mlp = _mlp()
    p = tmp_path / 'ckpt.pt'
    torch.save({'model_state_dict': mlp.state_dict()}, p)
    with pytest.raises(PolicyLoadError, match='architecture'):
        inspect_policy(p)
    from rt_safe_rl.core.policy.config import ArchitectureConfig, ModelConfig

    mc = ModelConfig(
        format='state_dict',
        architecture=ArchitectureConfig(hidden=[32, 16], state_dict_key='model_state_dict'),
    )
    info = inspect_policy(p, mc)
    assert (info.obs_dim, info.act_dim) == (OBS, N)
    with pytest.raises(PolicyLoadError, match='hidden'):
        build_arch_module(ArchitectureConfig(hidden=[8]), mlp.state_dict())
    # pickled code is refused (weights_only=True)
    evil = tmp_path / 'evil.pt'
    torch.save({'model_state_dict': mlp.state_dict(), 'obj': _Printer()}, evil)
    with pytest.raises(PolicyLoadError, match=r'evil\.pt'):
        inspect_policy(evil, mc)


# ---------------------------------------------------------------- backends


@pytest.mark.parametrize('make, recurrent', [(_mlp, False), (_Lstm, True), (_Residual, False)])
def test_auto_selects_an_exact_backend_and_rollouts_match(tmp_path: Path, make: Any, recurrent: bool) -> None:
    p = _script(tmp_path, make())
    cfg = PolicyNodeConfig(backend='auto', auto_samples=300, auto_timing_iters=20, warmup_iters=2)
    m = load_policy_model(p, cfg, obs_dim=OBS, keep_all=True)
    assert m.info.recurrent is recurrent
    rows = {r.name: r for r in m.table}
    assert rows['eager'].ok and rows['numba'].ok and rows['torchscript'].ok
    assert rows['numba'].max_abs_err <= 1e-4
    assert not rows['cuda'].available or rows['cuda'].ok
    assert m.selected in rows and rows[m.selected].ok and m.selected not in ('fp16', 'int8')
    # independent check of the numba rollout against a fresh eager module from reset
    ref = torch.jit.load(str(p))
    numba = m.backends['numba']
    numba.reset()
    out = np.zeros(N, np.float32)
    rng = np.random.default_rng(5)
    for _ in range(50):
        x = rng.standard_normal(OBS).astype(np.float32)
        numba.forward(x, out)
        with torch.inference_mode():
            y = ref(torch.from_numpy(x).reshape(1, OBS)).numpy()[0]
        np.testing.assert_allclose(out, y, atol=1e-4)


class _Sorted(nn.Module):
    """Sorts its input before a Linear layer: aten::sort is not compiled."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(OBS, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.sort(x, dim=1).values)


def test_graph_compiler_follows_the_wiring_and_names_what_it_cannot_compile(tmp_path: Path) -> None:
    cfg = PolicyNodeConfig(auto_samples=20, auto_timing_iters=5)
    m = load_policy_model(_script(tmp_path, _Diff()), cfg, obs_dim=OBS)
    numba = next(r for r in m.table if r.name == 'numba')
    assert numba.available and numba.ok and numba.max_abs_err < 1e-5  # a(x) - b(x), not a sum
    sub = tmp_path / 'sorted'
    sub.mkdir()
    m = load_policy_model(_script(sub, _Sorted()), cfg, obs_dim=OBS)
    numba = next(r for r in m.table if r.name == 'numba')
    assert not numba.available and 'aten::sort' in numba.reason
    assert m.selected != 'numba'


def test_configured_backend_unavailable_or_inexact_fails(tmp_path: Path) -> None:
    p = _script(tmp_path, _mlp())
    with pytest.raises(PolicyLoadError, match='onnxruntime'):
        load_policy_model(p, PolicyNodeConfig(backend='onnxruntime', auto_samples=10, auto_timing_iters=5))
    with pytest.raises(PolicyLoadError, match=r"backend 'int8' rejected"):
        load_policy_model(
            p, PolicyNodeConfig(backend='int8', tolerance_int8=1e-9, auto_samples=50, auto_timing_iters=5)
        )


class _Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(OBS, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        if bool(y.sum() > -1e30):
            raise RuntimeError('always fails')
        return y


def test_raising_policy_fails_at_configure(tmp_path: Path) -> None:
    p = _script(tmp_path, _Raises())
    with pytest.raises(PolicyLoadError, match='always fails'):
        load_policy_model(
            p, PolicyNodeConfig(backend='eager', auto_samples=5, auto_timing_iters=5), obs_dim=OBS
        )


class _NaN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(OBS, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * float('nan')


def test_nan_policy_fails_at_configure(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match='non-finite'):
        load_policy_model(
            _script(tmp_path, _NaN()), PolicyNodeConfig(auto_samples=5, auto_timing_iters=5), obs_dim=OBS
        )


def test_printing_policy_is_refused(tmp_path: Path) -> None:
    p = _script(tmp_path, _Printer())
    with pytest.raises(PolicyLoadError, match='stdout'):
        load_policy_model(p, PolicyNodeConfig(backend='eager', auto_samples=5, auto_timing_iters=5))


def test_onnx_export_runs_on_onnxruntime_and_numba(tmp_path: Path) -> None:
    pytest.importorskip('onnxruntime', reason='onnxruntime not installed (requirements.txt installs it)')
    p = tmp_path / 'p.onnx'
    torch.onnx.export(
        _mlp(), (torch.zeros(1, OBS),), str(p), input_names=['obs'], output_names=['actions'], dynamo=False
    )
    m = load_policy_model(
        p, PolicyNodeConfig(auto_samples=200, auto_timing_iters=10), obs_dim=OBS, keep_all=True
    )
    rows = {r.name: r for r in m.table}
    assert m.reference == 'onnxruntime' and rows['onnxruntime'].ok and rows['numba'].ok
    assert not rows['eager'].available


# ---------------------------------------------------------------- runtime


def test_decimation_hold_and_one_forward_per_step(tmp_path: Path) -> None:
    rt = PolicyRuntime.from_config(_cfg(tmp_path, _script(tmp_path, _Lstm()), backend='eager', rate_hz=50.0))
    calls = []
    fwd = rt.model.forward

    def counting(obs: Any, out: Any) -> None:
        calls.append(1)
        fwd(obs, out)

    rt.model.forward = counting  # type: ignore[method-assign]
    q, dq, out = np.zeros(N), np.zeros(N), np.zeros(N)
    targets = []
    for i in range(100):  # 100 ms at 1 kHz -> 5 policy steps
        assert rt.control_step(i * 1_000_000, q, dq, None, out)
        targets.append(out.copy())
    assert len(calls) == 5 == rt.steps
    for k in range(5):  # held between steps
        block = np.array(targets[20 * k : 20 * (k + 1)])
        assert np.all(block == block[0])
    # a late cycle runs one step, not a catch-up burst
    rt.control_step(500_000_000, q, dq, None, out)
    assert len(calls) == 6


def test_linear_interpolation_reaches_target_over_one_period(tmp_path: Path) -> None:
    rt = PolicyRuntime.from_config(
        _cfg(tmp_path, _script(tmp_path, _mlp()), backend='eager', rate_hz=100.0, interpolation='linear')
    )
    q, dq, out = np.zeros(N), np.zeros(N), np.zeros(N)
    rt.control_step(0, q, dq, None, out)
    start = out.copy()  # first step starts from q... interpolated from the measured q
    np.testing.assert_allclose(start, q)
    tgt = rt._target.copy()
    rt.control_step(5_000_000, q, dq, None, out)
    np.testing.assert_allclose(out, 0.5 * tgt, atol=1e-12)
    rt.control_step(9_999_999, q, dq, None, out)
    np.testing.assert_allclose(out, tgt, atol=1e-6)


def test_action_mapping_and_inputs(tmp_path: Path) -> None:
    rt = PolicyRuntime.from_config(_cfg(tmp_path, _script(tmp_path, _mlp()), backend='eager'))
    q, dq, out = np.zeros(N), np.zeros(N), np.zeros(N)
    assert rt.control_step(0, q, dq, {'command': np.array([3.0, 4.0])}, out)
    np.testing.assert_allclose(rt._obs[6:8], [3.0, 40.0])
    raw = np.clip(rt._last_action, -1.0, 1.0)
    np.testing.assert_allclose(out, np.array(PIPE['default_q']) + 0.5 * raw, atol=1e-6)
    assert not rt.control_step(1, q, dq, {'command': np.array([1.0])}, out)  # wrong size -> invalid


def test_invalid_state_nan_output_and_exception_flag_invalid(tmp_path: Path) -> None:
    rt = PolicyRuntime.from_config(
        _cfg(
            tmp_path,
            _script(tmp_path, _Bad()),
            backend='eager',
            rate_hz=1000.0,
            config=str(_pipe_file(tmp_path, 'scale1.yaml', action={'scale': 1.0})),
        )
    )
    q, dq, out = np.zeros(N), np.zeros(N), np.zeros(N)
    assert rt.control_step(0, q, dq, None, out)
    good = out.copy()
    assert not rt.control_step(1_000_000, np.zeros(N + 1), dq, None, out)  # wrong size
    assert not rt.control_step(2_000_000, np.full(N, np.nan), dq, None, out)  # NaN state
    np.testing.assert_array_equal(out, good)  # holds the last valid target
    hi = np.array([PIPE['default_q'][0] + 60.0, 0.0, 0.0])  # obs[0] = 2 * (q - default) > 100 -> NaN action
    assert not rt.control_step(3_000_000, hi, dq, None, out)
    assert 'non-finite action' in rt.last_error
    lo = np.array([PIPE['default_q'][0] - 60.0, 0.0, 0.0])  # < -100 -> raises
    assert not rt.control_step(4_000_000, lo, dq, None, out)
    assert 'boom' in rt.last_error
    assert rt.control_step(5_000_000, q, dq, None, out)  # recovers on the next good step


def test_cache_exact_hits_and_refused_for_recurrent(tmp_path: Path) -> None:
    no_last = {'terms': PIPE['observation']['terms'][:3]}  # no last_action: a still robot repeats its obs
    pipe = str(_pipe_file(tmp_path, 'nolast.yaml', observation=no_last))
    obs = OBS - N
    rt = PolicyRuntime.from_config(
        _cfg(tmp_path, _script(tmp_path, _mlp(obs)), backend='eager', cache=True, rate_hz=1000.0, config=pipe)
    )
    q, dq, out = np.zeros(N), np.zeros(N), np.zeros(N)
    outs = []
    for i in range(6):
        rt.control_step(i * 1_000_000, q, dq, None, out)
        outs.append(out.copy())
    assert rt.cache is not None and (rt.cache.hits, rt.cache.misses) == (5, 1)
    assert rt.info['cache']['hit_rate'] == pytest.approx(5 / 6)
    uncached = PolicyRuntime.from_config(
        _cfg(tmp_path, _script(tmp_path, _mlp(obs), 'b.pt'), backend='eager', rate_hz=1000.0, config=pipe)
    )
    out2 = np.zeros(N)
    for i in range(6):
        uncached.control_step(i * 1_000_000, q, dq, None, out2)
        np.testing.assert_array_equal(outs[i], out2)
    with pytest.raises(ConfigError, match='recurrent'):
        PolicyRuntime.from_config(
            _cfg(tmp_path, _script(tmp_path, _Lstm(), 'c.pt'), backend='eager', cache=True)
        )


def test_reset_restarts_recurrent_state(tmp_path: Path) -> None:
    rt = PolicyRuntime.from_config(
        _cfg(tmp_path, _script(tmp_path, _Lstm()), backend='numba', rate_hz=1000.0)
    )
    q, dq, out = np.full(N, 0.3), np.zeros(N), np.zeros(N)
    seq1 = []
    for i in range(5):
        rt.control_step(i * 1_000_000, q, dq, None, out)
        seq1.append(out.copy())
    assert not np.allclose(seq1[0], seq1[4])  # state advances
    rt.reset()
    for i in range(5):
        rt.control_step(i * 1_000_000, q, dq, None, out)
        np.testing.assert_array_equal(out, seq1[i])


def test_no_heap_growth_per_control_step(tmp_path: Path) -> None:
    rt = PolicyRuntime.from_config(_cfg(tmp_path, _script(tmp_path, _Lstm()), backend='numba'))
    q, dq, out = np.zeros(N), np.zeros(N), np.zeros(N)
    t = 0
    for _ in range(2000):
        rt.control_step(t, q, dq, None, out)
        t += 1_000_000
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(10_000):
            rt.control_step(t, q, dq, None, out)
            t += 1_000_000
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    skip = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    growth = sum(
        s.size_diff for s in after.filter_traces(skip).compare_to(before.filter_traces(skip), 'lineno')
    )
    assert rt.steps > 400
    assert growth < 1024, f'heap grew {growth} B over 10^4 control steps'


def test_state_dict_lstm_mlp_runs_on_every_cpu_backend(tmp_path: Path) -> None:
    from rt_safe_rl.core.policy.config import ArchitectureConfig, ModelConfig

    torch.manual_seed(3)
    lstm = nn.LSTM(OBS, 16)
    actor = nn.Sequential(nn.Linear(16, 8), nn.ELU(), nn.Linear(8, N))
    state = {f'memory.{k}': v for k, v in lstm.state_dict().items()}
    state.update({f'actor.{k}': v for k, v in actor.state_dict().items()})
    p = tmp_path / 'lstm_ckpt.pt'
    torch.save(state, p)
    mc = ModelConfig(
        format='state_dict', architecture=ArchitectureConfig(type='lstm_mlp', hidden=[8], lstm_hidden=16)
    )
    m = load_policy_model(p, PolicyNodeConfig(auto_samples=200, auto_timing_iters=5), mc, obs_dim=OBS)
    assert m.info.recurrent and m.info.has_reset_memory
    rows = {r.name: r for r in m.table}
    for name in ('eager', 'torchscript', 'numba'):
        assert rows[name].ok, rows[name]
    for name in ('fp16', 'int8'):  # reduced precision: measured and reported, never silently exact
        assert rows[name].available and np.isfinite(rows[name].max_abs_err)
    with pytest.raises(PolicyLoadError, match='lstm_hidden'):
        inspect_policy(
            p,
            ModelConfig(
                format='state_dict', architecture=ArchitectureConfig(type='lstm_mlp', lstm_hidden=32)
            ),
        )
