"""Sharded, append-only token store: float16 rows in a few large files, read with ``pread``.

One folder per extraction configuration, ``<root>/<config key>/``::

    store.json              configuration, row shape and dtype (written once, atomically)
    lock                    advisory lock (``flock``) held only while committing or claiming
    shards/<writer>.bin     raw rows, appended by exactly one writer each
    index/<writer>.<n>.npy  index segments: (clip key, row, CRC-32) for rows of that shard
    claims/<writer>.json    clip keys a live writer is computing now

A commit appends a batch's rows to the writer's own shard, fsyncs it, then
writes one small index segment atomically (:func:`skprobe._files.atomic_write`)
while holding the lock. A row exists for readers only once its segment does,
so a process killed at any point loses at most its in-flight batch, and a
rerun resumes. Writers never share a file: several processes (on one machine
or on a shared filesystem whose ``flock`` works across hosts, as Linux NFS
does) can fill one store at once. Under the lock a writer re-reads the index
before appending, so a clip is never stored twice; claims let concurrent
writers skip clips another live writer is computing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .._files import atomic_write

__all__ = ["TokenStore", "StoreWriter", "StoreArray", "StoreError"]

FORMAT_VERSION = 3  # 3: sharded store (2 was one .npy file per clip)
_INDEX_DTYPE = np.dtype([("key", "S32"), ("row", "<i8"), ("crc", "<u4")])
_F16_MAX = float(np.finfo(np.float16).max)
_CLAIM_TIMEOUT = 600.0  # seconds without a refresh after which another host's claim is stale


class StoreError(OSError):
    """A token store cannot be read or written; the message names the folder and the problem."""


def _key_bytes(keys: Iterable[str]) -> np.ndarray:
    return np.array([bytes.fromhex(k) for k in keys], dtype="S32").reshape(-1)


def config_key(config: Mapping[str, object]) -> str:
    """Short hash of a configuration (order of the mapping does not matter)."""
    import hashlib

    payload = json.dumps({"format": FORMAT_VERSION, **config}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class TokenStore:
    """Token rows of one extraction configuration, keyed by clip key.

    Parameters
    ----------
    root : path-like
        Store root; the configuration's folder is ``root / config_key``.
    config : mapping
        JSON-serialisable description of everything that changes the tokens.
    row_shape : tuple of int
        Shape of one clip's tokens, e.g. ``(n_layers, n_tokens, dim)``.
    dtype : {"float16", "float32"}, default="float16"
        dtype of the stored tokens.
    verify : bool, default=True
        Check each row's CRC-32 (and finiteness) when it is read, so a tampered
        or damaged row raises instead of being returned.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from skprobe.extraction.cache import clip_key
    >>> store = TokenStore(tempfile.mkdtemp(), {"encoder": "demo"}, row_shape=(4, 3))
    >>> keys = [clip_key(np.full(10, i, dtype="float32")) for i in range(3)]
    >>> store.missing(keys) == keys
    True
    >>> with store.writer() as w:
    ...     w.commit(keys[:2], np.ones((2, 4, 3), dtype="float32"))
    2
    >>> store.missing(keys) == keys[2:]
    True
    >>> arr = store.array(keys[:2])
    >>> arr.shape, arr.dtype, arr[0].sum()
    ((2, 4, 3), dtype('float16'), np.float16(12.0))
    """

    def __init__(self, root: str | os.PathLike, config: Mapping[str, object], row_shape: Sequence[int],
                 *, dtype: str = "float16", verify: bool = True) -> None:
        self.root = Path(root).expanduser()
        self.row_shape = tuple(int(n) for n in row_shape)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float16, np.float32):
            raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
        self.config = dict(config)
        self.config_key = config_key({**self.config, "row_shape": list(self.row_shape), "dtype": self.dtype.name})
        self.folder = self.root / self.config_key
        self.verify = verify
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self._segments: set[str] = set()
        self._parts: list[np.ndarray] = []  # per segment: records
        self._part_shards: list[int] = []
        self._shards: list[str] = []
        self._keys = np.empty(0, "S32")
        self._shard_of = np.empty(0, np.int32)
        self._row_of = np.empty(0, np.int64)
        self._crc_of = np.empty(0, np.uint32)
        self._files: dict[int, _ShardFile] = {}
        self._check_legacy()

    # -- metadata --------------------------------------------------------------------
    @property
    def _meta(self) -> dict:
        return {"format": FORMAT_VERSION, "config": self.config, "row_shape": list(self.row_shape),
                "dtype": self.dtype.name}

    def _check_legacy(self) -> None:
        if (self.root / "config.json").is_file() and not (self.root / "store.json").is_file():
            raise StoreError(
                f"token store {self.root} is the folder of an old per-clip token cache (skprobe 0.x, one .npy "
                "file per clip) that this version does not read; pass a new folder (or the parent of the old "
                "one) as cache, and delete the old folder to free its space"
            )
        _warn_old_caches(self.root)
        folder = self.folder
        if not folder.is_dir():
            if self.root.is_file():
                raise StoreError(f"token store {self.root} is a file, not a folder")
            return
        if (folder / "config.json").is_file() and not (folder / "store.json").is_file():
            raise StoreError(
                f"token store folder {folder} holds an old per-clip token cache (skprobe 0.x, one .npy file "
                "per clip) that this version does not read; delete the folder (tokens are recomputed) or "
                "pass another cache folder"
            )
        meta_file = folder / "store.json"
        if meta_file.is_file():
            try:
                meta = json.loads(meta_file.read_text())
            except (OSError, ValueError) as exc:
                raise StoreError(f"token store {folder}: unreadable store.json ({exc})") from exc
            if meta != json.loads(json.dumps(self._meta, default=str)):
                raise StoreError(
                    f"token store {folder} was made by another configuration ({meta.get('config')}, rows "
                    f"{meta.get('row_shape')} {meta.get('dtype')}); expected {self._meta['config']}"
                )

    def _ensure_folder(self) -> None:
        try:
            for sub in ("shards", "index", "claims"):
                (self.folder / sub).mkdir(parents=True, exist_ok=True)
            meta = self.folder / "store.json"
            if not meta.is_file():
                payload = json.dumps(self._meta, sort_keys=True, default=str).encode()
                atomic_write(meta, lambda fh: fh.write(payload))
            (self.folder / "lock").touch(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot write to token store {self.folder}: {exc.strerror or exc}") from exc
        if not os.access(self.folder / "shards", os.W_OK):
            raise StoreError(f"cannot write to token store {self.folder}: the folder is not writable")

    @contextmanager
    def _locked(self):
        with open(self.folder / "lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # -- index -----------------------------------------------------------------------
    def refresh(self) -> None:
        """Read index segments committed since the last look (by any writer)."""
        index = self.folder / "index"
        if not index.is_dir():
            return
        new = sorted(name for name in os.listdir(index) if name.endswith(".npy") and not name.startswith(".")
                     and name not in self._segments)
        if not new:
            return
        for name in new:
            try:
                records = np.load(index / name, allow_pickle=False)
            except FileNotFoundError:  # compacted away meanwhile: its rows are in the compacted segment
                continue
            except (OSError, ValueError) as exc:
                raise StoreError(f"token store {self.folder}: index segment {name} is unreadable ({exc})") from exc
            shard = name.split(".")[0]
            if shard not in self._shards:
                self._shards.append(shard)
            self._segments.add(name)
            self._parts.append(records)
            self._part_shards.append(self._shards.index(shard))
        records = np.concatenate(self._parts) if self._parts else np.empty(0, _INDEX_DTYPE)
        shards = np.concatenate([np.full(len(p), s, np.int32) for p, s in zip(self._parts, self._part_shards)]) \
            if self._parts else np.empty(0, np.int32)
        keys, first = np.unique(records["key"], return_index=True)
        self._keys, self._shard_of = keys, shards[first]
        self._row_of, self._crc_of = records["row"][first], records["crc"][first]

    def _locate(self, keys: np.ndarray) -> np.ndarray:
        """Positions of ``keys`` in the sorted index, -1 where absent."""
        if len(self._keys) == 0:
            return np.full(len(keys), -1, np.int64)
        pos = np.searchsorted(self._keys, keys).clip(0, len(self._keys) - 1)
        return np.where(self._keys[pos] == keys, pos, -1)

    def has_loaded(self, key: str) -> bool:
        """Whether ``key`` is in the index as last read (no refresh; safe from reader threads)."""
        return bool(self._locate(_key_bytes([key]))[0] >= 0)

    def contains(self, keys: Sequence[str]) -> np.ndarray:
        """Boolean mask: which of ``keys`` (hex clip keys) are stored."""
        self.refresh()
        return self._locate(_key_bytes(keys)) >= 0

    def missing(self, keys: Sequence[str]) -> list[str]:
        """The clip keys of ``keys`` not stored yet, in their order (duplicates kept once)."""
        mask = self.contains(keys)
        seen: set[str] = set()
        out = []
        for key, stored in zip(keys, mask):
            if not stored and key not in seen:
                seen.add(key)
                out.append(key)
        return out

    def __len__(self) -> int:
        self.refresh()
        return len(self._keys)

    # -- reading ---------------------------------------------------------------------
    def _shard_file(self, shard: int) -> _ShardFile:
        opened = self._files.get(shard)
        if opened is None:
            opened = self._files[shard] = _ShardFile(self.folder / "shards" / f"{self._shards[shard]}.bin")
        return opened

    def read(self, keys: Sequence[str] | np.ndarray) -> np.ndarray:
        """Tokens of ``keys`` (hex strings or S32 digests) as one ``(n, *row_shape)`` array."""
        keys = keys if isinstance(keys, np.ndarray) and keys.dtype == "S32" else _key_bytes(keys)
        pos = self._locate(keys)
        if (pos < 0).any():
            self.refresh()
            pos = self._locate(keys)
            if (pos < 0).any():
                raise KeyError(f"token store {self.folder} has no tokens for clip key "
                               f"{keys[np.flatnonzero(pos < 0)[0]].hex()}")
        out = np.empty((len(keys), *self.row_shape), self.dtype)
        shards = self._shard_of[pos]
        for shard in np.unique(shards):
            sel = np.flatnonzero(shards == shard)
            rows = self._row_of[pos[sel]]
            out[sel] = self._shard_file(int(shard)).rows(rows, self.row_bytes, self.row_shape, self.dtype)
            if self.verify:
                self._verify(out[sel], pos[sel], int(shard))
        return out

    def _verify(self, rows: np.ndarray, pos: np.ndarray, shard: int) -> None:
        for row, p in zip(rows, pos):
            if zlib.crc32(row) != int(self._crc_of[p]) or not np.isfinite(row).all():
                raise StoreError(
                    f"token store {self.folder}: row {int(self._row_of[p])} of shard {self._shards[shard]} "
                    f"(clip key {self._keys[p].hex()}) is damaged (checksum mismatch or non-finite values); "
                    "delete the store folder to recompute it"
                )

    def array(self, keys: Sequence[str], *, squeeze_layer: bool = False) -> StoreArray:
        """A read-only, store-backed array of the tokens of ``keys`` (see :class:`StoreArray`)."""
        return StoreArray(self, keys, squeeze_layer=squeeze_layer)

    # -- writing ---------------------------------------------------------------------
    def writer(self) -> StoreWriter:
        """A new writer (one per process or thread; use it as a context manager)."""
        return StoreWriter(self)

    def __getstate__(self):
        # The description only: the receiving process re-reads the index on its first refresh(), so a
        # StoreArray shipped to joblib/Dask workers pickles as a few hundred bytes plus its clip keys.
        state = self.__dict__.copy()
        state.update(_segments=set(), _parts=[], _part_shards=[], _shards=[], _keys=np.empty(0, "S32"),
                     _shard_of=np.empty(0, np.int32), _row_of=np.empty(0, np.int64),
                     _crc_of=np.empty(0, np.uint32), _files={})
        return state


class _ShardFile:
    """A shard opened for reading rows with ``pread``.

    Rows read through a memory map would stay in this process's resident
    set (a probe's epochs read every row), so the resident set of a fit
    would grow with the store; read with ``pread`` they stay in the page
    cache only.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)

    def __del__(self) -> None:
        fd = getattr(self, "fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def rows(self, rows: np.ndarray, row_bytes: int, row_shape: tuple, dtype: np.dtype) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed) as ``(len(rows), *row_shape)``; runs read in one call each."""
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        buf = np.empty((len(rows), *row_shape), dtype)
        flat = buf.reshape(len(rows), -1).view(np.uint8)
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
            view = memoryview(flat[a:b]).cast("B")
            start, done = int(ordered[a]) * row_bytes, 0
            while done < len(view):
                got = os.preadv(self.fd, [view[done:]], start + done)
                if got <= 0:
                    raise StoreError(f"token store shard {self.path} ends before row {int(ordered[a])} "
                                     f"(byte {start + done}); delete the store folder to recompute it")
                done += got
        out = np.empty_like(buf)
        out[order] = buf
        return out


class StoreWriter:
    """Appends committed batches to a store; one per process. Use as a context manager.

    Each writer owns its shard files and claim file, so writers never write
    the same file; index segments are written atomically under the store lock.
    """

    shard_bytes = 2**31  # start a new shard file past 2 GiB

    def __init__(self, store: TokenStore) -> None:
        self.store = store
        store._ensure_folder()
        self.id = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:12]}"
        self._shard_no = 0
        self._rows = 0
        self._segment_no = 0
        self._fh = None
        self._claimed: list[str] = []
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
    def _others_claims(self) -> set[bytes]:
        claims: set[bytes] = set()
        folder = self.store.folder / "claims"
        host = socket.gethostname()
        for path in folder.glob("*.json"):
            if path.stem == self.id:
                continue
            try:
                claim = json.loads(path.read_text())
                age = time.time() - path.stat().st_mtime
            except (OSError, ValueError):
                continue
            alive = _pid_alive(claim["pid"]) if claim.get("host") == host else age < _CLAIM_TIMEOUT
            if alive:
                claims.update(bytes.fromhex(k) for k in claim["keys"])
        return claims

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
                others = self._others_claims()
                stored = store._locate(_key_bytes(keys)) >= 0
                todo, elsewhere = [], []
                for key, done in zip(keys, stored):
                    if done:
                        continue
                    (elsewhere if bytes.fromhex(key) in others else todo).append(key)
                self._claimed = todo
                self._write_claim()
        except OSError as exc:
            if isinstance(exc, StoreError):
                raise
            raise self._error(exc, "claim clips in") from exc
        return todo, elsewhere

    def _write_claim(self) -> None:
        payload = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "keys": self._claimed}).encode()
        atomic_write(self.store.folder / "claims" / f"{self.id}.json", lambda fh: fh.write(payload))

    def wait(self, keys: Sequence[str], poll: float = 0.05) -> list[str]:
        """Wait until ``keys`` are stored or their claims lapse; returns those now unclaimed and missing."""
        pending = list(keys)
        while pending:
            self.store.refresh()
            pending = [k for k, s in zip(pending, self.store._locate(_key_bytes(pending)) >= 0) if not s]
            if not pending:
                break
            others = self._others_claims()
            orphans = [k for k in pending if bytes.fromhex(k) not in others]
            if orphans:
                self.store.refresh()
                return [k for k, s in zip(orphans, self.store._locate(_key_bytes(orphans)) >= 0) if not s]
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
                kb = _key_bytes(keys)
                _, first = np.unique(kb, return_index=True)
                new = np.zeros(len(keys), bool)
                new[first] = True
                new &= store._locate(kb) < 0
                sel = np.flatnonzero(new)
                if len(sel):
                    rows = np.ascontiguousarray(tokens[sel], dtype=store.dtype)
                    self._append(rows)
                    records = np.empty(len(sel), _INDEX_DTYPE)
                    records["key"] = kb[sel]
                    records["row"] = np.arange(self._rows - len(sel), self._rows)
                    records["crc"] = [zlib.crc32(r) for r in rows]
                    name = f"{self.shard}.{self._segment_no:08d}.npy"
                    try:
                        atomic_write(store.folder / "index" / name,
                                     lambda fh: np.save(fh, records, allow_pickle=False))
                    except BaseException:
                        self._rollback(len(sel))
                        raise
                    self._segment_no += 1
                    store.refresh()
                self._claimed = [k for k in self._claimed if k not in set(keys)]
        except StoreError:
            raise
        except OSError as exc:
            raise self._error(exc, "write to") from exc
        self.stored += len(sel)
        return len(sel)

    def _append(self, rows: np.ndarray) -> None:
        store = self.store
        if self._fh is not None and (self._rows + len(rows)) * store.row_bytes > self.shard_bytes and self._rows:
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

    def close(self) -> None:
        """Close the shard and drop this writer's claim (commits are already durable)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        try:
            (self.store.folder / "claims" / f"{self.id}.json").unlink(missing_ok=True)
        except OSError:
            pass


_WARNED: set[Path] = set()


def _warn_old_caches(root: Path) -> None:
    """Say once per root that it holds old per-clip caches this version ignores."""
    if root in _WARNED or not root.is_dir():
        return
    _WARNED.add(root)
    old = [p for p in root.iterdir() if (p / "config.json").is_file() and not (p / "store.json").is_file()]
    if old:
        import warnings

        warnings.warn(
            f"{root} holds {len(old)} old per-clip token cache folder(s) (skprobe 0.x, one .npy file per clip) "
            f"that this version does not read, e.g. {old[0]}; tokens are recomputed into the new store. Delete "
            "those folders to free their space.", stacklevel=4)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True


class StoreArray:
    """Read-only, store-backed token array: behaves as an ndarray for slicing.

    Has ``shape``, ``dtype`` (the store's, float16 by default), ``ndim``,
    ``__len__``, ``__getitem__`` (an int, a slice, an integer array or a boolean
    mask along the first axis, optionally followed by indices of the other axes:
    returns an ``np.ndarray``) and ``__array__``. Rows are read from the
    shards only when indexed (with ``pread``: they do not stay in the process's
    memory), so a probe can train on batches of a token set larger than memory. Pickles as the store path plus the clip
    keys (no tokens), so joblib workers re-open the store.

    Parameters
    ----------
    store : TokenStore
    keys : sequence of str
        Hex clip keys, one per row, all stored.
    squeeze_layer : bool, default=False
        Drop the layer axis of rows holding a single layer (3-D output).
    """

    def __init__(self, store: TokenStore, keys: Sequence[str] | np.ndarray, *, squeeze_layer: bool = False) -> None:
        self._store = store
        self.keys = keys if isinstance(keys, np.ndarray) and keys.dtype == "S32" else _key_bytes(keys)
        self._squeeze = squeeze_layer
        store.refresh()
        missing = np.flatnonzero(store._locate(self.keys) < 0)
        if len(missing):
            raise KeyError(f"token store {store.folder} has no tokens for clip key {self.keys[missing[0]].hex()}")
        row = store.row_shape[1:] if squeeze_layer else store.row_shape
        self.shape = (len(self.keys), *row)
        self.dtype = store.dtype

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape)))
    nbytes = property(lambda self: self.size * self.dtype.itemsize)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"StoreArray(shape={self.shape}, dtype={self.dtype}, store={str(self._store.folder)!r})"

    @property
    def store_id(self) -> str:
        """The backing store's configuration key: with :attr:`keys`, what identifies these tokens."""
        return self._store.config_key

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        out = self._store.read(keys)
        return out[:, 0] if self._squeeze else out

    def __getitem__(self, index):
        rest = ()
        if isinstance(index, tuple):
            index, rest = index[0], index[1:]
        if isinstance(index, (int, np.integer)):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"index {index} is out of bounds for axis 0 with size {n}")
            return self._rows(self.keys[[index]])[0][rest]
        out = self._rows(self.keys[index])
        return out[(slice(None), *rest)] if rest else out

    def __array__(self, dtype=None, copy=None):
        out = self._rows(self.keys)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __reduce__(self):
        return (_rebuild_array, (self._store, self.keys, self._squeeze))


def _rebuild_array(store: TokenStore, keys: np.ndarray, squeeze: bool) -> StoreArray:
    return StoreArray(store, keys, squeeze_layer=squeeze)
