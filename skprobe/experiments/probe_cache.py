"""The signed probe cache: a fitted probe is stored under a key of its tokens, labels and parameters."""

from __future__ import annotations

import functools
import hashlib
import time
import warnings
from pathlib import Path

import numpy as np

from .._config import data_home
from .._signed import UntrustedFileError, dump_signed, load_signed
from ..extraction.store import StoreArray

__all__ = ["digest", "fit_or_load", "probe_code_fingerprint"]


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


@functools.lru_cache(maxsize=1)
def probe_code_fingerprint() -> str:
    """Digest of the code that fits a probe: skprobe's version, torch's, and the source of ``skprobe.probes``.

    Part of every probe cache key, so that a fit cached by other probe code
    (a development checkout between releases keeps one version string) is
    not loaded as if it came from this one.

    >>> len(probe_code_fingerprint())
    20
    """
    import torch

    from .. import probes
    from .._version import __version__

    h = hashlib.sha256(f"{__version__} {torch.__version__}".encode())
    root = Path(probes.__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


def fit_or_load(probe, X, Y, key: str, refit: bool, groups=None):
    """Fit ``probe`` (or load it from the probe cache); returns (probe, fit seconds).

    ``groups`` go to ``fit`` when given (``key`` must then depend on them).

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
    probe.fit(X, Y) if groups is None else probe.fit(X, Y, groups=groups)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    dump_signed({"probe": probe, "fit_seconds": seconds}, path)
    return probe, seconds
