"""What a benchmark run writes: ``results.json``, ``results.csv``, ``per_class_ap.csv``, plots, probe files."""

from __future__ import annotations

import json
from pathlib import Path

from sklearn.utils import Bunch

from .._files import atomic_write
from ..probes import save_probe

__all__ = ["write_outputs", "write_text"]


def write_outputs(out_dir: Path, result: dict, data: Bunch, encoder, X_test, fitted) -> list[str]:
    from .. import plotting

    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    path = out_dir / "results.json"
    write_text(path, json.dumps(result, indent=2, default=float))
    files.append(path)
    path = out_dir / "results.csv"
    metrics = [k for k in result["runs"][0] if k not in ("probe", "seed", "per_class_ap")]
    lines = [",".join(["probe", "seed", *metrics])]
    lines += [",".join([r["probe"], str(r["seed"]), *(f"{r[m]:.6g}" for m in metrics)]) for r in result["runs"]]
    write_text(path, "\n".join(lines) + "\n")
    files.append(path)
    path = out_dir / "per_class_ap.csv"
    names = list(result["per_class_ap"])
    rows = [",".join(["class", "test_positives", *names])]
    for c, cls in enumerate(data.class_names):
        rows.append(",".join([cls, str(result["data"]["test_positives"][c]),
                              *(f"{result['per_class_ap'][n][c]:.6g}" for n in names)]))
    write_text(path, "\n".join(rows) + "\n")
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


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()))
