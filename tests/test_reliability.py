"""Regression tests of the bad-input and fault campaign (issue 9) outside the command line."""

import multiprocessing
import pickle
import time
import warnings
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp
import soundfile as sf
import torch

from skprobe import AttentiveProbeClassifier, LinearProbeClassifier, PrototypicalProbeClassifier
from skprobe._signed import UntrustedFileError, dump_signed, load_signed
from skprobe.audio import read_audio
from skprobe.datasets import load_audio_folder
from skprobe.encoders import TokenLayout, load_encoder
from skprobe.encoders.formats import checkpoint as checkpoint_format
from skprobe.encoders.formats.checkpoint import read_checkpoint
from skprobe.probes import attentive

# -- item 1: class activation maps over the token grid ------------------------------------------


def test_to_grid_takes_full_maps_and_patch_only_maps():
    layout = TokenLayout(prefix_tokens=1, n_time=3, n_freq=2, dim=4, hop_seconds=0.1)
    tokens = np.arange(2 * 7 * 4, dtype=float).reshape(2, 7, 4)
    full = layout.to_grid(tokens)
    patches = layout.to_grid(tokens[:, 1:])
    np.testing.assert_array_equal(full, patches)
    assert full[1, 2, 1, 0] == tokens[1, 1 + 2 * 2 + 1, 0]
    with pytest.raises(ValueError, match="expects 7 .* or the 6 patch tokens alone"):
        layout.to_grid(tokens[:, 2:])


def test_docstring_recipe_for_a_prefix_token_encoder(one_torch_thread):
    from skprobe import FrozenEncoderTransformer

    rng = np.random.default_rng(0)
    wav = rng.normal(scale=0.1, size=(12, 16000)).astype(np.float32)
    enc = FrozenEncoderTransformer("tiny-vit")
    X = enc.fit_transform(wav)
    probe = PrototypicalProbeClassifier(prefix_tokens=enc.prefix_tokens_, max_iter=2, random_state=0)
    probe.fit(X, np.arange(12) % 2)
    grid = enc.layouts_[0].to_grid(probe.class_activation_maps(X))
    assert grid.shape == (12, *enc.token_grid_, 2)


# -- item 2 and 10: the signed probe cache ------------------------------------------------------


def _write_many(path, value, n):
    for _ in range(n):
        dump_signed({"probe": value, "fit_seconds": 1.0}, path)


def test_concurrent_writers_of_one_cache_key(tmp_path):
    """Two processes write the same key (and race to create the signing key) while this one reads."""
    path = tmp_path / "probes" / "key.joblib"
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    workers = [ctx.Process(target=_write_many, args=(path, value, 100)) for value in ("a", "b")]
    for w in workers:
        w.start()
    seen = set()
    while any(w.is_alive() for w in workers):
        if path.is_file():
            seen.add(load_signed(path)["probe"])  # always a complete, verified file
        time.sleep(0.005)
    for w in workers:
        w.join()
        assert w.exitcode == 0
    assert load_signed(path)["probe"] in ("a", "b") and seen <= {"a", "b"}
    assert sorted(p.name for p in path.parent.iterdir()) == [".hmac-key", "key.joblib"]  # no temporaries left


class _Exploit:
    def __reduce__(self):
        return (open, ("/nonexistent-dir/pwned", "w"))


def test_tampered_cache_file_is_never_unpickled(tmp_path):
    path = tmp_path / "x.joblib"
    dump_signed({"probe": 1}, path)
    data = path.read_bytes()
    head = data.index(b"\n", data.index(b"\n") + 1) + 1
    path.write_bytes(data[:head] + pickle.dumps(_Exploit()))  # same signature, other payload
    with pytest.raises(UntrustedFileError, match="does not match its signature"):
        load_signed(path)
    path.write_bytes(pickle.dumps(_Exploit()))  # a plain pickle, no signature
    with pytest.raises(UntrustedFileError, match="not a file signed by skprobe"):
        load_signed(path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    dump_signed({"probe": 2}, other / "x.joblib")  # signed under another folder's key
    path.write_bytes((other / "x.joblib").read_bytes())
    with pytest.raises(UntrustedFileError):
        load_signed(path)


def test_benchmark_refits_a_tampered_cache_entry(tmp_path, monkeypatch):
    from skprobe import benchmark

    monkeypatch.setenv("SKPROBE_HOME", str(tmp_path))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3, 4)).astype(np.float32), np.arange(20) % 2
    probe, _ = benchmark._fit_or_load(LinearProbeClassifier(max_iter=2, random_state=0), X, y, "k", refit=False)
    path = tmp_path / "probes" / "k.joblib"
    path.write_bytes(pickle.dumps({"probe": _Exploit(), "fit_seconds": 0}))
    with pytest.warns(UserWarning, match="k.joblib is not a file signed by skprobe; it was not loaded"):
        again, _ = benchmark._fit_or_load(LinearProbeClassifier(max_iter=2, random_state=0), X, y, "k", refit=False)
    np.testing.assert_array_equal(again.decision_function(X), probe.decision_function(X))
    assert load_signed(path)["probe"].classes_.tolist() == [0, 1]  # rewritten, signed


# -- items 6, 12: targets -----------------------------------------------------------------------


@pytest.mark.parametrize("values", [(1, 2), (-1, 1)])
@pytest.mark.parametrize("probe", [LinearProbeClassifier, AttentiveProbeClassifier, PrototypicalProbeClassifier])
def test_2d_y_must_be_0_1(probe, values):
    X = np.random.default_rng(0).normal(size=(8, 2, 4)).astype(np.float32)
    Y = np.array([values, values[::-1]] * 4)
    with pytest.raises(ValueError, match=rf"must hold only 0 and 1; got values \[{values[0]}, {values[1]}\]"):
        probe(max_iter=1).fit(X, Y)


def test_sparse_y_is_refused():
    X = np.random.default_rng(0).normal(size=(8, 2, 4)).astype(np.float32)
    Y = sp.csr_matrix(np.eye(8, 3, dtype=int))
    with pytest.raises(ValueError, match="sparse y .* is not supported"):
        LinearProbeClassifier(max_iter=1).fit(X, Y)


# -- item 18: attentive probe size --------------------------------------------------------------


def test_attentive_probe_refuses_a_huge_dimension(monkeypatch):
    def no_allocation(*args, **kwargs):
        raise AssertionError("the head was built")

    monkeypatch.setattr(attentive, "AttentivePoolingHead", no_allocation)
    X = np.zeros((4, 1, 200_000), dtype=np.float32)
    with pytest.raises(ValueError, match=r"200000-dimensional tokens would have 80,00\d,\d{3},\d{3} parameters"):
        AttentiveProbeClassifier(max_iter=1).fit(X, np.arange(4) % 2)


# -- items 3, 11, 14: checkpoints ---------------------------------------------------------------


def test_text_file_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"hello\n")
    with pytest.raises(ValueError, match=f"cannot read checkpoint {path}: not a torch checkpoint"):
        read_checkpoint(path)
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        load_encoder("tiny-vit", path)


def test_compressed_checkpoint_is_bounded_before_decompressing(tmp_path, monkeypatch):
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(4 << 20)}, plain)  # 16 MB of zeros
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert bomb.stat().st_size < 100_000

    def no_load(*args, **kwargs):
        raise AssertionError("torch.load ran")

    monkeypatch.setattr(checkpoint_format.torch, "load", no_load)
    with pytest.raises(ValueError, match=r"archive expands to 16,777,\d{3} bytes, more than 8x its size"):
        read_checkpoint(bomb)


def test_uncompressed_and_lightly_compressed_checkpoints_still_load(tmp_path):
    state = {"w": torch.randn(1000)}
    plain = tmp_path / "plain.pt"
    torch.save(state, plain)
    zipped = tmp_path / "zipped.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    for path in (plain, zipped):
        torch.testing.assert_close(read_checkpoint(path)["w"], state["w"])


def test_directory_checkpoint(tmp_path):
    (tmp_path / "weights.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"is a directory, not a file; .* inside it \(found \['weights.pth'\]\)"):
        load_encoder("tiny-vit", tmp_path)
    with pytest.raises(ValueError, match="is a directory"):
        read_checkpoint(tmp_path)


# -- items 8, 15: labels CSV --------------------------------------------------------------------


@pytest.fixture
def two_clips(tmp_path):
    for name in ("a.wav", "b.wav", "c.wav"):
        sf.write(tmp_path / name, np.zeros(800, dtype="int16"), 8000)
    return tmp_path


def test_labels_csv_without_header(two_clips):
    (two_clips / "labels.csv").write_text("a.wav,dog\nb.wav,cat\nc.wav,dog\n")
    with pytest.raises(ValueError, match="has no header row: its first row 'a.wav,dog' names the audio file"):
        load_audio_folder(two_clips)


def test_labels_csv_encodings(two_clips):
    text = "file,labels\na.wav,café\nb.wav,thé\n"
    (two_clips / "latin1.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.csv is not valid utf-8 text: byte b'\\xe9' at offset \d+"):
        load_audio_folder(two_clips, two_clips / "latin1.csv")
    (two_clips / "utf16.csv").write_bytes(text.encode("utf-16"))
    assert load_audio_folder(two_clips, two_clips / "utf16.csv").class_names == ["café", "thé"]


# -- also seen: truncated WAV -------------------------------------------------------------------


def test_truncated_wav_warns(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, np.ones(16000, dtype="int16"), 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_audio(path)[0].shape == (16000,)  # intact: no warning
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=r"clip.wav is truncated: its header declares 16000 frames but only 79\d\d"):
        wav, _ = read_audio(path)
    assert 7900 < len(wav) < 8000


def test_fetch_weights_of_a_seeded_encoder_says_there_is_nothing_to_fetch():
    from skprobe.encoders import fetch_weights

    with pytest.raises(ValueError, match="'tiny-vit' has no weights to fetch"):
        fetch_weights("tiny-vit")


# -- issue 19: the signed probe cache -----------------------------------------------------------


def test_world_readable_signing_key_is_reported_and_made_private_again(tmp_path):
    dump_signed({"probe": 1}, tmp_path / "a.joblib")
    key = tmp_path / ".hmac-key"
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)
    with pytest.warns(UserWarning, match=r"signing key .*\.hmac-key was readable by others \(mode 0644\).*0600"):
        assert load_signed(tmp_path / "a.joblib") == {"probe": 1}
    assert key.stat().st_mode & 0o777 == 0o600
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # private again: no second warning
        dump_signed({"probe": 2}, tmp_path / "b.joblib")


def test_swapped_cache_files_are_refused(tmp_path):
    """The signature covers the file's name (its cache key), so renaming two files into each other's place
    is detected."""
    a, b = tmp_path / "a.joblib", tmp_path / "b.joblib"
    dump_signed({"probe": "linear"}, a)
    dump_signed({"probe": "attentive"}, b)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    for path in (a, b):
        with pytest.raises(UntrustedFileError, match="does not match its signature"):
            load_signed(path)
    a.write_bytes(data_a)
    assert load_signed(a) == {"probe": "linear"}  # in its own place it still loads


def test_cache_file_signed_without_its_name_is_refused_with_a_reason(tmp_path):
    """Entries of the earlier format (signature over the payload only) are refitted, with a message that says why."""
    import hashlib
    import hmac

    dump_signed({"probe": 1}, tmp_path / "a.joblib")
    key = (tmp_path / ".hmac-key").read_bytes()
    payload = (tmp_path / "a.joblib").read_bytes().split(b"\n", 2)[2]
    tag = hmac.new(key, payload, hashlib.sha256).hexdigest().encode()
    (tmp_path / "a.joblib").write_bytes(b"SKPROBE-HMAC-SHA256 v1\n" + tag + b"\n" + payload)
    with pytest.raises(UntrustedFileError, match="signed by an older skprobe"):
        load_signed(tmp_path / "a.joblib")
