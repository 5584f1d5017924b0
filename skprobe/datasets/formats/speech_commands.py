"""Speech Commands v2 as published (``speech_commands_v0.02.tar.gz``): a folder per word.

Layout::

    speech_commands_v0.02/
        backward/0165e0e8_nohash_0.wav ...   35 word folders
        _background_noise_/                   not clips (ignored)
        validation_list.txt                   one "word/file.wav" per line
        testing_list.txt

A clip is in the validation or test split when one of the lists names it,
else in train. A file's name before ``_nohash_`` is its speaker: the
data set's ``groups`` (the published lists keep a speaker in one split).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..lazy import AudioDataset
from ._common import FormatError, files_in, read_text, require

__all__ = ["read_speech_commands", "SPEECH_COMMANDS_SIZES"]

#: Clips per split of the published v0.02 set, and its number of words.
SPEECH_COMMANDS_SIZES = {"train": 84843, "validation": 9981, "testing": 11005, "classes": 35}


def read_speech_commands(root: str | os.PathLike) -> AudioDataset:
    """Read Speech Commands v2 from its unpacked folder; decodes nothing.

    Parameters
    ----------
    root : path-like
        The folder holding the word folders, ``validation_list.txt`` and
        ``testing_list.txt``.

    Returns
    -------
    AudioDataset
        Single-label over the words (sorted folder names); ``split`` is
        ``"train"``, ``"validation"`` or ``"testing"``; ``groups`` is the
        speaker (the file name before ``_nohash_``).

    Raises
    ------
    FormatError
        Naming the list file and line of an entry that is not
        ``word/file.wav``, names a file that is not there, or is listed in
        both lists or twice.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for rel in ("yes/a_nohash_0.wav", "yes/b_nohash_0.wav", "no/a_nohash_0.wav", "no/c_nohash_0.wav"):
    ...     (root / rel).parent.mkdir(exist_ok=True); _ = (root / rel).write_bytes(b"")
    >>> _ = (root / "validation_list.txt").write_text("yes/b_nohash_0.wav\\n")
    >>> _ = (root / "testing_list.txt").write_text("no/c_nohash_0.wav\\n")
    >>> data = read_speech_commands(root)
    >>> data.class_names, data.split_sizes(), data.groups.tolist()
    (['no', 'yes'], {'train': 2, 'testing': 1, 'validation': 1}, ['a', 'c', 'a', 'b'])
    """
    root = Path(root).expanduser()
    lists = {}
    for split, name in (("validation", "validation_list.txt"), ("testing", "testing_list.txt")):
        lists[split] = require(root / name, "Speech Commands' split list (one word/file.wav per line)")
    words = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    if len(words) < 2:
        raise FormatError(f"{root}: expected one folder per word, found {words}")
    present = {w: {n for n in files_in(root / w) if n.lower().endswith(".wav")} for w in words}
    assigned: dict[str, tuple[str, Path, int]] = {}
    for split, path in lists.items():
        for line, text in enumerate(read_text(path).splitlines(), start=1):
            entry = text.strip()
            if not entry:
                continue
            word, _, fname = entry.partition("/")
            if not fname or "/" in fname or not fname.lower().endswith(".wav"):
                raise FormatError(f"{path} line {line}: {entry!r} is not word/file.wav")
            if word not in present:
                raise FormatError(f"{path} line {line}: {entry!r} names the word folder {word!r}, which is not in "
                                  f"{root}")
            if entry in assigned:
                _, other, other_line = assigned[entry]
                raise FormatError(f"{path} line {line}: {entry} is also listed in {other.name} line {other_line}")
            assigned[entry] = (split, path, line)
    for entry, (_, path, line) in assigned.items():
        word, _, fname = entry.partition("/")
        if fname not in present[word]:
            raise FormatError(f"{path} line {line}: audio file {root / entry} not found")
    files, labels, splits = [], [], []
    for j, word in enumerate(words):
        for fname in sorted(present[word]):
            rel = f"{word}/{fname}"
            files.append(rel)
            labels.append(j)
            splits.append(assigned[rel][0] if rel in assigned else "train")
    Y = np.zeros((len(files), len(words)), dtype=np.int8)
    Y[np.arange(len(files)), labels] = 1
    speakers = [rel.rpartition("/")[2].partition("_nohash_")[0] for rel in files]
    return AudioDataset(root, files, Y, words, np.array(splits), name="speech-commands", multilabel=False,
                        description=f"Speech Commands from {root} ({len(files)} clips, {len(words)} words)",
                        groups=np.array(speakers))

