"""Atomic on-disk cache of built data sets: a compressed ``.npz`` plus JSON metadata."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .._config import data_home


def data_dir() -> Path:
    """``<data home>/data``, where built data sets are cached."""
    return data_home() / "data"


def cache_key(params: dict[str, Any]) -> str:
    """Short hash of JSON-serialisable parameters (key order does not matter)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def save(stem: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write ``<stem>.npz`` then ``<stem>.json``, each through a temporary file and a rename.

    The JSON file is written last, so its presence means the pair is complete.
    """
    stem.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(stem.with_suffix(".npz"), lambda f: np.savez_compressed(f, **arrays))
    _atomic_write(stem.with_suffix(".json"), lambda f: f.write(json.dumps(meta).encode()))


def load(stem: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The cached pair, or None when absent or unreadable."""
    npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
    if not (npz.is_file() and js.is_file()):
        return None
    try:
        meta = json.loads(js.read_text())
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, KeyError):
        return None
    return arrays, meta


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
