"""Real-time plumbing: scheduling, memory locking, buffers, in-process channels, the executor."""
