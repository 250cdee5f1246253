"""Shared pytest fixtures.

Each pytest process gets its own ROS domain and localhost-only discovery, so parallel runs (or a
demo running beside the tests) never see each other's topics.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(101, 199)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
# many rclpy Contexts (DDS participants) live in this one process: Fast DDS 3.2's intraprocess path
# can livelock between them (two async threads at 100% CPU for the rest of the run); the profile
# turns it off -- see its comment. Child processes (ros2 launch, executables) inherit it.
os.environ.setdefault(
    'FASTDDS_DEFAULT_PROFILES_FILE',
    str(Path(__file__).resolve().parent.parent / 'config' / 'fastdds_no_intraprocess.xml'),
)
os.environ['RT_SAFE_RL_CACHE_DIR'] = tempfile.mkdtemp(prefix='rt_safe_rl_cache_')  # policy auto-choice cache

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / 'shared' / 'data'


@pytest.fixture(scope='session')
def shared_data() -> Path:
    """../shared/data, or skip when this checkout has no shared data beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            reason=f'shared third-party data not present at {SHARED_DATA} (fresh clone without ../shared)'
        )
    return SHARED_DATA


@pytest.fixture
def rclpy_context() -> Iterator[object]:
    """An initialised rclpy context, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        if ctx.ok():
            rclpy.shutdown(context=ctx)
