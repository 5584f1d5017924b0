"""Synthetic token maps where events are short, scattered and quiet.

A controlled stand-in for what a frozen encoder produces on polyphonic audio:
most tokens carry a loud background shared by all clips, and each active class
leaves its signature on only a few tokens of a clip. Global pooling dilutes the
events, which is the bottleneck "Unmute the Patch Tokens" is about.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import Bunch, check_random_state

__all__ = ["make_token_scenes", "make_layered_token_scenes", "make_click_waveforms"]


def make_token_scenes(
    n_clips: int = 600,
    *,
    n_tokens: int = 64,
    dim: int = 64,
    n_classes: int = 8,
    max_events: int = 3,
    tokens_per_event: tuple[int, int] = (1, 3),
    event_strength: float = 1.5,
    strength_spread: float = 1.0,
    n_background: int = 4,
    background_strength: float = 4.0,
    noise: float = 1.0,
    n_distractors: int = 0,
    prefix_tokens: int = 0,
    multilabel: bool = True,
    random_state=None,
) -> Bunch:
    """Token maps of clips with a few short events over a loud shared background.

    Each clip's tokens are ``noise * N(0, I)`` plus a mix of ``n_background``
    shared background directions with per-clip, per-token amplitudes of scale
    ``background_strength``. Each of 1..``max_events`` active classes (one for
    ``multilabel=False``) adds ``event_strength`` times its unit signature
    vector to ``tokens_per_event`` random tokens. Signatures and background
    directions are random unit vectors. ``n_distractors`` unlabelled "events"
    (their own random directions, same strength) are added to random tokens
    of every clip, as the unannotated sounds of a real scene. Prefix tokens, if any, hold the mean
    of the clip's patch tokens (a ``[cls]``-like summary).

    Parameters
    ----------
    n_clips, n_tokens, dim, n_classes : int
    max_events : int, default=3
        Most active classes per clip (multi-label).
    tokens_per_event : (int, int), default=(1, 3)
        Inclusive range of tokens one event occupies.
    event_strength, background_strength, noise : float
    strength_spread : float, default=1.0
        Each event's strength is ``event_strength`` times a log-uniform factor
        in ``[1 / strength_spread, strength_spread]`` (quiet and loud events).
    n_background : int, default=4
    n_distractors : int, default=0
        Unlabelled event directions; 0 to 2 of them sound in each clip.
    prefix_tokens : int, default=0
    multilabel : bool, default=True
        Multi-hot ``y`` of shape (n_clips, n_classes); else one class per clip
        and ``y`` of shape (n_clips,).
    random_state : int, RandomState instance or None

    Returns
    -------
    Bunch
        ``X`` float32 (n_clips, prefix_tokens + n_tokens, dim), ``y``,
        ``event_tokens`` (list per clip of ``{class: token indices}``),
        ``signatures`` (n_classes, dim).

    Examples
    --------
    >>> data = make_token_scenes(10, n_tokens=16, dim=8, n_classes=3, random_state=0)
    >>> data.X.shape, data.y.shape
    ((10, 16, 8), (10, 3))
    """
    rng = check_random_state(random_state)
    lo, hi = tokens_per_event
    if not 1 <= lo <= hi <= n_tokens:
        raise ValueError(f"tokens_per_event must satisfy 1 <= low <= high <= n_tokens, got {tokens_per_event}")
    if not 1 <= max_events <= n_classes:
        raise ValueError(f"max_events must be in [1, n_classes={n_classes}], got {max_events}")

    def unit(n: int) -> np.ndarray:
        v = rng.normal(size=(n, dim))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    signatures, background, distractors = unit(n_classes), unit(n_background), unit(max(n_distractors, 1))
    clip_gain = rng.normal(size=(n_clips, 1, n_background)) * background_strength
    token_gain = 1.0 + 0.3 * rng.normal(size=(n_clips, n_tokens, n_background))
    X = noise * rng.normal(size=(n_clips, n_tokens, dim)) + (clip_gain * token_gain) @ background
    Y = np.zeros((n_clips, n_classes), dtype=np.int64)
    event_tokens: list[dict[int, np.ndarray]] = []
    for i in range(n_clips):
        k = rng.randint(1, max_events + 1) if multilabel else 1
        events = {}
        for c in rng.choice(n_classes, size=k, replace=False):
            where = rng.choice(n_tokens, size=rng.randint(lo, hi + 1), replace=False)
            gain = event_strength * np.exp(rng.uniform(-1, 1) * np.log(strength_spread))
            X[i, where] += gain * signatures[c]
            Y[i, c] = 1
            events[int(c)] = np.sort(where)
        event_tokens.append(events)
        for c in rng.choice(n_distractors, size=min(rng.randint(0, 3), n_distractors), replace=False):
            X[i, rng.choice(n_tokens, size=rng.randint(lo, hi + 1), replace=False)] += event_strength * distractors[c]
    if prefix_tokens:
        X = np.concatenate([np.repeat(X.mean(axis=1, keepdims=True), prefix_tokens, axis=1), X], axis=1)
    y = Y if multilabel else Y.argmax(axis=1)
    return Bunch(X=X.astype(np.float32), y=y, event_tokens=event_tokens, signatures=signatures)


def make_layered_token_scenes(n_clips: int = 600, *, n_layers: int = 4, evidence_layer: int = 1,
                              random_state=None, **params) -> Bunch:
    """Token maps of several encoder layers where the labelled events are visible in one layer only.

    Every layer is a :func:`make_token_scenes` draw of its own with the same
    ``params``; the labels ``y`` are those of layer ``evidence_layer``. The
    other layers hold events of their own, unrelated to ``y``, so a probe of
    any other layer sees busy token maps without the labelled evidence.

    Parameters
    ----------
    n_clips : int, default=600
    n_layers : int, default=4
    evidence_layer : int, default=1
        The layer whose events ``y`` labels (negative counts from the end).
    random_state : int, RandomState instance or None
    **params
        Other :func:`make_token_scenes` parameters (``n_tokens``, ``dim``, ``n_classes``...).

    Returns
    -------
    Bunch
        ``X`` float32 (n_clips, n_layers, n_tokens, dim), ``y``, ``evidence_layer`` (non-negative).

    Examples
    --------
    >>> data = make_layered_token_scenes(10, n_layers=3, evidence_layer=1, n_tokens=16, dim=8, random_state=0)
    >>> data.X.shape, data.y.shape, data.evidence_layer
    ((10, 3, 16, 8), (10, 8), 1)
    """
    if not -n_layers <= evidence_layer < n_layers:
        raise ValueError(f"evidence_layer must be in [{-n_layers}, {n_layers - 1}], got {evidence_layer}")
    rng = check_random_state(random_state)
    layers = [make_token_scenes(n_clips, random_state=rng, **params) for _ in range(n_layers)]
    evidence_layer %= n_layers
    X = np.stack([layer.X for layer in layers], axis=1)
    return Bunch(X=X, y=layers[evidence_layer].y, evidence_layer=evidence_layer)


def make_click_waveforms(n_clips: int = 60, n_classes: int = 3, *, sample_rate: int = 16000,
                         random_state=0) -> tuple[np.ndarray, np.ndarray]:
    """One-second noise clips where class ``j`` is a click train of period ``20 * (j + 1)`` samples.

    Each present class occupies a random quarter of the clip, so events are
    short and scattered as in the paper's setting; used by the examples'
    quick modes with a tiny random encoder.

    Parameters
    ----------
    n_clips, n_classes : int, default=60, 3
    sample_rate : int, default=16000
        Samples per clip (one second).
    random_state : int, RandomState instance or None, default=0

    Returns
    -------
    wavs : ndarray of shape (n_clips, sample_rate), float32
    Y : ndarray of shape (n_clips, n_classes), int
        Multi-label indicator of the classes present.

    Examples
    --------
    >>> wavs, Y = make_click_waveforms(10, 2)
    >>> wavs.shape, Y.shape, wavs.dtype
    ((10, 16000), (10, 2), dtype('float32'))
    """
    rng = check_random_state(random_state)
    wavs = 0.05 * rng.normal(size=(n_clips, sample_rate)).astype(np.float32)
    Y = (rng.random_sample((n_clips, n_classes)) < 0.4).astype(int)
    quarter = sample_rate // 4
    for i, j in zip(*np.nonzero(Y)):
        start = rng.randint(0, sample_rate - quarter)
        wavs[i, start : start + quarter : 20 * (j + 1)] += 0.8
    return wavs, Y

