"""Token caching through FrozenEncoderTransformer: keys, resuming, duplicates (the store itself: test_token_store)."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from skprobe import EncoderSpec, FrozenEncoderTransformer
from skprobe.encoders.models.tiny import TinyConvEncoder, TinyTransformerEncoder
from skprobe.extraction.keys import clip_key
from skprobe.extraction.transformer import clear_encoder_cache

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class CountingEncoder(TinyTransformerEncoder):
    """tiny-vit that counts the clips it encodes and can fail on a chosen forward call."""

    clips = 0
    calls = 0
    fail_on_call: int | None = None

    def forward_layers(self, wav, layers):
        type(self).calls += 1
        if type(self).calls == type(self).fail_on_call:
            raise RuntimeError("simulated crash in the middle of an extraction")
        type(self).clips += wav.shape[0]
        return super().forward_layers(wav, layers)


COUNTING = EncoderSpec(name="test-cache-counting", builder=CountingEncoder, sample_rate=16000, clip_seconds=1.0, requires_checkpoint=False)
CHECKPOINTED = EncoderSpec(name="test-cache-ckpt", builder=TinyConvEncoder, sample_rate=16000, clip_seconds=1.0)


class FolderEncoder(TinyConvEncoder):
    """Reads its weights from a checkpoint *folder* (as TensorFlow or transformers checkpoints are)."""

    def load_checkpoint(self, path):
        self.load_state_dict(torch.load(Path(path) / "weights.pt", weights_only=True))


FOLDER = EncoderSpec(name="test-cache-folder", builder=FolderEncoder, sample_rate=16000, clip_seconds=1.0)


@pytest.fixture
def counter():
    CountingEncoder.clips = CountingEncoder.calls = 0
    CountingEncoder.fail_on_call = None
    yield CountingEncoder
    CountingEncoder.fail_on_call = None


def _clips(n=6, seconds=1.0, seed=0, rate=16000):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32) for _ in range(n)]


def _config_folders(root):
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir())


def _temp_files(root):
    return [p for p in Path(root).rglob("*") if p.name.endswith(".tmp")]


# -- clip keys -----------------------------------------------------------------------


def test_clip_key_hashes_content_and_length():
    x = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    assert clip_key(x) == clip_key(x.copy()) == clip_key(x.astype(np.float64))
    y = x.copy()
    y[50] += 1e-3
    assert clip_key(y) != clip_key(x)
    assert clip_key(np.zeros(10, np.float32)) != clip_key(np.zeros(11, np.float32))


# -- through FrozenEncoderTransformer --------------------------------------------------


def test_second_call_runs_no_forward_and_returns_the_same_tokens(tmp_path, counter):
    X = _clips()
    enc = FrozenEncoderTransformer(encoder=COUNTING, store=tmp_path, batch_size=4)
    first = enc.fit_transform(X)
    assert counter.clips == 6 and counter.calls == 2
    counter.clips = 0
    second = enc.transform(X)
    assert counter.clips == 0
    np.testing.assert_array_equal(first, second)  # first call already returns the stored values
    fresh = FrozenEncoderTransformer(encoder=COUNTING, batch_size=4).fit_transform(X)
    np.testing.assert_allclose(first, fresh, rtol=2e-3, atol=2e-3)  # float16 storage
    assert first.dtype == np.float32
    # A clone in a new fit, with another batch size, as a 2-D array: still no forward.
    counter.clips = 0
    clone = FrozenEncoderTransformer(encoder=COUNTING, store=str(tmp_path), batch_size=1, verbose=0)
    np.testing.assert_array_equal(clone.fit_transform(np.stack(X)), first)
    assert counter.clips == 0
    assert len(_config_folders(tmp_path)) == 1


def test_only_new_clips_are_encoded(tmp_path, counter):
    X = _clips(6)
    enc = FrozenEncoderTransformer(encoder=COUNTING, store=tmp_path).fit(X)
    enc.transform(X[:4])
    counter.clips = 0
    out = enc.transform(X[2:])
    assert counter.clips == 2
    assert out.shape == (4, 97, 16)


def test_duplicate_clips_are_encoded_once(tmp_path, counter):
    X = _clips(3)
    X = [X[0], X[1], X[0].copy(), X[2], X[1]]
    out = FrozenEncoderTransformer(encoder=COUNTING, store=tmp_path, batch_size=2).fit_transform(X)
    assert counter.clips == 3
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], out[4])
    assert not np.allclose(out[0], out[1])


def test_interrupted_extraction_resumes(tmp_path, counter):
    X = _clips(6)
    enc = FrozenEncoderTransformer(encoder=COUNTING, store=tmp_path, batch_size=2)
    counter.fail_on_call = 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        enc.fit_transform(X)
    assert counter.clips == 2  # the first batch finished and was stored
    assert _temp_files(tmp_path) == []
    counter.fail_on_call = None
    counter.clips = 0
    resumed = enc.fit_transform(X)
    assert counter.clips == 4  # only the missing clips
    assert _temp_files(tmp_path) == []
    fresh = FrozenEncoderTransformer(encoder=COUNTING, batch_size=2).fit_transform(X)
    np.testing.assert_allclose(resumed, fresh, rtol=2e-3, atol=2e-3)


def _forwards(counter, **params):
    before = counter.clips
    # On the CPU "auto" dtype is float32; CUDA's bfloat16 would change the key of device="cpu".
    params = {"device": "cpu", **params}
    FrozenEncoderTransformer(encoder=COUNTING, **params).fit_transform(_clips(2))
    return counter.clips - before


def test_cache_key_holds_what_changes_tokens(tmp_path, counter):
    assert _forwards(counter, store=tmp_path) == 2
    # Parameters that do not change the tokens share the entries.
    for same in (dict(batch_size=1), dict(verbose=1), dict(output_dtype="float16"), dict(device="cpu"),
                 dict(dtype="float32"), dict(layers=2), dict(clip_seconds=1.0)):
        assert _forwards(counter, store=tmp_path, **same) == 0, same
    assert len(_config_folders(tmp_path)) == 1
    # Those that do get their own entries.
    changes = [dict(layers=1), dict(layers=[1, 2]), dict(sample_rate=8000), dict(clip_seconds=0.5),
               dict(dtype="bfloat16")]
    for n, change in enumerate(changes, start=2):
        assert _forwards(counter, store=tmp_path, **change) == 2, change
        assert len(_config_folders(tmp_path)) == n, change


def test_checkpoint_content_is_part_of_the_key(tmp_path):
    clear_encoder_cache()
    X = _clips(2)
    path = tmp_path / "weights.pt"
    cache = tmp_path / "cache"
    results = []
    for seed in (1, 2):
        torch.save(TinyConvEncoder(seed=seed).state_dict(), path)  # same path, new content
        results.append(FrozenEncoderTransformer(encoder=CHECKPOINTED, checkpoint=path, store=cache).fit_transform(X))
        assert len(_config_folders(cache)) == seed
    reference = FrozenEncoderTransformer(encoder="tiny-cnn").fit_transform(X)  # seed 0 weights
    assert not np.allclose(results[0], results[1], atol=1e-2)
    assert not np.allclose(results[1], reference, atol=1e-2)


def test_folder_checkpoint_rewritten_in_place_is_seen(tmp_path):
    """Rewriting a file inside a checkpoint folder changes neither the folder's size nor its mtime."""
    clear_encoder_cache()
    X = _clips(2)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    cache = tmp_path / "cache"
    outputs = []
    for seed in (1, 2):
        with open(folder / "weights.pt", "r+b" if seed == 2 else "wb") as fh:  # in place, same size
            torch.save(TinyConvEncoder(seed=seed).state_dict(), fh)
        outputs.append(FrozenEncoderTransformer(encoder=FOLDER, checkpoint=folder, store=cache,
                                                device="cpu").fit_transform(X))  # compared with CPU float32
    assert len(_config_folders(cache)) == 2
    with torch.inference_mode():
        expected = TinyConvEncoder(seed=2).eval()(torch.from_numpy(np.stack(X)))
    np.testing.assert_allclose(outputs[1], expected.numpy(), rtol=2e-3, atol=2e-3)


def test_same_samples_at_another_rate_are_not_confused(tmp_path, counter):
    x = _clips(1, seconds=0.5)[0]
    path = tmp_path / "clip_8k.wav"
    sf.write(path, x, 8000, subtype="FLOAT")  # the same samples, declared as 8 kHz
    cache = tmp_path / "cache"
    enc = FrozenEncoderTransformer(encoder=COUNTING, store=cache, sample_rate=16000)
    from_file = enc.fit_transform([path])
    from_array = enc.fit_transform([x])
    assert counter.clips == 2
    uncached = FrozenEncoderTransformer(encoder=COUNTING, sample_rate=16000).fit_transform([x])
    np.testing.assert_allclose(from_array, uncached, rtol=2e-3, atol=2e-3)
    assert not np.allclose(from_file, from_array, atol=1e-2)


def test_files_are_cached_by_content(tmp_path, counter):
    X = _clips(2)
    paths = []
    for i, x in enumerate(X):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], x, 16000, subtype="FLOAT")
    cache = tmp_path / "cache"
    enc = FrozenEncoderTransformer(encoder=COUNTING, store=cache)
    a = enc.fit_transform(X)
    counter.clips = 0
    b = enc.fit_transform(paths)  # same audio, read from files
    assert counter.clips == 0
    np.testing.assert_array_equal(a, b)
    os.replace(paths[0], tmp_path / "renamed.wav")
    enc.fit_transform([tmp_path / "renamed.wav"])
    assert counter.clips == 0


def test_transform_returns_computed_tokens_without_reading_them_back(tmp_path, counter, monkeypatch):
    """With store= and array output, tokens computed by the call are returned as computed; the store is opened once."""
    from skprobe.extraction.store import TokenStore

    opened, rows_read = [], []
    real_init, real_read = TokenStore.__init__, TokenStore.read
    monkeypatch.setattr(TokenStore, "__init__", lambda self, *a, **k: (opened.append(1), real_init(self, *a, **k))[1])
    monkeypatch.setattr(TokenStore, "read", lambda self, keys: (rows_read.append(len(keys)), real_read(self, keys))[1])
    X = _clips(6)
    enc = FrozenEncoderTransformer(encoder=COUNTING, store=tmp_path, batch_size=4).fit(None)
    first = enc.transform(X[:4] + X[:1])  # four new clips, one of them twice
    assert (len(opened), sum(rows_read), counter.clips) == (1, 0, 4)
    opened.clear()
    mixed = enc.transform(X)  # four stored clips are read, two are computed
    assert (len(opened), sum(rows_read), counter.clips) == (1, 4, 6)
    again = FrozenEncoderTransformer(encoder=COUNTING, store=tmp_path).fit(None).transform(X)  # all read
    np.testing.assert_array_equal(first, again[[0, 1, 2, 3, 0]])  # what was returned is what is stored
    np.testing.assert_array_equal(mixed, again)
    assert first.dtype == np.float32 and first.shape == (5, 97, 16)


def test_read_only_store_serves_stored_clips_and_only_new_clips_raise(tmp_path, counter, monkeypatch):
    """Reliability item 8: nothing is written (no writer is made) when every clip is stored."""
    from skprobe.extraction.store import StoreError, TokenStore

    X = _clips(3)
    enc = FrozenEncoderTransformer(encoder=COUNTING, store=tmp_path).fit(None)
    stored = enc.transform(X[:2])

    def read_only(self):
        raise StoreError(f"cannot write to token store {self.folder}: Read-only file system")

    monkeypatch.setattr(TokenStore, "_ensure_folder", read_only)  # a read-only mount (chmod does not stop root)
    np.testing.assert_array_equal(enc.transform(X[:2]), stored)
    assert enc.set_params(output="memmap").transform(X[:2]).shape == (2, 97, 16)
    assert enc.extract_to_store(X[:2]).n_forwarded == 0
    with pytest.raises(StoreError, match="cannot write to token store .*Read-only file system"):
        enc.transform(X)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_store_in_a_read_only_folder_serves_stored_clips(tmp_path, counter):
    from skprobe.extraction.store import StoreError

    X = _clips(3)
    enc = FrozenEncoderTransformer(encoder=COUNTING, store=tmp_path).fit(None)
    stored = enc.transform(X[:2])
    folders = [p for p in tmp_path.rglob("*") if p.is_dir()] + [tmp_path]
    for folder in folders:
        folder.chmod(0o555)
    try:
        np.testing.assert_array_equal(enc.transform(X[:2]), stored)
        with pytest.raises(StoreError, match="cannot write to token store"):
            enc.transform(X)
    finally:
        for folder in folders:
            folder.chmod(0o755)


def test_cache_is_a_deprecated_name_of_store(tmp_path, counter):
    X = _clips(3)
    new = FrozenEncoderTransformer(encoder=COUNTING, store=tmp_path).fit_transform(X)
    assert counter.clips == 3
    old = FrozenEncoderTransformer(encoder=COUNTING, cache=tmp_path)
    with pytest.warns(DeprecationWarning, match=r"cache=.*deprecated.*store="):
        old.fit(None)
    np.testing.assert_array_equal(old.transform(X), new)  # the same store: nothing is encoded again
    assert counter.clips == 3 and old.open_store().folder == FrozenEncoderTransformer(
        encoder=COUNTING, store=tmp_path).fit(None).open_store().folder
    with pytest.raises(ValueError, match="store=... only"):
        FrozenEncoderTransformer(encoder=COUNTING, store=tmp_path, cache=tmp_path).fit(None)


def test_extract_to_store_cache_keyword_and_computed_are_deprecated(tmp_path, counter):
    from skprobe.extraction import extract_to_store

    with pytest.warns(DeprecationWarning, match=r"extract_to_store\(cache=.*store="):
        result = extract_to_store(_clips(2), cache=tmp_path, encoder=COUNTING)
    assert result.n_forwarded == 2
    with pytest.warns(DeprecationWarning, match="computed is deprecated: use n_forwarded"):
        assert result.computed == 2
    with pytest.raises(ValueError, match="needs store="):
        extract_to_store(_clips(1), encoder=COUNTING)


def test_extraction_cache_module_is_a_deprecated_home_of_clip_key():
    import skprobe.extraction.cache as old

    with pytest.warns(DeprecationWarning, match="import clip_key from skprobe.extraction"):
        assert old.clip_key is clip_key
