"""SSLAM: EAT's architecture with SSLAM's fairseq checkpoints (pretrained and AS-2M fine-tuned)."""

from __future__ import annotations

import pytest
import torch
from fbank_vit_layouts import (
    assert_constants_loaded,
    constant_state,
    reference_eat,
    reference_fbank,
    save_eat_finetuned,
    save_eat_pretrained,
)

from skprobe.encoders import get_encoder_spec, list_encoders, load_encoder
from skprobe.encoders.formats.checkpoint import read_checkpoint
from skprobe.encoders.models.eat import EAT, NORM_MEAN, NORM_STD


@pytest.mark.parametrize(
    "name, weights_file", [("sslam", "checkpoint_last.pt"), ("sslam-as2m-ft", "checkpoint_best.pt")]
)
def test_registry_metadata(name, weights_file):
    meta = list_encoders()[name]
    assert meta["dim"] == 768 and meta["n_layers"] == 12 and meta["n_heads"] == 12
    assert meta["token_grid"] == (64, 8) and meta["prefix_tokens"] == 1
    assert meta["sample_rate"] == 16000 and meta["clip_seconds"] == 10.0
    assert meta["weights_file"] == weights_file
    assert "drive.google.com" in meta["weights_source"] and "ta012/SSLAM" in meta["weights_source"]
    assert meta["license"].startswith("MIT")
    assert get_encoder_spec(name).builder is EAT


def test_missing_checkpoint_says_where_to_get_it():
    with pytest.raises(FileNotFoundError, match="checkpoint_last.pt"):
        load_encoder("sslam")


@pytest.mark.parametrize(
    "name, save", [("sslam", save_eat_pretrained), ("sslam-as2m-ft", save_eat_finetuned)]
)
def test_full_size_official_layout_loads_strictly(tmp_path, name, save):
    # SSLAM's model code has max_length=768: a 768 x 8 = 6144-row position table.
    template = EAT()
    state = constant_state(template)
    path = tmp_path / "checkpoint.pt"
    save(path, state, position_rows=6144)
    enc = load_encoder(name, checkpoint=path)
    assert_constants_loaded(enc, state, rtol=1e-3)
    if name == "sslam":
        with torch.inference_mode():
            out = enc.forward_layers(0.1 * torch.randn(1, 160000), [11])
        assert out[0].shape == (1, 513, 768)


def test_matches_the_official_forward(tmp_path):
    torch.manual_seed(1)
    model = EAT(depth=2, dim=64, num_heads=4).eval()
    path = tmp_path / "checkpoint_last.pt"
    save_eat_pretrained(path, model.state_dict(), position_rows=6144)
    loaded = EAT(depth=2, dim=64, num_heads=4).eval()
    loaded.load_checkpoint(path)
    wav = 0.1 * torch.randn(2, 120000, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ours = loaded.forward_layers(wav, [1])[0]
        ref = reference_eat(read_checkpoint(path)["model"], reference_fbank(wav, NORM_MEAN, NORM_STD), 2, 4)
    assert (ours - ref).abs().max().item() < 1e-4
