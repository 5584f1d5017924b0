"""The token store at scale: ms per 16-clip commit, fresh-reader open time, index files, writer memory.

    python benchmarks/bench_store_scale.py                      # 2 k, 200 k, 1 M and 2 M rows
    python benchmarks/bench_store_scale.py --sizes 2000,200000  # a quick run

1. Build: one process per size fills its own store through ``StoreWriter.commit``,
   16 clips per commit (the default ``batch_size``) with random 32-byte clip keys
   and rows of 4 float16 values (the index is what is measured; a row's size
   changes only the shard append). The processes run at once. Each reports its
   wall time, the time its commits spent outside the shard append (index work:
   reading the index, checking the batch, writing and fsyncing the segment),
   the time its background compactions took, the index files left, and its
   peak resident memory (``VmHWM``).
2. Side by side: one process per store commits 16 new clips in turn, round
   robin, ``--rounds`` times, so every size sees the same machine load: ms per
   commit (mean, including compactions, and median) and its index share.
3. Fresh reader: a new process per store times ``TokenStore(...)`` plus the
   read of one clip (first access reads the index), five times; the median.

The projected index time of an AudioSet-2M store (2 M clips, 125,000 commits of
16) is 125,000 x the side-by-side index ms per commit at the largest size plus
the largest build's compaction time scaled to 2 M rows (n log n). Prints a
markdown table (docs/benchmarks/extraction.md).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 16
ROW = (4,)
CONFIG = {"benchmark": "store-scale"}
AUDIOSET = 2_000_000


def _keys(rng: np.random.Generator, n: int) -> list[str]:
    return [k.hex() for k in np.frombuffer(rng.bytes(32 * n), dtype="S32")]


def _instrument(writer, totals: dict) -> None:
    """Time the shard append (rows + fsync) and the background compactions of ``writer``."""
    from skprobe.extraction.store import writer as writer_module

    append, compact = writer._append, writer_module.compact

    def timed_append(rows):
        start = time.perf_counter()
        try:
            return append(rows)
        finally:
            totals["append"] += time.perf_counter() - start

    def timed_compact(*args, **kwargs):
        start = time.perf_counter()
        try:
            return compact(*args, **kwargs)
        finally:
            totals["compaction"] += time.perf_counter() - start

    writer._append = timed_append
    writer_module.compact = timed_compact


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


def build(root: str, n_rows: int, seed: int, queue) -> None:
    from skprobe.extraction.store import TokenStore

    store = TokenStore(root, CONFIG, ROW)
    rng = np.random.default_rng(seed)
    tokens = np.zeros((BATCH, *ROW), np.float16)
    totals = {"append": 0.0, "compaction": 0.0}
    start = time.perf_counter()
    commit_seconds = 0.0
    with store.writer() as writer:
        _instrument(writer, totals)
        for _ in range(n_rows // BATCH):
            keys = _keys(rng, BATCH)
            t0 = time.perf_counter()
            writer.commit(keys, tokens)
            commit_seconds += time.perf_counter() - t0
        files_open = len(os.listdir(store.folder / "index"))
    queue.put({"rows": n_rows, "seconds": time.perf_counter() - start, "commits": n_rows // BATCH,
               "index_seconds": commit_seconds - totals["append"], "compaction_seconds": totals["compaction"],
               "files_while_writing": files_open, "files": len(os.listdir(store.folder / "index")),
               "peak_rss_mb": _peak_rss_mb()})


def committer(root: str, seed: int, conn) -> None:
    """Commit 16 new clips each time the parent asks; reply (ms, ms outside the append)."""
    from skprobe.extraction.store import TokenStore

    store = TokenStore(root, CONFIG, ROW)
    rng = np.random.default_rng(seed)
    tokens = np.zeros((BATCH, *ROW), np.float16)
    totals = {"append": 0.0, "compaction": 0.0}
    with store.writer() as writer:
        _instrument(writer, totals)
        while conn.recv():
            keys = _keys(rng, BATCH)
            before = totals["append"]
            t0 = time.perf_counter()
            writer.commit(keys, tokens)
            ms = 1e3 * (time.perf_counter() - t0)
            conn.send((ms, ms - 1e3 * (totals["append"] - before)))
    conn.send(totals["compaction"])


_OPEN = """
import sys, time
from skprobe.extraction.store import TokenStore
root, key = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
store = TokenStore(root, {"benchmark": "store-scale"}, (4,))
store.read([key])
print(time.perf_counter() - t0)
"""


def fresh_open(root: str, key: str, repeats: int = 5) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = [float(subprocess.run([sys.executable, "-c", _OPEN, root, key], env=env, capture_output=True, text=True,
                                  check=True).stdout) for _ in range(repeats)]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,200000,1000000,2000000", help="store sizes in rows")
    parser.add_argument("--rounds", type=int, default=500, help="side-by-side commits per store")
    parser.add_argument("--folder", help="where to build the stores (default: a temporary folder, removed)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    base = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="skprobe-store-scale-"))
    roots = {n: str(base / f"rows-{n}") for n in sizes}
    ctx = mp.get_context("spawn")
    try:
        print(f"building {', '.join(f'{n:,}' for n in sizes)} rows at {BATCH} clips per commit ...", flush=True)
        queue = ctx.Queue()
        builders = [ctx.Process(target=build, args=(roots[n], n, i, queue)) for i, n in enumerate(sizes)]
        for p in builders:
            p.start()
        built = {}
        for _ in builders:
            result = queue.get()
            built[result["rows"]] = result
            print(f"  {result['rows']:>9,} rows: {result['seconds']:.0f} s", flush=True)
        for p in builders:
            p.join()

        print(f"side by side: {args.rounds} rounds of one {BATCH}-clip commit per store ...", flush=True)
        pipes, workers = {}, []
        for i, n in enumerate(sizes):
            parent, child = ctx.Pipe()
            worker = ctx.Process(target=committer, args=(roots[n], 1000 + i, child))
            worker.start()
            pipes[n] = parent
            workers.append(worker)
        samples = {n: [] for n in sizes}
        for _ in range(args.rounds):
            for n in sizes:
                pipes[n].send(True)
                samples[n].append(pipes[n].recv())
        for n in sizes:
            pipes[n].send(False)
            pipes[n].recv()
        for worker in workers:
            worker.join()

        print("fresh readers ...", flush=True)
        from skprobe.extraction.store import TokenStore

        opens = {}
        for n in sizes:
            key = _keys(np.random.default_rng(sizes.index(n)), BATCH)[0]  # the first clip each build stored
            opens[n] = fresh_open(roots[n], key)
        files_now = {n: len(os.listdir(TokenStore(roots[n], CONFIG, ROW).folder / "index")) for n in sizes}
    finally:
        if not args.folder:
            shutil.rmtree(base, ignore_errors=True)

    print()
    print("| rows in the store | ms per 16-clip commit, mean (median) | of which index work, mean | fresh reader: "
          "open + first read | index files | build: wall / index work / compaction | writer peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        ms = np.array([s[0] for s in samples[n]])
        index_ms = np.array([s[1] for s in samples[n]])
        b = built[n]
        print(f"| {n:,} | {ms.mean():.1f} ({np.median(ms):.1f}) | {index_ms.mean():.2f} | {1e3 * opens[n]:.0f} ms | "
              f"{files_now[n]} | {b['seconds']:.0f} s / {b['index_seconds']:.0f} s / {b['compaction_seconds']:.1f} s "
              f"| {b['peak_rss_mb']:.0f} MB |")
    small, large = sizes[0], sizes[-1]
    ratio = {n: np.mean([s[0] for s in samples[n]]) / np.mean([s[0] for s in samples[small]]) for n in sizes}
    print()
    print("ms per commit relative to the smallest store (side by side): "
          + ", ".join(f"{n:,} rows {ratio[n]:.2f}x" for n in sizes))
    allowance = 1.1 * built[small]["peak_rss_mb"] + 44 * (large - small) / 2**20
    print(f"writer peak RSS {built[large]['peak_rss_mb']:.0f} MB at {large:,} rows vs {built[small]['peak_rss_mb']:.0f} "
          f"MB at {small:,} (allowance: 10 % plus 44 B per row = {allowance:.0f} MB)")
    index_ms = np.mean([s[1] for s in samples[large]])
    b = built[large]
    scale = AUDIOSET / large * math.log(AUDIOSET / 1024) / math.log(max(large, 2048) / 1024)
    projected = AUDIOSET // BATCH * index_ms / 1e3 + b["compaction_seconds"] * scale
    print(f"projected index time of an AudioSet-2M store ({AUDIOSET // BATCH:,} commits): {projected / 60:.1f} min "
          f"({AUDIOSET // BATCH:,} x {index_ms:.2f} ms + {b['compaction_seconds'] * scale:.0f} s of compaction)")


if __name__ == "__main__":
    main()
