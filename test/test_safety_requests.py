"""FilterRequests (core/safety/requests.py): the request slots between other threads and the step."""

from __future__ import annotations

from rt_safe_rl.core.safety.report import FaultCode
from rt_safe_rl.core.safety.requests import FilterRequests


def test_the_first_event_is_kept_and_the_latest_condition() -> None:
    r = FilterRequests()
    assert not r.any()
    r.trigger(int(FaultCode.CONTROLLED_STOP))
    r.trigger(int(FaultCode.DEADLINE_MISS))  # a later event never replaces the cause
    r.trigger(int(FaultCode.STALE_STATE))
    r.trigger(int(FaultCode.ACTION_TIMEOUT))  # conditions: the latest one
    assert r.any()
    cfg, reset, resync, event, cond = r.take(latched=False)
    assert (cfg, reset, resync) == (None, False, False)
    assert event == FaultCode.CONTROLLED_STOP and cond == FaultCode.ACTION_TIMEOUT
    assert not r.any() and r.take(latched=False) == (None, False, False, 0, 0)


def test_an_event_taken_into_a_latch_refuses_a_reset_judged_before_it() -> None:
    r = FilterRequests()
    gen = r.latch_gen
    r.trigger(int(FaultCode.DEADLINE_MISS))
    assert not r.try_request_reset(gen)  # pending event: nothing asked
    assert not r.reset
    r.take(latched=True)  # the step takes it into the latch in force, in the same critical section
    assert r.latch_gen == gen + 1
    assert not r.try_request_reset(gen) and not r.reset
    assert r.try_request_reset(r.latch_gen) and r.reset  # judged anew: accepted


def test_an_event_taken_while_not_latched_leaves_the_count_to_the_latch() -> None:
    r = FilterRequests()
    r.trigger(int(FaultCode.MONITOR))
    r.take(latched=False)  # the step latches it (SafetyFilter._latch counts that one)
    assert r.latch_gen == 0


def test_config_and_resync_requests_are_taken_once() -> None:
    r = FilterRequests()
    prepared = ('lim', 'sp', 'ws', 'cfg')
    r.request_config(prepared)
    r.request_resync()
    assert r.take(latched=False) == (prepared, False, True, 0, 0)
    assert not r.any()
