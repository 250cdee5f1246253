"""The one module that touches rclpy internals (its C extension and private attributes).

rclpy has no public API for what the RT group threads do: wait on a few subscriptions and timers in
a thread of their own, take a message and run its callback there, and spin the non-RT executor once
with a stop condition. This module wraps exactly those uses so that the rest of ``rt/`` and
``bench/`` only calls the functions below (``test/test_module_sizes.py`` enforces that no other
module references them):

* ``rclpy.impl.implementation_singleton.rclpy_implementation.WaitSet`` (:class:`EntityWaitSet`),
* ``entity.handle.__enter__/__exit__`` around the wait (the handle use counts rclpy's executor takes),
* ``sub.handle.take_message`` and ``Subscription._callback_type`` (:func:`try_take`,
  :func:`call_subscription`),
* ``timer.handle.is_timer_ready`` / ``call_timer`` (:func:`try_fire_timer`),
* ``SingleThreadedExecutor._spin_once_impl(timeout_sec, wait_condition)`` (:func:`spin_once_until`),
* rclpy's rule that a timer callback gets a ``TimerInfo`` when a parameter is annotated with the class
  (:func:`with_timer_info`; postponed annotations are strings, which rclpy does not match).

Pinned to the rclpy versions in :data:`TESTED_RCLPY_VERSIONS`: :func:`check_rclpy` (called by
``RtExecutor()``) raises :class:`~rt_safe_rl.core.errors.RtSafeRlError` naming every internal that is
missing, and returns a warning naming the version when the installed rclpy is not a tested one.
``test/test_rclpy_adapter.py`` checks every internal on real rclpy entities. When rclpy changes:
update this module, run that test, add the version to :data:`TESTED_RCLPY_VERSIONS`.

RT-safety: :meth:`EntityWaitSet.wait`, :func:`take_message`, :func:`call_subscription` and
:func:`try_fire_timer` are called in the RT group threads (no logging, no allocation beyond what
rclpy itself does per message); the rest is non-RT.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.subscription import Subscription
from rclpy.timer import Timer, TimerInfo

from rt_safe_rl.core.errors import RtSafeRlError

#: rclpy versions this module was tested with (``test/test_rclpy_adapter.py`` passed on each).
#: 9.1.2 is ROS 2 Kilted's rclpy (the ``ros-rclpy`` wheel pinned in requirements.txt).
TESTED_RCLPY_VERSIONS: tuple[str, ...] = ('9.1.2',)

# (where, attribute) pairs the module uses, checked by check_rclpy() / missing_internals()
_CLASS_INTERNALS: tuple[tuple[str, Any, str], ...] = (
    ('rclpy_implementation', _rclpy, 'WaitSet'),
    *(
        ('rclpy_implementation.WaitSet', getattr(_rclpy, 'WaitSet', None), name)
        for name in (
            'clear_entities',
            'add_subscription',
            'add_timer',
            'add_guard_condition',
            'wait',
            'is_ready',
        )
    ),
    *(
        (f'rclpy_implementation.{cls}', getattr(_rclpy, cls, None), name)
        for cls in ('Subscription', 'Timer', 'GuardCondition', 'Context')
        for name in ('__enter__', '__exit__')
    ),
    ('rclpy_implementation.Subscription', getattr(_rclpy, 'Subscription', None), 'take_message'),
    ('rclpy_implementation.Timer', getattr(_rclpy, 'Timer', None), 'is_timer_ready'),
    ('rclpy_implementation.Timer', getattr(_rclpy, 'Timer', None), 'call_timer'),
    ('rclpy.subscription.Subscription', Subscription, 'CallbackType'),
    (
        'rclpy.subscription.Subscription.CallbackType',
        getattr(Subscription, 'CallbackType', None),
        'MessageOnly',
    ),
    ('rclpy.executors.SingleThreadedExecutor', SingleThreadedExecutor, '_spin_once_impl'),
)

_VERSION: str | None = None  # rclpy_version(), looked up once by check_rclpy()
_MESSAGE_ONLY: Any = getattr(getattr(Subscription, 'CallbackType', None), 'MessageOnly', None)


def rclpy_version() -> str:
    """The installed rclpy's version ('unknown' when neither pip metadata nor its package.xml say)."""
    for dist in ('rclpy', 'ros-rclpy'):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    try:  # a sourced ROS 2 install (colcon/apt): rclpy has a package.xml, no pip metadata
        from ament_index_python.packages import get_package_share_directory

        text = (Path(get_package_share_directory('rclpy')) / 'package.xml').read_text()
        m = re.search(r'<version>\s*([^<\s]+)\s*</version>', text)
        if m:
            return m.group(1)
    except Exception:  # broad on purpose: no ament index, no package.xml: the version is unknown
        pass
    return 'unknown'


def missing_internals() -> list[str]:
    """Dotted names of the rclpy internals this module uses that the installed rclpy lacks.

    Class-level checks only (no rclpy context needed); ``test/test_rclpy_adapter.py`` also checks the
    per-instance ones (``Subscription._callback_type``, ``entity.handle``) on real entities. Not RT-safe.
    """
    out: list[str] = []
    for where, obj, name in _CLASS_INTERNALS:
        if obj is None or not hasattr(obj, name):
            out.append(f'{where}.{name}')
    return out


def check_rclpy() -> str:
    """Check that the installed rclpy has what this module uses (non-RT; called by ``RtExecutor()``).

    Returns:
        '' on a tested rclpy version, else a one-line warning naming the installed and tested versions.

    Raises:
        RtSafeRlError: an internal is missing (the message names each one and the rclpy version).
    """
    global _VERSION
    if _VERSION is None:
        _VERSION = rclpy_version()
    version = _VERSION
    tested = ', '.join(TESTED_RCLPY_VERSIONS)
    missing = missing_internals()
    if missing:
        raise RtSafeRlError(
            f'rclpy {version} lacks the internals the RT executor uses ({", ".join(missing)}); '
            f'rt_safe_rl.rt.rclpy_adapter is tested with rclpy {tested}: update it for this rclpy'
        )
    if version not in TESTED_RCLPY_VERSIONS:
        return (
            f'rclpy {version} is not a version the RT executor was tested with ({tested}): it uses rclpy '
            'internals (rt/rclpy_adapter.py); run test/test_rclpy_adapter.py on this install'
        )
    return ''


# ------------------------------------------------------------------------------------------------
# RT group threads: wait set, subscriptions, timers
# ------------------------------------------------------------------------------------------------
class EntityWaitSet:
    """An rcl wait set for one RT thread: `n_subs` subscriptions, `n_timers` timers, one guard condition.

    Built in the thread that waits on it (non-RT part: the allocation happens once per entity count).
    """

    __slots__ = ('_ws', 'sizes')

    def __init__(self, context: Context, n_subs: int, n_timers: int) -> None:
        ctx_handle: Any = context.handle
        with ctx_handle:
            self._ws = _rclpy.WaitSet(n_subs, 1, n_timers, 0, 0, 0, ctx_handle)
        self.sizes = (n_subs, n_timers)

    def wait(
        self,
        context: Context,
        subs: Sequence[Subscription[Any]],
        timers: Sequence[Timer],
        guard: GuardCondition,
        timeout_ns: int,
        skip: Callable[[], bool],
        on_sub: Callable[[Subscription[Any]], None],
        on_timer: Callable[[Timer], None],
    ) -> None:
        """Wait up to `timeout_ns` (<= 0: poll) for the entities, then ``on_sub(sub)`` for each ready
        subscription and ``on_timer(tmr)`` for each ready timer, in order, with all handles held.

        ``skip()`` is asked once the wait set is filled: True returns without waiting (a wake-up
        arrived meanwhile). RT-safe (the group thread's only blocking call).

        Raises:
            rclpy.exceptions.InvalidHandle: an entity was destroyed (the caller rebuilds its set).
        """
        ws = self._ws
        ctx: Any = context
        entered: list[Any] = []
        try:
            for s in subs:
                s.handle.__enter__()
                entered.append(s.handle)
            for tm in timers:
                tm.handle.__enter__()
                entered.append(tm.handle)
            guard.handle.__enter__()
            entered.append(guard.handle)
            ctx.handle.__enter__()
            entered.append(ctx.handle)
            ws.clear_entities()
            for s in subs:
                ws.add_subscription(s.handle)
            for tm in timers:
                ws.add_timer(tm.handle)
            ws.add_guard_condition(guard.handle)
            if skip():
                return
            ws.wait(timeout_ns if timeout_ns > 0 else 0)
            for i in range(len(subs)):
                if ws.is_ready('subscription', i):
                    on_sub(subs[i])
            for i in range(len(timers)):
                if ws.is_ready('timer', i):
                    on_timer(timers[i])
        finally:
            for h in reversed(entered):
                h.__exit__(None, None, None)


def try_take(sub: Subscription[Any]) -> Any:
    """The subscription's next message as rclpy's ``(msg, info)`` pair, or None when there is none
    (never blocks).

    Call only inside :meth:`EntityWaitSet.wait`'s ``on_sub`` (the handle is held). RT-safe.
    """
    return sub.handle.take_message(sub.msg_type, sub.raw)


def take_now(sub: Subscription[Any]) -> Any:
    """The subscription's next message as :func:`try_take` returns it, taken outside a wait (the
    handle is held for the call): a polled subscription. Never blocks; RT-safe.

    Raises:
        rclpy.exceptions.InvalidHandle: the subscription was destroyed.
    """
    h = sub.handle
    with h:
        return h.take_message(sub.msg_type, sub.raw)


def call_subscription(sub: Subscription[Any], msg_info: Any) -> None:
    """Run the subscription's callback with what :func:`try_take` returned, as rclpy's executor
    does (``callback(msg)`` or ``callback(msg, info)`` by the callback's signature). RT-safe;
    exceptions of the callback propagate."""
    callback: Callable[..., None] = sub.callback  # one of two signatures, chosen by _callback_type
    if sub._callback_type is _MESSAGE_ONLY:
        callback(msg_info[0])
    else:
        callback(*msg_info)


def try_fire_timer(tmr: Timer) -> bool:
    """Mark a ready timer as called (rcl updates its next call time); True when the caller should
    run ``tmr.callback()``. False when it is not ready, cancelled or destroyed. Never blocks; RT-safe.

    Call only inside :meth:`EntityWaitSet.wait`'s ``on_timer`` (the handle is held).
    """
    try:
        if not tmr.handle.is_timer_ready():
            return False
        tmr.handle.call_timer()
    except Exception:  # broad on purpose: cancelled/destroyed timers raise various rclpy errors
        return False
    return True


# ------------------------------------------------------------------------------------------------
# non-RT: one spin of an executor, timer callbacks that get TimerInfo
# ------------------------------------------------------------------------------------------------
def spin_once_until(
    executor: SingleThreadedExecutor, timeout_s: float | None, should_return: Callable[[], bool]
) -> None:
    """One ``spin_once`` of `executor` that also returns as soon as ``should_return()`` is True when
    the executor wakes (rclpy's ``wait_condition``). Blocks up to `timeout_s` (None = forever). Not RT.

    Raises:
        rclpy.executors.ExternalShutdownException / ShutdownException: the context shut down.
    """
    executor._spin_once_impl(timeout_s, should_return)


def with_timer_info(fn: Callable[[TimerInfo], None], param: str = 'info') -> Callable[[TimerInfo], None]:
    """`fn` such that an rclpy timer passes it a :class:`rclpy.timer.TimerInfo` as `param`.

    rclpy matches the parameter's annotation with the class itself; a module with
    ``from __future__ import annotations`` has the string 'TimerInfo' there instead. Not RT.
    """
    fn.__annotations__[param] = TimerInfo
    return fn


__all__ = [
    'TESTED_RCLPY_VERSIONS',
    'EntityWaitSet',
    'call_subscription',
    'check_rclpy',
    'missing_internals',
    'rclpy_version',
    'spin_once_until',
    'take_now',
    'try_fire_timer',
    'try_take',
    'with_timer_info',
]
