# mypy: disable-error-code="operator,index"
"""Policy exports with the structures robot teams ship, made on demand (never committed as binaries).

``python -m rt_safe_rl.tools.policy_exports OUT_DIR`` writes, with fixed seeds:

==================== ==========================================================================
ac_container.pt      TorchScript actor-critic container (``actor``, ``critic``); forward gives both
fx_graph.pt          ``torch.fx.symbolic_trace`` of an MLP (SiLU, LeakyReLU(0.2), Softsign), scripted
wrapper_slicing.pt   wrapper with constant buffers (mean, std, action scale / offset) that slices
                     ``x[:, 3:48]`` of its input before the MLP
index_put.pt         MLP whose actions are scattered with ``out[:, perm] = y`` into a zeros tensor
printing.pt          MLP that prints inside ``forward``
lstm2_cell.pt        2-layer LSTM (``hidden_state`` / ``cell_state`` buffers, ``reset_memory``)
gru.pt               GRU cell + MLP with LayerNorm, state in a buffer
onnx_1d.onnx         ONNX MLP with 1-D input [48] and output [12] (MatMul / Add / Elu)
encoder.onnx         ONNX history encoder 5 x 12 -> 8 latent values (two-model pipeline)
encoder_policy.pt    actor taking 48 + 8 (observation + encoder latent)
==================== ==========================================================================

plus ``<name>.yaml`` pipeline configs where the structure needs one (sizes filled in). Used by
test/test_policy_exports.py (into tmp dirs) and for the README's policy table.
Not RT code.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

OBS, ACT = 48, 12


def _mlp(n_in: int, n_out: int, hidden: tuple[int, ...] = (128, 64), act: Any = None) -> Any:
    from torch import nn

    layers: list[nn.Module] = []
    d = n_in
    for h in hidden:
        layers += [nn.Linear(d, h), act() if act is not None else nn.ELU()]
        d = h
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


def _modules() -> dict[str, Any]:
    """Every TorchScript-able export, name -> module, built in a fixed order from seed 0."""
    import torch

    torch.manual_seed(0)
    return {**_feedforward_modules(), **_recurrent_modules()}


def _feedforward_modules() -> dict[str, Any]:
    """The stateless exports (container, fx graph, wrapper, index_put, printing), built in order
    from the global torch RNG."""
    import torch
    from torch import nn

    class ActorCritic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.actor = _mlp(OBS, ACT)
            self.critic = _mlp(OBS, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.actor(x), self.critic(x)

    class FxNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1, self.l2, self.l3 = nn.Linear(OBS, 96), nn.Linear(96, 64), nn.Linear(64, ACT)
            self.a1, self.a2, self.a3 = nn.SiLU(), nn.LeakyReLU(0.2), nn.Softsign()

        def forward(self, x):  # type: ignore[no-untyped-def]  # fx copies annotations as text
            return self.l3(self.a3(self.a2(self.l2(self.a1(self.l1(x))))))

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = _mlp(45, ACT)
            self.register_buffer('obs_mean', torch.randn(1, 45) * 0.1)
            self.register_buffer('obs_std', torch.rand(1, 45) + 0.5)
            self.register_buffer('action_scale', torch.full((ACT,), 0.25))
            self.register_buffer('default_q', torch.randn(ACT) * 0.1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            obs = (x[:, 3:48] - self.obs_mean) / self.obs_std
            return self.mlp(torch.clamp(obs, -5.0, 5.0)) * self.action_scale + self.default_q

    class IndexPut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = _mlp(OBS, ACT)
            self.register_buffer('perm', torch.tensor([3, 4, 5, 0, 1, 2, 9, 10, 11, 6, 7, 8]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(1, 12)
            out[:, self.perm] = self.mlp(x)
            return out

    class Printer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = _mlp(OBS, ACT)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            print('obs', x.shape)
            return self.mlp(x)

    return {
        'ac_container': ActorCritic(),
        'fx_graph': torch.fx.symbolic_trace(FxNet()),
        'wrapper_slicing': Wrapper(),
        'index_put': IndexPut(),
        'printing': Printer(),
    }


def lstm_actor(
    n_obs: int, n_act: int, hidden: int, num_layers: int = 1, actor_hidden: tuple[int, ...] = (64,)
) -> Any:
    """A legged_gym-style exported LSTM actor: ``n_obs`` inputs -> an ``nn.LSTM`` of ``num_layers``
    x ``hidden`` units whose state lives in the ``hidden_state`` / ``cell_state`` buffers (updated
    in place by each ``forward``, zeroed by the exported ``reset_memory()``) -> an ELU MLP
    (``actor_hidden`` widths) -> ``n_act`` actions. Weights from the global torch RNG; TorchScript-able.
    """
    import torch
    from torch import nn

    class LstmActor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.memory = nn.LSTM(n_obs, hidden, num_layers=num_layers)
            self.actor = _mlp(hidden, n_act, actor_hidden)
            self.register_buffer('hidden_state', torch.zeros(num_layers, 1, hidden))
            self.register_buffer('cell_state', torch.zeros(num_layers, 1, hidden))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, (h, c) = self.memory(x.unsqueeze(0), (self.hidden_state, self.cell_state))
            self.hidden_state.copy_(h)
            self.cell_state.copy_(c)
            return self.actor(out.squeeze(0))

        @torch.jit.export
        def reset_memory(self) -> None:
            self.hidden_state.zero_()
            self.cell_state.zero_()

    return LstmActor()


def _recurrent_modules() -> dict[str, Any]:
    """The exports with state in buffers (2-layer LSTM, GRU) and the encoder's policy, built in
    order from the global torch RNG."""
    import torch
    from torch import nn

    class Gru(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.GRUCell(OBS, 32)
            self.norm = nn.LayerNorm(32)
            self.actor = _mlp(32, ACT, (64,), nn.Tanh)
            self.register_buffer('hidden_state', torch.zeros(1, 32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.cell(x, self.hidden_state)
            self.hidden_state.copy_(h)
            return self.actor(self.norm(h))

    class EncoderPolicy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.actor = _mlp(OBS + 8, ACT)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.actor(x)

    return {
        'lstm2_cell': lstm_actor(OBS, ACT, 64, num_layers=2),
        'gru': Gru(),
        'encoder_policy': EncoderPolicy(),
    }


def _onnx_mlp(path: Path, sizes: list[int], in_shape: list[int], seed: int) -> None:
    """A MatMul/Add/Elu ONNX MLP whose input has shape `in_shape` (1-D allowed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cur = 'obs'
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        bias = (rng.standard_normal(b) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f'w{i}'), numpy_helper.from_array(bias, f'b{i}')]
        nodes += [
            helper.make_node('MatMul', [cur, f'w{i}'], [f'm{i}']),
            helper.make_node('Add', [f'm{i}', f'b{i}'], [f'a{i}']),
        ]
        cur = f'a{i}'
        if i < len(sizes) - 2:
            nodes.append(helper.make_node('Elu', [cur], [f'e{i}'], alpha=1.0))
            cur = f'e{i}'
    nodes.append(helper.make_node('Identity', [cur], ['actions']))
    out_shape = [*in_shape[:-1], sizes[-1]]
    graph = helper.make_graph(
        nodes,
        'policy',
        [helper.make_tensor_value_info('obs', TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info('actions', TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


_GO2_DEFAULT = [0.1, 0.8, -1.5, -0.1, 0.8, -1.5, 0.1, 1.0, -1.5, -0.1, 1.0, -1.5]


def _pipeline(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A go2-like 48-input pipeline (base lin/ang vel, gravity, command, q, dq, last action)."""
    d: dict[str, Any] = {
        'default_q': list(_GO2_DEFAULT),
        'inputs': {'command': {'size': 3, 'default': [0.5, 0.0, 0.0]}},
        'observation': {
            'terms': [
                {'term': 'base_lin_vel', 'scale': 2.0},
                {'term': 'base_ang_vel', 'scale': 0.25},
                {'term': 'projected_gravity'},
                {'term': 'command', 'scale': [2.0, 2.0, 0.25]},
                {'term': 'joint_pos_rel'},
                {'term': 'joint_vel', 'scale': 0.05},
                {'term': 'last_action'},
            ]
        },
        'action': {'scale': 0.25},
    }
    d.update(extra or {})
    return d


def write_exports(out: Path) -> dict[str, Path]:
    """Write every export (and its pipeline YAML) into `out`; returns name -> model path."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, mod in _modules().items():
        p = out / f'{name}.pt'
        torch.jit.script(mod.eval()).save(str(p))
        paths[name] = p
    _onnx_mlp(out / 'onnx_1d.onnx', [OBS, 64, 64, ACT], [OBS], seed=1)
    paths['onnx_1d'] = out / 'onnx_1d.onnx'
    _onnx_mlp(out / 'encoder.onnx', [5 * ACT, 32, 8], [1, 5 * ACT], seed=2)
    for name in ('ac_container', 'fx_graph', 'index_put', 'printing', 'lstm2_cell', 'gru', 'onnx_1d'):
        (out / f'{name}.yaml').write_text(yaml.safe_dump(_pipeline()))
    wrap = _pipeline()
    wrap['observation']['terms'].insert(0, {'term': 'input', 'input': 'padding'})
    wrap['inputs']['padding'] = {'size': 3}
    (out / 'wrapper_slicing.yaml').write_text(yaml.safe_dump(wrap))
    enc = _pipeline(
        {
            'encoder': {
                'path': 'encoder.onnx',
                'output_size': 8,
                'observation': {'terms': [{'term': 'joint_vel', 'scale': 0.05}], 'history_length': 5},
            }
        }
    )
    enc['observation']['terms'].append({'term': 'encoder'})
    (out / 'encoder_policy.yaml').write_text(yaml.safe_dump(enc))
    return paths


def main(argv: list[str] | None = None) -> int:
    """Entry point: write the exports into OUT_DIR."""
    ap = argparse.ArgumentParser(
        prog='python -m rt_safe_rl.tools.policy_exports', description=__doc__.split('\n\n')[0]
    )
    ap.add_argument('out', help='directory to write the exports into')
    args = ap.parse_args(argv)
    for name, p in write_exports(Path(args.out)).items():
        print(f'{name}: {p}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
