"""Atomic file writes: a reader never sees a half-written result, and a killed run leaves none.
With several processes (multi-host), every process computes the same results and process 0 alone
writes them. And the lock that lets one run at a time use a results directory."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Callable

import jax


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object] | bytes | str) -> Path:
    """Write `path` through a temporary file in the same folder, renamed into place when complete.

    `write` is the content (bytes or str, UTF-8) or a function that writes into the open binary file.
    On any process but 0 nothing is written (`path` is returned all the same).
    """
    path = Path(path)
    if jax.process_index() != 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        try:
            if callable(write):
                write(f)
            else:
                f.write(write.encode() if isinstance(write, str) else write)
        except BaseException:
            os.unlink(f.name)
            raise
    os.chmod(f.name, 0o666 & ~_umask())  # as a plain open() would create it (tempfile uses 0600)
    os.replace(f.name, path)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def results_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold `directory`/.lock (an flock, taken by process 0) for the enclosed code; a RuntimeError
    naming the holder when another run holds it. The kernel releases it if the holder dies."""
    if jax.process_index() != 0:
        yield
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise RuntimeError(f"results directory {str(directory)!r} is in use by another run ({holder}): wait "
                               "for it to finish, or give this run another results_dir") from None
        f.seek(0)
        f.truncate()
        started = datetime.datetime.now().isoformat(timespec="seconds")
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {started}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
