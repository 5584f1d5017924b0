"""Frame-wise class scores of probes trained on clip labels (issue 24)."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline

from skprobe import (
    AttentiveProbeClassifier,
    ConvexGatedProbeClassifier,
    FrozenEncoderTransformer,
    LinearProbeClassifier,
    PrototypicalProbeClassifier,
    TokenLayout,
)
from skprobe.probes._frames import FrameGrid, frame_grid, patch_grid

N_TIME, N_FREQ, DIM, N_CLASSES = 8, 2, 16, 3


def _events_in_frames(n_clips=160, seed=0, prefix=0):
    """Tokens on an 8 x 2 grid; class c adds its direction to the tokens of frames [a, a + 2) of positive clips."""
    signatures = np.random.default_rng(123).normal(size=(N_CLASSES, DIM))  # the same classes in every draw
    rng = np.random.default_rng(seed)
    signatures /= np.linalg.norm(signatures, axis=1, keepdims=True)
    X = rng.normal(size=(n_clips, N_TIME, N_FREQ, DIM))
    Y = np.zeros((n_clips, N_CLASSES), dtype=int)
    where = np.full((n_clips, N_CLASSES), -1)
    for i in range(n_clips):
        for c in rng.choice(N_CLASSES, size=rng.integers(1, 3), replace=False):
            a = int(rng.integers(0, N_TIME - 1))
            X[i, a : a + 2] += 4.0 * signatures[c]
            Y[i, c], where[i, c] = 1, a
    X = X.reshape(n_clips, N_TIME * N_FREQ, DIM)
    if prefix:
        X = np.concatenate([X.mean(axis=1, keepdims=True)] * prefix + [X], axis=1)
    return X.astype(np.float32), Y, where


PROBES = {
    "linear": lambda **kw: LinearProbeClassifier(cv=None, max_iter=30, random_state=0, **kw),
    "attentive": lambda **kw: AttentiveProbeClassifier(max_iter=30, random_state=0, **kw),
    "prototypical": lambda **kw: PrototypicalProbeClassifier(n_prototypes_per_class=4, max_iter=30, random_state=0,
                                                             **kw),
    "convex gated": lambda **kw: ConvexGatedProbeClassifier(n_prototypes=12, max_iter=30, random_state=0, **kw),
}


@pytest.fixture(scope="module")
def fitted(request):
    X, Y, where = _events_in_frames()
    torch.set_num_threads(1)
    return {name: make(device="cpu").fit(X, Y) for name, make in PROBES.items()}, (X, Y, where)


@pytest.mark.parametrize("name", list(PROBES))
def test_frame_scores_shape_and_range(fitted, name):
    probes, (X, Y, _) = fitted
    probe = probes[name]
    logits = probe.frame_decision_function(X[:5], layout=(N_TIME, N_FREQ))
    proba = probe.predict_frame_proba(X[:5], layout=TokenLayout(0, N_TIME, N_FREQ, DIM, 0.1))
    assert logits.shape == proba.shape == (5, N_TIME, N_CLASSES)
    assert logits.dtype == proba.dtype == np.float64
    assert ((proba > 0) & (proba < 1)).all()
    eps = np.finfo(np.float64).eps
    np.testing.assert_allclose(proba, np.clip(1 / (1 + np.exp(-logits)), eps, 1 - eps), rtol=1e-12)


@pytest.mark.parametrize("name", list(PROBES))
def test_one_frame_holding_every_patch_gives_the_clip_logits(fitted, name):
    # With the whole grid as one frame, pooling "over frequency" is pooling over all patches: the clip's logits.
    probes, (X, _, _) = fitted
    probe = probes[name]
    frames = probe.frame_decision_function(X[:6], layout=(1, N_TIME * N_FREQ))
    np.testing.assert_allclose(frames[:, 0], probe.decision_function(X[:6]), rtol=1e-5, atol=1e-5)


def test_linear_mean_pooling_clip_logits_are_the_mean_of_frame_logits(fitted):
    probes, (X, _, _) = fitted
    probe = probes["linear"]
    frames = probe.frame_decision_function(X[:6], layout=(N_TIME, N_FREQ))
    np.testing.assert_allclose(frames.mean(axis=1), probe.decision_function(X[:6]), rtol=1e-5, atol=1e-5)


def test_prototypical_clip_scores_are_the_max_over_frames_of_frame_similarities(fitted):
    probe = fitted[0]["prototypical"]
    X = fitted[1][0][:4]
    head = probe.module_.head
    with torch.no_grad():
        _, patches = probe.module_.split(torch.from_numpy(X))
        per_frame = head.similarities(patch_grid(patches, FrameGrid(N_TIME, N_FREQ))).amax(dim=-2)  # B, T, K
        clip = head.linear(per_frame.amax(dim=1)).numpy()
    np.testing.assert_allclose(clip, probe.decision_function(X), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(PROBES))
def test_frame_scores_peak_where_the_events_are(fitted, name):
    # Trained on clip labels only, the frame scores find the two frames that hold each event.
    probe = fitted[0][name]
    X, Y, where = _events_in_frames(n_clips=60, seed=1)
    scores = probe.frame_decision_function(X, layout=(N_TIME, N_FREQ))
    hits = [where[i, c] <= scores[i, :, c].argmax() <= where[i, c] + 1 for i, c in zip(*np.nonzero(Y))]
    assert np.mean(hits) > 0.85


def test_token_order_freq_time_is_honoured(fitted):
    probe = fitted[0]["prototypical"]
    X = fitted[1][0][:3]
    grid = X.reshape(3, N_TIME, N_FREQ, DIM)
    freq_major = grid.transpose(0, 2, 1, 3).reshape(3, N_TIME * N_FREQ, DIM)
    np.testing.assert_allclose(
        probe.frame_decision_function(freq_major, layout=TokenLayout(0, N_TIME, N_FREQ, DIM, 0.1, "freq_time")),
        probe.frame_decision_function(X, layout=(N_TIME, N_FREQ)), rtol=1e-6, atol=1e-6)


def test_single_label_frame_outputs_follow_the_clip_outputs():
    X, Y, _ = _events_in_frames(n_clips=90, seed=2)
    y = np.array(["a", "b", "c"])[Y.argmax(axis=1)]
    probe = PrototypicalProbeClassifier(n_prototypes_per_class=2, max_iter=3, random_state=0, device="cpu").fit(X, y)
    proba = probe.predict_frame_proba(X[:4], layout=(N_TIME, N_FREQ))
    np.testing.assert_allclose(proba.sum(axis=-1), 1.0)
    binary = (Y[:, 0] > 0).astype(int)
    probe.fit(X, binary)
    assert probe.frame_decision_function(X[:4], layout=(N_TIME, N_FREQ)).shape == (4, N_TIME)


def test_frame_scores_skip_prefix_tokens():
    X, Y, _ = _events_in_frames(n_clips=60, seed=3, prefix=1)
    probe = PrototypicalProbeClassifier(n_prototypes_per_class=2, max_iter=3, prefix_tokens=1, random_state=0,
                                        device="cpu").fit(X, Y)
    assert probe.predict_frame_proba(X[:2], layout=TokenLayout(1, N_TIME, N_FREQ, DIM, 0.1)).shape == (2, N_TIME, 3)


def _three_layers(X, seed=5):
    """The events' layer between two layers of noise: ``(n, 3, tokens, dim)``."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.normal(size=X.shape), X, rng.normal(size=X.shape)], axis=1).astype(np.float32)


def test_convex_gated_frame_scores_on_several_layers():
    X, Y, where = _events_in_frames(n_clips=160, seed=4)
    layers = _three_layers(X)
    probe = ConvexGatedProbeClassifier(n_prototypes=12, max_iter=30, random_state=0, device="cpu").fit(layers, Y)
    assert probe.layer_weights_.argmax() == 1
    scores = probe.frame_decision_function(layers[:40], layout=(N_TIME, N_FREQ))
    assert scores.shape == (40, N_TIME, N_CLASSES)
    hits = [where[i, c] <= scores[i, :, c].argmax() <= where[i, c] + 1 for i, c in zip(*np.nonzero(Y[:40]))]
    assert np.mean(hits) > 0.85
    with pytest.raises(ValueError, match="3 layer"):
        probe.frame_decision_function(X[:2], layout=(N_TIME, N_FREQ))


def test_convex_gated_frame_scores_with_a_prefix_token_per_layer():
    # The prefix token's similarity is the same in every frame; the whole grid as one frame is the clip.
    X, Y, _ = _events_in_frames(n_clips=60, seed=4, prefix=1)
    layers = _three_layers(X)
    probe = ConvexGatedProbeClassifier(n_prototypes=12, max_iter=5, prefix_tokens=1, random_state=0, device="cpu")
    probe.fit(layers, Y)
    scores = probe.frame_decision_function(layers[:5], layout=TokenLayout(1, N_TIME, N_FREQ, DIM, 0.1))
    assert scores.shape == (5, N_TIME, N_CLASSES)
    whole = probe.frame_decision_function(layers[:5], layout=TokenLayout(1, 1, N_TIME * N_FREQ, DIM, 0.8))
    np.testing.assert_allclose(whole[:, 0], probe.decision_function(layers[:5]), rtol=1e-5, atol=1e-5)


def test_frame_score_errors(fitted):
    probes, (X, Y, _) = fitted
    with pytest.raises(ValueError, match=r"grid is 4 x 2 = 8"):
        probes["prototypical"].frame_decision_function(X[:2], layout=(4, 2))
    with pytest.raises(ValueError, match="layout must be a TokenLayout"):
        probes["linear"].predict_frame_proba(X[:2], layout=16)
    with pytest.raises(ValueError, match="positive integers"):
        frame_grid((0, 2))
    with pytest.raises(NotFittedError):
        PrototypicalProbeClassifier().predict_frame_proba(X[:2], layout=(N_TIME, N_FREQ))
    cls = LinearProbeClassifier(pooling="cls", prefix_tokens=1, cv=None, max_iter=2, device="cpu")
    Xp = np.concatenate([X[:, :1], X], axis=1)
    cls.fit(Xp, Y)
    with pytest.raises(ValueError, match="pooling='cls'"):
        cls.frame_decision_function(Xp[:2], layout=TokenLayout(1, N_TIME, N_FREQ, DIM, 0.1))


def test_frame_scores_in_a_fitted_pipeline():
    from skprobe.detection import frame_scores

    rng = np.random.default_rng(0)
    wavs = rng.normal(scale=0.1, size=(12, 16000)).astype(np.float32)
    Y = np.eye(3, dtype=int)[np.arange(12) % 3]
    model = make_pipeline(FrozenEncoderTransformer(encoder="tiny-vit", device="cpu"),
                          PrototypicalProbeClassifier(prefix_tokens=1, n_prototypes_per_class=2, max_iter=2,
                                                      random_state=0, device="cpu"))
    model.fit(wavs, Y)
    result = frame_scores(model, wavs[:2])
    assert result.scores.shape == (2, 24, 3)
    assert result.hop_seconds == pytest.approx(0.04)
    np.testing.assert_allclose(result.times[:3], [0.0, 0.04, 0.08])
    direct = model[-1].predict_frame_proba(model[0].transform(wavs[:2]), layout=model[0].layouts_[0])
    np.testing.assert_allclose(result.scores, direct)
