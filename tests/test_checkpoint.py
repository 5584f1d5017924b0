"""Safe checkpoint reading, state-dict unwrapping and strict loading."""

import argparse
import io
import os
import pickle
import sys
import types
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from skprobe.encoders import EncoderSpec, load_encoder
from skprobe.encoders.formats.checkpoint import (
    PickledObjectStub,
    file_sha256,
    load_state_dict_strict,
    read_checkpoint,
    unwrap_state_dict,
)
from skprobe.encoders.models.tiny import TinyConvEncoder


def _state():
    torch.manual_seed(0)
    return {"layer.weight": torch.randn(3, 4), "layer.bias": torch.randn(3), "steps": torch.tensor(7)}


def _assert_same_state(loaded, state):
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


class _Marker:
    """Pickles as a call to os.system that would create ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


# -- read_checkpoint: formats ----------------------------------------------------------


def test_read_safetensors(tmp_path):
    state = _state()
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    _assert_same_state(read_checkpoint(path), state)


def test_read_plain_state_dict(tmp_path):
    state = _state()
    path = tmp_path / "model.pt"
    torch.save(state, path)
    _assert_same_state(read_checkpoint(str(path)), state)


def test_read_legacy_torch_format(tmp_path):
    state = _state()
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    _assert_same_state(read_checkpoint(path), state)


@pytest.fixture
def fake_trainer_module(monkeypatch):
    """A module ``fake_trainer`` whose classes record any code run while unpickling."""
    module = types.ModuleType("fake_trainer")
    module.calls = []

    class TrainerConfig:
        def __init__(self, lr):
            self.lr = lr

        def __setstate__(self, state):
            module.calls.append("setstate")
            self.__dict__.update(state)

    class TaskDict(dict):
        def __setitem__(self, key, value):
            module.calls.append("setitem")
            super().__setitem__(key, value)

    for cls in (TrainerConfig, TaskDict):
        cls.__module__ = "fake_trainer"
        cls.__qualname__ = cls.__name__
        setattr(module, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "fake_trainer", module)
    return module


def test_read_training_snapshot_stubs_config_objects(tmp_path, fake_trainer_module):
    state = _state()
    task = fake_trainer_module.TaskDict(name="audioset")
    snapshot = {
        "model": state,
        "args": argparse.Namespace(lr=1e-3, layers=12, name="vit"),
        "cfg": fake_trainer_module.TrainerConfig(lr=0.5),
        "task": task,
        "epoch": 10,
    }
    path = tmp_path / "snapshot.pt"
    torch.save(snapshot, path)
    with pytest.raises(pickle.UnpicklingError):  # what the restricted path exists for
        torch.load(path, weights_only=True)
    fake_trainer_module.calls.clear()

    out = read_checkpoint(path)
    # The real classes are importable here, yet nothing of them ran: they became stubs.
    assert fake_trainer_module.calls == []
    _assert_same_state(out["model"], state)
    assert out["epoch"] == 10
    args, cfg, task_out = out["args"], out["cfg"], out["task"]
    for stub, qualname in ((args, "argparse.Namespace"), (cfg, "fake_trainer.TrainerConfig"),
                           (task_out, "fake_trainer.TaskDict")):
        assert isinstance(stub, PickledObjectStub)
        assert stub.qualname == qualname
        assert qualname in repr(stub)
    assert not isinstance(args, argparse.Namespace)
    assert args.state == {"lr": 1e-3, "layers": 12, "name": "vit"}  # plain values stay readable
    assert cfg.state == {"lr": 0.5}
    assert task_out.items == {"name": "audioset"}
    _assert_same_state(unwrap_state_dict(out), state)


def test_snapshot_of_an_unimportable_module_still_reads(tmp_path, fake_trainer_module, monkeypatch):
    path = tmp_path / "snapshot.pt"
    torch.save({"model": _state(), "cfg": fake_trainer_module.TrainerConfig(lr=1)}, path)
    monkeypatch.delitem(sys.modules, "fake_trainer")
    out = read_checkpoint(path)
    assert out["cfg"].qualname == "fake_trainer.TrainerConfig"
    _assert_same_state(out["model"], _state())


def test_reduce_calling_os_system_is_not_executed(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"model": _state(), "payload": _Marker(marker)}, path)
    out = read_checkpoint(path)
    assert not marker.exists()
    assert isinstance(out["payload"], PickledObjectStub)
    assert out["payload"].qualname in ("posix.system", "nt.system")
    assert out["payload"].args == (f"touch {marker}",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_raw_pickle_with_os_system_is_rejected_unexecuted(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"payload": _Marker(marker)}))
    with pytest.raises(ValueError, match="cannot read checkpoint .*evil.pkl"):
        read_checkpoint(path)
    assert not marker.exists()


class _NestedLoad:
    """Pickles as torch.storage._load_from_bytes(data): an inner, separate torch.load."""

    def __init__(self, data):
        self.data = data

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.data,))


def test_nested_load_from_bytes_cannot_run_code(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"model": _state(), "args": argparse.Namespace(a=1),
                "x": _NestedLoad(pickle.dumps(_Marker(marker)))}, path)
    try:
        read_checkpoint(path)
    except ValueError:
        pass
    assert not marker.exists()


def test_nested_load_from_bytes_still_reads_tensors(tmp_path):
    # Plain-pickled storages embed a torch.save payload; it must keep working.
    buffer = io.BytesIO()
    torch.save(torch.arange(5.0), buffer)
    path = tmp_path / "snapshot.pt"
    torch.save({"args": argparse.Namespace(a=1), "legacy": _NestedLoad(buffer.getvalue())}, path)
    out = read_checkpoint(path)
    assert torch.equal(out["legacy"], torch.arange(5.0))


def test_read_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint file not found: .*nothing.pt"):
        read_checkpoint(tmp_path / "nothing.pt")


@pytest.mark.parametrize("name", ["garbage.pt", "garbage.safetensors", "truncated.pt"])
def test_read_unreadable_file_names_it(tmp_path, name):
    path = tmp_path / name
    if name == "truncated.pt":
        torch.save(_state(), path)
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(ValueError, match=f"cannot read .*checkpoint .*{name}"):
        read_checkpoint(path)


# -- unwrap_state_dict -----------------------------------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"model": s, "optimizer": {"lr": 0.1}},
        lambda s: {"state_dict": s, "epoch": 3},
        lambda s: {"module": s},
        lambda s: {"model_state_dict": s},
        lambda s: {"model": {"module": s}, "args": None},
        lambda s: OrderedDict(s),
    ],
)
def test_unwrap_state_dict(wrap):
    state = _state()
    out = unwrap_state_dict(wrap(state))
    assert type(out) is dict
    _assert_same_state(out, state)


def test_unwrap_state_dict_custom_keys():
    state = _state()
    _assert_same_state(unwrap_state_dict({"teacher": state, "student": {}}, keys=("teacher",)), state)


def test_unwrap_state_dict_error_lists_keys():
    with pytest.raises(ValueError, match="no state dict of tensors .*keys seen: optimizer, epoch"):
        unwrap_state_dict({"optimizer": {"lr": 0.1}, "epoch": 3})
    with pytest.raises(ValueError, match="keys seen: model \\| lr"):
        unwrap_state_dict({"model": {"lr": 0.1}})
    with pytest.raises(ValueError, match="keys seen: list"):
        unwrap_state_dict([torch.zeros(1)])


# -- load_state_dict_strict ------------------------------------------------------------


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(3, 2)


def test_load_state_dict_strict_loads_values():
    src, dst = _Net(), _Net()
    load_state_dict_strict(dst, src.state_dict())
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value)


def test_load_state_dict_strict_lists_every_kind_of_mismatch():
    state = _Net().state_dict()
    del state["b.bias"]
    state["head.weight"] = torch.zeros(1)
    state["a.weight"] = torch.zeros(5, 4)
    with pytest.raises(ValueError) as info:
        load_state_dict_strict(_Net(), state, source="checkpoint ckpt.pt")
    message = str(info.value)
    assert message.startswith("checkpoint ckpt.pt does not match _Net")
    assert "1 missing key(s): b.bias" in message
    assert "1 unexpected key(s): head.weight" in message
    assert "1 wrong shape key(s): a.weight: checkpoint (5, 4) vs model (3, 4)" in message


def test_load_state_dict_strict_truncates_long_lists():
    state = {f"extra{i}": torch.zeros(1) for i in range(12)}
    state.update(_Net().state_dict())
    with pytest.raises(ValueError, match="12 unexpected key\\(s\\): extra0, extra1, .*extra2, ... \\(9 more\\)"):
        load_state_dict_strict(_Net(), state, max_listed=3)


def test_load_state_dict_strict_leaves_module_untouched_on_error():
    net = _Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    bad = {k: torch.ones_like(v) for k, v in net.state_dict().items()}
    bad.pop("a.bias")
    with pytest.raises(ValueError):
        load_state_dict_strict(net, bad)
    for key, value in before.items():
        assert torch.equal(net.state_dict()[key], value)


# -- load_encoder through a spec -------------------------------------------------------


def _tiny_cnn_spec(builder=TinyConvEncoder):
    return EncoderSpec(name="ckpt-test-cnn", builder=builder, sample_rate=16000, clip_seconds=1.0)


class _OfficialNamesCNN(TinyConvEncoder):
    """Reads an 'official' file whose keys carry an ``encoder.`` prefix and a head."""

    def convert_state_dict(self, state):
        return {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}


def test_load_encoder_from_wrapped_snapshot_with_conversion(tmp_path):
    source = TinyConvEncoder(seed=3)
    official = {f"encoder.{k}": v for k, v in source.state_dict().items()}
    official["head.weight"] = torch.zeros(10, 16)
    path = tmp_path / "official.pt"
    torch.save({"model": official, "args": argparse.Namespace(seed=3)}, path)

    module = load_encoder(_tiny_cnn_spec(_OfficialNamesCNN), path)
    assert not module.training
    assert not any(p.requires_grad for p in module.parameters())
    for key, value in source.state_dict().items():
        assert torch.equal(module.state_dict()[key], value)
    with pytest.raises(ValueError, match=r"unexpected key\(s\): encoder\..*head\.weight"):
        load_encoder(_tiny_cnn_spec(), path)  # without the hook the official names do not load


def test_load_encoder_mismatching_checkpoint_lists_first_keys(tmp_path):
    state = TinyConvEncoder().state_dict()
    state["convs.1.weight"] = torch.zeros(32, 8, 3, 3)
    state.pop("convs.1.bias")
    path = tmp_path / "other.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError) as info:
        load_encoder(_tiny_cnn_spec(), path)
    message = str(info.value)
    assert f"checkpoint {path} does not match TinyConvEncoder" in message
    assert "missing key(s): convs.1.bias" in message
    assert "convs.1.weight: checkpoint (32, 8, 3, 3) vs model (16, 8, 3, 3)" in message


def test_load_encoder_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint for encoder 'ckpt-test-cnn' not found"):
        load_encoder(_tiny_cnn_spec(), tmp_path / "missing.pt")


# -- file_sha256 -----------------------------------------------------------------------


def test_file_sha256_of_file_and_folder(tmp_path):
    import hashlib

    (tmp_path / "a.bin").write_bytes(b"abc")
    assert file_sha256(tmp_path / "a.bin") == hashlib.sha256(b"abc").hexdigest()
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "x.index").write_bytes(b"1")
    (folder / "sub" / "y.data").write_bytes(b"2")
    first = file_sha256(folder)
    assert first == file_sha256(folder)
    (folder / "sub" / "y.data").write_bytes(b"3")
    assert file_sha256(folder) != first


# -- what a checkpoint may make the loader allocate (issue 19, item 7) -------------------


class _Call:
    """Pickles as ``func(*args)``, without calling it."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


class _DeclaredStorage:
    """Pickled by ``_StoragePickler`` as a storage that declares ``numel`` elements."""

    def __init__(self, numel):
        self.numel = numel


class _StoragePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _DeclaredStorage):
            return ("storage", torch.FloatStorage, "0", "cpu", obj.numel)
        return None


def _zip_with_pickle(path, data_pkl):
    """A torch zip checkpoint whose data.pkl is replaced by ``data_pkl``."""
    import zipfile

    plain = path.with_suffix(".plain")
    torch.save({"w": torch.zeros(2)}, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, data_pkl if info.filename.endswith("/data.pkl") else src.read(info.filename))
    plain.unlink()
    return path


def _declared_storage_pickle(numel):
    buffer = io.BytesIO()
    rebuild = _Call(torch._utils._rebuild_tensor_v2, _DeclaredStorage(numel), 0, (numel,), (1,), False, OrderedDict())
    _StoragePickler(buffer, protocol=2).dump({"w": rebuild})
    return buffer.getvalue()


def _numpy_reconstruct():
    import numpy as np

    return _Call(np.ndarray.__reduce__(np.zeros(1))[0], np.ndarray, (3_000_000_000,), b"b")


ALLOCATING = {
    "bytearray in a zip checkpoint": lambda p: torch.save({"w": _Call(bytearray, 3_000_000_000)}, p),
    "bytearray in a raw pickle": lambda p: p.write_bytes(pickle.dumps(_Call(bytearray, 3_000_000_000), protocol=2)),
    "legacy tensor constructor": lambda p: torch.save({"w": _Call(torch.FloatTensor, 40_000, 40_000)}, p),
    "numpy array in a snapshot": lambda p: torch.save({"args": argparse.Namespace(a=1), "x": _numpy_reconstruct()}, p),
    "storage of a declared size": lambda p: _zip_with_pickle(p, _declared_storage_pickle(3_000_000_000)),
    "length prefix past the end": lambda p: p.write_bytes(b"\x80\x04\x8e" + (3_000_000_000).to_bytes(8, "little")),
}


@pytest.mark.parametrize("case", list(ALLOCATING))
def test_checkpoint_asking_for_gigabytes_is_refused_before_loading(tmp_path, monkeypatch, case):
    """A 1-2 kB file whose pickle asks the loader for gigabytes: refused before torch.load runs."""
    from skprobe.encoders.formats import checkpoint as checkpoint_format

    path = tmp_path / "bomb.pt"
    ALLOCATING[case](path)
    assert path.stat().st_size < 4096

    def no_load(*args, **kwargs):
        raise AssertionError("torch.load ran")

    monkeypatch.setattr(checkpoint_format.torch, "load", no_load)
    with pytest.raises(ValueError, match=r"bomb.pt: loading it would allocate at least [\d,]{13,} bytes, more than "
                                         r"8x its size .*refused before loading"):
        read_checkpoint(path)


def test_embedded_torch_file_asking_for_gigabytes_is_refused(tmp_path):
    """Storages pickled with plain pickle embed a whole torch file: it is bounded before its own load."""
    inner = io.BytesIO()
    torch.save(_Call(bytearray, 3_000_000_000), inner)
    path = tmp_path / "snapshot.pt"
    torch.save({"args": argparse.Namespace(a=1), "legacy": _NestedLoad(inner.getvalue())}, path)
    with pytest.raises(ValueError, match="an embedded torch file: loading it would allocate at least 3,000,000,000"):
        read_checkpoint(path)


def test_checkpoint_with_a_storage_of_its_own_size_loads(tmp_path):
    """The bound leaves real checkpoints alone: a storage declared at its true size reads as before."""
    state = {"w": torch.arange(300_000, dtype=torch.float32)}
    path = tmp_path / "model.pt"
    torch.save(state, path)
    torch.testing.assert_close(read_checkpoint(path)["w"], state["w"])
    legacy = tmp_path / "legacy.pt"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    torch.testing.assert_close(read_checkpoint(legacy)["w"], state["w"])
