"""``rt_safe_rl.api``: the package as a Python library, no ROS needed.

    from rt_safe_rl.api import create_development_system

    system = create_development_system()          # shipped default policy + arm
    async with system:
        action, metadata = await system.execute_rt_inference(system.initial_state())

Factories: :func:`create_development_system`, :func:`create_production_system`,
:func:`create_edge_system`, :func:`create_cloud_system` (one per profile, ``config/profiles``).
Names are imported lazily so that ``rt_safe_rl.api.profiles`` (used by the config loader) stays
light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rt_safe_rl.api.factory import (
        create_cloud_system,
        create_development_system,
        create_edge_system,
        create_production_system,
        create_system,
    )
    from rt_safe_rl.api.metadata import InferenceMetadata
    from rt_safe_rl.api.options import RTOptimizationConfig, TimingRequirements
    from rt_safe_rl.api.state import RobotState
    from rt_safe_rl.api.system import RtSystem

_NAMES: dict[str, str] = {
    'RTOptimizationConfig': 'rt_safe_rl.api.options',
    'TimingRequirements': 'rt_safe_rl.api.options',
    'RobotState': 'rt_safe_rl.api.state',
    'InferenceMetadata': 'rt_safe_rl.api.metadata',
    'RtSystem': 'rt_safe_rl.api.system',
    'create_system': 'rt_safe_rl.api.factory',
    'create_development_system': 'rt_safe_rl.api.factory',
    'create_production_system': 'rt_safe_rl.api.factory',
    'create_edge_system': 'rt_safe_rl.api.factory',
    'create_cloud_system': 'rt_safe_rl.api.factory',
}
__all__ = [
    'InferenceMetadata',
    'RTOptimizationConfig',
    'RobotState',
    'RtSystem',
    'TimingRequirements',
    'create_cloud_system',
    'create_development_system',
    'create_edge_system',
    'create_production_system',
    'create_system',
]


def __getattr__(name: str) -> Any:
    """Import the public names on first use (PEP 562)."""
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(module), name)
