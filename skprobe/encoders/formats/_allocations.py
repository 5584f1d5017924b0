"""What loading a torch checkpoint would allocate, found without loading it.

``torch.load(weights_only=True)`` runs no code of the file, but it still
calls the constructors it allows with the file's arguments: a 1.7 kB pickle
calling ``bytearray(3_000_000_000)`` makes it allocate 3 GB, and so can
``torch.FloatTensor(n, n)``, a storage of a huge declared size, or a length
prefix past the end of the data. :func:`pickle_allocations` replays the
checkpoint's pickles on a pickle machine whose every global is a stand-in:
the constructors that allocate add up the bytes they would take and nothing
else is called. The pickle machine itself only builds what the file spells
out, so the replay costs about the size of the pickle.
"""

from __future__ import annotations

import _compat_pickle
import io
import math
import mmap
import pickle
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["AllocationRefused", "pickle_allocations"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a pre-1.6 (non-zip) torch file

#: Bytes per element of torch's typed storages and legacy tensor types, by name prefix (8 for others).
_ITEMSIZE = {"Half": 2, "BFloat16": 2, "Float": 4, "Double": 8, "ComplexFloat": 8, "ComplexDouble": 16,
             "Long": 8, "Int": 4, "Short": 2, "Char": 1, "Byte": 1, "Bool": 1, "Untyped": 1, "QUInt8": 1,
             "QInt8": 1, "QInt32": 4, "QUInt4x2": 1, "QUInt2x4": 1}


class AllocationRefused(Exception):
    """Loading would allocate more than the limit (``.requested`` bytes, ``.what`` made the largest request)."""

    def __init__(self, requested: int, what: str) -> None:
        super().__init__(f"{requested:,} bytes ({what})")
        self.requested, self.what = requested, what


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit, self.total, self.largest, self.what = limit, 0, 0, ""
        self.storages: set = set()

    def add(self, n: int, what: str) -> None:
        n = max(0, int(n))
        self.total += n
        if n >= self.largest:
            self.largest, self.what = n, what
        if self.total > self.limit:
            raise AllocationRefused(self.total, self.what)


class _Inert:
    """What every stand-in returns: accepts whatever the pickle does with an object, holds nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()


class _Array(_Inert):
    """Stand-in of a numpy array: its ``__setstate__`` (shape, dtype) is what allocates."""

    def __init__(self, budget: _Budget, what: str) -> None:
        self.budget, self.what = budget, what

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) >= 3:
            itemsize = state[2].itemsize if isinstance(state[2], np.dtype) else 8
            self.budget.add(_count(state[1]) * itemsize, self.what)


def _count(shape: Any) -> int:
    """Elements of a shape given as ints or a sequence of ints (0 for anything else)."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        return shape
    if isinstance(shape, (tuple, list)) and all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
        return math.prod(shape)
    return 0


def _itemsize(name: str) -> int:
    stem = name.removesuffix("Storage").removesuffix("Tensor")
    return _ITEMSIZE.get(stem, 8)


def _stand_in(module: str, name: str, budget: _Budget) -> type:
    """A class standing in for global ``module.name``: calling it (REDUCE, NEWOBJ) only counts bytes."""
    full = f"{module}.{name}"
    itemsize = _itemsize(name)

    def requested(args: tuple) -> int:
        if full == "builtins.bytearray":
            if args and isinstance(args[0], int) and not isinstance(args[0], bool):
                return args[0]
            return len(args[0]) if args and isinstance(args[0], (bytes, str, list, tuple)) else 0
        if module.startswith("torch") and (name.endswith("Tensor") or name.endswith("Storage")):
            if len(args) == 1 and isinstance(args[0], (bytes, list, tuple)) and not _count(args[0]):
                return len(args[0]) * itemsize  # built from data
            if len(args) == 1 and isinstance(args[0], (list, tuple)):
                return max(len(args[0]), _count(args[0])) * itemsize  # a sequence of numbers, or a size
            return _count(list(args)) * itemsize
        if full == "torch._utils._rebuild_qtensor" and len(args) > 2:
            return _count(args[2])
        if name == "_reconstruct" and module.startswith("numpy") and len(args) > 1:
            return _count(args[1])
        return 0

    def real(args: tuple) -> Any:
        """The few results a later call might take a size from: computed, they are as small as the pickle."""
        if full == "torch.Size" and len(args) == 1 and isinstance(args[0], (tuple, list)):
            return tuple(args[0])
        if full == "_codecs.encode" and all(isinstance(a, str) for a in args) and len(args) <= 2:
            return args[0].encode("latin1", errors="replace")
        if full in ("numpy.dtype", "numpy.core.multiarray.dtype") and args and all(
                isinstance(a, (str, bool, int)) for a in args):
            try:
                return np.dtype(args[0])
            except TypeError:
                return _Inert()
        if name == "_reconstruct" and module.startswith("numpy"):
            return _Array(budget, full)
        return _Inert()

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        budget.add(requested(args), full)
        return real(args)

    return type(name, (), {"__new__": __new__, "itemsize": itemsize, "qualname": full})


class _DryUnpickler(pickle.Unpickler):
    def __init__(self, file, budget: _Budget) -> None:
        super().__init__(file)
        self.budget = budget

    def find_class(self, module: str, name: str) -> type:
        # Python 2 names (protocols 0-2 write "__builtin__"), mapped as pickle's own find_class maps them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        return _stand_in(module, name, self.budget)

    def persistent_load(self, pid: Any) -> Any:
        # torch's storages: ("storage", storage type, key, location, numel[, view]); the loader allocates numel.
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            key = (pid[2] if isinstance(pid[2], (str, int)) else id(pid))
            if key not in self.budget.storages:
                self.budget.storages.add(key)
                self.budget.add(_count(pid[4]) * getattr(pid[1], "itemsize", 8), f"storage {pid[2]!r}")
        return _Inert()


class _BoundedReader(io.RawIOBase):
    """Reads ``data``; a read past its end (a length prefix the pickle does not hold) refuses the file."""

    def __init__(self, data, budget: _Budget) -> None:
        self.data, self.pos, self.budget = data, 0, budget

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        left = len(self.data) - self.pos
        if n is None or n < 0:
            n = left
        if n > left:
            raise AllocationRefused(n, f"a pickle opcode reads {n:,} bytes where {left:,} remain")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int = -1) -> bytes:
        end = self.data.find(b"\n", self.pos) if hasattr(self.data, "find") else -1
        end = len(self.data) if end < 0 else end + 1
        out = bytes(self.data[self.pos : end])
        self.pos = end
        return out


def _replay(reader: _BoundedReader, budget: _Budget) -> tuple[bool, Any]:
    """Replay the next pickle of ``reader``: ``(True, value)``, or ``(False, None)`` where it is not a pickle."""
    try:
        return True, _DryUnpickler(reader, budget).load()
    except AllocationRefused:
        raise
    except Exception:  # not a pickle (or not one the stand-ins can follow): the real loader words the error
        return False, None


def pickle_allocations(source: str | Path | bytes, limit: int) -> int:
    """Bytes that ``torch.load`` of ``source`` (a path or the bytes of a file) would allocate for its pickles.

    Covers the zip format (``data.pkl``) and the legacy stream of pickles
    (magic number, protocol, system information, objects, storage keys).
    Stops counting at ``limit``.

    Raises
    ------
    AllocationRefused
        As soon as the bytes asked for exceed ``limit``, or a length prefix
        reaches past the data.
    ValueError
        For a file in torch's pre-1.0 tar format, whose storage sizes come
        from raw headers that cannot be bounded this way.

    Examples
    --------
    >>> import io, torch
    >>> buffer = io.BytesIO()
    >>> torch.save({"w": torch.zeros(1000)}, buffer)
    >>> pickle_allocations(buffer.getvalue(), limit=10**6)
    4000
    """
    budget = _Budget(limit)
    if isinstance(source, (bytes, bytearray, memoryview)):
        _replay_file(io.BytesIO(source), bytes(source), budget)
        return budget.total
    path = Path(source)
    if path.stat().st_size == 0:
        return 0
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        _replay_file(fh, data, budget)
    return budget.total


def _replay_file(fh, data, budget: _Budget) -> None:
    if zipfile.is_zipfile(fh):
        with zipfile.ZipFile(fh) as archive:
            for name in archive.namelist():  # every candidate: which one torch reads depends on the archive's name
                if name == "data.pkl" or name.endswith("/data.pkl"):
                    _replay(_BoundedReader(archive.read(name), budget), budget)
        return
    fh.seek(0)
    if tarfile.is_tarfile(fh):
        raise ValueError("a checkpoint in torch's pre-1.0 tar format cannot be read safely; re-save it with a "
                         "recent torch (torch.save writes the zip format)")
    reader = _BoundedReader(data, budget)
    ok, value = _replay(reader, budget)
    if ok and value == _LEGACY_MAGIC:  # torch reads on only after the magic number
        for _ in range(4):  # protocol, system information, the objects, the storage keys
            ok, _ = _replay(reader, budget)
            if not ok:
                break
