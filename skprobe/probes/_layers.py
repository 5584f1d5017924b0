"""Multi-layer token arrays ``(n_clips, n_layers, n_tokens, dim)`` read as ``(n_clips, n_layers * n_tokens, dim)``.

The probes' data path (:class:`~skprobe.probes._tokens.TokenSource`, the
training engine, the GPU staging) reads 3-D token arrays a batch of clips at a
time. A multi-layer probe puts the layers of a clip one after another on the
token axis and splits them again in its network, so the layers travel through
that path like the tokens of one long map, and a memory map or a store of L
layers streams like single-layer tokens L times as long. :func:`flatten_layers`
makes that view without copying the tokens.
"""

from __future__ import annotations

import numpy as np

from ._tokens import TokenView

__all__ = ["LayerFlatArray", "flatten_layers"]


def _flat_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    n, n_layers, n_tokens, dim = (int(s) for s in shape)
    return n, n_layers * n_tokens, dim


def _reshapes_in_place(X: np.ndarray) -> bool:
    """Whether ``X (n, L, T, D)`` merges its layer and token axes without a copy."""
    return X.shape[1] == 1 or X.shape[2] == 1 or X.strides[1] == X.shape[2] * X.strides[2]


class LayerFlatArray:
    """A 4-D token array-like seen as 3-D, one clip's layers after one another; reads a batch at a time.

    For array-likes that cannot be reshaped in place (a token store, a lazy
    view of one): indexing the clip axis reads those clips from ``data`` and
    reshapes them. Has the array-like contract of the probes (``shape``,
    ``dtype``, ``ndim``, ``__len__``, ``__getitem__``, ``__array__``) and
    pickles as ``data``.

    Parameters
    ----------
    data : array-like of shape (n_clips, n_layers, n_tokens, dim)

    Examples
    --------
    >>> import numpy as np
    >>> flat = LayerFlatArray(np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2))
    >>> flat.shape, flat[np.array([1])][0, 2].tolist()
    ((2, 6, 2), [16.0, 17.0])
    """

    ndim = 3

    def __init__(self, data) -> None:
        self.data = data
        self.shape = _flat_shape(data.shape)
        self.dtype = np.dtype(data.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def _flat(self, rows: np.ndarray) -> np.ndarray:
        return rows.reshape(len(rows), *self.shape[1:])

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            rows = self._flat(np.asarray(self.data[np.array([int(key) % len(self)])]))[0]
        else:
            rows = self._flat(np.asarray(self.data[key]))
        return rows[(slice(None), *rest)] if rest and not isinstance(key, (int, np.integer)) else rows[rest]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._flat(np.asarray(self.data))
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"LayerFlatArray(shape={self.shape}, dtype={self.dtype}, layers={self.data.shape[1]})"


def flatten_layers(X):
    """``X (n, L, T, D)`` as ``(n, L * T, D)`` without copying its tokens.

    An ndarray or ``np.memmap`` whose layer and token axes merge in place
    comes back as a reshaped view (a memory map stays one, so it keeps the
    probes' file reads); a :class:`~skprobe.probes.TokenView` of such an array
    as a view of the reshaped array with the same clip indices; anything
    else (a store-backed array, a strided array) as a :class:`LayerFlatArray`
    that reshapes each batch it reads.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.zeros((4, 3, 5, 2), dtype=np.float16)
    >>> flat = flatten_layers(X)
    >>> flat.shape, np.shares_memory(flat, X)
    ((4, 15, 2), True)
    """
    if isinstance(X, np.ndarray) and _reshapes_in_place(X):
        return X.reshape(_flat_shape(X.shape))
    if isinstance(X, TokenView) and isinstance(X.data, np.ndarray) and _reshapes_in_place(X.data):
        return TokenView(X.data.reshape(_flat_shape(X.data.shape)), X.indices)
    return LayerFlatArray(X)
