"""README "One joint state, from the robot to the command" stays true: every ``module:function``
it names exists (imported and looked up here), so renaming or moving a step of the control path
fails this test until the walk-through is updated."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

pytest.importorskip('rclpy', reason='the walk names the nodes: rclpy needed (ROS 2 wheels or sourced ROS 2)')

README = Path(__file__).resolve().parent.parent / 'README.md'
HEADING = '### One joint state, from the robot to the command'
NAME = re.compile(r'`(rt_safe_rl(?:\.\w+)+):([A-Za-z_][\w.]*)`')


def _section() -> str:
    text = README.read_text()
    assert HEADING in text, f'README lost the section {HEADING!r}'
    body = text.split(HEADING, 1)[1]
    return re.split(r'^#{2,3} ', body, maxsplit=1, flags=re.M)[0]


def _names() -> list[tuple[str, str]]:
    return sorted(set(NAME.findall(_section())))


def test_the_walk_names_the_whole_path() -> None:
    names = {f'{m}:{q}' for m, q in _names()}
    for step in (
        'rt_safe_rl.rt.cycle:ControlCycle._cycle',
        'rt_safe_rl.core.policy.runtime:PolicyRuntime.control_step',
        'rt_safe_rl.core.safety.filter:SafetyFilter.step',
        'rt_safe_rl.core.safety.guard:OutputGuard.check',
    ):
        assert step in names, f'the walk-through no longer names {step}'


@pytest.mark.parametrize(('module', 'qualname'), _names(), ids=lambda v: v)
def test_every_named_function_exists(module: str, qualname: str) -> None:
    obj: object = importlib.import_module(module)
    for part in qualname.split('.'):
        assert hasattr(obj, part), f'README names {module}:{qualname}, but {part!r} is not there'
        obj = getattr(obj, part)
    assert callable(obj), f'{module}:{qualname} is not a function or class'
