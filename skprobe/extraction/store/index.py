"""The index of a token store: clip key -> (shard, row, check value), read incrementally.

The index on disk is a set of files in ``index/``: segments (one per commit,
``<shard>.<n>.npy``) and sorted runs (``<name>.run``, see :mod:`.runs`) that a
compaction wrote from many segments and older runs. Each run records which
segments it holds (its coverage), so the folder listing alone says what to
read: the runs, plus the segments no run covers. A process keeps

* the runs it opened (footers only: about 1.4 bytes per record), and
* a small sorted table of the uncovered segments' records (the memtable),

and on :meth:`StoreIndex.refresh` lists the folder and reads only what is new:
new segments go into the memtable; a new run replaces the runs and segments it
covers. The cost of a refresh is proportional to what changed plus the number
of files in the folder, which compaction keeps small.

Writers and compactions never modify a file: a compaction writes its run
before it deletes the files the run covers, so a listing taken at any moment
finds every record (a file that vanishes between the listing and its reading
makes the refresh list again). Lookups read an immutable snapshot, so reader
threads may look keys up while another thread refreshes.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
import weakref
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .layout import (
    LEGACY_SEGMENT_DTYPE,
    RUN_NAME,
    SEGMENT_DTYPE,
    StoreError,
    cover_contains,
    cover_union,
    covers,
    is_hidden,
    listdir,
    shard_of_segment,
)
from .runs import Run, bloom_hashes

__all__ = ["StoreIndex", "TokenIndex", "Located", "row_checks"]

_ATTEMPTS = 50
_INDEXES: weakref.WeakSet = weakref.WeakSet()


def _reset_locks_after_fork() -> None:  # a lock a thread held at fork time would stay held in the child
    for index in list(_INDEXES):
        index._lock = threading.RLock()


os.register_at_fork(after_in_child=_reset_locks_after_fork)


class TokenIndex(Protocol):
    """What :class:`~skprobe.extraction.store.TokenStore` needs from an index backend.

    :class:`StoreIndex` (segments and sorted runs in the store folder) is the
    one implementation; another backend (a database, an object store) would
    provide these methods.
    """

    shards: list

    def refresh(self) -> None: ...

    def locate(self, keys: np.ndarray) -> Located: ...

    def add_segment(self, name: str, records: np.ndarray) -> None: ...

    def __len__(self) -> int: ...


def row_checks(rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Check values of rows: CRC-32 of each row's bytes followed by its 32-byte key."""
    raw = np.ascontiguousarray(keys, dtype="S32").tobytes()
    return np.array([zlib.crc32(raw[32 * i: 32 * i + 32], zlib.crc32(row)) for i, row in enumerate(rows)],
                    dtype=np.uint32)


def _legacy_checks(keys: np.ndarray, crcs: np.ndarray) -> np.ndarray:
    """Check values of format-3 records, whose CRC-32 covers the row only (CRC-32 extends over the key)."""
    raw = np.ascontiguousarray(keys, dtype="S32").tobytes()
    return np.array([zlib.crc32(raw[32 * i: 32 * i + 32], int(c)) for i, c in enumerate(crcs)], dtype=np.uint32)


@dataclass
class Located:
    """Where keys are: ``found`` (bool), ``shard`` (index into the index's ``shards``), ``row``, ``check``."""

    found: np.ndarray
    shard: np.ndarray
    row: np.ndarray
    check: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Located:
        return cls(np.zeros(n, bool), np.zeros(n, np.int32), np.zeros(n, np.int64), np.zeros(n, np.uint32))


@dataclass(frozen=True)
class _Segment:
    name: str
    shard: str
    number: int
    serial: int
    rows: int


@dataclass(frozen=True)
class View:
    """An immutable snapshot of the index: open runs and the memtable of uncovered segments."""

    runs: tuple = ()
    segments: tuple = ()  # _Segment of each segment in the memtable
    keys: np.ndarray = field(default_factory=lambda: np.empty(0, "S32"))
    shard: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    row: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    check: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint32))
    serial: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # segment of each record

    def __len__(self) -> int:
        return len(self.keys) + sum(run.n for run in self.runs)


class _Changed(Exception):
    """The folder changed while it was read: list it again."""


class StoreIndex:
    """The index of one store folder as this process last read it."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.dir = self.folder / "index"
        self.shards: list[str] = []
        self._shard_ids: dict[str, int] = {}
        self._runs: dict[str, Run] = {}
        self._listing: frozenset = frozenset()
        self.view = View()
        self.redundant: set[str] = set()  # files whose records a larger run holds (a compaction was interrupted)
        self._lock = threading.RLock()
        self._serials = itertools.count()
        _INDEXES.add(self)

    def shard_id(self, name: str) -> int:
        sid = self._shard_ids.get(name)
        if sid is None:
            sid = self._shard_ids[name] = len(self.shards)
            self.shards.append(name)
        return sid

    def __len__(self) -> int:
        return len(self.view)

    # -- reading the folder ---------------------------------------------------------------------
    def refresh(self) -> None:
        """Read what was committed or compacted since the last look (by any process)."""
        with self._lock:
            for _ in range(_ATTEMPTS):
                listing = frozenset(name for name in listdir(self.dir) if not is_hidden(name))
                if listing == self._listing:
                    return
                try:
                    self._update(listing)
                except _Changed:
                    continue
                self._listing = listing
                return
        raise StoreError(f"token store {self.folder}: the index folder kept changing while it was read "
                         f"({_ATTEMPTS} attempts), or a file of it was deleted by hand")

    def _stray(self, name: str) -> StoreError:
        return StoreError(f"token store {self.folder}: {self.dir / name} is not a file of the store's index (a "
                          "stray file in its index folder); move it away")

    def _update(self, listing: frozenset) -> None:
        runs_listed, segments_listed = set(), {}
        for name in listing:
            if name.endswith(".run"):
                if not RUN_NAME.match(name):
                    raise self._stray(name)
                runs_listed.add(name)
            elif name.endswith(".npy"):
                parsed = shard_of_segment(name)
                if parsed is None:
                    raise self._stray(name)
                segments_listed[name] = parsed
        opened = {}
        for name in sorted(runs_listed - self._runs.keys()):
            try:
                opened[name] = Run(self.dir / name)
            except FileNotFoundError:
                raise _Changed from None
        candidates = {**{n: r for n, r in self._runs.items() if n in runs_listed}, **opened}
        kept, cover, redundant = [], {}, set()
        for run in sorted(candidates.values(), key=lambda r: (-r.n, r.name)):
            if cover_contains(cover, run.coverage):
                redundant.add(run.name)  # every record is in a larger run too
                continue
            kept.append(run)
            cover = cover_union(cover, run.coverage)
        for name, run in self._runs.items():
            if name not in runs_listed and not cover_contains(cover, run.coverage):
                raise _Changed  # a run was replaced by one this listing missed
        view = self.view
        held = {seg.name: seg for seg in view.segments}
        for name, seg in held.items():
            if name not in segments_listed and not covers(cover, seg.shard, seg.number):
                raise _Changed  # compacted into a run this listing missed
        needed = {name for name, (shard, k) in segments_listed.items() if not covers(cover, shard, k)}
        redundant |= segments_listed.keys() - needed  # segments a run holds (left by an interrupted compaction)
        new_records = []
        for name in sorted(needed - held.keys()):
            try:
                new_records.append((name, self._read_segment(name)))
            except FileNotFoundError:
                raise _Changed from None
        for run in opened.values():
            run.global_shards = np.array([self.shard_id(s) for s in run.shards], dtype=np.int32)
        dropped = {held[name].serial for name in held if name not in needed}
        self._runs = {run.name: run for run in kept}
        self.redundant = redundant
        self.view = self._with_segments(view, tuple(kept), dropped, new_records)

    def _read_segment(self, name: str) -> np.ndarray:
        path = self.dir / name
        try:
            records = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise
        except (OSError, ValueError, EOFError) as exc:
            raise StoreError(f"token store {self.folder}: index segment {path} is unreadable ({exc}); delete "
                             "it to recompute the clips of that batch") from exc
        if records.ndim != 1 or records.dtype not in (SEGMENT_DTYPE, LEGACY_SEGMENT_DTYPE):
            raise StoreError(f"token store {self.folder}: {path} is not an index segment (an array of "
                             f"{records.dtype} and shape {records.shape}); move it out of the index folder")
        if records.dtype == LEGACY_SEGMENT_DTYPE:
            out = np.empty(len(records), SEGMENT_DTYPE)
            out["key"], out["row"] = records["key"], records["row"]
            out["check"] = _legacy_checks(records["key"], records["crc"])
            records = out
        if len(records) and (records["row"] < 0).any():
            raise StoreError(f"token store {self.folder}: index segment {path} holds a negative row number")
        return records

    def _with_segments(self, view: View, runs: tuple, dropped: set, new: list) -> View:
        """A new view: segments ``dropped`` (serial numbers) removed, ``new`` ``(name, records)`` inserted."""
        keys, shard, row, check, serial = view.keys, view.shard, view.row, view.check, view.serial
        segments = tuple(seg for seg in view.segments if seg.serial not in dropped)
        if dropped:
            keep = ~np.isin(serial, np.fromiter(dropped, np.int64))
            keys, shard, row, check, serial = keys[keep], shard[keep], row[keep], check[keep], serial[keep]
        for name, records in new:
            shard_name, number = shard_of_segment(name)
            seg = _Segment(name, shard_name, number, next(self._serials), len(records))
            segments += (seg,)
            order = np.argsort(records["key"], kind="stable")
            records = records[order]
            at = np.searchsorted(keys, records["key"])
            keys = np.insert(keys, at, records["key"])
            shard = np.insert(shard, at, np.full(len(records), self.shard_id(shard_name), np.int32))
            row = np.insert(row, at, records["row"])
            check = np.insert(check, at, records["check"])
            serial = np.insert(serial, at, np.full(len(records), seg.serial, np.int64))
        return View(runs, segments, keys, shard, row, check, serial)

    def add_segment(self, name: str, records: np.ndarray) -> None:
        """Add a segment this process has just written (no listing needed)."""
        with self._lock:
            if any(seg.name == name for seg in self.view.segments):
                return
            self.view = self._with_segments(self.view, self.view.runs, set(), [(name, records)])
            # if nothing else changed, the next listing is the last one plus this segment: nothing to read
            self._listing = self._listing | {name}

    # -- lookups --------------------------------------------------------------------------------
    def locate(self, keys: np.ndarray) -> Located:
        """Where each key (``S32`` array) is, in the snapshot last read (no listing)."""
        try:
            return self._locate(keys)
        except StoreError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ESTALE, errno.EBADF):
                raise
            self._listing = frozenset()  # a run was deleted under us (NFS): list again
            self.refresh()
            return self._locate(keys)

    def _locate(self, keys: np.ndarray) -> Located:
        view = self.view
        out = Located.empty(len(keys))
        if len(view.keys):
            pos = np.searchsorted(view.keys, keys).clip(0, len(view.keys) - 1)
            hit = view.keys[pos] == keys
            pos = pos[hit]
            out.found[hit], out.shard[hit], out.row[hit], out.check[hit] = (
                True, view.shard[pos], view.row[pos], view.check[pos])
        rest = np.flatnonzero(~out.found)
        if not len(rest) or not view.runs:
            return out
        h1, h2 = bloom_hashes(keys[rest])
        columns = {"found": out.found, "shard": out.shard, "row": out.row, "check": out.check}
        for run in view.runs:
            run.lookup(keys, rest[run.may_contain(h1, h2)], columns)
            left = ~out.found[rest]
            if not left.any():
                break
            rest, h1, h2 = rest[left], h1[left], h2[left]
        return out


def scan_records(folder: Path) -> np.ndarray:
    """Every record in the index files of a store folder as they are now (duplicates included).

    For checks and debugging: fields ``key``, ``shard`` (name) and ``row``; a
    segment covered by a run is read as well as the run (compaction deletes it).
    """
    folder = Path(folder)
    dtype = np.dtype([("key", "S32"), ("shard", "U64"), ("row", "<i8")])
    parts = []
    for name in sorted(listdir(folder / "index")):
        if name.endswith(".run") and not is_hidden(name):
            run = Run(folder / "index" / name)
            for keys, shard, row, _ in run.chunks():
                part = np.empty(len(keys), dtype)
                part["key"], part["shard"], part["row"] = keys, np.asarray(run.shards)[shard], row
                parts.append(part)
        elif name.endswith(".npy") and not is_hidden(name):
            records = np.load(folder / "index" / name, allow_pickle=False)
            part = np.empty(len(records), dtype)
            part["key"], part["shard"], part["row"] = records["key"], shard_of_segment(name)[0], records["row"]
            parts.append(part)
    return np.concatenate(parts) if parts else np.empty(0, dtype)
