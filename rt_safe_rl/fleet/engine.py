"""The Ray side of the fleet replay: start or attach to Ray, run one task per (bag, variant),
collect the rows with a progress bar, survive faults, measure scaling.

* Local (default): ``ray.init(num_cpus=workers)`` starts a Ray in this process's session (a
  raylet and ``workers`` worker processes on this machine), no dashboard, worker logs not
  forwarded. ``address`` (``ray://HOST:10001`` or ``HOST:6379``) attaches to a running cluster.
* Each task is :func:`rt_safe_rl.fleet.task.run_task` as a Ray task with ``num_cpus=1`` and
  ``max_retries`` (a worker process that dies mid-task, e.g. killed, is retried by Ray on a
  new worker). A task that still fails (retries exhausted, an error raised in it) becomes an
  error row: the run completes.
* Ctrl-C / SIGTERM: the pending tasks are cancelled and the rows so far are returned with
  ``complete = False`` (:func:`stop_signals`; checked every 0.5 s between Ray waits).

Only this module imports ``ray``; without it :func:`import_ray` says how to install it.
Not RT code.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.fleet.task import run_task

MAX_RETRIES = 3
INSTALL_HINT = (
    "Ray is not installed: pip install 'rt_safe_rl[fleet]' (or pip install -r requirements-fleet.txt); "
    '`make` installs it into .venv'
)


class FleetError(RtSafeRlError):
    """Ray is missing or could not start / attach."""


class FleetInterruptedError(Exception):
    """The driver got SIGINT / SIGTERM while tasks ran."""


def import_ray() -> Any:
    """The ``ray`` module, or FleetError with the install command."""
    try:
        import ray
    except ImportError:
        raise FleetError(INSTALL_HINT) from None
    return ray


@contextmanager
def ray_session(workers: int, address: str = '', object_store_mb: int = 200) -> Iterator[Any]:
    """Start a local Ray with ``workers`` CPUs (or attach to ``address``); shut it down after.

    Yields the ray module. Raises FleetError when Ray is missing or does not start.
    """
    ray = import_ray()
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {
            'include_dashboard': False,
            'log_to_driver': False,
            'logging_level': 'ERROR',
        }
        if address:
            kwargs['address'] = address
        else:
            kwargs.update(num_cpus=int(workers), object_store_memory=object_store_mb * 2**20)
        try:
            ray.init(**kwargs)
        except Exception as err:  # broad on purpose: Ray start-up failures come in many types
            raise FleetError(f'Ray did not start{f" at {address}" if address else ""}: {err}') from None
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """Inside the block, SIGINT (Ctrl-C) and SIGTERM only record the signal in the yielded list
    (main thread only; elsewhere the list stays empty). Raising from the handler instead would
    surface inside Ray's C++ wait as a SystemError; the caller polls the list between waits."""
    got: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        got.append(signum)

    try:
        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield got
        return
    try:
        yield got
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _remote(ray: Any) -> Any:
    return ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(run_task)


def _error_row(spec: dict[str, Any], err: BaseException) -> dict[str, Any]:
    text = str(err).strip().splitlines()
    return {
        'bag': str(spec['bag']),
        'variant': spec['variant']['name'],
        'variant_index': int(spec['variant']['index']),
        'error': f'{type(err).__name__}: {text[-1] if text else ""}'[:500],
    }


def run_tasks(
    ray: Any,
    specs: Sequence[dict[str, Any]],
    max_in_flight: int,
    on_row: Callable[[dict[str, Any], int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Run every spec as a Ray task, at most ``max_in_flight`` at once.

    Returns (rows in completion order, complete). ``on_row(row, done, total)`` after each row.
    Ctrl-C / SIGTERM cancels the pending tasks and returns the rows so far (complete False).
    """
    remote = _remote(ray)
    rows: list[dict[str, Any]] = []
    pending: dict[Any, dict[str, Any]] = {}
    queue = list(specs)
    total = len(queue)
    try:
        with stop_signals() as stop:
            while queue or pending:
                if stop:
                    raise FleetInterruptedError(f'signal {stop[0]}')
                while queue and len(pending) < max(1, max_in_flight):
                    spec = queue.pop(0)
                    pending[remote.remote(spec)] = spec
                # a bounded wait: the signal handlers (SIGTERM, Ctrl-C) run between the waits
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in done:
                    spec = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except Exception as err:  # broad on purpose: retries exhausted / task error -> row
                        row = _error_row(spec, err)
                    rows.append(row)
                    if on_row is not None:
                        on_row(row, len(rows), total)
    except (KeyboardInterrupt, FleetInterruptedError):
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # broad on purpose: best-effort cancel of what is left
                pass
        return rows, False
    return rows, True


def warm_workers(ray: Any, specs: Sequence[dict[str, Any]], workers: int) -> float:
    """Start ``workers`` worker processes at once and let each replay ``specs`` (imports, numba
    caches, one composed pipeline per variant). Returns the wall time (s)."""
    t0 = time.monotonic()
    remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_warm)
    ray.get([remote.remote(list(specs), workers) for _ in range(workers)])
    return time.monotonic() - t0


def _warm(specs: list[dict[str, Any]], workers: int) -> int:
    for spec in specs:
        run_task(spec)
    return os.getpid()


class Progress:
    """A progress bar of finished tasks on stderr (a line per task when stderr is no terminal)."""

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        self.total = total
        self.label = label
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None
        self.errors = 0

    def __enter__(self) -> Progress:
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn('{task.description}'),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def update(self, row: dict[str, Any], done: int, total: int) -> None:
        """One more row."""
        if 'error' in row:
            self.errors += 1
        if self._bar is not None:
            self._bar.update(self._task, completed=done, description=f'{self.label} ({self.errors} errors)')
        elif self.enabled:
            what = f'error: {row["error"]}' if 'error' in row else f'{row.get("states", 0)} states'
            print(f'[fleet] {done}/{total} {row["variant"]} {row["bag"]}: {what}', file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
