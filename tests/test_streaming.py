"""Streaming extraction into the store: generators, memmap output, bad inputs, kill -9, two processes, memory."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.pipeline import Pipeline

from skprobe import EncoderSpec, FrozenEncoderTransformer
from skprobe.encoders.models.tiny import TinyTransformerEncoder
from skprobe.encoders.registry import register_encoder
from skprobe.extraction import StoreArray, StoreError, extract_to_store
from skprobe.extraction.store.index import scan_records
from skprobe.extraction.transformer import clear_encoder_cache

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]


def _clip(i, seconds=1.0, rate=16000):
    return (0.1 * np.random.default_rng(i).standard_normal(int(seconds * rate))).astype(np.float32)


def _gen(n, start=0, **kw):
    for i in range(start, start + n):
        yield _clip(i, **kw)


@pytest.fixture
def forwards(monkeypatch):
    """Counts the clips tiny-vit encodes in this process."""
    count = {"clips": 0}
    real = TinyTransformerEncoder.forward_layers

    def counting(self, wav, layers):
        count["clips"] += wav.shape[0]
        return real(self, wav, layers)

    monkeypatch.setattr(TinyTransformerEncoder, "forward_layers", counting)
    clear_encoder_cache()
    yield count
    clear_encoder_cache()


# -- inputs and outputs ----------------------------------------------------------------


def test_generator_input_and_memmap_output(tmp_path, forwards):
    ref = FrozenEncoderTransformer(encoder="tiny-vit", device="cpu").fit_transform(list(_gen(10)))
    forwards["clips"] = 0
    enc = FrozenEncoderTransformer(encoder="tiny-vit", store=tmp_path, output="memmap", batch_size=4,
                                   device="cpu").fit(None)
    out = enc.transform(_gen(10))
    assert isinstance(out, StoreArray)
    assert (out.shape, out.dtype) == ((10, 97, 16), np.float16)
    np.testing.assert_allclose(np.asarray(out, dtype=np.float32), ref, rtol=2e-3, atol=2e-3)
    assert forwards["clips"] == 10
    again = enc.transform(_gen(10))  # every clip stored: no forward
    assert forwards["clips"] == 10
    np.testing.assert_array_equal(again[3:7], out[3:7])
    # Without a store, a generator streams into an in-memory array.
    plain = FrozenEncoderTransformer(encoder="tiny-vit", device="cpu", batch_size=3).fit(None).transform(_gen(10))
    np.testing.assert_allclose(plain, ref, atol=1e-5)


@pytest.mark.parametrize("n_jobs", [0, 1, 3])
def test_read_ahead_workers_do_not_change_tokens(n_jobs):
    ref = FrozenEncoderTransformer(encoder="tiny-cnn", n_jobs=0, batch_size=2, device="cpu").fit_transform(list(_gen(7)))
    out = FrozenEncoderTransformer(encoder="tiny-cnn", n_jobs=n_jobs, prefetch=1, batch_size=2,
                                   device="cpu").fit(None).transform(_gen(7))
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("n_workers", [0, 3])
@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_read_ahead_chunks_keep_order_errors_and_bound(n_workers, chunk):
    from skprobe.extraction.pipeline import read_ahead_chunks

    pulled = []

    def items():
        for i in range(11):
            pulled.append(i)
            yield i

    def work(pairs):  # item 4 and 7 fail; the others square
        return [(None, ValueError(f"bad {x}")) if x in (4, 7) else (x * x, None) for _, x in pairs]

    out = list(read_ahead_chunks(items(), work, n_workers=n_workers, depth=4, chunk=chunk))
    assert [i for i, _, _ in out] == list(range(11))
    assert [v for _, v, e in out if e is None] == [x * x for x in range(11) if x not in (4, 7)]
    assert [str(e) for _, _, e in out if e is not None] == ["bad 4", "bad 7"]
    pulled.clear()
    stream = read_ahead_chunks(items(), work, n_workers=n_workers, depth=4, chunk=chunk)
    assert next(stream)[:2] == (0, 0)
    stream.close()  # the consumer stops: at most the read-ahead was pulled
    assert len(pulled) <= max(4 // chunk, 1) * chunk + chunk


def test_stored_clips_in_a_chunk_are_not_prepared_and_bad_ones_are_skipped(tmp_path, forwards, monkeypatch):
    from skprobe.extraction import streaming

    enc = FrozenEncoderTransformer(encoder="tiny-vit", device="cpu", store=tmp_path, batch_size=2, n_jobs=2,
                                   on_error="skip").fit(None)
    enc.transform(list(_gen(4)))  # clips 0-3 stored
    prepared = []
    real = streaming.prepare_clip
    monkeypatch.setattr(streaming, "prepare_clip", lambda wav, *a, **k: prepared.append(len(wav)) or real(wav, *a, **k))
    forwards["clips"] = 0
    X = [_clip(0), np.array([np.nan] * 16000, dtype=np.float32), _clip(5), _clip(1), _clip(6), _clip(3)]
    with pytest.warns(UserWarning, match=r"skipping X\[1\]"):
        out = enc.transform(X)
    assert len(prepared) == 2 and forwards["clips"] == 2  # only clips 5 and 6: stored ones are looked up, not resampled
    ref = FrozenEncoderTransformer(encoder="tiny-vit", device="cpu", store=tmp_path).fit(None).transform(
        [_clip(i) for i in (0, 5, 1, 6, 3)])
    np.testing.assert_array_equal(out, ref)


def test_a_chunk_keeps_only_the_head_of_long_recordings(tmp_path, monkeypatch):
    """While a chunk waits for its index lookup, a 60 s recording is held as the 1 s the encoder reads."""
    from skprobe.extraction import streaming

    received = []
    real = streaming.prepare_clip
    monkeypatch.setattr(streaming, "prepare_clip", lambda wav, *a, **k: received.append(len(wav)) or real(wav, *a, **k))
    long = [_clip(i, seconds=60.0, rate=44100) for i in range(3)]
    enc = FrozenEncoderTransformer(encoder="tiny-vit", device="cpu", store=tmp_path, sample_rate=44100,
                                   n_jobs=2).fit(None)
    out = enc.transform(long)
    assert received and max(received) == 44100 + 441  # 1 s and the resampling filter's 10 ms margin
    ref = FrozenEncoderTransformer(encoder="tiny-vit", device="cpu", sample_rate=44100).fit(None).transform(
        [clip[:44100 + 441] for clip in long])  # what the encoder sees of each recording
    np.testing.assert_allclose(np.asarray(out, dtype=np.float32), ref, atol=2e-3, rtol=2e-3)  # float16 store


def test_memmap_output_needs_a_store():
    enc = FrozenEncoderTransformer(encoder="tiny-vit", output="memmap").fit(None)
    with pytest.raises(ValueError, match="output='memmap'.*set store="):
        enc.transform(_gen(1))


def test_memmap_output_in_a_pipeline(tmp_path):
    from skprobe.probes import LinearProbeClassifier

    X = list(_gen(12))
    y = np.arange(12) % 2
    pipe = Pipeline([("enc", FrozenEncoderTransformer(encoder="tiny-vit", store=tmp_path, output="memmap")),
                     ("probe", LinearProbeClassifier(max_iter=2, random_state=0))])
    pipe.fit(X, y)
    assert pipe.predict(X).shape == (12,)


def test_extract_to_store_function(tmp_path, forwards):
    result = extract_to_store(list(_gen(5)) + [_clip(0)], tmp_path, encoder="tiny-vit", batch_size=2)
    assert result.n_forwarded == 5 and forwards["clips"] == 5  # the repeated clip is encoded once
    assert len(result.keys) == 6 and result.keys[0] == result.keys[5] and result.skipped == []
    enc = FrozenEncoderTransformer(encoder="tiny-vit", store=tmp_path).fit(None)
    store = enc.open_store()
    assert store.missing(result.keys) == []
    assert store.array(result.keys, squeeze_layer=True).shape == (6, 97, 16)
    assert extract_to_store(_gen(5), tmp_path, encoder="tiny-vit").n_forwarded == 0


# -- bad inputs ------------------------------------------------------------------------


def _files(folder, n):
    paths = []
    for i in range(n):
        paths.append(folder / f"{i:03d}.wav")
        sf.write(paths[-1], _clip(i), 16000, subtype="FLOAT")
    return paths


def test_bad_file_stops_after_committing_then_rerun_resumes(tmp_path, forwards):
    paths = _files(tmp_path, 9)
    paths[6].write_bytes(b"RIFF0000WAVEjunk")  # truncated header
    enc = FrozenEncoderTransformer(encoder="tiny-vit", store=tmp_path / "store", batch_size=2, n_jobs=2).fit(None)
    with pytest.raises(ValueError, match=rf"X\[6\]: cannot read audio file {paths[6]}"):
        enc.transform(iter(paths))
    assert forwards["clips"] == 6  # clips 0-5 were encoded and committed
    assert len(enc.open_store()) == 6
    sf.write(paths[6], _clip(6), 16000, subtype="FLOAT")  # repaired
    enc.transform(iter(paths))
    assert forwards["clips"] == 9  # only 6, 7, 8 were encoded


def test_skip_bad_files_reports_them(tmp_path):
    paths = _files(tmp_path, 4)
    paths[1].write_bytes(b"not audio")
    directory = tmp_path / "folder.wav"
    directory.mkdir()
    enc = FrozenEncoderTransformer(encoder="tiny-vit", store=tmp_path / "store", on_error="skip").fit(None)
    with pytest.warns(UserWarning) as record:
        result = enc.extract_to_store(paths + [directory])
    assert [str(w.message).split(" (")[0] for w in record] == ["skipping X[1]", "skipping X[4]"]
    assert [(i, name) for i, name, _ in result.skipped] == [(1, str(paths[1])), (4, str(directory))]
    assert "is a directory, not an audio file" in result.skipped[1][2]
    assert result.keys[1] is None and result.n_forwarded == 3
    with pytest.warns(UserWarning):
        out = enc.transform(paths)
    assert out.shape == (3, 97, 16)


def test_directory_as_audio_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=rf"X\[0\]: {tmp_path} is a directory, not an audio file"):
        FrozenEncoderTransformer(encoder="tiny-vit").fit([tmp_path])


@pytest.mark.parametrize("encoder", ["tiny-vit", "yamnet"])
def test_clip_too_short_says_the_minimum(encoder):
    with pytest.raises(ValueError, match=rf"clip_seconds=0.001 .* too short for encoder '{encoder}'.*minimum is"):
        FrozenEncoderTransformer(encoder=encoder, clip_seconds=0.001).fit(None)


class _Exploding(TinyTransformerEncoder):
    """Gives infinite tokens for loud (but finite) clips."""

    def forward_layers(self, wav, layers):
        out = super().forward_layers(wav, layers)
        loud = (wav.abs().amax(1) > 1e20)[:, None, None]
        return [torch.where(loud, torch.full_like(t, float("inf")), t) for t in out]


EXPLODING = EncoderSpec(name="test-exploding", builder=_Exploding, sample_rate=16000, clip_seconds=1.0, requires_checkpoint=False)


@pytest.mark.parametrize("cache", [False, True])
def test_non_finite_tokens_name_the_clip(tmp_path, cache):
    X = list(_gen(3))
    X[2] = X[2] * 1e30
    enc = FrozenEncoderTransformer(encoder=EXPLODING, store=tmp_path if cache else None, batch_size=2)
    with pytest.raises(ValueError, match=r"X\[2\] \(X\[2\]\): the encoder returned NaN or infinite tokens"):
        enc.fit_transform(X)


def test_tampered_store_row_is_not_returned(tmp_path):
    enc = FrozenEncoderTransformer(encoder="tiny-vit", store=tmp_path)
    enc.fit_transform(list(_gen(2)))
    shard = next(tmp_path.rglob("shards/*.bin"))
    data = np.fromfile(shard, np.float16)
    data[5] = np.nan
    data.tofile(shard)
    with pytest.raises(StoreError, match="damaged"):
        enc.transform(list(_gen(2)))


def test_reregistered_encoder_with_other_weights_gets_new_tokens(tmp_path):
    """Item 5 of the reliability issue: the key hashes the weights when there is no checkpoint file."""
    X = list(_gen(2))
    outs = []
    for seed in (0, 1):
        spec = EncoderSpec(name="test-reregistered", builder=lambda seed=seed: TinyTransformerEncoder(seed),
                           sample_rate=16000, clip_seconds=1.0, requires_checkpoint=False)
        register_encoder(spec, overwrite=True)
        clear_encoder_cache()
        outs.append(FrozenEncoderTransformer(encoder="test-reregistered", store=tmp_path).fit_transform(X))
    fresh = FrozenEncoderTransformer(encoder=spec, device="cpu").fit_transform(X)
    np.testing.assert_allclose(outs[1], fresh, rtol=2e-3, atol=2e-3)
    assert not np.allclose(outs[0], outs[1], atol=1e-2)


@pytest.mark.parametrize("store", [False, True])
def test_reregistered_encoder_many_times_without_clearing_gets_each_weights_tokens(tmp_path, store):
    """Issue 19, item 2: a builder freed and replaced by a new one may get the old one's ``id()``; the encoder kept
    in memory (and the store's key, which hashes its weights) must still follow the new builder."""
    import gc

    X = list(_gen(2))
    expected = {}
    for seed in range(5):  # each seed's own tokens, computed on a fresh encoder
        expected[seed] = FrozenEncoderTransformer(encoder=_seeded_spec(seed), device="cpu").fit_transform(X)
        clear_encoder_cache()
    for seed in range(5):
        gc.collect()  # the previous builder is freed here: the new one is likely to get its address
        register_encoder(_seeded_spec(seed), overwrite=True)
        out = FrozenEncoderTransformer(encoder="test-reregistered-many", device="cpu",
                                       store=tmp_path / "store" if store else None).fit_transform(X)
        np.testing.assert_allclose(out, expected[seed], rtol=2e-3, atol=2e-3, err_msg=f"registration {seed + 1}")


def _seeded_spec(seed):
    return EncoderSpec(name="test-reregistered-many", builder=lambda: TinyTransformerEncoder(seed),
                       sample_rate=16000, clip_seconds=1.0, requires_checkpoint=False)


# -- processes -------------------------------------------------------------------------

_WORKER = textwrap.dedent("""
    import sys, numpy as np, torch
    torch.set_num_threads(1)
    from skprobe.extraction import extract_to_store
    store, start, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
    def clips():
        for i in range(start, start + n):
            yield (0.1 * np.random.default_rng(i).standard_normal(int(seconds * 16000))).astype(np.float32)
    result = extract_to_store(clips(), store, encoder="tiny-vit", batch_size=batch, device="cpu", n_jobs=1,
                              output="memmap")
    with open("/proc/self/status") as fh:
        peak = [line.split()[1] for line in fh if line.startswith("VmHWM")][0]
    print(result.n_forwarded, peak, flush=True)
""")


def _spawn(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen([sys.executable, "-c", _WORKER, *map(str, args)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _segments(store_root):
    """Index segments: one per committed batch (until a compaction merges them into a run)."""
    return list(Path(store_root).glob("*/index/*.npy"))


@pytest.mark.slow
def test_kill_9_mid_extraction_then_rerun(tmp_path, forwards):
    n, batch = 400, 8
    proc = _spawn(tmp_path / "store", 0, n, batch)
    deadline = time.time() + 60
    while len(_segments(tmp_path / "store")) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    enc = FrozenEncoderTransformer(encoder="tiny-vit", store=tmp_path / "store", batch_size=batch,
                                   device="cpu").fit(None)
    committed = len(enc.open_store())
    assert 0 < committed < n, "the extraction was not interrupted in the middle"
    resumed = enc.transform(_gen(n))
    assert forwards["clips"] == n - committed  # only clips that had not been committed
    whole = FrozenEncoderTransformer(encoder="tiny-vit", store=tmp_path / "other", batch_size=batch,
                                     device="cpu").fit(None).transform(_gen(n))
    np.testing.assert_array_equal(resumed, whole)


@pytest.mark.slow
def test_two_processes_on_overlapping_clips(tmp_path):
    store = tmp_path / "store"
    a, b = _spawn(store, 0, 120, 4), _spawn(store, 40, 120, 4)  # clips 0-119 and 40-159
    results = [p.communicate(timeout=120) for p in (a, b)]
    assert a.returncode == b.returncode == 0, results
    computed = [int(out.split()[0]) for out, _ in results]
    assert sum(computed) == 160  # no clip computed twice
    (folder,) = store.iterdir()
    records = scan_records(folder)  # every index file, segments and compacted runs
    assert len(records) == 160 and len(np.unique(records["key"])) == 160  # nor stored twice
    assert sum(p.stat().st_size for p in folder.glob("shards/*.bin")) == 160 * 97 * 16 * 2  # float16 rows
    enc = FrozenEncoderTransformer(encoder="tiny-vit", store=store, device="cpu").fit(None)
    out = enc.set_params(output="memmap").transform(_gen(160))
    ref = FrozenEncoderTransformer(encoder="tiny-vit", device="cpu", batch_size=4).fit(None).transform(_gen(160))
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=2e-3, atol=2e-3)


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_clips(tmp_path):
    # 4 s inputs cropped to 1 s: 256 kB each. Both processes run at once (the start-up dominates).
    procs = [_spawn(tmp_path / f"store{n}", 0, n, 16, 4.0) for n in (100, 1000)]
    peaks = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        peaks.append(int(out.split()[1]))
    assert peaks[1] < 1.1 * peaks[0], peaks  # kB; all 1,000 inputs alone would be 256 MB


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cache", [False, True])
def test_cuda_pipeline_matches_the_cpu(tmp_path, cache):
    """Pinned staging, overlapped copies and one-batch-late results give the CPU's tokens (bfloat16 tolerance)."""
    X = list(_gen(11))
    ref = FrozenEncoderTransformer(encoder="tiny-vit", device="cpu").fit_transform(X)
    enc = FrozenEncoderTransformer(encoder="tiny-vit", device="cuda", batch_size=3, store=tmp_path if cache else None)
    out = enc.fit_transform(iter(X))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=3e-2, rtol=3e-2)
    for i in range(len(X)):  # each clip in its own row, none overwritten by a later batch
        assert np.argmin(np.abs(out[i] - ref).reshape(len(X), -1).sum(1)) == i
