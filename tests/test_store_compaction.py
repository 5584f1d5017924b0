"""The token store's compacted index: runs, compaction (as writers go, explicit, concurrent), old stores, damage."""

import json
import os
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from skprobe.cli import main
from skprobe.extraction.keys import clip_key
from skprobe.extraction.store import CompactionPolicy, StoreError, TokenStore, compaction
from skprobe.extraction.store.index import scan_records
from skprobe.extraction.store.layout import LEGACY_SEGMENT_DTYPE

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 3, 2)
SMALL = CompactionPolicy(segments=4, segment_rows=1 << 16, fanout=2, base_rows=8)


def _keys(n, start=0):
    return [clip_key(np.full(4, i, np.float32)) for i in range(start, start + n)]


def _tokens(n, start=0):
    return np.stack([np.full(SHAPE, (i % 997) / 8, np.float32) for i in range(start, start + n)])


def _store(root, policy=SMALL, **kw):
    store = TokenStore(root, {"encoder": "x"}, SHAPE, **kw)
    store.compaction = policy
    return store


def _files(store, suffix=""):
    return sorted(p.name for p in (store.folder / "index").iterdir() if p.name.endswith(suffix))


def _fill(store, n_batches, batch=4, start=0):
    with store.writer() as writer:
        for b in range(n_batches):
            writer.commit(_keys(batch, start + b * batch), _tokens(batch, start + b * batch))


def _runs(store):
    return [store.folder / "index" / name for name in _files(store, ".run")]


def test_writers_compact_the_index_as_they_go(tmp_path):
    store = _store(tmp_path)
    counts = []
    with store.writer() as writer:
        for b in range(60):
            writer.commit(_keys(4, 4 * b), _tokens(4, 4 * b))
            counts.append(len(_files(store)))
    assert max(counts) <= 20  # 60 commits never leave 60 files
    assert len(_files(store)) <= 6 and all(name.endswith(".run") for name in _files(store))
    fresh = _store(tmp_path)
    assert len(fresh) == 240
    np.testing.assert_array_equal(fresh.read(_keys(240)), _tokens(240).astype(np.float16))
    records = scan_records(store.folder)
    assert len(records) == 240 and len(np.unique(records["key"])) == 240  # every key once, in one file


def test_explicit_compaction_merges_everything_into_one_run(tmp_path, capsys):
    store = _store(tmp_path, policy=None)  # writers do not compact
    _fill(store, 12)
    assert len(_files(store, ".npy")) == 12
    report = store.compact()
    assert (report.files_before, report.files_after, report.records_written) == (12, 1, 48)
    np.testing.assert_array_equal(_store(tmp_path).read(_keys(48)), _tokens(48).astype(np.float16))
    _fill(store, 3, start=48)
    # the command line compacts every store under a root (or one store folder)
    assert main(["store", "compact", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{store.folder}: 4 index files -> 1, 60 clips" in out
    assert _files(store, ".npy") == [] and len(_files(store, ".run")) == 1
    assert main(["store", "compact", str(store.folder)]) == 0  # nothing left to merge
    assert "1 index file -> 1" in capsys.readouterr().out
    assert main(["store", "compact", str(tmp_path / "nothing")]) == 2
    assert "no token store" in capsys.readouterr().err


def _legacy_store(root, n_batches=5, batch=3):
    """A store as format 3 (skprobe before the compacted index) wrote it: CRC-32 of the row only."""
    store = TokenStore(root, {"encoder": "x"}, SHAPE)
    folder = store.folder
    for sub in ("shards", "index", "claims"):
        (folder / sub).mkdir(parents=True)
    (folder / "store.json").write_text(json.dumps(store._meta, sort_keys=True))
    (folder / "lock").touch()
    shard = "20240101000000-0123456789ab-0000"
    rows = _tokens(n_batches * batch).astype(np.float16)
    rows.tofile(folder / "shards" / f"{shard}.bin")
    keys = _keys(n_batches * batch)
    for b in range(n_batches):
        records = np.empty(batch, LEGACY_SEGMENT_DTYPE)
        sel = range(b * batch, (b + 1) * batch)
        records["key"] = [bytes.fromhex(keys[i]) for i in sel]
        records["row"] = list(sel)
        records["crc"] = [zlib.crc32(rows[i].tobytes()) for i in sel]
        np.save(folder / "index" / f"{shard}.{b:08d}.npy", records)
    return keys, rows


def test_format_3_store_is_read_as_it_is_and_compaction_migrates_it(tmp_path):
    keys, rows = _legacy_store(tmp_path)
    store = _store(tmp_path, policy=None)
    np.testing.assert_array_equal(store.read(keys), rows)  # read as is
    _fill(store, 2, start=100)  # new commits go next to the old segments
    assert store.compact().files_after == 1 and len(_files(store, ".run")) == 1  # migrated into one run
    fresh = _store(tmp_path)
    np.testing.assert_array_equal(fresh.read(keys), rows)
    np.testing.assert_array_equal(fresh.read(_keys(8, 100)), _tokens(8, 100).astype(np.float16))
    # a damaged old row is still caught after the migration
    shard = next((store.folder / "shards").glob("2024*.bin"))
    data = np.fromfile(shard, np.float16)
    data[7] += 1
    data.tofile(shard)
    with pytest.raises(StoreError, match="row 1 .*damaged"):
        _store(tmp_path).read(keys[1:2])


def test_tampered_or_truncated_run_names_the_file(tmp_path):
    store = _store(tmp_path, policy=None)
    _fill(store, 80)  # 320 records: two blocks
    store.compact()
    (run,) = _runs(store)
    good = run.read_bytes()

    def damaged(data, match):
        run.write_bytes(data)
        with pytest.raises(StoreError, match=match) as info:
            fresh = _store(tmp_path)
            fresh.read(_keys(320))
        assert str(run) in str(info.value)

    damaged(good[:-10], "truncated|not a sorted run")
    damaged(good[:100] + good[101:], "truncated|damaged")
    flipped = bytearray(good)
    flipped[5] ^= 1  # a key in block 0
    damaged(bytes(flipped), "block 0 checksum mismatch")
    flipped = bytearray(good)
    flipped[-40] ^= 1  # the footer
    damaged(bytes(flipped), "footer checksum mismatch")
    run.write_bytes(good)
    np.testing.assert_array_equal(_store(tmp_path).read(_keys(320)), _tokens(320).astype(np.float16))


def _reseal(data: bytearray, n_records: int) -> None:
    """Recompute the CRC-32 of the (only) block and of the footer of a run after editing it, as a forger would."""
    footer_len = int.from_bytes(data[-16:-8], "little")
    footer_at = len(data) - 24 - footer_len
    meta_len = int.from_bytes(data[footer_at: footer_at + 4], "little")
    crc_at = footer_at + 4 + meta_len + 32  # after the header and the one block's first key
    data[crc_at: crc_at + 4] = zlib.crc32(bytes(data[: n_records * 44])).to_bytes(4, "little")
    data[-8:-4] = zlib.crc32(bytes(data[footer_at: len(data) - 24])).to_bytes(4, "little")


def test_swapped_keys_are_detected_in_segments_and_runs(tmp_path):
    """Reliability item 5: the check value covers the key, so a key moved to another row is not served."""
    store = _store(tmp_path, policy=None)
    _fill(store, 1)
    (segment,) = (store.folder / "index").glob("*.npy")
    records = np.load(segment)
    records["key"][[0, 1]] = records["key"][[1, 0]]
    np.save(segment, records)
    with pytest.raises(StoreError, match="damaged"):
        _store(tmp_path).read(_keys(1))
    records["key"][[0, 1]] = records["key"][[1, 0]]
    np.save(segment, records)
    store.compact()
    (run,) = _runs(store)
    data = bytearray(run.read_bytes())
    # the run's only block holds 4 records: keys (4 x 32 B), shards, rows, check values (4 x 4 B each).
    # Give the first two keys each other's row and check value (the keys stay sorted, the lookups work).
    for column in (4 * 32 + 4 * 4, 4 * 32 + 8 * 4):
        a, b = slice(column, column + 4), slice(column + 4, column + 8)
        data[a], data[b] = data[b], data[a]
    _reseal(data, n_records=4)
    run.write_bytes(bytes(data))
    fresh = _store(tmp_path)
    with pytest.raises(StoreError, match="damaged \\(checksum mismatch"):
        fresh.read(_keys(4))


def test_interrupted_compaction_leaves_a_readable_store_and_is_cleaned_up(tmp_path, monkeypatch):
    store = _store(tmp_path, policy=None)
    _fill(store, 10)

    def killed(path):
        raise KeyboardInterrupt  # the run is in place; none of the files it covers is deleted yet

    monkeypatch.setattr(compaction, "_unlink", killed)
    with pytest.raises(KeyboardInterrupt):
        store.compact()
    monkeypatch.undo()
    assert len(_files(store, ".run")) == 1 and len(_files(store, ".npy")) == 10
    stale = store.folder / "index" / ".20240101000000-0123456789abcdef.run.x1.tmp"  # of a killed compaction
    stale.write_bytes(b"partial")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = _store(tmp_path, policy=None)
    assert len(fresh) == 40  # the records are found once, not twice
    np.testing.assert_array_equal(fresh.read(_keys(40)), _tokens(40).astype(np.float16))
    fresh.compact()
    assert _files(fresh, ".npy") == [] and not stale.exists()
    assert len(scan_records(fresh.folder)) == 40


_CONCURRENT = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    from skprobe.extraction.keys import clip_key
    from skprobe.extraction.store import CompactionPolicy, TokenStore

    role, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    done = os.path.join(root, "writer-done")
    TokenStore.compaction = CompactionPolicy(segments=3, fanout=2, base_rows=8)
    keys = [clip_key(np.full(4, i, np.float32)) for i in range(n)]
    tokens = np.stack([np.full((1, 3, 2), (i % 997) / 8, np.float32) for i in range(n)]).astype(np.float16)
    store = lambda: TokenStore(root, {"encoder": "x"}, (1, 3, 2))
    if role == "writer":
        with store().writer() as writer:
            for start in range(0, n, 4):
                writer.commit(keys[start: start + 4], tokens[start: start + 4])
        open(done, "w").close()
    elif role == "compactor":
        rounds = 0
        while True:
            finished = os.path.exists(done)
            if os.path.isdir(store().folder):
                store().compact()
                rounds += 1
            if finished:
                break
        print(rounds)
    else:
        long_lived, seen, checks = store(), 0, 0
        while True:
            finished = os.path.exists(done)
            for handle in (long_lived, store()):
                present = np.flatnonzero(handle.contains(keys))
                # commits are in order: what is present is a prefix, and never shrinks
                assert list(present) == list(range(len(present))), present
                assert len(present) >= seen, (len(present), seen)
                seen = len(present)
                if len(present):
                    sample = present[np.random.default_rng(checks).integers(0, len(present), 8)]
                    assert (handle.read([keys[i] for i in sample]) == tokens[sample]).all()
                checks += 1
            if finished:
                break
        print(json.dumps({"seen": seen, "checks": checks}))
""")


@pytest.mark.slow
def test_compaction_while_a_writer_commits_and_a_reader_reads_loses_nothing(tmp_path):
    n = 600
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {role: subprocess.Popen([sys.executable, "-c", _CONCURRENT, role, str(tmp_path), str(n)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for role in ("reader", "compactor", "writer")}
    results = {role: proc.communicate(timeout=300) for role, proc in procs.items()}
    for role, proc in procs.items():
        assert proc.returncode == 0, (role, results[role][1][-3000:])
    reader = json.loads(results["reader"][0])
    assert reader["seen"] == n and reader["checks"] > 4
    store = TokenStore(tmp_path, {"encoder": "x"}, SHAPE)
    assert len(store) == n
    np.testing.assert_array_equal(store.read(_keys(n)), _tokens(n).astype(np.float16))
    shard_rows = sum(p.stat().st_size for p in (store.folder / "shards").glob("*.bin")) // store.row_bytes
    assert shard_rows == n  # nothing written twice
    assert int(results["compactor"][0]) > 2 and len(_files(store)) == 1  # the last compaction came after the writer


_KILLED = textwrap.dedent("""
    import sys
    import numpy as np
    from skprobe.extraction.keys import clip_key
    from skprobe.extraction.store import CompactionPolicy, TokenStore

    root, n = sys.argv[1], int(sys.argv[2])
    TokenStore.compaction = CompactionPolicy(segments=2, fanout=2, base_rows=4)  # compacting nearly always
    store = TokenStore(root, {"encoder": "x"}, (1, 3, 2))
    keys = [clip_key(np.full(4, i, np.float32)) for i in range(n)]
    tokens = np.stack([np.full((1, 3, 2), (i % 997) / 8, np.float32) for i in range(n)])
    with store.writer() as writer:
        for start in range(0, n, 4):
            writer.commit(keys[start: start + 4], tokens[start: start + 4])
            print(start + 4, flush=True)
""")


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [5, 23, 61])
def test_kill_9_while_compacting_loses_at_most_the_batch_in_flight(tmp_path, kill_after):
    import signal

    n = 400
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(tmp_path), str(n)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    committed = 0
    for _ in range(kill_after):
        committed = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = _store(tmp_path, policy=None)
    present = store.contains(_keys(n))
    assert present[:committed].all()  # every commit that returned is there
    assert present.sum() <= committed + 4  # plus at most the batch in flight
    np.testing.assert_array_equal(store.read(_keys(int(present.sum()))), _tokens(int(present.sum())).astype(np.float16))
    # the rerun stores the rest; every clip ends up once
    rerun = subprocess.run([sys.executable, "-c", _KILLED, str(tmp_path), str(n)], env=env, capture_output=True,
                           text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    store = _store(tmp_path, policy=None)
    np.testing.assert_array_equal(store.read(_keys(n)), _tokens(n).astype(np.float16))
    records = scan_records(store.folder)
    assert len(store) == len(records) == len(np.unique(records["key"])) == n  # indexed once each
    shard_rows = sum(p.stat().st_size for p in (store.folder / "shards").glob("*.bin")) // store.row_bytes
    assert n <= shard_rows <= n + 4  # at most the killed batch's rows, appended but never indexed
