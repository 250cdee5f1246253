"""Thin rclpy (lifecycle) nodes: parameters -> core config, messages <-> numpy."""
