"""Safe checkpoint reading and strict state-dict matching.

Official audio checkpoints come as safetensors, plain ``torch.save`` dicts, or
training snapshots that also pickle ``argparse.Namespace`` / omegaconf configs
(fairseq, AudioMAE). Those extra objects are never constructed: unknown classes
are replaced by inert :class:`PickledObjectStub` placeholders, and only tensor
rebuild functions and plain containers are resolved for real.
"""

from __future__ import annotations

import io
import os
import pickle
import types
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..identity import file_sha256  # moved to skprobe.encoders.identity; importable from here as before
from ._allocations import AllocationRefused, pickle_allocations

__all__ = [
    "read_checkpoint",
    "unwrap_state_dict",
    "load_state_dict_strict",
    "file_sha256",
    "PickledObjectStub",
]


class PickledObjectStub:
    """Inert stand-in for a pickled object of a class skprobe does not trust.

    It keeps the qualified name, the constructor arguments and the state so
    a loader can still read plain values out of a config, without running
    any code of the original class.
    """

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # dict-like subclasses
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value: Any) -> None:  # list-like subclasses
        self.__dict__.setdefault("values", []).append(value)

    def extend(self, values: Iterable[Any]) -> None:
        self.__dict__.setdefault("values", []).extend(values)

    def __repr__(self) -> str:
        return f"<stub of {self.qualname}>"


def _stub_class(module: str, name: str) -> type:
    return type(name, (PickledObjectStub,), {"qualname": f"{module}.{name}"})


# Callables that only rebuild data; anything else becomes a stub.
_ALLOWED_PREFIXES = ("torch._utils._rebuild_", "torch._tensor._rebuild_")
_ALLOWED = {
    ("collections", "OrderedDict"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
    # Protocol-2 pickles written by Python 3 store bytes (e.g. numpy scalars'
    # raw data) as _codecs.encode(text, "latin1").
    ("_codecs", "encode"),
}


def _restricted_load_from_bytes(data: bytes) -> Any:
    # torch.storage._load_from_bytes (storages pickled with plain pickle) calls an
    # unrestricted torch.load on embedded bytes; read them the restricted way too.
    _check_allocations(data, len(data), "an embedded torch file")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _restricted_load_from_bytes
        if (module, name) in _ALLOWED or full.startswith(_ALLOWED_PREFIXES):
            return super().find_class(module, name)
        if module == "torch" and (name.endswith("Storage") or name in _TORCH_DTYPES):
            return super().find_class(module, name)
        return _stub_class(module, name)


_TORCH_DTYPES = {
    "float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8",
    "uint8", "bool", "complex64", "complex128", "float", "half", "double", "long", "int",
}

_restricted_pickle = types.ModuleType("skprobe_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
_restricted_pickle.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()  # type: ignore[attr-defined]
_restricted_pickle.__name__ = "pickle"


#: Most bytes a compressed checkpoint archive may expand to, as a multiple of its file size.
#: ``torch.save`` stores its archive members uncompressed; a deflated member only comes from
#: re-zipping, where float weights shrink little. A zip bomb would expand about 1000 times.
MAX_EXPANSION = 8
_SLACK = 1 << 20  # small pickles and metadata compress well; allow them some room


def _check_archive_sizes(path: Path) -> None:
    """Bound what a zip checkpoint declares against its size on disk, before torch allocates it.

    Raises
    ------
    ValueError
        If the members' compressed sizes exceed the file, or their expanded
        sizes exceed ``MAX_EXPANSION`` times the file size.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip archive (legacy torch format): torch.load reports what is wrong
    size = path.stat().st_size
    stored = sum(i.compress_size for i in infos)
    expanded = sum(i.file_size for i in infos)
    if stored > size:
        raise ValueError(f"cannot read checkpoint {path}: its archive declares {stored:,} bytes of members "
                         f"in a file of {size:,} bytes (truncated or crafted)")
    if expanded > MAX_EXPANSION * size + _SLACK:
        raise ValueError(
            f"cannot read checkpoint {path}: its {size:,}-byte archive expands to {expanded:,} bytes, more than "
            f"{MAX_EXPANSION}x its size; refused before decompressing. torch.save writes checkpoints "
            "uncompressed: re-save it with torch.save, or unzip and re-zip it without compression (zip -0)"
        )


def _check_allocations(source: Path | bytes, size: int, name: object) -> None:
    """Refuse ``source`` (a file of ``size`` bytes) if loading it would allocate more than ``MAX_EXPANSION``
    times its size: what its pickles ask for is added up without loading (:mod:`._allocations`)."""
    try:
        pickle_allocations(source, MAX_EXPANSION * size + _SLACK)
    except AllocationRefused as exc:
        raise ValueError(
            f"cannot read checkpoint {name}: loading it would allocate at least {exc.requested:,} bytes, more than "
            f"{MAX_EXPANSION}x its size of {size:,} bytes ({exc.what}); refused before loading"
        ) from None
    except ValueError as exc:
        raise ValueError(f"cannot read checkpoint {name}: {exc}") from None


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Read a checkpoint file without executing code from it.

    ``.safetensors`` files are read with :mod:`safetensors`; other files with
    ``torch.load(weights_only=True)``, and, when that refuses a training
    snapshot that pickles configuration objects, with a restricted unpickler
    that turns every non-tensor class into an inert :class:`PickledObjectStub`.
Before either, what the file's pickles would make the loader allocate is
added up without loading them, and a file asking for more than
``MAX_EXPANSION`` times its size is refused.

    Parameters
    ----------
    path : str or path-like
        The checkpoint file.

    Returns
    -------
    object
        Usually a (nested) dict holding tensors.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is a directory, the file is not a readable checkpoint, a
        compressed archive would expand to more than ``MAX_EXPANSION`` times
        its size, or its pickles ask the loader for more than
        ``MAX_EXPANSION`` times its size in memory (``bytearray(n)``,
        ``torch.FloatTensor(n, n)``, a storage of a huge declared size; found
        by replaying the pickles with stand-ins, before anything is loaded).
        The message names the file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> _ = path.write_text("hello")
    >>> read_checkpoint(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: cannot read checkpoint .../notes.txt: not a torch checkpoint or safetensors file (KeyError: 101)
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory; pass the checkpoint file inside it")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"cannot read safetensors checkpoint {path}: {exc}") from exc
    _check_archive_sizes(path)
    _check_allocations(path, path.stat().st_size, path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # a snapshot with config objects: read it the restricted way below
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    except Exception as exc:  # e.g. KeyError from the legacy reader on a text file
        raise ValueError(f"cannot read checkpoint {path}: not a torch checkpoint or safetensors file "
                         f"({type(exc).__name__}: {exc})") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except Exception as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc


def _flatten_tensors(state: Mapping[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, Mapping):
            out.update(_flatten_tensors(value, f"{prefix}{key}."))
        elif isinstance(value, torch.Tensor):
            out[f"{prefix}{key}"] = value
    return out


def unwrap_state_dict(
    obj: Any, keys: Iterable[str] = ("model", "state_dict", "module", "model_state_dict")
) -> dict[str, torch.Tensor]:
    """Find the tensor state dict inside a checkpoint object.

    One rule set for every checkpoint: while the first of ``keys`` present at
    a level holds a mapping, descend into it; the level reached must hold
    tensors. Nested mappings of tensors there are flattened to dotted keys
    (fairseq's data2vec models keep their EMA teacher as a nested dict under
    ``_ema``, which becomes ``_ema.<key>``) and entries that are not tensors
    (``None``, numbers) are dropped.

    Parameters
    ----------
    obj : object
        What :func:`read_checkpoint` returned.
    keys : iterable of str
        Wrapper keys to descend through, in order of preference.

    Returns
    -------
    dict
        ``{name: tensor}``.

    Raises
    ------
    ValueError
        If no tensors are found; the message lists the keys seen at each level.

    Examples
    --------
    >>> import torch
    >>> unwrap_state_dict({"model": {"w": torch.zeros(1), "step": 3}, "epoch": 3})
    {'w': tensor([0.])}
    """
    seen: list[str] = []
    keys = tuple(keys)
    while isinstance(obj, Mapping):
        wrapper = next((key for key in keys if isinstance(obj.get(key), Mapping)), None)
        if wrapper is None:
            state = _flatten_tensors(obj)
            if state:
                return state
        seen.append(", ".join(map(str, list(obj)[:10])))
        if wrapper is None:
            break
        obj = obj[wrapper]
    raise ValueError(
        "no state dict of tensors found (looked under "
        f"{list(keys)}; keys seen: {' | '.join(seen) or type(obj).__name__})"
    )


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "checkpoint", max_listed: int = 8
) -> None:
    """Load ``state_dict`` into ``module`` with exact key and shape matching.

    Raises
    ------
    ValueError
        If any key is missing, unexpected, or of another shape; the message
        lists the first mismatching keys of each kind.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if items:
            more = f", ... ({len(items) - max_listed} more)" if len(items) > max_listed else ""
            problems.append(f"{len(items)} {label} key(s): {', '.join(items[:max_listed])}{more}")
    if problems:
        raise ValueError(
            f"{source} does not match {type(module).__name__}: " + "; ".join(problems)
        )
    module.load_state_dict(dict(state_dict), strict=True)


