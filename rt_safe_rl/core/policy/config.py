"""Configuration of policy inference: the node section and the per-policy pipeline schema.

Two layers, both strict (``configutil.from_mapping``: unknown key / wrong type -> ConfigError):

1. :class:`PolicyNodeConfig` -- the ``policy:`` section of ``config/default.yaml`` (which policy file,
   which pipeline YAML, backend, policy rate, interpolation, hash pinning, caching, tolerances).
2. :class:`PolicyPipelineConfig` -- one YAML per policy (``config/policies/<name>.yaml``) that says how
   to build the observation vector and how to turn the policy output into joint targets.

Per-policy YAML schema (every key optional unless marked *required*)::

    model:
      format: auto            # auto (by file content) | torchscript | state_dict | onnx
      architecture:           # required for format state_dict (weights_only=True, no pickled code)
        type: mlp             # mlp | lstm_mlp
        hidden: [512, 256, 128]
        activation: elu       # elu | relu | tanh | leaky_relu | identity  (between hidden layers)
        lstm_hidden: 0        # lstm_mlp: LSTM hidden size (1 layer, batch 1) before the MLP
        state_dict_key: ''    # checkpoint is a dict holding the state dict under this key ('' = top)
        prefix: ''            # strip this prefix from the state-dict keys
      input_name: ''          # onnx: input tensor name ('' = the first input)
      output_name: ''         # onnx: output tensor name ('' = the first output)
    joints:                   # policy joint order (the order of q, dq, actions inside the policy)
      names: []               # robot joint names in policy order (looked up in the robot's names)
      mapping: []             # OR: mapping[i] = robot joint index of policy joint i
                              # (both empty: policy order == robot order)
    default_q: [...]          # *required*, rad, policy order; its length is the policy's joint count
    inputs:                   # named input vectors fed to control_step(inputs=...) by the node
      command: {size: 3, default: [0.5, 0.0, 0.0], topic: policy/command}
    observation:
      terms:                  # *required*, in order; each term is a block of the observation
        - {term: base_ang_vel, scale: 0.25}
        - {term: projected_gravity}
        - {term: command, input: command, scale: [2.0, 2.0, 0.25]}
        - {term: joint_pos_rel}                 # (q - default_q) * scale
        - {term: joint_vel, scale: 0.05}
        - {term: last_action}
        - {term: phase, period_s: 0.8}          # [sin(2 pi phi), cos(2 pi phi)], phi = (t mod T)/T
        - {term: phase, form: raw, offsets: [0.0, 0.5]}   # phi of each leg (gait clock)
        - {term: base_rpy}                      # roll, pitch, yaw of input base_quat (w, x, y, z)
        - {term: input, input: height_scan}     # any declared input, any width
        - {term: encoder}                       # the encoder model's outputs (two-model pipeline)
      history_length: 1       # frames stacked (1 = no history)
      history_order: newest_first   # newest_first | oldest_first
      history_layout: time    # time: whole frames one after another; term: each term's history together
      clip: null              # symmetric clip of the whole (scaled) observation, e.g. 100.0
      normalization:          # optional: obs = clip_n((obs - mean) / (std + epsilon))
        mean: []              # length obs_dim (after history stacking)
        std: []
        epsilon: 1.0e-8
        clip: null
    encoder:                  # optional second model (estimator / history encoder), run every step
      path: encoder.onnx      # relative to this YAML ('package://' ok); TorchScript or ONNX
      output_size: 8          # its outputs, placed where the policy's ``{term: encoder}`` stands
      model: {format: auto}   # as ``model`` above
      observation:            # its own input: terms + history, same schema as ``observation``
        terms: [{term: joint_vel, scale: 0.05}]
        history_length: 5
    action:
      scale: 0.25             # float or per-joint list: target = default_q + scale * action
      clip: null              # symmetric clip of the raw action before scaling (float or list)
      clip_low: []            # OR per-joint lower / upper raw-action bounds
      clip_high: []

Observation terms (sizes for a policy with N joints):

=================== ====== =======================================================================
term                size   value
=================== ====== =======================================================================
joint_pos_rel       N      q - default_q (policy order), rad
joint_pos           N      q, rad
joint_vel           N      dq, rad/s
last_action         N      previous raw (clipped) policy output
command             k      input vector ``input`` (declared in ``inputs``), e.g. a joint goal
command_error       N      input ``input`` (size N, a joint-space goal) minus q, rad
projected_gravity   3      input ``projected_gravity`` (default [0, 0, -1])
base_ang_vel        3      input ``base_ang_vel`` (default zeros), rad/s
base_lin_vel        3      input ``base_lin_vel`` (default zeros), m/s
phase               2 k    sin / cos of 2 pi phi_i, phi_i = (((t - t_reset) mod period_s) / period_s
                           + offsets[i]) mod 1 (k = len(offsets), default [0]); ``form: raw``: phi_i (k)
clock               1      t - t_reset, s
base_quat           4      input ``base_quat`` (w, x, y, z; default [1, 0, 0, 0]); ``quat_order: xyzw``
                           reorders the output
base_rpy            3      roll, pitch, yaw (rad, ZYX) of input ``base_quat`` (w, x, y, z)
input               k      any declared input ``input``, its declared width
encoder             k      the encoder's ``output_size`` outputs (see ``encoder``)
=================== ====== =======================================================================

Each term: ``scale`` (float or list of the term's size), ``clip`` (symmetric, after scaling; null = none).
The three base-state terms read inputs of the same name unless ``input`` says otherwise; an input that
no ``inputs`` entry declares gets the defaults above (so an arm policy never needs an IMU).

Not RT-code: parsing allocates; done at configure time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from rt_safe_rl.core.configutil import from_mapping, load_yaml
from rt_safe_rl.core.errors import ConfigError

BackendName = Literal[
    'auto',
    'eager',
    'torchscript',
    'numba',
    'fp16',
    'int8',
    'onnxruntime',
    'cuda',
    'tensorrt',
    'tensorrt_fp16',
]
"""Inference backends; ``auto`` measures the available ones at configure, picks the fastest exact one."""

BACKENDS: tuple[str, ...] = tuple(b for b in get_args(BackendName) if b != 'auto')
"""The concrete backends (``auto`` picks one of them)."""

TermName = Literal[
    'joint_pos_rel',
    'joint_pos',
    'joint_vel',
    'last_action',
    'command',
    'command_error',
    'projected_gravity',
    'base_ang_vel',
    'base_lin_vel',
    'phase',
    'clock',
    'base_quat',
    'base_rpy',
    'input',
    'encoder',
]

BASE_INPUT_DEFAULTS: dict[str, tuple[float, ...]] = {
    'projected_gravity': (0.0, 0.0, -1.0),
    'base_ang_vel': (0.0, 0.0, 0.0),
    'base_lin_vel': (0.0, 0.0, 0.0),
    'base_quat': (1.0, 0.0, 0.0, 0.0),
}
"""Built-in inputs used when a pipeline does not declare them in ``inputs`` (base_quat: w, x, y, z)."""


@dataclass(frozen=True)
class PolicyNodeConfig:
    """The ``policy:`` section of config/default.yaml (node-level settings).

    Attributes:
        path: policy file (``.pt`` TorchScript or state-dict checkpoint, ``.onnx``); ``package://`` ok.
        config: per-policy pipeline YAML (:class:`PolicyPipelineConfig`); ``package://`` ok.
        backend: inference backend or ``auto`` (measure all available, keep exact ones, pick fastest).
        rate_hz: policy step rate, Hz (policies are trained at ~50 Hz); the control loop runs faster.
        interpolation: between policy steps hold the target or interpolate linearly to the new one.
        sha256: expected SHA-256 (hex) of the policy file; '' = do not check, else refuse on mismatch.
        cache: exact-match output cache on the observation bytes (refused for recurrent policies).
        cache_size: entries kept by the cache (LRU-free: oldest slot overwritten, ring).
        tolerance: max abs error vs eager FP32 for FP32 backends to be eligible.
        tolerance_fp16: max abs error accepted for the fp16 backend.
        tolerance_int8: max abs error accepted for the int8 (dynamic quantization) backend.
        allow_reduced_precision: let ``auto`` choose fp16/int8 (within their own tolerance).
        auto_samples: observations (or rollout steps for recurrent policies) used to check errors.
        auto_timing_iters: timed calls per backend when ``auto`` measures latency.
        warmup_iters: forward passes at configure before the RT path starts.
        num_threads: torch intra-op threads (1: the control loop, not the model, owns the cores).
        input_sizes_strict: refuse a pipeline whose obs_dim differs from the model's input size.
        stdout: a policy that writes to stdout when called: ``refuse`` it at configure, or ``drop``
            its output (fd-level redirect around every call off the RT path; ``auto`` then prefers a
            backend that does not print, e.g. the compiled one, for the RT path).
        auto_cache: remember the ``auto`` choice (keyed by model SHA-256, pipeline config, backend
            versions and CPU model) and reuse it on the next start after re-checking its tolerance.
        cache_dir: where (default ``$XDG_CACHE_HOME/rt_safe_rl`` or ``~/.cache/rt_safe_rl``).
    """

    path: str = 'package://rt_safe_rl/models/arm7_reach.pt'
    config: str = 'package://rt_safe_rl/config/policies/arm7_reach.yaml'
    backend: BackendName = 'auto'
    rate_hz: float = 50.0
    interpolation: Literal['hold', 'linear'] = 'hold'
    sha256: str = ''
    cache: bool = False
    cache_size: int = 256
    tolerance: float = 1e-4
    tolerance_fp16: float = 1e-2
    tolerance_int8: float = 5e-2
    allow_reduced_precision: bool = False
    auto_samples: int = 200
    auto_timing_iters: int = 300
    warmup_iters: int = 50
    num_threads: int = 1
    input_sizes_strict: bool = True
    stdout: Literal['refuse', 'drop'] = 'refuse'
    auto_cache: bool = True
    cache_dir: str = ''

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError('path must not be empty')
        if not (0.0 < self.rate_hz <= 10000.0):
            raise ValueError(f'rate_hz must be in (0, 10000], got {self.rate_hz}')
        hexdigits = '0123456789abcdefABCDEF'
        if self.sha256 and (len(self.sha256) != 64 or any(c not in hexdigits for c in self.sha256)):
            raise ValueError(f'sha256 must be 64 hex digits or empty, got {self.sha256!r}')
        for name in ('tolerance', 'tolerance_fp16', 'tolerance_int8'):
            if not getattr(self, name) > 0.0:
                raise ValueError(f'{name} must be > 0, got {getattr(self, name)}')
        if self.cache_size < 1:
            raise ValueError(f'cache_size must be >= 1, got {self.cache_size}')
        if self.auto_samples < 1 or self.auto_timing_iters < 1 or self.warmup_iters < 0:
            raise ValueError('auto_samples and auto_timing_iters must be >= 1, warmup_iters >= 0')
        if self.num_threads < 1:
            raise ValueError(f'num_threads must be >= 1, got {self.num_threads}')


@dataclass(frozen=True)
class ArchitectureConfig:
    """Network described in config, used to load a plain state-dict checkpoint (weights_only=True).

    ``mlp``: Linear layers input -> hidden... -> output with ``activation`` between them; the state dict
    holds ``<prefix>0.weight``, ``<prefix>0.bias``, ``<prefix>2.weight``... (an ``nn.Sequential``
    with activations at odd indices, as rsl_rl's actor) -- the loader matches Linear weights in key
    order, so any naming with weights in layer order works.
    ``lstm_mlp``: 1-layer LSTM (``weight_ih_l0``...) of ``lstm_hidden`` units, then the MLP.
    Input/output sizes come from the weights themselves.
    """

    type: Literal['mlp', 'lstm_mlp'] = 'mlp'
    hidden: list[int] = field(default_factory=list)
    activation: Literal['elu', 'relu', 'tanh', 'leaky_relu', 'identity'] = 'elu'
    lstm_hidden: int = 0
    state_dict_key: str = ''
    prefix: str = ''

    def __post_init__(self) -> None:
        if any(h < 1 for h in self.hidden):
            raise ValueError(f'hidden sizes must be >= 1, got {self.hidden}')
        if self.type == 'lstm_mlp' and self.lstm_hidden < 1:
            raise ValueError('lstm_mlp needs lstm_hidden >= 1')


@dataclass(frozen=True)
class ModelConfig:
    """How to read the policy file."""

    format: Literal['auto', 'torchscript', 'state_dict', 'onnx'] = 'auto'
    architecture: ArchitectureConfig | None = None
    input_name: str = ''
    output_name: str = ''


@dataclass(frozen=True)
class JointsConfig:
    """Policy joint order relative to the robot's joint order (names OR indices; both empty = same)."""

    names: list[str] = field(default_factory=list)
    mapping: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.names and self.mapping:
            raise ValueError('give joints.names or joints.mapping, not both')
        if len(set(self.names)) != len(self.names):
            raise ValueError(f'joints.names has duplicates: {self.names}')
        if len(set(self.mapping)) != len(self.mapping) or any(i < 0 for i in self.mapping):
            raise ValueError(f'joints.mapping must hold distinct indices >= 0, got {self.mapping}')


@dataclass(frozen=True)
class InputConfig:
    """A named input vector (e.g. a velocity command or a joint-space goal), set by the node.

    Attributes:
        size: number of values.
        default: value before anything arrives (zeros when empty).
        topic: std_msgs/Float64MultiArray topic the node subscribes for it ('' = not subscribed).
    """

    size: int
    default: list[float] = field(default_factory=list)
    topic: str = ''

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f'input size must be >= 1, got {self.size}')
        if self.default and len(self.default) != self.size:
            raise ValueError(f'input default has {len(self.default)} values, size is {self.size}')


@dataclass(frozen=True)
class ObsTermConfig:
    """One block of the observation vector (see the module docstring for the terms)."""

    term: TermName
    scale: float | list[float] = 1.0
    clip: float | None = None
    input: str = ''
    period_s: float = 0.8
    form: Literal['sin_cos', 'raw'] = 'sin_cos'
    offsets: list[float] = field(default_factory=lambda: [0.0])
    quat_order: Literal['wxyz', 'xyzw'] = 'wxyz'

    def __post_init__(self) -> None:
        if self.clip is not None and not self.clip > 0.0:
            raise ValueError(f'term {self.term}: clip must be > 0, got {self.clip}')
        if self.term == 'phase' and not self.period_s > 0.0:
            raise ValueError(f'term phase: period_s must be > 0, got {self.period_s}')
        if self.term in ('command', 'command_error') and not self.input:
            object.__setattr__(self, 'input', 'command')
        if self.term in BASE_INPUT_DEFAULTS and not self.input:
            object.__setattr__(self, 'input', self.term)
        if self.term == 'base_rpy' and not self.input:
            object.__setattr__(self, 'input', 'base_quat')
        if self.term == 'input' and not self.input:
            raise ValueError('term input needs input: <name of a declared input>')
        if self.term == 'phase' and not self.offsets:
            raise ValueError('term phase: offsets must not be empty')


@dataclass(frozen=True)
class NormalizationConfig:
    """Affine observation normalization applied after history stacking and clipping."""

    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    epsilon: float = 1e-8
    clip: float | None = None

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ValueError(f'normalization mean ({len(self.mean)}) and std ({len(self.std)}) differ')
        if any(s < 0.0 for s in self.std):
            raise ValueError('normalization std must be >= 0')


@dataclass(frozen=True)
class ObservationConfig:
    """Ordered observation terms plus history, clipping and normalization."""

    terms: list[ObsTermConfig]
    history_length: int = 1
    history_order: Literal['newest_first', 'oldest_first'] = 'newest_first'
    history_layout: Literal['time', 'term'] = 'time'
    clip: float | None = None
    normalization: NormalizationConfig | None = None

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError('observation.terms must not be empty')
        if self.history_length < 1:
            raise ValueError(f'history_length must be >= 1, got {self.history_length}')
        if self.clip is not None and not self.clip > 0.0:
            raise ValueError(f'observation.clip must be > 0, got {self.clip}')


@dataclass(frozen=True)
class ActionConfig:
    """Raw policy output -> joint targets: ``target = default_q + scale * clip(action)``."""

    scale: float | list[float] = 1.0
    clip: float | list[float] | None = None
    clip_low: list[float] = field(default_factory=list)
    clip_high: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.clip is not None and (self.clip_low or self.clip_high):
            raise ValueError('give action.clip or action.clip_low/clip_high, not both')
        if len(self.clip_low) != len(self.clip_high):
            raise ValueError('action.clip_low and action.clip_high must have the same length')
        if any(lo > hi for lo, hi in zip(self.clip_low, self.clip_high, strict=True)):
            raise ValueError('action.clip_low must be <= clip_high')


@dataclass(frozen=True)
class EncoderConfig:
    """A second model (estimator / history encoder) whose outputs enter the policy observation."""

    path: str
    output_size: int
    observation: ObservationConfig
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if self.output_size < 1:
            raise ValueError(f'encoder.output_size must be >= 1, got {self.output_size}')
        if any(t.term == 'encoder' for t in self.observation.terms):
            raise ValueError('encoder.observation cannot use the encoder term')


@dataclass(frozen=True)
class PolicyPipelineConfig:
    """One policy's observation/action pipeline (the per-policy YAML)."""

    default_q: list[float]
    observation: ObservationConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    joints: JointsConfig = field(default_factory=JointsConfig)
    inputs: dict[str, InputConfig] = field(default_factory=dict)
    action: ActionConfig = field(default_factory=ActionConfig)
    description: str = ''
    encoder: EncoderConfig | None = None

    def __post_init__(self) -> None:
        n = len(self.default_q)
        if n < 1:
            raise ValueError('default_q must list at least one joint')
        if self.joints.names and len(self.joints.names) != n:
            raise ValueError(f'joints.names has {len(self.joints.names)} names, default_q has {n}')
        if self.joints.mapping and len(self.joints.mapping) != n:
            raise ValueError(f'joints.mapping has {len(self.joints.mapping)} entries, default_q has {n}')
        for i, t in enumerate(self.observation.terms):
            size = self.term_size(t)
            if isinstance(t.scale, list) and len(t.scale) != size:
                raise ValueError(
                    f'observation.terms[{i}] ({t.term}): scale has {len(t.scale)} values, term size is {size}'
                )
        _check_len('action.scale', self.action.scale, n)
        if isinstance(self.action.clip, list):
            _check_len('action.clip', self.action.clip, n)
        if self.action.clip_low:
            _check_len('action.clip_low', self.action.clip_low, n)
        has_enc = any(t.term == 'encoder' for t in self.observation.terms)
        if has_enc != (self.encoder is not None):
            raise ValueError('an encoder section needs an {term: encoder} observation term and vice versa')
        if self.encoder is not None:
            self.encoder_pipeline()  # its terms must fit too
        norm = self.observation.normalization
        if norm is not None and norm.mean and len(norm.mean) != self.obs_dim:
            raise ValueError(f'normalization mean has {len(norm.mean)} values, obs_dim is {self.obs_dim}')

    @property
    def n_joints(self) -> int:
        """Joints driven by the policy (= action size)."""
        return len(self.default_q)

    def input_size(self, name: str) -> int:
        """Size of named input `name` (declared, or a built-in base-state input)."""
        if name in self.inputs:
            return self.inputs[name].size
        if name in BASE_INPUT_DEFAULTS:
            return len(BASE_INPUT_DEFAULTS[name])
        raise ValueError(f'input {name!r} is used by an observation term but not declared in inputs')

    def encoder_pipeline(self) -> PolicyPipelineConfig:
        """The encoder's own pipeline: its observation over this policy's joints and inputs."""
        if self.encoder is None:
            raise ValueError('no encoder configured')
        return PolicyPipelineConfig(
            default_q=list(self.default_q),
            observation=self.encoder.observation,
            model=self.encoder.model,
            joints=self.joints,
            inputs=dict(self.inputs),
        )

    def size_note(self, section: str = '') -> str:
        """' (terms: base_ang_vel 3 + ... = 47 x history 2)' for size-mismatch messages; with
        `section` (e.g. 'encoder.observation') ' in <section> (terms: ...)'."""
        parts = ' + '.join(f'{t.term} {self.term_size(t)}' for t in self.observation.terms)
        h = self.observation.history_length
        where = f' in {section}' if section else ''
        return f'{where} (terms: {parts} = {self.frame_dim}' + (f' x history {h})' if h > 1 else ')')

    def term_size(self, t: ObsTermConfig) -> int:
        """Size of one observation term (one frame)."""
        n = self.n_joints
        if t.term in ('joint_pos_rel', 'joint_pos', 'joint_vel', 'last_action'):
            return n
        if t.term == 'phase':
            return len(t.offsets) * (2 if t.form == 'sin_cos' else 1)
        if t.term == 'clock':
            return 1
        if t.term == 'base_rpy':
            k = self.input_size(t.input)
            if k != 4:
                raise ValueError(f'base_rpy input {t.input!r} has size {k}, a quaternion has 4')
            return 3
        if t.term == 'encoder':
            if self.encoder is None:
                raise ValueError('term encoder needs an encoder section')
            return self.encoder.output_size
        if t.term == 'command_error':
            k = self.input_size(t.input)
            if k != n:
                raise ValueError(f'command_error input {t.input!r} has size {k}, policy has {n} joints')
            return n
        return self.input_size(t.input)

    @property
    def frame_dim(self) -> int:
        """Observation size of one frame (before history stacking)."""
        return sum(self.term_size(t) for t in self.observation.terms)

    @property
    def obs_dim(self) -> int:
        """Observation size fed to the policy (after history stacking)."""
        return self.frame_dim * self.observation.history_length


def _check_len(name: str, value: float | list[float], n: int) -> None:
    if isinstance(value, list) and len(value) != n:
        raise ValueError(f'{name} has {len(value)} values, the policy has {n} joints')


def load_pipeline_config(path: str | Path) -> PolicyPipelineConfig:
    """Read and validate a per-policy pipeline YAML.

    Raises:
        ConfigError: missing file, bad YAML, unknown key, wrong type or inconsistent sizes (names the file).
    """
    p = Path(path)
    data = load_yaml(p)
    try:
        return from_mapping(PolicyPipelineConfig, data, str(p))
    except ConfigError:
        raise
    except ValueError as err:  # property evaluation inside __post_init__ of nested objects
        raise ConfigError(f'{p}: {err}') from None


def policy_node_config(data: dict[str, object] | None, where: str = 'policy') -> PolicyNodeConfig:
    """Build a :class:`PolicyNodeConfig` from a mapping (e.g. the ``policy:`` section)."""
    return from_mapping(PolicyNodeConfig, dict(data or {}), where)
