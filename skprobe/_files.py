"""Atomic file writes shared by every cache, store and output file of the package."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, mode: int = 0o644) -> Path:
    """Write ``path`` through a uniquely named temporary file and an atomic rename.

    Readers see either the old file or the complete new one, never a partial
    file; concurrent writers of the same path each use their own temporary
    name, and the last rename wins. An interrupted write (exception, SIGINT)
    removes its temporary file and leaves ``path`` untouched.

    Parameters
    ----------
    path : path-like
        Destination. Its folder must exist.
    write : callable
        ``write(fh)`` writes the content to a binary file handle.
    mode : int, default=0o644
        Permission bits of the new file (``mkstemp`` would leave 0600).

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> _ = atomic_write(p, lambda fh: fh.write(b"hello"))
    >>> p.read_bytes()
    b'hello'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
