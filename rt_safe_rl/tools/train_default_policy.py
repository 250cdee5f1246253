"""`rt-safe-rl train`: train the shipped default policy (7-DoF arm, joint-space reaching).

What it is, honestly: **not** reinforcement learning with exploration. It is policy optimisation by
backpropagation through time through a differentiable copy of the simulated arm
(:mod:`rt_safe_rl.sim.arm`: PD position controller + effort/acceleration/velocity/position limits,
1 kHz), with the policy running at the policy rate (50 Hz, target held between steps), exactly as
in the control loop. The clamps use straight-through gradients. The loss is the joint-space
distance to a random goal (drawn from the same :class:`~rt_safe_rl.sim.operator.GoalGenerator`
distribution the demo uses), plus small penalties on residual velocity and on targets outside the
position limits. A plain "target = goal" controller is evaluated alongside as the baseline.

Seeded and reproducible (torch + numpy seeds, one thread, deterministic ops); a few minutes on
one CPU core at the defaults. Writes a TorchScript module (obs -> raw action) and a ``.json`` of
training metadata (seed, settings, wall time, final metrics, baseline, SHA-256).
The observation layout is read from the policy's pipeline YAML (``config/policies/arm7_reach.yaml``)
so training and deployment cannot drift apart; only the terms ``joint_pos_rel``, ``joint_pos``,
``joint_vel`` and ``command_error`` are supported here.

Not RT code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.config import load_config
from rt_safe_rl.core import stats
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.policy.config import load_pipeline_config
from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.paths import resolve
from rt_safe_rl.sim.arm import ArmLimits, ArmSim
from rt_safe_rl.sim.operator import GoalGenerator

F64 = npt.NDArray[np.float64]

DEFAULT_OUT = Path(__file__).resolve().parent.parent / 'models' / 'arm7_reach.pt'
SUPPORTED_TERMS = ('joint_pos_rel', 'joint_pos', 'joint_vel', 'command_error')


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of :func:`train` (all have defaults that ship the model)."""

    seed: int = 0
    iterations: int = 300
    batch: int = 256
    horizon_s: float = 2.0
    policy_rate_hz: float = 50.0
    control_rate_hz: float = 1000.0
    hidden: tuple[int, ...] = (64, 64)
    lr: float = 2e-3
    velocity_weight: float = 0.02
    limit_weight: float = 1.0
    eval_goals: int = 64
    threads: int = 1
    truncate_steps: int = 10
    straight_through: bool = False
    huber_beta_rad: float = 0.01
    smooth_weight: float = 0.05
    settle_weight: float = 0.5


@dataclass(frozen=True)
class ObsLayout:
    """Observation terms (name, scale per joint) and the action mapping of the pipeline YAML."""

    terms: tuple[tuple[str, F64], ...]
    default_q: F64
    action_scale: F64
    action_clip: float | None

    @property
    def obs_dim(self) -> int:
        """Observation size."""
        return len(self.terms) * self.default_q.size


def obs_layout_from_pipeline(path: str | Path) -> ObsLayout:
    """Read the observation/action layout from a policy pipeline YAML.

    Raises:
        ConfigError: a term this trainer cannot produce, history, normalization or a per-joint clip.
    """
    cfg = load_pipeline_config(path)
    n = cfg.n_joints
    terms = []
    for t in cfg.observation.terms:
        if t.term not in SUPPORTED_TERMS:
            raise ConfigError(f'{path}: term {t.term!r} is not supported by the trainer ({SUPPORTED_TERMS})')
        if t.clip is not None:
            raise ConfigError(f'{path}: per-term clip is not supported by the trainer')
        terms.append((t.term, np.broadcast_to(np.asarray(t.scale, dtype=np.float64), (n,)).copy()))
    if cfg.observation.history_length != 1 or cfg.observation.normalization is not None:
        raise ConfigError(f'{path}: history and normalization are not supported by the trainer')
    if isinstance(cfg.action.clip, list) or cfg.action.clip_low:
        raise ConfigError(f'{path}: only a scalar action.clip is supported by the trainer')
    return ObsLayout(
        terms=tuple(terms),
        default_q=np.asarray(cfg.default_q, dtype=np.float64),
        action_scale=np.broadcast_to(np.asarray(cfg.action.scale, dtype=np.float64), (n,)).copy(),
        action_clip=None if cfg.action.clip is None else float(cfg.action.clip),
    )


def _obs_terms(terms: Sequence[tuple[str, Any]], default_q: Any, q: Any, dq: Any, goal: Any) -> list[Any]:
    """The observation's parts in order: each of ``terms`` (name, scale; :data:`SUPPORTED_TERMS`) of
    the state (q, dq, goal) [rad, rad/s, rad] times its scale (``default_q`` [rad] for
    ``joint_pos_rel``). Arrays of numpy or torch alike (the caller concatenates them)."""
    parts = []
    for name, scale in terms:
        if name == 'joint_pos_rel':
            parts.append((q - default_q) * scale)
        elif name == 'joint_pos':
            parts.append(q * scale)
        elif name == 'joint_vel':
            parts.append(dq * scale)
        else:
            parts.append((goal - q) * scale)
    return parts


def build_obs_np(layout: ObsLayout, q: F64, dq: F64, goal: F64) -> F64:
    """Observation of one state (numpy, the deployed layout) -- used by the evaluation."""
    return np.concatenate(_obs_terms(layout.terms, layout.default_q, q, dq, goal))


def action_to_target_np(layout: ObsLayout, action: F64) -> F64:
    """Raw policy output -> joint target (rad), as the policy runtime does it."""
    a = action if layout.action_clip is None else np.clip(action, -layout.action_clip, layout.action_clip)
    return layout.default_q + layout.action_scale * a


def _st_clamp(x: Any, lo: Any, hi: Any) -> Any:
    """Clamp in the forward pass, identity gradient (straight-through) in the backward pass."""
    import torch

    return x + (torch.clamp(x, lo, hi) - x).detach()


def _make_policy_class() -> Any:
    import torch
    from torch import nn

    class _ReachPolicy(nn.Module):
        """obs -> raw action: a linear map (exact for target = goal) plus a tanh MLP correction."""

        def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> None:
            super().__init__()
            self.linear = nn.Linear(obs_dim, act_dim)
            layers: list[nn.Module] = []
            width = obs_dim
            for h in hidden:
                layers += [nn.Linear(width, h), nn.Tanh()]
                width = h
            last = nn.Linear(width, act_dim)
            with torch.no_grad():  # start near a pure linear controller
                last.weight.mul_(0.1)
                last.bias.zero_()
                self.linear.weight.mul_(0.1)
                self.linear.bias.zero_()
            layers.append(last)
            self.mlp = nn.Sequential(*layers)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.linear(obs) + self.mlp(obs)

    return _ReachPolicy


def train(
    limits: ArmLimits, layout: ObsLayout, goal_sampler: Any, s: TrainSettings, log: Any = print
) -> tuple[Any, dict[str, Any]]:
    """Optimise an MLP policy by BPTT through the differentiable arm; return (module, stats).

    ``goal_sampler(n) -> (n, J)`` draws goals (and start poses) in rad.
    """
    import torch

    ReachPolicy = _make_policy_class()  # noqa: N806 - a class
    torch.manual_seed(s.seed)
    torch.set_num_threads(s.threads)
    torch.use_deterministic_algorithms(True)
    n = limits.n_joints
    f32 = torch.float32

    def t(x: Any) -> Any:
        return torch.as_tensor(np.asarray(x), dtype=f32)

    kp, kd, inertia = t(limits.kp), t(limits.kd), t(limits.inertia)
    eff, amax, vmax = t(limits.effort_max), t(limits.a_max), t(limits.v_max)
    qmin, qmax = t(limits.q_min), t(limits.q_max)
    default_q, act_scale = t(layout.default_q), t(layout.action_scale)
    scales = [(name, t(sc)) for name, sc in layout.terms]
    clip = layout.action_clip
    clamp = _st_clamp if s.straight_through else torch.clamp
    dt = 1.0 / s.control_rate_hz
    substeps = round(s.control_rate_hz / s.policy_rate_hz)
    steps = round(s.horizon_s * s.policy_rate_hz)

    policy = ReachPolicy(layout.obs_dim, n, s.hidden)
    opt = torch.optim.Adam(policy.parameters(), lr=s.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, s.iterations), eta_min=s.lr * 0.05)

    obs_of = _obs_fn(scales, default_q)
    history = []
    t0 = time.perf_counter()
    for it in range(s.iterations):
        q = t(goal_sampler(s.batch))
        goal = t(goal_sampler(s.batch))
        dq = torch.zeros_like(q)
        prev_target = q
        loss = torch.zeros(())
        for k in range(steps):
            if s.truncate_steps and k % s.truncate_steps == 0:  # truncated BPTT: bounded gradient paths
                q, dq = q.detach(), dq.detach()
            a = policy(obs_of(q, dq, goal))
            if clip is not None:
                a = _st_clamp(a, -clip, clip)
            target = default_q + act_scale * a
            if k > 0:  # smoothness: no chattering of the held target between policy steps
                loss = loss + s.smooth_weight * ((target - prev_target) ** 2).sum(-1).mean()
            prev_target = target
            over = torch.relu(target - qmax) + torch.relu(qmin - target)
            for _ in range(substeps):
                tau = clamp(kp * (target - q) - kd * dq, -eff, eff)
                acc = clamp(tau / inertia, -amax, amax)
                dq = clamp(dq + acc * dt, -vmax, vmax)
                q = clamp(q + dq * dt, qmin, qmax)
            w = 1.0 + 2.0 * k / steps  # late errors matter more: settle, do not just pass by
            err = torch.nn.functional.smooth_l1_loss(q, goal, beta=s.huber_beta_rad, reduction='none').sum(-1)
            # settle phase: penalise residual speed (no limit cycle around the goal)
            vel_w = s.velocity_weight * w + (s.settle_weight if k >= 0.6 * steps else 0.0)
            loss = (
                loss
                + w * err.mean()
                + vel_w * (dq * dq).sum(-1).mean()
                + s.limit_weight * (over * over).sum(-1).mean()
            )
        loss = loss / steps
        _descend(loss, policy, opt, sched)
        final_err = float((q - goal).detach().abs().mean())
        history.append((float(loss.detach()), final_err))
        if it % 20 == 0 or it == s.iterations - 1:
            log(
                f'[train] iter {it:4d}/{s.iterations}  loss {history[-1][0]:.4f}  '
                f'mean final |q - goal| {final_err:.4f} rad  ({time.perf_counter() - t0:.0f} s)'
            )
    policy.eval()
    return policy, _train_stats(history, t0)


def _obs_fn(scales: list[tuple[str, Any]], default_q: Any) -> Callable[[Any, Any, Any], Any]:
    """The torch observation of (q, dq, goal) [rad, rad/s, rad]: the layout's terms, each times its
    scale, concatenated in order (as :func:`build_obs_np`)."""
    import torch

    def obs_of(q: Any, dq: Any, goal: Any) -> Any:
        return torch.cat(_obs_terms(scales, default_q, q, dq, goal), dim=-1)

    return obs_of


def _descend(loss: Any, policy: Any, opt: Any, sched: Any) -> None:
    """One optimiser step on ``loss``: backprop, clip the gradient norm to 1, Adam step, LR schedule."""
    import torch

    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    opt.step()
    sched.step()


def _train_stats(history: list[tuple[float, float]], t0: float) -> dict[str, Any]:
    """The training stats: wall time since ``t0`` (s), the last iteration's loss and mean final
    error (rad)."""
    return {
        'train_wall_s': round(time.perf_counter() - t0, 2),
        'final_loss': round(history[-1][0], 6),
        'final_train_error_rad': round(history[-1][1], 6),
    }


def evaluate(
    act: Any,
    limits: ArmLimits,
    layout: ObsLayout,
    goals: F64,
    starts: F64,
    horizon_s: float,
    policy_rate_hz: float,
    control_rate_hz: float,
) -> dict[str, float]:
    """Roll out a controller ``act(obs, q, dq, goal) -> target`` in the numpy sim at the control rate.

    Returns mean / p95 final joint error (rad, mean over joints), mean time (s) to get within
    0.05 rad on every joint, the fraction of episodes that got there, and the mean over episodes
    of the largest joint speed (rad/s) in the last 0.25 s (a limit cycle shows up here).
    """
    dt = 1.0 / control_rate_hz
    substeps = round(control_rate_hz / policy_rate_hz)
    steps = round(horizon_s * policy_rate_hz)
    final, reach_times, reached, residual = [], [], 0, []
    tail_from = steps - max(1, round(0.25 * policy_rate_hz))
    for start, goal in zip(starts, goals, strict=True):
        sim = ArmSim(limits, dt, start)
        t_reach = None
        tail_speed = 0.0
        for k in range(steps):
            sim.set_command(act(build_obs_np(layout, sim.q, sim.dq, goal), sim.q, sim.dq, goal))
            for j in range(substeps):
                sim.step()
                if t_reach is None and np.max(np.abs(sim.q - goal)) < 0.05:
                    t_reach = (k * substeps + j + 1) * dt
                if k >= tail_from:
                    tail_speed = max(tail_speed, float(np.max(np.abs(sim.dq))))
        final.append(float(np.mean(np.abs(sim.q - goal))))
        residual.append(tail_speed)
        if t_reach is not None:
            reached += 1
            reach_times.append(t_reach)
    return {
        'mean_final_error_rad': round(float(np.mean(final)), 5),
        'p95_final_error_rad': round(stats.percentile(final, 95), 5),
        'mean_time_to_0.05rad_s': round(float(np.mean(reach_times)), 4) if reach_times else float('nan'),
        'reached_fraction': round(reached / len(goals), 4),
        'mean_residual_speed_last_0.25s_rad_s': round(float(np.mean(residual)), 5),
    }


def weights_sha256(module: Any) -> str:
    """SHA-256 over the module's parameters/buffers (names, shapes, float32 bytes), in name order.

    Reproducible across runs, unlike the TorchScript file bytes (which embed a serialization id).
    """
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        arr = tensor.detach().cpu().contiguous().numpy()
        h.update(name.encode())
        h.update(str(arr.shape).encode())
        h.update(arr.astype(np.float32).tobytes())
    return h.hexdigest()


def load_training_setup(config_path: str | None) -> tuple[ArmLimits, ObsLayout, Any, Any, float]:
    """Limits (robot model + sim config), obs layout (pipeline YAML), goal generator, home, policy rate."""
    cfg = load_config(config_path)
    model = RobotModel.from_config(cfg.robot, cfg.base_dir)
    limits = ArmLimits.from_model(model, cfg.sim.robot)
    layout = obs_layout_from_pipeline(resolve(cfg.policy.config, cfg.base_dir))
    if layout.default_q.size != limits.n_joints:
        raise ConfigError(
            f'pipeline default_q has {layout.default_q.size} joints, robot has {limits.n_joints}'
        )
    home = limits.initial_q(cfg.sim.robot)
    op = cfg.sim.operator
    return limits, layout, (GoalGenerator, op.goal_margin_rad, op.goal_span), home, cfg.policy.rate_hz


def _parser() -> argparse.ArgumentParser:
    """The command line of ``rt-safe-rl train``."""
    ap = argparse.ArgumentParser(prog='rt-safe-rl train', description=__doc__.split('\n\n')[0])
    ap.add_argument(
        '--out', default=str(DEFAULT_OUT), help='TorchScript output (.pt); a .json goes beside it'
    )
    ap.add_argument('--config', default=None, help='config YAML (default: the shipped config/default.yaml)')
    ap.add_argument('--seed', type=int, default=TrainSettings.seed)
    ap.add_argument('--iterations', type=int, default=TrainSettings.iterations)
    ap.add_argument('--batch', type=int, default=TrainSettings.batch)
    ap.add_argument('--horizon-s', type=float, default=TrainSettings.horizon_s)
    ap.add_argument('--eval-goals', type=int, default=TrainSettings.eval_goals)
    ap.add_argument('--quiet', action='store_true')
    return ap


def _evaluate_learned_and_baseline(
    policy: Any, limits: ArmLimits, layout: ObsLayout, settings: TrainSettings, eval_gen: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`evaluate` the trained ``policy`` and the baseline (target = goal) on the same
    ``settings.eval_goals`` starts and goals drawn from ``eval_gen``: (learned, baseline) metrics."""
    import torch

    starts, goals = eval_gen.sample(settings.eval_goals), eval_gen.sample(settings.eval_goals)

    def learned(obs: F64, q: F64, dq: F64, goal: F64) -> F64:
        with torch.no_grad():
            a = policy(torch.as_tensor(obs, dtype=torch.float32)[None]).numpy()[0].astype(np.float64)
        return action_to_target_np(layout, a)

    def baseline(obs: F64, q: F64, dq: F64, goal: F64) -> F64:
        return goal

    ev_args = (
        limits,
        layout,
        goals,
        starts,
        settings.horizon_s,
        settings.policy_rate_hz,
        settings.control_rate_hz,
    )
    return evaluate(learned, *ev_args), evaluate(baseline, *ev_args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rt-safe-rl train``; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.iterations < 1 or args.batch < 1 or args.horizon_s <= 0 or args.eval_goals < 1:
        raise ConfigError('--iterations, --batch, --eval-goals must be >= 1 and --horizon-s > 0')
    import torch

    log = (lambda *_a, **_k: None) if args.quiet else print
    t_start = time.perf_counter()
    limits, layout, (goal_cls, margin, span), home, policy_rate_hz = load_training_setup(args.config)
    settings = TrainSettings(
        seed=args.seed,
        iterations=args.iterations,
        batch=args.batch,
        horizon_s=args.horizon_s,
        policy_rate_hz=policy_rate_hz,
        eval_goals=args.eval_goals,
    )
    train_goals = goal_cls(limits.q_min, limits.q_max, home, margin, span, seed=settings.seed)
    policy, stats = train(limits, layout, train_goals.sample, settings, log=log)
    eval_gen = goal_cls(limits.q_min, limits.q_max, home, margin, span, seed=settings.seed + 10_000)
    metrics, base = _evaluate_learned_and_baseline(policy, limits, layout, settings, eval_gen)
    log(f'[train] eval learned : {metrics}')
    log(f'[train] eval baseline (target = goal): {base}')

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scripted = torch.jit.trace(policy, torch.zeros(1, layout.obs_dim))
    torch.jit.save(scripted, str(out))
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    meta = {
        'model': out.name,
        'what': 'MLP joint-space reaching policy for the 7-DoF arm; BPTT through the differentiable '
        'PD+limits arm model (not exploration-based RL); obs -> raw action, '
        'target = default_q + scale * clip(action)',
        'obs_dim': layout.obs_dim,
        'act_dim': limits.n_joints,
        'obs_terms': [name for name, _ in layout.terms],
        'settings': {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.__dict__.items()},
        'train': stats,
        'eval_learned': metrics,
        'eval_baseline_target_equals_goal': base,
        'total_wall_s': round(time.perf_counter() - t_start, 2),
        'sha256': digest,
        'weights_sha256': weights_sha256(scripted),
        'torch': torch.__version__,
        'numpy': np.__version__,
        'python': platform.python_version(),
    }
    out.with_suffix('.json').write_text(json.dumps(meta, indent=2) + '\n')
    log(
        f'[train] wrote {out} and {out.with_suffix(".json")} (sha256 {digest[:12]}..., '
        f'total {meta["total_wall_s"]} s)'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
