"""Tiny, seeded, randomly initialised encoders for tests and examples.

They follow the same contract as the real encoders (batched log-mel front end,
per-layer token maps, early stop) but have a few thousand parameters, so unit
tests run in milliseconds on a CPU. Their weights are a fixed function of the
seed; no checkpoint is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torchaudio
from torch import nn

from ..base import AudioEncoder, TokenLayout
from ..components.frontends import computed_buffers
from ..layers import check_layers, conv_tokens, run_blocks
from ..registry import EncoderSpec, register_builtin

__all__ = ["TinyConvEncoder", "TinyTransformerEncoder"]

_N_FFT, _HOP, _N_MELS = 400, 160, 32


def _n_frames(n_samples: int) -> int:
    return max(0, 1 + (n_samples - _N_FFT) // _HOP)


class _LogMel(nn.Module):
    """Batched log-mel spectrogram ``(B, S) -> (B, T, n_mels)``."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__()
        with computed_buffers():
            self.mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate, n_fft=_N_FFT, hop_length=_HOP, n_mels=_N_MELS, center=False
            )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(wav) + 1e-6).transpose(1, 2)


def _seeded(init, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        init()


class TinyConvEncoder(AudioEncoder):
    """Two strided conv layers over a 32-band log-mel; tokens are the conv maps.

    Parameters
    ----------
    seed : int, default=0
        Seed of the random weights.

    Examples
    --------
    >>> import torch
    >>> enc = TinyConvEncoder().eval()
    >>> [t.shape for t in enc.forward_layers(torch.zeros(2, 16000), [0, 1])]
    [torch.Size([2, 784, 8]), torch.Size([2, 200, 16])]
    """

    sample_rate = 16000
    n_layers = 2
    _channels = (8, 16)

    def __init__(self, seed: int = 0) -> None:
        super().__init__()

        def init() -> None:
            self.frontend = _LogMel(self.sample_rate)
            self.convs = nn.ModuleList(
                [nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.Conv2d(8, 16, 3, stride=2, padding=1)]
            )

        _seeded(init, seed)

    def forward_layers(self, wav: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        x = self.frontend(wav).unsqueeze(1)  # B, 1, T, F
        blocks = [lambda x, conv=conv: torch.relu(conv(x)) for conv in self.convs]
        return run_blocks(x, blocks, check_layers(layers, self.n_layers), conv_tokens)

    def layout(self, n_samples: int, layer: int) -> TokenLayout:
        t, f = _n_frames(n_samples), _N_MELS
        for _ in range(layer + 1):
            t, f = (t + 1) // 2, (f + 1) // 2
        return TokenLayout(0, t, f, self._channels[layer], _HOP * 2 ** (layer + 1) / self.sample_rate)


class _SinusoidalPosition(nn.Module):
    def forward(self, n: int, dim: int, device: torch.device) -> torch.Tensor:
        pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
        pe = torch.zeros(n, dim, device=device)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)
        return pe


class TinyTransformerEncoder(AudioEncoder):
    """A 3-layer, 16-dim ViT over 4-frame x 8-band patches with a ``[cls]`` token.

    Parameters
    ----------
    seed : int, default=0
        Seed of the random weights.

    Examples
    --------
    >>> import torch
    >>> enc = TinyTransformerEncoder().eval()
    >>> enc(torch.zeros(1, 16000)).shape
    torch.Size([1, 97, 16])
    """

    sample_rate = 16000
    n_layers = 3
    dim = 16
    _patch = (4, 8)  # frames, mel bands

    def __init__(self, seed: int = 0) -> None:
        super().__init__()

        def init() -> None:
            self.frontend = _LogMel(self.sample_rate)
            self.patch_embed = nn.Conv2d(1, self.dim, self._patch, stride=self._patch)
            self.cls_token = nn.Parameter(torch.randn(1, 1, self.dim) * 0.02)
            self.position = _SinusoidalPosition()
            self.blocks = nn.ModuleList(
                [
                    nn.TransformerEncoderLayer(self.dim, 2, 32, dropout=0.0, batch_first=True, norm_first=True)
                    for _ in range(self.n_layers)
                ]
            )

        _seeded(init, seed)

    def forward_layers(self, wav: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        spec = self.frontend(wav)
        spec = (spec - spec.mean(dim=(1, 2), keepdim=True)) / 4.0
        x = self.patch_embed(spec.unsqueeze(1)).flatten(2).transpose(1, 2)  # B, T*F, D
        x = x + self.position(x.shape[1], self.dim, x.device)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return run_blocks(x, self.blocks, check_layers(layers, self.n_layers))

    def layout(self, n_samples: int, layer: int) -> TokenLayout:
        t = _n_frames(n_samples) // self._patch[0]
        f = _N_MELS // self._patch[1]
        return TokenLayout(1, t, f, self.dim, _HOP * self._patch[0] / self.sample_rate)


register_builtin(
    EncoderSpec(
        name="tiny-cnn",
        builder=TinyConvEncoder,
        sample_rate=16000,
        clip_seconds=1.0,
        license="BSD-3-Clause (random weights)",
        weights_source="seeded random initialisation",
        requires_checkpoint=False,
        description="tiny random CNN for tests",
    ),
)
register_builtin(
    EncoderSpec(
        name="tiny-vit",
        builder=TinyTransformerEncoder,
        sample_rate=16000,
        clip_seconds=1.0,
        license="BSD-3-Clause (random weights)",
        weights_source="seeded random initialisation",
        requires_checkpoint=False,
        description="tiny random ViT with a [cls] token for tests",
    ),
)
