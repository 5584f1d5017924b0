"""`skprobe benchmark --layers`: the convex gated probe on several layers beside the single-layer probes."""

import json

import numpy as np
import pytest
import soundfile as sf

import skprobe.benchmark
from skprobe.benchmark import BenchmarkConfig, format_table, resolve_multi_layers
from skprobe.cli import main

FAST = json.dumps({"prototypical": {"max_iter": 3}, "cgp": {"max_iter": 3, "n_prototypes": 8}})


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SKPROBE_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture
def audio_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "clips"
    folder.mkdir()
    rows = ["file,labels"]
    for i in range(24):
        wav = 0.05 * rng.normal(size=16000)
        label = ["low", "high"][i % 2]
        wav[4000:8000] += 0.3 * np.sin(2 * np.pi * (300 if label == "low" else 3000) * np.arange(4000) / 16000)
        sf.write(folder / f"c{i}.wav", (wav * 20000).astype(np.int16), 16000)
        rows.append(f"c{i}.wav,{label}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_layers_all_trains_cgp_beside_the_others_from_one_extraction(home, audio_folder, capsys, monkeypatch):
    calls = []
    extract = skprobe.benchmark.extract_tokens
    monkeypatch.setattr(skprobe.benchmark, "extract_tokens", lambda *a, **k: calls.append(k) or extract(*a, **k))
    out = home / "results"
    assert main(["benchmark", "--encoder", "tiny-vit", "--dataset", str(audio_folder), "--seeds", "2",
                 "--probes", "prototypical", "--layers", "all", "--output", str(out), "--quiet",
                 "--probe-params", FAST]) == 0
    assert calls == [{"layers": [0, 1, 2]}]  # layer -1 (2) is one of them: sliced, not extracted again
    printed = capsys.readouterr().out
    assert "(cgp: layers 0, 1, 2)" in printed
    table = printed.splitlines()
    assert any(line.startswith("prototypical  2 ") for line in table)
    assert any(line.startswith("cgp           0-2 ") for line in table)
    result = json.loads((out / "results.json").read_text())
    assert set(result["summary"]) == {"prototypical", "cgp"}
    assert result["probe_layers"] == {"prototypical": [2], "cgp": [0, 1, 2]}
    assert result["encoder"]["multi_layers"] == [0, 1, 2] and result["encoder"]["layers"] == [2]
    weights = np.asarray(result["layer_weights"]["per_seed"])
    assert weights.shape == (2, 3) and np.allclose(weights.sum(axis=1), 1.0)
    assert (out / "layer_weights.png").stat().st_size > 0


def test_a_layer_list_outside_the_single_layer_is_extracted_once_more(home, audio_folder, capsys, monkeypatch):
    calls = []
    extract = skprobe.benchmark.extract_tokens
    monkeypatch.setattr(skprobe.benchmark, "extract_tokens", lambda *a, **k: calls.append(k) or extract(*a, **k))
    out = home / "results"
    assert main(["benchmark", "--encoder", "tiny-vit", "--dataset", str(audio_folder), "--seeds", "1",
                 "--probes", "prototypical,cgp", "--layers", "0,1", "--output", str(out), "--quiet",
                 "--probe-params", FAST]) == 0
    assert calls == [{"layers": [0, 1]}, {}]
    result = json.loads((out / "results.json").read_text())
    assert result["probe_layers"] == {"prototypical": [2], "cgp": [0, 1]}


def test_layers_all_means_the_layers_of_the_single_layers_shape():
    # tiny-cnn's two layers have token maps of different shapes: "all" is the one of --layer's shape
    assert resolve_multi_layers(BenchmarkConfig(encoder="tiny-cnn", layers="all")) == [1]
    assert resolve_multi_layers(BenchmarkConfig(encoder="tiny-vit", layers="all", layer=0)) == [0, 1, 2]
    with pytest.warns(UserWarning, match="increasing order"):
        assert resolve_multi_layers(BenchmarkConfig(encoder="tiny-vit", layers=[-1, 0])) == [0, 2]
    assert resolve_multi_layers(BenchmarkConfig(encoder="tiny-vit")) is None


@pytest.mark.parametrize("argv, message", [
    (["--layers", "0,x"], "--layers must be 'all' or comma-separated layer indices"),
    (["--layers", "0,7"], r"layers must be integers in \[-3, 2\]"),
])
def test_bad_layers_give_one_line_errors(home, audio_folder, capsys, argv, message):
    assert main(["benchmark", "--encoder", "tiny-vit", "--dataset", str(audio_folder), "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skprobe: error:") and len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err


def test_different_shapes_are_named(home, audio_folder, capsys):
    assert main(["benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "--quiet",
                 "--layers", "0,1"]) == 2
    assert "have token maps of different shapes" in capsys.readouterr().err


def test_table_names_the_layers():
    result = {"data": {"multilabel": True}, "probe_layers": {"prototypical": [13], "cgp": [6, 7, 8, 9, 10, 11]},
              "summary": {name: {k: {"mean": 0.5, "std": 0.0} for k in
                                 ("macro_map", "micro_ap", "macro_roc_auc", "fit_seconds", "n_parameters")}
                          for name in ("prototypical", "cgp")}}
    lines = format_table(result).splitlines()
    assert lines[0].startswith("probe         layers")
    assert lines[2].startswith("prototypical  13 ") and lines[3].startswith("cgp           6-11 ")
