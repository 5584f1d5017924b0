"""The token store: sharded float16 rows memory-mapped on read, an index compacted as it grows.

One folder per extraction configuration, ``<root>/<config key>/``::

    store.json                configuration, row shape and dtype (written once, atomically)
    lock                      advisory lock (``flock``) held only while committing or claiming
    compact.lock              held by the one compaction running (others skip or wait)
    shards/<writer>.bin       raw rows, appended by exactly one writer each
    index/<shard>.<n>.npy     a segment: (clip key, row, check value) of one committed batch
    index/<name>.run          a sorted run: the records of many segments, compacted (:mod:`.runs`)
    claims/<writer>.json      clip keys a live writer is computing now (:mod:`.claims`)
    claims/<writer>.lock      locked by that writer while it lives

A commit appends a batch's rows to the writer's own shard, fsyncs it, then
writes one small segment atomically while holding the lock. A row exists for
readers only once its segment does, so a process killed at any point loses at
most its in-flight batch, and a rerun resumes. Writers never share a file:
several processes (on one machine or on a shared filesystem whose ``flock``
works across hosts, as Linux NFS does) can fill one store at once. Under the
lock a writer reads the index changes before appending, so a clip is never
stored twice; claims let concurrent writers skip clips another live writer is
computing. Compaction (:mod:`.compaction`) merges segments and small runs into
few sorted runs, in the background of writers, on ``close`` and with
:meth:`TokenStore.compact` (``skprobe store compact``), so a commit costs the
same at any store size and a fresh reader opens a store of millions of rows
by reading a few footers (:mod:`.index`).

Modules: :mod:`.layout` (names, configuration key, :class:`StoreDescription`),
:mod:`.tokenstore` (:class:`TokenStore`), :mod:`.writer`
(:class:`StoreWriter`), :mod:`.index` (the index and the
:class:`~.index.TokenIndex` protocol a second backend would implement),
:mod:`.runs`, :mod:`.compaction`, :mod:`.claims`, :mod:`.array`
(:class:`StoreArray`).
"""

from .array import StoreArray
from .compaction import CompactionPolicy, CompactionReport
from .layout import KEY_FORMAT, StoreDescription, StoreError, config_key
from .tokenstore import TokenStore
from .writer import StoreWriter

FORMAT_VERSION = KEY_FORMAT  # the name earlier versions exported

__all__ = ["TokenStore", "StoreWriter", "StoreArray", "StoreError", "StoreDescription", "CompactionPolicy",
           "CompactionReport", "config_key"]
