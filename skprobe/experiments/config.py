"""What one benchmark run depends on: the probes it can train, the configuration and its checks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..probes import (
    AttentiveProbeClassifier,
    ConvexGatedProbeClassifier,
    LinearProbeClassifier,
    PrototypicalProbeClassifier,
)

__all__ = ["BUILTIN_DATASETS", "BenchmarkConfig", "MULTI_LAYER_PROBES", "PROBES", "validate_config"]

PROBES = {
    "linear": LinearProbeClassifier,
    "attentive": AttentiveProbeClassifier,
    "prototypical": PrototypicalProbeClassifier,
    "cgp": ConvexGatedProbeClassifier,
}
#: Probes that train on the tokens of several layers (``layers``); the others use ``layer``.
MULTI_LAYER_PROBES = ("cgp",)
BUILTIN_DATASETS = ("event-scenes", "event-clips")


@dataclass
class BenchmarkConfig:
    """Everything one benchmark run depends on (see ``skprobe benchmark --help``)."""

    encoder: str = "yamnet"
    dataset: str = "event-scenes"
    labels: str | None = None
    checkpoint: str | None = None
    layer: int = -1
    layers: str | Sequence[int] | None = None
    probes: Sequence[str] = ("linear", "attentive", "prototypical")
    seeds: int = 3
    test_size: float = 0.3
    n_train: int | None = None
    n_test: int | None = None
    output: str = "skprobe-results"
    device: str = "auto"
    batch_size: int = 16
    compile: bool | str = False
    refit: bool = False
    save_probes: bool = False
    verbose: int = 1
    probe_params: dict = field(default_factory=dict)
    events: bool = False
    long_minutes: float = 10.0


def validate_config(config: BenchmarkConfig) -> None:
    """Check the probes, their parameters, the sizes and the output folder before any work.

    Every probe is built with its ``probe_params`` and its parameters are
    validated, so a typo fails in a second rather than after the extraction.
    The output folder is created (it must be a folder and writable).

    Raises
    ------
    ValueError
        Naming the setting at fault and what was expected.

    Examples
    --------
    >>> validate_config(BenchmarkConfig(probes=("linear",), probe_params={"linear": {"foo": 1}}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: probe_params for 'linear': unknown parameter(s) ['foo']; valid: [...]
    """
    if not config.probes:
        raise ValueError(f"probes is empty; choose one or more of {list(PROBES)}")
    unknown = [p for p in config.probes if p not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe(s) {unknown}; choose from {list(PROBES)}")
    if len(set(config.probes)) != len(config.probes):
        raise ValueError(f"probes lists a probe twice: {list(config.probes)}")
    if config.seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {config.seeds}")
    if not isinstance(config.probe_params, dict):
        raise ValueError(f"probe_params must be a dict keyed by probe name, got {type(config.probe_params).__name__}")
    for name, params in config.probe_params.items():
        if name not in PROBES:
            raise ValueError(f"probe_params names unknown probe {name!r}; choose from {list(PROBES)}")
        if not isinstance(params, dict):
            raise ValueError(f"probe_params for {name!r} must be a dict of parameters, e.g. "
                             f"{{\"{name}\": {{\"max_iter\": 10}}}}, got {params!r}")
        valid = PROBES[name]().get_params()
        bad = sorted(set(params) - set(valid))
        if bad:
            raise ValueError(f"probe_params for {name!r}: unknown parameter(s) {bad}; valid: {sorted(valid)}")
        try:
            PROBES[name](**params)._validate_params()
        except ValueError as exc:
            raise ValueError(f"probe_params for {name!r}: {str(exc).strip()}") from None
    if config.layers is not None and config.layers != "all" and (
            isinstance(config.layers, str) or not len(config.layers)
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in config.layers)):
        raise ValueError(f"layers must be 'all' or a non-empty list of layer indices, got {config.layers!r}")
    if config.events and config.dataset not in BUILTIN_DATASETS:
        raise ValueError(f"events (--events) scores detection against annotated onsets and offsets, which the "
                         f"built-in sets {BUILTIN_DATASETS} have; {config.dataset!r} has none")
    for option in ("n_train", "n_test"):
        value = getattr(config, option)
        if value is not None and value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}")
        if value is not None and config.dataset not in BUILTIN_DATASETS:
            raise ValueError(f"{option} applies to the built-in sets {BUILTIN_DATASETS} only; a folder data set is "
                             "split by test_size (--test-size)")
    out = Path(config.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} is an existing file; the benchmark writes a folder of results there")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {out} is not writable")
