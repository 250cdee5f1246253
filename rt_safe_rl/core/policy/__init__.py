"""Policy inference: config schema, loading, backends, observation/action pipeline, runtime.

Importing this package imports nothing heavy; torch/onnxruntime/numba are imported by the
modules that need them (loading, backends, runtime).
"""
