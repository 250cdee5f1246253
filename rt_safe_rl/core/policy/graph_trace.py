"""Aten-level tracing of a torch policy for the graph compiler (:mod:`.graph`).

:func:`trace` runs the model once under a ``TorchDispatchMode`` that records every aten operator
(:class:`OpRec`) with where each tensor lives (:class:`TRec`: storage, offset, shape, strides, a copy of
its value). :func:`input_usage` / :func:`input_slices` read the same record to tell which input
elements a model really uses (``policy inspect``, probing).

Not RT-safe (configure time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rt_safe_rl.core.policy.extract import Unsupported


@dataclass
class TRec:
    """A tensor seen in the trace: where it lives and (a copy of) its value at that point."""

    ptr: int
    snumel: int
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: Any
    value: Any

    @property
    def numel(self) -> int:
        """Elements in the view."""
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass
class OpRec:
    """One executed operator."""

    name: str
    overload: str
    func: Any
    args: list[Any]
    kwargs: dict[str, Any]
    out: Any
    written: list[TRec] = field(default_factory=list)
    pre: dict[int, Any] = field(default_factory=dict)


def rec_of(t: Any) -> TRec:
    """Record where torch tensor `t` lives and a copy of its value."""
    s = t.untyped_storage()
    return TRec(
        ptr=int(s.data_ptr()),
        snumel=int(s.nbytes() // max(t.element_size(), 1)),
        offset=int(t.storage_offset()),
        shape=tuple(int(d) for d in t.shape),
        stride=tuple(int(d) for d in t.stride()),
        dtype=t.dtype,
        value=t.detach().clone(),
    )


def trace(module: Any, x: Any) -> tuple[list[OpRec], TRec, Any]:
    """Run ``module(x)`` once, recording every aten operator. Returns (ops, input rec, output)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map

    ops: list[OpRec] = []
    keep: list[Any] = []

    def rec_any(a: Any) -> Any:
        return rec_of(a) if isinstance(a, torch.Tensor) else a

    class Recorder(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch: untyped __init_subclass__
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            schema = func._schema
            written = []
            for i, a in enumerate(schema.arguments):
                if a.alias_info is not None and a.alias_info.is_write:
                    v = args[i] if i < len(args) else kwargs.get(a.name)
                    if isinstance(v, torch.Tensor):
                        written.append(v)
            pre = {}
            for w in written:
                st = w.untyped_storage()
                n = st.nbytes() // max(w.element_size(), 1)
                flat = torch.empty(0, dtype=w.dtype).set_(st, 0, (n,), (1,))
                pre[int(st.data_ptr())] = flat.clone()
            a_rec = tree_map(rec_any, list(args))
            k_rec = tree_map(rec_any, dict(kwargs))
            out = func(*args, **kwargs)
            keep.append((args, kwargs, out))
            name = schema.name.split('::')[-1]
            ops.append(
                OpRec(
                    name, func._overloadname, func, a_rec, k_rec, tree_map(rec_any, out),
                    [rec_of(w) for w in written], pre,
                )
            )  # fmt: skip
            return out

    keep.append(x)
    with torch.inference_mode(), Recorder():  # type: ignore[no-untyped-call]  # torch: untyped __init__
        y = module(x)
    return ops, rec_of(x), y


def tensors_of(obj: Any) -> list[TRec]:
    """Every TRec in a (nested) argument / result structure."""
    if isinstance(obj, TRec):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in tensors_of(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in tensors_of(o)]
    return []


def f32_dtype() -> Any:
    """torch.float32 (torch is imported lazily)."""
    import torch

    return torch.float32


def addr_range(off: int, n: int) -> Any:
    """int64 addresses off, off + 1, ..., off + n - 1."""
    import torch

    return torch.arange(n, dtype=torch.int64) + off


def post_value(op: OpRec, w: TRec) -> TRec:
    """The value of written tensor `w` after `op` (in-place ops return it)."""
    for t in tensors_of(op.out):
        if t.ptr == w.ptr and t.offset == w.offset and t.shape == w.shape:
            return t
    raise Unsupported(f'{op.name}: cannot tell what it wrote')


def scaled_rec(t: TRec, alpha: Any) -> TRec:
    """A constant TRec holding t * alpha (a fresh pseudo-storage)."""
    v = t.value * alpha
    return TRec(-id(v), t.snumel, 0, t.shape, t.stride, t.dtype, v)


def input_usage(module: Any, in_shape: tuple[int, ...], reset: Any = None) -> tuple[int, int] | None:
    """(first, last + 1) input indices the model reads, from a trace; None when it cannot be traced."""
    import torch

    n = int(np.prod(in_shape))
    x = torch.zeros(in_shape, dtype=torch.float32)
    if reset is not None:
        reset()
    try:
        ops, xr, _y = trace(module, x)
    except Exception:
        return None
    finally:
        if reset is not None:
            reset()
    used = np.zeros(n, bool)
    views: dict[tuple[int, tuple[int, ...], tuple[int, ...]], bool] = {}
    in_ptrs = {xr.ptr}
    for op in ops:
        ins = tensors_of(op.args) + tensors_of(op.kwargs)
        outs = tensors_of(op.out)
        is_view = bool(outs) and all(o.ptr in {t.ptr for t in ins} for o in outs) and not op.written
        for t in ins:
            if t.ptr in in_ptrs and not is_view and t.dtype == torch.float32:
                key = (t.offset, t.shape, t.stride)
                if key in views:
                    continue
                views[key] = True
                idx = torch.arange(t.snumel).as_strided(t.shape, t.stride, t.offset).reshape(-1).numpy()
                used[idx[idx < n]] = True
    if not used.any():
        return None
    nz = np.nonzero(used)[0]
    return int(nz[0]), int(nz[-1]) + 1


def input_slices(module: Any, in_shape: tuple[int, ...], reset: Any = None) -> list[tuple[int, int]]:
    """Contiguous runs [start, stop) of the input that the model reads through views (slices), from
    a trace; [] when it cannot be traced or reads the whole input at once."""
    import torch

    n = int(np.prod(in_shape))
    if reset is not None:
        reset()
    try:
        ops, xr, _y = trace(module, torch.zeros(in_shape, dtype=torch.float32))
    except Exception:
        return []
    finally:
        if reset is not None:
            reset()
    runs: list[tuple[int, int]] = []
    for op in ops:
        for t in tensors_of(op.out):
            if t.ptr != xr.ptr or t.numel >= n or t.numel == 0:
                continue
            idx = torch.arange(t.snumel).as_strided(t.shape, t.stride, t.offset).reshape(-1)
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            if (
                hi - lo == t.numel
                and bool((idx == lo + torch.arange(t.numel)).all())
                and (lo, hi) not in runs
            ):
                runs.append((lo, hi))
    return runs
