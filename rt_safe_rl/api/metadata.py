"""InferenceMetadata: what one :meth:`RtSystem.execute_rt_inference` call did.

Built once per call from one tuple (the per-call path of the API); everything else (the fields,
stage times, the safety report as a dict, fault names) is computed when read, not per call.
"""

from __future__ import annotations

from typing import Any


class InferenceMetadata:
    """What one call did: stage times (us), deadline status, safety report, backend.

    Attributes: ``seq`` (call number), ``stamp_ns``, ``stage_us`` ({'parse', 'queue', 'policy',
    'safety'}), ``total_us`` (call entry -> result ready), ``deadline_us`` / ``deadline_met``
    (``monitor.thresholds.e2e_budget_s``), ``policy_ran`` (a policy step ran this cycle: the policy
    runs at ``policy.rate_hz``), ``policy_valid``, ``backend``, ``thread`` ('rt_worker'|'caller'|
    'event_loop'), and from the safety report: ``fault``, ``fault_code``, ``active_constraints``,
    ``intervention_rad``, ``safety_intervention_rad``, ``human_distance_m``, ``stopping``,
    ``latched``, ``command_valid``; ``safety`` (the whole report as a dict). ``m['fault']`` works
    too; :meth:`as_dict` is JSON-ready.
    """

    __slots__ = ('_d',)

    def __init__(self, d: tuple[Any, ...]) -> None:
        """`d` = (SafetyReport copy owned by this object, entry, submit, start, policy done, safety
        done [monotonic ns], seq, stamp_ns, policy_ran, policy_valid, backend, thread, deadline_us):
        one tuple built by the call, nothing derived until read."""
        self._d = d

    _report = property(lambda self: self._d[0])
    _t = property(lambda self: self._d[1:6], doc='(entry, submit, start, policy done, safety done) ns.')
    seq = property(lambda self: self._d[6], doc='Call number (1, 2, ...).')
    stamp_ns = property(lambda self: self._d[7], doc="The state's stamp [ns] (its stamp_ns, else the call).")
    policy_ran = property(lambda self: self._d[8], doc='A policy step ran this cycle.')
    policy_valid = property(lambda self: self._d[9], doc="The policy's action was valid.")
    backend = property(lambda self: self._d[10], doc='Policy backend.')
    thread = property(lambda self: self._d[11], doc="'caller' | 'event_loop' | 'rt_worker'.")
    deadline_us = property(lambda self: self._d[12], doc='End-to-end budget [us].')

    @property
    def total_us(self) -> float:
        """Call entry -> result ready [us]."""
        d = self._d
        return float((d[5] - d[1]) / 1e3)

    @property
    def deadline_met(self) -> bool:
        """total_us <= deadline_us."""
        return self.total_us <= self._d[12]

    fault = property(lambda self: self._report.fault, doc='Safety fault name (OK when none).')
    fault_code = property(lambda self: self._report.fault_code, doc='FaultCode value (0 = OK).')
    active_constraints = property(lambda self: self._report.active_names(), doc='Binding constraints.')
    intervention_rad = property(lambda self: self._report.intervention_rad, doc='||safe - proposed|| rad.')
    safety_intervention_rad = property(lambda self: self._report.safety_intervention_rad)
    human_distance_m = property(lambda self: self._report.human_distance_m, doc='inf without human data.')
    stopping = property(lambda self: self._report.stopping, doc='Braking (stop, SSM stop or fault).')
    latched = property(lambda self: self._report.latched, doc='A latched stop needs reset().')
    command_valid = property(lambda self: self._report.command_valid, doc='False before any valid state.')

    @property
    def stage_us(self) -> dict[str, float]:
        """Stage times (us): parse (state checks), queue (hand-off to the RT thread), policy, safety."""
        e, sub, t0, t1, t2 = self._t
        return {
            'parse': (sub - e) / 1e3,
            'queue': (t0 - sub) / 1e3,
            'policy': (t1 - t0) / 1e3,
            'safety': (t2 - t1) / 1e3,
        }

    @property
    def safety(self) -> dict[str, Any]:
        """The safety report as a dict (fault, active constraints, intervention, margins, ...)."""
        d = dict(self._report.as_dict())
        d['active_constraints'] = self._report.active_names()
        return d

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return {
            'seq': self.seq,
            'stamp_ns': self.stamp_ns,
            'stage_us': dict(self.stage_us),
            'total_us': self.total_us,
            'deadline_us': self.deadline_us,
            'deadline_met': self.deadline_met,
            'policy_ran': self.policy_ran,
            'policy_valid': self.policy_valid,
            'backend': self.backend,
            'thread': self.thread,
            'fault': self.fault,
            'safety': self.safety,
        }

    def __getitem__(self, key: str) -> Any:
        if key not in _META_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __repr__(self) -> str:
        return (
            f'InferenceMetadata(seq={self.seq}, fault={self.fault}, total_us={self.total_us:.1f}, '
            f'deadline_met={self.deadline_met}, backend={self.backend!r})'
        )


_META_KEYS = frozenset(
    [
        'seq',
        'stamp_ns',
        'policy_ran',
        'policy_valid',
        'backend',
        'thread',
        'deadline_us',
        'total_us',
        'deadline_met',
        'stage_us',
        'fault',
        'fault_code',
        'active_constraints',
        'intervention_rad',
        'safety_intervention_rad',
        'human_distance_m',
        'stopping',
        'latched',
        'command_valid',
        'safety',
    ]
)
