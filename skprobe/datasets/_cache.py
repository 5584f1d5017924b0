"""Atomic on-disk cache of built data sets: a compressed ``.npz`` plus JSON metadata."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .._config import data_home
from .._files import atomic_write


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
    atomic_write(stem.with_suffix(".npz"), lambda f: np.savez_compressed(f, **arrays))
    atomic_write(stem.with_suffix(".json"), lambda f: f.write(json.dumps(meta).encode()))


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
