"""Event detection in recordings of any length with a probe trained on clip labels."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from .events import events_frame, write_events
from .postprocess import Event, EventTracker, MedianFilter, filter_lengths, per_class
from .scorer import as_scorer
from .windows import BLOCK_SECONDS, FrameStitcher, WindowPlan, audio_blocks, recording_info, windows

__all__ = ["detect_events", "stream_frame_scores", "list_recordings"]


def list_recordings(recordings) -> list:
    """The recordings to process: files and waveforms as given, folders replaced by their audio files.

    A folder contributes every audio file below it (recursively, sorted by
    path) whose suffix soundfile knows.

    Raises
    ------
    ValueError
        If a path does not exist, a folder holds no audio file, or ``recordings`` is empty.
    """
    if isinstance(recordings, (str, os.PathLike)) or (isinstance(recordings, np.ndarray) and recordings.ndim == 1):
        recordings = [recordings]
    items = []
    for item in recordings:
        if not isinstance(item, (str, os.PathLike)):
            items.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            known = {f".{ext.lower()}" for ext in sf.available_formats()} | {".mp3", ".oga", ".opus"}
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in known)
            if not files:
                raise ValueError(f"folder {path} holds no audio file (known suffixes: {sorted(known)})")
            items += files
        elif not path.exists():
            raise ValueError(f"recording not found: {path}")
        else:
            items.append(path)
    if not items:
        raise ValueError("recordings is empty")
    return items


def _name(item, index: int) -> str:
    return str(item) if isinstance(item, (str, os.PathLike)) else f"recording_{index}"


def stream_frame_scores(model, recording, *, overlap: float = 0.5, sample_rate: int | None = None,
                        batch_size: int | None = None, class_names=None,
                        block_seconds: float = BLOCK_SECONDS) -> Iterator[tuple[int, np.ndarray]]:
    """Stitched frame scores of one recording, block by block, in bounded memory.

    The recording is read in blocks, resampled to the encoder's rate and cut
    into windows of the encoder's clip length, each starting ``1 - overlap``
    of a window after the previous one (rounded to whole frames); the frame
    scores of overlapping windows are averaged. Frame ``i`` of the recording
    covers ``[i * hop, (i + 1) * hop)`` seconds; the last frame starts
    before the recording's end.

    Parameters
    ----------
    model : Pipeline or FrameScorer
        A fitted ``Pipeline(FrozenEncoderTransformer, probe)`` (see :class:`FrameScorer`).
    recording : path-like or array
        An audio file (any rate and number of channels) or a waveform.
    overlap : float, default=0.5
    sample_rate : int, optional
        Rate of an in-memory ``recording``.
    batch_size : int, optional
        Windows per encoder forward (default: the transformer's ``batch_size``).
    class_names : sequence of str, optional
    block_seconds : float, default=60
        Audio read per block.

    Yields
    ------
    first_frame : int
        Index of the block's first frame in the recording.
    scores : ndarray of shape (n, n_classes)
        Averaged frame probabilities.
    """
    scorer = as_scorer(model, class_names)
    n_native, native_rate = recording_info(recording, sample_rate)
    n_samples = int(np.ceil(n_native * scorer.sample_rate / native_rate))
    plan = WindowPlan(scorer.window_samples, scorer.n_frames, scorer.hop_seconds, scorer.sample_rate, overlap)
    stitcher = FrameStitcher(plan, plan.n_total_frames(n_samples))
    batch_size = batch_size or getattr(getattr(scorer, "transformer", None), "batch_size", 16)
    blocks = audio_blocks(recording, scorer.sample_rate, sample_rate=sample_rate, block_seconds=block_seconds)
    batch = []
    for window in windows(blocks, plan, n_samples):
        batch.append(window)
        if len(batch) == batch_size:
            yield from _score_batch(scorer, batch, stitcher)
            batch = []
    if batch:
        yield from _score_batch(scorer, batch, stitcher)
    first, scores = stitcher.finish()
    if len(scores):
        yield first, scores


def _score_batch(scorer, batch, stitcher):
    scores = np.asarray(scorer.score_windows(np.stack(batch)), dtype=float)
    if scores.shape[1:] != (scorer.n_frames, len(scorer.class_names)):
        raise RuntimeError(f"the scorer returned frame scores of shape {scores.shape[1:]} per window, "
                           f"expected {(scorer.n_frames, len(scorer.class_names))}")
    for window_scores in scores:
        first, final = stitcher.add(window_scores)
        if len(final):
            yield first, final


def detect_events(model, recordings, *, threshold=0.5, median_filter=None, overlap: float = 0.5,
                  class_names=None, sample_rate: int | None = None, batch_size: int | None = None,
                  on_error: str = "skip", output: str | os.PathLike | None = None, as_frame: bool = True,
                  keep_scores: bool = False, block_seconds: float = BLOCK_SECONDS, verbose: int = 0):
    """Detect sound events in recordings of any length with a probe trained on clip labels.

    Each recording is streamed through the encoder in overlapping windows of
    its clip length (:func:`stream_frame_scores`: memory does not grow with
    the recording's length), the stitched frame probabilities are median
    filtered and thresholded per class, and every run of frames above the
    threshold becomes one event: its onset is the first frame's start, its
    offset the last frame's end (clipped to the recording), its score the
    peak filtered probability inside. An event that spans a window border
    is found once: the windows' scores are stitched before thresholding.

    Parameters
    ----------
    model : Pipeline
        A fitted ``Pipeline(FrozenEncoderTransformer, probe)``, the probe
        trained on clips as usual (any of the skprobe probes), or a
        :class:`~skprobe.detection.FrameScorer`.
    recordings : path-like, array or list of them
        An audio file, a folder (every audio file below it), or a list of
        files and/or waveforms. Any sample rate (resampled in blocks) and any
        number of channels (averaged).
    threshold : float, sequence or dict, default=0.5
        Probability above which a frame is active: one for all classes, one
        per class (in the probe's class order), or ``{class: threshold}``
        (missing classes get 0.5). See :func:`~skprobe.detection.choose_thresholds`.
    median_filter : float, sequence or dict, optional
        Length in seconds of a median filter over time applied to the
        probabilities before thresholding (global, per class, or a
        ``{class: seconds}`` dict); rounded to an odd number of frames.
        None: no filtering.
    overlap : float, default=0.5
        Share of a window the next window overlaps, in ``[0, 1)``.
    class_names : sequence of str, optional
        Names for the probe's classes (default: ``str`` of ``classes_``).
    sample_rate : int, optional
        Rate of in-memory waveforms in ``recordings``.
    batch_size : int, optional
        Windows per encoder forward (default: the transformer's).
    on_error : {"skip", "raise"}, default="skip"
        A recording that cannot be read or scored: ``"skip"`` warns naming
        it, lists it in ``attrs["skipped"]`` and goes on with the others;
        ``"raise"`` stops with the error.
    output : path-like, optional
        Also write the events to this ``.csv`` (every column) or ``.tsv``
        (DCASE: filename, onset, offset, event_label).
    as_frame : bool, default=True
        Return a pandas DataFrame; False returns a list of
        :class:`~skprobe.detection.Event` rows.
    keep_scores : bool, default=False
        Also keep every recording's stitched frame probabilities (before
        the median filter) in ``attrs["frame_scores"]``, for evaluation with
        :func:`~skprobe.detection.detection_metrics`. They grow with the
        recordings' length (``n_frames x n_classes`` float64 per recording).
    block_seconds : float, default=60
        Audio read per block.
    verbose : int, default=0
        Show a progress bar over the audio, with the speed in audio-hours per hour.

    Returns
    -------
    DataFrame or list of Event
        Columns ``file``, ``onset``, ``offset``, ``event_label``, ``score``,
        sorted by file, onset and class. A DataFrame's ``attrs`` hold
        ``skipped`` (``(file, message)`` pairs), ``durations``
        (``{file: seconds}``), ``seconds`` (wall time), ``hop_seconds``
        and, with ``keep_scores``, ``frame_scores`` (``{file: (n_frames, n_classes)}``).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from skprobe import FrozenEncoderTransformer, PrototypicalProbeClassifier, detect_events
    >>> rng = np.random.default_rng(0)
    >>> clips = rng.normal(scale=0.05, size=(16, 16000)).astype("float32")
    >>> clips[::2, 4000:8000] *= 20  # a loud burst in every other clip
    >>> Y = np.eye(2, dtype=int)[np.arange(16) % 2]
    >>> model = make_pipeline(FrozenEncoderTransformer(encoder="tiny-vit", device="cpu"),
    ...                       PrototypicalProbeClassifier(prefix_tokens=1, max_iter=5, random_state=0, device="cpu"))
    >>> model = model.fit(clips, Y)
    >>> recording = rng.normal(scale=0.05, size=16000 * 5).astype("float32")  # 5 s, longer than a window
    >>> events = detect_events(model, [recording], sample_rate=16000, class_names=["burst", "quiet"])
    >>> list(events.columns), events.attrs["durations"]
    (['file', 'onset', 'offset', 'event_label', 'score'], {'recording_0': 5.0})
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if output is not None and Path(output).suffix.lower() not in (".csv", ".tsv"):
        raise ValueError(f"output {output}: write .csv (every column) or .tsv (DCASE)")
    scorer = as_scorer(model, class_names)
    names = scorer.class_names
    thresholds = per_class(threshold, names, "threshold", default=0.5)
    lengths = filter_lengths(median_filter, names, scorer.hop_seconds)
    WindowPlan(scorer.window_samples, scorer.n_frames, scorer.hop_seconds, scorer.sample_rate, overlap)  # validate
    items = list_recordings(recordings)
    durations, skipped, events, kept = {}, [], [], {}
    sizes = []
    for item in items:
        try:
            n, rate = recording_info(item, sample_rate)
            sizes.append(n / rate)
        except ValueError:
            sizes.append(0.0)  # reported when its turn comes
    start = time.perf_counter()
    progress = tqdm(total=round(sum(sizes), 1), unit="audio-s", disable=not verbose, desc="detecting events",
                    bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} audio-s [{elapsed}<{remaining}{postfix}]")
    done = 0.0
    try:
        for i, item in enumerate(items):
            name = _name(item, i)
            try:
                found, duration, scores = _detect_one(scorer, item, name, thresholds, lengths, overlap,
                                                      sample_rate, batch_size, block_seconds, keep_scores)
            except (ValueError, RuntimeError, OSError) as exc:
                if on_error == "raise":
                    raise ValueError(f"{name}: {exc}") from exc
                warnings.warn(f"skipping recording {name}: {exc}", stacklevel=2)
                skipped.append((name, str(exc)))
            else:
                events += found
                durations[name] = duration
                if keep_scores:
                    kept[name] = scores
            done += sizes[i]
            progress.update(sizes[i])
            elapsed = time.perf_counter() - start
            progress.set_postfix_str(f"{done / 3600:.2f} audio-h, {done / max(elapsed, 1e-9):.1f} audio-h/h")
    finally:
        progress.close()
    events.sort(key=lambda e: (e.file, e.onset, e.event_label))
    if output is not None:
        write_events(events, output)
    if not as_frame:
        return events
    frame = events_frame(events)
    frame.attrs.update(skipped=skipped, durations=durations, seconds=time.perf_counter() - start,
                       hop_seconds=scorer.hop_seconds)
    if keep_scores:
        frame.attrs["frame_scores"] = kept
    return frame


def _detect_one(scorer, item, name, thresholds, lengths, overlap, sample_rate, batch_size, block_seconds,
                keep_scores) -> tuple[list[Event], float, np.ndarray | None]:
    n, rate = recording_info(item, sample_rate)
    duration = n / rate
    tracker = EventTracker(name, scorer.class_names, thresholds, scorer.hop_seconds, duration)
    smoother = MedianFilter(lengths)
    events: list[Event] = []
    next_frame = 0
    kept = []
    for _, block in stream_frame_scores(scorer, item, overlap=overlap, sample_rate=sample_rate,
                                        batch_size=batch_size, block_seconds=block_seconds):
        if keep_scores:
            kept.append(block)
        smoothed = smoother.push(block)
        events += tracker.push(next_frame, smoothed)
        next_frame += len(smoothed)
    events += tracker.push(next_frame, smoother.flush())
    events += tracker.finish()
    return events, duration, (np.concatenate(kept) if keep_scores else None)
