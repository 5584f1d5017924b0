"""Token store format: raw float16 shards + index segments (ours) vs HDF5 (h5py) vs zarr.

Writes ``--clips`` rows of ``--tokens`` x ``--dim`` float16 in commits of
``--batch`` rows, each commit made durable (fsync / flush), then reads
``--reads`` random rows back. Only what a single writer can do is compared;
HDF5 and zarr would still need our own index and locking for several
processes (HDF5 allows one writer per file; a zarr array's shape is shared
metadata that concurrent appenders race on).

Usage::

    pip install h5py zarr    # not skprobe dependencies
    python benchmarks/bench_store_formats.py --clips 512 --tokens 64 --dim 1024 --batch 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from skprobe.extraction import TokenStore
from skprobe.extraction.keys import clip_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reads", type=int, default=256)
    args = parser.parse_args()
    shape = (args.tokens, args.dim)
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((args.batch, *shape)).astype(np.float16)
    keys = [clip_key(np.full(3, i, np.float32)) for i in range(args.clips)]
    order = rng.integers(0, args.clips, args.reads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = TokenStore(Path(tmp) / "ours", {"bench": 1}, (1, *shape))
        start = time.perf_counter()
        with store.writer() as writer:
            for i in range(0, args.clips, args.batch):
                writer.commit(keys[i : i + args.batch], batch[:, None])
        write = time.perf_counter() - start
        start = time.perf_counter()
        arr = TokenStore(Path(tmp) / "ours", {"bench": 1}, (1, *shape)).array(keys, squeeze_layer=True)
        for j in order:
            arr[int(j)]
        rows.append(("raw shards + index (ours)", write, time.perf_counter() - start))

        try:
            import h5py
        except ImportError:
            h5py = None
        if h5py is not None:
            start = time.perf_counter()
            with h5py.File(Path(tmp) / "t.h5", "w") as f:
                ds = f.create_dataset("t", shape=(0, *shape), maxshape=(None, *shape), dtype="f2",
                                      chunks=(1, *shape))
                for i in range(0, args.clips, args.batch):
                    ds.resize(i + args.batch, axis=0)
                    ds[i : i + args.batch] = batch
                    f.flush()
            write = time.perf_counter() - start
            start = time.perf_counter()
            with h5py.File(Path(tmp) / "t.h5", "r") as f:
                for j in order:
                    f["t"][int(j)]
            rows.append(("HDF5 (h5py, chunk = 1 row)", write, time.perf_counter() - start))
        try:
            import zarr
        except ImportError:
            zarr = None
        if zarr is not None:
            start = time.perf_counter()
            z = zarr.open_array(str(Path(tmp) / "t.zarr"), mode="w", shape=(0, *shape), chunks=(args.batch, *shape),
                                dtype="f2")
            for i in range(0, args.clips, args.batch):
                z.resize((i + args.batch, *shape))
                z[i : i + args.batch] = batch
            write = time.perf_counter() - start
            start = time.perf_counter()
            z = zarr.open_array(str(Path(tmp) / "t.zarr"), mode="r")
            for j in order:
                z[int(j)]
            rows.append((f"zarr {zarr.__version__} (chunk = 1 batch)", write, time.perf_counter() - start))
    mb = args.clips * np.prod(shape) * 2 / 1e6
    for label, write, read in rows:
        print(f"{label:32s} write {mb / write:8.1f} MB/s ({args.clips / write:7.0f} clips/s)   "
              f"random row reads {args.reads / read:8.0f} rows/s")


if __name__ == "__main__":
    main()
