"""Compare the linear, attentive and prototypical probes on one encoder and one labelled set.

The engine behind ``skprobe benchmark``: load the data, extract tokens once
(through the per-clip token cache), train every probe over several seeds,
score the test split and write the results (JSON, CSV) and plots. With
``layers``, the tokens of several layers are extracted in the same pass and
the convex gated probe (``cgp``) trains on them beside the single-layer probes.

:func:`run_benchmark` runs the steps; each step lives in :mod:`skprobe.experiments`
(configuration, data, tokens, the signed probe cache, scoring, outputs, the
table), and every name stays importable from here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch
from tqdm.auto import tqdm

from ._version import __version__
from .experiments.config import BUILTIN_DATASETS, MULTI_LAYER_PROBES, PROBES, BenchmarkConfig, validate_config
from .experiments.data import _can_stratify, load_benchmark_data  # noqa: F401
from .experiments.outputs import write_outputs, write_text
from .experiments.probe_cache import digest, fit_or_load, probe_code_fingerprint
from .experiments.scoring import class_scores, compute_scores, mean_over_seeds
from .experiments.table import format_table, layer_list  # noqa: F401
from .experiments.tokens import encoder_for, extract_tokens, resolve_multi_layers
from .metrics import per_class_ap

__all__ = ["BenchmarkConfig", "validate_config", "load_benchmark_data", "extract_tokens", "run_benchmark", "class_scores",
           "compute_scores", "resolve_multi_layers", "PROBES", "BUILTIN_DATASETS", "MULTI_LAYER_PROBES"]

# The private names of the steps before they moved to skprobe.experiments.
_encoder, _digest, _fit_or_load, _mean_over_seeds = encoder_for, digest, fit_or_load, mean_over_seeds
_write_outputs, _write_text, _layer_list = write_outputs, write_text, layer_list


def _layer_tokens(config: BenchmarkConfig, data: Bunch, multi: list[int] | None):
    """Single-layer tokens (and their encoder) and, with ``multi``, the multi-layer tokens; one extraction
    when ``config.layer`` is one of ``multi``."""
    if multi is None:
        return (*extract_tokens(config, data), None, None)
    M_train, M_test, multi_encoder = extract_tokens(config, data, layers=multi)
    encoder = encoder_for(config, config.layer, data.sample_rate).fit(None)
    if encoder.layers_[0] in multi:  # the single layer is a slice of the multi-layer tokens: no second pass
        i = multi.index(encoder.layers_[0])
        return M_train[:, i], M_test[:, i], encoder, M_train, M_test
    return (*extract_tokens(config, data), M_train, M_test)


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
    token_key = digest(X_train, np.asarray(data.Y_train))
    multi_key = None if M_train is None else digest(M_train, np.asarray(data.Y_train))
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
            [multi_key if on_multi else token_key, name, sorted(probe.get_params().items()), probe_code_fingerprint()],
            default=str).encode()
        ).hexdigest()[:24]
        probe, seconds = fit_or_load(probe, X_fit, Y_train, key, config.refit)
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
    class_ap = {name: mean_over_seeds([r["per_class_ap"] for r in runs if r["probe"] == name])
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
    result["files"] = write_outputs(out_dir, result, data, encoder, X_test, fitted)
    if config.events:
        result["files"] += result["detection"].pop("files")
    return result
