"""Helpers shared by the test modules (imported by name, as ``from _helpers import wait_for``):
polling for a condition, and running an ``rt-safe-rl`` command that prints its result as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest


def wait_for(pred: Callable[[], object], timeout_s: float, poll_s: float = 0.01) -> bool:
    """Poll ``pred`` every ``poll_s`` [s] until it is true or ``timeout_s`` [s] have passed; whether
    it is true (asked once more at the end)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(poll_s)
    return bool(pred())


def stdout_json(
    main: Callable[[list[str]], int], argv: Sequence[str], capsys: pytest.CaptureFixture[str]
) -> Any:
    """Run the CLI entry point ``main(argv)`` in this process; assert it exits 0 and return the JSON
    document it printed on stdout."""
    rc = main(list(argv))
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)


def cli_subprocess_json(args: Sequence[str], timeout_s: float) -> Any:
    """Run ``python -m rt_safe_rl.cli ARGS`` in a child process (this environment) for at most
    ``timeout_s`` [s]; assert it exits 0 (else show its stderr's tail) and return the JSON document
    on its stdout (from the first ``{``: log lines may come before it)."""
    proc = subprocess.run(
        [sys.executable, '-m', 'rt_safe_rl.cli', *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=dict(os.environ),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index('{') :])
