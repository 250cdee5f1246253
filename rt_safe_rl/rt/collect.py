"""Which RT thread runs what: the tasks and RT-group entities of an executor's nodes, per thread.

:func:`collect_work` is the executor's refresh step (non-RT): it reads every node's ``rt_tasks()``,
its subscriptions/timers in RT callback groups (:func:`~rt_safe_rl.rt.tasks.named_group`) and the
tasks added without a node, and sorts them by the thread of their group (``rt.groups``). Not RT-safe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from rclpy.node import Node

from rt_safe_rl.core.errors import ConfigError
from rt_safe_rl.rt.config import NON_RT, RtConfig
from rt_safe_rl.rt.tasks import PeriodicTask, RtCallbackGroup, TriggeredTask

#: per thread: (periodic tasks, triggered tasks, subscriptions, timers)
Work = tuple[list[Any], list[Any], list[Any], list[Any]]


Slot = Callable[[str, str], Work | None]
"""``slot(group, what)``: the Work of `group`'s thread (None: not run; warned about or raised)."""


def _collect_node(node: Node, slot: Slot, tasks: list[Any], warn_once: Callable[[str, str], None]) -> None:
    """Add `node`'s ``rt_tasks()`` to `tasks` and its RT-group subscriptions and timers to their
    thread's Work; warn about services and clients in an RT group (they run in non_rt). Not RT-safe."""
    get = getattr(node, 'rt_tasks', None)
    if callable(get):
        try:
            tasks.extend(get() or [])
        except Exception as err:
            warn_once(f'rt_tasks:{node.get_name()}', f'{node.get_name()}.rt_tasks() failed: {err!r}')
    for sub in node.subscriptions:
        cg = sub.callback_group
        if isinstance(cg, RtCallbackGroup) and cg.rt_group != NON_RT:
            s = slot(cg.rt_group, f'subscription {sub.topic_name}')
            if s is not None:
                s[2].append(sub)
    for tmr in node.timers:
        cg = tmr.callback_group  # type: ignore[assignment]
        if isinstance(cg, RtCallbackGroup) and cg.rt_group != NON_RT:
            s = slot(cg.rt_group, f'timer of {node.get_name()}')
            if s is not None:
                s[3].append(tmr)
    for kind, ents in (('service', node.services), ('client', node.clients)):
        for ent in ents:
            cg = ent.callback_group
            if isinstance(cg, RtCallbackGroup) and cg.rt_group != NON_RT:
                warn_once(
                    f'{kind}:{id(ent)}',
                    f'{node.get_name()}: a {kind} in rt group '
                    f'{cg.rt_group!r} runs in the non_rt thread (services are never RT)',
                )


def _inline_channels(config: RtConfig, tasks: list[Any]) -> set[tuple[int, str]]:
    """(id(channel), thread) of the channels that a periodic task consumes inline
    (rt.cycle.ControlCycle): a triggered consumer of such a channel in the same thread would run
    the same step a second time. Not RT-safe."""
    inline: set[tuple[int, str]] = set()
    for t in tasks:
        for ch in getattr(t, 'inline_channels', ()):
            with contextlib.suppress(ConfigError):
                inline.add((id(ch), config.thread_of(t.group)))
    return inline


def collect_work(
    config: RtConfig,
    nodes: Iterable[Node],
    extra_tasks: Iterable[PeriodicTask | TriggeredTask],
    strict: bool,
    warn_once: Callable[[str, str], None],
) -> dict[str, Work]:
    """The work of each RT thread (threads with none are absent; the non_rt group runs no tasks).

    A triggered task whose channel a periodic task of the same thread consumes inline
    (``inline_channels``, :class:`~rt_safe_rl.rt.cycle.ControlCycle`) is left out: it would run the
    same step twice. Unknown groups warn once through `warn_once(key, message)`, or raise with
    `strict`. Not RT-safe.

    Raises:
        ConfigError: `strict` and a task or entity names an rt group that is not configured.
    """
    work: dict[str, Work] = {}

    def slot(group: str, what: str) -> Work | None:
        try:
            thread = config.thread_of(group)
        except ConfigError as err:
            if strict:
                raise ConfigError(f'{what}: {err}') from None
            warn_once(f'unknown:{what}', f'{what} is not run: {err}')
            return None
        if thread == NON_RT:
            return None
        return work.setdefault(thread, ([], [], [], []))

    tasks: list[Any] = list(extra_tasks)
    for node in list(nodes):
        _collect_node(node, slot, tasks, warn_once)
    inline = _inline_channels(config, tasks)
    for t in tasks:
        if isinstance(t, TriggeredTask) and inline:
            with contextlib.suppress(ConfigError):
                if (id(t.channel), config.thread_of(t.group)) in inline:
                    continue
        if not isinstance(t, (PeriodicTask, TriggeredTask)):
            warn_once(f'badtask:{id(t)}', f'rt_tasks() returned {t!r}, not a PeriodicTask/TriggeredTask')
            continue
        s = slot(t.group, f'task {t.name}')
        if s is None:
            if config.thread_of(t.group) == NON_RT:
                warn_once(
                    f'nonrt:{t.name}',
                    f'task {t.name} is in group {NON_RT}, which runs no RT tasks; put it in an RT group',
                )
            continue
        s[0 if isinstance(t, PeriodicTask) else 1].append(t)
    return work
