"""ndarray indexing for lazy token arrays: one definition for the probes' views and the token store.

A lazy array knows its shape and reads rows (axis 0) by position on demand.
:func:`lazy_getitem` gives exactly what ``np.asarray(lazy)[index]`` gives --
same values, shape, dtype and ``IndexError`` -- for every index numpy
accepts (integers, slices, ``...``, ``None``, integer and boolean arrays,
lists, and tuples mixing them), while reading only the rows the index touches:
the index is split into the rows to read and an equivalent index into those
rows, which numpy then applies. :func:`row_selection` recognises the indices
that only select rows (what cross-validation passes), so a view can stay lazy.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np

__all__ = ["lazy_getitem", "row_selection"]

_VALID = ("only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) and integer or boolean arrays "
          "are valid indices")


def _item(item):
    """``(kind, value, n_axes)`` of one index element, the value converted as numpy would."""
    if item is None:
        return "new", None, 0
    if item is Ellipsis:
        return "ellipsis", item, 0
    if isinstance(item, (bool, np.bool_)):
        return "new", item, 0  # numpy: a boolean scalar adds an axis of length 1 (or 0)
    if isinstance(item, slice):
        return "slice", item, 1
    if isinstance(item, (int, np.integer)):
        return "int", item, 1
    if not isinstance(item, np.ndarray) and not hasattr(item, "__array__") and not isinstance(item, (list, tuple)):
        try:
            return "int", operator.index(item), 1
        except TypeError:
            raise IndexError(_VALID) from None
    arr = np.asarray(item)
    if arr.size == 0 and isinstance(item, (list, tuple)) and arr.dtype == np.float64:
        arr = arr.astype(np.intp)  # numpy reads an empty list as an empty integer index
    if arr.dtype == bool:
        return ("new", arr, 0) if arr.ndim == 0 else ("bool", arr, arr.ndim)
    if not np.issubdtype(arr.dtype, np.integer):
        raise IndexError("arrays used as indices must be of integer (or boolean) type" if arr.ndim else _VALID)
    return ("int", arr, 1) if arr.ndim == 0 else ("array", arr, 1)


def _parse(index, ndim: int) -> list:
    items = [_item(i) for i in (index if isinstance(index, tuple) else (index,))]
    if sum(kind == "ellipsis" for kind, _, _ in items) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(n for _, _, n in items)
    if used > ndim:
        raise IndexError(f"too many indices for array: array is {ndim}-dimensional, but {used} were indexed")
    return items


def _bounds(values: np.ndarray, n: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.intp)
    bad = (values < -n) | (values >= n)
    if bad.any():
        raise IndexError(f"index {int(values[bad].flat[0])} is out of bounds for axis 0 with size {n}")
    return np.where(values < 0, values + n, values)


def _split(index, shape: tuple) -> tuple[np.ndarray | None, tuple]:
    """Sorted rows to read (None: all) and the index into those rows that gives the same result."""
    n = shape[0]
    items = _parse(index, len(shape))
    used = sum(k for _, _, k in items)
    local = [value for _, value, _ in items]
    for pos, (kind, value, _) in enumerate(items):
        if kind == "new":
            continue
        if kind == "ellipsis":
            if len(shape) - used >= 1:
                return None, tuple(local)  # the ellipsis spans axis 0: every row
            continue
        if kind == "int":
            row = int(_bounds(np.asarray(value).reshape(1), n)[0])
            local[pos] = np.array(0) if isinstance(value, np.ndarray) else 0
            return np.array([row], dtype=np.intp), tuple(local)
        if kind == "slice":
            rows = np.arange(n)[value]
            ascending = value.step is None or value.step > 0
            local[pos] = slice(None) if ascending else slice(None, None, -1)
            return (rows if ascending else rows[::-1]), tuple(local)
        if kind == "array":
            rows, inverse = np.unique(_bounds(value, n), return_inverse=True)
            local[pos] = inverse.reshape(value.shape)
            return rows, tuple(local)
        # a boolean array spanning axis 0 (and maybe more)
        if value.shape[0] != n:
            raise IndexError(f"boolean index did not match indexed array along axis 0; size of axis is {n} but "
                             f"size of corresponding boolean axis is {value.shape[0]}")
        rows = np.flatnonzero(value.reshape(n, -1).any(axis=1)) if value.size else np.empty(0, np.intp)
        local[pos] = value[rows]
        return rows, tuple(local)
    return None, tuple(local)


def lazy_getitem(index, shape: tuple, fetch: Callable[[np.ndarray], np.ndarray]):
    """``np.asarray(lazy)[index]``, reading only the rows ``index`` touches.

    Parameters
    ----------
    index : anything numpy accepts as an index
    shape : tuple of int
        Shape of the lazy array.
    fetch : callable
        ``fetch(rows)`` returns the rows at the sorted positions ``rows`` as
        an ndarray of shape ``(len(rows), *shape[1:])``.

    Returns
    -------
    ndarray or numpy scalar
        What the same index gives on the materialised array.

    Raises
    ------
    IndexError
        Where numpy raises it (out of bounds, too many indices, a boolean
        array of the wrong length, a float index...).

    Examples
    --------
    >>> import numpy as np
    >>> data = np.arange(24).reshape(4, 3, 2)
    >>> read = []
    >>> fetch = lambda rows: (read.append(rows.tolist()), data[rows])[1]
    >>> lazy_getitem((..., 0), data.shape, fetch).shape, read
    ((4, 3), [[0, 1, 2, 3]])
    >>> lazy_getitem(([3, 1], [0, 2]), data.shape, fetch).tolist(), read[-1]
    ([[18, 19], [10, 11]], [1, 3])
    """
    rows, local = _split(index, tuple(shape))
    data = fetch(np.arange(shape[0]) if rows is None else rows)
    return data[local]


def row_selection(index, n: int, ndim: int) -> np.ndarray | None:
    """Positions of the rows an index selects when it only selects rows (axis 0 kept), else None.

    Such an index is a slice, a 1-D integer array or list, or a 1-D boolean
    mask of length ``n``, optionally followed by ``...`` or full slices
    (scikit-learn indexes with ``X[indices, ...]``). Its result is the rows at
    those positions, so a view may keep the positions instead of the data.

    Examples
    --------
    >>> row_selection(slice(None, None, -2), 5, 3).tolist()
    [4, 2, 0]
    >>> row_selection(([True, False, True], ...), 3, 3).tolist(), row_selection(1, 3, 3)
    ([0, 2], None)
    """
    items = index if isinstance(index, tuple) else (index,)
    if not items:
        return None
    try:
        parsed = _parse(items, ndim)
    except IndexError:
        return None
    kind, value, _ = parsed[0]
    if any(not (k == "ellipsis" or (k == "slice" and v == slice(None))) for k, v, _ in parsed[1:]):
        return None
    if kind == "slice":
        return np.arange(n)[value]
    if kind == "array" and value.ndim == 1:
        return _bounds(value, n)
    if kind == "bool" and value.ndim == 1:
        if len(value) != n:
            raise IndexError(f"boolean index did not match indexed array along axis 0; size of axis is {n} but "
                             f"size of corresponding boolean axis is {len(value)}")
        return np.flatnonzero(value)
    return None
