"""Per-class decision thresholds chosen on labelled validation clips."""

from __future__ import annotations

import numpy as np

from .evaluation import EVENT_COLLARS, _sed_scores_eval, ground_truth_events, score_table
from .postprocess import filter_lengths, median_filter_scores
from .scorer import FrameScorer, frame_scores

__all__ = ["choose_thresholds", "best_f1_threshold"]


def best_f1_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The threshold ``t`` for which ``scores > t`` has the best F1 against ``positive``.

    Halfway between the lowest score kept and the next lower score, so that
    small changes of the scores do not flip the decisions. A class without
    positives gets a threshold above every score (nothing detected).

    Examples
    --------
    >>> best_f1_threshold(np.array([0.9, 0.8, 0.4, 0.3]), np.array([1, 1, 0, 0]))
    0.6000000000000001
    """
    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive) > 0
    if not positive.any():
        return float(np.nextafter(scores.max(), np.inf)) if len(scores) else 0.5
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # cut after each run of equal scores
    tp = np.cumsum(p)[last]
    f1 = 2 * tp / (last + 1 + positive.sum())
    k = int(np.argmax(f1))
    lower = s[last[k] + 1] if last[k] + 1 < len(s) else s[last[k]] - 1e-6
    return float((s[last[k]] + lower) / 2)


def choose_thresholds(model, X, Y=None, *, events=None, median_filter=None, class_names=None) -> dict[str, float]:
    """Per-class thresholds for :func:`detect_events` with the best F1 on labelled validation clips.

    Two kinds of labels work:

    - clip labels ``Y`` (weak, as the probe was trained on): a clip counts as
      detected for a class when its highest (filtered) frame probability
      exceeds the threshold, and the threshold maximises the clip-level F1
      of each class;
    - annotated ``events`` (strong): the threshold maximises each class's
      event-based F1 (collar 200 ms, as :func:`detection_metrics`; needs
      ``sed_scores_eval``).

    Parameters
    ----------
    model : Pipeline
        A fitted ``Pipeline(FrozenEncoderTransformer, probe)``.
    X : clips
        Validation clips (waveforms or files), as for ``model.predict_proba``.
    Y : array-like of shape (n_clips, n_classes), optional
        0/1 clip labels (class order of the probe). Give ``Y`` or ``events``.
    events : list of lists of events, optional
        Per clip, its annotated events (dicts with ``onset``, ``offset``,
        ``class``/``event_label``, or ``(onset, offset, label)`` tuples).
    median_filter : float, sequence or dict, optional
        The median filter :func:`detect_events` will use (seconds).
    class_names : sequence of str, optional

    Returns
    -------
    dict of str to float
        ``{class: threshold}``, ready for ``detect_events(threshold=...)``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from skprobe import FrozenEncoderTransformer, LinearProbeClassifier
    >>> rng = np.random.default_rng(0)
    >>> clips = rng.normal(scale=0.05, size=(16, 16000)).astype("float32")
    >>> clips[::2] *= 10
    >>> Y = np.eye(2, dtype=int)[np.arange(16) % 2]
    >>> model = make_pipeline(FrozenEncoderTransformer(encoder="tiny-vit", device="cpu"),
    ...                       LinearProbeClassifier(prefix_tokens=1, cv=None, max_iter=5,
    ...                                             device="cpu")).fit(clips, Y)
    >>> sorted(choose_thresholds(model, clips, Y, class_names=["loud", "quiet"]))
    ['loud', 'quiet']
    """
    if (Y is None) == (events is None):
        raise ValueError("choose_thresholds needs clip labels Y or annotated events (one of them)")
    scorer = FrameScorer(model, class_names=class_names)
    names = scorer.class_names
    result = frame_scores(model, X, class_names=names)
    scores = result.scores
    lengths = filter_lengths(median_filter, names, result.hop_seconds)
    if lengths.max() > 1:
        scores = np.stack([median_filter_scores(s, lengths) for s in scores])
    if Y is not None:
        Y = np.asarray(Y)
        if Y.shape != (len(scores), len(names)):
            raise ValueError(f"Y must be 0/1 clip labels of shape {(len(scores), len(names))} (clips, classes), "
                             f"got {Y.shape}")
        peak = scores.max(axis=1)
        return {c: best_f1_threshold(peak[:, i], Y[:, i]) for i, c in enumerate(names)}
    if len(events) != len(scores):
        raise ValueError(f"events must list the annotated events of each of the {len(scores)} clips, "
                         f"got {len(events)} lists")
    _sed_scores_eval()
    from sed_scores_eval import collar_based

    duration = scorer.window_samples / scorer.sample_rate
    tables = {f"clip{i}": score_table(s, result.hop_seconds, names, duration) for i, s in enumerate(scores)}
    truth = {f"clip{i}": [e for e in ground_truth_events(ev) if e[2] in names] for i, ev in enumerate(events)}
    best = collar_based.best_fscore(tables, truth, **EVENT_COLLARS)[3]
    return {c: float(min(best[c], 1.0)) if np.isfinite(best[c]) else 1.0 for c in names}
