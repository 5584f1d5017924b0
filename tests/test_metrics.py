"""Named metrics: values against scikit-learn, the empty-class policy, scorers."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_val_score

from skprobe import LinearProbeClassifier, PrototypicalProbeClassifier
from skprobe.metrics import (
    empty_classes,
    get_scorer,
    macro_map,
    macro_roc_auc,
    micro_ap,
    per_class_ap,
    top1_accuracy,
)

rng = np.random.default_rng(0)
Y = (rng.random((50, 4)) < 0.3).astype(int)
S = Y + rng.normal(scale=0.8, size=Y.shape)


def test_values_equal_sklearn_when_every_class_has_positives():
    assert macro_map(Y, S) == pytest.approx(average_precision_score(Y, S, average="macro"))
    assert micro_ap(Y, S) == pytest.approx(average_precision_score(Y, S, average="micro"))
    assert macro_roc_auc(Y, S) == pytest.approx(roc_auc_score(Y, S, average="macro"))


def test_classes_without_positives_are_left_out():
    y = Y.copy()
    y[:, 2] = 0
    assert empty_classes(y).tolist() == [2]
    ap = per_class_ap(y, S)
    assert np.isnan(ap[2])
    assert macro_map(y, S) == pytest.approx(np.mean(ap[[0, 1, 3]]))
    with pytest.warns(UserWarning):  # scikit-learn scores the empty class as 0 and warns
        sk = average_precision_score(y, S, average="macro")
    assert macro_map(y, S) > sk
    assert macro_roc_auc(y, S) == pytest.approx(np.mean([roc_auc_score(y[:, c], S[:, c]) for c in (0, 1, 3)]))


def test_nothing_to_average_gives_nan():
    assert np.isnan(macro_map(np.zeros((3, 2)), np.ones((3, 2))))
    assert np.isnan(micro_ap(np.zeros((3, 2)), np.ones((3, 2))))


def test_top1_and_labels():
    assert top1_accuracy(["a", "b", "b"], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="pass labels="):
        top1_accuracy(["a", "a"], [[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    assert top1_accuracy(["a", "a"], [[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]], labels=["a", "b", "c"]) == 0.5


def test_shape_errors():
    with pytest.raises(ValueError, match="3 columns but y_score has 4"):
        macro_map(Y[:, :3], S)
    with pytest.raises(ValueError, match="NaN"):
        macro_map(Y, np.full(S.shape, np.nan))


def test_scorers_in_model_selection(multilabel_tokens, multiclass_tokens):
    X, Yt = multilabel_tokens
    scores = cross_val_score(PrototypicalProbeClassifier(max_iter=3, random_state=0), X, Yt,
                             scoring=get_scorer("cmap"), cv=3)
    assert scores.shape == (3,) and np.isfinite(scores).all()
    Xc, yc = multiclass_tokens
    search = GridSearchCV(LinearProbeClassifier(max_iter=3, random_state=0), {"learning_rate": [1e-3, 1e-2]},
                          scoring=get_scorer("top1_accuracy"), cv=3).fit(Xc, yc)
    assert 0 <= search.best_score_ <= 1
    with pytest.raises(ValueError, match="unknown metric"):
        get_scorer("f1")


@pytest.mark.parametrize("seed", range(5))
def test_per_class_ap_equals_scikit_learn_with_ties_and_imbalance(seed):
    """The direct sum equals average_precision_score per class: tied (rounded) scores, rare and common classes,
    one positive, all positive."""
    rng = np.random.default_rng(seed)
    n, k = 97, 6
    Y = (rng.random((n, k)) < [0.01, 0.05, 0.3, 0.5, 0.9, 1.0]).astype(int)
    Y[rng.integers(n), 0] = 1
    S = np.round(rng.normal(size=(n, k)) + Y * rng.random(k), 1)  # ties
    ap = per_class_ap(Y, S)
    for c in range(k):
        assert ap[c] == pytest.approx(average_precision_score(Y[:, c], S[:, c]), abs=1e-12)
