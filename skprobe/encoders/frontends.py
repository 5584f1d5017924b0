"""Batched spectrogram front ends that run on the encoder's device.

:class:`KaldiFbank` reproduces ``torchaudio.compliance.kaldi.fbank`` (Kaldi's
``compute-fbank-feats``) for a whole batch at once. Looping the per-clip
torchaudio function is slower than a ViT-B forward on a GPU; this module turns
the feature step into a few batched tensor ops.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["KaldiFbank", "kaldi_mel_banks"]

_WINDOWS = ("hanning", "povey", "hamming", "rectangular")


def _mel(freq: torch.Tensor | float):
    return 1127.0 * (torch.log1p(freq / 700.0) if isinstance(freq, torch.Tensor) else math.log1p(freq / 700.0))


def kaldi_mel_banks(
    num_bins: int, padded_window_size: int, sample_frequency: float, low_freq: float, high_freq: float
) -> torch.Tensor:
    """Kaldi's triangular mel filters on the power-spectrum bins.

    Returns
    -------
    Tensor of shape (padded_window_size // 2 + 1, num_bins)
        Filter weights; the Nyquist bin has weight 0, as in Kaldi.
    """
    nyquist = 0.5 * sample_frequency
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(
            f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz), got low_freq={low_freq}, high_freq={high_freq}"
        )
    n_fft_bins = padded_window_size // 2
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    edges = mel_low + delta * torch.arange(num_bins + 2, dtype=torch.float64)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bin_mel = _mel(sample_frequency / padded_window_size * torch.arange(n_fft_bins, dtype=torch.float64))[None, :]
    up = (bin_mel - left) / (center - left)
    down = (right - bin_mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (num_bins, n_fft_bins)
    banks = torch.cat([banks, torch.zeros(num_bins, 1, dtype=torch.float64)], dim=1)
    return banks.T.to(torch.float32).contiguous()


class KaldiFbank(nn.Module):
    """Kaldi-compatible log mel filterbank for a batch of waveforms.

    Matches ``torchaudio.compliance.kaldi.fbank`` with ``dither=0``,
    ``snip_edges=True`` and ``use_energy=False`` (the settings of Audio-MAE,
    BEATs, EAT, SSLAM, ASiT and AST) to float32 precision.

    Parameters
    ----------
    sample_frequency : float, default=16000
    num_mel_bins : int, default=128
    frame_length, frame_shift : float, default=25.0, 10.0
        In milliseconds.
    window_type : {"hanning", "povey", "hamming", "rectangular"}, default="hanning"
    low_freq, high_freq : float, default=20.0, 0.0
        Mel range; ``high_freq <= 0`` is an offset from Nyquist.
    preemphasis_coefficient : float, default=0.97
    remove_dc_offset : bool, default=True
    round_to_power_of_two : bool, default=True

    Examples
    --------
    >>> import torch
    >>> fb = KaldiFbank(num_mel_bins=128)
    >>> fb(torch.randn(4, 16000)).shape
    torch.Size([4, 98, 128])
    """

    def __init__(
        self,
        sample_frequency: float = 16000.0,
        num_mel_bins: int = 128,
        frame_length: float = 25.0,
        frame_shift: float = 10.0,
        window_type: str = "hanning",
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        preemphasis_coefficient: float = 0.97,
        remove_dc_offset: bool = True,
        round_to_power_of_two: bool = True,
    ) -> None:
        super().__init__()
        if window_type not in _WINDOWS:
            raise ValueError(f"window_type must be one of {_WINDOWS}, got {window_type!r}")
        self.window_size = int(sample_frequency * frame_length * 0.001)
        self.window_shift = int(sample_frequency * frame_shift * 0.001)
        self.padded_window_size = (
            1 << (self.window_size - 1).bit_length() if round_to_power_of_two else self.window_size
        )
        self.preemphasis_coefficient = preemphasis_coefficient
        self.remove_dc_offset = remove_dc_offset
        self.register_buffer("window", self._window(window_type, self.window_size), persistent=False)
        banks = kaldi_mel_banks(num_mel_bins, self.padded_window_size, sample_frequency, low_freq, high_freq)
        self.register_buffer("mel_banks", banks, persistent=False)

    @staticmethod
    def _window(kind: str, size: int) -> torch.Tensor:
        if kind == "hanning":
            return torch.hann_window(size, periodic=False)
        if kind == "povey":
            return torch.hann_window(size, periodic=False).pow(0.85)
        if kind == "hamming":
            return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46)
        return torch.ones(size)

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` samples (Kaldi ``snip_edges=True``)."""
        return 0 if n_samples < self.window_size else 1 + (n_samples - self.window_size) // self.window_shift

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Log mel energies ``(B, S) -> (B, T, num_mel_bins)`` in float32."""
        if wav.ndim != 2:
            raise ValueError(f"wav must be 2-D (batch, samples), got shape {tuple(wav.shape)}")
        if wav.shape[1] < self.window_size:
            raise ValueError(f"clips need at least {self.window_size} samples, got {wav.shape[1]}")
        frames = wav.float().unfold(-1, self.window_size, self.window_shift)  # B, T, W
        if self.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        if self.preemphasis_coefficient != 0.0:
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = frames - self.preemphasis_coefficient * previous
        frames = frames * self.window
        spectrum = torch.fft.rfft(frames, n=self.padded_window_size).abs().pow(2.0)
        mel = spectrum @ self.mel_banks
        return torch.clamp(mel, min=torch.finfo(torch.float32).eps).log()
