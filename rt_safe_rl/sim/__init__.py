"""Simulated robot arm, human and operator (pure numpy; nodes live in rt_safe_rl.nodes)."""
