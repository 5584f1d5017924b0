"""The signed probe cache: a fitted probe is stored under a key of its tokens, labels and parameters."""

from __future__ import annotations

import hashlib
import time
import warnings

import numpy as np

from .._config import data_home
from .._signed import UntrustedFileError, dump_signed, load_signed
from ..extraction.store import StoreArray

__all__ = ["digest", "fit_or_load"]


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        if isinstance(a, StoreArray):  # store-backed tokens: the store's configuration and the clips' keys
            h.update(a.store_id.encode())
            h.update(a.keys.tobytes())
        else:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:20]


def fit_or_load(probe, X, Y, key: str, refit: bool):
    """Fit ``probe`` (or load it from the probe cache); returns (probe, fit seconds).

    Cache files are signed (:mod:`skprobe._signed`): one that does not match
    its signature is not unpickled but refitted and rewritten, with a warning.
    Writes are atomic with unique temporary names, so concurrent runs sharing
    a data home each see a complete file.
    """
    path = data_home() / "probes" / f"{key}.joblib"
    if path.is_file() and not refit:
        try:
            stored = load_signed(path)
            return stored["probe"], stored["fit_seconds"]
        except UntrustedFileError as exc:
            warnings.warn(f"probe cache: {exc}; fitting again", UserWarning, stacklevel=2)
    start = time.perf_counter()
    probe.fit(X, Y)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    dump_signed({"probe": probe, "fit_seconds": seconds}, path)
    return probe, seconds
