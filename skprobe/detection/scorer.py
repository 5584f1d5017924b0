"""Frame scores of a fitted ``Pipeline(FrozenEncoderTransformer, probe)``.

The probe knows arrays only and the transformer knows the token grid and its
hop: :class:`FrameScorer` joins the two, for clips (:func:`frame_scores`) and
for the fixed-length windows that :func:`~skprobe.detection.detect_events`
cuts from long recordings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

__all__ = ["FrameScorer", "FrameScores", "frame_scores", "as_scorer"]


@dataclass
class FrameScores:
    """Frame-wise class scores of clips.

    Attributes
    ----------
    scores : ndarray of shape (n_clips, n_frames, n_classes)
        Probabilities per frame (:meth:`~skprobe.PrototypicalProbeClassifier.predict_frame_proba`).
    hop_seconds : float
        Time step between frames; frame ``t`` covers ``[t * hop, (t + 1) * hop)`` seconds of its clip.
    class_names : list of str
    """

    scores: np.ndarray
    hop_seconds: float
    class_names: list = field(default_factory=list)

    @property
    def times(self) -> np.ndarray:
        """Start time of every frame in seconds, ``(n_frames,)``."""
        return np.arange(self.scores.shape[1]) * self.hop_seconds


class FrameScorer:
    """Frame scores of fixed-length windows through a fitted pipeline's encoder and probe.

    Parameters
    ----------
    model : Pipeline
        A fitted ``Pipeline`` whose first step is a
        :class:`~skprobe.FrozenEncoderTransformer` and whose last is a probe
        with ``predict_frame_proba``; steps between them are applied with
        ``transform``.
    class_names : sequence of str, optional
        Names of the probe's classes (default: ``str`` of ``classes_``).

    Attributes
    ----------
    sample_rate : int
        Rate of the windows :meth:`score_windows` takes (the encoder's).
    window_samples : int
        Samples per window (the encoder's clip length).
    n_frames : int
        Frames per window (the token grid's time axis).
    hop_seconds : float
        Time between frames.
    class_names : list of str

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from skprobe import FrozenEncoderTransformer, LinearProbeClassifier
    >>> wavs = np.random.default_rng(0).normal(scale=0.1, size=(8, 16000)).astype("float32")
    >>> model = make_pipeline(FrozenEncoderTransformer(encoder="tiny-vit", device="cpu"),
    ...                       LinearProbeClassifier(prefix_tokens=1, cv=None, max_iter=2,
    ...                                             device="cpu")).fit(wavs, np.arange(8) % 2)
    >>> scorer = FrameScorer(model, class_names=["quiet", "loud"])
    >>> scorer.window_samples, scorer.n_frames, round(scorer.hop_seconds, 3)
    (16000, 24, 0.04)
    >>> scorer.score_windows(wavs[:3]).shape
    (3, 24, 2)
    """

    def __init__(self, model, class_names=None) -> None:
        steps = getattr(model, "steps", None)
        if not steps or len(steps) < 2:
            raise ValueError(f"model must be a fitted Pipeline(FrozenEncoderTransformer, ..., probe), got "
                             f"{type(model).__name__}")
        transformer, probe = steps[0][1], steps[-1][1]
        if not hasattr(transformer, "layouts_") and hasattr(transformer, "encoder"):
            check_is_fitted(transformer, "layouts_")  # an unfitted FrozenEncoderTransformer
        if not (hasattr(transformer, "layouts_") and hasattr(transformer, "n_samples_")):
            raise ValueError(f"the first step of model must be a fitted FrozenEncoderTransformer, got "
                             f"{type(transformer).__name__}")
        if not hasattr(probe, "predict_frame_proba"):
            raise ValueError(f"the last step of model must be a probe with predict_frame_proba, got "
                             f"{type(probe).__name__}")
        check_is_fitted(probe)
        prefix = transformer.layouts_[0].prefix_tokens
        if getattr(probe, "prefix_tokens", prefix) != prefix:
            raise ValueError(
                f"the probe has prefix_tokens={probe.prefix_tokens} but the encoder puts {prefix} prefix token(s) "
                "([cls] and the like) before its patch tokens; fit the probe with "
                "prefix_tokens=transformer.prefix_tokens_ for frame scores")
        self.middle = [step for _, step in steps[1:-1] if step not in (None, "passthrough")]
        self.probe = probe
        self.layout = transformer.layouts_[0]
        self.sample_rate = int(transformer.encoder_sample_rate_)
        self.window_samples = int(transformer.n_samples_)
        self.n_frames = int(self.layout.n_time)
        self.hop_seconds = float(self.layout.hop_seconds)
        names = [str(c) for c in probe.classes_] if class_names is None else [str(c) for c in class_names]
        if len(names) != len(probe.classes_):
            raise ValueError(f"class_names has {len(names)} names but the probe has {len(probe.classes_)} classes")
        self.class_names = names
        self.transformer = transformer
        # Windows are arrays at the encoder's rate and length; no token store (a long recording would fill it).
        self._window_transformer = clone(transformer).set_params(
            store=None, output="array", sample_rate=self.sample_rate, clip_seconds=transformer.clip_seconds_,
            n_jobs=0, verbose=0, on_error="raise").fit(None)

    def tokens(self, windows: np.ndarray) -> np.ndarray:
        """Token maps of windows ``(B, window_samples)`` at :attr:`sample_rate`, through the middle steps."""
        X = self._window_transformer.transform(np.asarray(windows, dtype=np.float32))
        for step in self.middle:
            X = step.transform(X)
        return X

    def score_windows(self, windows: np.ndarray) -> np.ndarray:
        """Frame probabilities ``(B, n_frames, n_classes)`` of windows ``(B, window_samples)``."""
        return self.probe.predict_frame_proba(self.tokens(windows), layout=self.layout)


def as_scorer(model, class_names=None):
    """``model`` itself when it already scores windows (has ``score_windows``), else a :class:`FrameScorer`."""
    if hasattr(model, "score_windows"):
        if class_names is not None:
            model.class_names = [str(c) for c in class_names]
        return model
    return FrameScorer(model, class_names=class_names)


def frame_scores(model, X, class_names=None) -> FrameScores:
    """Frame-wise class probabilities of clips through a fitted ``Pipeline(FrozenEncoderTransformer, probe)``.

    Parameters
    ----------
    model : Pipeline
        Fitted; its first step a :class:`~skprobe.FrozenEncoderTransformer`,
        its last a probe (trained on clip labels as usual).
    X : clips, as for ``model.predict_proba``
        Waveforms or audio files; each is cropped or padded to the encoder's
        clip length, as in ``transform``.
    class_names : sequence of str, optional

    Returns
    -------
    FrameScores
        ``scores`` ``(n_clips, n_frames, n_classes)``, ``hop_seconds``,
        ``class_names`` and the frames' start ``times``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from skprobe import FrozenEncoderTransformer, PrototypicalProbeClassifier
    >>> wavs = np.random.default_rng(0).normal(scale=0.1, size=(8, 16000)).astype("float32")
    >>> Y = np.eye(2, dtype=int)[np.arange(8) % 2]
    >>> model = make_pipeline(FrozenEncoderTransformer(encoder="tiny-vit", device="cpu"),
    ...                       PrototypicalProbeClassifier(prefix_tokens=1, max_iter=2, device="cpu")).fit(wavs, Y)
    >>> result = frame_scores(model, wavs[:2])
    >>> result.scores.shape, round(result.hop_seconds, 3)
    ((2, 24, 2), 0.04)
    """
    scorer = FrameScorer(model, class_names=class_names)
    X = scorer.transformer.transform(X)
    for step in scorer.middle:
        X = step.transform(X)
    return FrameScores(scorer.probe.predict_frame_proba(X, layout=scorer.layout), scorer.hop_seconds,
                       scorer.class_names)
