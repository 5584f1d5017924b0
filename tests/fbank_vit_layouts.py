"""Test helpers: official checkpoint layouts and reference forwards for Audio-MAE, EAT, SSLAM.

The writers save a state dict the way the official training code does (same
keys, shapes and wrapping as the released files, including the parts skprobe
drops: MAE decoder, data2vec CNN decoder, EMA teacher, fine-tuning head,
optimiser state, pickled config objects). Tensors that are only there to be
dropped are zero-stride views of a single number, so the files stay small.

The reference forwards re-implement the official inference path from the
official key names (explicit attention, torchaudio's per-clip fbank), so that
comparing them with skprobe's modules checks the conversion and the wiring.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import sys
import types
from collections import OrderedDict

import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as ta_kaldi

from skprobe.encoders.models.eat import eat_pos_embed


def noise_wav(seconds: float, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Seeded white noise at 16 kHz, ``(batch, seconds * 16000)``, amplitude 0.1."""
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, int(seconds * 16000), generator=gen)


def cheap(*shape: int, value: float = 0.0) -> torch.Tensor:
    """A tensor of the given shape backed by one stored number."""
    return torch.tensor(float(value)).expand(*shape)


def cast(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``value.to(dtype)`` that keeps a zero-stride constant cheap."""
    if value.numel() > 1 and 0 in value.stride():
        return torch.tensor(float(value.flatten()[0]), dtype=dtype).expand(*value.shape)
    return value.to(dtype)


def constant_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict for ``module`` where every key holds its own constant (cheap to save)."""
    return {k: cheap(*v.shape, value=(i + 1) / 1000) for i, (k, v) in enumerate(module.state_dict().items())}


def assert_constants_loaded(module: torch.nn.Module, state: dict[str, torch.Tensor], rtol: float = 0.0) -> None:
    """Every tensor of ``module`` holds the constant that ``constant_state`` put under its key."""
    loaded = module.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        tensor, expected = loaded[key], float(value.flatten()[0])
        assert tensor.shape == value.shape, key
        low, high = tensor.min().item(), tensor.max().item()
        assert low == high and abs(low - expected) <= rtol * abs(expected), key


@contextlib.contextmanager
def fake_modules(*classes: tuple[str, str, type]):
    """Make classes importable under foreign module names while pickling."""
    added = []
    try:
        for module_name, qualname, cls in classes:
            parts = module_name.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name not in sys.modules:
                    sys.modules[name] = types.ModuleType(name)
                    added.append(name)
            cls.__module__ = module_name
            cls.__qualname__ = qualname
            setattr(sys.modules[module_name], qualname, cls)
        yield
    finally:
        for name in added:
            del sys.modules[name]


class _DictConfig:  # stands in for omegaconf.DictConfig
    def __init__(self, content):
        self._content = content


class _Modality(enum.Enum):  # stands in for EAT's models.EAT_pretraining.Modality
    AUDIO = 1
    IMAGE = 2


# --------------------------------------------------------------------------- Audio-MAE


def audiomae_decoder(dim: int = 512, depth: int = 16, heads: int = 16) -> dict[str, torch.Tensor]:
    """Keys and shapes of Audio-MAE's pretraining decoder (``decoder_mode=1``: Swin blocks)."""
    out = {
        "mask_token": cheap(1, 1, dim),
        "decoder_pos_embed": cheap(1, 513, dim),
        "decoder_embed.weight": cheap(dim, 768),
        "decoder_embed.bias": cheap(dim),
    }
    for i in range(depth):
        p = f"decoder_blocks.{i}."
        out.update({
            p + "attn.qkv.weight": cheap(3 * dim, dim), p + "attn.qkv.bias": cheap(3 * dim),
            p + "attn.proj.weight": cheap(dim, dim), p + "attn.proj.bias": cheap(dim),
            p + "attn.tau": cheap(heads),
            p + "attn.meta_mlp.fc1.weight": cheap(384, 2), p + "attn.meta_mlp.fc1.bias": cheap(384),
            p + "attn.meta_mlp.fc2.weight": cheap(heads, 384), p + "attn.meta_mlp.fc2.bias": cheap(heads),
            p + "norm1.weight": cheap(dim), p + "norm1.bias": cheap(dim),
            p + "mlp.fc1.weight": cheap(4 * dim, dim), p + "mlp.fc1.bias": cheap(4 * dim),
            p + "mlp.fc2.weight": cheap(dim, 4 * dim), p + "mlp.fc2.bias": cheap(dim),
            p + "norm2.weight": cheap(dim), p + "norm2.bias": cheap(dim),
        })
    out.update({
        "decoder_norm.weight": cheap(dim), "decoder_norm.bias": cheap(dim),
        "decoder_pred.weight": cheap(256, dim), "decoder_pred.bias": cheap(256),
    })
    return out


def save_audiomae_pretrained(path, encoder_state: dict[str, torch.Tensor]) -> None:
    """``misc.save_model`` of Audio-MAE: model (encoder + decoder), optimiser, epoch, scaler, args."""
    model = OrderedDict(encoder_state)
    model.update(audiomae_decoder())
    args = argparse.Namespace(
        model="mae_vit_base_patch16", mask_ratio=0.8, norm_pix_loss=True, decoder_mode=1, audio_exp=True,
        dataset="audioset", epochs=33, blr=2e-4, roll_mag_aug=True, use_custom_patch=False,
    )
    optimizer = {"state": {0: {"step": torch.tensor(1.0), "exp_avg": cheap(4), "exp_avg_sq": cheap(4)}},
                 "param_groups": [{"lr": 1e-4, "weight_decay": 0.0001, "params": [0]}]}
    torch.save({"model": model, "optimizer": optimizer, "epoch": 32,
                "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 17}, "args": args}, path)


# --------------------------------------------------------------------------- EAT / SSLAM

_IMAGE = "modality_encoders.IMAGE."
_TO_OFFICIAL = {
    "cls_token": _IMAGE + "extra_tokens",
    "pos_embed": _IMAGE + "fixed_positional_encoder.positions",
    "patch_embed.proj.weight": _IMAGE + "local_encoder.proj.weight",
    "patch_embed.proj.bias": _IMAGE + "local_encoder.proj.bias",
    "pre_norm.weight": _IMAGE + "context_encoder.norm.weight",
    "pre_norm.bias": _IMAGE + "context_encoder.norm.bias",
}


def eat_official_backbone(state: dict[str, torch.Tensor], position_rows: int = 512) -> dict[str, torch.Tensor]:
    """skprobe EAT keys -> ``data2vec_multi`` keys; the position table grows to ``position_rows`` rows."""
    out = OrderedDict()
    for key, value in state.items():
        if key == "pos_embed" and position_rows != value.shape[1]:
            if value.stride(1) == 0:  # a cheap constant table
                value = cheap(1, position_rows, value.shape[2], value=float(value.flatten()[0]))
            else:
                longer = eat_pos_embed(value.shape[2], position_rows // 8, 8)
                assert torch.allclose(longer[:, : value.shape[1]], value)
                value = longer
        out[_TO_OFFICIAL.get(key, key)] = value
    return out


def eat_decoder(dim: int = 768, layers: int = 6, groups: int = 16, kernel: int = 3) -> dict[str, torch.Tensor]:
    """Keys and shapes of EAT's ``Decoder2d`` (``decoder_dim=768, decoder_layers=6, kernel 3``)."""
    out = {}
    for i in range(layers):
        out[f"{_IMAGE}decoder.blocks.{i}.0.weight"] = cheap(dim, dim // groups, kernel, kernel)
        out[f"{_IMAGE}decoder.blocks.{i}.0.bias"] = cheap(dim)
    out[f"{_IMAGE}decoder.proj.weight"] = cheap(dim, dim)
    out[f"{_IMAGE}decoder.proj.bias"] = cheap(dim)
    return out


def _fairseq_cfg(task: str) -> _DictConfig:
    return _DictConfig({"model": {"_name": task, "supported_modality": _Modality.IMAGE, "depth": 12},
                        "task": {"_name": "mae_image_pretraining", "target_length": 1024}})


def _save_fairseq(path, model: dict, task: str) -> None:
    with fake_modules(("omegaconf.dictconfig", "DictConfig", _DictConfig),
                      ("EAT.models.EAT_pretraining", "Modality", _Modality)):
        torch.save({
            "args": None,
            "cfg": _fairseq_cfg(task),
            "model": model,
            "criterion": {},
            "optimizer_history": [{"criterion_name": "ModelCriterion", "optimizer_name": "CompositeOptimizer",
                                   "lr_scheduler_state": {}, "num_updates": 400000}],
            "task_state": {},
            "extra_state": {"epoch": 30, "previous_best": None, "train_iterator": {"epoch": 30}},
            "last_optimizer_state": {"state": {}, "param_groups": []},
        }, path)


def save_eat_pretrained(path, state: dict[str, torch.Tensor], position_rows: int = 512,
                        student_dtype: torch.dtype = torch.float16) -> None:
    """fairseq ``data2vec_multi`` pretraining checkpoint: student (fp16, as with ``common.fp16``),
    CNN decoder and the EMA teacher as a nested fp32 dict under ``_ema``."""
    backbone = eat_official_backbone(state, position_rows)
    model = OrderedDict((k, cast(v, student_dtype)) for k, v in backbone.items())
    model.update(eat_decoder())
    model["_ema"] = OrderedDict((k, cast(v, torch.float32)) for k, v in backbone.items())
    _save_fairseq(path, model, "data2vec_multi")


def save_eat_finetuned(path, state: dict[str, torch.Tensor], position_rows: int = 512, n_classes: int = 527) -> None:
    """fairseq ``mae_image_classification`` checkpoint: backbone under ``model.``, ``fc_norm`` and ``head``."""
    backbone = eat_official_backbone(state, position_rows)
    dim = backbone[_IMAGE + "extra_tokens"].shape[-1]
    model = OrderedDict((f"model.{k}", v) for k, v in backbone.items())
    model.update({"fc_norm.weight": cheap(dim, value=1.0), "fc_norm.bias": cheap(dim),
                  "head.weight": cheap(n_classes, dim), "head.bias": cheap(n_classes)})
    _save_fairseq(path, model, "mae_image_classification")


# --------------------------------------------------------------------------- reference forwards


def reference_fbank(wav: torch.Tensor, mean: float, std: float, target: int = 1024) -> torch.Tensor:
    """The official loaders, one clip at a time: ``(B, S) -> (B, 1, target, 128)``."""
    out = []
    for w in wav:
        w = w - w.mean()
        fbank = ta_kaldi.fbank(w[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                               window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
        p = target - fbank.shape[0]
        fbank = torch.nn.ZeroPad2d((0, 0, 0, p))(fbank) if p > 0 else fbank[:target]
        out.append((fbank - mean) / (std * 2))
    return torch.stack(out)[:, None]


def _attention(x, sd, p, heads):
    b, n, c = x.shape
    qkv = F.linear(x, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
    q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    attn = attn.softmax(dim=-1, dtype=torch.float32)
    out = (attn @ v).transpose(1, 2).reshape(b, n, c)
    return F.linear(out, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])


def _mlp(x, sd, p):
    h = F.gelu(F.linear(x, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
    return F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])


def _ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[p + "weight"], sd[p + "bias"], eps=1e-6)


def reference_audiomae(sd: dict[str, torch.Tensor], spec: torch.Tensor, depth: int, heads: int) -> torch.Tensor:
    """``MaskedAutoencoderViT.forward_encoder`` without masking, from the official keys."""
    x = F.conv2d(spec, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16)
    x = x.flatten(2).transpose(1, 2) + sd["pos_embed"][:, 1:]
    cls = (sd["cls_token"] + sd["pos_embed"][:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    for i in range(depth):
        p = f"blocks.{i}."
        x = x + _attention(_ln(x, sd, p + "norm1."), sd, p, heads)
        x = x + _mlp(_ln(x, sd, p + "norm2."), sd, p)
    return _ln(x, sd, "norm.")


def reference_eat(sd: dict[str, torch.Tensor], spec: torch.Tensor, depth: int, heads: int) -> torch.Tensor:
    """``Data2VecMultiModel.extract_features(mask=False, remove_extra_tokens=False)`` from the official keys."""
    sd = {k: v.float() for k, v in sd.items() if isinstance(v, torch.Tensor)}
    x = F.conv2d(spec, sd[_IMAGE + "local_encoder.proj.weight"], sd[_IMAGE + "local_encoder.proj.bias"], stride=16)
    x = x.flatten(2).transpose(1, 2)
    x = x + sd[_IMAGE + "fixed_positional_encoder.positions"][:, : x.shape[1]]
    x = torch.cat([sd[_IMAGE + "extra_tokens"].expand(x.shape[0], -1, -1), x], dim=1)
    x = _ln(x, sd, _IMAGE + "context_encoder.norm.")
    for i in range(depth):
        p = f"blocks.{i}."
        x = x + _attention(x, sd, p, heads)
        r = _ln(x, sd, p + "norm1.")
        x = _ln(r + _mlp(r, sd, p), sd, p + "norm2.")
    return x


def numpy_sincos_2d(dim: int, grid: tuple[int, int], omega_dtype="float64"):
    """Transcription of ``get_2d_sincos_pos_embed_flexible(dim, grid)`` (no cls row) in numpy."""
    import numpy as np

    gh = np.arange(grid[0], dtype=np.float32)
    gw = np.arange(grid[1], dtype=np.float32)
    mesh = np.stack(np.meshgrid(gw, gh), axis=0).reshape(2, 1, grid[0], grid[1])

    def one_d(d, pos):
        omega = np.arange(d // 2, dtype=omega_dtype) / (d / 2.0)
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_d(dim // 2, mesh[0]), one_d(dim // 2, mesh[1])], axis=1)
