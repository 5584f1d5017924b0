"""Atomic file writes shared by every cache, store and output file of the package."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, mode: int = 0o666) -> Path:
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
    mode : int, default=0o666
        Permission bits of the new file before the process's umask is
        applied, as for ``open()``: 0644 under the usual umask 022, 0600
        under umask 077.

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
    fd, tmp = _create_temporary(path, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _create_temporary(path: Path, mode: int) -> tuple[int, Path]:
    """A new, uniquely named file beside ``path``, created with ``mode`` so that the kernel applies the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary name beside {path}")
