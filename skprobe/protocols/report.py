"""What a protocol run writes and prints: result files, plots and the table that names the protocol."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .._files import atomic_write
from ..probes import save_probe

__all__ = ["format_protocol_table", "write_outputs", "METRIC_TITLES"]

METRIC_TITLES = {"macro_map": "macro mAP", "micro_ap": "micro AP", "macro_roc_auc": "macro ROC-AUC",
                 "top1_accuracy": "accuracy"}
#: Above this many classes the per-class bar chart is not drawn (per_class_ap.csv holds the numbers).
MAX_PLOTTED_CLASSES = 60


def format_protocol_table(result: dict) -> str:
    """The result as text: the protocol, its metric and recipe, one row per probe, then the stages' times.

    Values are the mean ± standard deviation over seeds of the mean over
    folds; the protocol's own metric is the first column.
    """
    p, d, enc = result["protocol"], result["data"], result["encoder"]
    seeds = result["config"]["seeds"]
    recipe = ("the paper's (batch 128, 30 epochs, raw tokens, learning rate chosen on validation clips)"
              if p["recipe"] == "paper" else "skprobe's defaults")
    folds = len(p["folds"])
    lines = [f"protocol: {p['title']} ({p['name']}) -- {p['split']}",
             f"metric: {METRIC_TITLES[p['metric']]}; recipe: {recipe}; {enc['name']} layer {enc['layers'][0]}; "
             f"{seeds} seed(s){f' x {folds} folds' if folds > 1 else ''}",
             "clips: " + ", ".join(f"{k} {v:,}" for k, v in d["splits"].items())
             + f"; {len(d['class_names'])} classes"
             + (f"; {d['n_groups']:,} source groups, kept whole in the probes' own splits"
                if d.get("n_groups") else "")]
    missing = sum(d["missing"].values())
    if missing:
        per = ", ".join(f"{k} {v:,}" for k, v in d["missing"].items() if v)
        lines.append(f"missing: {missing:,} listed clips are not on disk ({per}; e.g. "
                     f"{', '.join(d['missing_examples'][:3])}): scores are on the clips found")
    differ = {k: (d["splits"].get(k, 0), v) for k, v in d["official_sizes"].items()
              if k != "classes" and d["splits"].get(k, 0) != v}
    if d["official_sizes"].get("classes", len(d["class_names"])) != len(d["class_names"]):
        differ["classes"] = (len(d["class_names"]), d["official_sizes"]["classes"])
    if differ and not missing:
        lines.append("note: split sizes differ from the published set ("
                     + ", ".join(f"{k} {got:,} vs {want:,}" for k, (got, want) in differ.items()) + ")")
    metrics = p["metrics"]
    header = f"{'probe':<14}" + "".join(f"{('*' if m == p['metric'] else '') + METRIC_TITLES[m]:>18}"
                                        for m in metrics) + f"{'fit s':>9}{'params':>12}"
    lines += ["", header, "-" * len(header)]
    for name, s in result["summary"].items():
        cells = "".join(f"{s[m]['mean']:>11.3f} ± {s[m]['std']:.3f}" for m in metrics)
        lines.append(f"{name:<14}{cells}{s['fit_seconds']['mean']:>9.1f}{int(s['n_parameters']['mean']):>12,}")
    lines.append(f"* the protocol's metric (the paper's for {p['title']})")
    for name, choices in p["learning_rates"].items():
        rates = sorted({c["learning_rate"] for c in choices})
        lines.append(f"learning rate chosen for {name}: {', '.join(f'{r:g}' for r in rates)}")
    t, x = result["timings"], result["extraction"]
    where = f" on {x['workers']} Dask worker(s)" if x["workers"] else ""
    lines.append(f"stages: read {t['read']:.1f} s, extract {t['extract']:.1f} s ({x['clips']:,} clips, "
                 f"{x['encoded']:,} encoded{where}), train {t['train']:.1f} s, score {t['score']:.1f} s"
                 + (f", write {t['write']:.1f} s" if "write" in t else ""))
    return "\n".join(lines)


def write_outputs(out_dir: Path, result: dict, fitted: dict, encoder, plot_data, X_test) -> list[str]:
    """``results.json`` (written last), ``results.csv``, ``per_class_ap.csv``, plots and saved probes."""
    from .. import plotting

    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    metrics = [*result["protocol"]["metrics"], "fit_seconds", "n_parameters"]
    lines = [",".join(["probe", "fold", "seed", *metrics])]
    lines += [",".join([r["probe"], r["fold"], str(r["seed"]), *(f"{r[m]:.6g}" for m in metrics)])
              for r in result["runs"]]
    files.append(_write_text(out_dir / "results.csv", "\n".join(lines) + "\n"))
    names = list(result["per_class_ap"])
    rows = [",".join(["class", "test_positives", *names])]
    for c, cls in enumerate(result["data"]["class_names"]):
        cell = f'"{cls}"' if "," in cls else cls
        rows.append(",".join([cell, str(result["data"]["test_positives"][c]),
                              *(f"{result['per_class_ap'][n][c]:.6g}" for n in names)]))
    files.append(_write_text(out_dir / "per_class_ap.csv", "\n".join(rows) + "\n"))
    if len(result["data"]["class_names"]) <= MAX_PLOTTED_CLASSES:
        files.append(plotting.plot_per_class_ap(result, out_dir / "per_class_ap.png"))
    last_fold = result["protocol"]["folds"][-1]
    if ("prototypical", last_fold) in fitted:
        files.append(plotting.plot_prototype_activations(
            fitted[("prototypical", last_fold)], encoder, X_test, plot_data, out_dir / "prototype_activations.png"))
    if result["config"]["save_probes"]:
        (out_dir / "probes").mkdir(exist_ok=True)
        single = len(result["protocol"]["folds"]) == 1
        for (name, fold), probe in fitted.items():
            stem = name if single else f"{name}-{fold}"
            files.append(save_probe(probe, out_dir / "probes" / f"{stem}.safetensors"))
    path = out_dir / "results.json"
    files.append(path)
    result["timings"]["write"] = time.perf_counter() - start
    result["files"] = [str(Path(f).relative_to(out_dir)) for f in files]
    _write_text(path, json.dumps(result, indent=2, default=float))
    return result["files"]


def _write_text(path: Path, text: str) -> Path:
    atomic_write(path, lambda fh: fh.write(text.encode()))
    return path
