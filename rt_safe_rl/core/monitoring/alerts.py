"""Alerts with hysteresis (raise after N, clear after M evaluations) and rate-limited log events.
Pure Python; non-RT."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from rt_safe_rl.core.monitoring.config import NS_PER_S, AlertConfig, Level


class AlertEvent(NamedTuple):
    """A log-worthy alert transition ('raised' or 'cleared'), already rate-limited."""

    name: str
    kind: str
    level: Level
    message: str
    suppressed: int  # raises not logged since the last logged one (rate limiting)


@dataclass
class Alert:
    """State of one named alert."""

    name: str
    component: str
    active: bool = False
    level: Level = Level.OK
    message: str = ''
    streak_true: int = 0
    streak_false: int = 0
    raised_total: int = 0
    last_log_ns: float = -math.inf
    suppressed: int = 0
    logged_raise: bool = False


class AlertManager:
    """Alerts with hysteresis and rate-limited log events (non-RT).

    Call :meth:`update` once per evaluation per alert with the level the condition asks for
    (OK = condition false). An alert becomes active after ``raise_after`` consecutive non-OK
    evaluations and clears after ``clear_after`` consecutive OK ones; in between it keeps its state,
    so a value hovering around a threshold does not flap. A 'raised' event is emitted at most once
    per ``min_log_interval_s`` per alert (the others are counted in ``suppressed``); a 'cleared'
    event only follows a logged raise.
    """

    def __init__(self, cfg: AlertConfig) -> None:
        self.cfg = cfg
        self.alerts: dict[str, Alert] = {}
        self._events: list[AlertEvent] = []

    def update(self, name: str, component: str, level: Level, message: str, now_ns: int) -> Alert:
        """Feed one evaluation of alert `name`; returns its state."""
        a = self.alerts.get(name)
        if a is None:
            a = self.alerts[name] = Alert(name, component)
        if level > Level.OK:
            a.streak_true += 1
            a.streak_false = 0
            if a.active:
                a.level, a.message = level, message
            elif a.streak_true >= self.cfg.raise_after:
                a.active, a.level, a.message = True, level, message
                a.raised_total += 1
                if now_ns - a.last_log_ns >= self.cfg.min_log_interval_s * NS_PER_S:
                    self._events.append(AlertEvent(name, 'raised', level, message, a.suppressed))
                    a.last_log_ns = now_ns
                    a.suppressed = 0
                    a.logged_raise = True
                else:
                    a.suppressed += 1
                    a.logged_raise = False
        else:
            a.streak_false += 1
            a.streak_true = 0
            if a.active and a.streak_false >= self.cfg.clear_after:
                if a.logged_raise:
                    self._events.append(AlertEvent(name, 'cleared', Level.OK, f'{name} cleared', 0))
                a.active, a.level, a.message = False, Level.OK, ''
        return a

    def drain_events(self) -> list[AlertEvent]:
        """Events since the last call (log them)."""
        ev, self._events = self._events, []
        return ev

    def active(self, component: str | None = None) -> list[Alert]:
        """Active alerts (of one component, or all)."""
        return [
            a for a in self.alerts.values() if a.active and (component is None or a.component == component)
        ]
