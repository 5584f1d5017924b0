"""Synthetic pitched note scenes: short harmonic notes scattered in noise, labelled by pitch band.

Material for probing what a pitch encoder (CREPE) knows: every clip holds a few
short notes of distinct pitch bands at random times in background noise, and
the multi-label target says which bands sound. The notes differ in timbre
(number of harmonics, spectral tilt), envelope, vibrato and loudness, so only
the fundamental frequency identifies the class.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter
from sklearn.utils import Bunch, check_random_state

__all__ = ["make_note_scenes"]

_NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def make_note_scenes(
    n_clips: int = 600,
    *,
    n_classes: int = 8,
    semitones_per_class: int = 4,
    lowest_note: int = 45,
    max_notes: int = 3,
    clip_seconds: float = 2.0,
    note_seconds: tuple[float, float] = (0.15, 0.5),
    snr_db: tuple[float, float] = (0.0, 20.0),
    sample_rate: int = 16000,
    multilabel: bool = True,
    random_state=None,
) -> Bunch:
    """Clips of 1..``max_notes`` short harmonic notes in noise; the classes are pitch bands.

    Class ``c`` covers the fundamental frequencies from MIDI note
    ``lowest_note + c * semitones_per_class`` up to the next band (each note's
    pitch is drawn uniformly in log frequency inside its band, so it rarely
    sits on a semitone). A note has 1 to 10 harmonics below the Nyquist
    frequency with amplitudes ``h ** -tilt`` (tilt uniform in [0.5, 2]) and
    random phases, vibrato of 0 to 30 cents at 4 to 7 Hz, a 5 to 40 ms
    attack, an exponential decay and a 20 ms release. Notes of one clip have
    distinct classes and do not overlap in time. The background is pink-ish
    noise (white noise through a one-pole low-pass) whose level puts each
    note at a signal-to-noise ratio drawn from ``snr_db``.

    Parameters
    ----------
    n_clips : int, default=600
    n_classes : int, default=8
        Pitch bands, from low to high.
    semitones_per_class : int, default=4
        Width of one band.
    lowest_note : int, default=45
        MIDI note at the bottom of class 0 (45 is A2, 110 Hz).
    max_notes : int, default=3
        Most notes per clip (multi-label; one note for ``multilabel=False``).
    clip_seconds : float, default=2.0
    note_seconds : (float, float), default=(0.15, 0.5)
        Range of note durations.
    snr_db : (float, float), default=(0.0, 20.0)
        Range of each note's RMS over the noise's RMS, in dB.
    sample_rate : int, default=16000
    multilabel : bool, default=True
        Multi-hot ``y`` of shape (n_clips, n_classes); else one note per clip
        and ``y`` of shape (n_clips,).
    random_state : int, RandomState instance or None

    Returns
    -------
    Bunch
        ``X`` float32 (n_clips, n_samples) waveforms with peak at most 1,
        ``y``, ``class_names`` (band names such as ``"A2-C3"``),
        ``notes`` (per clip, a list of ``{"class", "f0", "onset", "duration"}``,
        times in seconds) and ``sample_rate``.

    Examples
    --------
    >>> data = make_note_scenes(4, n_classes=3, max_notes=2, clip_seconds=1.0, random_state=0)
    >>> data.X.shape, data.y.shape, data.class_names
    ((4, 16000), (4, 3), ['A2-C#3', 'C#3-F3', 'F3-A3'])
    """
    n_samples = int(round(clip_seconds * sample_rate))
    lo_s, hi_s = note_seconds
    _check(n_clips, n_classes, semitones_per_class, lowest_note, max_notes, clip_seconds, note_seconds, snr_db,
           sample_rate)
    top_f0 = _midi_hz(lowest_note + n_classes * semitones_per_class)
    if top_f0 >= sample_rate / 2:
        raise ValueError(f"the highest band reaches {top_f0:.0f} Hz, above the Nyquist frequency "
                         f"{sample_rate / 2:.0f} Hz of sample_rate={sample_rate}; lower lowest_note, n_classes "
                         "or semitones_per_class")
    if (max_notes if multilabel else 1) * hi_s > clip_seconds:
        raise ValueError(f"max_notes={max_notes} notes of up to {hi_s} s do not fit in clip_seconds={clip_seconds} "
                         "without overlapping")
    rng = check_random_state(random_state)
    X = np.zeros((n_clips, n_samples), dtype=np.float64)
    Y = np.zeros((n_clips, n_classes), dtype=np.int64)
    notes: list[list[dict]] = []
    for i in range(n_clips):
        k = rng.randint(1, max_notes + 1) if multilabel else 1
        classes = rng.choice(n_classes, size=k, replace=False)
        durations = rng.uniform(lo_s, hi_s, size=k)
        onsets = _non_overlapping(rng, durations, clip_seconds)
        clip_notes = []
        noise = _pink_noise(rng, n_samples)
        for c, onset, duration in zip(classes, onsets, durations):
            midi = lowest_note + semitones_per_class * (c + rng.uniform(0, 1))
            note = _harmonic_note(rng, _midi_hz(midi), duration, sample_rate)
            snr = 10 ** (rng.uniform(*snr_db) / 20)
            start = int(round(onset * sample_rate))
            stop = min(start + len(note), n_samples)
            X[i, start:stop] += note[: stop - start] * snr / _rms(note)
            Y[i, c] = 1
            clip_notes.append({"class": int(c), "f0": float(_midi_hz(midi)), "onset": float(onset),
                               "duration": float(duration)})
        X[i] += noise / _rms(noise)
        X[i] /= np.abs(X[i]).max()
        notes.append(sorted(clip_notes, key=lambda n: n["onset"]))
    names = [f"{_note_name(lowest_note + c * semitones_per_class)}-"
             f"{_note_name(lowest_note + (c + 1) * semitones_per_class)}" for c in range(n_classes)]
    return Bunch(X=X.astype(np.float32), y=Y if multilabel else Y.argmax(axis=1), class_names=names, notes=notes,
                 sample_rate=sample_rate)


def _check(n_clips, n_classes, semitones_per_class, lowest_note, max_notes, clip_seconds, note_seconds, snr_db,
           sample_rate) -> None:
    for name, value in (("n_clips", n_clips), ("n_classes", n_classes),
                        ("semitones_per_class", semitones_per_class), ("sample_rate", sample_rate)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 1 <= max_notes <= n_classes:
        raise ValueError(f"max_notes must be in [1, n_classes={n_classes}], got {max_notes}")
    if lowest_note < 0:
        raise ValueError(f"lowest_note must be a MIDI note number >= 0, got {lowest_note}")
    if not 0 < note_seconds[0] <= note_seconds[1]:
        raise ValueError(f"note_seconds must satisfy 0 < low <= high, got {note_seconds}")
    if not clip_seconds > 0:
        raise ValueError(f"clip_seconds must be positive, got {clip_seconds}")
    if not snr_db[0] <= snr_db[1]:
        raise ValueError(f"snr_db must satisfy low <= high, got {snr_db}")


def _midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _note_name(midi: int) -> str:
    return f"{_NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) or 1.0


def _non_overlapping(rng: np.random.RandomState, durations: np.ndarray, clip_seconds: float) -> np.ndarray:
    """Onsets for notes of ``durations`` (in this order) that keep them apart and inside the clip."""
    order = rng.permutation(len(durations))
    gaps = rng.dirichlet(np.ones(len(durations) + 1)) * (clip_seconds - durations.sum())
    onsets = np.empty(len(durations))
    t = 0.0
    for slot, note in enumerate(order):
        t += gaps[slot]
        onsets[note] = t
        t += durations[note]
    return onsets


def _harmonic_note(rng: np.random.RandomState, f0: float, duration: float, sample_rate: int) -> np.ndarray:
    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    depth = rng.uniform(0, 30) / 1200  # vibrato depth in octaves
    rate = rng.uniform(4, 7)
    # instantaneous frequency f0 * 2 ** (depth * sin), integrated to a phase
    freq = f0 * 2.0 ** (depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    n_harmonics = max(1, min(rng.randint(1, 11), int((sample_rate / 2) / (f0 * 2.0 ** depth))))
    tilt = rng.uniform(0.5, 2.0)
    wave = sum(h ** -tilt * np.sin(h * phase + rng.uniform(0, 2 * np.pi)) for h in range(1, n_harmonics + 1))
    attack = max(1, int(rng.uniform(0.005, 0.04) * sample_rate))
    release = min(n, int(0.02 * sample_rate))
    envelope = np.exp(-t * rng.uniform(0, 6))
    envelope[:attack] *= np.linspace(0, 1, attack, endpoint=False)[: min(attack, n)]
    envelope[n - release:] *= np.linspace(1, 0, release)
    return wave * envelope


def _pink_noise(rng: np.random.RandomState, n: int) -> np.ndarray:
    white = rng.normal(size=n)
    # a one-pole low-pass: more energy at low frequencies, as in room noise
    return lfilter([1.0], [1.0, -0.95], white) + 0.3 * white
