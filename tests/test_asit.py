"""ASiT: DINO-style training snapshot loading, position-table resizing, fixed 1024-frame input."""

from __future__ import annotations

import argparse

import pytest
import torch
import torchaudio

from skprobe.encoders import get_encoder_spec, load_encoder
from skprobe.encoders.models.asit import ASiTEncoder, convert_asit_state_dict


def backbone_shapes(dim: int = 768, depth: int = 12, pos_rows: int = 297) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the ViT backbone of Sara-Ahmed/ASiT ``vision_transformer.py``
    (``vit_base(audio_size=[592, 128], in_chans=1)``), written from that code."""
    shapes = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, pos_rows, dim),
        "patch_embed.proj.weight": (dim, 1, 16, 16),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        shapes.update({
            p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
            p + "attn.qkv.weight": (3 * dim, dim), p + "attn.qkv.bias": (3 * dim,),
            p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
            p + "norm2.weight": (dim,), p + "norm2.bias": (dim,),
            p + "mlp.fc1.weight": (4 * dim, dim), p + "mlp.fc1.bias": (4 * dim,),
            p + "mlp.fc2.weight": (dim, 4 * dim), p + "mlp.fc2.bias": (dim,),
        })  # fmt: skip
    return shapes


# A few of the self-supervised heads FullPipeline wraps around the backbone.
HEAD_SHAPES = {
    "head_cls.mlp.0.weight": (2048, 768),
    "head_cls.mlp.0.bias": (2048,),
    "head_cls.last_layer.weight_g": (8192, 1),
    "head_cls.last_layer.weight_v": (8192, 256),
    "head_recons.mlp.0.weight": (768, 768),
    "head_recons.convTrans.weight": (768, 1, 16, 16),
    "head_recons.convTrans.bias": (1,),
}


def random_tensors(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        base = 1.0 if key.endswith("weight") and "norm" in key else 0.0
        out[key] = base + 0.02 * torch.randn(shape, generator=gen)
    return out


def training_snapshot(pos_rows: int = 297, dim: int = 768, depth: int = 12) -> tuple[dict, dict[str, torch.Tensor]]:
    """The layout of ``main_ASiT.py``'s ``checkpoint.pth`` (teacher, DDP student, args, ...).

    The student shares the teacher's tensors (saved once) except a few that differ.
    """
    shapes = backbone_shapes(dim=dim, depth=depth, pos_rows=pos_rows)
    teacher = random_tensors({**{"backbone." + k: v for k, v in shapes.items()}, **HEAD_SHAPES}, 0)
    differ = ("backbone.pos_embed", "backbone.cls_token", "backbone.norm.weight", "backbone.blocks.0.attn.qkv.bias")
    student = {"module." + k: v + 0.5 if k in differ else v for k, v in teacher.items()}
    args = argparse.Namespace(arch="vit_base", patch_size=16, num_frames=592, num_mel_bins=128, sample_rate=16000,
                              data_mean=-4.2677393, data_std=4.5689974)  # fmt: skip
    snapshot = {
        "student": student,
        "teacher": teacher,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        "epoch": 100,
        "args": args,
        "CLS_PATCH_loss": {"center": torch.zeros(1, 8192)},
    }
    backbone = {k.removeprefix("backbone."): v for k, v in teacher.items() if k.startswith("backbone.")}
    return snapshot, backbone


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("asit") / "ASiT_INet_AS2M_16Khz.pth"
    snapshot, backbone = training_snapshot()
    torch.save(snapshot, path)
    return path, backbone


@pytest.fixture(scope="module")
def encoder(checkpoint):
    return load_encoder("asit", checkpoint[0])


def test_training_snapshot_loads_teacher_backbone(encoder, checkpoint):
    state = encoder.state_dict()
    assert set(state) == set(backbone_shapes())
    for key in ("pos_embed", "cls_token", "blocks.0.attn.qkv.bias", "norm.weight", "blocks.5.mlp.fc1.weight"):
        torch.testing.assert_close(state[key], checkpoint[1][key], rtol=0, atol=0)  # teacher, not student
    assert encoder.pos_grid == (37, 8)


def test_student_only_and_plain_state_dicts(tmp_path):
    # a table stored for 1024 frames needs no resizing
    snapshot, backbone = training_snapshot(pos_rows=513, dim=32, depth=2)
    torch.save({"student": snapshot["student"], "args": snapshot["args"]}, tmp_path / "student.pth")
    enc = ASiTEncoder(dim=32, depth=2, num_heads=2)
    enc.load_checkpoint(tmp_path / "student.pth")
    torch.testing.assert_close(enc.state_dict()["norm.weight"], backbone["norm.weight"] + 0.5)
    torch.testing.assert_close(enc.state_dict()["norm.bias"], backbone["norm.bias"])
    assert enc.pos_grid == (64, 8)
    torch.testing.assert_close(enc.position_embedding(), enc.pos_embed)
    torch.save({"model": backbone}, tmp_path / "plain.pth")
    enc = ASiTEncoder(dim=32, depth=2, num_heads=2)
    enc.load_checkpoint(tmp_path / "plain.pth")
    assert enc.pos_grid == (64, 8)


def test_mismatching_keys_are_listed(checkpoint, tmp_path):
    state = {k: v for k, v in checkpoint[1].items() if not k.startswith("blocks.") or k.startswith("blocks.0.")}
    state["patch_embed.proj.weight"] = torch.zeros(768, 3, 16, 16)  # ImageNet RGB patch embedding
    torch.save({"teacher": {"backbone." + k: v for k, v in state.items()}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as err:
        load_encoder("asit", tmp_path / "bad.pth")
    msg = str(err.value)
    assert "132 missing key(s): blocks.1." in msg
    assert "patch_embed.proj.weight: checkpoint (768, 3, 16, 16) vs model (768, 1, 16, 16)" in msg
    torch.save({"teacher": {"backbone.pos_embed": torch.zeros(1, 300, 768)}}, tmp_path / "pos.pth")
    with pytest.raises(ValueError, match="pos_embed has 300 rows"):
        load_encoder("asit", tmp_path / "pos.pth")
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="no ASiT 'teacher' or 'student'"):
        load_encoder("asit", tmp_path / "empty.pth")
    with open(checkpoint[0], "rb") as fh:
        (tmp_path / "cut.pth").write_bytes(fh.read(50_000))
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_encoder("asit", tmp_path / "cut.pth")


def test_convert_drops_heads_and_prefixes():
    state = {"module.backbone.norm.weight": 1, "module.head_cls.mlp.0.weight": 2, "module.backbone.head.weight": 3}
    assert convert_asit_state_dict(state) == {"norm.weight": 1}
    assert convert_asit_state_dict({"cls_token": 1, "head.weight": 2}) == {"cls_token": 1}


def test_ten_second_tokens_full_size(encoder):
    wav = 0.1 * torch.randn(1, 160_000, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tokens = encoder(wav)
    layout = encoder.layout(160_000, 11)
    assert tokens.shape == (1, 513, 768)  # [cls] + 64 x 8 patches
    assert (layout.prefix_tokens, layout.n_time, layout.n_freq, layout.order) == (1, 64, 8, "time_freq")
    spec = get_encoder_spec("asit")
    assert spec.metadata()["token_grid"] == (64, 8) and spec.metadata()["prefix_tokens"] == 1
    assert torch.isfinite(tokens).all()


def test_forward_stops_after_deepest_requested_layer(encoder):
    called = []
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: called.append(k)) for k, b in enumerate(encoder.blocks)]
    wav = 0.1 * torch.randn(2, 16_000, generator=torch.Generator().manual_seed(1))
    try:
        with torch.inference_mode():
            (one,) = encoder.forward_layers(wav, [1])
    finally:
        for hook in hooks:
            hook.remove()
    assert called == [0, 1]
    assert one.shape == (2, 513, 768)  # every clip is cut or padded to 1024 frames


@pytest.mark.parametrize("n_samples, real_frames", [(80_000, 498), (192_000, 1198)])
def test_fbank_cut_and_pad_match_official_wav2fbank(n_samples, real_frames):
    enc = ASiTEncoder(dim=32, depth=1, num_heads=2)
    wav = 0.2 * torch.randn(2, n_samples, generator=torch.Generator().manual_seed(2)) + 0.05
    spec = enc.spectrogram(wav)
    assert spec.shape == (2, 1024, 128)
    for clip, got in zip(wav, spec):
        ref = torchaudio.compliance.kaldi.fbank(
            (clip - clip.mean())[None], htk_compat=True, sample_frequency=16000, use_energy=False,
            window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10,
        )  # fmt: skip
        assert ref.shape[0] == real_frames
        ref = torch.nn.functional.pad(ref, (0, 0, 0, max(0, 1024 - real_frames)))[:1024]
        torch.testing.assert_close(got, (ref + 4.2677393) / (4.5689974 * 2), rtol=0, atol=1e-3)


def test_position_table_is_resized_bicubically_along_time():
    enc = ASiTEncoder(dim=8, depth=1, num_heads=2)
    table = torch.randn(1, 8, 8).repeat(1, 37, 1)  # depends on frequency only
    with torch.no_grad():
        enc.pos_embed[:, 1:] = table.reshape(1, 37 * 8, 8)
    resized = enc.position_embedding()
    assert resized.shape == (1, 1 + 64 * 8, 8)
    torch.testing.assert_close(resized[:, 0], enc.pos_embed[:, 0])
    grid = resized[0, 1:].reshape(64, 8, 8)
    torch.testing.assert_close(grid, grid[:1].expand(64, -1, -1), rtol=0, atol=1e-5)
    reference = torch.nn.functional.interpolate(
        enc.pos_embed[:, 1:].reshape(1, 37, 8, 8).permute(0, 3, 1, 2), size=(64, 8), mode="bicubic", align_corners=False
    )
    torch.testing.assert_close(grid, reference[0].permute(1, 2, 0))


def test_bad_input_is_rejected():
    enc = ASiTEncoder(dim=32, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="at least 400 samples"):
        enc(torch.zeros(1, 399))
    with pytest.raises(ValueError, match="wav must be 2-D"):
        enc(torch.zeros(16000))
    assert enc(torch.zeros(1, 400)).shape == (1, 513, 32)  # one real frame, the rest padding
