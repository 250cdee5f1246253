"""One controlled shutdown for SIGINT and SIGTERM in every executable of the package.

:func:`install` (called once by ``rt-safe-rl`` (cli.main), ``bringup`` and every node executable
(``run_node``), main thread only) makes SIGTERM behave exactly like Ctrl-C:

* outside a :func:`wake_on_signal` block the first signal raises :class:`KeyboardInterrupt` in the
  main thread (so the existing Ctrl-C paths -- the demo's summary, a bench's partial report, a
  recorder closing its bag -- run for SIGTERM too);
* inside ``with wake_on_signal(executor.shutdown):`` (around ``RtExecutor.spin`` in the main thread)
  the signal calls the waker instead: the spin returns normally and the caller runs its
  controlled stop (:func:`stop_and_hold`). The main thread of a spinning executor sits in rcl's
  wait with the GIL released, where a Python handler would only run after the next ROS event (in
  practice never): a watcher thread blocked on the signal wake-up fd (no GIL held while blocked)
  calls the wakers at once.

rclpy's own handlers are not used (``SignalHandlerOptions.NO``): they shut the rclpy context
down first, after which the safety node could no longer publish the stop.
Later signals during the controlled shutdown are counted and ignored (SIGKILL remains the hard
stop). :func:`received` tells which signal asked for the stop (``None``: none).

Exit codes (README "Stopping"): bringup, the node executables and the demo exit 0 after a
controlled shutdown (their summary says ``interrupted`` / ``signal``); a bench or recorder stopped
early writes its partial report and exits 128 + the signal number (130 SIGINT, 143 SIGTERM), as
does any command stopped before it had anything to stop or write.

Not RT code: runs at start-up and shutdown only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

STOP_SIGNALS: tuple[int, ...] = (int(signal.SIGINT), int(signal.SIGTERM))
#: longest time :func:`stop_and_hold` keeps the loop running for the stop to complete (s); it
#: ends as soon as the command is at rest, the margin is for a loaded machine whose loop runs late
DEFAULT_HOLD_S = 3.0

_lock = threading.Lock()
_wakers: list[Callable[[], Any]] = []
_received: list[int] = []  # every stop signal seen, in order
_handled = 0  # signals the main thread's handler took before the watcher read their byte
_watched = 0  # signals the watcher took before their handler ran in the main thread
_installed = False
_wake_r = -1


def install() -> bool:
    """Install the SIGINT/SIGTERM handlers (idempotent). Returns False when not called from the
    main thread (nothing installed: Python only delivers signals there)."""
    global _installed, _wake_r
    if _installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    r, w = os.pipe()
    os.set_blocking(w, False)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_signal)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    _wake_r = r
    threading.Thread(target=_watch, args=(r,), name='rt_safe_rl_signals', daemon=True).start()
    _installed = True
    return True


def received() -> int | None:
    """The first stop signal received since :func:`clear` (None: none)."""
    return _received[0] if _received else None


def signal_name(signum: int | None) -> str | None:
    """'SIGTERM' for 15, None for None."""
    return None if signum is None else signal.Signals(signum).name


def exit_code(signum: int | None, default: int = 0) -> int:
    """128 + the signal number when a signal stopped the run, else `default`."""
    return default if signum is None else 128 + int(signum)


def clear() -> None:
    """Forget received signals (a process that runs several scenarios, e.g. the tests)."""
    with _lock:
        _received.clear()


@contextlib.contextmanager
def wake_on_signal(waker: Callable[[], Any]) -> Iterator[None]:
    """Inside the block a stop signal calls ``waker()`` (e.g. ``RtExecutor.shutdown``, from the
    watcher thread and again from the main thread's handler; it must be idempotent and
    thread-safe) instead of raising KeyboardInterrupt. A signal received before the block calls
    it at once."""
    with _lock:
        _wakers.append(waker)
        pending = bool(_received)
    try:
        if pending:
            waker()
        yield
    finally:
        with _lock:
            with contextlib.suppress(ValueError):
                _wakers.remove(waker)


def _call_wakers() -> bool:
    with _lock:
        wakers = list(_wakers)
    for fn in wakers:
        with contextlib.suppress(Exception):
            fn()
    return bool(wakers)


def _on_signal(signum: int, frame: Any) -> None:
    global _watched, _handled
    with _lock:
        if _watched > 0:  # the watcher thread has woken the waiters for this signal already
            _watched -= 1
            return
        _handled += 1
        first = not _received
        _received.append(int(signum))
    if _call_wakers():
        return
    if first:
        raise KeyboardInterrupt(signal_name(signum))
    # a later signal while the controlled shutdown runs: ignored (SIGKILL is the hard stop)


def _watch(fd: int) -> None:
    """Watcher thread: wake the spinning executors as soon as a stop signal arrives.

    Each signal writes one byte to the wake-up fd and, later, runs :func:`_on_signal` in the
    main thread; whichever of the two comes first handles it, the other only books it off
    (``_handled`` / ``_watched``), so a byte read late never replays an old signal into a newer
    wake block."""
    global _watched, _handled
    while True:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        if not data:
            return
        for b in data:
            if b not in STOP_SIGNALS:
                continue
            with _lock:
                if _handled > 0:  # the main thread's handler ran first: nothing left to do
                    _handled -= 1
                    continue
                if not _wakers:  # nothing to wake: the handler raises in the main thread
                    continue
                _watched += 1
                _received.append(int(b))
            _call_wakers()


def controlled_stop(nodes: Iterable[Any], reason: str) -> list[str]:
    """Ask every node that can stop the robot to command the stop and hold.

    A node with ``controlled_stop(reason)`` (the safety node) gets that call; a node with a
    safety ``filter`` only (an older safety node) gets ``filter.trigger_stop(MONITOR)``.
    Returns the names of the nodes asked. Never raises.
    """
    asked: list[str] = []
    for node in nodes:
        name = _node_name(node)
        try:
            fn = getattr(node, 'controlled_stop', None)
            if callable(fn):
                fn(reason)
                asked.append(name)
                continue
            filt = getattr(node, 'filter', None)
            if filt is not None and hasattr(filt, 'trigger_stop'):
                from rt_safe_rl.core.safety.filter import FaultCode

                filt.trigger_stop(FaultCode.MONITOR)
                asked.append(name)
        except Exception:
            continue
    return asked


def _node_name(node: Any) -> str:
    try:
        return str(node.get_name())
    except Exception:
        return type(node).__name__


def stopped(nodes: Iterable[Any]) -> bool:
    """True when every safety filter among `nodes` has completed its stop (command at rest)."""
    for node in nodes:
        filt = getattr(node, 'filter', None)
        if filt is None or not hasattr(filt, 'is_stopped'):
            continue
        try:
            if not filt.is_stopped:
                return False
        except Exception:
            continue
    return True


def stop_and_hold(
    nodes: Iterable[Any],
    executor: Any,
    reason: str,
    hold_s: float = DEFAULT_HOLD_S,
    log: Callable[[str], Any] | None = None,
) -> bool:
    """Controlled stop for an executor whose spin has returned: ask for the stop
    (:func:`controlled_stop`) and spin the executor again until every safety filter's command is
    at rest (at most `hold_s`), so the braking ramp and then the hold are published. Further
    signals during the hold are ignored. Returns True when the stop completed. Never raises."""
    nodes = list(nodes)
    if not controlled_stop(nodes, reason):
        return True
    done = threading.Event()

    def _poll() -> None:  # ends the spin once the stop completed (runs only during the hold)
        end = time.monotonic() + hold_s
        while time.monotonic() < end and not done.wait(0.02):
            if stopped(nodes):
                time.sleep(0.05)  # a few more periods of the held command
                break
        done.set()
        with contextlib.suppress(Exception):
            executor.shutdown()

    poller = threading.Thread(target=_poll, name='rt_safe_rl_stop_hold', daemon=True)
    poller.start()
    with contextlib.suppress(Exception):
        executor.spin(hold_s)
    done.set()
    poller.join(1.0)
    ok = stopped(nodes)
    if log is not None:
        log(f'{reason}: controlled stop {"completed (holding)" if ok else "requested, not completed"}')
    return ok


def stop_while_spinning(nodes: Iterable[Any], reason: str, hold_s: float = DEFAULT_HOLD_S) -> bool:
    """Controlled stop while another thread spins the executor (the demo): ask for the stop and
    wait until every safety filter's command is at rest (at most `hold_s`). Never raises."""
    nodes = list(nodes)
    if not controlled_stop(nodes, reason):
        return True
    end = time.monotonic() + hold_s
    while time.monotonic() < end:
        if stopped(nodes):
            time.sleep(0.05)  # a few periods of the held command
            return True
        time.sleep(0.02)
    return stopped(nodes)
