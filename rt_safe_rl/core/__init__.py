"""Pure computation (numpy/numba/torch): policy runtimes, constraint math, metrics.

Never imports rclpy or messages.
"""
