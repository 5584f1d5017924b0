"""Read TensorFlow 2 checkpoints (tensor bundles) without TensorFlow.

A checkpoint written by ``tf.train.Checkpoint`` or found in a SavedModel's
``variables/`` folder is a *tensor bundle*:

- ``<prefix>.index``: a LevelDB-format table (SSTable). Its data blocks hold
  sorted, prefix-compressed keys with restart points; an index block points to
  the data blocks; a 48-byte footer ends with a magic number. The value stored
  under the empty key is a ``BundleHeaderProto`` (number of shards, byte order);
  every other key is a variable name whose value is a ``BundleEntryProto``
  (dtype, shape, shard, offset, size, masked CRC-32C).
- ``<prefix>.data-0000N-of-0000M``: the raw tensor bytes, little endian.

Only the protobuf wire format is needed to decode the two messages, so this
module parses varints and length-delimited fields itself and imports neither
``tensorflow`` nor ``protobuf``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._crc32c import crc32c, unmask_crc32c

__all__ = ["read_tf_checkpoint", "list_tf_checkpoint", "tf_checkpoint_prefix"]

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER_SIZE = 5  # compression type byte + masked crc32c
_COMPRESSION_NAMES = {1: "snappy", 2: "zlib", 3: "bzip2", 4: "lz4", 5: "lz4hc", 6: "xpress", 7: "zstd"}

# tensorflow/core/framework/types.proto
_DT_STRING = 7
_DT_BFLOAT16 = 14
_NUMPY_DTYPES = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
    8: np.complex64, 9: np.int64, 10: np.bool_, 17: np.uint16, 18: np.complex128,
    19: np.float16, 22: np.uint32, 23: np.uint64,
}
_DTYPE_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8", 13: "qint32",
    14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16", 18: "complex128", 19: "float16",
    20: "resource", 21: "variant", 22: "uint32", 23: "uint64",
}


class _Corrupt(Exception):
    """Raised by the low-level parsers; turned into a ValueError naming the file."""


@dataclass(frozen=True)
class _Entry:
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None
    slices: tuple[tuple[tuple[int, int], ...], ...]  # per slice: (start, length) per dim, -1 = full


# -- protobuf wire format -----------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Corrupt("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Corrupt("varint longer than 10 bytes")


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field number, wire type, value)`` of a serialized protobuf message."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise _Corrupt("protobuf field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise _Corrupt("truncated fixed64 field")
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise _Corrupt("length-delimited field runs past the message")
            value, pos = bytes(buf[pos : pos + length]), pos + length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise _Corrupt("truncated fixed32 field")
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise _Corrupt(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for field, wire, value in _proto_fields(buf):
        if field == 2 and wire == 2:  # repeated Dim dim
            size = 0
            for f, w, v in _proto_fields(value):
                if f == 1 and w == 0:
                    size = _signed64(v)
            if size < 0:
                raise _Corrupt(f"tensor dimension of unknown size ({size})")
            dims.append(size)
        elif field == 3 and wire == 0 and value:
            raise _Corrupt("tensor shape of unknown rank")
    return tuple(dims)


def _parse_entry(buf: bytes) -> _Entry:
    fields: dict[str, object] = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0,
                                 "crc32c": None, "slices": ()}
    for field, wire, value in _proto_fields(buf):
        if field == 1 and wire == 0:
            fields["dtype"] = value
        elif field == 2 and wire == 2:
            fields["shape"] = _parse_shape(value)
        elif field == 3 and wire == 0:
            fields["shard_id"] = value
        elif field == 4 and wire == 0:
            fields["offset"] = _signed64(value)
        elif field == 5 and wire == 0:
            fields["size"] = _signed64(value)
        elif field == 6 and wire == 5:
            fields["crc32c"] = value
        elif field == 7 and wire == 2:
            fields["slices"] += (_parse_slice(value),)  # type: ignore[operator]
    return _Entry(**fields)  # type: ignore[arg-type]


def _parse_slice(buf: bytes) -> tuple[tuple[int, int], ...]:
    extents = []
    for field, wire, value in _proto_fields(buf):
        if field == 1 and wire == 2:  # repeated Extent extent
            start, length = 0, -1
            for f, w, v in _proto_fields(value):
                if f == 1 and w == 0:
                    start = _signed64(v)
                elif f == 2 and w == 0:
                    length = _signed64(v)
            extents.append((start, length))
    return tuple(extents)


def _parse_header(buf: bytes) -> tuple[int, int]:
    """``(num_shards, endianness)`` of a ``BundleHeaderProto`` (0 = little endian)."""
    num_shards, endianness = 1, 0
    for field, wire, value in _proto_fields(buf):
        if field == 1 and wire == 0:
            num_shards = value
        elif field == 2 and wire == 0:
            endianness = value
    return num_shards, endianness


# -- LevelDB table (SSTable) --------------------------------------------------


def _block_handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int, verify: bool) -> bytes:
    end = offset + size + _BLOCK_TRAILER_SIZE
    if offset < 0 or end > len(data):
        raise _Corrupt(f"block at offset {offset} (size {size}) runs past the end of the file")
    compression = data[offset + size]
    if compression != 0:
        name = _COMPRESSION_NAMES.get(compression, f"type {compression}")
        raise _Corrupt(f"block at offset {offset} is {name}-compressed; only uncompressed tables "
                       "are supported (TensorFlow writes checkpoints uncompressed)")
    block = data[offset : offset + size]
    if verify:
        stored = int.from_bytes(data[offset + size + 1 : end], "little")
        if unmask_crc32c(stored) != crc32c(data[offset : offset + size + 1]):
            raise _Corrupt(f"checksum mismatch in block at offset {offset}")
    return block


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Corrupt("block shorter than its restart count")
    n_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * n_restarts
    if n_restarts == 0 or limit < 0:
        raise _Corrupt(f"bad restart count {n_restarts} in a block of {len(block)} bytes")
    restarts = set(struct.unpack_from(f"<{n_restarts}I", block, limit))
    key = b""
    pos = 0
    while pos < limit:
        at_restart = pos in restarts
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if (at_restart and shared) or shared > len(key) or pos + unshared + value_len > limit:
            raise _Corrupt(f"bad key/value lengths at offset {pos} of a block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_len]
        pos += value_len


def _table_items(data: bytes, verify: bool) -> Iterator[tuple[bytes, bytes]]:
    if len(data) < _FOOTER_SIZE:
        raise _Corrupt(f"file of {len(data)} bytes is shorter than a table footer")
    footer = data[-_FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != _TABLE_MAGIC:
        raise _Corrupt("no LevelDB table magic number at the end of the file")
    _, _, pos = _block_handle(footer, 0)  # metaindex block: unused by tensor bundles
    index_offset, index_size, _ = _block_handle(footer, pos)
    index = _read_block(data, index_offset, index_size, verify)
    for _, handle in _block_entries(index):
        offset, size, _ = _block_handle(handle, 0)
        yield from _block_entries(_read_block(data, offset, size, verify))


# -- keys of variable slices (tensorflow/core/lib/strings/ordered_code.cc) -----


def _num_increasing(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([len(body)]) + body


def _signed_num_increasing(value: int) -> bytes:
    magnitude = ~value if value < 0 else value
    length = 1
    while magnitude >= 1 << (7 * length - 1):
        length += 1
    body = bytearray((value & ((1 << (8 * length)) - 1)).to_bytes(length, "big"))
    header = ((0xFFFF << (16 - length)) & 0xFFFF).to_bytes(2, "big")  # `length` leading one bits
    body[0] ^= header[0]
    if length > 1:
        body[1] ^= header[1]
    return bytes(body)


def _slice_key(name: str, extents: tuple[tuple[int, int], ...]) -> bytes:
    escaped = b"".join({0: b"\x00\xff", 255: b"\xff\x00"}.get(c, bytes([c])) for c in name.encode())
    key = _num_increasing(0) + escaped + b"\x00\x01" + _num_increasing(len(extents))
    for start, length in extents:
        key += _signed_num_increasing(start) + _signed_num_increasing(length)
    return key


# -- tensor bundle ------------------------------------------------------------


def tf_checkpoint_prefix(path: str | os.PathLike) -> Path:
    """The checkpoint prefix (``.../variables/variables``) for a folder, index file or prefix.

    Accepts a SavedModel folder, its ``variables/`` folder, the ``.index`` file
    or the prefix itself.

    Raises
    ------
    FileNotFoundError
        If no ``<prefix>.index`` file is found.
    """
    path = Path(path).expanduser()
    candidates = []
    if path.is_dir():
        candidates += [path / "variables", path / "variables" / "variables"]
        candidates += sorted(p.with_suffix("") for p in path.glob("*.index"))
    elif path.suffix == ".index":
        candidates.append(path.with_suffix(""))
    else:
        candidates.append(path)
    for prefix in candidates:
        if prefix.with_name(prefix.name + ".index").is_file():
            return prefix
    raise FileNotFoundError(
        f"no TensorFlow checkpoint at {path}: expected a <prefix>.index file, a variables/ "
        "folder or a SavedModel folder"
    )


def _read_index(prefix: Path, verify: bool) -> tuple[int, dict[str, _Entry], dict[bytes, _Entry]]:
    """``(num_shards, variables, slice entries keyed by their encoded key)``."""
    index_file = prefix.with_name(prefix.name + ".index")
    data = index_file.read_bytes()
    num_shards, entries, slice_entries = None, {}, {}
    try:
        for key, value in _table_items(data, verify):
            if key == b"":
                num_shards, endianness = _parse_header(value)
                if endianness != 0:
                    raise _Corrupt("big-endian checkpoints are not supported")
            elif key.startswith(b"\x00"):  # one slice of a partitioned variable
                slice_entries[key] = _parse_entry(value)
            else:
                entries[key.decode("utf-8", errors="replace")] = _parse_entry(value)
    except _Corrupt as exc:
        raise ValueError(f"corrupt or unsupported TensorFlow checkpoint index {index_file}: {exc}") from None
    if num_shards is None:
        raise ValueError(f"corrupt TensorFlow checkpoint index {index_file}: no bundle header entry")
    return num_shards, entries, slice_entries


def list_tf_checkpoint(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Names, dtypes and shapes of the variables in a TensorFlow checkpoint.

    Parameters
    ----------
    path : path-like
        SavedModel folder, ``variables/`` folder, ``.index`` file or prefix.

    Returns
    -------
    dict
        ``{name: (dtype name, shape)}`` in the checkpoint's (sorted) order.

    Examples
    --------
    >>> list_tf_checkpoint("tests/data/tiny_tf_checkpoint")["net/kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    ('float32', (3, 4))
    """
    _, entries, _ = _read_index(tf_checkpoint_prefix(path), verify=True)
    return {name: (_DTYPE_NAMES.get(e.dtype, f"dtype {e.dtype}"), e.shape) for name, e in entries.items()}


def read_tf_checkpoint(
    path: str | os.PathLike,
    *,
    prefix: str = "",
    strings: bool = True,
    verify_checksums: bool = True,
) -> dict[str, np.ndarray]:
    """Read the variables of a TensorFlow 2 checkpoint into numpy arrays.

    Parameters
    ----------
    path : path-like
        SavedModel folder, its ``variables/`` folder, a ``<prefix>.index`` file
        or the checkpoint prefix.
    prefix : str, default=""
        Read only variables whose name starts with this string.
    strings : bool, default=True
        Return string tensors as object arrays of :class:`bytes`; False skips them.
    verify_checksums : bool, default=True
        Check the CRC-32C of every table block and tensor.

    Returns
    -------
    dict of str to ndarray
        Variable name (e.g. ``"net/kernel/.ATTRIBUTES/VARIABLE_VALUE"``) to an
        array of the stored dtype and shape, in the checkpoint's sorted order.
        Variables split into slices (possibly across shards) are reassembled.

    Raises
    ------
    FileNotFoundError
        If the index or a data shard is missing.
    ValueError
        If a file is truncated or corrupt (bad magic, checksum, protobuf), is
        compressed or big endian, or holds a dtype this reader does not
        support; the message names the file.

    Examples
    --------
    >>> arrays = read_tf_checkpoint("tests/data/tiny_tf_checkpoint", prefix="net/")
    >>> arrays["net/bias/.ATTRIBUTES/VARIABLE_VALUE"]
    array([ 1.5 , -2.  ,  3.25,  0.  ], dtype=float32)
    """
    ckpt = tf_checkpoint_prefix(path)
    num_shards, entries, slice_entries = _read_index(ckpt, verify_checksums)
    shards = _ShardFiles(ckpt, num_shards)
    out: dict[str, np.ndarray] = {}
    try:
        for name, entry in entries.items():
            if not name.startswith(prefix) or (entry.dtype == _DT_STRING and not strings):
                continue
            if entry.slices:
                out[name] = _read_sliced(shards, name, entry, slice_entries, verify_checksums)
            else:
                out[name] = _read_tensor(shards, name, entry, verify_checksums)
    finally:
        shards.close()
    return out


class _ShardFiles:
    """Lazily opened data shards ``<prefix>.data-0000N-of-0000M``."""

    def __init__(self, prefix: Path, num_shards: int) -> None:
        self.prefix, self.num_shards, self.files = prefix, num_shards, {}

    def path(self, shard: int) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, name: str, entry: _Entry) -> tuple[bytes, Path]:
        if not 0 <= entry.shard_id < self.num_shards:
            raise ValueError(f"corrupt TensorFlow checkpoint {self.prefix}.index: variable {name!r} is "
                             f"in shard {entry.shard_id} but the bundle has {self.num_shards} shard(s)")
        path = self.path(entry.shard_id)
        if entry.shard_id not in self.files:
            if not path.is_file():
                raise FileNotFoundError(f"TensorFlow checkpoint data shard missing: {path}")
            self.files[entry.shard_id] = open(path, "rb")
        fh = self.files[entry.shard_id]
        fh.seek(max(entry.offset, 0))
        raw = fh.read(entry.size)
        if entry.offset < 0 or len(raw) != entry.size:
            raise ValueError(f"corrupt TensorFlow checkpoint: variable {name!r} needs bytes "
                             f"{entry.offset}..{entry.offset + entry.size} of {path}, which is shorter")
        return raw, path

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


def _read_sliced(shards: _ShardFiles, name: str, entry: _Entry, slice_entries: dict[bytes, _Entry],
                 verify: bool) -> np.ndarray:
    parts = []
    for extents in entry.slices:
        if len(extents) != len(entry.shape):
            raise ValueError(f"corrupt TensorFlow checkpoint {shards.prefix}.index: slice {extents} of "
                             f"variable {name!r} does not match its shape {entry.shape}")
        part = slice_entries.get(_slice_key(name, extents))
        if part is None:
            raise ValueError(f"corrupt TensorFlow checkpoint {shards.prefix}.index: slice {extents} of "
                             f"variable {name!r} has no entry")
        index = tuple(slice(0, None) if length < 0 else slice(start, start + length)
                      for start, length in extents)
        parts.append((index, _read_tensor(shards, name, part, verify)))
    out = np.zeros(entry.shape, dtype=parts[0][1].dtype)
    for index, values in parts:
        if out[index].shape != values.shape:
            raise ValueError(f"corrupt TensorFlow checkpoint {shards.prefix}.index: a slice of variable "
                             f"{name!r} has shape {values.shape}, expected {out[index].shape}")
        out[index] = values
    return out


def _read_tensor(shards: _ShardFiles, name: str, entry: _Entry, verify: bool) -> np.ndarray:
    if entry.dtype not in _NUMPY_DTYPES and entry.dtype not in (_DT_STRING, _DT_BFLOAT16):
        kind = _DTYPE_NAMES.get(entry.dtype, f"unknown dtype {entry.dtype}")
        raise ValueError(f"variable {name!r} in {shards.path(entry.shard_id)} has unsupported dtype {kind}")
    raw, path = shards.read(name, entry)
    where = f"variable {name!r} in {path}"
    if verify and entry.crc32c is not None and entry.size and entry.dtype != _DT_STRING:
        if unmask_crc32c(entry.crc32c) != crc32c(raw):
            raise ValueError(f"corrupt TensorFlow checkpoint: checksum mismatch for {where}")
    count = int(np.prod(entry.shape, dtype=np.int64))
    try:
        if entry.dtype == _DT_STRING:
            array = np.empty(count, dtype=object)
            array[:] = _decode_strings(raw, count, entry.crc32c if verify else None)
            return array.reshape(entry.shape)
        dtype = np.dtype("<u2" if entry.dtype == _DT_BFLOAT16 else _NUMPY_DTYPES[entry.dtype]).newbyteorder("<")
        if dtype.itemsize * count != entry.size:
            raise _Corrupt(f"{entry.size} bytes do not hold {count} values of {dtype.itemsize} bytes")
        array = np.frombuffer(raw, dtype=dtype).reshape(entry.shape)
        if entry.dtype == _DT_BFLOAT16:  # bfloat16 is the upper half of a float32
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array.astype(dtype.newbyteorder("="))  # a writable native-order copy
    except _Corrupt as exc:
        raise ValueError(f"corrupt TensorFlow checkpoint: cannot decode {where}: {exc}") from None


def _decode_strings(raw: bytes, count: int, masked_crc: int | None) -> list[bytes]:
    # Layout: varint length of each element, a 4-byte masked checksum of the
    # lengths, then the bytes. The entry's checksum covers the lengths as
    # fixed-width integers (not varints), the length checksum and the bytes.
    lengths, pos = [], 0
    for _ in range(count):
        length, pos = _varint(raw, pos)
        lengths.append(length)
    length_crc = raw[pos : pos + 4]
    pos += 4
    if pos + sum(lengths) != len(raw):
        raise _Corrupt(f"string lengths {lengths[:4]} do not match {len(raw)} stored bytes")
    if masked_crc is not None:
        fixed = b"".join(n.to_bytes(4 if n <= 0xFFFFFFFF else 8, "little") for n in lengths)
        if unmask_crc32c(int.from_bytes(length_crc, "little")) != crc32c(fixed):
            raise _Corrupt("checksum mismatch in the string lengths")
        if unmask_crc32c(masked_crc) != crc32c(fixed + length_crc + raw[pos:]):
            raise _Corrupt("checksum mismatch")
    values = []
    for length in lengths:
        values.append(bytes(raw[pos : pos + length]))
        pos += length
    return values
