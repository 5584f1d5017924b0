"""Encoder registry, user-defined encoders and the contract checker."""

from collections.abc import Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import skprobe
from skprobe import AudioEncoder, EncoderSpec, FrozenEncoderTransformer, TokenLayout, check_encoder
from skprobe.audio import resample
from skprobe.encoders import get_encoder_spec, list_encoders, register_encoder
from skprobe.encoders.models.tiny import TinyConvEncoder, TinyTransformerEncoder
from skprobe.extraction.transformer import clear_encoder_cache

pytestmark = pytest.mark.usefixtures("one_torch_thread")


METADATA_KEYS = {
    "name", "sample_rate", "clip_seconds", "dim", "n_layers", "prefix_tokens", "token_grid", "n_heads",
    "license", "weights_source", "weights_file", "packaged_weights", "requires_checkpoint", "description", "extra",
}


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry, so test registrations do not leak."""
    from skprobe.encoders import registry as reg

    reg._ensure_builtin()
    monkeypatch.setattr(reg, "_REGISTRY", dict(reg._REGISTRY))
    return reg


# -- a user-defined encoder ------------------------------------------------------------


class FramingEncoder(AudioEncoder):
    """8 kHz, 50 ms frames projected to 6 dims; a mean ``[cls]`` token in front.

    Layer 0 is the projection, layer 1 a tanh MLP on top; both ``(B, 1 + T, 6)``.
    """

    sample_rate = 8000
    n_layers = 2
    hop = 400
    dim = 6

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.proj = nn.Linear(self.hop, self.dim)
            self.mlp = nn.Linear(self.dim, self.dim)

    def forward_layers(self, wav: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        n_time = wav.shape[1] // self.hop
        x = self.proj(wav[:, : n_time * self.hop].reshape(wav.shape[0], n_time, self.hop))
        out = []
        for i in range(max(layers) + 1):
            if i == 1:
                x = torch.tanh(self.mlp(x))
            if i in layers:
                out.append(torch.cat([x.mean(dim=1, keepdim=True), x], dim=1))
        return out

    def layout(self, n_samples: int, layer: int) -> TokenLayout:
        return TokenLayout(1, n_samples // self.hop, 1, self.dim, self.hop / self.sample_rate)


def _framing_spec(name="user-framer", requires_checkpoint=False):
    return EncoderSpec(name=name, builder=FramingEncoder, sample_rate=8000, clip_seconds=1.0, dim=6, n_layers=2,
                       prefix_tokens=1, token_grid=(20, 1), license="MIT", weights_source="my lab",
                       requires_checkpoint=requires_checkpoint, description="framing test encoder")


def _waves(n=3, seconds=1.2, rate=16000, seed=0):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((n, int(seconds * rate)))).astype(np.float32)


# -- list_encoders ---------------------------------------------------------------------


def test_list_encoders_metadata():
    listed = skprobe.list_encoders()
    assert {"yamnet", "beats", "dasheng", "asit"} <= set(listed)
    assert "tiny-cnn" not in listed and "tiny-vit" not in listed
    for name, meta in listed.items():
        assert set(meta) == METADATA_KEYS, name
        assert meta["name"] == name
        assert isinstance(meta["sample_rate"], int) and meta["sample_rate"] > 0
        assert meta["clip_seconds"] > 0 and meta["dim"] > 0 and meta["n_layers"] > 0
        assert meta["prefix_tokens"] >= 0 and len(meta["token_grid"]) == 2
        assert meta["license"] and meta["weights_source"], name
        assert meta["requires_checkpoint"] or meta["packaged_weights"] is not None
    assert listed["yamnet"]["packaged_weights"]["requirement"]  # nested dataclass became a dict


def test_list_encoders_include_test_and_sorted():
    listed = list_encoders(include_test=True)
    assert list(listed) == sorted(listed)
    tiny = listed["tiny-vit"]
    assert (tiny["dim"], tiny["n_layers"], tiny["prefix_tokens"], tiny["token_grid"]) == (16, 3, 1, (24, 4))
    assert tiny["requires_checkpoint"] is False


def test_metadata_matches_the_architectures():
    """Every registered spec's promises agree with its module's own layout."""
    for name, meta in list_encoders(include_test=True).items():
        module = FrozenEncoderTransformer._skeleton(get_encoder_spec(name))
        if module.layout_needs_weights:  # architecture read from the checkpoint folder
            continue
        assert module.sample_rate == meta["sample_rate"], name
        assert module.n_layers == meta["n_layers"], name
        lay = module.layout(int(round(meta["clip_seconds"] * module.sample_rate)), module.n_layers - 1)
        assert (lay.prefix_tokens, (lay.n_time, lay.n_freq), lay.dim) == (
            meta["prefix_tokens"], tuple(meta["token_grid"]), meta["dim"]), name


# -- register / look up ----------------------------------------------------------------


def test_register_and_look_up(registry):
    spec = register_encoder(_framing_spec("My-Framer"))
    assert get_encoder_spec("my-framer") is spec
    assert get_encoder_spec("MY-FRAMER") is spec
    assert get_encoder_spec(spec) is spec
    assert "my-framer" in list_encoders(include_test=True)
    assert "my-framer" not in list_encoders()  # no checkpoint needed: a test encoder


def test_register_duplicate_needs_overwrite(registry):
    register_encoder(_framing_spec())
    with pytest.raises(ValueError, match="'user-framer' is already registered; pass overwrite=True"):
        register_encoder(_framing_spec())
    with pytest.raises(ValueError, match="'tiny-cnn' is already registered"):
        register_encoder(_framing_spec("tiny-cnn"))
    replacement = _framing_spec()
    assert register_encoder(replacement, overwrite=True) is replacement
    assert get_encoder_spec("user-framer") is replacement


def test_register_rejects_non_specs(registry):
    with pytest.raises(TypeError, match="spec must be an EncoderSpec, got dict"):
        register_encoder({"name": "x"})


def test_unknown_name_lists_registered_names(registry):
    with pytest.raises(ValueError, match="unknown encoder 'no-such-encoder'; registered encoders: .*tiny-cnn.*yamnet"):
        get_encoder_spec("no-such-encoder")
    with pytest.raises(ValueError, match="unknown encoder 'nope'"):
        FrozenEncoderTransformer(encoder="nope").fit(_waves())


def test_non_string_encoder_is_rejected():
    with pytest.raises(ValueError, match="encoder must be a registered name or an EncoderSpec, got int"):
        get_encoder_spec(3)


# -- a user encoder through FrozenEncoderTransformer -----------------------------------


def test_user_encoder_registered_and_used_by_name(registry):
    register_encoder(_framing_spec())
    X = _waves()
    # device="cpu": compared with the module run by hand in float32 (CUDA's "auto" dtype is bfloat16).
    enc = FrozenEncoderTransformer(encoder="user-framer", layers=[0, -1], sample_rate=16000, device="cpu")
    out = enc.fit_transform(X)
    assert out.shape == (3, 2, 21, 6)
    assert enc.encoder_sample_rate_ == 8000 and enc.n_samples_ == 8000
    assert enc.prefix_tokens_ == 1 and enc.token_grid_ == (20, 1) and enc.hop_seconds_ == 0.05
    # Same as running the module by hand on the resampled, cropped clips.
    wav = torch.from_numpy(np.stack([resample(x[:16160], 16000, 8000)[:8000] for x in X]))
    with torch.inference_mode():
        ref = FramingEncoder().eval().forward_layers(wav, [0, 1])
    np.testing.assert_allclose(out[:, 0], ref[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(out[:, 1], ref[1].numpy(), atol=1e-5)


def test_user_encoder_spec_used_without_registering():
    enc = FrozenEncoderTransformer(encoder=_framing_spec("unregistered-framer"), sample_rate=8000)
    out = enc.fit_transform(list(_waves(rate=8000)))
    assert out.shape == (3, 21, 6)
    with pytest.raises(ValueError, match="unknown encoder"):
        get_encoder_spec("unregistered-framer")


def test_user_encoder_with_its_own_checkpoint(registry, tmp_path):
    clear_encoder_cache()
    register_encoder(_framing_spec("user-framer-ckpt", requires_checkpoint=True))
    path = tmp_path / "framer.pt"
    torch.save({"state_dict": FramingEncoder(seed=5).state_dict()}, path)
    X = _waves(rate=8000)
    with pytest.raises(FileNotFoundError, match="'user-framer-ckpt' needs a local checkpoint .*my lab"):
        FrozenEncoderTransformer(encoder="user-framer-ckpt", sample_rate=8000).fit_transform(X)
    out = FrozenEncoderTransformer(encoder="user-framer-ckpt", checkpoint=path, sample_rate=8000,
                                   device="cpu").fit_transform(X)  # compared with a float32 CPU forward
    with torch.inference_mode():
        ref = FramingEncoder(seed=5).eval()(torch.from_numpy(X[:, :8000]))
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-5)
    assert check_encoder("user-framer-ckpt", checkpoint=path)[1].dim == 6


# -- check_encoder ---------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["tiny-cnn", "tiny-vit", TinyConvEncoder(), FramingEncoder()])
def test_check_encoder_accepts_good_encoders(encoder):
    layouts = check_encoder(encoder)
    assert all(isinstance(lay, TokenLayout) for lay in layouts.values())


def test_check_encoder_returns_layouts_per_layer():
    layouts = check_encoder(TinyTransformerEncoder(), clip_seconds=0.5)
    assert sorted(layouts) == [0, 1, 2]
    assert layouts[2] == TokenLayout(1, 12, 4, 16, 0.04)


class WrongLayout(TinyConvEncoder):
    def layout(self, n_samples, layer):
        lay = super().layout(n_samples, layer)
        return TokenLayout(lay.prefix_tokens, lay.n_time + 1, lay.n_freq, lay.dim, lay.hop_seconds)


class BadOrder(TinyConvEncoder):
    def layout(self, n_samples, layer):
        lay = super().layout(n_samples, layer)
        return TokenLayout(lay.prefix_tokens, lay.n_time, lay.n_freq, lay.dim, lay.hop_seconds, "time_major")


class BatchDependent(TinyConvEncoder):
    """Normalises with batch statistics (the classic batch-norm-in-train-mode mistake)."""

    def forward_layers(self, wav, layers):
        return [t - t.mean(dim=0, keepdim=True) for t in super().forward_layers(wav, layers)]


class DropoutLeftOn(TinyConvEncoder):
    """Functional dropout that ignores eval mode."""

    def forward_layers(self, wav, layers):
        return [F.dropout(t, 0.5, training=True) for t in super().forward_layers(wav, layers)]


class TooFewMaps(TinyConvEncoder):
    def forward_layers(self, wav, layers):
        return super().forward_layers(wav, layers)[:1]


class LayerSetDependent(TinyConvEncoder):
    def forward_layers(self, wav, layers):
        return [t + len(layers) for t in super().forward_layers(wav, layers)]


class NaNTokens(TinyConvEncoder):
    def forward_layers(self, wav, layers):
        return [t * float("nan") for t in super().forward_layers(wav, layers)]


class FloatRate(TinyConvEncoder):
    sample_rate = 16000.0


class NoLayers(TinyConvEncoder):
    n_layers = 0


@pytest.mark.parametrize(
    "broken, message",
    [
        (WrongLayout(), "layer 0 at 1 s: tokens \\(3, 784, 8\\) but layout says \\(3, 800, 8\\)"),
        (BadOrder(), "invalid order 'time_major'"),
        (BatchDependent(), "tokens change with the other clips in its batch"),
        (DropoutLeftOn(), "dropout or other randomness left on"),
        (TooFewMaps(), "must return 2 tensors"),
        (LayerSetDependent(), "layer 0 differs when requested alone and with all layers"),
        (NaNTokens(), "layer 0 returned NaN or infinite tokens"),
        (FloatRate(), "sample_rate must be a positive int, got 16000.0"),
        (NoLayers(), "n_layers must be a positive int, got 0"),
        (nn.Linear(2, 2), "expected an AudioEncoder module, got Linear"),
    ],
)
def test_check_encoder_catches_broken_encoders(broken, message):
    with pytest.raises(ValueError, match="encoder does not keep the AudioEncoder contract: .*" + message):
        check_encoder(broken)


def test_check_encoder_puts_the_module_in_eval_mode():
    class WithDropoutModule(TinyConvEncoder):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.5)

        def forward_layers(self, wav, layers):
            return [self.drop(t) for t in super().forward_layers(wav, layers)]

    module = WithDropoutModule().train()
    check_encoder(module)  # nn.Dropout is off in eval mode, which check_encoder sets
    assert not module.training
