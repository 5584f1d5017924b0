"""FrozenEncoderTransformer: inputs, layers, layout, precision, lazy weights, pickling, grid search."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from torch import nn

import skprobe
from skprobe import EncoderSpec, FrozenEncoderTransformer, TokenLayout
from skprobe.audio import resample
from skprobe.encoders import loading
from skprobe.encoders.base import AudioEncoder
from skprobe.encoders.formats import checkpoint as checkpoint_format
from skprobe.encoders.models.tiny import TinyConvEncoder, TinyTransformerEncoder
from skprobe.extraction import encoder_cache
from skprobe.extraction.transformer import clear_encoder_cache

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- test encoders ---------------------------------------------------------------------


class RecordingEncoder(TinyTransformerEncoder):
    """tiny-vit that records how it is called and counts clips and transformer blocks run."""

    records: list = []
    clips = 0
    blocks_run = 0

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        for block in self.blocks:
            block.register_forward_hook(self._count_block)

    @staticmethod
    def _count_block(module, args, output):
        RecordingEncoder.blocks_run += 1

    def forward_layers(self, wav, layers):
        probe = self.patch_embed.weight.new_ones(2, 2)
        RecordingEncoder.records.append(dict(
            module=self, layers=list(layers), batch=wav.shape[0], wav_dtype=wav.dtype,
            inference=torch.is_inference_mode_enabled(), training=self.training,
            autocast=torch.is_autocast_enabled(wav.device.type), matmul_dtype=(probe @ probe).dtype,
        ))
        RecordingEncoder.clips += wav.shape[0]
        return super().forward_layers(wav, layers)


RECORDING = EncoderSpec(name="test-recording-vit", builder=RecordingEncoder, sample_rate=16000, clip_seconds=1.0,
                        requires_checkpoint=False)


class BigEncoder(TinyConvEncoder):
    """tiny-cnn plus a 2M-parameter linear layer (8 MB of float32 weights)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 100)
            self.bulk = nn.Linear(1000, 2000)

    def forward_layers(self, wav, layers):
        return [t + self.bulk.bias[0] for t in super().forward_layers(wav, layers)]


BIG = EncoderSpec(name="test-big-cnn", builder=BigEncoder, sample_rate=16000, clip_seconds=1.0, weights_source="the test",
                  weights_file="big.pt")


class ConfiguredEncoder(AudioEncoder):
    """Its depth and width come from the checkpoint (a folder with config.json), like transformers models."""

    sample_rate = 16000
    n_layers = 12  # placeholder until a checkpoint is loaded
    layout_needs_weights = True

    def __init__(self) -> None:
        super().__init__()
        self.proj = None

    def load_checkpoint(self, path):
        config = json.loads((Path(path) / "config.json").read_text())
        self.n_layers, self.dim = config["n_layers"], config["dim"]
        torch.manual_seed(0)
        self.proj = nn.Linear(160, self.dim)

    def forward_layers(self, wav, layers):
        x = self.proj(wav[:, : wav.shape[1] // 160 * 160].reshape(wav.shape[0], -1, 160))
        out = []
        for i in range(max(layers) + 1):
            x = torch.tanh(x + i)
            if i in layers:
                out.append(x)
        return out

    def layout(self, n_samples, layer):
        if self.proj is None:
            raise RuntimeError("no weights yet")
        return TokenLayout(0, n_samples // 160, 1, self.dim, 0.01)


CONFIGURED = EncoderSpec(name="test-configured", builder=ConfiguredEncoder, sample_rate=16000, clip_seconds=0.5)


@pytest.fixture
def recorder():
    RecordingEncoder.records = []
    RecordingEncoder.clips = RecordingEncoder.blocks_run = 0
    clear_encoder_cache()
    return RecordingEncoder


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.pt"
    torch.save(BigEncoder(seed=1).state_dict(), path)
    return path


@pytest.fixture
def loads(monkeypatch):
    """Counts encoder loads and checkpoint reads; starts with an empty in-process encoder cache."""
    calls = {"load_encoder": 0, "read_checkpoint": 0}
    real_load, real_read = loading.load_encoder, checkpoint_format.read_checkpoint

    def load_encoder(*args, **kwargs):
        calls["load_encoder"] += 1
        return real_load(*args, **kwargs)

    def read_checkpoint(*args, **kwargs):
        calls["read_checkpoint"] += 1
        return real_read(*args, **kwargs)

    monkeypatch.setattr(loading, "load_encoder", load_encoder)
    monkeypatch.setattr(encoder_cache, "load_encoder", load_encoder)
    monkeypatch.setattr(checkpoint_format, "read_checkpoint", read_checkpoint)
    clear_encoder_cache()
    yield calls
    clear_encoder_cache()


# -- signals ---------------------------------------------------------------------------


def _noise(n=4, seconds=1.0, rate=16000, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32) for _ in range(n)]


def _band_limited(rate, seconds=1.0, seed=0):
    """A sum of 60 amplitude-modulated tones between 50 Hz and 7 kHz, sampled at ``rate``."""
    rng = np.random.default_rng(seed)
    freq, phase = rng.uniform(50, 7000, 60), rng.uniform(0, 2 * np.pi, 60)
    amp, mod = rng.uniform(0.2, 1.0, 60) / np.sqrt(60), rng.uniform(0.5, 4.0, 60)
    t = np.arange(int(seconds * rate)) / rate
    env = 0.6 + 0.4 * np.sin(2 * np.pi * mod[:, None] * t + phase[:, None])
    return (0.1 * (amp[:, None] * env * np.sin(2 * np.pi * freq[:, None] * t + phase[:, None])).sum(0)).astype(
        np.float32)


def _relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


# -- shapes and fitted attributes ------------------------------------------------------


def test_tiny_vit_shapes_and_layout():
    enc = FrozenEncoderTransformer(encoder="tiny-vit")
    out = enc.fit_transform(_noise(3))
    assert out.shape == (3, 97, 16) and out.dtype == np.float32
    assert enc.encoder_spec_.name == "tiny-vit"
    assert enc.layers_ == [2]
    assert enc.layouts_ == [TokenLayout(1, 24, 4, 16, 0.04)]
    assert (enc.prefix_tokens_, enc.token_grid_, enc.n_tokens_, enc.dim_) == (1, (24, 4), 97, 16)
    assert enc.hop_seconds_ == pytest.approx(0.04)
    assert (enc.encoder_sample_rate_, enc.n_samples_, enc.clip_seconds_) == (16000, 16000, 1.0)
    assert not hasattr(enc, "n_features_in_")  # lists of clips have no fixed width


def test_tiny_cnn_first_layer_layout():
    enc = FrozenEncoderTransformer(encoder="tiny-cnn", layers=0, clip_seconds=0.5)
    out = enc.fit_transform(np.stack(_noise(2)))
    assert out.shape == (2, 24 * 16, 8)
    assert enc.token_grid_ == (24, 16) and enc.prefix_tokens_ == 0 and enc.hop_seconds_ == pytest.approx(0.02)
    assert enc.n_samples_ == 8000 and enc.n_features_in_ == 16000


def test_fit_transform_equals_fit_then_transform():
    X = _noise(3)
    enc = FrozenEncoderTransformer(encoder="tiny-vit")
    np.testing.assert_array_equal(enc.fit_transform(X), enc.fit(X).transform(X))


# -- input forms -----------------------------------------------------------------------


def test_input_forms_agree():
    X = _noise(3)
    enc = FrozenEncoderTransformer(encoder="tiny-vit").fit(X)
    ref = enc.transform(X)
    np.testing.assert_array_equal(enc.transform(tuple(X)), ref)
    np.testing.assert_allclose(FrozenEncoderTransformer(encoder="tiny-vit").fit_transform(np.stack(X)), ref,
                               atol=1e-6)
    stereo = [np.stack([x + 0.01, x - 0.01], axis=1) for x in X]  # (samples, channels): mean is x
    np.testing.assert_allclose(enc.transform(stereo), ref, atol=1e-5)
    np.testing.assert_allclose(enc.transform([s.T for s in stereo]), ref, atol=1e-5)  # (channels, samples)


def test_integer_pcm_is_scaled():
    pcm = [np.round(x * 32768).clip(-32768, 32767).astype(np.int16) for x in _noise(2)]
    floats = [p.astype(np.float32) / 32768 for p in pcm]
    ref = FrozenEncoderTransformer(encoder="tiny-vit").fit_transform(floats)
    np.testing.assert_allclose(FrozenEncoderTransformer(encoder="tiny-vit").fit_transform(pcm), ref, atol=1e-5)
    np.testing.assert_allclose(FrozenEncoderTransformer(encoder="tiny-vit").fit_transform(np.stack(pcm)), ref,
                               atol=1e-5)


def test_clips_are_cropped_or_zero_padded():
    long, short = _noise(2, seconds=2.0)[0], _noise(1, seconds=0.4)[0]
    enc = FrozenEncoderTransformer(encoder="tiny-vit").fit([long])
    np.testing.assert_array_equal(enc.transform([long]), enc.transform([long[:16000]]))
    padded = np.concatenate([short, np.zeros(16000 - short.size, np.float32)])
    np.testing.assert_array_equal(enc.transform([short]), enc.transform([padded]))


def test_clip_seconds_sets_the_length():
    enc = FrozenEncoderTransformer(encoder="tiny-vit", clip_seconds=2.0)
    out = enc.fit_transform(_noise(2, seconds=0.7))
    assert out.shape == (2, 1 + 49 * 4, 16)
    assert enc.n_samples_ == 32000 and enc.token_grid_ == (49, 4) and enc.clip_seconds_ == 2.0


def test_array_inputs_are_resampled_from_sample_rate():
    X8 = _noise(2, rate=8000)
    out = FrozenEncoderTransformer(encoder="tiny-vit", sample_rate=8000).fit_transform(X8)
    by_hand = [resample(x, 8000, 16000) for x in X8]
    np.testing.assert_allclose(FrozenEncoderTransformer(encoder="tiny-vit").fit_transform(by_hand), out, atol=1e-5)


def test_44k_and_16k_versions_of_a_clip_give_nearly_the_same_tokens():
    clips16 = [_band_limited(16000, seed=s) for s in range(2)]
    clips44 = [_band_limited(44100, seed=s) for s in range(2)]
    other = [_band_limited(16000, seed=s + 10) for s in range(2)]
    for name in ("tiny-vit", "tiny-cnn"):
        a = FrozenEncoderTransformer(encoder=name, sample_rate=16000).fit_transform(clips16)
        b = FrozenEncoderTransformer(encoder=name, sample_rate=44100).fit_transform(clips44)
        c = FrozenEncoderTransformer(encoder=name, sample_rate=16000).fit_transform(other)
        assert _relative(a, b) < 0.05, name  # measured about 0.015
        assert _relative(a, c) > 0.3, name  # a different clip is far away


def test_long_clips_are_cropped_before_resampling_without_changing_tokens():
    x = _band_limited(44100, seconds=3.0)
    direct = FrozenEncoderTransformer(encoder="tiny-vit", sample_rate=44100).fit_transform([x])
    whole = FrozenEncoderTransformer(encoder="tiny-vit").fit_transform([resample(x, 44100, 16000)])
    np.testing.assert_allclose(direct, whole, atol=1e-4)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_tokens_do_not_depend_on_batch_size(device):
    # float32 on the CPU: equal to rounding. bfloat16 autocast on CUDA: kernels change with the batch
    # shape, so tokens agree to bfloat16 precision (8 bits of mantissa, ~0.4 % relative) only.
    tol = dict(atol=1e-5, rtol=1e-5) if device == "cpu" else dict(atol=3e-2, rtol=3e-2)
    X = _noise(3) + _noise(2, seconds=0.6, seed=1) + _noise(2, seconds=1.5, seed=2)
    for params in (dict(encoder="tiny-vit", layers=[0, 2]), dict(encoder="tiny-cnn", layers=1)):
        ref = FrozenEncoderTransformer(batch_size=1, device=device, **params).fit_transform(X)
        for batch_size in (2, 3, 16):
            out = FrozenEncoderTransformer(batch_size=batch_size, device=device, **params).fit_transform(X)
            np.testing.assert_allclose(out, ref, **tol)


# -- files -----------------------------------------------------------------------------


def test_files_with_their_own_sample_rates(tmp_path):
    rng = np.random.default_rng(0)
    stereo44 = (0.2 * rng.standard_normal((44100, 2)) * 32767).astype(np.int16)
    mono16 = (0.2 * rng.standard_normal(16000) * 32767).astype(np.int16)
    sf.write(tmp_path / "a.wav", stereo44, 44100, subtype="PCM_16")
    sf.write(tmp_path / "b.flac", mono16, 16000, subtype="PCM_16")
    # device="cpu": exact float32 comparisons (CUDA's "auto" dtype is bfloat16).
    enc = FrozenEncoderTransformer(encoder="tiny-vit", sample_rate=8000, device="cpu")  # files have their rate
    out = enc.fit_transform([tmp_path / "a.wav", str(tmp_path / "b.flac")])
    a = FrozenEncoderTransformer(encoder="tiny-vit", sample_rate=44100, device="cpu").fit_transform([stereo44])
    b = FrozenEncoderTransformer(encoder="tiny-vit", sample_rate=16000, device="cpu").fit_transform([mono16])
    np.testing.assert_allclose(out[0], a[0], atol=1e-4)
    np.testing.assert_allclose(out[1], b[0], atol=1e-5)
    mixed = enc.transform([tmp_path / "b.flac", mono16.astype(np.float32) / 32768])  # 8 kHz array
    assert not np.allclose(mixed[0], mixed[1], atol=1e-2)


def test_missing_file_is_named(tmp_path):
    enc = FrozenEncoderTransformer(encoder="tiny-vit")
    with pytest.raises(ValueError, match="X\\[1\\]: audio file not found: .*missing.wav"):
        enc.fit([_noise(1)[0], tmp_path / "missing.wav"])


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"RIFF....not really a wave file" * 20)
    with pytest.raises(ValueError, match="cannot read audio file .*garbage.wav"):
        FrozenEncoderTransformer(encoder="tiny-vit").fit_transform([path])


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "X, message",
    [
        (np.full((2, 16000), np.nan, np.float32), "NaN"),
        ([np.zeros(100, np.float32), np.array([0.0, np.nan, 0.0])], "X\\[1\\] contains NaN or infinite"),
        ([np.zeros(100, np.float32), np.array([0.0, np.inf])], "X\\[1\\] contains NaN or infinite"),
        ([], "X is empty"),
        ([np.zeros(0, np.float32)], "X\\[0\\] is empty"),
        ([np.zeros((0, 2), np.float32)], "X\\[0\\] is empty"),
        (np.zeros((2, 0), np.float32), "0 feature"),
        (np.zeros(16000, np.float32), "got a 1-D array.*wrap a single waveform"),
        (np.zeros((2, 3, 16000), np.float32), "dim 3"),
        ([np.zeros((2, 3, 100), np.float32)], "X\\[0\\] must be a 1-D waveform"),
        ([np.zeros((100, 100), np.float32)], "X\\[0\\] must be a 1-D waveform"),
        ([np.array(["a", "b"])], "X\\[0\\] must be a numeric waveform or a file path"),
        ("clip.wav", "wrap a single file as \\[path\\]"),
    ],
)
def test_bad_input_raises_a_clear_error(X, message):
    with pytest.raises(ValueError, match=message):
        FrozenEncoderTransformer(encoder="tiny-vit").fit_transform(X)


def test_transform_checks_the_width_of_2d_arrays():
    enc = FrozenEncoderTransformer(encoder="tiny-vit").fit(np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError, match="8000 features"):
        enc.transform(np.zeros((2, 8000), np.float32))
    assert enc.transform([np.zeros(8000, np.float32)]).shape == (1, 97, 16)  # lists may differ


def test_nan_in_transform_input_is_rejected():
    enc = FrozenEncoderTransformer(encoder="tiny-vit").fit(_noise(2))
    with pytest.raises(ValueError, match="X\\[0\\] contains NaN"):
        enc.transform([np.full(100, np.nan, np.float32)])


def test_transform_before_fit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        FrozenEncoderTransformer(encoder="tiny-vit").transform(_noise(1))


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(dtype="float64"), "dtype"),
        (dict(output_dtype="int8"), "output_dtype"),
        (dict(clip_seconds=0), "clip_seconds"),
        (dict(sample_rate=0), "sample_rate"),
    ],
)
def test_invalid_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        FrozenEncoderTransformer(encoder="tiny-vit", **params).fit(_noise(1))


# -- layers ----------------------------------------------------------------------------


def test_layer_list_gives_a_4d_output_matching_single_layers():
    X = _noise(2)
    multi = FrozenEncoderTransformer(encoder="tiny-vit", layers=[0, -1]).fit(X)
    out = multi.transform(X)
    assert multi.layers_ == [0, 2] and out.shape == (2, 2, 97, 16)
    np.testing.assert_allclose(out[:, 0], FrozenEncoderTransformer(encoder="tiny-vit", layers=0).fit_transform(X),
                               atol=1e-6)
    np.testing.assert_allclose(out[:, 1], FrozenEncoderTransformer(encoder="tiny-vit", layers=2).fit_transform(X),
                               atol=1e-6)
    single_list = FrozenEncoderTransformer(encoder="tiny-vit", layers=[1]).fit_transform(X)
    assert single_list.shape == (2, 1, 97, 16)
    np.testing.assert_array_equal(
        FrozenEncoderTransformer(encoder="tiny-vit", layers=-2).fit_transform(X), single_list[:, 0])



@pytest.mark.parametrize("layers, resolved", [([-1, 0], [0, 2]), ((0, 0, 2), [0, 2]), ([2, -3], [0, 2])])
def test_a_layer_list_out_of_order_or_repeated_is_sorted_with_a_warning(layers, resolved):
    """Increasing layer order, each layer once (timm's forward_intermediates); the user is told."""
    X = _noise(1)
    with pytest.warns(UserWarning, match=r"selects layers \[0, 2\] in increasing order.*follows \[0, 2\]"):
        enc = FrozenEncoderTransformer(encoder="tiny-vit", layers=layers).fit(X)
    assert enc.layers_ == resolved
    np.testing.assert_array_equal(enc.transform(X), FrozenEncoderTransformer(
        encoder="tiny-vit", layers=[0, 2]).fit_transform(X))


def test_forward_stops_at_the_deepest_requested_layer(recorder):
    X = _noise(2)
    for layers, blocks in ((0, 1), ([0, 1], 2), (-1, 3)):
        recorder.blocks_run = 0
        recorder.records = []
        FrozenEncoderTransformer(encoder=RECORDING, layers=layers, batch_size=2).fit_transform(X)
        assert recorder.blocks_run == blocks, layers
        assert [r["layers"] for r in recorder.records] == [FrozenEncoderTransformer(
            encoder=RECORDING, layers=layers).fit(X).layers_]


def test_layers_with_different_shapes_are_rejected():
    with pytest.raises(ValueError, match="different shapes \\(layer 0: 784 x 8, layer 1: 200 x 16\\)"):
        FrozenEncoderTransformer(encoder="tiny-cnn", layers=[0, 1]).fit(_noise(1))


@pytest.mark.parametrize("layers", [3, -4, [0, 5], [1.5], ["a"]])
def test_layers_out_of_range(layers):
    with pytest.raises(ValueError, match="layers must be integers in \\[-3, 2\\] for this encoder"):
        FrozenEncoderTransformer(encoder="tiny-vit", layers=layers).fit(_noise(1))


def test_empty_layer_list():
    with pytest.raises(ValueError, match="layers must not be empty"):
        FrozenEncoderTransformer(encoder="tiny-vit", layers=[]).fit(_noise(1))


# -- frozen: eval mode, inference mode, no learning ------------------------------------


def test_encoder_runs_frozen_in_eval_and_inference_mode(recorder):
    X = _noise(3)
    enc = FrozenEncoderTransformer(encoder=RECORDING, batch_size=2)
    enc.fit_transform(X)
    enc.transform(X)
    assert len(recorder.records) == 4
    for record in recorder.records:
        assert record["inference"] and not record["training"]
        assert record["wav_dtype"] == torch.float32
    module = recorder.records[-1]["module"]
    assert not any(p.requires_grad for p in module.parameters())
    fresh = RecordingEncoder().state_dict()
    for key, value in module.state_dict().items():
        assert torch.equal(value.cpu(), fresh[key]), key  # parameters never change (on whatever device)


def test_fit_learns_nothing():
    A, B = _noise(3, seed=0), _noise(3, seed=1)
    on_a = FrozenEncoderTransformer(encoder="tiny-vit").fit(A).transform(B)
    on_b = FrozenEncoderTransformer(encoder="tiny-vit").fit(B).transform(B)
    np.testing.assert_array_equal(on_a, on_b)


# -- precision and device --------------------------------------------------------------


def test_auto_dtype_computes_in_float32_on_cpu(recorder):
    out = FrozenEncoderTransformer(encoder=RECORDING, device="cpu").fit_transform(_noise(1))
    record = recorder.records[-1]
    assert not record["autocast"] and record["matmul_dtype"] == torch.float32
    assert out.dtype == np.float32


def test_bfloat16_autocast_when_asked(recorder):
    X = _noise(2)
    out = FrozenEncoderTransformer(encoder=RECORDING, dtype="bfloat16").fit_transform(X)  # on any device
    record = recorder.records[-1]
    assert record["autocast"] and record["matmul_dtype"] == torch.bfloat16
    assert out.dtype == np.float32
    ref = FrozenEncoderTransformer(encoder=RECORDING, dtype="float32").fit_transform(X)
    assert not recorder.records[-1]["autocast"]
    assert _relative(ref, out) < 0.1


def test_auto_dtype_is_bfloat16_on_cuda():
    enc = FrozenEncoderTransformer(encoder="tiny-vit")
    assert enc._compute_dtype(torch.device("cuda")) == torch.bfloat16
    assert enc._compute_dtype(torch.device("cpu")) == torch.float32
    assert FrozenEncoderTransformer(dtype="float16")._compute_dtype(torch.device("cuda")) == torch.float16


def test_output_dtype_float16():
    X = _noise(2)
    half = FrozenEncoderTransformer(encoder="tiny-vit", output_dtype="float16").fit_transform(X)
    full = FrozenEncoderTransformer(encoder="tiny-vit").fit_transform(X)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), full, rtol=2e-3, atol=2e-3)
    multi = FrozenEncoderTransformer(encoder="tiny-vit", layers=[0, 1], output_dtype="float16").fit_transform(X)
    assert multi.dtype == np.float16 and multi.shape == (2, 2, 97, 16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    enc = FrozenEncoderTransformer(encoder="tiny-vit", device="cuda")
    with pytest.raises(ValueError, match="device='cuda' was requested but CUDA is not available"):
        enc.fit_transform(_noise(1))


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu0'"):
        FrozenEncoderTransformer(encoder="tiny-vit", device="gpu0").fit_transform(_noise(1))


# -- lazy weights, pickling, cloning ---------------------------------------------------


def test_weights_load_lazily_once(loads, big_checkpoint):
    X = _noise(2)
    # device="cpu": the output is compared with a float32 forward below (the CUDA twin is the next test).
    enc = FrozenEncoderTransformer(encoder=BIG, checkpoint=big_checkpoint, device="cpu")
    enc.fit(X)
    assert loads == {"load_encoder": 0, "read_checkpoint": 0}  # fit only describes the layout
    out = enc.transform(X)
    assert loads == {"load_encoder": 1, "read_checkpoint": 1}
    enc.transform(X)
    other = clone(enc).fit(X)  # clones share the in-process copy
    np.testing.assert_array_equal(other.transform(X), out)
    assert loads["load_encoder"] == 1
    with torch.inference_mode():
        expected = BigEncoder(seed=1).eval()(torch.from_numpy(np.stack(X)))
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-5)  # the checkpoint's weights, not the seed's


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_weights_load_lazily_once_on_cuda(loads, big_checkpoint, tmp_path):
    X = _noise(2)
    enc = FrozenEncoderTransformer(encoder=BIG, checkpoint=big_checkpoint, device="auto").fit(X)
    out = enc.transform(X)
    clone(enc).set_params(device="cuda").fit(X).transform(X)  # "cuda" and "auto" name one GPU
    enc.set_params(store=tmp_path).transform(X)  # hashing the weights for the store reads no more
    assert loads == {"load_encoder": 1, "read_checkpoint": 1}
    with torch.inference_mode():
        expected = BigEncoder(seed=1).eval()(torch.from_numpy(np.stack(X)))
    np.testing.assert_allclose(out, expected.numpy(), atol=5e-2, rtol=5e-2)  # bfloat16 autocast


def test_clone_set_params_and_pickle_never_load_weights(loads, big_checkpoint):
    enc = FrozenEncoderTransformer(encoder=BIG, checkpoint=big_checkpoint)
    clone(enc).set_params(batch_size=4, layers=0)
    enc.fit(_noise(1))
    for _ in range(3):
        copy = clone(enc)
        copy.set_params(batch_size=2, verbose=1, device="cpu")
        copy.get_params()
        repr(copy)
    pickle.loads(pickle.dumps(enc))
    assert loads == {"load_encoder": 0, "read_checkpoint": 0}


def test_pickle_excludes_the_weights(loads, big_checkpoint):
    assert big_checkpoint.stat().st_size > 8_000_000
    X = _noise(2)
    enc = FrozenEncoderTransformer(encoder=BIG, checkpoint=big_checkpoint)
    out = enc.fit_transform(X)  # weights now loaded in this process
    payload = pickle.dumps(enc)
    assert len(payload) < 5_000
    assert b"_rebuild_tensor" not in payload and b"cuda" not in payload
    clear_encoder_cache()  # as in a fresh process on another machine
    restored = pickle.loads(payload)
    assert restored.get_params() == enc.get_params()
    assert restored.layouts_ == enc.layouts_
    np.testing.assert_array_equal(restored.transform(X), out)
    assert loads["load_encoder"] == 2


def test_fitted_on_a_gpu_machine_works_on_a_cpu_one(loads, big_checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # fit and pickle "on a GPU machine"
    payload = pickle.dumps(FrozenEncoderTransformer(encoder=BIG, checkpoint=big_checkpoint).fit(_noise(1)))
    monkeypatch.undo()
    restored = pickle.loads(payload)  # device="auto" is resolved at transform time
    assert restored.transform(_noise(1)).shape == (1, 200, 16)


def test_checkpoint_not_matching_the_architecture(tmp_path, loads):
    path = tmp_path / "cnn.pt"
    torch.save({"model": TinyConvEncoder().state_dict()}, path)  # no bulk.* weights
    enc = FrozenEncoderTransformer(encoder=BIG, checkpoint=path)
    with pytest.raises(ValueError, match=f"checkpoint {path} does not match BigEncoder: 2 missing key\\(s\\): "
                                         "bulk.weight, bulk.bias"):
        enc.fit_transform(_noise(1))


def test_missing_checkpoint_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="'test-big-cnn' needs a local checkpoint.*big.pt from the test"):
        FrozenEncoderTransformer(encoder=BIG).fit_transform(_noise(1))
    with pytest.raises(FileNotFoundError, match="not found: .*nope.pt"):
        FrozenEncoderTransformer(encoder=BIG, checkpoint=tmp_path / "nope.pt").fit_transform(_noise(1))


def test_architecture_read_from_the_checkpoint(tmp_path, loads):
    """Encoders whose depth and width come from the checkpoint get their layout in fit."""
    folder = tmp_path / "configured"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"n_layers": 3, "dim": 5}))
    enc = FrozenEncoderTransformer(encoder=CONFIGURED, checkpoint=folder, layers=-1)
    out = enc.fit_transform(_noise(2))
    assert enc.layers_ == [2] and enc.dim_ == 5 and enc.token_grid_ == (50, 1)
    assert out.shape == (2, 50, 5)
    assert loads["load_encoder"] == 1  # loaded once, in fit (on the CPU), and moved to the device by transform
    with pytest.raises(ValueError, match="layers must be integers in \\[-3, 2\\]"):
        FrozenEncoderTransformer(encoder=CONFIGURED, checkpoint=folder, layers=5).fit(_noise(1))


def test_transformers_folder_through_the_transformer(tmp_path):
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = tf.Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                               conv_dim=(8,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
                               vocab_size=8)
    tf.Wav2Vec2Model(config).save_pretrained(tmp_path / "w2v")
    X = np.stack(_noise(2))
    enc = FrozenEncoderTransformer(encoder="hf-wav2vec2", checkpoint=tmp_path / "w2v", layers=[0, -1],
                                   clip_seconds=1.0, device="cpu")  # compared with a float32 CPU forward
    out = enc.fit_transform(X)
    assert enc.layers_ == [0, 1] and out.shape == (2, 2, 49, 16)
    module = skprobe.load_encoder("hf-wav2vec2", tmp_path / "w2v")
    with torch.inference_mode():
        expected = module.forward_layers(torch.from_numpy(X), [0, 1])
    np.testing.assert_allclose(out[:, 1], expected[1].numpy(), atol=1e-5)


# -- progress --------------------------------------------------------------------------


def test_verbose_shows_a_progress_bar_on_stderr(capsys):
    FrozenEncoderTransformer(encoder="tiny-vit", verbose=1, batch_size=2).fit_transform(_noise(3))
    captured = capsys.readouterr()
    assert "tiny-vit tokens" in captured.err and "3/3" in captured.err
    assert captured.out == ""
    FrozenEncoderTransformer(encoder="tiny-vit").fit_transform(_noise(3))
    assert capsys.readouterr().err == ""


# -- grid search -----------------------------------------------------------------------


def _grid_search(cache, refit):
    pipe = Pipeline([
        ("enc", FrozenEncoderTransformer(encoder=RECORDING, store=cache, batch_size=4)),
        ("probe", skprobe.LinearProbeClassifier(max_iter=2, random_state=0)),
    ])
    return GridSearchCV(pipe, {"probe__learning_rate": [1e-2, 1e-3]}, cv=3, refit=refit)


@pytest.mark.parametrize("refit", [True, False])
def test_grid_search_encodes_each_distinct_clip_once(tmp_path, recorder, refit):
    clips = _noise(10, seconds=0.5)
    X = clips + [clips[0].copy(), clips[3].copy()]  # 12 clips, 10 distinct
    y = np.array([0, 1] * 6)
    search = _grid_search(tmp_path / "tokens", refit).fit(X, y)
    assert recorder.clips == 10
    if refit:
        assert search.predict(X[:4]).shape == (4,)
        assert recorder.clips == 10


def test_grid_search_without_cache_recomputes(recorder):
    clips = _noise(6, seconds=0.5)
    _grid_search(None, refit=False).fit(clips, np.array([0, 1] * 3))
    assert recorder.clips == 2 * 3 * 6  # every candidate and fold encodes its train and test clips
