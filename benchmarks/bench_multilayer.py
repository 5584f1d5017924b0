"""The convex gated probe (CGP) on several layers against the prototypical probe on each layer (issue 23).

Tokens: YAMNet on the event scenes (600 train / 300 test scenes, 17 classes),
the panel sources of ``bench_defaults_panel.py`` (cached under ``--cache``):
``yamnet-l6-11``, layers 6-11 (YAMNet's six 512-dim blocks, token maps of one
shape, 63 x 4 tokens), and ``yamnet-last``, the last layer (13: 32 x 2 tokens x
1,024). For seeds ``0 .. --seeds - 1`` it fits, with their defaults, the CGP on
layers 6-11, the prototypical probe on each of those layers and on the last
layer, and prints each one's test macro mAP (mean ± std over seeds, and per
seed), fit seconds and the CGP's layer weights. Writes every run to ``-o``.

``--source whisper`` does the same on Whisper tiny.en's six residual streams
(``whisper-layers``: the stem output, blocks 1-4 and the final LayerNorm, 500
tokens x 384 each); its last layer (5) is one of the six, so no other source
is read.

``--cgp`` scores other CGP settings instead (JSON dicts of parameters;
``'{}'`` is the default), e.g. the number of prototypes against BAT's 10,000::

    PYTHONPATH=$PWD python benchmarks/bench_multilayer.py --threads 2
    PYTHONPATH=$PWD python benchmarks/bench_multilayer.py --threads 2 --source whisper
    PYTHONPATH=$PWD python benchmarks/bench_multilayer.py --cgp '{"n_prototypes": 85}' '{"n_prototypes": 10000}'
    PYTHONPATH=$PWD python benchmarks/bench_multilayer.py --cgp '{}' --warmup 0.05
    PYTHONPATH=$PWD python benchmarks/bench_multilayer.py --source whisper --cgp '{}' --cgp-layers 1  # one stream

``--warmup F`` trains the CGP with a linear warm-up over the first ``F`` of
the optimiser steps before the cosine decay (BAT warms up for 500 of 20,000
steps); the training engine has no warm-up, so the script patches its
schedule for the measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_defaults_panel import load_source  # noqa: E402

from skprobe import ConvexGatedProbeClassifier, PrototypicalProbeClassifier  # noqa: E402
from skprobe.metrics import macro_map  # noqa: E402

#: --source: (multi-layer panel source, its layer numbers, last-layer panel source, the last layer's number).
#: Whisper's last residual stream (5, the final LayerNorm) is the last layer of ``whisper-layers`` itself.
SOURCES = {"yamnet": ("yamnet-l6-11", [6, 7, 8, 9, 10, 11], "yamnet-last", 13),
           "whisper": ("whisper-layers", [0, 1, 2, 3, 4, 5], None, 5)}
LAYERS, LAST = SOURCES["yamnet"][1], SOURCES["yamnet"][3]


def load_mapped(name: str, cache: Path):
    """A panel source with its tokens as read-only float16 memory maps (``.npy`` beside the panel's ``.npz``):
    several runs share them through the page cache, and the probes read them a batch at a time."""
    paths = {key: cache / f"{name}-{key}.npy" for key in ("X_train", "Y_train", "X_test", "Y_test")}
    if not all(path.is_file() for path in paths.values()):
        X_train, Y_train, X_test, Y_test, _ = load_source(name, cache)
        for key, array in zip(paths, (X_train, Y_train, X_test, Y_test)):
            tmp = paths[key].with_suffix(".tmp.npy")
            np.save(tmp, array)
            tmp.rename(paths[key])
    X_train, Y_train, X_test, Y_test = (np.load(paths[key], mmap_mode="r") for key in paths)
    return X_train, np.asarray(Y_train), X_test, np.asarray(Y_test)


def fit_score(Probe, params: dict, X_train, Y_train, X_test, Y_test, seed: int) -> dict:
    probe = Probe(**params, random_state=seed, device="cpu")
    start = time.perf_counter()
    probe.fit(X_train, Y_train)
    seconds = time.perf_counter() - start
    out = {"macro_map": float(macro_map(Y_test, probe.decision_function(X_test))), "fit_s": seconds,
           "learning_rate": probe.learning_rate_, "normalize_tokens": probe.normalize_tokens_,
           "n_steps": probe.n_steps_}
    if hasattr(probe, "layer_weights_"):
        out["layer_weights"] = [round(float(w), 4) for w in probe.layer_weights_]
        out["n_prototypes"] = probe.n_prototypes_
    return out


def summary(name: str, runs: list[dict]) -> str:
    scores = [r["macro_map"] for r in runs]
    line = (f"{name:<44}{np.mean(scores):>7.3f} ± {np.std(scores):.3f}  ({' '.join(f'{v:.3f}' for v in scores)})"
            f"{np.mean([r['fit_s'] for r in runs]):>8.1f} s")
    if "layer_weights" in runs[0]:
        line += "  weights " + " ".join(f"{w:.2f}" for w in np.mean([r["layer_weights"] for r in runs], axis=0))
    return line


def patch_warmup(fraction: float) -> None:
    """Replace the engine's cosine schedule by linear warm-up over ``fraction`` of the steps, then cosine."""
    from skorch.callbacks import LRScheduler

    from skprobe.probes import _training

    original = _training.LRScheduler

    def scheduler(policy, T_max, step_every):
        warm = max(1, round(fraction * T_max))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, T_max - warm)))

        return LRScheduler(policy=torch.optim.lr_scheduler.LambdaLR, lr_lambda=factor, step_every=step_every)

    _training.LRScheduler = scheduler
    _training._ORIGINAL_SCHEDULER = original


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. seeds - 1")
    parser.add_argument("--first-seed", type=int, default=0, help="start at this seed (to add seeds to a run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default="/tmp/skprobe-panel")
    parser.add_argument("--cgp", nargs="+", metavar="JSON", help="score these CGP settings only")
    parser.add_argument("--cgp-layers", nargs="+", type=int,
                        help="train the CGP on these layers of --source only (one layer: a 3-D input)")
    parser.add_argument("--warmup", type=float, default=0.0, help="CGP: share of steps of linear warm-up")
    parser.add_argument("--source", default="yamnet", choices=list(SOURCES),
                        help="yamnet: layers 6-11 (and 13, the last); whisper: residual streams 0-5")
    parser.add_argument("--single-layers", nargs="*", type=int,
                        help="layers of the prototypical probe (default: every layer of --source and its last)")
    parser.add_argument("--no-cgp", action="store_true", help="only the prototypical probe on single layers")
    parser.add_argument("-o", "--output", default="/tmp/skprobe-panel/multilayer.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.warmup:
        patch_warmup(args.warmup)
    multi, layers, last_source, last = SOURCES[args.source]
    single_layers = args.single_layers if args.single_layers is not None else list(dict.fromkeys([*layers, last]))
    X_train, Y_train, X_test, Y_test = load_mapped(multi, Path(args.cache))
    print(f"{args.source} layers {layers[0]}-{layers[-1]}: train {X_train.shape} {X_train.dtype}, "
          f"{Y_train.shape[1]} classes; torch threads {torch.get_num_threads()}", flush=True)
    results: dict[str, list[dict]] = {}
    settings = args.cgp if args.cgp else [] if args.no_cgp else ["{}"]
    cgp_train, cgp_test, cgp_name = X_train, X_test, f"{layers[0]}-{layers[-1]}"
    if args.cgp_layers:  # a copy of the chosen layers (one layer: (n, T, D))
        picked = [layers.index(layer) for layer in args.cgp_layers]
        picked = picked[0] if len(picked) == 1 else picked
        cgp_train, cgp_test = (np.ascontiguousarray(X[:, picked]) for X in (X_train, X_test))
        cgp_name = " ".join(map(str, args.cgp_layers))
    for spec in settings:
        name = f"cgp layers {cgp_name} {spec}" + (f" warm-up {args.warmup:g}" if args.warmup else "")
        results[name] = []
        for seed in range(args.first_seed, args.seeds):
            results[name].append(fit_score(ConvexGatedProbeClassifier, json.loads(spec), cgp_train, Y_train, cgp_test,
                                           Y_test, seed))
            Path(args.output).write_text(json.dumps(results, indent=1))
        print(summary(name, results[name]), flush=True)
    if args.cgp:
        return 0
    for layer in single_layers:
        if layer not in layers:
            train, _, test, _ = load_mapped(last_source, Path(args.cache))
        else:
            i = layers.index(layer)
            train, test = X_train[:, i], X_test[:, i]
        name = f"prototypical layer {layer}"
        results[name] = []
        for seed in range(args.first_seed, args.seeds):
            results[name].append(fit_score(PrototypicalProbeClassifier, {}, train, Y_train, test, Y_test, seed))
            Path(args.output).write_text(json.dumps(results, indent=1))
        print(summary(name, results[name]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
