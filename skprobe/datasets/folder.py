"""Load a folder of audio files with their (multi-)labels.

Two layouts:

- a CSV file with one row per audio file: a file column (path relative to the
  folder) and a label column holding one label or several joined by
  ``separator`` (``dog;bark``); an empty cell means no label (a negative clip);
- no CSV: one sub-folder per class (``folder/dog/*.wav``), one label per file.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from ..audio import fix_length, read_audio
from .lazy import AudioDataset

__all__ = ["load_audio_folder", "scan_audio_folder", "AUDIO_EXTENSIONS"]

#: File endings read as audio (anything libsndfile decodes).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".opus")

_FILE_COLUMNS = ("file", "filename", "file_name", "fname", "path", "filepath", "audio", "clip", "name")
_LABEL_COLUMNS = ("labels", "label", "classes", "class", "category", "categories", "target", "tags")


def load_audio_folder(folder: str | os.PathLike, labels_csv: str | os.PathLike | None = None, *,
                      sample_rate: int = 16000, file_column: str | None = None,
                      label_column: str | None = None, separator: str = ";", delimiter: str | None = None,
                      clip_seconds: float | None = None, verbose: bool = False) -> Bunch:
    """Read every labelled audio file of a folder, as mono float32 at one rate.

    Parameters
    ----------
    folder : path-like
        Folder holding the audio files (paths in the CSV are relative to it).
    labels_csv : path-like, optional
        CSV with a header row (a first row that names an audio file is
        refused), UTF-8 or UTF-16 with a byte-order mark. Default: ``<folder>/labels.csv`` if it exists,
        else one sub-folder per class.
    sample_rate : int, default=16000
        Every file is resampled to this rate.
    file_column : str, optional
        Column of file names. Default: the first of ``file``, ``filename``,
        ``fname``, ``path``, ... present (case-insensitive), else the first
        column. A name without extension is tried with the usual audio endings.
    label_column : str, optional
        Column of labels. Default: the first of ``labels``, ``label``,
        ``classes``, ``class``, ``category``, ... present, else the only other column.
    separator : str, default=";"
        Separator of several labels inside one cell.
    delimiter : str, optional
        CSV field delimiter; default: tab when the header holds a tab, else comma.
    clip_seconds : float, optional
        Crop or zero-pad every waveform to this length.
    verbose : bool, default=False
        Show a progress bar while reading.

    Returns
    -------
    Bunch
        ``waveforms`` (list of float32 arrays), ``Y`` (multi-hot int64
        ``(n_files, n_classes)``), ``y`` (str array of the single label of each
        file, or None unless every file has exactly one label),
        ``class_names`` (sorted), ``files`` (paths relative to ``folder``),
        ``sample_rate``.

    Raises
    ------
    ValueError
        If the folder or the CSV does not exist, the CSV names missing files,
        has no usable label column or only one class, or an audio file cannot
        be read (the message names it).

    Examples
    --------
    >>> import numpy as np, soundfile as sf, tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("a.wav", "b.wav"):
    ...     sf.write(root / name, np.zeros(8000, dtype="int16"), 8000)
    >>> _ = (root / "labels.csv").write_text("file,labels\\na.wav,dog;bark\\nb.wav,cat\\n")
    >>> data = load_audio_folder(root)
    >>> data.class_names, data.Y.tolist(), data.waveforms[0].shape
    (['bark', 'cat', 'dog'], [[1, 0, 1], [0, 1, 0]], (16000,))
    """
    data = scan_audio_folder(folder, labels_csv, file_column=file_column, label_column=label_column,
                             separator=separator, delimiter=delimiter)
    folder = data.root
    y = np.array([data.class_names[j] for j in data.Y.argmax(axis=1)], dtype=str) if not data.multilabel else None

    waveforms = []
    items = data.files
    if verbose:
        from tqdm.auto import tqdm

        items = tqdm(data.files, desc="skprobe: reading audio", unit="file")
    n_samples = None if clip_seconds is None else int(round(clip_seconds * sample_rate))
    for rel in items:
        wav, _ = read_audio(folder / rel, sample_rate)  # a ValueError names the file
        waveforms.append(wav if n_samples is None else fix_length(wav, n_samples))
    return Bunch(waveforms=waveforms, Y=data.Y.astype(np.int64), y=y, class_names=data.class_names,
                 files=list(data.files), sample_rate=sample_rate)


def scan_audio_folder(folder: str | os.PathLike, labels_csv: str | os.PathLike | None = None, *,
                      file_column: str | None = None, label_column: str | None = None, separator: str = ";",
                      delimiter: str | None = None) -> AudioDataset:
    """The files and labels of an audio folder, without decoding any file.

    Same layouts, parameters and errors as :func:`load_audio_folder` (whose
    waveforms this leaves on disk): the lazy :class:`~skprobe.datasets.lazy.AudioDataset`
    that ``skprobe benchmark`` streams through the encoder.

    Returns
    -------
    AudioDataset
        Every clip in split ``"all"``; ``multilabel`` is False when every
        file has exactly one label.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("a.wav", "b.wav"):
    ...     _ = (root / name).write_bytes(b"")  # not decoded: any content will do here
    >>> _ = (root / "labels.csv").write_text("file,labels\\na.wav,dog;bark\\nb.wav,cat\\n")
    >>> data = scan_audio_folder(root)
    >>> data.files, data.class_names, data.multilabel
    (['a.wav', 'b.wav'], ['bark', 'cat', 'dog'], True)
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder {folder} does not exist or is not a directory")
    if labels_csv is None and (folder / "labels.csv").is_file():
        labels_csv = folder / "labels.csv"
    if labels_csv is not None:
        files, labels = _read_csv(folder, Path(labels_csv), file_column, label_column, separator, delimiter)
    else:
        files, labels = _read_subfolders(folder)
    class_names = sorted({label for row in labels for label in row})
    if len(class_names) < 2:
        where = f"label column of {labels_csv}" if labels_csv is not None else f"sub-folders of {folder}"
        raise ValueError(f"the {where} holds {len(class_names)} class(es) {class_names}; at least two are needed")
    index = {c: j for j, c in enumerate(class_names)}
    Y = np.zeros((len(files), len(class_names)), np.int8)
    for i, row in enumerate(labels):
        Y[i, [index[c] for c in row]] = 1
    return AudioDataset(folder, [Path(f).as_posix() for f in files], Y, class_names, np.full(len(files), "all"),
                        name=folder.name, multilabel=not all(len(r) == 1 for r in labels),
                        description=f"{len(files)} files from {folder}")


def _read_csv(folder: Path, path: Path, file_column: str | None, label_column: str | None,
              separator: str, delimiter: str | None) -> tuple[list[str], list[list[str]]]:
    if path.is_dir():
        raise ValueError(f"labels_csv {path} is a folder, not a file; expected a labels CSV (a header such as "
                         "'file,labels' and one row per audio file)")
    if not path.is_file():
        raise ValueError(f"labels_csv {path} does not exist")
    text = _read_text(path)
    lines = text.splitlines()
    if not lines:
        raise ValueError(f"labels_csv {path} is empty")
    if delimiter is None:
        delimiter = "\t" if "\t" in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    if not body:
        raise ValueError(f"labels_csv {path} has a header but no rows")
    _check_header(folder, path, header, delimiter)
    fcol = _pick_column(header, file_column, _FILE_COLUMNS, "file_column", path, default=0)
    lcol = _pick_column(header, label_column, _LABEL_COLUMNS, "label_column", path,
                        default=None, exclude=fcol)
    files, labels, missing, seen = [], [], [], {}
    for lineno, row in enumerate(body, start=2):
        if len(row) <= max(fcol, lcol):
            raise ValueError(f"labels_csv {path} line {lineno}: expected at least {max(fcol, lcol) + 1} "
                             f"fields separated by {delimiter!r}, got {row!r}")
        name = row[fcol].strip()
        resolved = _resolve(folder, name)
        if resolved is None:
            missing.append(name)
            continue
        if resolved in seen:
            raise ValueError(f"labels_csv {path}: file {name!r} listed twice (lines {seen[resolved]} and {lineno})")
        seen[resolved] = lineno
        files.append(resolved)
        labels.append(sorted({part.strip() for part in row[lcol].split(separator) if part.strip()}))
    if missing:
        raise ValueError(f"labels_csv {path} names {len(missing)} file(s) not found under {folder}: "
                         f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return files, labels


def _read_text(path: Path) -> str:
    """The CSV's text: UTF-8 (with or without BOM), or UTF-16 when it starts with a UTF-16 BOM."""
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"labels_csv {path} is not valid {encoding.replace('-sig', '')} text: byte "
            f"{raw[exc.start:exc.start + 1]!r} at offset {exc.start} cannot be decoded ({exc.reason}); "
            "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None


def _check_header(folder: Path, path: Path, header: list[str], delimiter: str) -> None:
    """Refuse a first row that names an audio file: the CSV then has no header and would lose that clip."""
    for cell in header:
        # Exact names only: a header "file" must not match an audio file called file.wav.
        if cell and (Path(cell) if os.path.isabs(cell) else folder / cell).is_file():
            raise ValueError(
                f"labels_csv {path} has no header row: its first row {delimiter.join(header)!r} names the "
                f"audio file {cell!r}. Add a header line naming the columns, e.g. "
                f"'file{delimiter}labels'"
            )


def _pick_column(header: list[str], given: str | None, candidates: Sequence[str], param: str, path: Path,
                 *, default: int | None, exclude: int | None = None) -> int:
    lower = [h.lower() for h in header]
    if given is not None:
        if given in header:
            return header.index(given)
        if given.lower() in lower:
            return lower.index(given.lower())
        raise ValueError(f"{param}={given!r} is not a column of {path}; columns: {header}")
    for name in candidates:
        if name in lower and lower.index(name) != exclude:
            return lower.index(name)
    others = [j for j in range(len(header)) if j != exclude]
    if default is not None:
        return default
    if len(others) == 1:
        return others[0]
    raise ValueError(f"no label column in {path}: columns {header}; name one with {param}=..."
                     if others else f"no label column in {path}: it has only the column {header}")


def _resolve(folder: Path, name: str) -> str | None:
    """Path of ``name`` relative to ``folder`` (or absolute), trying audio endings when it has none."""
    if not name:
        return None
    for candidate in (name, *(name + ext for ext in AUDIO_EXTENSIONS)):
        path = Path(candidate) if os.path.isabs(candidate) else folder / candidate
        if path.is_file():
            return candidate
    return None


def _read_subfolders(folder: Path) -> tuple[list[str], list[list[str]]]:
    files, labels = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(sub.rglob("*")):
            if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
                files.append(path.relative_to(folder).as_posix())
                labels.append([sub.name])
    if not files:
        raise ValueError(f"folder {folder} has no labels.csv and no class sub-folders with audio files "
                         f"({', '.join(AUDIO_EXTENSIONS)}); pass labels_csv=...")
    return files, labels
