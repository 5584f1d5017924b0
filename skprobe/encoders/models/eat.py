"""EAT (Efficient Audio Transformer) ViT-B/16 encoder, pretrained and AudioSet-fine-tuned.

Mirrors the official release of "EAT: Self-Supervised Pre-Training with
Efficient Audio Transformer" (Chen et al., IJCAI 2024),
https://github.com/cwx-worst-one/EAT (fairseq, data2vec 2.0 image modality
adapted to audio). The token map is what the official
``feature_extract/feature_extract.py`` returns with ``granularity="all"``:
``model.extract_features(mel, padding_mask=None, mask=False,
remove_extra_tokens=False)["x"]`` (for a fine-tuned checkpoint on
``model.model``), with:

* waveform in [-1, 1] (``soundfile``, no int16 scaling), clip mean removed;
* ``torchaudio.compliance.kaldi.fbank`` with ``htk_compat=True``, 16 kHz,
  ``use_energy=False``, hanning window, 128 mel bins, ``dither=0``, 10 ms shift;
* zero-padded or cropped to ``target_length=1024`` frames, then
  ``(fbank + 4.268) / (2 * 4.569)``;
* ``local_encoder``: 16 x 16 / stride 16 convolution on ``(B, 1, 1024, 128)``,
  64 x 8 patches flattened time-major; plus the fixed sine-cosine table
  ``fixed_positional_encoder.positions`` (rows ``t * 8 + f``; only the first
  ``n_patches`` rows are used);
* one extra token (``extra_tokens``, the ``[cls]``) prepended without a
  position;
* ``context_encoder``: LayerNorm (eps 1e-6) on all tokens (``prenet_depth=0``,
  ``layer_norm_first=False``);
* 12 post-norm data2vec ``AltBlock`` s: ``x = norm1(x + attn(x)); x = norm2(x +
  mlp(x))``, no final norm.

Checkpoint layouts that load (converted by :func:`convert_eat_state_dict`):

* fairseq pretraining checkpoints (``EAT-base_epoch30_pt.pt``): ``{"cfg":
  DictConfig, "model": {...}, "optimizer_history", "extra_state", ...}`` whose
  model holds ``modality_encoders.IMAGE.*`` and ``blocks.*``, the CNN decoder
  ``modality_encoders.IMAGE.decoder.*`` and the EMA teacher as a nested dict
  ``_ema`` (both dropped);
* fairseq fine-tuning checkpoints (``EAT-base_epoch30_ft.pt``): the same
  backbone under ``model.`` plus ``fc_norm.*`` and ``head.*`` (dropped);
* the position table may have 512 rows (10.24 s, original code) or more (the
  updated code's ``max_length=768``, 6144 rows); only the first 512 are kept.
"""

from __future__ import annotations

import torch
from torch import nn

from ..components.fbank_vit import FbankViT
from ..components.vit import sincos_pos_embed_2d
from ..registry import EncoderSpec, register_builtin

__all__ = ["EAT", "convert_eat_state_dict", "eat_pos_embed", "eat_spec"]

NORM_MEAN = -4.268
NORM_STD = 4.569
MAX_TIME_PATCHES = 64  # positions kept from the checkpoint: 64 x 8 = 512 rows (10.24 s)

_IMAGE = "modality_encoders.IMAGE."
_RENAME = {
    f"{_IMAGE}extra_tokens": "cls_token",
    f"{_IMAGE}fixed_positional_encoder.positions": "pos_embed",
    f"{_IMAGE}local_encoder.proj.weight": "patch_embed.proj.weight",
    f"{_IMAGE}local_encoder.proj.bias": "patch_embed.proj.bias",
    f"{_IMAGE}context_encoder.norm.weight": "pre_norm.weight",
    f"{_IMAGE}context_encoder.norm.bias": "pre_norm.bias",
    # Hugging Face port (worstchan/EAT-*, ta012/SSLAM_*): same tensors, flat names.
    "extra_tokens": "cls_token",
    "fixed_positional_encoder.positions": "pos_embed",
    "local_encoder.proj.weight": "patch_embed.proj.weight",
    "local_encoder.proj.bias": "patch_embed.proj.bias",
}
#: Training-only parts of the official checkpoints.
_DROP_PREFIXES = (
    "_ema.",
    f"{_IMAGE}decoder.",
    "shared_decoder.",
    "recon_proj.",
    "cls_proj.",
    "fc_norm.",
    "head.",
)
_DROP_KEYS = ("_ema", "center", f"{_IMAGE}encoder_mask")


def eat_pos_embed(dim: int = 768, n_time: int = MAX_TIME_PATCHES, n_freq: int = 8) -> torch.Tensor:
    """EAT's fixed position table ``(1, n_time * n_freq, dim)``, rows ``t * n_freq + f``.

    ``get_2d_sincos_pos_embed_flexible(dim, (n_time, n_freq))`` of the official
    code: the first half of the channels encodes the frequency patch, the
    second half the time patch.

    Examples
    --------
    >>> eat_pos_embed().shape
    torch.Size([1, 512, 768])
    """
    return sincos_pos_embed_2d(dim, n_time, n_freq).unsqueeze(0)


def convert_eat_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official EAT / SSLAM state dict (pretrained or fine-tuned) to :class:`EAT` keys.

    Strips the fine-tuning wrapper prefix ``model.``, renames the modality
    encoder's tensors, drops the decoder, the EMA teacher and the
    classification head, and keeps the first 512 rows of the position table.
    Unknown keys pass through unchanged, so that the strict load lists them.
    """
    if any(k.startswith("model.") for k in state):
        state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _DROP_KEYS or key.startswith(_DROP_PREFIXES):
            continue
        name = _RENAME.get(key, key)
        if name == "pos_embed" and value.ndim == 3:
            value = value[:, : MAX_TIME_PATCHES * 8]
        out[name] = value
    return out


class EAT(FbankViT):
    """EAT / SSLAM encoder (data2vec 2.0 ViT-B/16 on a fbank), frozen feature extractor.

    Parameters
    ----------
    depth : int, default=12
        Transformer blocks; smaller values give reduced test models.
    dim : int, default=768
    num_heads : int, default=12
    target_frames : int, default=1024
        Fbank frames after padding / cropping (official ``target_length``); a
        multiple of 16, at most 1024.

    Examples
    --------
    >>> import torch
    >>> enc = EAT(depth=1, dim=64, num_heads=2).eval()
    >>> enc.forward_layers(torch.zeros(1, 16000), [0])[0].shape
    torch.Size([1, 513, 64])
    """

    convert_state_dict = staticmethod(convert_eat_state_dict)

    def __init__(self, depth: int = 12, dim: int = 768, num_heads: int = 12, target_frames: int = 1024) -> None:
        if target_frames > MAX_TIME_PATCHES * 16:
            raise ValueError(f"target_frames must be at most {MAX_TIME_PATCHES * 16}, got {target_frames}")
        super().__init__(
            depth=depth,
            dim=dim,
            num_heads=num_heads,
            norm_first=False,
            target_frames=target_frames,
            norm_mean=NORM_MEAN,
            norm_std=NORM_STD,
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # A frozen Parameter (fixed_positional_encoder.positions) in the official code.
        self.register_buffer("pos_embed", eat_pos_embed(dim, MAX_TIME_PATCHES, self.grid[1]))
        self.pre_norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.normal_(self.cls_token, std=0.02)

    def embed_tokens(self, patches: torch.Tensor) -> torch.Tensor:
        x = patches + self.pos_embed[:, : patches.shape[1]].to(patches.dtype)
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        return self.pre_norm(torch.cat([cls, x], dim=1))


def eat_spec(
    name: str,
    *,
    weights_source: str,
    weights_file: str,
    description: str,
    license: str,
    extra: dict[str, object],
) -> EncoderSpec:
    """Registry entry of an EAT-architecture checkpoint (EAT, SSLAM and their fine-tuned variants)."""
    return EncoderSpec(
        name=name,
        builder=EAT,
        sample_rate=16000,
        clip_seconds=10.0,
        license=license,
        weights_source=weights_source,
        weights_file=weights_file,
        description=description,
        extra={
            "norm_mean": NORM_MEAN,
            "norm_std": NORM_STD,
            "target_frames": 1024,
            "token_order": "time_freq",
            "final_norm": "none (post-norm blocks)",
            **extra,
        },
    )


_EAT_LICENSE = "MIT (licence of the cwx-worst-one/EAT repository that links the checkpoints)"
_EAT_EXTRA = {"paper": "https://arxiv.org/abs/2401.03497", "code": "https://github.com/cwx-worst-one/EAT"}

register_builtin(
    eat_spec(
        "eat",
        weights_source="https://drive.google.com/file/d/19hfzLgHCkyqTOYmHt8dqVa9nm-weBq4f/view "
        "(EAT-base_epoch30, pre-training; linked from https://github.com/cwx-worst-one/EAT)",
        weights_file="EAT-base_epoch30_pt.pt",
        description="EAT-base (30 epochs) pretrained on AudioSet-2M (Chen et al. 2024); "
        "128-bin fbank, 1024 frames, [cls] + 64x8 patches",
        license=_EAT_LICENSE,
        extra=_EAT_EXTRA,
    ),
)
register_builtin(
    eat_spec(
        "eat-as2m-ft",
        weights_source="https://drive.google.com/file/d/1aCYiQmoZv_Gh1FxnR-CCWpNAp6DIJzn6/view "
        "(EAT-base_epoch30, fine-tuned on AudioSet-2M; linked from https://github.com/cwx-worst-one/EAT)",
        weights_file="EAT-base_epoch30_ft.pt",
        description="EAT-base (30 epochs) pretrained and fine-tuned on AudioSet-2M; backbone tokens "
        "(classification head dropped)",
        license=_EAT_LICENSE,
        extra={**_EAT_EXTRA, "fine_tuned_on": "AudioSet-2M"},
    ),
)
