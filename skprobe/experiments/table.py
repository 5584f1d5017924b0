"""The summary of a benchmark run as an aligned text table."""

from __future__ import annotations

__all__ = ["format_table"]


def format_table(result: dict) -> str:
    """The summary as an aligned text table (mean ± std over seeds)."""
    summary = result["summary"]
    single = not result["data"]["multilabel"]
    cols = [("macro_map", "macro mAP"), ("micro_ap", "micro AP"), ("macro_roc_auc", "macro ROC-AUC")]
    if single:
        cols.append(("top1_accuracy", "top-1"))
    layers = {name: layer_list(v) for name, v in (result.get("probe_layers") or {}).items()}
    width = max([8, *(len(v) + 2 for v in layers.values())])
    header = (f"{'probe':<14}{'layers':<{width}}" + "".join(f"{title:>18}" for _, title in cols)
              + f"{'fit s':>9}{'params':>12}")
    lines = [header, "-" * len(header)]
    for name, s in summary.items():
        cells = "".join(f"{s[k]['mean']:>11.3f} ± {s[k]['std']:.3f}" for k, _ in cols)
        lines.append(f"{name:<14}{layers.get(name, ''):<{width}}{cells}{s['fit_seconds']['mean']:>9.1f}"
                     f"{int(s['n_parameters']['mean']):>12,}")
    return "\n".join(lines)


def layer_list(layers) -> str:
    """``[6, 7, 8, 9, 11]`` -> ``"6-9,11"``.

    >>> layer_list([6, 7, 8, 9, 11]), layer_list([13])
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
