"""rt_safe_rl.api: execute_batch follows the single step's rules slot by slot (output guard over the
real elapsed time, operator blending, human data kept with its stamp, timing faults), and human
points without a stamp are stamped at arrival (a caller who stops sending them gets HUMAN_STALE)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rt_safe_rl.api import create_development_system
from rt_safe_rl.api.system import RtSystem

FAR_HUMAN = np.array([[3.0, 3.0, 0.5]])  # far: no SSM effect, the blend gives the operator full weight
# generous timing limits: a loaded shared machine must not turn a late cycle into a fault here;
# the pause test below sleeps past max_step_gap_s on purpose
GAP_S = 1.0
OVERRIDES: dict[str, Any] = {
    'policy': {'backend': 'eager'},
    # human points are sent every 3rd cycle: on a loaded machine 3 cycles can exceed the 0.2 s default
    'safety': {'state_timeout_s': 5.0, 'max_step_gap_s': GAP_S, 'ssm': {'human_timeout_s': 5.0}},
}


@pytest.fixture(scope='module')
def pair() -> Iterator[tuple[RtSystem, RtSystem]]:
    """Two development systems on the default policy: one single-step reference per batch slot
    (the batch slots of the first one are independent of its single-step filter)."""
    a = create_development_system(overrides=OVERRIDES)
    b = create_development_system(overrides=OVERRIDES)
    yield a, b
    a.close()
    b.close()


def _states(
    sys_: RtSystem, k: int, goals: np.ndarray, op: np.ndarray, human_every: int = 3
) -> list[dict[str, Any]]:
    """Cycle k's states of slot 0 (goal 0, operator command from cycle 20 on) and slot 1 (goal 1,
    no operator); human points every `human_every` cycles (the others reuse the last ones); one stamp."""
    s = sys_.initial_state()
    stamp = time.monotonic_ns()
    states: list[dict[str, Any]] = []
    for i in range(2):
        st: dict[str, Any] = {'q': s.q, 'dq': s.dq, 'command': goals[i], 'stamp_ns': stamp}
        if k % human_every == 0:
            st['human_points'] = FAR_HUMAN
        if i == 0 and k >= 20:
            st['operator_command'] = op
        states.append(st)
    return states


def _run_both(
    pair: tuple[RtSystem, RtSystem],
    cycles: int,
    goals: np.ndarray,
    op: np.ndarray,
    sleep_at: int = -1,
    human_every: int = 3,
) -> tuple[np.ndarray, np.ndarray, list[list[str]], list[list[str]]]:
    """`cycles` cycles of the 2-slot batch on pair[0] and, interleaved, the single steps of each slot
    on its own system with the very same states. Returns (batch actions (T, 2, n), single actions
    (T, 2, n), batch faults, single faults)."""
    a, b = pair
    a.reset_batch()
    out_b, out_s, f_b, f_s = [], [], [], []
    with a, b:  # entering: fresh filters and policy state, like the fresh batch slots
        for k in range(cycles):
            if k == sleep_at:
                time.sleep(GAP_S * 1.5)
            states = _states(a, k, goals, op, human_every)
            acts, faults = a.execute_batch(states)
            singles = [sys_.execute_rt_inference_sync(st) for sys_, st in zip((a, b), states, strict=True)]
            out_b.append(acts.copy())
            out_s.append(np.stack([x[0] for x in singles]))
            f_b.append(faults)
            f_s.append([x[1].fault for x in singles])
            time.sleep(0.001)
    return np.asarray(out_b), np.asarray(out_s), f_b, f_s


def _goals(sys_: RtSystem, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q0 = np.asarray(sys_.initial_state().q)
    goals = np.stack([q0 + rng.uniform(-0.4, 0.4, q0.shape) for _ in range(2)])
    goals[1] = goals[0]  # same goal: slot 0 differs from slot 1 only by its operator command
    return goals, q0 + rng.uniform(-0.4, 0.4, q0.shape)


def test_batch_equals_the_single_steps_including_the_operator_command(
    pair: tuple[RtSystem, RtSystem],
) -> None:
    """Slot i of successive batches == a fresh system's single steps for the same states (same seed),
    with an operator command blended in slot 0 and human points reused between measurements."""
    goals, op = _goals(pair[0], seed=7)
    out_b, out_s, f_b, f_s = _run_both(pair, 80, goals, op)
    assert f_b == f_s
    assert all(f == ['OK', 'OK'] for f in f_b)
    np.testing.assert_array_equal(out_b, out_s)
    assert not np.allclose(out_b[-1, 0], out_b[-1, 1]), 'the operator command changed slot 0 (blend)'
    assert not np.allclose(out_b[-1, 1], out_b[0, 1]), 'the arm moves toward its goal'


def test_batch_after_a_pause_restarts_from_rest_and_latches_like_the_single_step(
    pair: tuple[RtSystem, RtSystem],
) -> None:
    """A pause over max_step_gap_s between two batches: the robot held the last command, so the
    next command may not carry the old velocity (a step from rest to speed); each slot latches
    CLOCK_JUMP and holds, exactly as the single step does."""
    goals, op = _goals(pair[0], seed=11)
    out_b, out_s, f_b, f_s = _run_both(pair, 60, goals, op, sleep_at=50, human_every=1)
    assert f_b == f_s
    assert f_b[49] == ['OK', 'OK'] and f_b[50] == ['CLOCK_JUMP', 'CLOCK_JUMP']
    np.testing.assert_array_equal(out_b, out_s)
    moved = np.abs(out_b[49] - out_b[48]).max()
    assert moved > 1e-4, 'the arm was moving before the pause'
    a_max = pair[0].model.a_max
    dt = 1.0 / pair[0].app.safety.rate_hz
    step = np.abs(out_b[50] - out_b[49])  # from rest: at most a_max dt^2 per joint
    assert np.all(step <= a_max * dt * dt * (1 + 1e-6) + 1e-12), step


def test_batch_guard_brakes_and_latches_an_injected_jump_like_the_single_step(
    pair: tuple[RtSystem, RtSystem],
) -> None:
    """A 50 mrad discontinuity made before the output (the command state corrupted, as a filter bug
    would) never leaves the batch: its slot sends the braking command, latches OUTPUT_GUARD, and
    both match the single step given the same injection; the other slot is untouched."""
    a, b = pair
    goals, op = _goals(a, seed=3)
    a.reset_batch()
    with a, b:
        for k in range(60):
            states = _states(a, k, goals, op, human_every=1)
            if k == 50:
                a._batch.cmd_state[0, 0, 2] += 0.05  # fault injection into slot 0
                a.safety._filter._cs[0, 2] += 0.05  # the same into the single-step filter
            acts, faults = a.execute_batch(states)
            single, m = a.execute_rt_inference_sync(states[0])
            b.execute_rt_inference_sync(states[1])
            if k == 49:
                before = acts[0].copy()
            if k == 50:
                assert faults == ['OUTPUT_GUARD', 'OK'] and m.fault == 'OUTPUT_GUARD' and m.latched
                np.testing.assert_array_equal(acts[0], single)
                assert np.abs(acts[0] - before).max() < 0.01, 'the jump did not leave: the brake did'
            time.sleep(0.001)
    assert faults[0] == 'OUTPUT_GUARD', 'latched until reset_batch()'
    assert a._batch.guards[0].violations == 1 and a._batch.guards[1].violations == 0


def test_human_points_without_a_stamp_go_stale_when_the_caller_stops_sending_them() -> None:
    """Unstamped human points are stamped at arrival; calls without them reuse the last ones, so a
    caller who stops sending a human gets HUMAN_STALE once safety.ssm.human_timeout_s has passed
    (like the node), not 'fresh forever' and not an instant HUMAN_MISSING."""
    timeout_s = 0.15
    s = create_development_system(
        overrides={
            'policy': {'backend': 'eager'},
            'safety': {'state_timeout_s': 5.0, 'max_step_gap_s': 5.0, 'ssm': {'human_timeout_s': timeout_s}},
        }
    )
    try:
        st = s.initial_state()
        with s:
            for _ in range(5):
                _, m = s.execute_rt_inference_sync({'q': st.q, 'dq': st.dq, 'human_points': FAR_HUMAN})
            assert m.fault == 'OK'
            t_last = time.monotonic()
            _, m = s.execute_rt_inference_sync({'q': st.q, 'dq': st.dq})
            if time.monotonic() - t_last < timeout_s:  # (a stalled machine may have slept past it)
                assert m.fault == 'OK', 'the last human measurement is reused while it is fresh'
            time.sleep(timeout_s * 2)
            _, m = s.execute_rt_inference_sync({'q': st.q, 'dq': st.dq})
            assert m.fault == 'HUMAN_STALE' and m.latched and m.stopping
            # fresh human data does not clear a latched stop
            _, m = s.execute_rt_inference_sync(
                {'q': st.q, 'dq': st.dq, 'human_points': FAR_HUMAN, 'human_stamp_ns': time.monotonic_ns()}
            )
            assert m.latched, 'a latched stop stays until reset()'
        with s:  # entering again: a fresh filter, the old human forgotten (fail closed); an explicit
            # stamp is honoured: a measurement older than the timeout is stale at once
            _, m = s.execute_rt_inference_sync({'q': st.q, 'dq': st.dq})
            assert m.fault == 'AWAITING_HUMAN'
            old = time.monotonic_ns() - int(2 * timeout_s * 1e9)
            _, m = s.execute_rt_inference_sync(
                {'q': st.q, 'dq': st.dq, 'human_points': FAR_HUMAN, 'human_stamp_ns': old}
            )
            assert m.fault == 'HUMAN_STALE'
    finally:
        s.close()
