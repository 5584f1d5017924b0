"""Sorted runs: the compacted index files of a token store, ``index/<name>.run``.

A run holds the records (clip key, shard, row, check value) of many committed
batches, sorted by key, in blocks of :data:`BLOCK` records::

    block 0 .. block B-1   per block: keys (32 B each) | shard (u4) | row (u4) | check (u4)
    footer                 JSON header (count, shard names, coverage) | first key of every block
                           | CRC-32 of every block | Bloom filter of the keys
    trailer (24 bytes)     magic | footer length | CRC-32 of the footer

Opening a run reads only its footer (about 1.4 bytes per record); a lookup
tests the Bloom filter, finds the block from the first keys and reads that
block (about 11 kB) with ``pread``, checking its CRC. Nothing is memory-mapped:
a run deleted by a compaction on another host (NFS) makes a read fail with an
error the index answers by re-listing, never with a ``SIGBUS``. A truncated or
damaged run raises :class:`StoreError` naming the file.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import threading
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .layout import StoreError

__all__ = ["Run", "RunBuilder", "merge_sorted", "bloom_hashes", "BLOCK"]

MAGIC = b"SKPRUN1\x00"
BLOCK = 256  # records per block: 11 kB
RECORD_BYTES = 44
BLOOM_BITS_PER_KEY = 10
BLOOM_HASHES = 7  # about 1 % false positives at 10 bits per key
_TRAILER = struct.Struct("<8sQI4x")
_U64 = np.uint64


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def bloom_hashes(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two 64-bit hashes of each 32-byte key (double hashing gives the filter's probes)."""
    words = np.ascontiguousarray(keys, dtype="S32").view("<u8").reshape(-1, 4)
    mixed = words[:, 0] ^ (words[:, 1] * _U64(0x9E3779B97F4A7C15)) ^ (words[:, 2] * _U64(0xC2B2AE3D27D4EB4F)) \
        ^ (words[:, 3] * _U64(0x165667B19E3779F9))
    h1 = _splitmix(mixed)
    return h1, _splitmix(h1) | _U64(1)


def bloom_probes(h1: np.ndarray, h2: np.ndarray, n_bits: int) -> np.ndarray:
    """Bit positions ``(len(h1), BLOOM_HASHES)`` of each key in a filter of ``n_bits`` bits."""
    steps = np.arange(BLOOM_HASHES, dtype=_U64)
    return ((h1[:, None] + steps[None, :] * h2[:, None]) % _U64(n_bits)).astype(np.int64)


def _decode_block(data: bytes | memoryview, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    buf = np.frombuffer(data, dtype=np.uint8)
    keys = buf[: 32 * n].view("S32")
    rest = buf[32 * n:].view("<u4").reshape(3, n)
    return keys, rest[0], rest[1], rest[2]


class _BlockCache:
    """Decoded blocks of all runs of one process, least recently used dropped first (thread-safe)."""

    def __init__(self, max_blocks: int = 512) -> None:
        self.max_blocks = max_blocks
        self._blocks: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            block = self._blocks.get(key)
            if block is not None:
                self._blocks.move_to_end(key)
            return block

    def put(self, key, block) -> None:
        with self._lock:
            self._blocks[key] = block
            while len(self._blocks) > self.max_blocks:
                self._blocks.popitem(last=False)


BLOCKS = _BlockCache()
os.register_at_fork(after_in_child=lambda: BLOCKS.__init__(BLOCKS.max_blocks))  # fresh lock in a forked child
_SERIAL = itertools.count()  # cache keys: ids of freed runs recur, serial numbers do not


class Run:
    """One sorted run, opened from its footer; blocks are read on demand.

    Attributes
    ----------
    name : str
        File name (``<name>.run``).
    n : int
        Records.
    shards : list of str
        Shard names; the records' shard field indexes this list.
    coverage : dict
        Segments whose records the run holds: ``{shard: [(lo, hi), ...]}``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.serial = next(_SERIAL)
        self.global_shards = np.zeros(0, np.int32)  # set by the index: shard ids of this process
        self._fd = os.open(self.path, os.O_RDONLY)
        self._closer = weakref.finalize(self, os.close, self._fd)
        try:
            self._read_footer()
        except BaseException:
            self.close()
            raise

    def _damaged(self, what: str) -> StoreError:
        return StoreError(f"token store {self.path.parent.parent}: index run {self.path} is {what}; delete that "
                          "file to recompute the clips it indexes (or delete the store folder)")

    def _pread(self, n: int, offset: int) -> bytes:
        data = os.pread(self._fd, n, offset)
        if len(data) != n:
            raise self._damaged(f"truncated (read {len(data)} of {n} bytes at offset {offset})")
        return data

    def _read_footer(self) -> None:
        size = os.fstat(self._fd).st_size
        if size < _TRAILER.size:
            raise self._damaged(f"truncated ({size} bytes)")
        magic, footer_len, footer_crc = _TRAILER.unpack(self._pread(_TRAILER.size, size - _TRAILER.size))
        if magic != MAGIC or footer_len > size - _TRAILER.size:
            raise self._damaged("not a sorted run or truncated (bad trailer)")
        footer = self._pread(footer_len, size - _TRAILER.size - footer_len)
        if zlib.crc32(footer) != footer_crc:
            raise self._damaged("damaged (footer checksum mismatch)")
        (meta_len,) = struct.unpack_from("<I", footer)
        try:
            meta = json.loads(footer[4: 4 + meta_len])
            self.n, self.shards, self.n_bits = int(meta["n"]), list(meta["shards"]), int(meta["bloom_bits"])
            self.coverage = {s: [tuple(i) for i in iv] for s, iv in meta["coverage"].items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise self._damaged(f"damaged (header: {exc})") from exc
        self.n_blocks = -(-self.n // BLOCK)
        offset = 4 + meta_len
        self.fence = np.frombuffer(footer, dtype="S32", count=self.n_blocks, offset=offset)
        offset += 32 * self.n_blocks
        self.block_crc = np.frombuffer(footer, dtype="<u4", count=self.n_blocks, offset=offset)
        offset += 4 * self.n_blocks
        self.bloom = np.frombuffer(footer, dtype=np.uint8, offset=offset)
        if len(self.bloom) * 8 < self.n_bits or self.n * RECORD_BYTES + footer_len + _TRAILER.size != size:
            raise self._damaged(f"truncated or damaged ({size} bytes for {self.n} records)")

    def close(self) -> None:
        self._closer()

    # -- blocks ---------------------------------------------------------------------------------
    def _block_size(self, b: int) -> int:
        return min(BLOCK, self.n - b * BLOCK)

    def _check(self, b: int, data: bytes | memoryview) -> None:
        if zlib.crc32(data) != int(self.block_crc[b]):
            raise self._damaged(f"damaged (block {b} checksum mismatch)")

    def block(self, b: int):
        """``(keys, shard, row, check)`` of block ``b``, checked against its CRC-32."""
        cached = BLOCKS.get((self.serial, b))
        if cached is not None:
            return cached
        n = self._block_size(b)
        data = self._pread(n * RECORD_BYTES, b * BLOCK * RECORD_BYTES)
        self._check(b, data)
        block = _decode_block(data, n)
        BLOCKS.put((self.serial, b), block)
        return block

    def chunks(self, blocks_per_chunk: int = 16) -> Iterator[tuple[np.ndarray, ...]]:
        """All records in key order, read sequentially a few blocks at a time (for merging)."""
        for start in range(0, self.n_blocks, blocks_per_chunk):
            stop = min(self.n_blocks, start + blocks_per_chunk)
            first, last = start * BLOCK, min(self.n, stop * BLOCK)
            data = memoryview(self._pread((last - first) * RECORD_BYTES, first * RECORD_BYTES))
            parts = []
            for b in range(start, stop):
                lo = (b - start) * BLOCK * RECORD_BYTES
                part = data[lo: lo + self._block_size(b) * RECORD_BYTES]
                self._check(b, part)
                parts.append(_decode_block(part, self._block_size(b)))
            yield tuple(np.concatenate([p[i] for p in parts]) for i in range(4))

    # -- lookups --------------------------------------------------------------------------------
    def may_contain(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        bits = bloom_probes(h1, h2, self.n_bits)
        return ((self.bloom[bits >> 3] >> (bits & 7).astype(np.uint8)) & 1).all(axis=1).astype(bool)

    def lookup(self, keys: np.ndarray, candidates: np.ndarray, out: dict) -> None:
        """Fill ``out`` (arrays ``found, shard, row, check`` over ``keys``) for the ``candidates`` positions."""
        if not len(candidates) or not self.n:
            return
        blocks = np.searchsorted(self.fence, keys[candidates], side="right") - 1
        for b in np.unique(blocks):
            if b < 0:
                continue
            sel = candidates[blocks == b]
            bkeys, shard, row, check = self.block(int(b))
            pos = np.searchsorted(bkeys, keys[sel]).clip(0, len(bkeys) - 1)
            hit = bkeys[pos] == keys[sel]
            sel, pos = sel[hit], pos[hit]
            out["found"][sel] = True
            out["shard"][sel] = self.global_shards[shard[pos]]
            out["row"][sel] = row[pos]
            out["check"][sel] = check[pos]


class RunBuilder:
    """Writes a run from records given in increasing key order (memory: one block plus the Bloom filter)."""

    def __init__(self, fh, shards: Sequence[str], coverage: dict, n_max: int) -> None:
        self.fh, self.shards, self.coverage = fh, list(shards), coverage
        self.n = 0
        self.n_bits = max(64, -(-max(n_max, 1) * BLOOM_BITS_PER_KEY // 64) * 64)
        self._bits = np.zeros(self.n_bits, dtype=bool)  # packed at the end: 1 byte per bit while building
        self._fence: list[bytes] = []  # first key of every block
        self._crcs: list[int] = []
        self._pending: list[tuple[np.ndarray, ...]] = []
        self._pending_n = 0
        self._last = b""

    def add(self, keys: np.ndarray, shard: np.ndarray, row: np.ndarray, check: np.ndarray) -> None:
        if not len(keys):
            return
        self._pending.append((keys, shard, row, check))
        self._pending_n += len(keys)
        if self._pending_n >= BLOCK:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        keys, shard, row, check = (np.concatenate([p[i] for p in self._pending]) for i in range(4))
        full = len(keys) if final else len(keys) // BLOCK * BLOCK
        if full:
            self._write_blocks(keys[:full], shard[:full], row[:full], check[:full])
        self._pending = [(keys[full:], shard[full:], row[full:], check[full:])] if full < len(keys) else []
        self._pending_n = len(keys) - full

    def _write_blocks(self, keys, shard, row, check) -> None:
        """Whole blocks (and a last partial one), built with a few array operations."""
        n = len(keys)
        if (row > 0xFFFFFFFF).any() or (row < 0).any():
            raise ValueError("a row number of the index does not fit 32 bits")
        keys = np.ascontiguousarray(keys, dtype="S32")
        cols = (keys.view(np.uint8).reshape(n, 32), shard.astype("<u4").view(np.uint8).reshape(n, 4),
                row.astype("<u4").view(np.uint8).reshape(n, 4), check.astype("<u4").view(np.uint8).reshape(n, 4))
        whole = n // BLOCK * BLOCK
        parts = []
        if whole:  # (blocks, BLOCK * 44) bytes: each block's columns side by side
            parts.append(np.concatenate([c[:whole].reshape(whole // BLOCK, -1) for c in cols], axis=1))
        if whole < n:
            parts.append(np.concatenate([c[whole:].reshape(1, -1) for c in cols], axis=1))
        for blocks in parts:
            self.fh.write(blocks.tobytes())
            self._crcs.extend(zlib.crc32(block) for block in blocks)
        self._fence.append(keys[::BLOCK].tobytes())
        h1, h2 = bloom_hashes(keys)
        self._bits[bloom_probes(h1, h2, self.n_bits).ravel()] = True
        self.n += n

    def finish(self) -> None:
        if self._pending_n:
            self._flush(final=True)
        meta = json.dumps({"version": 1, "n": self.n, "block": BLOCK, "bloom_bits": self.n_bits,
                           "bloom_hashes": BLOOM_HASHES, "shards": self.shards,
                           "coverage": {s: [list(i) for i in iv] for s, iv in self.coverage.items()}}).encode()
        footer = b"".join((struct.pack("<I", len(meta)), meta, b"".join(self._fence),
                           np.asarray(self._crcs, dtype="<u4").tobytes(),
                           np.packbits(self._bits, bitorder="little").tobytes()))
        self.fh.write(footer)
        self.fh.write(_TRAILER.pack(MAGIC, len(footer), zlib.crc32(footer)))


def _sorted_order(keys: np.ndarray) -> np.ndarray:
    """Stable order of 32-byte keys: by their first 8 bytes, by the whole key where those tie."""
    prefix = np.ascontiguousarray(keys, dtype="S32").view(">u8").reshape(-1, 4)[:, 0]
    order = np.argsort(prefix, kind="stable")
    sorted_prefix = prefix[order]
    if len(order) > 1 and (sorted_prefix[1:] == sorted_prefix[:-1]).any():
        order = np.argsort(keys, kind="stable")
    return order


def sort_records(keys, shard, row, check) -> tuple[np.ndarray, ...]:
    """Records sorted by key, the first of equal keys kept."""
    order = _sorted_order(keys)
    keys, shard, row, check = keys[order], shard[order], row[order], check[order]
    keep = np.ones(len(keys), bool)
    keep[1:] = keys[1:] != keys[:-1]
    return keys[keep], shard[keep], row[keep], check[keep]


def merge_sorted(sources: Sequence[Iterator[tuple[np.ndarray, ...]]], builder: RunBuilder) -> None:
    """k-way merge of sorted record streams into ``builder`` (duplicate keys kept once).

    Each step takes, from every stream, the records up to the smallest last key
    of the streams' current chunks, sorts that small set and writes it: memory
    is a chunk per stream.
    """
    streams = [iter(s) for s in sources]
    heads: list[list | None] = []
    for stream in streams:
        chunk = next(stream, None)
        heads.append(None if chunk is None else [*chunk])
    last_written = None
    while True:
        live = [i for i, h in enumerate(heads) if h is not None and len(h[0])]
        if not live:
            break
        pivot = min(heads[i][0][-1] for i in live)
        parts = []
        for i in live:
            cut = int(np.searchsorted(heads[i][0], pivot, side="right"))
            parts.append([c[:cut] for c in heads[i]])
            heads[i] = [c[cut:] for c in heads[i]]
            if not len(heads[i][0]):
                chunk = next(streams[i], None)
                heads[i] = None if chunk is None else [*chunk]
        cols = sort_records(*(np.concatenate([p[j] for p in parts]) for j in range(4)))
        if last_written is not None and len(cols[0]) and cols[0][0] == last_written:
            cols = tuple(c[1:] for c in cols)
        if len(cols[0]):
            last_written = cols[0][-1]
            builder.add(*cols)
