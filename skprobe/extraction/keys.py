"""Clip keys: what identifies a clip in the token store (:mod:`skprobe.extraction.store`).

The store's configuration key hashes everything that changes the tokens
(encoder, weights hash, layers, input sample rate, clip length, compute dtype,
package version); the clip key hashes the clip's samples and their sample rate.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["clip_key"]


def clip_key(wav: np.ndarray, sample_rate: int | None = None) -> str:
    """SHA-256 of a mono float32 waveform's samples, its length and its sample rate.

    The rate matters: the same samples read from files of different rates are
    different sounds.

    Examples
    --------
    >>> import numpy as np
    >>> len(clip_key(np.zeros(10, dtype="float32"), 16000))
    64
    """
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    digest = hashlib.sha256(f"{wav.shape[0]}@{sample_rate}".encode())
    digest.update(wav)  # the buffer itself: no copy
    return digest.hexdigest()
