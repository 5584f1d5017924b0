"""The probes' defaults: input normalisation, automatic batch size, saturation report, the paper's recipe."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skprobe import AttentiveProbeClassifier, LinearProbeClassifier, PrototypicalProbeClassifier
from skprobe.probes._diagnostics import saturated_share
from skprobe.probes.base import (
    AUTO_CENTER_COHERENCE,
    AUTO_CENTER_OFFSET_RATIO,
    auto_batch_size,
    auto_learning_rate,
    direction_coherence,
    feature_moments,
    raw_moments,
)

# on toy tensors torch's thread synchronisation costs far more than it saves (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROBES = [LinearProbeClassifier, AttentiveProbeClassifier, PrototypicalProbeClassifier]
#: The paper's recipe: 30 epochs of batches of 128 on raw tokens at a fixed learning rate.
PAPER_RECIPE = dict(normalize_tokens="none", batch_size=128, max_iter=30)
RECIPE_LR = {LinearProbeClassifier: 1e-2, AttentiveProbeClassifier: 1e-3, PrototypicalProbeClassifier: 2e-2}


@pytest.mark.parametrize(("Probe", "params"), [
    (LinearProbeClassifier, {}),  # defaults: centred pooled features
    (AttentiveProbeClassifier, {}),  # defaults: centred tokens
    (PrototypicalProbeClassifier, {}),  # defaults: "auto", raw zero-mean tokens here
    (PrototypicalProbeClassifier, {"normalize_tokens": "center"}),
    (AttentiveProbeClassifier, {"normalize_tokens": "scale"}),
    (PrototypicalProbeClassifier, {"normalize_tokens": "none"}),  # cosine similarity alone ignores the scale
])
@pytest.mark.parametrize("factor", [100.0, 0.01])
def test_normalisation_makes_predictions_scale_invariant(Probe, params, factor, multilabel_tokens):
    X, Y = multilabel_tokens
    a = Probe(max_iter=5, random_state=0, **params).fit(X, Y)
    b = Probe(max_iter=5, random_state=0, **params).fit(X * factor, Y)
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(X * factor), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("Probe", [LinearProbeClassifier, AttentiveProbeClassifier])
def test_raw_tokens_are_not_scale_invariant(Probe, multilabel_tokens):
    """normalize_tokens="none" really feeds raw tokens (what the invariance test would otherwise miss)."""
    X, Y = multilabel_tokens
    params = dict(normalize_tokens="none", learning_rate=RECIPE_LR[Probe], max_iter=5, random_state=0)
    a = Probe(**params).fit(X, Y)
    b = Probe(**params).fit(X * 100, Y)
    assert np.abs(a.decision_function(X) - b.decision_function(X * 100)).max() > 0.1


def test_center_keeps_one_global_scale(multilabel_tokens):
    X, Y = multilabel_tokens
    X = X * np.linspace(1, 10, X.shape[2], dtype=np.float32) + 7
    clf = AttentiveProbeClassifier(normalize_tokens="center", max_iter=1, random_state=0).fit(X, Y)
    flat = X.reshape(-1, X.shape[2]).astype(np.float64)
    np.testing.assert_allclose(clf.module_.token_mean.numpy(), flat.mean(0), rtol=1e-4, atol=1e-4)
    scale = clf.module_.token_scale.numpy()
    np.testing.assert_allclose(scale, np.sqrt(flat.var(0).mean()), rtol=1e-4)
    assert np.ptp(scale) == 0


def test_feature_moments_modes():
    x = torch.tensor([[0.0, 10.0, 5.0], [2.0, 30.0, 5.0]])
    mean, scale = feature_moments([x[:1], x[1:]], "standard")
    np.testing.assert_allclose(mean.numpy(), [1.0, 20.0, 5.0])
    np.testing.assert_allclose(scale.numpy(), [1.0, 10.0, 1.0])  # a constant dimension keeps scale 1
    mean, scale = feature_moments([x], "center")
    np.testing.assert_allclose(scale.numpy(), np.full(3, np.sqrt((1 + 100 + 0) / 3)), rtol=1e-6)
    mean, scale = feature_moments([x], "scale")  # no shift; the root mean square of all values
    np.testing.assert_allclose(mean.numpy(), 0.0)
    np.testing.assert_allclose(scale.numpy(), np.full(3, np.sqrt((0 + 100 + 25 + 4 + 900 + 25) / 6)), rtol=1e-6)


def test_linear_probe_normalises_pooled_features(multilabel_tokens):
    X, Y = multilabel_tokens
    clf = LinearProbeClassifier(pooling="meanmax", normalize_tokens="standard", max_iter=1, random_state=0).fit(X, Y)
    features = np.concatenate([X.mean(1), X.max(1)], axis=1).astype(np.float64)
    head = clf.module_.head
    np.testing.assert_allclose(head.feature_mean.numpy(), features.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(head.feature_scale.numpy(), features.std(0), rtol=1e-3)
    assert clf.module_.token_mean is None  # the tokens themselves stay raw


def test_meanmax_linear_probe_does_not_collapse_on_large_tokens(multilabel_tokens):
    """aiSFX-like inputs (large, non-centred max-pooled features) trained the raw probe into saturation."""
    X, Y = multilabel_tokens
    X = np.abs(X) * 12 + 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = LinearProbeClassifier(pooling="meanmax", max_iter=10, random_state=0).fit(X, Y)
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_saturated_fit_warns_with_probe_name_and_advice(multilabel_tokens):
    X, Y = multilabel_tokens
    X = np.abs(X) * 1e3
    with pytest.warns(ConvergenceWarning, match=r"LinearProbeClassifier: .* saturated .* lower learning_rate"):
        LinearProbeClassifier(pooling="meanmax", normalize_tokens="none", learning_rate=10.0, max_iter=5,
                              random_state=0).fit(X, Y)


def test_diverged_fit_raises(multilabel_tokens):
    X, Y = multilabel_tokens
    X = X * np.float32(2e38 / np.abs(X).max())  # finite, but sums over tokens overflow in float32
    with pytest.raises(ValueError, match=r"LinearProbeClassifier: the training loss became nan in epoch 1 "
                                         r"\(diverged\); lower learning_rate .* use normalize_tokens"):
        LinearProbeClassifier(normalize_tokens="none", max_iter=3, random_state=0).fit(X, Y)


def test_saturated_share():
    logits = torch.tensor([[20.0, -20.0, 0.0], [-20.0, 20.0, 3.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert saturated_share(logits, targets, "asl") == pytest.approx(2 / 6)
    assert saturated_share(torch.tensor([[0.0, 40.0], [40.0, 0.0]]), torch.tensor([0, 0]), "ce") == 0.5


def test_auto_batch_size_gives_small_sets_enough_steps(multilabel_tokens):
    assert [auto_batch_size(n) for n in (30, 200, 600, 1024, 20000)] == [32, 32, 75, 128, 128]
    X, Y = multilabel_tokens  # 120 clips: 4 steps per epoch instead of 1 at batch_size=128
    clf = PrototypicalProbeClassifier(max_iter=3, random_state=0).fit(X, Y)
    assert clf.batch_size_ == 32 and clf.n_steps_ == 3 * 4
    recipe = PrototypicalProbeClassifier(random_state=0).set_params(**PAPER_RECIPE, learning_rate=2e-2).fit(X, Y)
    assert recipe.batch_size_ == 128 and recipe.n_steps_ == 30


@pytest.mark.parametrize("Probe", PROBES)
def test_paper_recipe_is_one_set_params_away(Probe, multilabel_tokens):
    """The recipe trains raw tokens with batches of 128 for 30 epochs: no normalisation buffers at all."""
    X, Y = multilabel_tokens
    clf = Probe(random_state=0).set_params(**PAPER_RECIPE, learning_rate=RECIPE_LR[Probe]).fit(X, Y)
    assert clf.n_iter_ == 30 and clf.batch_size_ == 128 and clf.learning_rate_ == RECIPE_LR[Probe]
    assert clf.normalize_tokens_ == "none"
    assert clf.module_.token_mean is None and clf.module_.token_scale is None
    assert getattr(clf.module_.head, "feature_mean", None) is None


def test_auto_learning_rate_scales_as_one_over_fan_in(multilabel_tokens):
    assert auto_learning_rate(10.0, 1024) == pytest.approx(10 / 1024)
    assert auto_learning_rate(10.0, 8) == auto_learning_rate(10.0, 64) == pytest.approx(10 / 64)  # floored at 64
    X, Y = multilabel_tokens
    wide = np.concatenate([X] * 16, axis=2)  # dim 16 * 16 = 256 > the floor
    assert LinearProbeClassifier(max_iter=1, cv=None).fit(wide, Y).learning_rate_ == pytest.approx(10 / 256)
    assert LinearProbeClassifier(pooling="meanmax", max_iter=1, cv=None).fit(wide, Y).learning_rate_ == pytest.approx(10 / 512)
    assert AttentiveProbeClassifier(max_iter=1).fit(wide, Y).learning_rate_ == pytest.approx(1.6 / 256)
    assert LinearProbeClassifier(learning_rate=3e-3, max_iter=1).fit(wide, Y).learning_rate_ == 3e-3
    assert PrototypicalProbeClassifier(max_iter=1).fit(wide, Y).learning_rate_ == 2e-2
    with pytest.raises(ValueError, match="learning_rate"):
        PrototypicalProbeClassifier(learning_rate="auto").fit(X, Y)


def test_auto_normalisation_centres_only_tokens_with_a_common_offset(multilabel_tokens):
    X, Y = multilabel_tokens
    raw = PrototypicalProbeClassifier(max_iter=3, random_state=0).fit(X, Y)
    assert raw.normalize_tokens_ == "scale" and not raw.module_.token_mean.any()
    assert raw.module_.token_offset_ratio < AUTO_CENTER_OFFSET_RATIO
    flat = X.reshape(-1, X.shape[2]).astype(np.float64)
    np.testing.assert_allclose(raw.module_.token_scale.numpy(), np.sqrt(np.mean(flat**2)), rtol=1e-4)
    scaled = PrototypicalProbeClassifier(normalize_tokens="scale", max_iter=3, random_state=0).fit(X, Y)
    np.testing.assert_allclose(raw.decision_function(X), scaled.decision_function(X), rtol=1e-5, atol=1e-6)
    assert AttentiveProbeClassifier(max_iter=1).fit(X + 10 * X.std(), Y).normalize_tokens_ == "center"
    # A common offset makes every token point the same way; "auto" then centres, which removes it exactly.
    offset = np.random.default_rng(1).normal(size=X.shape[2]).astype(np.float32) * 3 * X.std()
    a = PrototypicalProbeClassifier(max_iter=3, random_state=0).fit(X + offset, Y)
    b = PrototypicalProbeClassifier(max_iter=3, random_state=0).fit(X + 2 * offset, Y)
    assert a.normalize_tokens_ == b.normalize_tokens_ == "center"
    assert a.module_.token_offset_ratio > AUTO_CENTER_OFFSET_RATIO
    np.testing.assert_allclose(a.decision_function(X + offset), b.decision_function(X + 2 * offset), atol=1e-3)
    centred = PrototypicalProbeClassifier(normalize_tokens="center", max_iter=3, random_state=0).fit(X + offset, Y)
    np.testing.assert_allclose(a.decision_function(X + offset), centred.decision_function(X + offset))


def test_direction_coherence_is_the_mean_cosine_to_the_mean_direction():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(4000, 32)) * rng.uniform(0.1, 10, size=(4000, 1)) + 0.7  # norms vary 100-fold
    moments = raw_moments([torch.from_numpy(rows[:1500]), torch.from_numpy(rows[1500:])], directions=True)
    mean = rows.mean(axis=0)
    cosines = rows @ mean / np.linalg.norm(rows, axis=1) / np.linalg.norm(mean)
    assert direction_coherence(moments.mean, moments.unit_mean) == pytest.approx(cosines.mean(), rel=1e-9)
    assert raw_moments([torch.from_numpy(rows)]).unit_mean is None
    assert direction_coherence(torch.zeros(3), torch.zeros(3)) == 0.0


@pytest.mark.parametrize("offset_ratio, prototypical, attentive", [(0.5, "scale", "center"), (2.0, "center", "center")])
def test_prototypical_auto_normalisation_follows_directions_not_the_offset(multilabel_tokens, offset_ratio,
                                                                          prototypical, attentive):
    # Isotropic tokens plus an offset: offset ratio r, mean cosine to the mean about sqrt(r / (1 + r)):
    # 0.58 for r = 0.5 (cosines still tell tokens apart: no centring), 0.82 for r = 2.
    X, Y = multilabel_tokens
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=X.shape).astype(np.float32)
    direction = rng.normal(size=X.shape[2])
    tokens += (direction / np.linalg.norm(direction) * np.sqrt(offset_ratio * X.shape[2])).astype(np.float32)
    proto = PrototypicalProbeClassifier(max_iter=1, random_state=0).fit(tokens, Y)
    assert proto.module_.token_offset_ratio == pytest.approx(offset_ratio, rel=0.05)
    assert proto.module_.token_coherence == pytest.approx(np.sqrt(offset_ratio / (1 + offset_ratio)), abs=0.02)
    assert (proto.module_.token_coherence > AUTO_CENTER_COHERENCE) == (prototypical == "center")
    assert proto.normalize_tokens_ == prototypical
    assert AttentiveProbeClassifier(max_iter=1).fit(tokens, Y).normalize_tokens_ == attentive


def test_auto_training_length_gives_small_sets_a_minimum_of_steps(multilabel_tokens):
    X, Y = multilabel_tokens  # 120 clips: batches of 32, 4 steps per epoch
    assert LinearProbeClassifier(cv=None).fit(X, Y).max_iter_ == 30  # no minimum (cv may choose 90)
    attentive = AttentiveProbeClassifier(random_state=0).fit(X, Y)
    assert attentive.max_iter_ == attentive.n_iter_ == 90  # 480 steps would need 120 epochs: capped at 90
    big = np.concatenate([X] * 30)  # 3,600 clips: 29 steps of 128 per epoch, 870 steps in 30 epochs
    assert PrototypicalProbeClassifier(max_iter="auto")._resolve_max_iter(len(big), 128) == 30
    assert PrototypicalProbeClassifier()._resolve_max_iter(600, 75) == 90  # 8 steps per epoch, 720 steps
    assert AttentiveProbeClassifier()._resolve_max_iter(600, 75) == 60
    assert AttentiveProbeClassifier(max_iter=7)._resolve_max_iter(600, 75) == 7


def test_feature_moments_stay_exact_far_from_zero():
    """Tokens with an offset 1e5 times their spread: no cancellation in the float32 pass."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(20000, 8)) * 0.01 + 1000).astype(np.float32)
    t = torch.from_numpy(x)
    mean, scale = feature_moments([t[:5000], t[5000:12000], t[12000:]], "standard")
    np.testing.assert_allclose(mean.numpy(), x.astype(np.float64).mean(0), rtol=1e-7)
    np.testing.assert_allclose(scale.numpy(), x.astype(np.float64).std(0), rtol=1e-4)
