"""Linear probe with its learning rate and length chosen by 3-fold cross-validation (issue 12, not in the library).

For one token source of ``bench_defaults_panel.py`` (cached tokens), chooses
among learning rate {0.3, 1, 3} x the ``"auto"`` rule and 30 or 100 epochs by
3-fold cross-validation on the training clips, refits, and prints the test
score per seed with the time it took::

    PYTHONPATH=$PWD python benchmarks/bench_linear_cv.py yamnet-last 2
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_defaults_panel as P  # noqa: E402
from sklearn.model_selection import KFold  # noqa: E402

from skprobe import LinearProbeClassifier  # noqa: E402

torch.set_num_threads(1)
src = sys.argv[1]
X, Y, Xt, Yt, ml = P.load_source(src, Path("/tmp/skprobe-panel"))
y = Y if ml else Y.argmax(1)
D = X.shape[2]
base = 10 / max(D, 64)
cands = [dict(learning_rate=base * f, max_iter=m) for f in (0.3, 1, 3) for m in (30, 100)]
for seed in range(int(sys.argv[2])):
    t = time.perf_counter()
    scores = []
    for c in cands:
        s = []
        for tr, va in KFold(3, shuffle=True, random_state=seed).split(X):
            p = LinearProbeClassifier(**c, random_state=seed, device="cpu").fit(X[tr], y[tr])
            s.append(P.score(p, X[va], Y[va], ml))
        scores.append(np.nanmean(s))
    best = cands[int(np.argmax(scores))]
    p = LinearProbeClassifier(**best, random_state=seed, device="cpu").fit(X, y)
    print(src, seed, best, f"test {P.score(p, Xt, Yt, ml):.3f}", f"{time.perf_counter()-t:.1f}s", [round(float(v), 3) for v in scores], flush=True)
