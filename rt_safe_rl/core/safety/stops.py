"""Stops of the safety supervisor, no ROS: braking to rest before the output goes silent
(deactivation), and why a reset now would latch again at once.

A position-controlled robot whose command stream stops mid-motion holds the target it was passing
at speed; a velocity controller keeps the last velocity. :func:`brake_to_rest` is how the
supervisor avoids both: its latched ``CONTROLLED_STOP`` (set by the caller,
:meth:`SafetySupervisor.brake_to_rest`) is stepped at the robot period whenever the chain does not
step it, and the rest command is sent once more at the end (velocity outputs: zeros).

Not RT code: it blocks the calling (lifecycle) thread for at most the braking time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rt_safe_rl.core.safety.config import SafetyConfig
from rt_safe_rl.core.safety.kernel import L_AMAX
from rt_safe_rl.core.safety.labels import state_violation
from rt_safe_rl.core.safety.report import FAULT_NAMES

if TYPE_CHECKING:
    from rt_safe_rl.core.safety.supervisor import SafetySupervisor


def brake_to_rest(sup: SafetySupervisor, timeout_s: float | None = None) -> tuple[bool, str]:
    """Step `sup`'s latched stop until the command is at rest; ``(at_rest, why)``. False when the
    command still moves after `timeout_s` (None: twice its braking time at a_max + 0.5 s), counted
    on `sup`'s clock and bounded in iterations too (a clock that stands still cannot hang it)."""
    f = sup.filter
    v = np.abs(f.command_state[1])
    t_brake_s = float(np.max(v / f.limits[L_AMAX])) if v.size else 0.0
    limit_s = 2.0 * t_brake_s + 0.5 if timeout_s is None else timeout_s
    end_ns = sup.clock() + int(limit_s * 1e9)
    period_s = sup.period_ns * 1e-9
    for _ in range(int(limit_s / period_s) + 10):
        if sup.clock() >= end_ns:
            break
        if sup.step_at_rest_check():
            return True, 'at rest'
        sup.sleep(period_s)
    return False, f'still moving {limit_s:.2f} s after the stop was commanded'


def reset_blocker(
    cfg: SafetyConfig,
    now_ns: int,
    state_rx_ns: int,
    q: np.ndarray,
    dq: np.ndarray,
    lim: np.ndarray,
    human_stamp_ns: int,
) -> str:
    """Why a reset at `now_ns` would latch again at once ('' = it would not): no state yet, the
    state (received at `state_rx_ns`) or the human data older than their timeouts, the measured
    state `q` [rad] / `dq` [rad/s] non-finite or beyond the limits `lim` + tolerance. Non-RT."""
    if state_rx_ns == 0:
        return 'no joint state received yet'
    age_s = (now_ns - state_rx_ns) * 1e-9
    if age_s > cfg.state_timeout_s:
        return f'state is {age_s * 1e3:.0f} ms old > state_timeout_s {cfg.state_timeout_s * 1e3:g} ms'
    if state_violation(q, dq, lim, cfg.position_tolerance_rad, cfg.velocity_tolerance_rad_s):
        return 'the measured state is non-finite or beyond the limits (+ tolerance)'
    if cfg.ssm.enabled and human_stamp_ns:
        h_s = (now_ns - human_stamp_ns) * 1e-9
        if h_s > cfg.ssm.human_timeout_s:
            lim_ms = cfg.ssm.human_timeout_s * 1e3
            return f'human data is {h_s * 1e3:.0f} ms old > ssm.human_timeout_s {lim_ms:g} ms'
    return ''


def reset_dropped_detail(detail: str, code: int) -> str:
    """The status detail `detail` plus why the last accepted reset left the stop latched: the fault
    `code` (:class:`FaultCode`) was triggered before the step that would have applied it. Non-RT."""
    name = FAULT_NAMES[code] if 0 <= code < len(FAULT_NAMES) else str(code)
    why = f'the last reset was not applied: {name} came first'
    return f'{detail}; {why}' if detail else why
