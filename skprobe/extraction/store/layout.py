"""The store's folder: file names, the configuration key, the public description, index coverage."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["StoreDescription", "StoreError", "config_key", "KEY_FORMAT"]

#: Format number hashed into every configuration key. It stays 3 (the sharded store) so that stores written
#: before the compacted index keep their folder; the index format is told apart file by file instead.
KEY_FORMAT = 3

#: ``index/<shard>.<n>.npy``: one committed batch (a segment). ``<shard>`` is ``<writer id>-<shard number>``.
SEGMENT_NAME = re.compile(r"^(?P<shard>\d{14}-[0-9a-f]{12}-\d{4})\.(?P<number>\d{8})\.npy$")
#: ``index/<name>.run``: a sorted run, the compacted index of many segments.
RUN_NAME = re.compile(r"^(?P<name>\d{14}-[0-9a-f]{16})\.run$")

#: Records of a segment written by this version: the check value is the CRC-32 of the row's bytes followed
#: by the key, so a key moved to another record is detected as well as a damaged row.
SEGMENT_DTYPE = np.dtype([("key", "S32"), ("row", "<i8"), ("check", "<u4")])
#: Segments of stores written before the compacted index (format 3): the CRC-32 covers the row only.
LEGACY_SEGMENT_DTYPE = np.dtype([("key", "S32"), ("row", "<i8"), ("crc", "<u4")])


class StoreError(OSError):
    """A token store cannot be read or written; the message names the folder, the file and the problem."""


def config_key(config: Mapping[str, object]) -> str:
    """Short hash of a configuration (order of the mapping does not matter).

    Examples
    --------
    >>> config_key({"a": 1, "b": 2}) == config_key({"b": 2, "a": 1})
    True
    """
    payload = json.dumps({"format": KEY_FORMAT, **config}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class StoreDescription:
    """What identifies a token store: everything needed to open it in another process.

    A few hundred bytes that pickle anywhere (Dask workers return it to the
    driver; a :class:`~skprobe.extraction.store.StoreArray` pickles as it plus
    its clip keys).

    Parameters
    ----------
    root : str
        Store root; the store's folder is ``root/<config key>``.
    config : dict
        Everything that changes the tokens (JSON-serialisable).
    row_shape : tuple of int
        Shape of one clip's tokens.
    dtype : str
        ``"float16"`` or ``"float32"``.

    Examples
    --------
    >>> import tempfile
    >>> from skprobe.extraction.store import TokenStore
    >>> store = TokenStore(tempfile.mkdtemp(), {"encoder": "demo"}, row_shape=(1, 4, 3))
    >>> description = store.description
    >>> description.row_shape, description.dtype
    ((1, 4, 3), 'float16')
    >>> description.open().folder == store.folder
    True
    """

    root: str
    config: dict = field(hash=False)
    row_shape: tuple
    dtype: str = "float16"

    def open(self, **kwargs):
        """The :class:`~skprobe.extraction.store.TokenStore` described (``kwargs``: e.g. ``verify``)."""
        from .tokenstore import TokenStore

        return TokenStore(self.root, self.config, self.row_shape, dtype=self.dtype, **kwargs)

    def __iter__(self):  # unpacks as the (root, config, row_shape, dtype) tuple of earlier versions
        return iter((self.root, self.config, self.row_shape, self.dtype))


def key_bytes(keys) -> np.ndarray:
    """Clip keys as an ``S32`` array of digests (hex strings are converted; an ``S32`` array is kept)."""
    if isinstance(keys, np.ndarray) and keys.dtype == "S32":
        return keys
    return np.array([bytes.fromhex(k) for k in keys], dtype="S32").reshape(-1)


def read_meta(folder: Path) -> dict:
    """The parsed ``store.json`` of a store folder (StoreError naming it when missing or unreadable)."""
    meta_file = Path(folder) / "store.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise StoreError(f"{folder} is not a token store folder (no store.json)") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"token store {folder}: unreadable store.json ({exc})") from exc
    if not isinstance(meta, dict) or not {"config", "row_shape", "dtype"} <= meta.keys():
        raise StoreError(f"token store {folder}: store.json lacks config, row_shape or dtype")
    return meta


def shard_of_segment(name: str) -> tuple[str, int] | None:
    """``(shard, number)`` of a segment file name, or None."""
    match = SEGMENT_NAME.match(name)
    return (match["shard"], int(match["number"])) if match else None


def is_hidden(name: str) -> bool:
    """Temporary files of :func:`~skprobe._files.atomic_write` and NFS's ``.nfs*`` files start with a dot."""
    return name.startswith(".")


def listdir(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


# -- coverage: which segments a sorted run holds --------------------------------------------------
# A run records, per shard, the intervals [lo, hi) of the segment numbers whose records it holds. A
# segment covered by a run that is present is never read again; a run covered by the others is dropped.

Coverage = dict  # shard name -> list of [lo, hi) intervals, sorted and disjoint


def _merge_intervals(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def cover_union(*covers: Coverage) -> Coverage:
    shards: dict[str, list] = {}
    for cover in covers:
        for shard, intervals in cover.items():
            shards.setdefault(shard, []).extend(tuple(i) for i in intervals)
    return {shard: _merge_intervals(intervals) for shard, intervals in shards.items()}


def cover_segments(segments: Iterable[tuple[str, int]]) -> Coverage:
    return cover_union(*({shard: [(k, k + 1)]} for shard, k in segments))


def covers(cover: Coverage, shard: str, number: int) -> bool:
    return any(lo <= number < hi for lo, hi in cover.get(shard, ()))


def cover_contains(outer: Coverage, inner: Coverage) -> bool:
    """Whether every segment of ``inner`` is in ``outer``."""
    for shard, intervals in inner.items():
        have = outer.get(shard, ())
        for lo, hi in intervals:
            if not any(a <= lo and hi <= b for a, b in have):
                return False
    return True
