"""Batched spectrogram front ends that run on the encoder's device.

:class:`KaldiFbank` reproduces ``torchaudio.compliance.kaldi.fbank`` (Kaldi's
``compute-fbank-feats``) for a whole batch at once. Looping the per-clip
torchaudio function is slower than a ViT-B forward on a GPU; this module turns
the feature step into a few batched tensor ops. :class:`NormalizedFbank` adds
the input pipeline that AST-style spectrogram transformers (Audio-MAE, EAT,
SSLAM, ...) put in front of their patch embedding: waveform mean removal, a
fixed frame count and ``(x - mean) / (2 * std)`` normalisation.
:class:`WhisperLogMel` is Whisper's log-mel front end on
:func:`slaney_mel_banks`.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

__all__ = ["KaldiFbank", "NormalizedFbank", "WhisperLogMel", "kaldi_mel_banks", "slaney_mel_banks", "computed_buffers"]


def computed_buffers() -> contextlib.AbstractContextManager:
    """Context for building a front end whose buffers are computed and checked numerically.

    Filter banks are checked with ``if`` on tensor values, which a tensor on the
    meta device cannot answer. When the default device is ``meta`` (a weightless
    skeleton, see :func:`skprobe.encoders.registry.skeleton`) the front end is
    built on the CPU, which is cheap; otherwise nothing changes.

    Examples
    --------
    >>> import torch
    >>> with torch.device("meta"), computed_buffers():
    ...     torch.zeros(1).device
    device(type='cpu')
    """
    return torch.device("cpu") if torch.empty(0).is_meta else contextlib.nullcontext()

_WINDOWS = ("hanning", "povey", "hamming", "rectangular", "blackman")


def _mel_scalar(freq: float) -> float:
    return 1127.0 * math.log(1.0 + freq / 700.0)


def kaldi_mel_banks(
    num_bins: int, padded_window_size: int, sample_frequency: float, low_freq: float, high_freq: float
) -> torch.Tensor:
    """Kaldi's triangular mel filters on the power-spectrum bins.

    The arithmetic follows ``torchaudio.compliance.kaldi.get_mel_banks`` step by
    step in float32, so the filters are bit-identical to torchaudio's. (Computing
    them more precisely, in float64, moves low-frequency bins by up to 1e-4 in the
    log domain: the reference itself is float32.)

    Parameters
    ----------
    num_bins : int
        Number of mel bins (more than 3).
    padded_window_size : int
        FFT size (even).
    sample_frequency : float
        Sample rate in Hz.
    low_freq, high_freq : float
        Mel range in Hz; ``high_freq <= 0`` is an offset from Nyquist.

    Returns
    -------
    Tensor of shape (padded_window_size // 2 + 1, num_bins)
        Float32 filter weights; the Nyquist bin has weight 0, as in Kaldi.

    Examples
    --------
    >>> kaldi_mel_banks(128, 512, 16000.0, 20.0, 0.0).shape
    torch.Size([257, 128])
    """
    if num_bins <= 3:
        raise ValueError(f"num_bins must be more than 3, got {num_bins}")
    if padded_window_size % 2:
        raise ValueError(f"padded_window_size must be even, got {padded_window_size}")
    nyquist = 0.5 * sample_frequency
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(
            f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz), got low_freq={low_freq}, high_freq={high_freq}"
        )
    fft_bin_width = sample_frequency / padded_window_size
    mel_low, mel_high = _mel_scalar(low_freq), _mel_scalar(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins, dtype=torch.int64).unsqueeze(1)
    # Same float32 operations, in the same order, as torchaudio.
    left = mel_low + index * delta
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    freqs = fft_bin_width * torch.arange(padded_window_size // 2, dtype=torch.float32)
    mel = (1127.0 * (1.0 + freqs / 700.0).log()).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))  # (num_bins, n_fft // 2)
    banks = torch.nn.functional.pad(banks, (0, 1))
    return banks.T.contiguous()


class KaldiFbank(nn.Module):
    """Kaldi-compatible log mel filterbank for a batch of waveforms.

    Matches ``torchaudio.compliance.kaldi.fbank`` with ``dither=0``,
    ``snip_edges=True`` and ``use_energy=False`` (the settings of Audio-MAE,
    BEATs, EAT, SSLAM, ASiT and AST; ``htk_compat`` only moves the energy
    column, so it has no effect here). The same float32 operations run in the
    same order as in torchaudio; on CPU the result is usually bit-identical.

    On CPU the batch is processed in chunks of about ``chunk_frames`` frames, so
    that the intermediate frame buffers stay in cache: this makes the batched
    version faster than the per-clip torchaudio loop. On other devices the whole
    batch goes through at once.

    Parameters
    ----------
    sample_frequency : float, default=16000
    num_mel_bins : int, default=128
    frame_length, frame_shift : float, default=25.0, 10.0
        In milliseconds.
    window_type : {"hanning", "povey", "hamming", "rectangular", "blackman"}, default="hanning"
    low_freq, high_freq : float, default=20.0, 0.0
        Mel range; ``high_freq <= 0`` is an offset from Nyquist.
    preemphasis_coefficient : float, default=0.97
    remove_dc_offset : bool, default=True
    round_to_power_of_two : bool, default=True
    blackman_coeff : float, default=0.42
    chunk_frames : int or None, default=2048
        Frames per chunk on CPU; None processes the whole batch at once.

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
        blackman_coeff: float = 0.42,
        chunk_frames: int | None = 2048,
    ) -> None:
        super().__init__()
        if window_type not in _WINDOWS:
            raise ValueError(f"window_type must be one of {_WINDOWS}, got {window_type!r}")
        if chunk_frames is not None and chunk_frames < 1:
            raise ValueError(f"chunk_frames must be a positive int or None, got {chunk_frames}")
        self.num_mel_bins = num_mel_bins
        self.window_size = int(sample_frequency * frame_length * 0.001)
        self.window_shift = int(sample_frequency * frame_shift * 0.001)
        if self.window_size < 2 or self.window_shift < 1:
            raise ValueError(
                f"frame_length={frame_length} ms / frame_shift={frame_shift} ms are too short at {sample_frequency} Hz"
            )
        self.padded_window_size = (
            1 << (self.window_size - 1).bit_length() if round_to_power_of_two else self.window_size
        )
        self.preemphasis_coefficient = float(preemphasis_coefficient)
        self.remove_dc_offset = remove_dc_offset
        self.chunk_frames = chunk_frames
        # Plain float32 attributes, not buffers: casting the encoder to half
        # precision must not round the filters. Copies per device are cached.
        with computed_buffers():
            self.window = self._window(window_type, self.window_size, blackman_coeff).float()
            self.mel_banks = kaldi_mel_banks(
                num_mel_bins, self.padded_window_size, sample_frequency, low_freq, high_freq
            )
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def _window(kind: str, size: int, blackman_coeff: float) -> torch.Tensor:
        if kind == "hanning":
            return torch.hann_window(size, periodic=False)
        if kind == "povey":
            return torch.hann_window(size, periodic=False).pow(0.85)
        if kind == "hamming":
            return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46)
        if kind == "blackman":
            a = 2 * math.pi / (size - 1)
            n = torch.arange(size)
            return blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)
        return torch.ones(size)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._constants:
            self._constants[device] = (self.window.to(device), self.mel_banks.to(device))
        return self._constants[device]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_constants"] = {}
        return state

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` samples (Kaldi ``snip_edges=True``).

        Examples
        --------
        >>> KaldiFbank().n_frames(160000)
        998
        """
        return 0 if n_samples < self.window_size else 1 + (n_samples - self.window_size) // self.window_shift

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Log mel energies ``(B, S) -> (B, T, num_mel_bins)`` in float32."""
        if wav.ndim != 2:
            raise ValueError(f"wav must be 2-D (batch, samples), got shape {tuple(wav.shape)}")
        if wav.shape[1] < self.window_size:
            raise ValueError(f"clips need at least {self.window_size} samples, got {wav.shape[1]}")
        frames = wav.float().unfold(-1, self.window_size, self.window_shift)  # B, T, W (a view)
        batch, n_frames = frames.shape[:2]
        out = frames.new_empty(batch, n_frames, self.num_mel_bins)
        if self.chunk_frames is None or wav.device.type != "cpu":
            step = batch
        else:
            step = max(1, self.chunk_frames // max(n_frames, 1))
        window, banks = self._on(wav.device)
        # Autocast would run the filterbank matmul in half precision: keep float32.
        with torch.autocast(wav.device.type, enabled=False):
            for start in range(0, batch, step):
                stop = min(start + step, batch)
                out[start:stop] = self._fbank(frames[start:stop], window, banks)
        return out

    def _fbank(self, frames: torch.Tensor, window: torch.Tensor, banks: torch.Tensor) -> torch.Tensor:
        """Log mel energies of frames ``(b, T, W) -> (b, T, num_mel_bins)``."""
        size = self.window_size
        if self.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        # Explicit zero padding to the FFT size; the columns past the window stay 0.
        padded = frames.new_zeros(*frames.shape[:-1], self.padded_window_size)
        body = padded[..., :size]
        coeff = self.preemphasis_coefficient
        if coeff != 0.0:
            # x[j] - c * x[j - 1] (x[-1] := x[0]), with the product rounded
            # before the subtraction exactly as torchaudio does.
            torch.mul(frames[..., :-1], coeff, out=body[..., 1:])
            torch.sub(frames[..., 1:], body[..., 1:], out=body[..., 1:])
            body[..., :1] = frames[..., :1] - coeff * frames[..., :1]
        else:
            body.copy_(frames)
        body.mul_(window)
        power = torch.fft.rfft(padded).abs().pow_(2.0)
        mel = torch.matmul(power, banks)
        return torch.clamp_min_(mel, torch.finfo(torch.float32).eps).log_()


class NormalizedFbank(nn.Module):
    """Waveforms to the normalised fbank "image" of AST-style audio ViTs.

    The pipeline of the official Audio-MAE, EAT and SSLAM data loaders, batched:

    1. optional scaling of the waveform (``waveform_scale``) and removal of each
       clip's mean (``remove_mean``);
    2. :class:`KaldiFbank` (hanning window, 25 ms / 10 ms, 128 mel bins, no
       dither, no energy);
    3. zero-padding at the end (in the log-mel domain) or cropping to
       ``target_frames`` frames;
    4. ``(fbank - norm_mean) / (2 * norm_std)``.

    Parameters
    ----------
    target_frames : int, default=1024
        Frames after padding or cropping (1024 = 10.24 s at a 10 ms shift).
    norm_mean, norm_std : float
        Dataset statistics of the log-mel values.
    waveform_scale : float, default=1.0
        Factor applied to the ``[-1, 1]`` waveform first (32768 for loaders that
        read int16 samples).
    remove_mean : bool, default=True
        Subtract each clip's mean before the fbank.
    sample_frequency : float, default=16000
    num_mel_bins : int, default=128
    frame_shift : float, default=10.0
        In milliseconds.

    Examples
    --------
    >>> import torch
    >>> front = NormalizedFbank(target_frames=1024, norm_mean=-4.268, norm_std=4.569)
    >>> front(torch.randn(2, 80000)).shape
    torch.Size([2, 1024, 128])
    """

    def __init__(
        self,
        target_frames: int = 1024,
        norm_mean: float = -4.2677393,
        norm_std: float = 4.5689974,
        waveform_scale: float = 1.0,
        remove_mean: bool = True,
        sample_frequency: float = 16000.0,
        num_mel_bins: int = 128,
        frame_shift: float = 10.0,
    ) -> None:
        super().__init__()
        if target_frames < 1:
            raise ValueError(f"target_frames must be positive, got {target_frames}")
        if norm_std <= 0:
            raise ValueError(f"norm_std must be positive, got {norm_std}")
        self.target_frames = int(target_frames)
        self.norm_mean = float(norm_mean)
        self.norm_std = float(norm_std)
        self.waveform_scale = float(waveform_scale)
        self.remove_mean = remove_mean
        self.fbank = KaldiFbank(
            sample_frequency=sample_frequency,
            num_mel_bins=num_mel_bins,
            frame_shift=frame_shift,
            window_type="hanning",
        )

    def n_frames(self, n_samples: int) -> int:
        """Fbank frames of a clip of ``n_samples`` samples, before padding or cropping."""
        return self.fbank.n_frames(n_samples)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Normalised fbank ``(B, S) -> (B, target_frames, num_mel_bins)``."""
        if wav.ndim != 2:
            raise ValueError(f"wav must be 2-D (batch, samples), got shape {tuple(wav.shape)}")
        wav = wav.float()
        if self.waveform_scale != 1.0:
            wav = wav * self.waveform_scale
        if self.remove_mean:
            wav = wav - wav.mean(dim=1, keepdim=True)
        spec = self.fbank(wav)
        missing = self.target_frames - spec.shape[1]
        if missing > 0:
            spec = torch.nn.functional.pad(spec, (0, 0, 0, missing))
        elif missing < 0:
            spec = spec[:, : self.target_frames]
        return (spec - self.norm_mean) / (self.norm_std * 2)


def slaney_mel_banks(n_mels: int = 80, n_fft: int = 400, sample_rate: float = 16000.0) -> torch.Tensor:
    """Slaney-style triangular mel filters with Slaney area normalisation, from 0 Hz to Nyquist.

    The filters of ``librosa.filters.mel(sr, n_fft, n_mels)`` (its defaults:
    ``htk=False``, ``norm="slaney"``), which OpenAI Whisper ships as
    ``mel_filters.npz``: mel edges equally spaced on Slaney's scale (linear
    below 1 kHz, logarithmic above), triangles in Hz on the FFT bins, each
    scaled by ``2 / (right edge - left edge)``. Computed in float64.

    Returns
    -------
    Tensor of shape (n_fft // 2 + 1, n_mels)
        Float32 weights.

    Examples
    --------
    >>> slaney_mel_banks(80, 400, 16000).shape
    torch.Size([201, 80])
    """
    if n_mels < 1 or n_fft < 2:
        raise ValueError(f"need n_mels >= 1 and n_fft >= 2, got n_mels={n_mels}, n_fft={n_fft}")
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, log_step = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(hz: float) -> float:
        return hz / f_sp if hz < min_log_hz else min_log_mel + math.log(hz / min_log_hz) / log_step

    mels = torch.linspace(0.0, hz_to_mel(sample_rate / 2), n_mels + 2, dtype=torch.float64)
    edges = torch.where(mels >= min_log_mel, min_log_hz * torch.exp(log_step * (mels - min_log_mel)), f_sp * mels)
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (sample_rate / n_fft)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins - left) / (center - left)
    down = (right - bins) / (right - center)
    weights = torch.clamp(torch.minimum(up, down), min=0.0) * (2.0 / (right - left))
    return weights.T.float().contiguous()


class WhisperLogMel(nn.Module):
    """Whisper's log-mel front end, batched: ``(B, S) -> (B, n_mels, T)``.

    As OpenAI Whisper's ``log_mel_spectrogram`` (16 kHz): an STFT of 400
    samples every 160 with a periodic Hann window, centred with reflect
    padding, the last frame dropped (``T = S // 160``); power spectrum;
    :func:`slaney_mel_banks`; ``log10`` of the mel energies floored at 1e-10,
    then at the clip's own maximum minus 8; ``(x + 4) / 4``. The maximum is
    taken per clip, so a clip's features never depend on the other clips of
    its batch (Whisper's own function, given a batch, takes it over the batch).

    Parameters
    ----------
    n_mels : int, default=80
        80 for every Whisper model up to large-v2, 128 for large-v3.
    pad_to : int, optional
        Zero-pad (or cut) every clip to this many samples first (480,000 = 30 s,
        Whisper's window); None keeps the clip's length.

    Examples
    --------
    >>> import torch
    >>> WhisperLogMel()(torch.zeros(2, 16000)).shape
    torch.Size([2, 80, 100])
    >>> WhisperLogMel(pad_to=480000)(torch.zeros(1, 16000)).shape
    torch.Size([1, 80, 3000])
    """

    sample_rate = 16000
    n_fft = 400
    hop_length = 160

    def __init__(self, n_mels: int = 80, pad_to: int | None = None) -> None:
        super().__init__()
        if pad_to is not None and pad_to < self.n_fft:
            raise ValueError(f"pad_to must be at least {self.n_fft} samples or None, got {pad_to}")
        self.n_mels = int(n_mels)
        self.pad_to = pad_to
        # Plain attributes, not buffers: casting the encoder to half precision must not round them.
        with computed_buffers():
            self.window = torch.hann_window(self.n_fft, periodic=True)
            self.mel_banks = slaney_mel_banks(self.n_mels, self.n_fft, self.sample_rate)
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def n_frames(self, n_samples: int) -> int:
        """Frames of a clip of ``n_samples`` samples (after ``pad_to``).

        Examples
        --------
        >>> WhisperLogMel().n_frames(160000)
        1000
        """
        return (self.pad_to if self.pad_to is not None else n_samples) // self.hop_length

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._constants:
            self._constants[device] = (self.window.to(device), self.mel_banks.T.contiguous().to(device))
        return self._constants[device]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_constants"] = {}
        return state

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Log-mel features ``(B, S) -> (B, n_mels, S // 160)`` in float32."""
        if wav.ndim != 2:
            raise ValueError(f"wav must be 2-D (batch, samples), got shape {tuple(wav.shape)}")
        wav = wav.float()
        if self.pad_to is not None:
            wav = torch.nn.functional.pad(wav[:, : self.pad_to], (0, max(0, self.pad_to - wav.shape[1])))
        if wav.shape[1] <= self.n_fft // 2:
            raise ValueError(f"clips need more than {self.n_fft // 2} samples, got {wav.shape[1]}")
        window, banks = self._on(wav.device)
        with torch.autocast(wav.device.type, enabled=False):
            stft = torch.stft(wav, self.n_fft, self.hop_length, window=window, center=True, pad_mode="reflect",
                              return_complex=True)
            power = stft[..., :-1].abs().pow_(2)  # B, 201, T
            log_spec = torch.clamp_min_(banks @ power, 1e-10).log10_()
            floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
            return (torch.maximum(log_spec, floor) + 4.0) / 4.0
