"""Live tuning rule: while the filter is active, safety parameters may only tighten.

:func:`loosenings` compares a proposed :class:`SafetyConfig` with the one in force and lists every
change that makes the filter less safe. The node refuses such a set while ACTIVE (the reason
names each loosening) and accepts it while inactive (``ros2 lifecycle set <node> deactivate``,
set, activate). Tightening is always allowed.

Tighter means: joint limits (effective values, i.e. the robot model's where the list is empty,
with ``velocity_scale`` applied) lower, position range narrower; longer SSM reaction time, lower
braking deceleration, larger intrusion / uncertainty distances and human speeds, a larger
``near_distance_m``; SSM, ``require_human``, jerk / effort enforcement, the workspace box switched
on; a smaller workspace box, more workspace points; shorter timeouts and deadlines, smaller
tolerances; PFL off, lower contact forces; fewer dropped states tolerated, a longer drop window,
``inputs.missing_velocity: fail``, fewer allowed publishers. A change whose direction cannot be told (PFL body
regions) counts as loosening. Blending, reporting thresholds and the solver's iteration limit
are not safety limits (the projection applies whatever is blended) and may change freely.

Not RT-relevant (parameter callback).
"""

from __future__ import annotations

import numpy as np

from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety import kernel as kn
from rt_safe_rl.core.safety.config import SafetyConfig
from rt_safe_rl.core.safety.filter import build_params

# (dotted field under `safety.`, +1 = larger is tighter, -1 = smaller is tighter)
_SCALARS: tuple[tuple[str, int], ...] = (
    ('state_timeout_s', -1),
    ('action_timeout_s', -1),
    ('max_step_gap_s', -1),
    ('deadline_s', -1),
    ('position_tolerance_rad', -1),
    ('velocity_tolerance_rad_s', -1),
    ('qp_tol', -1),
    ('ssm.reaction_time_s', 1),
    ('ssm.brake_decel_m_s2', -1),
    ('ssm.intrusion_m', 1),
    ('ssm.human_uncertainty_m', 1),
    ('ssm.robot_uncertainty_m', 1),
    ('ssm.human_speed_m_s', 1),
    ('ssm.human_speed_near_m_s', 1),
    ('ssm.near_distance_m', 1),
    ('ssm.human_timeout_s', -1),
    ('pfl.max_force_n', -1),
    ('workspace.brake_decel_m_s2', -1),
    ('inputs.max_dropped_states', -1),
    ('inputs.drop_window_s', 1),
    ('inputs.publisher_check_period_s', -1),
)
# (field, value that is the safe side)
_SWITCHES: tuple[tuple[str, bool], ...] = (
    ('enforce_jerk', True),
    ('enforce_effort', True),
    ('ssm.enabled', True),
    ('ssm.require_human', True),
    ('workspace.enabled', True),
    ('pfl.enabled', False),
)
_LIMIT_ROWS: tuple[tuple[int, str, int], ...] = (
    (kn.L_QMIN, 'q_min_rad', 1),
    (kn.L_QMAX, 'q_max_rad', -1),
    (kn.L_VMAX, 'v_max_rad_s (x velocity_scale)', -1),
    (kn.L_AMAX, 'a_max_rad_s2', -1),
    (kn.L_JMAX, 'j_max_rad_s3', -1),
    (kn.L_EFF, 'effort_max_nm', -1),
)


def _get(cfg: SafetyConfig, dotted: str) -> object:
    obj: object = cfg
    for part in dotted.split('.'):
        obj = getattr(obj, part)
    return obj


def loosenings(model: RobotModel, old: SafetyConfig, new: SafetyConfig) -> list[str]:
    """Every change from `old` to `new` that loosens a safety limit, one short phrase each
    (e.g. ``'ssm.enabled true -> false'``); empty when `new` is as tight or tighter. `new` must
    be valid for `model` (``build_params`` raises ConfigError otherwise). Allocates; non-RT."""
    out: list[str] = []
    for name, safe in _SWITCHES:
        a, b = bool(_get(old, name)), bool(_get(new, name))
        if a != b and b != safe:
            out.append(f'{name} {str(a).lower()} -> {str(b).lower()}')
    for name, sign in _SCALARS:
        x, y = float(_get(old, name)), float(_get(new, name))  # type: ignore[arg-type]
        if (y - x) * sign < 0:
            out.append(f'{name} {x:g} -> {y:g} ({"lower" if sign > 0 else "higher"})')
    lim_a, _, ws_a = build_params(model, old)
    lim_b, _, ws_b = build_params(model, new)
    for row, name, sign in _LIMIT_ROWS:
        worse = (lim_b[row] - lim_a[row]) * sign < -1e-12
        if np.any(worse):
            j = int(np.argmax(worse))
            out.append(f'{name}[{j}] {lim_a[row, j]:g} -> {lim_b[row, j]:g}')
    wa, wb = old.workspace, new.workspace
    if wa.enabled and wb.enabled:
        if any(b < a for a, b in zip(wa.min_m, wb.min_m, strict=True)) or any(
            b > a for a, b in zip(wa.max_m, wb.max_m, strict=True)
        ):
            out.append(f'workspace box {wa.min_m}..{wa.max_m} -> {wb.min_m}..{wb.max_m} (larger)')
        if np.any(ws_a & ~ws_b):
            out.append('workspace.points: fewer points monitored')
    if old.inputs.missing_velocity == 'fail' and new.inputs.missing_velocity != 'fail':
        out.append("inputs.missing_velocity 'fail' -> 'estimate'")
    added = sorted(set(new.inputs.allowed_publishers) - set(old.inputs.allowed_publishers))
    if added or (old.inputs.allowed_publishers and not new.inputs.allowed_publishers):
        out.append(f'inputs.allowed_publishers: more publishers allowed ({added or "any one"})')
    pa, pb = old.pfl, new.pfl
    if pb.enabled and (
        pa.body_region != pb.body_region
        or pa.point_regions != pb.point_regions
        or pa.max_force_by_region_n != pb.max_force_by_region_n
    ):
        out.append('pfl body regions / forces changed while PFL is on')
    return out
