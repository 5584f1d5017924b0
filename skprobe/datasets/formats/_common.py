"""Reading metadata files as published: line-numbered rows, header checks, one-line errors."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

__all__ = ["FormatError", "read_text", "csv_rows", "check_header", "require", "files_in", "multi_hot",
           "parse_seconds"]


class FormatError(ValueError):
    """A metadata file of a published data set is missing or malformed.

    The message is one line naming the file (and the line, where one is at
    fault) and what was expected.
    """


def require(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a :class:`FormatError` saying what it should hold."""
    if not path.is_file():
        where = "is a folder" if path.is_dir() else "not found"
        raise FormatError(f"{path}: {where}; expected {what}")
    return path


def read_text(path: Path) -> str:
    """A metadata file's text (UTF-8, a byte-order mark allowed); a bad byte names its line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FormatError(f"{path} line {line}: not UTF-8 text (byte {raw[exc.start:exc.start + 1]!r} at offset "
                          f"{exc.start})") from None


def _lines(path: Path, comment: str | None, comments: list | None) -> Iterator[tuple[int, str]]:
    """Numbered non-blank lines, read one at a time (AudioSet's unbalanced CSV has two million)."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise FormatError(f"{path} line {n}: not UTF-8 text (byte {raw[exc.start:exc.start + 1]!r}); "
                                  "save the file as UTF-8") from None
            if not line.strip():
                continue
            if comment and line.lstrip().startswith(comment):
                if comments is not None:
                    comments.append(line)
                continue
            yield n, line


def csv_rows(path: Path, *, delimiter: str = ",", skipinitialspace: bool = False, comment: str | None = None,
             comments: list | None = None) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of every non-blank row, streamed from the file.

    Quoted fields may hold the delimiter (FSD50K's ``"Bark,Dog"``). Lines
    starting with ``comment`` are skipped (and appended to ``comments`` when
    given). A row may not span lines (no published format here does).
    """
    for n, line in _lines(path, comment, comments):
        try:
            row = next(csv.reader([line], delimiter=delimiter, skipinitialspace=skipinitialspace, strict=True))
        except csv.Error as exc:
            raise FormatError(f"{path} line {n}: {exc}") from None
        yield n, [cell.strip() for cell in row]


def check_header(path: Path, line: int, header: Sequence[str], required: Sequence[str],
                 optional: Sequence[str] = ()) -> dict[str, int]:
    """Column positions of ``required`` in ``header``, and of those ``optional`` columns it has.

    A missing required column is a :class:`FormatError`.
    """
    names = [h.strip() for h in header]
    missing = [c for c in required if c not in names]
    if missing:
        raise FormatError(f"{path} line {line}: no column {missing[0]!r}; expected columns {list(required)}, "
                          f"found {names}")
    return {c: names.index(c) for c in (*required, *optional) if c in names}


def files_in(folder: Path) -> set[str]:
    """Names of the files directly in ``folder`` (one directory listing, no per-file stat)."""
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if not e.is_dir()}
    except FileNotFoundError:
        return set()


def multi_hot(label_lists: Sequence[Sequence[int]], n_classes: int) -> np.ndarray:
    """int8 indicator matrix ``(len(label_lists), n_classes)`` of the class indices of each row."""
    Y = np.zeros((len(label_lists), n_classes), dtype=np.int8)
    for i, labels in enumerate(label_lists):
        Y[i, list(labels)] = 1
    return Y


def parse_seconds(text: str, path: Path, line: int, what: str) -> float:
    """A non-negative finite number of seconds, or a :class:`FormatError` naming the file and line."""
    try:
        value = float(text)
    except ValueError:
        raise FormatError(f"{path} line {line}: {what} {text!r} is not a number") from None
    if not np.isfinite(value) or value < 0:
        raise FormatError(f"{path} line {line}: {what} {text!r} must be a finite number of seconds >= 0")
    return value
