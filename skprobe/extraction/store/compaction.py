"""Compaction: many index segments and small runs merged into few sorted runs.

A compaction step reads some segments or runs, writes their records as one new
run (atomically: a reader sees the run complete or not at all), then deletes
the files the run covers. Between the two, readers find the records twice,
which the coverage check resolves; after a crash between the two, the next
compaction deletes the covered files. No step changes or deletes a record, so
compaction is safe while writers commit and readers read, on one machine or
several; a lock (``compact.lock``) only keeps two compactions from doing the
same work.

Writers compact as they go, in a background thread (:class:`CompactionPolicy`):
the uncommitted segments become a run once there are ``segments`` of them, and
runs of similar size are merged ``fanout`` at a time (size-tiered, as
log-structured stores do), so a store of n rows has O(log n) runs and each row
is rewritten O(log n) times in all.
"""

from __future__ import annotations

import fcntl
import math
import os
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..._files import atomic_write
from .index import StoreIndex, View
from .layout import StoreError, cover_segments, cover_union, is_hidden, listdir
from .runs import Run, RunBuilder, merge_sorted, sort_records

__all__ = ["CompactionPolicy", "CompactionReport", "compact", "needs_compaction"]

_STALE_TEMP_SECONDS = 3600.0  # temporary files of writers or compactions killed mid-write
_SEGMENT_GROUP_ROWS = 1 << 18  # records per run made from segments (bounds a compaction's memory)
_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _reset_after_fork() -> None:  # a lock held by a thread at fork time would stay held in the child
    global _PROCESS_LOCKS_GUARD
    _PROCESS_LOCKS.clear()
    _PROCESS_LOCKS_GUARD = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


@dataclass(frozen=True)
class CompactionPolicy:
    """When writers compact the index of a store.

    Parameters
    ----------
    segments : int, default=64
        Uncompacted segments (one per commit) that start a compaction.
    segment_rows : int, default=65536
        Or that many records in uncompacted segments.
    fanout : int, default=4
        Runs of one size tier merged at a time (tier: ``floor(log_fanout(rows / base_rows))``).
    base_rows : int, default=1024
        Rows of the smallest tier.
    on_close : bool, default=True
        A writer's ``close`` also turns the remaining segments into a run.

    Examples
    --------
    >>> policy = CompactionPolicy()
    >>> [policy.tier(rows) for rows in (1_000, 4_096, 65_536, 2_000_000)]
    [0, 1, 3, 5]
    >>> from skprobe.extraction.store import TokenStore
    >>> TokenStore.compaction == policy  # what writers use unless a store says otherwise
    True
    """

    segments: int = 64
    segment_rows: int = 1 << 16
    fanout: int = 4
    base_rows: int = 1024
    on_close: bool = True

    def tier(self, rows: int) -> int:
        return 0 if rows < self.base_rows * self.fanout else int(math.log(rows / self.base_rows, self.fanout))


@dataclass
class CompactionReport:
    """What a compaction did: index files before and after, runs written, records rewritten, seconds."""

    files_before: int = 0
    files_after: int = 0
    runs_written: int = 0
    records_written: int = 0
    seconds: float = 0.0


def needs_compaction(view: View, policy: CompactionPolicy) -> bool:
    if len(view.segments) >= policy.segments or len(view.keys) >= policy.segment_rows:
        return True
    return _tier_to_merge(view.runs, policy) is not None


def _tier_to_merge(runs, policy: CompactionPolicy) -> list | None:
    tiers: dict[int, list] = {}
    for run in runs:
        tiers.setdefault(policy.tier(run.n), []).append(run)
    for tier in sorted(tiers):
        if len(tiers[tier]) >= policy.fanout:
            return tiers[tier]
    return None


@contextmanager
def _compaction_lock(folder: Path, wait: bool):
    """Held by one compaction of a store at a time (threads of this process included); yields False if busy."""
    with _PROCESS_LOCKS_GUARD:
        local = _PROCESS_LOCKS.setdefault(str(folder), threading.Lock())
    if not local.acquire(blocking=wait):
        yield False
        return
    try:
        with open(folder / "compact.lock", "a+b") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        local.release()


def _run_name() -> str:
    return f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:16]}.run"


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _write_run(index: StoreIndex, shards: list[str], coverage: dict, n_max: int, fill) -> int:
    """Write a run atomically; ``fill(builder)`` adds the records. Returns the records written."""
    path = index.dir / _run_name()
    written = {}

    def build(fh):
        builder = RunBuilder(fh, shards, coverage, n_max)
        fill(builder)
        builder.finish()
        written["n"] = builder.n

    atomic_write(path, build)
    return written["n"]


def _segments_to_runs(index: StoreIndex, view: View, report: CompactionReport) -> None:
    """Turn the segments of ``view`` into runs of at most ``_SEGMENT_GROUP_ROWS`` records each."""
    groups, group, rows = [], [], 0
    for seg in sorted(view.segments, key=lambda s: (s.shard, s.number)):
        if group and rows + seg.rows > _SEGMENT_GROUP_ROWS:
            groups.append(group)
            group, rows = [], 0
        group.append(seg)
        rows += seg.rows
    if group:
        groups.append(group)
    for group in groups:
        mask = np.isin(view.serial, np.array([seg.serial for seg in group], np.int64))
        used = np.unique(view.shard[mask])
        local = np.full(max(len(index.shards), 1), -1, np.int64)
        local[used] = np.arange(len(used))
        records = sort_records(view.keys[mask], local[view.shard[mask]], view.row[mask], view.check[mask])
        coverage = cover_segments((seg.shard, seg.number) for seg in group)
        n = _write_run(index, [index.shards[i] for i in used], coverage, len(records[0]),
                       lambda builder, records=records: builder.add(*records))
        report.runs_written += 1
        report.records_written += n
        for seg in group:
            _unlink(index.dir / seg.name)


def _merge_runs(index: StoreIndex, runs: list[Run], report: CompactionReport) -> None:
    shards = sorted({s for run in runs for s in run.shards})
    position = {s: i for i, s in enumerate(shards)}

    def stream(run):
        local = np.array([position[s] for s in run.shards], dtype=np.int64)
        for keys, shard, row, check in run.chunks():
            yield keys, local[shard], row, check

    coverage = cover_union(*(run.coverage for run in runs))
    n = _write_run(index, shards, coverage, sum(run.n for run in runs),
                   lambda builder: merge_sorted([stream(run) for run in runs], builder))
    report.runs_written += 1
    report.records_written += n
    for run in runs:
        _unlink(index.dir / run.name)


def _collect_garbage(index: StoreIndex) -> None:
    """Delete files whose records a larger run holds and temporary files left by killed processes."""
    for name in index.redundant:
        _unlink(index.dir / name)
    now = time.time()
    for name in listdir(index.dir):
        if is_hidden(name) and name.endswith(".tmp"):
            try:
                if now - (index.dir / name).stat().st_mtime > _STALE_TEMP_SECONDS:
                    _unlink(index.dir / name)
            except FileNotFoundError:
                pass


def compact(index: StoreIndex, policy: CompactionPolicy, *, full: bool = False, wait: bool = True,
            force_segments: bool = False) -> CompactionReport | None:
    """Compact the index of the store folder of ``index``.

    ``full``: merge everything into one run. Otherwise segments become a run
    when the policy says so (or with ``force_segments``), then size tiers are
    merged. ``wait=False`` returns None at once when another compaction runs.
    """
    start = time.perf_counter()
    folder = index.folder
    with _compaction_lock(folder, wait) as got:
        if not got:
            return None
        try:
            index.refresh()
            report = CompactionReport(files_before=_count(index))
            view = index.view
            if view.segments and (full or force_segments or len(view.segments) >= policy.segments
                                  or len(view.keys) >= policy.segment_rows):
                _segments_to_runs(index, view, report)
                index.refresh()
            while True:
                runs = list(index.view.runs)
                group = (runs if len(runs) > 1 else None) if full else _tier_to_merge(runs, policy)
                if not group:
                    break
                _merge_runs(index, group, report)
                index.refresh()
            _collect_garbage(index)
        except StoreError:
            raise
        except OSError as exc:
            raise StoreError(f"cannot compact token store {folder}: {exc.strerror or exc}; the store is "
                             "unchanged and readable") from exc
        index.refresh()
        report.files_after = _count(index)
        report.seconds = time.perf_counter() - start
        return report


def _count(index: StoreIndex) -> int:
    return sum(1 for name in listdir(index.dir) if not is_hidden(name))
