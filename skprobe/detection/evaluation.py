"""Sound event detection metrics of the field, computed by ``sed_scores_eval``.

=================  ================================================================================
metric             definition (all from frame score tables, with the DCASE parameters)
=================  ================================================================================
``psds1``          PSDS scenario 1: DTC = GTC = 0.7, no cross-trigger term, alpha_ST = 1, eFPR up to
                   100 per hour (localisation matters)
``psds2``          PSDS scenario 2: DTC = GTC = 0.1, CTTC = 0.3, alpha_CT = 0.5, alpha_ST = 1, eFPR up
                   to 100 per hour (classification matters, cross-triggers cost)
``event_f1``       collar-based F1 at the given thresholds, onset collar 200 ms, offset collar
                   max(200 ms, 20 % of the event), macro average over classes
``segment_f1``     segment-based F1 on 1 s segments at the given thresholds, macro average over classes
=================  ================================================================================

``event_f1_micro`` and ``segment_f1_micro`` pool the counts of all classes.
PSDS is threshold-free (Ebbers et al.'s exact computation over every
threshold of the score tables); the F1 scores need thresholds.

``sed_scores_eval`` (Paderborn University, MIT licence) is an optional
dependency: ``pip install 'skprobe[detection]'``. It was chosen over
``psds_eval`` because it computes all four metrics from score tables without
running the detector at many thresholds, and because ``psds_eval`` 0.5.3 no
longer runs on pandas 3 (``fillna(method=...)`` is gone). Its release 0.0.4
hands a read-only array from pandas 3 to compiled code; :func:`score_table`
returns tables whose arrays are writeable, which avoids that (fixed upstream
after 0.0.4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .postprocess import filter_lengths, median_filter_scores, per_class

__all__ = ["PSDS_SCENARIOS", "detection_metrics", "ground_truth_events", "score_table"]

PSDS_SCENARIOS = {
    "psds1": dict(dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0, alpha_st=1.0,
                  max_efpr=100.0),
    "psds2": dict(dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3, alpha_ct=0.5, alpha_st=1.0,
                  max_efpr=100.0),
}
EVENT_COLLARS = dict(onset_collar=0.2, offset_collar=0.2, offset_collar_rate=0.2)
SEGMENT_SECONDS = 1.0


def _sed_scores_eval():
    try:
        import sed_scores_eval
    except ImportError:
        raise ImportError("detection metrics need sed_scores_eval: pip install 'skprobe[detection]'") from None
    return sed_scores_eval


def _writeable_frame_class():
    import pandas as pd

    class WriteableScores(pd.DataFrame):
        """A score table whose ``to_numpy`` is writeable (sed_scores_eval 0.0.4 writes through it)."""

        @property
        def _constructor(self):
            return WriteableScores

        def to_numpy(self, *args, **kwargs):
            out = super().to_numpy(*args, **kwargs)
            return out if out.flags.writeable else out.copy()

    return WriteableScores


_TABLE = None


def score_table(scores: np.ndarray, hop_seconds: float, class_names: Sequence[str], duration: float | None = None):
    """A frame score table ``(onset, offset, <class>...)`` for ``sed_scores_eval``.

    Frame ``t`` spans ``[t * hop, (t + 1) * hop)``; the last frame ends at
    ``duration`` when the recording ends inside it.

    Examples
    --------
    >>> score_table(np.array([[0.1, 0.9], [0.2, 0.8]]), 0.5, ["dog", "car"], duration=0.8)
       onset  offset  dog  car
    0    0.0     0.5  0.1  0.9
    1    0.5     0.8  0.2  0.8
    """
    global _TABLE
    if _TABLE is None:
        _TABLE = _writeable_frame_class()
    scores = np.asarray(scores, dtype=float)
    times = np.arange(len(scores) + 1) * float(hop_seconds)
    if duration is not None and times[-2] < duration < times[-1]:
        times[-1] = duration
    data = {"onset": times[:-1], "offset": times[1:]}
    data.update({str(c): scores[:, i] for i, c in enumerate(class_names)})
    return _TABLE(data)


def ground_truth_events(events) -> list[tuple[float, float, str]]:
    """``(onset, offset, label)`` tuples from event dicts (``class`` or ``event_label``), tuples or Event rows."""
    out = []
    for e in events:
        if isinstance(e, Mapping):
            out.append((float(e["onset"]), float(e["offset"]), str(e.get("event_label", e.get("class")))))
        elif hasattr(e, "event_label"):
            out.append((float(e.onset), float(e.offset), str(e.event_label)))
        else:
            onset, offset, label = e[:3]
            out.append((float(onset), float(offset), str(label)))
    return out


def detection_metrics(scores: Mapping[str, np.ndarray], ground_truth: Mapping, durations: Mapping[str, float], *,
                      hop_seconds: float, class_names: Sequence[str], threshold=0.5, median_filter=None,
                      psds: bool = True) -> dict[str, float]:
    """PSDS1, PSDS2, event-based and segment-based F1 of frame scores against annotated events.

    Parameters
    ----------
    scores : dict of str to ndarray of shape (n_frames, n_classes)
        Frame probabilities per recording (frame ``t`` spans ``[t * hop, (t + 1) * hop)``).
    ground_truth : dict of str to list of events
        The annotated events of every recording in ``scores`` (dicts with
        ``onset``, ``offset`` and ``class`` or ``event_label``, or
        ``(onset, offset, label)`` tuples); a recording without events maps to ``[]``.
    durations : dict of str to float
        Length of every recording in seconds.
    hop_seconds : float
    class_names : sequence of str
    threshold : float, sequence or dict, default=0.5
        Decision thresholds of the F1 scores (as in :func:`detect_events`).
    median_filter : float, sequence or dict, optional
        Median filter in seconds applied to the scores first (as in :func:`detect_events`).
    psds : bool, default=True
        False skips the two PSDS (the slower part). PSDS needs at least two
        classes (``sed_scores_eval`` 0.0.4 fails on one).

    Returns
    -------
    dict
        ``psds1``, ``psds2``, ``event_f1``, ``event_f1_micro``,
        ``segment_f1``, ``segment_f1_micro`` (see the module's table).

    Examples
    --------
    >>> scores = {"a": np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.8], [0.1, 0.1]])}  # 4 frames, 2 classes
    >>> truth = {"a": [(0.0, 2.0, "dog"), (2.0, 3.0, "car")]}
    >>> metrics = detection_metrics(scores, truth, {"a": 4.0}, hop_seconds=1.0, class_names=["dog", "car"])
    >>> metrics["psds1"], metrics["event_f1"], metrics["segment_f1"]
    (1.0, 1.0, 1.0)
    """
    _sed_scores_eval()  # a clear message when the extra is missing
    from sed_scores_eval import collar_based, intersection_based, segment_based

    names = [str(c) for c in class_names]
    missing = sorted(set(scores) - set(ground_truth))
    if missing:
        raise ValueError(f"ground_truth lacks recordings {missing[:5]} of scores; map recordings without "
                         "events to []")
    if psds and len(names) < 2:
        raise ValueError("PSDS needs at least two classes (sed_scores_eval fails on one); pass psds=False")
    lengths = filter_lengths(median_filter, names, hop_seconds)
    thresholds = dict(zip(names, per_class(threshold, names, "threshold", default=0.5)))
    tables, truth, audio_durations = {}, {}, {}
    for key, frame_scores in scores.items():
        frame_scores = np.asarray(frame_scores, dtype=float)
        if frame_scores.ndim != 2 or frame_scores.shape[1] != len(names):
            raise ValueError(f"scores[{key!r}] must be (n_frames, {len(names)}), got shape {frame_scores.shape}")
        if lengths.max() > 1:
            frame_scores = median_filter_scores(frame_scores, lengths)
        tables[key] = score_table(frame_scores, hop_seconds, names, durations[key])
        truth[key] = [e for e in ground_truth_events(ground_truth[key]) if e[2] in names]
        audio_durations[key] = float(durations[key])
    out = {}
    if psds:
        for name, params in PSDS_SCENARIOS.items():
            out[name] = float(intersection_based.psds(tables, truth, audio_durations, **params)[0])
    f1 = collar_based.fscore(tables, truth, thresholds, **EVENT_COLLARS)[0]
    out["event_f1"], out["event_f1_micro"] = float(f1["macro_average"]), float(f1["micro_average"])
    f1 = segment_based.fscore(tables, truth, audio_durations, thresholds, segment_length=SEGMENT_SECONDS)[0]
    out["segment_f1"], out["segment_f1_micro"] = float(f1["macro_average"]), float(f1["micro_average"])
    return out
