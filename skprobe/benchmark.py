"""Compare the linear, attentive and prototypical probes on one encoder and one labelled set.

The engine behind ``skprobe benchmark``: load the data, extract tokens once
(through the per-clip token cache), train every probe over several seeds,
score the test split and write the results (JSON, CSV) and plots. With
``layers``, the tokens of several layers are extracted in the same pass and
the convex gated probe (``cgp``) trains on them beside the single-layer probes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch
from tqdm.auto import tqdm

from ._config import data_home
from ._files import atomic_write
from ._signed import UntrustedFileError, dump_signed, load_signed
from ._version import __version__
from .datasets.lazy import ClipPaths
from .encoders import get_encoder_spec
from .extraction import FrozenEncoderTransformer
from .extraction.store import StoreArray
from .metrics import macro_map, macro_roc_auc, micro_ap, per_class_ap, top1_accuracy
from .probes import (
    AttentiveProbeClassifier,
    ConvexGatedProbeClassifier,
    LinearProbeClassifier,
    PrototypicalProbeClassifier,
    save_probe,
)

__all__ = ["BenchmarkConfig", "validate_config", "load_benchmark_data", "extract_tokens", "run_benchmark", "class_scores",
           "compute_scores", "resolve_multi_layers", "PROBES", "BUILTIN_DATASETS", "MULTI_LAYER_PROBES"]

PROBES = {
    "linear": LinearProbeClassifier,
    "attentive": AttentiveProbeClassifier,
    "prototypical": PrototypicalProbeClassifier,
    "cgp": ConvexGatedProbeClassifier,
}
#: Probes that train on the tokens of several layers (``layers``); the others use ``layer``.
MULTI_LAYER_PROBES = ("cgp",)
BUILTIN_DATASETS = ("event-scenes", "event-clips")


@dataclass
class BenchmarkConfig:
    """Everything one benchmark run depends on (see ``skprobe benchmark --help``)."""

    encoder: str = "yamnet"
    dataset: str = "event-scenes"
    labels: str | None = None
    checkpoint: str | None = None
    layer: int = -1
    layers: str | Sequence[int] | None = None
    probes: Sequence[str] = ("linear", "attentive", "prototypical")
    seeds: int = 3
    test_size: float = 0.3
    n_train: int | None = None
    n_test: int | None = None
    output: str = "skprobe-results"
    device: str = "auto"
    batch_size: int = 16
    refit: bool = False
    save_probes: bool = False
    verbose: int = 1
    probe_params: dict = field(default_factory=dict)
    events: bool = False
    long_minutes: float = 10.0


def validate_config(config: BenchmarkConfig) -> None:
    """Check the probes, their parameters, the sizes and the output folder before any work.

    Every probe is built with its ``probe_params`` and its parameters are
    validated, so a typo fails in a second rather than after the extraction.
    The output folder is created (it must be a folder and writable).

    Raises
    ------
    ValueError
        Naming the setting at fault and what was expected.

    Examples
    --------
    >>> validate_config(BenchmarkConfig(probes=("linear",), probe_params={"linear": {"foo": 1}}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: probe_params for 'linear': unknown parameter(s) ['foo']; valid: ['asl_clip', ...]
    """
    if not config.probes:
        raise ValueError(f"probes is empty; choose one or more of {list(PROBES)}")
    unknown = [p for p in config.probes if p not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe(s) {unknown}; choose from {list(PROBES)}")
    if len(set(config.probes)) != len(config.probes):
        raise ValueError(f"probes lists a probe twice: {list(config.probes)}")
    if config.seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {config.seeds}")
    if not isinstance(config.probe_params, dict):
        raise ValueError(f"probe_params must be a dict keyed by probe name, got {type(config.probe_params).__name__}")
    for name, params in config.probe_params.items():
        if name not in PROBES:
            raise ValueError(f"probe_params names unknown probe {name!r}; choose from {list(PROBES)}")
        if not isinstance(params, dict):
            raise ValueError(f"probe_params for {name!r} must be a dict of parameters, e.g. "
                             f"{{\"{name}\": {{\"max_iter\": 10}}}}, got {params!r}")
        valid = PROBES[name]().get_params()
        bad = sorted(set(params) - set(valid))
        if bad:
            raise ValueError(f"probe_params for {name!r}: unknown parameter(s) {bad}; valid: {sorted(valid)}")
        try:
            PROBES[name](**params)._validate_params()
        except ValueError as exc:
            raise ValueError(f"probe_params for {name!r}: {str(exc).strip()}") from None
    if config.layers is not None and config.layers != "all" and (
            isinstance(config.layers, str) or not len(config.layers)
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in config.layers)):
        raise ValueError(f"layers must be 'all' or a non-empty list of layer indices, got {config.layers!r}")
    if config.events and config.dataset not in BUILTIN_DATASETS:
        raise ValueError(f"events (--events) scores detection against annotated onsets and offsets, which the "
                         f"built-in sets {BUILTIN_DATASETS} have; {config.dataset!r} has none")
    for option in ("n_train", "n_test"):
        value = getattr(config, option)
        if value is not None and value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}")
        if value is not None and config.dataset not in BUILTIN_DATASETS:
            raise ValueError(f"{option} applies to the built-in sets {BUILTIN_DATASETS} only; a folder data set is "
                             "split by test_size (--test-size)")
    out = Path(config.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} is an existing file; the benchmark writes a folder of results there")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {out} is not writable")


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
    from .datasets import make_event_clips, make_event_scenes, scan_audio_folder

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


def _encoder(config: BenchmarkConfig, layers, sample_rate: int | None = None,
             output: str = "array") -> FrozenEncoderTransformer:
    return FrozenEncoderTransformer(
        encoder=config.encoder, checkpoint=config.checkpoint, layers=layers,
        sample_rate=sample_rate or get_encoder_spec(config.encoder).sample_rate,
        batch_size=config.batch_size, device=config.device, store=str(data_home() / "tokens"),
        output=output, verbose=config.verbose,
    )


def extract_tokens(config: BenchmarkConfig, data: Bunch, layers: Sequence[int] | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, FrozenEncoderTransformer]:
    """Token maps of the train and test clips, through the token store under ``<data home>/tokens``.

    ``layers``: a list of layers of one token-map shape, extracted in one
    pass as ``(n_clips, n_layers, n_tokens, dim)``; by default ``config.layer``
    as ``(n_clips, n_tokens, dim)``. Files (a folder data set) stream into the
    store and come back store-backed (``output="memmap"``), so memory does not
    grow with the number of clips.
    """
    paths = isinstance(data.X_train, ClipPaths)
    encoder = _encoder(config, config.layer if layers is None else list(layers), data.sample_rate,
                       output="memmap" if paths else "array")
    X_train = encoder.fit_transform(data.X_train if paths else list(data.X_train))
    X_test = encoder.transform(data.X_test if paths else list(data.X_test))
    return X_train, X_test, encoder


def resolve_multi_layers(config: BenchmarkConfig) -> list[int] | None:
    """The layers of the multi-layer probe: ``config.layers`` resolved, or None without them.

    ``"all"`` is every layer whose token map has the shape of ``config.layer``'s
    (for a ViT all its blocks; for YAMNet's default last layer the two
    1024-dimensional ones). A list is checked (range, one shape) and sorted.
    No weights are read except for encoders whose layout needs them.
    """
    if config.layers is None:
        return None
    if config.layers != "all":
        return _encoder(config, list(config.layers)).fit(None).layers_
    reference = _encoder(config, config.layer).fit(None)
    n_layers = _encoder(config, -1).fit(None).layers_[0] + 1
    shape = (reference.n_tokens_, reference.dim_)
    return [layer for layer in range(n_layers)
            if (lambda e: (e.n_tokens_, e.dim_))(_encoder(config, layer).fit(None)) == shape]


def _layer_tokens(config: BenchmarkConfig, data: Bunch, multi: list[int] | None):
    """Single-layer tokens (and their encoder) and, with ``multi``, the multi-layer tokens; one extraction
    when ``config.layer`` is one of ``multi``."""
    if multi is None:
        return (*extract_tokens(config, data), None, None)
    M_train, M_test, multi_encoder = extract_tokens(config, data, layers=multi)
    encoder = _encoder(config, config.layer, data.sample_rate).fit(None)
    if encoder.layers_[0] in multi:  # the single layer is a slice of the multi-layer tokens: no second pass
        i = multi.index(encoder.layers_[0])
        return M_train[:, i], M_test[:, i], encoder, M_train, M_test
    return (*extract_tokens(config, data), M_train, M_test)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        if isinstance(a, StoreArray):  # store-backed tokens: the store's configuration and the clips' keys
            h.update(a.store_id.encode())
            h.update(a.keys.tobytes())
        else:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:20]


def _fit_or_load(probe, X, Y, key: str, refit: bool):
    """Fit ``probe`` (or load it from the probe cache); returns (probe, fit seconds).

    Cache files are signed (:mod:`skprobe._signed`): one that does not match
    its signature is not unpickled but refitted and rewritten, with a warning.
    Writes are atomic with unique temporary names, so concurrent runs sharing
    a data home each see a complete file.
    """
    path = data_home() / "probes" / f"{key}.joblib"
    if path.is_file() and not refit:
        try:
            stored = load_signed(path)
            return stored["probe"], stored["fit_seconds"]
        except UntrustedFileError as exc:
            warnings.warn(f"probe cache: {exc}; fitting again", UserWarning, stacklevel=2)
    start = time.perf_counter()
    probe.fit(X, Y)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    dump_signed({"probe": probe, "fit_seconds": seconds}, path)
    return probe, seconds


def class_scores(probe, X, n_classes: int) -> np.ndarray:
    """Scores ``(n, n_classes)`` in the data set's class order (single-label probes know only
    the classes seen in training; a missing class gets a score below every other)."""
    scores = probe.decision_function(X)
    if scores.ndim == 1:
        scores = np.column_stack([-scores, scores])
    multilabel = getattr(probe, "_target_kind", None) == "multilabel"
    if multilabel and scores.shape[1] != n_classes:
        raise ValueError(f"the probe was trained on {scores.shape[1]} classes but the test labels have {n_classes}; "
                         "use tokens and labels of the data set the probe was trained on")
    if scores.shape[1] == n_classes:
        return scores
    if scores.shape[1] > n_classes or probe.classes_.astype(int).max() >= n_classes:
        raise ValueError(f"the probe was trained on {len(probe.classes_)} classes (indices up to "
                         f"{probe.classes_.astype(int).max()}) but the test labels have {n_classes}; "
                         "use tokens and labels of the data set the probe was trained on")
    full = np.full((len(scores), n_classes), scores.min() - 1.0)
    full[:, probe.classes_.astype(int)] = scores
    return full


def compute_scores(Y_test: np.ndarray, scores: np.ndarray, multilabel: bool) -> dict[str, float]:
    out = {
        "macro_map": macro_map(Y_test, scores),
        "micro_ap": micro_ap(Y_test, scores),
        "macro_roc_auc": macro_roc_auc(Y_test, scores),
    }
    if not multilabel:
        out["top1_accuracy"] = top1_accuracy(Y_test, scores)
    return out


def run_benchmark(config: BenchmarkConfig) -> dict:
    """Run the comparison and write ``results.json``, ``results.csv``, ``per_class_ap.csv`` and plots.

    Returns
    -------
    dict
        ``config``, ``data`` (sizes, classes), ``encoder`` (layout), ``runs``
        (one dict per probe and seed), ``summary`` (mean and std per probe),
        ``per_class_ap`` (mean per probe), ``files`` (written paths).
    """
    validate_config(config)
    out_dir = Path(config.output)
    multi = resolve_multi_layers(config)
    probes = list(config.probes) + [p for p in MULTI_LAYER_PROBES if multi is not None and p not in config.probes]
    data = load_benchmark_data(config)
    X_train, X_test, encoder, M_train, M_test = _layer_tokens(config, data, multi)
    Y_train = data.Y_train if data.multilabel else data.Y_train.argmax(axis=1)
    token_key = _digest(X_train, np.asarray(data.Y_train))
    multi_key = None if M_train is None else _digest(M_train, np.asarray(data.Y_train))
    probe_layers = {name: multi if name in MULTI_LAYER_PROBES and multi is not None else encoder.layers_
                    for name in probes}

    runs, fitted, layer_weights = [], {}, []
    jobs = [(name, seed) for name in probes for seed in range(config.seeds)]
    for name, seed in tqdm(jobs, desc="training probes", unit="fit", disable=not config.verbose):
        params = {"prefix_tokens": encoder.prefix_tokens_, "random_state": seed, "device": config.device,
                  **config.probe_params.get(name, {})}
        probe = PROBES[name](**params)
        on_multi = name in MULTI_LAYER_PROBES and M_train is not None
        X_fit, X_eval = (M_train, M_test) if on_multi else (X_train, X_test)
        key = hashlib.sha256(json.dumps(
            [multi_key if on_multi else token_key, name, sorted(probe.get_params().items()), __version__],
            default=str).encode()
        ).hexdigest()[:24]
        probe, seconds = _fit_or_load(probe, X_fit, Y_train, key, config.refit)
        scores = class_scores(probe, X_eval, len(data.class_names))
        if hasattr(probe, "layer_weights_"):
            layer_weights.append(probe.layer_weights_.tolist())
        row = {"probe": name, "seed": seed, "fit_seconds": seconds, "n_parameters": probe.n_trainable_parameters_,
               "per_class_ap": per_class_ap(data.Y_test, scores).tolist(),
               **compute_scores(data.Y_test, scores, data.multilabel)}
        if config.events and not on_multi:  # frame scores and the broadcast clip scores against the annotated events
            from .detection.benchmark import event_columns

            row.update(event_columns(probe, X_test, encoder.layouts_[0], data.events_test, data.class_names,
                                     len(data.X_test[0]) / data.sample_rate))
        runs.append(row)
        if seed == 0:
            fitted[name] = probe

    metric_names = [k for k in runs[0] if k not in ("probe", "seed", "per_class_ap")]
    summary = {}
    for name in probes:
        rows = [r for r in runs if r["probe"] == name]
        summary[name] = {m: {"mean": float(np.mean([r[m] for r in rows])), "std": float(np.std([r[m] for r in rows]))}
                         for m in metric_names}
    class_ap = {name: _mean_over_seeds([r["per_class_ap"] for r in runs if r["probe"] == name])
                for name in probes}
    result = {
        "skprobe": __version__,
        # Paths are left out: the JSON sits in the output folder, and files are listed relative to it.
        "config": {k: v for k, v in asdict(config).items() if k != "output"} | {"probes": probes},
        "data": {"name": data.name, "description": data.description, "multilabel": data.multilabel,
                 "n_train": len(X_train), "n_test": len(X_test), "class_names": data.class_names,
                 "test_positives": np.asarray(data.Y_test).sum(axis=0).tolist()},
        "encoder": {"name": encoder.encoder_spec_.name, "layers": encoder.layers_, "n_tokens": encoder.n_tokens_,
                    "dim": encoder.dim_, "prefix_tokens": encoder.prefix_tokens_,
                    "token_grid": list(encoder.token_grid_), "hop_seconds": encoder.hop_seconds_,
                    "multi_layers": multi},
        "probe_layers": probe_layers,
        "layer_weights": {"layers": probe_layers.get("cgp"), "per_seed": layer_weights} if layer_weights else None,
        "runs": runs,
        "summary": summary,
        "per_class_ap": class_ap,
    }
    if config.events:
        from .detection.benchmark import detection_section

        result["detection"] = detection_section(config, runs, fitted, encoder, X_test, data, out_dir)
    result["files"] = _write_outputs(out_dir, result, data, encoder, X_test, fitted)
    if config.events:
        result["files"] += result["detection"].pop("files")
    return result


def _mean_over_seeds(values: list[list[float]]) -> list[float]:
    """Column means; NaN (a class without test positives) stays NaN without a warning."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=0)
    count = finite.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan).tolist()


def _write_outputs(out_dir: Path, result: dict, data: Bunch, encoder, X_test, fitted) -> list[str]:
    from . import plotting

    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    path = out_dir / "results.json"
    _write_text(path, json.dumps(result, indent=2, default=float))
    files.append(path)
    path = out_dir / "results.csv"
    metrics = [k for k in result["runs"][0] if k not in ("probe", "seed", "per_class_ap")]
    lines = [",".join(["probe", "seed", *metrics])]
    lines += [",".join([r["probe"], str(r["seed"]), *(f"{r[m]:.6g}" for m in metrics)]) for r in result["runs"]]
    _write_text(path, "\n".join(lines) + "\n")
    files.append(path)
    path = out_dir / "per_class_ap.csv"
    names = list(result["per_class_ap"])
    rows = [",".join(["class", "test_positives", *names])]
    for c, cls in enumerate(data.class_names):
        rows.append(",".join([cls, str(result["data"]["test_positives"][c]),
                              *(f"{result['per_class_ap'][n][c]:.6g}" for n in names)]))
    _write_text(path, "\n".join(rows) + "\n")
    files.append(path)
    files.append(plotting.plot_per_class_ap(result, out_dir / "per_class_ap.png"))
    if result["config"]["save_probes"]:
        (out_dir / "probes").mkdir(exist_ok=True)
        for name, probe in fitted.items():  # safetensors + JSON: loads without running code (load_probe)
            files.append(save_probe(probe, out_dir / "probes" / f"{name}.safetensors"))
    if result.get("layer_weights"):
        files.append(plotting.plot_layer_weights(result, out_dir / "layer_weights.png"))
    if "prototypical" in fitted:
        files.append(plotting.plot_prototype_activations(
            fitted["prototypical"], encoder, X_test, data, out_dir / "prototype_activations.png"))
    return [str(Path(f).relative_to(out_dir)) for f in files]


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()))


def format_table(result: dict) -> str:
    """The summary as an aligned text table (mean ± std over seeds)."""
    summary = result["summary"]
    single = not result["data"]["multilabel"]
    cols = [("macro_map", "macro mAP"), ("micro_ap", "micro AP"), ("macro_roc_auc", "macro ROC-AUC")]
    if single:
        cols.append(("top1_accuracy", "top-1"))
    layers = {name: _layer_list(v) for name, v in (result.get("probe_layers") or {}).items()}
    width = max([8, *(len(v) + 2 for v in layers.values())])
    header = (f"{'probe':<14}{'layers':<{width}}" + "".join(f"{title:>18}" for _, title in cols)
              + f"{'fit s':>9}{'params':>12}")
    lines = [header, "-" * len(header)]
    for name, s in summary.items():
        cells = "".join(f"{s[k]['mean']:>11.3f} ± {s[k]['std']:.3f}" for k, _ in cols)
        lines.append(f"{name:<14}{layers.get(name, ''):<{width}}{cells}{s['fit_seconds']['mean']:>9.1f}"
                     f"{int(s['n_parameters']['mean']):>12,}")
    return "\n".join(lines)


def _layer_list(layers) -> str:
    """``[6, 7, 8, 9, 11]`` -> ``"6-9,11"``.

    >>> _layer_list([6, 7, 8, 9, 11]), _layer_list([13])
    ('6-9,11', '13')
    """
    layers = sorted(int(v) for v in layers)
    runs, start = [], 0
    for i in range(1, len(layers) + 1):
        if i == len(layers) or layers[i] != layers[i - 1] + 1:
            a, b = layers[start], layers[i - 1]
            runs.append(str(a) if a == b else f"{a}-{b}")
            start = i
    return ",".join(runs)
