"""The default-policy trainer: seeded and reproducible, writes a TorchScript model + metadata that the
policy runtime loads with the shipped pipeline; the shipped model actually reaches goals in the sim."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rt_safe_rl.core.errors import ConfigError

TINY = ['--iterations', '2', '--batch', '8', '--horizon-s', '0.1', '--eval-goals', '2', '--quiet']


def test_training_is_reproducible_and_writes_model_and_metadata(tmp_path: Path) -> None:
    torch = pytest.importorskip('torch', reason='torch not installed (requirements.txt installs it)')
    from rt_safe_rl.tools.train_default_policy import main

    a, b = tmp_path / 'a' / 'm.pt', tmp_path / 'b' / 'm.pt'
    assert main(['--out', str(a), *TINY]) == 0
    assert main(['--out', str(b), *TINY]) == 0
    ma, mb = torch.jit.load(str(a)), torch.jit.load(str(b))
    sa, sb = ma.state_dict(), mb.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    meta = json.loads(a.with_suffix('.json').read_text())
    assert meta['settings']['seed'] == 0 and meta['obs_dim'] == 21 and meta['act_dim'] == 7
    assert set(meta['eval_learned']) >= {'mean_final_error_rad', 'reached_fraction'}
    assert meta['weights_sha256'] == json.loads(b.with_suffix('.json').read_text())['weights_sha256']
    out = ma(torch.zeros(1, 21))
    assert tuple(out.shape) == (1, 7)
    c = tmp_path / 'c' / 'm.pt'
    assert main(['--out', str(c), *TINY, '--seed', '1']) == 0
    sc = torch.jit.load(str(c)).state_dict()
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)  # the seed matters


def test_shipped_metadata_matches_the_shipped_weights() -> None:
    torch = pytest.importorskip('torch', reason='torch not installed (requirements.txt installs it)')
    from rt_safe_rl.paths import package_file
    from rt_safe_rl.tools.train_default_policy import weights_sha256

    pt = package_file('models/arm7_reach.pt')
    meta = json.loads(pt.with_suffix('.json').read_text())
    assert weights_sha256(torch.jit.load(str(pt))) == meta['weights_sha256']
    assert meta['settings']['seed'] == 0 and meta['eval_learned']['reached_fraction'] > 0.9


def test_bad_arguments_are_config_errors() -> None:
    from rt_safe_rl.tools.train_default_policy import main

    with pytest.raises(ConfigError, match='--iterations'):
        main(['--iterations', '0', '--quiet'])


def test_trainer_rejects_pipelines_it_cannot_reproduce(tmp_path: Path) -> None:
    from rt_safe_rl.tools.train_default_policy import obs_layout_from_pipeline

    p = tmp_path / 'p.yaml'
    p.write_text('default_q: [0.0, 0.0]\nobservation:\n  terms:\n    - {term: phase}\n')
    with pytest.raises(ConfigError, match='not supported'):
        obs_layout_from_pipeline(p)


def test_shipped_model_reaches_goals_through_the_policy_runtime() -> None:
    """The shipped model, run by the policy engineer's runtime at 1 kHz (50 Hz policy, hold) in the
    simulated arm, brings the arm to a goal it has not seen."""
    pytest.importorskip('torch', reason='torch not installed (requirements.txt installs it)')
    from rt_safe_rl.config import load_config
    from rt_safe_rl.core.policy.runtime import PolicyRuntime
    from rt_safe_rl.core.robot_model import RobotModel
    from rt_safe_rl.sim.arm import ArmLimits, ArmSim
    from rt_safe_rl.sim.operator import GoalGenerator

    cfg = load_config(None, {'policy': {'backend': 'eager', 'auto_samples': 10, 'warmup_iters': 2}})
    model = RobotModel.from_config(cfg.robot, cfg.base_dir)
    lim = ArmLimits.from_model(model, cfg.sim.robot)
    rt = PolicyRuntime.from_config(cfg.policy, model.joint_names, base_dir=cfg.base_dir)
    home = lim.initial_q(cfg.sim.robot)
    goal = GoalGenerator(lim.q_min, lim.q_max, home, 0.3, 0.5, seed=12345).sample()
    arm = ArmSim(lim, 1e-3, home)
    target = np.zeros(7)
    for k in range(2000):
        assert rt.control_step(k * 1_000_000, arm.q, arm.dq, {'command': goal}, target)
        arm.set_command(target)
        arm.step()
    assert np.max(np.abs(arm.q - goal)) < 0.05, arm.q - goal
    assert np.max(np.abs(arm.dq)) < 0.1  # settled (a learned policy keeps a small wobble)
