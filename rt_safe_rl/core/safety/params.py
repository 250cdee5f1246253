"""The filter's constraint parameters from the robot model and the safety config (no ROS).

:func:`build_params` turns a :class:`RobotModel` and a :class:`SafetyConfig` into the kernel's
limit, scalar and workspace arrays, validating their consistency (ConfigError). Configure time,
allocates; the filter swaps the result in atomically at the start of a cycle.
"""

from __future__ import annotations

import numpy as np

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.core.safety import kernel as kn
from rt_safe_rl.core.safety.config import BODY_MODEL, SafetyConfig, WorkspaceConfig
from rt_safe_rl.core.safety.formulas import pfl_v_max


def build_params(model: RobotModel, cfg: SafetyConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate `cfg` against `model`; return the kernel arrays (lim, sp, ws_mask). Allocates.

    Raises:
        ConfigError: a limit list of the wrong length, a limit looser than the robot model's
            (URDF / robot section) one, unknown workspace point names.
    """
    lim = _limits(model, cfg)
    sp = np.zeros(kn.N_SP)
    sp[kn.SP_DT] = cfg.dt_s
    _ssm_pfl_params(sp, model, cfg)
    ws_mask = _workspace_params(sp, model, cfg.workspace)
    b = cfg.blend
    sp[kn.SP_BLEND_MODE] = 0.0 if b.mode == 'fixed' else 1.0
    sp[kn.SP_ALPHA_FIXED] = b.alpha_operator
    sp[kn.SP_BLEND_DMIN] = b.d_min_m
    sp[kn.SP_BLEND_DMAX] = b.d_max_m
    sp[kn.SP_JERK_ON] = 1.0 if cfg.enforce_jerk else 0.0
    sp[kn.SP_EFFORT_ON] = 1.0 if cfg.enforce_effort else 0.0
    sp[kn.SP_POS_TOL] = cfg.position_tolerance_rad
    sp[kn.SP_VEL_TOL] = cfg.velocity_tolerance_rad_s
    sp[kn.SP_QP_TOL] = cfg.qp_tol
    sp[kn.SP_QP_MAXIT] = float(cfg.qp_max_iter)
    return lim, sp, ws_mask


def _limits(model: RobotModel, cfg: SafetyConfig) -> np.ndarray:
    """The (N_LIM_ROWS, n) joint limit array: the model's limits [rad, rad/s, rad/s^2, rad/s^3,
    N*m] and PD gains, tightened by the config's per-joint lists, velocities scaled by
    ``velocity_scale``. Raises ConfigError (wrong length, looser than the model, q_min >= q_max)."""
    n = model.n_joints
    lim = np.zeros((kn.N_LIM_ROWS, n))
    lim[kn.L_QMIN] = model.q_min
    lim[kn.L_QMAX] = model.q_max
    lim[kn.L_VMAX] = model.v_max
    lim[kn.L_AMAX] = model.a_max
    lim[kn.L_JMAX] = model.j_max
    lim[kn.L_EFF] = model.effort_max
    lim[kn.L_KP] = model.kp
    lim[kn.L_KD] = model.kd
    for row, name, sign in (
        (kn.L_QMIN, 'q_min_rad', -1),
        (kn.L_QMAX, 'q_max_rad', 1),
        (kn.L_VMAX, 'v_max_rad_s', 1),
        (kn.L_AMAX, 'a_max_rad_s2', 1),
        (kn.L_JMAX, 'j_max_rad_s3', 1),
        (kn.L_EFF, 'effort_max_nm', 1),
    ):
        vals = getattr(cfg, name)
        if not vals:
            continue
        if len(vals) != n:
            raise ConfigError(f'safety.{name}: expected {n} values (one per joint), got {len(vals)}')
        arr = np.asarray(vals, dtype=np.float64)
        model_vals = lim[row]
        looser = arr * sign > model_vals * sign + 1e-12
        if np.any(looser):
            i = int(np.argmax(looser))
            raise ConfigError(
                f'safety.{name}[{i}] = {arr[i]} is looser than the robot limit '
                f'{model_vals[i]} of joint {model.joint_names[i]!r}'
            )
        lim[row] = arr
    if np.any(lim[kn.L_QMIN] >= lim[kn.L_QMAX]):
        i = int(np.argmax(lim[kn.L_QMIN] >= lim[kn.L_QMAX]))
        raise ConfigError(f'safety: q_min >= q_max for joint {model.joint_names[i]!r}')
    lim[kn.L_VMAX] *= cfg.velocity_scale
    return lim


def _ssm_pfl_params(sp: np.ndarray, model: RobotModel, cfg: SafetyConfig) -> None:
    """Fill the SSM entries [m, m/s, m/s^2, s] and the PFL speed limits [m/s] (default region,
    then one per human-point slot) of `sp` in place. Raises ConfigError (too many point regions)."""
    s = cfg.ssm
    sp[kn.SP_SSM_ON] = 1.0 if s.enabled else 0.0
    sp[kn.SP_SSM_A] = s.brake_decel_m_s2
    sp[kn.SP_SSM_TR] = s.reaction_time_s
    sp[kn.SP_SSM_CTOT] = s.c_total_m
    sp[kn.SP_SSM_VH] = s.human_speed_m_s
    sp[kn.SP_SSM_VH_NEAR] = s.human_speed_near_m_s
    sp[kn.SP_SSM_NEAR_D] = s.near_distance_m
    sp[kn.SP_PFL_ON] = 1.0 if cfg.pfl.enabled else 0.0
    m_r = max(model.moving_mass_kg / 2.0 + model.payload_kg, 1e-6)

    def v_pfl(region: str) -> float:
        k_n_m, m_h = BODY_MODEL[region]
        force = cfg.pfl.max_force_by_region_n.get(region, cfg.pfl.max_force_n)
        return float(pfl_v_max(force, k_n_m, m_h, m_r))

    sp[kn.SP_PFL_V] = v_pfl(cfg.pfl.body_region)
    sp[kn.SP_PFL_BASE : kn.SP_PFL_BASE + kn.PFL_SLOTS] = sp[kn.SP_PFL_V]
    if len(cfg.pfl.point_regions) > kn.PFL_SLOTS:
        raise ConfigError(f'safety.pfl.point_regions: at most {kn.PFL_SLOTS} entries')
    for c, region in enumerate(cfg.pfl.point_regions):
        sp[kn.SP_PFL_BASE + c] = v_pfl(region)


def _workspace_params(sp: np.ndarray, model: RobotModel, w: WorkspaceConfig) -> np.ndarray:
    """Fill the workspace box entries [m, m/s^2] of `sp` in place; return the (n_points,) bool mask
    of the monitored points it applies to. Raises ConfigError (unknown point names)."""
    sp[kn.SP_WS_ON] = 1.0 if w.enabled else 0.0
    sp[kn.SP_WS_A] = w.brake_decel_m_s2
    sp[kn.SP_WS_MIN_X : kn.SP_WS_MIN_X + 3] = w.min_m
    sp[kn.SP_WS_MAX_X : kn.SP_WS_MAX_X + 3] = w.max_m
    ws_mask = np.zeros(model.n_points, dtype=np.bool_)
    if w.enabled:
        if w.points:
            unknown = sorted(set(w.points) - set(model.point_names))
            if unknown:
                raise ConfigError(
                    f'safety.workspace.points: unknown point(s) {unknown}; '
                    f'monitored points: {model.point_names}'
                )
            for name in w.points:
                ws_mask[model.point_names.index(name)] = True
        else:
            ws_mask[:] = True
    return ws_mask
