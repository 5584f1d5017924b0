"""Reading a token store does not leave its rows in the process's resident set (flat memory for big stores)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from skprobe.extraction.keys import clip_key
from skprobe.extraction.store import TokenStore


def _rss_file_kb() -> int:
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("RssFile:")))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_reading_every_row_does_not_map_the_shards(tmp_path):
    store = TokenStore(tmp_path, {"encoder": "memory-test"}, row_shape=(1, 64, 64), dtype="float16")
    keys = [clip_key(np.full(4, i, np.float32)) for i in range(4096)]  # 4,096 rows x 8 KB = 32 MB
    rng = np.random.default_rng(0)
    with store.writer() as writer:
        for start in range(0, len(keys), 512):
            writer.commit(keys[start:start + 512], rng.standard_normal((512, 1, 64, 64)).astype(np.float32))
    tokens = store.array(keys, squeeze_layer=True)
    before = _rss_file_kb()
    total = 0.0
    for _ in range(2):
        for idx in np.array_split(rng.permutation(len(keys)), 64):  # random batches, as a training epoch reads
            total += float(tokens[np.sort(idx)][:, 0, 0].astype(np.float32).sum())
    assert np.isfinite(total)
    assert _rss_file_kb() - before < 8 * 1024  # through a memory map this grew by the 32 MB read


def test_rows_come_back_in_the_order_asked_with_repeats(tmp_path):
    store = TokenStore(tmp_path, {"encoder": "order-test"}, row_shape=(2,), dtype="float32")
    keys = [clip_key(np.full(4, i, np.float32)) for i in range(6)]
    with store.writer() as writer:
        writer.commit(keys[:4], np.arange(8, dtype=np.float32).reshape(4, 2))
        writer.commit(keys[4:], np.arange(8, 12, dtype=np.float32).reshape(2, 2))
    assert store.read([keys[5], keys[0], keys[2], keys[0]]).tolist() == [[10, 11], [0, 1], [4, 5], [0, 1]]
