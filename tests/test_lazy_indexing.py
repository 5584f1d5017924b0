"""Lazy token arrays index like ndarrays: StoreArray and TokenView against np.asarray over random index expressions."""

import numpy as np
import pytest

from skprobe._indexing import lazy_getitem, row_selection
from skprobe.extraction import TokenStore
from skprobe.extraction.keys import clip_key
from skprobe.probes import TokenView

SHAPE = (7, 3, 4)


def _random_item(rng, size, shape):
    """One index element of any kind numpy accepts (and a few it refuses), for an axis of ``size``."""
    kind = rng.integers(16)
    if kind == 0:
        return int(rng.integers(-size - 1, size + 1))  # sometimes out of bounds
    if kind == 1:
        return np.int64(rng.integers(-size, size))
    if kind == 2:
        return np.array(int(rng.integers(-size, size)))  # a 0-d integer array
    if kind in (3, 4):
        pick = lambda: None if rng.random() < 0.3 else int(rng.integers(-size - 2, size + 3))  # noqa: E731
        step = None if rng.random() < 0.4 else int(rng.choice([-3, -2, -1, 1, 2, 3]))
        return slice(pick(), pick(), step)
    if kind == 5:
        return rng.integers(-size, size, int(rng.integers(0, 5)))
    if kind == 6:
        return rng.integers(-size, size, (2, int(rng.integers(1, 3))))  # a 2-D integer array
    if kind == 7:
        return [int(i) for i in rng.integers(-size, size, int(rng.integers(0, 4)))]
    if kind == 8:
        return rng.random(size) < 0.5
    if kind == 9:
        return [bool(b) for b in rng.random(size) < 0.5]
    if kind == 10:
        return None
    if kind == 11:
        return Ellipsis
    if kind == 12:
        return bool(rng.random() < 0.5)
    if kind == 13:
        return rng.random(size + int(rng.integers(-1, 2))) < 0.5  # sometimes the wrong length
    if kind == 14:
        return 1.5 if rng.random() < 0.5 else np.array([0.0, 1.0])  # refused by numpy
    return rng.random(shape[:2]) < 0.4  # a 2-D mask over the first two axes


def _random_index(rng, shape):
    n = int(rng.integers(1, 5))
    items = []
    for axis in range(n):
        items.append(_random_item(rng, shape[min(axis, len(shape) - 1)], shape))
    if n == 1 and rng.random() < 0.5:
        return items[0]  # a bare index, not a tuple
    return tuple(items)


def _outcome(get, index):
    try:
        out = get(index)
    except (IndexError, ValueError) as exc:
        return type(exc)
    return np.asarray(out), type(out)


def _check_like_numpy(lazy, full, n_cases=600, seed=0):
    rng = np.random.default_rng(seed)
    checked = 0
    for _ in range(n_cases):
        index = _random_index(rng, full.shape)
        expected = _outcome(lambda i: full[i], index)
        got = _outcome(lambda i: lazy[i], index)
        if isinstance(expected, type):
            assert got == expected, f"index {index!r}: numpy raises {expected.__name__}, got {got}"
            continue
        assert not isinstance(got, type), f"index {index!r}: numpy gives shape {expected[0].shape}, got {got}"
        value, kind = got
        assert value.shape == expected[0].shape and value.dtype == expected[0].dtype, index
        np.testing.assert_array_equal(value, expected[0], err_msg=repr(index))
        if expected[1] is not np.ndarray:  # a scalar stays a numpy scalar
            assert kind is expected[1], index
        checked += 1
    assert checked > n_cases // 3  # most expressions were valid ones


@pytest.fixture(scope="module")
def data():
    return np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)


def test_lazy_getitem_matches_numpy_and_reads_only_needed_rows(data):
    reads = []

    class Lazy:
        def __getitem__(self, index):
            return lazy_getitem(index, data.shape, lambda rows: (reads.append(rows), data[rows])[1])

    _check_like_numpy(Lazy(), data)
    assert all(np.all(np.diff(r) > 0) for r in reads)  # sorted, unique rows
    reads.clear()
    Lazy()[[5, 1, 5], 0]
    assert [r.tolist() for r in reads] == [[1, 5]]


def test_token_view_indexes_like_its_array(data, tmp_path):
    mm = np.memmap(tmp_path / "x.dat", dtype=np.float32, mode="w+", shape=SHAPE)
    mm[:] = data
    view = TokenView(mm)
    _check_like_numpy(view, data, seed=1)
    sub = view[np.array([6, 2, 4])]
    _check_like_numpy(sub, data[[6, 2, 4]], n_cases=200, seed=2)
    # row selections stay lazy; the others are ndarrays (numpy's result)
    assert isinstance(view[1:5], TokenView) and isinstance(view[[True] * 7, ...], TokenView)
    for index in (np.array(3), 3, (slice(None), 0), None, (..., 1)):
        assert isinstance(view[index], (np.ndarray, np.generic)), index
    np.testing.assert_array_equal(view[np.array(3)], data[3])


def test_store_array_indexes_like_its_array(data, tmp_path):
    store = TokenStore(tmp_path, {"encoder": "x"}, SHAPE[1:], dtype="float32")
    keys = [clip_key(np.full(3, i, np.float32)) for i in range(SHAPE[0])]
    with store.writer() as writer:
        writer.commit(keys, data)
    arr = store.array(keys)
    _check_like_numpy(arr, data, seed=3)
    # the examples of the reliability report
    np.testing.assert_array_equal(arr[..., 0], data[..., 0])
    np.testing.assert_array_equal(arr[[1, 2], [0, 1]], data[[1, 2], [0, 1]])
    assert arr[None].shape == (1, *SHAPE) and arr[True].shape == (1, *SHAPE) and arr[False].shape == (0, *SHAPE)
    np.testing.assert_array_equal(arr[np.array([[0, 1], [2, 3]])], data[[[0, 1], [2, 3]]])
    squeezed = TokenStore(tmp_path / "one", {"encoder": "x"}, (1, 3, 4), dtype="float32")
    with squeezed.writer() as writer:
        writer.commit(keys, data[:, None])
    _check_like_numpy(squeezed.array(keys, squeeze_layer=True), data, n_cases=200, seed=4)


def test_row_selection_recognises_only_row_indices():
    assert row_selection(slice(1, None, 2), 6, 3).tolist() == [1, 3, 5]
    assert row_selection(([-1, 0], ...), 6, 3).tolist() == [5, 0]
    assert row_selection(([-1, 0], slice(None)), 6, 3).tolist() == [5, 0]
    for index in (1, np.array(1), (slice(None), 0), ([1], 0), None, np.array([[0, 1]]), (..., [0])):
        assert row_selection(index, 6, 3) is None, index
    with pytest.raises(IndexError, match="out of bounds for axis 0 with size 6"):
        row_selection([6], 6, 3)
