"""Peak memory of a streaming extraction into the token store: small run vs a 10x larger one.

Each size runs in a fresh process: a generator of random 1 s clips (never
listed) goes through ``FrozenEncoderTransformer(encoder="tiny-vit",
store=..., output="memmap")``; the process prints its peak resident set
(``VmHWM``). Memory should not depend on the number of clips.

Usage::

    python benchmarks/bench_store_memory.py --sizes 2000 20000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys, time, numpy as np, torch
torch.set_num_threads(1)
from skprobe import FrozenEncoderTransformer
n, store = int(sys.argv[1]), sys.argv[2]
def clips():
    rng = np.random.default_rng(0)
    for _ in range(n):
        yield (0.1 * rng.standard_normal(16000)).astype(np.float32)
start = time.perf_counter()
out = FrozenEncoderTransformer(encoder="tiny-vit", store=store, output="memmap", batch_size=64,
                               device="cpu").fit(None).transform(clips())
seconds = time.perf_counter() - start
peak = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(out.shape[0], int(peak), seconds)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    peaks = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CHILD, str(n), f"{tmp}/store{n}"], env=env,
                                 capture_output=True, text=True, check=True).stdout.split()
            peaks.append(int(out[1]))
            print(f"{n:7d} clips: peak RSS {int(out[1]) / 1024:7.1f} MiB, extraction {float(out[2]):6.1f} s "
                  f"({n / float(out[2]):.0f} clips/s), process {time.perf_counter() - start:.0f} s", flush=True)
    print(f"largest / smallest peak: {max(peaks) / min(peaks):.3f}")


if __name__ == "__main__":
    main()
