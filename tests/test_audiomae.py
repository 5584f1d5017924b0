"""Audio-MAE: official checkpoint layout, front end, architecture and token layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fbank_vit_layouts import (
    assert_constants_loaded,
    constant_state,
    fake_modules,
    numpy_sincos_2d,
    reference_audiomae,
    reference_fbank,
    save_audiomae_pretrained,
    save_eat_pretrained,
)
from fbank_vit_layouts import (
    noise_wav as _wav,
)

from skprobe.encoders import get_encoder_spec, list_encoders, load_encoder
from skprobe.encoders.formats.checkpoint import PickledObjectStub, read_checkpoint, unwrap_state_dict
from skprobe.encoders.models.audiomae import NORM_MEAN, NORM_STD, AudioMAE, audiomae_pos_embed
from skprobe.encoders.models.eat import EAT


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return AudioMAE(depth=2, dim=64, num_heads=4).eval()


def test_registry_metadata():
    meta = list_encoders()["audiomae"]
    assert meta["dim"] == 768 and meta["n_layers"] == 12 and meta["n_heads"] == 12
    assert meta["token_grid"] == (64, 8) and meta["prefix_tokens"] == 1
    assert meta["sample_rate"] == 16000 and meta["clip_seconds"] == 10.0
    assert meta["weights_file"] == "pretrained.pth"
    assert "drive.google.com" in meta["weights_source"] and "CC BY-NC" in meta["license"]
    spec = get_encoder_spec("audiomae")
    assert spec.requires_checkpoint and spec.packaged_weights is None


def test_missing_checkpoint_says_where_to_get_it():
    with pytest.raises(FileNotFoundError, match="pretrained.pth"):
        load_encoder("audiomae")


def test_position_table_is_the_official_one():
    table = audiomae_pos_embed(768)
    assert table.shape == (1, 513, 768)
    assert torch.equal(table[0, 0], torch.zeros(768))
    # Official: get_2d_sincos_pos_embed_flexible(768, patch_hw=(8, 64), cls_token=True).
    ref = numpy_sincos_2d(768, (8, 64))
    assert np.abs(table[0, 1:].numpy() - ref).max() < 1e-6


@pytest.mark.parametrize("seconds, raw_frames", [(5.0, 498), (10.0, 998), (12.0, 1198)])
def test_inference_path_shapes(small, seconds, raw_frames):
    wav = _wav(seconds)
    assert small.frontend.n_frames(wav.shape[1]) == raw_frames
    spec = small.spectrogram(wav)
    assert spec.shape == (1, 1024, 128)
    patches = small.patch_embed(spec.unsqueeze(1))
    assert patches.shape == (1, 512, 64)
    assert small.embed_tokens(patches).shape == (1, 513, 64)
    layout = small.layout(wav.shape[1], 1)
    assert (layout.prefix_tokens, layout.n_time, layout.n_freq, layout.order) == (1, 64, 8, "time_freq")
    assert layout.hop_seconds == pytest.approx(0.16)


def test_matches_the_official_forward(small, tmp_path):
    path = tmp_path / "pretrained.pth"
    save_audiomae_pretrained(path, small.state_dict())
    model = AudioMAE(depth=2, dim=64, num_heads=4).eval()
    model.load_checkpoint(path)
    wav = torch.cat([_wav(10.0, seed=1), _wav(10.0, seed=2) * 0.01])
    with torch.inference_mode():
        ours = model.forward_layers(wav, [1])[0]
        official = read_checkpoint(path)["model"]
        ref = reference_audiomae(official, reference_fbank(wav, NORM_MEAN, NORM_STD), depth=2, heads=4)
    assert ours.shape == ref.shape == (2, 513, 64)
    assert (ours - ref).abs().max().item() < 1e-4


def test_full_size_official_layout_loads_strictly(tmp_path):
    path = tmp_path / "pretrained.pth"
    template = AudioMAE()
    state = constant_state(template)
    save_audiomae_pretrained(path, state)
    enc = load_encoder("audiomae", checkpoint=path)
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    assert_constants_loaded(enc, state)
    with torch.inference_mode():
        out = enc.forward_layers(_wav(10.0), [11])
    assert len(out) == 1 and out[0].shape == (1, 513, 768)


def test_pickled_config_objects_are_stubbed(small, tmp_path):
    """A snapshot that pickles an argparse.Namespace and a class of a module that is not installed."""

    class RunConfig:
        def __init__(self):
            self.lr = 1e-3

    path = tmp_path / "snapshot.pth"
    with fake_modules(("not_installed_pkg.config", "RunConfig", RunConfig)):
        save_audiomae_pretrained(path, small.state_dict())
        obj = torch.load(path, weights_only=False)
        obj["run_config"] = RunConfig()
        torch.save(obj, path)
    model = AudioMAE(depth=2, dim=64, num_heads=4)
    model.load_checkpoint(path)
    raw = read_checkpoint(path)
    # Neither class was constructed: both are inert stubs that keep their names.
    assert isinstance(raw["args"], PickledObjectStub) and raw["args"].qualname == "argparse.Namespace"
    assert isinstance(raw["run_config"], PickledObjectStub)
    assert raw["run_config"].qualname == "not_installed_pkg.config.RunConfig"
    assert torch.equal(model.cls_token, small.cls_token)


def test_early_stopping_runs_only_the_requested_blocks():
    torch.manual_seed(0)
    model = AudioMAE(depth=3, dim=32, num_heads=2).eval()
    calls: list[str] = []
    outputs: dict[int, torch.Tensor] = {}

    def hook(module, args, output, i):
        calls.append(f"block{i}")
        outputs[i] = output

    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda m, a, o, i=i: hook(m, a, o, i))
    model.norm.register_forward_hook(lambda *_: calls.append("norm"))
    wav = _wav(2.0)
    with torch.inference_mode():
        first = model.forward_layers(wav, [0])
        assert calls == ["block0"] and first[0].shape == (1, 513, 32)
        calls.clear()
        both = model.forward_layers(wav, [0, 2])
        assert calls == ["block0", "block1", "block2", "norm"]
        assert torch.equal(both[0], first[0])
        # The final LayerNorm applies to the last layer only.
        assert torch.equal(both[1], model.norm(outputs[2]))
        assert torch.equal(both[0], outputs[0])


@pytest.mark.parametrize("layers", [[], [3], [1, 0], [0, 0], [-1]])
def test_bad_layers(small, layers):
    with pytest.raises(ValueError, match="layers"):
        small.forward_layers(_wav(1.0), layers)


def test_wrong_checkpoints_fail_with_the_mismatching_keys(small, tmp_path):
    # An EAT checkpoint is not an Audio-MAE checkpoint.
    eat_path = tmp_path / "eat.pt"
    save_eat_pretrained(eat_path, EAT(depth=2, dim=64, num_heads=4).state_dict())
    with pytest.raises(ValueError, match=r"missing key\(s\): .*cls_token.*unexpected key\(s\): .*modality_encoders"):
        AudioMAE(depth=2, dim=64, num_heads=4).load_checkpoint(eat_path)
    # A state dict without its last block.
    truncated = {k: v for k, v in small.state_dict().items() if not k.startswith("blocks.1.")}
    path = tmp_path / "truncated.pth"
    save_audiomae_pretrained(path, truncated)
    with pytest.raises(ValueError, match=r"missing key\(s\): blocks\.1\."):
        AudioMAE(depth=2, dim=64, num_heads=4).load_checkpoint(path)
    # A file cut short.
    save_audiomae_pretrained(path, small.state_dict())
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        AudioMAE(depth=2, dim=64, num_heads=4).load_checkpoint(cut)
    # The full model refuses the reduced file, naming shapes.
    with pytest.raises(ValueError, match="wrong shape"):
        load_encoder("audiomae", checkpoint=path)


def test_checkpoint_state_dict_unwraps_and_explains():
    state = {"a": torch.zeros(1)}
    assert unwrap_state_dict({"model": state, "epoch": 3}) == state
    with pytest.raises(ValueError, match="no state dict"):
        unwrap_state_dict({"model": {"epoch": 3}})
