"""Token arrays as the probes read them: validated in chunks, converted per batch.

A probe's ``X`` may be an in-memory array, an ``np.memmap`` of tens of GB or a
store-backed array-like (an object with ``shape``, ``dtype``, ``ndim``,
``__len__``, ``__getitem__`` returning ndarrays, and ``__array__``). Nothing
here makes a converted copy of the whole ``X``: :func:`check_chunks` validates
it a chunk at a time and :class:`TokenSource` reads the clips of one batch,
converted to the dtype the device receives (float16 stays float16, float32 and
float64 become float32).

Pages of a read-only or shared ``np.memmap`` that a pass has touched are
released from the process (``madvise(MADV_DONTNEED)``) every
:data:`RELEASE_BYTES`; they stay in the page cache, so a later read is a minor
fault, and the resident set of a fit does not grow with the file size.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator

import numpy as np
import torch

from .._indexing import lazy_getitem, row_selection

__all__ = ["TokenSource", "TokenView", "check_chunks", "is_token_array"]

#: Clips read per validation chunk are chosen to hold about this many bytes.
CHUNK_BYTES = 32 << 20
#: Bytes read from a memory map between two releases of its pages.
RELEASE_BYTES = 128 << 20
_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_F32_MAX = float(np.finfo(np.float32).max)


def is_token_array(X, ndims: tuple[int, ...] = (2, 3)) -> bool:
    """Whether ``X`` is read in chunks: a float ndarray/memmap or a store-backed array-like of ``ndims`` dims."""
    if isinstance(X, (list, tuple)) or hasattr(X, "iloc") or hasattr(X, "tocsr"):
        return False  # lists, pandas and scipy.sparse go through scikit-learn's validation
    if not all(hasattr(X, a) for a in ("shape", "dtype", "ndim", "__getitem__", "__len__")):
        return False
    try:
        dtype = np.dtype(X.dtype)
    except TypeError:
        return False
    return dtype in _FLOAT_DTYPES and X.ndim in ndims and all(int(s) > 0 for s in X.shape)


def _mapping(X) -> mmap.mmap | None:
    """The ``mmap`` behind ``X`` when its pages may be dropped safely (not a private ``mode='c'`` map)."""
    obj = X
    for _ in range(8):
        if obj is None:
            return None
        mm = getattr(obj, "_mmap", None)
        if isinstance(mm, mmap.mmap):
            return mm if getattr(obj, "mode", "c") != "c" and hasattr(mm, "madvise") else None
        obj = getattr(obj, "base", None)
    return None


class _FileRows:
    """Reads rows of a C-ordered ``np.memmap`` with ``os.preadv`` instead of through the mapping.

    Pages read through a memory map count in the process's resident set (and
    a kernel may map a whole large folio around every random read); pages
    read with ``pread`` stay in the page cache only.
    """

    def __init__(self, X: np.memmap) -> None:
        mm = X._mmap
        start = int(X.offset) - int(X.offset) % mmap.ALLOCATIONGRANULARITY  # file offset of the mapping
        mapped_at = np.frombuffer(mm, dtype=np.uint8).ctypes.data
        self.position = start + (X.ctypes.data - mapped_at)
        self.stride = int(X.strides[0])
        self.row_shape, self.dtype = X.shape[1:], X.dtype
        self.fd = os.open(X.filename, os.O_RDONLY)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            os.close(self.fd)

    def read(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), *self.row_shape), dtype=self.dtype)
        if not len(idx):
            return out
        row = out[0].nbytes
        flat = out.reshape(len(idx), -1).view(np.uint8)
        runs = np.flatnonzero(np.diff(idx) != 1) + 1 if self.stride == row else np.arange(1, len(idx))
        for a, b in zip(np.r_[0, runs], np.r_[runs, len(idx)]):
            view = memoryview(flat[a:b]).cast("B")
            done, pos = 0, self.position + int(idx[a]) * self.stride
            while done < len(view):
                got = os.preadv(self.fd, [view[done:]], pos + done)
                if got <= 0:
                    raise OSError(f"short read from {self.filename_hint()} at byte {pos + done}")
                done += got
        return out

    def filename_hint(self) -> str:
        return f"file descriptor {self.fd}"


def _file_rows(X) -> _FileRows | None:
    """A pread reader for ``X`` when it is a memmap of whole C-ordered rows on a file, else None."""
    if not isinstance(X, np.memmap) or not isinstance(getattr(X, "_mmap", None), mmap.mmap):
        return None
    if not getattr(X, "filename", None) or not X[:1].flags.c_contiguous or X.strides[0] <= 0:
        return None
    try:
        return _FileRows(X)
    except (OSError, ValueError, TypeError):
        return None


class TokenView:
    """A lazy subset of the clips of a token array: indexing it copies nothing.

    scikit-learn's cross-validation indexes ``X`` with each fold's clip
    indices, which copies a fold of an ``np.memmap`` into every worker's
    memory. A ``TokenView`` keeps the indices instead, and pickles as the
    array (which joblib passes to workers as a memory map, by file name) plus
    the indices, so ``GridSearchCV(..., n_jobs=k)`` workers share one copy of
    the tokens through the page cache. Probes read it a batch at a time;
    ``np.asarray(view)`` materialises it.

    Indexing gives what ``np.asarray(view)[key]`` gives for every index numpy
    accepts, reading only the clips the index touches; an index that only
    selects clips (a slice, a 1-D integer array or list, a 1-D boolean mask,
    optionally followed by ``...``) returns a lazy ``TokenView`` instead.

    Parameters
    ----------
    data : array-like of shape (n_clips, n_tokens, dim) or (n_clips, dim)
        Usually an ``np.memmap`` (or ``np.load(..., mmap_mode="r")``).
    indices : array of int, optional
        Clips of ``data`` in this view (all by default).

    Examples
    --------
    >>> import numpy as np
    >>> view = TokenView(np.arange(24, dtype=np.float32).reshape(4, 2, 3))
    >>> sub = view[np.array([3, 1])]
    >>> sub.shape, sub[0][0].tolist()
    ((2, 2, 3), [18.0, 19.0, 20.0])
    >>> view[..., 0].shape, view[[0, 3], [1, 0]].tolist()
    ((4, 2), [[3.0, 4.0, 5.0], [18.0, 19.0, 20.0]])
    """

    def __init__(self, data, indices=None) -> None:
        self.data = data
        self.indices = np.arange(len(data)) if indices is None else np.asarray(indices, dtype=np.intp)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.indices), *tuple(self.data.shape[1:]))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def __len__(self) -> int:
        return len(self.indices)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Clips ``idx`` of the view as an ndarray (read in file order)."""
        positions = self.indices[np.asarray(idx, dtype=np.intp)]
        order = np.argsort(positions, kind="stable")
        out = np.empty((len(positions), *self.shape[1:]), dtype=self.dtype)
        out[order] = np.asarray(self.data[positions[order]])
        return out

    def __getitem__(self, key):
        """``np.asarray(view)[key]``; an index that only selects clips returns a lazy ``TokenView`` instead.

        Every index numpy accepts gives numpy's values, shape and errors
        (:func:`skprobe._indexing.lazy_getitem`); a slice, an integer array or
        a boolean mask along the clips (optionally followed by ``...``) keeps
        the view lazy.
        """
        rows = row_selection(key, len(self), self.ndim)
        if rows is not None:
            return TokenView(self.data, self.indices[rows])
        return lazy_getitem(key, self.shape, self.rows)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.rows(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"TokenView(shape={self.shape}, dtype={self.dtype})"


class TokenSource:
    """Clips of a validated token array, read and converted one batch at a time.

    Batches come out as ``(n, n_tokens, dim)`` float16 (when ``X`` is float16)
    or float32 ndarrays; a 2-D ``X`` reads as one token per clip.

    Parameters
    ----------
    data : ndarray, np.memmap, TokenView or store-backed array-like
    tokens : slice, optional
        Token-axis slice applied to every batch (a lazy ``source[:, a:b]``).

    Examples
    --------
    >>> import numpy as np
    >>> source = TokenSource(np.ones((5, 3, 2), dtype=np.float64))
    >>> source.shape, source.take(np.array([0, 4])).dtype
    ((5, 3, 2), dtype('float32'))
    """

    def __init__(self, data, tokens: slice | None = None) -> None:
        self.data = data
        self.tokens = tokens
        base = data.data if isinstance(data, TokenView) else data
        self._file = _file_rows(base)
        self._mmap = None if self._file is not None else _mapping(base)
        self._unreleased = 0
        n, *rest = (int(s) for s in data.shape)
        n_tokens, dim = (1, rest[0]) if len(rest) == 1 else rest
        if tokens is not None:
            n_tokens = len(range(*tokens.indices(n_tokens)))
        self.shape = (n, n_tokens, dim)
        self.np_dtype = np.dtype(np.float16) if np.dtype(data.dtype) == np.float16 else np.dtype(np.float32)

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the tensors this source yields."""
        return torch.float16 if self.np_dtype == np.float16 else torch.float32

    @property
    def clip_nbytes(self) -> int:
        """Bytes of one clip as read (float16 or float32)."""
        return self.shape[1] * self.shape[2] * self.np_dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, key) -> np.ndarray:
        data = self.data
        if isinstance(data, TokenView):  # read the underlying array directly
            key = data.indices[np.arange(len(data))[key] if isinstance(key, slice) else key]
            data = data.data
        if self._file is not None:
            return self._file.read(np.arange(len(data))[key] if isinstance(key, slice) else np.asarray(key))
        rows = np.asarray(data[key])
        if self._mmap is not None:
            # a page fault may map more than the page read (fault-around, large folios): count 64 KB per clip
            self._unreleased += rows.nbytes if isinstance(key, slice) else len(rows) * max(rows[0].nbytes, 1 << 16)
            if self._unreleased > RELEASE_BYTES:
                self.release()
        return rows

    def release(self) -> None:
        """Drop the pages of a memory-mapped ``X`` from this process (they stay in the page cache)."""
        if self._mmap is not None:
            self._mmap.madvise(mmap.MADV_DONTNEED)
        self._unreleased = 0

    def _convert(self, rows: np.ndarray) -> np.ndarray:
        if rows.ndim == 2:
            rows = rows[:, None, :]
        if self.tokens is not None:
            rows = rows[:, self.tokens]
        with np.errstate(over="ignore"):  # float64 beyond float32 range: caught by check_chunks
            rows = np.ascontiguousarray(rows, dtype=self.np_dtype)
        # torch cannot share read-only memory (a memmap opened with mode="r"): copy the batch
        return rows if rows.flags.writeable else rows.copy()

    def _gatherable(self) -> torch.Tensor | None:
        """The tokens as a CPU tensor sharing their memory, when torch can gather clips from them directly."""
        data = self.data
        if (self._file is None and self._mmap is None and isinstance(data, np.ndarray) and data.ndim == 3
                and self.tokens is None and data.dtype == self.np_dtype and data.flags.c_contiguous
                and data.flags.writeable):
            return torch.from_numpy(data)
        return None

    def take_into(self, idx: np.ndarray, out: torch.Tensor) -> torch.Tensor:
        """Clips ``idx`` written into the CPU tensor ``out`` (for instance a pinned buffer); returns ``out``.

        Tokens in memory are gathered straight into ``out`` by torch on all
        cores: no intermediate array, whose fresh pages would cost more to
        fault in than the copy itself.
        """
        tensor = self._gatherable()
        if tensor is not None:
            return torch.index_select(tensor, 0, torch.from_numpy(np.asarray(idx, dtype=np.int64)), out=out)
        return out.copy_(torch.from_numpy(self.take(idx)))

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Clips ``idx`` (any order), converted, as a contiguous ndarray ``(len(idx), n_tokens, dim)``."""
        idx = np.asarray(idx, dtype=np.intp)
        if len(idx) and np.all(idx[1:] == idx[:-1] + 1):
            return self.slice(int(idx[0]), int(idx[-1]) + 1)
        if self._file is None and self._mmap is None and not isinstance(self.data, TokenView):
            tensor = self._gatherable()
            if tensor is not None:  # torch's gather runs on all cores, numpy's fancy indexing on one
                return tensor.index_select(0, torch.from_numpy(idx)).numpy()
            return self._convert(self._read(idx))  # in memory: one gather, no sort and scatter
        order = np.argsort(idx, kind="stable")
        rows = self._convert(self._read(idx[order]))  # file order: sequential reads from a memory map
        out = np.empty_like(rows)
        out[order] = rows
        return out

    def subset(self, idx: np.ndarray) -> TokenSource:
        """Clips ``idx`` (sorted) as a source over the same data: a lazy view, nothing is read or copied.

        >>> source = TokenSource(np.arange(12, dtype=np.float32).reshape(4, 3, 1))
        >>> source.subset(np.array([1, 3])).take(np.array([1]))[0, :, 0].tolist()
        [9.0, 10.0, 11.0]
        """
        view = self.data[idx] if isinstance(self.data, TokenView) else TokenView(self.data, idx)
        return TokenSource(view, self.tokens)

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Clips ``start:stop``, converted."""
        return self._convert(self._read(slice(start, stop)))

    def chunks(self, chunk_bytes: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, raw rows)`` over all clips, about ``chunk_bytes`` (:data:`CHUNK_BYTES`) at a time, unconverted."""
        chunk_bytes = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
        step = max(1, chunk_bytes // max(1, self.shape[1] * self.shape[2] * np.dtype(self.data.dtype).itemsize))
        for start in range(0, len(self), step):
            yield start, self._read(slice(start, min(len(self), start + step)))
        self.release()

    def tensor_chunks(self, chunk_bytes: int | None = None) -> Iterator[torch.Tensor]:
        """Converted clips as CPU tensors, about ``chunk_bytes`` at a time."""
        for _, rows in self.chunks(chunk_bytes):
            yield torch.from_numpy(self._convert(rows))

    # torch-tensor-like access, so code written for a token tensor keeps working on a source
    def __getitem__(self, key):
        """``source[i:j]`` / ``source[idx]`` -> tensor; ``source[:, a:b]`` -> lazy token-axis view."""
        if isinstance(key, tuple):
            first, *rest = key
            if first == slice(None) and len(rest) == 1 and isinstance(rest[0], slice) and self.tokens is None:
                return TokenSource(self.data, rest[0])
            return self[first][(slice(None), *rest)]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return torch.from_numpy(self.slice(start, max(start, stop)))
            key = np.arange(start, stop, step)
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return torch.from_numpy(self.take(np.atleast_1d(np.asarray(key))))


def check_chunks(source: TokenSource, name: str = "X") -> None:
    """Raise ``ValueError`` naming the first clip with NaN, infinity or a value beyond float32.

    Runs chunk by chunk after the conversion to the compute dtype, so float64
    tokens that overflow float32 are caught as well as NaN and infinity.
    """
    for start, rows in source.chunks():
        flat = rows.reshape(len(rows), -1)
        with np.errstate(over="ignore", invalid="ignore"):
            converted = flat if flat.dtype != np.float64 else flat.astype(np.float32)
            bad = ~np.isfinite(converted).all(axis=1)
        if not bad.any():
            continue
        first = int(np.argmax(bad))
        clip = flat[first]
        source.release()
        if np.isnan(clip).any():
            what = "NaN"
        elif np.isinf(clip).any():
            what = "infinity"
        else:
            what = (f"values beyond the float32 range (largest magnitude {np.abs(clip).max():.3g} > "
                    f"{_F32_MAX:.3g}; the probes compute in float32: rescale the tokens)")
        raise ValueError(f"Input {name} contains {what} in clip {start + first} (the first bad clip)")
