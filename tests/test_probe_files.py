"""``save_probe`` / ``load_probe``: probe files that load without running code (safetensors + JSON)."""

import datetime
import json
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_tensors
from safetensors.torch import save_file
from sklearn.exceptions import NotFittedError

from skprobe import (
    AttentiveProbeClassifier,
    ConvexGatedProbeClassifier,
    LinearProbeClassifier,
    PrototypicalProbeClassifier,
    load_probe,
    save_probe,
)
from skprobe.datasets.synthetic import make_token_scenes
from skprobe.probes import ProbeFileError

PROBES = {
    "linear": lambda: LinearProbeClassifier(max_iter=3, random_state=0),  # cv: cv_results_ is saved too
    "attentive": lambda: AttentiveProbeClassifier(max_iter=3, random_state=0),
    "prototypical": lambda: PrototypicalProbeClassifier(max_iter=3, random_state=0),
    "convex gated": lambda: ConvexGatedProbeClassifier(max_iter=3, n_prototypes=12, random_state=0),
}


@pytest.fixture(scope="module")
def targets():
    data = make_token_scenes(60, n_tokens=6, dim=8, n_classes=3, event_strength=5.0, random_state=0)
    single = make_token_scenes(60, n_tokens=6, dim=8, n_classes=3, multilabel=False, event_strength=5.0,
                               random_state=1)
    return {
        "multilabel": (data.X, data.y),
        "multiclass": (single.X, np.array(["bird", "car", "dog"])[single.y]),
        "binary": (single.X, single.y == 0),
        "float labels": (single.X, np.array([-1.0, 2.0, 3.0])[single.y]),
        "object labels": (single.X, np.array(["a", "7", "None"], dtype=object)[single.y]),
    }


def _attributes(probe):
    return {k: v for k, v in vars(probe).items() if k != "module_"}


@pytest.mark.parametrize("kind", ["multilabel", "multiclass", "binary", "float labels", "object labels"])
@pytest.mark.parametrize("name", list(PROBES))
def test_round_trip_predicts_identically(tmp_path, targets, name, kind, one_torch_thread):
    X, y = targets[kind]
    probe = PROBES[name]().fit(X, y)
    path = save_probe(probe, tmp_path / f"{name}.safetensors")
    again = load_probe(path)
    assert type(again) is type(probe) and again.get_params() == probe.get_params()
    np.testing.assert_array_equal(again.predict_proba(X), probe.predict_proba(X))
    np.testing.assert_array_equal(again.decision_function(X), probe.decision_function(X))
    np.testing.assert_array_equal(again.predict(X), probe.predict(X))
    assert again.predict(X).dtype == probe.predict(X).dtype
    assert again.classes_.dtype == probe.classes_.dtype and again.classes_.tolist() == probe.classes_.tolist()
    saved, loaded = _attributes(probe), _attributes(again)
    assert set(loaded) == set(saved)
    for key, value in saved.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(loaded[key], value)
        else:
            assert loaded[key] == value, key
    assert again.module_.normalize == probe.module_.normalize and not again.module_.training


def test_round_trip_of_a_multi_layer_convex_gated_probe(tmp_path, targets, one_torch_thread):
    X, y = targets["multilabel"]
    layers = np.stack([X[:, ::-1], X, 0.5 * X], axis=1)  # (n, 3 layers, tokens, dim)
    probe = ConvexGatedProbeClassifier(max_iter=3, n_prototypes=12, normalize_tokens="center", random_state=0)
    probe.fit(layers, y)
    again = load_probe(save_probe(probe, tmp_path / "cgp.safetensors"))
    assert again.n_layers_ == 3
    np.testing.assert_array_equal(again.layer_weights_, probe.layer_weights_)
    np.testing.assert_array_equal(again.predict_proba(layers), probe.predict_proba(layers))
    with pytest.raises(ValueError, match="3 layer"):
        again.predict(X)


def test_round_trip_of_a_probe_fitted_on_a_dataframe(tmp_path, targets):
    pd = pytest.importorskip("pandas")
    X, y = targets["multiclass"]
    frame = pd.DataFrame(X.mean(axis=1), columns=[f"f{i}" for i in range(X.shape[2])])
    probe = LinearProbeClassifier(max_iter=3, random_state=0).fit(frame, y)
    again = load_probe(save_probe(probe, tmp_path / "p.safetensors"))
    assert again.feature_names_in_.tolist() == probe.feature_names_in_.tolist()
    np.testing.assert_array_equal(again.predict_proba(frame), probe.predict_proba(frame))


def test_loading_runs_no_unpickler(tmp_path, targets, monkeypatch):
    X, y = targets["multilabel"]
    path = save_probe(PROBES["prototypical"]().fit(X, y), tmp_path / "p.safetensors")

    def forbidden(*args, **kwargs):
        raise AssertionError("an unpickler ran")

    for target, attribute in [(pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(target, attribute, forbidden)
    assert load_probe(path).predict(X).shape == y.shape


def test_labels_json_cannot_represent_are_refused(tmp_path, targets):
    X, y = targets["multiclass"]
    days = np.array(["2024-01-01", "2024-01-02", "2024-01-03"], dtype="datetime64[D]")
    probe = LinearProbeClassifier(max_iter=2, cv=None).fit(X, days[np.searchsorted(["bird", "car", "dog"], y)])
    with pytest.raises(ValueError, match=r"cannot save fitted attribute classes_: arrays of dtype datetime64\[D\]"):
        save_probe(probe, tmp_path / "p.safetensors")
    probe.classes_ = np.array([datetime.date(2024, 1, d) for d in (1, 2, 3)], dtype=object)
    with pytest.raises(ValueError, match=r"cannot save fitted attribute classes_: it holds a date"):
        save_probe(probe, tmp_path / "p.safetensors")
    assert not (tmp_path / "p.safetensors").exists()
    probe = LinearProbeClassifier(max_iter=2, cv=None, random_state=np.random.RandomState(0)).fit(X, y)
    with pytest.raises(ValueError, match=r"cannot save random_state=RandomState.*set_params\(random_state=<int>\)"):
        save_probe(probe, tmp_path / "p.safetensors")


def test_large_unsigned_labels_round_trip(tmp_path, targets):
    X, y = targets["multiclass"]
    labels = np.array([3, 2**63 + 1, 2**64 - 1], dtype=np.uint64)[np.searchsorted(["bird", "car", "dog"], y)]
    probe = LinearProbeClassifier(max_iter=2, cv=None, random_state=0).fit(X, labels)
    again = load_probe(save_probe(probe, tmp_path / "p.safetensors"))
    assert again.classes_.dtype == np.uint64 and again.classes_.tolist() == [3, 2**63 + 1, 2**64 - 1]
    np.testing.assert_array_equal(again.predict(X), probe.predict(X))


def test_only_fitted_skprobe_probes_are_saved(tmp_path):
    with pytest.raises(ValueError, match="is not fitted: call fit before save_probe"):
        save_probe(PrototypicalProbeClassifier(), tmp_path / "p.safetensors")

    class Mine(LinearProbeClassifier):
        pass

    with pytest.raises(ValueError, match="not a Mine"):
        save_probe(Mine(), tmp_path / "p.safetensors")


# -- wrong and malicious files --------------------------------------------------------------


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _rewrite(path, edit):
    """Rewrite the probe document of a probe file with ``edit(document)`` (tensors kept)."""
    from safetensors.torch import load_file

    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    document = json.loads(json.loads(data[8 : 8 + size])["__metadata__"]["skprobe"])
    edit(document)
    path.write_bytes(save_tensors(load_file(path), metadata={"skprobe": json.dumps(document)}))


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(document):
        target = document
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


@pytest.fixture
def saved(tmp_path, targets):
    X, y = targets["multiclass"]
    return save_probe(PROBES["prototypical"]().fit(X, y), tmp_path / "p.safetensors")


@pytest.mark.parametrize("edit, message", [
    (_set("class", "os.system"), r"class 'os.system' is not one of \['AttentiveProbeClassifier'"),
    (_set("class", "NoSuchProbe"), "is not one of"),
    (_set("params", "loss", "__import__('os').system('true')"), "The 'loss' parameter"),
    (_set("params", "evil", 1), "the parameters of PrototypicalProbeClassifier are"),
    (_set("attributes", "predict", 1), "'predict' is not a fitted attribute"),
    (_set("attributes", "__class__", "x"), "'__class__' is not a fitted attribute"),
    (_set("attributes", "classes_", {"__skprobe_type__": "ndarray", "dtype": "<U100000000", "shape": [3],
                                     "values": ["a", "b", "c"]}), "would take 1,200,000,000 bytes"),
    (_set("attributes", "classes_", {"__skprobe_type__": "ndarray", "dtype": "|V8", "shape": [1], "values": [1]}),
     "dtype '|V8' is not one a probe file keeps"),
    (_set("attributes", "classes_", {"__skprobe_type__": "pickle", "data": "gASV"}), "unknown tagged value 'pickle'"),
    (_set("attributes", "n_features_in_", 10**9), r"tensors do not fit a PrototypicalProbeClassifier of 1000000000"),
    (_set("network", "normalize", "eval"), "network normalisation 'eval'"),
    (_set("version", 2), "format version 2; this skprobe"),
    (lambda d: d.pop("attributes"), "missing entry 'attributes'"),
])
def test_tampered_file_is_refused_and_runs_nothing(saved, edit, message):
    _rewrite(saved, edit)
    with pytest.raises(ProbeFileError, match=message):
        load_probe(saved)


def test_wrong_tensors_are_refused(saved):
    from safetensors.torch import load_file

    tensors = load_file(saved)
    data = saved.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8 : 8 + size])["__metadata__"]
    tensors["head.prototypes"] = torch.zeros(3, 3)
    saved.write_bytes(save_tensors(tensors, metadata=metadata))
    with pytest.raises(ProbeFileError, match=r"wrong shape \['head.prototypes'\]"):
        load_probe(saved)


def test_pickles_and_other_files_are_refused_with_a_reason(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "probe.joblib"
    evil.write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(ProbeFileError, match=r"probe.joblib is not a probe file: .*it looks like a pickle"):
        load_probe(evil)
    assert not marker.exists()
    text = tmp_path / "notes.txt"
    text.write_text("hello there, this is text")
    with pytest.raises(ProbeFileError, match="notes.txt is not a probe file: expected a .safetensors file"):
        load_probe(text)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ProbeFileError, match="is not a probe file"):
        load_probe(empty)
    weights = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(weights))
    with pytest.raises(ProbeFileError, match="is a safetensors file but holds no skprobe probe"):
        load_probe(weights)


def test_truncated_file_is_refused(saved):
    saved.write_bytes(saved.read_bytes()[:-10])
    with pytest.raises(ProbeFileError, match="the tensors cannot be read"):
        load_probe(saved)


def test_loaded_probe_can_be_refitted(saved, targets):
    X, y = targets["multiclass"]
    probe = load_probe(saved)
    probe.fit(X, y)
    assert probe.predict(X).shape == y.shape
    probe = load_probe(saved)
    probe._forget_fit()
    with pytest.raises(NotFittedError):
        probe.predict(X)


def test_files_and_pickles_from_before_target_type_still_load(saved, targets):
    """Files and pickles written while the target kind was the private ``_target_kind`` load as ``target_type_``."""
    X, _ = targets["multiclass"]
    expected = load_probe(saved).predict_proba(X)

    def rename(document):
        document["attributes"]["_target_kind"] = document["attributes"].pop("target_type_")
    _rewrite(saved, rename)
    old = load_probe(saved)
    assert old.target_type_ == old._target_kind == "multiclass"
    np.testing.assert_array_equal(old.predict_proba(X), expected)

    state = old.__getstate__()
    state["_target_kind"] = state.pop("target_type_")
    unpickled = type(old).__new__(type(old))
    unpickled.__setstate__(state)
    assert unpickled.target_type_ == "multiclass" and "_target_kind" not in vars(unpickled)
    np.testing.assert_array_equal(unpickled.predict_proba(X), expected)
