"""Reading rows of a shard file with ``pread`` (not through a memory map)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .layout import StoreError

__all__ = ["ShardFile"]


class ShardFile:
    """A shard opened for reading rows with ``pread``.

    Rows read through a memory map would stay in the reading process's
    resident set (a probe's epochs read every row), so the resident set of a
    fit would grow with the store; read with ``pread`` they stay in the page
    cache only.

    Parameters
    ----------
    path : Path
        The shard file (raw rows, ``row_bytes`` each).
    row_bytes : int

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "demo.bin"
    >>> path.write_bytes(np.arange(6, dtype="float16").tobytes())
    12
    >>> shard = ShardFile(path, row_bytes=4)
    >>> shard.n_rows, shard.rows(np.array([2, 0]), (2,), np.dtype("float16")).tolist()
    (3, [[4.0, 5.0], [0.0, 1.0]])
    """

    def __init__(self, path: Path, row_bytes: int) -> None:
        self.path = path
        self.row_bytes = row_bytes
        self.fd = os.open(path, os.O_RDONLY)
        self.n_rows = os.fstat(self.fd).st_size // row_bytes

    def __del__(self) -> None:
        fd = getattr(self, "fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def rows(self, rows: np.ndarray, row_shape: tuple, dtype: np.dtype) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed) as ``(len(rows), *row_shape)``; each run of
        consecutive rows is read in one call."""
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        buf = np.empty((len(rows), *row_shape), dtype)
        flat = buf.reshape(len(rows), -1).view(np.uint8)
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
            view = memoryview(flat[a:b]).cast("B")
            start, done = int(ordered[a]) * self.row_bytes, 0
            while done < len(view):
                got = os.preadv(self.fd, [view[done:]], start + done)
                if got <= 0:
                    raise StoreError(f"token store shard {self.path} ends before row {int(ordered[a])} "
                                     f"(byte {start + done}); delete the store folder to recompute it")
                done += got
        if np.all(order[:-1] < order[1:]):
            return buf
        out = np.empty_like(buf)
        out[order] = buf
        return out
