"""Readers of published data sets on small copies in their exact formats: splits, labels, events, errors.

The fixtures (tests/published_fixtures.py) write the metadata as the
publishers ship it; each error case edits one file the way a damaged or
hand-edited copy would be, and the reader must name that file and line in a
one-line message.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
from published_fixtures import (
    AUDIOSET_CLASSES,
    ESC_CLASSES,
    FSD_VOCABULARY,
    URBAN_CLASSES,
    WORDS,
    make_audioset,
    make_esc50,
    make_fsd50k,
    make_speech_commands,
    make_urban_sed,
    write_clip,
)

from skprobe.datasets import (
    AudioDataset,
    Event,
    FormatError,
    read_audioset,
    read_esc50,
    read_fsd50k,
    read_speech_commands,
    read_strong_labels,
    read_urban_sed,
    scan_audio_folder,
)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """One pristine copy of every set; tests that damage a file work on a copy."""
    root = tmp_path_factory.mktemp("published")
    sizes = {}
    for name, make in (("esc50", make_esc50), ("fsd50k", make_fsd50k), ("audioset", make_audioset),
                       ("urban-sed", make_urban_sed), ("speech-commands", make_speech_commands)):
        (root / name).mkdir()
        sizes[name] = make(root / name)
    (root / "urban-tsv").mkdir()
    make_urban_sed(root / "urban-tsv", tables=True)
    return root, sizes


@pytest.fixture
def copy(published, tmp_path):
    def make(name):
        shutil.copytree(published[0] / name, tmp_path / name)
        return tmp_path / name
    return make


@pytest.fixture
def no_decoding(monkeypatch):
    """Any attempt to decode audio fails the test: readers list files, they never read them."""
    def refuse(*args, **kwargs):
        raise AssertionError("a reader decoded audio")

    for name in ("read", "info", "SoundFile", "blocks"):
        monkeypatch.setattr(sf, name, refuse)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


# -- the official split sizes and labels -------------------------------------------------------------------


def test_esc50(published, no_decoding):
    root, sizes = published
    data = read_esc50(root / "esc50")  # the parent of ESC-50-master/ works too
    assert isinstance(data, AudioDataset) and not data.multilabel
    assert data.split_sizes() == sizes["esc50"]
    assert data.class_names == ESC_CLASSES
    assert data.Y.sum(axis=1).tolist() == [1] * len(data)
    assert data.files[0] == "audio/1-100000-A-0.wav" and data.y[:3].tolist() == [0, 1, 2]
    assert data.paths([0])[0] == str(root / "esc50" / "ESC-50-master" / "audio" / "1-100000-A-0.wav")
    assert data.groups.tolist() == [f.split("-")[1] for f in data.files]  # src_file, the source recording


def test_esc50_takes_of_one_recording_are_one_group(tmp_path):
    make_esc50(tmp_path, per_class_and_fold=2)
    data = read_esc50(tmp_path)
    names, counts = np.unique(data.groups, return_counts=True)
    assert len(names) == len(data) // 2 and set(counts) == {2}
    for group in names[:5]:
        clips = np.flatnonzero(data.groups == group)
        assert len(set(data.split[clips])) == 1 and len(set(data.y[clips])) == 1
    subset = data.subset(np.array([3, 0]))
    assert subset.groups.tolist() == [data.groups[3], data.groups[0]]


def test_esc50_without_the_source_column_has_no_groups(copy):
    root = copy("esc50") / "ESC-50-master"
    path = root / "meta" / "esc50.csv"
    rows = [line.split(",") for line in path.read_text().splitlines()]
    path.write_text("\n".join(",".join(r[:5]) for r in rows) + "\n")
    assert read_esc50(root).groups is None


def test_fsd50k_quoted_label_lists(published, no_decoding):
    root, sizes = published
    data = read_fsd50k(root / "fsd50k")
    assert data.split_sizes() == sizes["fsd50k"]
    assert data.class_names == [name for name, _ in FSD_VOCABULARY] and data.multilabel
    assert data.Y.sum(axis=1).max() == 2  # the fixture's two-label rows are quoted "Bark,Meow"
    dev = (root / "fsd50k" / "FSD50K.ground_truth" / "dev.csv").read_text()
    assert '"' in dev
    assert all(f.startswith(("FSD50K.dev_audio/", "FSD50K.eval_audio/")) for f in data.files)
    assert set(data.split[np.char.startswith(data.files, "FSD50K.eval_audio/")]) == {"eval"}


def test_audioset_counts_missing_clips_and_finds_every_naming(published, no_decoding):
    root, sizes = published
    data = read_audioset(root / "audioset", ("balanced_train", "eval", "unbalanced_train"))
    assert data.split_sizes() == sizes["audioset"]
    assert data.missing == {"balanced_train": 2, "eval": 1, "unbalanced_train": 1}
    assert len(data.missing_examples) == 4
    names = [f.rsplit("/", 1)[-1] for f in data.files]
    assert any(n.startswith("Y") and len(n) == 16 for n in names)  # Y<id>.wav
    assert any(n.endswith(".flac") for n in names)  # <id>_<start>.flac
    assert any(n.count("_") >= 2 and n.endswith("0.wav") for n in names)  # <id>_<ms>_<ms>.wav
    assert any(f.startswith("audio/audio_sub/") for f in data.files)  # found in a sub-folder
    assert data.class_names == [name for _, name in AUDIOSET_CLASSES]  # "Male speech, man speaking" unquoted
    assert "4 listed clips missing" in repr(data)
    twenty_k = read_audioset(root / "audioset")
    assert set(twenty_k.split_sizes()) == {"balanced_train", "eval"}


def test_urban_sed_events_from_annotation_files_and_from_tables(published, no_decoding):
    root, sizes = published
    txt = read_urban_sed(root / "urban-sed")
    tsv = read_urban_sed(root / "urban-tsv" / "URBAN-SED_v2.0.0")
    for data in (txt, tsv):
        assert data.split_sizes() == sizes["urban-sed"]
        assert data.class_names[:2] == ["air_conditioner", "car_horn"] and len(data.class_names) == 10
        assert all(isinstance(e, Event) and e.offset >= e.onset for e in data.events)
        for i in range(len(data)):  # clip labels are the classes of the clip's events
            labels = {e.event_label for e in data.events_of(i)}
            assert labels == {data.class_names[j] for j in np.flatnonzero(data.Y[i])}
    assert sorted(txt.files) == sorted(tsv.files)
    assert sorted(txt.events) == sorted(tsv.events)
    frame = txt.events_frame()
    assert list(frame.columns) == ["filename", "onset", "offset", "event_label"] and len(frame) == len(txt.events)
    test = txt.subset(txt.indices("test"))
    assert len(test) == 3 and {e.filename for e in test.events} <= set(test.files)
    assert set(URBAN_CLASSES) <= set(txt.class_names)


def test_dcase_table_with_a_clip_without_events(tmp_path, no_decoding):
    for name in ("a.wav", "b.wav", "c.wav"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "public.tsv").write_text("filename\tonset\toffset\tevent_label\n"
                                         "a.wav\t0.5\t2.0\tDog\na.wav\t3.0\t4.5\tSpeech\nb.wav\t\t\t\n"
                                         "c.wav\t1.0\t1.5\tDog\n")
    data = read_strong_labels(tmp_path / "public.tsv", tmp_path, split="eval", name="desed")
    assert data.Y.tolist() == [[1, 1], [0, 0], [1, 0]] and data.split.tolist() == ["eval"] * 3
    assert data.events_of(1) == [] and data.events_of(2) == [Event("c.wav", 1.0, 1.5, "Dog")]


def test_speech_commands(published, no_decoding):
    root, sizes = published
    data = read_speech_commands(root / "speech-commands")
    assert data.split_sizes() == {k: sizes["speech-commands"][k] for k in data.split_sizes()}
    assert sorted(data.split_sizes().items()) == sorted(sizes["speech-commands"].items())
    assert data.class_names == WORDS and not data.multilabel
    assert not any(f.startswith("_background_noise_") for f in data.files)
    assert data.groups.tolist() == [f.split("/")[1].split("_nohash_")[0] for f in data.files]  # the speakers


def test_scan_audio_folder_decodes_nothing(tmp_path, no_decoding):
    for i in range(3):
        (tmp_path / f"c{i}.wav").write_bytes(b"not audio: never opened")
    (tmp_path / "labels.csv").write_text("file,labels\nc0.wav,dog\nc1.wav,cat\nc2.wav,dog\n")
    data = scan_audio_folder(tmp_path)
    assert data.files == ["c0.wav", "c1.wav", "c2.wav"] and not data.multilabel and data.y.tolist() == [1, 0, 1]


# -- errors: the file and the line at fault, in one line ---------------------------------------------------


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, (old, text[:300])
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("edit, file, line, message", [
    (lambda r: _edit(r / "meta/esc50.csv", "filename,fold", "file_name,fold"), "esc50.csv", 1, "no column 'filename'"),
    (lambda r: _edit(r / "meta/esc50.csv", ",1,0,dog", ",6,0,dog"), "esc50.csv", 2, "fold '6'"),
    (lambda r: _edit(r / "meta/esc50.csv", ",1,1,rooster", ",1,0,rooster"), "esc50.csv", 3,
     "target 0 is category 'rooster'"),
    (lambda r: (r / "audio/1-100000-A-0.wav").unlink(), "esc50.csv", 2, "not found"),
    (lambda r: _edit(r / "meta/esc50.csv", "1-100010-A-1.wav", "1-100000-A-0.wav"), "esc50.csv", 3, "listed twice"),
])
def test_esc50_errors(copy, edit, file, line, message):
    root = copy("esc50") / "ESC-50-master"
    edit(root)
    with pytest.raises(FormatError) as exc:
        read_esc50(root)
    text = _one_line(exc)
    assert file in text and f"line {line}:" in text and message in text


@pytest.mark.parametrize("edit, file, line, message", [
    (lambda g: _edit(g / "dev.csv", "fname,labels,mids,split", "fname,labels,split"), "dev.csv", 1, "no column 'mids'"),
    (lambda g: _edit(g / "dev.csv", ",train\n", ",training\n"), "dev.csv", 2, "split 'training'"),
    (lambda g: _edit(g / "eval.csv", "Bark", "Barking"), "eval.csv", None, "not in"),
    (lambda g: _edit(g / "vocabulary.csv", "0,Bark", "index,label,mid\n0,Bark"), "vocabulary.csv", 1, "no header"),
    (lambda g: _edit(g / "vocabulary.csv", "1,Meow", "2,Meow"), "vocabulary.csv", 2, "expected 1"),
    (lambda g: (g / "eval.csv").unlink(), "eval.csv", None, "not found"),
    (lambda g: (g.parent / "FSD50K.eval_audio" / "1011.wav").unlink(), "eval.csv", 2, "1011.wav not found"),
    (lambda g: _edit(g / "dev.csv", '"/m/05tny_,', '"/m/09x0r,'), "dev.csv", None, "do not match the labels"),
])
def test_fsd50k_errors(copy, edit, file, line, message):
    root = copy("fsd50k")
    edit(root / "FSD50K.ground_truth")
    with pytest.raises(FormatError) as exc:
        read_fsd50k(root)
    text = _one_line(exc)
    assert file in text and message in text and (line is None or f"line {line}:" in text)


def test_fsd50k_error_names_the_line_of_an_unknown_label(copy):
    root = copy("fsd50k")
    _edit(root / "FSD50K.ground_truth" / "dev.csv", "1002,Meow,", "1002,Purr,")
    with pytest.raises(FormatError, match=r"dev\.csv line 4: label 'Purr' is not in .*vocabulary\.csv"):
        read_fsd50k(root)


@pytest.mark.parametrize("edit, file, line, message", [
    (lambda r: _edit(r / "class_labels_indices.csv", "index,mid,display_name", "index,display_name"),
     "class_labels_indices.csv", 1, "no column 'mid'"),
    (lambda r: _edit(r / "eval_segments.csv", ', "/m/', ', "/m/zzz,/m/'), "eval_segments.csv", 4, "'/m/zzz'"),
    (lambda r: _edit(r / "eval_segments.csv", ".000, ", ".000 "), "eval_segments.csv", 4, "expected 4 fields"),
    (lambda r: _edit(r / "balanced_train_segments.csv", "num_segs=8", "num_segs=9"), "balanced_train_segments.csv",
     None, "declares num_segs=9 but it lists 8"),
    (lambda r: (r / "eval_segments.csv").unlink(), "eval_segments.csv", None, "not found"),
])
def test_audioset_errors(copy, edit, file, line, message):
    root = copy("audioset")
    edit(root)
    with pytest.raises(FormatError) as exc:
        read_audioset(root)
    text = _one_line(exc)
    assert file in text and message in text and (line is None or f"line {line}:" in text)


def test_audioset_subset_with_no_clip_on_disk_and_two_files_for_one_clip(copy):
    root = copy("audioset")
    for path in (root / "audio").rglob("*"):
        if path.is_file():
            path.unlink()
    with pytest.raises(FormatError, match=r"balanced_train_segments\.csv: none of its 8 clips was found"):
        read_audioset(root)
    ytid = (root / "eval_segments.csv").read_text().splitlines()[3].split(",")[0]
    write_clip(root / "audio" / f"{ytid}.wav", 0)
    write_clip(root / "audio" / "more" / f"Y{ytid}.wav", 0)
    with pytest.raises(FormatError, match="two files for AudioSet clip"):
        read_audioset(root, "eval")


@pytest.mark.parametrize("tables", [False, True])
def test_urban_sed_errors(published, tmp_path, tables):
    name = "urban-tsv" if tables else "urban-sed"
    shutil.copytree(published[0] / name, tmp_path / name)
    root = tmp_path / name / "URBAN-SED_v2.0.0"
    if tables:
        path = root / "metadata" / "validate.tsv"
        lines = path.read_text().splitlines()
        lines[2] = "\t".join(lines[2].split("\t")[:3] + ["car_alarm"])
        path.write_text("\n".join(lines) + "\n")
        expected = r"validate\.tsv line 3: label 'car_alarm' is not one of the classes"
    else:
        path = sorted((root / "annotations" / "test").glob("*.txt"))[1]
        path.write_text(path.read_text() + "4.0\t3.5\tsiren\n")
        expected = rf"{path.name} line \d+: offset 3\.5 is before onset 4\.0"
    with pytest.raises(FormatError, match=expected) as exc:
        read_urban_sed(tmp_path / name)
    _one_line(exc)


def test_urban_sed_soundscape_without_annotation(copy):
    root = copy("urban-sed") / "URBAN-SED_v2.0.0"
    victim = sorted((root / "annotations" / "train").glob("*.txt"))[0]
    victim.unlink()
    with pytest.raises(FormatError, match=rf"{victim.name}: not found; every soundscape"):
        read_urban_sed(root)


@pytest.mark.parametrize("header, rows, message", [
    ("filename,onset,offset,event_label", [], "comma-separated"),
    ("filename\tonset\toffset", ["a.wav\t1\t2"], "no column 'event_label'"),
    ("filename\tonset\toffset\tevent_label", ["a.wav\tsoon\t2\tDog"], "line 2: onset 'soon' is not a number"),
    ("filename\tonset\toffset\tevent_label", ["a.wav\t1\t2\tDog", "z.wav\t1\t2\tDog"], "line 3: audio file"),
])
def test_dcase_table_errors(tmp_path, header, rows, message):
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "t.tsv").write_text("\n".join([header, *rows]) + "\n")
    with pytest.raises(FormatError) as exc:
        read_strong_labels(tmp_path / "t.tsv", tmp_path)
    text = _one_line(exc)
    assert "t.tsv" in text and message in text


@pytest.mark.parametrize("edit, message", [
    (lambda r: _edit(r / "testing_list.txt", "right/", "left/"), r"testing_list\.txt line 2: .*word folder 'left'"),
    (lambda r: _edit(r / "testing_list.txt", "no/", "no/sub/"), r"testing_list\.txt line 1: .* is not word/file"),
    (lambda r: (r / "validation_list.txt").write_text(
        (r / "validation_list.txt").read_text() + (r / "testing_list.txt").read_text().splitlines()[0] + "\n"),
     r"testing_list\.txt line 1: .* also listed in validation_list\.txt line 4"),
    (lambda r: (r / "yes" / "00000000_nohash_0.wav").unlink(), r"validation_list\.txt line 3: audio file .* not found"),
])
def test_speech_commands_errors(copy, edit, message):
    root = copy("speech-commands")
    edit(root)
    with pytest.raises(FormatError, match=message) as exc:
        read_speech_commands(root)
    _one_line(exc)


def test_latin1_metadata_names_the_line(copy):
    root = copy("esc50") / "ESC-50-master"
    path = root / "meta" / "esc50.csv"
    path.write_bytes(path.read_bytes().replace(b"rooster", b"r\xf6oster", 1))
    with pytest.raises(FormatError, match=r"esc50\.csv line 3: not UTF-8"):
        read_esc50(root)


def test_audio_dataset_checks_its_shapes_and_split_names():
    Y = np.eye(3, 2, dtype=np.int8)
    with pytest.raises(ValueError, match=r"Y must have shape \(n_files, n_classes\) = \(2, 2\)"):
        AudioDataset("r", ["a.wav", "b.wav"], Y, ["x", "y"], np.array(["train", "test"]))
    with pytest.raises(ValueError, match="one split name per file"):
        AudioDataset("r", ["a.wav", "b.wav", "c.wav"], Y, ["x", "y"], np.array(["train"]))
    data = AudioDataset("r", ["a.wav", "b.wav", "c.wav"], Y, ["x", "y"], np.array(["train", "train", "test"]))
    with pytest.raises(ValueError, match=r"has no split 'eval'; its splits: \['test', 'train'\]"):
        data.indices("eval")
    with pytest.raises(ValueError, match="multi-label"):
        data.y  # noqa: B018
    paths = data.paths([2, 0])
    assert len(paths) == 2 and list(paths) == ["r/c.wav", "r/a.wav"] and paths[1:][0] == "r/a.wav"
    with pytest.raises(ValueError, match="no event annotations"):
        data.events_frame()


def test_audio_dataset_load_decodes_one_clip(tmp_path):
    write_clip(tmp_path / "a.wav", 0, rate=44100)
    data = AudioDataset(tmp_path, ["a.wav"], np.ones((1, 1), np.int8), ["x"], np.array(["test"]))
    wav = data.load(0, sample_rate=16000)
    assert wav.dtype == np.float32 and wav.shape == (4000,)
