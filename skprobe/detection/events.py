"""Event tables: a pandas DataFrame, CSV and DCASE-style TSV files.

Columns: ``file``, ``onset``, ``offset`` (seconds), ``event_label``, ``score``.
A ``.tsv`` file follows the DCASE convention for detection outputs and
ground truth (tab-separated ``filename``, ``onset``, ``offset``,
``event_label``, with a header); a ``.csv`` file keeps every column.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path

from .._files import atomic_write
from .postprocess import Event

__all__ = ["COLUMNS", "events_frame", "events_text", "write_events", "read_events"]

COLUMNS = ("file", "onset", "offset", "event_label", "score")


def events_frame(events: Iterable[Event]):
    """Events as a pandas DataFrame with :data:`COLUMNS` (pandas is needed here only).

    Examples
    --------
    >>> events_frame([Event("a.wav", 1.0, 2.5, "dog", 0.9)])
        file  onset  offset event_label  score
    0  a.wav    1.0     2.5         dog    0.9
    """
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas ships with the detection extra
        raise ImportError("events as a DataFrame need pandas: pip install 'skprobe[detection]', "
                          "or pass as_frame=False for a list of Event rows") from None
    return pd.DataFrame([tuple(e) for e in events], columns=list(COLUMNS)).astype(
        {"file": str, "onset": float, "offset": float, "event_label": str, "score": float})


def write_events(events, path: str | os.PathLike) -> Path:
    """Write events (a DataFrame or Event rows) to ``.csv`` (all columns) or ``.tsv`` (DCASE), atomically.

    Raises
    ------
    ValueError
        If the suffix is neither ``.csv`` nor ``.tsv``.

    Examples
    --------
    >>> import tempfile, os
    >>> path = write_events([Event("a.wav", 1.0, 2.5, "dog", 0.9)], os.path.join(tempfile.mkdtemp(), "ev.tsv"))
    >>> print(path.read_text().replace(chr(9), " | "), end="")
    filename | onset | offset | event_label
    a.wav | 1.0 | 2.5 | dog
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv"):
        raise ValueError(f"events file {path}: write .csv (every column) or .tsv (DCASE), not {suffix or 'no suffix'!r}")
    text = events_text(events, suffix[1:])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fh.write(text.encode()))
    return path


def events_text(events, fmt: str = "tsv") -> str:
    """Events as the text of a ``"tsv"`` (DCASE: filename, onset, offset, event_label) or ``"csv"`` file.

    Times are written to the microsecond, so hour-long recordings keep their precision.
    """
    rows = _rows(events)
    text = io.StringIO()
    if fmt == "tsv":
        writer = csv.writer(text, delimiter="\t", lineterminator="\n")
        writer.writerow(["filename", "onset", "offset", "event_label"])
        writer.writerows([r[0], _num(r[1]), _num(r[2]), r[3]] for r in rows)
    elif fmt == "csv":
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows([r[0], _num(r[1]), _num(r[2]), r[3], _num(r[4])] for r in rows)
    else:
        raise ValueError(f"fmt must be 'tsv' or 'csv', got {fmt!r}")
    return text.getvalue()


def read_events(path: str | os.PathLike) -> list[Event]:
    """Events of a ``.csv`` written by :func:`write_events` or a DCASE ``.tsv`` (score NaN when absent).

    Raises
    ------
    ValueError
        Naming the file and the line that lacks a column or holds a bad number.
    """
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    out = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        names = {"filename": "file"}
        for line, row in enumerate(reader, start=2):
            row = {names.get(k, k): v for k, v in row.items() if k is not None}
            try:
                out.append(Event(row["file"], float(row["onset"]), float(row["offset"]), row["event_label"],
                                 float(row.get("score") or "nan")))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"events file {path}, line {line}: expected file/filename, onset, offset, "
                                 f"event_label ({type(exc).__name__}: {exc})") from None
    return out


def _rows(events) -> list[tuple]:
    if hasattr(events, "itertuples"):
        return [tuple(r) for r in events[list(COLUMNS)].itertuples(index=False)]
    return [tuple(e) for e in events]


def _num(x) -> str:
    """Microsecond precision at any length of recording, without trailing zeros."""
    text = f"{float(x):.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
