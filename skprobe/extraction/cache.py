"""Content-addressed, per-clip token cache on disk.

One ``.npy`` file per clip under ``<root>/<config key>/<ab>/<clip key>.npy``.
The config key hashes everything that changes the tokens (encoder, checkpoint
hash, layers, input sample rate, clip length, compute dtype, package version);
the clip key hashes the clip's samples and their sample rate. Files are
written to a temporary name and renamed, so an interrupted extraction leaves
only complete entries and resumes where it stopped. Tokens are stored as
float16 unless a value would overflow float16, in which case that clip is
stored as float32.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._files import atomic_write

__all__ = ["TokenCache", "clip_key"]

_FLOAT16_MAX = float(np.finfo(np.float16).max)
FORMAT_VERSION = 2  # 2: clip keys include the sample rate


def clip_key(wav: np.ndarray, sample_rate: int | None = None) -> str:
    """SHA-256 of a mono float32 waveform's samples, its length and its sample rate.

    The rate matters: the same samples read from files of different rates are
    different sounds.
    """
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    digest = hashlib.sha256(f"{wav.shape[0]}@{sample_rate}".encode())
    digest.update(wav.tobytes())
    return digest.hexdigest()


class TokenCache:
    """Per-clip token store for one extraction configuration.

    Parameters
    ----------
    root : path-like
        Cache folder (created on first write).
    config : mapping
        JSON-serialisable description of everything that changes the tokens.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> cache = TokenCache(tempfile.mkdtemp(), {"encoder": "demo"})
    >>> key = clip_key(np.zeros(10, dtype="float32"))
    >>> cache.get(key) is None
    True
    >>> stored = cache.put(key, np.ones((4, 3), dtype="float32"))
    >>> cache.get(key).shape, stored.dtype
    ((4, 3), dtype('float16'))
    """

    def __init__(self, root: str | os.PathLike, config: Mapping[str, object]) -> None:
        payload = json.dumps({"format": FORMAT_VERSION, **config}, sort_keys=True, default=str)
        self.config_key = hashlib.sha256(payload.encode()).hexdigest()[:24]
        self.root = Path(root).expanduser()
        self.folder = self.root / self.config_key
        self._payload = payload

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """Stored tokens of a clip, or None when absent."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(
                f"token cache entry {path} is unreadable ({exc}); delete it to recompute the clip"
            ) from exc

    def put(self, key: str, tokens: np.ndarray) -> np.ndarray:
        """Store a clip's tokens atomically (float16 unless that would overflow).

        Returns the stored array, i.e. what a later :meth:`get` returns.
        """
        if not np.isfinite(tokens).all():
            raise ValueError("refusing to cache tokens with NaN or infinite values")
        store = tokens.astype(np.float16) if np.abs(tokens).max(initial=0.0) < _FLOAT16_MAX else tokens
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        config_file = self.folder / "config.json"
        if not config_file.exists():
            atomic_write(config_file, lambda fh: fh.write(self._payload.encode()))
        atomic_write(path, lambda fh: np.save(fh, store, allow_pickle=False))
        return store

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*/*.npy")) if self.folder.is_dir() else 0
