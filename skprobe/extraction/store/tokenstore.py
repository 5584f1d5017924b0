"""TokenStore: the token rows of one extraction configuration, keyed by clip key."""

from __future__ import annotations

import fcntl
import json
import os
import warnings
import zlib
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..._files import atomic_write
from .compaction import CompactionPolicy, CompactionReport, compact
from .index import Located, StoreIndex
from .layout import KEY_FORMAT, StoreDescription, StoreError, config_key, key_bytes, read_meta
from .shards import ShardFile

__all__ = ["TokenStore"]


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
        Check each row's check value (a CRC-32 of the row and its key) and
        finiteness when it is read, so a tampered or damaged row raises
        instead of being returned.

    Attributes
    ----------
    compaction : CompactionPolicy or None
        When this handle's writers compact the index (None: never on their
        own; :meth:`compact` still works).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from skprobe.extraction.keys import clip_key
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

    compaction: CompactionPolicy | None = CompactionPolicy()

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
        self._index_state: StoreIndex | None = None
        self._files: dict[int, ShardFile] = {}
        self._check_folder()

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, **kwargs) -> TokenStore:
        """Open the store in ``folder`` (a ``<root>/<config key>`` folder holding ``store.json``).

        Examples
        --------
        >>> import tempfile
        >>> store = TokenStore(tempfile.mkdtemp(), {"encoder": "demo"}, row_shape=(2,))
        >>> with store.writer():
        ...     pass
        >>> TokenStore.from_folder(store.folder).config
        {'encoder': 'demo'}
        """
        folder = Path(folder).expanduser()
        meta = read_meta(folder)
        store = cls(folder.parent, meta["config"], meta["row_shape"], dtype=meta["dtype"], **kwargs)
        if store.folder.resolve() != folder.resolve():
            raise StoreError(f"token store {folder}: its store.json describes the store {store.config_key}, not "
                             f"{folder.name} (was the folder renamed?)")
        return store

    @property
    def description(self) -> StoreDescription:
        """What opens this store elsewhere (:meth:`StoreDescription.open`)."""
        return StoreDescription(str(self.root), self.config, self.row_shape, self.dtype.name)

    # -- metadata --------------------------------------------------------------------
    @property
    def _meta(self) -> dict:
        return {"format": KEY_FORMAT, "config": self.config, "row_shape": list(self.row_shape),
                "dtype": self.dtype.name}

    def _check_folder(self) -> None:
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
        if (folder / "store.json").is_file():
            meta = read_meta(folder)
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
    def _index(self) -> StoreIndex:
        if self._index_state is None:
            self._index_state = StoreIndex(self.folder)
        return self._index_state

    def refresh(self) -> None:
        """Read what was committed or compacted since the last look (by any process)."""
        self._index().refresh()

    def _located(self, keys: np.ndarray) -> Located:
        return self._index().locate(keys)

    def _index_found(self, keys: np.ndarray) -> np.ndarray:
        return self._located(keys).found

    def has_loaded(self, key: str) -> bool:
        """Whether ``key`` is in the index as last read (no listing; safe from reader threads)."""
        return bool(self._index_found(key_bytes([key]))[0])

    def loaded_mask(self, keys: Sequence[str]) -> np.ndarray:
        """:meth:`has_loaded` of many keys in one index lookup: a boolean mask over ``keys``."""
        return self._index_found(key_bytes(keys)) if len(keys) else np.zeros(0, dtype=bool)

    def contains(self, keys: Sequence[str]) -> np.ndarray:
        """Boolean mask: which of ``keys`` (hex clip keys) are stored."""
        self.refresh()
        return self._index_found(key_bytes(keys))

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
        return len(self._index())

    def compact(self, *, full: bool = True) -> CompactionReport:
        """Merge the index files into one sorted run (``full=False``: only what the policy says is due).

        Safe while other processes commit and read; waits for a compaction
        already running. Returns a :class:`CompactionReport`.

        Examples
        --------
        >>> import numpy as np, tempfile
        >>> from skprobe.extraction.keys import clip_key
        >>> store = TokenStore(tempfile.mkdtemp(), {"encoder": "demo"}, row_shape=(2,))
        >>> store.compaction = None  # no compaction as the writer goes, to show the explicit one
        >>> keys = [clip_key(np.full(3, i, dtype="float32")) for i in range(4)]
        >>> with store.writer() as writer:
        ...     for key in keys:
        ...         _ = writer.commit([key], np.ones((1, 2)))
        >>> report = store.compact()
        >>> report.files_before, report.files_after, len(store)
        (4, 1, 4)
        """
        if not (self.folder / "index").is_dir():
            return CompactionReport()
        self._ensure_folder()
        return compact(self._index(), self.compaction or CompactionPolicy(), full=full, wait=True,
                       force_segments=True)

    # -- reading ---------------------------------------------------------------------
    def _shard_file(self, shard: int, last_row: int) -> ShardFile:
        opened = self._files.get(shard)
        if opened is None or opened.n_rows <= last_row:
            path = self.folder / "shards" / f"{self._index().shards[shard]}.bin"
            try:
                opened = ShardFile(path, self.row_bytes)
            except FileNotFoundError:
                raise StoreError(f"token store {self.folder}: shard file {path} is missing; delete the store "
                                 "folder to recompute its tokens") from None
            if opened.n_rows <= last_row:
                raise StoreError(f"token store {self.folder}: the index points at row {last_row} of shard file "
                                 f"{path}, which holds {opened.n_rows} rows (truncated?); delete the store folder "
                                 "to recompute its tokens")
            self._files[shard] = opened
        return opened

    def read(self, keys: Sequence[str] | np.ndarray) -> np.ndarray:
        """Tokens of ``keys`` (hex strings or S32 digests) as one ``(n, *row_shape)`` array."""
        keys = key_bytes(keys)
        loc = self._located(keys)
        if not loc.found.all():
            self.refresh()
            loc = self._located(keys)
            if not loc.found.all():
                raise KeyError(f"token store {self.folder} has no tokens for clip key "
                               f"{keys[np.flatnonzero(~loc.found)[0]].hex()}")
        out = np.empty((len(keys), *self.row_shape), self.dtype)
        for shard in np.unique(loc.shard):
            sel = np.flatnonzero(loc.shard == shard)
            rows = loc.row[sel]
            out[sel] = self._shard_file(int(shard), int(rows.max())).rows(rows, self.row_shape, self.dtype)
            if self.verify:
                self._verify(out[sel], keys[sel], rows, loc.check[sel], int(shard))
        return out

    def _verify(self, rows: np.ndarray, keys: np.ndarray, numbers: np.ndarray, checks: np.ndarray,
                shard: int) -> None:
        raw = np.ascontiguousarray(keys, dtype="S32").tobytes()
        for i, row in enumerate(rows):
            key = raw[32 * i: 32 * i + 32]
            if zlib.crc32(key, zlib.crc32(row)) != int(checks[i]) or not np.isfinite(row).all():
                raise StoreError(
                    f"token store {self.folder}: row {int(numbers[i])} of shard {self._index().shards[shard]} "
                    f"(clip key {key.hex()}) is damaged (checksum mismatch or non-finite values); "
                    "delete the store folder to recompute it"
                )

    def array(self, keys: Sequence[str], *, squeeze_layer: bool = False):
        """A read-only, store-backed array of the tokens of ``keys`` (see :class:`StoreArray`)."""
        from .array import StoreArray

        return StoreArray(self, keys, squeeze_layer=squeeze_layer)

    # -- writing ---------------------------------------------------------------------
    def writer(self, **kwargs):
        """A new writer (one per process or thread; use it as a context manager; see :class:`StoreWriter`)."""
        from .writer import StoreWriter

        return StoreWriter(self, **kwargs)

    def __getstate__(self):
        # The description only: the receiving process reads the index on its first lookup, so a
        # StoreArray shipped to joblib/Dask workers pickles as a few hundred bytes plus its clip keys.
        state = self.__dict__.copy()
        state.update(_index_state=None, _files={})
        return state


_WARNED: set[Path] = set()


def _warn_old_caches(root: Path) -> None:
    """Say once per root that it holds old per-clip caches this version ignores."""
    if root in _WARNED or not root.is_dir():
        return
    _WARNED.add(root)
    old = [p for p in root.iterdir() if (p / "config.json").is_file() and not (p / "store.json").is_file()]
    if old:
        warnings.warn(
            f"{root} holds {len(old)} old per-clip token cache folder(s) (skprobe 0.x, one .npy file per clip) "
            f"that this version does not read, e.g. {old[0]}; tokens are recomputed into the new store. Delete "
            "those folders to free their space.", stacklevel=4)
