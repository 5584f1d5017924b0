"""FSD50K as published on Zenodo (record 4060432): ground truth CSVs over two audio folders.

Layout of the unpacked archives::

    FSD50K.ground_truth/vocabulary.csv   no header: index,label,mid (200 rows)
    FSD50K.ground_truth/dev.csv          fname,labels,mids,split   (split: train or val)
    FSD50K.ground_truth/eval.csv         fname,labels,mids
    FSD50K.dev_audio/<fname>.wav
    FSD50K.eval_audio/<fname>.wav

``labels`` and ``mids`` join several values with commas inside one quoted
field: ``64760,"Electric_guitar,Guitar","/m/02sgy,/m/0342h",train``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..lazy import AudioDataset
from ._common import FormatError, check_header, csv_rows, files_in, multi_hot, require

__all__ = ["read_fsd50k", "FSD50K_SIZES"]

#: Clips per split of the published set, and its number of classes.
FSD50K_SIZES = {"train": 36796, "val": 4170, "eval": 10231, "classes": 200}


def read_fsd50k(root: str | os.PathLike) -> AudioDataset:
    """Read FSD50K from the folder holding its unpacked archives; decodes nothing.

    Parameters
    ----------
    root : path-like
        Folder holding ``FSD50K.ground_truth/``, ``FSD50K.dev_audio/`` and
        ``FSD50K.eval_audio/``.

    Returns
    -------
    AudioDataset
        Multi-label over the vocabulary's classes in its index order;
        ``split`` is ``"train"``, ``"val"`` (from ``dev.csv``) or ``"eval"``.

    Raises
    ------
    FormatError
        Naming the file and line of a missing column, a label that is not in
        the vocabulary, labels and mids that disagree, an unknown split, a
        clip listed twice or an audio file that is not there.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> gt = root / "FSD50K.ground_truth"; gt.mkdir()
    >>> _ = (gt / "vocabulary.csv").write_text("0,Bark,/m/05tny_\\n1,Meow,/m/07qrkrw\\n")
    >>> _ = (gt / "dev.csv").write_text('fname,labels,mids,split\\n11,"Bark,Meow","/m/05tny_,/m/07qrkrw",train\\n'
    ...                                 '12,Meow,/m/07qrkrw,val\\n')
    >>> _ = (gt / "eval.csv").write_text("fname,labels,mids\\n21,Bark,/m/05tny_\\n")
    >>> for folder, name in (("dev", "11"), ("dev", "12"), ("eval", "21")):
    ...     (root / f"FSD50K.{folder}_audio").mkdir(exist_ok=True)
    ...     _ = (root / f"FSD50K.{folder}_audio" / f"{name}.wav").write_bytes(b"")
    >>> data = read_fsd50k(root)
    >>> data.Y.tolist(), data.split.tolist()
    ([[1, 1], [0, 1], [1, 0]], ['train', 'val', 'eval'])
    """
    root = Path(root).expanduser()
    gt = root / "FSD50K.ground_truth"
    names, mids = _vocabulary(require(gt / "vocabulary.csv", "FSD50K's vocabulary (index,label,mid; no header)"))
    index = {n: j for j, n in enumerate(names)}
    files, labels, splits = [], [], []
    for part, csv_name, split_column in (("dev", "dev.csv", True), ("eval", "eval.csv", False)):
        path = require(gt / csv_name, f"FSD50K's {part} ground truth (fname,labels,mids{',split' if split_column else ''})")
        audio = root / f"FSD50K.{part}_audio"
        present = files_in(audio)
        rows = csv_rows(path)
        header_line, header = next(rows, (1, []))
        required = ("fname", "labels", "mids", "split") if split_column else ("fname", "labels", "mids")
        col = check_header(path, header_line, header, required)
        width = max(col.values()) + 1
        seen: dict[str, int] = {}
        for line, row in rows:
            if len(row) < width:
                raise FormatError(f"{path} line {line}: expected {width} comma-separated fields (labels and mids "
                                  f"quoted), got {len(row)}: {row}")
            fname = row[col["fname"]]
            if fname in seen:
                raise FormatError(f"{path} line {line}: clip {fname} is listed twice (also line {seen[fname]})")
            seen[fname] = line
            clip_labels = [x.strip() for x in row[col["labels"]].split(",") if x.strip()]
            clip_mids = [x.strip() for x in row[col["mids"]].split(",") if x.strip()]
            if not clip_labels:
                raise FormatError(f"{path} line {line}: clip {fname} has no label")
            for label in clip_labels:
                if label not in index:
                    raise FormatError(f"{path} line {line}: label {label!r} is not in {gt / 'vocabulary.csv'}")
            expected_mids = [mids[index[label]] for label in clip_labels]
            if clip_mids != expected_mids:
                raise FormatError(f"{path} line {line}: mids {clip_mids} do not match the labels {clip_labels} "
                                  f"(vocabulary gives {expected_mids})")
            if split_column:
                split = row[col["split"]]
                if split not in ("train", "val"):
                    raise FormatError(f"{path} line {line}: split {split!r} is neither 'train' nor 'val'")
            else:
                split = "eval"
            if f"{fname}.wav" not in present:
                raise FormatError(f"{path} line {line}: audio file {audio / (fname + '.wav')} not found")
            files.append(f"FSD50K.{part}_audio/{fname}.wav")
            labels.append([index[label] for label in clip_labels])
            splits.append(split)
        if not seen:
            raise FormatError(f"{path}: no clips listed")
    return AudioDataset(root, files, multi_hot(labels, len(names)), names, np.array(splits), name="fsd50k",
                        multilabel=True, description=f"FSD50K from {root} ({len(files)} clips, {len(names)} classes)")


def _vocabulary(path: Path) -> tuple[list[str], list[str]]:
    names, mids = [], []
    for line, row in csv_rows(path):
        if len(row) != 3:
            raise FormatError(f"{path} line {line}: expected 3 fields index,label,mid (no header), got {row}")
        if row[0] != str(len(names)):
            if line == 1 and not row[0].isdigit():
                raise FormatError(f"{path} line 1: {row} is not a vocabulary row; the published file has no "
                                  "header, its rows are index,label,mid")
            raise FormatError(f"{path} line {line}: index {row[0]!r}, expected {len(names)} (indices count from 0)")
        if row[1] in names:
            raise FormatError(f"{path} line {line}: label {row[1]!r} appears twice")
        names.append(row[1])
        mids.append(row[2])
    if not names:
        raise FormatError(f"{path}: empty vocabulary")
    return names, mids
