"""rt/placement.py: per-process placement parameters, the shipped plan, and the start-up check for
real-time threads of other processes (a real SCHED_FIFO subprocess, real /proc)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rt_safe_rl.config import load_config
from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.rt.config import GroupConfig
from rt_safe_rl.rt.placement import (
    apply_placement,
    default_placement,
    fifo_threads_on,
    parse_cpus,
    set_expected_peers,
    warn_competitors,
)


def test_cpu_lists_parse_and_bad_ones_say_why() -> None:
    assert parse_cpus('') == []
    assert parse_cpus('1') == [1]
    assert parse_cpus('0,2-3') == [0, 2, 3]
    assert parse_cpus('-1') == [-1]
    assert parse_cpus(3) == [3]
    assert parse_cpus([0, 1]) == [0, 1]
    assert parse_cpus('[0, 1]') == [0, 1]
    with pytest.raises(ConfigError, match=r'rt\.control\.cpus: expected a CPU list'):
        parse_cpus('one', 'rt.control.cpus')
    with pytest.raises(ConfigError, match='expected a CPU list'):
        parse_cpus(True)


def _process_config(params: dict[str, Any]) -> Any:
    """The rt config a process gets from its placement parameters (as placement_from_parameters)."""
    cfg = load_config().rt
    plan: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        _, thread, what = key.split('.') if key.count('.') == 2 else ('', '', '')
        if what in ('cpus', 'priority'):
            g = cfg.groups[thread]
            entry = plan.setdefault(thread, {'cpus': g.cpus, 'priority': g.priority})
            entry[what] = parse_cpus(value) if what == 'cpus' else value
    return apply_placement(cfg, plan)


@pytest.mark.parametrize('cpus', [[0], [0, 1], [0, 1, 2, 3]], ids=['1cpu', '2cpus', '4cpus'])
def test_the_shipped_plan_keeps_the_chain_together_and_on_top(cpus: list[int]) -> None:
    plan = default_placement(cpus)
    chain = parse_cpus(plan['policy_node']['rt.control.cpus'])
    assert chain == [cpus[-1]] == parse_cpus(plan['safety_node']['rt.control.cpus'])
    assert parse_cpus(plan['safety_node']['rt.safety_monitor.cpus']) == chain
    for sim in ('sim_robot', 'sim_human', 'sim_operator'):
        sim_cpus = parse_cpus(plan[sim]['rt.sim.cpus'])
        assert sim_cpus == (cpus[:-1] or cpus), 'simulators elsewhere when there is another CPU'
    prios = [
        plan['safety_node']['rt.safety_monitor.priority'],
        plan['safety_node']['rt.control.priority'],
        plan['policy_node']['rt.control.priority'],
        plan['sim_robot']['rt.sim.priority'],
        plan['sim_human']['rt.sim.priority'],
        plan['sim_operator']['rt.sim.priority'],
    ]
    assert prios == sorted(prios, reverse=True) and len(set(prios)) == len(prios)
    assert max(plan[s]['rt.sim.priority'] for s in ('sim_robot', 'sim_human', 'sim_operator')) < min(
        prios[:3]
    )
    if len(cpus) > 1 and set(cpus) <= set(os.sched_getaffinity(0)):
        for params in plan.values():  # every process's resulting rt config validates
            _process_config(params)


def test_bad_priorities_are_refused() -> None:
    with pytest.raises(ConfigError, match='need 70 < policy_priority'):
        default_placement([0, 1], policy_priority=90, safety_priority=81)


def test_a_placed_thread_takes_the_groups_sharing_it_along() -> None:
    cfg = load_config().rt
    last = max(os.sched_getaffinity(0))
    out = apply_placement(cfg, {'control': {'cpus': [last], 'priority': 82}})
    assert out.groups['control'].priority == out.groups['safety'].priority == 82
    with pytest.raises(ConfigError, match="'safety' is not an rt thread"):
        apply_placement(cfg, {'safety': {'cpus': [], 'priority': 82}})
    with pytest.raises(ConfigError, match=r'rt placement: rt\.control: priority must be in 1\.\.98'):
        apply_placement(cfg, {'control': {'cpus': [], 'priority': 99}})


def test_placement_parameters_on_a_real_node(rclpy_context: Any) -> None:
    rclpy = pytest.importorskip('rclpy', reason='rclpy not installed')
    from rclpy.parameter import Parameter

    from rt_safe_rl.rt.placement import placement_from_parameters

    last = max(os.sched_getaffinity(0))
    cfg = load_config().rt
    node = rclpy.create_node(
        'placement_t',
        context=rclpy_context,
        parameter_overrides=[
            Parameter('rt.control.cpus', value=str(last)),
            Parameter('rt.control.priority', value=83),
            Parameter('rt.expected_peers', value='safety_node, other'),
        ],
    )
    try:
        out = placement_from_parameters(node, cfg)
        assert out.groups['control'].real_cpus == (last,) and out.groups['safety'].priority == 83
        assert node.get_parameter('rt.sim.priority').value == cfg.groups['sim'].priority
        res = node.set_parameters([Parameter('rt.control.priority', value=50)])
        assert not res[0].successful  # read-only: placement is fixed for the process's life
    finally:
        node.destroy_node()
        set_expected_peers([])
    bad = rclpy.create_node(
        'placement_bad', context=rclpy_context, parameter_overrides=[Parameter('rt.sim.cpus', value='x')]
    )
    try:
        with pytest.raises(ConfigError, match=r'rt\.sim\.cpus: expected a CPU list'):
            placement_from_parameters(bad, cfg)
    finally:
        bad.destroy_node()


FIFO_CHILD = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(sys.argv[2])))
print('ready', flush=True)
time.sleep(60)
"""


@pytest.fixture
def fifo_child() -> Iterator[tuple[int, int, int]]:
    cpu, prio = min(os.sched_getaffinity(0)), 65  # above the DDS helper threads (60): checked
    proc = subprocess.Popen(
        [sys.executable, '-c', FIFO_CHILD, str(cpu), str(prio)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if 'ready' not in line:
        err = proc.stderr.read().decode() if proc.stderr else ''
        proc.wait(timeout=10)
        pytest.skip(f'SCHED_FIFO not granted here (needs CAP_SYS_NICE / rtprio): {err.strip()[-200:]}')
    yield proc.pid, cpu, prio
    proc.kill()
    proc.wait(timeout=10)


def test_fifo_threads_of_other_processes_are_found_and_warned_about(fifo_child: tuple[int, int, int]) -> None:
    pid, cpu, prio = fifo_child
    found = [t for t in fifo_threads_on([cpu], prio) if t.pid == pid]
    assert found and found[0].policy == 'FIFO' and found[0].priority == prio and cpu in found[0].cpus
    assert not [t for t in fifo_threads_on([cpu], prio + 1) if t.pid == pid]
    assert not [t for t in fifo_threads_on([cpu], prio, exclude_pids=[pid]) if t.pid == pid]
    others = set(os.sched_getaffinity(0)) - {cpu}
    if others:
        assert not [t for t in fifo_threads_on(others, 1) if t.pid == pid]
    cfg = load_config().rt
    ours = [('control', GroupConfig(policy='fifo', priority=prio, cpus=[cpu]))]
    got: list[str] = []
    time.sleep(0.05)
    lines = warn_competitors(cfg, ours, lambda key, msg: got.append(msg))
    assert lines == got and len(got) == 1
    assert f'[{pid}]' in got[0] and f'FIFO {prio}' in got[0] and 'rt.expected_peers' in got[0]
    name = found[0].process
    set_expected_peers([name])
    try:
        assert not [x for x in warn_competitors(cfg, ours, lambda k, m: None) if f'[{pid}]' in x]
    finally:
        set_expected_peers([])
    low = [('sim', GroupConfig(policy='fifo', priority=cfg.helper_threads.priority, cpus=[cpu]))]
    assert warn_competitors(cfg, low, lambda k, m: None) == []  # at or below the DDS helpers: not checked
