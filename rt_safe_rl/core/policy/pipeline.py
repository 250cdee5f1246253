"""Observation and action pipeline built from a :class:`PolicyPipelineConfig`.

:class:`ObservationBuilder` turns robot state (robot joint order), named inputs and time into the
policy's float32 observation (terms, scales, clipping, history, normalization);
:class:`ActionMapper` turns a raw action into joint position targets in robot order
(``default_q + action_scale * clip(action)``).

RT-safety: ``build``/``map`` write preallocated arrays only (numpy ufuncs with ``out=``); no
allocation in steady state. Construction allocates (configure time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.core.policy.config import BASE_INPUT_DEFAULTS, ObsTermConfig, PolicyPipelineConfig

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def policy_joint_index(cfg: PolicyPipelineConfig, robot_joint_names: Sequence[str] | None) -> I64:
    """idx[i] = robot joint index of policy joint i.

    Raises:
        ConfigError: a name not on the robot, a mapping index out of range, or a joint-count mismatch.
    """
    n = cfg.n_joints
    names = list(robot_joint_names) if robot_joint_names is not None else None
    n_robot = len(names) if names is not None else n
    if cfg.joints.names:
        if names is None:
            raise ConfigError('joints.names needs the robot joint names')
        missing = [j for j in cfg.joints.names if j not in names]
        if missing:
            raise ConfigError(f'policy joints {missing} are not robot joints {names}')
        return np.array([names.index(j) for j in cfg.joints.names], np.int64)
    if cfg.joints.mapping:
        bad = [i for i in cfg.joints.mapping if i >= n_robot]
        if bad:
            raise ConfigError(f'joints.mapping indices {bad} out of range for {n_robot} robot joints')
        return np.array(cfg.joints.mapping, np.int64)
    if n_robot != n:
        raise ConfigError(
            f'policy drives {n} joints, robot has {n_robot}: give joints.names or joints.mapping'
        )
    return np.arange(n, dtype=np.int64)


def _scale_vec(scale: float | list[float], n: int) -> F64:
    return np.full(n, float(scale)) if not isinstance(scale, list) else np.asarray(scale, np.float64)


class ObservationBuilder:
    """Builds the observation vector of one policy (see the schema in ``config.py``)."""

    def __init__(self, cfg: PolicyPipelineConfig, robot_joint_names: Sequence[str] | None = None) -> None:
        self.cfg = cfg
        self.idx = policy_joint_index(cfg, robot_joint_names)
        self.n_robot = len(robot_joint_names) if robot_joint_names is not None else cfg.n_joints
        n = cfg.n_joints
        self.default_q = np.asarray(cfg.default_q, np.float64)
        self.inputs: dict[str, F64] = {}
        for name, ic in cfg.inputs.items():
            self.inputs[name] = np.asarray(ic.default, np.float64) if ic.default else np.zeros(ic.size)
        for t in cfg.observation.terms:
            if t.input and t.input not in self.inputs:
                if t.input in BASE_INPUT_DEFAULTS:
                    self.inputs[t.input] = np.asarray(BASE_INPUT_DEFAULTS[t.input], np.float64)
                else:
                    raise ConfigError(f'input {t.input!r} is not declared in inputs')
        self._input_defaults = {k: v.copy() for k, v in self.inputs.items()}
        self.frame_dim = cfg.frame_dim
        self.obs_dim = cfg.obs_dim
        h = cfg.observation.history_length
        self._q = np.zeros(n)
        self._dq = np.zeros(n)
        self._frame = np.zeros(self.frame_dim)
        self._hist = np.zeros((h, self.frame_dim))
        self._hist2 = np.zeros((h, self.frame_dim))
        self._obs = np.zeros(self.obs_dim)
        self._terms: list[tuple[str, slice, F64, float | None, str, float, ObsTermConfig]] = []
        off = 0
        offsets = []
        for t in cfg.observation.terms:
            size = cfg.term_size(t)
            sl = slice(off, off + size)
            offsets.append((off, size))
            self._terms.append((t.term, sl, _scale_vec(t.scale, size), t.clip, t.input, t.period_s, t))
            off += size
        ages = (
            list(range(h)) if cfg.observation.history_order == 'newest_first' else list(range(h - 1, -1, -1))
        )
        gather: list[int] = []
        if cfg.observation.history_layout == 'time':
            for a in ages:
                gather += list(range(a * self.frame_dim, (a + 1) * self.frame_dim))
        else:
            for o, size in offsets:
                for a in ages:
                    gather += list(range(a * self.frame_dim + o, a * self.frame_dim + o + size))
        self._gather = np.asarray(gather, np.int64)
        self._clip = cfg.observation.clip
        norm = cfg.observation.normalization
        self._mean = np.asarray(norm.mean, np.float64) if norm is not None and norm.mean else None
        self._den = (
            (np.asarray(norm.std, np.float64) + norm.epsilon) if norm is not None and norm.std else None
        )
        self._norm_clip = norm.clip if norm is not None else None
        self._fresh = True
        enc = cfg.encoder
        self.encoder_out = np.zeros(enc.output_size if enc is not None else 0, np.float32)
        self._enc_builder: ObservationBuilder | None = None
        self._enc_obs = np.zeros(0, np.float32)
        self._enc_forward: Callable[[F32, F32], None] | None = None
        self._enc_reset: Callable[[], None] | None = None

    def attach_encoder(
        self,
        builder: ObservationBuilder,
        forward: Callable[[F32, F32], None],
        reset: Callable[[], None] | None = None,
    ) -> None:
        """Run ``forward(builder's observation, encoder_out)`` at every build (two-model pipeline)."""
        self._enc_builder = builder
        self._enc_obs = np.zeros(builder.obs_dim, np.float32)
        self._enc_forward = forward
        self._enc_reset = reset

    def reset(self) -> None:
        """Forget the history (next frame fills it) and restore input defaults (and the encoder's)."""
        self._fresh = True
        for k, v in self._input_defaults.items():
            self.inputs[k][:] = v
        if self._enc_builder is not None:
            self._enc_builder.reset()
        if self._enc_reset is not None:
            self._enc_reset()

    def try_set_input(self, name: str, values: npt.ArrayLike) -> bool:
        """Copy `values` into input `name`; False (nothing changed) on unknown name, size or non-finite."""
        dst = self.inputs.get(name)
        if dst is None:
            return False
        v = np.asarray(values, dtype=np.float64)
        if v.shape != dst.shape or not np.all(np.isfinite(v)):
            return False
        dst[:] = v
        return True

    def build(self, t_s: float, q: F64, dq: F64, last_action: F32, out: F32) -> None:
        """Write the observation for robot-order `q`, `dq` (rad, rad/s) at policy time `t_s` into `out`."""
        np.take(q, self.idx, out=self._q)
        np.take(dq, self.idx, out=self._dq)
        if self._enc_builder is not None and self._enc_forward is not None:
            for k, v in self.inputs.items():  # the encoder sees the same inputs
                dst = self._enc_builder.inputs.get(k)
                if dst is not None:
                    dst[:] = v
            self._enc_builder.build(t_s, q, dq, last_action, self._enc_obs)
            self._enc_forward(self._enc_obs, self.encoder_out)
        f = self._frame
        for term, sl, scale, clip, inp, period, tc in self._terms:
            seg = f[sl]
            if term == 'joint_pos_rel':
                np.subtract(self._q, self.default_q, out=seg)
            elif term == 'joint_pos':
                seg[:] = self._q
            elif term == 'joint_vel':
                seg[:] = self._dq
            elif term == 'last_action':
                seg[:] = last_action
            elif term == 'command_error':
                np.subtract(self.inputs[inp], self._q, out=seg)
            elif term == 'phase':
                phi = (t_s % period) / period
                nk = len(tc.offsets)
                for j in range(nk):
                    pj = (phi + tc.offsets[j]) % 1.0
                    if tc.form == 'raw':
                        seg[j] = pj
                    else:
                        seg[j] = np.sin(2.0 * np.pi * pj)
                        seg[nk + j] = np.cos(2.0 * np.pi * pj)
            elif term == 'clock':
                seg[0] = t_s
            elif term == 'encoder':
                seg[:] = self.encoder_out
            elif term == 'base_rpy':
                _rpy(self.inputs[inp], seg)
            elif term == 'base_quat' and tc.quat_order == 'xyzw':
                v = self.inputs[inp]
                seg[0], seg[1], seg[2], seg[3] = v[1], v[2], v[3], v[0]
            else:  # command, base-state and named inputs
                seg[:] = self.inputs[inp]
            np.multiply(seg, scale, out=seg)
            if clip is not None:
                np.clip(seg, -clip, clip, out=seg)
        if self._fresh:
            self._hist[:] = f
            self._fresh = False
        else:
            self._hist2[1:] = self._hist[:-1]
            self._hist2[0] = f
            self._hist, self._hist2 = self._hist2, self._hist
        o = self._obs
        np.take(self._hist.reshape(-1), self._gather, out=o)
        if self._clip is not None:
            np.clip(o, -self._clip, self._clip, out=o)
        if self._mean is not None and self._den is not None:
            np.subtract(o, self._mean, out=o)
            np.divide(o, self._den, out=o)
            if self._norm_clip is not None:
                np.clip(o, -self._norm_clip, self._norm_clip, out=o)
        np.copyto(out, o, casting='same_kind')


def _rpy(quat_wxyz: F64, out: F64) -> None:
    """Roll, pitch, yaw (rad, ZYX convention) of a unit quaternion (w, x, y, z) into out[0:3]."""
    w, x, y, z = quat_wxyz[0], quat_wxyz[1], quat_wxyz[2], quat_wxyz[3]
    out[0] = np.arctan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    out[1] = np.arcsin(min(1.0, max(-1.0, 2.0 * (w * y - z * x))))
    out[2] = np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


class ActionMapper:
    """Raw action (policy order) -> position targets (robot order)."""

    def __init__(self, cfg: PolicyPipelineConfig, idx: I64) -> None:
        n = cfg.n_joints
        a = cfg.action
        self.idx = idx
        self.default_q = np.asarray(cfg.default_q, np.float64)
        self.scale = _scale_vec(a.scale, n)
        if a.clip is not None:
            c = _scale_vec(a.clip, n)
            self.low: F64 | None = -c
            self.high: F64 | None = c
        elif a.clip_low:
            self.low, self.high = np.asarray(a.clip_low, np.float64), np.asarray(a.clip_high, np.float64)
        else:
            self.low = self.high = None
        self._a = np.zeros(n)
        self._t = np.zeros(n)

    def map(self, action: F32, last_action_out: F32, target_robot: F64) -> None:
        """Clip `action`, store it as last action, write policy joints of `target_robot` (rad)."""
        a = self._a
        np.copyto(a, action, casting='same_kind')
        if self.low is not None and self.high is not None:
            np.clip(a, self.low, self.high, out=a)
        np.copyto(last_action_out, a, casting='same_kind')
        np.multiply(a, self.scale, out=self._t)
        np.add(self._t, self.default_q, out=self._t)
        target_robot[self.idx] = self._t


def plausible_observations(
    cfg: PolicyPipelineConfig, n: int, seed: int = 0, q_span_rad: float = 0.3, dq_std: float = 1.0
) -> F32:
    """`n` consecutive observations built by the pipeline from a random walk of plausible states.

    Joints around ``default_q`` (+- `q_span_rad`), velocities N(0, `dq_std`) rad/s, inputs around their
    defaults (+- 0.5 for commands, small tilts of gravity), last action N(0, 0.5), time at 50 Hz; history
    stacking evolves as at run time. Used to check backends on what the policy will actually see.
    Not RT code.
    """
    rng = np.random.default_rng(seed)
    names = None
    if cfg.joints.names:
        names = list(cfg.joints.names)
    elif cfg.joints.mapping:
        names = [str(i) for i in range(max(cfg.joints.mapping) + 1)]
    ob = ObservationBuilder(cfg, names)
    k = ob.n_robot
    q0 = np.zeros(k)
    q0[ob.idx] = ob.default_q
    out = np.zeros((n, ob.obs_dim), np.float32)
    q = q0.copy()
    for i in range(n):
        q = np.clip(q + rng.normal(0.0, 0.05, k), q0 - q_span_rad, q0 + q_span_rad)
        dq = rng.normal(0.0, dq_std, k)
        for name, v in ob._input_defaults.items():
            noise = rng.normal(0.0, 0.1 if name in ('projected_gravity', 'base_quat') else 0.5, v.shape)
            ob.inputs[name][:] = v + noise
            if name == 'base_quat':
                ob.inputs[name] /= np.linalg.norm(ob.inputs[name])
        last = rng.normal(0.0, 0.5, cfg.n_joints).astype(np.float32)
        if ob.encoder_out.size:
            ob.encoder_out[:] = rng.normal(0.0, 1.0, ob.encoder_out.size)
        ob.build(i * 0.02, q, dq, last, out[i])
    return out
