"""Policy output on stdout: capture it (the ``refuse`` check) or drop it (``policy.stdout: drop``).

Both work at the file-descriptor level (C/C++ ``printf``, TorchScript ``print``) and on
``sys.stdout`` (Python ``print``; torch routes TorchScript prints there too), so nothing a policy
prints reaches the JSON a benchmark writes on stdout.

Not RT-safe: ``dup2`` and a temporary file per use; wrap calls off the RT path only (configure,
evaluation, warm-up), never a 1 kHz cycle.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import sys
import tempfile
from collections.abc import Callable, Iterator


def _flush_c_stdio() -> None:
    """fflush(NULL): C/C++ prints (TorchScript ``print``) sit in the C stdio buffer until flushed."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def capture_stdout_fd() -> Iterator[Callable[[], bytes]]:
    """Capture stdout at both levels: file descriptor 1 (C/C++ prints) and ``sys.stdout`` (Python and
    TorchScript ``print``, which torch routes to ``sys.stdout``); yields a reader of the bytes."""
    sys.stdout.flush()
    saved = os.dup(1)
    py_buf = io.StringIO()
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        data = b''

        def read() -> bytes:
            return data

        try:
            with contextlib.redirect_stdout(py_buf):
                yield read
        finally:
            _flush_c_stdio()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            data = tmp.read() + py_buf.getvalue().encode()


@contextlib.contextmanager
def drop_stdout() -> Iterator[None]:
    """Discard everything written to stdout (fd 1 and ``sys.stdout``) inside the block."""
    with capture_stdout_fd():
        yield
