"""Tools: training the default policy, recording bags."""
