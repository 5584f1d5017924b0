"""The linear probe's logistic regression (solver="lbfgs"), its C chosen by cv, and cv splitters with groups."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, KFold
from sklearn.preprocessing import StandardScaler

from skprobe import LinearProbeClassifier
from skprobe.datasets import make_token_scenes
from skprobe.probes._logistic import C_GRID, fit_logistic, select_c
from skprobe.probes._selection import _folds


def _pooled(X):
    return StandardScaler().fit_transform(X.astype(np.float64).mean(axis=1))


def test_one_vs_rest_matches_scikit_learn(multilabel_tokens):
    """Each class's direct L-BFGS-B call takes LogisticRegression's steps: the same solution at the same
    tolerance, also for fewer clips than features (solved in the span of the rows); a class without positives
    gets a constant, very negative logit."""
    X, Y = multilabel_tokens
    F = _pooled(X)
    Y = Y.copy()
    Y[:, 0] = 0
    # 120 clips: the same steps; 12 clips of 16 features: the same optimum, but the stopping rule (every gradient
    # entry below tol) reads other coordinates, so the two stop within tol of it, not at the same point
    for rows, atol in ((slice(None), 1e-6), (slice(0, 12), 1e-4)):
        fit = fit_logistic(F[rows], Y[rows], multilabel=True, n_outputs=Y.shape[1], C=0.05, max_iter=500)
        np.testing.assert_array_equal(fit.coef[0], 0.0)
        assert fit.intercept[0] < -10 and fit.n_iter > 0
        for c in range(1, Y.shape[1]):
            ref = LogisticRegression(C=0.05, max_iter=500).fit(F[rows], Y[rows, c])
            np.testing.assert_allclose(fit.coef[c], ref.coef_[0], atol=atol)
            np.testing.assert_allclose(fit.intercept[c], ref.intercept_[0], atol=atol)


def test_multinomial_matches_scikit_learn_and_binary_keeps_the_decision_value(multiclass_tokens):
    X, labels = multiclass_tokens
    F = _pooled(X)
    y = np.unique(labels, return_inverse=True)[1]
    fit = fit_logistic(F, y, multilabel=False, n_outputs=3, C=0.1, max_iter=500)
    ref = LogisticRegression(C=0.1, max_iter=500).fit(F, y)
    np.testing.assert_allclose(F @ fit.coef.T + fit.intercept, ref.decision_function(F), atol=1e-6)
    binary = (y == 0).astype(int)
    fit = fit_logistic(F, binary, multilabel=False, n_outputs=2, C=0.1, max_iter=500)
    logits = F @ fit.coef.T + fit.intercept
    ref = LogisticRegression(C=0.1, max_iter=500).fit(F, binary)
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], ref.decision_function(F), atol=1e-6)


def test_lbfgs_probe_is_standardised_logistic_regression(multilabel_tokens):
    X, Y = multilabel_tokens
    probe = LinearProbeClassifier(solver="lbfgs", C=0.05, random_state=0, device="cpu").fit(X, Y)
    assert (probe.solver_, probe.C_, probe.loss_, probe.normalize_tokens_) == ("lbfgs", 0.05, "bce", "standard")
    assert probe.cv_results_ is None and probe.n_steps_ == probe.n_iter_ > 0
    F = X.astype(np.float64).mean(axis=1)
    scaler = StandardScaler().fit(F)
    for c in range(Y.shape[1]):
        ref = LogisticRegression(C=0.05, max_iter=5000, tol=1e-10).fit(scaler.transform(F), Y[:, c])
        np.testing.assert_allclose(probe.decision_function(X)[:, c], ref.decision_function(scaler.transform(F)),
                                   atol=2e-3)  # the probe stops at scikit-learn's default tolerance


def test_c_is_chosen_by_validation_log_loss_along_a_stopping_path():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 40))
    y = (X[:, 0] + rng.normal(size=150) > 0).astype(int)
    folds = list(KFold(3, shuffle=True, random_state=0).split(X))
    best, results = select_c(X, y, folds, multilabel=False, n_outputs=2, normalize=None, max_iter=200)
    losses = results["mean_log_loss"]
    assert best == results["C"][int(np.argmin(losses))]
    assert results["C"] == sorted(results["C"]) and results["C"] == list(C_GRID[: len(results["C"])])
    assert len(results["C"]) < len(C_GRID)  # 40 noise dimensions: the loss rises at the weak end and the walk stops
    assert all(losses[i] >= min(losses) for i in range(len(losses)))
    assert 1e-3 < best < 10


def test_the_walk_does_not_stop_on_the_plateau_of_the_strongest_penalties():
    # the defaults panel's 200 synthetic clips: the mean token carries little signal per dimension, and the
    # validation loss creeps up from C = 1e-4 to 3e-3 before it falls by a quarter
    data = make_token_scenes(300, n_tokens=64, dim=64, n_classes=8, max_events=3, noise=0.3, event_strength=4.0,
                             strength_spread=3.0, background_strength=4.0, n_distractors=4, random_state=0)
    features = data.X[:200].mean(axis=1)
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    folds = _folds(data.y[:200], "multilabel", 3, 0, None)
    best, results = select_c(features, data.y[:200], folds, multilabel=True, n_outputs=8, normalize=None,
                             max_iter=500)
    losses = results["mean_log_loss"]
    assert losses[3] > losses[0]  # three points without improvement: the old stopping rule ended here
    assert best >= 1.0 and min(losses) < 0.75 * losses[0]


def test_single_label_default_solves_the_logistic_regression(multiclass_tokens):
    X, labels = multiclass_tokens
    probe = LinearProbeClassifier(random_state=0, device="cpu").fit(X, labels)
    assert probe.solver_ == "lbfgs" and probe.loss_ == "ce" and probe.C_ in C_GRID
    assert set(probe.cv_results_["solver"]) == {"lbfgs"}
    chosen = probe.cv_results_["C"].index(probe.C_)
    assert probe.cv_results_["mean_log_loss"][chosen] == min(probe.cv_results_["mean_log_loss"])
    assert (probe.predict(X) == labels).mean() > 0.9


def test_multilabel_default_lets_asl_and_logistic_regression_compete(multilabel_tokens):
    X, Y = multilabel_tokens
    probe = LinearProbeClassifier(random_state=0, device="cpu").fit(X, Y)
    results = probe.cv_results_
    assert set(results["solver"]) == {"adamw", "lbfgs"}
    adamw = max(s for s, k in zip(results["mean_score"], results["solver"]) if k == "adamw")
    lbfgs = [i for i, k in enumerate(results["solver"]) if k == "lbfgs"]
    chosen = min(lbfgs, key=lambda i: results["mean_log_loss"][i])
    expected = "lbfgs" if results["mean_score"][chosen] > adamw else "adamw"
    assert probe.solver_ == expected
    assert probe.loss_ == ("bce" if expected == "lbfgs" else "asl")


@pytest.mark.parametrize("params", [{"max_iter": 5}, {"learning_rate": 0.01}, {"loss": "asl"},
                                    {"solver": "adamw"}, {"early_stopping": True}])
def test_adamw_settings_keep_adamw_alone(multilabel_tokens, params):
    X, Y = multilabel_tokens
    probe = LinearProbeClassifier(random_state=0, device="cpu", **params).fit(X, Y)
    assert probe.solver_ == "adamw" and probe.C_ is None
    assert probe.cv_results_ is None or set(probe.cv_results_["solver"]) == {"adamw"}


def test_solver_errors_name_the_parameters(multilabel_tokens):
    X, Y = multilabel_tokens
    with pytest.raises(ValueError, match="solver='lbfgs' solves the logistic regression"):
        LinearProbeClassifier(solver="lbfgs", loss="asl").fit(X, Y)
    with pytest.raises(ValueError, match="early_stopping=True stops the epochs of solver='adamw'"):
        LinearProbeClassifier(solver="lbfgs", early_stopping=True).fit(X, Y)
    with pytest.raises(ValueError, match="'solver' parameter"):
        LinearProbeClassifier(solver="sgd").fit(X, Y)
    with pytest.raises(ValueError, match="'C' parameter"):
        LinearProbeClassifier(C=0).fit(X, Y)


def test_integer_cv_with_groups_keeps_groups_on_one_side():
    groups = np.repeat(np.arange(12), 10)
    targets = np.random.default_rng(0).integers(0, 2, size=(120, 3))
    for train, valid in _folds(targets, "multilabel", 3, 0, groups):
        assert not set(groups[train]) & set(groups[valid])
    shuffled = _folds(targets, "multilabel", 3, 0)
    assert any(set(groups[t]) & set(groups[v]) for t, v in shuffled)  # plain folds split the groups


class _Recording(GroupKFold):
    """GroupKFold that records the groups it was given."""

    seen = []

    def split(self, X, y=None, groups=None):
        _Recording.seen.append(None if groups is None else np.asarray(groups).copy())
        return super().split(X, y, groups)


@pytest.mark.parametrize("solver", ["lbfgs", "adamw"])
def test_splitter_receives_the_groups_of_fit(multilabel_tokens, solver):
    X, Y = multilabel_tokens
    groups = np.arange(len(X)) // 10
    _Recording.seen = []
    probe = LinearProbeClassifier(cv=_Recording(3), solver=solver, random_state=0, device="cpu")
    probe.fit(X, Y, groups=groups)
    assert len(_Recording.seen) >= 1 and all(np.array_equal(g, groups) for g in _Recording.seen)
    assert probe.cv_results_ is not None


def test_iterable_cv_and_bad_groups(multilabel_tokens):
    X, Y = multilabel_tokens
    splits = list(KFold(3).split(X))
    probe = LinearProbeClassifier(cv=splits, solver="lbfgs", random_state=0, device="cpu").fit(X, Y)
    assert probe.cv_results_ is not None
    with pytest.raises(ValueError, match="groups must hold one group label per clip"):
        LinearProbeClassifier(random_state=0).fit(X, Y, groups=np.arange(len(X) - 1))
