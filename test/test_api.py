"""rt_safe_rl.api: the seed's snippet verbatim, the async/sync paths, states, policies, options."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rt_safe_rl.api import (
    RobotState,
    RTOptimizationConfig,
    TimingRequirements,
    create_development_system,
    create_production_system,
)
from rt_safe_rl.api.state import StateError
from rt_safe_rl.api.system import InferenceMetadata, RtSystem, SystemNotRunningError
from rt_safe_rl.core.errors import ConfigError

FAR_HUMAN = np.array([[3.0, 3.0, 0.5]])  # well outside any stop distance


@pytest.fixture(scope='module')
def system() -> Iterator[RtSystem]:
    """A development system on the shipped default policy (eager: quick to build)."""
    s = create_development_system(overrides={'policy': {'backend': 'eager'}})
    yield s
    s.close()


def test_seed_snippet_runs_verbatim_on_the_default_policy() -> None:
    """The issue's snippet, verbatim after the import, on the shipped default policy and arm."""
    your_policy = None

    async def seed() -> tuple[Any, Any, Any, Any]:
        system = create_development_system(your_policy)
        state = system.initial_state()
        async with system:
            action, metadata = await system.execute_rt_inference(state)

        system = create_production_system(your_policy)  # also create_edge_system, create_cloud_system

        config = RTOptimizationConfig(
            timing_requirements=TimingRequirements(max_execution_time_us=300, max_jitter_us=20, min_frequency_hz=2000.0),  # noqa: E501
            enable_system_optimization=True, enable_gpu_acceleration=True,
            enable_continuous_monitoring=True, deployment_mode="production")  # fmt: skip
        return action, metadata, system, config

    action, metadata, prod, config = asyncio.run(seed())
    assert action.shape == (7,) and np.isfinite(action).all()
    assert isinstance(metadata, InferenceMetadata)
    assert metadata.backend == prod.info()['backend'] != ''
    assert set(metadata.stage_us) == {'parse', 'queue', 'policy', 'safety'}
    assert metadata.thread == 'event_loop'  # async_mode='inline': the loop thread made RT
    # no human data and ssm.require_human: the filter holds (fails closed), and says why
    assert metadata.fault == 'AWAITING_HUMAN' and metadata.stopping
    assert prod.app.deployment.profile == 'production'
    assert config.to_overrides()['control']['rate_hz'] == 2000.0


def test_async_metadata_has_stage_times_deadline_safety_report_backend(system: RtSystem) -> None:
    """Each call returns the safe action and what happened: stages, deadline, safety report."""

    async def run() -> list[tuple[np.ndarray, InferenceMetadata]]:
        out = []
        async with system:
            s = system.initial_state()
            s.human_points = FAR_HUMAN
            s.inputs = {'command': np.asarray(s.q) + 0.2}
            for _ in range(50):
                out.append(await system.execute_rt_inference(s))
        return out

    results = asyncio.run(run())
    action, m = results[-1]
    assert m.fault == 'OK' and m.policy_valid and not m.latched
    assert m.deadline_us == pytest.approx(system.app.monitor.thresholds.e2e_budget_s * 1e6)
    assert m.deadline_met == (m.total_us <= m.deadline_us)
    assert isinstance(m.active_constraints, list)
    assert m['safety']['fault'] == 'OK' and 'intervention_rad' in m.safety
    assert m.as_dict()['backend'] == 'eager'
    assert [r[1].seq for r in results] == sorted(r[1].seq for r in results)
    assert not np.allclose(action, system.initial_state().q), 'the arm moves toward the commanded goal'


def test_sync_twin_dict_state_and_bad_state_is_a_controlled_stop(system: RtSystem) -> None:
    """Plain dict with top-level inputs; a NaN state gives a stop action and the fault."""
    s = system.initial_state()
    with system:
        _, m = system.execute_rt_inference_sync(
            {'q': s.q, 'dq': s.dq, 'command': s.q, 'human_points': FAR_HUMAN}
        )
        assert m.thread == 'caller' and m.fault == 'OK'
        bad = np.array(s.q, dtype=float)
        bad[2] = np.nan
        action, m = system.execute_rt_inference_sync({'q': bad, 'dq': s.dq, 'human_points': FAR_HUMAN})
        assert np.isfinite(action).all()
        assert m.fault in ('NONFINITE_INPUT', 'POLICY_INVALID') and m.latched and m.stopping
        _, m = system.execute_rt_inference_sync({'q': s.q, 'dq': s.dq, 'human_points': FAR_HUMAN})
        assert m.latched, 'a latched stop stays until reset()'
        ok, why = system.reset()
        assert ok, why


@pytest.mark.parametrize(
    ('state', 'message'),
    [
        ({'q': np.zeros(3), 'dq': np.zeros(7)}, 'state.q: expected shape (7,)'),
        ({'q': np.zeros(7), 'dq': np.zeros((7, 1))}, 'state.dq: expected shape (7,)'),
        ({'q': np.zeros(7)}, 'q (rad) and dq (rad/s) are required'),
        ({'q': np.zeros(7), 'dq': np.zeros(7), 'velocity': 1}, "unknown key 'velocity'"),
        ({'q': np.zeros(7), 'dq': np.zeros(7), 'inputs': {'goal': [0.0]}}, "unknown input 'goal'"),
        ({'q': np.zeros(7), 'dq': np.zeros(7), 'human_points': np.zeros((2, 2))}, 'state.human_points'),
        ({'q': ['a'] * 7, 'dq': np.zeros(7)}, 'state.q: expected 7 numbers'),
        ([0.0] * 14, 'expected a RobotState or a dict'),
    ],
)
def test_wrong_shapes_at_the_boundary_raise_a_clear_error(system: RtSystem, state: Any, message: str) -> None:
    """Misuse raises StateError (one line, names the field) before anything runs."""
    with system, pytest.raises(StateError, match=message.replace('(', r'\(').replace(')', r'\)')):
        system.execute_rt_inference_sync(state)


def test_calls_outside_the_context_raise(system: RtSystem) -> None:
    """Outside `with` / `async with` the system is not running: a clear error."""
    with pytest.raises(SystemNotRunningError, match='with system'):
        system.execute_rt_inference_sync(system.initial_state())
    with pytest.raises(SystemNotRunningError, match='async with system'):
        asyncio.run(system.execute_rt_inference(system.initial_state()))


def test_dataclass_state_and_context_restores_the_thread(system: RtSystem) -> None:
    """RobotState works; leaving `with` restores the caller thread's scheduling and CPUs."""
    import os

    before = (os.sched_getscheduler(0), os.sched_getaffinity(0))
    s = system.initial_state()
    with system:
        _, m = system.execute_rt_inference_sync(RobotState(q=s.q, dq=s.dq, human_points=FAR_HUMAN))
        assert m.fault == 'OK'
        assert system.info()['rt']['mode'] == 'sync'
    assert (os.sched_getscheduler(0), os.sched_getaffinity(0)) == before


def test_torch_module_and_torchscript_policies(tmp_path: Any) -> None:
    """An nn.Module and a TorchScript module go through the same loader; other types are refused."""
    torch = pytest.importorskip('torch', reason='torch not installed (requirements.txt installs it)')
    net = torch.nn.Sequential(torch.nn.Linear(21, 16), torch.nn.Tanh(), torch.nn.Linear(16, 7))
    for policy in (net, torch.jit.script(net)):
        s = create_development_system(policy, overrides={'policy': {'backend': 'eager'}})
        try:
            assert s.runtime.obs_dim == 21
            with s:
                a, m = s.execute_rt_inference_sync({**vars(s.initial_state()), 'human_points': FAR_HUMAN})
            assert m.policy_valid and a.shape == (7,)
        finally:
            s.close()
    with pytest.raises(TypeError, match='your_policy: expected a path'):
        create_development_system(42)


def test_options_map_onto_the_config() -> None:
    """TimingRequirements set rates and the monitor budgets; a mode mismatch is refused."""
    cfg = RTOptimizationConfig(
        timing_requirements=TimingRequirements(
            max_execution_time_us=300, max_jitter_us=20, min_frequency_hz=2000.0
        ),
        enable_gpu_acceleration=False,
        deployment_mode='development',
    )
    ov = cfg.to_overrides()
    assert ov['safety']['rate_hz'] == 2000.0 and ov['deployment']['gpu'] is False
    th = ov['monitor']['thresholds']
    assert th['e2e_budget_s'] == pytest.approx(300e-6)
    assert th['period_budget_s'] == pytest.approx(1 / 2000 + 20e-6)
    assert th['expected_rate_hz'] == 2000.0
    with pytest.raises(ConfigError, match='deployment_mode'):
        RTOptimizationConfig(deployment_mode='space')
    with pytest.raises(ConfigError, match='min_frequency_hz'):
        TimingRequirements(min_frequency_hz=0.0)
    with pytest.raises(ConfigError, match='create_production_system'):
        create_development_system(config=RTOptimizationConfig(deployment_mode='production'))


def test_async_worker_mode_runs_on_its_own_thread(system: RtSystem) -> None:
    """async_mode='worker': a dedicated RT thread runs the cycles; errors come back to the caller."""
    import threading

    async def run() -> tuple[InferenceMetadata, int]:
        async with system:
            s = system.initial_state()
            s.human_points = FAR_HUMAN
            _, m = await system.execute_rt_inference(s)
            n = threading.active_count()
            with pytest.raises(StateError):
                await system.execute_rt_inference({'q': [0.0], 'dq': [0.0]})
        return m, n

    system.async_mode = 'worker'
    try:
        before = threading.active_count()
        m, during = asyncio.run(run())
    finally:
        system.async_mode = 'inline'
    assert m.thread == 'rt_worker' and m.fault == 'OK'
    assert during == before + 1 and threading.active_count() == before


def test_execute_batch_fails_closed_per_robot(system: RtSystem) -> None:
    """Cloud throughput path: B robots per call; a bad state stops (latched) its own slot only."""
    s = system.initial_state()
    good = {'q': s.q, 'dq': s.dq, 'human_points': FAR_HUMAN, 'command': np.asarray(s.q) + 0.2}
    bad = dict(good, q=np.full(7, np.nan))
    try:
        for _ in range(20):
            actions, faults = system.execute_batch([good, good, dict(good, human_points=None)])
        assert actions.shape == (3, 7) and faults == ['OK', 'OK', 'AWAITING_HUMAN']
        assert not np.allclose(actions[0], s.q), 'a healthy slot moves toward its goal'
        actions, faults = system.execute_batch([good, bad, good])
        assert faults[0] == 'OK' and faults[2] == 'OK' and faults[1] != 'OK'
        assert np.isfinite(actions).all()
        _, faults = system.execute_batch([good, good, good])
        assert faults[1] != 'OK', 'latched until reset_batch()'
        with pytest.raises(StateError, match='serves 3 robots'):
            system.execute_batch([good])
        stage = system._batch
        last = list(stage.last_t_ns)
        with pytest.raises(StateError, match=r'state\.q'):
            system.execute_batch([good, good, dict(good, q=np.zeros(3))])
        assert stage.last_t_ns == last, 'a wrong shape in any state raises before any slot steps'
    finally:
        system.reset_batch()


def test_exact_float64_fast_path_keeps_every_shape_check(system: RtSystem) -> None:
    """The per-call fast path (float64 arrays of the right shape pass as they are) still refuses
    every wrong shape, and other dtypes / layouts are converted, not trusted."""
    s = system.initial_state()
    q = np.asarray(s.q, np.float64)
    too_many = np.tile(FAR_HUMAN, (system.safety.max_human_points + 1, 1))
    with system:
        for bad, message in [
            ({'q': q.reshape(7, 1), 'dq': s.dq}, r'state.q: expected shape \(7,\)'),
            ({'q': q, 'dq': np.zeros(8)}, r'state.dq: expected shape \(7,\)'),
            ({'q': q, 'dq': s.dq, 'human_points': np.zeros((2, 2))}, 'state.human_points'),
            ({'q': q, 'dq': s.dq, 'human_points': too_many}, 'state.human_points'),
            ({'q': q, 'dq': s.dq, 'operator_command': np.zeros(6)}, 'state.operator_command'),
        ]:
            with pytest.raises(StateError, match=message):
                system.execute_rt_inference_sync(bad)
        wide = np.zeros((7, 2))
        wide[:, 0] = q
        _, m = system.execute_rt_inference_sync(
            {'q': q.astype(np.float32), 'dq': wide[:, 1], 'human_points': FAR_HUMAN[0].tolist()}
        )
        assert m.fault == 'OK', 'float32, a strided view and a list are converted'
