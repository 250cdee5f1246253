"""The six third-party policies in ../shared/data/policies (the acceptance set), with the shipped configs.

Skipped with a reason where ../shared is absent (fresh clone). Exactness is checked here; speed is
measured by `rt-safe-rl bench policy` (JSON), never asserted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rt_safe_rl.core.policy.config import PolicyNodeConfig, load_pipeline_config
from rt_safe_rl.core.policy.loading import inspect_policy
from rt_safe_rl.core.policy.model import load_policy_model
from rt_safe_rl.core.policy.runtime import PolicyRuntime

REPO = Path(__file__).resolve().parent.parent

# file -> (pipeline config, obs_dim, act_dim, recurrent, sha256 prefix from MANIFEST.md)
POLICIES: dict[str, tuple[str, int, int, bool, str]] = {
    'unitree_rl_gym__g1_motion.pt': ('g1_unitree_rl_gym', 47, 12, True, 'cf668f75b90d'),
    'unitree_rl_gym__go2_motion.pt': ('go2_unitree_rl_gym', 48, 12, False, '6dced76f0bb3'),
    'rl_sar__go2_robot_lab_policy.pt': ('go2_rl_sar_robot_lab', 45, 12, False, '9f14cb95e74a'),
    'rl_sar__go2_himloco_himloco.pt': ('go2_rl_sar_himloco', 270, 12, False, 'd9945f85a399'),
    'rl_sar__g1_robomimic_locomotion_policy_29dof.pt': (
        'g1_rl_sar_robomimic_29dof',
        96,
        29,
        True,
        'd1d91b0201be',
    ),
    'Lite3_rl_deploy__ppo_policy.onnx': ('lite3_ppo', 45, 12, False, 'efa6581d314d'),
}


def _pipe(name: str) -> Any:
    return load_pipeline_config(REPO / 'config' / 'policies' / f'{name}.yaml')


@pytest.mark.parametrize('fname', sorted(POLICIES))
def test_shared_policy_sizes_hash_recurrence_and_exact_fast_path(shared_data: Path, fname: str) -> None:
    cfg_name, obs_dim, act_dim, recurrent, sha = POLICIES[fname]
    path = shared_data / 'policies' / fname
    pipe = _pipe(cfg_name)
    assert pipe.obs_dim == obs_dim and pipe.n_joints == act_dim
    info = inspect_policy(path, pipe.model, obs_dim)
    assert (info.obs_dim, info.act_dim, info.recurrent) == (obs_dim, act_dim, recurrent)
    assert info.sha256.startswith(sha)
    # 1000 observations; recurrent models as one 1000-step rollout from reset
    cfg = PolicyNodeConfig(backend='auto', auto_samples=1000, auto_timing_iters=20, warmup_iters=2)
    m = load_policy_model(
        path, cfg, pipe.model, obs_dim=obs_dim, backends=['numba', 'torchscript'], keep_all=True
    )
    rows = {r.name: r for r in m.table}
    assert rows['numba'].available and rows['numba'].ok, rows['numba']
    assert rows['numba'].max_abs_err <= 1e-4
    assert rows[m.selected].ok and rows[m.selected].max_abs_err <= 1e-4


def test_shared_hash_pinning_refuses_a_different_hash(shared_data: Path) -> None:
    path = shared_data / 'policies' / 'unitree_rl_gym__go2_motion.pt'
    from rt_safe_rl.core.errors import PolicyLoadError

    with pytest.raises(PolicyLoadError, match='SHA-256'):
        inspect_policy(path, expected_sha256='f' * 64)


def test_shared_config_size_mismatch_is_a_clear_error(shared_data: Path) -> None:
    from rt_safe_rl.core.errors import PolicyLoadError

    path = shared_data / 'policies' / 'unitree_rl_gym__go2_motion.pt'  # takes 48
    with pytest.raises(PolicyLoadError, match='45'):
        inspect_policy(path, _pipe('go2_rl_sar_robot_lab').model, 45)


@pytest.mark.parametrize(
    'fname', ['unitree_rl_gym__g1_motion.pt', 'rl_sar__g1_robomimic_locomotion_policy_29dof.pt']
)
def test_recurrent_state_advances_once_per_policy_step_at_1khz(shared_data: Path, fname: str) -> None:
    """1 s of a 1 kHz loop at 50 Hz policy rate = 50 forwards; replaying exactly those observations
    through a fresh eager module from reset gives the same actions (state advanced once per step)."""
    cfg_name = POLICIES[fname][0]
    path = shared_data / 'policies' / fname
    cfg = PolicyNodeConfig(
        path=str(path),
        config=str(REPO / 'config' / 'policies' / f'{cfg_name}.yaml'),
        backend='numba',
        rate_hz=50.0,
        auto_samples=50,
        auto_timing_iters=5,
        warmup_iters=2,
    )
    pipe = _pipe(cfg_name)
    n_robot = pipe.n_joints
    rt = PolicyRuntime.from_config(cfg, None if not pipe.joints.names else list(pipe.joints.names))
    seen_obs: list[np.ndarray] = []
    seen_act: list[np.ndarray] = []
    fwd = rt.model.forward

    def spy(obs: Any, out: Any) -> None:
        fwd(obs, out)
        seen_obs.append(obs.copy())
        seen_act.append(out.copy())

    rt.model.forward = spy  # type: ignore[method-assign]
    rng = np.random.default_rng(3)
    out = np.zeros(n_robot)
    for i in range(1000):
        q = rng.normal(0.0, 0.1, n_robot)
        assert rt.control_step(i * 1_000_000, q, rng.normal(0.0, 0.5, n_robot), None, out)
    assert len(seen_obs) == 50
    ref = torch.jit.load(str(path))
    if hasattr(ref, 'reset_memory'):
        ref.reset_memory()
    else:
        with torch.no_grad():
            ref.hidden_state.zero_()
            ref.cell_state.zero_()
    with torch.inference_mode():
        for obs, act in zip(seen_obs, seen_act, strict=True):
            y = ref(torch.from_numpy(obs).reshape(1, -1)).numpy()[0]
            np.testing.assert_allclose(act, y, atol=1e-4)


@pytest.mark.parametrize('fname', sorted(POLICIES))
def test_shipped_config_runs_its_policy_in_the_1khz_loop(shared_data: Path, fname: str) -> None:
    """Each shipped pipeline YAML + its policy: configure with `auto`, 100 ms of 1 kHz cycles, all valid,
    targets near the default pose for a robot standing at the default pose."""
    cfg_name = POLICIES[fname][0]
    pipe = _pipe(cfg_name)
    names = list(pipe.joints.names) if pipe.joints.names else None
    cfg = PolicyNodeConfig(
        path=str(shared_data / 'policies' / fname),
        config=str(REPO / 'config' / 'policies' / f'{cfg_name}.yaml'),
        auto_samples=100,
        auto_timing_iters=10,
        warmup_iters=2,
    )
    rt = PolicyRuntime.from_config(cfg, names)
    n = rt.n_joints
    q = np.zeros(n)
    q[rt.obs_builder.idx] = pipe.default_q
    out = np.zeros(n)
    for i in range(100):
        assert rt.control_step(i * 1_000_000, q, np.zeros(n), None, out), rt.last_error
    assert rt.steps == 5 and np.all(np.isfinite(out))
    assert np.max(np.abs(out - q)) < 5.0  # bounded targets (rad) around the pose; limits are the filter's job
