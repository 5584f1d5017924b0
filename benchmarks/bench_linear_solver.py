"""The linear probe's logistic-regression path: skprobe's solver against scikit-learn's on the same folds.

``select_c`` scores the ``C`` grid on 3 folds of pooled features by walking
each fold's regularisation path (warm starts). This times that walk as the
linear probe runs it (one direct L-BFGS-B call per class with scikit-learn's
objective, in the span of the training rows when there are fewer clips than
features, BLAS on one thread for small problems) against the same walk
with ``sklearn.linear_model.LogisticRegression`` per class and per ``C``,
and prints both times, their ratio and the chosen ``C`` (that both solve the
same problem is tested in ``tests/test_linear_logistic.py``).

Usage::

    python benchmarks/bench_linear_solver.py                       # 600 x 1024, 17 classes (the event scenes' size)
    python benchmarks/bench_linear_solver.py --n-clips 4000 --dim 768 --n-classes 50
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from skprobe.probes._logistic import C_GRID, select_c


def features(n: int, dim: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated features with a few informative directions per class, 0/1 labels of ~10 % prevalence."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    X = rng.normal(size=(n, dim)) @ mixing + 0.3 * rng.normal(size=(1, dim))
    logits = X[:, : n_classes * 4].reshape(n, n_classes, 4).sum(-1) * 1.5 - 2.5
    Y = (rng.random((n, n_classes)) < 1 / (1 + np.exp(-logits))).astype(np.int8)
    return X.astype(np.float32), Y


def sklearn_walk(X, Y, folds, grid) -> None:
    """The reference: per fold, per class, ``LogisticRegression(warm_start=True)`` refitted along ``grid``."""
    for train, valid in folds:
        mean, std = X[train].mean(0), X[train].std(0) + 1e-12
        Xt, Xv = (X[train] - mean) / std, (X[valid] - mean) / std
        models = [LogisticRegression(max_iter=500, warm_start=True) for _ in range(Y.shape[1])]
        for C in grid:
            for c, model in enumerate(models):
                if 0 < Y[train, c].sum() < len(train):
                    model.set_params(C=C).fit(Xt, Y[train, c]).decision_function(Xv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-clips", type=int, default=600)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--n-classes", type=int, default=17)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    X, Y = features(args.n_clips, args.dim, args.n_classes, args.seed)
    folds = list(KFold(3, shuffle=True, random_state=0).split(X))

    def standardise(rows):
        return rows.mean(0), rows.std(0) + 1e-12

    t = time.perf_counter()
    best, results = select_c(X, Y, folds, multilabel=True, n_outputs=Y.shape[1], normalize=standardise,
                             max_iter=500)
    ours = time.perf_counter() - t
    grid = results["C"]  # the walk stopped here; the reference walks the same points
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t = time.perf_counter()
        sklearn_walk(X, Y, folds, grid)
        reference = time.perf_counter() - t
    print(f"{args.n_clips} clips x {args.dim} features, {args.n_classes} classes, 3 folds, "
          f"{len(grid)} of {len(C_GRID)} C values walked; chosen C = {best:g}")
    print(f"  skprobe select_c:                  {ours:7.2f} s")
    print(f"  LogisticRegression per class:      {reference:7.2f} s   (ratio {reference / ours:.1f}x)")


if __name__ == "__main__":
    main()
