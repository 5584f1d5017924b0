"""The TensorFlow checkpoint reader, on a checkpoint written by TensorFlow and on hand-made tables."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from skprobe.encoders.formats._crc32c import _raw_scalar, crc32c, masked_crc32c, unmask_crc32c
from skprobe.encoders.formats.tf_checkpoint import list_tf_checkpoint, read_tf_checkpoint, tf_checkpoint_prefix

DATA = Path(__file__).parent / "data"
TINY = DATA / "tiny_tf_checkpoint"
SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def expected_tiny() -> dict[str, np.ndarray]:
    """The values make_tiny_tf_checkpoint.py wrote."""
    values = {
        "kernel": np.arange(12, dtype=np.float32).reshape(3, 4) / 8 - 0.5,
        "bias": np.array([1.5, -2.0, 3.25, 0.0], dtype=np.float32),
        "big": np.sin(np.arange(256, dtype=np.float32)).reshape(16, 16),
        "step": np.array(-(2**40) - 7, dtype=np.int64),
        "counts": np.array([-3, 0, 7, 2**31 - 1, -(2**31)], dtype=np.int32),
        "table": np.array([[np.pi, -1e300], [1e-300, 2.0]], dtype=np.float64),
        # bfloat16 keeps the top 16 bits of float32: 3e38 rounds to 3.0040553e38
        "half": np.array([1.0, -2.5, 3.0040553e38], dtype=np.float32),
        "words": np.array([b"alpha", b"", "b\u00e9ta".encode()], dtype=object),
    }
    return {f"net/{name}{SUFFIX}": value for name, value in values.items()}


def copy_tiny(tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(TINY, target)
    return target


# -- CRC-32C -------------------------------------------------------------------


def test_crc32c_known_value_and_scalar_reference():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(b"") == 0
    rng = np.random.default_rng(0)
    for n in (1, 3, 4, 63, 64, 65, 1000, 4097, 70001):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == _raw_scalar(0xFFFFFFFF, data) ^ 0xFFFFFFFF, n


def test_crc32c_mask_round_trip():
    for value in (0, 1, 0xE3069283, 0xFFFFFFFF):
        crc = crc32c(value.to_bytes(4, "little"))
        assert unmask_crc32c(masked_crc32c(value.to_bytes(4, "little"))) == crc


# -- a checkpoint written by TensorFlow ----------------------------------------


def test_reads_every_dtype_across_shards_and_slices():
    arrays = read_tf_checkpoint(TINY)
    expected = expected_tiny()
    assert set(arrays) == set(expected) | {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    for name, value in expected.items():
        got = arrays[name]
        assert got.dtype == value.dtype and got.shape == value.shape, name
        assert (got == value).all(), name
    assert arrays["net/big" + SUFFIX].flags.writeable
    graph = arrays["_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert graph.shape == () and isinstance(graph[()], bytes) and b"net" in graph[()]


@pytest.mark.parametrize("form", ["folder", "index", "prefix"])
def test_path_forms(form):
    path = {"folder": TINY, "index": TINY / "ckpt.index", "prefix": TINY / "ckpt"}[form]
    assert tf_checkpoint_prefix(path) == TINY / "ckpt"
    assert read_tf_checkpoint(path, prefix="net/kernel")["net/kernel" + SUFFIX].shape == (3, 4)


def test_prefix_filter_and_skipping_strings():
    arrays = read_tf_checkpoint(TINY, prefix="net/", strings=False)
    assert set(arrays) == set(expected_tiny()) - {"net/words" + SUFFIX}


def test_list_tf_checkpoint():
    listed = list_tf_checkpoint(TINY)
    assert listed["net/half" + SUFFIX] == ("bfloat16", (3,))
    assert listed["net/big" + SUFFIX] == ("float32", (16, 16))
    assert listed["net/words" + SUFFIX] == ("string", (3,))
    assert not any(name.startswith("\x00") for name in listed)  # slice entries stay hidden


# -- corrupt and unsupported files ---------------------------------------------


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no TensorFlow checkpoint"):
        read_tf_checkpoint(tmp_path / "nothing")


def test_bad_magic(tmp_path):
    ckpt = copy_tiny(tmp_path)
    index = ckpt / "ckpt.index"
    data = bytearray(index.read_bytes())
    data[-1] ^= 0xFF
    index.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"ckpt\.index.*magic"):
        read_tf_checkpoint(ckpt)


def test_truncated_index(tmp_path):
    ckpt = copy_tiny(tmp_path)
    (ckpt / "ckpt.index").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match=r"ckpt\.index.*shorter than a table footer"):
        read_tf_checkpoint(ckpt)


def test_block_checksum(tmp_path):
    ckpt = copy_tiny(tmp_path)
    index = ckpt / "ckpt.index"
    data = bytearray(index.read_bytes())
    data[data.index(b"kernel")] ^= 0x01  # inside the first data block
    index.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"ckpt\.index.*checksum mismatch in block"):
        read_tf_checkpoint(ckpt)


def test_snappy_block_is_refused(tmp_path):
    (tmp_path / "ckpt.index").write_bytes(make_table([(b"", header_proto(1))], compression=1))
    with pytest.raises(ValueError, match=r"ckpt\.index.*snappy-compressed"):
        read_tf_checkpoint(tmp_path / "ckpt")


def test_tensor_checksum(tmp_path):
    ckpt = copy_tiny(tmp_path)
    shard = ckpt / "ckpt.data-00000-of-00002"
    data = bytearray(shard.read_bytes())
    data[3] ^= 0x40  # first float of net/kernel
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"checksum mismatch for variable 'net/kernel.*data-00000-of-00002"):
        read_tf_checkpoint(ckpt)
    unchecked = read_tf_checkpoint(ckpt, verify_checksums=False)["net/kernel" + SUFFIX]
    assert unchecked[0, 0] != expected_tiny()["net/kernel" + SUFFIX][0, 0]


def test_truncated_and_missing_shard(tmp_path):
    ckpt = copy_tiny(tmp_path)
    shard = ckpt / "ckpt.data-00001-of-00002"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"data-00001-of-00002, which is shorter"):
        read_tf_checkpoint(ckpt)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=r"data shard missing: .*data-00001-of-00002"):
        read_tf_checkpoint(ckpt)


# -- hand-made bundles: several data blocks, restart points, odd entries ------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value)


def header_proto(num_shards: int, endianness: int = 0) -> bytes:
    return field(1, num_shards) + field(2, endianness) + field(3, field(1, 1))


def entry_proto(dtype: int, shape: tuple[int, ...], offset: int, raw: bytes, shard: int = 0) -> bytes:
    shape_proto = b"".join(field(2, field(1, dim)) for dim in shape)
    crc = varint(6 << 3 | 5) + masked_crc32c(raw).to_bytes(4, "little")
    return (field(1, dtype) + field(2, shape_proto) + field(3, shard) + field(4, offset)
            + field(5, len(raw)) + crc)


def make_block(items: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        previous = key
    restarts = restarts or [0]
    out += b"".join(r.to_bytes(4, "little") for r in restarts) + len(restarts).to_bytes(4, "little")
    return bytes(out)


def make_table(items, per_block: int = 100, restart_interval: int = 16, compression: int = 0) -> bytes:
    out, index = bytearray(), []

    def append(block: bytes) -> bytes:
        handle = varint(len(out)) + varint(len(block))
        trailer = bytes([compression]) + masked_crc32c(block + bytes([compression])).to_bytes(4, "little")
        out.extend(block + trailer)
        return handle

    for start in range(0, len(items), per_block):
        chunk = items[start : start + per_block]
        index.append((chunk[-1][0], append(make_block(chunk, restart_interval))))
    handles = append(make_block([], 1)) + append(make_block(index, 1))
    footer = handles + b"\x00" * (40 - len(handles)) + (0xDB4775248B80FB57).to_bytes(8, "little")
    return bytes(out + footer)


def write_bundle(folder: Path, variables: dict[str, np.ndarray], **table_options) -> Path:
    data, items = bytearray(), [(b"", header_proto(1))]
    dtypes = {np.dtype(np.float32): 1, np.dtype(np.int64): 9, np.dtype(np.int32): 3}
    for name in sorted(variables):
        raw = np.ascontiguousarray(variables[name]).astype(variables[name].dtype.newbyteorder("<")).tobytes()
        items.append((name.encode(), entry_proto(dtypes[variables[name].dtype], variables[name].shape,
                                                 len(data), raw)))
        data += raw
    (folder / "b.index").write_bytes(make_table(items, **table_options))
    (folder / "b.data-00000-of-00001").write_bytes(bytes(data))
    return folder / "b"


def test_many_blocks_and_restart_points(tmp_path):
    rng = np.random.default_rng(1)
    variables = {f"model/block{i // 3}/layer{i % 3}/{kind}": rng.standard_normal((i % 4 + 1, 3)).astype(np.float32)
                 for i in range(20) for kind in ("bias", "kernel")}
    variables["model/step"] = np.array([7, -1], dtype=np.int64)
    prefix = write_bundle(tmp_path, variables, per_block=7, restart_interval=3)
    arrays = read_tf_checkpoint(prefix)
    assert list(arrays) == sorted(variables)
    for name, value in variables.items():
        np.testing.assert_array_equal(arrays[name], value)


def test_unsupported_dtype_big_endian_and_bad_protobuf(tmp_path):
    raw = b"\x00" * 8
    items = [(b"", header_proto(1)), (b"handle", entry_proto(20, (), 0, raw))]
    (tmp_path / "r.index").write_bytes(make_table(items))
    (tmp_path / "r.data-00000-of-00001").write_bytes(raw)
    with pytest.raises(ValueError, match=r"variable 'handle' in .*r\.data-00000-of-00001 has unsupported dtype resource"):
        read_tf_checkpoint(tmp_path / "r")

    (tmp_path / "e.index").write_bytes(make_table([(b"", header_proto(1, endianness=1))]))
    with pytest.raises(ValueError, match=r"e\.index.*big-endian"):
        read_tf_checkpoint(tmp_path / "e")

    (tmp_path / "p.index").write_bytes(make_table([(b"", header_proto(1)), (b"x", b"\x0a\x7f\x01")]))
    with pytest.raises(ValueError, match=r"p\.index.*runs past the message"):
        read_tf_checkpoint(tmp_path / "p")

    (tmp_path / "n.index").write_bytes(make_table([(b"x", entry_proto(1, (1,), 0, raw[:4]))]))
    with pytest.raises(ValueError, match=r"n\.index: no bundle header"):
        read_tf_checkpoint(tmp_path / "n")


def test_size_mismatch_is_reported(tmp_path):
    raw = b"\x00" * 12
    items = [(b"", header_proto(1)), (b"v", entry_proto(1, (2, 2), 0, raw))]  # 12 bytes for 4 floats
    (tmp_path / "s.index").write_bytes(make_table(items))
    (tmp_path / "s.data-00000-of-00001").write_bytes(raw)
    with pytest.raises(ValueError, match=r"cannot decode variable 'v'.*12 bytes do not hold 4 values"):
        read_tf_checkpoint(tmp_path / "s")
