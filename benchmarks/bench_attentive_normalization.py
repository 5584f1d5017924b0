"""The attentive probe's normalisation race on cached panel sources: what any margin would choose, and its test score.

For each source and seed it fits the default ``AttentiveProbeClassifier``
(which records the race in ``normalization_results_`` and the length choice
in ``length_results_``) and, for every challenger normalisation, the probe
with that normalisation fixed at the race's length. The final fit of the
default is exactly the fit with the chosen settings, so these fits give the
default's test score at any margin up to the one in force. Prints one JSON
line per source and seed; ``--margins`` then prints each margin's panel.

Usage (tokens from ``bench_defaults_panel.py --build-only``)::

    PYTHONPATH=$PWD python benchmarks/bench_attentive_normalization.py --cache /tmp/skprobe-panel \\
        --sources yamnet-last aisfx whisper-last --seeds 3 > /tmp/att-norm.jsonl
    python benchmarks/bench_attentive_normalization.py --margins /tmp/att-norm.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def score(probe, X_test, Y_test) -> float:
    from skprobe.metrics import macro_map

    if Y_test.ndim == 2:
        return float(macro_map(Y_test, probe.predict_proba(X_test)))
    return float(np.mean(probe.predict(X_test) == Y_test))


def run(sources: list[str], cache: Path, seeds: int) -> None:
    from skprobe import AttentiveProbeClassifier

    for source in sources:
        data = np.load(cache / f"{source}.npz")
        X, Y, X_test, Y_test = data["X_train"], data["Y_train"], data["X_test"], data["Y_test"]
        for seed in range(seeds):
            start = time.perf_counter()
            probe = AttentiveProbeClassifier(random_state=seed, device="cpu").fit(X, Y)
            row = {"source": source, "seed": seed, "test": score(probe, X_test, Y_test),
                   "fit_s": time.perf_counter() - start, "chosen": probe.normalize_tokens_,
                   "max_iter": probe.max_iter_, "length_results": probe.length_results_,
                   "normalization_results": probe.normalization_results_, "fixed": {}}
            race = probe.normalization_results_
            for mode in race["normalize_tokens"] if race else []:
                if mode == probe.normalize_tokens_ and race["max_iter"] == probe.max_iter_:
                    row["fixed"][mode] = row["test"]
                    continue
                fixed = AttentiveProbeClassifier(normalize_tokens=mode, max_iter=race["max_iter"], random_state=seed,
                                                 device="cpu").fit(X, Y)
                row["fixed"][mode] = score(fixed, X_test, Y_test)
            print(json.dumps(row), flush=True)


def margins(path: Path, values: list[float]) -> None:
    rows = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        rows[(row["source"], row["seed"])] = row
    for margin in values:
        print(f"margin {margin}")
        chosen = defaultdict(list)
        for (source, _), row in sorted(rows.items()):
            race, lengths = row["normalization_results"], row["length_results"]
            if race is None:
                chosen[source].append((row["chosen"], row["test"]))
                continue
            modes, held_out = race["normalize_tokens"], race["holdout_score"]
            rule_best = max(lengths["holdout_score"]) if lengths else held_out[0]
            challenger = 1 + int(np.argmax(held_out[1:]))
            if held_out[challenger] > rule_best + margin:
                chosen[source].append((modes[challenger], row["fixed"][modes[challenger]]))
            elif row["chosen"] == modes[0]:
                chosen[source].append((modes[0], row["test"]))
            else:
                raise ValueError(f"{source}: the run's margin chose a challenger; rerun with a larger margin")
        for source, picks in chosen.items():
            scores = [s for _, s in picks]
            print(f"  {source:<16}{np.mean(scores):.3f} ({' '.join(f'{s:.3f}' for s in scores)}) "
                  f"{[m for m, _ in picks]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="/tmp/skprobe-panel", type=Path)
    parser.add_argument("--sources", nargs="+", default=["yamnet-last"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--margins", type=Path, metavar="JSONL", help="summarise an earlier run and exit")
    parser.add_argument("--values", type=float, nargs="+", default=[0.0, 0.02, 0.03, 0.05])
    args = parser.parse_args()
    if args.margins:
        margins(args.margins, args.values)
        return
    import torch

    torch.set_num_threads(args.threads)
    run(args.sources, args.cache, args.seeds)


if __name__ == "__main__":
    main()
