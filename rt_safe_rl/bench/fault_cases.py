"""The cases of ``rt-safe-rl bench faults`` (:mod:`rt_safe_rl.bench.faults`).

Each case is a function ``(ctx) -> Outcome`` that injects its fault while the arm moves and says
whether the expected reaction happened (``handled``); :data:`CASES` lists them in campaign order
with the reaction each expects. The campaign measures the violations of each case's window.
Not RT code.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rt_safe_rl.bench.faults import (
    DROP_KEYS,
    MAGIC_NAN_RAD,
    MAGIC_RAISE_RAD,
    MAGIC_SLOW_RAD,
    Ctx,
    Outcome,
    _hook_window,
)
from rt_safe_rl.nodes.msgs import set_stamp, stamp_ns_of

# ---------------------------------------------------------------------------------------------
# joint_states


def _dropped_under(
    ctx: Ctx, hook: Callable[[Any, int], list[Any]], keys: tuple[str, ...] = DROP_KEYS
) -> Outcome:
    """Run the case's window with ``hook`` rewriting each state message; handled when a drop
    counter named by ``keys`` grew meanwhile or a fault latched (:meth:`Ctx.drop_outcome`)."""
    before = ctx.counters()
    _hook_window(ctx, hook)
    return ctx.drop_outcome(before, keys)


def _state_value(value: float) -> Callable[[Ctx], Outcome]:
    def run(ctx: Ctx) -> Outcome:
        def hook(msg: Any, seq: int) -> list[Any]:
            pos = list(msg.position)
            pos[1] = value
            msg.position = pos
            return [msg]

        _hook_window(ctx, hook)
        return ctx.stop_outcome()

    return run


def _js_short(ctx: Ctx) -> Outcome:
    def hook(msg: Any, seq: int) -> list[Any]:
        msg.name, msg.position, msg.velocity = msg.name[:-1], msg.position[:-1], msg.velocity[:-1]
        return [msg]

    _hook_window(ctx, hook)
    return ctx.stop_outcome()


def _js_long(ctx: Ctx) -> Outcome:
    """Arrays longer than the names (a malformed message)."""

    def hook(msg: Any, seq: int) -> list[Any]:
        msg.position = [*msg.position, 0.0]
        msg.velocity = [*msg.velocity, 0.0]
        return [msg]

    return _dropped_under(ctx, hook)


def _js_renamed(ctx: Ctx) -> Outcome:
    def hook(msg: Any, seq: int) -> list[Any]:
        msg.name = [f'{n}_renamed' for n in msg.name]
        return [msg]

    _hook_window(ctx, hook)
    return ctx.stop_outcome()


def _js_reordered(ctx: Ctx) -> Outcome:
    """A valid message in another joint order: must be mapped by name and go on normally."""

    def hook(msg: Any, seq: int) -> list[Any]:
        msg.name, msg.position, msg.velocity = msg.name[::-1], msg.position[::-1], msg.velocity[::-1]
        return [msg]

    _hook_window(ctx, hook)
    f = ctx.latched_fault()
    moving = ctx.inj.moving_ratio(0.5) > 0.0
    return Outcome(not f and moving, f or 'none', f'latched {f}' if f else 'mapped by name, loop went on')


def _js_no_velocity(ctx: Ctx) -> Outcome:
    def hook(msg: Any, seq: int) -> list[Any]:
        msg.velocity = []
        return [msg]

    return _dropped_under(ctx, hook, ('velocity', 'estimat'))


def _js_stale(ctx: Ctx) -> Outcome:
    _hook_window(ctx, lambda msg, seq: [])
    return ctx.stop_outcome()


def _js_stamps_out_of_order(ctx: Ctx) -> Outcome:
    def hook(msg: Any, seq: int) -> list[Any]:
        if seq % 3 == 0:
            ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec - 7_000_000
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
        return [msg]

    return _dropped_under(ctx, hook)


def _js_stamps_shuffled(ctx: Ctx) -> Outcome:
    """States delivered out of order by up to +-7 periods (their stamps shuffled, as a reordering
    transport or a driver with a bad clock would): older ones are dropped and counted."""
    rng = np.random.default_rng(11)
    period_ns = round(ctx.inj.period_s * 1e9)

    def hook(msg: Any, seq: int) -> list[Any]:
        set_stamp(msg, stamp_ns_of(msg) + int(rng.integers(-7, 8)) * period_ns)
        return [msg]

    return _dropped_under(ctx, hook)


def _js_duplicates(ctx: Ctx) -> Outcome:
    def hook(msg: Any, seq: int) -> list[Any]:
        return [msg, copy.deepcopy(msg)]

    return _dropped_under(ctx, hook)


def _js_competing(ctx: Ctx) -> Outcome:
    """A second driver publishing states 0.3 rad off, interleaved with ours."""
    inj = ctx.inj

    def hook(msg: Any, seq: int) -> list[Any]:
        other = copy.deepcopy(msg)
        other.position = [p + 0.3 for p in msg.position]
        inj.publish_rival(other)
        return [msg]

    try:
        _hook_window(ctx, hook)
        f = ctx.latched_fault()
        named = 'publisher' in (f + ctx.status_texts()).lower()
    finally:
        inj.close_rival()
    return Outcome(
        bool(f) and named, f or 'none', f'latched {f}; publishers named: {named}' if f else 'no stop'
    )


# ---------------------------------------------------------------------------------------------
# human, operator


def _human_nan(ctx: Ctx) -> Outcome:
    ctx.mark()
    ctx.inj.human_xyz = np.array([math.nan, 0.0, 0.6])
    ctx.wait()
    return ctx.stop_outcome()


def _human_inside(ctx: Ctx) -> Outcome:
    """The person appears next to the arm (well inside the protective distance)."""
    ctx.mark()
    ctx.inj.human_xyz = np.array([0.15, 0.0, 0.5])
    ctx.wait()
    rest = ctx.wait_rest(0.5)
    f = ctx.latched_fault()
    return Outcome(
        rest, f or 'ssm stop', 'arm at rest' if rest else f'still moving; status: {ctx.status_texts()}'
    )


def _human_silent(ctx: Ctx) -> Outcome:
    ctx.mark()
    ctx.inj.human_xyz = None
    ctx.wait()
    return ctx.stop_outcome()


def _operator(values: Callable[[int], list[float]]) -> Callable[[Ctx], Outcome]:
    def run(ctx: Ctx) -> Outcome:
        before = ctx.counters()
        ctx.mark()
        end = time.monotonic() + ctx.window_s
        while time.monotonic() < end:
            ctx.inj.publish_operator(values(ctx.inj.model.n_joints))
            time.sleep(0.01)
        return ctx.drop_outcome(before, ('operator', 'rejected', 'dropped'))

    return run


# ---------------------------------------------------------------------------------------------
# policy (the fault policy misbehaves when the goal's last joint is off by a magic value)


def _policy(magic_rad: float) -> Callable[[Ctx], Outcome]:
    def run(ctx: Ctx) -> Outcome:
        inj = ctx.inj
        goal = inj.q.copy()
        goal[-1] += magic_rad
        ctx.mark()
        inj.goal_override = goal
        ctx.wait()
        inj.goal_override = None
        out = ctx.stop_outcome()
        if not out.handled and magic_rad == MAGIC_SLOW_RAD:
            covered = ctx.counters().get('monitor_publishes', 0.0)
            return Outcome(False, 'none', f'no stop (monitor publishes {covered:.0f}); {out.detail}')
        return out

    return run


# ---------------------------------------------------------------------------------------------
# reset, live parameters


def _reset_moving(ctx: Ctx) -> Outcome:
    ctx.mark()
    ok, msg = ctx.inj.reset()
    ctx.wait()
    noop = (not ok) or 'not latched' in msg.lower() or 'no-op' in msg.lower() or 'nothing' in msg.lower()
    return Outcome(noop, 'none', f'reset -> ({ok}, {msg!r})')


def _latch_by_human_nan(ctx: Ctx) -> None:
    ctx.inj.human_xyz = np.array([math.nan, 0.0, 0.6])
    time.sleep(0.08)
    ctx.inj.human_xyz = np.array([2.5, 0.0, 0.6])


def _reset_latched(ctx: Ctx) -> Outcome:
    ctx.mark()
    _latch_by_human_nan(ctx)
    ctx.wait_rest(3.0)
    applied0 = ctx.inj.status.get('resets_applied', '?')
    ok, msg = ctx.inj.reset()
    ctx.wait()
    resumed = ok and not ctx.inj.latched
    detail = f'reset at rest -> ({ok}, {msg!r})'
    if not resumed:  # say whether the reset applied and what latched after it (diagnosis)
        st = ctx.inj.status
        detail += (
            f'; resets_applied {applied0} -> {st.get("resets_applied", "?")}, now latched'
            f' {st.get("fault", "?")}: {st.get("fault_detail", "")!r}'
        )
    return Outcome(resumed, ctx.latched_fault() or 'none', detail)


def _reset_braking(ctx: Ctx) -> Outcome:
    """~/reset 30 ms into a latched stop. Handled: refused while the commands still move; an
    accepted reset is right only when the stop had completed by the time the reset was answered
    (a command at rest arrived in the 20 ms before the reply: a command and the reply travel
    different ways, and a stop 30 ms in still brakes for tens of ms more), said in the detail."""
    ctx.mark()
    _latch_by_human_nan(ctx)
    time.sleep(0.03)
    braking = ctx.inj.moving_ratio(0.01) > 1e-3
    ok, msg = ctx.inj.reset()
    t_reply = time.monotonic_ns()
    moving_at_reply = ctx.inj.min_step_ratio(t_reply - 20_000_000, t_reply) > 1e-3
    ctx.wait()
    state = 'still braking' if braking else 'already at rest (the stop completed before the call)'
    if ok and braking and not moving_at_reply:
        state = 'braking at the call, at rest when the reset was answered'
    handled = (not ok) or not moving_at_reply
    return Outcome(handled, ctx.latched_fault() or 'none', f'reset, {state} -> ({ok}, {msg!r})')


def _param(values: dict[str, Any], restore: dict[str, Any], expect_ok: bool) -> Callable[[Ctx], Outcome]:
    def run(ctx: Ctx) -> Outcome:
        ctx.mark()
        ok, why = ctx.inj.set_parameters(values)
        ctx.wait()
        if ok and restore:
            ctx.inj.set_parameters(restore)  # undo an accepted loosening (tightening back: allowed)
        verdict = 'accepted' if ok else f'refused: {why}'
        return Outcome(ok == expect_ok, 'none' if ok else 'refused', f'{values} {verdict}')

    return run


def _sigterm(ctx: Ctx) -> Outcome:
    """SIGTERM to the SUT while the arm moves: controlled stop, hold, exit 0."""
    ctx.mark()
    rc = ctx.sut.stop(15, timeout_s=30.0)
    time.sleep(0.2)
    last = ctx.inj.cmd_log[-5:]
    at_rest = bool(last) and max(r for _, r in last) < 1e-3
    said = 'controlled stop' in ctx.sut.log_text()
    handled = rc == 0 and at_rest and said
    return Outcome(handled, 'SIGTERM', f'exit {rc}; last commands at rest: {at_rest}; stop logged: {said}')


#: (name, fault injected, expected reaction, function); campaign order (sigterm last)
CASES: list[tuple[str, str, str, Callable[[Ctx], Outcome]]] = [
    ('js_nan', 'joint_states position NaN', 'stop', _state_value(math.nan)),
    ('js_inf', 'joint_states position +Inf', 'stop', _state_value(math.inf)),
    ('js_huge', 'joint_states position 1e9 rad', 'stop', _state_value(1e9)),
    ('js_too_short', 'joint_states with one joint missing', 'stop', _js_short),
    ('js_too_long', 'joint_states arrays longer than the names', 'stop', _js_long),
    ('js_renamed', 'joint_states with unknown joint names', 'stop', _js_renamed),
    ('js_reordered', 'joint_states in reversed joint order (valid)', 'continue', _js_reordered),
    ('js_missing_velocity', 'joint_states without velocity', 'drop', _js_no_velocity),
    ('js_stale', 'joint_states stop arriving', 'stop', _js_stale),
    ('js_stamps_out_of_order', 'every 3rd stamp 7 ms in the past', 'drop', _js_stamps_out_of_order),
    ('js_stamps_shuffled', 'stamps shuffled by +-7 periods', 'drop', _js_stamps_shuffled),
    ('js_duplicates', 'every state published twice', 'drop', _js_duplicates),
    ('js_competing_publisher', 'a second joint_states publisher, 0.3 rad off', 'stop', _js_competing),
    ('human_nan', 'human position NaN', 'stop', _human_nan),
    ('human_inside', 'person suddenly 0.15 m from the arm', 'rest', _human_inside),
    ('human_silent', 'human tracker goes silent', 'stop', _human_silent),
    ('operator_wrong_size', 'operator command with 3 values', 'drop', _operator(lambda n: [0.0] * 3)),
    ('operator_nan', 'operator command NaN', 'drop', _operator(lambda n: [math.nan] * n)),
    ('policy_nan', 'policy returns NaN', 'stop', _policy(MAGIC_NAN_RAD)),
    ('policy_slow', 'policy takes 3x safety.deadline_s per step', 'stop', _policy(MAGIC_SLOW_RAD)),
    ('policy_raises', 'policy raises mid-run', 'stop', _policy(MAGIC_RAISE_RAD)),
    ('reset_while_moving', '~/reset with nothing latched, arm moving', 'refuse', _reset_moving),
    ('reset_while_latched', '~/reset after a latched stop, arm at rest', 'continue', _reset_latched),
    ('reset_while_braking', '~/reset 30 ms into a latched stop', 'refuse', _reset_braking),
    (
        'param_loosen_ssm_off',
        'SetParameters safety.ssm.enabled=false while active',
        'refuse',
        _param({'safety.ssm.enabled': False}, {'safety.ssm.enabled': True}, expect_ok=False),
    ),
    (
        'param_loosen_reaction_time',
        'SetParameters safety.ssm.reaction_time_s 0.1 -> 0.02 while active',
        'refuse',
        _param({'safety.ssm.reaction_time_s': 0.02}, {'safety.ssm.reaction_time_s': 0.1}, expect_ok=False),
    ),
    (
        'param_tighten_velocity',
        'SetParameters safety.velocity_scale=0.5 while active',
        'continue',
        _param({'safety.velocity_scale': 0.5}, {}, expect_ok=True),
    ),
    ('sigterm', 'SIGTERM to the system under test while moving', 'stop', _sigterm),
]
CASE_NAMES: tuple[str, ...] = tuple(c[0] for c in CASES)

_STATE_FAULTS = ('NONFINITE_INPUT', 'STATE_OUT_OF_LIMITS')
#: the latched faults that are the expected reaction of a case (a stop for the right reason); a
#: case listed here that latches any other fault is not handled. () = it must not latch at all.
EXPECTED_FAULTS: dict[str, tuple[str, ...]] = {
    'js_nan': _STATE_FAULTS,
    'js_inf': _STATE_FAULTS,
    'js_huge': ('STATE_OUT_OF_LIMITS',),
    'js_too_short': _STATE_FAULTS,
    'js_too_long': _STATE_FAULTS,
    'js_renamed': _STATE_FAULTS,
    'js_reordered': (),
    'js_missing_velocity': ('MISSING_VELOCITY',),  # only with safety.inputs.missing_velocity: fail
    'js_stale': ('STALE_STATE',),
    'js_stamps_out_of_order': ('INPUT_ORDER',),
    'js_stamps_shuffled': ('INPUT_ORDER',),
    'js_duplicates': ('INPUT_ORDER',),
    'js_competing_publisher': ('COMPETING_PUBLISHER', 'INPUT_ORDER'),  # + the publishers named
    'human_nan': ('NONFINITE_INPUT',),
    'human_silent': ('HUMAN_STALE', 'HUMAN_MISSING'),
    'operator_wrong_size': (),
    'operator_nan': ('NONFINITE_INPUT',),
    'policy_nan': ('POLICY_INVALID',),
    'policy_slow': ('ACTION_TIMEOUT', 'DEADLINE_MISS', 'STALE_STATE'),
    'policy_raises': ('POLICY_INVALID', 'ACTION_TIMEOUT'),
}
