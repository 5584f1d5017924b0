"""Read CTranslate2 model files (``model.bin``) without CTranslate2.

CTranslate2 (faster-whisper and friends) stores a converted model as one
``model.bin`` next to its ``config.json`` and vocabulary. The file is plain
data, written by ``ModelSpec._serialize`` of ``python/ctranslate2/specs/
model_spec.py`` (binary versions 4 to 6 share this layout; little endian)::

    uint32   binary version
    string   spec name (e.g. "WhisperSpec"),  uint32 spec revision
    uint32   number of variables, then for each:
             string name, uint8 rank, rank x uint32 dims,
             uint8 dtype id (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16),
             uint32 byte count, the raw values (row-major)
    uint32   number of aliases, then for each: string alias, string target name

where a *string* is a uint16 length (counting a final NUL), the UTF-8 bytes
and the NUL. Nothing in the file is executed. Every declared size is checked
against the file's size before anything is allocated, and a file that ends
early, carries bytes after its aliases or breaks any rule above is refused
with an error naming it.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..._files import atomic_write

__all__ = [
    "CTranslate2Model",
    "CTranslate2Variable",
    "ctranslate2_model_file",
    "list_ctranslate2_model",
    "read_ctranslate2_model",
    "write_ctranslate2_model",
]

SUPPORTED_VERSIONS = (4, 5, 6)
CURRENT_VERSION = 6
MAX_RANK = 16
# dtype id -> (name, numpy dtype used to read the bytes)
_DTYPES = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),
}
_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
        np.dtype(np.float16): 4}
# the smallest encoding of one variable: a 1-byte name + NUL with its length, rank, dtype, byte count
_MIN_VARIABLE_BYTES = 2 + 2 + 1 + 1 + 4
_MIN_ALIAS_BYTES = 2 * (2 + 2)


class _Corrupt(Exception):
    """Raised by the parser; turned into a ValueError naming the file."""


@dataclass(frozen=True)
class CTranslate2Variable:
    """Where one variable's values sit in a ``model.bin``.

    Attributes
    ----------
    name : str
        Scoped name, e.g. ``"encoder/layer_0/ffn/linear_0/weight"``.
    dtype : str
        ``"float32"``, ``"int8"``, ``"int16"``, ``"int32"``, ``"float16"`` or ``"bfloat16"``.
    shape : tuple of int
        ``()`` for a scalar.
    offset, nbytes : int
        Byte range of the raw values in the file.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class CTranslate2Model:
    """What :func:`read_ctranslate2_model` found in a ``model.bin``.

    Attributes
    ----------
    path : Path
        The file read.
    binary_version : int
    spec : str
        The model specification's name, e.g. ``"WhisperSpec"``.
    revision : int
        The specification's revision.
    variables : dict of str to CTranslate2Variable
        Every stored variable, in file order (aliases excluded).
    aliases : dict of str to str
        Alias name to the name of the variable it shares.
    arrays : dict of str to ndarray
        The values read (see :func:`read_ctranslate2_model`).
    """

    path: Path
    binary_version: int
    spec: str
    revision: int
    variables: dict[str, CTranslate2Variable]
    aliases: dict[str, str]
    arrays: dict[str, np.ndarray]


def ctranslate2_model_file(path: str | os.PathLike) -> Path:
    """The ``model.bin`` of a CTranslate2 model folder, or ``path`` itself if it is a file.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise FileNotFoundError(f"CTranslate2 model file not found: {path} (expected a model.bin or its folder)")
    return path


class _Header:
    """Sequential parser of the header fields, bounded by the file's size."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh, self.size, self.pos = fh, size, 0

    def take(self, n: int, what: str) -> bytes:
        if n > self.size - self.pos:
            raise _Corrupt(f"truncated: {what} needs {n:,} bytes at offset {self.pos:,}, but the file has "
                           f"{self.size:,} bytes")
        data = self.fh.read(n)
        if len(data) != n:
            raise _Corrupt(f"short read of {what} at offset {self.pos:,}")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> int:
        """Skip ``n`` bytes (a variable's values) and return where they start."""
        if n > self.size - self.pos:
            raise _Corrupt(f"truncated: {what} declares {n:,} bytes at offset {self.pos:,}, but only "
                           f"{self.size - self.pos:,} remain in the file")
        start = self.pos
        self.pos += n
        self.fh.seek(self.pos)
        return start

    def uint(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        length = self.uint("H", f"the length of {what}")
        raw = self.take(length, what)
        if length == 0 or raw[-1] != 0:
            raise _Corrupt(f"{what} at offset {self.pos - length:,} is not a NUL-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise _Corrupt(f"{what} at offset {self.pos - length:,} is not UTF-8") from None

    def remaining(self) -> int:
        return self.size - self.pos


def _parse(fh: BinaryIO, size: int) -> tuple[int, str, int, dict[str, CTranslate2Variable], dict[str, str]]:
    header = _Header(fh, size)
    version = header.uint("I", "the binary version")
    if version not in SUPPORTED_VERSIONS:
        raise _Corrupt(f"binary version {version}; this reader supports versions {SUPPORTED_VERSIONS[0]} to "
                       f"{SUPPORTED_VERSIONS[-1]} (CTranslate2 3.x and 4.x write {CURRENT_VERSION})")
    spec = header.string("the spec name")
    revision = header.uint("I", "the spec revision")
    count = header.uint("I", "the number of variables")
    if count * _MIN_VARIABLE_BYTES > header.remaining():
        raise _Corrupt(f"declares {count:,} variables, more than the {header.remaining():,} bytes left can hold "
                       "(truncated or corrupt)")
    variables: dict[str, CTranslate2Variable] = {}
    for index in range(count):
        name = header.string(f"the name of variable {index}")
        rank = header.uint("B", f"the rank of {name!r}")
        if rank > MAX_RANK:
            raise _Corrupt(f"variable {name!r} declares rank {rank} (at most {MAX_RANK})")
        shape = tuple(header.uint("I", f"a dimension of {name!r}") for _ in range(rank))
        type_id = header.uint("B", f"the dtype of {name!r}")
        if type_id not in _DTYPES:
            raise _Corrupt(f"variable {name!r} has unknown dtype id {type_id} (known: {sorted(_DTYPES)})")
        dtype_name, dtype = _DTYPES[type_id]
        nbytes = header.uint("I", f"the byte count of {name!r}")
        expected = math.prod(shape) * dtype.itemsize
        if nbytes != expected:
            raise _Corrupt(f"variable {name!r} of shape {shape} and dtype {dtype_name} declares {nbytes:,} bytes, "
                           f"expected {expected:,}")
        if name in variables:
            raise _Corrupt(f"variable {name!r} is stored twice")
        offset = header.skip(nbytes, f"variable {name!r}")
        variables[name] = CTranslate2Variable(name, dtype_name, shape, offset, nbytes)
    n_aliases = header.uint("I", "the number of aliases")
    if n_aliases * _MIN_ALIAS_BYTES > header.remaining():
        raise _Corrupt(f"declares {n_aliases:,} aliases, more than the {header.remaining():,} bytes left can hold "
                       "(truncated or corrupt)")
    aliases: dict[str, str] = {}
    for index in range(n_aliases):
        alias = header.string(f"alias {index}")
        target = header.string(f"the target of alias {alias!r}")
        if target not in variables:
            raise _Corrupt(f"alias {alias!r} points to {target!r}, which is not a stored variable")
        aliases[alias] = target
    if header.remaining():
        raise _Corrupt(f"{header.remaining():,} unexpected bytes after the aliases, at offset {header.pos:,}")
    return version, spec, revision, variables, aliases


def _open(path: str | os.PathLike):
    file = ctranslate2_model_file(path)
    size = file.stat().st_size
    fh = open(file, "rb")
    try:
        parsed = _parse(fh, size)
    except _Corrupt as exc:
        fh.close()
        raise ValueError(f"corrupt or unsupported CTranslate2 model file {file}: {exc}") from None
    except BaseException:
        fh.close()
        raise
    return file, fh, parsed


def list_ctranslate2_model(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Names, dtypes and shapes of the variables of a CTranslate2 model, without reading values.

    Parameters
    ----------
    path : path-like
        A ``model.bin`` or the folder holding it.

    Returns
    -------
    dict
        ``{name: (dtype name, shape)}`` in file order; aliases are listed
        with their target's dtype and shape.

    Raises
    ------
    FileNotFoundError
        If there is no model file.
    ValueError
        If the file is truncated, corrupt or of an unsupported binary version
        (the message names the file).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> path = write_ctranslate2_model(tempfile.mkdtemp() + "/model.bin", {"w": np.ones((2, 3), "float16")},
    ...                                spec="TinySpec", aliases={"v": "w"})
    >>> list_ctranslate2_model(path)
    {'w': ('float16', (2, 3)), 'v': ('float16', (2, 3))}
    """
    _, fh, (_, _, _, variables, aliases) = _open(path)
    fh.close()
    out = {name: (v.dtype, v.shape) for name, v in variables.items()}
    out.update({alias: out[target] for alias, target in aliases.items()})
    return out


def read_ctranslate2_model(
    path: str | os.PathLike,
    *,
    prefix: str = "",
    dequantize: bool = True,
) -> CTranslate2Model:
    """Read the variables of a CTranslate2 ``model.bin`` into numpy arrays.

    Parameters
    ----------
    path : path-like
        A ``model.bin`` or the folder holding it.
    prefix : str, default=""
        Read only the variables (and aliases) whose name starts with this
        string, e.g. ``"encoder/"`` (the others are skipped on disk).
    dequantize : bool, default=True
        Return int8 and int16 weights that have a ``<name>_scale`` variable as
        float32 ``value / scale`` (per row for int8, as CTranslate2 quantizes),
        and drop the scales. False returns the stored integers and scales.

    Returns
    -------
    CTranslate2Model
        ``arrays`` maps each variable (and alias) name to a writable array of
        the stored dtype and shape; bfloat16 values become float32.

    Raises
    ------
    FileNotFoundError
        If there is no model file.
    ValueError
        If the file is truncated, corrupt, of an unsupported binary version,
        or a scale does not fit its weight; the message names the file.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> path = write_ctranslate2_model(tempfile.mkdtemp() + "/model.bin",
    ...                                {"enc/w": np.arange(6, dtype="float16").reshape(2, 3),
    ...                                 "enc/n": np.array(6, dtype="int16"), "dec/w": np.zeros(4, "float32")},
    ...                                spec="TinySpec", revision=3)
    >>> model = read_ctranslate2_model(path, prefix="enc/")
    >>> model.spec, model.revision, sorted(model.arrays)
    ('TinySpec', 3, ['enc/n', 'enc/w'])
    >>> model.arrays["enc/w"]
    array([[0., 1., 2.],
           [3., 4., 5.]], dtype=float16)
    """
    file, fh, (version, spec, revision, variables, aliases) = _open(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        with fh:
            for name, var in variables.items():
                if name.startswith(prefix):
                    arrays[name] = _read_values(fh, var)
    except _Corrupt as exc:
        raise ValueError(f"corrupt CTranslate2 model file {file}: {exc}") from None
    if dequantize:
        try:
            arrays = _dequantized(arrays)
        except _Corrupt as exc:
            raise ValueError(f"cannot dequantize CTranslate2 model file {file}: {exc}") from None
    for alias, target in aliases.items():
        if alias.startswith(prefix) and target in arrays:
            arrays[alias] = arrays[target]
    return CTranslate2Model(file, version, spec, revision, variables, aliases, arrays)


def _read_values(fh: BinaryIO, var: CTranslate2Variable) -> np.ndarray:
    _, dtype = next(v for v in _DTYPES.values() if v[0] == var.dtype)
    out = np.empty(math.prod(var.shape), dtype=dtype)  # the size was checked against the file
    fh.seek(var.offset)
    if fh.readinto(memoryview(out).cast("B")) != var.nbytes:
        raise _Corrupt(f"variable {var.name!r} ends past the end of the file (it changed while being read?)")
    if var.dtype == "bfloat16":  # the upper half of a float32
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out.astype(out.dtype.newbyteorder("="), copy=False).reshape(var.shape)


def _dequantized(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(arrays)
    for name, value in arrays.items():
        if value.dtype not in (np.int8, np.int16) or name.endswith("_scale"):
            continue
        scale = arrays.get(name + "_scale")
        if scale is None:
            if value.dtype == np.int8 and name.endswith("weight"):
                raise _Corrupt(f"int8 weight {name!r} has no {name}_scale variable")
            continue  # an integer-valued variable, not a quantized weight
        scale = np.asarray(scale, dtype=np.float32)
        if scale.ndim == 1 and value.ndim >= 1 and scale.shape[0] == value.shape[0]:
            scale = scale.reshape(-1, *[1] * (value.ndim - 1))
        elif scale.size != 1:
            raise _Corrupt(f"scale of {name!r} has shape {scale.shape}, which does not fit the weight's "
                           f"{value.shape}")
        if not np.all(np.isfinite(scale)) or np.any(scale == 0):
            raise _Corrupt(f"scale of {name!r} holds zero or non-finite values")
        out[name] = value.astype(np.float32) / scale
        del out[name + "_scale"]
    return out


def write_ctranslate2_model(
    path: str | os.PathLike,
    variables: Mapping[str, np.ndarray],
    *,
    spec: str,
    revision: int = 1,
    aliases: Mapping[str, str] | None = None,
) -> Path:
    """Write arrays as a CTranslate2 ``model.bin`` (binary version 6), atomically.

    For tests and small conversions: the file holds exactly the given
    variables; a runnable CTranslate2 model also needs the variables and the
    ``config.json`` its spec expects.

    Parameters
    ----------
    path : path-like
        File to write; its folder must exist.
    variables : mapping of str to ndarray
        float32, float16, int8, int16 or int32 arrays (0-d for scalars).
    spec : str
        Specification name, e.g. ``"WhisperSpec"``.
    revision : int, default=1
    aliases : mapping of str to str, optional
        Extra names for stored variables.

    Returns
    -------
    Path
    """
    aliases = dict(aliases or {})
    entries = []
    for name, value in variables.items():
        value = np.asarray(value)
        if value.dtype not in _IDS:
            raise ValueError(f"variable {name!r}: dtype {value.dtype} cannot be written "
                             f"(use one of {sorted(str(d) for d in _IDS)})")
        entries.append((name, value.astype(value.dtype.newbyteorder("<"), order="C")))
    for alias, target in aliases.items():
        if target not in variables:
            raise ValueError(f"alias {alias!r} points to {target!r}, which is not among the variables")

    def string(text: str) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    def write(fh: BinaryIO) -> None:
        fh.write(struct.pack("<I", CURRENT_VERSION) + string(spec) + struct.pack("<II", revision, len(entries)))
        for name, value in entries:
            fh.write(string(name) + struct.pack("<B", value.ndim))
            fh.write(struct.pack(f"<{value.ndim}I", *value.shape))
            fh.write(struct.pack("<BI", _IDS[np.dtype(value.dtype.newbyteorder("="))], value.nbytes))
            fh.write(value.tobytes())
        fh.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            fh.write(string(alias) + string(target))

    return atomic_write(Path(path), write)
