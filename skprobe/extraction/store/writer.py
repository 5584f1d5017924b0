"""StoreWriter: appends committed batches to its own shard and index segments; claims; compacts as it goes."""

from __future__ import annotations

import errno
import os
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..._files import atomic_write
from .claims import DEFAULT_TIMEOUT, Claims
from .compaction import compact, needs_compaction
from .index import row_checks
from .layout import SEGMENT_DTYPE, StoreError, key_bytes

if TYPE_CHECKING:
    from .tokenstore import TokenStore

__all__ = ["StoreWriter"]

_F16_MAX = float(np.finfo(np.float16).max)
_MAX_SHARD_ROWS = 0xFFFFFFFF  # row numbers are 32-bit in the compacted index


class StoreWriter:
    """Appends committed batches to a store; one per process or thread. Use as a context manager.

    Each writer owns its shard files and claim file, so writers never write
    the same file; index segments are written atomically under the store
    lock. When enough segments have piled up (the store's
    :class:`~skprobe.extraction.store.CompactionPolicy`), a background thread
    compacts the index; :meth:`close` waits for it and compacts what is left.

    Parameters
    ----------
    store : TokenStore
    claim_timeout : float, default=600
        Seconds after which a claim another writer has not renewed is no
        longer honoured (its clips are computed here, with a warning).
    """

    shard_bytes = 2**31  # start a new shard file past 2 GiB

    def __init__(self, store: TokenStore, *, claim_timeout: float = DEFAULT_TIMEOUT) -> None:
        self.store = store
        store._ensure_folder()
        self.id = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:12]}"
        self._claims = Claims(store.folder / "claims", self.id, claim_timeout)
        self._shard_no = 0
        self._rows = 0
        self._segment_no = 0
        self._fh = None
        self._claimed: list[str] = []
        self._compactor: threading.Thread | None = None
        self._compaction_error: BaseException | None = None
        self.stored = 0

    @property
    def shard(self) -> str:
        return f"{self.id}-{self._shard_no:04d}"

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _error(self, exc: OSError, what: str) -> StoreError:
        reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        return StoreError(f"cannot {what} token store {self.store.folder}: {reason}; what was committed before "
                          "is kept and readable")

    # -- claims ----------------------------------------------------------------------
    def claim(self, keys: Sequence[str]) -> tuple[list[str], list[str]]:
        """Reserve clip keys for this writer to compute.

        Returns
        -------
        todo : list of str
            Keys neither stored nor claimed by another live writer: compute these.
        elsewhere : list of str
            Keys another live writer is computing now (wait for them with :meth:`wait`).
        """
        store = self.store
        try:
            with store._locked():
                store.refresh()
                others = self._claims.others()
                stored = store._index_found(key_bytes(keys))
                todo, elsewhere = [], []
                for key, done in zip(keys, stored):
                    if done:
                        continue
                    (elsewhere if bytes.fromhex(key) in others else todo).append(key)
                self._claimed = todo
                self._claims.write(self._claimed)
        except StoreError:
            raise
        except OSError as exc:
            raise self._error(exc, "claim clips in") from exc
        return todo, elsewhere

    def wait(self, keys: Sequence[str], poll: float = 0.05) -> list[str]:
        """Wait until ``keys`` are stored or their claims lapse; returns those now unclaimed and missing.

        A claim lapses when its writer dies or does not renew it for
        ``claim_timeout`` seconds (said in a warning naming its file).
        """
        store = self.store
        pending = list(keys)
        while pending:
            store.refresh()
            pending = [k for k, s in zip(pending, store._index_found(key_bytes(pending))) if not s]
            if not pending:
                break
            others = self._claims.others()
            orphans = [k for k in pending if bytes.fromhex(k) not in others]
            if orphans:
                store.refresh()
                return [k for k, s in zip(orphans, store._index_found(key_bytes(orphans))) if not s]
            time.sleep(poll)
        return []

    # -- commit ----------------------------------------------------------------------
    def commit(self, keys: Sequence[str], tokens: np.ndarray) -> int:
        """Store ``tokens[i]`` under ``keys[i]``; keys already stored (by anyone) are skipped.

        Returns the number of rows written. Raises :class:`StoreError` naming the
        folder when the disk is full or the folder is not writable; the rows of
        this call are then not committed and earlier commits stay readable.
        """
        store = self.store
        tokens = np.asarray(tokens)
        if tokens.shape[1:] != store.row_shape or len(tokens) != len(keys):
            raise ValueError(f"tokens of shape {tokens.shape} do not match {len(keys)} rows of {store.row_shape}")
        if not np.isfinite(tokens).all():
            raise ValueError(f"refusing to store tokens with NaN or infinite values in {store.folder}")
        if store.dtype == np.float16 and tokens.dtype != np.float16 and np.abs(tokens).max(initial=0) > _F16_MAX:
            raise ValueError(f"tokens exceed the float16 range of token store {store.folder}; use a float32 "
                             "store (store_dtype='float32')")
        try:
            with store._locked():
                store.refresh()
                kb = key_bytes(keys)
                _, first = np.unique(kb, return_index=True)
                new = np.zeros(len(keys), bool)
                new[first] = True
                new &= ~store._index_found(kb)
                sel = np.flatnonzero(new)
                if len(sel):
                    rows = np.ascontiguousarray(tokens[sel], dtype=store.dtype)
                    self._append(rows)
                    records = np.empty(len(sel), SEGMENT_DTYPE)
                    records["key"] = kb[sel]
                    records["row"] = np.arange(self._rows - len(sel), self._rows)
                    records["check"] = row_checks(rows, kb[sel])
                    name = f"{self.shard}.{self._segment_no:08d}.npy"
                    try:
                        atomic_write(store.folder / "index" / name,
                                     lambda fh: np.save(fh, records, allow_pickle=False))
                    except BaseException:
                        self._rollback(len(sel))
                        raise
                    self._segment_no += 1
                    store._index().add_segment(name, records)
                done = set(keys)
                self._claimed = [k for k in self._claimed if k not in done]
        except StoreError:
            raise
        except OSError as exc:
            raise self._error(exc, "write to") from exc
        self.stored += len(sel)
        self._maybe_compact()
        return len(sel)

    def _append(self, rows: np.ndarray) -> None:
        store = self.store
        if self._fh is not None and self._rows and (
                (self._rows + len(rows)) * store.row_bytes > self.shard_bytes
                or self._rows + len(rows) > _MAX_SHARD_ROWS):
            self._fh.close()
            self._fh, self._rows, self._shard_no, self._segment_no = None, 0, self._shard_no + 1, 0
        if self._fh is None:
            self._fh = open(store.folder / "shards" / f"{self.shard}.bin", "ab")
        try:
            self._fh.write(rows.tobytes())
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except BaseException:
            self._rows += len(rows)
            self._rollback(len(rows))
            raise
        self._rows += len(rows)

    def _rollback(self, n: int) -> None:
        """Cut the shard back to its committed rows after a failed write."""
        self._rows -= n
        try:
            self._fh.truncate(self._rows * self.store.row_bytes)
            self._fh.seek(0, os.SEEK_END)
        except OSError:  # the next commit starts a new shard instead
            self._fh.close()
            self._fh, self._rows, self._shard_no, self._segment_no = None, 0, self._shard_no + 1, 0

    # -- compaction ------------------------------------------------------------------
    def _maybe_compact(self) -> None:
        if self._compactor is not None and self._compactor.is_alive():
            return
        policy = self.store.compaction
        if policy is None or not needs_compaction(self.store._index().view, policy):
            return
        self._compactor = threading.Thread(target=self._compact, name=f"skprobe-compact-{self.id}", daemon=True)
        self._compactor.start()

    def _compact(self, force_segments: bool = False) -> None:
        try:
            compact(self.store._index(), self.store.compaction, wait=False, force_segments=force_segments)
        except Exception as exc:  # the store stays intact; said at close
            self._compaction_error = exc

    def close(self) -> None:
        """Close the shard, drop this writer's claim and compact the index if due (commits are already durable)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._claims.close()
        if self._compactor is not None:
            self._compactor.join()
            self._compactor = None
        policy = self.store.compaction
        if policy is not None and policy.on_close and self.stored:
            self._compact(force_segments=True)
        if self._compaction_error is not None:
            exc, self._compaction_error = self._compaction_error, None
            warnings.warn(f"compacting the index of token store {self.store.folder} failed ({exc}); every commit "
                          "is kept and readable. Compact it later with `skprobe store compact`", stacklevel=2)


class DeferredWriter:
    """A :class:`StoreWriter` made on the first claim or commit, so reading a store needs no write access.

    A store on a read-only filesystem (or folder) then serves the clips it
    holds; only a clip that must be computed and stored raises the
    :class:`StoreError` naming the folder.
    """

    def __init__(self, store: TokenStore, **kwargs) -> None:
        self.store = store
        self._kwargs = kwargs
        self._writer: StoreWriter | None = None

    @property
    def writer(self) -> StoreWriter:
        if self._writer is None:
            self._writer = StoreWriter(self.store, **self._kwargs)
        return self._writer

    def claim(self, keys: Sequence[str]) -> tuple[list[str], list[str]]:
        return self.writer.claim(keys)

    def commit(self, keys: Sequence[str], tokens: np.ndarray) -> int:
        return self.writer.commit(keys, tokens)

    def wait(self, keys: Sequence[str], poll: float = 0.05) -> list[str]:
        return self.writer.wait(keys, poll)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> DeferredWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
