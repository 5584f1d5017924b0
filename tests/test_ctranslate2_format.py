"""The CTranslate2 model.bin reader, on files written here (round trips, quantized weights, bad files)."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from skprobe.encoders.formats.ctranslate2 import (
    ctranslate2_model_file,
    list_ctranslate2_model,
    read_ctranslate2_model,
    write_ctranslate2_model,
)


def _variables() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "encoder/w": rng.standard_normal((3, 4)).astype(np.float32),
        "encoder/h": rng.standard_normal((2, 5, 3)).astype(np.float16),
        "encoder/num_heads": np.array(6, dtype=np.int16),
        "decoder/ids": np.array([-5, 0, 2**31 - 1], dtype=np.int32),
        "decoder/flag": np.array(1, dtype=np.int8),
        "decoder/empty": np.zeros((0, 3), dtype=np.float32),
    }


def _write(tmp_path: Path, **kwargs) -> Path:
    return write_ctranslate2_model(tmp_path / "model.bin", _variables(), spec="TestSpec", revision=2,
                                   aliases={"decoder/w_alias": "encoder/w"}, **kwargs)


def test_round_trip(tmp_path):
    path = _write(tmp_path)
    model = read_ctranslate2_model(tmp_path)  # the folder is accepted too
    assert (model.path, model.binary_version, model.spec, model.revision) == (path, 6, "TestSpec", 2)
    expected = _variables()
    assert list(model.variables) == list(expected)
    for name, value in expected.items():
        assert model.arrays[name].dtype == value.dtype and model.arrays[name].shape == value.shape, name
        np.testing.assert_array_equal(model.arrays[name], value)
        assert model.arrays[name].flags.writeable
    np.testing.assert_array_equal(model.arrays["decoder/w_alias"], expected["encoder/w"])
    assert model.aliases == {"decoder/w_alias": "encoder/w"}
    listed = list_ctranslate2_model(path)
    assert listed["encoder/h"] == ("float16", (2, 5, 3)) and listed["encoder/num_heads"] == ("int16", ())
    assert listed["decoder/w_alias"] == ("float32", (3, 4))


def test_prefix_reads_only_those_variables(tmp_path):
    _write(tmp_path)
    model = read_ctranslate2_model(tmp_path / "model.bin", prefix="encoder/")
    assert sorted(model.arrays) == ["encoder/h", "encoder/num_heads", "encoder/w"]
    assert "decoder/ids" in model.variables  # still listed, not read


def test_bfloat16_values_become_float32(tmp_path):
    # bfloat16 is the upper half of a float32: store those halves as float16 bits, then relabel the dtype id.
    values = np.array([1.0, -2.5, 3.0e38, 1.0e-3], dtype=np.float32)
    upper = (values.view(np.uint32) >> 16).astype(np.uint16)
    path = write_ctranslate2_model(tmp_path / "model.bin", {"b": upper.view(np.float16)}, spec="S")
    data = bytearray(path.read_bytes())
    header = struct.pack("<I", 6) + struct.pack("<H", 2) + b"S\0" + struct.pack("<II", 1, 1)
    dtype_at = len(header) + 2 + 2 + 1 + 4  # name "b\0", rank, one dim
    assert data[dtype_at] == 4  # float16
    data[dtype_at] = 5
    path.write_bytes(bytes(data))
    out = read_ctranslate2_model(path).arrays["b"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, (upper.astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_allclose(out, values, rtol=1e-2)


def test_quantized_weights_are_dequantized(tmp_path):
    rng = np.random.default_rng(1)
    w8 = rng.integers(-127, 128, (4, 6)).astype(np.int8)
    s8 = np.array([10.0, 20.0, 40.0, 80.0], dtype=np.float32)
    w16 = rng.integers(-1000, 1000, (3, 2)).astype(np.int16)
    path = write_ctranslate2_model(tmp_path / "model.bin", {
        "a/weight": w8, "a/weight_scale": s8, "b/weight": w16, "b/weight_scale": np.array(1024.0, np.float32),
        "a/count": np.array(3, np.int16)}, spec="S")
    arrays = read_ctranslate2_model(path).arrays
    np.testing.assert_allclose(arrays["a/weight"], w8 / s8[:, None])  # one scale per output row
    np.testing.assert_allclose(arrays["b/weight"], w16 / 1024.0)
    assert "a/weight_scale" not in arrays and arrays["a/count"].dtype == np.int16  # not a quantized weight
    raw = read_ctranslate2_model(path, dequantize=False).arrays
    assert raw["a/weight"].dtype == np.int8 and "a/weight_scale" in raw


def test_quantized_weight_without_or_with_a_bad_scale(tmp_path):
    w8 = np.ones((4, 6), np.int8)
    path = write_ctranslate2_model(tmp_path / "model.bin", {"a/weight": w8}, spec="S")
    with pytest.raises(ValueError, match=r"model.bin: int8 weight 'a/weight' has no a/weight_scale"):
        read_ctranslate2_model(path)
    path = write_ctranslate2_model(tmp_path / "model.bin", {"a/weight": w8, "a/weight_scale": np.ones(3, "float32")},
                                   spec="S")
    with pytest.raises(ValueError, match=r"scale of 'a/weight' has shape \(3,\)"):
        read_ctranslate2_model(path)


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999])
def test_truncated_file_is_refused_naming_it(tmp_path, fraction):
    path = _write(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ValueError, match=r"corrupt or unsupported CTranslate2 model file .*model\.bin: .*truncated"):
        read_ctranslate2_model(path)
    with pytest.raises(ValueError, match="model.bin"):
        list_ctranslate2_model(path)


def test_every_truncation_point_is_refused(tmp_path):
    path = _write(tmp_path)
    data = path.read_bytes()
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=str(path)):
            list_ctranslate2_model(path)


def _header(version=6, spec=b"S\0", count=1) -> bytes:
    return struct.pack("<I", version) + struct.pack("<H", len(spec)) + spec + struct.pack("<II", 1, count)


def _variable(name=b"w\0", dims=(2,), dtype=0, nbytes=8, data=b"\0" * 8) -> bytes:
    out = struct.pack("<H", len(name)) + name + struct.pack("<B", len(dims))
    out += struct.pack(f"<{len(dims)}I", *dims) + struct.pack("<BI", dtype, nbytes)
    return out + data


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_header(version=3) + _variable() + struct.pack("<I", 0), "binary version 3; this reader supports versions 4"),
        (_header(version=7) + _variable() + struct.pack("<I", 0), "binary version 7"),
        (_header(count=2**32 - 1), r"declares 4,294,967,295 variables"),
        (_header() + _variable(nbytes=12, data=b"\0" * 12) + struct.pack("<I", 0), "declares 12 bytes, expected 8"),
        (_header() + _variable(dtype=9) + struct.pack("<I", 0), "unknown dtype id 9"),
        (_header() + _variable(dims=(1,) * 17, nbytes=4, data=b"\0" * 4) + struct.pack("<I", 0), "rank 17"),
        (_header() + _variable(name=b"w") + struct.pack("<I", 0), "not a NUL-terminated string"),
        (_header() + _variable(name=b"\xff\0") + struct.pack("<I", 0), "is not UTF-8"),
        (_header(count=2) + _variable() + _variable() + struct.pack("<I", 0), "'w' is stored twice"),
        (_header() + _variable() + struct.pack("<I", 0) + b"\0\0", "2 unexpected bytes after the aliases"),
        (_header() + _variable() + struct.pack("<I", 1) + struct.pack("<H", 2) + b"a\0" + struct.pack("<H", 2)
         + b"x\0", "alias 'a' points to 'x', which is not a stored variable"),
        (_header() + _variable() + struct.pack("<I", 2**31), "declares 2,147,483,648 aliases"),
        (b"PK\x03\x04" + b"\0" * 60, "binary version 67324752"),  # a zip (torch checkpoint), not model.bin
    ],
)
def test_corrupt_file_is_refused_naming_it(tmp_path, content, message):
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"CTranslate2 model file {path}: .*{message}"):
        read_ctranslate2_model(path)


def test_a_well_formed_hand_made_file_reads():
    """The hand-made pieces above describe a valid file when nothing is wrong with them."""
    import tempfile

    path = Path(tempfile.mkdtemp()) / "model.bin"
    path.write_bytes(_header() + _variable(data=struct.pack("<2f", 1.5, -2.0)) + struct.pack("<I", 0))
    np.testing.assert_array_equal(read_ctranslate2_model(path).arrays["w"], [1.5, -2.0])


def test_declared_sizes_are_checked_before_allocating(tmp_path):
    # A consistent 3 GB variable declared in a tiny file must fail on the size check, not allocate.
    path = tmp_path / "model.bin"
    n = 3 * 2**30
    path.write_bytes(_header() + _variable(dims=(n,), dtype=1, nbytes=n, data=b"\0" * 16) + struct.pack("<I", 0))
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"truncated: variable 'w' declares 3,221,225,472 bytes"):
        read_ctranslate2_model(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a model.bin or its folder"):
        ctranslate2_model_file(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        read_ctranslate2_model(tmp_path / "nope.bin")


def test_writer_refuses_unsupported_values(tmp_path):
    with pytest.raises(ValueError, match="dtype float64 cannot be written"):
        write_ctranslate2_model(tmp_path / "m.bin", {"x": np.zeros(2)}, spec="S")
    with pytest.raises(ValueError, match="alias 'a' points to 'y'"):
        write_ctranslate2_model(tmp_path / "m.bin", {"x": np.zeros(2, "float32")}, spec="S", aliases={"a": "y"})
    assert not (tmp_path / "m.bin").exists()
