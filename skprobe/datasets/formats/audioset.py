"""AudioSet's segment lists over a folder of the user's own clips.

Google publishes the labels, not the audio: ``class_labels_indices.csv`` and
one CSV per subset, which a user pairs with the clips they downloaded::

    class_labels_indices.csv        index,mid,display_name
    balanced_train_segments.csv     # comment lines, then YTID, start_seconds, end_seconds, positive_labels
    unbalanced_train_segments.csv
    eval_segments.csv

A segment row reads ``--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"``
(fields separated by comma and space, the labels quoted). Clips are found
anywhere below the audio folder, named by YouTube id with or without the
start time: ``--PJHxphWEs.wav``, ``Y--PJHxphWEs.flac``,
``--PJHxphWEs_30.000.wav``, ``--PJHxphWEs_30000_40000.wav``. Clips that
cannot be found (taken down, not downloaded) are counted, not fatal.
"""

from __future__ import annotations

import os
import re
from array import array
from pathlib import Path

import numpy as np

from ..folder import AUDIO_EXTENSIONS
from ..lazy import AudioDataset
from ._common import FormatError, check_header, csv_rows, parse_seconds, require

__all__ = ["read_audioset", "AUDIOSET_SUBSETS", "AUDIOSET_SIZES"]

#: Subset name -> the segment list Google publishes for it.
AUDIOSET_SUBSETS = {
    "balanced_train": "balanced_train_segments.csv",
    "unbalanced_train": "unbalanced_train_segments.csv",
    "eval": "eval_segments.csv",
}
#: Segments listed in the published CSVs (v1), and the number of classes.
AUDIOSET_SIZES = {"balanced_train": 22160, "unbalanced_train": 2041789, "eval": 20383, "classes": 527}

_YTID = re.compile(r"[A-Za-z0-9_-]{11}")
_TIMES = re.compile(r"(\d+(?:\.\d+)?)(?:[_-](\d+(?:\.\d+)?))?")
_DECLARED = re.compile(r"num_segs=(\d+)")


def read_audioset(root: str | os.PathLike, subsets=("balanced_train", "eval"), *,
                  audio_folder: str | os.PathLike | None = None) -> AudioDataset:
    """Read AudioSet's segment lists and pair them with the clips on disk; decodes nothing.

    Parameters
    ----------
    root : path-like
        Folder holding ``class_labels_indices.csv`` and the segment CSVs
        (directly or in ``root/metadata/``).
    subsets : sequence of str, default=("balanced_train", "eval")
        Which of ``"balanced_train"``, ``"unbalanced_train"``, ``"eval"`` to read.
    audio_folder : path-like, optional
        Folder searched (recursively) for the clips; default ``root``.

    Returns
    -------
    AudioDataset
        Multi-label over the 527 classes (display names, in index order);
        ``split`` is the subset of each clip found; ``missing`` counts the
        listed segments without a clip, per subset.

    Raises
    ------
    FormatError
        Naming the file and line of a missing column, a row that is not
        ``YTID, start, end, "labels"``, an unknown label, a segment listed
        twice, a segment count that differs from the one the CSV declares,
        two files for one clip, or a subset none of whose clips were found.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "class_labels_indices.csv").write_text(
    ...     'index,mid,display_name\\n0,/m/09x0r,"Speech"\\n1,/m/0jbk,"Animal"\\n')
    >>> for name, ytid in (("balanced_train", "--PJHxphWEs"), ("eval", "-0RWZT-miFs")):
    ...     _ = (root / f"{name}_segments.csv").write_text(
    ...         "# Segments csv created Sun Mar  5 10:54:31 2017\\n# num_ytids=2, num_segs=2, num_unique_labels=2\\n"
    ...         f'# YTID, start_seconds, end_seconds, positive_labels\\n{ytid}, 30.000, 40.000, "/m/09x0r,/m/0jbk"\\n'
    ...         f'{name[:3]}zzzzzzzz, 0.000, 10.000, "/m/0jbk"\\n')
    >>> _ = (root / "--PJHxphWEs.wav").write_bytes(b""); _ = (root / "Y-0RWZT-miFs_30.000.flac").write_bytes(b"")
    >>> data = read_audioset(root)
    >>> data.files, data.missing
    (['--PJHxphWEs.wav', 'Y-0RWZT-miFs_30.000.flac'], {'balanced_train': 1, 'eval': 1})
    """
    root = Path(root).expanduser()
    subsets = (subsets,) if isinstance(subsets, str) else tuple(subsets)
    unknown = [s for s in subsets if s not in AUDIOSET_SUBSETS]
    if unknown or not subsets:
        raise ValueError(f"subsets must name some of {list(AUDIOSET_SUBSETS)}, got {list(subsets)}")
    meta = root if (root / "class_labels_indices.csv").exists() or not (root / "metadata").is_dir() else (
        root / "metadata")
    names, mid_index = _class_labels(require(meta / "class_labels_indices.csv",
                                             "AudioSet's class list (index,mid,display_name)"))
    audio_root = Path(audio_folder).expanduser() if audio_folder is not None else root
    if not audio_root.is_dir():
        raise FormatError(f"{audio_root}: audio folder not found")
    clips = _index_clips(audio_root)
    files: list[str] = []
    splits: list[str] = []
    flat, offsets = array("H"), array("q", [0])
    missing: dict[str, int] = {}
    examples: list[str] = []
    seen: dict[str, tuple[Path, int]] = {}
    for subset in subsets:
        path = require(meta / AUDIOSET_SUBSETS[subset], f"AudioSet's {subset} segment list")
        comments: list[str] = []
        rows = csv_rows(path, skipinitialspace=True, comment="#", comments=comments)
        found = listed = 0
        for line, row in rows:
            if len(row) != 4:
                raise FormatError(f"{path} line {line}: expected 4 fields 'YTID, start_seconds, end_seconds, "
                                  f"\"labels\"', got {len(row)}: {row}")
            ytid, start, end, labels = row
            if not _YTID.fullmatch(ytid):
                raise FormatError(f"{path} line {line}: {ytid!r} is not a YouTube id (11 characters A-Z a-z 0-9 _ -)")
            if ytid in seen:
                where, other = seen[ytid]
                raise FormatError(f"{path} line {line}: segment {ytid} is listed twice (also {where.name} line {other})")
            seen[ytid] = (path, line)
            start_s = parse_seconds(start, path, line, "start_seconds")
            if parse_seconds(end, path, line, "end_seconds") < start_s:
                raise FormatError(f"{path} line {line}: end_seconds {end} is before start_seconds {start}")
            mids = [m.strip() for m in labels.split(",") if m.strip()]
            if not mids:
                raise FormatError(f"{path} line {line}: segment {ytid} has no label")
            for mid in mids:
                if mid not in mid_index:
                    raise FormatError(f"{path} line {line}: label {mid!r} is not in {meta / 'class_labels_indices.csv'}")
            listed += 1
            rel = _match(clips.get(ytid), start_s, ytid)
            if rel is None:
                missing[subset] = missing.get(subset, 0) + 1
                if len(examples) < 5:
                    examples.append(ytid)
                continue
            found += 1
            files.append(rel)
            splits.append(subset)
            flat.extend(mid_index[m] for m in mids)
            offsets.append(len(flat))
        declared = [int(m.group(1)) for c in comments for m in [_DECLARED.search(c)] if m]
        if declared and declared[0] != listed:
            raise FormatError(f"{path}: its header declares num_segs={declared[0]} but it lists {listed} segments "
                              "(a truncated or edited copy?)")
        if listed == 0:
            raise FormatError(f"{path}: no segments listed")
        if found == 0:
            raise FormatError(f"{path}: none of its {listed} clips was found under {audio_root}; name the files "
                              f"<YTID>.wav, Y<YTID>.wav or <YTID>_<start seconds>[_<end>].wav (any audio "
                              f"extension), e.g. {examples[0] if examples else 'ytid'}.wav")
        missing.setdefault(subset, 0)
    Y = np.zeros((len(files), len(names)), dtype=np.int8)
    counts = np.diff(np.frombuffer(offsets, dtype=np.int64))
    Y[np.repeat(np.arange(len(files)), counts), np.frombuffer(flat, dtype=np.uint16)] = 1
    n_missing = sum(missing.values())
    return AudioDataset(audio_root, files, Y, names, np.array(splits), name="audioset", multilabel=True,
                        missing=missing, missing_examples=examples,
                        description=f"AudioSet {'+'.join(subsets)} from {meta}: {len(files)} clips found, "
                                    f"{n_missing} listed but missing")


def _class_labels(path: Path) -> tuple[list[str], dict[str, int]]:
    rows = csv_rows(path)
    header_line, header = next(rows, (1, []))
    col = check_header(path, header_line, header, ("index", "mid", "display_name"))
    names: list[str] = []
    mids: dict[str, int] = {}
    for line, row in rows:
        if len(row) < 3:
            raise FormatError(f"{path} line {line}: expected 3 fields index,mid,display_name, got {row}")
        if row[col["index"]] != str(len(names)):
            raise FormatError(f"{path} line {line}: index {row[col['index']]!r}, expected {len(names)}")
        mid = row[col["mid"]]
        if mid in mids:
            raise FormatError(f"{path} line {line}: mid {mid} appears twice")
        mids[mid] = len(names)
        names.append(row[col["display_name"]])
    if not names:
        raise FormatError(f"{path}: no classes listed")
    return names, mids


def _index_clips(folder: Path) -> dict[str, list[tuple[float | None, str]]]:
    """YouTube id -> [(start time or None, path relative to folder)] of every audio file below ``folder``."""
    clips: dict[str, list[tuple[float | None, str]]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, folder)
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in AUDIO_EXTENSIONS:
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            for ytid, start in _parse_stem(stem):
                clips.setdefault(ytid, []).append((start, rel))
    return clips


def _parse_stem(stem: str) -> list[tuple[str, float | None]]:
    """Every (YouTube id, start) a file stem can stand for."""
    out = []
    for body in (stem, stem[1:] if stem.startswith("Y") else None):
        if body is None:
            continue
        if len(body) == 11:
            out.append((body, None))
        elif len(body) > 12 and body[11] == "_" and (m := _TIMES.fullmatch(body[12:])):
            out.append((body[:11], float(m.group(1))))
    return out


def _match(candidates: list[tuple[float | None, str]] | None, start: float, ytid: str) -> str | None:
    """The one file of segment (ytid, start): a start in the name is seconds or milliseconds."""
    if not candidates:
        return None
    hits = [rel for s, rel in candidates if s is None or abs(s - start) < 1e-3 or abs(s / 1000 - start) < 1e-3]
    if len(hits) > 1:
        raise FormatError(f"two files for AudioSet clip {ytid}: {hits[0]} and {hits[1]}; keep one")
    return hits[0] if hits else None
