"""Logistic regression on pooled features with scikit-learn's L-BFGS: the linear probe's ``solver="lbfgs"``.

Once the linear probe has pooled every clip, its training problem with the
BCE (one sigmoid per class) or softmax cross-entropy loss is an L2-penalised
logistic regression on the pooled features, the problem scikit-learn's
``LogisticRegression`` solves to convergence with L-BFGS. What decides how
well it generalises is the penalty strength ``C``: :func:`select_c` scores a
grid of ``C`` by validation log-loss on the internal folds, walking each
fold's regularisation path from strong to weak penalties with warm starts (as
``LogisticRegressionCV`` does), and stops the walk once the loss has not
improved for :data:`C_PATIENCE` grid points in a row (past the plateau of the
strongest penalties). One-vs-rest for sigmoid losses
(multi-label ``y``: scikit-learn's binary objective, start and stopping rule in a
direct L-BFGS-B call per class, without ``LogisticRegression``'s per-call
overhead), multinomial for the softmax loss (``LogisticRegression`` itself). Sets with fewer clips than
features are solved in the span of their rows (:class:`_RowSpace`: the same
solution on fewer features).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

__all__ = ["C_GRID", "C_PATIENCE", "C_STOP_GAIN", "DEFAULT_C", "LogisticSolution", "fit_logistic", "select_c"]

#: ``C="auto"``: the penalties tried by the internal cross-validation (half-decades from 1e-4 to 1e2).
C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 13))
#: The path along ``C_GRID`` stops after this many grid points without a lower mean validation log-loss ...
C_PATIENCE = 3
#: ... once its lowest loss is below that of the class frequencies (the intercepts alone) by more than this
#: share. Where the pooled features carry little signal per dimension, the strong penalties predict the class
#: frequencies and their loss is a plateau that can creep up before it falls (200 synthetic token scenes of 64
#: dimensions: 4.486 to 4.532 over three points, then 2.6 at ``C = 10``); a stop there keeps such a penalty.
C_STOP_GAIN = 0.01
#: ``C="auto"`` where no selection runs (``cv=None``, tiny sets): scikit-learn's default.
DEFAULT_C = 1.0
#: L-BFGS stops when every entry of the objective's gradient is below this (scikit-learn's ``tol``).
TOL = 1e-4
#: The same bound for the fits that only score a ``C`` on the folds: on the panel's sources it chooses the same
#: ``C`` as :data:`TOL` in 0.4-0.8 of the time (``docs/benchmarks/defaults.md``); the final fit uses ``TOL``.
SELECTION_TOL = 1e-3
#: Logit of a class the training rows hold no positive (or no negative) of.
_ABSENT_LOGIT = 30.0


class LogisticSolution:
    """Coefficients ``(n_outputs, n_features)``, intercepts ``(n_outputs,)`` and L-BFGS iterations (the most)."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, n_iter: int) -> None:
        self.coef, self.intercept, self.n_iter = coef, intercept, n_iter


#: Problems with fewer multiply-adds per gradient (rows x features x classes) run their BLAS calls on one
#: thread: L-BFGS's many small vector operations and these products lose more to waking threads than they
#: gain (``benchmarks/bench_linear_solver.py``).
_ONE_THREAD_SIZE = 1 << 26


def _blas_threads(size: int):
    """One BLAS thread for small problems (see :data:`_ONE_THREAD_SIZE`), the default for large ones."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas") if size < _ONE_THREAD_SIZE else nullcontext()


class _RowSpace:
    """Coordinates of the rows of ``X (n, d)`` in their own span when ``n < d``: ``X = Z V``, ``Z (n, r)``.

    With an L2 penalty the optimal weights lie in the span of the training
    rows (a component outside it only adds penalty), so the logistic
    regression on ``Z = U S`` (thin SVD ``X = U S V``) has the same solution,
    ``w = V^T b``, and L-BFGS, whose steps are equivariant under rotations,
    takes the same steps on ``r <= n`` features instead of ``d``.
    """

    def __init__(self, X: np.ndarray) -> None:
        self.basis = None
        if len(X) < X.shape[1]:
            U, S, Vt = np.linalg.svd(X, full_matrices=False)
            keep = S > (S[0] if len(S) else 0.0) * max(X.shape) * np.finfo(X.dtype).eps  # rank; none if X is 0
            self.basis = Vt[keep]  # (r, d), orthonormal rows
            X = U[:, keep] * S[keep]
        self.X = X

    def weights(self, coef: np.ndarray) -> np.ndarray:
        """Coefficients ``(..., r)`` in row-space coordinates as weights ``(..., d)`` of the features."""
        return coef if self.basis is None else coef @ self.basis


def _binary_objective(params: np.ndarray, X: np.ndarray, y: np.ndarray, penalty: float):
    """scikit-learn's binary logistic objective and gradient: mean log-loss + ``penalty / 2 * ||w||^2``."""
    from scipy.special import expit

    w, b = params[:-1], params[-1]
    z = X @ w + b
    n = len(X)
    loss = (np.logaddexp(0.0, z).sum() - y @ z) / n + penalty / 2 * (w @ w)
    g = (expit(z) - y) / n
    grad = np.empty_like(params)
    grad[:-1] = X.T @ g + penalty * w
    grad[-1] = g.sum()
    return loss, grad


def _binary_lbfgs(X: np.ndarray, y: np.ndarray, C: float, start: np.ndarray, max_iter: int, tol: float = TOL):
    """One class's logistic regression by L-BFGS-B with scikit-learn's objective, start and stopping rules
    (``tol`` on every gradient entry): its iterates, without its per-call overhead."""
    from scipy.optimize import minimize

    result = minimize(_binary_objective, start, args=(X, y, 1.0 / (C * len(X))), jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps})
    if result.status == 1:
        warnings.warn(f"L-BFGS did not converge in {max_iter} iterations (C={C:g}); raise max_iter or lower C",
                      ConvergenceWarning, stacklevel=3)
    return result.x, int(result.nit)


class _Path:
    """One training set's logistic regressions, refitted along the ``C`` grid from the previous solution."""

    def __init__(self, X: np.ndarray, targets: np.ndarray, multilabel: bool, n_outputs: int, max_iter: int,
                 tol: float = TOL) -> None:
        from sklearn.linear_model import LogisticRegression

        self.size, self.max_iter, self.tol = X.size * n_outputs, max_iter, tol
        with _blas_threads(self.size):
            self.space = _RowSpace(np.asarray(X, dtype=np.float64))
        self.X, self.multilabel, self.n_outputs = self.space.X, multilabel, n_outputs
        if multilabel:  # one-vs-rest: one warm-started solution per class that has positives and negatives here
            columns = targets.astype(np.int8)
            self.columns, self.start, self.constant = {}, {}, np.zeros(n_outputs)
            for c in range(n_outputs):
                positives = int(columns[:, c].sum())
                if 0 < positives < len(columns):
                    self.columns[c] = columns[:, c].astype(np.float64)
                    self.start[c] = np.zeros(self.X.shape[1] + 1)
                else:  # nothing to learn: the class is always or never present in these rows
                    self.constant[c] = _ABSENT_LOGIT if positives else -_ABSENT_LOGIT
        else:
            self.model = LogisticRegression(max_iter=max_iter, tol=tol, warm_start=True)
            self.targets = targets

    def fit(self, C: float) -> LogisticSolution:
        with _blas_threads(self.size):
            coef, intercept, n_iter = self._fit(C)
        return LogisticSolution(self.space.weights(coef), intercept, n_iter)

    def _fit(self, C: float) -> tuple[np.ndarray, np.ndarray, int]:
        coef, intercept = np.zeros((self.n_outputs, self.X.shape[1])), np.zeros(self.n_outputs)
        if self.multilabel:
            intercept[:] = self.constant
            n_iter = 0
            for c, column in self.columns.items():
                self.start[c], steps = _binary_lbfgs(self.X, column, C, self.start[c], self.max_iter, self.tol)
                coef[c], intercept[c] = self.start[c][:-1], self.start[c][-1]
                n_iter = max(n_iter, steps)
            return coef, intercept, n_iter
        model = self.model.set_params(C=C).fit(self.X, self.targets)
        present = model.classes_.astype(int)
        intercept[:] = -_ABSENT_LOGIT  # classes these rows lack (a fold may miss a rare class)
        if len(present) == 2:  # one decision value z: logits (-z/2, z/2) give softmax = sigmoid(z)
            coef[present] = np.stack([-model.coef_[0], model.coef_[0]]) / 2
            intercept[present] = np.array([-model.intercept_[0], model.intercept_[0]]) / 2
        else:
            coef[present], intercept[present] = model.coef_, model.intercept_
        return coef, intercept, int(np.max(model.n_iter_))


def fit_logistic(X: np.ndarray, targets: np.ndarray, *, multilabel: bool, n_outputs: int, C: float,
                 max_iter: int) -> LogisticSolution:
    """L2-penalised logistic regression of ``targets`` on ``X`` (already normalised), by scikit-learn's L-BFGS.

    Parameters
    ----------
    X : ndarray of shape (n_clips, n_features)
    targets : ndarray
        A 0/1 indicator ``(n_clips, n_outputs)`` (``multilabel``: one
        sigmoid per class, one-vs-rest) or class indices ``(n_clips,)``
        (softmax over ``n_outputs`` classes, multinomial).
    C : float
        Inverse penalty strength, as in ``LogisticRegression``.
    max_iter : int
        L-BFGS iterations at most (per class for one-vs-rest).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 3))
    >>> fit = fit_logistic(X, (X[:, 0] > 0).astype(int), multilabel=False, n_outputs=2, C=1.0, max_iter=100)
    >>> fit.coef.shape, bool(fit.coef[1, 0] > 0)
    ((2, 3), True)
    """
    return _Path(X, targets, multilabel, n_outputs, max_iter).fit(C)


def _log_loss(indicator: np.ndarray, logits: np.ndarray, multilabel: bool) -> float:
    """Mean validation loss of ``logits``: summed binary log-losses per clip, or the softmax cross-entropy."""
    from scipy.special import log_softmax

    if multilabel:
        return float(np.mean(np.sum(np.logaddexp(0.0, logits) - indicator * logits, axis=1)))
    return float(-np.mean(np.sum(indicator * log_softmax(logits, axis=1), axis=1)))


def _prior_logits(indicator: np.ndarray, multilabel: bool) -> np.ndarray:
    """Logits ``(1, n_outputs)`` of the class frequencies of ``indicator`` (the intercepts alone)."""
    frequency = np.clip(indicator.mean(axis=0), 1e-6, 1 - 1e-6)
    return (np.log(frequency) - np.log1p(-frequency) if multilabel else np.log(frequency))[None]


def select_c(X: np.ndarray, targets: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], *, multilabel: bool,
             n_outputs: int, normalize, max_iter: int, grid: tuple[float, ...] = C_GRID,
             patience: int = C_PATIENCE) -> tuple[float, dict]:
    """The ``C`` of ``grid`` with the lowest mean validation log-loss over ``folds``.

    The validation log-loss is the training loss on the held-out clips (a
    proper scoring rule, ``LogisticRegressionCV``'s coming default): unlike
    average precision it punishes the overconfidence of a weak penalty, which
    matters where the folds leak (clips cut from the same recordings on both
    sides of a split make every fold score favour the weakest penalty). Each
    fold's features are normalised with its training rows' statistics
    (``normalize(train_rows) -> (shift, scale)``, or None for raw features);
    each fold walks ``grid`` in increasing order, warm-started from the
    previous ``C`` and solved to :data:`SELECTION_TOL`, and the walk stops
    after ``patience`` points without a lower mean loss, once the lowest is
    more than :data:`C_STOP_GAIN` below the loss of the class frequencies
    (not on the plateau of the strongest penalties). Ties go to the smaller
    ``C`` (the stronger penalty).

    Returns
    -------
    best : float
    results : dict
        ``C``, ``mean_log_loss``, ``mean_score``, ``std_score`` (validation
        macro average precision over the folds) for every ``C`` scored (the
        walk may stop before the end of ``grid``).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.model_selection import KFold
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(90, 20))
    >>> y = (X[:, 0] + rng.normal(size=90) > 0).astype(int)
    >>> folds = list(KFold(3, shuffle=True, random_state=0).split(X))
    >>> best, results = select_c(X, y, folds, multilabel=False, n_outputs=2, normalize=None, max_iter=100)
    >>> best == results["C"][int(np.argmin(results["mean_log_loss"]))]
    True
    """
    from ._selection import _macro_ap

    indicator = targets if multilabel else np.eye(n_outputs, dtype=np.int8)[targets]
    paths, valid_X = [], []
    for train, valid in folds:
        X_train, X_valid = X[train], X[valid]
        if normalize is not None:
            shift, scale = normalize(X_train)
            X_train, X_valid = (X_train - shift) / scale, (X_valid - shift) / scale
        paths.append(_Path(X_train, targets[train], multilabel, n_outputs, max_iter, SELECTION_TOL))
        valid_X.append(X_valid)
    prior = float(np.mean([_log_loss(indicator[valid], _prior_logits(indicator[train], multilabel), multilabel)
                           for train, valid in folds]))
    tried, scores, losses, best, since_best = [], [], [], np.inf, 0
    for C in sorted(grid):
        ap, loss = [], []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the weak end of the path may stop early
            for path, X_valid, (_, valid) in zip(paths, valid_X, folds):
                fit = path.fit(C)
                logits = X_valid @ fit.coef.T + fit.intercept
                ap.append(_macro_ap(indicator[valid], logits))
                loss.append(_log_loss(indicator[valid], logits, multilabel))
        tried.append(C)
        scores.append(ap)
        losses.append(float(np.mean(loss)))
        if np.isfinite(losses[-1]) and losses[-1] < best:
            best, since_best = losses[-1], 0
        else:
            since_best += 1
            if since_best >= patience and best < prior * (1 - C_STOP_GAIN):
                break
    scores = np.array(scores)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no fold scored: NaN
        mean, std = np.nanmean(scores, axis=1), np.nanstd(scores, axis=1)
    ranked = np.where(np.isfinite(losses), losses, np.inf)
    return tried[int(np.argmin(ranked))], {"C": tried, "mean_log_loss": losses, "mean_score": mean.tolist(),
                                             "std_score": std.tolist()}
