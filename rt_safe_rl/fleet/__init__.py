"""Fleet-scale what-if replay: every logged run under every variant, as Ray tasks.

``rt-safe-rl fleet replay BAG... [--policy P]... [--grid key=v1,v2]... [--set key=value]...``;
see :mod:`rt_safe_rl.fleet.cli`. Ray is optional (``pip install .[fleet]``); only
:mod:`rt_safe_rl.fleet.engine` imports it.
"""
