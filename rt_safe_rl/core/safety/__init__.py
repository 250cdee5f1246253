"""Safety filter: limits, speed and separation monitoring, shared control, fail-closed stop.

Public API: :class:`SafetyFilter`, :class:`SafetyReport`, :class:`FaultCode`,
:class:`SafetyConfig` and :func:`filter_batch` (many states at once). No ROS imports.
"""

from rt_safe_rl.core.safety.config import SafetyConfig
from rt_safe_rl.core.safety.filter import ACTIVE_BITS, FaultCode, SafetyFilter, SafetyReport

__all__ = ['ACTIVE_BITS', 'FaultCode', 'SafetyConfig', 'SafetyFilter', 'SafetyReport']
