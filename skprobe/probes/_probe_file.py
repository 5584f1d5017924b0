"""Probe files that load without running code: weights in safetensors, everything else in JSON.

A pickle (joblib) of a fitted probe runs whatever code it holds when it is
loaded. A probe file written by :func:`save_probe` is one ``.safetensors``
file: the trained network's tensors, and in the file's metadata a JSON
document with the probe's class (one of skprobe's four probes), its
parameters and its fitted attributes. :func:`load_probe` reads the JSON as
data, builds the network of that class on the ``meta`` device (nothing is
allocated before the file's tensors are checked against it) and loads the
tensors into it. Nothing in the file is ever called or imported.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import atomic_write
from .._version import __version__
from .attentive import AttentiveProbeClassifier
from .base import BaseProbeClassifier, ProbeNetwork
from .convex_gated import ConvexGatedProbeClassifier
from .linear import LinearProbeClassifier
from .prototypical import PrototypicalProbeClassifier

__all__ = ["PROBE_FILE_FORMAT", "ProbeFileError", "load_probe", "save_probe"]

#: The value of ``format`` in a probe file's metadata; ``version`` is 1.
PROBE_FILE_FORMAT = "skprobe-probe"
_VERSION = 1
_KEY = "skprobe"  # the metadata entry that holds the JSON document

#: The only classes a probe file may name.
_CLASSES = {cls.__name__: cls for cls in (LinearProbeClassifier, AttentiveProbeClassifier,
                                          PrototypicalProbeClassifier, ConvexGatedProbeClassifier)}
#: Fitted attributes that do not end in ``_`` (see ``BaseProbeClassifier._PRIVATE_FIT_STATE``).
_PRIVATE = set(BaseProbeClassifier._PRIVATE_FIT_STATE) | {"_target_kind"}  # files written before target_type_
_FITTED_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*_$")  # C_ as LogisticRegressionCV names it
#: numpy dtype kinds an array in a probe file may have: bool, integers, floats, strings, Python scalars.
_ARRAY_KINDS = set("biufUO")
_TAG = "__skprobe_type__"


class ProbeFileError(ValueError):
    """A file that is not a probe file written by :func:`save_probe`, or one that does not match its probe."""


def save_probe(probe: BaseProbeClassifier, path: str | os.PathLike) -> Path:
    """Write a fitted probe to ``path`` in a format that loads without running code.

    One safetensors file: the trained network's tensors, and the probe's
    class, parameters and fitted attributes as JSON in the file's metadata.
    Written atomically. Read it back with :func:`load_probe`.

    Parameters
    ----------
    probe : LinearProbeClassifier, AttentiveProbeClassifier, PrototypicalProbeClassifier or ConvexGatedProbeClassifier
        A fitted probe, for binary, multi-class or multi-label ``y``.
    path : path-like
        Destination, conventionally ending in ``.safetensors``.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        If the probe is not fitted, is not one of skprobe's four probes (a
        subclass is refused too), or holds a value JSON cannot represent
        exactly: ``classes_`` may hold integers, floats, booleans or strings
        (numpy arrays of those, or object arrays of Python ``None``, bool,
        int, float and str); tuples, bytes, dates and other objects as class
        labels are refused, and so is a ``random_state`` that is a
        ``RandomState`` instance (pass an int or None). A ``torch.device``
        given as ``device`` is saved as its string.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from skprobe import LinearProbeClassifier, load_probe, save_probe
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(40, 4, 8)).astype("float32"), np.array(["cat", "dog"] * 20)
    >>> probe = LinearProbeClassifier(max_iter=3, cv=None, random_state=0).fit(X, y)
    >>> path = save_probe(probe, pathlib.Path(tempfile.mkdtemp()) / "probe.safetensors")
    >>> again = load_probe(path)
    >>> again.classes_.tolist(), bool((again.predict_proba(X) == probe.predict_proba(X)).all())
    (['cat', 'dog'], True)
    """
    from safetensors.torch import save as save_tensors

    cls = type(probe)
    if _CLASSES.get(cls.__name__) is not cls:
        raise ValueError(f"save_probe writes skprobe's probes {sorted(_CLASSES)}, not a {cls.__name__}")
    if not isinstance(getattr(probe, "module_", None), ProbeNetwork):
        raise ValueError(f"this {cls.__name__} is not fitted: call fit before save_probe")
    params = {}
    for name, value in probe.get_params(deep=False).items():
        if name == "device" and isinstance(value, torch.device):
            value = str(value)
        if name == "random_state" and not (value is None or isinstance(value, (int, np.integer))):
            raise ValueError(f"cannot save random_state={value!r}: a probe file keeps an int or None; "
                             "set_params(random_state=<int>) first")
        params[name] = _encode(value, f"parameter {name}")
    attributes = {}
    for name, value in vars(probe).items():
        if name in params or name == "module_":
            continue
        if name in _PRIVATE or (_FITTED_NAME.match(name) and not name.startswith("_")):
            attributes[name] = _encode(value, f"fitted attribute {name}")
    _check_round_trip(probe.classes_, attributes["classes_"])
    network = probe.module_
    document = {
        "format": PROBE_FILE_FORMAT, "version": _VERSION, "skprobe": __version__, "class": cls.__name__,
        "params": params, "attributes": attributes,
        "network": {"normalize": network.normalize, "token_offset_ratio": network.token_offset_ratio,
                    "token_coherence": network.token_coherence},
    }
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()}
    data = save_tensors(tensors, metadata={_KEY: json.dumps(document)})
    return atomic_write(path, lambda fh: fh.write(data))


def load_probe(path: str | os.PathLike) -> BaseProbeClassifier:
    """Read a probe written by :func:`save_probe`; nothing in the file is run.

    The file's JSON is read as data: its class must be one of skprobe's four
    probes, its parameters pass the probe's parameter validation, and the
    tensors must match, name for name and shape for shape, the network that
    class builds for the saved dimensions. The probe returned predicts
    exactly as the one saved (on the same device).

    Parameters
    ----------
    path : path-like

    Returns
    -------
    LinearProbeClassifier, AttentiveProbeClassifier, PrototypicalProbeClassifier or ConvexGatedProbeClassifier
        Fitted.

    Raises
    ------
    ProbeFileError
        (a ``ValueError``) naming the file and what is wrong: not a
        safetensors file, a safetensors file without a probe, an unknown
        format version or class, bad parameters, or tensors that do not fit
        the probe.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    path = Path(path)
    data = path.read_bytes()
    document = _read_document(data, path)
    try:
        tensors = load_tensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ProbeFileError(f"{path}: the tensors cannot be read ({exc})") from None
    try:
        return _build(document, tensors)
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"missing entry {exc}" if isinstance(exc, KeyError) else str(exc).strip()
        raise ProbeFileError(f"{path} is not a valid probe file: {detail}") from None


def _read_document(data: bytes, path: Path) -> dict:
    """The JSON document in the safetensors header of ``data``."""
    not_safetensors = ProbeFileError(
        f"{path} is not a probe file: expected a .safetensors file written by skprobe.save_probe or "
        "`skprobe benchmark --save-probes`" + (" (it looks like a pickle, which is only loaded with "
                                                "--allow-pickle)" if data[:1] == b"\x80" else ""))
    if len(data) < 8:
        raise not_safetensors
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8 or size > 100 * 2**20:
        raise not_safetensors
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, ValueError):
        raise not_safetensors from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or _KEY not in metadata:
        raise ProbeFileError(f"{path} is a safetensors file but holds no skprobe probe (no {_KEY!r} metadata)")
    try:
        document = json.loads(metadata[_KEY])
    except (TypeError, ValueError) as exc:
        raise ProbeFileError(f"{path}: the probe's metadata is not valid JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != PROBE_FILE_FORMAT:
        raise ProbeFileError(f"{path}: the metadata is not a {PROBE_FILE_FORMAT!r} document")
    if document.get("version") != _VERSION:
        raise ProbeFileError(f"{path} is a probe file of format version {document.get('version')!r}; this skprobe "
                             f"({__version__}) reads version {_VERSION}")
    return document


def _build(document: dict, tensors: dict[str, torch.Tensor]) -> BaseProbeClassifier:
    name = document["class"]
    if not isinstance(name, str) or name not in _CLASSES:
        raise ValueError(f"class {name!r} is not one of {sorted(_CLASSES)}")
    cls = _CLASSES[name]
    params, attributes = document["params"], document["attributes"]
    if not isinstance(params, dict) or not isinstance(attributes, dict):
        raise ValueError("params and attributes must be JSON objects")
    known = set(cls().get_params(deep=False))
    if set(params) != known:
        raise ValueError(f"the parameters of {name} are {sorted(known)}, the file has {sorted(params)}")
    limit = 16 * len(json.dumps(document)) + 2**20  # arrays: at most 16 bytes per character of the document
    probe = cls(**{k: _decode(v, limit) for k, v in params.items()})
    probe._validate_params()
    for key, value in attributes.items():
        if not (key in _PRIVATE or (_FITTED_NAME.match(key) and not hasattr(cls, key))):
            raise ValueError(f"{key!r} is not a fitted attribute of a probe")
        setattr(probe, key, _decode(value, limit))
    for key in ("classes_", "n_features_in_", "target_type_"):
        if key not in attributes and not (key == "target_type_" and "_target_kind" in attributes):
            raise KeyError(key)
    if not isinstance(probe.n_features_in_, int) or probe.n_features_in_ < 1:
        raise ValueError(f"n_features_in_ must be a positive int, got {probe.n_features_in_!r}")
    probe.module_ = _network(probe, document["network"], tensors)
    return probe


def _network(probe: BaseProbeClassifier, saved: dict, tensors: dict[str, torch.Tensor]) -> ProbeNetwork:
    """The probe's network for its saved dimensions, built on the meta device, then given the file's tensors."""
    normalize = saved["normalize"]
    if normalize not in ("center", "standard", "scale", "none"):
        raise ValueError(f"network normalisation {normalize!r} is not one the probes use")
    with torch.device("meta"):  # no allocation, no random numbers drawn: every value comes from the file
        network = probe._build_network(probe.n_features_in_, len(probe.classes_))
    network.normalize = normalize
    network.token_offset_ratio, network.token_coherence = saved["token_offset_ratio"], saved["token_coherence"]
    state = dict(tensors)
    for key in state:
        owner, _, attr = key.rpartition(".")
        try:
            module = network.get_submodule(owner) if owner else network
        except AttributeError:
            continue
        if attr in module._buffers and module._buffers[attr] is None:  # statistics that calibrate() sets
            module._buffers[attr] = state[key]
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        raise ValueError(f"its tensors do not fit a {type(probe).__name__} of {probe.n_features_in_} dimensions "
                         f"and {len(probe.classes_)} outputs (missing {missing}, unexpected {unexpected}, "
                         f"wrong shape {wrong})")
    network.load_state_dict(state, strict=True, assign=True)
    return network.eval()


def _encode(value: Any, what: str) -> Any:
    """``value`` as JSON data, tagged where JSON alone would lose its type; ValueError naming ``what``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, np.dtype):
        if value.kind not in _ARRAY_KINDS:
            raise ValueError(f"cannot save {what}: dtype {value} is not one a probe file keeps")
        return {_TAG: "dtype", "dtype": value.str}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _ARRAY_KINDS:
            raise ValueError(f"cannot save {what}: arrays of dtype {value.dtype} are not kept in a probe file")
        items = value.ravel().tolist()
        if value.dtype.kind == "O":
            bad = next((v for v in items if not (v is None or isinstance(v, (bool, int, float, str)))), _TAG)
            if bad is not _TAG:
                raise ValueError(f"cannot save {what}: it holds a {type(bad).__name__} ({bad!r}); a probe file keeps "
                                 "integers, floats, booleans, strings and None")
        return {_TAG: "ndarray", "dtype": value.dtype.str, "shape": list(value.shape), "values": items}
    if isinstance(value, tuple):
        return {_TAG: "tuple", "values": [_encode(v, what) for v in value]}
    if isinstance(value, list):
        return [_encode(v, what) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value) and _TAG not in value:
        return {k: _encode(v, what) for k, v in value.items()}
    raise ValueError(f"cannot save {what}: a {type(value).__name__} is not representable in a probe file")


def _decode(value: Any, limit: int = 2**20) -> Any:
    """The value :func:`_encode` wrote; an array may take at most ``limit`` bytes."""
    if isinstance(value, list):
        return [_decode(v, limit) for v in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(_TAG)
    if tag is None:
        return {k: _decode(v, limit) for k, v in value.items()}
    if tag == "tuple":
        return tuple(_decode(v, limit) for v in value["values"])
    if tag in ("dtype", "ndarray"):
        dtype = np.dtype(str(value["dtype"]))
        if dtype.kind not in _ARRAY_KINDS:
            raise ValueError(f"dtype {value['dtype']!r} is not one a probe file keeps")
        if tag == "dtype":
            return dtype
        shape = [int(n) for n in value["shape"]]
        items = value["values"]
        if not isinstance(items, list) or len(items) != math.prod(shape):
            raise ValueError(f"an array of shape {shape} needs {math.prod(shape)} values")
        if any(not (v is None or isinstance(v, (bool, int, float, str))) for v in items):
            raise ValueError("array values must be JSON scalars")
        if len(items) * dtype.itemsize > limit:  # e.g. a string dtype of a billion characters
            raise ValueError(f"an array of {len(items)} values of dtype {dtype} would take "
                             f"{len(items) * dtype.itemsize:,} bytes, more than the file can justify")
        out = np.empty(len(items), dtype=dtype)
        for i, item in enumerate(items):
            out[i] = item
        return out.reshape(shape)
    raise ValueError(f"unknown tagged value {tag!r}")


def _check_round_trip(classes: np.ndarray, encoded: Any) -> None:
    """Refuse class labels that would not come back as they are (values and dtype)."""
    back = _decode(json.loads(json.dumps(encoded)), limit=2**62)
    same = (isinstance(back, np.ndarray) and back.dtype == classes.dtype and back.shape == classes.shape
            and all(type(a) is type(b) and (a == b or (a != a and b != b))
                    for a, b in zip(back.ravel().tolist(), classes.ravel().tolist())))
    if not same:
        raise ValueError(f"cannot save classes_ {classes!r}: they would not load back identical from JSON")
