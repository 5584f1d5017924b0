"""A labelled audio data set that holds file paths, not waveforms.

:class:`AudioDataset` is what the readers of published data sets return
(:mod:`skprobe.datasets.formats`): the clips' paths, their labels, the class
names, the official split of every clip and, for strongly labelled sets, the
annotated events. Nothing is decoded: the paths stream through
:class:`~skprobe.FrozenEncoderTransformer` into the token store, so memory does
not grow with the waveforms of the set.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["AudioDataset", "ClipPaths", "Event", "EVENT_COLUMNS"]

#: Columns of an event table, in the DCASE order (``filename onset offset event_label``).
EVENT_COLUMNS = ("filename", "onset", "offset", "event_label")


class Event(NamedTuple):
    """One annotated sound event of a strongly labelled clip.

    ``filename`` is the clip's path relative to the data set's root (the
    :attr:`AudioDataset.files` entry), ``onset`` and ``offset`` are seconds
    from the start of the file.
    """

    filename: str
    onset: float
    offset: float
    event_label: str


class ClipPaths(Sequence):
    """The audio paths of some clips of an :class:`AudioDataset`, built on access.

    A sequence of ``str`` (``len``, indexing, iteration): what
    :class:`~skprobe.FrozenEncoderTransformer` streams, without a list of
    full paths in memory.
    """

    def __init__(self, root: Path, files: Sequence[str], indices: np.ndarray) -> None:
        self._root = root
        self._files = files
        self._indices = indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ClipPaths(self._root, self._files, self._indices[i])
        return os.fspath(self._root / self._files[int(self._indices[i])])

    def __iter__(self) -> Iterator[str]:
        root, files = self._root, self._files
        for i in self._indices:
            yield os.fspath(root / files[int(i)])

    def __repr__(self) -> str:
        return f"ClipPaths({len(self)} clips under {str(self._root)!r})"


@dataclass(eq=False)
class AudioDataset:
    """Audio files with (multi-)labels and official splits, read lazily.

    Parameters
    ----------
    root : path-like
        Folder the ``files`` are relative to.
    files : list of str
        Path of every clip relative to ``root`` (POSIX separators).
    Y : ndarray of shape (n_clips, n_classes)
        Multi-hot labels (int8), columns in ``class_names`` order.
    class_names : list of str
    split : ndarray of str, shape (n_clips,)
        The official split of every clip, named as the data set names it
        (``"train"``, ``"val"``, ``"eval"``, ``"fold3"``, ...).
    name : str
        Short name of the data set (``"fsd50k"``).
    multilabel : bool
        Whether a clip may hold several classes (False: exactly one each).
    events : list of Event, optional
        Annotated events of strongly labelled sets, in clip order.
    missing : dict, optional
        Split -> number of clips the metadata lists but the folder lacks
        (AudioSet: the clips a user could not download).
    missing_examples : list of str, optional
        A few of the missing clips' ids, for messages.
    description : str
        One line saying what was read from where.
    groups : ndarray of str, shape (n_clips,), optional
        The source of every clip where the data set records one (ESC-50's
        source recording, Speech Commands' speaker): clips of one group are
        near-copies for a probe, so the probes' own splits (``fit(...,
        groups=)``) keep a group on one side. None where the set has none.

    Examples
    --------
    >>> import numpy as np
    >>> data = AudioDataset("clips", ["a.wav", "b.wav", "c.wav"], np.eye(3, 2, dtype=np.int8),
    ...                     ["dog", "cat"], np.array(["train", "train", "test"]), name="demo", multilabel=False)
    >>> data
    AudioDataset('demo': 3 clips, 2 classes; train 2, test 1)
    >>> list(data.paths(data.indices("train")))
    ['clips/a.wav', 'clips/b.wav']
    >>> data.subset(data.indices("test")).Y.tolist()
    [[0, 0]]
    """

    root: Path
    files: list[str]
    Y: np.ndarray
    class_names: list[str]
    split: np.ndarray
    name: str = "audio"
    multilabel: bool = True
    events: list[Event] | None = None
    missing: dict[str, int] = field(default_factory=dict)
    missing_examples: list[str] = field(default_factory=list)
    description: str = ""
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.Y = np.asarray(self.Y)
        self.split = np.asarray(self.split, dtype=str)
        self.class_names = list(self.class_names)
        n = len(self.files)
        if self.Y.ndim != 2 or self.Y.shape != (n, len(self.class_names)):
            raise ValueError(f"Y must have shape (n_files, n_classes) = ({n}, {len(self.class_names)}), "
                             f"got {self.Y.shape}")
        if self.split.shape != (n,):
            raise ValueError(f"split must hold one split name per file ({n}), got shape {self.split.shape}")
        if self.groups is not None:
            self.groups = np.asarray(self.groups, dtype=str)
            if self.groups.shape != (n,):
                raise ValueError(f"groups must hold one group label per file ({n}), got shape {self.groups.shape}")
        if not self.description:
            self.description = f"{n} clips under {self.root}"

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k} {v}" for k, v in self.split_sizes().items())
        missing = f"; {sum(self.missing.values())} listed clips missing" if sum(self.missing.values()) else ""
        return f"AudioDataset({self.name!r}: {len(self)} clips, {len(self.class_names)} classes; {sizes}{missing})"

    @property
    def y(self) -> np.ndarray:
        """Class index of every clip of a single-label set (``Y.argmax(axis=1)``)."""
        if self.multilabel:
            raise ValueError(f"data set {self.name!r} is multi-label: use Y (multi-hot), not y")
        return self.Y.argmax(axis=1)

    def split_sizes(self) -> dict[str, int]:
        """Clips per split, in order of first appearance."""
        return dict(Counter(self.split.tolist()))

    def indices(self, *splits: str) -> np.ndarray:
        """Sorted indices of the clips in any of ``splits``.

        Raises
        ------
        ValueError
            If a split name is not one of the data set's.
        """
        known = set(self.split_sizes())
        unknown = [s for s in splits if s not in known]
        if unknown:
            raise ValueError(f"data set {self.name!r} has no split {unknown[0]!r}; its splits: {sorted(known)}")
        return np.flatnonzero(np.isin(self.split, list(splits)))

    def paths(self, indices: Iterable[int] | None = None) -> ClipPaths:
        """Full paths of the clips ``indices`` (all by default), as a lazy sequence of str."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.intp)
        return ClipPaths(self.root, self.files, idx)

    def subset(self, indices: Iterable[int]) -> AudioDataset:
        """The clips ``indices`` (in that order) as a new data set, with their events."""
        idx = np.asarray(indices, dtype=np.intp)
        files = [self.files[i] for i in idx]
        events = None
        if self.events is not None:
            keep = set(files)
            events = [e for e in self.events if e.filename in keep]
        groups = None if self.groups is None else self.groups[idx]
        return replace(self, files=files, Y=self.Y[idx], split=self.split[idx], events=events, groups=groups)

    def events_of(self, index: int) -> list[Event]:
        """The annotated events of clip ``index`` (empty for a weakly labelled set)."""
        if self.events is None:
            return []
        by_file = self.__dict__.get("_by_file")
        if by_file is None:
            by_file = {}
            for e in self.events:
                by_file.setdefault(e.filename, []).append(e)
            self.__dict__["_by_file"] = by_file
        return list(by_file.get(self.files[index], []))

    def events_frame(self):
        """The events as a pandas DataFrame with the DCASE columns ``filename onset offset event_label``.

        Needs pandas; :attr:`events` holds the same rows as tuples.
        """
        if self.events is None:
            raise ValueError(f"data set {self.name!r} has no event annotations (it is weakly labelled)")
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - the test extra installs it
            raise ImportError("events_frame needs pandas (pip install pandas); .events holds the same rows") from exc
        return pd.DataFrame(self.events, columns=list(EVENT_COLUMNS))

    def load(self, index: int, sample_rate: int | None = None) -> np.ndarray:
        """Decode one clip (mono float32, resampled to ``sample_rate`` when given)."""
        from ..audio import read_audio

        return read_audio(self.root / self.files[index], sample_rate)[0]
