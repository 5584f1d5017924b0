"""ASiT (Atito et al., 2022) as a frozen skprobe encoder.

Mirrors the official code in ``Sara-Ahmed/ASiT`` (``vision_transformer.py``,
``data_transformations.py``, ``main_ASiT.py``; "ASiT: Audio Spectrogram
vIsion Transformer for General Audio Representation", arXiv 2211.13189) and
its released 16 kHz checkpoint ``ASiT_INet_AS2M_16Khz.pth`` (ImageNet
initialised, self-supervised on AudioSet-2M), a DINO-style training snapshot
``{'student': ..., 'teacher': ..., 'optimizer': ..., 'epoch': ..., 'args': Namespace, ...}``
whose networks are ``FullPipeline(backbone, heads...)``. The teacher's
``backbone.*`` is loaded (the student's ``module.backbone.*`` when there is
no teacher); the self-supervised heads are dropped.

What the official pipeline computes, and this module too:

* Front end (``DataAugmentation._wav2fbank``): the float waveform (no
  scaling) minus its mean over the clip, Kaldi fbank (128 bins, 16 kHz, 25 ms
  Hanning window, 10 ms hop, dither 0, ``htk_compat``, no energy), cut or
  zero-padded to a fixed number of frames (1024 here, the AST/AudioSet
  convention; 10 s give 998 frames and are padded), then normalised as
  ``(x + 4.2677393) / (2 * 4.5689974)`` (padding included): the shared
  :class:`~skprobe.encoders.components.frontends.NormalizedFbank`.
* Patches: 16 x 16 convolution over the (time, mel) image, flattened
  time-major: 64 x 8 = 512 patches, plus a leading [cls] token.
* Positions: one learned table for [cls] + the patch grid of pre-training
  (6 s crops of 592 frames: 37 x 8 + 1 = 297 rows, read from the checkpoint);
  the patch part is resized bicubically (``align_corners=False``) to the input
  grid, as the ``interpolate_pos_encoding`` of the ASiT pre-training code does
  for its local crops.
* Blocks: 12 pre-norm ViT-B blocks (timm names, LayerNorm eps 1e-6), final
  ``norm``. Layer ``i < 11`` of :meth:`ASiTEncoder.forward_layers` is the raw
  output of block ``i``; the last layer includes the final norm, like the
  official ``VisionTransformer.forward``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import AudioEncoder, TokenLayout
from ..components.frontends import NormalizedFbank
from ..components.vit import Block, PatchEmbed
from ..formats.checkpoint import unwrap_state_dict
from ..layers import check_layers, run_blocks
from ..registry import EncoderSpec, register_builtin

__all__ = ["ASiTEncoder", "convert_asit_state_dict", "select_asit_state_dict"]

FBANK_MEAN = -4.2677393
FBANK_STD = 4.5689974

# Prefixes of the self-supervised heads around the backbone in the training snapshot.
_HEAD_PREFIXES = ("head_cls.", "head_recons.", "head.", "cls_head.", "rec_head.", "fc.")


class ASiTEncoder(AudioEncoder):
    """ASiT ViT-B/16 returning per-layer ``[cls]`` + 512 patch tokens.

    Parameters
    ----------
    dim, depth, num_heads : int, default=768, 12, 12
    patch_size : int, default=16
    num_mel_bins : int, default=128
    target_frames : int, default=1024
        Frames every clip is cut or zero-padded to.
    pos_grid : tuple of int, default=(37, 8)
        ``(time, freq)`` patch grid of the stored position table; the loader
        takes it from the checkpoint.

    Examples
    --------
    >>> import torch
    >>> enc = ASiTEncoder(dim=32, depth=2, num_heads=2, target_frames=160).eval()
    >>> enc(torch.zeros(1, 16000)).shape
    torch.Size([1, 81, 32])
    """

    sample_rate = 16000
    n_layers = 12

    def __init__(
        self,
        *,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        patch_size: int = 16,
        num_mel_bins: int = 128,
        target_frames: int = 1024,
        pos_grid: tuple[int, int] = (37, 8),
    ) -> None:
        super().__init__()
        if target_frames % patch_size or num_mel_bins % patch_size:
            raise ValueError(
                f"target_frames={target_frames} and num_mel_bins={num_mel_bins} must be multiples of "
                f"patch_size={patch_size}"
            )
        self.n_layers = depth
        self.dim = dim
        self.patch_size = patch_size
        self.target_frames = target_frames
        self.grid = (target_frames // patch_size, num_mel_bins // patch_size)
        self.frontend = NormalizedFbank(
            target_frames=target_frames, norm_mean=FBANK_MEAN, norm_std=FBANK_STD, num_mel_bins=num_mel_bins
        )
        self.patch_embed = PatchEmbed(patch_size, 1, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_grid = tuple(pos_grid)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_grid[0] * pos_grid[1], dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)
        nn.init.trunc_normal_(self.cls_token, std=0.02, a=-0.04, b=0.04)
        self.blocks = nn.ModuleList([Block(dim, num_heads, qkv_bias=True, eps=1e-6) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    # ----------------------------------------------------------------- front end
    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """Normalised fbank cut or padded to ``target_frames``: ``(B, S) -> (B, 1024, 128)``."""
        if wav.ndim != 2:
            raise ValueError(f"wav must be 2-D (batch, samples), got shape {tuple(wav.shape)}")
        min_samples = self.frontend.fbank.window_size
        if wav.shape[1] < min_samples:
            raise ValueError(f"ASiT needs at least {min_samples} samples per clip, got {wav.shape[1]}")
        return self.frontend(wav)

    # ------------------------------------------------------------ transformer
    def position_embedding(self) -> torch.Tensor:
        """``(1, 1 + T' * F', D)`` position table resized to the input patch grid."""
        if self.pos_grid == self.grid:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.transpose(1, 2).reshape(1, self.dim, *self.pos_grid)
        patch_pos = F.interpolate(patch_pos, size=self.grid, mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)], dim=1)

    def forward_layers(self, wav: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Token maps ``(B, 1 + 512, 768)`` of the requested layers; stops after ``max(layers)``."""
        layers = check_layers(layers, self.n_layers)
        x = self.patch_embed(self.spectrogram(wav).unsqueeze(1))  # B, T' * F', D, time-major
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position_embedding()
        return run_blocks(x, self.blocks, layers, self._layer_output)

    def _layer_output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return self.norm(x) if index == self.n_layers - 1 else x

    def layout(self, n_samples: int, layer: int) -> TokenLayout:
        """``[cls]`` then 64 x 8 patches, time-major, 0.16 s apart, whatever the clip length."""
        fbank = self.frontend.fbank
        if int(n_samples) < fbank.window_size:
            raise ValueError(f"ASiT needs at least {fbank.window_size} samples per clip, got {n_samples}")
        hop = self.patch_size * fbank.window_shift / self.sample_rate
        return TokenLayout(1, self.grid[0], self.grid[1], self.dim, hop, "time_freq")

    # ------------------------------------------------------------ checkpoints
    def unwrap_checkpoint(self, obj: Any) -> dict[str, torch.Tensor]:
        """The teacher (else student) network of an ASiT snapshot; see :func:`select_asit_state_dict`."""
        return select_asit_state_dict(obj)

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:func:`convert_asit_state_dict`; the position table takes the size stored in the checkpoint.

        Raises
        ------
        ValueError
            If the stored ``pos_embed`` does not fit a grid of this module's frequency patches.
        """
        state = convert_asit_state_dict(state)
        pos = state.get("pos_embed")
        if isinstance(pos, torch.Tensor) and pos.ndim == 3 and pos.shape[-1] == self.dim:
            n_freq = self.grid[1]
            n_patches = pos.shape[1] - 1
            if n_patches < 1 or n_patches % n_freq:
                raise ValueError(
                    f"pos_embed has {pos.shape[1]} rows, expected 1 + a multiple of {n_freq} "
                    f"({n_freq} frequency patches)"
                )
            self.pos_grid = (n_patches // n_freq, n_freq)
            self.pos_embed = nn.Parameter(torch.zeros(pos.shape, dtype=self.cls_token.dtype))
        return state


def select_asit_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The network state dict inside an ASiT training snapshot.

    Takes ``teacher``, else ``student``, else the usual ``model`` /
    ``state_dict`` wrappers.

    Raises
    ------
    ValueError
        If no state dict of tensors is found.
    """
    if isinstance(obj, Mapping):
        for key in ("teacher", "student"):
            if isinstance(obj.get(key), Mapping):
                return dict(obj[key])
    try:
        return unwrap_state_dict(obj)
    except ValueError as exc:
        raise ValueError(f"no ASiT 'teacher' or 'student' network found ({exc})") from None


def convert_asit_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ASiT snapshot keys to :class:`ASiTEncoder` keys.

    Strips ``module.`` (DDP) and ``backbone.`` (``FullPipeline``), and drops
    the self-supervised heads (``head_cls.*``, ``head_recons.*`` and the like)
    as well as an empty classifier ``head.*``.
    """
    out = {}
    has_backbone = any(k.removeprefix("module.").startswith("backbone.") for k in state)
    for key, value in state.items():
        key = key.removeprefix("module.")
        if has_backbone:
            if not key.startswith("backbone."):
                continue  # a self-supervised head outside the backbone
            key = key.removeprefix("backbone.")
        if key.startswith(_HEAD_PREFIXES):
            continue
        out[key] = value
    return out


register_builtin(
    EncoderSpec(
        name="asit",
        builder=ASiTEncoder,
        sample_rate=16000,
        clip_seconds=10.0,
        license="not stated by the authors (no licence file in Sara-Ahmed/ASiT); ask them before redistribution",
        weights_source="https://github.com/Sara-Ahmed/ASiT (Google Drive link in the README)",
        weights_file="ASiT_INet_AS2M_16Khz.pth",
        description="ASiT ViT-B/16 (GMML + local-global distillation, AS-2M, 16 kHz); [cls] + 64x8 = 512 patch tokens",
        extra={"token_order": "time_freq", "target_frames": 1024, "checkpoint_network": "teacher"},
    ),
)
