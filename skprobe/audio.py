"""Audio input: read files with soundfile, down-mix, scale, resample, fix length.

``torchaudio.load`` needs TorchCodec nowadays; skprobe reads audio with
:mod:`soundfile` and resamples with :func:`torchaudio.functional.resample`.
"""

from __future__ import annotations

import os
import struct
import warnings
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as T

__all__ = ["read_audio", "to_mono_float", "resample", "fix_length"]


def to_mono_float(wav: np.ndarray, *, name: str = "waveform") -> np.ndarray:
    """Mono float32 in [-1, 1] from any PCM array.

    Integer PCM is scaled by its type's full range; 2-D input is treated as
    ``(n_samples, n_channels)`` (soundfile's layout) when it has fewer columns
    than rows, else ``(n_channels, n_samples)``, and averaged over channels.

    Raises
    ------
    ValueError
        If the array is empty, has more than 2 dimensions, or holds NaN/inf.
    """
    wav = np.asarray(wav)
    if wav.size == 0:  # checked first: down-mixing zero samples would give NaN
        raise ValueError(f"{name} is empty (0 samples)")
    if wav.ndim == 2:
        channel_axis = 1 if wav.shape[1] < wav.shape[0] else 0
        scaled = _scale_int(wav) if np.issubdtype(wav.dtype, np.integer) else wav.astype(np.float64)
        wav = scaled.mean(axis=channel_axis)
    elif wav.ndim != 1:
        raise ValueError(f"{name} must be 1-D (samples) or 2-D (samples x channels), got shape {wav.shape}")
    if np.issubdtype(wav.dtype, np.integer):
        wav = _scale_int(wav)
    wav = np.asarray(wav, dtype=np.float32)
    if not np.isfinite(wav).all():
        raise ValueError(f"{name} contains NaN or infinite samples")
    return wav


def _scale_int(wav: np.ndarray) -> np.ndarray:
    info = np.iinfo(wav.dtype)
    if info.min == 0:  # unsigned PCM (8-bit WAV) is offset by half the range
        return (wav.astype(np.float64) - (info.max + 1) / 2) / ((info.max + 1) / 2)
    return wav.astype(np.float64) / -float(info.min)


def read_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as mono float32, optionally resampled.

    Parameters
    ----------
    path : path-like
        Any format libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3 with libsndfile >= 1.1).
    sample_rate : int, optional
        Resample to this rate; None keeps the file's rate.

    Returns
    -------
    wav : ndarray of shape (n_samples,)
    sample_rate : int

    Raises
    ------
    ValueError
        If the file cannot be read or decodes to no samples; the message names it.

    Warns
    -----
    UserWarning
        If a WAV file holds fewer frames than its header declares (a truncated
        file); what is there is decoded.

    Examples
    --------
    >>> import numpy as np, soundfile as sf, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "tone.wav")
    >>> sf.write(path, np.zeros(44100, dtype="int16"), 44100)
    >>> wav, sr = read_audio(path, sample_rate=16000)
    >>> wav.shape, sr
    ((16000,), 16000)
    """
    path = Path(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise ValueError(f"cannot read audio file {path}: {exc}") from exc
    declared = _wav_declared_frames(path)
    if declared is not None and len(data) < declared:
        warnings.warn(f"audio file {path} is truncated: its header declares {declared} frames but only "
                      f"{len(data)} are present; decoding those", UserWarning, stacklevel=2)
    wav = to_mono_float(data.mean(axis=1), name=f"audio file {path}")
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, int(sr)


def _wav_declared_frames(path: Path) -> int | None:
    """Frames a RIFF/WAVE header declares in its data chunk, or None (not a WAV, or a streamed header).

    libsndfile silently clamps the frame count to what the file holds, so a
    truncated download would otherwise go unnoticed.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = fh.read(size + (size & 1))
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                elif cid == b"data":
                    # 0 and 0xFFFFFFFF mark headers written before the length was known (streams).
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    fh.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None


def resample(wav: np.ndarray | torch.Tensor, orig_rate: int, new_rate: int):
    """Band-limited resampling along the last axis (numpy in, numpy out; tensor in, tensor out)."""
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return wav
    tensor = wav if isinstance(wav, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    resampler = _resampler(int(orig_rate), int(new_rate)).to(tensor.device)
    with torch.inference_mode():
        out = resampler(tensor)
    return out.clone() if isinstance(wav, torch.Tensor) else out.numpy()


@lru_cache(maxsize=16)
def _resampler(orig_rate: int, new_rate: int) -> torch.nn.Module:
    """A cached band-limited resampler: building its sinc kernel costs more than applying it."""
    g = gcd(orig_rate, new_rate)
    return T.Resample(orig_rate // g, new_rate // g)


def fix_length(wav: np.ndarray, n_samples: int) -> np.ndarray:
    """Crop (keeping the start) or zero-pad at the end to exactly ``n_samples``."""
    if wav.shape[-1] >= n_samples:
        return wav[..., :n_samples]
    pad = [(0, 0)] * (wav.ndim - 1) + [(0, n_samples - wav.shape[-1])]
    return np.pad(wav, pad)
