"""EAT: official fairseq checkpoint layouts, front end, architecture and token layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fbank_vit_layouts import (
    assert_constants_loaded,
    constant_state,
    numpy_sincos_2d,
    reference_eat,
    reference_fbank,
    save_audiomae_pretrained,
    save_eat_finetuned,
    save_eat_pretrained,
)
from fbank_vit_layouts import (
    noise_wav as _wav,
)

from skprobe.encoders import list_encoders, load_encoder
from skprobe.encoders.formats.checkpoint import PickledObjectStub, read_checkpoint, unwrap_state_dict
from skprobe.encoders.models.audiomae import AudioMAE
from skprobe.encoders.models.eat import EAT, NORM_MEAN, NORM_STD, convert_eat_state_dict, eat_pos_embed


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return EAT(depth=2, dim=64, num_heads=4).eval()


@pytest.mark.parametrize(
    "name, weights_file", [("eat", "EAT-base_epoch30_pt.pt"), ("eat-as2m-ft", "EAT-base_epoch30_ft.pt")]
)
def test_registry_metadata(name, weights_file):
    meta = list_encoders()[name]
    assert meta["dim"] == 768 and meta["n_layers"] == 12 and meta["n_heads"] == 12
    assert meta["token_grid"] == (64, 8) and meta["prefix_tokens"] == 1
    assert meta["sample_rate"] == 16000 and meta["clip_seconds"] == 10.0
    assert meta["weights_file"] == weights_file
    assert "drive.google.com" in meta["weights_source"] and meta["license"].startswith("MIT")
    assert meta["extra"]["norm_mean"] == -4.268 and meta["extra"]["norm_std"] == 4.569


def test_position_table_is_the_official_one():
    table = eat_pos_embed(768)
    assert table.shape == (1, 512, 768)
    # Official: get_2d_sincos_pos_embed_flexible(768, (64, 8)) with float32 frequencies.
    ref = numpy_sincos_2d(768, (64, 8), omega_dtype="float32")
    assert np.abs(table[0].numpy() - ref).max() < 1e-5
    # The updated code's 768 x 8 table starts with the same 512 rows.
    assert torch.allclose(eat_pos_embed(768, 768)[:, :512], table)


@pytest.mark.parametrize("seconds, raw_frames", [(5.0, 498), (10.0, 998), (12.0, 1198)])
def test_inference_path_shapes(small, seconds, raw_frames):
    wav = _wav(seconds)
    assert small.frontend.n_frames(wav.shape[1]) == raw_frames
    spec = small.spectrogram(wav)
    assert spec.shape == (1, 1024, 128)
    patches = small.patch_embed(spec.unsqueeze(1))
    assert patches.shape == (1, 512, 64)
    assert small.embed_tokens(patches).shape == (1, 513, 64)
    layout = small.layout(wav.shape[1], 0)
    assert (layout.prefix_tokens, layout.n_time, layout.n_freq, layout.order) == (1, 64, 8, "time_freq")


def test_shorter_target_length_uses_the_first_positions():
    model = EAT(depth=1, dim=32, num_heads=2, target_frames=512).eval()
    with torch.inference_mode():
        out = model.forward_layers(_wav(5.0), [0])[0]
    assert out.shape == (1, 1 + 32 * 8, 32)
    assert model.layout(80000, 0).n_time == 32
    with pytest.raises(ValueError, match="target_frames"):
        EAT(depth=1, dim=32, num_heads=2, target_frames=1040)
    with pytest.raises(ValueError, match="multiple of 16"):
        EAT(depth=1, dim=32, num_heads=2, target_frames=1000)


@pytest.mark.parametrize("position_rows", [512, 6144])
@pytest.mark.parametrize("save", [save_eat_pretrained, save_eat_finetuned], ids=["pretrained", "finetuned"])
def test_matches_the_official_forward(small, tmp_path, save, position_rows):
    path = tmp_path / "checkpoint.pt"
    save(path, small.state_dict(), position_rows=position_rows)
    model = EAT(depth=2, dim=64, num_heads=4).eval()
    model.load_checkpoint(path)
    wav = torch.cat([_wav(10.0, seed=1), _wav(3.0, seed=2).repeat(1, 4)[:, :160000] * 0.01])
    official = read_checkpoint(path)["model"]
    if save is save_eat_finetuned:  # feature_extract.py uses model.model of the classifier
        official = {k[len("model."):]: v for k, v in official.items() if k.startswith("model.")}
    with torch.inference_mode():
        ours = model.forward_layers(wav, [0, 1])
        ref = reference_eat(official, reference_fbank(wav, NORM_MEAN, NORM_STD), depth=2, heads=4)
    assert ours[1].shape == ref.shape == (2, 513, 64)
    # The pretraining student is stored in fp16, as fairseq does with common.fp16.
    assert (ours[1] - ref).abs().max().item() < 1e-4
    assert ours[0].shape == (2, 513, 64)


def test_pretrained_checkpoint_drops_decoder_and_ema(small, tmp_path):
    path = tmp_path / "EAT-base_epoch30_pt.pt"
    save_eat_pretrained(path, small.state_dict())
    raw = read_checkpoint(path)
    assert isinstance(raw["cfg"], PickledObjectStub)  # omegaconf is not installed, nothing is run
    assert raw["cfg"].qualname == "omegaconf.dictconfig.DictConfig"
    flat = unwrap_state_dict(raw)
    assert any(k.startswith("_ema.") for k in flat)
    assert any(".decoder." in k for k in flat)
    converted = convert_eat_state_dict(flat)
    assert set(converted) == set(small.state_dict())


@pytest.mark.parametrize(
    "name, save, position_rows",
    [("eat", save_eat_pretrained, 512), ("eat-as2m-ft", save_eat_finetuned, 6144)],
)
def test_full_size_official_layout_loads_strictly(tmp_path, name, save, position_rows):
    template = EAT()
    state = constant_state(template)
    path = tmp_path / "checkpoint.pt"
    save(path, state, position_rows=position_rows)
    enc = load_encoder(name, checkpoint=path)
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    assert_constants_loaded(enc, state, rtol=1e-3)  # the student went through fp16
    if name == "eat":  # one full ViT-B forward of a 10 s clip (the fine-tuned variant has the same graph)
        with torch.inference_mode():
            out = enc.forward_layers(_wav(10.0), [11])
        assert len(out) == 1 and out[0].shape == (1, 513, 768)


def test_early_stopping_runs_only_the_requested_blocks():
    torch.manual_seed(0)
    model = EAT(depth=3, dim=32, num_heads=2).eval()
    calls: list[int] = []
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda *_, i=i: calls.append(i))
    with torch.inference_mode():
        out = model.forward_layers(_wav(2.0), [0])
    assert calls == [0] and len(out) == 1 and out[0].shape == (1, 513, 32)
    calls.clear()
    with torch.inference_mode():
        out = model.forward_layers(_wav(2.0), [1, 2])
    assert calls == [0, 1, 2] and len(out) == 2


def test_wrong_checkpoints_fail_with_the_mismatching_keys(small, tmp_path):
    mae = tmp_path / "pretrained.pth"
    save_audiomae_pretrained(mae, AudioMAE(depth=2, dim=64, num_heads=4).state_dict())
    with pytest.raises(ValueError, match=r"missing key\(s\): .*pre_norm.*unexpected key\(s\): .*norm\."):
        EAT(depth=2, dim=64, num_heads=4).load_checkpoint(mae)
    truncated = {k: v for k, v in small.state_dict().items() if k != "pre_norm.bias"}
    path = tmp_path / "truncated.pt"
    save_eat_pretrained(path, truncated)
    with pytest.raises(ValueError, match=r"missing key\(s\): pre_norm\.bias"):
        EAT(depth=2, dim=64, num_heads=4).load_checkpoint(path)
    short = {**small.state_dict(), "pos_embed": small.pos_embed[:, :256]}
    save_eat_pretrained(path, short, position_rows=256)
    with pytest.raises(ValueError, match=r"wrong shape.*pos_embed"):
        EAT(depth=2, dim=64, num_heads=4).load_checkpoint(path)
