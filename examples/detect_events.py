"""Detect events in a long recording with a probe trained on clip labels only.

A prototypical probe learns from clips labelled with *which* sounds they hold
(no onsets); its frame scores then say *when*. ``detect_events`` streams a
recording of any length through the encoder in overlapping windows, stitches
and smooths the frame scores, thresholds them and returns events, which
``detection_metrics`` scores against the annotation (PSDS, event- and
segment-based F1).

    python examples/detect_events.py           # YAMNet, event scenes; test scenes joined into a 10-minute file
    python examples/detect_events.py --quick   # tiny test encoder, tone and noise bursts (seconds)
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from sklearn.pipeline import make_pipeline

from skprobe import FrozenEncoderTransformer, PrototypicalProbeClassifier, detect_events
from skprobe.detection import choose_thresholds, detection_metrics

RATE = 16000


def _burst(kind: str, n: int, rng) -> np.ndarray:
    if kind == "tone":
        return 0.4 * np.sin(2 * np.pi * rng.uniform(900, 1100) * np.arange(n) / RATE)
    return 0.4 * rng.standard_normal(n)


def synthetic_scenes(n: int, seconds: float, rng):
    """Noise beds with 0-2 bursts of a tone and/or of loud noise; returns waveforms, clip labels, events."""
    classes = ["tone", "noise"]
    waves, labels, events = [], [], []
    for _ in range(n):
        wav = 0.02 * rng.standard_normal(int(seconds * RATE))
        present, scene_events = np.zeros(2, int), []
        for c in rng.permutation(2)[: rng.integers(0, 3)]:
            length = rng.uniform(0.15, 0.4)
            onset = rng.uniform(0, seconds - length)
            a, b = int(onset * RATE), int((onset + length) * RATE)
            wav[a:b] += _burst(classes[c], b - a, rng)
            present[c] = 1
            scene_events.append({"onset": onset, "offset": onset + length, "class": classes[c]})
        waves.append(wav.astype(np.float32))
        labels.append(present)
        events.append(scene_events)
    return np.stack(waves), np.array(labels), events, classes


def load(quick: bool):
    """Training clips, their clip labels, validation clips, a long test recording and its events."""
    if quick:
        rng = np.random.default_rng(0)
        X, Y, _, classes = synthetic_scenes(160, 1.0, rng)
        X_val, Y_val, _, _ = synthetic_scenes(60, 1.0, rng)
        parts, _, scene_events, _ = synthetic_scenes(120, 1.0, rng)  # 120 one-second scenes: a 2-minute recording
        encoder = FrozenEncoderTransformer(encoder="tiny-vit")
        return X, Y, X_val, Y_val, parts, scene_events, 1.0, classes, encoder, 1, {"max_iter": 30}
    from skprobe import fetch_weights
    from skprobe.datasets import make_event_scenes

    fetch_weights("yamnet")
    data = make_event_scenes()
    encoder = FrozenEncoderTransformer(encoder="yamnet", store="~/.cache/skprobe/tokens")
    X, Y = data.X_train[:500], data.Y_train[:500]
    X_val, Y_val = data.X_train[500:], data.Y_train[500:]  # validation clips for the thresholds
    return (X, Y, X_val, Y_val, data.X_test[:60], data.events_test[:60], 10.0, list(data.class_names), encoder,
            encoder.fit(None).prefix_tokens_, {})


def main(quick: bool = False) -> dict:
    X, Y, X_val, Y_val, parts, scene_events, seconds, classes, encoder, prefix, params = load(quick)
    model = make_pipeline(encoder, PrototypicalProbeClassifier(prefix_tokens=prefix, random_state=0, **params))
    model.fit(list(X), Y)  # clip labels only: which classes, not when

    # The probe's thresholds, chosen on validation clips (clip labels again) for the best F1 per class.
    thresholds = choose_thresholds(model, list(X_val), Y_val, class_names=classes, median_filter=0.3)

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recording.wav"
        sf.write(path, np.concatenate(list(parts)), RATE)  # the scenes back to back: one long file
        truth = [{**e, "onset": e["onset"] + i * seconds, "offset": e["offset"] + i * seconds}
                 for i, events in enumerate(scene_events) for e in events]
        events = detect_events(model, path, class_names=classes, threshold=thresholds, median_filter=0.3,
                               output=Path(folder) / "events.tsv", keep_scores=True, verbose=not quick)
        print(events.head(8).to_string(index=False))
        metrics = detection_metrics(events.attrs["frame_scores"], {str(path): truth}, events.attrs["durations"],
                                    hop_seconds=events.attrs["hop_seconds"], class_names=classes,
                                    threshold=thresholds, median_filter=0.3)
    minutes = len(parts) * seconds / 60
    print(f"\n{len(events)} events detected in a {minutes:g}-minute recording ({len(truth)} annotated), "
          f"{events.attrs['seconds']:.1f} s")
    print("  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny test encoder and synthetic bursts")
    main(parser.parse_args().quick)
