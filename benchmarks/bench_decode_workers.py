"""Read-ahead workers: threads or processes for decoding, resampling and hashing audio files?

Writes 16-bit 44.1 kHz stereo WAV and FLAC files (10 s), then does what the
extraction's read-ahead does per file (decode, down-mix, hash the samples,
crop, resample to 16 kHz) in order, with 0..N threads (skprobe's
``read_ahead``) and with a process pool of N workers (``ProcessPoolExecutor.map``
with "spawn" workers, the waveforms pickled back to the parent). Prints files/s for each.

Usage::

    python benchmarks/bench_decode_workers.py --files 64 --workers 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from skprobe.audio import fix_length, read_audio, resample
from skprobe.extraction.keys import clip_key
from skprobe.extraction.pipeline import read_ahead


def work(path) -> np.ndarray:
    wav, rate = read_audio(path)
    clip_key(wav, rate)
    return fix_length(resample(wav[: 10 * rate + rate // 100], rate, 16000), 160000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.files):
            paths.append(Path(tmp) / f"{i:04d}.{'wav' if i % 2 else 'flac'}")
            sf.write(paths[-1], (0.1 * rng.standard_normal((441000, 2)) * 32767).astype(np.int16), 44100)
        work(paths[0])
        rows = []
        for n in range(args.workers + 1):
            start = time.perf_counter()
            for _ in read_ahead(paths, lambda i, p: work(p), n_workers=n, depth=32):
                pass
            rows.append((f"threads={n}", time.perf_counter() - start))
        # "spawn": forking a process that has run torch's thread pools can deadlock the children.
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(work, paths[: args.workers]))  # start the workers (imports) before timing
            start = time.perf_counter()
            for _ in pool.map(work, paths, chunksize=1):
                pass
            rows.append((f"processes={args.workers}", time.perf_counter() - start))
    for label, seconds in rows:
        print(f"{label:14s} {args.files / seconds:8.1f} files/s")


if __name__ == "__main__":
    main()
