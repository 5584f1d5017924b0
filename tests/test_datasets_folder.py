"""load_audio_folder: CSV and sub-folder layouts, formats, and every error case."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from skprobe.datasets import load_audio_folder


def _write(path, seconds=0.5, sr=16000, channels=1, dtype="int16", value=0.5):
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * sr)
    if dtype == "int16":
        data = np.full((n, channels), int(value * 32768), np.int16)
    else:
        data = np.full((n, channels), value, np.float32)
    subtype = ("PCM_16" if dtype == "int16" else "FLOAT") if path.suffix == ".wav" else None
    sf.write(path, data if channels > 1 else data[:, 0], sr, subtype=subtype)


@pytest.fixture
def folder(tmp_path):
    _write(tmp_path / "a.wav", 1.0, 16000)                                 # mono int16
    _write(tmp_path / "sub" / "b.wav", 0.5, 44100, channels=2, dtype="float32", value=0.25)  # stereo float
    _write(tmp_path / "c.flac", 0.25, 8000)
    (tmp_path / "labels.csv").write_text("file,labels\na.wav,dog;bark\nsub/b.wav,cat\nc.flac, bark ; bird \n")
    return tmp_path


def test_multi_label_csv(folder):
    data = load_audio_folder(folder)
    assert data.class_names == ["bark", "bird", "cat", "dog"]
    assert data.files == ["a.wav", "sub/b.wav", "c.flac"]
    np.testing.assert_array_equal(data.Y, [[1, 0, 0, 1], [0, 0, 1, 0], [1, 1, 0, 0]])
    assert data.Y.dtype == np.int64
    assert data.y is None  # a.wav has two labels
    assert data.sample_rate == 16000
    assert [w.shape[0] for w in data.waveforms] == [16000, 8000, 4000]
    assert all(w.dtype == np.float32 for w in data.waveforms)
    np.testing.assert_allclose(data.waveforms[0], 0.5, atol=1e-4)  # int16 scaled by 32768
    np.testing.assert_allclose(data.waveforms[1][200:-200], 0.25, atol=1e-3)  # stereo averaged, resampled


def test_single_label_gives_y_and_resamples(tmp_path):
    for i in range(3):
        _write(tmp_path / f"{i}.wav", 0.5, 22050)
    (tmp_path / "meta.csv").write_text("filename,fold,category\n0.wav,1,dog\n1.wav,1,cat\n2.wav,2,dog\n")
    data = load_audio_folder(tmp_path, tmp_path / "meta.csv", sample_rate=8000)
    assert data.y.tolist() == ["dog", "cat", "dog"]
    np.testing.assert_array_equal(data.Y[np.arange(3), [data.class_names.index(c) for c in data.y]], 1)
    assert [w.shape[0] for w in data.waveforms] == [4000] * 3


def test_explicit_columns_tab_delimiter_comma_separator_and_extensionless_names(tmp_path):
    _write(tmp_path / "audio" / "64760.wav")
    _write(tmp_path / "audio" / "16399.wav")
    csv_path = tmp_path / "dev.tsv"
    csv_path.write_text("fname\tmids\ttags\n64760\tm1\tGuitar,Music\n16399\tm2\tSpeech\n")
    data = load_audio_folder(tmp_path / "audio", csv_path, file_column="fname", label_column="tags",
                             separator=",")
    assert data.files == ["64760.wav", "16399.wav"]
    assert data.class_names == ["Guitar", "Music", "Speech"]
    np.testing.assert_array_equal(data.Y, [[1, 1, 0], [0, 0, 1]])


def test_empty_label_cell_is_a_negative_clip(tmp_path):
    for name in "abc":
        _write(tmp_path / f"{name}.wav")
    (tmp_path / "labels.csv").write_text("file,labels\na.wav,dog\nb.wav,\nc.wav,cat\n")
    data = load_audio_folder(tmp_path)
    np.testing.assert_array_equal(data.Y, [[0, 1], [0, 0], [1, 0]])
    assert data.y is None


def test_subfolder_layout_and_clip_seconds(tmp_path):
    _write(tmp_path / "dog" / "1.wav", 0.3)
    _write(tmp_path / "dog" / "deep" / "2.ogg", 0.3)
    _write(tmp_path / "cat" / "3.flac", 2.0)
    (tmp_path / "cat" / "notes.txt").write_text("not audio")
    data = load_audio_folder(tmp_path, clip_seconds=1.0)
    assert data.files == ["cat/3.flac", "dog/1.wav", "dog/deep/2.ogg"]
    assert data.y.tolist() == ["cat", "dog", "dog"]
    assert {w.shape for w in data.waveforms} == {(16000,)}
    assert np.all(data.waveforms[1][5000:] == 0)  # zero-padded


def test_progress_bar_when_verbose(folder, capsys):
    load_audio_folder(folder, verbose=True)
    assert "reading audio" in capsys.readouterr().err


# -- errors ---------------------------------------------------------------------------------------

def test_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="folder .*nope does not exist"):
        load_audio_folder(tmp_path / "nope")


def test_missing_csv(folder):
    with pytest.raises(ValueError, match="labels_csv .*other.csv does not exist"):
        load_audio_folder(folder, folder / "other.csv")


def test_csv_names_missing_files_lists_the_first_few(folder):
    rows = "".join(f"gone{i}.wav,dog\n" for i in range(7))
    (folder / "labels.csv").write_text("file,labels\na.wav,cat\n" + rows)
    with pytest.raises(ValueError, match=r"names 7 file\(s\) not found.*'gone0.wav'.*'gone4.wav'.* \.\.\.") as err:
        load_audio_folder(folder)
    assert "gone5.wav" not in str(err.value)


def test_no_label_column(folder):
    (folder / "labels.csv").write_text("file,fold,split\na.wav,1,train\nc.flac,2,test\n")
    with pytest.raises(ValueError, match=r"no label column .*\['file', 'fold', 'split'\].*label_column="):
        load_audio_folder(folder)


def test_only_a_file_column(folder):
    (folder / "labels.csv").write_text("file\na.wav\n")
    with pytest.raises(ValueError, match="no label column .* only the column"):
        load_audio_folder(folder)


def test_unknown_column_names(folder):
    with pytest.raises(ValueError, match=r"label_column='tags' is not a column .*\['file', 'labels'\]"):
        load_audio_folder(folder, label_column="tags")
    with pytest.raises(ValueError, match="file_column='path' is not a column"):
        load_audio_folder(folder, file_column="path")


def test_one_class_only(folder):
    (folder / "labels.csv").write_text("file,labels\na.wav,dog\nc.flac,dog\n")
    with pytest.raises(ValueError, match=r"holds 1 class\(es\) \['dog'\]; at least two"):
        load_audio_folder(folder)


def test_unreadable_audio_is_named(folder):
    (folder / "c.flac").write_bytes(b"this is not audio")
    with pytest.raises(ValueError, match="cannot read audio file .*c.flac"):
        load_audio_folder(folder)


def test_duplicate_rows(folder):
    (folder / "labels.csv").write_text("file,labels\na.wav,dog\nc.flac,cat\na.wav,bird\n")
    with pytest.raises(ValueError, match="'a.wav' listed twice \\(lines 2 and 4\\)"):
        load_audio_folder(folder)


def test_short_row_and_empty_csv(folder):
    (folder / "labels.csv").write_text("file,labels\na.wav\n")
    with pytest.raises(ValueError, match="line 2: expected at least 2 fields"):
        load_audio_folder(folder)
    (folder / "labels.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_audio_folder(folder)
    (folder / "labels.csv").write_text("file,labels\n")
    with pytest.raises(ValueError, match="no rows"):
        load_audio_folder(folder)


def test_no_csv_and_no_class_folders(tmp_path):
    _write(tmp_path / "a.wav")
    with pytest.raises(ValueError, match="no labels.csv and no class sub-folders"):
        load_audio_folder(tmp_path)
