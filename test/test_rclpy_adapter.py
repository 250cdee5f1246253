"""rt.rclpy_adapter against the installed rclpy: every internal it uses exists and behaves as the RT
group threads rely on (real context, node, publisher, subscriptions, timers; no mocks).

When rclpy changes one of them, a test here fails naming it: update ``rt/rclpy_adapter.py``, then
add the new version to ``TESTED_RCLPY_VERSIONS``.
"""

from __future__ import annotations

from typing import Any

import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy not installed (ROS 2 wheels or a sourced ROS 2 needed)')

from rclpy.exceptions import InvalidHandle  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.guard_condition import GuardCondition  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from rclpy.subscription import Subscription  # noqa: E402
from rclpy.timer import Timer, TimerInfo  # noqa: E402
from std_msgs.msg import Int64  # noqa: E402

from rt_safe_rl.rt import rclpy_adapter as ad  # noqa: E402

_WAIT_NS = 5_000_000_000  # upper bound of one wait; a ready entity returns at once


def test_class_level_internals_exist() -> None:
    """Every attribute the adapter reads on rclpy's classes and C extension exists."""
    missing = ad.missing_internals()
    assert not missing, f'rclpy {ad.rclpy_version()} lacks internals the RT executor uses: {missing}'


def test_installed_rclpy_is_a_tested_version() -> None:
    """The pin: the installed rclpy is one the adapter was tested with (check_rclpy says so too)."""
    version = ad.rclpy_version()
    assert version in ad.TESTED_RCLPY_VERSIONS, (
        f'rclpy {version} is not in rt_safe_rl.rt.rclpy_adapter.TESTED_RCLPY_VERSIONS '
        f'{ad.TESTED_RCLPY_VERSIONS}: if the other tests in this file pass, add it there'
    )
    assert ad.check_rclpy() == ''


def _require(obj: Any, where: str, *names: str) -> None:
    missing = [n for n in names if not hasattr(obj, n)]
    assert not missing, f'rclpy {ad.rclpy_version()}: {where} has no {", ".join(missing)}'


def test_instance_internals_exist(rclpy_context: Any) -> None:
    """Per-entity internals: ``handle`` objects with their methods, ``Subscription._callback_type``."""
    node = Node('adapter_internals', context=rclpy_context)
    try:
        sub = node.create_subscription(Int64, 'adapter/internals', lambda m: None, QoSProfile(depth=1))
        tmr = node.create_timer(1.0, lambda: None)
        guard = GuardCondition(None, None, context=rclpy_context)
        _require(sub, 'Subscription', 'handle', '_callback_type', 'msg_type', 'raw', 'callback')
        _require(sub.handle, 'Subscription.handle', '__enter__', '__exit__', 'take_message')
        _require(tmr, 'Timer', 'handle', 'callback')
        _require(tmr.handle, 'Timer.handle', '__enter__', '__exit__', 'is_timer_ready', 'call_timer')
        _require(guard, 'GuardCondition', 'handle', 'trigger')
        _require(guard.handle, 'GuardCondition.handle', '__enter__', '__exit__')
        _require(rclpy_context, 'Context', 'handle')
        _require(rclpy_context.handle, 'Context.handle', '__enter__', '__exit__')
        assert sub._callback_type is Subscription.CallbackType.MessageOnly, (
            f'rclpy {ad.rclpy_version()}: Subscription._callback_type of a one-argument callback is '
            f'{sub._callback_type!r}, not CallbackType.MessageOnly'
        )
        with_info = node.create_subscription(
            Int64, 'adapter/internals', lambda m, info: None, QoSProfile(depth=1)
        )
        assert with_info._callback_type is Subscription.CallbackType.WithMessageInfo
        guard.destroy()
    finally:
        node.destroy_node()


class _Dispatch:
    """Collects what the wait set dispatches, the way the group thread does."""

    def __init__(self) -> None:
        self.got: list[Any] = []
        self.timer_runs = 0
        self.skip = False

    def on_sub(self, sub: Subscription) -> None:
        msg_info = ad.try_take(sub)
        if msg_info is not None:
            ad.call_subscription(sub, msg_info)

    def on_timer(self, tmr: Timer) -> None:
        if ad.try_fire_timer(tmr):
            self.timer_runs += 1
            tmr.callback()  # type: ignore[call-arg,misc]


def _wait(ws: ad.EntityWaitSet, ctx: Any, subs: list[Any], timers: list[Any], g: Any, d: _Dispatch) -> None:
    ws.wait(ctx, subs, timers, g, _WAIT_NS, lambda: d.skip, d.on_sub, d.on_timer)


def test_wait_set_dispatches_messages_with_and_without_info(rclpy_context: Any) -> None:
    """A published message reaches both callback kinds through the wait set: (msg) and (msg, info)."""
    node = Node('adapter_subs', context=rclpy_context)
    d = _Dispatch()
    try:
        qos = QoSProfile(depth=5)
        pub = node.create_publisher(Int64, 'adapter/subs', qos)
        plain = node.create_subscription(
            Int64, 'adapter/subs', lambda m: d.got.append(('plain', m.data)), qos
        )
        info = node.create_subscription(
            Int64, 'adapter/subs', lambda m, i: d.got.append(('info', m.data, 'source_timestamp' in i)), qos
        )
        guard = GuardCondition(None, None, context=rclpy_context)
        ws = ad.EntityWaitSet(rclpy_context, 2, 0)
        assert ws.sizes == (2, 0)
        for _ in range(200):  # discovery: publish until both subscriptions matched and got one
            pub.publish(Int64(data=7))
            _wait(ws, rclpy_context, [plain, info], [], guard, d)
            if {g[0] for g in d.got} == {'plain', 'info'}:
                break
        assert ('plain', 7) in d.got
        assert ('info', 7, True) in d.got
        guard.destroy()
    finally:
        node.destroy_node()


def test_wait_set_fires_a_ready_timer_and_skip_returns_without_dispatch(rclpy_context: Any) -> None:
    """A ready timer fires once per period through try_fire_timer; skip() True dispatches nothing."""
    node = Node('adapter_timer', context=rclpy_context)
    d = _Dispatch()
    calls: list[int] = []
    try:
        tmr = node.create_timer(0.001, lambda: calls.append(1))
        guard = GuardCondition(None, None, context=rclpy_context)
        ws = ad.EntityWaitSet(rclpy_context, 0, 1)
        for _ in range(1000):  # each wait returns when the timer is ready (1 ms)
            _wait(ws, rclpy_context, [], [tmr], guard, d)
            if calls:
                break
        assert d.timer_runs == len(calls) >= 1
        d.skip = True
        before = len(calls)
        _wait(ws, rclpy_context, [], [tmr], guard, d)
        assert len(calls) == before
        tmr.cancel()
        assert not ad.try_fire_timer(tmr)  # cancelled: not ready
        guard.destroy()
    finally:
        node.destroy_node()


def test_wait_set_raises_invalid_handle_for_a_destroyed_subscription(rclpy_context: Any) -> None:
    """The group thread rebuilds its entity set on InvalidHandle: a destroyed entity must raise it."""
    node = Node('adapter_destroyed', context=rclpy_context)
    d = _Dispatch()
    try:
        sub = node.create_subscription(Int64, 'adapter/destroyed', lambda m: None, QoSProfile(depth=1))
        guard = GuardCondition(None, None, context=rclpy_context)
        ws = ad.EntityWaitSet(rclpy_context, 1, 0)
        node.destroy_subscription(sub)
        with pytest.raises(InvalidHandle):
            _wait(ws, rclpy_context, [sub], [], guard, d)
        guard.destroy()
    finally:
        node.destroy_node()


def test_spin_once_until_honours_the_stop_condition(rclpy_context: Any) -> None:
    """spin_once_until runs one ready callback, and none when the condition already holds."""
    node = Node('adapter_spin', context=rclpy_context)
    ex = SingleThreadedExecutor(context=rclpy_context)
    calls: list[int] = []
    try:
        node.create_timer(0.001, lambda: calls.append(1))
        ex.add_node(node)
        ad.spin_once_until(ex, 10.0, lambda: True)
        assert calls == []
        ad.spin_once_until(ex, 10.0, lambda: False)
        assert calls == [1]
    finally:
        ex.shutdown()
        node.destroy_node()


def test_with_timer_info_gets_a_timer_info_despite_postponed_annotations(rclpy_context: Any) -> None:
    """This module has ``from __future__ import annotations``: without the adapter rclpy would call
    the callback with no argument (a TypeError); with it the callback gets a TimerInfo."""
    node = Node('adapter_timer_info', context=rclpy_context)
    ex = SingleThreadedExecutor(context=rclpy_context)
    got: list[Any] = []

    def cb(info: TimerInfo) -> None:
        got.append(info)

    try:
        node.create_timer(0.001, ad.with_timer_info(cb))
        ex.add_node(node)
        for _ in range(1000):
            ex.spin_once(timeout_sec=5.0)
            if got:
                break
        assert isinstance(got[0], TimerInfo)
        assert got[0].expected_call_time.nanoseconds > 0
    finally:
        ex.shutdown()
        node.destroy_node()
