"""CRC-32C (Castagnoli) in numpy, fast enough to check multi-megabyte tensors.

TensorFlow checksums every checkpoint block and tensor with CRC-32C, which the
standard library does not provide (:func:`zlib.crc32` is the IEEE polynomial).
A byte-at-a-time loop in Python would take seconds per megabyte, so the buffer
is cut into ``n`` equal chunks whose CRCs advance in lockstep as one numpy
vector (``L`` vector steps instead of ``n * L`` scalar ones); the chunk CRCs
are then chained with a precomputed linear "shift by L zero bytes" operator.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["crc32c", "masked_crc32c", "unmask_crc32c"]

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8


def _make_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _make_table()
_TABLE_LIST = _TABLE.tolist()


def _raw_scalar(state: int, data: bytes) -> int:
    for byte in data:
        state = _TABLE_LIST[(state ^ byte) & 0xFF] ^ (state >> 8)
    return state


@lru_cache(maxsize=8)
def _zero_shift_tables(length: int) -> tuple[list[int], ...]:
    """Tables of the linear map ``state -> state after `length` zero bytes``, per state byte."""
    states = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]).ravel()
    for _ in range(length):
        states = _TABLE[states & 0xFF] ^ (states >> 8)
    return tuple(states.reshape(4, 256)[k].tolist() for k in range(4))


def _chunk_length(n: int) -> int:
    # Balance the vector steps (chunk length) against the scalar chaining (chunk count).
    length = 1 << max(4, int(np.ceil(np.log2(max(np.sqrt(n), 1.0)))))
    return min(length, 4096)


def crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """CRC-32C of a byte buffer (initial value and final xor 0xFFFFFFFF).

    Examples
    --------
    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    n = buf.size
    if n < 64:
        return _raw_scalar(0xFFFFFFFF, bytes(buf)) ^ 0xFFFFFFFF
    # For a reflected CRC, starting from state s equals starting from 0 with the
    # first four bytes xor-ed by s (little endian); leading zero bytes leave a
    # zero state unchanged, so the buffer can be left-padded to whole chunks.
    length = _chunk_length(n)
    n_chunks = -(-n // length)
    padded = np.zeros(n_chunks * length, dtype=np.uint8)
    start = padded.size - n
    padded[start:] = buf
    padded[start : start + 4] ^= 0xFF
    columns = np.ascontiguousarray(padded.reshape(n_chunks, length).T)
    states = np.zeros(n_chunks, dtype=np.uint32)
    for column in columns:
        states = _TABLE[(states ^ column) & 0xFF] ^ (states >> 8)
    t0, t1, t2, t3 = _zero_shift_tables(length)
    state = 0
    for chunk_state in states.tolist():
        state = (t0[state & 0xFF] ^ t1[(state >> 8) & 0xFF] ^ t2[(state >> 16) & 0xFF]
                 ^ t3[state >> 24] ^ chunk_state)
    return state ^ 0xFFFFFFFF


def masked_crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """CRC-32C masked the way LevelDB and TensorFlow store it next to data."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask_crc32c(masked: int) -> int:
    """Inverse of the LevelDB/TensorFlow checksum mask."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF
