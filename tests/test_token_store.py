"""Token store: format, atomic commits, concurrent writers, damage, bad folders, store-backed arrays."""

import errno
import json
import pickle
import zlib

import numpy as np
import pytest

from skprobe.extraction import StoreArray, StoreError, TokenStore
from skprobe.extraction.keys import clip_key
from skprobe.extraction.store import StoreWriter
from skprobe.extraction.store.index import scan_records


def _keys(n, start=0):
    return [clip_key(np.full(4, i, np.float32)) for i in range(start, start + n)]


def _tokens(n, shape=(2, 5, 3), seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _store(root, **kw):
    return TokenStore(root, {"encoder": "x"}, (2, 5, 3), **kw)


def _records(store):
    return scan_records(store.folder)


def _temp_files(root):
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_clip_keys_are_stable_across_versions():
    """A stored clip is found again only if its key is computed as when it was stored: pin one key."""
    samples = np.arange(4, dtype=np.float32) / 4
    expected = "ad69b9328fed037be289a5c9c04bf3518dff94fe414b3ce2dd59d447b2d721fb"  # sha256(b"4@16000" + samples)
    assert clip_key(samples, 16000) == expected
    assert clip_key(samples.astype(np.float64), 16000) == expected  # float32 samples whatever the input dtype
    assert clip_key(np.repeat(samples, 2)[::2], 16000) == expected  # a strided view hashes its samples
    assert clip_key(samples, 44100) != expected


def test_round_trip_is_float16_on_disk_and_memory_mapped(tmp_path):
    store = _store(tmp_path)
    keys, tokens = _keys(3), _tokens(3)
    assert store.missing(keys) == keys and len(store) == 0
    with store.writer() as writer:
        assert writer.commit(keys, tokens) == 3
    assert store.missing(keys + keys[:1]) == [] and len(store) == 3
    got = store.read(keys[::-1])
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, tokens[::-1].astype(np.float16))
    shards = list((store.folder / "shards").glob("*.bin"))
    assert len(shards) == 1 and shards[0].stat().st_size == 3 * 2 * 5 * 3 * 2  # raw float16 rows
    meta = json.loads((store.folder / "store.json").read_text())
    assert meta["dtype"] == "float16" and meta["row_shape"] == [2, 5, 3] and meta["config"] == {"encoder": "x"}
    # A fresh handle (another process) sees the same rows.
    np.testing.assert_array_equal(_store(tmp_path).read(keys), got[::-1])


def test_float32_store(tmp_path):
    store = _store(tmp_path, dtype="float32")
    tokens = _tokens(2) * 1e6
    with store.writer() as writer:
        writer.commit(_keys(2), tokens)
    np.testing.assert_array_equal(store.read(_keys(2)), tokens)
    assert store.config_key != _store(tmp_path).config_key


def test_a_clip_is_never_stored_twice(tmp_path):
    store = _store(tmp_path)
    keys = _keys(4)
    with store.writer() as a, _store(tmp_path).writer() as b:
        assert a.commit(keys[:3], _tokens(3)) == 3
        # b's batch overlaps a's and repeats one key: only the new clip is written.
        assert b.commit([keys[2], keys[3], keys[3]], _tokens(3, seed=1)) == 1
    records = _records(store)
    assert len(records) == 4 and len(np.unique(records["key"])) == 4
    np.testing.assert_array_equal(store.read(keys[2:3]), _tokens(3)[2:3].astype(np.float16))  # the first commit


def test_non_finite_and_float16_overflow_are_refused(tmp_path):
    store = _store(tmp_path)
    bad = _tokens(1)
    bad[0, 0, 0, 0] = np.nan
    with store.writer() as writer:
        with pytest.raises(ValueError, match="NaN or infinite"):
            writer.commit(_keys(1), bad)
        with pytest.raises(ValueError, match="float16 range.*float32"):
            writer.commit(_keys(1), _tokens(1) * 1e6)
    assert store.missing(_keys(1)) == _keys(1)


def test_tampered_row_is_detected_on_read(tmp_path):
    store = _store(tmp_path)
    keys = _keys(2)
    with store.writer() as writer:
        writer.commit(keys, _tokens(2))
    shard = next((store.folder / "shards").glob("*.bin"))
    data = np.fromfile(shard, np.float16)
    data[30 + 7] = np.nan  # second row
    data.tofile(shard)
    fresh = _store(tmp_path)
    fresh.read(keys[:1])  # the untouched row is fine
    with pytest.raises(StoreError, match=f"token store {fresh.folder}: row 1 .*damaged.*delete the store folder"):
        fresh.read(keys[1:])


def test_interrupted_commit_leaves_no_entry_and_no_temp_file(tmp_path, monkeypatch):
    store = _store(tmp_path)
    keys = _keys(3)
    writer = store.writer()
    writer.commit(keys[:1], _tokens(1))

    def crash(fh, *args, **kwargs):
        fh.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        writer.commit(keys[1:2], _tokens(1, seed=1))
    monkeypatch.undo()
    assert _temp_files(tmp_path) == []
    assert _store(tmp_path).missing(keys) == keys[1:]
    # The shard was cut back, so the writer goes on where it was.
    writer.commit(keys[1:], _tokens(2, seed=2))
    writer.close()
    np.testing.assert_array_equal(_store(tmp_path).read(keys[1:]), _tokens(2, seed=2).astype(np.float16))


def test_full_disk_names_the_folder_and_keeps_the_store_readable(tmp_path, monkeypatch):
    store = _store(tmp_path)
    keys = _keys(3)
    writer = store.writer()
    writer.commit(keys[:1], _tokens(1))
    real_append = StoreWriter._append

    def full(self, rows):
        self._fh = self._fh or open(self.store.folder / "shards" / f"{self.shard}.bin", "ab")
        self._fh.write(rows.tobytes()[:7])  # a partial write, then ENOSPC
        self._fh.flush()
        self._rows += len(rows)
        self._rollback(len(rows))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(StoreWriter, "_append", full)
    with pytest.raises(StoreError, match=f"cannot write to token store {store.folder}: the disk is full"):
        writer.commit(keys[1:], _tokens(2))
    monkeypatch.setattr(StoreWriter, "_append", real_append)
    fresh = _store(tmp_path)
    assert fresh.missing(keys) == keys[1:]
    np.testing.assert_array_equal(fresh.read(keys[:1]), _tokens(1).astype(np.float16))
    writer.commit(keys[1:], _tokens(2))  # space freed: the same writer goes on
    writer.close()
    assert _store(tmp_path).missing(keys) == []


def test_unwritable_folder_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = TokenStore(blocker / "tokens", {"encoder": "x"}, (1,))
    with pytest.raises(StoreError, match=f"cannot write to token store {store.folder}"):
        store.writer()
    with pytest.raises(StoreError, match=f"token store {blocker} is a file"):
        TokenStore(blocker, {"encoder": "x"}, (1,))


def test_store_of_another_configuration_is_named(tmp_path):
    store = _store(tmp_path)
    with store.writer() as writer:
        writer.commit(_keys(1), _tokens(1))
    meta = json.loads((store.folder / "store.json").read_text())
    meta["config"] = {"encoder": "other"}
    (store.folder / "store.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=f"token store {store.folder} was made by another configuration"):
        _store(tmp_path)


def test_old_per_clip_cache_gets_a_clear_message(tmp_path):
    old = tmp_path / "0123456789abcdef01234567"
    (old / "ab").mkdir(parents=True)
    (old / "config.json").write_text("{}")
    np.save(old / "ab" / "ab12.npy", np.zeros(3, np.float16))
    with pytest.warns(UserWarning, match="1 old per-clip token cache folder.*Delete"):
        _store(tmp_path)
    with pytest.raises(StoreError, match=f"{old} is the folder of an old per-clip token cache"):
        _store(old)


def test_claims_split_work_between_live_writers(tmp_path):
    keys = _keys(6)
    a, b = _store(tmp_path).writer(), _store(tmp_path).writer()
    todo_a, elsewhere_a = a.claim(keys[:4])
    todo_b, elsewhere_b = b.claim(keys)
    assert (todo_a, elsewhere_a) == (keys[:4], [])
    assert (todo_b, elsewhere_b) == (keys[4:], keys[:4])
    a.commit(keys[:4], _tokens(4))
    assert b.wait(keys[:4]) == []  # stored by a
    extra = _keys(2, start=10)
    a.claim(extra[:1])
    a.close()  # gave up without committing: its claim is gone
    assert b.wait(extra[:1]) == extra[:1]  # for b to compute
    # A writer killed with its claim file left behind: a dead pid on this host frees its claim.
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claim = {"host": socket.gethostname(), "pid": int(dead.stdout), "keys": extra[1:]}
    (b.store.folder / "claims" / "killed.json").write_text(json.dumps(claim))
    assert b.claim(extra[1:]) == (extra[1:], [])
    b.close()


def test_store_array_indexing(tmp_path):
    store = _store(tmp_path)
    keys, tokens = _keys(5), _tokens(5).astype(np.float16)
    with store.writer() as writer:
        writer.commit(keys[:3], tokens[:3])
        writer.commit(keys[3:], tokens[3:])
    arr = store.array(keys)
    assert isinstance(arr, StoreArray)
    assert (arr.shape, arr.dtype, arr.ndim, len(arr)) == ((5, 2, 5, 3), np.float16, 4, 5)
    np.testing.assert_array_equal(arr[1], tokens[1])
    np.testing.assert_array_equal(arr[-1], tokens[-1])
    np.testing.assert_array_equal(arr[1:4], tokens[1:4])
    np.testing.assert_array_equal(arr[np.array([4, 0, 4])], tokens[[4, 0, 4]])
    np.testing.assert_array_equal(arr[np.array([True, False, True, False, True])], tokens[::2])
    np.testing.assert_array_equal(arr[2:, 0], tokens[2:, 0])
    np.testing.assert_array_equal(np.asarray(arr), tokens)
    assert np.asarray(arr, dtype=np.float32).dtype == np.float32
    with pytest.raises(IndexError):
        arr[5]
    squeezed = store.array(keys, squeeze_layer=True)
    assert squeezed.shape == (5, 5, 3)
    np.testing.assert_array_equal(squeezed[2], tokens[2, 0])
    copy = pickle.loads(pickle.dumps(squeezed))
    assert len(pickle.dumps(squeezed)) < 4000  # keys and the store's description, no tokens
    np.testing.assert_array_equal(np.asarray(copy), tokens[:, 0])
    with pytest.raises(KeyError, match="has no tokens for clip key"):
        store.array(_keys(1, start=10))


def test_check_value_is_the_crc_of_row_and_key(tmp_path):
    store = _store(tmp_path)
    store.compaction = None  # keep the segment
    with store.writer() as writer:
        writer.commit(_keys(1), _tokens(1))
    record = np.load(next((store.folder / "index").glob("*.npy")))[0]
    row = _tokens(1)[0].astype(np.float16).tobytes()
    key = bytes.fromhex(_keys(1)[0])
    assert record["check"] == zlib.crc32(key, zlib.crc32(row)) == zlib.crc32(row + key)


def test_store_array_pickles_without_the_loaded_index(tmp_path):
    """joblib/Dask ship a StoreArray to every task: its pickle holds the description and the keys, not the index."""
    store = TokenStore(tmp_path, {"encoder": "demo"}, row_shape=(1, 4, 3))
    keys = [clip_key(np.full(10, i, dtype="float32")) for i in range(2000)]
    with store.writer() as writer:
        writer.commit(keys, np.ones((2000, 1, 4, 3), dtype="float32"))
    small = store.array(keys[:10], squeeze_layer=True)
    copy = pickle.loads(pickle.dumps(small))
    assert len(pickle.dumps(small)) < 2000  # 2,000 clips in the store, 10 keys in the array
    np.testing.assert_array_equal(np.asarray(copy), np.asarray(small))


# -- claims: liveness that survives pid reuse, a timeout, malformed files (reliability items 6 and 9) --------

def _leftover_claim(store, name, keys, pid, lock=True):
    import socket

    claim = {"host": socket.gethostname(), "pid": pid, "keys": keys}
    if lock:
        claim["lock"] = f"{name}.lock"
        (store.folder / "claims" / f"{name}.lock").touch()  # its writer died: nobody holds the lock
    (store.folder / "claims" / f"{name}.json").write_text(json.dumps(claim))


def test_leftover_claim_of_a_live_pid_does_not_block(tmp_path):
    keys = _keys(3)
    writer = _store(tmp_path).writer()
    _leftover_claim(writer.store, "20240101000000-0123456789ab", keys[:2], pid=1)  # pid 1 always runs
    assert writer.claim(keys) == (keys, [])  # the lock says its writer is gone, whatever runs as pid 1
    assert not (writer.store.folder / "claims" / "20240101000000-0123456789ab.json").exists()  # cleared
    writer.close()


def test_claim_of_a_live_writer_in_another_process_is_honoured_until_it_dies(tmp_path):
    import signal
    import subprocess
    import sys

    keys = _keys(4)
    script = ("import sys, time\nfrom skprobe.extraction.store import TokenStore\n"
              "w = TokenStore(sys.argv[1], {'encoder': 'x'}, (2, 5, 3)).writer()\n"
              "print(w.claim(sys.argv[2:])[0] == sys.argv[2:], flush=True)\ntime.sleep(60)\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), *keys[:2]], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "True"
        writer = _store(tmp_path).writer()
        assert writer.claim(keys) == (keys[2:], keys[:2])  # computing elsewhere
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert writer.wait(keys[:2]) == keys[:2]  # its writer was killed: the claim is free at once
    writer.close()


def test_claim_of_an_earlier_version_with_a_live_pid_times_out_with_a_message(tmp_path):
    keys = _keys(2)
    writer = _store(tmp_path).writer(claim_timeout=0.3)
    _leftover_claim(writer.store, "old-writer", keys, pid=1, lock=False)  # no lock file: judged by pid and age
    assert writer.claim(keys) == ([], keys)
    with pytest.warns(UserWarning, match=r"old-writer.json: writer old-writer \(host .*, pid 1\) has not renewed "
                                         r"its claim on 2 clip\(s\).*computing them here"):
        assert writer.wait(keys) == keys
    writer.close()


@pytest.mark.parametrize("payload", ['{"host": 5}', "not json", '{"host": "h", "pid": 3, "keys": ["zz"]}', "[]"])
def test_malformed_claim_file_is_ignored_with_a_warning(tmp_path, payload):
    keys = _keys(2)
    writer = _store(tmp_path).writer()
    (writer.store.folder / "claims" / "odd.json").write_text(payload)
    with pytest.warns(UserWarning, match="ignoring .*odd.json: not a claim file"):
        assert writer.claim(keys) == (keys, [])
    writer.close()


# -- damaged or foreign files name the store and the file (reliability item 10) ----------------------------

def _committed(tmp_path, n=3):
    store = _store(tmp_path)
    store.compaction = None  # keep the segment as written
    with store.writer() as writer:
        writer.commit(_keys(n), _tokens(n))
    return store, next((store.folder / "shards").glob("*.bin")), next((store.folder / "index").glob("*.npy"))


def test_deleted_or_truncated_shard_names_the_file(tmp_path):
    store, shard, _ = _committed(tmp_path)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 10])  # the last row is cut
    fresh = _store(tmp_path)
    fresh.read(_keys(2))
    with pytest.raises(StoreError, match=f"token store {store.folder}: the index points at row 2 of shard file "
                                         f"{shard}, which holds 2 rows"):
        fresh.read(_keys(3))
    shard.unlink()
    with pytest.raises(StoreError, match=f"token store {store.folder}: shard file {shard} is missing"):
        _store(tmp_path).read(_keys(1))


def test_index_row_past_the_shard_end_names_the_file(tmp_path):
    store, shard, segment = _committed(tmp_path)
    records = np.load(segment)
    records["row"][1] = 99
    np.save(segment, records)
    with pytest.raises(StoreError, match=f"row 99 of shard file {shard}, which holds 3 rows"):
        _store(tmp_path).read(_keys(3))


@pytest.mark.parametrize("name, content", [("notes.npy", np.zeros(3)),
                                           ("20240101000000-0123456789ab-0000.00000000.npy", np.zeros(3)),
                                           ("20240101000000-0123456789ab-0000.00000001.npy", "truncated")])
def test_stray_or_broken_file_in_the_index_names_it(tmp_path, name, content):
    store, _, _ = _committed(tmp_path)
    path = store.folder / "index" / name
    if isinstance(content, str):
        path.write_bytes(b"\x93NUMPY\x01\x00")
    else:
        np.save(path, content)
    with pytest.raises(StoreError, match=f"token store {store.folder}: .*{path}"):
        _store(tmp_path).contains(_keys(1))


_WRITER = """
import sys, numpy as np
from skprobe.extraction.keys import clip_key
from skprobe.extraction.store import CompactionPolicy, TokenStore
root, start, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
TokenStore.compaction = CompactionPolicy(segments=4, fanout=2, base_rows=16)  # compactions race the commits too
keys = [clip_key(np.full(4, i, np.float32)) for i in range(start, start + n)]
value = {k: np.full((2, 5, 3), i % 97, np.float32) for i, k in zip(range(start, start + n), keys)}
computed, deferred = 0, []
with TokenStore(root, {"encoder": "x"}, (2, 5, 3)).writer() as writer:
    for at in range(0, n, 8):
        todo, elsewhere = writer.claim(keys[at: at + 8])
        deferred += elsewhere
        computed += writer.commit(todo, np.stack([value[k] for k in todo])) if todo else 0
    while deferred:
        orphans = writer.wait(deferred)
        deferred = []
        if orphans:
            todo, elsewhere = writer.claim(orphans)
            deferred = elsewhere
            computed += writer.commit(todo, np.stack([value[k] for k in todo])) if todo else 0
print(computed)
"""


@pytest.mark.slow
def test_three_processes_with_overlapping_clips_store_each_once(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    ranges = [(0, 160), (60, 160), (120, 160)]  # clips 0-279, overlapping two by two and all three
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(a), str(n)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a, n in ranges]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
    assert sum(int(out) for out, _ in results) == 280  # every clip committed by exactly one writer
    store = _store(tmp_path)
    shard_rows = sum(p.stat().st_size for p in (store.folder / "shards").glob("*.bin")) // store.row_bytes
    assert len(store) == shard_rows == 280 and len(np.unique(_records(store)["key"])) == 280
    expected = np.stack([np.full((2, 5, 3), i % 97, np.float16) for i in range(280)])
    np.testing.assert_array_equal(store.read(_keys(280)), expected)
