"""make_note_scenes: labels agree with the rendered notes, and the notes sound at their pitch."""

import numpy as np
import pytest

from skprobe.datasets import make_note_scenes


@pytest.fixture(scope="module")
def scenes():
    return make_note_scenes(40, random_state=0)


def test_shapes_labels_and_note_records_agree(scenes):
    assert scenes.X.shape == (40, 32000) and scenes.X.dtype == np.float32
    assert scenes.y.shape == (40, 8)
    assert np.abs(scenes.X).max() <= 1.0 + 1e-6
    assert scenes.class_names[0] == "A2-C#3" and len(scenes.class_names) == 8
    for row, notes in zip(scenes.y, scenes.notes):
        assert 1 <= len(notes) <= 3
        assert sorted(n["class"] for n in notes) == list(np.flatnonzero(row))  # distinct classes, all labelled
        for a, b in zip(notes, notes[1:]):
            assert a["onset"] + a["duration"] <= b["onset"] + 1e-9  # no overlap
        assert notes[0]["onset"] >= 0 and notes[-1]["onset"] + notes[-1]["duration"] <= 2.0 + 1e-9
        for n in notes:
            low = 110.0 * 2 ** (4 * n["class"] / 12)
            assert low <= n["f0"] < low * 2 ** (4 / 12)
            assert 0.15 <= n["duration"] <= 0.5


def test_every_class_occurs(scenes):
    assert (scenes.y.sum(axis=0) > 0).all()


@pytest.mark.parametrize("seed", range(5))
def test_a_note_sounds_at_its_fundamental(seed):
    data = make_note_scenes(1, max_notes=1, snr_db=(40.0, 40.0), note_seconds=(0.5, 0.5), random_state=seed)
    note = data.notes[0][0]
    start = int(note["onset"] * data.sample_rate)
    segment = data.X[0, start:start + int(0.5 * data.sample_rate)]
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), n=1 << 16))
    freqs = np.fft.rfftfreq(1 << 16, 1 / data.sample_rate)
    peak = freqs[np.argmax(spectrum * (freqs > 50))]
    assert peak == pytest.approx(note["f0"], rel=0.03)  # the fundamental is the loudest partial; vibrato <= 30 cents


def test_noise_only_between_notes_is_quieter_than_notes():
    data = make_note_scenes(1, max_notes=1, snr_db=(20.0, 20.0), random_state=3)
    note = data.notes[0][0]
    start, stop = (int(t * data.sample_rate) for t in (note["onset"], note["onset"] + note["duration"]))
    inside = np.sqrt(np.mean(data.X[0, start:stop] ** 2))
    outside = np.sqrt(np.mean(np.concatenate([data.X[0, :start], data.X[0, stop:]]) ** 2))
    assert inside > 5 * outside


def test_reproducible_and_seeded():
    a, b = make_note_scenes(3, random_state=1), make_note_scenes(3, random_state=1)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, make_note_scenes(3, random_state=2).X)


def test_single_label():
    data = make_note_scenes(6, multilabel=False, random_state=0)
    assert data.y.shape == (6,)
    assert [len(n) for n in data.notes] == [1] * 6
    assert [n[0]["class"] for n in data.notes] == list(data.y)


@pytest.mark.parametrize("kwargs, message", [
    ({"sample_rate": 1000}, "Nyquist frequency 500 Hz of sample_rate=1000"),
    ({"clip_seconds": 1.0}, "max_notes=3 notes of up to 0.5 s do not fit in clip_seconds=1.0"),
    ({"max_notes": 9}, r"max_notes must be in \[1, n_classes=8\], got 9"),
    ({"note_seconds": (0.5, 0.2)}, "note_seconds must satisfy 0 < low <= high"),
    ({"n_classes": 0}, "n_classes must be a positive integer, got 0"),
    ({"snr_db": (10.0, 0.0)}, "snr_db must satisfy low <= high"),
])
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_note_scenes(2, **kwargs)
