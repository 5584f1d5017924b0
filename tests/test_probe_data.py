"""The probes' data path: dtypes, memory maps, array-likes, chunked checks, batching, budgets."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from sklearn.model_selection import cross_val_predict

from skprobe import AttentiveProbeClassifier, LinearProbeClassifier, PrototypicalProbeClassifier
from skprobe.probes import TokenView, _tokens, _training, get_training_options, set_training_options, training_options
from skprobe.probes._batches import HostPrefetcher
from skprobe.probes._tokens import TokenSource

# on toy tensors torch's thread synchronisation costs far more than it saves (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROBES = [LinearProbeClassifier, AttentiveProbeClassifier, PrototypicalProbeClassifier]
FAST = dict(max_iter=3, random_state=0)


class StoreArray:
    """The store-backed array-like contract: shape, dtype, ndim, len, getitem -> ndarray, __array__."""

    def __init__(self, data):
        self._data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.reads = []

    def __len__(self):
        return len(self._data)

    def __getitem__(self, key):
        self.reads.append(key)
        return np.array(self._data[key])

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the probe materialised the whole array")


def _memmap(tmp_path, X, name="tokens.dat"):
    mm = np.memmap(tmp_path / name, dtype=X.dtype, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    return np.memmap(tmp_path / name, dtype=X.dtype, mode="r", shape=X.shape)


@pytest.mark.parametrize("Probe", PROBES)
def test_memmap_and_array_like_fit_like_the_array(Probe, multilabel_tokens, tmp_path):
    X, Y = multilabel_tokens
    X16 = X.astype(np.float16)
    reference = Probe(**FAST).fit(X16, Y)
    expected = reference.decision_function(X16)
    for data in (_memmap(tmp_path, X16), StoreArray(X16), TokenView(_memmap(tmp_path, X16, "b.dat"))):
        clf = Probe(**FAST).fit(data, Y)
        assert clf.n_features_in_ == X.shape[2] and not hasattr(clf, "feature_names_in_")
        np.testing.assert_array_equal(clf.decision_function(data), expected)
        np.testing.assert_array_equal(clf.predict(data), reference.predict(X16))


def test_take_into_writes_the_clips_of_take(tmp_path):
    """Gathering into a given buffer (the pinned staging path on a GPU) equals take() for every kind of X."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5, 6)).astype(np.float16)
    idx = np.array([3, 17, 4, 39, 0])
    sources = [TokenSource(X), TokenSource(_memmap(tmp_path, X)), TokenSource(StoreArray(X)),
               TokenSource(TokenView(X, np.arange(40)[::-1].copy())), TokenSource(X.astype(np.float64)),
               TokenSource(X[:, 0]), TokenSource(X, tokens=slice(1, 4))]
    for source in sources:
        out = torch.full((len(idx), *source.shape[1:]), -1.0, dtype=source.dtype)
        assert source.take_into(idx, out) is out
        np.testing.assert_array_equal(out.numpy(), source.take(idx))
    fast = TokenSource(X)
    assert fast._gatherable() is not None and TokenSource(_memmap(tmp_path, X, "c.dat"))._gatherable() is None


def test_subset_reads_the_clips_of_the_array_lazily(tmp_path):
    """A subset of every kind of source (nested views and token slices included) reads what ndarray indexing gives."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 5, 4)).astype(np.float32)
    reverse = np.arange(30)[::-1].copy()
    idx = np.array([0, 4, 5, 17, 29])
    cases = [(TokenSource(X), X), (TokenSource(_memmap(tmp_path, X)), X),
             (TokenSource(TokenView(X, reverse)), X[reverse]), (TokenSource(X, tokens=slice(1, 3)), X[:, 1:3])]
    for source, expected in cases:
        subset = source.subset(idx)
        base = source.data.data if isinstance(source.data, TokenView) else source.data
        assert isinstance(subset.data, TokenView) and subset.data.data is base  # one view over the base, not nested
        assert subset.shape == (len(idx), *expected.shape[1:])
        np.testing.assert_array_equal(subset.take(np.array([4, 1, 2])), expected[idx][[4, 1, 2]])
        np.testing.assert_array_equal(subset.subset(np.array([1, 3])).take(np.arange(2)), expected[idx[[1, 3]]])


def test_float_dtypes_are_read_in_place(multilabel_tokens):
    X, Y = multilabel_tokens
    clf = LinearProbeClassifier(**FAST).fit(X, Y)
    # float64 is converted per batch: the result equals converting X first.
    np.testing.assert_array_equal(clf.decision_function(X.astype(np.float64)), clf.decision_function(X))
    store = StoreArray(X.astype(np.float16))
    clf.fit(store, Y)
    assert all(not isinstance(k, slice) or (k.stop - k.start) < len(X) or len(X) <= 128 for k in store.reads)


def test_list_input_and_array_input_give_the_same_fit(multilabel_tokens):
    X, Y = multilabel_tokens
    X2 = X[:, 0].astype(np.float64)
    from_list = LinearProbeClassifier(**FAST).fit(X2.tolist(), Y)
    from_array = LinearProbeClassifier(**FAST).fit(X2, Y)
    assert from_list.n_features_in_ == from_array.n_features_in_ == X.shape[2]
    np.testing.assert_array_equal(from_list.decision_function(X2), from_array.decision_function(X2.tolist()))


@pytest.mark.parametrize("bad, what", [(np.nan, "NaN"), (np.inf, "infinity"), (1e39, "values beyond the float32 range")])
def test_chunked_check_names_the_first_bad_clip(bad, what, tmp_path, monkeypatch):
    monkeypatch.setattr(_tokens, "CHUNK_BYTES", 8 * 3 * 4 * 7)  # several chunks of 7 clips
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3, 4))
    X[23, 1, 2] = bad
    X[31, 0, 0] = bad
    y = np.arange(40) % 2
    mm = _memmap(tmp_path, X if bad == 1e39 else X.astype(np.float16))
    with pytest.raises(ValueError, match=rf"Input X contains {what}.* in clip 23 \(the first bad clip\)"):
        LinearProbeClassifier(**FAST).fit(mm, y)
    clf = LinearProbeClassifier(**FAST).fit(np.nan_to_num(X, posinf=0).clip(-1e3, 1e3), y)
    with pytest.raises(ValueError, match="in clip 23"):
        clf.predict(mm)


def test_float64_beyond_float32_is_rejected_not_nan_probabilities():
    X = np.ones((6, 2, 3))
    X[4] = 1e300
    with pytest.raises(ValueError, match="beyond the float32 range.*clip 4"):
        LinearProbeClassifier(**FAST).fit(X, np.arange(6) % 2)
    with pytest.raises(ValueError, match="infinity or a value too large for dtype\\('float32'\\)"):
        LinearProbeClassifier(**FAST).fit(X.tolist(), np.arange(6) % 2)  # lists: scikit-learn casts to float32


@pytest.mark.parametrize("Probe", PROBES)
def test_predictions_do_not_depend_on_batch_companions(Probe, multilabel_tokens):
    X, Y = multilabel_tokens
    clf = Probe(batch_size=16, **FAST).fit(X, Y)  # 120 clips: 8 inference batches, the last padded
    full = clf.predict_proba(X)
    perm = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_array_equal(clf.predict_proba(X[perm]), full[perm])
    np.testing.assert_array_equal(clf.predict_proba(X[37:41]), full[37:41])
    # Another batch size changes the problem shape: float32 rounding only.
    other = clf.set_params(batch_size=5).predict_proba(X)
    np.testing.assert_allclose(other, full, rtol=1e-5, atol=1e-6)


def test_inspection_methods_are_batched_and_order_independent(multilabel_tokens):
    X, Y = multilabel_tokens
    clf = PrototypicalProbeClassifier(n_prototypes_per_class=2, batch_size=32, **FAST).fit(X, Y)
    sims = clf.prototype_similarities(X)
    assert sims.shape == (len(X), X.shape[1], 6)
    np.testing.assert_array_equal(clf.prototype_similarities(X[::-1]), sims[::-1])


def test_token_view_in_cross_validation_is_lazy(multilabel_tokens, tmp_path):
    X, Y = multilabel_tokens
    view = TokenView(_memmap(tmp_path, X))
    sub = view[np.arange(10), ...]
    assert isinstance(sub, TokenView) and sub.shape == (10, *X.shape[1:])
    np.testing.assert_array_equal(np.asarray(view[[5, 2]]), X[[5, 2]])
    a = cross_val_predict(LinearProbeClassifier(**FAST), view, Y, cv=3, method="predict_proba")
    b = cross_val_predict(LinearProbeClassifier(**FAST), X, Y, cv=3, method="predict_proba")
    np.testing.assert_array_equal(a, b)


def test_source_reads_like_a_tensor():
    X = np.arange(2 * 5 * 3 * 4, dtype=np.float64).reshape(10, 3, 4)
    source = TokenSource(X)
    assert source.shape == (10, 3, 4) and source.dtype == torch.float32 and len(source) == 10
    torch.testing.assert_close(source[2:4], torch.from_numpy(X[2:4]).float())
    torch.testing.assert_close(source[torch.tensor([7, 1])], torch.from_numpy(X[[7, 1]]).float())
    patches = source[:, 1:]
    assert isinstance(patches, TokenSource) and patches.shape == (10, 2, 4)
    torch.testing.assert_close(patches[0:2], torch.from_numpy(X[0:2, 1:]).float())
    assert TokenSource(X[:, 0]).shape == (10, 1, 4)


def test_memmap_pages_are_released(tmp_path, monkeypatch):
    X = np.random.default_rng(0).normal(size=(2000, 8, 16)).astype(np.float16)
    mm = _memmap(tmp_path, X)
    assert TokenSource(mm)._file is not None  # C-ordered rows: read with preadv, nothing mapped
    np.testing.assert_array_equal(TokenSource(mm).take(np.array([7, 3, 4])), X[[7, 3, 4]])
    released = []
    source = TokenSource(mm[:, :, ::2])  # strided rows: read through the mapping, pages released
    assert source._file is None and source._mmap is not None
    monkeypatch.setattr(_tokens, "RELEASE_BYTES", 64 * 1024)
    monkeypatch.setattr(source, "_mmap", type("Map", (), {"madvise": lambda self, *a: released.append(a)})())
    for _ in source.chunks(chunk_bytes=32 * 1024):
        pass
    assert len(released) >= 3  # every 64 KB read, and at the end
    assert TokenSource(np.memmap(tmp_path / "tokens.dat", dtype=np.float16, mode="c", shape=X.shape))._mmap is None


def test_peak_memory_does_not_grow_with_the_memmap(tmp_path):
    """Fit and predict from float16 memory maps of 16 MB and 64 MB: peak RSS grows by far less than the file."""
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        import torch
        from skprobe.probes import _tokens
        from skprobe import LinearProbeClassifier
        _tokens.RELEASE_BYTES = _tokens.CHUNK_BYTES = 4 << 20
        path, n = sys.argv[1], int(sys.argv[2])
        torch.set_num_threads(1)
        LinearProbeClassifier(max_iter=1, batch_size=512, cv=None).fit(np.ones((600, 16, 32), np.float16),
                                                              np.arange(600) % 2).predict(np.ones((600, 16, 32)))
        X = np.memmap(path, dtype=np.float16, mode="r", shape=(n, 16, 32))
        y = np.arange(n) % 2
        def status(key):
            return int([line.split()[1] for line in open("/proc/self/status") if line.startswith(key)][0])
        # VmHWM reset to the current RSS (getrusage's ru_maxrss would carry pytest's peak across fork + exec)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        base = status("VmRSS:")
        LinearProbeClassifier(max_iter=1, batch_size=64, cv=None, random_state=0).fit(X, y).predict(X)
        print(json.dumps({"growth_mb": (status("VmHWM:") - base) / 1024}))
    """)
    growth = {}
    for n in (16384, 65536):  # 16 MB and 64 MB of float16 tokens
        mm = np.memmap(tmp_path / f"{n}.dat", dtype=np.float16, mode="w+", shape=(n, 16, 32))
        mm[:] = np.random.default_rng(0).normal(size=(1, 16, 32))
        mm.flush()
        del mm
        runs = []
        for _ in range(2):  # the peak of one process varies by several MB (allocator, page faults): take the lower
            out = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{n}.dat"), str(n)], check=True,
                                 capture_output=True, text=True, cwd=str(tmp_path), env=_env())
            runs.append(json.loads(out.stdout.strip().splitlines()[-1])["growth_mb"])
        growth[n] = min(runs)
    # 48 MB more tokens; the linear probe keeps its pooled features (n x 32 float32: 6 MB more) in memory
    assert growth[65536] - growth[16384] < 16, growth


def _env():
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(__import__("pathlib").Path(__file__).resolve().parents[1]),
                                         env.get("PYTHONPATH", "")])
    return env


# -- budgets, memory errors, prefetching --------------------------------------------------------------

def test_budget_too_small_for_one_batch(multilabel_tokens):
    X, Y = multilabel_tokens
    with training_options(device_memory_budget=1000):
        with pytest.raises(ValueError, match=r"device_memory_budget=1,000 bytes cannot hold one batch of 120 clips"):
            LinearProbeClassifier(batch_size=128, **FAST).fit(X, Y)
    with pytest.raises(ValueError, match="device_memory_budget must be None"):
        set_training_options(device_memory_budget=2.5)
    with pytest.raises(TypeError, match="unknown training option"):
        set_training_options(budget=1)
    assert get_training_options().device_memory_budget is None


def test_budget_from_environment(monkeypatch):
    monkeypatch.setenv("SKPROBE_DEVICE_MEMORY_BUDGET", "0.3")
    assert get_training_options().device_memory_budget == 0.3
    monkeypatch.setenv("SKPROBE_DEVICE_MEMORY_BUDGET", "2e9")
    assert get_training_options().device_memory_budget == 2_000_000_000


def test_out_of_memory_names_the_budget(multilabel_tokens, monkeypatch):
    X, Y = multilabel_tokens

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(_training, "_fit", out_of_memory)
    with pytest.raises(MemoryError, match=r"ran out of memory.*device_memory_budget.*or lower batch_size"):
        LinearProbeClassifier(**FAST).fit(X, Y)


def test_prefetcher_order_errors_and_early_exit():
    source = TokenSource(np.arange(40, dtype=np.float32).reshape(20, 1, 2))
    batches = [np.array([i, i + 1]) for i in range(0, 20, 2)]
    got = [b[:, 0, 0].tolist() for b in HostPrefetcher(source, batches, torch.device("cpu"), pad_to=3)]
    assert got == [[2.0 * i, 2.0 * i + 2, 0.0] for i in range(0, 20, 2)]

    def failing():
        yield np.array([0])
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(HostPrefetcher(source, failing(), torch.device("cpu")))
    prefetcher = HostPrefetcher(source, batches, torch.device("cpu"), depth=1)
    for _ in prefetcher:
        break
    assert not prefetcher._thread.is_alive()  # closing the loop stops the reader


# -- CUDA ------------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("Probe", PROBES)
def test_cuda_resident_and_streamed_training_agree_in_quality(Probe, multilabel_tokens):
    X, Y = multilabel_tokens
    resident = Probe(device="cuda", **FAST).fit(X.astype(np.float16), Y)
    with training_options(device_memory_budget=X.shape[1] * X.shape[2] * 2 * 128):
        streamed = Probe(device="cuda", **FAST).fit(X.astype(np.float16), Y)
    np.testing.assert_allclose(streamed.decision_function(X), resident.decision_function(X), atol=1e-3)
    assert all(t.device.type == "cpu" for t in resident.module_.state_dict().values())


@cuda
def test_cuda_predictions_are_order_and_subset_invariant(multilabel_tokens):
    X, Y = multilabel_tokens
    for Probe in PROBES:
        clf = Probe(device="cuda", batch_size=16, **FAST).fit(X, Y)
        full = clf.decision_function(X)
        perm = np.random.default_rng(0).permutation(len(X))
        np.testing.assert_allclose(clf.decision_function(X[perm]), full[perm], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(clf.decision_function(X[3:9]), full[3:9], rtol=1e-7, atol=1e-9)
        assert all(t.device.type == "cpu" for t in clf.module_.state_dict().values())


@cuda
@pytest.mark.parametrize("budget", [None, 16 * 12 * 2 * 128], ids=["resident", "streamed"])
def test_cuda_fit_names_the_first_bad_clip(budget, tmp_path):
    """Resident tokens are checked on the device while they are copied; streamed ones on the host."""
    X = np.memmap(tmp_path / "tokens.f16", dtype=np.float16, mode="w+", shape=(600, 12, 16))
    X[:] = 0.5
    X[437, 3, 5] = np.nan
    X.flush()
    y = np.arange(600) % 2
    for Probe in PROBES:
        with training_options(device_memory_budget=budget), pytest.raises(ValueError, match="NaN in clip 437 "):
            Probe(device="cuda", **FAST).fit(X, y)
    X64 = np.ones((40, 4, 8))
    X64[7, 0, 0] = 1e300
    with pytest.raises(ValueError, match="beyond the float32 range.*clip 7 "):
        AttentiveProbeClassifier(device="cuda", **FAST).fit(X64, np.arange(40) % 2)


@cuda
@pytest.mark.parametrize("Probe", PROBES)
def test_cuda_normalisation_statistics_match_the_cpu(Probe, multilabel_tokens):
    """Statistics taken from the resident tokens on the GPU equal those of the host pass."""
    X, Y = multilabel_tokens
    X = (X * 3.0 + 2.0).astype(np.float32)  # an offset: normalize_tokens="auto" centres
    with training_options(autocast_bf16=False):  # float32 on both, for the loss curves
        gpu = Probe(device="cuda", **FAST).fit(X, Y)
    cpu = Probe(device="cpu", **FAST).fit(X, Y)
    assert gpu.normalize_tokens_ == cpu.normalize_tokens_
    buffers = ("head.feature_mean", "head.feature_scale") if Probe is LinearProbeClassifier else (
        "token_mean", "token_scale")
    for name in buffers:
        np.testing.assert_allclose(gpu.module_.state_dict()[name], cpu.module_.state_dict()[name], rtol=1e-5,
                                   atol=1e-6)
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=2e-2)


def test_loss_read_back_once_per_epoch_gives_skorch_history(multilabel_tokens, monkeypatch):
    """The per-epoch loss sync records the same batch and epoch losses as skorch's per-batch ``item()``."""
    X, Y = multilabel_tokens
    for Probe in PROBES:
        params = dict(max_iter=3, batch_size=32, early_stopping=True, random_state=0, device="cpu")
        deferred = Probe(**params).fit(X, Y)
        monkeypatch.setattr(_training, "DEFER_LOSS_SYNC", False)
        per_batch = Probe(**params).fit(X, Y)
        monkeypatch.undo()
        assert deferred.loss_curve_ == per_batch.loss_curve_
        assert deferred.validation_loss_curve_ == per_batch.validation_loss_curve_
        assert len(deferred.loss_curve_) == 3


@pytest.mark.parametrize("pooling", ["mean", "meanmax"])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_linear_probe_trains_on_pooled_features_exactly_as_on_tokens(pooling, early_stopping, monkeypatch):
    """Pooling once (small sets) and pooling every batch (sets over the budget) give the same fit."""
    import skprobe.probes.linear as linear

    rng = np.random.default_rng(0)
    X = rng.normal(size=(96, 6, 8)).astype(np.float16)
    Y = (rng.random((96, 3)) < 0.3).astype(int)
    params = dict(pooling=pooling, max_iter=4, random_state=0, early_stopping=early_stopping, device="cpu",
                  cv=None)  # the selection runs on pooled features only
    pooled = LinearProbeClassifier(**params).fit(X, Y)
    monkeypatch.setattr(linear, "POOLED_FEATURES_MAX_BYTES", 0)
    streamed = LinearProbeClassifier(**params).fit(X, Y)
    np.testing.assert_allclose(pooled.loss_curve_, streamed.loss_curve_, rtol=1e-6)
    np.testing.assert_allclose(pooled.decision_function(X), streamed.decision_function(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled.module_.head.feature_mean, streamed.module_.head.feature_mean, rtol=1e-6)
