"""SpscRing (rt/ring.py): records in order, drops counted when full, the two/three-value push."""

from __future__ import annotations

import numpy as np

from rt_safe_rl.rt.ring import SpscRing


def test_records_come_out_in_order_and_a_full_ring_counts_drops() -> None:
    ring = SpscRing(4, 2)  # one slot stays free: 3 records fit
    assert [ring.try_push(np.array([i, -i], dtype=np.float64)) for i in range(4)] == [True] * 3 + [False]
    assert ring.dropped == 1 and len(ring) == 3
    out = np.zeros((8, 2))
    assert ring.drain(out) == 3
    assert np.array_equal(out[:3], [[0, 0], [1, -1], [2, -2]])
    assert len(ring) == 0


def test_push_values_fills_two_or_three_columns_across_the_wrap() -> None:
    two, three = SpscRing(3, 2), SpscRing(3, 3)
    out2, out3 = np.zeros((3, 2)), np.zeros((3, 3))
    for k in range(5):  # wraps around the 3 slots
        assert two.try_push_values(k, 10.0 * k)
        assert three.try_push_values(k, 10.0 * k, 100.0 * k)
        assert two.drain(out2) == 1 and three.drain(out3) == 1
        assert np.array_equal(out2[0], [k, 10.0 * k]) and np.array_equal(out3[0], [k, 10.0 * k, 100.0 * k])
    assert two.try_push_values(1, 2) and two.try_push_values(3, 4) and not two.try_push_values(5, 6)
    assert two.dropped == 1
