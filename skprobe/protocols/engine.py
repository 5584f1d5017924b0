"""Running a protocol: read the set lazily, stream its files into the token store, fit and score per fold.

Memory does not grow with the waveforms or the tokens of the set: the reader
returns paths, :class:`~skprobe.FrozenEncoderTransformer` streams them into
the token store (on this machine or on a Dask cluster), and the probes train
on store-backed token arrays that they read a batch at a time.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, fields
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch
from tqdm.auto import tqdm

from .._config import data_home
from .._version import __version__
from ..datasets.lazy import AudioDataset
from ..experiments.config import PROBES, BenchmarkConfig, validate_config
from ..experiments.probe_cache import fit_or_load as _fit_or_load
from ..experiments.probe_cache import probe_code_fingerprint
from ..experiments.scoring import class_scores
from ..experiments.scoring import mean_over_seeds as _mean_over_seeds
from ..extraction import FrozenEncoderTransformer
from ..metrics import METRICS, per_class_ap
from ..probes import TokenView
from .definitions import Fold, Protocol, get_protocol
from .recipe import PAPER_LEARNING_RATES, RECIPES, recipe_params, validation_split

__all__ = ["ProtocolConfig", "validate_protocol_config", "run_protocol"]


@dataclass
class ProtocolConfig(BenchmarkConfig):
    """A benchmark run on a published data set (``skprobe benchmark --dataset fsd50k --root DIR``).

    Every :class:`~skprobe.benchmark.BenchmarkConfig` setting, with ``dataset``
    naming a protocol of :data:`~skprobe.protocols.PROTOCOLS`, plus:

    Attributes
    ----------
    root : str
        The unpacked data set.
    recipe : {"default", "paper"}
        skprobe's probe defaults, or the paper's training recipe (see :mod:`skprobe.protocols.recipe`).
    workers : int, optional
        Extract on a local Dask cluster of this many worker processes.
    scheduler : str, optional
        Extract on the Dask cluster at this address.
    store : str, optional
        Token store folder (default ``<data home>/tokens``); with a cluster, every worker must reach it.
    chunk_size : int
        Files per Dask task.
    """

    root: str | None = None
    recipe: str = "default"
    workers: int | None = None
    scheduler: str | None = None
    store: str | None = None
    chunk_size: int = 256

    @classmethod
    def from_benchmark(cls, config: BenchmarkConfig, **extra) -> ProtocolConfig:
        """This config with the settings of ``config`` (a :class:`BenchmarkConfig`) and ``extra``."""
        names = {f.name for f in fields(BenchmarkConfig)}
        return cls(**{k: v for k, v in asdict(config).items() if k in names}, **extra)


def validate_protocol_config(config: ProtocolConfig) -> Protocol:
    """Check the settings before any work; returns the protocol.

    Raises
    ------
    ValueError
        Naming the setting at fault and what was expected.
    """
    protocol = get_protocol(config.dataset)
    if config.root is None:
        raise ValueError(f"--dataset {config.dataset} reads the published data set from --root DIR (the unpacked "
                         "folder); see docs/published/index.md for the layout")
    if not Path(config.root).expanduser().is_dir():
        raise ValueError(f"--root {config.root} is not a folder")
    if config.labels is not None:
        raise ValueError(f"--labels is for a folder data set; {protocol.title} reads its own metadata under --root")
    if config.recipe not in RECIPES:
        raise ValueError(f"--recipe must be one of {list(RECIPES)}, got {config.recipe!r}")
    if config.workers is not None and config.scheduler is not None:
        raise ValueError("pass either --workers (a local Dask cluster) or --scheduler (a running one), not both")
    if config.workers is not None and config.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {config.workers}")
    if config.chunk_size < 1:
        raise ValueError(f"--chunk-size must be at least 1, got {config.chunk_size}")
    validate_config(config)
    return protocol


def run_protocol(config: ProtocolConfig) -> dict:
    """Evaluate the probes on a published data set by its protocol; writes the results to ``config.output``.

    Returns
    -------
    dict
        As :func:`skprobe.benchmark.run_benchmark` (``config``, ``data``,
        ``encoder``, ``runs``, ``summary``, ``per_class_ap`` (mean over folds and
        seeds), ``files``), with
        ``protocol`` (name, split, metric, recipe, chosen learning rates),
        ``extraction`` (clips, clips encoded, workers) and ``timings``
        (seconds per stage: read, extract, train, score, write). A run has a
        ``fold`` besides ``probe`` and ``seed``.
    """
    from .report import write_outputs

    protocol = validate_protocol_config(config)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    data = protocol.read(config.root)
    folds = protocol.folds(data)
    for fold in folds:
        for part, idx in (("train", fold.train), ("test", fold.test)):
            if len(idx) == 0:
                raise ValueError(f"{protocol.title} fold {fold.name}: no {part} clips in {data.description}")
    timings["read"] = time.perf_counter() - clock

    clock = time.perf_counter()
    encoder = _transformer(config)
    needed = np.unique(np.concatenate([np.concatenate([f.train, f.test] + ([f.val] if f.val is not None else []))
                                       for f in folds]))
    tokens, extraction = _extract(config, encoder, data, needed)
    position = np.full(len(data), -1, dtype=np.intp)
    position[needed] = np.arange(len(needed))
    timings["extract"] = time.perf_counter() - clock

    store_id = tokens.store_id
    runs, fitted, chosen = [], {}, {}
    timings["train"] = timings["score"] = 0.0
    jobs = [(fold, name) for fold in folds for name in config.probes]
    view = _Tokens(tokens, position, data, store_id, protocol.multilabel)
    for fold, name in tqdm(jobs, desc="training probes", unit="probe", disable=not config.verbose):
        params = {"prefix_tokens": encoder.prefix_tokens_, "device": config.device,
                  **recipe_params(config.recipe, name, prefix_tokens=encoder.prefix_tokens_,
                                  prototypes_per_class=protocol.paper_prototypes_per_class),
                  **config.probe_params.get(name, {})}
        if config.recipe == "paper" and "learning_rate" not in config.probe_params.get(name, {}):
            clock = time.perf_counter()
            params["learning_rate"], scores = _choose_learning_rate(config, protocol, view, fold, name, params)
            chosen.setdefault(name, []).append({"fold": fold.name, "learning_rate": params["learning_rate"],
                                                "validation": scores})
            timings["train"] += time.perf_counter() - clock
        X_test = view.X(fold.test)
        for seed in range(config.seeds):
            clock = time.perf_counter()
            probe, seconds = view.fit(name, {**params, "random_state": seed}, fold.train, config.refit)
            timings["train"] += time.perf_counter() - clock
            clock = time.perf_counter()
            scores = class_scores(probe, X_test, len(data.class_names))
            Y_test = data.Y[fold.test]
            runs.append({"probe": name, "fold": fold.name, "seed": seed, "fit_seconds": seconds,
                         "n_parameters": probe.n_trainable_parameters_,
                         **{m: METRICS[m](Y_test, scores) for m in protocol.metrics},
                         "per_class_ap": per_class_ap(Y_test, scores).tolist()})
            timings["score"] += time.perf_counter() - clock
            if seed == 0:
                fitted[(name, fold.name)] = probe

    result = {
        "skprobe": __version__,
        "config": {k: v for k, v in asdict(config).items() if k not in ("output", "root", "store")}
        | {"probes": list(config.probes)},
        "protocol": {"name": protocol.name, "title": protocol.title, "split": protocol.split_text,
                     "metric": protocol.metric, "metrics": list(protocol.metrics), "recipe": config.recipe,
                     "folds": [f.name for f in folds], "learning_rates": chosen},
        "data": _data_summary(data, protocol, folds),
        "encoder": {"name": encoder.encoder_spec_.name, "layers": encoder.layers_, "n_tokens": encoder.n_tokens_,
                    "dim": encoder.dim_, "prefix_tokens": encoder.prefix_tokens_,
                    "token_grid": list(encoder.token_grid_), "hop_seconds": encoder.hop_seconds_},
        "extraction": extraction,
        "runs": runs,
        "summary": _summary(runs, config.probes, protocol.metrics),
        "per_class_ap": {name: _mean_over_seeds([r["per_class_ap"] for r in runs if r["probe"] == name])
                         for name in config.probes},
        "timings": timings,
    }
    last = folds[-1]
    write_outputs(Path(config.output), result, fitted, encoder, _plot_data(data, last, encoder), view.X(last.test))
    return result


def _transformer(config: ProtocolConfig) -> FrozenEncoderTransformer:
    store = Path(config.store).expanduser() if config.store else data_home() / "tokens"
    return FrozenEncoderTransformer(
        encoder=config.encoder, checkpoint=config.checkpoint, layers=config.layer, batch_size=config.batch_size,
        compile=config.compile, device=config.device, store=str(store), output="memmap", verbose=config.verbose,
    ).fit(None)


def _extract(config: ProtocolConfig, encoder: FrozenEncoderTransformer, data: AudioDataset, needed: np.ndarray):
    """Stream the files of clips ``needed`` into the store; the store-backed tokens and what was done."""
    paths = data.paths(needed)
    start = time.perf_counter()
    if config.workers is not None or config.scheduler is not None:
        from ..distributed import extract

        params = {k: v for k, v in encoder.get_params().items() if k not in ("store", "cache", "output", "verbose")}
        store_tokens, report = extract(list(paths), encoder.store, client=config.scheduler, n_workers=config.workers,
                                       chunk_size=config.chunk_size, return_report=True, verbose=config.verbose,
                                       **params)
        keys = store_tokens.keys
        info = {"clips": len(needed), "encoded": report.n_forwarded, "workers": len(report.workers)}
    else:
        result = encoder.extract_to_store(paths)
        keys = [k for k in result.keys if k is not None]
        info = {"clips": len(needed), "encoded": result.n_forwarded, "workers": 0}
    if len(keys) != len(needed):
        raise ValueError(f"{len(needed) - len(keys)} of {len(needed)} clips gave no tokens")
    tokens = encoder.open_store().array(keys, squeeze_layer=isinstance(encoder.layers, Integral))
    info["seconds"] = time.perf_counter() - start
    return tokens, info


class _Tokens:
    """Store-backed token views of clip subsets, and probe fits keyed by what they were trained on."""

    def __init__(self, tokens, position: np.ndarray, data: AudioDataset, store_id: str, multilabel: bool) -> None:
        self.tokens, self.position, self.data = tokens, position, data
        self.store_id, self.multilabel = store_id, multilabel

    def X(self, idx: np.ndarray) -> TokenView:
        return TokenView(self.tokens, self.position[idx])

    def y(self, idx: np.ndarray) -> np.ndarray:
        return self.data.Y[idx] if self.multilabel else self.data.Y[idx].argmax(axis=1)

    def groups(self, idx: np.ndarray) -> np.ndarray | None:
        """The data set's groups of clips ``idx`` (the source recording, the speaker), or None."""
        return None if self.data.groups is None else self.data.groups[idx]

    def fit(self, name: str, params: dict, idx: np.ndarray, refit: bool):
        probe = PROBES[name](**params)
        groups = self.groups(idx)
        digest = hashlib.sha256(self.store_id.encode())
        digest.update(np.ascontiguousarray(self.tokens.keys[self.position[idx]]).tobytes())
        digest.update(np.ascontiguousarray(self.data.Y[idx]).tobytes())
        if groups is not None:
            digest.update("\0".join(groups.tolist()).encode())
        key = hashlib.sha256(json.dumps([digest.hexdigest(), name, sorted(probe.get_params().items()),
                                         probe_code_fingerprint()], default=str).encode()).hexdigest()[:24]
        return _fit_or_load(probe, self.X(idx), self.y(idx), key, refit, groups=groups)


def _choose_learning_rate(config: ProtocolConfig, protocol: Protocol, view: _Tokens, fold: Fold, name: str,
                          params: dict) -> tuple[float, dict]:
    """The rate of :data:`PAPER_LEARNING_RATES` with the best validation score (seed 0)."""
    if fold.val is not None and len(fold.val):
        fit_idx, val_idx = fold.train, fold.val
    else:
        labels = None if protocol.multilabel else view.y(fold.train)
        fit_idx, val_idx = validation_split(fold.train, labels, groups=view.groups(fold.train))
    metric = METRICS[protocol.metric]
    X_val, Y_val = view.X(val_idx), view.data.Y[val_idx]
    scores = {}
    for lr in PAPER_LEARNING_RATES[name]:
        probe, _ = view.fit(name, {**params, "learning_rate": lr, "random_state": 0}, fit_idx, config.refit)
        scores[lr] = float(metric(Y_val, class_scores(probe, X_val, len(view.data.class_names))))
    finite = {lr: s for lr, s in scores.items() if np.isfinite(s)}
    best = max(finite, key=finite.get) if finite else PAPER_LEARNING_RATES[name][0]
    return best, {str(lr): s for lr, s in scores.items()}


_SPLIT_ORDER = ("train", "balanced_train", "unbalanced_train", "val", "validate", "validation", "eval", "test",
                "testing")


def _data_summary(data: AudioDataset, protocol: Protocol, folds: list[Fold]) -> dict:
    found = data.split_sizes()
    order = [s for s in _SPLIT_ORDER if s in found] + sorted(s for s in found if s not in _SPLIT_ORDER)
    sizes = {s: found[s] for s in order}
    test_positives = np.zeros(len(data.class_names), dtype=np.int64)
    for fold in folds:
        test_positives += data.Y[fold.test].sum(axis=0, dtype=np.int64)
    return {
        "name": protocol.name, "description": data.description, "multilabel": protocol.multilabel,
        "n_clips": len(data), "splits": sizes, "official_sizes": protocol.official_sizes,
        "missing": data.missing, "missing_examples": data.missing_examples,
        "n_train": int(np.mean([len(f.train) for f in folds])), "n_test": int(np.mean([len(f.test) for f in folds])),
        "folds": {f.name: {"train": len(f.train), "test": len(f.test),
                           "val": None if f.val is None else len(f.val)} for f in folds},
        "class_names": data.class_names, "test_positives": test_positives.tolist(),
        "n_groups": None if data.groups is None else len(np.unique(data.groups)),
    }


def _summary(runs: list[dict], probes, metrics) -> dict:
    """Per probe and quantity: mean and std over seeds of the mean over folds."""
    out = {}
    for name in probes:
        rows = [r for r in runs if r["probe"] == name]
        seeds = sorted({r["seed"] for r in rows})
        out[name] = {}
        for m in (*metrics, "fit_seconds", "n_parameters"):
            per_seed = [np.nanmean([r[m] for r in rows if r["seed"] == s]) if any(
                np.isfinite(r[m]) for r in rows if r["seed"] == s) else np.nan for s in seeds]
            out[name][m] = {"mean": float(np.mean(per_seed)), "std": float(np.std(per_seed))}
    return out


class _Waveforms:
    """Test clips decoded on access (the plot reads three)."""

    def __init__(self, data: AudioDataset, idx: np.ndarray, rate: int, n_samples: int) -> None:
        self.data, self.idx, self.rate, self.n_samples = data, idx, rate, n_samples

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> np.ndarray:
        from ..audio import fix_length

        return fix_length(self.data.load(int(self.idx[i]), self.rate), self.n_samples)


class _EventsByClip:
    """Annotated events of the test clips, as the plot reads them (dicts with class, onset, offset)."""

    def __init__(self, data: AudioDataset, idx: np.ndarray) -> None:
        self.data, self.idx = data, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> list[dict]:
        return [{"class": e.event_label, "onset": e.onset, "offset": e.offset}
                for e in self.data.events_of(int(self.idx[i]))]


def _plot_data(data: AudioDataset, fold: Fold, encoder: FrozenEncoderTransformer) -> Bunch:
    rate = encoder.encoder_sample_rate_
    return Bunch(Y_test=data.Y[fold.test], class_names=data.class_names, sample_rate=rate,
                 X_test=_Waveforms(data, fold.test, rate, encoder.n_samples_),
                 events_test=_EventsByClip(data, fold.test) if data.events is not None else None)
