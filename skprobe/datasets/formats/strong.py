"""Strongly labelled event sets: the DCASE / DESED table and URBAN-SED's layout.

The DCASE convention (DESED, the DCASE task 4 baselines) is one tab-separated
table per split, with a header::

    filename	onset	offset	event_label
    soundscape_0.wav	0.512	2.430	Dog
    soundscape_0.wav	5.000	9.871	Speech
    soundscape_1.wav

(a file whose onset, offset and label are empty holds no event). URBAN-SED
ships one headerless ``onset offset label`` file per soundscape instead::

    URBAN-SED_v2.0.0/audio/{train,validate,test}/soundscape_train_bimodal0.wav
    URBAN-SED_v2.0.0/annotations/{train,validate,test}/soundscape_train_bimodal0.txt

Both give clip labels (every class with an event in the clip) and the events
themselves (:class:`~skprobe.datasets.lazy.Event`), for detection scores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..lazy import AudioDataset, Event
from ._common import FormatError, check_header, csv_rows, files_in, multi_hot, parse_seconds, require

__all__ = ["read_strong_labels", "read_urban_sed", "URBAN_SED_CLASSES", "URBAN_SED_SIZES"]

#: URBAN-SED's classes (those of UrbanSound8K).
URBAN_SED_CLASSES = ("air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling", "engine_idling",
                     "gun_shot", "jackhammer", "siren", "street_music")
#: Soundscapes per split of the published set.
URBAN_SED_SIZES = {"train": 6000, "validate": 2000, "test": 2000, "classes": 10}

_TSV_COLUMNS = ("filename", "onset", "offset", "event_label")
_EMPTY = {"", "nan", "NaN", "None"}


def read_strong_labels(tsv: str | os.PathLike, audio_folder: str | os.PathLike, *, split: str = "test",
                       name: str = "events", classes: Sequence[str] | None = None) -> AudioDataset:
    """Read a DCASE-style event table (``filename onset offset event_label``) over an audio folder.

    Parameters
    ----------
    tsv : path-like
        Tab-separated table with a header naming at least ``filename``,
        ``onset``, ``offset`` and ``event_label``; one row per event, several
        rows per file. A row whose onset, offset and label are empty lists a
        file without events.
    audio_folder : path-like
        Folder of the files the table names (by name relative to it).
    split : str, default="test"
        Split name given to every clip.
    name : str, default="events"
        Name of the data set.
    classes : sequence of str, optional
        The class list: a label outside it is an error. Default: the labels
        found, sorted.

    Returns
    -------
    AudioDataset
        Multi-label clip labels; ``events`` holds every annotated event.

    Raises
    ------
    FormatError
        Naming the file and line of a missing column, an onset or offset that
        is not a number or an offset before its onset, an unknown label, or
        an audio file that is not there.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "a.wav").write_bytes(b""); _ = (root / "b.wav").write_bytes(b"")
    >>> _ = (root / "public.tsv").write_text("filename\\tonset\\toffset\\tevent_label\\n"
    ...                                      "a.wav\\t0.5\\t2.0\\tDog\\na.wav\\t3.0\\t4.5\\tSpeech\\nb.wav\\t\\t\\t\\n")
    >>> data = read_strong_labels(root / "public.tsv", root)
    >>> data.class_names, data.Y.tolist()
    (['Dog', 'Speech'], [[1, 1], [0, 0]])
    >>> data.events[0]
    Event(filename='a.wav', onset=0.5, offset=2.0, event_label='Dog')
    """
    tsv, folder = Path(tsv).expanduser(), Path(audio_folder).expanduser()
    clips, events = _read_tsv(require(tsv, "a tab-separated event table (filename onset offset event_label)"),
                              folder, "", classes)
    return _assemble(folder, [(split, clips, events)], classes, name,
                     f"{name} from {tsv} over {folder}")


def read_urban_sed(root: str | os.PathLike) -> AudioDataset:
    """Read URBAN-SED (train / validate / test) from its unpacked folder; decodes nothing.

    Parameters
    ----------
    root : path-like
        ``URBAN-SED_v2.0.0/`` (or its parent): ``audio/<split>/*.wav`` with
        either the published ``annotations/<split>/<clip>.txt`` (headerless
        ``onset offset label``) or DCASE-style tables ``metadata/<split>.tsv``.

    Returns
    -------
    AudioDataset
        Multi-label over the ten classes; ``split`` is ``"train"``,
        ``"validate"`` or ``"test"``; ``events`` holds every annotated event.

    Raises
    ------
    FormatError
        Naming the file and line of a malformed row, a label outside the ten
        classes, a soundscape without an annotation file or an annotation
        without its soundscape.
    """
    root = Path(root).expanduser()
    if not (root / "audio").is_dir():
        inner = sorted(root.glob("URBAN-SED*"))
        if inner and (inner[-1] / "audio").is_dir():
            root = inner[-1]
    if not (root / "audio").is_dir():
        raise FormatError(f"{root}: no audio/ folder; expected URBAN-SED's layout audio/<split>/*.wav with "
                          "annotations/<split>/*.txt (or metadata/<split>.tsv)")
    parts = []
    for split in ("train", "validate", "test"):
        audio = root / "audio" / split
        if not audio.is_dir():
            raise FormatError(f"{audio}: folder not found; URBAN-SED has audio/train, audio/validate, audio/test")
        tsv = root / "metadata" / f"{split}.tsv"
        if (root / "annotations").is_dir():
            clips, events = _read_annotation_files(root / "annotations" / split, audio, f"audio/{split}/",
                                                   URBAN_SED_CLASSES)
        elif tsv.is_file():
            clips, events = _read_tsv(tsv, audio, f"audio/{split}/", URBAN_SED_CLASSES)
        else:
            raise FormatError(f"{root}: neither annotations/{split}/ (URBAN-SED's .txt files) nor {tsv.name} in "
                              "metadata/ (a DCASE-style table)")
        parts.append((split, clips, events))
    return _assemble(root, parts, URBAN_SED_CLASSES, "urban-sed", f"URBAN-SED from {root}")


def _read_tsv(path: Path, folder: Path, prefix: str, classes) -> tuple[dict, list]:
    """Clips (relative path -> labels) and events of one DCASE-style table."""
    present = files_in(folder)
    rows = csv_rows(path, delimiter="\t")
    header_line, header = next(rows, (1, []))
    if len(header) == 1 and "," in header[0]:
        raise FormatError(f"{path} line {header_line}: the header {header[0]!r} is comma-separated; DCASE event "
                          "tables are tab-separated (filename<TAB>onset<TAB>offset<TAB>event_label)")
    col = check_header(path, header_line, header, _TSV_COLUMNS)
    known = set(classes) if classes is not None else None
    clips: dict[str, set[str]] = {}
    events: list[Event] = []
    for line, row in rows:
        row = row + [""] * (len(header) - len(row))
        fname, onset, offset, label = (row[col[c]] for c in _TSV_COLUMNS)
        if not fname:
            raise FormatError(f"{path} line {line}: empty filename")
        if fname not in present:
            raise FormatError(f"{path} line {line}: audio file {folder / fname} not found")
        labels = clips.setdefault(prefix + fname, set())
        if onset in _EMPTY and offset in _EMPTY and label in _EMPTY:
            continue  # a file without events
        events.append(_event(path, line, prefix + fname, onset, offset, label, known))
        labels.add(label)
    if not clips:
        raise FormatError(f"{path}: no rows below the header")
    return clips, events


def _read_annotation_files(annotations: Path, audio: Path, prefix: str, classes) -> tuple[dict, list]:
    """URBAN-SED's per-soundscape ``onset offset label`` files, paired with the audio by name."""
    if not annotations.is_dir():
        raise FormatError(f"{annotations}: folder not found; URBAN-SED has one annotation .txt per soundscape there")
    wavs = sorted(n for n in files_in(audio) if n.lower().endswith(".wav"))
    txts = {n[:-4] for n in files_in(annotations) if n.endswith(".txt")}
    stems = {n[:-4] for n in wavs}
    orphan = sorted(txts - stems)
    if orphan:
        raise FormatError(f"{annotations / (orphan[0] + '.txt')}: no soundscape {audio / (orphan[0] + '.wav')} for "
                          f"this annotation ({len(orphan)} such file(s))")
    if not wavs:
        raise FormatError(f"{audio}: no .wav soundscapes")
    known = set(classes)
    clips: dict[str, set[str]] = {}
    events: list[Event] = []
    for wav in wavs:
        txt = annotations / (wav[:-4] + ".txt")
        if wav[:-4] not in txts:
            raise FormatError(f"{txt}: not found; every soundscape in {audio} needs its annotation file")
        labels = clips.setdefault(prefix + wav, set())
        for line, row in csv_rows(txt, delimiter="\t"):
            if len(row) != 3:
                raise FormatError(f"{txt} line {line}: expected 3 tab-separated fields onset, offset, label "
                                  f"(no header), got {row}")
            events.append(_event(txt, line, prefix + wav, *row, known))
            labels.add(row[2])
    return clips, events


def _event(path: Path, line: int, fname: str, onset: str, offset: str, label: str, known) -> Event:
    start = parse_seconds(onset, path, line, "onset")
    stop = parse_seconds(offset, path, line, "offset")
    if stop < start:
        raise FormatError(f"{path} line {line}: offset {offset} is before onset {onset}")
    if not label:
        raise FormatError(f"{path} line {line}: event without a label")
    if known is not None and label not in known:
        raise FormatError(f"{path} line {line}: label {label!r} is not one of the classes {sorted(known)}")
    return Event(fname, start, stop, label)


def _assemble(root: Path, parts, classes, name: str, description: str) -> AudioDataset:
    class_names = list(classes) if classes is not None else sorted(
        {label for _, clips, _ in parts for labels in clips.values() for label in labels})
    index = {c: j for j, c in enumerate(class_names)}
    files, labels, splits, events = [], [], [], []
    for split, clips, part_events in parts:
        for fname in clips:
            files.append(fname)
            labels.append([index[c] for c in clips[fname]])
            splits.append(split)
        events.extend(part_events)
    return AudioDataset(root, files, multi_hot(labels, len(class_names)), class_names, np.array(splits), name=name,
                        multilabel=True, events=events, description=f"{description} ({len(files)} clips, "
                                                                     f"{len(events)} events)")
