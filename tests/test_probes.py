"""Behaviour of the three probes: outputs, round trips, methods and errors."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from skprobe import AttentiveProbeClassifier, LinearProbeClassifier, PrototypicalProbeClassifier
from skprobe.probes.attentive import AttentivePoolingHead, auto_heads
from skprobe.probes.linear import PooledLinearHead
from skprobe.probes.prototypical import PrototypeHead

# on toy tensors torch's thread synchronisation costs far more than it saves (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROBES = [LinearProbeClassifier, AttentiveProbeClassifier, PrototypicalProbeClassifier]
FAST = dict(max_iter=3, random_state=0)


@pytest.mark.parametrize("Probe", PROBES)
def test_multilabel_outputs(Probe, multilabel_tokens):
    X, Y = multilabel_tokens
    clf = Probe(**FAST).fit(X, Y)
    assert clf.loss_ == "asl" and clf.target_type_ == "multilabel"
    np.testing.assert_array_equal(clf.classes_, np.arange(3))
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3) and proba.dtype == np.float64
    assert (proba > 0).all() and (proba < 1).all()
    pred = clf.predict(X)
    assert pred.shape == Y.shape and pred.dtype == Y.dtype and set(np.unique(pred)) <= {0, 1}
    logits = clf.decision_function(X)
    assert logits.shape == (len(X), 3)
    np.testing.assert_array_equal(pred, (logits > 0).astype(Y.dtype))


@pytest.mark.parametrize("Probe", PROBES)
def test_multiclass_string_labels(Probe, multiclass_tokens):
    X, y = multiclass_tokens
    clf = Probe(**FAST).fit(X, y)
    assert clf.loss_ == "ce"
    np.testing.assert_array_equal(clf.classes_, ["bird", "car", "dog"])
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(clf.predict(X)) <= set(clf.classes_)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])


@pytest.mark.parametrize("loss", ["ce", "bce", "asl"])
def test_binary_decision_function_is_positive_class_log_odds(loss, multiclass_tokens):
    X, y = multiclass_tokens
    keep = y != "dog"
    clf = PrototypicalProbeClassifier(loss=loss, **FAST).fit(X[keep], y[keep])
    assert clf.target_type_ == "binary"
    proba = clf.predict_proba(X[keep])
    decision = clf.decision_function(X[keep])
    assert decision.shape == (keep.sum(),)
    np.testing.assert_allclose(decision, np.log(proba[:, 1] / proba[:, 0]), rtol=1e-6, atol=1e-9)


def test_multilabel_probabilities_stay_inside_open_interval():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4, 8)).astype(np.float32) * 100
    Y = (rng.random((40, 2)) < 0.5).astype(int)
    with pytest.warns(ConvergenceWarning, match="saturated"):  # random labels, raw tokens, lr 1: collapses
        clf = LinearProbeClassifier(normalize_tokens="none", learning_rate=1.0, max_iter=20, random_state=0).fit(X, Y)
    proba = clf.predict_proba(X)
    assert np.abs(clf.decision_function(X)).max() > 40  # logits where float64 sigmoid saturates
    assert (proba > 0).all() and (proba < 1).all()


@pytest.mark.parametrize("Probe", PROBES)
def test_token_count_may_change_between_fit_and_predict(Probe, multilabel_tokens):
    X, Y = multilabel_tokens
    clf = Probe(**FAST).fit(X, Y)
    assert clf.n_features_in_ == X.shape[2]
    assert clf.predict_proba(X[:, :5]).shape == (len(X), 3)
    assert clf.predict_proba(X[:, 0]).shape == (len(X), 3)  # 2-D: one token per clip


@pytest.mark.parametrize("Probe", PROBES)
def test_same_random_state_same_predictions_and_pickle_clone_round_trip(Probe, multilabel_tokens):
    X, Y = multilabel_tokens
    a = Probe(**FAST).fit(X, Y)
    b = Probe(**FAST).fit(X, Y)
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    c = Probe(max_iter=3, random_state=1).fit(X, Y)
    assert not np.allclose(a.decision_function(X), c.decision_function(X))
    restored = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(restored.decision_function(X), a.decision_function(X))
    cloned = clone(a)
    assert not hasattr(cloned, "module_") and cloned.get_params() == a.get_params()


def test_float16_tokens_match_float32(multilabel_tokens):
    X, Y = multilabel_tokens
    clf = PrototypicalProbeClassifier(**FAST).fit(X, Y)
    np.testing.assert_allclose(
        clf.decision_function(X.astype(np.float16)), clf.decision_function(X.astype(np.float16).astype(np.float32))
    )


def test_auto_device_on_cpu_machine_and_explicit_cuda_error(multilabel_tokens, monkeypatch):
    X, Y = multilabel_tokens
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    clf = LinearProbeClassifier(**FAST).fit(X, Y)
    assert next(clf.module_.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        clf.set_params(device="cuda").predict(X)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fitted_on_gpu_predicts_on_cpu(multilabel_tokens):
    X, Y = multilabel_tokens
    clf = PrototypicalProbeClassifier(device="cuda", **FAST).fit(X, Y)
    gpu = clf.decision_function(X)
    restored = pickle.loads(pickle.dumps(clf)).set_params(device="cpu")
    assert all(t.device.type == "cpu" for t in restored.module_.state_dict().values())
    np.testing.assert_allclose(restored.decision_function(X), gpu, atol=1e-4)


# -- the heads, exactly as in the paper ------------------------------------------------------------

def test_prototypical_parameter_count_matches_paper():
    head = PrototypeHead(768, 10, n_prototypes_per_class=20)
    assert sum(p.numel() for p in head.parameters()) == 200 * 768 + 200 * 10 + 10 == 155_610


def test_attentive_parameter_count_and_heads():
    head = AttentivePoolingHead(768, 10, n_queries=1, n_heads=12)
    n = sum(p.numel() for p in head.parameters())
    assert n == 768 + 2 * 768 * 768 + 2 * 768 + 768 * 10 + 10  # query, K, V, LayerNorm, Linear
    assert 1.15e6 < n < 1.25e6
    assert head.key.bias is None and head.value.bias is None
    assert [auto_heads(d) for d in (768, 1024, 16, 10, 9, 7)] == [12, 8, 8, 2, 1, 1]


def test_binary_prototypes_sign_and_straight_through_gradient():
    torch.manual_seed(0)
    head = PrototypeHead(6, 2, n_prototypes_per_class=2)
    with torch.no_grad():
        head.prototypes[0, 0] = 0.0
    binary = head.effective_prototypes()
    assert set(binary.detach().unique().tolist()) == {-1.0, 1.0}
    assert binary[0, 0].item() == 1.0  # sign(0) = +1
    patches = torch.randn(3, 5, 6)
    head(None, patches).sum().backward()
    grad_float = head.prototypes.grad.clone()
    # Same loss through a leaf copy of the binary prototypes: the gradient must be identical.
    leaf = binary.detach().clone().requires_grad_(True)
    sims = torch.nn.functional.normalize(patches, dim=-1) @ torch.nn.functional.normalize(leaf, dim=-1).T
    head.linear(sims.amax(dim=1)).sum().backward()
    torch.testing.assert_close(grad_float, leaf.grad)


def test_protofloat_uses_float_prototypes():
    head = PrototypeHead(4, 2, 3, binarize=False)
    assert head.effective_prototypes() is head.prototypes


def test_prototype_scores_are_max_cosine_over_patches():
    torch.manual_seed(0)
    head = PrototypeHead(8, 3, 2)
    patches = torch.randn(2, 7, 8)
    expected = torch.stack([
        torch.stack([
            torch.nn.functional.cosine_similarity(patches[b], torch.sign(head.prototypes[k]).expand(7, 8), dim=-1).max()
            for k in range(6)
        ]) for b in range(2)
    ])
    torch.testing.assert_close(head.similarities(patches).amax(dim=1), expected)


def test_prototypes_are_excluded_from_weight_decay(multilabel_tokens):
    X, Y = multilabel_tokens
    # Decoupled decay multiplies weights by (1 - lr * wd) each step: lr * wd = 1 wipes decayed weights.
    # The head's weights (init ~0.13) are wiped and only keep Adam steps of ~lr; the prototypes
    # (init N(0, 0.02^2)) keep their scale.
    clf = PrototypicalProbeClassifier(learning_rate=1e-3, weight_decay=1e3, max_iter=2, random_state=0).fit(X, Y)
    head = clf.module_.head
    assert head.prototypes.abs().mean() > 0.01
    assert head.linear.weight.abs().mean() < 3e-3


def test_cls_pooling_reads_the_first_token_only():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6, 8)).astype(np.float32)
    y = (X[:, 0, 0] > 0).astype(int)
    X[:, 1:] = rng.normal(size=(80, 5, 8))
    clf = LinearProbeClassifier(pooling="cls", prefix_tokens=1, learning_rate=0.1, max_iter=60, cv=None,
                                random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.9
    changed = X.copy()
    changed[:, 1:] = 0
    np.testing.assert_array_equal(clf.decision_function(changed), clf.decision_function(X))


@pytest.mark.parametrize("pooling, width", [("mean", 8), ("max", 8), ("meanmax", 16), ("cls", 8)])
def test_linear_pooling_widths(pooling, width):
    head = PooledLinearHead(8, 3, pooling)
    assert head.linear.in_features == width
    prefix, patches = torch.randn(2, 1, 8), torch.randn(2, 5, 8)
    assert head(prefix, patches).shape == (2, 3)


def test_prefix_tokens_are_excluded_from_patch_pooling():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5, 4)).astype(np.float32)
    y = np.arange(30) % 2
    clf = PrototypicalProbeClassifier(prefix_tokens=2, **FAST).fit(X, y)
    changed = X.copy()
    changed[:, :2] = 1e3
    np.testing.assert_array_equal(clf.decision_function(changed), clf.decision_function(X))


def test_standard_normalisation_removes_offsets_and_scales(multilabel_tokens):
    X, Y = multilabel_tokens
    a = PrototypicalProbeClassifier(normalize_tokens="standard", **FAST).fit(X, Y)
    b = PrototypicalProbeClassifier(normalize_tokens="standard", **FAST).fit(3 * X + 50, Y)
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(3 * X + 50), atol=2e-4)
    np.testing.assert_allclose(a.module_.token_mean.numpy(), X.reshape(-1, X.shape[2]).mean(0), atol=1e-5)


def test_early_stopping_stops_and_keeps_validation_curve(multilabel_tokens):
    X, Y = multilabel_tokens
    clf = LinearProbeClassifier(early_stopping=True, n_iter_no_change=2, max_iter=200, learning_rate=0.5, cv=None,
                                random_state=0).fit(X, Y)
    assert clf.n_iter_ < 200
    assert len(clf.validation_loss_curve_) == clf.n_iter_ == len(clf.loss_curve_)
    assert clf.best_validation_loss_ == min(clf.validation_loss_curve_)


def test_loss_curve_decreases(multilabel_tokens):
    X, Y = multilabel_tokens
    clf = PrototypicalProbeClassifier(max_iter=15, random_state=0).fit(X, Y)
    assert clf.loss_curve_[-1] < 0.7 * clf.loss_curve_[0]


def test_inspection_methods_shapes(multilabel_tokens):
    X, Y = multilabel_tokens
    proto = PrototypicalProbeClassifier(n_prototypes_per_class=4, **FAST).fit(X, Y)
    assert proto.n_prototypes_ == 12
    assert proto.prototype_similarities(X[:2]).shape == (2, 12, 12)
    maps = proto.class_activation_maps(X[:2])
    assert maps.shape == (2, 12, 3)
    attn = AttentiveProbeClassifier(n_queries=2, **FAST).fit(X, Y)
    weights = attn.attention_weights(X[:2])
    assert weights.shape == (2, attn.n_heads_, 2, 12)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-6)


# -- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("Probe", PROBES)
@pytest.mark.parametrize("bad, match", [
    (np.full((4, 3, 2), np.nan), "NaN"),
    (np.full((4, 3, 2), np.inf), "infinity"),
    (np.zeros(4), "Expected 2D array"),
    (np.zeros((4, 3, 2, 2)), "got a 4-D array"),
])
def test_bad_tokens(Probe, bad, match):
    with pytest.raises(ValueError, match=match):
        Probe(**FAST).fit(bad, np.arange(4) % 2)


@pytest.mark.parametrize("Probe", PROBES)
def test_dimension_mismatch_at_predict(Probe, multilabel_tokens):
    X, Y = multilabel_tokens
    clf = Probe(**FAST).fit(X, Y)
    with pytest.raises(ValueError, match="X has 8 features, but .* is expecting 16 features"):
        clf.predict(X[:, :, :8])


def test_target_errors(multilabel_tokens):
    X, Y = multilabel_tokens
    with pytest.raises(ValueError, match="y has 119 samples but X has 120"):
        LinearProbeClassifier(**FAST).fit(X, Y[:-1])
    with pytest.raises(ValueError, match="Unknown label type"):
        LinearProbeClassifier(**FAST).fit(X, np.linspace(0, 1, len(X)))
    with pytest.raises(ValueError, match="only one class"):
        LinearProbeClassifier(**FAST).fit(X, np.ones(len(X)))
    with pytest.raises(ValueError, match="loss='ce'.*multi-label"):
        LinearProbeClassifier(loss="ce", **FAST).fit(X, Y)


def test_parameter_errors(multilabel_tokens):
    X, Y = multilabel_tokens
    with pytest.raises(ValueError, match="pooling='cls' needs prefix_tokens >= 1"):
        LinearProbeClassifier(pooling="cls", **FAST).fit(X, Y)
    with pytest.raises(ValueError, match="'loss' parameter .* must be a str among"):
        LinearProbeClassifier(loss="hinge", **FAST).fit(X, Y)
    with pytest.raises(ValueError, match="n_heads=5 must divide the token dimension 16"):
        AttentiveProbeClassifier(n_heads=5, **FAST).fit(X, Y)
    with pytest.raises(ValueError, match="no patch tokens are left"):
        PrototypicalProbeClassifier(prefix_tokens=12, **FAST).fit(X, Y)
    with pytest.raises(ValueError, match="validation_fraction"):
        LinearProbeClassifier(early_stopping=True, validation_fraction=1.0, **FAST).fit(X, Y)


def test_attentive_pooling_equals_projected_multi_head_attention():
    """The folded computation is the textbook one: project keys and values, attend, concat heads."""
    torch.manual_seed(0)
    head = AttentivePoolingHead(48, 5, n_queries=3, n_heads=6)
    patches = torch.randn(4, 11, 48)
    b, m, d, h, dh = 4, 11, 48, 6, 8
    q = head.queries.reshape(1, 3, h, dh).transpose(1, 2).expand(b, -1, -1, -1)
    k = head.key(patches).reshape(b, m, h, dh).transpose(1, 2)
    v = head.value(patches).reshape(b, m, h, dh).transpose(1, 2)
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # B, H, nq, dh
    reference = reference.transpose(1, 2).reshape(b, 3, d).mean(dim=1)
    torch.testing.assert_close(head.attend(patches), reference, atol=1e-5, rtol=1e-5)
    weights = torch.softmax(q @ k.transpose(-1, -2) / dh**0.5, dim=-1)
    torch.testing.assert_close(head.attend(patches, return_weights=True), weights, atol=1e-6, rtol=1e-5)
