"""Event detection in recordings of any length (issue 24): streaming, stitching, post-processing, events, metrics."""

import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.ndimage import median_filter
from sklearn.pipeline import make_pipeline

from skprobe import FrozenEncoderTransformer, PrototypicalProbeClassifier, detect_events
from skprobe.audio import resample
from skprobe.detection import (
    EventTracker,
    FrameStitcher,
    MedianFilter,
    WindowPlan,
    audio_blocks,
    best_f1_threshold,
    choose_thresholds,
    detection_metrics,
    read_events,
    stream_frame_scores,
    write_events,
)
from skprobe.detection.windows import windows

HOP = 0.04


class EnergyScorer:
    """A stand-in model: frame ``t`` of a 1 s window scores 1 for class "loud" when its RMS exceeds 0.1."""

    sample_rate = 16000
    window_samples = 16000
    n_frames = 25
    hop_seconds = HOP
    class_names = ["loud", "never"]

    def __init__(self):
        self.windows_seen = 0

    def score_windows(self, batch):
        self.windows_seen += len(batch)
        frames = batch.reshape(len(batch), self.n_frames, -1)
        loud = np.sqrt((frames**2).mean(axis=-1)) > 0.1
        return np.stack([loud, np.zeros_like(loud)], axis=-1).astype(float)


def _recording(seconds, bursts, rate=16000, amplitude=0.5, seed=0):
    wav = np.random.default_rng(seed).normal(scale=0.01, size=int(round(seconds * rate))).astype(np.float32)
    for onset, offset in bursts:
        wav[int(round(onset * rate)) : int(round(offset * rate))] = amplitude
    return wav


def _loud(events):
    return [(e.onset, e.offset) for e in events if e.event_label == "loud"]


def _assert_found(events, bursts, atol=1e-6):
    """Each burst found exactly once, with onset and offset within ``atol``."""
    found = _loud(events)
    assert len(found) == len(bursts), found
    np.testing.assert_allclose(np.array(found), np.array(bursts), atol=atol)


# -- reading and windows --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [16000, 44100, 8000])
def test_audio_blocks_equal_the_whole_recording_resampled(tmp_path, rate):
    wav = np.random.default_rng(1).normal(scale=0.1, size=(int(rate * 3.3), 2)).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, wav, rate, subtype="FLOAT")
    blocks = list(audio_blocks(path, 16000, block_seconds=0.5))
    expected = resample(wav.mean(axis=1), rate, 16000)
    streamed = np.concatenate(blocks)
    assert len(blocks) > 5 and streamed.shape == expected.shape
    np.testing.assert_allclose(streamed, expected, atol=2e-6)


def test_windows_cut_from_blocks_match_slices_of_the_recording():
    wav = np.arange(40000, dtype=np.float32)
    plan = WindowPlan(16000, 24, 0.04, 16000, overlap=0.5)
    cut = list(windows(iter(np.array_split(wav, 7)), plan, len(wav)))
    padded = np.pad(wav, (0, 16000))
    assert len(cut) == plan.n_windows(len(wav)) == 5
    for k, window in enumerate(cut):
        start = plan.start_sample(k)
        np.testing.assert_array_equal(window, padded[start : start + 16000])
    last_frame_end = (4 * plan.step_frames + 24) * 0.04 * 16000
    assert last_frame_end >= len(wav)  # every frame of the recording is covered


def test_stitcher_averages_every_window_that_covers_a_frame():
    plan = WindowPlan(100, 10, 0.01, 1000, overlap=0.7)  # step 3 frames
    rng = np.random.default_rng(0)
    n_total, n_windows = 40, plan.n_windows(400)
    scores = rng.random((n_windows, 10, 2))
    total, count = np.zeros((n_windows * 3 + 10, 2)), np.zeros(n_windows * 3 + 10)
    for k in range(n_windows):
        total[k * 3 : k * 3 + 10] += scores[k]
        count[k * 3 : k * 3 + 10] += 1
    expected = total[:n_total] / count[:n_total, None]
    st = FrameStitcher(plan, n_total)
    pieces = [st.add(s) for s in scores] + [st.finish()]
    firsts = [f for f, p in pieces if len(p)]
    got = np.concatenate([p for _, p in pieces if len(p)])
    np.testing.assert_allclose(got, expected)
    assert firsts == sorted(firsts) and firsts[0] == 0


# -- post-processing ------------------------------------------------------------------------------------------------
def test_streaming_median_filter_equals_scipy_on_the_whole_array():
    rng = np.random.default_rng(0)
    scores = rng.random((203, 3))
    lengths = np.array([1, 5, 9])
    mf = MedianFilter(lengths)
    cuts = np.sort(rng.choice(np.arange(1, 203), size=12, replace=False))
    got = np.concatenate([mf.push(b) for b in np.split(scores, cuts)] + [mf.flush()])
    expected = np.stack([median_filter(scores[:, c], size=n, mode="nearest") for c, n in enumerate(lengths)], 1)
    np.testing.assert_allclose(got, expected)


def test_event_tracker_is_indifferent_to_block_borders():
    rng = np.random.default_rng(0)
    scores = (rng.random((300, 2)) > 0.7).astype(float) * rng.random((300, 2))
    whole = EventTracker("f", ["a", "b"], np.array([0.2, 0.2]), 0.1, 30.0)
    reference = whole.push(0, scores) + whole.finish()
    tracker = EventTracker("f", ["a", "b"], np.array([0.2, 0.2]), 0.1, 30.0)
    got, first = [], 0
    for block in np.array_split(scores, 17):
        got += tracker.push(first, block)
        first += len(block)
    got += tracker.finish()
    key = lambda e: (e.event_label, e.onset)  # noqa: E731
    assert sorted(got, key=key) == sorted(reference, key=key)
    assert len(reference) > 20


def test_best_f1_threshold_separates_the_best_cut():
    scores = np.array([0.95, 0.9, 0.85, 0.5, 0.4, 0.1])
    positive = np.array([1, 1, 0, 1, 0, 0])
    t = best_f1_threshold(scores, positive)
    assert 0.4 < t < 0.5  # keeping the top four gives F1 = 6/7, better than the top two (0.8)
    assert best_f1_threshold(scores, np.zeros(6)) > scores.max()


# -- detection end to end with a controlled scorer ----------------------------------------------------------------------
def test_events_at_the_start_the_end_and_across_window_borders_are_found_once():
    bursts = [(0.0, 0.2), (0.92, 1.32), (2.4, 2.88), (4.88, 5.1)]  # 0.92-1.32 straddles window 0's end (1.0 s)
    scorer = EnergyScorer()
    events = detect_events(scorer, [_recording(5.1, bursts)], sample_rate=16000, as_frame=False)
    _assert_found(events, bursts, atol=1e-6)
    assert all(e.file == "recording_0" and e.score == 1.0 for e in events)
    assert scorer.windows_seen == WindowPlan(16000, 25, HOP, 16000).n_windows(int(5.1 * 16000))


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.75])
def test_events_do_not_depend_on_the_overlap(overlap):
    bursts = [(0.0, 0.2), (0.92, 1.32), (3.0, 3.96)]
    events = detect_events(EnergyScorer(), [_recording(4.0, bursts)], sample_rate=16000, overlap=overlap,
                           as_frame=False)
    _assert_found(events, bursts, atol=1e-6)


@pytest.mark.parametrize("rate, channels", [(44100, 2), (8000, 1), (22050, 3)])
def test_files_at_other_rates_and_with_several_channels(tmp_path, rate, channels):
    bursts = [(0.0, 0.2), (0.92, 1.32), (2.0, 2.48)]
    wav = _recording(2.48, bursts, rate=rate)
    path = tmp_path / "rec.flac"
    sf.write(path, np.repeat(wav[:, None], channels, axis=1), rate)
    events = detect_events(EnergyScorer(), path, as_frame=False, block_seconds=0.7)
    _assert_found(events, bursts, atol=HOP + 1e-6)  # resampling blurs an edge by < 1 frame


def test_short_recording_and_silence():
    short = _recording(0.3, [(0.1, 0.2)])
    events = detect_events(EnergyScorer(), [short, np.zeros(16000 * 3, np.float32)], sample_rate=16000)
    # 0.1 s falls inside frame 2 (0.08-0.12 s), which is loud enough: the event starts with that frame
    assert list(zip(events.file, events.onset, events.offset, events.event_label)) == [
        ("recording_0", 0.08, 0.2, "loud")]
    assert events.attrs["durations"] == {"recording_0": 0.3, "recording_1": 3.0}
    assert events.attrs["skipped"] == []


def test_a_bad_file_in_a_folder_is_named_and_the_others_finish(tmp_path):
    sf.write(tmp_path / "a.wav", _recording(2.0, [(0.4, 0.8)]), 16000)
    (tmp_path / "b.wav").write_bytes(b"RIFF not really audio")
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "c.wav", _recording(1.5, [(1.0, 1.2)]), 16000)
    with pytest.warns(UserWarning, match=r"b\.wav"):
        events = detect_events(EnergyScorer(), tmp_path)
    assert [name for name, _ in events.attrs["skipped"]] == [str(tmp_path / "b.wav")]
    assert sorted(set(events.file)) == [str(tmp_path / "a.wav"), str(tmp_path / "sub" / "c.wav")]
    with pytest.raises(ValueError, match=r"b\.wav"):
        detect_events(EnergyScorer(), tmp_path, on_error="raise")


def test_thresholds_and_median_filter_per_class():
    wav = _recording(3.0, [(0.4, 0.44), (1.0, 2.0)])  # a one-frame blip and a 1 s event
    scorer = EnergyScorer()
    assert len(_loud(detect_events(scorer, [wav], sample_rate=16000, as_frame=False))) == 2
    filtered = detect_events(scorer, [wav], sample_rate=16000, median_filter={"loud": 0.12}, as_frame=False)
    _assert_found(filtered, [(1.0, 2.0)])
    assert _loud(detect_events(scorer, [wav], sample_rate=16000, threshold={"loud": 1.0}, as_frame=False)) == []
    with pytest.raises(ValueError, match="unknown classes"):
        detect_events(scorer, [wav], sample_rate=16000, threshold={"dog": 0.5})
    with pytest.raises(ValueError, match="overlap"):
        detect_events(scorer, [wav], sample_rate=16000, overlap=1.0)


def test_events_files_round_trip(tmp_path):
    wav = _recording(3.0, [(0.4, 0.8), (1.0, 2.0)])
    events = detect_events(EnergyScorer(), [wav], sample_rate=16000, output=tmp_path / "ev.csv")
    back = read_events(tmp_path / "ev.csv")
    assert [tuple(e) for e in back] == [tuple(r) for r in events.itertuples(index=False)]
    write_events(events, tmp_path / "ev.tsv")
    lines = (tmp_path / "ev.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["filename", "onset", "offset", "event_label"]
    assert [(e.onset, e.offset) for e in read_events(tmp_path / "ev.tsv")] == [(0.4, 0.8), (1.0, 2.0)]
    with pytest.raises(ValueError, match="csv"):
        write_events(events, tmp_path / "ev.txt")


@pytest.mark.slow
def test_memory_does_not_grow_with_the_recording(tmp_path):
    # 40 minutes against 4 minutes of 8 kHz audio: the Python heap's peak stays the same.
    peaks = {}
    for minutes in (4, 40):
        path = tmp_path / f"{minutes}.wav"
        with sf.SoundFile(path, "w", 8000, 1, subtype="PCM_16") as fh:
            for _ in range(minutes):
                fh.write(_recording(60, [(10, 12)], rate=8000))
        tracemalloc.start()
        events = detect_events(EnergyScorer(), path, as_frame=False)
        peaks[minutes] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(_loud(events)) == minutes
    assert peaks[40] < 1.1 * peaks[4], peaks


# -- a real pipeline ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    clips = rng.normal(scale=0.05, size=(24, 16000)).astype(np.float32)
    clips[::2, 4000:9000] *= 20
    Y = np.stack([np.arange(24) % 2 == 0, np.arange(24) % 2 == 1], axis=1).astype(int)
    model = make_pipeline(FrozenEncoderTransformer(encoder="tiny-vit", device="cpu", batch_size=4),
                          PrototypicalProbeClassifier(prefix_tokens=1, n_prototypes_per_class=4, max_iter=20,
                                                      random_state=0, device="cpu"))
    return model.fit(clips, Y), clips, Y


def test_pipeline_scores_are_the_stitched_window_scores(tiny_model):
    # A 1 s recording: tiny-vit's 24 frames of 0.04 s cover 0.96 s, so a second window (from 0.48 s, zero-padded)
    # covers the last frame; frames 12-23 average both windows.
    model, clips, _ = tiny_model
    stitched = np.concatenate([b for _, b in stream_frame_scores(model, clips[0], sample_rate=16000)])
    second = np.pad(clips[0][7680:], (0, 7680))
    tokens = model[0].transform(np.stack([clips[0], second]))
    s0, s1 = model[-1].predict_frame_proba(tokens, layout=model[0].layouts_[0])
    expected = np.concatenate([s0[:12], (s0[12:] + s1[:12]) / 2, s1[12:13]])
    assert stitched.shape == (25, 2)
    np.testing.assert_allclose(stitched, expected, rtol=1e-5, atol=1e-6)


def test_pipeline_detects_in_files_and_writes_them(tiny_model, tmp_path):
    model, clips, _ = tiny_model
    sf.write(tmp_path / "long.wav", np.concatenate(list(clips[:6])), 16000)
    sf.write(tmp_path / "short.wav", clips[0][:4000], 16000)
    events = detect_events(model, tmp_path, class_names=["burst", "quiet"], median_filter=0.12,
                           output=tmp_path / "out" / "events.tsv", verbose=0)
    assert set(events.attrs["durations"]) == {str(tmp_path / "long.wav"), str(tmp_path / "short.wav")}
    assert events.attrs["durations"][str(tmp_path / "long.wav")] == pytest.approx(6.0)
    assert set(events.event_label) <= {"burst", "quiet"}
    assert (events.offset <= 6.0 + 1e-9).all() and (events.onset < events.offset).all()
    assert (tmp_path / "out" / "events.tsv").is_file()


def test_thresholds_chosen_on_validation_clips(tiny_model):
    model, clips, Y = tiny_model
    by_labels = choose_thresholds(model, clips, Y, class_names=["burst", "quiet"])
    assert set(by_labels) == {"burst", "quiet"} and all(0 < t < 1 for t in by_labels.values())
    events = [[(0.25, 0.5625, "burst")] if i % 2 == 0 else [(0.0, 1.0, "quiet")] for i in range(24)]
    by_events = choose_thresholds(model, clips, events=events, class_names=["burst", "quiet"])
    assert set(by_events) == {"burst", "quiet"}
    with pytest.raises(ValueError, match="Y or annotated events"):
        choose_thresholds(model, clips)


def test_pipeline_errors(tiny_model):
    model, clips, Y = tiny_model
    with pytest.raises(ValueError, match="Pipeline"):
        detect_events(model[-1], [clips[0]], sample_rate=16000)
    wrong = make_pipeline(FrozenEncoderTransformer(encoder="tiny-vit", device="cpu"),
                          PrototypicalProbeClassifier(max_iter=1, device="cpu")).fit(clips, Y)
    with pytest.raises(ValueError, match="prefix_tokens"):
        detect_events(wrong, [clips[0]], sample_rate=16000)
    with pytest.raises(ValueError, match="class_names has 3"):
        detect_events(model, [clips[0]], sample_rate=16000, class_names=["a", "b", "c"])


# -- metrics --------------------------------------------------------------------------------------------------------
def test_detection_metrics_reward_localisation():
    pytest.importorskip("sed_scores_eval")
    rng = np.random.default_rng(0)
    names = ["dog", "car"]
    truth, located, broadcast, durations = {}, {}, {}, {}
    for i in range(12):
        onset = float(rng.integers(0, 20)) * 0.32
        truth[f"s{i}"] = [(onset, onset + 1.28, names[i % 2])]
        frames = np.full((32, 2), 0.05)
        frames[int(round(onset / 0.32)) : int(round(onset / 0.32)) + 4, i % 2] = 0.9
        located[f"s{i}"] = frames
        broadcast[f"s{i}"] = np.repeat(frames.max(axis=0, keepdims=True), 32, axis=0)
        durations[f"s{i}"] = 10.24
    good = detection_metrics(located, truth, durations, hop_seconds=0.32, class_names=names)
    flat = detection_metrics(broadcast, truth, durations, hop_seconds=0.32, class_names=names)
    assert good["psds1"] == pytest.approx(1.0) and good["event_f1"] == pytest.approx(1.0)
    assert flat["psds1"] == 0.0 and flat["event_f1"] == 0.0
    assert flat["segment_f1"] < good["segment_f1"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="lacks recordings"):
        detection_metrics(located, {}, durations, hop_seconds=0.32, class_names=names)


# -- the command ----------------------------------------------------------------------------------------------------
def test_detect_command(tiny_model, tmp_path, capsys):
    import joblib

    from skprobe import save_probe
    from skprobe.cli import main

    model, clips, _ = tiny_model
    folder = tmp_path / "recordings"
    folder.mkdir()
    sf.write(folder / "a.wav", np.concatenate(list(clips[:4])), 16000)
    sf.write(folder / "b.flac", np.stack([clips[4], clips[5]], axis=1), 22050)  # stereo, another rate
    joblib.dump(model, tmp_path / "model.joblib")
    save_probe(model[-1], tmp_path / "probe.safetensors")
    out = tmp_path / "events.csv"
    assert main(["detect", str(folder), "--model", str(tmp_path / "model.joblib"), "-o", str(out), "-q"]) == 2
    assert "only loaded with --allow-pickle" in capsys.readouterr().err
    assert main(["detect", str(folder), "--model", str(tmp_path / "model.joblib"), "-o", str(out), "-q",
                 "--allow-pickle",
                 "--class-names", "burst,quiet", "--threshold", '{"burst": 0.6}', "--median-filter", "0.12"]) == 0
    assert out.read_text().splitlines()[0] == "file,onset,offset,event_label,score"
    assert "2 recording(s)" in capsys.readouterr().err
    assert main(["detect", str(folder / "a.wav"), "--probe", str(tmp_path / "probe.safetensors"), "--encoder",
                 "tiny-vit", "--device", "cpu", "-q"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split("\t") == ["filename", "onset", "offset", "event_label"]
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEfmt nothing")
    assert main(["detect", str(folder), "--model", str(tmp_path / "model.joblib"), "-o", str(out), "-q",
                 "--allow-pickle"]) == 1
    assert f"skipped {folder / 'broken.wav'}" in capsys.readouterr().err
    assert main(["detect", str(folder), "--model", str(tmp_path / "model.joblib"), "--threshold", "high",
                 "--allow-pickle"]) == 2
    assert "--threshold must be a number" in capsys.readouterr().err
    assert main(["detect", str(folder), "--model", str(tmp_path / "nothing.joblib")]) == 2
    assert "file not found" in capsys.readouterr().err


# -- the benchmark's detection part ----------------------------------------------------------------------------------
def _tone(path, seconds, freq, sr=16000, noise=False, seed=0):
    t = np.arange(int(seconds * sr)) / sr
    wav = np.random.default_rng(seed).standard_normal(t.size) if noise else np.sin(2 * np.pi * freq * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * wav).astype(np.float32), sr)


@pytest.mark.slow
def test_benchmark_events(tmp_path, monkeypatch):
    import json

    from sklearn.utils import Bunch

    import skprobe.benchmark as bench
    from skprobe.datasets import SoundSource, make_event_scenes
    from skprobe.detection.benchmark import format_detection_table

    sources = []
    for c, (label, seconds) in enumerate([("short", 0.1), ("mid", 0.4), ("long", 0.7)]):
        for g in range(2):
            path = tmp_path / "src" / label / f"g{g}.wav"
            _tone(path, seconds, 300.0 * (c + 1) + 50 * g)
            sources.append(SoundSource(path, label, f"{label}-g{g}", "fake", "CC0-1.0", name=f"fake:{label}/{g}"))
    for g in range(2):
        _tone(tmp_path / "src" / f"bed{g}.wav", 2.0, 0, noise=True, seed=g)
        sources.append(SoundSource(tmp_path / "src" / f"bed{g}.wav", None, f"bed{g}", "fake", "CC0-1.0",
                                   name=f"fake:bed{g}"))
    scenes = make_event_scenes(24, 12, sources=sources, sample_rate=16000, clip_seconds=1.0, max_event_seconds=0.7,
                               burst_below=0.2, burst_hits=(2, 3), cache=False)

    def fake_data(config):
        return Bunch(X_train=scenes.X_train, X_test=scenes.X_test, Y_train=scenes.Y_train, Y_test=scenes.Y_test,
                     class_names=list(scenes.class_names), multilabel=True, sample_rate=16000,
                     events_test=scenes.events_test, name="event-scenes", description="fake scenes")

    monkeypatch.setenv("SKPROBE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(bench, "load_benchmark_data", fake_data)
    config = bench.BenchmarkConfig(encoder="tiny-vit", probes=("linear", "prototypical"), seeds=2, events=True,
                                   output=str(tmp_path / "out"), device="cpu", verbose=0, long_minutes=0.1,
                                   probe_params={"linear": {"max_iter": 3, "cv": None},
                                                 "prototypical": {"max_iter": 3}})
    result = bench.run_benchmark(config)
    row = result["runs"][0]
    for metric in ("psds1", "psds2", "event_f1", "segment_f1"):
        assert 0 <= row[metric] <= 1 and 0 <= row[f"{metric}_broadcast"] <= 1
        assert f"{metric}_broadcast" in result["summary"]["prototypical"]
    margins = result["detection"]["margins"]["prototypical"]["psds1"]
    assert len(margins["per_seed"]) == 2 and margins["mean"] == pytest.approx(np.mean(margins["per_seed"]))
    long_run = result["detection"]["long_recordings"]
    assert long_run["n_recordings"] == 2 and long_run["audio_seconds"] == pytest.approx(12.0)
    assert long_run["n_true_events"] == sum(len(e) for e in scenes.events_test)
    assert "frame_scores.png" in result["files"] and (tmp_path / "out" / "frame_scores.png").stat().st_size > 0
    assert "psds1_broadcast" in (tmp_path / "out" / "results.csv").read_text().splitlines()[0]
    assert "detection" in json.loads((tmp_path / "out" / "results.json").read_text())
    table = format_detection_table(result)
    assert "prototypical frames - broadcast" in table and "audio-s/s" in table
    with pytest.raises(ValueError, match="--events"):
        bench.validate_config(bench.BenchmarkConfig(dataset=str(tmp_path), events=True, output=str(tmp_path / "o")))
