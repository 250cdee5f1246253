"""The four factories of the seed's API, one per deployment profile, and :func:`create_system`.

``your_policy``: a policy file path (TorchScript / state-dict checkpoint / ONNX, as the nodes
load), a ``torch.nn.Module`` or a TorchScript module (saved as TorchScript to a private temporary
folder and loaded through the very same path: same backends, same ``auto`` choice and checks), or
None for the shipped default policy. ``pipeline_config`` (the per-policy YAML) and
``robot_description`` (a URDF) default to the config's. Configure-time (seconds: the ``auto``
backend choice measures every available backend); not RT code.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from rt_safe_rl import paths
from rt_safe_rl.api.options import RTOptimizationConfig
from rt_safe_rl.api.system import RtSystem
from rt_safe_rl.config import deep_merge, load_config
from rt_safe_rl.core.errors import ConfigError, PolicyLoadError
from rt_safe_rl.core.policy.config import BACKENDS, load_pipeline_config
from rt_safe_rl.core.policy.runtime import PolicyRuntime
from rt_safe_rl.doctor.startup import startup_checks


def _save_module(module: Any, obs_dim: int, folder: Path) -> Path:
    """Save an nn.Module / ScriptModule as TorchScript (script, else trace on a zero observation)."""
    import torch

    out = folder / 'policy.pt'
    if isinstance(module, torch.jit.ScriptModule):
        module.save(str(out))
        return out
    module = module.eval()
    try:
        scripted = torch.jit.script(module)
    except Exception:
        try:
            with torch.no_grad():
                scripted = torch.jit.trace(module, torch.zeros(1, obs_dim))
        except Exception as err:
            raise PolicyLoadError(
                f'your_policy: cannot convert the {type(module).__name__} to TorchScript '
                f'(script and trace on a (1, {obs_dim}) observation failed: {str(err).splitlines()[0][:160]})'
            ) from None
    scripted.save(str(out))
    return out


def _policy_overrides(
    your_policy: Any, app_policy: Any, base_dir: Path, pipeline: Any
) -> tuple[dict[str, Any], Any]:
    """(policy overrides, cleanup) for `your_policy`."""
    if your_policy is None:
        return {}, None
    if isinstance(your_policy, (str, Path)):
        p = Path(your_policy).expanduser()
        if not p.is_file():
            raise PolicyLoadError(f'your_policy: policy file not found: {p}')
        return {'path': str(p.resolve())}, None
    import torch

    if not isinstance(your_policy, torch.nn.Module):
        raise TypeError(
            'your_policy: expected a path, a torch.nn.Module, a TorchScript module or None, '
            f'got {type(your_policy).__name__}'
        )
    pipe = load_pipeline_config(paths.resolve(pipeline or app_policy.config, base_dir))
    folder = Path(tempfile.mkdtemp(prefix='rt_safe_rl_api_'))
    try:
        path = _save_module(your_policy, pipe.obs_dim, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return {'path': str(path), 'sha256': ''}, lambda: shutil.rmtree(folder, ignore_errors=True)


def _load_app(
    profile: str,
    config: RTOptimizationConfig | None,
    config_file: str | Path | None,
    overrides: dict[str, Any] | None,
) -> Any:
    if config is not None and config.deployment_mode != profile:
        raise ConfigError(
            f'RTOptimizationConfig.deployment_mode={config.deployment_mode!r} but this factory builds a '
            f'{profile!r} system: use create_{config.deployment_mode}_system or create_system(profile=...)'
        )
    ov: dict[str, Any] = config.to_overrides() if config is not None else {}
    if overrides:
        ov = deep_merge(ov, overrides)
    return load_config(config_file, ov or None, profile=profile)


def _prepare_gpu(app: Any) -> None:
    dep = app.deployment
    if not dep.gpu or app.policy.backend not in ('auto', 'cuda'):
        return
    import torch

    if not torch.cuda.is_available():
        return
    if dep.gpu_device >= torch.cuda.device_count():
        raise ConfigError(
            f'deployment.gpu_device {dep.gpu_device}: only {torch.cuda.device_count()} CUDA device(s)'
        )
    torch.cuda.set_device(dep.gpu_device)
    if dep.gpu_memory_pool_mb > 0:
        block = torch.empty(dep.gpu_memory_pool_mb << 20, dtype=torch.uint8, device='cuda')
        del block  # stays reserved in the caching allocator


def create_system(
    your_policy: Any = None,
    *,
    profile: str = 'development',
    config: RTOptimizationConfig | None = None,
    pipeline_config: str | Path | None = None,
    robot_description: str | Path | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    log: Any = None,
    async_mode: str = 'inline',
) -> RtSystem:
    """Build an :class:`RtSystem` for `profile` (configure: load, check and warm up the policy).

    Args:
        your_policy: path, torch.nn.Module, TorchScript module, or None (shipped default).
        profile: development | production | edge | cloud (config/profiles) or an overlay YAML.
        config: seed-style options (:class:`RTOptimizationConfig`), mapped onto the config.
        pipeline_config: per-policy YAML (observation/action pipeline); None = the config's.
        robot_description: URDF of the robot; None = the config's (the shipped arm).
        config_file: base config (default config/default.yaml); overrides: nested mapping on top.
        log: callable for start-up messages (default: stderr).
        async_mode: 'inline' (``async with`` makes the event-loop thread RT and runs each cycle in
            it: no hand-off) or 'worker' (a dedicated RT thread runs the cycles; the loop thread
            keeps its scheduling, and each call pays two thread wake-ups).

    Raises:
        ConfigError, PolicyLoadError: bad config / policy (one line). TypeError: bad your_policy type.
    """
    from rt_safe_rl.api.safety_stage import SafetyStage
    from rt_safe_rl.core.robot_model import RobotModel

    say = log or (lambda m: print(m, file=sys.stderr))
    app = _load_app(profile, config, config_file, overrides)
    extra: dict[str, Any] = {}
    if pipeline_config is not None:
        extra['config'] = str(Path(pipeline_config).expanduser().resolve())
    if robot_description is not None:
        extra = {'robot': {'urdf': str(Path(robot_description).expanduser().resolve())}, 'policy': extra}
    else:
        extra = {'policy': extra} if extra else {}
    pol_ov, cleanup = _policy_overrides(your_policy, app.policy, app.base_dir, pipeline_config)
    if pol_ov:
        extra = deep_merge(extra, {'policy': pol_ov})
    try:
        if extra:
            base_ov = config.to_overrides() if config is not None else {}
            app = load_config(
                config_file, deep_merge(deep_merge(base_ov, overrides or {}), extra), profile=profile
            )
        startup_checks(app, log=say)
        _prepare_gpu(app)
        model = RobotModel.from_config(app.robot, app.base_dir)
        kwargs: dict[str, Any] = {}
        if app.policy.backend == 'auto' and not app.deployment.gpu:
            kwargs['backends'] = [b for b in BACKENDS if b != 'cuda']
        runtime = PolicyRuntime.from_config(app.policy, model.joint_names, base_dir=app.base_dir, **kwargs)
        safety = SafetyStage(model, app.safety)
    except BaseException:
        if cleanup is not None:
            cleanup()
        raise
    return RtSystem(app, model, runtime, safety, cleanup, async_mode)


def create_development_system(your_policy: Any = None, **kwargs: Any) -> RtSystem:
    """Development profile: no privileges, relaxed budgets, full monitoring (see config/profiles)."""
    return create_system(your_policy, profile='development', **kwargs)


def create_production_system(your_policy: Any = None, **kwargs: Any) -> RtSystem:
    """Production profile: full RT setup, system checks at start (loud), strict budgets, metrics."""
    return create_system(your_policy, profile='production', **kwargs)


def create_edge_system(your_policy: Any = None, **kwargs: Any) -> RtSystem:
    """Edge profile: CPU only, reduced precision within the tolerance check, small footprint."""
    return create_system(your_policy, profile='edge', **kwargs)


def create_cloud_system(your_policy: Any = None, **kwargs: Any) -> RtSystem:
    """Cloud profile: no privileges, throughput-oriented, metrics on (see config/profiles)."""
    return create_system(your_policy, profile='cloud', **kwargs)
