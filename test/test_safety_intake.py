"""Input integrity (core/safety/intake.py): which joint states are dropped, and the drop budget."""

from __future__ import annotations

from rt_safe_rl.core.safety.config import InputConfig
from rt_safe_rl.core.safety.intake import (
    DUPLICATE,
    KEEP,
    OUT_OF_ORDER,
    SEQ_RESTART_GAP,
    STAMP_RESTART_GAP_NS,
    DropBudget,
    order_drop,
)


def test_order_drop_by_seq_then_by_stamp() -> None:
    assert order_drop(5, -1, 0, 0) == KEEP  # the first state
    assert order_drop(6, 5, 0, 0) == KEEP
    assert order_drop(5, 5, 0, 0) == DUPLICATE
    assert order_drop(4, 5, 0, 0) == OUT_OF_ORDER
    assert order_drop(5 - SEQ_RESTART_GAP, 5, 0, 0) == KEEP  # the robot restarted its numbering
    t = 10_000_000_000
    assert order_drop(6, 5, t, t) == DUPLICATE  # a newer seq with the same header stamp
    assert order_drop(6, 5, t - 1, t) == OUT_OF_ORDER
    assert order_drop(6, 5, t - STAMP_RESTART_GAP_NS, t) == KEEP  # the robot's clock restarted
    assert order_drop(6, 5, t + 1, t) == KEEP
    assert order_drop(6, 5, t, 0) == KEEP  # no stamped state before


def test_drop_budget_is_a_leaky_bucket() -> None:
    inp = InputConfig(max_dropped_states=3, drop_window_s=1.0)
    b = DropBudget()
    t = 1_000_000_000
    assert [b.count(t + i, False, inp) for i in range(4)] == [False, False, False, True]
    b.clear()
    # one drop every 0.4 s leaks faster (3 per s) than it fills: never over the budget
    assert not any(b.count(t + k * 400_000_000, k % 2 == 1, inp) for k in range(20))
    assert (b.dropped, b.duplicates) == (20, 10)
    assert '20 dropped, 10 duplicates' in b.detail(inp)
