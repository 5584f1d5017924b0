"""From frame scores to events: median filtering and thresholds, block by block.

Both steps run on a stream of frame blocks with bounded state, so a
recording's length does not change their memory: :class:`MedianFilter`
keeps half a filter of frames on each side, :class:`EventTracker` one open
event per class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["Event", "EventTracker", "MedianFilter", "filter_lengths", "per_class", "median_filter_scores"]


class Event(NamedTuple):
    """One detected event: the recording, its onset and offset (seconds), the class and the peak score."""

    file: str
    onset: float
    offset: float
    event_label: str
    score: float


def per_class(value, class_names: Sequence[str], name: str, default: float | None = None) -> np.ndarray:
    """A float per class from a scalar, a sequence in class order or a ``{class: value}`` mapping.

    Raises
    ------
    ValueError
        Naming ``name`` when the sequence has the wrong length, a mapping
        lacks classes (without ``default``) or names unknown ones.

    Examples
    --------
    >>> per_class({"dog": 0.3}, ["dog", "car"], "threshold", default=0.5).tolist()
    [0.3, 0.5]
    """
    n = len(class_names)
    if value is None:
        value = default
    if isinstance(value, Real):
        return np.full(n, float(value))
    if isinstance(value, Mapping):
        unknown = sorted(set(map(str, value)) - set(class_names))
        if unknown:
            raise ValueError(f"{name} names unknown classes {unknown}; the classes are {list(class_names)}")
        values = {str(k): v for k, v in value.items()}
        missing = [c for c in class_names if c not in values]
        if missing and default is None:
            raise ValueError(f"{name} lacks classes {missing}")
        return np.array([float(values.get(c, default)) for c in class_names])
    out = np.asarray(value, dtype=float).ravel()
    if out.shape != (n,):
        raise ValueError(f"{name} must be a number, {n} numbers (one per class) or a {{class: number}} dict, "
                         f"got {value!r}")
    return out


def filter_lengths(median_filter, class_names: Sequence[str], hop_seconds: float) -> np.ndarray:
    """Median filter lengths in frames (odd, at least 1) from seconds per class (None or 0: no filter).

    >>> filter_lengths(0.25, ["a", "b"], 0.04).tolist()
    [7, 7]
    >>> filter_lengths({"a": 0.0, "b": 0.1}, ["a", "b"], 0.04).tolist()
    [1, 3]
    """
    seconds = per_class(median_filter, class_names, "median_filter", default=0.0)
    if (seconds < 0).any() or not np.isfinite(seconds).all():
        raise ValueError(f"median_filter lengths must be finite seconds >= 0, got {seconds.tolist()}")
    frames = np.maximum(1, np.round(seconds / hop_seconds)).astype(int)
    return frames + (frames % 2 == 0)  # odd lengths centre on their frame


class MedianFilter:
    """Median filter along time, per class, over a stream of frame blocks ``(n, C)``.

    Equal to :func:`scipy.ndimage.median_filter` of the whole score array with
    ``mode="nearest"`` (the edges repeat the first and last frame), applied
    class by class; its output lags its input by half the longest filter.

    Parameters
    ----------
    lengths : array of int, shape (n_classes,)
        Odd filter lengths in frames (1: no filtering).

    Examples
    --------
    >>> mf = MedianFilter(np.array([3]))
    >>> first = mf.push(np.array([[0.0], [1.0], [0.0], [0.0]]))
    >>> np.concatenate([first, mf.flush()]).ravel().tolist()
    [0.0, 0.0, 0.0, 0.0]
    """

    def __init__(self, lengths: np.ndarray) -> None:
        self.lengths = np.asarray(lengths, dtype=int)
        self.radius = int(self.lengths.max()) // 2 if len(self.lengths) else 0
        self.buffer: np.ndarray | None = None  # radius frames of context, then frames not yet output
        self.done = 0  # frames of `buffer` past the left context that were already output

    def push(self, block: np.ndarray) -> np.ndarray:
        """Filter what the new frames complete; returns the frames whose right context is now known."""
        if not len(block):
            return block
        if self.buffer is None:
            self.buffer = np.concatenate([np.repeat(block[:1], self.radius, axis=0), block])
        else:
            self.buffer = np.concatenate([self.buffer, block])
        return self._release(len(self.buffer) - self.radius)

    def flush(self) -> np.ndarray:
        """The last frames, with the final frame repeated as their right context."""
        if self.buffer is None:
            return np.zeros((0, len(self.lengths)))
        end = len(self.buffer)
        self.buffer = np.concatenate([self.buffer, np.repeat(self.buffer[-1:], self.radius, axis=0)])
        return self._release(end)

    def _release(self, end: int) -> np.ndarray:
        start = self.radius
        if end <= start or self.radius == 0:
            out = self.buffer[start:end]
        else:
            out = np.empty((end - start, self.buffer.shape[1]))
            for length in np.unique(self.lengths):
                cols = np.flatnonzero(self.lengths == length)
                h = length // 2
                window = self.buffer[start - h : end + h][:, cols]
                out[:, cols] = np.median(sliding_window_view(window, length, axis=0), axis=-1)
        self.buffer = self.buffer[end - self.radius :]
        return out


def median_filter_scores(scores: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """:class:`MedianFilter` of a whole score array ``(n_frames, C)`` at once."""
    mf = MedianFilter(lengths)
    return np.concatenate([mf.push(np.asarray(scores, dtype=float)), mf.flush()])


class EventTracker:
    """Threshold frame scores into events, block by block.

    A class's event starts at the first frame whose score exceeds its
    threshold and ends after the last one; its score is the peak frame score
    inside. An event still open at the end of the recording ends there.

    Parameters
    ----------
    file : str
        Name put in every event.
    class_names : list of str
    thresholds : array of float, shape (n_classes,)
    hop_seconds : float
    duration : float
        The recording's length in seconds: offsets are clipped to it.

    Examples
    --------
    >>> tracker = EventTracker("a.wav", ["dog"], np.array([0.5]), hop_seconds=1.0, duration=5.0)
    >>> tracker.push(0, np.array([[0.1], [0.9], [0.7]]))
    []
    >>> tracker.push(3, np.array([[0.2], [0.8]])) + tracker.finish()
    [Event(file='a.wav', onset=1.0, offset=3.0, event_label='dog', score=0.9), Event(file='a.wav', onset=4.0, offset=5.0, event_label='dog', score=0.8)]
    """

    def __init__(self, file: str, class_names: Sequence[str], thresholds: np.ndarray, hop_seconds: float,
                 duration: float) -> None:
        self.file = file
        self.class_names = list(class_names)
        self.thresholds = np.asarray(thresholds, dtype=float)
        self.hop = float(hop_seconds)
        self.duration = float(duration)
        self.open_onset = np.full(len(self.class_names), -1)  # frame index of an open event, -1: none
        self.open_peak = np.zeros(len(self.class_names))

    def push(self, first_frame: int, block: np.ndarray) -> list[Event]:
        """Frames ``first_frame ..`` of the (filtered) scores ``(n, C)``; returns the events they close."""
        events = []
        if not len(block):
            return events
        active = block > self.thresholds
        for c in np.flatnonzero(active.any(axis=0) | (self.open_onset >= 0)):
            on = active[:, c]
            edges = np.diff(np.concatenate([[self.open_onset[c] >= 0], on, [False]]).astype(np.int8))
            starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
            if self.open_onset[c] >= 0:  # the open event continues into this block
                starts = np.concatenate([[-1], starts])
            for a, b in zip(starts, stops):
                peak = block[max(a, 0) : b, c].max() if b > max(a, 0) else -np.inf
                if a < 0:
                    onset, peak = self.open_onset[c], max(self.open_peak[c], peak)
                else:
                    onset = first_frame + a
                if b == len(block):  # still on at the block's end: keep it open
                    self.open_onset[c], self.open_peak[c] = onset, peak
                else:
                    self.open_onset[c] = -1
                    events.append(self._event(onset, first_frame + b, c, peak))
        return sorted(events, key=lambda e: (e.onset, e.event_label))

    def finish(self) -> list[Event]:
        """Close the events still open at the end of the recording."""
        events = [self._event(self.open_onset[c], None, c, self.open_peak[c])
                  for c in np.flatnonzero(self.open_onset >= 0)]
        self.open_onset[:] = -1
        return sorted(events, key=lambda e: (e.onset, e.event_label))

    def _event(self, onset_frame: int, offset_frame: int | None, c: int, peak: float) -> Event:
        offset = self.duration if offset_frame is None else min(offset_frame * self.hop, self.duration)
        return Event(self.file, round(float(onset_frame * self.hop), 6), round(float(offset), 6),
                     self.class_names[c], round(float(peak), 6))
