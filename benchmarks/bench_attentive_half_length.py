"""The attentive probe's length race against a faster, shorter candidate: half the epochs at twice the rate.

Where ``max_iter="auto"`` chooses the long length (60 epochs on 600 clips),
this fits, on the same held-out split the race uses, the race's winner
(its normalisation, the long length, the rule's learning rate) against the
same normalisation at the short length (30 epochs) with ``--factor`` times
the rate (the winner is trained again rather than its race score reused, so
that both candidates start from the same random state), and, for that candidate, the probe with those settings fixed on
all clips (its test score is what the default would score had the race
picked it). The default's own fit gives its test score. Prints one JSON line
per source and seed, then a table with ``--summary``.

Usage (tokens from ``bench_defaults_panel.py --build-only``)::

    PYTHONPATH=$PWD python benchmarks/bench_attentive_half_length.py --cache /tmp/skprobe-panel \\
        --sources whisper-last yamnet-l11 --seeds 3 > /tmp/att-half.jsonl
    python benchmarks/bench_attentive_half_length.py --summary /tmp/att-half.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # bench_defaults_panel: the panel's sources and scoring


def _probe_class(factor: float):
    import torch

    from skprobe import AttentiveProbeClassifier
    from skprobe.probes._holdout import holdout_choice
    from skprobe.probes._network import ProbeNetwork
    from skprobe.probes._training import train_module

    class HalfLengthRace(AttentiveProbeClassifier):
        """The default probe, recording the extra race in ``half_length_race_`` (its own fit unchanged)."""

        def _training_problem(self, network, tokens, device, resident, problem):
            network, tokens, resident = super()._training_problem(network, tokens, device, resident, problem)
            self.half_length_race_ = None
            lengths = (self.length_results_ or {}).get("max_iter")
            if not lengths or self.max_iter_ <= min(lengths):
                return network, tokens, resident
            mode, long_, short = network.normalize, self.max_iter_, min(lengths)

            def train(module, source, targets, plan, *, criterion, resident):
                if plan.max_iter == short:
                    plan = replace(plan, learning_rate=plan.learning_rate * factor)
                return train_module(module, source, targets, plan, criterion=criterion, resident=resident)

            untrained = ProbeNetwork(network.head, network.prefix_tokens, "none")
            with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
                _, scores, n_holdout = holdout_choice(
                    untrained, tokens, resident, problem.targets, [(mode, long_), (mode, short)],
                    plan=replace(problem.plan, early_stopping=False, verbose=0), criterion=problem.criterion,
                    n_default=1, margin=0.0, batch_size=problem.batch_size, train=train)
            self.half_length_race_ = {"normalize_tokens": mode, "max_iter": [long_, short], "holdout_score": scores,
                                      "n_holdout": n_holdout}
            return network, tokens, resident

    return HalfLengthRace


def measure(source: str, seed: int, cache: Path, factor: float) -> dict:
    from bench_defaults_panel import load_source, score

    from skprobe import AttentiveProbeClassifier

    X_train, Y_train, X_test, Y_test, multilabel = load_source(source, cache)
    y = Y_train if multilabel else Y_train.argmax(axis=1)
    start = time.perf_counter()
    probe = _probe_class(factor)(random_state=seed, device="cpu").fit(X_train, y)
    row = {"source": source, "seed": seed, "factor": factor, "default": score(probe, X_test, Y_test, multilabel),
           "fit_s": round(time.perf_counter() - start, 1), "max_iter": probe.max_iter_,
           "normalize_tokens": probe.normalize_tokens_, "learning_rate": probe.learning_rate_,
           "race": probe.half_length_race_}
    if probe.half_length_race_:
        fixed = AttentiveProbeClassifier(normalize_tokens=probe.normalize_tokens_,
                                         max_iter=probe.half_length_race_["max_iter"][1],
                                         learning_rate=probe.learning_rate_ * factor, random_state=seed,
                                         device="cpu").fit(X_train, y)
        row["candidate"] = score(fixed, X_test, Y_test, multilabel)
    return row


def summary(path: str) -> None:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    print("| source | seed | race's length | held-out: long / short | test: default / short |")
    print("|---|---|---|---|---|")
    for r in rows:
        race = r["race"]
        if race is None:
            print(f"| {r['source']} | {r['seed']} | {r['max_iter']} (short: no race) | | {r['default']:.3f} / |")
            continue
        long_, short = race["holdout_score"]
        print(f"| {r['source']} | {r['seed']} | {r['max_iter']} | {long_:.3f} / {short:.3f} | "
              f"{r['default']:.3f} / {r['candidate']:.3f} |")
    raced = [r for r in rows if r["race"]]
    wins = sum(r["race"]["holdout_score"][1] > r["race"]["holdout_score"][0] for r in raced)
    print(f"\nthe short candidate leads on held-out clips in {wins} of {len(raced)} races")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/skprobe-panel"))
    parser.add_argument("--sources", nargs="+", default=["whisper-last"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--factor", type=float, default=2.0, help="the short candidate's rate over the rule's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--summary", metavar="JSONL", help="print the table of an earlier run and exit")
    args = parser.parse_args(argv)
    if args.summary:
        summary(args.summary)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    for source in args.sources:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            print(json.dumps(measure(source, seed, args.cache, args.factor)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
