"""rt.channel: zero-copy latest-value channel semantics."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.rt.channel import Channel, drop_channel, get_channel


def test_write_read_seq_stamp() -> None:
    ch = Channel('t', 3)
    out = np.zeros(3)
    assert ch.try_read(out) == (0, 0)
    assert ch.try_write(np.array([1.0, 2.0, 3.0]), 111) == 1
    assert ch.try_read(out) == (1, 111)
    np.testing.assert_array_equal(out, [1, 2, 3])
    assert ch.try_write([4.0, 5.0, 6.0], 222) == 2
    assert ch.seq == 2 and ch.stamp_ns == 222
    np.testing.assert_array_equal(ch.view(), [4, 5, 6])


def test_view_is_read_only_and_zero_copy() -> None:
    ch = Channel('t', 2)
    row = ch.loan()
    row[:] = (7.0, 8.0)
    seq = ch.commit(5)
    v = ch.view()
    assert not v.flags.writeable
    with pytest.raises(ValueError):
        v[0] = 1.0
    assert np.shares_memory(v, row)  # consumer reads the producer's memory
    assert ch.view_valid(seq)
    for i in range(ch.slots):
        ch.try_write([float(i), 0.0], 10 + i)
    assert not ch.view_valid(seq)  # overwritten after `slots` more writes
    assert ch.stamp_of(seq) == -1


def test_wakers_called_on_every_write() -> None:
    ch = Channel('t', 1)
    calls: list[int] = []
    ch.add_waker(lambda: calls.append(ch.seq))
    ch.try_write([1.0], 1)
    ch.try_write([2.0], 2)
    assert calls == [1, 2]
    assert ch.consumer_count == 1


def test_registry_shares_and_checks_shape() -> None:
    name = '/test_rt_channel/reg'
    try:
        a = get_channel(name, 4)
        assert get_channel(name, 4) is a
        with pytest.raises(ConfigError, match='exists with n=4'):
            get_channel(name, 5)
        with pytest.raises(ConfigError, match='dtype'):
            get_channel(name, 4, np.float32)
    finally:
        drop_channel(name)


def test_bad_sizes() -> None:
    with pytest.raises(ConfigError):
        Channel('x', 0)
    with pytest.raises(ConfigError):
        Channel('x', 1, slots=3)


def test_concurrent_reader_never_sees_torn_record() -> None:
    """A reader in another thread only ever sees rows whose values all equal their seq."""
    ch = Channel('t', 64)
    stop = threading.Event()
    bad: list[tuple[int, float]] = []

    def reader() -> None:
        out = np.zeros(64)
        while not stop.is_set():
            seq, _ = ch.try_read(out)
            if seq > 0 and not (out == seq).all():
                bad.append((seq, float(out[0])))

    th = threading.Thread(target=reader)
    th.start()
    row = np.zeros(64)
    for i in range(1, 20001):
        row[:] = i
        ch.try_write(row, i)
    stop.set()
    th.join()
    assert bad == []
