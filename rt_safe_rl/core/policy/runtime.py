"""PolicyRuntime: the policy inside the 1 kHz control loop (decimation, hold/linear, validity).

``control_step`` is called every control cycle with the robot state. It runs the policy exactly once
per policy period (``1 / rate_hz``, scheduled on ``t_ns``; missed periods are skipped, never caught up,
so a recurrent state advances once per policy step) and between steps holds the last target or
interpolates linearly from the target commanded when the step ran to the new one over one period.

Invalid input or output (wrong size, NaN/Inf in the state, the inputs, the observation or the action,
an exception from the backend or from the encoder of a two-model pipeline) makes ``control_step``
return False until the next good policy step; the output then holds the last valid target (or the
measured position), and the safety filter turns the flag into a controlled stop.

Optional exact-match output cache (``cache: true``; refused for recurrent policies): keyed on the
observation bytes, hits verified element-wise, hit rate reported in ``info``.

RT-safety: ``control_step`` writes preallocated arrays; no heap growth per call (checked by a
tracemalloc test over 10^4 calls). ``from_config``/``reset`` are configure/activate-time.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl import paths
from rt_safe_rl.core.errors import ConfigError, PolicyLoadError
from rt_safe_rl.core.policy.config import PolicyNodeConfig, PolicyPipelineConfig, load_pipeline_config
from rt_safe_rl.core.policy.loading import error_line
from rt_safe_rl.core.policy.model import PolicyModel, load_policy_model
from rt_safe_rl.core.policy.pipeline import ActionMapper, ObservationBuilder, plausible_observations

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


class OutputCache:
    """Exact-match cache of policy outputs keyed on the observation bytes (feed-forward only)."""

    def __init__(self, size: int, obs_dim: int, act_dim: int) -> None:
        self._keys = np.full((size, obs_dim), np.nan, np.float32)
        self._vals = np.zeros((size, act_dim), np.float32)
        self._slot: dict[bytes, int] = {}
        self._owner: list[bytes | None] = [None] * size
        self._next = 0
        self.hits = 0
        self.misses = 0

    def try_get(self, obs: F32, out: F32) -> bool:
        """Copy the cached output for exactly `obs` into `out`; False on a miss."""
        i = self._slot.get(obs.tobytes())
        if i is not None and np.array_equal(self._keys[i], obs):
            np.copyto(out, self._vals[i])
            self.hits += 1
            return True
        self.misses += 1
        return False

    def put(self, obs: F32, out: F32) -> None:
        """Store `out` for `obs` (ring replacement)."""
        i = self._next
        self._next = (i + 1) % len(self._owner)
        old = self._owner[i]
        if old is not None:
            self._slot.pop(old, None)
        key = obs.tobytes()
        self._owner[i] = key
        self._slot[key] = i
        self._keys[i] = obs
        self._vals[i] = out

    @property
    def hit_rate(self) -> float:
        """Hits / lookups (0 before any lookup)."""
        n = self.hits + self.misses
        return self.hits / n if n else 0.0


class PolicyRuntime:
    """Observation pipeline + chosen backend + decimation/interpolation, per DEVELOPERS.md."""

    def __init__(
        self,
        cfg: PolicyNodeConfig,
        pipeline: PolicyPipelineConfig,
        model: PolicyModel,
        robot_joint_names: Sequence[str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.model = model
        self.obs_builder = ObservationBuilder(pipeline, robot_joint_names)
        self.action_mapper = ActionMapper(pipeline, self.obs_builder.idx)
        self.n_joints = self.obs_builder.n_robot
        self.joint_names: list[str] = list(robot_joint_names) if robot_joint_names is not None else []
        self.obs_dim = pipeline.obs_dim
        self.act_dim = pipeline.n_joints
        if model.info.act_dim != self.act_dim:
            raise PolicyLoadError(
                f'the model outputs {model.info.act_dim} actions, the policy config has '
                f'{self.act_dim} joints (default_q)'
            )
        self.period_ns = round(1e9 / cfg.rate_hz)
        self.interpolate = cfg.interpolation == 'linear'
        self.encoder: PolicyModel | None = None
        self.cache: OutputCache | None = None
        if cfg.cache:
            if model.info.recurrent:
                raise ConfigError(
                    'policy.cache is refused for a recurrent policy (outputs depend on its state)'
                )
            self.cache = OutputCache(cfg.cache_size, self.obs_dim, self.act_dim)
        self._obs = np.zeros(self.obs_dim, np.float32)
        self._act = np.zeros(self.act_dim, np.float32)
        self._last_action = np.zeros(self.act_dim, np.float32)
        self._target = np.zeros(self.n_joints)
        self._start = np.zeros(self.n_joints)
        self._out_prev = np.zeros(self.n_joints)
        self._have_target = False
        self._valid = False
        self._next_ns = 0
        self._step_ns = 0
        self._t0_ns = 0
        self._started = False
        self.steps = 0
        self.errors = 0
        self.last_error = ''
        self.last_inference_ns = 0
        self.ran_policy = False

    @classmethod
    def from_config(
        cls,
        cfg: PolicyNodeConfig,
        robot_joint_names: Sequence[str] | None = None,
        base_dir: Path | None = None,
        logger: Any = None,
        **load_kwargs: Any,
    ) -> PolicyRuntime:
        """Load the pipeline YAML and the policy file, choose the backend, warm up, preallocate.

        Paths may be ``package://rt_safe_rl/...`` or relative to `base_dir` (default: cwd).

        Raises:
            ConfigError: bad pipeline YAML / joint names.
            PolicyLoadError: missing/corrupt file (path in the message), size mismatch, no exact backend.
        """
        pipe_path = paths.resolve(cfg.config, base_dir)
        pipeline = load_pipeline_config(pipe_path)
        pol_path = paths.resolve(cfg.path, base_dir)
        if not pol_path.is_file():
            raise PolicyLoadError(f'policy file not found: {pol_path}')
        load_kwargs.setdefault('check_obs', plausible_observations(pipeline, cfg.auto_samples))
        load_kwargs.setdefault('size_note', pipeline.size_note())
        load_kwargs.setdefault(
            'pipeline_key', json.dumps(dataclasses.asdict(pipeline), sort_keys=True, default=str)
        )
        model = load_policy_model(
            pol_path, cfg, pipeline.model, obs_dim=pipeline.obs_dim, logger=logger, **load_kwargs
        )
        rt = cls(cfg, pipeline, model, robot_joint_names)
        if pipeline.encoder is not None:
            rt.attach_encoder(paths.resolve(pipeline.encoder.path, pipe_path.parent), logger)
        rt.reset()
        return rt

    def attach_encoder(self, path: Path, logger: Any = None) -> None:
        """Load the pipeline's encoder model (own backend choice, same node settings) and feed its
        outputs into the observation's ``encoder`` term at every policy step.

        Raises:
            PolicyLoadError: missing / bad encoder file, sizes that do not fit the YAML.
        """
        enc = self.pipeline.encoder
        if enc is None:
            return
        if not path.is_file():
            raise PolicyLoadError(f'encoder file not found: {path}')
        epipe = self.pipeline.encoder_pipeline()
        model = load_policy_model(
            path,
            self.cfg,
            enc.model,
            obs_dim=epipe.obs_dim,
            logger=logger,
            check_obs=plausible_observations(epipe, self.cfg.auto_samples),
            size_note=epipe.size_note('encoder.observation'),
        )
        if model.info.act_dim != enc.output_size:
            raise PolicyLoadError(
                f'{path}: the encoder gives {model.info.act_dim} values, '
                f'encoder.output_size is {enc.output_size}'
            )
        self.encoder = model
        builder = ObservationBuilder(epipe, self.joint_names or None)
        self.obs_builder.attach_encoder(builder, model.forward, model.reset)

    @property
    def info(self) -> dict[str, Any]:
        """Sizes, hash, backend table, cache hit rate, counters (JSON-ready)."""
        d = self.model.report()
        if self.encoder is not None:
            d['encoder'] = self.encoder.report()
        d.update(
            {
                'backend': self.model.selected,
                'n_joints': self.n_joints,
                'obs_dim': self.obs_dim,
                'act_dim': self.act_dim,
                'rate_hz': self.cfg.rate_hz,
                'interpolation': self.cfg.interpolation,
                'policy_steps': self.steps,
                'errors': self.errors,
                'last_error': self.last_error,
                'cache': None
                if self.cache is None
                else {'hits': self.cache.hits, 'misses': self.cache.misses, 'hit_rate': self.cache.hit_rate},
            }
        )
        return d

    @property
    def valid(self) -> bool:
        """Whether the current target comes from a good policy step."""
        return self._valid

    def reset(self) -> None:
        """Reset recurrent state, history, last action, inputs, step schedule (activate / on demand)."""
        self.model.reset()
        self.obs_builder.reset()
        self._last_action[:] = 0.0
        self._have_target = False
        self._valid = False
        self._started = False

    def try_set_input(self, name: str, values: npt.ArrayLike) -> bool:
        """Set a named input (e.g. 'command') outside control_step; False if unknown/wrong size/non-finite."""
        return self.obs_builder.try_set_input(name, values)

    def control_step(
        self, t_ns: int, q: F64, dq: F64, inputs: Mapping[str, Any] | None, out_q_target: F64
    ) -> bool:
        """One control cycle. Returns False for an invalid action (safety must stop).

        Args:
            t_ns: monotonic time of the state, ns.
            q, dq: robot joint positions (rad) and velocities (rad/s), robot order, shape (n_joints,).
            inputs: named input vectors to update (e.g. {'command': goal}); None or {} keeps the last.
            out_q_target: (n_joints,) float64, receives the position target (rad).
        """
        self.ran_policy = False
        n = self.n_joints
        if (
            not isinstance(q, np.ndarray)
            or not isinstance(dq, np.ndarray)
            or q.shape != (n,)
            or dq.shape != (n,)
            or q.dtype.kind != 'f'
            or dq.dtype.kind != 'f'
        ):
            return self._invalid(out_q_target, None, 'state of wrong shape or dtype')
        if not (np.isfinite(q).all() and np.isfinite(dq).all()):
            return self._invalid(out_q_target, None, 'non-finite joint state')
        if inputs:
            for name, v in inputs.items():
                if not self.obs_builder.try_set_input(name, v):
                    return self._invalid(out_q_target, q, f'bad input {name!r}')
        if not self._started:
            self._started = True
            self._t0_ns = t_ns
            self._next_ns = t_ns
            self._target[:] = q
            self._out_prev[:] = q
        if t_ns >= self._next_ns:
            self._policy_step(t_ns, q, dq)
            self._next_ns += self.period_ns
            if self._next_ns <= t_ns:
                self._next_ns = t_ns + self.period_ns
        if not self._valid:
            np.copyto(out_q_target, self._out_prev if self._have_target else q)
            return False
        if self.interpolate:
            a = min(1.0, max(0.0, (t_ns - self._step_ns) / self.period_ns))
            np.subtract(self._target, self._start, out=out_q_target)
            np.multiply(out_q_target, a, out=out_q_target)
            np.add(out_q_target, self._start, out=out_q_target)
        else:
            np.copyto(out_q_target, self._target)
        np.copyto(self._out_prev, out_q_target)
        return True

    def _invalid(self, out: F64, q: F64 | None, why: str) -> bool:
        self.errors += 1
        self.last_error = why
        self._valid = False
        if self._have_target:
            np.copyto(out, self._out_prev)
        elif q is not None:
            np.copyto(out, q)
        else:
            out.fill(np.nan)  # nothing valid to hold: the safety filter stops on the flag
        return False

    def _policy_step(self, t_ns: int, q: F64, dq: F64) -> None:
        t0 = time.perf_counter_ns()
        self.ran_policy = True
        obs, act = self._obs, self._act
        try:  # runs the encoder of a two-model pipeline: its exceptions are a bad step too
            self.obs_builder.build((t_ns - self._t0_ns) * 1e-9, q, dq, self._last_action, obs)
        except Exception as err:
            who = 'encoder' if self.encoder is not None else 'observation builder'
            self._fail(f'{who} raised {type(err).__name__}: {error_line(err)}')
            return
        if not np.isfinite(obs).all():
            self._fail('non-finite observation')
            return
        try:
            if self.cache is None or not self.cache.try_get(obs, act):
                self.model.forward(obs, act)
                if self.cache is not None:
                    self.cache.put(obs, act)
        except Exception as err:
            self._fail(f'policy raised {type(err).__name__}: {error_line(err)}')
            return
        if not np.isfinite(act).all():
            self._fail('policy returned a non-finite action')
            return
        # the new step starts from what was commanded last (no jump when interpolating)
        np.copyto(self._start, self._out_prev if self._have_target else q)
        self.action_mapper.map(act, self._last_action, self._target)
        self._have_target = True
        self._valid = True
        self._step_ns = t_ns
        self.steps += 1
        self.last_inference_ns = time.perf_counter_ns() - t0

    def _fail(self, why: str) -> None:
        self.errors += 1
        self.last_error = why
        self._valid = False
        self.last_inference_ns = 0
