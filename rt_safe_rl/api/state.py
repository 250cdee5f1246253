"""The robot state passed to :meth:`RtSystem.execute_rt_inference`: a dataclass or a plain dict.

Fields: ``q`` (rad) and ``dq`` (rad/s), shape (n_joints,), robot joint order; ``inputs``: the
policy's named inputs (e.g. ``command``: the joint-space goal of the arm policy) -- in a dict they
may also be top-level keys; optional ``human_points`` ((3,) or (M, 3), m, robot base frame) with
``human_stamp_ns``; optional ``operator_command`` (n,) for shared control; optional ``stamp_ns``
(monotonic ns when the state was measured; None = now).

Shapes are checked at the API boundary (:class:`StateError`, one line). Values are not: a NaN
or an out-of-limit state is the safety filter's business (controlled stop, fault in metadata).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core.errors import RtSafeRlError

F64 = npt.NDArray[np.float64]
FIELDS = ('q', 'dq', 'inputs', 'human_points', 'human_stamp_ns', 'operator_command', 'stamp_ns')


class StateError(RtSafeRlError, ValueError):
    """A state that does not fit the configured robot / policy (wrong shape, unknown key)."""


@dataclass
class RobotState:
    """Measured robot state plus the policy's inputs (see module docstring)."""

    q: npt.ArrayLike
    dq: npt.ArrayLike
    inputs: dict[str, npt.ArrayLike] = field(default_factory=dict)
    human_points: npt.ArrayLike | None = None
    human_stamp_ns: int | None = None
    operator_command: npt.ArrayLike | None = None
    stamp_ns: int | None = None


def as_vector(value: Any, n: int, what: str) -> F64:
    """`value` as a float64 (n,) array (no copy when it already is one).

    Raises:
        StateError: not numeric or not of shape (n,).
    """
    if type(value) is np.ndarray and value.dtype == np.float64 and value.shape == (n,):
        return value
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise StateError(f'state.{what}: expected {n} numbers, got {type(value).__name__}') from None
    if arr.shape != (n,):
        raise StateError(f'state.{what}: expected shape ({n},), got {arr.shape}')
    return arr


def human_array(value: Any, max_points: int) -> F64:
    """Human points as a float64 (3,) or (M, 3) array. Raises StateError on another shape."""
    if type(value) is np.ndarray and value.dtype == np.float64:
        sh = value.shape
        if sh == (3,) or (len(sh) == 2 and sh[1] == 3 and 1 <= sh[0] <= max_points):
            return value
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise StateError(
            f'state.human_points: expected (3,) or (M, 3) numbers, got {type(value).__name__}'
        ) from None
    if arr.shape == (3,) or (arr.ndim == 2 and arr.shape[1] == 3 and 1 <= arr.shape[0] <= max_points):
        return arr
    raise StateError(f'state.human_points: expected shape (3,) or (M<={max_points}, 3), got {arr.shape}')


def split_mapping(state: Mapping[str, Any], input_names: tuple[str, ...]) -> RobotState:
    """A plain dict as a :class:`RobotState` (top-level keys naming policy inputs go to ``inputs``).

    Raises:
        StateError: a missing q/dq or an unknown key (the message lists the allowed ones).
    """
    inputs = dict(state.get('inputs') or {})
    for key in state:
        if key in FIELDS:
            continue
        if key in input_names:
            inputs[key] = state[key]
        else:
            raise StateError(f'state: unknown key {key!r}; allowed: {[*FIELDS, *input_names]}')
    if 'q' not in state or 'dq' not in state:
        raise StateError('state: q (rad) and dq (rad/s) are required')
    return RobotState(
        q=state['q'],
        dq=state['dq'],
        inputs=inputs,
        human_points=state.get('human_points'),
        human_stamp_ns=state.get('human_stamp_ns'),
        operator_command=state.get('operator_command'),
        stamp_ns=state.get('stamp_ns'),
    )
