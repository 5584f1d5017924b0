"""Seconds per default ``LinearProbeClassifier`` fit on a cached panel source, and its test macro mAP.

Run from a checkout (or with ``PYTHONPATH`` on one) to time that checkout's
linear probe; alternate two checkouts to compare them side by side::

    PYTHONPATH=$PWD python benchmarks/bench_linear_fit.py --cache /tmp/skprobe-panel --source yamnet-last --seeds 2
    PYTHONPATH=/path/to/old python benchmarks/bench_linear_fit.py --cache /tmp/skprobe-panel --source yamnet-last

The tokens come from ``bench_defaults_panel.py --build-only``. The first
fit of a process includes its warm-up (imports, allocator).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="/tmp/skprobe-panel")
    parser.add_argument("--source", default="yamnet-last")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from skprobe import LinearProbeClassifier
    from skprobe.metrics import macro_map

    data = np.load(os.path.join(args.cache, f"{args.source}.npz"))
    X, Y, X_test, Y_test = data["X_train"], data["Y_train"], data["X_test"], data["Y_test"]
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        start = time.perf_counter()
        probe = LinearProbeClassifier(random_state=seed).fit(X, Y)
        seconds = time.perf_counter() - start
        if Y_test.ndim == 2:
            score = macro_map(Y_test, probe.predict_proba(X_test))
        else:
            score = float(np.mean(probe.predict(X_test) == Y_test))
        print(f"{args.source} seed {seed}: {seconds:.2f} s, test score {score:.4f}", flush=True)


if __name__ == "__main__":
    main()
