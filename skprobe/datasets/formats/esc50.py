"""ESC-50 as published (github.com/karolpiczak/ESC-50): ``meta/esc50.csv`` over ``audio/``.

``esc50.csv`` has a header row and one row per clip::

    filename,fold,target,category,esc10,src_file,take
    1-100032-A-0.wav,1,0,dog,True,100032,A

2,000 five-second clips, 50 classes of 40 clips, five folds of 400; clips cut
from one source recording (``src_file``) share a fold, and are the data set's
``groups``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..lazy import AudioDataset
from ._common import FormatError, check_header, csv_rows, files_in, require

__all__ = ["read_esc50", "ESC50_SIZES"]

#: The published set: clips per fold and in all, and the number of classes.
ESC50_SIZES = {"clips": 2000, "per_fold": 400, "folds": 5, "classes": 50}

_COLUMNS = ("filename", "fold", "target", "category")


def read_esc50(root: str | os.PathLike) -> AudioDataset:
    """Read ESC-50 from its unpacked folder (``ESC-50-master/``); decodes nothing.

    Parameters
    ----------
    root : path-like
        Folder holding ``meta/esc50.csv`` and ``audio/`` (the folder
        ``ESC-50-master`` of the GitHub archive, or its parent).

    Returns
    -------
    AudioDataset
        Single-label; ``split`` is ``"fold1"`` ... ``"fold5"``; class names
        ordered by ``target``; ``groups`` is the source recording
        (``src_file``) of every clip when the file has that column.

    Raises
    ------
    FormatError
        Naming the file and line of a missing column, a fold outside 1-5, a
        target that is not an integer or that two categories share, a file
        listed twice or an audio file that is not there.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "meta").mkdir(); (root / "audio").mkdir()
    >>> _ = (root / "meta" / "esc50.csv").write_text(
    ...     "filename,fold,target,category,esc10,src_file,take\\n"
    ...     "1-100032-A-0.wav,1,0,dog,True,100032,A\\n2-1000-A-1.wav,2,1,rooster,False,1000,A\\n")
    >>> for name in ("1-100032-A-0.wav", "2-1000-A-1.wav"):
    ...     _ = (root / "audio" / name).write_bytes(b"")
    >>> data = read_esc50(root)
    >>> data.class_names, data.split.tolist(), data.groups.tolist()
    (['dog', 'rooster'], ['fold1', 'fold2'], ['100032', '1000'])
    """
    root = Path(root).expanduser()
    if not (root / "meta" / "esc50.csv").exists() and (root / "ESC-50-master" / "meta" / "esc50.csv").exists():
        root = root / "ESC-50-master"
    csv_path = require(root / "meta" / "esc50.csv", "ESC-50's metadata (root must hold meta/esc50.csv and audio/)")
    audio = root / "audio"
    present = files_in(audio)
    rows = csv_rows(csv_path)
    header_line, header = next(rows, (1, []))
    col = check_header(csv_path, header_line, header, _COLUMNS, optional=("src_file",))
    width = max(col[c] for c in _COLUMNS) + 1
    source = col.get("src_file")
    files, targets, folds, sources, names = [], [], [], [], {}
    seen: dict[str, int] = {}
    for line, row in rows:
        if len(row) < width:
            raise FormatError(f"{csv_path} line {line}: expected at least {width} comma-separated fields, got {row}")
        name, fold, target, category = (row[col[c]] for c in _COLUMNS)
        if fold not in {"1", "2", "3", "4", "5"}:
            raise FormatError(f"{csv_path} line {line}: fold {fold!r} is not one of 1-5")
        if not target.isdigit():
            raise FormatError(f"{csv_path} line {line}: target {target!r} is not a class number")
        if names.setdefault(int(target), category) != category:
            raise FormatError(f"{csv_path} line {line}: target {target} is category {category!r} here but "
                              f"{names[int(target)]!r} above")
        if name in seen:
            raise FormatError(f"{csv_path} line {line}: {name} is listed twice (also line {seen[name]})")
        if name not in present:
            raise FormatError(f"{csv_path} line {line}: audio file {audio / name} not found")
        seen[name] = line
        files.append(f"audio/{name}")
        targets.append(int(target))
        folds.append(f"fold{fold}")
        if source is not None:
            recording = row[source].strip() if len(row) > source else ""
            sources.append(recording or name)  # a clip without a source is a group of its own
    if not files:
        raise FormatError(f"{csv_path}: no clips listed")
    by_category: dict[str, int] = {}
    for target, category in names.items():
        if by_category.setdefault(category, target) != target:
            raise FormatError(f"{csv_path}: category {category!r} has two targets ({by_category[category]} and "
                              f"{target})")
    order = sorted(names)
    index = {t: j for j, t in enumerate(order)}
    Y = np.zeros((len(files), len(order)), dtype=np.int8)
    Y[np.arange(len(files)), [index[t] for t in targets]] = 1
    return AudioDataset(root, files, Y, [names[t] for t in order], np.array(folds), name="esc50", multilabel=False,
                        description=f"ESC-50 from {root} ({len(files)} clips, {len(order)} classes)",
                        groups=np.array(sources) if source is not None else None)
