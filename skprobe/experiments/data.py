"""The data of a benchmark run: a built-in set or an audio folder, split into train and test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch

from ..encoders import get_encoder_spec
from .config import BUILTIN_DATASETS, BenchmarkConfig

__all__ = ["load_benchmark_data"]


def load_benchmark_data(config: BenchmarkConfig) -> Bunch:
    """Train/test waveforms and labels of a built-in set or an audio folder.

    Returns
    -------
    Bunch
        ``X_train``, ``X_test`` (waveforms at ``sample_rate`` for a built-in set; for a
        folder the files' paths, decoded only as they stream through the encoder), ``Y_train``,
        ``Y_test`` (multi-hot), ``class_names``, ``multilabel``, ``sample_rate``,
        ``events_test`` (list per clip of event dicts, or None), ``name``,
        ``description``.
    """
    from ..datasets import make_event_clips, make_event_scenes, scan_audio_folder

    rate = get_encoder_spec(config.encoder).sample_rate
    sizes = {k: v for k, v in (("n_train", config.n_train), ("n_test", config.n_test)) if v is not None}
    if config.dataset in BUILTIN_DATASETS:
        maker = make_event_scenes if config.dataset == "event-scenes" else make_event_clips
        data = maker(sample_rate=rate, verbose=bool(config.verbose), **sizes)
        return Bunch(X_train=data.X_train, X_test=data.X_test, Y_train=data.Y_train, Y_test=data.Y_test,
                     class_names=list(data.class_names), multilabel=config.dataset == "event-scenes",
                     sample_rate=rate, events_test=data.events_test, name=config.dataset,
                     description=data.DESCR.splitlines()[0] if getattr(data, "DESCR", None) else config.dataset)
    folder = Path(config.dataset)
    if not folder.is_dir():
        raise ValueError(
            f"dataset {config.dataset!r} is neither a built-in set {BUILTIN_DATASETS} nor an existing folder"
        )
    data = scan_audio_folder(folder, config.labels)  # paths only: the files stream through the encoder
    stratify = data.y if not data.multilabel and _can_stratify(data.y, config.test_size) else None
    idx_train, idx_test = train_test_split(np.arange(len(data.files)), test_size=config.test_size,
                                           random_state=0, stratify=stratify)
    Y = data.Y.astype(np.int64)
    return Bunch(X_train=data.paths(idx_train), X_test=data.paths(idx_test), Y_train=Y[idx_train], Y_test=Y[idx_test],
                 class_names=list(data.class_names), multilabel=data.multilabel, sample_rate=rate, events_test=None,
                 name=folder.name,
                 description=f"{len(data.files)} files from {folder}")


def _can_stratify(y: np.ndarray, test_size: float) -> bool:
    _, counts = np.unique(y, return_counts=True)
    return counts.min() >= 2 and int(len(y) * test_size) >= len(counts)
