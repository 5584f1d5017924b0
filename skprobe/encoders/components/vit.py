"""Transformer pieces shared by the ViT audio encoders.

Parameter names follow timm's ``VisionTransformer`` (``norm1``, ``attn.qkv``,
``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``), which most official audio
checkpoints use directly or after a prefix rename in their loader.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .frontends import computed_buffers

__all__ = [
    "Attention",
    "Mlp",
    "LayerScale",
    "Block",
    "PatchEmbed",
    "sincos_pos_embed_2d",
    "init_vit_weights",
]


class Attention(nn.Module):
    """Multi-head self-attention ``(B, N, D) -> (B, N, D)``.

    Parameters
    ----------
    dim : int
    num_heads : int
    qkv_bias : bool, default=True
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Two-layer GELU MLP ``D -> hidden -> D``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel learnable scale (``gamma``), as in CaiT / DINOv2 blocks."""

    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Transformer block, pre-norm (timm) or post-norm (data2vec ``layer_norm_first=False``).

    Parameters
    ----------
    dim, num_heads : int
    mlp_ratio : float, default=4.0
    qkv_bias : bool, default=True
    norm_first : bool, default=True
        Pre-norm ``x + attn(norm1(x))``; False gives post-norm
        ``norm1(x + attn(x))``.
    layer_scale : float or None, default=None
        Initial value of per-channel layer scales ``ls1`` / ``ls2``; None for none.
    eps : float, default=1e-6
        LayerNorm epsilon.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_first: bool = True,
        layer_scale: float | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            x = x + self.ls1(self.attn(self.norm1(x), attn_bias))
            return x + self.ls2(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.ls1(self.attn(x, attn_bias)))
        return self.norm2(x + self.ls2(self.mlp(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patches of a spectrogram, flattened time-major.

    ``(B, C, T, F) -> (B, (T // p) * (F // p), D)``: the token of time patch
    ``t`` and frequency patch ``f`` sits at ``t * (F // p) + f``, as in timm's
    ``PatchEmbed`` on a ``(time, frequency)`` image. The convolution is called
    ``proj``, the name in timm, Audio-MAE and EAT.

    Parameters
    ----------
    patch_size : int or (int, int), default=16
        Square patches, or ``(height, width)`` patches of the image (e.g. a
        Dasheng patch spans all 64 mel bands and 4 frames of a ``(F, T)`` image).
    in_chans : int, default=1
    dim : int, default=768

    Examples
    --------
    >>> import torch
    >>> PatchEmbed(16, 1, 32)(torch.zeros(2, 1, 1024, 128)).shape
    torch.Size([2, 512, 32])
    """

    def __init__(self, patch_size: int | tuple[int, int] = 16, in_chans: int = 1, dim: int = 768) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int, cls_token: bool = False) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, MAE convention.

    Half of the channels encode the width index, half the height index; the
    grid is flattened height-major (``h * grid_w + w``).

    Returns
    -------
    Tensor of shape (grid_h * grid_w + cls_token, dim)
        With a zero row first when ``cls_token`` is True.
    """
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4, got {dim}")
    with computed_buffers():
        return _sincos_pos_embed_2d(dim, grid_h, grid_w, cls_token)


def _sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int, cls_token: bool) -> torch.Tensor:
    hh, ww = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij"
    )
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    emb = torch.cat([encode(ww), encode(hh)], dim=1)  # MAE: first half from the w index
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb], dim=0)
    return emb.float()


def _trunc_normal_(tensor: torch.Tensor, std: float = 0.02) -> torch.Tensor:
    return nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


def init_vit_weights(module: nn.Module) -> None:
    """timm-style init, so that random models have sensible activation scales."""
    if isinstance(module, nn.Linear):
        _trunc_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_in = module.in_channels * math.prod(module.kernel_size)
        nn.init.normal_(module.weight, std=math.sqrt(1.0 / fan_in))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
