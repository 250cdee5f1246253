"""``rt-safe-rl policy inspect FILE [--write-config OUT.yaml] [--json]``: what a policy file takes.

Prints the format found in the file's content, input / output tensors with their shapes, recurrent
state, whether the model slices its input (and which elements it really reads), the history frame
size and order where the model's own slicing tells them (e.g. an estimator that reads the first
frame of a stacked history: newest first), the backend that would compile it, and whether the model
prints to stdout when called (what it prints never reaches this command's stdout). With
``--write-config`` it writes a pipeline YAML skeleton with the sizes filled in that runs unchanged
(one named input of the frame size, stacked as detected; default_q zeros) and, as comments, a guess
of the usual legged-robot term layout that fits the frame size. ``rt-safe-rl bench policy`` without
``--config`` uses the same skeleton.

Exit 0; bad input exits 2 with one line (via ``rt-safe-rl``). Not RT code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rt_safe_rl.core.errors import ConfigError, PolicyLoadError
from rt_safe_rl.core.policy.backends import build_backend, compile_program, reference_name
from rt_safe_rl.core.policy.config import ModelConfig
from rt_safe_rl.core.policy.loading import (
    PolicyInfo,
    content_format,
    error_line,
    load_torch_module,
    reset_torch_state,
)
from rt_safe_rl.core.policy.probe import inspect_policy
from rt_safe_rl.core.policy.stdio import capture_stdout_fd, drop_stdout

LEGGED_LAYOUTS: list[tuple[str, list[tuple[str, int]]]] = [
    (
        'ang_vel, gravity, command, q, dq, last_action',
        [('base_ang_vel', 3), ('projected_gravity', 3), ('command', 3)],
    ),
    (
        'lin_vel, ang_vel, gravity, command, q, dq, last_action',
        [('base_lin_vel', 3), ('base_ang_vel', 3), ('projected_gravity', 3), ('command', 3)],
    ),
    (
        'ang_vel, gravity, command, q, dq, last_action, phase sin/cos',
        [('base_ang_vel', 3), ('projected_gravity', 3), ('command', 3), ('phase', 2)],
    ),
]  # fmt: skip
"""Common observation layouts (base terms + 3 x N joint terms) used to guess a frame's terms."""


def history_guess(module: Any, info: PolicyInfo) -> dict[str, Any]:
    """{'frame_size', 'history_length', 'history_order', 'evidence'} from the model's input slices."""
    from rt_safe_rl.core.policy.graph import input_slices

    d = info.obs_dim
    runs = input_slices(module, tuple(info.in_shape), lambda: reset_torch_state(module))
    for lo, hi in runs:
        f = hi - lo
        if f < d and d % f == 0 and d // f >= 2 and lo in (0, d - f):
            order = 'newest_first' if lo == 0 else 'oldest_first'
            return {
                'frame_size': f,
                'history_length': d // f,
                'history_order': order,
                'evidence': f'the model reads inputs [{lo}:{hi}] on their own (the current frame)',
            }
    return {'frame_size': d, 'history_length': 1, 'history_order': 'newest_first', 'evidence': ''}


def layout_guess(frame: int, n_joints: int) -> list[str]:
    """Named layouts whose size fits one frame of a policy with `n_joints` joints."""
    return [name for name, base in LEGGED_LAYOUTS if sum(s for _t, s in base) + 3 * n_joints == frame]


def stdout_per_call(p: Path, info: PolicyInfo, model_cfg: ModelConfig, calls: int = 3) -> dict[str, Any]:
    """{'prints', 'bytes_per_call', 'reason'}: whether the model writes to stdout when called (the
    reference backend on zero observations, captured at the fd level and on ``sys.stdout``). What
    it writes is not kept: it must never reach a command's stdout. ``prints`` is None when the
    model could not be called (``reason`` says why)."""
    obs = np.zeros(info.obs_dim, np.float32)
    out = np.zeros(info.act_dim, np.float32)
    try:
        be = build_backend(reference_name(info), p, info, model_cfg)
        with capture_stdout_fd() as printed:
            for _ in range(calls):
                be.forward(obs, out)
        be.reset()
    except Exception as err:  # a model that cannot run here: say so, inspect the rest
        why = str(err) if isinstance(err, PolicyLoadError) else f'{type(err).__name__}: {error_line(err)}'
        return {'prints': None, 'bytes_per_call': None, 'reason': why}
    n_bytes = len(printed())
    return {'prints': n_bytes > 0, 'bytes_per_call': n_bytes / calls, 'reason': ''}


def describe(path: str | Path, model_cfg: ModelConfig | None = None) -> dict[str, Any]:
    """The inspection report (JSON-ready).

    Raises:
        PolicyLoadError: the file cannot be read as a policy (one line).
    """
    p = Path(path)
    with drop_stdout():
        info = inspect_policy(p, model_cfg)
        _found, why = content_format(p)
        hist: dict[str, Any] = {
            'frame_size': info.obs_dim,
            'history_length': 1,
            'history_order': 'newest_first',
        }
        compiled = ''
        if info.format != 'onnx':
            mod = load_torch_module(p, info.format, model_cfg or ModelConfig(), use_actor=bool(info.actor_of))
            hist = history_guess(mod, info)
        try:
            compiled = compile_program(p, info, model_cfg or ModelConfig()).summary
        except PolicyLoadError as err:
            compiled = f'not compiled: {err}'
        stdout = stdout_per_call(p, info, model_cfg or ModelConfig())
    used = info.input_used or [0, info.obs_dim]
    return {
        'file': str(p),
        'format': info.format,
        'format_evidence': why,
        'sha256': info.sha256,
        'input': {'shape': info.in_shape, 'size': info.obs_dim, 'name': info.onnx_input or None},
        'output': {'shape': info.out_shape, 'size': info.act_dim, 'name': info.onnx_output or None},
        'recurrent': info.recurrent,
        'state_buffers': info.state_buffers,
        'reset_memory': info.has_reset_memory,
        'actor_critic': info.actor_of or None,
        'slices_input': used != [0, info.obs_dim],
        'input_used': used,
        'history': hist,
        'layout_guess': layout_guess(int(hist['frame_size']), info.act_dim),
        'compiled': compiled,
        'stdout': stdout,
    }


def skeleton(report: dict[str, Any]) -> str:
    """A pipeline YAML that runs unchanged for the inspected model (sizes filled in)."""
    n = int(report['output']['size'])
    h = report['history']
    frame = int(h['frame_size'])
    lines = [
        f'# Pipeline skeleton written by `rt-safe-rl policy inspect` for {Path(report["file"]).name}',
        f'# format {report["format"]} ({report["format_evidence"]}); input {report["input"]["shape"]} -> '
        f'output {report["output"]["shape"]}; recurrent: {report["recurrent"]}',
    ]
    if report['slices_input']:
        lo, hi = report['input_used']
        lines.append(f'# the model reads only inputs [{lo}:{hi}] of {report["input"]["size"]}')
    if report['stdout'].get('prints'):
        lines.append(
            f'# the model prints to stdout on every call ({report["stdout"]["bytes_per_call"]:.0f} bytes): '
            'the node refuses it unless policy.stdout: drop'
        )
    if h.get('evidence'):
        lines.append(
            f'# history: {h["history_length"]} frames of {frame}, {h["history_order"]} ({h["evidence"]})'
        )
    for g in report['layout_guess']:
        lines.append(f'# a frame of {frame} fits the usual layout: {g} (replace the input term below)')
    lines += [
        '# Runs as is: one named input `observation` of the frame size. Replace it by the real terms',
        '# (schema: rt_safe_rl/core/policy/config.py), set joints.names, default_q and action.scale.',
        'model: {format: ' + report['format'] + '}',
        f'default_q: {[0.0] * n}',
        'inputs:',
        f'  observation: {{size: {frame}}}',
        'observation:',
        '  terms:',
        '    - {term: input, input: observation}',
        f'  history_length: {int(h["history_length"])}',
        f'  history_order: {h["history_order"]}',
        'action:',
        '  scale: 1.0',
        '',
    ]
    return '\n'.join(lines)


def _print_human(r: dict[str, Any]) -> None:
    out = sys.stdout
    print(f'{r["file"]}', file=out)
    print(f'  format        {r["format"]} ({r["format_evidence"]}), sha256 {r["sha256"][:16]}...', file=out)
    print(f'  input         {r["input"]["shape"]} ({r["input"]["size"]} values)', file=out)
    print(f'  output        {r["output"]["shape"]} ({r["output"]["size"]} values)', file=out)
    state = ', '.join(f'{k} {v}' for k, v in r['state_buffers'].items()) or '-'
    print(f'  recurrent     {r["recurrent"]} (state: {state}; reset_memory: {r["reset_memory"]})', file=out)
    if r['actor_critic']:
        print(f'  container     {r["actor_critic"]}', file=out)
    lo, hi = r['input_used']
    print(
        f'  reads inputs  [{lo}:{hi}]' + (' (slices its input)' if r['slices_input'] else ' (all)'), file=out
    )
    h = r['history']
    if h['history_length'] > 1:
        print(f'  history       {h["history_length"]} x {h["frame_size"]}, {h["history_order"]}', file=out)
    for g in r['layout_guess']:
        print(f'  frame layout  {g}?', file=out)
    print(f'  compiled      {r["compiled"]}', file=out)
    print(f'  stdout        {_stdout_line(r)}', file=out)


def _stdout_line(r: dict[str, Any]) -> str:
    """'silent' / 'prints on every call (...)' / 'not checked: why' for the human report."""
    so = r['stdout']
    if so['prints'] is None:
        return f'not checked: {so["reason"]}'
    if not so['prints']:
        return 'silent'
    then = (
        'the compiled backend, which does not print, runs'
        if not str(r['compiled']).startswith('not compiled')
        else 'its output is dropped around calls off the RT path only'
    )
    return (
        f'prints on every call ({so["bytes_per_call"]:.0f} bytes): refused unless '
        f'policy.stdout: drop ({then})'
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rt-safe-rl policy inspect``."""
    ap = argparse.ArgumentParser(prog='rt-safe-rl policy', description=__doc__.split('\n\n')[0])
    ap.add_argument('action', choices=['inspect'], help='what to do')
    ap.add_argument('path', help='policy file (.pt TorchScript / weights_only checkpoint, .onnx)')
    ap.add_argument(
        '--write-config', metavar='OUT.yaml', help='write a pipeline YAML skeleton that runs as is'
    )
    ap.add_argument('--json', action='store_true', help='print the report as JSON')
    args = ap.parse_args(argv)
    if not Path(args.path).is_file():
        raise ConfigError(f'policy file not found: {args.path}')
    report = describe(args.path)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_human(report)
    if args.write_config:
        Path(args.write_config).write_text(skeleton(report))
        print(f'wrote {args.write_config}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
