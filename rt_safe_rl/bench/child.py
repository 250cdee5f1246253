"""Plumbing shared by the benchmark CLIs (``rt-safe-rl bench rt|loop|api``).

:func:`run_child` runs one benchmark phase in a fresh interpreter and returns the JSON document
of its last ``{``-line on stdout (or an ``{'error': ...}`` record); :func:`emit_json` prints the
final result and optionally writes it to a file; :func:`run_as_script` is the ``python -m`` entry
of a CLI module (``rt-safe-rl bench ...``, ``rt-safe-rl doctor``). Parent-process only, not RT:
spawns processes, allocates, blocks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from rt_safe_rl.core.errors import RtSafeRlError


def run_child(cmd: list[str], name: str, timeout_s: float) -> dict[str, Any]:
    """Run phase `name` as `cmd` (ROS discovery limited to localhost unless set) for at most
    `timeout_s` [s]; its JSON result, or an error record on a timeout, a non-zero exit status or
    no JSON line (with the last 3 lines of its stderr, else stdout)."""
    env = dict(os.environ)
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {'error': f'phase {name} did not finish within {timeout_s:.0f} s'}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {'error': f'phase {name} failed (rc {proc.returncode}): ' + ' | '.join(tail)}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def emit_json(res: dict[str, Any], json_path: str, option: str = '--json') -> None:
    """Print the result as JSON (indented) on stdout and, when ``json_path`` is set, write the same
    text there too. ``option``: the CLI option that named the file (for the error message).

    Raises:
        RtSafeRlError: `json_path` cannot be written.
    """
    text = json.dumps(res, indent=2)
    print(text)
    if json_path:
        try:
            Path(json_path).write_text(text + '\n')
        except OSError as err:
            raise RtSafeRlError(f'cannot write {option} {json_path}: {err.strerror or err}') from None


def run_as_script(main: Callable[[], int], prog: str) -> NoReturn:
    """Exit with ``main()``'s exit code (``if __name__ == '__main__'`` of a CLI module run with
    ``python -m``); an expected error (:class:`RtSafeRlError`) prints ``<prog>: error: <message>``
    on stderr and exits 2, as ``rt-safe-rl`` does."""
    try:
        sys.exit(main())
    except RtSafeRlError as err:
        print(f'{prog}: error: {err}', file=sys.stderr)
        sys.exit(2)
