"""The linear probe's internal cross-validation (``cv``): candidates, the choice, independence, cost controls."""

import numpy as np
import pytest
import torch

from skprobe import LinearProbeClassifier
from skprobe.probes._selection import Candidate, _bundles, _Folds, _train_group, select_settings
from skprobe.probes.base import auto_learning_rate
from skprobe.probes.losses import make_loss

# on toy tensors torch's thread synchronisation costs far more than it saves (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_defaults_choose_among_the_rule_and_its_neighbours(multilabel_tokens):
    X, Y = multilabel_tokens
    clf = LinearProbeClassifier(solver="adamw", random_state=0, device="cpu").fit(X, Y)
    results = clf.cv_results_
    rule = auto_learning_rate(10.0, X.shape[2])
    assert len(results["mean_score"]) == 6  # 3 learning rates x 2 normalisations
    assert sorted(set(results["learning_rate"])) == pytest.approx([0.3 * rule, rule, 3 * rule])
    assert set(results["normalize_tokens"]) == {"center", "standard"} and set(results["max_iter"]) == {30}
    best = int(np.nanargmax(results["mean_score"]))
    assert results["rank"][best] == 1
    assert (clf.learning_rate_, clf.normalize_tokens_, clf.max_iter_) == (
        results["learning_rate"][best], results["normalize_tokens"][best], results["max_iter"][best])
    assert clf.n_iter_ == clf.max_iter_


def test_cv_none_and_fixed_settings_skip_the_selection(multilabel_tokens):
    X, Y = multilabel_tokens
    rules = LinearProbeClassifier(cv=None, random_state=0, device="cpu").fit(X, Y)
    assert rules.cv_results_ is None
    assert (rules.learning_rate_, rules.normalize_tokens_, rules.max_iter_) == (
        auto_learning_rate(10.0, X.shape[2]), "center", 30)
    fixed = LinearProbeClassifier(learning_rate=0.01, normalize_tokens="center", max_iter=7, random_state=0,
                                  device="cpu").fit(X, Y)
    assert fixed.cv_results_ is None and fixed.learning_rate_ == 0.01 and fixed.n_iter_ == 7
    partly = LinearProbeClassifier(learning_rate=0.01, max_iter=7, random_state=0, device="cpu").fit(X, Y)
    assert partly.cv_results_["learning_rate"] == [0.01, 0.01]  # only the normalisation is left to choose
    stopped = LinearProbeClassifier(early_stopping=True, random_state=0, device="cpu").fit(X, Y)
    assert set(stopped.cv_results_["max_iter"]) == {30}  # the length is not searched


def test_selection_is_reproducible(multilabel_tokens):
    X, Y = multilabel_tokens
    a = LinearProbeClassifier(random_state=3, device="cpu").fit(X, Y)
    b = LinearProbeClassifier(random_state=3, device="cpu").fit(X, Y)
    assert a.cv_results_ == b.cv_results_
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))


def test_selection_prefers_what_scores_better_on_held_out_clips():
    """A learning rate too small to move in 5 epochs loses to a workable one."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 6)).astype(np.float32)
    y = torch.from_numpy((X[:, 0] + 0.3 * X[:, 1] > 0).astype(np.int64))
    ce = make_loss("ce", gamma_neg=0, gamma_pos=0, clip=0)
    candidates = [Candidate(1e-6, "center", 5), Candidate(0.1, "center", 5)]
    best, results = select_settings(X, y, "single-label", ce, candidates, n_outputs=2, batch_size=32,
                                    weight_decay=0.0, cv=3, seed=0, device=torch.device("cpu"))
    assert best == candidates[1] and results["mean_score"][1] > results["mean_score"][0] + 0.05
    assert results["rank"] == [2, 1] and all(s > 0 for s in results["std_score"])


def test_candidates_trained_together_do_not_affect_each_other():
    """Changing one candidate's learning rate leaves the other's outputs unchanged (summed, separate losses)."""
    rng = np.random.default_rng(1)
    X = torch.from_numpy(rng.normal(size=(60, 5)).astype(np.float32))
    Y = torch.from_numpy((rng.random((60, 3)) < 0.3).astype(np.float32))
    folds = _Folds(X, [(torch.arange(40), torch.arange(40, 60))], ["center", "standard"])
    outputs = []
    for other in (1e-3, 3e-2):
        torch.manual_seed(0)
        group = [Candidate(other, "standard", 4), Candidate(0.1, "center", 4)]
        outputs.append(_train_group(group, folds, Y, make_loss("asl", gamma_neg=4.0, gamma_pos=1.0, clip=0.05),
                                    n_outputs=3, batch_size=8, weight_decay=1e-4, epochs=4)[0])
    np.testing.assert_allclose(outputs[0][1].numpy(), outputs[1][1].numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(outputs[0][0].numpy(), outputs[1][0].numpy())


def test_folds_trained_together_do_not_affect_each_other():
    """Changing the features one fold trains on leaves the other fold's outputs unchanged, and each fold
    normalises with its own training rows' statistics."""
    rng = np.random.default_rng(2)
    X = torch.from_numpy(rng.normal(size=(90, 5)).astype(np.float32))
    Y = torch.from_numpy((rng.random((90, 3)) < 0.3).astype(np.float32))
    split = [(torch.arange(0, 30), torch.arange(60, 75)), (torch.arange(30, 60), torch.arange(75, 90))]
    outputs = []
    for shift in (0.0, 5.0):
        Z = X.clone()
        Z[30:60] = Z[30:60] * 3 + shift  # the second fold's training rows only
        torch.manual_seed(0)
        folds = _Folds(Z, split, ["standard"])
        assert torch.allclose(folds.stats["standard"][0][1], Z[30:60].mean(0), atol=1e-5)
        outputs.append(_train_group([Candidate(0.05, "standard", 3)], folds, Y,
                                    make_loss("bce", gamma_neg=0, gamma_pos=0, clip=0), n_outputs=3, batch_size=8,
                                    weight_decay=1e-4, epochs=3))
    np.testing.assert_allclose(outputs[0][0][0].numpy(), outputs[1][0][0].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(outputs[0][1][0].numpy(), outputs[1][1][0].numpy())


def test_uneven_folds_train_alone_and_even_ones_together():
    even = [(np.arange(10), np.arange(10, 15)), (np.arange(11), np.arange(11, 15))]
    uneven = [(np.arange(10), np.arange(10, 15)), (np.arange(20), np.arange(20, 25))]
    assert _bundles(even) == [[0, 1]] and _bundles(uneven) == [[0], [1]]


def test_tiny_sets_fall_back_to_the_rules():
    X = np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float32)
    clf = LinearProbeClassifier(max_iter=2, random_state=0, device="cpu").fit(X, [0, 1, 0, 1, 0])
    assert clf.cv_results_ is None and clf.normalize_tokens_ == "center"


def test_cv_parameter_is_validated(multilabel_tokens):
    X, Y = multilabel_tokens
    with pytest.raises(ValueError, match="'cv' parameter"):
        LinearProbeClassifier(cv=1).fit(X, Y)


def test_large_sets_select_on_a_bounded_subset(monkeypatch):
    """Above the bound the selection sees a random subset: its folds hold max_clips clips in all."""
    import skprobe.probes._selection as selection

    seen = []
    folds = selection._folds
    monkeypatch.setattr(selection, "_folds", lambda targets, *a: seen.append(len(targets)) or folds(targets, *a))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = torch.from_numpy((X[:, 0] > 0).astype(np.int64))
    ce = make_loss("ce", gamma_neg=0, gamma_pos=0, clip=0)
    select_settings(X, y, "single-label", ce, [Candidate(0.1, "center", 2), Candidate(0.01, "center", 2)],
                    n_outputs=2, batch_size=32, weight_decay=0.0, cv=3, seed=0, device=torch.device("cpu"),
                    max_clips=90)
    assert seen == [90]
