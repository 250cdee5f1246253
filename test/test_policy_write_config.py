"""`rt-safe-rl policy inspect FILE --write-config Y` on each of the six shared policies: the written
pipeline YAML runs unchanged (configure with `auto`, 1 kHz cycles, all valid, finite targets).

Skipped with a reason where ../shared is absent (fresh clone); the ``shared_data`` fixture says why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rt_safe_rl.core.policy.config import PolicyNodeConfig, load_pipeline_config
from rt_safe_rl.core.policy.runtime import PolicyRuntime
from rt_safe_rl.tools.policy_inspect import main as policy_main

SHARED_POLICIES = [
    'Lite3_rl_deploy__ppo_policy.onnx',
    'rl_sar__g1_robomimic_locomotion_policy_29dof.pt',
    'rl_sar__go2_himloco_himloco.pt',
    'rl_sar__go2_robot_lab_policy.pt',
    'unitree_rl_gym__g1_motion.pt',
    'unitree_rl_gym__go2_motion.pt',
]


@pytest.mark.parametrize('fname', SHARED_POLICIES)
def test_written_config_runs_unchanged(shared_data: Path, tmp_path: Path, fname: str) -> None:
    """The CLI writes the skeleton; the runtime loads it as is and produces finite targets each cycle."""
    model = shared_data / 'policies' / fname
    yaml_path = tmp_path / 'pipeline.yaml'
    assert policy_main(['inspect', str(model), '--write-config', str(yaml_path)]) == 0
    pipe = load_pipeline_config(yaml_path)
    cfg = PolicyNodeConfig(
        path=str(model),
        config=str(yaml_path),
        auto_samples=50,
        auto_timing_iters=5,
        warmup_iters=1,
    )
    rt = PolicyRuntime.from_config(cfg, None)
    n = rt.n_joints
    assert n == len(pipe.default_q)
    q = np.zeros(n)
    out = np.zeros(n)
    for i in range(40):
        assert rt.control_step(i * 1_000_000, q, np.zeros(n), None, out), rt.last_error
    assert rt.steps >= 1 and np.all(np.isfinite(out))
