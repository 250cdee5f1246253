"""Reduced-precision backends (fp16, int8) that cannot run a model: an ``unavailable: <reason>`` row
in the backend table (the benchmark's too), never a crash; asked for explicitly: one clear line."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from rt_safe_rl.cli import main as cli
from rt_safe_rl.core.errors import PolicyLoadError
from rt_safe_rl.core.policy.backends import format_table
from rt_safe_rl.core.policy.config import PolicyNodeConfig
from rt_safe_rl.core.policy.model import load_policy_model

OBS, ACT = 8, 4


class _IndexPut(nn.Module):
    """Actions scattered into a float32 zeros tensor: in half precision the dtypes differ."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.mlp = nn.Sequential(nn.Linear(OBS, 16), nn.ELU(), nn.Linear(16, ACT))
        self.register_buffer('perm', torch.tensor([2, 3, 0, 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(1, 4)
        out[:, self.perm] = self.mlp(x)
        return out


@functools.cache
def _index_put_script() -> Any:
    return torch.jit.script(_IndexPut().eval())  # once per process: torch compiles a class once


def _cfg(**kw: Any) -> PolicyNodeConfig:
    return PolicyNodeConfig(
        **{'auto_samples': 50, 'auto_timing_iters': 10, 'warmup_iters': 2, 'auto_cache': False, **kw}
    )


def _rows(m: Any) -> dict[str, Any]:
    return {r.name: r for r in m.table}


def test_fp16_index_put_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    p = tmp_path / 'index_put.pt'
    _index_put_script().save(str(p))
    m = load_policy_model(p, _cfg(allow_reduced_precision=True), obs_dim=OBS, keep_all=True)
    rows = _rows(m)
    fp16 = rows['fp16']
    assert not fp16.available and not fp16.ok, fp16
    assert fp16.reason.startswith('fp16: ') and 'dtype' in fp16.reason, fp16.reason
    assert len(fp16.reason.splitlines()) == 1
    assert 'unavailable: fp16: ' in format_table(m.table, m.selected)
    assert m.selected != 'fp16' and rows[m.selected].ok
    int8 = rows['int8']  # measured or unavailable with its reason: either way a row, not a crash
    assert int8.available or int8.reason.startswith('int8: '), int8


def test_fp16_asked_for_explicitly_fails_in_one_line(tmp_path: Path) -> None:
    p = tmp_path / 'index_put.pt'
    _index_put_script().save(str(p))
    with pytest.raises(PolicyLoadError) as exc:
        load_policy_model(p, _cfg(backend='fp16'), obs_dim=OBS)
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1 and "backend 'fp16' is not available: fp16: " in msg, msg


def _onnx_with_sin(path: Path) -> None:
    """MatMul + Add + Sin: onnxruntime runs it; neither the compiler nor int8's rebuild knows Sin."""
    onnx = pytest.importorskip('onnx', reason='onnx not installed (requirements.txt installs it)')
    pytest.importorskip('onnxruntime', reason='onnxruntime not installed (requirements.txt installs it)')
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    w = numpy_helper.from_array((rng.standard_normal((OBS, ACT)) * 0.3).astype(np.float32), 'w')
    b = numpy_helper.from_array(np.zeros(ACT, np.float32), 'b')
    nodes = [
        helper.make_node('MatMul', ['obs', 'w'], ['m']),
        helper.make_node('Add', ['m', 'b'], ['a']),
        helper.make_node('Sin', ['a'], ['actions']),
    ]
    graph = helper.make_graph(
        nodes,
        'sin_policy',
        [helper.make_tensor_value_info('obs', TensorProto.FLOAT, [1, OBS])],
        [helper.make_tensor_value_info('actions', TensorProto.FLOAT, [1, ACT])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_int8_that_cannot_rebuild_the_model_is_unavailable(tmp_path: Path) -> None:
    p = tmp_path / 'sin.onnx'
    _onnx_with_sin(p)
    m = load_policy_model(p, _cfg(allow_reduced_precision=True), obs_dim=OBS, keep_all=True)
    rows = _rows(m)
    assert m.selected == 'onnxruntime' and rows['onnxruntime'].ok
    int8 = rows['int8']
    assert not int8.available and int8.reason.startswith('int8: ') and 'Sin' in int8.reason, int8
    assert 'unavailable: int8: ' in format_table(m.table, m.selected)


def test_fp16_overflow_is_reported_not_chosen(tmp_path: Path) -> None:
    """Outputs beyond the half range: the fp16 row says non-finite; the policy still loads."""
    torch.manual_seed(8)
    lin = nn.Linear(OBS, ACT)
    with torch.no_grad():
        lin.weight.mul_(1e4)  # |y| ~ 1e4 * |x|: fine in float32, inf in float16 for |x| of a few
    p = tmp_path / 'big.pt'
    torch.jit.script(nn.Sequential(lin).eval()).save(str(p))
    m = load_policy_model(p, _cfg(allow_reduced_precision=True), obs_dim=OBS, obs_scale=10.0, keep_all=True)
    fp16 = _rows(m)['fp16']
    assert fp16.available and not fp16.ok and fp16.reason == 'non-finite output', fp16
    assert m.selected != 'fp16'


def test_bench_policy_lists_reduced_precision_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / 'index_put.pt'
    _index_put_script().save(str(p))
    args = [
        'bench',
        'policy',
        str(p),
        '--backends',
        'eager,numba,fp16,int8',
        '--iters',
        '50',
        '--heap-calls',
        '100',
    ]
    assert cli(args) == 0
    cap = capsys.readouterr()
    report = json.loads(cap.out)
    fp16 = next(r for r in report['backends'] if r['name'] == 'fp16')
    assert fp16['available'] is False and fp16['reason'].startswith('fp16: '), fp16
    assert 'unavailable: fp16: ' in cap.err
