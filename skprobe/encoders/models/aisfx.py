"""aiSFX: the sound-effects CNN of Ma & Lerch (ISMIR 2022).

Mirrors the **X-Sequential-CE** embedding network shipped in the PyPI package
``aisfx==0.1.2`` (``aisfx/models/cnn2d.py``, weights
``aisfx/models/checkpoint.pth``, CC BY 4.0), with the package's default
(Essentia) front end of ``aisfx.inference.main``:

* 44.1 kHz mono; Essentia ``FrameCutter`` framing: 2048-sample frames every
  1024 samples, the first frame centred on sample 0 (zero-padded on both
  sides), ``ceil(S / 1024) + 1`` frames for ``S`` samples;
* symmetric Hann window (not normalised), power spectrum, 96 HTK-mel bands
  over 0 - 22050 Hz with triangles shaped in the mel domain and each band
  normalised to unit sum (Essentia ``MelBands(weighting="warping",
  normalize="unit_sum", type="power")``);
* ``log10(1e4 * mel + 1)``, divided by 9.457798957824707 (the package's
  "original" min-max normalisation, minimum 0);
* four conv blocks (two 3x3 conv + batch norm + ReLU each, 64/128/256/512
  channels), 2x2 max pooling after blocks 1-3, none after block 4.

The package runs the network on 100-frame blocks (about 2.3 s) and pools each
block to one 512-d embedding (mean over frequency, max over time). Here the
network runs on the whole clip's spectrogram instead (it is fully
convolutional), and the tokens are the four blocks' feature maps, time-major.
On a 100-frame clip (``S = 99 * 1024`` samples) :meth:`AiSfxEncoder.embedding`
equals the package's block embedding.

Not reproduced: Essentia's ``FrameCutter`` adds -100 dB noise to frames that
are digitally silent; here such frames stay silent (a difference of about 1e-3
in the log-mel value of those frames only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import AudioEncoder, TokenLayout
from ..components.frontends import computed_buffers
from ..layers import check_layers, conv_tokens, run_blocks
from ..registry import EncoderSpec, PackagedWeights, register_builtin

__all__ = ["AiSfxEncoder", "EssentiaMelSpectrogram", "essentia_mel_banks", "convert_aisfx_state_dict"]

SAMPLE_RATE = 44100
FRAME_SIZE = 2048
HOP_SIZE = 1024
N_MELS = 96
SPEC_MAX = 9.457798957824707  # aisfx.preprocessing.spectrogram_normalize, spec_norm="original"


def _hz_to_mel(hz):
    return 2595.0 * (torch.log10(1.0 + hz / 700.0) if isinstance(hz, torch.Tensor) else math.log10(1.0 + hz / 700.0))


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def essentia_mel_banks(
    n_mels: int = N_MELS,
    n_fft: int = FRAME_SIZE,
    sample_rate: float = SAMPLE_RATE,
    f_min: float = 0.0,
    f_max: float = SAMPLE_RATE / 2,
) -> torch.Tensor:
    """Essentia's HTK-mel triangular filters, mel-warped and unit-sum normalised.

    Band ``i`` spans the FFT bins between edges ``i`` and ``i + 2`` of
    ``n_mels + 2`` edges equally spaced on the HTK mel scale; inside, the weight
    rises and falls linearly *in mel* and the weights of each band sum to 1.

    Returns
    -------
    Tensor of shape (n_fft // 2 + 1, n_mels)
        Weights to right-multiply a power spectrum with.

    Examples
    --------
    >>> fb = essentia_mel_banks()
    >>> tuple(fb.shape), round(float(fb.sum(0).mean()), 4)
    ((1025, 96), 1.0)
    """
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= Nyquist, got f_min={f_min}, f_max={f_max}")
    edges_mel = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    edges = _mel_to_hz(edges_mel)
    n_bins = n_fft // 2 + 1
    bin_hz = torch.arange(n_bins, dtype=torch.float64) * (sample_rate / 2) / (n_bins - 1)
    bin_mel = _hz_to_mel(bin_hz)[:, None]
    left, center, right = edges_mel[None, :-2], edges_mel[None, 1:-1], edges_mel[None, 2:]
    rising = (bin_mel - left) / (center - left)
    falling = (right - bin_mel) / (right - center)
    hz = bin_hz[:, None]
    inside = (hz >= edges[None, :-2]) & (hz <= edges[None, 2:])
    weights = torch.where(hz < edges[None, 1:-1], rising, falling).clamp(min=0.0) * inside
    sums = weights.sum(0, keepdim=True)
    if (sums == 0).any():
        raise ValueError(f"n_fft={n_fft} gives too few FFT bins for {n_mels} mel bands")
    return (weights / sums).to(torch.float32)


class EssentiaMelSpectrogram(nn.Module):
    """Batched aiSFX front end: ``(B, S) -> (B, T, 96)`` normalised log-mel.

    ``T = ceil(S / 1024) + 1`` (Essentia's centred framing). Values are
    ``log10(1e4 * mel + 1) / 9.4578`` as in ``aisfx.inference.main``.

    Examples
    --------
    >>> import torch
    >>> EssentiaMelSpectrogram()(torch.zeros(2, 44100)).shape
    torch.Size([2, 45, 96])
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(FRAME_SIZE, periodic=False), persistent=False)
        self.register_buffer("mel_banks", essentia_mel_banks(), persistent=False)

    @staticmethod
    def n_frames(n_samples: int) -> int:
        """Frames for ``n_samples`` samples."""
        return -(-n_samples // HOP_SIZE) + 1

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.ndim != 2:
            raise ValueError(f"wav must be 2-D (batch, samples), got shape {tuple(wav.shape)}")
        if wav.shape[1] == 0:
            raise ValueError("wav has 0 samples")
        n_frames = self.n_frames(wav.shape[1])
        # Frame k covers samples [(k - 1) * hop, (k - 1) * hop + 2048), zero outside the clip.
        right = n_frames * HOP_SIZE - wav.shape[1]
        padded = F.pad(wav.float(), (HOP_SIZE, right))
        frames = padded.unfold(-1, FRAME_SIZE, HOP_SIZE) * self.window  # B, T, 2048
        power = torch.fft.rfft(frames).abs().pow(2)
        mel = power @ self.mel_banks
        return torch.log10(1e4 * mel + 1.0) / SPEC_MAX


class ConvBlock(nn.Module):
    """Two 3x3 convolutions (no bias), each followed by batch norm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        """``(B, C_in, T, F) -> (B, C_out, T // pool, F // pool)``."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.max_pool2d(x, pool) if pool > 1 else x


def convert_aisfx_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the embedding network of the aiSFX ``CrossNet`` checkpoint.

    Strips the ``embedding_net.`` prefix and drops the nine per-dataset
    classifier heads (``fc.*``).
    """
    prefix = "embedding_net."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} or dict(state)


class AiSfxEncoder(AudioEncoder):
    """aiSFX sound-effects CNN with token maps from each of its 4 conv blocks.

    Layer ``l`` (0-3) is the output of ``conv_block{l+1}`` (after its pooling),
    ``(B, C, T_l, F_l)`` flattened time-major to ``(B, T_l * F_l, C)`` with
    ``C = 64, 128, 256, 512``, ``F_l = 48, 24, 12, 12`` and ``T_l = T // 2, T // 4,
    T // 8, T // 8`` for ``T`` spectrogram frames. A 10 s clip gives
    ``54 x 12`` tokens of dimension 512 at the last layer. No prefix tokens.

    Examples
    --------
    >>> import torch
    >>> enc = AiSfxEncoder().eval()
    >>> [t.shape for t in enc.forward_layers(torch.zeros(1, 44100), [0, 3])]
    [torch.Size([1, 1056, 64]), torch.Size([1, 60, 512])]
    >>> enc.layout(44100, 3)
    TokenLayout(prefix_tokens=0, n_time=5, n_freq=12, dim=512, hop_seconds=0.18575963718820862, order='time_freq')
    """

    sample_rate = SAMPLE_RATE
    n_layers = 4
    channels = (64, 128, 256, 512)
    _pools = (2, 2, 2, 1)

    def __init__(self) -> None:
        super().__init__()
        with computed_buffers():
            self.frontend = EssentiaMelSpectrogram()
        chans = (1,) + self.channels
        for i in range(4):
            self.add_module(f"conv_block{i + 1}", ConvBlock(chans[i], chans[i + 1]))

    @property
    def blocks(self) -> list[ConvBlock]:
        return [getattr(self, f"conv_block{i + 1}") for i in range(4)]

    def forward_layers(self, wav: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        x = self.frontend(wav).unsqueeze(1)  # B, 1, T, 96
        if x.shape[2] < 8:
            raise ValueError(
                f"wav must have more than {6 * HOP_SIZE} samples ({6 * HOP_SIZE / SAMPLE_RATE:.2f} s at "
                f"{SAMPLE_RATE} Hz) for aiSFX's three 2x2 poolings, got {wav.shape[1]}"
            )
        blocks = [partial(block, pool=pool) for block, pool in zip(self.blocks, self._pools)]
        return run_blocks(x, blocks, check_layers(layers, self.n_layers), conv_tokens)

    def embedding(self, wav: torch.Tensor) -> torch.Tensor:
        """aiSFX's pooled 512-d embedding: last block, mean over frequency, max over time."""
        tokens = self.forward_layers(wav, [3])[0]
        grid = self.layout(wav.shape[1], 3).to_grid(tokens)  # B, T, F, C
        return grid.mean(dim=2).amax(dim=1)

    def layout(self, n_samples: int, layer: int) -> TokenLayout:
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer must be in [0, {self.n_layers}), got {layer}")
        t, f = EssentiaMelSpectrogram.n_frames(n_samples), N_MELS
        for pool in self._pools[: layer + 1]:
            t, f = t // pool, f // pool
        stride = math.prod(self._pools[: layer + 1])
        return TokenLayout(0, t, f, self.channels[layer], HOP_SIZE * stride / SAMPLE_RATE, "time_freq")

    def unwrap_checkpoint(self, obj: Any) -> dict[str, torch.Tensor]:
        """The state dict of ``aisfx/models/checkpoint.pth``, a ``(state_dict, datasets)`` tuple."""
        if isinstance(obj, (tuple, list)):
            obj = next((o for o in obj if isinstance(o, Mapping)), None)
        if not isinstance(obj, Mapping):
            raise ValueError(f"holds no aiSFX state dict (got {type(obj).__name__})")
        return super().unwrap_checkpoint(obj)

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """See :func:`convert_aisfx_state_dict`."""
        return convert_aisfx_state_dict(state)


register_builtin(
    EncoderSpec(
        name="aisfx",
        builder=AiSfxEncoder,
        sample_rate=SAMPLE_RATE,
        clip_seconds=10.0,
        license="CC-BY-4.0",
        weights_source="PyPI package aisfx==0.1.2 (Ma & Lerch, ISMIR 2022)",
        weights_file="aisfx/models/checkpoint.pth",
        packaged_weights=PackagedWeights(
            "aisfx==0.1.2", members=("aisfx/models/checkpoint.pth",), checkpoint="aisfx/models/checkpoint.pth"
        ),
        requires_checkpoint=True,
        description="aiSFX sound-effects CNN (4 conv blocks, 44.1 kHz, 96 mels), conv-block token maps",
        extra={"frontend": "essentia log10(1e4 mel + 1) / 9.4578, 2048/1024 frames", "pooling": "2x2 max after blocks 1-3"},
    ),
)
