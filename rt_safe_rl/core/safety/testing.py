"""Helpers to build small or large synthetic robots and safety configs (tests, benchmarks).

Not RT-relevant (configure time).
"""

from __future__ import annotations

from dataclasses import replace

from rt_safe_rl.core.robot_model import (
    JointLimitOverride,
    MonitoredPoint,
    RobotConfig,
    RobotModel,
    chain_urdf,
)
from rt_safe_rl.core.safety.config import BlendConfig, SafetyConfig, SsmConfig, WorkspaceConfig

# Idempotence checks (tests, `rt-safe-rl bench safety`): re-filtering an output must return it.
# Bit-identical almost always; near-degenerate projections (the least-violation fallback's relaxed
# set is almost a point) may round differently, ~1e-12 rad at most in 2e7 random cases.
IDEMPOTENCE_TOL_RAD = 1e-9


def chain_model(
    n_joints: int,
    *,
    q_lim: float = 2.5,
    v_max: float = 2.0,
    a_max: float = 10.0,
    j_max: float = 5000.0,
    effort: float | None = None,
    kp: float = 0.0,
    kd: float = 0.0,
    n_points: int = 0,
    link_length_m: float = 0.1,
    point_radius_m: float = 0.05,
) -> RobotModel:
    """A serial chain (alternating z/y axes) with uniform limits and `n_points` monitored points.

    Points are spread evenly along the chain (on links n/M, 2n/M, ..., n). `effort` None = no
    effort limit check (kp = 0 disables the PD model anyway).
    """
    ov = {
        f'j{i}': JointLimitOverride(
            q_min_rad=-q_lim,
            q_max_rad=q_lim,
            v_max_rad_s=v_max,
            effort_max_nm=effort if effort is not None else 1e9,
        )
        for i in range(1, n_joints + 1)
    }
    pts = []
    for k in range(n_points):
        link = max(1, round((k + 1) * n_joints / n_points))
        pts.append(MonitoredPoint(f'p{k}', f'link{link}', [0.0, 0.0, link_length_m * 0.5], point_radius_m))
    cfg = RobotConfig(
        urdf='',
        a_max_rad_s2=[a_max],
        j_max_rad_s3=[j_max],
        kp=[kp],
        kd=[kd],
        overrides=ov,
        monitored_points=pts,
        payload_kg=0.0,
    )
    model = RobotModel.from_urdf_string(chain_urdf(n_joints, link_length_m=link_length_m), cfg)
    if effort is None:
        model.effort_max[:] = float('inf')
    return model


def plain_config(
    rate_hz: float = 1000.0,
    *,
    jerk: bool = False,
    effort: bool = False,
    ssm: bool = False,
    workspace: bool = False,
    **kw: object,
) -> SafetyConfig:
    """A SafetyConfig with the optional constraint families switched on/off explicitly."""
    base = SafetyConfig(
        rate_hz=rate_hz,
        enforce_jerk=jerk,
        enforce_effort=effort,
        ssm=SsmConfig(enabled=ssm, require_human=ssm),
        workspace=WorkspaceConfig(enabled=workspace, points=[]),
        blend=BlendConfig(),
        max_step_gap_s=1e9,
        state_timeout_s=1e9,
        position_tolerance_rad=1e9,
        velocity_tolerance_rad_s=1e9,
    )
    return replace(base, **kw)  # type: ignore[arg-type]
