"""The convex gated probe (CGP) over several layers: the head, the gate, multi-layer input, errors."""

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from skprobe import (
    AttentiveProbeClassifier,
    ConvexGatedProbeClassifier,
    LinearProbeClassifier,
    PrototypicalProbeClassifier,
)
from skprobe.datasets import make_layered_token_scenes
from skprobe.metrics import macro_map
from skprobe.probes import TokenView, convex_gated
from skprobe.probes._layers import LayerFlatArray, flatten_layers
from skprobe.probes._tokens import TokenSource
from skprobe.probes.base import raw_moments
from skprobe.probes.convex_gated import (
    ConvexGatedHead,
    auto_n_prototypes,
    gated_mix,
    layer_moments,
)
from skprobe.probes.prototypical import PrototypeHead

# on toy tensors torch's thread synchronisation costs far more than it saves (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = dict(n_prototypes=12, max_iter=3, random_state=0)


@pytest.fixture(scope="module")
def layered():
    """Multi-label maps of 4 layers x 12 tokens x 16 dims, 4 classes; the labelled events are in layer 2 only."""
    data = make_layered_token_scenes(240, n_layers=4, evidence_layer=2, n_tokens=12, dim=16, n_classes=4,
                                     max_events=2, event_strength=5.0, n_distractors=2, random_state=0)
    return data.X, data.y


class StoreArray:
    """The store-backed array-like contract, 4-D; materialising it whole is an error."""

    def __init__(self, data):
        self._data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __len__(self):
        return len(self._data)

    def __getitem__(self, key):
        return np.array(self._data[key])

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the probe materialised the whole array")


def _memmap(tmp_path, X, name="tokens.dat"):
    mm = np.memmap(tmp_path / name, dtype=X.dtype, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    return np.memmap(tmp_path / name, dtype=X.dtype, mode="r", shape=X.shape)


# -- what the probe learns -------------------------------------------------------------------------

def test_gate_finds_the_middle_layer_and_beats_the_last_layer(layered, one_torch_thread):
    """Events visible in layer 2 of 4 only: the gate puts its largest weight there, and the probe beats the
    prototypical probe on the last layer by far (the last layer holds no labelled evidence)."""
    X, Y = layered
    train, test = slice(0, 160), slice(160, None)
    cgp = ConvexGatedProbeClassifier(n_prototypes=24, max_iter=40, random_state=0).fit(X[train], Y[train])
    assert cgp.layer_weights_.shape == (4,) and np.isclose(cgp.layer_weights_.sum(), 1.0)
    assert int(np.argmax(cgp.layer_weights_)) == 2
    assert cgp.layer_weights_[2] > 0.5, cgp.layer_weights_
    last = PrototypicalProbeClassifier(n_prototypes_per_class=8, max_iter=40, random_state=0).fit(X[train, -1],
                                                                                                  Y[train])
    ours = macro_map(Y[test], cgp.decision_function(X[test]))
    theirs = macro_map(Y[test], last.decision_function(X[test, -1]))
    assert ours > 0.9 and ours > theirs + 0.3, (ours, theirs)


def test_single_layer_is_a_float_prototype_probe_with_three_features(layered):
    """One layer: the gate weighs 1 and the logits are Linear([min, mean, max] of the float prototypes'
    cosine similarities), the prototypical probe's similarities without sign(); 4-D with one layer = 3-D."""
    X, Y = layered
    X1 = X[:, 2]
    clf = ConvexGatedProbeClassifier(**FAST).fit(X1, Y)
    assert clf.n_layers_ == 1 and clf.layer_weights_.tolist() == [1.0]
    network = clf.module_
    reference = PrototypeHead(16, 4, n_prototypes_per_class=3, binarize=False)
    with torch.no_grad():
        reference.prototypes.copy_(network.head.prototypes)
        patches = network.split(torch.from_numpy(X1))[1][:, 0]  # normalised tokens of the one layer
        sims = reference.similarities(patches)
        features = torch.stack([sims.amin(1), sims.mean(1), sims.amax(1)], dim=-1).flatten(1)
        expected = network.head.linear(features).double().numpy()
    np.testing.assert_allclose(clf.decision_function(X1), expected, rtol=1e-5, atol=1e-5)
    four = ConvexGatedProbeClassifier(**FAST).fit(X[:, 2:3], Y)
    np.testing.assert_array_equal(four.decision_function(X[:, 2:3]), clf.decision_function(X1))


def test_prefix_token_is_the_middle_feature():
    """With a [cls] token per layer, the middle feature is the similarity of the gate's mixture of the
    unit-length [cls] tokens with each unit prototype (not the mean over patches)."""
    torch.manual_seed(0)
    head = ConvexGatedHead(dim=8, n_outputs=2, n_layers=3, n_prototypes=5)
    with torch.no_grad():
        head.gate.copy_(torch.tensor([0.5, -1.0, 2.0]))
    prefix, patches = torch.randn(4, 3, 1, 8), torch.randn(4, 3, 6, 8)
    features = head.features(prefix, patches).reshape(4, 5, 3)
    alpha = torch.softmax(head.gate, 0)
    protos = F.normalize(head.prototypes, dim=-1)
    cls = sum(alpha[i] * F.normalize(prefix[:, i, 0], dim=-1) for i in range(3))  # not re-normalised
    mixed = sum(alpha[i] * F.normalize(patches[:, i], dim=-1) for i in range(3))
    sims = mixed @ protos.T
    torch.testing.assert_close(features[..., 1], cls @ protos.T)
    torch.testing.assert_close(features[..., 0], sims.amin(1))
    torch.testing.assert_close(features[..., 2], sims.amax(1))
    no_prefix = head.features(prefix[:, :, :0], patches).reshape(4, 5, 3)
    torch.testing.assert_close(no_prefix[..., 1], sims.mean(1))


@pytest.mark.parametrize("normalise", [False, True])
def test_gated_mix_matches_the_formula_and_its_gradient(normalise, monkeypatch):
    """The chunked mixing (no normalised copy; recomputed in the backward) equals
    einsum(softmax(a), normalize((x - shift) / scale)) in value and in the gate's gradient, float16 tokens too."""
    monkeypatch.setattr(convex_gated, "_MIX_CHUNK_VALUES", 7 * 4)  # one clip per chunk
    torch.manual_seed(0)
    tokens = torch.randn(3, 4, 7, 4, dtype=torch.float64)
    shift = torch.randn(4, 4, dtype=torch.float64) if normalise else None
    scale = torch.rand(4, 4, dtype=torch.float64) + 0.5 if normalise else None
    gate = torch.randn(4, dtype=torch.float64, requires_grad=True)
    weights = torch.softmax(gate, 0)
    x = tokens if shift is None else (tokens - shift[:, None]) / scale[:, None]
    expected = torch.einsum("l,blnd->bnd", weights, F.normalize(x, dim=-1))
    out = gated_mix(weights, tokens, shift, scale)
    torch.testing.assert_close(out, expected)
    probe = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * probe).sum(), gate, retain_graph=True)
    (reference,) = torch.autograd.grad((expected * probe).sum(), gate)
    torch.testing.assert_close(grad, reference)
    assert torch.autograd.gradcheck(lambda w: gated_mix(w, tokens, shift, scale), (weights.detach().requires_grad_(),))
    half = gated_mix(weights.float(), tokens.half(), None if shift is None else shift.float(),
                     None if scale is None else scale.float())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, gated_mix(weights.float(), tokens.half().float(),
                                               None if shift is None else shift.float(),
                                               None if scale is None else scale.float()))


def test_head_trains_under_bfloat16_autocast():
    """The GPU path trains under bfloat16 autocast: the sparse backward sums in float32 and hands every
    input a gradient of its own dtype (checked with the CPU's autocast)."""
    torch.manual_seed(0)
    head = ConvexGatedHead(dim=8, n_outputs=3, n_layers=2, n_prototypes=6, dropout=0.0)
    patches = torch.randn(4, 2, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(patches[:, :, :0], patches)
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in head.parameters())
    reference = ConvexGatedHead(dim=8, n_outputs=3, n_layers=2, n_prototypes=6, dropout=0.0)
    reference.load_state_dict(head.state_dict())
    expected = reference(patches[:, :, :0], patches)
    expected.sum().backward()
    torch.testing.assert_close(out.float(), expected, atol=0.01, rtol=0.01)
    torch.testing.assert_close(head.gate.grad, reference.gate.grad, atol=0.01, rtol=0.1)
    # bfloat16 may pick another of two nearly equal tokens for a prototype's min or max: compare directions
    agreement = F.cosine_similarity(head.prototypes.grad.flatten(), reference.prototypes.grad.flatten(), dim=0)
    assert agreement > 0.95, agreement


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fitted_on_gpu_predicts_on_cpu(layered):
    X, Y = layered
    clf = ConvexGatedProbeClassifier(device="cuda", **FAST).fit(X, Y)
    gpu = clf.decision_function(X)
    restored = pickle.loads(pickle.dumps(clf)).set_params(device="cpu")
    assert all(t.device.type == "cpu" for t in restored.module_.state_dict().values())
    np.testing.assert_allclose(restored.decision_function(X), gpu, atol=1e-4)


def test_head_initialisation_and_parameter_groups(layered):
    head = ConvexGatedHead(dim=16, n_outputs=3, n_layers=4, n_prototypes=12)
    assert head.gate.tolist() == [1.0] * 4 and torch.allclose(head.layer_weights(), torch.full((4,), 0.25))
    assert head.linear.in_features == 36 and head.dropout.p == 0.2
    assert sum(p.numel() for p in head.parameters()) == 4 + 12 * 16 + 36 * 3 + 3
    X, Y = layered
    clf = ConvexGatedProbeClassifier(**FAST).fit(X, Y)
    assert clf.n_prototypes_ == 12 and clf.n_trainable_parameters_ == 4 + 12 * 16 + 36 * 4 + 4
    # learning_rate="auto": 10 / (3K), the linear layer's fan-in, floored at 64 as the other probes' rule
    assert clf.learning_rate_ == pytest.approx(10 / 64)
    assert ConvexGatedProbeClassifier(n_prototypes=40, max_iter=1).fit(X, Y).learning_rate_ == pytest.approx(10 / 120)
    assert auto_n_prototypes(3) == 60 and auto_n_prototypes(10_000) == 10_000


def test_no_weight_decay_on_prototypes_gate_and_bias(layered):
    """Decoupled decay multiplies a decayed weight by (1 - lr * wd) each step: lr * wd = 1 wipes it, leaving
    only Adam steps of about lr. The linear weights are wiped; the prototypes (init N(0, 0.02^2)), the gate
    (init ones) and the bias keep their scale."""
    X, Y = layered
    clf = ConvexGatedProbeClassifier(n_prototypes=12, learning_rate=1e-3, weight_decay=1e3, max_iter=2,
                                     random_state=0).fit(X, Y)
    head = clf.module_.head
    assert head.linear.weight.abs().mean() < 3e-3
    assert head.prototypes.abs().mean() > 0.01
    assert head.gate.abs().min() > 0.9
    assert head.linear.bias.abs().mean() > 0.02


# -- input: layouts, memory maps, store-backed arrays ----------------------------------------------

def test_flatten_layers_views_without_copies(tmp_path):
    X = np.random.default_rng(0).normal(size=(6, 3, 4, 5)).astype(np.float16)
    mm = _memmap(tmp_path, X)
    flat = flatten_layers(mm)
    assert isinstance(flat, np.memmap) and np.shares_memory(flat, mm) and flat.shape == (6, 12, 5)
    assert TokenSource(flat)._file is not None  # still read with preadv from the file, as 3-D tokens
    view = flatten_layers(TokenView(mm, [4, 1]))
    assert isinstance(view, TokenView) and view.shape == (2, 12, 5) and np.shares_memory(view.data, mm)
    np.testing.assert_array_equal(np.asarray(view), X[[4, 1]].reshape(2, 12, 5))
    part = X[:, :, :3]  # 3 of 4 tokens per layer: the axes cannot merge in place; read and reshaped per batch
    strided = flatten_layers(part)
    assert isinstance(strided, LayerFlatArray) and strided.shape == (6, 9, 5)
    np.testing.assert_array_equal(strided[np.array([5, 0])], part[[5, 0]].reshape(2, 9, 5))
    np.testing.assert_array_equal(strided[3], part[3].reshape(9, 5))
    np.testing.assert_array_equal(strided[1:3, 2], part[1:3].reshape(2, 9, 5)[:, 2])
    np.testing.assert_array_equal(np.asarray(strided), part.reshape(6, 9, 5))


def test_float16_memmap_and_store_input_fit_like_the_array(layered, tmp_path):
    X, Y = layered
    X16 = X.astype(np.float16)
    reference = ConvexGatedProbeClassifier(**FAST).fit(X16, Y)
    expected = reference.decision_function(X16)
    for data in (_memmap(tmp_path, X16), StoreArray(X16), TokenView(_memmap(tmp_path, X16, "b.dat"))):
        clf = ConvexGatedProbeClassifier(**FAST).fit(data, Y)
        assert clf.n_features_in_ == 16 and clf.n_layers_ == 4
        np.testing.assert_array_equal(clf.decision_function(data), expected)


def test_layer_moments_are_per_layer_raw_moments(layered):
    X, _ = layered
    flat = torch.from_numpy(X.reshape(len(X), -1, 16))
    moments = layer_moments((flat[i : i + 50] for i in range(0, len(X), 50)), 4, prefix_tokens=2, directions=True)
    for layer in range(4):
        one = raw_moments([torch.from_numpy(X[:, layer, 2:])], directions=True)
        for got, want in zip(moments[layer], one):  # both sum float32 blocks in float64, in other orders
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_each_layer_is_normalised_with_its_own_statistics(layered):
    X, Y = layered
    shifted = X + np.arange(4, dtype=np.float32)[None, :, None, None] * 10  # a different offset per layer
    clf = ConvexGatedProbeClassifier(normalize_tokens="center", **FAST).fit(shifted, Y)
    mean = clf.module_.token_mean
    assert mean.shape == (4, 16)
    np.testing.assert_allclose(mean.mean(dim=1).numpy(), X.mean(axis=(0, 2, 3)) + np.arange(4) * 10, atol=1e-4)
    _, patches = clf.module_.split(torch.from_numpy(shifted))
    np.testing.assert_allclose(patches.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-4)


def test_pipeline_grid_search_pickle_and_clone(layered):
    X, Y = layered
    pipe = Pipeline([("identity", FunctionTransformer()), ("cgp", ConvexGatedProbeClassifier(**FAST))])
    search = GridSearchCV(pipe, {"cgp__dropout": [0.0, 0.2]}, cv=2, scoring="average_precision").fit(X, Y)
    assert search.best_estimator_["cgp"].layer_weights_.shape == (4,)
    clf = ConvexGatedProbeClassifier(**FAST).fit(X, Y)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.decision_function(X), clf.decision_function(X))
    np.testing.assert_array_equal(restored.layer_weights_, clf.layer_weights_)
    assert not hasattr(clone(clf), "module_")
    assert clf.predict_proba(X[:, :, :5]).shape == (len(X), 4)  # the token count may change, not the layers
    assert clf.prototype_similarities(X[:2]).shape == (2, 12, 12)


def test_multiclass_labels_on_layers(multiclass_tokens):
    X, y = multiclass_tokens
    X4 = np.stack([X, X[::-1]], axis=1)
    clf = ConvexGatedProbeClassifier(**FAST).fit(X4, y)
    assert clf.loss_ == "ce" and set(clf.predict(X4)) <= set(clf.classes_)
    np.testing.assert_allclose(clf.predict_proba(X4).sum(axis=1), 1.0)


# -- errors ------------------------------------------------------------------------------------------

def test_layer_count_must_not_change_between_fit_and_predict(layered):
    X, Y = layered
    clf = ConvexGatedProbeClassifier(**FAST).fit(X, Y)
    with pytest.raises(ValueError, match=r"X has 3 layers per clip \(a 4-D X\), but ConvexGatedProbeClassifier "
                                         r"was fitted on 4 layer\(s\) per clip \(n_layers_\)"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match=r"X has one layer \(a 3-D X\), but .* fitted on 4 layer"):
        clf.predict(X[:, 0])
    with pytest.raises(ValueError, match="X has 8 features, but .* is expecting 16 features"):
        clf.predict(X[..., :8])
    single = ConvexGatedProbeClassifier(**FAST).fit(X[:, 0], Y)
    with pytest.raises(ValueError, match=r"X has 4 layers per clip .* fitted on 1 layer"):
        single.predict(X)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 2, 3, 2, 2)), "got a 5-D array"),
    (np.full((4, 2, 3, 2), np.nan), "NaN"),
    (np.zeros(4), "Expected 2D array"),
])
def test_bad_tokens(bad, match):
    with pytest.raises(ValueError, match=match):
        ConvexGatedProbeClassifier(**FAST).fit(bad, np.arange(4) % 2)


def test_prefix_tokens_leave_no_patches(layered):
    X, Y = layered
    with pytest.raises(ValueError, match=r"X has 12 token\(s\) per layer but prefix_tokens=12"):
        ConvexGatedProbeClassifier(prefix_tokens=12, **FAST).fit(X, Y)


@pytest.mark.parametrize("Probe", [LinearProbeClassifier, AttentiveProbeClassifier, PrototypicalProbeClassifier])
def test_single_layer_probes_still_refuse_layers(Probe, layered):
    X, Y = layered
    with pytest.raises(ValueError, match=r"X must be \(n_clips, n_tokens, dim\) or \(n_clips, dim\) token arrays, "
                                         r"got a 4-D array .* select one \(e.g. X\[:, -1\]\)"):
        Probe(max_iter=1).fit(X, Y)
