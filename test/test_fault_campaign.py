"""The fault campaign of ``rt-safe-rl bench faults`` as tests: the real nodes (``bringup
--no-monitor`` in a child process) against the injector over DDS, every case of
:data:`rt_safe_rl.bench.fault_cases.CASES` with a shorter fault window. One campaign run per
module (one system under test, started once); each case is then its own test asserting the
behaviour the campaign defines for it (handled: the expected stop / drop / refusal / rest /
continuation) and zero command-limit violations, audited on arrival against the previous command
over the real elapsed time. Behaviour only: no rate or latency is asserted.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (ROS 2 wheels or a sourced ROS 2 needed)')

from rt_safe_rl.bench.fault_cases import CASE_NAMES

pytestmark = [pytest.mark.ros, pytest.mark.slow]

WINDOW_S = 1.0  # seconds each fault is applied (the bench's default is 1.5)


@pytest.fixture(scope='module')
def campaign() -> dict[str, Any]:
    from rt_safe_rl.bench.faults import run_campaign
    from rt_safe_rl.config import load_config

    report = run_campaign(load_config(None), window_s=WINDOW_S)
    assert report.get('complete', True), report
    return report


@pytest.mark.parametrize('name', CASE_NAMES)
def test_fault_case_is_handled_without_a_limit_violation(campaign: dict[str, Any], name: str) -> None:
    cases = {c['name']: c for c in campaign['cases']}
    assert name in cases, f'{name} did not run: {sorted(cases)}'
    case = cases[name]
    assert case['violations'] == 0, case
    assert case['handled'], case


@pytest.mark.xfail(
    strict=False,
    reason=(
        'open finding (issue 11 note, 3 Dec): in 3 of 15 campaign runs a ~/reset of a latched stop '
        'during the recovery between cases was followed by a command the injector audit flagged '
        '(acceleration 140x a_max by sequence number, joint 2) while the output guard, which checks '
        'the stream in send order, did not latch; not yet known whether the stream or the audit '
        'labelling is wrong'
    ),
)
def test_recoveries_between_cases_stay_within_the_limits(campaign: dict[str, Any]) -> None:
    """Normal inputs and ~/reset between the cases: no violation there either, and the total
    the report gives is the sum over its entries."""
    assert campaign['total_violations'] == sum(c['violations'] for c in campaign['cases'])
    assert campaign['total_violations'] == 0, [c for c in campaign['cases'] if c['violations']]
