"""Inputs of the transformer: the one check of ``X``, decoding each clip, and fitting it to the encoder."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from sklearn.utils.validation import check_array, validate_data

from ..audio import fix_length, read_audio, resample, to_mono_float

__all__ = ["check_clips", "clip_head", "clip_name", "decode_clip", "prepare_clip"]


def _named(exc: Exception, name: str) -> Exception:
    exc.skprobe_name = name  # read by clip_name to name the clip in messages
    return exc


def clip_name(index: int, exc: Exception) -> str:
    """The name of the input an error is about: its file, or ``X[index]``."""
    return getattr(exc, "skprobe_name", f"X[{index}]")


def check_clips(X, estimator, *, reset: bool) -> Iterator:
    """The inputs one by one, after every check that needs no decoding; ``X`` is never listed.

    Parameters
    ----------
    X : 2-D array, list or tuple of clips or file paths, or any iterable of them
    estimator : FrozenEncoderTransformer
        Its ``sample_rate`` and ``n_features_in_`` (set, kept or dropped as
        scikit-learn's ``validate_data`` does).
    reset : bool
        True in ``fit``: every listed file must exist and every array item or
        row must be a waveform, and the width of a 2-D array is recorded.
        False in ``transform``: a 2-D array must have the recorded width;
        list items are checked as they are decoded, so ``on_error="skip"``
        can skip a bad one.

    Examples
    --------
    >>> import numpy as np
    >>> from skprobe import FrozenEncoderTransformer
    >>> enc = FrozenEncoderTransformer()
    >>> next(check_clips(np.zeros((2, 100)), enc, reset=True)).shape, enc.n_features_in_
    ((100,), 100)
    """
    if isinstance(X, (str, os.PathLike)):
        raise ValueError("X must be a list of clips or file paths; wrap a single file as [path]")
    if isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise ValueError("X is empty: pass at least one clip")
        if reset:
            estimator.__dict__.pop("n_features_in_", None)
            for i, item in enumerate(X):
                decode_clip(item, i, estimator.sample_rate, validate_only=True)
        return iter(X)
    if hasattr(X, "ndim") or hasattr(X, "__array__"):
        if (X.ndim if hasattr(X, "ndim") else np.asarray(X).ndim) == 1:
            raise ValueError(
                "X must be a 2-D array (n_clips, n_samples) or a list of clips, got a 1-D array. Reshape "
                "your data: wrap a single waveform as [wav] or wav[None, :]"
            )
        dtype = None if np.issubdtype(getattr(X, "dtype", np.float64), np.integer) else np.float32
        if reset:
            X = validate_data(estimator, X, dtype=dtype, reset=True)
            for i, row in enumerate(X):
                to_mono_float(row, name=f"X[{i}]")
        elif hasattr(estimator, "n_features_in_"):
            X = validate_data(estimator, X, dtype=dtype, reset=False)
        else:
            X = check_array(X, dtype=dtype)
        return iter(X)
    if isinstance(X, Iterable):
        if reset:
            estimator.__dict__.pop("n_features_in_", None)
        return iter(X)  # an iterator is not consumed
    raise ValueError(f"X must be an array, a list or an iterable of clips or file paths, got {type(X).__name__}")


def decode_clip(item, index: int, sample_rate: int, validate_only: bool = False) -> tuple[np.ndarray, int, str]:
    """Mono float32 waveform, its rate and a name for messages (the file, or ``X[i]``).

    Arrays are at ``sample_rate``, files at their own rate. With
    ``validate_only`` a file is checked to exist but not read.

    Examples
    --------
    >>> import numpy as np
    >>> wav, rate, name = decode_clip(np.zeros((100, 2), "int16"), 3, 16000)
    >>> wav.shape, rate, name
    ((100,), 16000, 'X[3]')
    """
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if path.is_dir():
            raise _named(ValueError(f"X[{index}]: {path} is a directory, not an audio file"), str(path))
        if not path.is_file():
            raise _named(ValueError(f"X[{index}]: audio file not found: {path}"), str(path))
        if validate_only:
            return np.zeros(1, np.float32), sample_rate, str(path)
        try:
            wav, rate = read_audio(path)
        except ValueError as exc:
            raise _named(ValueError(f"X[{index}]: {exc}"), str(path)) from exc
        return wav, rate, str(path)
    arr = np.asarray(item)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"X[{index}] must be a numeric waveform or a file path, got dtype {arr.dtype}")
    if arr.ndim != 1 and not (arr.ndim == 2 and min(arr.shape) <= 8):
        raise ValueError(f"X[{index}] must be a 1-D waveform (or samples x channels), got shape {arr.shape}")
    return to_mono_float(arr, name=f"X[{index}]"), sample_rate, f"X[{index}]"


def clip_head(wav: np.ndarray, rate: int, clip_seconds: float) -> np.ndarray:
    """The samples :func:`prepare_clip` uses: the first ``clip_seconds`` plus a 10 ms margin for the
    resampling filter, copied when shorter than ``wav`` (so a long recording's samples can be freed).

    Examples
    --------
    >>> import numpy as np
    >>> clip_head(np.ones(48000, "float32"), 16000, 1.0).shape
    (16160,)
    """
    keep = int(math.ceil(clip_seconds * rate)) + rate // 100
    return wav[:keep].copy() if len(wav) > keep else wav


def prepare_clip(wav: np.ndarray, rate: int, *, clip_seconds: float, encoder_rate: int, n_samples: int) -> np.ndarray:
    """Crop or zero-pad one clip to ``n_samples`` at ``encoder_rate``, resampling it from ``rate``.

    Examples
    --------
    >>> import numpy as np
    >>> prepare_clip(np.ones(48000, "float32"), 48000, clip_seconds=0.5, encoder_rate=16000, n_samples=8000).shape
    (8000,)
    """
    # Crop before resampling (with a margin for the filter) so long files cost little.
    wav = resample(clip_head(wav, rate, clip_seconds), rate, encoder_rate)
    return fix_length(np.asarray(wav, dtype=np.float32), n_samples)
