"""Atomic file writes: a reader never sees a half-written result, and a killed run leaves none.
With several processes (multi-host), every process computes the same results and process 0 alone
writes them."""

from __future__ import annotations

import os
import tempfile
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
