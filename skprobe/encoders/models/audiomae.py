"""Audio-MAE ViT-B/16 encoder, pretrained on AudioSet-2M.

Mirrors the official release of "Masked Autoencoders that Listen" (Huang et
al., NeurIPS 2022), https://github.com/facebookresearch/AudioMAE: the encoder
of ``models_mae.MaskedAutoencoderViT`` (``mae_vit_base_patch16``,
``audio_exp=True``, ``in_chans=1``, ``img_size=(1024, 128)``, standard 16 x 16
patches) as stored in the pretrained checkpoint ``pretrained.pth``, run without
masking, with the input pipeline of ``dataset.AudiosetDataset``:

* waveform in [-1, 1] (``torchaudio.load``, no int16 scaling), clip mean removed;
* ``torchaudio.compliance.kaldi.fbank`` with ``htk_compat=True``, 16 kHz,
  ``use_energy=False``, hanning window, 128 mel bins, ``dither=0``, 10 ms shift
  (25 ms frames);
* zero-padded or cropped to 1024 frames, then ``(fbank + 4.2677393) / (2 *
  4.5689974)`` (the AudioSet statistics of ``main_pretrain.py``);
* a ``(B, 1, 1024, 128)`` image, 16 x 16 patches: 64 along time x 8 along
  frequency, flattened time-major (512 patches).

Architecture: timm (0.3.2) pre-norm blocks, LayerNorm eps 1e-6, qkv bias, fixed
2-D sine-cosine position table ``pos_embed`` of shape ``(1, 513, 768)`` whose
first row (all zeros) is added to the ``[cls]`` token. The official code builds
that table for a ``(8, 64)`` grid (``PatchEmbed_org.patch_hw`` is (width,
height)) and adds it in the order of the ``(64, 8)`` patch sequence; skprobe
keeps this as is (the table is loaded from the checkpoint anyway).
``forward_encoder`` ends with the final LayerNorm ``norm``: skprobe applies it
to the last layer only.

Checkpoint layouts that load: the official ``pretrained.pth`` (``{"model":
state_dict, "optimizer", "epoch", "scaler", "args": argparse.Namespace}``, the
decoder weights ``decoder_*`` and ``mask_token`` are dropped), and any state
dict with timm ``VisionTransformer`` names (e.g. a timm conversion of the same
weights).
"""

from __future__ import annotations

import torch
from torch import nn

from ..components.fbank_vit import FbankViT
from ..components.vit import sincos_pos_embed_2d
from ..registry import EncoderSpec, register_builtin

__all__ = ["AudioMAE", "audiomae_pos_embed", "convert_audiomae_state_dict"]

NORM_MEAN = -4.2677393
NORM_STD = 4.5689974

#: Keys of the pretraining checkpoint that belong to the MAE decoder.
_DECODER_PREFIXES = ("decoder_embed.", "decoder_blocks.", "decoder_norm.", "decoder_pred.")
_DECODER_KEYS = ("mask_token", "decoder_pos_embed")


def audiomae_pos_embed(dim: int = 768, n_time: int = 64, n_freq: int = 8) -> torch.Tensor:
    """Audio-MAE's fixed position table ``(1, 1 + n_time * n_freq, dim)``.

    As in ``get_2d_sincos_pos_embed_flexible(dim, (n_freq, n_time), cls_token=True)``
    of the official code: a zero row for ``[cls]``, then rows ``h * n_time + w``
    for ``h < n_freq``, ``w < n_time`` (first half of the channels encodes
    ``w``, second half ``h``). Row ``i + 1`` is added to patch token ``i`` of
    the time-major sequence.

    Examples
    --------
    >>> audiomae_pos_embed().shape
    torch.Size([1, 513, 768])
    """
    return sincos_pos_embed_2d(dim, n_freq, n_time, cls_token=True).unsqueeze(0)


def convert_audiomae_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the MAE decoder from an Audio-MAE pretraining state dict.

    The encoder keys (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,
    ``blocks.*``, ``norm.*``) already carry skprobe's names.
    """
    return {
        k: v
        for k, v in state.items()
        if not (k.startswith(_DECODER_PREFIXES) or k in _DECODER_KEYS)
    }


class AudioMAE(FbankViT):
    """Audio-MAE encoder (ViT-B/16 by default), frozen feature extractor.

    Parameters
    ----------
    depth : int, default=12
        Transformer blocks; smaller values give reduced test models.
    dim : int, default=768
    num_heads : int, default=12

    Examples
    --------
    >>> import torch
    >>> enc = AudioMAE(depth=1, dim=64, num_heads=2).eval()
    >>> enc.forward_layers(torch.zeros(1, 16000), [0])[0].shape
    torch.Size([1, 513, 64])
    """

    convert_state_dict = staticmethod(convert_audiomae_state_dict)

    def __init__(self, depth: int = 12, dim: int = 768, num_heads: int = 12) -> None:
        super().__init__(
            depth=depth,
            dim=dim,
            num_heads=num_heads,
            norm_first=True,
            target_frames=1024,
            norm_mean=NORM_MEAN,
            norm_std=NORM_STD,
        )
        n_time, n_freq = self.grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # A frozen Parameter in the official code; a buffer here (same state-dict key).
        self.register_buffer("pos_embed", audiomae_pos_embed(dim, n_time, n_freq))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.normal_(self.cls_token, std=0.02)

    def embed_tokens(self, patches: torch.Tensor) -> torch.Tensor:
        pos = self.pos_embed.to(patches.dtype)
        x = patches + pos[:, 1:]
        cls = (self.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls.to(x.dtype), x], dim=1)

    def layer_output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return self.norm(x) if index == self.n_layers - 1 else x


_WEIGHTS_URL = "https://drive.google.com/file/d/1rRsmU8x7D-x4BvcPyroUJwU18eixNfKg/view"

register_builtin(
    EncoderSpec(
        name="audiomae",
        builder=AudioMAE,
        sample_rate=16000,
        clip_seconds=10.0,
        license="CC BY-NC 4.0 (LICENSE file of facebookresearch/AudioMAE; its README says CC-BY 4.0)",
        weights_source=f"{_WEIGHTS_URL} (AudioSet-2M pretrained ViT-B/16, linked from "
        "https://github.com/facebookresearch/AudioMAE)",
        weights_file="pretrained.pth",
        description="Audio-MAE ViT-B/16 pretrained on AudioSet-2M (Huang et al. 2022); "
        "128-bin fbank, 1024 frames, [cls] + 64x8 patches",
        extra={
            "paper": "https://arxiv.org/abs/2207.06405",
            "code": "https://github.com/facebookresearch/AudioMAE",
            "norm_mean": NORM_MEAN,
            "norm_std": NORM_STD,
            "target_frames": 1024,
            "token_order": "time_freq",
            "final_norm": "LayerNorm on the last layer",
        },
    ),
)
