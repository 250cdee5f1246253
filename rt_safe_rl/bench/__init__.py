"""Benchmarks: CLI commands that print JSON."""
