"""StoreArray: a read-only, store-backed token array that indexes like an ndarray."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..._indexing import lazy_getitem
from .layout import key_bytes

if TYPE_CHECKING:
    from .tokenstore import TokenStore

__all__ = ["StoreArray"]


class StoreArray:
    """Read-only, store-backed token array: indexes like the ndarray ``np.asarray(arr)``.

    Has ``shape``, ``dtype`` (the store's, float16 by default), ``ndim``,
    ``size``, ``nbytes``, ``__len__``, ``__array__`` and ``__getitem__``, which
    accepts every index numpy accepts (integers, slices, ``...``, ``None``,
    integer and boolean arrays, and tuples of them) and returns what numpy
    returns on the materialised array, reading only the clips the index
    touches (see :func:`skprobe._indexing.lazy_getitem`). Rows are read from
    the shards with ``pread`` (they stay in the page cache, not in the
    process), so a probe can train on batches of a token set larger than
    memory. Pickles as the store's description plus the clip
    keys (no tokens), so joblib and Dask workers re-open the store.

    Parameters
    ----------
    store : TokenStore
    keys : sequence of str
        Hex clip keys, one per row, all stored.
    squeeze_layer : bool, default=False
        Drop the layer axis of rows holding a single layer (3-D output).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from skprobe.extraction.keys import clip_key
    >>> from skprobe.extraction.store import TokenStore
    >>> store = TokenStore(tempfile.mkdtemp(), {"encoder": "demo"}, row_shape=(1, 2, 3))
    >>> keys = [clip_key(np.full(4, i, dtype="float32")) for i in range(3)]
    >>> with store.writer() as writer:
    ...     _ = writer.commit(keys, np.arange(18, dtype="float32").reshape(3, 1, 2, 3))
    >>> arr = store.array(keys, squeeze_layer=True)
    >>> arr.shape, arr[..., 0].tolist()
    ((3, 2, 3), [[0.0, 3.0], [6.0, 9.0], [12.0, 15.0]])
    >>> arr[[2, 0], [1, 0]].tolist()
    [[15.0, 16.0, 17.0], [0.0, 1.0, 2.0]]
    """

    def __init__(self, store: TokenStore, keys: Sequence[str] | np.ndarray, *, squeeze_layer: bool = False,
                 _checked: bool = False) -> None:
        self._store = store
        self.keys = key_bytes(keys)
        self._squeeze = squeeze_layer
        if not _checked:
            store.refresh()
            missing = np.flatnonzero(~store._index_found(self.keys))
            if len(missing):
                raise KeyError(f"token store {store.folder} has no tokens for clip key "
                               f"{self.keys[missing[0]].hex()}")
        row = store.row_shape[1:] if squeeze_layer else store.row_shape
        self.shape = (len(self.keys), *row)
        self.dtype = store.dtype

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape)))
    nbytes = property(lambda self: self.size * self.dtype.itemsize)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"StoreArray(shape={self.shape}, dtype={self.dtype}, store={str(self._store.folder)!r})"

    @property
    def store_id(self) -> str:
        """The backing store's configuration key: with :attr:`keys`, what identifies these tokens."""
        return self._store.config_key

    def _rows(self, positions: np.ndarray) -> np.ndarray:
        out = self._store.read(self.keys[positions])
        return out[:, 0] if self._squeeze else out

    def __getitem__(self, index):
        return lazy_getitem(index, self.shape, self._rows)

    def __array__(self, dtype=None, copy=None):
        out = self._rows(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)

    def __reduce__(self):
        return (_rebuild_array, (self._store, self.keys, self._squeeze))


def _rebuild_array(store: TokenStore, keys: np.ndarray, squeeze: bool) -> StoreArray:
    # The sender checked that every key is stored (and the store only grows): a worker that unpickles the
    # array reads the index on its first read, not here.
    return StoreArray(store, keys, squeeze_layer=squeeze, _checked=True)
