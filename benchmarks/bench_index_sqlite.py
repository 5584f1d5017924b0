"""An index in SQLite instead of the store's sorted runs: ms per 16-clip commit and fresh open, for comparison.

    python benchmarks/bench_index_sqlite.py [--sizes 2000,1000000] [--rounds 300]

The table ``idx(key BLOB PRIMARY KEY, shard INTEGER, row INTEGER, check INTEGER) WITHOUT ROWID``
holds what the store's index holds (44 bytes of payload per clip). Each size is
filled in one transaction, then, side by side (round robin over the sizes),
``--rounds`` transactions each insert 16 new random keys (``INSERT OR IGNORE``,
as a commit skips stored clips) with ``synchronous=FULL``, in WAL mode and in
the default rollback-journal mode. A fresh connection's open plus one lookup
is timed in a new process. Compare with ``bench_store_scale.py``; the shard
append (rows and their fsync) is not part of either figure here.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA journal_mode={mode}")
    db.execute("PRAGMA synchronous=FULL")
    return db


def _rows(rng: np.random.Generator, n: int) -> list[tuple]:
    keys = np.frombuffer(rng.bytes(32 * n), dtype="S32")
    return [(k.tobytes().ljust(32, b"\0"), 0, i, i) for i, k in enumerate(keys)]


def build(path: Path, n: int, mode: str, seed: int) -> bytes:
    db = _connect(path, mode)
    db.execute("CREATE TABLE idx (key BLOB PRIMARY KEY, shard INTEGER, row INTEGER, check_value INTEGER) "
               "WITHOUT ROWID")
    rows = _rows(np.random.default_rng(seed), n)
    db.execute("BEGIN")
    db.executemany("INSERT OR IGNORE INTO idx VALUES (?, ?, ?, ?)", rows)
    db.execute("COMMIT")
    db.close()
    return rows[0][0]


_OPEN = """
import sqlite3, sys, time
t0 = time.perf_counter()
db = sqlite3.connect(sys.argv[1])
db.execute("SELECT shard, row, check_value FROM idx WHERE key = ?", (bytes.fromhex(sys.argv[2]),)).fetchone()
print(time.perf_counter() - t0)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,1000000")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"SQLite {sqlite3.sqlite_version}")
    print("| journal mode | rows | ms per 16-clip transaction, mean (median) | fresh open + one lookup |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="skprobe-sqlite-") as tmp:
        for mode in ("wal", "delete"):
            paths = {n: Path(tmp) / f"{mode}-{n}.db" for n in sizes}
            first = {n: build(paths[n], n, mode, i) for i, n in enumerate(sizes)}
            dbs = {n: _connect(paths[n], mode) for n in sizes}
            rng = np.random.default_rng(99)
            times: dict[int, list[float]] = {n: [] for n in sizes}
            for _ in range(args.rounds):
                for n in sizes:
                    rows = _rows(rng, 16)
                    t0 = time.perf_counter()
                    dbs[n].execute("BEGIN IMMEDIATE")
                    keys = [r[0] for r in rows]
                    dbs[n].execute(f"SELECT key FROM idx WHERE key IN ({','.join('?' * 16)})", keys).fetchall()
                    dbs[n].executemany("INSERT OR IGNORE INTO idx VALUES (?, ?, ?, ?)", rows)
                    dbs[n].execute("COMMIT")
                    times[n].append(1e3 * (time.perf_counter() - t0))
            for n in sizes:
                dbs[n].close()
                opens = [float(subprocess.run([sys.executable, "-c", _OPEN, str(paths[n]), first[n].hex()],
                                              capture_output=True, text=True, check=True).stdout) for _ in range(5)]
                print(f"| {mode} | {n:,} | {statistics.mean(times[n]):.1f} ({statistics.median(times[n]):.1f}) | "
                      f"{1e3 * statistics.median(opens):.1f} ms |")
                for extra in ("-wal", "-shm"):
                    Path(str(paths[n]) + extra).unlink(missing_ok=True)
    print(f"(machine: {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
