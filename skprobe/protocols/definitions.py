"""The evaluation protocol of each published data set: its reader, official split and metric."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..datasets.formats import (
    AUDIOSET_SIZES,
    ESC50_SIZES,
    FSD50K_SIZES,
    SPEECH_COMMANDS_SIZES,
    URBAN_SED_SIZES,
    read_audioset,
    read_esc50,
    read_fsd50k,
    read_speech_commands,
    read_urban_sed,
)
from ..datasets.lazy import AudioDataset

__all__ = ["Fold", "Protocol", "PROTOCOLS", "get_protocol"]

#: Metrics reported beside the protocol's own, by target kind (names of :data:`skprobe.metrics.METRICS`).
_MULTILABEL_METRICS = ("macro_map", "micro_ap", "macro_roc_auc")
_SINGLE_LABEL_METRICS = ("top1_accuracy", "macro_map", "macro_roc_auc")


@dataclass(frozen=True)
class Fold:
    """One train/test split of a protocol (indices into the data set), with an optional validation part."""

    name: str
    train: np.ndarray
    test: np.ndarray
    val: np.ndarray | None = None


@dataclass(frozen=True)
class Protocol:
    """How a published data set is evaluated.

    Attributes
    ----------
    name : str
        The ``--dataset`` name (``"fsd50k"``).
    title : str
        How the data set is usually written (``"FSD50K"``).
    read : callable
        ``read(root) -> AudioDataset`` (a reader of :mod:`skprobe.datasets.formats`).
    folds : callable
        ``folds(data) -> list[Fold]``: the official split(s).
    metric : str
        The metric the paper reports for this set (a name of :data:`skprobe.metrics.METRICS`).
    multilabel : bool
    split_text : str
        The split in words, for the result table.
    official_sizes : dict
        Clips per split (and classes) of the published set.
    paper_prototypes_per_class : int
        Prototypes per class of the paper's recipe (10 on the 527 AudioSet classes, else 20).
    """

    name: str
    title: str
    read: Callable[[str | os.PathLike], AudioDataset]
    folds: Callable[[AudioDataset], list[Fold]]
    metric: str
    multilabel: bool
    split_text: str
    official_sizes: dict = field(default_factory=dict)
    paper_prototypes_per_class: int = 20

    @property
    def metrics(self) -> tuple[str, ...]:
        """The protocol's metric first, then the others of its target kind."""
        others = _MULTILABEL_METRICS if self.multilabel else _SINGLE_LABEL_METRICS
        return (self.metric, *(m for m in others if m != self.metric))


def _one_split(train: tuple[str, ...], test: str, val: str | None = None):
    def folds(data: AudioDataset) -> list[Fold]:
        return [Fold(test, data.indices(*train), data.indices(test), data.indices(val) if val else None)]

    return folds


def _esc50_folds(data: AudioDataset) -> list[Fold]:
    names = sorted(data.split_sizes())
    if len(names) < 2:
        raise ValueError(f"ESC-50 cross-validation needs at least two folds; {data.description} has {names}")
    return [Fold(k, np.flatnonzero(data.split != k), data.indices(k)) for k in names]


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("esc50", "ESC-50", read_esc50, _esc50_folds, "top1_accuracy", False,
             "5 official folds: train on four, test on the fifth (5 fits per probe and seed), mean over folds",
             {**{f"fold{k}": ESC50_SIZES["per_fold"] for k in range(1, 6)}, "classes": ESC50_SIZES["classes"]}),
    Protocol("fsd50k", "FSD50K", read_fsd50k, _one_split(("train",), "eval", "val"), "macro_map", True,
             "train on dev 'train', test on eval ('val' used only by --recipe paper to choose the learning rate)",
             FSD50K_SIZES),
    Protocol("audioset-20k", "AudioSet-20k", lambda root: read_audioset(root, ("balanced_train", "eval")),
             _one_split(("balanced_train",), "eval"), "macro_map", True,
             "train on balanced_train_segments, test on eval_segments (clips found on disk)",
             {k: AUDIOSET_SIZES[k] for k in ("balanced_train", "eval", "classes")}, paper_prototypes_per_class=10),
    Protocol("audioset-2m", "AudioSet-2M",
             lambda root: read_audioset(root, ("balanced_train", "unbalanced_train", "eval")),
             _one_split(("balanced_train", "unbalanced_train"), "eval"), "macro_map", True,
             "train on balanced + unbalanced train segments, test on eval_segments (clips found on disk)",
             AUDIOSET_SIZES, paper_prototypes_per_class=10),
    Protocol("urban-sed", "URBAN-SED", read_urban_sed, _one_split(("train",), "test", "validate"), "macro_map", True,
             "train on train, test on test ('validate' used only by --recipe paper)", URBAN_SED_SIZES),
    Protocol("speech-commands", "Speech Commands v2", read_speech_commands,
             _one_split(("train",), "testing", "validation"), "top1_accuracy", False,
             "train on the clips in neither list, test on testing_list.txt ('validation' used only by --recipe "
             "paper)", SPEECH_COMMANDS_SIZES),
)}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; a ValueError lists the known ones.

    Examples
    --------
    >>> get_protocol("esc50").metrics
    ('top1_accuracy', 'macro_map', 'macro_roc_auc')
    """
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; choose from {sorted(PROTOCOLS)}") from None
