"""`skprobe benchmark --dataset <published set> --root DIR`: official splits, the paper's metric and recipe.

Every run uses the tiny random test encoder on the small copies of
tests/published_fixtures.py, so the numbers mean nothing; what is checked is
the protocol: which clips train and test each fit, how many fits, which
metric leads the table, which settings the paper's recipe gives the probes,
that nothing is decoded before extraction, and one-line errors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from published_fixtures import make_audioset, make_esc50, make_fsd50k, make_speech_commands, make_urban_sed

import skprobe.protocols.engine as engine
from skprobe import load_probe
from skprobe.benchmark import BenchmarkConfig, extract_tokens, load_benchmark_data
from skprobe.cli import main
from skprobe.datasets.lazy import ClipPaths
from skprobe.extraction import FrozenEncoderTransformer
from skprobe.extraction.store import StoreArray
from skprobe.protocols import PAPER_LEARNING_RATES, PROTOCOLS, ProtocolConfig, run_protocol

FAST = {"linear": {"max_iter": 2, "cv": None}, "attentive": {"max_iter": 2}, "prototypical": {"max_iter": 2}}
MAKERS = {"esc50": make_esc50, "fsd50k": make_fsd50k, "audioset-20k": make_audioset, "audioset-2m": make_audioset,
          "urban-sed": make_urban_sed, "speech-commands": make_speech_commands}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("sets")
    out = {}
    for name, make in MAKERS.items():
        (base / name).mkdir()
        out[name] = (base / name, make(base / name))
    return out


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SKPROBE_HOME", str(tmp_path / "home"))
    return tmp_path


def _run(name, root, out, *extra, probes="linear", params=FAST):
    return main(["benchmark", "--encoder", "tiny-vit", "--dataset", name, "--root", str(root), "--seeds", "1",
                 "--probes", probes, "--output", str(out), "--quiet", "--probe-params", json.dumps(params), *extra])


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_every_protocol_end_to_end(roots, home, name, capsys):
    root, sizes = roots[name]
    assert _run(name, root, home / "out") == 0
    printed = capsys.readouterr().out
    protocol = PROTOCOLS[name]
    result = json.loads((home / "out" / "results.json").read_text())
    assert result["protocol"]["name"] == name and result["protocol"]["metric"] == protocol.metric
    assert f"protocol: {protocol.title} ({name})" in printed  # the table names the protocol
    first_column = next(line for line in printed.splitlines() if line.startswith("probe ")).split()[1]
    assert first_column == "*" + {"top1_accuracy": "accuracy", "macro_map": "macro"}[protocol.metric]
    splits = result["data"]["splits"]
    if name == "audioset-20k":
        assert splits == {"balanced_train": sizes["balanced_train"], "eval": sizes["eval"]}
        assert result["data"]["missing"] == {"balanced_train": 2, "eval": 1}
        assert "missing: 3 listed clips are not on disk" in printed
    else:
        assert splits == sizes
    (fold, counts), *_ = result["data"]["folds"].items()
    if name != "esc50":
        train, test = {"fsd50k": ("train", "eval"), "audioset-20k": ("balanced_train", "eval"),
                       "audioset-2m": ("balanced_train", "eval"), "urban-sed": ("train", "test"),
                       "speech-commands": ("train", "testing")}[name]
        expected_train = sizes[train] + (sizes["unbalanced_train"] if name == "audioset-2m" else 0)
        assert (counts["train"], counts["test"]) == (expected_train, sizes[test])
    run = result["runs"][0]
    assert set(protocol.metrics) <= set(run) and np.isfinite(run[protocol.metric])
    written = {p.name for p in (home / "out").iterdir()}
    assert {"results.json", "results.csv", "per_class_ap.csv"} <= written
    assert set(result["timings"]) == {"read", "extract", "train", "score", "write"}


def test_esc50_is_five_fits_one_per_fold(roots, home):
    root, sizes = roots["esc50"]
    assert _run("esc50", root, home / "out", "--save-probes", probes="linear,prototypical") == 0
    result = json.loads((home / "out" / "results.json").read_text())
    saved = sorted(p.name for p in (home / "out" / "probes").iterdir())
    assert saved == sorted(f"{probe}-fold{k}.safetensors" for probe in ("linear", "prototypical") for k in range(1, 6))
    reloaded = load_probe(home / "out" / "probes" / "linear-fold1.safetensors")
    assert len(reloaded.classes_) == len(result["data"]["class_names"])
    assert [r["fold"] for r in result["runs"] if r["probe"] == "linear"] == [f"fold{k}" for k in range(1, 6)]
    n = sum(sizes.values())
    for fold, counts in result["data"]["folds"].items():
        assert counts == {"train": n - sizes[fold], "test": sizes[fold], "val": None}
    summary = result["summary"]["linear"]["top1_accuracy"]["mean"]
    assert summary == pytest.approx(np.mean([r["top1_accuracy"] for r in result["runs"] if r["probe"] == "linear"]))
    csv = (home / "out" / "results.csv").read_text().splitlines()
    assert csv[0].startswith("probe,fold,seed,top1_accuracy") and len(csv) == 11


def test_each_fold_tests_on_its_own_clips(roots, home, monkeypatch):
    """The clips a fit trains on never include its test clips, and every clip is tested once."""
    root, _ = roots["esc50"]
    seen = []
    original = engine._Tokens.fit

    def spy(self, name, params, idx, refit):
        seen.append(set(idx.tolist()))
        return original(self, name, params, idx, refit)

    monkeypatch.setattr(engine._Tokens, "fit", spy)
    config = ProtocolConfig(encoder="tiny-vit", dataset="esc50", root=str(root), probes=("linear",), seeds=1,
                            output=str(home / "out"), verbose=0, probe_params=FAST)
    data = PROTOCOLS["esc50"].read(root)
    folds = PROTOCOLS["esc50"].folds(data)
    run_protocol(config)
    assert len(seen) == 5
    for train, fold in zip(seen, folds):
        assert train == set(fold.train.tolist()) and not train & set(fold.test.tolist())
    assert sorted(i for f in folds for i in f.test.tolist()) == list(range(len(data)))


def _recorder(monkeypatch):
    fits = []
    original = engine._fit_or_load

    def record(probe, X, Y, key, refit, groups=None):
        fits.append({**probe.get_params(), "n_clips": len(X), "groups": groups})
        return original(probe, X, Y, key, refit, groups=groups)

    monkeypatch.setattr(engine, "_fit_or_load", record)
    return fits


@pytest.mark.slow
def test_paper_recipe_settings_and_learning_rate_choice(roots, home, monkeypatch):
    root, sizes = roots["fsd50k"]
    fits = _recorder(monkeypatch)
    assert _run("fsd50k", root, home / "out", "--recipe", "paper", probes="linear,attentive,prototypical",
                params={}) == 0
    result = json.loads((home / "out" / "results.json").read_text())
    for name in ("linear", "attentive", "prototypical"):
        mine = [f for f in fits if _kind(f) == name]
        assert len(mine) == len(PAPER_LEARNING_RATES[name]) + 1  # the grid on the validation clips, then the fit
        for f in mine:
            assert (f["batch_size"], f["max_iter"], f["normalize_tokens"]) == (128, 30, "none")
            assert f["n_clips"] == sizes["train"]  # FSD50K has an official validation split: train stays whole
        choice = result["protocol"]["learning_rates"][name][0]
        scores = {float(k): v for k, v in choice["validation"].items()}
        assert choice["learning_rate"] == max(scores, key=scores.get)
        assert mine[-1]["learning_rate"] == choice["learning_rate"]
    linear = next(f for f in fits if _kind(f) == "linear")
    assert linear["cv"] is None and linear["pooling"] == "cls"  # tiny-vit has a [cls] token
    assert next(f for f in fits if _kind(f) == "prototypical")["n_prototypes_per_class"] == 20
    printed_rates = result["protocol"]["learning_rates"]
    assert set(printed_rates) == {"linear", "attentive", "prototypical"}


def test_esc50_fits_keep_a_source_recording_on_one_side(home, monkeypatch, tmp_path):
    """The probes get ESC-50's source recordings as groups; the paper recipe's validation clips are whole ones."""
    from skprobe.protocols.recipe import validation_split

    make_esc50(tmp_path / "esc", per_class_and_fold=2)
    data = PROTOCOLS["esc50"].read(tmp_path / "esc")
    folds = PROTOCOLS["esc50"].folds(data)
    fits = _recorder(monkeypatch)
    assert _run("esc50", tmp_path / "esc", home / "out", "--recipe", "paper", probes="attentive",
                params={"attentive": {"max_iter": 1}}) == 0
    assert len(fits) == 5 * (len(PAPER_LEARNING_RATES["attentive"]) + 1)
    final = [f for f in fits if f["n_clips"] == len(folds[0].train)]
    assert [f["groups"].tolist() for f in final] == [data.groups[fold.train].tolist() for fold in folds]
    grid = [f for f in fits if f["n_clips"] < len(folds[0].train)]
    assert grid and all(len(set(f["groups"].tolist())) * 2 == f["n_clips"] for f in grid)  # whole pairs only
    result = json.loads((home / "out" / "results.json").read_text())
    assert result["data"]["n_groups"] == len(data) // 2
    fit, val = validation_split(folds[0].train, data.y[folds[0].train], groups=data.groups[folds[0].train])
    assert not set(data.groups[fit]) & set(data.groups[val]) and len(val) >= round(0.1 * len(folds[0].train))


def _kind(params: dict) -> str:
    return "linear" if "pooling" in params else "prototypical" if "n_prototypes_per_class" in params else "attentive"


def test_paper_recipe_without_validation_split_holds_out_training_clips(roots, home, monkeypatch):
    root, sizes = roots["audioset-20k"]
    fits = _recorder(monkeypatch)
    assert _run("audioset-20k", root, home / "out", "--recipe", "paper", probes="prototypical",
                params={"prototypical": {"max_iter": 3}}) == 0
    n_train = sizes["balanced_train"]
    held_out = max(1, round(0.1 * n_train))
    assert [f["n_clips"] for f in fits] == [n_train - held_out] * 4 + [n_train]
    assert {f["n_prototypes_per_class"] for f in fits} == {10}  # the paper's J on AudioSet
    assert {f["max_iter"] for f in fits} == {3}  # --probe-params win over the recipe


def test_a_given_learning_rate_is_not_searched(roots, home, monkeypatch):
    root, _ = roots["speech-commands"]
    fits = _recorder(monkeypatch)
    assert _run("speech-commands", root, home / "out", "--recipe", "paper",
                params={"linear": {"learning_rate": 0.05, "max_iter": 2}}) == 0
    assert [f["learning_rate"] for f in fits] == [0.05]
    assert json.loads((home / "out" / "results.json").read_text())["protocol"]["learning_rates"] == {}


def test_nothing_is_decoded_before_extraction(roots, home, monkeypatch):
    root, _ = roots["urban-sed"]
    decoded = []
    read = sf.read
    monkeypatch.setattr(sf, "read", lambda *a, **k: decoded.append(a[0]) or read(*a, **k))
    at_start = []
    original = FrozenEncoderTransformer.extract_to_store

    def extract(self, X):
        at_start.append(len(decoded))
        assert isinstance(X, ClipPaths)  # paths stream in; no list of waveforms
        return original(self, X)

    monkeypatch.setattr(FrozenEncoderTransformer, "extract_to_store", extract)
    assert _run("urban-sed", root, home / "out", probes="prototypical") == 0
    assert at_start == [0] and len(decoded) >= 12  # every clip decoded by the extraction (and 3 by the plot)
    assert (home / "out" / "prototype_activations.png").stat().st_size > 0  # drawn with the annotated events


def test_folder_benchmark_streams_paths_into_the_store(home, monkeypatch):
    folder = home / "clips"
    folder.mkdir()
    rows = ["file,labels"]
    for i in range(8):
        sf.write(folder / f"c{i}.wav", (0.1 * np.sin(np.arange(4000) * (0.05 + 0.05 * (i % 2)))).astype(np.float32),
                 16000)
        rows.append(f"c{i}.wav,{'ab'[i % 2]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    config = BenchmarkConfig(encoder="tiny-vit", dataset=str(folder), verbose=0)
    monkeypatch.setattr(sf, "read", _refuse)
    data = load_benchmark_data(config)
    assert isinstance(data.X_train, ClipPaths) and len(data.X_train) + len(data.X_test) == 8
    monkeypatch.undo()
    X_train, X_test, _ = extract_tokens(config, data)
    assert isinstance(X_train, StoreArray) and X_train.shape[0] == len(data.X_train)


def _refuse(*args, **kwargs):
    raise AssertionError("decoded while loading the data set")


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "esc50"], "reads the published data set from --root DIR"),
    (["--dataset", "esc50", "--root", "/nonexistent/esc"], "--root /nonexistent/esc is not a folder"),
    (["--dataset", "esc50", "--root", "{root}", "--labels", "x.csv"], "--labels is for a folder data set"),
    (["--dataset", "esc50", "--root", "{root}", "--n-train", "3"], "n_train applies to the built-in sets"),
    (["--dataset", "esc50", "--root", "{root}", "--workers", "0"], "--workers must be at least 1"),
    (["--dataset", "{folder}", "--recipe", "paper"], "--recipe paper applies to the published data sets"),
    (["--dataset", "{folder}", "--workers", "2"], "--workers applies to the published data sets"),
    (["--dataset", "event-scenes", "--root", "{root}"], "unknown protocol 'event-scenes'"),
])
def test_one_line_errors(roots, home, capsys, argv, message):
    root, _ = roots["esc50"]
    argv = [a.format(root=root, folder=home) for a in argv]
    code = main(["benchmark", "--encoder", "tiny-vit", "--output", str(home / "out"), "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("skprobe: error: ") and message in err, err


def test_malformed_metadata_is_one_line_naming_file_and_line(home, capsys):
    make_esc50(home)
    path = home / "ESC-50-master" / "meta" / "esc50.csv"
    path.write_text(path.read_text().replace(",1,1,rooster", ",7,1,rooster"))
    code = main(["benchmark", "--encoder", "tiny-vit", "--dataset", "esc50", "--root", str(home), "--quiet",
                 "--output", str(home / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "esc50.csv line 3: fold '7' is not one of 1-5" in err


@pytest.mark.slow
def test_extraction_on_a_local_dask_cluster(roots, home, capsys):
    root, _ = roots["fsd50k"]
    assert _run("fsd50k", root, home / "out", "--workers", "1", "--chunk-size", "4") == 0
    result = json.loads((home / "out" / "results.json").read_text())
    assert result["extraction"]["workers"] == 1 and result["extraction"]["clips"] == 15
    assert "on 1 Dask worker(s)" in capsys.readouterr().out
