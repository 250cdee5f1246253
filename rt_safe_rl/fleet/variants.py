"""What-if variants of a fleet replay: a policy file and/or a set of config overrides.

A variant is what ``rt-safe-rl bench replay`` takes as ``[--policy P] [--set KEY=VALUE]...``, so
one (bag, variant) of the fleet reproduces with ``bench replay BAG`` + :meth:`Variant.bench_args`.
The variants are the product ``policies x grid axis 1 x grid axis 2 ...``; ``--set`` values
apply to every variant (before the grid's, so a grid axis wins on the same key). The first
variant is the baseline the others are compared with.

Pure Python (no ROS, no Ray); not RT code.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rt_safe_rl.core.errors import ConfigError

# policy.backend 'auto' measures the backends at start-up and keeps the fastest one within
# tolerance: another machine (or a loaded one) may pick another backend, whose output differs
# in the last bits. The fleet pins the reference backend unless the user sets one.
PINNED_BACKEND = 'policy.backend=eager'
PINNED_BACKEND_ONNX = 'policy.backend=onnxruntime'


@dataclass(frozen=True)
class Variant:
    """One what-if configuration.

    Attributes:
        index: position in the variant list (0 = the baseline).
        name: short label (the policy file's stem and the grid values).
        policy: policy file ('' = the config's ``policy.path``).
        sets: ``KEY=VALUE`` overrides in the order they are merged.
    """

    index: int
    name: str
    policy: str = ''
    sets: tuple[str, ...] = field(default_factory=tuple)

    def bench_args(self) -> list[str]:
        """The ``bench replay`` options that replay this variant."""
        out = ['--policy', self.policy] if self.policy else []
        for s in self.sets:
            out += ['--set', s]
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-able description."""
        return {'index': self.index, 'name': self.name, 'policy': self.policy, 'sets': list(self.sets)}


def parse_grid(text: str) -> tuple[str, list[str]]:
    """``'key.path=v1,v2,...'`` -> (key, values). YAML values; a list value needs ``--set``.

    Raises:
        ConfigError: no ``=``, an empty key or no value.
    """
    key, sep, values = text.partition('=')
    key = key.strip()
    vals = [v.strip() for v in values.split(',') if v.strip()]
    if not sep or not key or not vals:
        raise ConfigError(f'--grid {text!r}: expected KEY.PATH=V1,V2,...')
    if len(set(vals)) != len(vals):
        raise ConfigError(f'--grid {text!r}: repeated value')
    return key, vals


def _check_set(text: str) -> str:
    key, sep, _ = text.partition('=')
    if not sep or not key.strip():
        raise ConfigError(f'--set {text!r}: expected KEY.PATH=VALUE')
    return text.strip()


def build_variants(
    policies: Sequence[str] = (), grids: Sequence[str] = (), sets: Sequence[str] = ()
) -> list[Variant]:
    """The product of the policies and the grid axes, each with ``sets`` applied.

    ``policy.backend`` is pinned to the reference backend (eager; onnxruntime for ``.onnx``)
    unless ``sets`` or a grid axis sets it (see :data:`PINNED_BACKEND`).

    Raises:
        ConfigError: a missing policy file, a malformed ``--grid`` / ``--set``, a key on two axes.
    """
    pols = [str(Path(p).expanduser().resolve()) for p in policies] or ['']
    for p in pols:
        if p and not Path(p).is_file():
            raise ConfigError(f'--policy: file not found: {p}')
    axes = [parse_grid(g) for g in grids]
    keys = [k for k, _ in axes]
    if len(set(keys)) != len(keys):
        raise ConfigError(f'--grid: a key appears on two axes: {keys}')
    base_sets = [_check_set(s) for s in sets]
    sets_backend = any(s.partition('=')[0].strip() == 'policy.backend' for s in base_sets)
    out: list[Variant] = []
    for policy, *values in itertools.product(pols, *[v for _, v in axes]):
        grid_sets = [f'{k}={v}' for k, v in zip(keys, values, strict=True)]
        pinned: list[str] = []
        if not sets_backend and 'policy.backend' not in keys:
            pinned = [PINNED_BACKEND_ONNX if policy.endswith('.onnx') else PINNED_BACKEND]
        parts = ([Path(policy).stem] if len(pols) > 1 or policy else []) + [
            f'{k.rsplit(".", 1)[-1]}={v}' for k, v in zip(keys, values, strict=True)
        ]
        out.append(
            Variant(
                index=len(out),
                name=','.join(parts) or 'config',
                policy=policy,
                sets=tuple(pinned + base_sets + grid_sets),
            )
        )
    return out
