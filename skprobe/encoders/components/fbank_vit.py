"""Shared skeleton of ViT-B/16 encoders on a normalised Kaldi fbank.

Audio-MAE, EAT and SSLAM all turn 16 kHz audio into a 1024 x 128 log-mel "image"
(:class:`~skprobe.encoders.components.frontends.NormalizedFbank`), cut it into 16 x 16
patches (64 along time, 8 along frequency, flattened time-major), put one
``[cls]`` token in front and run 12 transformer blocks. They differ in the
position embedding, the block type (pre- or post-norm) and the norms around the
blocks; subclasses fill in :meth:`FbankViT.embed_tokens` and
:meth:`FbankViT.layer_output`.

Layer ``i`` is the output of block ``i``. The last layer additionally goes
through whatever the official feature extraction applies after the blocks (a
final LayerNorm for Audio-MAE, nothing for EAT / SSLAM).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..base import AudioEncoder, TokenLayout
from ..layers import check_layers, run_blocks
from .frontends import NormalizedFbank
from .vit import Block, PatchEmbed

__all__ = ["FbankViT"]

_PATCH = 16
_N_MELS = 128
_HOP_SECONDS = 0.01


class FbankViT(AudioEncoder):
    """ViT on a normalised 128-bin Kaldi fbank, one ``[cls]`` token, time-major patches.

    Parameters
    ----------
    depth : int
        Number of transformer blocks (12 for ViT-B); also the number of layers.
    dim : int
        Embedding dimension.
    num_heads : int
        Attention heads.
    norm_first : bool
        Pre-norm (timm) or post-norm (data2vec) blocks.
    target_frames : int
        Fbank frames after padding / cropping; a multiple of 16.
    norm_mean, norm_std : float
        Fbank normalisation constants of the official data loader.

    Attributes
    ----------
    frontend : NormalizedFbank
    patch_embed : PatchEmbed
    blocks : nn.ModuleList of Block
    """

    sample_rate = 16000

    def __init__(
        self,
        *,
        depth: int,
        dim: int,
        num_heads: int,
        norm_first: bool,
        target_frames: int,
        norm_mean: float,
        norm_std: float,
    ) -> None:
        super().__init__()
        if target_frames < _PATCH or target_frames % _PATCH:
            raise ValueError(f"target_frames must be a positive multiple of {_PATCH}, got {target_frames}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.n_layers = depth
        self.dim = dim
        self.target_frames = target_frames
        self.grid = (target_frames // _PATCH, _N_MELS // _PATCH)
        self.frontend = NormalizedFbank(target_frames=target_frames, norm_mean=norm_mean, norm_std=norm_std)
        self.patch_embed = PatchEmbed(_PATCH, 1, dim)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio=4.0, qkv_bias=True, norm_first=norm_first, eps=1e-6)
            for _ in range(depth)
        )
        # PyTorch's default initialisation (std ~0.02 for D = 768) keeps random
        # models well scaled; timm's trunc-normal init would triple build time.

    def embed_tokens(self, patches: torch.Tensor) -> torch.Tensor:
        """Patch embeddings ``(B, N, D)`` to the first block's input ``(B, 1 + N, D)``."""
        raise NotImplementedError

    def layer_output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Tokens reported for layer ``index`` given block ``index``'s output."""
        return x

    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """The normalised fbank ``(B, S) -> (B, target_frames, 128)`` fed to the patch embedding."""
        if wav.ndim != 2:
            raise ValueError(f"wav must be 2-D (batch, samples), got shape {tuple(wav.shape)}")
        return self.frontend(wav)

    def forward_layers(self, wav: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Token maps ``(B, 1 + T * F, D)`` of the requested layers, stopping after the deepest."""
        layers = check_layers(layers, self.n_layers)
        spec = self.spectrogram(wav)
        weight = self.patch_embed.proj.weight
        x = self.embed_tokens(self.patch_embed(spec.unsqueeze(1).to(weight.dtype)))
        return run_blocks(x, self.blocks, layers, self.layer_output)

    def layout(self, n_samples: int, layer: int) -> TokenLayout:
        """Layout of any layer: ``[cls]`` then a time-major ``(target_frames / 16) x 8`` grid.

        Every clip is padded or cropped to ``target_frames`` frames, so the grid
        does not depend on ``n_samples``.
        """
        check_layers([layer], self.n_layers)
        n_time, n_freq = self.grid
        return TokenLayout(1, n_time, n_freq, self.dim, _PATCH * _HOP_SECONDS, "time_freq")
