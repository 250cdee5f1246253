"""The policy node's parameters (moved unchanged out of :mod:`.policy_node`): ``policy.*``
declared with descriptors (read-only structural ones, the ``rate_hz`` range in Hz, units in the
descriptions), :meth:`PolicyNodeParams.node_config` (parameters -> PolicyNodeConfig), the live
``policy.interpolation`` switch, the robot joint order, and the release of the node's I/O.
Non-RT (construction / configure /
parameter callback).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, ParameterType, SetParametersResult

from rt_safe_rl import paths
from rt_safe_rl.config import AppConfig
from rt_safe_rl.core.policy.config import PolicyNodeConfig, load_pipeline_config
from rt_safe_rl.nodes._sim_base import SimNodeBase

_READ_ONLY = ('path', 'config', 'backend', 'rate_hz', 'sha256', 'cache')


class PolicyNodeParams(SimNodeBase):
    """Base of :class:`~rt_safe_rl.nodes.policy_node.PolicyInferenceNode`: declares the
    ``policy.*`` parameters at construction (see the module docstring)."""

    runtime: Any
    action_channel: Any
    _active: bool
    _subs: list[Any]
    _pub: Any
    _mirror: Any
    _srv: Any

    def __init__(self, node_name: str, *, config: AppConfig | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, config=config, **kwargs)
        pc: PolicyNodeConfig = self.app.policy
        desc = {
            'path': 'policy file (.pt TorchScript / weights_only checkpoint, .onnx); package:// allowed',
            'config': 'per-policy observation/action pipeline YAML (config/policies/*.yaml)',
            'backend': 'auto | eager | torchscript | numba | fp16 | int8 | onnxruntime | cuda',
            'rate_hz': 'policy steps per second inside the control loop (Hz)',
            'sha256': "expected SHA-256 of the policy file ('' = no check)",
            'cache': 'exact-match output cache (refused for recurrent policies)',
        }
        for name in _READ_ONLY:
            d = ParameterDescriptor(description=desc[name], read_only=True)
            if name == 'rate_hz':  # rclpy enforces the range, also on overrides at declaration
                d.floating_point_range = [FloatingPointRange(from_value=0.1, to_value=10000.0, step=0.0)]
            self.declare_parameter(f'policy.{name}', getattr(pc, name), d)
        self.declare_parameter(
            'policy.interpolation',
            pc.interpolation,
            ParameterDescriptor(
                type=ParameterType.PARAMETER_STRING,
                description="between policy steps: 'hold' the target or 'linear'ly interpolate (tunable)",
                additional_constraints='one of: hold, linear',
            ),
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------ parameters
    def node_config(self) -> PolicyNodeConfig:
        """PolicyNodeConfig from the current parameter values."""
        pc: PolicyNodeConfig = self.app.policy
        values = {n: self.get_parameter(f'policy.{n}').value for n in (*_READ_ONLY, 'interpolation')}
        return dataclasses.replace(pc, **values)

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        for p in params:
            if p.name == 'policy.interpolation':
                if p.value not in ('hold', 'linear'):
                    return SetParametersResult(
                        successful=False,
                        reason=f"policy.interpolation must be 'hold' or 'linear', got {p.value!r}",
                    )
                if self.runtime is not None:
                    self.runtime.interpolate = p.value == 'linear'  # one attribute store: atomic
        return SetParametersResult(successful=True)

    def _robot_joint_names(self, cfg: PolicyNodeConfig) -> list[str] | None:
        """Robot joint order: the robot model's; else the pipeline's joint names (same order)."""
        try:
            from rt_safe_rl.core.robot_model import RobotModel

            model = RobotModel.from_config(self.app.robot, self.app.base_dir)
            return list(model.joint_names)
        except Exception as err:
            pipe = load_pipeline_config(paths.resolve(cfg.config, self.app.base_dir))
            if pipe.joints.names:
                self.get_logger().warning(
                    f'robot model unavailable ({err}); robot joint order = policy joint names'
                )
                return list(pipe.joints.names)
            return None

    def _release(self) -> None:
        """Release I/O and the model. (cleanup and shutdown, see SimNodeBase)."""
        self._active = False
        if self._mirror is not None:
            self._mirror.task.enabled = False
            self._mirror = None
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        if self._pub is not None:
            self.destroy_publisher(self._pub)
            self._pub = None
        if self._srv is not None:
            self.destroy_service(self._srv)
            self._srv = None
        self.runtime = None
        self.action_channel = None
