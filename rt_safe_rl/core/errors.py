"""Exception types shared across the package.

Expected, user-facing failures raise a subclass of :class:`RtSafeRlError`; entry points catch it,
print one clear line (no traceback) and exit with a non-zero code.
"""

from __future__ import annotations


class RtSafeRlError(Exception):
    """Base class for expected errors that reach a user as one clear message."""


class ConfigError(RtSafeRlError, ValueError):
    """Invalid configuration: unknown key, wrong type, out-of-range value. Names key and file."""


class PolicyLoadError(RtSafeRlError):
    """A policy file is missing, corrupt, of an unsupported kind or does not match its config."""


class BagError(RtSafeRlError):
    """A rosbag2 recording is missing, corrupt, split without metadata or has no usable topic."""
