"""A store-backed token array whose pickle is the store's description and the clip keys only."""

from __future__ import annotations

import numpy as np

from ..extraction.store import StoreArray, TokenStore

__all__ = ["ShippableStoreArray"]


class ShippableStoreArray(StoreArray):
    """:class:`~skprobe.extraction.store.StoreArray` that pickles without the store's loaded index.

    joblib's Dask backend puts estimator inputs into every task; this pickle holds the store
    folder, its configuration and 32 bytes per clip key, and the receiving worker re-reads the
    index and memory-maps the shards. (A plain ``StoreArray`` also pickles the store's whole
    in-memory index: about 100 bytes per stored clip, once per task.)

    Examples
    --------
    >>> import pickle, tempfile, numpy as np
    >>> from skprobe.extraction.cache import clip_key
    >>> store = TokenStore(tempfile.mkdtemp(), {"encoder": "demo"}, row_shape=(1, 4, 3))
    >>> keys = [clip_key(np.full(10, i, dtype="float32")) for i in range(3)]
    >>> with store.writer() as w:
    ...     w.commit(keys, np.ones((3, 1, 4, 3), dtype="float32"))
    3
    >>> arr = ShippableStoreArray(store, keys, squeeze_layer=True)
    >>> copy = pickle.loads(pickle.dumps(arr))
    >>> copy.shape, bool((copy[1:] == arr[1:]).all())
    ((3, 4, 3), True)
    """

    def __reduce__(self):
        store = self._store
        description = (str(store.root), store.config, store.row_shape, store.dtype.name, store.verify)
        return (_rebuild, (description, self.keys, self._squeeze))


def _rebuild(description: tuple, keys: np.ndarray, squeeze: bool) -> ShippableStoreArray:
    root, config, row_shape, dtype, verify = description
    return ShippableStoreArray(TokenStore(root, config, row_shape, dtype=dtype, verify=verify), keys,
                               squeeze_layer=squeeze)
