"""rt_safe_rl: real-time learned-policy inference and a fail-closed safety filter for ROS 2."""

__version__ = '0.1.0'
