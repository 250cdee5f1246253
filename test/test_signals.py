"""SIGTERM and SIGINT give the same controlled shutdown: the real signal is sent to a real
subprocess (demo, bringup, a node executable); the summary is written, the safety node commands
the stop and holds, and the exit code is the documented one (README "Stopping")."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 240.0  # numba compile + policy load on a loaded 2-vCPU machine
EXIT_TIMEOUT_S = 60.0


_EOF = '\x00EOF'


def _start(args: list[str]) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    """Start ``python -m ARGS``; a thread pumps its stderr lines into the returned queue (then
    _EOF), another collects its stdout (read by :func:`_finish`): nothing else reads the pipes."""
    env = dict(os.environ, PYTHONPATH=str(REPO), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    proc = subprocess.Popen(
        [sys.executable, '-m', *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(REPO),
    )
    lines: queue.Queue[str] = queue.Queue()
    out: list[str] = []
    _STDOUT[proc.pid] = out

    def _pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(_EOF)  # the process closed stderr: everything it wrote is in the queue

    def _collect() -> None:
        assert proc.stdout is not None
        out.append(proc.stdout.read())

    threading.Thread(target=_pump, daemon=True).start()
    threading.Thread(target=_collect, daemon=True).start()
    return proc, lines


_STDOUT: dict[int, list[str]] = {}


def _wait_for(proc: subprocess.Popen[str], lines: queue.Queue[str], marker: str) -> list[str]:
    seen: list[str] = []
    end = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < end:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if marker in line:
            return seen
    proc.kill()
    pytest.fail(f'{marker!r} never appeared; stderr tail: {"".join(seen[-10:])}')


def _finish(proc: subprocess.Popen[str], lines: queue.Queue[str]) -> tuple[int, str, str]:
    """Wait for the exit; returns (exit status, all of stdout, stderr after what _wait_for read)."""
    try:
        proc.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail('the process did not exit after the signal (hung shutdown)')
    err = []
    end = time.monotonic() + EXIT_TIMEOUT_S
    while time.monotonic() < end:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line == _EOF:
            break
        err.append(line)
    out = _STDOUT.pop(proc.pid)
    while not out and time.monotonic() < end:  # the collector returns at stdout's EOF
        time.sleep(0.05)
    return proc.returncode, ''.join(out), ''.join(err)


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_demo_stops_in_control_and_writes_the_summary(tmp_path: Path, sig: signal.Signals) -> None:
    summary = tmp_path / 'summary.json'
    proc, lines = _start(
        ['rt_safe_rl.cli', 'demo', '--duration', '0', '--no-live', '--summary', str(summary)]
    )
    _wait_for(proc, lines, 'demo: t ')
    _wait_for(proc, lines, 'demo: t ')  # the loop has run for a second (policy actions flow)
    proc.send_signal(sig)
    rc, out, err = _finish(proc, lines)
    assert rc == 0, err[-2000:]
    data = json.loads(summary.read_text())['summary']
    assert data['interrupted'] is True and data['signal'] == sig.name
    assert data['safety']['stop_latched'] is True, (data['safety'], err[-3000:])  # stop commanded
    assert data['command_limit_violations'] == 0
    assert data['commands_received'] > 0
    assert json.loads(out.strip().splitlines()[-1])['summary']['signal'] == sig.name


def test_bringup_sigterm_stops_and_holds() -> None:
    proc, lines = _start(['rt_safe_rl.bringup', '--sim', '--no-monitor'])
    _wait_for(proc, lines, 'bringup: running')
    time.sleep(1.0)  # spinning
    proc.send_signal(signal.SIGTERM)
    rc, _, err = _finish(proc, lines)
    assert rc == 0, err[-2000:]
    assert 'bringup: SIGTERM: controlled stop completed (holding)' in err
    assert 'Unable to start transition' not in err


def test_safety_node_executable_sigterm_exits_cleanly() -> None:
    proc, lines = _start(['rt_safe_rl.nodes.safety_node'])
    _wait_for(proc, lines, 'configured')
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = _finish(proc, lines)
    assert rc == 0, err[-2000:]
    assert 'safety_node: SIGTERM: controlled stop' in err
    assert 'Traceback' not in err


def test_sigterm_is_a_keyboard_interrupt_and_wakes_a_blocked_waiter() -> None:
    """Outside a wake block SIGTERM raises KeyboardInterrupt (the Ctrl-C paths run); inside one it
    calls the waker from the watcher thread even while the main thread is blocked in C."""
    code = (
        'import threading, time\n'
        'from rt_safe_rl import signals\n'
        'signals.install()\n'
        "print('ready', flush=True)\n"
        'try:\n'
        '    time.sleep(60)\n'
        'except KeyboardInterrupt:\n'
        "    print('interrupt', signals.signal_name(signals.received()), flush=True)\n"
        'signals.clear()\n'
        'ev = threading.Event()\n'
        'with signals.wake_on_signal(ev.set):\n'
        "    print('ready', flush=True)\n"
        '    ev.wait(60)  # blocked in C; the handler itself would only run afterwards\n'
        "print('woken', ev.is_set(), signals.signal_name(signals.received()), flush=True)\n"
        'raise SystemExit(signals.exit_code(signals.received()))\n'
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    seen: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGTERM):
        while (line := proc.stdout.readline().strip()) != 'ready':
            seen.append(line)
        time.sleep(0.3)
        proc.send_signal(sig)
    out, _ = proc.communicate(timeout=EXIT_TIMEOUT_S)
    assert ' '.join([*seen, *out.split()]) == 'interrupt SIGTERM woken True SIGTERM'
    assert proc.returncode == 143
