"""The probes as drop-in classifiers in scikit-learn model selection and meta-estimators."""

import numpy as np
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.multioutput import MultiOutputClassifier
from sklearn.pipeline import Pipeline

from skprobe import (
    AttentiveProbeClassifier,
    FrozenEncoderTransformer,
    LinearProbeClassifier,
    PrototypicalProbeClassifier,
)


def test_grid_search_over_probe_hyperparameters(multilabel_tokens):
    X, Y = multilabel_tokens
    search = GridSearchCV(
        PrototypicalProbeClassifier(max_iter=3, random_state=0),
        {"n_prototypes_per_class": [2, 4], "learning_rate": [1e-2, 5e-2]},
        scoring="average_precision",
        cv=KFold(3),
    ).fit(X, Y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_estimator_.n_prototypes_ == 3 * search.best_params_["n_prototypes_per_class"]
    assert search.predict(X).shape == Y.shape


def test_cross_val_score_average_precision_multilabel(multilabel_tokens):
    X, Y = multilabel_tokens
    for probe in (LinearProbeClassifier(max_iter=3, random_state=0), AttentiveProbeClassifier(max_iter=3, random_state=0)):
        scores = cross_val_score(probe, X, Y, scoring="average_precision", cv=3)
        assert scores.shape == (3,) and np.all((0 < scores) & (scores <= 1))


def test_multioutput_classifier_wraps_a_probe(multilabel_tokens):
    X, Y = multilabel_tokens
    model = MultiOutputClassifier(LinearProbeClassifier(max_iter=3, random_state=0)).fit(X, Y)
    assert model.predict(X).shape == Y.shape
    proba = model.predict_proba(X)
    assert len(proba) == Y.shape[1] and all(p.shape == (len(X), 2) for p in proba)


def test_pipeline_from_waveforms_to_labels():
    rng = np.random.default_rng(0)
    wavs = 0.1 * rng.normal(size=(24, 16000)).astype(np.float32)
    y = np.arange(24) % 2
    wavs[y == 1, ::40] += 0.8  # a click train: an audible class difference
    pipe = Pipeline([
        ("tokens", FrozenEncoderTransformer(encoder="tiny-vit")),
        ("probe", LinearProbeClassifier(pooling="cls", prefix_tokens=1, learning_rate=0.1, max_iter=40,
                                        random_state=0)),
    ]).fit(wavs, y)
    assert pipe.score(wavs, y) > 0.9
    assert pipe.predict_proba(wavs).shape == (24, 2)
