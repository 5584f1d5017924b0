"""Figures of the benchmark: per-class AP, prototype activations over the token grid, layer weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

# Figures are built without pyplot, so the user's matplotlib backend is never switched.
from matplotlib.figure import Figure

from ._files import atomic_write

__all__ = ["plot_layer_weights", "plot_per_class_ap", "plot_prototype_activations", "prototype_activations_figure",
           "plot_frame_scores"]

_COLOURS = {"linear": "#7f7f7f", "attentive": "#1f77b4", "prototypical": "#d62728", "cgp": "#9467bd"}


def plot_per_class_ap(result: dict, path: str | Path) -> Path:
    """Grouped bars of each probe's average precision per class (mean over seeds).

    Parameters
    ----------
    result : dict
        The dict returned by :func:`skprobe.benchmark.run_benchmark`.
    path : path-like
        PNG file to write.
    """
    names = list(result["per_class_ap"])
    classes = result["data"]["class_names"]
    width = 0.8 / len(names)
    fig = Figure(figsize=(max(8, 0.55 * len(classes) * len(names) / 2 + 3), 4.2))
    ax = fig.subplots()
    x = np.arange(len(classes))
    for i, name in enumerate(names):
        ap = np.asarray(result["per_class_ap"][name], dtype=float)
        mean = result["summary"][name]["macro_map"]["mean"]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, np.nan_to_num(ap), width,
               label=f"{name} (macro mAP {mean:.3f})", color=_COLOURS.get(name))
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.set_ylabel("average precision (test)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{result['encoder']['name']} on {result['data']['name']}: AP per class")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_layer_weights(result: dict, path: str | Path) -> Path:
    """Bars of the convex gated probe's layer weights (``layer_weights_``), mean and spread over seeds.

    Where in depth the evidence for the classes sits: the gate's softmax
    weight of each encoder layer, one dot per seed over the mean's bar.

    Parameters
    ----------
    result : dict
        The dict returned by :func:`skprobe.benchmark.run_benchmark`, with a
        ``layer_weights`` entry (``layers`` and ``per_seed``).
    path : path-like
        PNG file to write.
    """
    layers = result["layer_weights"]["layers"]
    weights = np.asarray(result["layer_weights"]["per_seed"], dtype=float)  # seeds, layers
    fig = Figure(figsize=(max(4.0, 0.45 * len(layers) + 2), 3.2))
    ax = fig.subplots()
    x = np.arange(len(layers))
    ax.bar(x, weights.mean(axis=0), 0.7, color=_COLOURS["cgp"], alpha=0.8, label="mean over seeds")
    for seed_weights in weights:
        ax.plot(x, seed_weights, "o", color="black", markersize=3)
    ax.axhline(1.0 / len(layers), color="grey", lw=1, ls="--", label="uniform (the gate's start)")
    ax.set_xticks(x, [str(v) for v in layers])
    ax.set_xlabel("encoder layer")
    ax.set_ylabel("gate weight (softmax)")
    ax.set_title(f"{result['encoder']['name']} on {result['data']['name']}: convex gated probe's layer weights",
                 fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _waveform(item, sample_rate: int) -> np.ndarray:
    """A test clip's samples: the waveform itself, or its audio file decoded (lazy data sets hold paths)."""
    if isinstance(item, (str, os.PathLike)):
        from .audio import read_audio

        return read_audio(item, sample_rate)[0]
    return np.asarray(item)


def _log_mel(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    import torchaudio

    # About 32 ms windows and 10 ms hops at any rate, so the 64 mel filters never fall between FFT bins.
    n_fft = 1 << max(8, int(np.ceil(np.log2(0.032 * sample_rate))))
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=max(1, sample_rate // 100),
                                               n_mels=64)
    return torch.log(mel(torch.as_tensor(wav, dtype=torch.float32)) + 1e-6).numpy()


def plot_prototype_activations(probe, encoder, X_test: np.ndarray, data, path: str | Path,
                               n_clips: int = 3) -> Path:
    """For a few test clips: the log-mel spectrogram and, for each true class, the class
    evidence of the prototypical probe over the encoder's token grid, with the annotated
    event onsets and offsets marked.

    A time x frequency grid is drawn as a heat map; a time-only layout (one
    frequency patch, e.g. Whisper, Dasheng, CREPE) as a curve over time.
    Uses :meth:`PrototypicalProbeClassifier.class_activation_maps` and the
    encoder's :class:`~skprobe.encoders.TokenLayout`.
    """
    return _save(prototype_activations_figure(probe, encoder, X_test, data, n_clips), path)


def prototype_activations_figure(probe, encoder, X_test: np.ndarray, data, n_clips: int = 3) -> Figure:
    """The figure of :func:`plot_prototype_activations`, not yet saved."""
    layout = encoder.layouts_[0]
    # Clips with the most events show the most; ties broken by index for reproducibility.
    Y = np.asarray(data.Y_test)
    order = sorted(range(len(Y)), key=lambda i: (-Y[i].sum(), i))[:n_clips]
    maps = probe.class_activation_maps(X_test[order])  # (n, patches, classes)
    grids = layout.to_grid(maps)  # (n, time, freq, classes)
    n_rows = sum(1 + int(Y[i].sum()) for i in order)
    fig = Figure(figsize=(9, 1.35 * n_rows))
    axes = fig.subplots(n_rows, 1, squeeze=False)
    axes = axes[:, 0]
    seconds = layout.n_time * layout.hop_seconds
    times = (np.arange(layout.n_time) + 0.5) * layout.hop_seconds  # token centres
    row = 0
    for k, i in enumerate(order):
        events = data.events_test[i] if data.events_test is not None else []
        ax = axes[row]
        wav = _waveform(data.X_test[i], data.sample_rate)
        spec = _log_mel(wav, data.sample_rate)
        ax.imshow(spec, origin="lower", aspect="auto", cmap="magma",
                  extent=(0, len(wav) / data.sample_rate, 0, spec.shape[0]))
        ax.set_ylabel("mel", fontsize=7)
        ax.set_title(f"test clip {i}: " + ", ".join(e["class"] for e in events) if events else f"test clip {i}",
                     fontsize=8, loc="left")
        row += 1
        for c in np.flatnonzero(Y[i]):
            ax = axes[row]
            shade = "white"
            if layout.n_freq == 1:
                ax.plot(times, grids[k, :, 0, c], color=_COLOURS["prototypical"], lw=0.8)
                ax.set_xlim(0, seconds)
                ax.set_ylabel("evidence", fontsize=7)
                ax.grid(axis="y", alpha=0.3)
                shade = "grey"
            else:
                grid = grids[k, :, :, c].T  # (freq, time)
                im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis",
                               extent=(0, seconds, 0, layout.n_freq))
                ax.set_ylabel("freq\npatch", fontsize=7)
                fig.colorbar(im, ax=ax, pad=0.01, fraction=0.03)
            for e in events:
                if e["class"] == data.class_names[c]:
                    ax.axvspan(e["onset"], e["offset"], color=shade, alpha=0.25)
                    ax.axvline(e["onset"], color=shade, lw=1)
                    ax.axvline(e["offset"], color=shade, lw=1, ls="--")
            ax.set_title(f"prototype evidence for '{data.class_names[c]}' (annotated event shaded)",
                         fontsize=8, loc="left")
            row += 1
    axes[-1].set_xlabel("time (s)")
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    fig.tight_layout()
    return fig


def plot_frame_scores(curves: dict, hop_seconds: float, events, class_names, path: str | Path, *,
                      title: str = "", duration: float | None = None) -> Path:
    """Frame scores of one clip against its annotated events: one panel per annotated class.

    Parameters
    ----------
    curves : dict of str to ndarray of shape (n_frames, n_classes)
        Frame probabilities to draw, by label (e.g. ``"prototypical frames"``).
    hop_seconds : float
    events : list of dict
        The clip's events (``class``, ``onset``, ``offset``), shaded.
    class_names : list of str
    path : path-like
        PNG file to write.
    """
    labels = sorted({e["class"] for e in events}, key=list(class_names).index)
    fig = Figure(figsize=(9, 1.6 * max(1, len(labels)) + 0.4))
    axes = fig.subplots(max(1, len(labels)), 1, squeeze=False)[:, 0]
    for ax, label in zip(axes, labels):
        c = list(class_names).index(label)
        for e in events:
            if e["class"] == label:
                ax.axvspan(e["onset"], e["offset"], color="#2ca02c", alpha=0.2, lw=0)
        for name, scores in curves.items():
            times = np.arange(len(scores) + 1) * hop_seconds
            ax.stairs(scores[:, c], times, label=name, color=_COLOURS.get(name.split()[0]),
                      ls="--" if "broadcast" in name else "-", lw=1.3)
        ax.axhline(0.5, color="black", lw=0.6, alpha=0.5)
        ax.set_ylim(0, 1)
        ax.set_xlim(0, duration if duration is not None else len(next(iter(curves.values()))) * hop_seconds)
        ax.set_ylabel("probability", fontsize=7)
        ax.set_title(f"'{label}' (annotated event shaded)", fontsize=8, loc="left")
    axes[0].legend(loc="upper right", fontsize=7, ncol=2)
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fig.savefig(fh, dpi=80, format="png"))
    return path
