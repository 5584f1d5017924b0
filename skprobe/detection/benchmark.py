"""Detection metrics for ``skprobe benchmark --events``: frame scores against annotated scenes.

For every fitted probe the test scenes are scored two ways, side by side:

- ``frames``: the probe's frame scores (:meth:`predict_frame_proba`), which
  localise events in time;
- ``broadcast``: the probe's clip probabilities copied to every frame, the
  baseline without localisation (it knows *what* is in a scene, not *when*).

Both go through the same metrics (:func:`~skprobe.detection.detection_metrics`).
:func:`long_recording_run` then concatenates test scenes into long recordings
and runs :func:`~skprobe.detection.detect_events` on them end to end.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from .detect import detect_events
from .evaluation import detection_metrics

__all__ = ["DETECTION_METRICS", "scene_frame_scores", "scene_metrics", "long_recording_run", "margin_summary"]

#: Metric keys of the benchmark's detection columns.
DETECTION_METRICS = ("psds1", "psds2", "event_f1", "segment_f1")


def scene_frame_scores(probe, X_test, layout) -> dict[str, np.ndarray]:
    """``{"frames": (n, T, C), "broadcast": (n, T, C)}`` probabilities of the test clips."""
    frames = probe.predict_frame_proba(X_test, layout=layout)
    clip = probe.predict_proba(X_test)
    return {"frames": frames, "broadcast": np.repeat(clip[:, None, :], frames.shape[1], axis=1)}


def scene_metrics(scores: np.ndarray, events, class_names, hop_seconds: float, clip_seconds: float,
                  median_filter=None) -> dict[str, float]:
    """:func:`detection_metrics` of per-clip frame scores ``(n, T, C)`` against each clip's event dicts."""
    keys = [f"scene{i:05d}" for i in range(len(scores))]
    return detection_metrics(dict(zip(keys, scores)), dict(zip(keys, events)), dict.fromkeys(keys, clip_seconds),
                             hop_seconds=hop_seconds, class_names=class_names, median_filter=median_filter)


def event_columns(probe, X_test, layout, events, class_names, clip_seconds: float,
                  median_filter=None) -> dict[str, float]:
    """The benchmark's detection columns of one fitted probe: ``<metric>`` (frames) and ``<metric>_broadcast``."""
    out = {}
    for kind, scores in scene_frame_scores(probe, X_test, layout).items():
        metrics = scene_metrics(scores, events, class_names, layout.hop_seconds, clip_seconds, median_filter)
        suffix = "" if kind == "frames" else "_broadcast"
        out.update({f"{m}{suffix}": metrics[m] for m in DETECTION_METRICS})
    return out


def margin_summary(runs: list[dict], probes) -> dict:
    """Per probe and metric: frames minus broadcast, per seed, and its mean and standard deviation."""
    out = {}
    for name in probes:
        rows = [r for r in runs if r["probe"] == name and "psds1" in r]
        if rows:
            out[name] = {m: {"per_seed": [r[m] - r[f"{m}_broadcast"] for r in rows],
                             "mean": float(np.mean([r[m] - r[f"{m}_broadcast"] for r in rows])),
                             "std": float(np.std([r[m] - r[f"{m}_broadcast"] for r in rows]))}
                         for m in DETECTION_METRICS}
    return out


def long_recording_run(model, X_test, events, class_names, sample_rate: int, clip_seconds: float, *,
                       minutes: float = 10.0, median_filter=None, verbose: int = 0) -> dict:
    """Concatenate test scenes into recordings of ``minutes`` and detect events in them end to end.

    The recordings are written as WAV files to a temporary folder and go
    through :func:`detect_events` like any user's files (streamed in
    windows, stitched, thresholded at 0.5); their stitched frame scores are
    scored against the scenes' events, shifted to their place in the recording.

    Returns
    -------
    dict
        ``n_recordings``, ``minutes``, ``audio_seconds``, ``seconds`` (wall
        time), ``audio_seconds_per_second``, ``n_events`` (detected),
        ``n_true_events`` and the metrics of :func:`detection_metrics`.
    """
    per_recording = max(1, int(round(minutes * 60 / clip_seconds)))
    n_recordings = len(X_test) // per_recording
    if n_recordings == 0:
        raise ValueError(f"{len(X_test)} test scenes of {clip_seconds:g} s do not fill one {minutes:g}-minute "
                         "recording")
    truth, names = {}, []
    with tempfile.TemporaryDirectory(prefix="skprobe-long-") as folder:
        for r in range(n_recordings):
            path = Path(folder) / f"long{r:02d}.wav"
            scenes = range(r * per_recording, (r + 1) * per_recording)
            with sf.SoundFile(path, "w", sample_rate, 1, subtype="FLOAT") as fh:
                for i in scenes:
                    fh.write(np.asarray(X_test[i], dtype=np.float32))
            truth[str(path)] = [{"onset": e["onset"] + j * clip_seconds, "offset": e["offset"] + j * clip_seconds,
                                 "class": e["class"]} for j, i in enumerate(scenes) for e in events[i]]
            names.append(str(path))
        start = time.perf_counter()
        found = detect_events(model, names, class_names=class_names, median_filter=median_filter,
                              keep_scores=True, verbose=verbose)
        seconds = time.perf_counter() - start
    scores = found.attrs["frame_scores"]
    durations = found.attrs["durations"]
    hop = found.attrs["hop_seconds"]
    metrics = detection_metrics(scores, truth, durations, hop_seconds=hop, class_names=class_names,
                                median_filter=median_filter)
    audio = float(sum(durations.values()))
    return {"n_recordings": n_recordings, "minutes": per_recording * clip_seconds / 60, "audio_seconds": audio,
            "seconds": seconds, "audio_seconds_per_second": audio / seconds, "n_events": len(found),
            "n_true_events": sum(len(v) for v in truth.values()), **metrics}


def detection_section(config, runs: list[dict], fitted: dict, encoder, X_test, data, out_dir) -> dict:
    """The ``detection`` part of the benchmark's result: margins, a plot and the long-recording run.

    ``runs`` hold each fit's detection columns (:func:`event_columns`);
    ``fitted`` the seed-0 probes. The long recordings are detected with the
    prototypical probe (or the first probe when it is not in the run).
    """
    from sklearn.pipeline import make_pipeline

    from .. import plotting

    clip_seconds = len(data.X_test[0]) / data.sample_rate
    layout = encoder.layouts_[0]
    scene = min(range(len(data.events_test)), key=lambda i: (-len(data.events_test[i]), i))
    curves = {f"{name} frames": fitted[name].predict_frame_proba(X_test[scene : scene + 1], layout=layout)[0]
              for name in fitted}
    main = "prototypical" if "prototypical" in fitted else next(iter(fitted))
    curves[f"{main} broadcast"] = scene_frame_scores(fitted[main], X_test[scene : scene + 1], layout)["broadcast"][0]
    figure = plotting.plot_frame_scores(curves, layout.hop_seconds, data.events_test[scene], data.class_names,
                                        Path(out_dir) / "frame_scores.png", title=f"test scene {scene}",
                                        duration=clip_seconds)
    model = make_pipeline(encoder, fitted[main])
    long_run = long_recording_run(model, data.X_test, data.events_test, data.class_names, data.sample_rate,
                                  clip_seconds, minutes=config.long_minutes, verbose=config.verbose)
    return {"margins": margin_summary(runs, config.probes), "long_recordings": {"probe": main, **long_run},
            "plot_scene": scene, "files": [str(Path(figure).relative_to(out_dir))]}


def format_detection_table(result: dict) -> str:
    """The detection columns as an aligned text table (mean ± std over seeds), margins and the long run."""
    summary = result["summary"]
    cols = [("psds1", "PSDS1"), ("psds2", "PSDS2"), ("event_f1", "event F1"), ("segment_f1", "segment F1")]
    header = f"{'probe':<26}" + "".join(f"{title:>16}" for _, title in cols)
    lines = ["", "event detection on the test scenes (frame scores vs clip scores broadcast to every frame)",
             header, "-" * len(header)]
    for name, s in summary.items():
        if "psds1" not in s:
            continue
        for kind, suffix in (("frames", ""), ("broadcast", "_broadcast")):
            cells = "".join(f"{s[k + suffix]['mean']:>9.3f} ± {s[k + suffix]['std']:.3f}" for k, _ in cols)
            lines.append(f"{name + ' ' + kind:<26}{cells}")
    margins = result["detection"]["margins"]
    for name, m in margins.items():
        lines.append(f"{name + ' frames - broadcast':<26}" + "".join(
            f"{m[k]['mean']:>+9.3f} ± {m[k]['std']:.3f}" for k, _ in cols))
    run = result["detection"]["long_recordings"]
    lines.append(
        f"\n{run['n_recordings']} recordings of {run['minutes']:g} min ({run['probe']} probe, detected end to end): "
        f"PSDS1 {run['psds1']:.3f}, PSDS2 {run['psds2']:.3f}, event F1 {run['event_f1']:.3f}, segment F1 "
        f"{run['segment_f1']:.3f}; {run['n_events']} events found for {run['n_true_events']} annotated; "
        f"{run['audio_seconds_per_second']:.0f} audio-s/s")
    return "\n".join(lines)
